"""Pooled receive buffers.

A connection reads into a buffer it borrows from the loop's pool and gives it
back when it closes, so steady-state serving allocates no 64 KiB blocks at all.
The pool is bounded (``max_pooled``): buffers returned beyond it are dropped
for the GC, so a burst of 100k connections does not pin 6 GiB forever.

``outstanding`` counts buffers handed out and not returned; the loop's debug
mode reports a non-zero count at ``close()`` as a leak.

With the native module each buffer also carries a cffi pointer made once
(``ptr``), so ``recv`` into it needs no ``ffi.from_buffer`` per call.
"""
from typing import List

from . import _ffi

DEFAULT_BUFFER_SIZE = 64 * 1024  # one TCP receive window's worth on loopback
DEFAULT_MAX_POOLED = 256


class RecvBuffer:
    """A fixed-size bytearray plus its zero-copy views."""

    __slots__ = ("data", "view", "ptr", "size")

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.view = memoryview(self.data)
        self.ptr = _ffi.ffi.from_buffer(self.data) if _ffi.NATIVE else None
        self.size = size


class BufferPool:
    __slots__ = ("buffer_size", "max_pooled", "outstanding", "_free")

    def __init__(self, buffer_size: int = DEFAULT_BUFFER_SIZE, max_pooled: int = DEFAULT_MAX_POOLED) -> None:
        if buffer_size <= 0:
            raise ValueError("buffer_size must be positive, got %r" % (buffer_size,))
        self.buffer_size = buffer_size
        self.max_pooled = max_pooled
        self.outstanding = 0
        self._free: List[RecvBuffer] = []

    def acquire(self) -> RecvBuffer:
        self.outstanding += 1
        if self._free:
            return self._free.pop()
        return RecvBuffer(self.buffer_size)

    def release(self, buf: RecvBuffer) -> None:
        if self.outstanding <= 0:
            raise ValueError("release() of a buffer this pool did not hand out")
        self.outstanding -= 1
        if len(self._free) < self.max_pooled and buf.size == self.buffer_size:
            self._free.append(buf)

    @property
    def pooled(self) -> int:
        """Buffers kept for reuse right now."""
        return len(self._free)
