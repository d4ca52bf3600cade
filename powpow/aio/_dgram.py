"""``DatagramTransport`` for ``powpow.aio``: a UDP/unix-datagram socket watched by the loop.

Reads: on each readable event up to 32 datagrams are received and handed to
``datagram_received``.  Writes: ``sendto`` sends at once; only when the kernel
says EAGAIN are datagrams queued (whole, in order) and sent on writability.
Errors of one datagram (ICMP unreachable...) go to ``error_received`` and the
transport stays open, as in asyncio.

Write buffer, as asyncio's selector datagram transport: ``get_write_buffer_size``
counts the queued payload bytes; above the high mark (64 KiB by default,
``set_write_buffer_limits``) the protocol gets ``pause_writing()``, back at the
low mark (a quarter of it) ``resume_writing()``.  Unlike asyncio the queue has a
hard cap (powpow's rule: every queue pushes back at high water and fails loudly
past its cap, never grows without bound): 32 times the high mark, at least
1 MiB (the ratio of powpow.net's TCP queue, 32 MiB over 1 MiB).  As that one,
the cap judges the queue *before* a datagram: a ``sendto`` while the queue
already holds more than the cap -- a protocol ignoring ``pause_writing`` -- drops
that datagram and reports ``DatagramQueueFull`` (an ``OSError``, ENOBUFS) to
``error_received``, and logs a warning on the "asyncio" logger once per
overflow (until the queue is empty again).  Dropping, not closing, because UDP
is lossy by design: powpow.net's ``UdpEndpoint`` never queues at all and drops
a datagram the kernel will not take (``send_to`` returns False).
"""
import asyncio
import collections
import errno
import logging

from ..net.errors import WriteQueueFull
from ._debug import protocol_callback

try:
    from asyncio.trsock import TransportSocket as _TSock
except ImportError:  # pragma: no cover
    _TSock = None  # type: ignore

__all__ = ["DatagramQueueFull", "DatagramTransport"]

logger = logging.getLogger("asyncio")

_MAX_SIZE = 256 * 1024
_READS_PER_EVENT = 32
_HIGH = 64 * 1024  # asyncio's default high-water mark for transports
_CAP_PER_HIGH = 32  # the cap over the high mark: powpow.net's TCP queue has 32 MiB over 1 MiB
_MIN_CAP = 1 << 20  # with a tiny (or zero) high mark the cap still holds a few datagrams


class DatagramQueueFull(WriteQueueFull, OSError):
    """A datagram was dropped: the transport's write buffer already held more than its cap.

    The protocol ignored ``pause_writing()``.  Given to ``error_received`` (errno
    ENOBUFS, the kernel's word for a full send buffer), so protocols that expect
    an ``OSError`` there can handle it; ``WriteQueueFull`` as powpow.net's cap error.
    """

    def __init__(self, message: str) -> None:
        OSError.__init__(self, errno.ENOBUFS, message)

    def __str__(self) -> str:
        return str(self.strerror)


