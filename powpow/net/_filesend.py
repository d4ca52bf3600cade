"""File chunks in a connection's write queue: ``sendfile`` with a pread+send fallback.

A ``FileChunk`` sits in the same queue as bytes, so ``send_file`` is strictly
ordered with ``send``.  ``sendfile`` moves the bytes without a copy through
user space; where it is impossible (a pipe, a filesystem without it: EINVAL,
ENOSYS...) the chunk switches for good to ``pread`` plus ``send``, 256 KiB at
a time.  A file that ends before ``count`` bytes closes the connection with
EIO: the peer was promised a length, so a short body must not look complete.

A stream source (a pipe, FIFO, socket or character device: anything ``fstat``
does not call a regular file or block device) is never read while empty: a
blocking ``read`` would stall the whole loop until its writer wrote.  The chunk
asks ``poll`` first; when nothing is there it watches the source on the
connection's loop and the send resumes once the source is readable.  Its
``count`` may be None: send until the source's EOF.

The chunk owns its fd (opened here from a path, ``dup``-ed from a caller's
fd, or taken over with ``own_fd=True``) and closes it when sent or when the
connection is torn down.  ``short_ok`` (asyncio's ``loop.sendfile``, which
promised no length) makes a file that ends early end only its chunk.
"""
import errno
import os
import select
import stat
from typing import Callable, Optional

from .._ffi import _sock
from ..poller import READ
from .errors import ConnectionLost

EAGAIN = errno.EAGAIN
_NO_SENDFILE = frozenset((-errno.EINVAL, -errno.ENOSYS, -errno.EOPNOTSUPP, -errno.ESPIPE,
                          -getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)))
_FILE_READ_CHUNK = 256 * 1024
_sendfile = _sock.sendfile
_send = _sock.send


class FileChunk:
    __slots__ = ("fd", "offset", "remaining", "use_sendfile", "pending", "stream", "to_eof", "short_ok",
                 "short", "_probe", "_watch", "_on_ready")

    def __init__(self, fd: int, offset: int, count: Optional[int], stream: bool = False) -> None:
        self.fd = fd
        self.offset = offset
        self.to_eof = count is None  # a stream without a count: its EOF ends the chunk
        self.remaining = (1 << 62) if count is None else count
        self.use_sendfile = not stream
        self.stream = stream
        self.pending: Optional[bytes] = None  # stream source: bytes read but not yet sent
        self.short_ok = False  # a file that ends early ends the chunk (``short``), not the connection
        self.short = 0  # bytes the file lacked (with short_ok)
        self._probe = None  # select.poll() on the source, made on first use
        self._watch = None  # the loop watching the source while it is empty
        self._on_ready: Optional[Callable[[], None]] = None

    @property
    def waiting(self) -> bool:
        """An empty stream source is being watched: nothing to send until it is readable."""
        return self._watch is not None

    def readable(self, loop, on_ready: Callable[[], None]) -> bool:
        """True when reading the stream source now will not block (bytes, EOF or an error
        wait); else watch it on ``loop`` and call ``on_ready()`` once, when it is readable."""
        if self._watch is not None:
            return False
        probe = self._probe
        if probe is None:
            probe = self._probe = select.poll()
            probe.register(self.fd, select.POLLIN)
        if probe.poll(0):
            return True
        loop.register(self.fd, READ, self._ready)  # level-triggered
        self._watch = loop
        self._on_ready = on_ready
        return False

    def _ready(self, fd: int, events: int) -> None:
        self._unwatch()
        cb = self._on_ready
        self._on_ready = None
        if cb is not None:
            cb()

    def _unwatch(self) -> None:
        if self._watch is not None:
            self._watch.unregister(self.fd)
            self._watch = None

    def close(self) -> None:
        if self.fd >= 0:
            self._unwatch()
            self._on_ready = None
            os.close(self.fd)
            self.fd = -1


def _bad_range(offset, count) -> Optional[Exception]:
    """The error for an ``offset``/``count`` that no chunk may be made of, else None.

    Checked before anything is queued: a chunk with a float count would make
    every later flush raise, blocking the queue (and any close behind it).
    """
    if not isinstance(offset, int):
        return TypeError("offset must be an int, got %s" % type(offset).__name__)
    if offset < 0:
        return ValueError("offset must be >= 0, got %r" % (offset,))
    if count is not None:
        if not isinstance(count, int):
            return TypeError("count must be an int or None, got %s" % type(count).__name__)
        if count < 0:
            return ValueError("count must be >= 0 or None, got %r" % (count,))
    return None


def open_chunk(path_or_fd, offset: int, count: Optional[int], take: bool) -> FileChunk:
    """A chunk for ``send_file``: open a path, dup an fd, or (``take``) own the fd as it is.

    Raises on a bad offset or a file that cannot be opened/``fstat``-ed; a
    taken fd is closed then too, so ownership never leaks back to the caller.
    """
    problem = _bad_range(offset, count)
    if problem is not None:
        if take:
            os.close(path_or_fd)
        raise problem
    if take:
        ffd = path_or_fd
    elif isinstance(path_or_fd, int):
        ffd = os.dup(path_or_fd)
    else:
        ffd = os.open(path_or_fd, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(ffd)
    except OSError:
        os.close(ffd)
        raise
    stream = not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode))
    if count is None and not stream:
        count = max(0, st.st_size - offset)
    return FileChunk(ffd, offset, count, stream)


def flush_file(conn, chunk: FileChunk) -> bool:
    """Send ``chunk`` on ``conn`` until done (True) or EAGAIN/error (False; an error closed ``conn``)."""
    sock = conn._sock
    fd = conn.fd
    while chunk.remaining > 0:
        if chunk.use_sendfile:
            n = _sendfile(sock, fd, chunk.fd, chunk.offset, min(chunk.remaining, 1 << 30))
            if n < 0:
                if n == -EAGAIN:
                    return False
                if n in _NO_SENDFILE:
                    chunk.use_sendfile = False  # e.g. a pipe or a filesystem without sendfile
                    continue
                conn._fail(n, "sendfile to")
                return False
        elif chunk.stream:
            data = chunk.pending
            if not data:
                if not chunk.readable(conn.loop, conn._source_ready):
                    if not conn._edge:
                        conn._update_interest()  # no POLLOUT while the source is empty
                    return False
                try:
                    data = os.read(chunk.fd, min(chunk.remaining, _FILE_READ_CHUNK))
                except OSError as exc:
                    conn._teardown(exc)
                    return False
                if not data and chunk.to_eof:
                    chunk.remaining = 0  # a stream sent to its end
                    break
            n = _send(sock, fd, data) if data else 0
            if n > 0 or n == -EAGAIN:
                chunk.pending = data[n:] if n > 0 else data
            if n < 0:
                if n == -EAGAIN:
                    return False
                conn._fail(n, "send to")
                return False
        else:
            try:
                data = os.pread(chunk.fd, min(chunk.remaining, _FILE_READ_CHUNK), chunk.offset)
            except OSError as exc:
                conn._teardown(exc)
                return False
            n = _send(sock, fd, data) if data else 0
            if n < 0:
                if n == -EAGAIN:
                    return False
                conn._fail(n, "send to")
                return False
        if n == 0:
            if chunk.short_ok:  # loop.sendfile: a file that shrank sends what it has (as asyncio)
                chunk.short = chunk.remaining
                chunk.remaining = 0
                break
            conn._teardown(ConnectionLost(errno.EIO, "file ended %d bytes early while sending to"
                                          % chunk.remaining, conn._peer_str()))
            return False
        conn.bytes_sent += n
        chunk.offset += n
        chunk.remaining -= n
    return True
