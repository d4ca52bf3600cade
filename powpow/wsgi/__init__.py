"""WSGI (PEP 3333) server on powpow's HTTP server: ``powpow.wsgi.serve(app)``.

Shape
-----
The HTTP server runs in streaming mode: ``Server._handle`` is called on the
loop thread as soon as a request head is in.  It creates an ``Exchange``
(``_exchange.py``) and hands it to a bounded pool of worker threads
(``_pool.py``, ``threads`` of them), where the blocking application runs.
The loop never runs application code (unless ``inline=True``, see below), so
one slow view never stalls the other connections.  Everything the worker
does to the response goes back to the loop with ``Loop.post``; the request
body streams the other way through ``wsgi.input`` (``_input.py``) with
backpressure, and a streamed response body waits for the client
(``STREAM_HIGH``).  Requests beyond what the threads take queue in front of
them, up to ``limit_concurrency`` (default: ``threads * 100``, at least 1000)
requests in flight; past that the answer is ``503`` with ``Retry-After: 1``.
A connection runs one exchange at a time (``_serial``): a pipelined request
starts when the answer before it has been handed over and the connection is
writable (under high water; else from its drain), so pipelined answers wait for
a slow reader instead of piling up to the transport's 32 MiB cap.  A connection
that closes with exchanges still in flight ends them (``_WsgiHttpServer``).

Why the thread hop: a WSGI application blocks (database calls, files,
``time.sleep``); running it on the loop would stall every connection.  The
hop costs one queue put/get and one ``post`` (an eventfd write when the loop
sleeps) per request, and a list body goes back in a single post (head and
body in one write).  ``inline=True`` (or ``threads=0``) runs the application
on the loop thread instead: fastest for tiny CPU-only apps, but any blocking
call then stalls the whole server, and request bodies are buffered in memory
before the app runs (so ``max_body`` defaults to 1 MiB there); a streamed
body is pulled while the client keeps up (``Exchange._inline_pump``: a burst
per loop turn, paused until on_drain).
Explicit and off by default.

Environ
-------
PEP 3333 with the CGI names: ``SCRIPT_NAME`` is ``root_path`` (removed from
the front of ``PATH_INFO`` when the path starts with it), ``PATH_INFO`` is the
percent-decoded path's bytes as latin-1, ``QUERY_STRING`` as sent,
``CONTENT_TYPE``/``CONTENT_LENGTH`` when the request has them, ``HTTP_*`` for
every other header (repeated fields joined with ``,``; ``Cookie`` with ``;``;
header names containing ``_`` are dropped, as nginx does, so ``X_Forwarded``
cannot pose as ``X-Forwarded``; ``HTTP_HOST`` of an absolute-form request,
``GET http://host/path``, is the target's authority, not the Host field: RFC
9112 3.2.2), ``SERVER_NAME``/``SERVER_PORT`` of the local
socket, ``REMOTE_ADDR``/``REMOTE_PORT``, ``wsgi.url_scheme`` (``https`` over
TLS; ``X-Forwarded-Proto`` and ``X-Forwarded-For`` from
``forwarded_allow_ips`` peers when ``proxy_headers``), ``wsgi.multithread``
True, ``wsgi.errors`` (stderr), ``wsgi.input_terminated`` True, and
``wsgi.file_wrapper`` (sent with ``sendfile``).
"""
import logging
import os
import signal
import threading
from collections import deque
from typing import Any, Callable, Dict, Optional

from .._log import configure_server_logging
from ..errors import LoopError
from ..http.forwarded import ProxyTrust, app_server_trust
from ..http.parser import MAX_BODY
from ..http.server import HttpServer
from ._exchange import Exchange
from ._rules import STDERR, FileWrapper, _environ_key, absolute_form_host, header_key, path_info
from ._input import ClientDisconnected
from ._pool import ThreadPool

__all__ = ["Server", "serve", "FileWrapper", "ClientDisconnected"]

log = logging.getLogger("powpow.wsgi")

SERVER_SOFTWARE = "powpow"
DEFAULT_GRACE = 10.0
UNLIMITED_BODY = 1 << 62

_REFUSED = b"503 Service Unavailable\n"
_REFUSED_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Retry-After", "1"), ("Connection", "close")]


def _discard(chunk) -> None:
    pass


class _WsgiHttpServer(HttpServer):
    """The HTTP server under ``Server``: tells it when a connection closes."""

    def __init__(self, owner: "Server", **options: Any) -> None:
        self.owner = owner
        super().__init__(owner._handle, **options)

    def _on_close(self, conn, exc) -> None:
        session = conn.context
        super()._on_close(conn, exc)
        if session in self.owner._serial:
            self.owner._connection_closed(session)