class DatagramTransport(asyncio.Transport, asyncio.DatagramTransport):  # asyncio's is a Transport too
    def __init__(self, loop, sock, protocol, address, waiter, extra) -> None:
        super().__init__(extra)
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._address = address
        self._queue: collections.deque = collections.deque()
        self._qsize = 0
        self._high = _HIGH
        self._low = _HIGH // 4
        self._cap = max(_CAP_PER_HIGH * _HIGH, _MIN_CAP)
        self._protocol_paused = False
        self._overflowed = False  # a datagram was dropped at the cap since the queue was last empty
        self._closing = False
        self._extra["socket"] = _TSock(sock) if _TSock is not None else sock
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(loop._add_reader, self._fd, self._read_ready)
        if waiter is not None:
            loop.call_soon(lambda: waiter.cancelled() or waiter.set_result(None))

    def __repr__(self) -> str:
        st = "closed" if self._sock is None else ("closing" if self._closing else "open")
        return "<powpow DatagramTransport fd=%s %s>" % (self._fd, st)

    @protocol_callback("datagram_received")
    def _read_ready(self) -> None:
        for _ in range(_READS_PER_EVENT):
            if self._closing:
                return
            try:
                data, addr = self._sock.recvfrom(_MAX_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
                continue
            self._protocol.datagram_received(data, addr)

    def sendto(self, data, addr=None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data argument must be a bytes-like object, not %r" % type(data).__name__)
        if self._address is not None and addr not in (None, self._address):
            raise ValueError("Invalid address: must be None or %s" % (self._address,))
        if self._closing:
            return
        if addr is None:
            addr = self._address
        if not self._queue:
            try:
                if addr is not None and self._address is None:
                    self._sock.sendto(data, addr)
                else:
                    self._sock.send(data)
                return
            except (BlockingIOError, InterruptedError):
                self._loop._add_writer(self._fd, self._write_ready)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
        elif self._qsize > self._cap:
            self._refuse(len(data))
            return
        self._queue.append((bytes(data), addr))
        self._qsize += len(data)
        if self._qsize > self._high and not self._protocol_paused:
            self._pause_protocol()

    def _refuse(self, size: int) -> None:
        """The cap rule: a datagram handed over while the queue already holds more than ``_cap``."""
        exc = DatagramQueueFull(
            "sendto() of %d bytes dropped: the datagram transport's write buffer already holds %d bytes, "
            "past its %d-byte cap (the protocol ignores pause_writing())" % (size, self._qsize, self._cap))
        if not self._overflowed:
            self._overflowed = True
            logger.warning("%r: %s", self, exc)
        self._protocol.error_received(exc)

    @protocol_callback("resume_writing")
    def _write_ready(self) -> None:
        queue = self._queue
        while queue:
            data, addr = queue[0]
            try:
                if addr is not None and self._address is None:
                    self._sock.sendto(data, addr)
                else:
                    self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # this datagram is lost (as sendto's own error): report it, send the rest
                queue.popleft()
                self._qsize -= len(data)
                self._protocol.error_received(exc)
                if self._sock is None:
                    return
                continue
            queue.popleft()
            self._qsize -= len(data)
        if self._protocol_paused and self._qsize <= self._low:
            self._resume_protocol()  # (it may send: queued after what is left)
        if not self._queue and self._sock is not None:
            self._overflowed = False
            self._loop._remove_writer(self._fd)
            if self._closing:
                self._finish(None)

    def _pause_protocol(self) -> None:
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({"message": "protocol.pause_writing() failed", "exception": exc,
                                               "transport": self, "protocol": self._protocol})

    def _resume_protocol(self) -> None:
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({"message": "protocol.resume_writing() failed", "exception": exc,
                                               "transport": self, "protocol": self._protocol})

    def get_write_buffer_size(self) -> int:
        return self._qsize

    def get_write_buffer_limits(self):
        return (self._low, self._high)

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        if high is None:
            high = _HIGH if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError("high (%r) must be >= low (%r) must be >= 0" % (high, low))
        self._high, self._low = high, low
        self._cap = max(_CAP_PER_HIGH * high, _MIN_CAP)
        if self._qsize > high and not self._protocol_paused:
            self._pause_protocol()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop._remove_reader(self._fd)
        if not self._queue:
            self._loop.call_soon(self._finish, None)

    def abort(self) -> None:
        if self._sock is None:
            return  # finished: its fd number may be another socket's by now (asyncio: the same)
        self._closing = True
        self._queue.clear()
        self._qsize = 0
        self._loop._remove_reader(self._fd)
        self._loop._remove_writer(self._fd)
        self._loop.call_soon(self._finish, None)

    @protocol_callback("connection_lost")
    def _finish(self, exc) -> None:
        if self._sock is None:
            return
        self._loop._remove_reader(self._fd)
        self._loop._remove_writer(self._fd)
        sock = self._sock
        self._sock = None
        try:
            self._protocol.connection_lost(exc)
        finally:
            sock.close()
            self._protocol = None

    def _fatal(self, exc) -> None:  # pragma: no cover - kept for asyncio parity
        self.abort()
