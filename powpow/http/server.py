"""HTTP/1.1 server: ``HttpServer(handler)`` on the powpow loop and TCP layer.

Shape
-----
``handler(req, res)`` is called once per request, when the whole message
(head and body, buffered by the parser up to ``max_body``) has arrived.  The
response may finish after the handler returns -- from a timer, another
callback, another connection: a request and its response live until
``res.end()``/``res.send()``, never recycled earlier.

Ordering and batching
---------------------
Each connection keeps its in-flight responses in request order.  A response's
bytes (and file ranges) go out only when every response before it has ended,
so pipelined answers never mix.  While one read is being handled, output is
collected and leaves in one ``send`` (or ``sendfile`` with the head corked in
front) at the end: 16 pipelined requests cost one write.

Memory per connection is bounded: reading pauses while the transport's queue
is above ``HTTP_HIGH_WATER`` (the kernel's window then pushes back on the
client), while ``max_pipeline_depth`` answers are outstanding or requests are
held back at that depth, and while an Upgrade/CONNECT request waits for its
handler.  A client that pipelines and never reads costs well under 1 MiB
beyond its socket buffers, and at most ``max_queued_files`` open files (file
parts of answers hold a descriptor until sent): past that the next request
waits until fewer are queued.

Protocol switches
-----------------
``conn, rest = res.upgrade(headers)`` writes the 101 (CONNECT: 200) after
every earlier answer, then HTTP forgets the transport (no deadline; its
callbacks are the caller's).  A handler that answers an Upgrade request
normally keeps an ordinary keep-alive connection; a CONNECT answered normally
is closed after the answer.

Deadlines
---------
One sweep per server (an interval timer at a fraction of the shortest
timeout), not a timer per request: each connection carries its phase and the
loop time when the phase began or last progressed.

* reading a head: ``header_timeout`` from its *first* byte (slow-drip
  slowloris heads are cut off however slowly they trickle);
* reading a body: ``body_timeout`` of idleness, and after ``body_grace`` an
  average of at least ``min_body_rate`` bytes/s (Apache mod_reqtimeout's
  MinRate): a trickled body is answered 408 and closed;
* keep-alive between requests: ``keepalive_timeout``;
* writing (any output not yet on the wire: bytes, file ranges, a FIN):
  ``write_timeout`` without the transport's ``bytes_sent`` growing -- a queue
  that grows is not progress, and a long download is never "idle";
* the client hung up or half-closed (``peer_closed``, also while reading is
  paused): answers still being made get ``keepalive_timeout`` to arrive.

The per-connection state machine lives in ``_session.py``.

TLS
---
``HttpServer(..., ssl=ctx)`` or ``listen(port, host=..., ssl=ctx)`` (one
listener) serves HTTPS through ``net.tls.TlsTransport``: the session sees the
same ``Transport`` contract, so nothing here knows about TLS.  Server
contexts get ALPN ``http/1.1`` and ``http/1.0``, no renegotiation and TLS 1.2 at least;
``req.tls`` tells a handler what was negotiated (and the client certificate
with mTLS).  A handshake must finish within ``handshake_timeout`` seconds.

Errors
------
A ``ParseError`` is answered with its status and ``Connection: close``, after
the responses to the good requests before it; so is (400) an absolute-form
target that names no http(s) host (``GET ftp://h/``, ``GET http://u@h/``,
``GET http://h:99999/``: RFC 9110 §4.2), before its handler would run --
``req.host`` of one that is fine is its authority (RFC 9112 §3.2.2).  In
streaming mode a body that fails under a running handler is answered in its
place, and the handler is told as of a disconnect (``on_close``).  An exception in a handler is
logged; a 500 goes out if nothing was sent yet; the connection is closed
after what precedes it has been delivered -- with a reset (RST; over TLS no
close_notify) when the answer's head went out and its body is close-delimited
(an HTTP/1.0 client): a FIN would tell the client the body is complete (a
chunked body lacks its last chunk, a Content-Length is not reached: those
tell).  Other connections never notice.
"""
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple

