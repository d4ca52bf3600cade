"""TCP (and unix stream) connections and the TCP server: the write path and backpressure.

The ``on_data`` contract: ``on_data(conn, data)`` receives a **memoryview** into
a receive buffer that is shared by every connection of the server (one 64 KiB
pooled buffer, not one per connection: 10 000 idle connections must cost
kilobytes, not 640 MiB).  It is valid only until ``on_data`` returns; keep
``bytes(data)`` (or copy into your own bytearray) to retain anything.  Passing
it straight to ``conn.send()`` is fine: what the kernel does not take at once
is copied.  Reads are never started from inside user calls (``resume_reading``
defers its read to the next iteration), so the shared buffer is never reused
while a callback still holds a view of it.

Write path, in order of cost:

1. ``send()`` with an empty queue writes at once (one ``send`` syscall); most
   small writes end here.  Only what the kernel did not take is queued
   (bytes by reference, other buffers copied).
2. With a queue, later sends append to it; the queue is flushed on the next
   writable event with one ``writev`` (up to ``IOV_MAX`` buffers).
3. ``TCP_CORK`` is set only while data is queued (full segments while we are
   behind anyway) and around header + ``sendfile``; the fast path makes no
   cork syscalls.  File chunks sit in the same queue, so ``send_file`` is
   strictly ordered with ``send``.
4. Backpressure: ``send()`` returns False once the queue reaches
   ``high_water``; ``on_drain(conn)`` runs when it is back at ``low_water``.
   The hard cap ``max_queued`` (default 32 MiB) judges the queue as it is
   *before* a write: one large ``bytes`` object is queued by reference whatever
   its size (a 100 MB ``send()`` arrives whole, streamed from the caller's
   buffer as the socket drains), but data handed over while the queue already
   holds more than ``max_queued`` bytes -- a producer ignoring backpressure --
   is refused loudly: the connection is closed with ``WriteQueueFull`` (given
   to ``on_close``) and a warning is logged.  Never a silent cut.
5. ``bytes_sent`` counts what the kernel accepted (send, writev, sendfile, the
   read+send fallback): the one honest measure of write progress (a growing
   queue is not progress).  ``output_pending`` is True while anything -- bytes,
   a file chunk, a pending FIN -- has not reached the kernel.

Readiness is edge-triggered on epoll/kqueue (READ|WRITE registered once, no
``epoll_ctl`` per queue transition); on the level-triggered ``poll`` backend
the interest set is updated instead.  A read shorter than the buffer means
the socket was drained: with EPOLLET every later arrival raises a new edge,
so the extra ``recv`` that would only return EAGAIN is skipped.

End of input: when the peer's FIN is read and ``on_eof`` is None, the
connection closes once its queue is delivered.  With ``on_eof`` set,
``on_eof(conn)`` runs once (after all data before the FIN was delivered) and
the write side stays open: the owner answers, then calls ``close()`` or
``close_after_drain()`` (which then closes as soon as the queue is empty).
``peer_closed`` becomes True at the FIN -- also while reading is paused, from
EPOLLRDHUP / POLLRDHUP / kqueue EV_EOF, so a paused connection notices a
hang-up although the data before it is still unread in the kernel.

Closing: ``close()`` is immediate (``reset=True`` / ``abort()``: SO_LINGER
{1,0} -> RST); ``shutdown()`` / ``write_eof()`` flushes then sends FIN and
keeps reading; ``close_after_drain()`` flushes, sends FIN, then reads and
discards until the peer's FIN (or ``linger_ms``) before closing -- closing
with unread input would make the kernel send an RST that can destroy the
tail of the response at the peer.

Connections of a server are pooled: every close path (``close``, peer EOF,
reset, error, queue overflow, timeout) goes through ``_teardown``, which
releases the fd, watcher, queue and timer, calls ``on_close(conn, exc)``
(``exc`` None for an orderly close), then resets the object for reuse.  Do not
use a ``Connection`` after its ``on_close`` has returned.
"""
import collections
import errno
import logging
import os
import socket
from typing import Any, Callable, Optional

from .. import _ffi
from .._ffi import _sock
from ..loop import Loop
from . import addr as _addr
from .errors import ConnectionLost, WriteQueueFull

__all__ = ["Connection", "TcpServer"]

log = logging.getLogger("powpow.net")

READ, WRITE, ERROR, HUP, RDHUP = 0x001, 0x004, 0x008, 0x010, 0x2000
OPEN, CLOSING, CLOSED = 0, 1, 2
EAGAIN = errno.EAGAIN
_NO_SENDFILE = frozenset((-errno.EINVAL, -errno.ENOSYS, -errno.EOPNOTSUPP, -errno.ESPIPE,
                          -getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)))
_SHED = frozenset((-errno.EMFILE, -errno.ENFILE, -errno.ENOBUFS, -errno.ENOMEM))
_MAX_READS_PER_EVENT = 16  # 1 MiB per wake-up, then let other fds have a turn
# A listener's backlog is served in turns of this many accepts: a SYN flood (or a
# thundering reconnect after a restart) must not starve the live connections.
_MAX_ACCEPTS_PER_EVENT = 128
_FILE_READ_CHUNK = 256 * 1024
_STARVED_LOG_EVERY_MS = 60000

