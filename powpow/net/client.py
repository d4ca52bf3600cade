"""TCP and unix clients: non-blocking resolution, every address tried, Happy Eyeballs.

Invariants and why:

* Name resolution never blocks the loop: ``getaddrinfo`` runs in a daemon
  thread that hands its result back with ``loop.post`` (numeric hosts skip the
  thread).  A connector that finished (timeout, cancel) ignores late results.
* Every resolved address is tried, in RFC 8305 order (IPv6 first, families
  alternating).  With ``happy_eyeballs=True`` the next attempt starts after
  ``stagger_ms`` (250 ms, RFC 8305 "Connection Attempt Delay") even while the
  previous one is still pending; any attempt failing starts the next at once.
  The first to connect wins; the others are closed.
* One overall deadline (``timeout_ms``); every timer and watcher is released on
  every outcome, so the loop's debug leak check holds.
* Errors are ``ConnectError`` naming the host, each address tried and its
  errno, delivered to ``on_error(exc)`` -- never raised out of the loop.
* TLS (``ssl=ctx`` or ``ssl=True`` for ``ssl.create_default_context()``):
  the connection is wrapped in a ``net.tls.TlsTransport`` and ``on_connect``
  runs once the handshake succeeded; certificates and the host name are
  verified as the context says (by default: verified).  A failed handshake
  is a ``ConnectError`` naming the host and OpenSSL's reason.
"""
import errno
import logging
import socket
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._ffi import _sock
from ..errors import LoopError
from ..loop import Loop, TimerId
from . import addr as _addr
from .errors import ConnectError
from .tcp import (DEFAULT_HIGH_WATER, DEFAULT_LINGER_MS, DEFAULT_LOW_WATER, DEFAULT_MAX_QUEUED,
                  Connection, report)

__all__ = ["connect", "connect_unix", "Connector"]

log = logging.getLogger("powpow.net")
WRITE = 0x004


