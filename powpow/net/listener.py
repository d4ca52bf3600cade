"""``TcpServer``: listening sockets (TCP and unix) and the accept path.

Accepting: a listener's backlog is served in turns of at most
``_MAX_ACCEPTS_PER_EVENT`` connections; the next turn is a deferred call, so
the other fds of the same loop iteration run in between (edge-triggered epoll
would not report the rest of the backlog again, hence the explicit turn).
Out of file descriptors (EMFILE/ENFILE), a reserved fd is released to accept
and close the backlog, and accepting pauses for ``backoff_ms`` (libuv's trick):
the server sheds load instead of spinning on a listener it cannot serve.
Beyond ``max_connections`` a new connection goes to ``on_overload`` (a 503)
and is closed after draining.

Connections of a server are pooled: every close path (``close``, peer EOF,
reset, error, queue overflow, timeout) goes through ``_teardown``, which
releases the fd, watcher, queue and timer, calls ``on_close(conn, exc)``
(``exc`` None for an orderly close), then resets the object for reuse.  Do not
use a ``Connection`` after its ``on_close`` has returned.
"""
import errno
import os
import socket
from typing import Any, Callable, Dict, List, Optional, Set

from .._log import get_logger
from .._ffi import _sock
from ..loop import Loop
from . import addr as _addr
from .connection import (DEFAULT_HIGH_WATER, DEFAULT_LINGER_MS, DEFAULT_LOW_WATER, DEFAULT_MAX_QUEUED, Connection,
                         edge_capable, report)

__all__ = ["TcpServer"]

log = get_logger("powpow.net")

READ = 0x001
EAGAIN = errno.EAGAIN
_SHED = frozenset((-errno.EMFILE, -errno.ENFILE, -errno.ENOBUFS, -errno.ENOMEM))
# A listener's backlog is served in turns of this many accepts: a SYN flood (or a
# thundering reconnect after a restart) must not starve the live connections.
_MAX_ACCEPTS_PER_EVENT = 128
_STARVED_LOG_EVERY_MS = 60000
_NEED_SOCK = _sock.needs_socket_object()


