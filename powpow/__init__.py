"""powpow: fast network servers for CPython and PyPy.

Public names only; see README.md for a tour.  ``powpow._ffi.NATIVE`` tells
whether the compiled native layer is in use.
"""
from .errors import LoopError, ParseError, PowpowError, ResourceLeakError

# Everything else loads on first use (PEP 562): ``import powpow`` costs ~1 ms
# instead of pulling the whole library (HTTP, TLS and its ssl import, WebSocket,
# the native module) into every process that only needs one part of it.
# name -> (module, attribute or None for the module itself)
_LAZY = {
    "NATIVE": ("._ffi", "NATIVE"),
    "BufferPool": (".buffers", "BufferPool"),
    "Events": (".loop", "Events"),
    "Loop": (".loop", "Loop"),
    "TimerId": (".loop", "TimerId"),
    "Watcher": (".loop", "Watcher"),
    "available_pollers": (".poller", "available"),
    "Transport": (".net.transport", "Transport"),
    "ConnectError": (".net.errors", "ConnectError"),
    "ConnectionLost": (".net.errors", "ConnectionLost"),
    "DatagramTruncated": (".net.errors", "DatagramTruncated"),
    "NetError": (".net.errors", "NetError"),
    "WriteQueueFull": (".net.errors", "WriteQueueFull"),
    "Connection": (".net.connection", "Connection"),
    "TcpServer": (".net.listener", "TcpServer"),
    "Connector": (".net.client", "Connector"),
    "connect": (".net.client", "connect"),
    "connect_unix": (".net.client", "connect_unix"),
    "UdpEndpoint": (".net.udp", "UdpEndpoint"),
    "bind_udp": (".net.udp", "bind_udp"),
    "connect_udp": (".net.udp", "connect_udp"),
    "TlsError": (".net.tls", "TlsError"),
    "TlsInfo": (".net.tls", "TlsInfo"),
    "TlsTransport": (".net.tls", "TlsTransport"),
    "Change": (".extras", "Change"),
    "FileEvent": (".extras", "FileEvent"),
    "FileWatcher": (".extras", "FileWatcher"),
    "RateLimiter": (".extras", "RateLimiter"),
    "CorsOptions": (".http.cors", "CorsOptions"),
    "HeaderValueError": (".http.response", "HeaderValueError"),
    "HttpServer": (".http.server", "HttpServer"),
    "Response": (".http.server", "Response"),
    "serve_static": (".http.server", "serve_static"),
    "Headers": (".http._message", "Headers"),
    "QueryArgs": (".http._message", "QueryArgs"),
    "Request": (".http._message", "Request"),
    "ProxyTrust": (".http.forwarded", "ProxyTrust"),
    "ws": (".ws", None),
    "WsServer": (".ws", "WsServer"),
    # subpackages that import asyncio
    "aio": (".aio", None),
    "asynchttpserver": (".asynchttpserver", None),
    # the other modules users reach as attributes (powpow.wsgi.Server after a plain
    # `import powpow`, powpow._ffi.NATIVE): imported on first use, like the names above
    "asgi": (".asgi", None),
    "wsgi": (".wsgi", None),
    "http": (".http", None),
    "net": (".net", None),
    "extras": (".extras", None),
    "loop": (".loop", None),
    "timers": (".timers", None),
    "errors": (".errors", None),
    "buffers": (".buffers", None),
    "_ffi": ("._ffi", None),
}

TYPE_CHECKING = False  # typing costs ~5 ms to import; mypy treats this name as True
if TYPE_CHECKING:  # the names as the type checkers see them
    from . import ws
    from ._ffi import NATIVE
    from .buffers import BufferPool
    from .extras import Change, FileEvent, FileWatcher, RateLimiter
    from .http import CorsOptions, HeaderValueError, HttpServer, Response, serve_static
    from .http._message import Headers, QueryArgs, Request
    from .http.forwarded import ProxyTrust
    from .loop import Events, Loop, TimerId, Watcher
    from .net import (ConnectError, Connection, ConnectionLost, Connector, DatagramTruncated, NetError,
                      TcpServer, UdpEndpoint, WriteQueueFull, bind_udp, connect, connect_udp, connect_unix)
    from .net.tls import TlsError, TlsInfo, TlsTransport
    from .net.transport import Transport
    from .poller import available as available_pollers
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
    try:
        mod, attr = _LAZY[name]
    except KeyError:
        raise AttributeError("module 'powpow' has no attribute %r" % (name,)) from None
    # __import__ rather than importlib.import_module: the importlib package (and
    # warnings) is not loaded at start-up; a non-empty fromlist returns the leaf.
    module = __import__(mod[1:], globals(), None, ["__name__"], 1)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
