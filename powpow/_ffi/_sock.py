"""Socket syscalls for ``powpow.net``: native shims and their pure twins.

Every function here returns ``n >= 0`` on success or ``-errno`` on failure
(``-EAGAIN`` is an ordinary value), in both modes, so ``powpow.net`` has one
code path.  Functions take both the ``socket.socket`` object and its fd: the
native variant uses the fd (no socket object needed on the hot path), the
pure variant uses the object's methods.  In pure mode every connection
therefore carries a socket object; in native mode ``powpow.net`` creates one
lazily, only for control calls (``getpeername``, ``shutdown``).

Why ``MSG_NOSIGNAL``: a write to a peer that has reset the connection raises
SIGPIPE, whose default action kills the process.  The native ``pp_send`` and
``pp_writev`` (via ``sendmsg`` in pure mode) never raise it; ``sendfile`` cannot
take the flag, so ``powpow.net`` also sets SIGPIPE to SIG_IGN when it is at
SIG_DFL (``ignore_sigpipe``).
"""
import errno
import os
import signal
import socket
import struct
import threading

from . import NATIVE, ffi, lib

EAGAIN = errno.EAGAIN
MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_TCP_CORK = getattr(socket, "TCP_CORK", getattr(socket, "TCP_NOPUSH", -1))
_REUSEPORT = getattr(socket, "SO_REUSEPORT", -1)


def _err(exc: OSError) -> int:
    return -(exc.errno or errno.EIO)


def ignore_sigpipe() -> None:
    """Set SIGPIPE to SIG_IGN if it is at SIG_DFL (CPython/PyPy already ignore it).

    Only the main thread may change signal dispositions; elsewhere this is a
    no-op and the MSG_NOSIGNAL flag on sends is what protects the process.
    """
    if not hasattr(signal, "SIGPIPE") or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGPIPE) == signal.SIG_DFL:
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    except (ValueError, OSError):  # pragma: no cover - embedded interpreters
        pass


if NATIVE:
    IOV_MAX = int(lib.PP_IOV_MAX)
    _from_buffer = ffi.from_buffer
    _pp_recv = lib.pp_recv
    _pp_send = lib.pp_send
    _pp_writev = lib.pp_writev
    _pp_sendfile = lib.pp_sendfile
    _pp_accept = lib.pp_accept
    _pp_setsockopt = lib.pp_setsockopt_int
    # The iovec scratch is per thread: cffi releases the GIL around pp_writev,
    # so with one loop per thread (worker_mode="thread") a module-global array
    # was refilled by another thread between the fill and the syscall, and a
    # client received another client's bytes.  Allocated once per thread.
    _tls = threading.local()
    _TCP = lib.PP_IPPROTO_TCP
    _NODELAY = lib.PP_TCP_NODELAY

    def recv_into(sock, fd: int, rbuf) -> int:
        """Read into the pooled ``RecvBuffer`` ``rbuf`` (its preallocated pointer)."""
        return _pp_recv(fd, rbuf.ptr, rbuf.size)

    def recv_bytes(sock, fd: int, rbuf):
        """Read into ``rbuf`` and return what arrived as new bytes (b"" at EOF), or -errno."""
        n = _pp_recv(fd, rbuf.ptr, rbuf.size)
        if n < 0:
            return n
        return _ffi_buffer(rbuf.ptr, n)[:]

    _ffi_buffer = ffi.buffer

    def send(sock, fd: int, data) -> int:
        if type(data) is bytes:
            return _pp_send(fd, data, len(data))
        return _pp_send(fd, _from_buffer(data), len(data))

    def writev(sock, fd: int, bufs) -> int:
        """One ``writev`` of ``bufs`` (at most ``IOV_MAX`` of them are used)."""
        try:
            iov = _tls.iov
        except AttributeError:
            iov = _tls.iov = ffi.new("struct iovec[]", IOV_MAX)
        keep = []
        n = 0
        for b in bufs:
            if n == IOV_MAX:
                break
            p = _from_buffer(b)
            keep.append(p)
            iov[n].iov_base = p
            iov[n].iov_len = len(b)
            n += 1
        return _pp_writev(fd, iov, n)

    def sendfile(sock, fd: int, in_fd: int, offset: int, count: int) -> int:
        return _pp_sendfile(fd, in_fd, offset, count)

    def accept(lsock, lfd: int) -> int:
        """accept4(NONBLOCK | CLOEXEC); the new fd or -errno."""
        return _pp_accept(lfd)

    def set_nodelay(sock, fd: int, on: bool) -> int:
        return _pp_setsockopt(fd, _TCP, _NODELAY, 1 if on else 0)

    def set_cork(sock, fd: int, on: bool) -> int:
        return lib.pp_set_cork(fd, 1 if on else 0)

    def set_linger(sock, fd: int, onoff: bool, seconds: int) -> int:
        return lib.pp_set_linger(fd, 1 if onoff else 0, seconds)