from .._log import get_logger
from ..loop import Loop
from ..net.connection import Connection
from ..net.tcp import TcpServer
from ._session import BODY, CLOSING, GONE, MAX_QUEUED_FILES, Session
from .parser import MAX_BODY, MAX_HEADER_SIZE, MAX_HEADERS, MAX_REQUEST_LINE
from .response import _SERVER, NO_BODY_STATUS, DateCache, HeaderValueError, Response, _FileSeg, status_line
from .forwarded import ProxyTrust

if TYPE_CHECKING:
    from .workers import WorkerListeners

__all__ = ["HttpServer", "Response", "HeaderValueError"]

log = get_logger("powpow.http")
access_log = get_logger("powpow.access")


def _body_bytes(res) -> int:
    """The body bytes of an answer that has just ended (the access log's size).

    A streamed body is what ``write()`` counted (framing excluded).  An answer
    made whole (``send()``, ``send_plan()``) counts nothing there, but its head
    and body are all still queued: the log line is written before the flush.
    Only this runs with ``access_log``; the answer itself pays nothing."""
    if res._head_only or res.status in NO_BODY_STATUS:
        return 0
    n = res._written
    if n or res._chunked:
        return n
    segs = res._segments
    i = 0
    while i < len(segs) and segs[i].__class__ is bytes and segs[i].startswith(b"HTTP/1.1 1"):
        i += 1  # a 103 Early Hints head queued ahead of this one
    if i == len(segs) or segs[i].__class__ is not bytes:
        return 0  # streamed without a byte, its head already flushed
    head = segs[i]
    end = head.find(b"\r\n\r\n") + 4  # no CR/LF in header values: the first blank line ends the head
    if head.find(b"\r\nTransfer-Encoding: chunked\r\n", 0, end) >= 0:
        return 0  # streamed without a byte (end_with_trailers): only the last chunk follows
    n = len(head) - end
    for seg in segs[i + 1:]:
        n += seg.count if seg.__class__ is _FileSeg else len(seg)
    return n


# Defaults (seconds); each one is a server option.
HEADER_TIMEOUT = 10.0    # nginx client_header_timeout is 60 s; 10 s stops slowloris sooner
BODY_TIMEOUT = 30.0      # idle time allowed between two pieces of a body
KEEPALIVE_TIMEOUT = 5.0  # nginx keepalive_timeout 75 s; idle sockets cost memory and fds
WRITE_TIMEOUT = 30.0     # a reader that takes nothing for this long is dropped
MAX_PIPELINE_DEPTH = 64  # responses in flight per connection before reading pauses
MAX_CONNECTIONS = 10000
# Apache mod_reqtimeout's default is body=20,MinRate=500: after a grace
# period a body must average this many bytes/s (R.U.D.Y. trickles are cut).
MIN_BODY_RATE = 500
BODY_GRACE = 10.0
# Reading pauses while a connection's answers are queued above this (the
# kernel's window then pushes back on the client): with one batch of answers
# on top, a client that never reads costs well under 1 MiB beyond the socket buffers.
HTTP_HIGH_WATER = 256 << 10
HTTP_LOW_WATER = 64 << 10


