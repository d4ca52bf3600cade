"""kqueue backends (BSD, macOS): native shim (token in ``udata``) and ``select.kqueue``.

kqueue has one filter per direction; ``pp_kqueue_ctl`` adds the wanted filters
and deletes the others, so ``modify`` is one call like epoll's.  The native
shim maps results onto the epoll bit values, so the loop never knows which
backend it runs on.  Compiled and selected only where <sys/event.h> exists.
"""
import errno
import os
import select

from .. import _ffi
from . import MAX_CAPACITY

_EMPTY = ()


class NativeKqueue:  # pragma: no cover - exercised on BSD/macOS only
    name = "kqueue"
    native = True

    def __init__(self) -> None:
        lib = _ffi.lib
        fd = lib.pp_kqueue_create()
        if fd < 0:
            raise OSError(-fd, "kqueue: " + os.strerror(-fd))
        self.fd = fd
        self._ctl = lib.pp_kqueue_ctl
        self._wait = lib.pp_kqueue_wait
        self._unpack = _ffi.ffi.unpack
        self._out = _ffi.ffi.new("int64_t[]", 2 * MAX_CAPACITY)

    def register(self, fd: int, events: int, token: int, edge: bool = False) -> None:
        r = self._ctl(self.fd, fd, events, 1 if edge else 0, 1, token)
        if r < 0:
            raise OSError(-r, "kevent(fd=%d): %s" % (fd, os.strerror(-r)))

    modify = register

    def unregister(self, fd: int) -> None:
        self._ctl(self.fd, fd, 0, 0, 0, 0)

    def poll(self, timeout_ms: int, capacity: int):
        n = self._wait(self.fd, self._out, min(capacity, 256), timeout_ms)
        if n > 0:
            return self._unpack(self._out, 2 * n)
        if n < 0 and n != -errno.EINTR:  # EINTR: back to the interpreter, which runs the signal's handler
            raise OSError(-n, "kevent: " + os.strerror(-n))
        return _EMPTY

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SelectKqueue:  # pragma: no cover - exercised on BSD/macOS only
    """Pure twin on ``select.kqueue``."""

    name = "kqueue"
    native = False

    def __init__(self) -> None:
        self._kq = select.kqueue()
        self.fd = self._kq.fileno()
        self._tokens = {}

    def _apply(self, fd: int, events: int, edge: bool) -> None:
        flags = select.KQ_EV_ADD | (select.KQ_EV_CLEAR if edge else 0)
        for bit, filt in ((0x001, select.KQ_FILTER_READ), (0x004, select.KQ_FILTER_WRITE)):
            ev = select.kevent(fd, filt, flags if events & bit else select.KQ_EV_DELETE)
            try:
                self._kq.control([ev], 0)
            except OSError:
                pass  # deleting a filter that was never added

    def register(self, fd: int, events: int, token: int, edge: bool = False) -> None:
        self._apply(fd, events, edge)
        self._tokens[fd] = token

    modify = register

    def unregister(self, fd: int) -> None:
        if self._tokens.pop(fd, None) is not None:
            self._apply(fd, 0, False)

    def poll(self, timeout_ms: int, capacity: int):
        res = self._kq.control(None, capacity, timeout_ms / 1000.0 if timeout_ms >= 0 else None)
        tokens = self._tokens
        out = []
        for kev in res:
            tok = tokens.get(kev.ident)
            if tok is None:
                continue
            m = 0x001 if kev.filter == select.KQ_FILTER_READ else 0x004
            if kev.flags & select.KQ_EV_ERROR:
                m |= 0x008
            if kev.flags & select.KQ_EV_EOF:
                m |= 0x010
            out.append(tok)
            out.append(m)
        return out or _EMPTY

    def close(self) -> None:
        self._kq.close()
        self._tokens.clear()
