"""``DatagramTransport`` for ``powpow.aio``: a UDP/unix-datagram socket watched by the loop.

Reads: on each readable event up to 32 datagrams are received and handed to
``datagram_received``.  Writes: ``sendto`` sends at once; only when the kernel
says EAGAIN are datagrams queued (whole, in order) and sent on writability.
Errors of one datagram (ICMP unreachable...) go to ``error_received`` and the
transport stays open, as in asyncio.
"""
import asyncio
import collections


try:
    from asyncio.trsock import TransportSocket as _TSock
except ImportError:  # pragma: no cover
    _TSock = None  # type: ignore

__all__ = ["DatagramTransport"]

_MAX_SIZE = 256 * 1024
_READS_PER_EVENT = 32


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
        self._queue.append((bytes(data), addr))
        self._qsize += len(data)

    def _write_ready(self) -> None:
        while self._queue:
            data, addr = self._queue[0]
            try:
                if addr is not None and self._address is None:
                    self._sock.sendto(data, addr)
                else:
                    self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
            self._queue.popleft()
            self._qsize -= len(data)
        self._loop._remove_writer(self._fd)
        if self._closing:
            self._finish(None)

    def get_write_buffer_size(self) -> int:
        return self._qsize

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
        self._closing = True
        self._queue.clear()
        self._qsize = 0
        self._loop._remove_reader(self._fd)
        self._loop._remove_writer(self._fd)
        self._loop.call_soon(self._finish, None)

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