class Connector:
    """A connection attempt in progress; ``cancel()`` abandons it (no callback runs)."""

    def __init__(self, loop: Loop, host: str, port, on_connect, on_data, on_close, on_error,
                 timeout_ms: int, happy_eyeballs: bool, stagger_ms: int, nodelay: bool, conn_opts: dict,
                 resolver: Optional[Callable] = None, ssl=None, server_hostname: Optional[str] = None,
                 handshake_timeout: float = 10.0) -> None:
        self.loop = loop
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.handshake_timeout = handshake_timeout
        self.resolver = resolver or _getaddrinfo
        self.host = host
        self.port = port
        self.on_connect = on_connect
        self.on_data = on_data
        self.on_close = on_close
        self.on_error = on_error
        self.timeout_ms = timeout_ms
        self.happy_eyeballs = happy_eyeballs
        self.stagger_ms = stagger_ms
        self.nodelay = nodelay
        self.conn_opts = conn_opts
        self.done = False
        self._tls: Any = None  # the TlsTransport while its handshake runs (cancel() abandons it)
        self._addrs: List[Any] = []  # getaddrinfo tuples
        self._idx = 0
        self._attempts: Dict[int, Tuple[socket.socket, int, Any]] = {}  # fd -> (sock, family, sockaddr)
        self._errors: List[Tuple[str, int]] = []  # (address text, errno)
        self._timer: Optional[TimerId] = None
        self._stagger: Optional[TimerId] = None

    def _target(self) -> str:
        if self.port is None:
            return "unix:%s" % (self.host,)
        h = self.host
        return ("[%s]:%s" % (h, self.port)) if ":" in h else ("%s:%s" % (h, self.port))

    # ------------------------------------------------------------ resolution

    def _start(self, infos=None) -> None:
        self._timer = self.loop.add_timer(self.timeout_ms, self._on_timeout)
        if infos is not None:
            # Even a numeric address is tried from the next iteration: callbacks
            # never run inside connect() itself.
            self.loop.defer_call(lambda: self._resolved(infos))
            return
        t = threading.Thread(target=self._resolve, name="powpow-resolver", daemon=True)
        t.start()

    def _resolve(self) -> None:
        # Runs in the resolver thread.  Any failure becomes a result: a host
        # that fails IDNA encoding raises UnicodeError (not OSError), which used
        # to kill this thread and leave the user waiting for "timed out".
        try:
            res = self.resolver(self.host, self.port)
        except Exception as exc:
            res = exc
        loop = self.loop
        if self.done or loop.is_closed:
            return  # nobody waits any more; a closed loop's wake fd may be reused
        try:
            loop.post(lambda: self._resolved(res))
        except LoopError:
            pass  # closed meanwhile: drop the result

    def _resolved(self, res) -> None:
        if self.done:
            return
        if isinstance(res, OSError):
            # a getaddrinfo failure's errno is an EAI_* code (negative on Linux: -2 is
            # EAI_NONAME), not an errno: EHOSTUNREACH stands for it (the code stays in the
            # message, the gaierror is the cause)
            err = res.errno if isinstance(res.errno, int) and res.errno > 0 else errno.EHOSTUNREACH
            exc = ConnectError("cannot resolve %s: [Errno %s] %s" % (self._target(), res.errno, res.strerror),
                               err, self.host, self.port, [])
            exc.__cause__ = res
            self._fail(exc)
            return
        if isinstance(res, BaseException):  # e.g. UnicodeError: the name cannot be IDNA-encoded
            self._fail(ConnectError("cannot resolve %s: %s: %s" % (self._target(), type(res).__name__, res),
                                    errno.EINVAL, self.host, self.port, []))
            return
        self._addrs = _addr.interleave(res) if self.happy_eyeballs else list(res)
        if not self._addrs:
            self._fail(ConnectError("cannot resolve %s: no addresses" % self._target(),
                                    errno.EHOSTUNREACH, self.host, self.port, []))
            return
        self._next_attempt()

    # ------------------------------------------------------------ attempts

    def _next_attempt(self) -> None:
        while not self.done:
            if self._idx >= len(self._addrs):
                if not self._attempts:
                    self._fail_all()
                return
            fam, _, _, _, sa = self._addrs[self._idx]
            self._idx += 1
            try:
                s = socket.socket(fam, socket.SOCK_STREAM)
            except OSError as exc:  # EAFNOSUPPORT (IPv6 off), EMFILE: this address fails, try the next
                self._errors.append((_addr.format_addr(fam, sa), exc.errno or errno.EINVAL))
                continue
            s.setblocking(False)
            try:
                err = s.connect_ex(sa)
            except OSError as exc:  # (connect_ex returns most errors; a few still raise)
                err = exc.errno or errno.EINVAL
            if err == 0:
                self._won(s, fam)
                return
            if err != errno.EINPROGRESS:
                s.close()
                self._errors.append((_addr.format_addr(fam, sa), err))
                continue
            fd = s.fileno()
            self._attempts[fd] = (s, fam, sa)
            self.loop.register(fd, WRITE, self._on_writable)
            if self.happy_eyeballs and self._idx < len(self._addrs):
                self._cancel_stagger()
                self._stagger = self.loop.add_timer(self.stagger_ms, self._on_stagger)
            return

    def _on_stagger(self) -> None:
        self._stagger = None
        self._next_attempt()

    def _cancel_stagger(self) -> None:
        if self._stagger is not None:
            self.loop.cancel_timer(self._stagger)
            self._stagger = None

    def _on_writable(self, fd: int, events: int) -> None:
        entry = self._attempts.pop(fd, None)
        if entry is None:
            return
        s, fam, sa = entry
        self.loop.unregister(fd)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:
            self._won(s, fam)
            return
        s.close()
        self._errors.append((_addr.format_addr(fam, sa), err))
        self._cancel_stagger()
        self._next_attempt()  # a failure starts the next attempt at once

    # ------------------------------------------------------------ outcomes

    def _finish(self) -> None:
        self.done = True
        if self._timer is not None:
            self.loop.cancel_timer(self._timer)
            self._timer = None
        self._cancel_stagger()
        for fd, (s, _, _) in list(self._attempts.items()):
            self.loop.unregister(fd)
            s.close()
        self._attempts.clear()

    def cancel(self) -> None:
        """Abandon the attempt: no callback runs, and a connection being set up (the TCP
        connect, or the TLS handshake after it) is closed."""
        if not self.done:
            self._finish()
        tls = self._tls
        if tls is not None:
            self._tls = None
            tls._on_ready = tls._on_fail = None
            tls.on_data = tls.on_close = None
            tls.abort()

    def _won(self, s: socket.socket, fam: int) -> None:
        self._finish()
        loop = self.loop
        if self.nodelay and fam != socket.AF_UNIX:
            _sock.set_nodelay(s, s.fileno(), True)
        conn = Connection()
        o = self.conn_opts
        rbuf = loop.buffers.acquire()
        try:
            tls = self.ssl is not None  # (then the TlsTransport gets the callbacks, once it is up)
            conn._open(loop, s.fileno(), s, fam, None, rbuf, True, None if tls else self.on_data,
                       None if tls else self.on_close,
                       o["cork"], o["high_water"], o["low_water"], o["max_queued"], o["linger_ms"])
        except BaseException:
            loop.buffers.release(rbuf)
            s.close()
            raise
        if self.ssl is not None:
            self._start_tls(conn)
            return
        cb = self.on_connect
        if cb is not None:
            try:
                cb(conn)
            except Exception as exc:
                conn._teardown(exc)
                report(loop, exc)

    def _start_tls(self, conn: Connection) -> None:
        from .tls import TlsTransport
        name = self.server_hostname if self.server_hostname is not None else self.host
        try:
            tls = TlsTransport(conn, self.ssl, False, name, self.handshake_timeout, self._tls_ready, self._tls_failed)
        except (OSError, ValueError) as exc:  # e.g. ssl.CertificateError-like setup errors, bad hostname
            conn._teardown(exc)  # (the user's on_close is not on it: on_error alone tells)
            self._fail_tls(exc)
            return
        if not tls.closed and tls._on_ready is not None:  # (not failed in its first step)
            self._tls = tls
        tls.on_data = self.on_data
        tls.on_close = self.on_close

    def _tls_ready(self, tls) -> None:
        self._tls = None
        cb = self.on_connect
        if cb is not None:
            try:
                cb(tls)
            except Exception as exc:
                tls._teardown(exc)
                report(self.loop, exc)

    def _tls_failed(self, tls, exc) -> None:
        self._tls = None
        self._fail_tls(exc)

    def _fail_tls(self, exc: BaseException) -> None:
        msg = str(exc)
        prefix = "TLS handshake with "
        if msg.startswith(prefix):
            msg = msg.split(" failed: ", 1)[-1]
        err = ConnectError("TLS handshake with %s failed: %s" % (self._target(), msg),
                           errno.EPROTO, self.host, self.port, [])
        err.__cause__ = exc
        cb = self.on_error
        if cb is None:
            log.error("%s", err)
            return
        cb(err)

    def _fail_all(self) -> None:
        detail = "; ".join("%s: [Errno %d] %s" % (a, e, _strerror(e)) for a, e in self._errors)
        last = self._errors[-1][1] if self._errors else errno.EHOSTUNREACH
        self._fail(ConnectError("connect to %s failed: %s" % (self._target(), detail or "no address worked"),
                                last, self.host, self.port, list(self._errors)))

    def _on_timeout(self) -> None:
        self._timer = None
        if self.done:
            return
        tried = [a for a in (_addr.format_addr(f, sa) for (_, f, sa) in self._attempts.values())]
        failed = ["%s: [Errno %d] %s" % (a, e, _strerror(e)) for a, e in self._errors]
        msg = "connect to %s timed out after %d ms" % (self._target(), self.timeout_ms)
        if tried or failed:
            msg += " (pending: %s%s)" % (", ".join(tried) or "none", "; failed: " + "; ".join(failed) if failed else "")
        else:
            msg += " (name resolution did not finish)"
        self._fail(ConnectError(msg, errno.ETIMEDOUT, self.host, self.port, list(self._errors)))

    def _fail(self, exc: ConnectError) -> None:
        self._finish()
        cb = self.on_error
        if cb is None:
            log.error("%s", exc)
            return
        cb(exc)


