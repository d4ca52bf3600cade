"""Networking on the powpow loop: TCP/unix servers and clients, UDP.

* ``transport`` -- ``Transport``, the contract protocol code uses (``Connection`` implements it);
* ``connection`` -- ``Connection``, the TCP/unix implementation of ``Transport``
  (write path in ``_writing``, file sending in ``_filesend``);
* ``listener`` -- ``TcpServer`` (``tcp`` re-exports both under their old home);
* ``client`` -- ``connect`` / ``connect_unix`` (resolver thread, Happy Eyeballs; ``ssl=``);
* ``tls``    -- ``TlsTransport``, TLS over a ``Connection`` (``ssl.SSLObject`` + ``MemoryBIO``);
* ``udp``    -- ``bind_udp`` / ``connect_udp``;
* ``addr``   -- address parsing, RFC 8305 ordering, unix socket paths;
* ``errors`` -- ``NetError`` and its subclasses (all ``PowpowError``).

The syscalls themselves live in ``powpow._ffi._sock`` (native shims with pure
twins), so everything here runs the same with ``POWPOW_PURE=1``.
"""
# Loaded on first use (PEP 562): importing one submodule (``powpow.net.errors``
# from the HTTP server, say) must not pull ``tls`` and its ``ssl`` import, the
# resolver client or UDP along.
_LAZY = {
    "Connector": ".client", "connect": ".client", "connect_unix": ".client",
    "ConnectError": ".errors", "ConnectionLost": ".errors", "ConnectionTimeout": ".errors",
    "DatagramTruncated": ".errors", "NetError": ".errors", "WriteQueueFull": ".errors",
    "Connection": ".connection", "TcpServer": ".listener",
    "TlsError": ".tls", "TlsInfo": ".tls", "TlsTransport": ".tls", "server_context": ".tls",
    "Transport": ".transport",
    "UdpEndpoint": ".udp", "bind_udp": ".udp", "connect_udp": ".udp",
}

TYPE_CHECKING = False  # mypy treats this name as True
if TYPE_CHECKING:
    from .client import Connector, connect, connect_unix
    from .errors import (ConnectError, ConnectionLost, ConnectionTimeout, DatagramTruncated, NetError,
                         WriteQueueFull)
    from .tcp import Connection, TcpServer
    from .tls import TlsError, TlsInfo, TlsTransport, server_context
    from .transport import Transport
    from .udp import UdpEndpoint, bind_udp, connect_udp

__all__ = [
    "Transport", "Connection", "TcpServer", "Connector", "connect", "connect_unix",
    "UdpEndpoint", "bind_udp", "connect_udp", "TlsTransport", "TlsInfo", "TlsError", "server_context",
    "NetError", "ConnectError", "ConnectionLost", "ConnectionTimeout", "DatagramTruncated", "WriteQueueFull",
]


def __getattr__(name: str):
    try:
        mod = _LAZY[name]
    except KeyError:
        raise AttributeError("module 'powpow.net' has no attribute %r" % (name,)) from None
    value = getattr(__import__(mod[1:], globals(), None, ["__name__"], 1), name)  # as in powpow/__init__.py
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
