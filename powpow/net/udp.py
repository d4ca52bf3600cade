"""UDP endpoints: ``bind_udp`` (any peer) and ``connect_udp`` (one peer).

Invariants and why:

* Receive into one 64 KiB buffer per endpoint (a UDP payload is at most 65 507
  bytes over IPv4, 65 527 over IPv6), so with the default size nothing is ever
  cut.  With a smaller ``max_datagram_size`` the kernel is asked (``MSG_TRUNC``)
  for the real length and a cut datagram is reported to ``on_error`` as
  ``DatagramTruncated`` -- never delivered silently shortened.
* Level-triggered, at most ``batch`` datagrams per readiness event, so one
  flooding sender cannot starve the loop's other fds.
* ``on_datagram(endpoint, data, addr)`` receives ``bytes`` (datagrams are whole
  messages that callers usually keep), unlike the TCP memoryview contract.
* Sends never queue: UDP is lossy by design, so a full socket buffer (EAGAIN,
  ENOBUFS) drops the datagram and ``send_to``/``send`` return False.  An ICMP
  error on a connected endpoint (ECONNREFUSED) goes to ``on_error``.
* A dual-stack endpoint (``bind_udp(loop, None, port)``: "::" with
  IPV6_V6ONLY off) receives IPv4 peers as ``::ffff:a.b.c.d`` and sends to a
  plain IPv4 address too: ``send_to`` maps the literal to that form, which the
  AF_INET6 socket cannot resolve itself (``socket.gaierror``).  Only such an
  endpoint pays the one check, and only for a host without a ":".
* Uses the ``socket`` module in both native and pure modes: it has
  ``recvmsg_into`` with flags, and datagram I/O is not where powpow's time goes.
"""
import errno
import logging
import socket
from typing import Callable, Optional

from ..loop import Loop
from . import addr as _addr
from .errors import DatagramTruncated

__all__ = ["UdpEndpoint", "bind_udp", "connect_udp"]

log = logging.getLogger("powpow.net")
READ = 0x001
_MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0)
_DROP = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)
MAX_DATAGRAM = 65536


class UdpEndpoint:
    """A bound (and optionally connected) UDP socket watched by the loop."""

    def __init__(self, loop: Loop, sock: socket.socket, on_datagram: Optional[Callable],
                 on_error: Optional[Callable], max_datagram_size: int, batch: int, connected: bool) -> None:
        self.loop = loop
        self.sock = sock
        self.family = sock.family
        self.on_datagram = on_datagram
        self.on_error = on_error
        self.connected = connected
        self._dual_stack = (sock.family == socket.AF_INET6
                            and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        self.dropped = 0  # sends dropped because the socket buffer was full
        self.truncated = 0
        self._batch = batch
        self._size = max_datagram_size
        self._rbuf = loop.buffers.acquire() if max_datagram_size <= loop.buffers.buffer_size else None
        self._buf = self._rbuf.data if self._rbuf is not None else bytearray(max_datagram_size)
        self._view = memoryview(self._buf)[:max_datagram_size]
        self._closed = False
        loop.register(sock.fileno(), READ, self._on_readable)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def address(self):
        return self.sock.getsockname()

    def send_to(self, data, addr) -> bool:
        """Send one datagram to ``addr``; False if it was dropped (socket buffer full)."""
        if self._closed:
            return False
        if self._dual_stack and addr[0].__class__ is str and ":" not in addr[0]:
            addr = _v4_mapped(addr)
        try:
            self.sock.sendto(data, addr)
            return True
        except OSError as exc:
            return self._send_failed(exc)

    def send(self, data) -> bool:
        """Send one datagram to the connected peer (``connect_udp``)."""
        if self._closed:
            return False
        try:
            self.sock.send(data)
            return True
        except OSError as exc:
            return self._send_failed(exc)

    def _send_failed(self, exc: OSError) -> bool:
        if exc.errno in _DROP:
            self.dropped += 1
            return False
        if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
            self._error(exc)
            return False
        raise exc  # the caller's own mistake (EMSGSIZE, bad address): tell them

    def _error(self, exc: Exception) -> None:
        cb = self.on_error
        if cb is None:
            log.warning("udp %s: %s", _addr.format_addr(self.family, self.address), exc)
        else:
            cb(self, exc)

    def _on_readable(self, fd: int, events: int) -> None:
        sock = self.sock
        view = self._view
        size = self._size
        for _ in range(self._batch):
            if self._closed:
                return
            try:
                n, _, flags, addr = sock.recvmsg_into([view], 0, _MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._error(exc)  # e.g. ECONNREFUSED from an earlier send on a connected endpoint
                continue
            if flags & _MSG_TRUNC or n > size:
                self.truncated += 1
                self._error(DatagramTruncated(n, size, addr))
                continue
            cb = self.on_datagram
            if cb is not None:
                cb(self, bytes(view[:n]), addr)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.loop.unregister(self.sock.fileno())
        self.sock.close()
        self._view.release()
        if self._rbuf is not None:
            self.loop.buffers.release(self._rbuf)
            self._rbuf = None

    def __enter__(self) -> "UdpEndpoint":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _v4_mapped(addr):
    """("a.b.c.d", port) -> ("::ffff:a.b.c.d", port) for an AF_INET6 socket; anything else as is."""
    host = addr[0]
    try:
        socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):
        return addr  # a name: sendto resolves it (AF_INET6 only)
    return ("::ffff:" + host,) + tuple(addr[1:])


def _new_socket(family: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setblocking(False)
    return s


def bind_udp(loop: Loop, host: Optional[str], port: int, on_datagram: Optional[Callable],
             on_error: Optional[Callable] = None, max_datagram_size: int = MAX_DATAGRAM, batch: int = 64,
             reuse_port: bool = False) -> UdpEndpoint:
    """Bind a UDP socket on ``host:port`` (port 0: any); ``on_datagram(ep, data, addr)``."""
    family, sa = _addr.resolve_passive(host, port, socket.SOCK_DGRAM)
    s = _new_socket(family)
    try:
        if reuse_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if sa[0] in ("::", "") else 1)
        s.bind(sa)
        return UdpEndpoint(loop, s, on_datagram, on_error, max_datagram_size, batch, False)
    except BaseException:
        s.close()
        raise


def connect_udp(loop: Loop, host: str, port: int, on_datagram: Optional[Callable],
                on_error: Optional[Callable] = None, max_datagram_size: int = MAX_DATAGRAM,
                batch: int = 64) -> UdpEndpoint:
    """A UDP socket connected to ``host:port``: ``send(data)``, datagrams only from that peer.

    ``host`` should be numeric: a name is resolved synchronously here (there is
    no handshake to overlap it with).
    """
    _addr.check_port(port)  # getaddrinfo would send to port 70000 as 4464
    h = _addr.strip_brackets(host)
    flags = socket.AI_NUMERICHOST if _addr.literal_family(h) is not None else 0
    infos = socket.getaddrinfo(h, port, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, flags)
    family, _, _, _, sa = infos[0]
    s = _new_socket(family)
    try:
        s.connect(sa)
        return UdpEndpoint(loop, s, on_datagram, on_error, max_datagram_size, batch, True)
    except BaseException:
        s.close()
        raise
