"""epoll backends: native (one C call per poll, results flattened in C) and ``select.epoll``.

Why EPOLLRDHUP with READ: a peer's half-close then shows up as HUP together
with READ, so protocol code can tell "FIN after data" from "more data".
Level-triggered by default; ``edge=True`` sets EPOLLET (the TCP layer reads
until EAGAIN, so edge mode saves one epoll_wait wake-up per readable burst).
"""
import errno
import os
import select

from .. import _ffi
from .._ffi import _sock
from . import MAX_CAPACITY, RDHUP, flatten

EPOLL_CTL_ADD = 1
EPOLL_CTL_DEL = 2
EPOLL_CTL_MOD = 3
_EDGE = 1 << 31
_EMPTY = ()
_EINTR = errno.EINTR
# CPython with the native module: epoll_wait as a METH_FASTCALL builtin that returns
# the flat list itself (src/pp_cpyio.c); None elsewhere (the cffi call + ffi.unpack).
_FAST_WAIT = _sock.FAST_WAIT


def _oserror(err: int, what: str) -> OSError:
    return OSError(err, "%s: %s" % (what, os.strerror(err)))


class NativeEpoll:
    name = "epoll"
    native = True

    def __init__(self) -> None:
        lib = _ffi.lib
        fd = lib.pp_epoll_create()
        if fd < 0:
            raise _oserror(-fd, "epoll_create1")
        self.fd = fd
        self._ctl = lib.pp_epoll_ctl
        self._wait = lib.pp_epoll_wait
        self._unpack = _ffi.ffi.unpack
        # Preallocated once at the largest capacity (no allocation per poll), for the
        # call in use only: a bytearray for the builtin, a cdata array for cffi.
        if _FAST_WAIT is not None:
            self._buf = bytearray(16 * MAX_CAPACITY)
            self._out = None
        else:
            self._buf = None
            self._out = _ffi.ffi.new("int64_t[]", 2 * MAX_CAPACITY)

    def register(self, fd: int, events: int, token: int, edge: bool = False) -> None:
        r = self._ctl(self.fd, EPOLL_CTL_ADD, fd, events | (_EDGE if edge else 0), token)
        if r < 0:
            raise _oserror(-r, "epoll_ctl(ADD, fd=%d)" % fd)

    def modify(self, fd: int, events: int, token: int, edge: bool = False) -> None:
        r = self._ctl(self.fd, EPOLL_CTL_MOD, fd, events | (_EDGE if edge else 0), token)
        if r < 0:
            raise _oserror(-r, "epoll_ctl(MOD, fd=%d)" % fd)

    def unregister(self, fd: int) -> None:
        # EBADF/ENOENT: the fd was closed first, which already removed it from the set.
        self._ctl(self.fd, EPOLL_CTL_DEL, fd, 0, 0)

    def poll(self, timeout_ms: int, capacity: int):
        if capacity > MAX_CAPACITY:  # the event array holds MAX_CAPACITY events
            capacity = MAX_CAPACITY
        if _FAST_WAIT is not None:
            r = _FAST_WAIT(self.fd, self._buf, capacity, timeout_ms)
            if r.__class__ is list:
                return r
            raise _oserror(-r, "epoll_wait")
        n = self._wait(self.fd, self._out, capacity, timeout_ms)
        if n > 0:
            return self._unpack(self._out, 2 * n)
        if n < 0 and n != -_EINTR:  # EINTR: back to the interpreter, which runs the signal's handler
            raise _oserror(-n, "epoll_wait")
        return _EMPTY

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_IN = select.EPOLLIN | select.EPOLLPRI if hasattr(select, "EPOLLIN") else 0
_RDHUP = getattr(select, "EPOLLRDHUP", 0x2000)


def _epoll_mask(events: int, edge: bool) -> int:
    m = 0
    if events & 0x001:
        m |= select.EPOLLIN | _RDHUP
    elif events & RDHUP:
        m |= _RDHUP
    if events & 0x004:
        m |= select.EPOLLOUT
    if edge:
        m |= select.EPOLLET
    return m


class SelectEpoll:
    """Pure twin on ``select.epoll``; translates fd -> token right after the poll."""

    name = "epoll"
    native = False

    def __init__(self) -> None:
        self._ep = select.epoll()
        self.fd = self._ep.fileno()
        self._tokens = {}

    def register(self, fd: int, events: int, token: int, edge: bool = False) -> None:
        self._ep.register(fd, _epoll_mask(events, edge))
        self._tokens[fd] = token

    def modify(self, fd: int, events: int, token: int, edge: bool = False) -> None:
        self._ep.modify(fd, _epoll_mask(events, edge))
        self._tokens[fd] = token

    def unregister(self, fd: int) -> None:
        self._tokens.pop(fd, None)
        try:
            self._ep.unregister(fd)
        except OSError:
            pass  # closed first: the kernel already dropped it

    def poll(self, timeout_ms: int, capacity: int):
        res = self._ep.poll(timeout_ms / 1000.0 if timeout_ms >= 0 else -1, capacity)
        if not res:
            return _EMPTY
        return flatten(res, self._tokens, _IN, select.EPOLLOUT, select.EPOLLERR, select.EPOLLHUP | _RDHUP)

    def close(self) -> None:
        self._ep.close()
        self._tokens.clear()
