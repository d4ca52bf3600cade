"""File chunks in a connection's write queue: ``sendfile`` with a pread+send fallback.

A ``FileChunk`` sits in the same queue as bytes, so ``send_file`` is strictly
ordered with ``send``.  ``sendfile`` moves the bytes without a copy through
user space; where it is impossible (a pipe, a filesystem without it: EINVAL,
ENOSYS, ESPIPE...) the chunk switches for good to ``pread`` (``read`` for a
pipe, keeping what the socket did not take) plus ``send``, 256 KiB at a time.
A file that ends before ``count`` bytes closes the connection with EIO: the
peer was promised a length, so a short body must not look complete.

The chunk owns its fd (opened here from a path, ``dup``-ed from a caller's
fd, or taken over with ``own_fd=True``) and closes it when sent or when the
connection is torn down.
"""
import errno
import os
from typing import Optional

from .._ffi import _sock
from .errors import ConnectionLost

EAGAIN = errno.EAGAIN
_NO_SENDFILE = frozenset((-errno.EINVAL, -errno.ENOSYS, -errno.EOPNOTSUPP, -errno.ESPIPE,
                          -getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)))
_FILE_READ_CHUNK = 256 * 1024
_sendfile = _sock.sendfile
_send = _sock.send


class FileChunk:
    __slots__ = ("fd", "offset", "remaining", "use_sendfile", "pending")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.remaining = count
        self.use_sendfile = True
        self.pending: Optional[bytes] = None  # non-seekable source: bytes read but not yet sent

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_chunk(path_or_fd, offset: int, count: Optional[int], take: bool) -> FileChunk:
    """A chunk for ``send_file``: open a path, dup an fd, or (``take``) own the fd as it is.

    Raises on a bad offset or a file that cannot be opened/``fstat``-ed; a
    taken fd is closed then too, so ownership never leaks back to the caller.
    """
    if offset < 0:
        if take:
            os.close(path_or_fd)
        raise ValueError("offset must be >= 0, got %r" % (offset,))
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
    return FileChunk(ffd, offset, count)


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
        else:
            want = min(chunk.remaining, _FILE_READ_CHUNK)
            stream = False
            try:
                data = os.pread(chunk.fd, want, chunk.offset)
            except OSError as exc:
                if exc.errno != errno.ESPIPE:
                    conn._teardown(exc)
                    return False
                stream = True
                data = _read_stream(chunk, want)  # a pipe: no offsets, keep what is unsent
                if data is None:
                    conn._teardown(exc)
                    return False
            n = _send(sock, fd, data) if data else 0
            if stream:
                chunk.pending = (data[n:] if n >= 0 else data) or None
            if n < 0:
                if n == -EAGAIN:
                    return False
                conn._fail(n, "send to")
                return False
        if n == 0:
            conn._teardown(ConnectionLost(errno.EIO, "file ended %d bytes early while sending to"
                                          % chunk.remaining, conn._peer_str()))
            return False
        conn.bytes_sent += n
        chunk.offset += n
        chunk.remaining -= n
    return True



def _read_stream(chunk: FileChunk, want: int):
    """Next bytes of a non-seekable source (pipe): unsent leftovers first, else a read."""
    if chunk.pending:
        return chunk.pending
    try:
        return os.read(chunk.fd, want)
    except BlockingIOError:
        return b""
    except OSError:
        return None