class _Listener:
    __slots__ = ("sock", "fd", "family", "path", "inode", "ssl")

    def __init__(self, sock: socket.socket, path=None, ssl=None) -> None:
        self.ssl = ssl  # an ssl.SSLContext: connections of this listener speak TLS
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
    ``on_overload``.

    TLS: ``ssl=ctx`` (an ``ssl.SSLContext``; or per listener,
    ``listen(..., ssl=ctx)``) wraps each accepted connection in a
    ``net.tls.TlsTransport``; ``on_accept`` (and ``on_overload``) then run with
    that transport once its handshake succeeded (within
    ``handshake_timeout`` seconds); failed handshakes are logged and closed
    and never reach the owner.  ``connections`` lists the TLS transports.

    Call ``close()`` when done (it releases the pooled receive buffer: the
    loop's debug mode reports it otherwise).
    """

    def __init__(self, loop: Loop, on_accept: Optional[Callable] = None, on_data: Optional[Callable] = None,
                 on_close: Optional[Callable] = None, max_connections: int = 10000,
                 on_overload: Optional[Callable] = None, nodelay: bool = True, cork: bool = True,
                 high_water: int = DEFAULT_HIGH_WATER, low_water: int = DEFAULT_LOW_WATER,
                 max_queued: int = DEFAULT_MAX_QUEUED, linger_ms: int = DEFAULT_LINGER_MS,
                 backoff_ms: int = 100, max_pooled: int = 1024, ssl=None,
                 handshake_timeout: float = 10.0) -> None:
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
        self.ssl = _server_ctx(ssl)
        self.handshake_timeout = handshake_timeout
        self.tls_failures = 0  # TLS handshakes that failed or timed out
        self.refused = 0  # connections refused beyond max_connections
        self.shed = 0  # connections accepted and closed at once while out of fds
        self._listeners: List[_Listener] = []
        self._by_fd: Dict[int, _Listener] = {}
        self._conns: Set[Connection] = set()
        self._tls: Dict[Connection, Any] = {}  # raw connection -> its TlsTransport
        self._active = 0
        self._overflow = 0
        self._pool: List[Connection] = []
        self._rbuf: Any = None
        self._reserve_fd = -1
        self._backoff_timer: Any = None
        self._fd_starved = False
        self._starved_logged = False
        self._last_starved_log: Optional[int] = None
        self._last_accept_error_log: Optional[int] = None
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
               reuse_port: bool = False, ssl=None) -> "TcpServer":
        """Listen on ``host:port``.  ``host="::"`` (or None) is dual-stack IPv6 + IPv4.

        ``ssl``: a context for this listener (default: the server's ``ssl``)."""
        family, sa = _addr.resolve_passive(host, port, socket.SOCK_STREAM)
        sock = open_listener(family, sa, backlog, reuse_port)
        self._add_listener(_Listener(sock, None, _server_ctx(ssl) or self.ssl))
        return self

    def listen_unix(self, path, mode: int = 0o660, backlog: int = 1024, ssl=None) -> "TcpServer":
        """Listen on a unix stream socket; a stale socket file there is removed first."""
        p = _addr.prepare_unix_path(path)
        abstract = _addr.is_abstract(p)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(p)
            if not abstract:  # (an abstract name has no file: no mode, nothing to unlink)
                os.chmod(p, mode)
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._add_listener(_Listener(sock, None if abstract else p, _server_ctx(ssl) or self.ssl))
        return self

    def adopt(self, sock: socket.socket, ssl=None) -> "TcpServer":
        """Accept on a socket that is already bound and listening (e.g. one a parent bound
        before forking workers).  The socket becomes the server's (closed with it); a unix
        socket's file is left in place: whoever bound it unlinks it."""
        sock.setblocking(False)
        self._add_listener(_Listener(sock, None, _server_ctx(ssl) or self.ssl))
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
        tls = self._tls
        if tls:
            return [tls.get(c, c) for c in self._conns]
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
                self._accept_failed(lst, -cfd)
                return
            if self._fd_starved:
                self._fd_starved = False
                if self._starved_logged:
                    self._starved_logged = False
                    log.warning("file descriptors available again: accepting (shed %d connections so far)",
                                self.shed)
            self._setup(cfd, lst.family, lst.ssl)

    def _setup(self, cfd: int, family: int, ctx=None) -> None:
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
        if ctx is not None:
            if not overflow:
                self._active += 1
            self._wrap(conn, ctx)
            return
        if overflow:
            try:
                self.on_overload(conn)  # type: ignore[misc]  # not None: checked above
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

    def _wrap(self, conn: Connection, ctx) -> None:
        from .tls import TlsTransport
        try:
            tls = TlsTransport(conn, ctx, True, None, self.handshake_timeout, self._tls_ready, self._tls_failed)
        except Exception as exc:  # e.g. a context that cannot make a server-side object
            conn._teardown(exc)
            report(self.loop, exc)
            return
        tls.on_data = self.on_data
        tls.on_close = self.on_close
        self._tls[conn] = tls

    def _tls_ready(self, tls) -> None:
        raw = tls.raw
        if raw._overflow:
            try:
                self.on_overload(tls)  # type: ignore[misc]  # overflow connections exist only with one
            except Exception as exc:
                tls._teardown(exc)
                report(self.loop, exc)
                return
            tls.close_after_drain()
            return
        cb = self.on_accept
        if cb is not None:
            try:
                cb(tls)
            except Exception as exc:
                tls._teardown(exc)
                report(self.loop, exc)

    def _tls_failed(self, tls, exc) -> None:
        self.tls_failures += 1

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

    def _accept_failed(self, lst: _Listener, err: int) -> None:
        """An accept() error we do not expect (EINVAL: a pre-fork parent shut the shared socket
        down, ENOTSOCK...): logged at most once a minute, and the listeners rest for backoff_ms.
        Returning at once made a level-triggered backend report the listener again on every
        iteration: a busy loop that logged each time."""
        now = self.loop.now_ms()
        last = self._last_accept_error_log
        if last is None or now - last >= _STARVED_LOG_EVERY_MS:
            self._last_accept_error_log = now
            try:
                where = _addr.format_addr(lst.family, lst.sock.getsockname())
            except OSError:
                where = "fd %d" % lst.fd
            log.error("accept() on %s failed: %s; retrying every %d ms", where, os.strerror(err), self.backoff_ms)
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
        if self._tls:
            self._tls.pop(conn, None)
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
        for conn in self.connections:
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


def open_listener(family: int, sa: tuple, backlog: int = 1024, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``sa`` (from ``addr.resolve_passive``), listening, non-blocking.

    Also what ``HttpServer(workers=N)`` binds in the parent before forking (one
    SO_REUSEPORT socket a worker, see ``http.workers``), so both paths set the
    same options.  ``"::"`` is dual-stack; another IPv6 address is IPv6 only."""
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
            raise OSError(exc.errno, "cannot listen on %s: %s"
                          % (_addr.format_addr(family, sa), exc.strerror)) from None
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _open_reserve() -> int:
    try:
        return os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return -1


def _server_ctx(ctx):
    """Server contexts are hardened once (no renegotiation, TLS 1.2 at least): ``net.tls``."""
    if ctx is None:
        return None
    from .tls import prepare_server_context
    return prepare_server_context(ctx)