def _running_aio_loop() -> Optional[Loop]:
    """The powpow Loop under the ``powpow.aio`` loop running in this thread, else None
    (asyncio is not imported for it: no asyncio program, no running loop)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    pl = getattr(asyncio._get_running_loop(), "_pl", None)
    return pl if isinstance(pl, Loop) else None


class HttpServer:
    """An HTTP/1.1 server.  ``handler(req, res)``; see the module docstring and README."""

    exit_code = 0  # after run() with workers: 1 when one had to be killed or ended badly while stopping

    def __init__(self, handler: Callable, loop: Optional[Loop] = None, *,
                 max_connections: int = MAX_CONNECTIONS, max_pipeline_depth: int = MAX_PIPELINE_DEPTH,
                 max_body: int = MAX_BODY, max_request_line: int = MAX_REQUEST_LINE,
                 max_header_size: int = MAX_HEADER_SIZE, max_headers: int = MAX_HEADERS,
                 header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT, write_timeout: float = WRITE_TIMEOUT,
                 min_body_rate: int = MIN_BODY_RATE, body_grace: float = BODY_GRACE,
                 access_log: bool = False, trusted_proxies: Sequence[str] = (),
                 forwarded_header: str = "x-forwarded-for",
                 workers: int = 1, grace_period: float = 10.0, streaming: bool = False,
                 worker_mode: str = "process", ssl=None, handshake_timeout: float = 10.0,
                 max_queued_files: int = MAX_QUEUED_FILES) -> None:
        # every option but the loop, for the copies thread workers make
        self._options = {k: v for k, v in locals().items() if k not in ("self", "handler", "loop")}
        if worker_mode not in ("process", "thread"):
            raise ValueError("worker_mode must be 'process' or 'thread', got %r" % (worker_mode,))
        self.worker_mode = worker_mode
        self.ssl = _http_ctx(ssl)
        self.handshake_timeout = handshake_timeout
        self.handler = handler
        if _is_coroutine_function(handler):  # async def handler: a task per request on powpow.aio
            from ._async import AsyncHandler, aio_loops
            aio, loop = aio_loops(loop)
            self.handler = AsyncHandler(handler, aio)
        elif loop is not None and not isinstance(loop, Loop) and hasattr(loop, "_pl"):
            loop = loop._pl  # a powpow.aio.EventLoop: serve on the powpow Loop under it
        elif loop is None:
            # Made inside powpow.aio.run() (as async handlers are): serve on that loop.  A
            # loop of its own would never run there -- every client hung, silently.
            loop = _running_aio_loop()
        self.streaming = streaming
        self._own_loop = loop is None
        # None until listen()/run() makes one (after fork() with workers > 1)
        self.loop: Loop = loop  # type: ignore[assignment]
        self.max_connections = max_connections
        self.max_pipeline_depth = max_pipeline_depth
        if int(max_queued_files) < 1:
            raise ValueError("max_queued_files must be at least 1, got %r" % (max_queued_files,))
        # open files (file parts of answers) queued per connection before the next request waits
        self.max_queued_files = int(max_queued_files)
        self.max_body = max_body
        self.max_request_line = max_request_line
        self.max_header_size = max_header_size
        self.max_headers = max_headers
        self.header_timeout_ms = int(header_timeout * 1000)
        self.body_timeout_ms = int(body_timeout * 1000)
        self.keepalive_timeout_ms = int(keepalive_timeout * 1000)
        self.write_timeout_ms = int(write_timeout * 1000)
        self.min_body_rate = int(min_body_rate)
        self.body_grace_ms = int(body_grace * 1000)
        self.access_log = access_log
        self._trusted_proxies = frozenset(trusted_proxies)
        # X-Forwarded-For by default: proxies that append to it (nginx's
        # $proxy_add_x_forwarded_for) pass a client's own Forwarded header on
        # untouched, so reading RFC 7239 Forwarded is opt-in ("forwarded" or
        # "auto"), for proxies known to set it.
        self._proxy_trust = ProxyTrust(trusted_proxies, header=forwarded_header) if trusted_proxies else None
        self.workers = workers
        self.grace_period = grace_period
        self._date = DateCache()
        self._tcp: Optional[TcpServer] = None
        self._timers: List[Any] = []
        self._draining = False
        self._listen_args: List[Tuple[int, str, int, Any]] = []
        # workers > 1: the TCP listeners, bound and listening here before the fork (workers.py)
        self._worker_listeners: Optional["WorkerListeners"] = None
        # workers > 1: unix listeners bound here, shared by the workers
        self._unix_socks: List[Tuple[socket.socket, str]] = []
        self.port: Optional[int] = None

    # -- setup ------------------------------------------------------------

    def _ensure_loop(self) -> Loop:
        if self.loop is None:
            self.loop = Loop()
        return self.loop

    def _ensure_tcp(self) -> TcpServer:
        if self._tcp is None:
            loop = self._ensure_loop()
            self._tcp = TcpServer(loop, on_accept=self._on_accept, on_close=self._on_close,
                                  max_connections=self.max_connections, on_overload=self._on_overload,
                                  high_water=HTTP_HIGH_WATER, low_water=HTTP_LOW_WATER, ssl=self.ssl,
                                  handshake_timeout=self.handshake_timeout)
            self._timers.append(loop.add_interval(1000, self._date.refresh))
            shortest = min(self.header_timeout_ms, self.body_timeout_ms, self.keepalive_timeout_ms,
                           self.write_timeout_ms)
            self._timers.append(loop.add_interval(max(20, min(1000, shortest // 4)), self._sweep))
        return self._tcp

    def listen(self, port: int = 0, host: str = "0.0.0.0", backlog: int = 1024,
               reuse_port: bool = False, ssl=None) -> "HttpServer":
        """Listen on ``host:port`` (port 0 picks one; ``.port`` tells which).

        ``ssl``: an ``ssl.SSLContext`` for this listener only (HTTPS here,
        whatever the server's own ``ssl``)."""
        ctx = _http_ctx(ssl) or self.ssl
        if self.workers > 1:
            # Listening from now on, before any worker is forked: a client that connects
            # when listen() returns waits in the backlog (one SO_REUSEPORT socket a worker).
            from .workers import WorkerListeners
            if self._worker_listeners is None:
                self._worker_listeners = WorkerListeners(self.workers)
            bound = self._worker_listeners.listen(host, port, backlog, ctx)
            if self.port is None:
                self.port = bound
            self._listen_args.append((bound, host, backlog, ctx))
            return self
        tcp = self._ensure_tcp()
        tcp.listen(port, host, backlog, reuse_port, ssl=ctx)
        if self.port is None:
            self.port = tcp.port
        return self

    @property
    def connection_count(self) -> int:
        """Open client connections (of this process)."""
        return self._tcp.connection_count if self._tcp is not None else 0

    def listen_unix(self, path: str, mode: int = 0o660) -> "HttpServer":
        if self.workers > 1:
            # Bound once here (no loop before the fork); every worker accepts on it.
            from ..net import addr as _addr
            p = _addr.prepare_unix_path(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(p)
                os.chmod(p, mode)
                sock.listen(1024)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
            self._unix_socks.append((sock, p))
            return self
        self._ensure_tcp().listen_unix(path, mode)
        return self

    def _adopt_unix(self, tcp: TcpServer) -> None:
        """A worker: accept on the unix sockets the parent bound."""
        for sock, _path in self._unix_socks:
            # a duplicate: the worker's server closes its own; the parent unlinks the path once
            tcp.adopt(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, os.dup(sock.fileno())))

    # -- connections --------------------------------------------------------

    def _on_accept(self, conn) -> None:
        session = Session(self, conn)
        conn.context = session
        conn.on_data = session.on_data
        conn.on_eof = session.on_eof
        if conn.__class__ is Connection:
            conn.data_as_bytes = True  # the parser wants bytes: made in the recv call (no view, no second copy)

    def _on_close(self, conn, exc) -> None:
        session = conn.context
        if session.__class__ is Session:
            conn.context = None
            session.lost_exc = exc
            session._to_gone()
        if self._draining:
            self.loop.defer_call(self._check_drained)  # (the count drops after this callback)

    def _on_overload(self, conn) -> None:
        conn.send(status_line(503) + self._date.header + _SERVER
                  + b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 24\r\n"
                  + b"Connection: close\r\nRetry-After: 1\r\n\r\n503 Service Unavailable\n")

    def _sweep(self) -> None:
        tcp = self._tcp
        if tcp is None:
            return
        now = self.loop.now_ms()
        for conn in list(tcp.connections):
            session = conn.context
            # after an upgrade, context is the new owner's: only sessions are ours
            if session.__class__ is Session and not conn.closed:
                session.check_deadline(conn, now)

    def _client_ip(self, ip: Optional[str], req) -> Optional[str]:
        trust = self._proxy_trust
        if trust is None:
            return ip
        return trust.client_ip(ip, ip is None, req.headers)  # no IP: a unix-socket peer

    # (second, its common-log-format text): one strftime a second, not one a request
    _log_time: Tuple[int, str] = (0, "")

    def _log_access(self, session, res) -> None:
        """One line of common log format for an answer that has just ended:
        the client (through ``trusted_proxies``), the request line, the status
        and the body bytes (``-`` for none).  Runs only with ``access_log``."""
        req = res.request
        ip = getattr(req, "_client_ip", None)  # worked out already if the handler asked
        if ip is None:
            ip = session.client_ip(req)
        now = int(time.time())
        stamp = self._log_time
        if stamp[0] != now:
            stamp = self._log_time = (now, time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)))
        size = _body_bytes(res)
        access_log.info('%s - - [%s] "%s %s HTTP/%s" %d %s', ip or "-", stamp[1],
                        req.method, req.target, req.version, res.status, size or "-")

    # -- running and stopping -------------------------------------------------

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (graceful) or ``stop()``."""
        if self.workers > 1:
            from .workers import run_threads, run_workers
            # 1 when a worker had to be killed or ended badly while stopping (logged)
            self.exit_code = (run_threads if self.worker_mode == "thread" else run_workers)(self)
            return
        loop = self._ensure_loop()
        # signal handlers live in the main thread: run() in another thread (a test
        # fixture, an app embedding the server) serves until shutdown() or stop()
        signals = loop._add_stop_signals(lambda s: self.shutdown())
        try:
            loop.run()
        finally:
            for sig in signals:
                loop.remove_signal(sig)
            self.close()

    def shutdown(self, grace_period: Optional[float] = None) -> None:
        """Stop accepting; answer the requests already accepted (up to the grace
        period); stop the loop as soon as the last answer is out. From any thread:
        called off the loop's thread while it runs, it is posted to the loop."""
        if self._draining:
            return
        if self.loop is not None and self.loop._posted_if_elsewhere(lambda: self.shutdown(grace_period)):
            return
        self._draining = True
        tcp = self._tcp
        if tcp is None:
            self.loop.stop()
            return
        self._stop_taking_requests()
        grace = self.grace_period if grace_period is None else grace_period
        self._timers.append(self.loop.add_timer(int(grace * 1000), self._finish_drain))
        # answers leave from callbacks and timers: check often, it is only while stopping
        self._timers.append(self.loop.add_interval(20, self._check_drained))
        self._check_drained()

    def _stop_taking_requests(self) -> None:
        """Draining starts: stop listening, close the idle connections, and mark the
        others so that their last answer says ``Connection: close``."""
        tcp = self._tcp
        if tcp is None:
            return
        tcp.stop_listening()
        for conn in list(tcp.connections):
            session = conn.context
            if session.__class__ is not Session:
                # handed over (upgraded): not an answer of ours; it is closed with
                # the rest once every answer is out (a WsServer sends 1001 itself)
                continue
            session.closing = True  # the last answer says Connection: close
            if not session.pending and session.state != BODY and not conn.output_pending:
                # Idle as far as the loop knows, but a request may wait unread (sent as
                # the signal came; a proxy reusing its keep-alive connection): closing
                # with it unread resets it unanswered (the proxy's 502).  Read first: a
                # request that was there is answered like the ones in flight.
                conn.read_now()
                if (not conn.closed and session.state < CLOSING and session.state != BODY
                        and not session.pending and not conn.output_pending):
                    conn.close()  # idle, or a partial head

    def _session_quiet(self, session) -> None:
        """Draining: a connection handed its last answer over."""
        if session.state < GONE and session.state != BODY and not session.held and session.reset_timer is None:
            session._to_closing()
            session.conn.close_after_drain()
        self.loop.defer_call(self._check_drained)

    def _check_drained(self) -> None:
        """Draining: stop once no connection has an answer to make or deliver."""
        tcp = self._tcp
        if not self._draining or tcp is None:
            return
        for conn in tcp.connections:
            if conn.closed:
                continue
            session = conn.context
            if session.__class__ is not Session:
                continue  # handed over: not an answer of ours
            if conn.output_pending or session.pending or session.state == BODY or session.reset_timer is not None:
                return  # (reset_timer: a cut answer's connection ends with its reset, not our close)
        self._finish_drain()

    def _finish_drain(self) -> None:
        if self._tcp is not None:
            for conn in list(self._tcp.connections):
                conn.close()
        if self.loop is not None:
            self.loop.stop()

    def close(self) -> None:
        """Release the listener, every connection and the timers (the loop too if the server made it)."""
        if self.loop is not None:
            for t in self._timers:
                self.loop.cancel_timer(t)
        self._timers = []
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        if self._worker_listeners is not None:
            self._worker_listeners.close()
            self._worker_listeners = None
        for sock, path in self._unix_socks:
            sock.close()
            try:
                os.unlink(path)
            except OSError:
                pass
        self._unix_socks = []
        if self._own_loop and self.loop is not None:
            self.loop.close()
            self.loop = None  # type: ignore[assignment]