else:
    IOV_MAX = 1024
    try:
        IOV_MAX = min(IOV_MAX, os.sysconf("SC_IOV_MAX"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        pass
    _os_sendfile = getattr(os, "sendfile", None)

    def recv_into(sock, fd: int, rbuf) -> int:
        try:
            return sock.recv_into(rbuf.view)
        except OSError as exc:
            return _err(exc)

    def recv_bytes(sock, fd: int, rbuf):
        """Read up to ``rbuf.size`` bytes and return them (b"" at EOF), or -errno."""
        try:
            return sock.recv(rbuf.size)
        except OSError as exc:
            return _err(exc)

    def send(sock, fd: int, data) -> int:
        try:
            return sock.send(data, MSG_NOSIGNAL)
        except OSError as exc:
            return _err(exc)

    def writev(sock, fd: int, bufs) -> int:
        if len(bufs) > IOV_MAX:
            bufs = bufs[:IOV_MAX]
        try:
            return sock.sendmsg(bufs, (), MSG_NOSIGNAL)
        except OSError as exc:
            return _err(exc)

    def sendfile(sock, fd: int, in_fd: int, offset: int, count: int) -> int:
        if _os_sendfile is None:  # pragma: no cover - platforms without sendfile
            return -errno.ENOSYS
        try:
            return _os_sendfile(fd, in_fd, offset, count)
        except OSError as exc:
            return _err(exc)

    def accept(lsock, lfd: int) -> int:
        try:
            fd, _ = lsock._accept()  # accept4(SOCK_CLOEXEC) on Linux
        except OSError as exc:
            return _err(exc)
        return fd  # made non-blocking through the socket object the caller wraps it in

    def set_nodelay(sock, fd: int, on: bool) -> int:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if on else 0)
            return 0
        except OSError as exc:
            return _err(exc)

    def set_cork(sock, fd: int, on: bool) -> int:
        if _TCP_CORK < 0:  # pragma: no cover
            return -errno.ENOPROTOOPT
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1 if on else 0)
            return 0
        except OSError as exc:
            return _err(exc)

    def set_linger(sock, fd: int, onoff: bool, seconds: int) -> int:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1 if onoff else 0, seconds))
            return 0
        except OSError as exc:
            return _err(exc)


# CPython with the native module: the three calls of the stream hot path as
# METH_FASTCALL builtins (src/pp_cpyio.c), which skip cffi's per-call argument
# tuple, converters and ``ffi.from_buffer``.  ``FAST_IO`` is False elsewhere;
# then ``powpow.net`` uses ``recv_into``/``recv_bytes``/``send`` above.
#   fast_send(fd, data) -> n or -errno            (any contiguous buffer)
#   fast_recv_into(fd, buf) -> n or -errno        (buf: a writable buffer, e.g. rbuf.data)
#   fast_recv_bytes(fd, buf) -> bytes or -errno   (reads into buf, returns a copy of what came)
#   FAST_WAIT(epfd, buf, maxevents, timeout_ms) -> [token, events, ...] or -errno
#                                                 (the native epoll poller's call; else None)
FAST_IO = False
FAST_WAIT = None
_fast: dict = {}
if NATIVE and lib.pp_cpy_io_install(id(_fast)) == 0:
    FAST_IO = True
    FAST_WAIT = _fast["epoll_wait"]
    fast_send = _fast["send"]
    fast_recv_into = _fast["recv_into"]
    fast_recv_bytes = _fast["recv_bytes"]
else:
    def fast_send(fd: int, data) -> int:  # pragma: no cover - only used when FAST_IO
        raise NotImplementedError

    fast_recv_into = fast_recv_bytes = fast_send


def needs_socket_object() -> bool:
    """True when the twins above need a ``socket.socket`` per connection (pure mode)."""
    return not NATIVE


def have_reuseport() -> bool:
    return _REUSEPORT >= 0