def _getaddrinfo(host: str, port):
    return socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)


def _strerror(e: int) -> str:
    import os

    try:
        return os.strerror(e)
    except ValueError:  # pragma: no cover
        return "error %d" % e


def _opts(cork, high_water, low_water, max_queued, linger_ms) -> dict:
    return {"cork": cork, "high_water": high_water, "low_water": low_water,
            "max_queued": max_queued, "linger_ms": linger_ms}


def connect(loop: Loop, host: str, port: int, on_connect: Optional[Callable], on_data: Optional[Callable],
            on_close: Optional[Callable] = None, on_error: Optional[Callable] = None, timeout_ms: int = 3000,
            happy_eyeballs: bool = True, stagger_ms: int = 250, nodelay: bool = True, cork: bool = True,
            high_water: int = DEFAULT_HIGH_WATER, low_water: int = DEFAULT_LOW_WATER,
            max_queued: int = DEFAULT_MAX_QUEUED, linger_ms: int = DEFAULT_LINGER_MS,
            resolver: Optional[Callable] = None, ssl=None, server_hostname: Optional[str] = None,
            handshake_timeout: float = 10.0) -> Connector:
    """Open a TCP connection without blocking the loop.

    ``on_connect(conn)`` runs once connected; ``on_data(conn, memoryview)`` and
    ``on_close(conn, exc)`` follow the server's contract; ``on_error(exc)``
    receives a ``ConnectError`` if no address connects within ``timeout_ms``.
    ``resolver(host, port)`` (run in the resolver thread) replaces
    ``getaddrinfo``: custom DNS, or tests that need a given address list.
    ``ssl``: an ``ssl.SSLContext`` (or True: ``ssl.create_default_context()``)
    to speak TLS; ``server_hostname`` (default ``host``) is sent as SNI and
    checked against the certificate.
    """
    if loop.is_closed:
        raise LoopError("connect() on a closed loop")
    _addr.check_port(port)  # getaddrinfo would connect to port 70000 as 4464
    if ssl is True:
        import ssl as _ssl
        ssl = _ssl.create_default_context()
    _sock.ignore_sigpipe()
    c = Connector(loop, host, port, on_connect, on_data, on_close, on_error, timeout_ms, happy_eyeballs,
                  stagger_ms, nodelay, _opts(cork, high_water, low_water, max_queued, linger_ms), resolver,
                  ssl or None, server_hostname, handshake_timeout)
    h = _addr.strip_brackets(host)
    infos = None
    if resolver is None and _addr.literal_family(h) is not None:
        infos = socket.getaddrinfo(h, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    c.host = h
    c._start(infos)
    return c


def connect_unix(loop: Loop, path, on_connect: Optional[Callable], on_data: Optional[Callable],
                 on_close: Optional[Callable] = None, on_error: Optional[Callable] = None, timeout_ms: int = 3000,
                 cork: bool = False, high_water: int = DEFAULT_HIGH_WATER, low_water: int = DEFAULT_LOW_WATER,
                 max_queued: int = DEFAULT_MAX_QUEUED, linger_ms: int = DEFAULT_LINGER_MS) -> Connector:
    """Connect to a unix stream socket; same callbacks as ``connect``."""
    if loop.is_closed:
        raise LoopError("connect_unix() on a closed loop")
    _sock.ignore_sigpipe()
    p = _addr.check_unix_path(path)
    c = Connector(loop, p, None, on_connect, on_data, on_close, on_error, timeout_ms, False, 0, False,
                  _opts(cork, high_water, low_water, max_queued, linger_ms))
    c._start([(socket.AF_UNIX, socket.SOCK_STREAM, 0, "", p)])
    return c
