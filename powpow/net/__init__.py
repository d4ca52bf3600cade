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
from .client import Connector, connect, connect_unix
from .errors import ConnectError, ConnectionLost, ConnectionTimeout, DatagramTruncated, NetError, WriteQueueFull
from .tcp import Connection, TcpServer
from .tls import TlsError, TlsInfo, TlsTransport, server_context
from .transport import Transport
from .udp import UdpEndpoint, bind_udp, connect_udp

__all__ = [
    "Transport", "Connection", "TcpServer", "Connector", "connect", "connect_unix",
    "UdpEndpoint", "bind_udp", "connect_udp", "TlsTransport", "TlsInfo", "TlsError", "server_context",
    "NetError", "ConnectError", "ConnectionLost", "ConnectionTimeout", "DatagramTruncated", "WriteQueueFull",
]
