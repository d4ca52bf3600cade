"""The write path of a stream connection: queue, TCP_CORK, backpressure, the cap rule.

``_Writer`` is the base class of ``net.connection.Connection`` holding the
methods that put bytes on the wire; the state it works on (the queue, the
water marks, the fd) is declared in ``Connection.__slots__``.

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
   Queued file chunks count too (``_backlog``): each as ``file_weight``,
   ``high_water // FILES_HIGH`` -- for the descriptor it holds open, not for
   its bytes, which stay on disk -- so ``FILES_HIGH`` chunks alone reach high
   water and ``on_drain`` waits until the chunks and the bytes together are
   back at low water (16 chunks with the default marks).  Counting bytes
   only, ``on_drain`` fired once the small heads *between* the chunks were
   out, and a producer paced by it stacked one batch of open fds per call.
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
"""
import collections
import errno
import os
from typing import TYPE_CHECKING, Any, Optional

from .._log import get_logger
from .. import _ffi
from .._ffi import _sock
from ._filesend import FileChunk, open_chunk
from ._filesend import flush_file as _flush_file
from .errors import WriteQueueFull

log = get_logger("powpow.net")

READ, WRITE, ERROR, HUP, RDHUP = 0x001, 0x004, 0x008, 0x010, 0x2000
OPEN, CLOSING, CLOSED = 0, 1, 2
EAGAIN = errno.EAGAIN

DEFAULT_HIGH_WATER = 1 << 20
DEFAULT_LOW_WATER = 256 << 10
DEFAULT_MAX_QUEUED = 32 << 20
# File chunks queued by send_file are sent from the file (no memory), but each holds an
# open fd: each counts towards the water marks as file_weight(high_water), so FILES_HIGH
# queued chunks alone are at high water (send_file returns False: wait for on_drain) --
# the weight the HTTP server gives a file part in its batch limit.  A call while FILES_MAX
# are queued is refused like a write past the cap.
FILES_HIGH = 64
FILES_MAX = 1024


def file_weight(high_water: int) -> int:
    """What one queued file chunk counts towards the water marks (at least 1, so that
    with a zero low mark on_drain still waits for the last chunk)."""
    return high_water // FILES_HIGH or 1

# Native mode: the hottest call goes straight to the shim (no wrapper frame);
# the wrappers in _ffi._sock stay the single definition for everything else.
_FAST_IO = _sock.FAST_IO  # CPython: FASTCALL builtins (src/pp_cpyio.c), any buffer without from_buffer
_fast_send = _sock.fast_send
_NATIVE_IO = _ffi.NATIVE
if _NATIVE_IO:
    _pp_send = _ffi.lib.pp_send
    _from_buffer = _ffi.ffi.from_buffer
_send = _sock.send
_writev = _sock.writev
_IOV_MAX = _sock.IOV_MAX


def _flat(data):
    """``data`` as something whose ``len()`` is its size in bytes.

    bytes and bytearray already are; a typed buffer (``array('i')``, a numpy
    array, a ``memoryview.cast('I')``) counts items, so every length and offset
    computed from it would be wrong: it becomes a flat byte view (a copy only
    when it is not contiguous)."""
    m = data if type(data) is memoryview else memoryview(data)
    if m.itemsize == 1 and m.ndim == 1:
        return m
    if m.c_contiguous:
        return m.cast("B")
    return memoryview(m.tobytes())


class _DrainLater:
    """``on_drain`` from the loop after ``set_write_buffer_limits`` lowered the marks."""

    __slots__ = ("conn", "gen")

    def __init__(self, conn: "_Writer", gen: int) -> None:
        self.conn = conn
        self.gen = gen

    def __call__(self) -> None:
        c = self.conn
        if c._gen == self.gen and c._state != CLOSED and c._above_high and c._backlog() <= c.low_water:
            c._drain_event()