def _made_ahead(session) -> int:
    """Bytes of the answers a read's batch has made and not yet handed to the transport."""
    n = 0
    for res in session.pending:
        for seg in res._segments:
            if seg.__class__ is bytes:
                n += len(seg)
    return n


class Server:
    """A WSGI server: ``Server(app, host, port, ...).listen()``, then ``run()`` (blocks).

    ``listen()`` returns the server (``.port`` is the bound port, also with
    ``port=0``); ``run()`` serves until SIGINT/SIGTERM (graceful: stop
    accepting, let requests finish within ``timeout_graceful_shutdown``; a
    second signal stops at once) or ``shutdown()`` (any thread).
    Options: see ``serve``.  ``exit_code`` after ``run()`` with workers: 1 when
    one had to be killed or ended badly while stopping (logged), else 0.
    """

    exit_code = 0

    def __init__(self, app: Callable, host: str = "127.0.0.1", port: int = 8000, *,
                 uds: Optional[str] = None, workers: int = 1, root_path: str = "",
                 proxy_headers: bool = True, forwarded_allow_ips: Optional[str] = None,
                 log_level: Optional[str] = "info", access_log: bool = True,
                 timeout_keep_alive: float = 5.0, timeout_graceful_shutdown: Optional[float] = None,
                 limit_concurrency: Optional[int] = None, ssl_certfile: Optional[str] = None,
                 ssl_keyfile: Optional[str] = None, ssl: Any = None, threads: int = 10,
                 inline: bool = False, max_body: Optional[int] = None, loop=None,
                 **http_options: Any) -> None:
        if threads < 0:
            raise ValueError("threads must be >= 0, got %r" % (threads,))
        self.app = app
        self.host = host
        self.uds = uds
        self.threads = threads
        self.inline = inline or threads == 0
        self.root_path = root_path.rstrip("/")
        self.log_level = log_level
        # (as the ASGI server; only serve() did this, so `python -m powpow wsgi`, which makes a
        # Server, logged nothing: no access log, whatever --access-log and --log-level said)
        configure_server_logging(log_level)
        self.grace = DEFAULT_GRACE if timeout_graceful_shutdown is None else float(timeout_graceful_shutdown)
        if limit_concurrency is not None and limit_concurrency < 1:
            raise ValueError("limit_concurrency must be >= 1, got %r" % (limit_concurrency,))
        self.limit_concurrency = limit_concurrency
        self._limit = limit_concurrency if limit_concurrency is not None else max(1000, threads * 100)
        self._inflight = 0
        # One exchange at a time per connection: pipelined requests wait for the
        # answer before theirs (answers leave in order anyway, and a later
        # answer streamed early would pile up in memory behind the earlier one).
        # session -> the running exchange, then the ones waiting behind it.
        self._serial: Dict[Any, deque] = {}
        # (as the ASGI server: was without the unix peers of --uds, so a proxy in front of
        # the socket had its X-Forwarded-For/-Proto ignored)
        self._trust: Optional[ProxyTrust] = app_server_trust(proxy_headers, forwarded_allow_ips, uds)
        ctx = ssl
        if ctx is None and ssl_certfile:
            from ..net.tls import server_context
            ctx = server_context(ssl_certfile, ssl_keyfile)
        self.ssl = ctx
        if max_body is None:
            # Threads: the body streams to the app with backpressure, so no limit.
            # Inline: it is read whole into memory before the app runs, so
            # HttpServer's own default applies (413 past it, then close).
            max_body = MAX_BODY if self.inline else UNLIMITED_BODY
        self.http = _WsgiHttpServer(self, loop=loop, streaming=True, workers=workers, access_log=access_log,
                                    keepalive_timeout=timeout_keep_alive, grace_period=self.grace, ssl=ctx,
                                    max_body=max_body, **http_options)
        self._port = port
        self._pool: Optional[ThreadPool] = None
        self._pool_pid = 0
        self._stopping = False
        self._forced = False
        self._base: Dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.errors": STDERR,
            "wsgi.multithread": not self.inline,
            "wsgi.multiprocess": workers > 1,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "SCRIPT_NAME": self.root_path,
        }

    # -- setup ----------------------------------------------------------------------

    def listen(self) -> "Server":
        """Bind (TCP ``host:port``, or the unix socket ``uds``); returns self."""
        if self.uds:
            self.http.listen_unix(self.uds)
        else:
            self.http.listen(self._port, self.host)
        return self

    @property
    def port(self) -> Optional[int]:
        """The bound TCP port (None before ``listen()`` or with ``uds``)."""
        return self.http.port

    @property
    def loop(self):
        return self.http.loop

    @property
    def in_flight(self) -> int:
        """Requests accepted and not answered yet (loop thread's view)."""
        return self._inflight

    def _get_pool(self) -> ThreadPool:
        pool = self._pool
        pid = os.getpid()
        if pool is None or self._pool_pid != pid:  # a forked worker makes its own threads
            pool = self._pool = ThreadPool(self.threads)
            self._pool_pid = pid
        return pool

    # -- per request (loop thread) -----------------------------------------------------------

    def _handle(self, req, res) -> None:
        if self._inflight >= self._limit:
            if req.content_length or req.chunked:
                req.on_body(_discard)
            log.warning("%d requests in flight (limit %d): 503 for %s %s", self._inflight, self._limit,
                        req.method, req.target)
            res.send(_REFUSED, 503, _REFUSED_HEADERS)
            return
        self._inflight += 1
        ex = Exchange(self, req, res, res._session.conn)
        session = res._session
        line = self._serial.get(session)
        if line is None:
            self._serial[session] = deque((ex,))  # this connection has an exchange running
            if len(session.pending) > 1 and session.in_batch and _made_ahead(session) >= session.conn.high_water:
                # answers to this read, made but not flushed yet, fill the connection:
                # judge once they are handed over (inline, each pipelined request
                # would otherwise run at once behind the last one's answer)
                ex.loop.defer_call(ex.start_when_writable)
            else:
                ex.start_when_writable()
        else:
            ex.queued = True  # a pipelined request: after the one before it (see _release)
            line.append(ex)

    def _start(self, ex) -> None:
        if not self.inline:
            self._get_pool().submit(ex)
        else:
            ex.start_inline()

    def _release(self, ex) -> None:
        """``ex`` has handed its response over (or its client left): free its slot and
        start the next pipelined request of the same connection, if any."""
        if ex.released:
            return
        ex.released = True
        self._inflight -= 1
        session = ex.res._session
        line = self._serial.get(session)
        if line is None:
            return
        if ex.queued:  # never started: its client left
            try:
                line.remove(ex)
            except ValueError:
                pass
            return
        if not line or line[0] is not ex:
            return  # (not the running one)
        line.popleft()
        while line:
            nxt = line[0]
            if not nxt.released:
                nxt.queued = False
                if self.inline or session.in_batch:
                    # inline: not from inside the previous answer's code; in a batch:
                    # once its answer is flushed (writable tells the truth only then)
                    ex.loop.defer_call(nxt.start_when_writable)
                else:
                    nxt.start_when_writable()
                return
            line.popleft()
        del self._serial[session]

    def _connection_closed(self, session) -> None:
        """The connection closed with exchanges still in flight whose responses did
        not hear of it: the HTTP layer answered one itself (a chunked body past
        ``max_body``: 413, then close) while it waited for the end of its body.
        They end as if their client had left, so their slots are given back."""
        line = self._serial.get(session)
        if line is not None:
            for ex in list(line):
                ex._loop_gone()

    def _conn_info(self, conn):
        pa = conn.peer_address
        sa = conn.sock_address
        if pa.__class__ is tuple:
            ip = conn.get_client_ip()
            return (ip, pa[1], sa[0] if sa.__class__ is tuple else "", str(sa[1]) if sa.__class__ is tuple else "0",
                    getattr(conn, "tls", None) is not None, False)
        return (None, 0, "", "0", getattr(conn, "tls", None) is not None, True)

    # -- environ (worker thread) ------------------------------------------------------------

    def _environ(self, ex) -> dict:
        req = ex.req
        target = req.target
        if target[:1] == "/":  # origin-form: split once
            raw, _, query = target.partition("?")
            target_host = None
        else:  # '*', absolute- or authority-form
            raw, query = req.raw_path, req.query
            target_host = absolute_form_host(target)
        path = path_info(raw) if "%" in raw else raw
        root = self.root_path
        if root and (path == root or path.startswith(root + "/")):
            path = path[len(root):]
        ip, rport, sname, sport, tls, unix = ex.conn_info
        # one dict display, then the constant keys: cheaper than a store per key
        env: Dict[str, Any] = {
            "REQUEST_METHOD": req.method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_PROTOCOL": "HTTP/1.1" if req.version == "1.1" else "HTTP/1.0",
            "wsgi.input": ex.input,
            "SERVER_NAME": sname,
            "SERVER_PORT": sport,
        }
        env.update(self._base)
        headers = req.headers
        # Headers' own lookups, inlined: one slice and decode per field
        names = headers._names
        ends = headers._ends
        buf = headers._buf
        keys = _environ_key
        start = headers._h0
        for i in range(len(names)):
            end = ends[i]
            name = names[i]
            key = keys.get(name)
            if key is None:
                key = header_key(name)
            if key:  # "" for names with "_" (see the module docstring)
                v = buf[buf.find(b":", start, end) + 1 : end].strip(b" \t").decode("latin-1")
                old = env.get(key)
                if old is None:
                    env[key] = v
                else:
                    env[key] = old + ("; " if key == "HTTP_COOKIE" else ",") + v
            start = end + 2
        if target_host is not None:  # absolute-form: its authority, never the Host field
            if target_host:
                env["HTTP_HOST"] = target_host
            else:
                env.pop("HTTP_HOST", None)
        scheme = "https" if tls else "http"
        trust = self._trust
        if trust is not None and ("HTTP_X_FORWARDED_FOR" in env or "HTTP_X_FORWARDED_PROTO" in env) \
                and trust.trusts(ip, unix):
            fwd = trust.client_ip(ip, unix, headers)
            if fwd != ip:
                ip, rport = fwd, 0
            proto = env.get("HTTP_X_FORWARDED_PROTO")
            if proto:
                proto = proto.split(",")[-1].strip().lower()
                if proto in ("http", "https"):
                    scheme = proto
                elif proto in ("ws", "wss"):
                    scheme = "https" if proto == "wss" else "http"
        env["wsgi.url_scheme"] = scheme
        if ip is not None:
            env["REMOTE_ADDR"] = ip
            env["REMOTE_PORT"] = str(rport)
        if unix:
            host = env.get("HTTP_HOST", "localhost")
            env["SERVER_NAME"] = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            env["SERVER_PORT"] = "443" if scheme == "https" else "80"
        return env

    # -- running and stopping -------------------------------------------------------------------

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM or ``shutdown()``; blocks.  Calls ``listen()`` if not done yet."""
        http = self.http
        if http.port is None and not http._listen_args and not http._unix_socks and http._tcp is None:
            self.listen()
        if http.workers > 1:
            http.run()  # forked workers; each runs HttpServer.run with its own signals
            self.exit_code = http.exit_code
            return
        loop = http._ensure_loop()
        signals = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal(sig, self._on_signal)
                signals.append(sig)
        try:
            loop.run()
        finally:
            for sig in signals:
                loop.remove_signal(sig)
            http.close()
            pool = self._pool
            if pool is not None:
                self._pool = None
                # threads get a moment to run close(); a forced stop (second signal) waits less
                if not pool.shutdown(timeout=0.2 if self._forced else 1.0):
                    log.warning("WSGI threads still busy after shutdown; leaving them (daemon threads)")

    def _on_signal(self, signum: int) -> None:
        self._begin_shutdown()

    def shutdown(self) -> None:
        """Graceful shutdown, from any thread (a second call stops at once)."""
        loop = self.http.loop
        if loop is None:
            return
        try:
            loop.post(self._begin_shutdown)
        except LoopError:
            pass  # already stopped

    def _begin_shutdown(self) -> None:
        if self._stopping:
            log.info("second stop request: closing every connection now")
            self._forced = True
            self.http._finish_drain()
            return
        self._stopping = True
        self.http.shutdown(self.grace)

    def close(self) -> None:
        """Release the listener and connections without serving (after ``listen()`` without ``run()``)."""
        self.http.close()
        if self._pool is not None:
            self._pool.shutdown(timeout=0)
            self._pool = None


def serve(app: Callable, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve the WSGI ``app`` until SIGINT/SIGTERM (blocking).

    Options (shared with ``powpow.asgi.serve``): ``uds``, ``workers``,
    ``root_path``, ``proxy_headers=True``, ``forwarded_allow_ips`` (comma list of
    addresses/CIDRs or ``*``; default env ``FORWARDED_ALLOW_IPS`` or
    ``127.0.0.1``), ``log_level="info"``, ``access_log=True``,
    ``timeout_keep_alive=5``, ``timeout_graceful_shutdown`` (None: 10 s),
    ``limit_concurrency`` (requests in flight; more get 503), ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl`` (an ``ssl.SSLContext``, wins).  WSGI only:
    ``threads=10`` (the worker pool), ``inline=False`` (run the app on the
    loop thread: see the module docstring), ``max_body`` (None: unlimited with
    threads, as bodies stream to the app; inline, where a body is read whole
    first, HttpServer's ``MAX_BODY``, 1 MiB; past it 413 and the connection closes).
    """
    server = Server(app, host, port, **options)
    server.listen()
    server.run()