def _http_ctx(ctx):
    """A server context made ready for HTTP/1.1: ALPN ``http/1.1`` and ``http/1.0`` (see ``net.tls``)."""
    if ctx is None:
        return None
    from ..net._tlsconf import HTTP_ALPN
    from ..net.tls import prepare_server_context
    return prepare_server_context(ctx, HTTP_ALPN)


# ---------------------------------------------------------------- static files

_static_options: dict = {}


def _is_coroutine_function(fn) -> bool:
    code = getattr(fn, "__code__", None)  # functions and bound methods
    return code is not None and bool(code.co_flags & 0x180)  # CO_COROUTINE | CO_ITERABLE_COROUTINE


def serve_static(req, res, root, prefix: str = "/", index: Sequence[str] = ("index.html",),
                 listing: bool = False, **options) -> bool:
    """Answer ``req`` from the files under ``root`` if its path is under ``prefix``.

    Returns False (and sends nothing) when the path is outside ``prefix``, so a
    handler can fall through to its own routes.  Everything else -- 200/206/304,
    403/404 for unsafe or hidden paths, 405, 416, redirects for directories --
    is answered here; see ``powpow.http.static`` for the rules.  Extra keyword
    options go to ``StaticOptions`` (``show_hidden``, ``precompressed``,
    ``download``, ``cache_control``).
    """
    try:
        from .static import StaticOptions, plan_static
    except OSError as exc:  # first call with no descriptor left to read the module (EMFILE): as for a file
        log.warning("static: cannot load the static file planner (%s): answering 503", exc)
        res.send(b"503 Service Unavailable\n", status=503, headers=[
            ("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"),
            ("Retry-After", "1")])
        return True
    key = (os.fspath(root), prefix, tuple(index), listing, tuple(sorted(options.items())))
    opts = _static_options.get(key)
    if opts is None:
        opts = StaticOptions(os.fspath(root), prefix=prefix, index=tuple(index), listing=listing, **options)
        if len(_static_options) < 64:
            _static_options[key] = opts
    plan = plan_static(req.method, req.raw_path, req.headers.get, opts)  # (absolute-form too)
    if plan is None:
        return False
    if plan.reason:
        log.info("static %s %s -> %d: %s", req.method, req.target, plan.status, plan.reason)
    if plan.status == 301 and req.query:
        plan.headers = [(n, v + "?" + req.query if n.lower() == "location" else v) for n, v in plan.headers]
    res.send_plan(plan)
    return True