class _Writer:
    """Write-path methods of ``Connection`` (no state of its own: see ``Connection.__slots__``)."""

    if not TYPE_CHECKING:  # no __dict__ at run time; type checkers see the attributes declared below
        __slots__ = ()

    # Declared for type checkers; the slots live in Connection.
    loop: Any
    fd: int
    on_drain: Any
    _sock: Any
    _gen: int
    _state: int
    _edge: bool
    _queue: Optional[collections.deque]
    _queued: int
    _files: int
    _corked: bool
    _cork_ok: bool
    _interest: int
    _shut_pending: bool
    _wr_shut: bool
    _eof: bool
    _above_high: bool
    high_water: int
    low_water: int
    max_queued: int
    bytes_sent: int

    def _teardown(self, exc: Optional[BaseException]) -> None:
        raise NotImplementedError

    def _fail(self, neg_errno: int, what: str) -> None:
        raise NotImplementedError

    def _peer_str(self) -> str:
        raise NotImplementedError

    def _update_interest(self) -> None:
        raise NotImplementedError

    def _do_shutdown(self) -> None:
        raise NotImplementedError

    @property
    def queued_bytes(self) -> int:
        """Bytes in memory waiting for the kernel (file chunks are not bytes in memory: see
        ``output_pending``; the water marks count them, see ``_backlog``)."""
        return self._queued

    @property
    def queued_files(self) -> int:
        """File chunks (``send_file`` parts not sent yet) in the queue: each holds its file
        descriptor open until it is sent."""
        return self._files

    def want_drain(self) -> None:
        """Have ``on_drain`` run once the queue makes progress and is at ``low_water``, as if
        it had passed ``high_water`` (``writable`` is False until then).  For a caller that
        bounds something the marks do not, e.g. how many files it keeps queued; with an
        empty queue there is no progress to wait for, and no call comes."""
        self._above_high = True

    def _backlog(self) -> int:
        """The queue as the water marks see it: bytes, plus ``file_weight`` per file chunk."""
        files = self._files
        return self._queued + files * file_weight(self.high_water) if files else self._queued

    @property
    def output_pending(self) -> bool:
        """True while anything has not reached the kernel: bytes, a file chunk, or a pending FIN."""
        return bool(self._queue) or self._shut_pending

    @property
    def writable(self) -> bool:
        """False when ``send`` would be refused or the queue (bytes and file chunks) is above ``high_water``."""
        return self._state == OPEN and not self._shut_pending and not self._wr_shut and not self._above_high

    def send(self, data) -> bool:
        """Write ``data`` (bytes-like) now; queue what the kernel does not take.

        Returns False when the data was not accepted (connection closing or
        closed, or refused by the ``max_queued`` cap: see the module docstring)
        or when the queue is now at/above ``high_water`` (the data IS queued:
        stop producing and wait for ``on_drain``).
        """
        if self._state != OPEN or self._shut_pending or self._wr_shut:
            return False
        if type(data) is not bytes and type(data) is not bytearray:
            data = _flat(data)
        if self._queue:
            if self._queued > self.max_queued:
                self._refuse(len(data))
                return False
            return self._enqueue(data if type(data) is bytes else bytes(data))
        ln = len(data)
        if _FAST_IO:
            n = _fast_send(self.fd, data)
        elif _NATIVE_IO:
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
        bufs = [b if type(b) is bytes or type(b) is bytearray else _flat(b) for b in buffers]
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
        return self.queue_file(path_or_fd, offset, count, header, own_fd) is not None and \
            self._state == OPEN and not self._above_high

    def queue_file(self, path_or_fd, offset: int = 0, count: Optional[int] = None, header=None,
                   own_fd: bool = False, short_ok: bool = False) -> Optional[FileChunk]:
        """``send_file`` that returns the chunk it queued (None when refused), for a caller
        that may give up on it (``drop_file``).  ``short_ok``: a file that ends before
        ``count`` ends the chunk (``chunk.short`` tells by how much), not the connection."""
        take = own_fd and isinstance(path_or_fd, int)
        if self._state != OPEN or self._shut_pending or self._wr_shut:
            if take:
                os.close(path_or_fd)
            return None
        files = self._files
        if self._queue:
            if self._queued > self.max_queued or files >= FILES_MAX:
                if take:
                    os.close(path_or_fd)
                if files >= FILES_MAX:
                    exc = WriteQueueFull(
                        "send_file refused: %d file chunks already queued (the cap is %d; peer %s is not "
                        "reading); connection closed" % (files, FILES_MAX, self._peer_str()))
                    log.warning("%s", exc)
                    self._teardown(exc)
                else:
                    self._refuse(len(header) if header else 0)
                return None
        chunk = open_chunk(path_or_fd, offset, count, take)  # raises on a bad file or offset
        chunk.short_ok = short_ok
        if not self._corked and self._cork_ok:
            _sock.set_cork(self._sock, self.fd, True)
            self._corked = True
        if header:
            self.send(header)
            if self._state != OPEN:
                chunk.close()
                return None
        q = self._queue
        if q is None:
            q = self._queue = collections.deque()
        was_empty = not q
        q.append(chunk)
        self._files += 1
        if self._backlog() >= self.high_water:
            self._above_high = True  # push back: on_drain follows once chunks and bytes are low again
        if was_empty:
            self._arm_write()
            self._flush()
        return chunk

    def drop_file(self, chunk: FileChunk) -> None:
        """Send no more of ``chunk`` (from ``queue_file``): its caller gave up on it, as a
        cancelled ``loop.sendfile`` does.  What the kernel took stays sent; what was queued
        after the chunk follows at once."""
        if chunk.fd < 0 or self._state == CLOSED:
            return  # sent already (its fd is closed), or gone with the connection
        chunk.remaining = 0
        chunk.pending = None
        if self._queue and self._queue[0] is chunk:
            self._flush()  # (pops it, closes its fd, goes on with what follows)

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
        backlog = self._backlog()
        if self._queue and backlog >= high:
            self._above_high = True
        elif self._above_high and backlog <= low and self._state != CLOSED:
            # Now under the new low mark: on_drain runs from the loop, not inside this call.
            self.loop.defer_call(_DrainLater(self, self._gen))

    def _enqueue(self, data) -> bool:
        if not len(data):  # an empty item would never leave the queue (_flush pops what was sent)
            return not self._above_high
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
        if self._queued >= self.high_water or (self._files and self._backlog() >= self.high_water):
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

    def _flush(self) -> None:
        q = self._queue
        sock = self._sock
        fd = self.fd
        while q:
            head = q[0]
            if type(head) is FileChunk:
                if not _flush_file(self, head):
                    return
                q.popleft()
                head.close()
                self._files -= 1
                # (an empty queue: _drained() tells, after the loop -- not a send_file from
                # on_drain flushing inside this one)
                if q and self._above_high and self._backlog() <= self.low_water:
                    self._drain_event()
                    if self._state == CLOSED or q is not self._queue:
                        return
                continue
            if len(q) == 1:
                n = _send(sock, fd, head)
            else:
                bufs: list = []
                for b in q:
                    if type(b) is FileChunk or len(bufs) == _IOV_MAX:
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
            if self._above_high and self._backlog() <= self.low_water:
                self._drain_event()
                if self._state == CLOSED or q is not self._queue:
                    return
            if partial:
                return  # the kernel buffer is full: a partial write sets SOCK_NOSPACE, WRITE will follow
        self._drained()

    def _source_ready(self) -> None:
        """A ``send_file`` stream source that was empty is readable: send on."""
        if self._state != CLOSED:
            self._flush()
            if not self._edge:
                self._update_interest()

    def _owner_call(self, cb) -> bool:
        """``cb(self)`` for an owner callback (on_drain, on_eof).  If it raises, the connection
        goes down with the error, as for on_data (the loop's handler reports it), instead of
        being left half-finished.  True when this is still the same connection afterwards."""
        gen = self._gen
        try:
            cb(self)
        except Exception as exc:
            if self._gen == gen:
                self._teardown(exc)
            raise
        return self._gen == gen

    def _drain_event(self) -> None:
        self._above_high = False
        cb = self.on_drain
        if cb is not None:
            self._owner_call(cb)

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