DEFAULT_HIGH_WATER = 1 << 20
DEFAULT_LOW_WATER = 256 << 10
DEFAULT_MAX_QUEUED = 32 << 20
DEFAULT_LINGER_MS = 5000

# Native mode: the two hottest calls go straight to the shims (no wrapper frame);
# the wrappers in _ffi._sock stay the single definition for everything else.
_NATIVE_IO = _ffi.NATIVE
if _NATIVE_IO:
    _pp_recv = _ffi.lib.pp_recv
    _pp_send = _ffi.lib.pp_send
    _from_buffer = _ffi.ffi.from_buffer
_recv_into = _sock.recv_into
_send = _sock.send
_writev = _sock.writev
_sendfile = _sock.sendfile
_IOV_MAX = _sock.IOV_MAX
_NEED_SOCK = _sock.needs_socket_object()


def edge_capable(loop: Loop) -> bool:
    """The poll backend ignores ``edge=True``; epoll and kqueue honour it."""
    return loop.backend != "poll"


class _Raise:
    """Hands an exception to the loop's exception handler from the next iteration."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __call__(self) -> None:
        raise self.exc


def report(loop: Loop, exc: BaseException) -> None:
    loop.defer_call(_Raise(exc))


class _DrainLater:
    """``on_drain`` from the loop after ``set_write_buffer_limits`` lowered the marks."""

    __slots__ = ("conn", "gen")

    def __init__(self, conn: "Connection", gen: int) -> None:
        self.conn = conn
        self.gen = gen

    def __call__(self) -> None:
        c = self.conn
        if c._gen == self.gen and c._state != CLOSED and c._above_high and c._queued <= c.low_water:
            c._drain_event()


class _FileChunk:
    __slots__ = ("fd", "offset", "remaining", "use_sendfile", "pending")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.remaining = count
        self.use_sendfile = True
        self.pending = None  # non-seekable source: bytes read but not yet sent

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Connection:
    """One stream connection (TCP or unix).  See the module docstring for the contracts."""

    __slots__ = ("loop", "fd", "_sock", "family", "_owner", "_gen", "_state", "_edge",
                 "on_data", "on_close", "on_drain", "on_eof", "context",
                 "_rbuf", "_own_rbuf", "_queue", "_queued", "_corked", "_cork_ok", "_interest",
                 "_paused", "_read_deferred", "_shut_pending", "_wr_shut", "_eof", "_linger_timer",
                 "_above_high", "high_water", "low_water", "max_queued", "linger_ms",
                 "_peer", "_sockname", "_ip", "_overflow", "peer_closed", "bytes_sent")

    loop: Optional[Loop]
    fd: int
    family: int
    on_data: Optional[Callable[["Connection", memoryview], None]]
    on_close: Optional[Callable[["Connection", Optional[BaseException]], None]]
    on_drain: Optional[Callable[["Connection"], None]]
    on_eof: Optional[Callable[["Connection"], None]]
    context: Any
    high_water: int
    low_water: int
    max_queued: int
    linger_ms: int
    peer_closed: bool
    bytes_sent: int

    def __init__(self) -> None:
        self._gen = 0
        self._reset()

    def _reset(self) -> None:
        self.loop = None
        self.fd = -1
        self._sock = None
        self.family = 0
        self._owner = None
        self._gen += 1
        self._state = CLOSED
        self._edge = True
        self.on_data = None
        self.on_close = None
        self.on_drain = None
        self.on_eof = None
        self.context = None
        self._rbuf = None
        self._own_rbuf = False
        self._queue = None
        self._queued = 0
        self._corked = False
        self._cork_ok = False
        self._interest = 0
        self._paused = False
        self._read_deferred = False
        self._shut_pending = False
        self._wr_shut = False
        self._eof = False
        self._linger_timer = None
        self._above_high = False
        self.high_water = DEFAULT_HIGH_WATER
        self.low_water = DEFAULT_LOW_WATER
        self.max_queued = DEFAULT_MAX_QUEUED
        self.linger_ms = DEFAULT_LINGER_MS
        self._peer = None
        self._sockname = None
        self._ip = None
        self._overflow = False
        self.peer_closed = False
        self.bytes_sent = 0

    def _open(self, loop: Loop, fd: int, sock, family: int, owner, rbuf, own_rbuf: bool,
              on_data, on_close, cork: bool, high_water: int, low_water: int, max_queued: int,
              linger_ms: int) -> None:
        self.loop = loop
        self.fd = fd
        self._sock = sock
        self.family = family
        self._owner = owner
        self._state = OPEN
        self._rbuf = rbuf
        self._own_rbuf = own_rbuf
        self.on_data = on_data
        self.on_close = on_close
        self._cork_ok = cork and family != socket.AF_UNIX
        self.high_water = high_water
        self.low_water = low_water
        self.max_queued = max_queued
        self.linger_ms = linger_ms
        edge = self._edge = edge_capable(loop)
        self._interest = (READ | WRITE) if edge else READ
        loop.register(fd, self._interest, self._on_event, edge)

    # ------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        return self._state == CLOSED

    @property
    def queued_bytes(self) -> int:
        """Bytes in memory waiting for the kernel (file chunks not counted: see ``output_pending``)."""
        return self._queued

    @property
    def output_pending(self) -> bool:
        """True while anything has not reached the kernel: bytes, a file chunk, or a pending FIN."""
        return bool(self._queue) or self._shut_pending

    @property
    def writable(self) -> bool:
        """False when ``send`` would be refused or the queue is above ``high_water``."""
        return self._state == OPEN and not self._shut_pending and not self._wr_shut and not self._above_high

    @property
    def is_unix(self) -> bool:
        return self.family == socket.AF_UNIX

    def send(self, data) -> bool:
        """Write ``data`` (bytes-like) now; queue what the kernel does not take.

        Returns False when the data was not accepted (connection closing or
        closed, or refused by the ``max_queued`` cap: see the module docstring)
        or when the queue is now at/above ``high_water`` (the data IS queued:
        stop producing and wait for ``on_drain``).
        """
        if self._state != OPEN or self._shut_pending or self._wr_shut:
            return False
        if self._queue:
            if self._queued > self.max_queued:
                self._refuse(len(data))
                return False
            return self._enqueue(data if type(data) is bytes else bytes(data))
        ln = len(data)
        if _NATIVE_IO:
            n = _pp_send(self.fd, data if type(data) is bytes else _from_buffer(data), ln)
        else:
            n = _send(self._sock, self.fd, data)
        if n == ln:
            self.bytes_sent += n
            return True
        if n < 0:
            if n != -EAGAIN:
                self._fail(n, "send to")
                return False
            n = 0
        self.bytes_sent += n
        if type(data) is bytes:
            rest = data if n == 0 else memoryview(data)[n:]
        else:
            rest = bytes(memoryview(data)[n:])
        return self._enqueue(rest)

    write = send

    def sendv(self, buffers) -> bool:
        """Write several buffers with one ``writev`` (ordered after anything queued)."""
        if self._state != OPEN or self._shut_pending or self._wr_shut:
            return False
        bufs = list(buffers)
        if not bufs:
            return not self._above_high
        if self._queue and self._queued > self.max_queued:
            self._refuse(sum(len(b) for b in bufs))
            return False
        if self._queue or len(bufs) > _IOV_MAX:
            was_empty = not self._queue
            for b in bufs:
                self._enqueue(b if type(b) is bytes else bytes(b))
            if was_empty:
                self._flush()  # one writev of the first IOV_MAX, the rest on WRITE
            return self._state == OPEN and not self._above_high
        n = _writev(self._sock, self.fd, bufs)
        if n < 0:
            if n != -EAGAIN:
                self._fail(n, "writev to")
                return False
            n = 0
        self.bytes_sent += n
        ok = True
        for b in bufs:
            lb = len(b)
            if n >= lb:
                n -= lb
                continue
            if n:
                rest = memoryview(b)[n:]
                n = 0
                ok = self._enqueue(rest if type(b) is bytes else bytes(rest))
            else:
                ok = self._enqueue(b if type(b) is bytes else bytes(b))
        return ok

    writev = sendv

    def send_file(self, path_or_fd, offset: int = 0, count: Optional[int] = None, header=None,
                  own_fd: bool = False) -> bool:
        """Send ``count`` bytes of a file from ``offset`` with ``sendfile`` (pread+send fallback).

        Ordered after everything already queued.  A path is opened here; an
        int fd is duplicated (the caller may close theirs at once), or with
        ``own_fd=True`` taken over as it is: the connection closes it when the
        chunk is sent, on teardown, or at once when this call does not accept
        it (closing/closed connection, bad offset, refused by the cap).
        ``header`` is sent first under the same TCP_CORK, so a response head
        and a small file leave in full segments.  Errors opening or
        ``fstat``-ing the file raise here.
        """
        take = own_fd and isinstance(path_or_fd, int)
        if self._state != OPEN or self._shut_pending or self._wr_shut:
            if take:
                os.close(path_or_fd)
            return False
        if offset < 0:
            if take:
                os.close(path_or_fd)
            raise ValueError("offset must be >= 0, got %r" % (offset,))
        if self._queue and self._queued > self.max_queued:
            if take:
                os.close(path_or_fd)
            self._refuse(len(header) if header else 0)
            return False
        if take:
            ffd = path_or_fd
        elif isinstance(path_or_fd, int):
            ffd = os.dup(path_or_fd)
        else:
            ffd = os.open(path_or_fd, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        if count is None:
            try:
                size = os.fstat(ffd).st_size
            except OSError:
                os.close(ffd)
                raise
            count = max(0, size - offset)
        if not self._corked and self._cork_ok:
            _sock.set_cork(self._sock, self.fd, True)
            self._corked = True
        if header:
            self.send(header)
            if self._state != OPEN:
                os.close(ffd)
                return False
        chunk = _FileChunk(ffd, offset, count)
        q = self._queue
        if q is None:
            q = self._queue = collections.deque()
        was_empty = not q
        q.append(chunk)
        if was_empty:
            self._arm_write()
            self._flush()
        return self._state == OPEN and not self._above_high

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        """Set ``high_water``/``low_water`` (asyncio's rule: low defaults to high // 4, high to 4 * low)."""
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not 0 <= low <= high:
            raise ValueError("need 0 <= low (%r) <= high (%r)" % (low, high))
        self.high_water = high
        self.low_water = low
        if self._queued >= high:
            self._above_high = True
        elif self._above_high and self._queued <= low and self._state != CLOSED:
            # Now under the new low mark: on_drain runs from the loop, not inside this call.
            self.loop.defer_call(_DrainLater(self, self._gen))

    def pause_reading(self) -> None:
        """Stop delivering ``on_data`` until ``resume_reading()`` (data waits in the kernel).

        A hang-up is still noticed meanwhile: ``peer_closed`` becomes True.
        """
        if self._paused or self._state == CLOSED:
            return
        self._paused = True
        if not self._edge:
            self._update_interest()

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self._state == CLOSED:
            return
        if self._edge:
            self._schedule_read()  # no new edge will come for data that arrived meanwhile
        else:
            self._update_interest()

    @property
    def reading_paused(self) -> bool:
        return self._paused

    def close(self, reset: bool = False) -> None:
        """Close now, dropping anything queued; ``reset=True`` sends an RST (SO_LINGER {1,0})."""
        if self._state == CLOSED:
            return
        if reset:
            _sock.set_linger(self._sock, self.fd, True, 0)
        self._teardown(None)

    def abort(self) -> None:
        """Close now with an RST, dropping anything queued (``close(reset=True)``)."""
        self.close(True)

    def shutdown(self) -> None:
        """Flush the queue, then send FIN (SHUT_WR); reading goes on until the peer closes.

        If the peer's FIN was already read (``on_eof`` set), the connection
        closes once its FIN is sent: both directions are then finished.
        """
        if self._state == CLOSED or self._shut_pending or self._wr_shut:
            return
        self._shut_pending = True
        if not self._queue:
            self._do_shutdown()

    write_eof = shutdown

    def close_after_drain(self) -> None:
        """Deliver everything queued, send FIN, discard input until the peer's FIN, then close."""
        if self._state != OPEN:
            return
        self._state = CLOSING
        if self._paused:
            self._paused = False
            if self._edge and not self._eof:
                self._schedule_read()
        if not self._edge:
            self._update_interest()
        if self._wr_shut:
            self._after_fin()
        else:
            self._shut_pending = True
            if not self._queue:
                self._do_shutdown()

    @property
    def peer_address(self):
        """The peer's socket address (``(host, port)``, 4-tuple for IPv6, path for unix)."""
        if self._peer is None and self._state != CLOSED:
            try:
                self._peer = self._socket().getpeername()
            except OSError:
                return None
        return self._peer

    @property
    def sock_address(self):
        """This end's socket address (``getsockname()``), cached; None once closed."""
        if self._sockname is None and self._state != CLOSED:
            try:
                self._sockname = self._socket().getsockname()
            except OSError:
                return None
        return self._sockname

    def get_client_ip(self) -> Optional[str]:
        """The peer's IP as text (IPv4-mapped IPv6 unmapped); None for unix sockets.  Cached."""
        if self._ip is None:
            pa = self.peer_address
            if pa is not None:
                self._ip = _addr.client_ip(self.family, pa)
        return self._ip

    def set_nodelay(self, on: bool = True) -> None:
        if self._state != CLOSED and self.family != socket.AF_UNIX:
            _sock.set_nodelay(self._sock, self.fd, on)

    def __repr__(self) -> str:
        st = ("open", "closing", "closed")[self._state]
        return "<Connection fd=%d %s queued=%d>" % (self.fd, st, self._queued)

    # ------------------------------------------------------------ events

    def _on_event(self, fd: int, events: int) -> None:
        if events & (WRITE | ERROR) and self._queue:  # ERROR: the write fails and closes us
            self._flush()
            if self._state == CLOSED:
                return
        if events & (READ | HUP | ERROR) and (not self._eof or events & ERROR):
            if not self._paused:
                self._read(events)
            elif events & ERROR:
                # Paused and reset by the peer: nothing can be sent or read any more.
                self.peer_closed = True
                self._teardown(ConnectionLost(self._so_error() or errno.ECONNRESET, "connection with",
                                              self._peer_str()))
            elif events & HUP:
                if not self.peer_closed:
                    # Paused: the data before the FIN stays unread, but the owner can see
                    # the hang-up (an HTTP server must not hold a CLOSE-WAIT socket forever).
                    self.peer_closed = True
                    if not self._edge:
                        self._update_interest()  # drop POLLRDHUP: level-triggered repeats it
                elif not self._edge:
                    self._read(events)  # level-triggered POLLHUP would be reported forever

    def _schedule_read(self) -> None:
        if not self._read_deferred:
            self._read_deferred = True
            self.loop.defer_call(self._deferred_read)

    def _deferred_read(self) -> None:
        if self._read_deferred:
            self._read_deferred = False
            if self._state != CLOSED and not self._paused and not self._eof:
                # Read until EAGAIN, not just until a short read: the edge of a FIN
                # that arrived while paused was consumed then, and will not come again.
                self._read(HUP)

    def _read(self, events: int) -> None:
        rbuf = self._rbuf
        size = rbuf.size
        view = rbuf.view
        gen = self._gen
        sock = self._sock
        fd = self.fd
        hup = events & HUP
        ptr = rbuf.ptr
        reads = 0
        while reads < _MAX_READS_PER_EVENT:
            reads += 1
            if _NATIVE_IO:
                n = _pp_recv(fd, ptr, size)
            else:
                n = _recv_into(sock, fd, rbuf)
            if n > 0:
                if self._state == OPEN:
                    cb = self.on_data
                    if cb is not None:
                        try:
                            cb(self, view[:n])
                        except Exception as exc:
                            if self._gen == gen:
                                self._teardown(exc)
                            raise
                        if self._gen != gen or self._state == CLOSED:
                            return
                        if self._paused and self._state == OPEN:
                            return
                if n < size and not hup:
                    return
                continue
            if n == 0:
                self._on_eof()
                return
            if n == -EAGAIN:
                return
            self._fail(n, "recv from")
            return
        if self._edge:
            self._schedule_read()

    def _on_eof(self) -> None:
        if self._eof:
            return  # a read after the FIN (e.g. on a later ERROR event) says it again
        self._eof = True
        self.peer_closed = True
        cb = self.on_eof
        if cb is not None and self._state == OPEN:
            # Half-close: the peer is done sending, the write side stays open for the owner.
            if not self._edge:
                self._update_interest()
            gen = self._gen
            try:
                cb(self)
            except Exception as exc:
                if self._gen == gen:
                    self._teardown(exc)
                raise
            if self._gen == gen and self._state == OPEN and self._wr_shut:
                self._teardown(None)  # our FIN went out earlier: both directions are finished
            return
        if self._queue or self._shut_pending:
            # The peer is done sending but may still read: deliver what is queued first.
            self._state = CLOSING
            if not self._edge:
                self._update_interest()
        else:
            self._teardown(None)

    # ------------------------------------------------------------ write path

    def _enqueue(self, data) -> bool:
        q = self._queue
        if q is None:
            q = self._queue = collections.deque()
        was_empty = not q
        q.append(data)
        self._queued += len(data)
        if was_empty:
            if self._cork_ok and not self._corked:
                _sock.set_cork(self._sock, self.fd, True)
                self._corked = True
            self._arm_write()
        if self._queued >= self.high_water:
            self._above_high = True
            return False
        return not self._above_high

    def _refuse(self, size: int) -> None:
        """The cap rule: a write while the queue already holds more than ``max_queued``."""
        exc = WriteQueueFull(
            "write of %d bytes refused: the write queue already holds %d bytes, past the %d-byte cap "
            "(peer %s is not reading); connection closed" % (size, self._queued, self.max_queued, self._peer_str()))
        log.warning("%s", exc)
        self._teardown(exc)

    def _arm_write(self) -> None:
        if not self._edge and not (self._interest & WRITE):
            self._update_interest()

    def _update_interest(self) -> None:
        if self._state == CLOSED:
            return
        ev = 0
        if not self._eof:
            if not self._paused or self._state == CLOSING:
                ev |= READ
            elif not self.peer_closed:
                ev |= RDHUP  # paused: still learn of a hang-up (POLLRDHUP), without the data
        if self._queue:
            ev |= WRITE
        if ev != self._interest:
            self.loop.modify(self.fd, ev)
            self._interest = ev

    def _flush(self) -> None:
        q = self._queue
        sock = self._sock
        fd = self.fd
        while q:
            head = q[0]
            if type(head) is _FileChunk:
                if not self._flush_file(head):
                    return
                q.popleft()
                head.close()
                continue
            if len(q) == 1:
                n = _send(sock, fd, head)
            else:
                bufs = []
                for b in q:
                    if type(b) is _FileChunk or len(bufs) == _IOV_MAX:
                        break
                    bufs.append(b)
                n = _writev(sock, fd, bufs)
            if n < 0:
                if n != -EAGAIN:
                    self._fail(n, "send to")
                return
            self.bytes_sent += n
            self._queued -= n
            partial = False
            while n:
                head = q[0]
                lh = len(head)
                if n >= lh:
                    q.popleft()
                    n -= lh
                else:
                    q[0] = memoryview(head)[n:]
                    partial = True
                    break
            if self._above_high and self._queued <= self.low_water:
                self._drain_event()
                if self._state == CLOSED or q is not self._queue:
                    return
            if partial:
                return  # the kernel buffer is full: a partial write sets SOCK_NOSPACE, WRITE will follow
        self._drained()

    def _flush_file(self, chunk: _FileChunk) -> bool:
        """Send a file chunk until done (True) or EAGAIN/error (False)."""
        sock = self._sock
        fd = self.fd
        while chunk.remaining > 0:
            if chunk.use_sendfile:
                n = _sendfile(sock, fd, chunk.fd, chunk.offset, min(chunk.remaining, 1 << 30))
                if n < 0:
                    if n == -EAGAIN:
                        return False
                    if n in _NO_SENDFILE:
                        chunk.use_sendfile = False  # e.g. a pipe or a filesystem without sendfile
                        continue
                    self._fail(n, "sendfile to")
                    return False
            else:
                want = min(chunk.remaining, _FILE_READ_CHUNK)
                stream = False
                try:
                    data = os.pread(chunk.fd, want, chunk.offset)
                except OSError as exc:
                    if exc.errno != errno.ESPIPE:
                        self._teardown(exc)
                        return False
                    stream = True
                    data = _read_stream(chunk, want)  # a pipe: no offsets, keep what is unsent
                    if data is None:
                        self._teardown(exc)
                        return False
                n = _send(sock, fd, data) if data else 0
                if stream:
                    chunk.pending = (data[n:] if n >= 0 else data) or None
                if n < 0:
                    if n == -EAGAIN:
                        return False
                    self._fail(n, "send to")
                    return False
            if n == 0:
                self._teardown(ConnectionLost(errno.EIO, "file ended %d bytes early while sending to"
                                              % chunk.remaining, self._peer_str()))
                return False
            self.bytes_sent += n
            chunk.offset += n
            chunk.remaining -= n
        return True

    def _drain_event(self) -> None:
        self._above_high = False
        cb = self.on_drain
        if cb is not None:
            cb(self)

    def _drained(self) -> None:
        """The queue just became empty."""
        if self._corked:
            self._corked = False
            _sock.set_cork(self._sock, self.fd, False)
        if not self._edge:
            self._update_interest()
        if self._above_high:
            self._drain_event()
            if self._state == CLOSED or self._queue:
                return
        if self._shut_pending:
            self._do_shutdown()
        elif self._state == CLOSING and self._eof:
            self._teardown(None)

    def _do_shutdown(self) -> None:
        self._shut_pending = False
        self._wr_shut = True
        if self._corked:
            self._corked = False
            _sock.set_cork(self._sock, self.fd, False)
        try:
            self._socket().shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                self._teardown(ConnectionLost(exc.errno or errno.EIO, "shutdown of", self._peer_str()))
                return
        if self._state == CLOSING or self._eof:
            self._after_fin()

    def _after_fin(self) -> None:
        if self._eof:
            self._teardown(None)
        elif self._linger_timer is None:
            self._linger_timer = self.loop.add_timer(self.linger_ms, self._linger_expired)

    def _linger_expired(self) -> None:
        self._linger_timer = None
        self._teardown(None)

    # ------------------------------------------------------------ teardown

    def _socket(self) -> socket.socket:
        s = self._sock
        if s is None:
            s = self._sock = socket.socket(self.family, socket.SOCK_STREAM, 0, self.fd)
            s.setblocking(False)  # PyPy's constructor makes the fd blocking again
        return s

    def _peer_str(self) -> str:
        pa = self.peer_address
        return "peer" if pa is None else _addr.format_addr(self.family, pa)

    def _so_error(self) -> int:
        try:
            return self._socket().getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as exc:
            return exc.errno or 0

    def _fail(self, neg_errno: int, what: str) -> None:
        self._teardown(ConnectionLost(-neg_errno, what, self._peer_str()))

    def _teardown(self, exc: Optional[BaseException]) -> None:
        if self._state == CLOSED:
            return
        self._state = CLOSED
        loop = self.loop
        loop.unregister(self.fd)
        if self._linger_timer is not None:
            loop.cancel_timer(self._linger_timer)
            self._linger_timer = None
        q = self._queue
        if q:
            for item in q:
                if type(item) is _FileChunk:
                    item.close()
        self._queue = None
        self._queued = 0
        if self._sock is not None:
            self._sock.close()
        else:
            try:
                os.close(self.fd)
            except OSError:
                pass
        if self._own_rbuf:
            loop.buffers.release(self._rbuf)
        self._rbuf = None
        owner = self._owner
        cb = self.on_close
        try:
            if cb is not None:
                cb(self, exc)
        finally:
            if owner is not None:
                owner._release(self)


class _Listener:
    __slots__ = ("sock", "fd", "family", "path", "inode")

    def __init__(self, sock: socket.socket, path=None) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.path = path
        self.inode = os.stat(path).st_ino if path is not None else None


class TcpServer:
    """Accepts connections on one or more listening sockets (TCP and/or unix).

    ``on_accept(conn)`` runs for each new connection (set ``conn.on_data``,
    ``conn.context``... there); ``on_data(conn, memoryview)`` and
    ``on_close(conn, exc)`` are the defaults given to every connection.
    Beyond ``max_connections`` live connections a new one is handed to
    ``on_overload(conn)`` (the HTTP layer answers 503 there with ``conn.send``);
    it is then closed after draining, or at once when there is no
    ``on_overload``.  Call ``close()`` when done (it releases the pooled
    receive buffer: the loop's debug mode reports it otherwise).
    """

    def __init__(self, loop: Loop, on_accept: Optional[Callable] = None, on_data: Optional[Callable] = None,
                 on_close: Optional[Callable] = None, max_connections: int = 10000,
                 on_overload: Optional[Callable] = None, nodelay: bool = True, cork: bool = True,
                 high_water: int = DEFAULT_HIGH_WATER, low_water: int = DEFAULT_LOW_WATER,
                 max_queued: int = DEFAULT_MAX_QUEUED, linger_ms: int = DEFAULT_LINGER_MS,
                 backoff_ms: int = 100, max_pooled: int = 1024) -> None:
        if low_water > high_water:
            raise ValueError("low_water (%d) must be <= high_water (%d)" % (low_water, high_water))
        _sock.ignore_sigpipe()
        self.loop = loop
        self.on_accept = on_accept
        self.on_data = on_data
        self.on_close = on_close
        self.on_overload = on_overload
        self.max_connections = max_connections
        self.nodelay = nodelay
        self.cork = cork
        self.high_water = high_water
        self.low_water = low_water
        self.max_queued = max_queued
        self.linger_ms = linger_ms
        self.backoff_ms = backoff_ms
        self.max_pooled = max_pooled
        self.refused = 0  # connections refused beyond max_connections
        self.shed = 0  # connections accepted and closed at once while out of fds
        self._listeners = []
        self._by_fd = {}
        self._conns = set()
        self._active = 0
        self._overflow = 0
        self._pool = []
        self._rbuf = None
        self._reserve_fd = -1
        self._backoff_timer = None
        self._fd_starved = False
        self._starved_logged = False
        self._last_starved_log = None
        self._closed = False
        self._edge = edge_capable(loop)

    # ------------------------------------------------------------ listening

    @property
    def port(self) -> Optional[int]:
        """The bound port of the first TCP listener (useful with ``port=0``)."""
        for lst in self._listeners:
            if lst.family != socket.AF_UNIX:
                return lst.sock.getsockname()[1]
        return None

    @property
    def addresses(self):
        return [lst.sock.getsockname() for lst in self._listeners]

    def listen(self, port: int = 0, host: Optional[str] = "0.0.0.0", backlog: int = 1024,
               reuse_port: bool = False) -> "TcpServer":
        """Listen on ``host:port``.  ``host="::"`` (or None) is dual-stack IPv6 + IPv4."""
        family, sa = _addr.resolve_passive(host, port, socket.SOCK_STREAM)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                if not _sock.have_reuseport():
                    raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not supported on this platform")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if sa[0] in ("::", "") else 1)
            try:
                sock.bind(sa)
            except OSError as exc:
                raise OSError(exc.errno, "cannot listen on %s: %s" % (_addr.format_addr(family, sa), exc.strerror)) from None
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._add_listener(_Listener(sock))
        return self

    def listen_unix(self, path, mode: int = 0o660, backlog: int = 1024) -> "TcpServer":
        """Listen on a unix stream socket; a stale socket file there is removed first."""
        p = _addr.prepare_unix_path(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(p)
            os.chmod(p, mode)
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._add_listener(_Listener(sock, p))
        return self

    def _add_listener(self, lst: _Listener) -> None:
        if self._closed:
            lst.sock.close()
            raise OSError(errno.EBADF, "listen() on a closed TcpServer")
        if self._rbuf is None:
            self._rbuf = self.loop.buffers.acquire()
        if self._reserve_fd < 0:
            self._reserve_fd = _open_reserve()
        self._listeners.append(lst)
        self._by_fd[lst.fd] = lst
        self.loop.register(lst.fd, READ, self._on_listen_event, self._edge)

    # ------------------------------------------------------------ accepting

    @property
    def connection_count(self) -> int:
        return self._active

    @property
    def connections(self):
        return list(self._conns)

    def _on_listen_event(self, fd: int, events: int) -> None:
        lst = self._by_fd.get(fd)
        if lst is None or self._backoff_timer is not None:
            return
        self._accept_all(lst)

    def _accept_all(self, lst: _Listener) -> None:
        accept = _sock.accept
        lsock = lst.sock
        lfd = lst.fd
        budget = _MAX_ACCEPTS_PER_EVENT
        while not self._closed:
            if budget == 0:
                # Let the other fds of this iteration run first.  Edge-triggered epoll will
                # not report the rest of the backlog again, so the next turn is scheduled.
                self.loop.defer_call(_AcceptMore(self, lst))
                return
            budget -= 1
            cfd = accept(lsock, lfd)
            if cfd < 0:
                if cfd == -EAGAIN:
                    return
                if cfd in _SHED:
                    self._starved(lst, -cfd)
                    return
                if cfd in (-errno.ECONNABORTED, -errno.EPROTO, -errno.EPERM, -errno.EINTR):
                    continue  # that one connection died in the backlog; the next may be fine
                log.error("accept() on %s failed: %s", _addr.format_addr(lst.family, lsock.getsockname()),
                          os.strerror(-cfd))
                return
            if self._fd_starved:
                self._fd_starved = False
                if self._starved_logged:
                    self._starved_logged = False
                    log.warning("file descriptors available again: accepting (shed %d connections so far)",
                                self.shed)
            self._setup(cfd, lst.family)

    def _setup(self, cfd: int, family: int) -> None:
        sock = None
        if _NEED_SOCK:
            sock = socket.socket(family, socket.SOCK_STREAM, 0, cfd)
            sock.setblocking(False)  # PyPy's constructor makes the fd blocking again
        overflow = self._active >= self.max_connections
        if overflow:
            self.refused += 1
            if self.on_overload is None or self._overflow >= 64:
                if sock is not None:
                    sock.close()
                else:
                    os.close(cfd)
                return
        if self.nodelay and family != socket.AF_UNIX:
            _sock.set_nodelay(sock, cfd, True)
        conn = self._pool.pop() if self._pool else Connection()
        try:
            conn._open(self.loop, cfd, sock, family, self, self._rbuf, False, self.on_data, self.on_close,
                       self.cork, self.high_water, self.low_water, self.max_queued, self.linger_ms)
        except OSError as exc:
            log.error("cannot watch accepted fd %d: %s", cfd, exc)
            if sock is not None:
                sock.close()
            else:
                os.close(cfd)
            conn._reset()
            return
        self._conns.add(conn)
        if overflow:
            conn._overflow = True
            self._overflow += 1
            try:
                self.on_overload(conn)
            except Exception as exc:
                conn._teardown(exc)
                report(self.loop, exc)
                return
            conn.close_after_drain()
            return
        self._active += 1
        cb = self.on_accept
        if cb is not None:
            try:
                cb(conn)
            except Exception as exc:
                conn._teardown(exc)
                report(self.loop, exc)

    def _starved(self, lst: _Listener, err: int) -> None:
        """Out of fds: shed the backlog with the reserved fd, then stop accepting for a while."""
        if not self._fd_starved:
            self._fd_starved = True
            now = self.loop.now_ms()
            # Once per episode, and episodes that flap (fds freed and taken again
            # while a backlog of dead connections drains) at most once a minute.
            if self._last_starved_log is None or now - self._last_starved_log >= _STARVED_LOG_EVERY_MS:
                self._last_starved_log = now
                self._starved_logged = True
                log.warning("accept(): %s; shedding new connections and retrying every %d ms",
                            os.strerror(err), self.backoff_ms)
        if self._reserve_fd >= 0:
            os.close(self._reserve_fd)
            self._reserve_fd = -1
            for _ in range(64):
                cfd = _sock.accept(lst.sock, lst.fd)
                if cfd < 0:
                    break
                os.close(cfd)
                self.shed += 1
            self._reserve_fd = _open_reserve()
        # Level-triggered backends would report the listener forever: stop watching it.
        for other in self._listeners:
            self.loop.unregister(other.fd)
        self._backoff_timer = self.loop.add_timer(self.backoff_ms, self._end_backoff)

    def _end_backoff(self) -> None:
        self._backoff_timer = None
        if self._closed:
            return
        for lst in self._listeners:
            self.loop.register(lst.fd, READ, self._on_listen_event, self._edge)
        for lst in list(self._listeners):
            if self._backoff_timer is not None:
                break
            self._accept_all(lst)  # edge-triggered: the backlog raised no new edge meanwhile

    def _release(self, conn: Connection) -> None:
        self._conns.discard(conn)
        if conn._overflow:
            self._overflow -= 1
        else:
            self._active -= 1
        conn._reset()
        if len(self._pool) < self.max_pooled:
            self._pool.append(conn)

    # ------------------------------------------------------------ closing

    def stop_listening(self) -> None:
        """Close the listening sockets; live connections go on."""
        if self._backoff_timer is not None:
            self.loop.cancel_timer(self._backoff_timer)
            self._backoff_timer = None
        for lst in self._listeners:
            self.loop.unregister(lst.fd)
            lst.sock.close()
            if lst.path is not None:
                try:
                    if os.stat(lst.path).st_ino == lst.inode:
                        os.unlink(lst.path)
                except OSError:
                    pass
        self._listeners = []
        self._by_fd = {}

    def close(self) -> None:
        """Stop listening and close every connection now (``on_close`` runs for each)."""
        if self._closed:
            return
        self.stop_listening()
        self._closed = True
        for conn in list(self._conns):
            try:
                conn.close()
            except Exception as exc:
                report(self.loop, exc)
        if self._reserve_fd >= 0:
            os.close(self._reserve_fd)
            self._reserve_fd = -1
        if self._rbuf is not None:
            self.loop.buffers.release(self._rbuf)
            self._rbuf = None
        self._pool = []

    def __enter__(self) -> "TcpServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _AcceptMore:
    """The next turn of a listener's backlog (see ``_MAX_ACCEPTS_PER_EVENT``)."""

    __slots__ = ("server", "lst")

    def __init__(self, server: TcpServer, lst: _Listener) -> None:
        self.server = server
        self.lst = lst

    def __call__(self) -> None:
        srv = self.server
        if not srv._closed and srv._backoff_timer is None and srv._by_fd.get(self.lst.fd) is self.lst:
            srv._accept_all(self.lst)


def _read_stream(chunk: _FileChunk, want: int):
    """Next bytes of a non-seekable source (pipe): unsent leftovers first, else a read."""
    if chunk.pending:
        return chunk.pending
    try:
        return os.read(chunk.fd, want)
    except BlockingIOError:
        return b""
    except OSError:
        return None


def _open_reserve() -> int:
    try:
        return os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return -1
