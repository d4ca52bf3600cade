"""powpow: fast network servers for CPython and PyPy.

Public names only; see README.md for a tour.  ``powpow._ffi.NATIVE`` tells
whether the compiled native layer is in use.
"""
from ._ffi import NATIVE
from .buffers import BufferPool
from .errors import LoopError, ParseError, PowpowError, ResourceLeakError
from .loop import Events, Loop, TimerId, Watcher
from .poller import available as available_pollers
from .net.transport import Transport
from .net import (ConnectError, Connection, ConnectionLost, Connector, DatagramTruncated, NetError, TcpServer,
                  UdpEndpoint, WriteQueueFull, bind_udp, connect, connect_udp, connect_unix)
from .net.tls import TlsError, TlsInfo, TlsTransport
from .extras import Change, FileEvent, FileWatcher, RateLimiter
from .http import CorsOptions, HeaderValueError, HttpServer, Response, serve_static
from .http._message import Headers, QueryArgs, Request
from .http.forwarded import ProxyTrust
from . import ws
from .ws import WsServer

__version__ = "0.1.0"

__all__ = [
    "NATIVE",
    "BufferPool",
    "Events",
    "Loop",
    "LoopError",
    "ParseError",
    "PowpowError",
    "ResourceLeakError",
    "TimerId",
    "Watcher",
    "available_pollers",
    # HTTP (issues 4 and 5)
    "CorsOptions",
    "HeaderValueError",
    "Headers",
    "HttpServer",
    "ProxyTrust",
    "QueryArgs",
    "Request",
    "Response",
    "serve_static",
    # networking (issue 3)
    "Change",
    "ConnectError",
    "Connection",
    "ConnectionLost",
    "Connector",
    "DatagramTruncated",
    "FileEvent",
    "FileWatcher",
    "NetError",
    "RateLimiter",
    "TcpServer",
    "TlsError",
    "TlsInfo",
    "TlsTransport",
    "Transport",
    "UdpEndpoint",
    "WriteQueueFull",
    "bind_udp",
    "connect",
    "connect_udp",
    "connect_unix",
    # WebSocket (issue 10)
    "WsServer",
    "ws",
]


def __getattr__(name: str):
    # Subpackages that import asyncio load on first use: ``import powpow`` stays asyncio-free.
    if name in ("aio", "asynchttpserver"):
        import importlib
        return importlib.import_module("." + name, __name__)
    raise AttributeError("module 'powpow' has no attribute %r" % (name,))
