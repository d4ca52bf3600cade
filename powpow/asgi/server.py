"""``Server`` and ``serve``: an ASGI 3 application on powpow's HTTP server and powpow.aio.

Shape: one ``powpow.aio.EventLoop`` per process; the HTTP server
(``HttpServer(streaming=True)``) runs on the powpow ``Loop`` under it, and its
handler starts one task per request (``_http.HttpCycle``) or per WebSocket
(``_ws.WsCycle``).  Requests that arrive before lifespan startup finished
wait for it (workers accept as soon as they are forked).

Shutdown (SIGINT/SIGTERM, or ``shutdown()`` from any thread): stop accepting;
idle keep-alive connections close; the last answer on a busy one says
``Connection: close``; every WebSocket gets close 1001; requests get
``timeout_graceful_shutdown`` seconds (10 by default: never "forever") to
finish, then their tasks are cancelled and the connections closed; lifespan
shutdown runs; ``run()`` returns 0.  A second SIGINT/SIGTERM exits at once.
With workers, the parent takes the stop signals and sends each worker one
SIGTERM; a worker ignores SIGINT (Ctrl-C reaches the whole process group: a
worker that counted it and its parent's SIGTERM as two signals dropped its
requests), and the parent's second signal kills the workers
(``http.workers``).

Exit codes of ``run()``: 0 after a clean shutdown, 3 when lifespan startup
failed, 1 when lifespan shutdown failed or (workers) a worker was killed or
ended badly while stopping.
"""
import asyncio
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Optional

from .._log import configure_server_logging
from ..http._session import BODY, Session
from ..http.forwarded import app_server_trust
from ..http.server import HttpServer
from ._http import HttpCycle, build_scope
from ._lifespan import Lifespan
from ._ws import WsCycle

__all__ = ["Server", "serve", "GRACE_DEFAULT"]

log = logging.getLogger("powpow.asgi")

GRACE_DEFAULT = 10.0  # timeout_graceful_shutdown=None: bounded, never "wait forever"
STARTUP_FAILURE = 3
UNLIMITED_BODY = 1 << 62

_503 = b"Service Unavailable\n"
_503_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Retry-After", "1")]

_Task = asyncio.Task
_current_tasks = asyncio.tasks._current_tasks  # type: ignore[attr-defined]
_grab: list = [None, None]  # the step a new Task scheduled, and its context (see Server._handle)


def _record_step(callback, *args, context=None):
    _grab[0] = callback
    _grab[1] = context



class _AsgiHttpServer(HttpServer):
    """An HttpServer whose loop is the powpow Loop under a powpow.aio EventLoop,
    and whose ``run()`` (in each worker too) serves the ASGI app."""

    def __init__(self, owner: "Server", **options) -> None:
        self.owner = owner
        self.workers_code = 0  # with workers: run_workers' result
        super().__init__(owner._handle, **options)

    def _ensure_loop(self):
        if self.loop is None:
            from ..aio import new_event_loop
            aio = new_event_loop()
            self.owner.aio = aio
            self.loop = aio._pl
            self._own_loop = False  # closed with the aio loop
        return self.loop

    def run(self) -> None:
        if self.workers > 1:
            from ..http.workers import run_workers
            self.workers_code = run_workers(self)  # forks; each worker calls run() again with workers == 1
            return
        code = self.owner._run_single()
        if code and self.owner._fail_w is not None:  # a worker: tell the parent (which then stops)
            try:
                os.write(self.owner._fail_w, bytes([code]))
            except OSError:
                pass

    def _check_drained(self) -> None:
        pass  # the ASGI server drains itself (Server._drain)

    def _on_close(self, conn, exc) -> None:
        session = conn.context
        super()._on_close(conn, exc)
        if session.__class__ is Session:
            req = session.body_req
            if req is not None:
                _body_cut(req)


def _body_cut(req) -> None:
    """The connection closed while ``req``'s body was still arriving, and its
    response had ended already, so the session's close did not tell the app
    (``Response._lost`` calls ``on_close`` only for an answer still being made).

    That happens when the HTTP layer answered the request itself: a chunked
    body past ``max_body`` (413 from ``Session._reject``) -- or when the app
    answered before reading the whole body.  A ``receive()`` waiting for more
    body would wait until shutdown's cancel, holding its task and an
    ``inflight`` slot: it gets ``http.disconnect`` now."""
    res = req.response
    if res is not None and res.ended:
        cb = res.on_close
        if cb is not None:
            res.on_close = None
            res._lost()  # (an ended answer: marks it gone, calls nothing)
            cb()


class Server:
    """An ASGI 3 server (see the module docstring and README "ASGI").

    ``Server(app, host, port, **options).listen()`` binds (``.port`` is the
    bound port when ``port=0``); ``run()`` blocks until shut down and returns
    the exit code; ``shutdown()`` starts a graceful shutdown from any thread.

    Options (shared with ``powpow.wsgi``): ``uds`` (a unix socket path instead
    of host/port), ``workers``, ``root_path``, ``proxy_headers`` and
    ``forwarded_allow_ips`` (comma list of addresses/networks or "*"; None:
    ``$FORWARDED_ALLOW_IPS`` or 127.0.0.1), ``log_level`` (None: leave logging
    alone), ``access_log``, ``timeout_keep_alive``, ``timeout_graceful_shutdown``
    (None: 10 s), ``limit_concurrency`` (503 beyond that many requests in flight
    or connections), ``ssl_certfile``/``ssl_keyfile`` or ``ssl`` (an SSLContext).
    ASGI only: ``lifespan`` ("auto", "on", "off"), ``ws`` ("auto"/"powpow", "none"),
    ``ws_max_size``, ``ws_ping_interval``, ``ws_ping_timeout``, ``max_body``
    (None: no limit, the body streams), ``max_header_size`` / ``max_headers`` /
    ``max_request_line`` (the request head's limits, HttpServer's defaults: 8 KiB,
    100 fields, 8 KiB; past them 431/414), ``on_ready(server)`` (called once
    lifespan startup is done and requests are served; with workers, in the
    parent when the first worker serves).
    """

    def __init__(self, app: Callable, host: str = "127.0.0.1", port: int = 8000, *, uds: Optional[str] = None,
                 workers: int = 1, root_path: str = "", proxy_headers: bool = True,
                 forwarded_allow_ips=None, log_level: Optional[str] = "info", access_log: bool = True,
                 timeout_keep_alive: float = 5.0, timeout_graceful_shutdown: Optional[float] = None,
                 limit_concurrency: Optional[int] = None, ssl_certfile=None, ssl_keyfile=None, ssl=None,
                 lifespan: str = "auto", ws: str = "auto", ws_max_size: int = 16 << 20,
                 ws_ping_interval: Optional[float] = 20.0, ws_ping_timeout: Optional[float] = 20.0,
                 max_body: Optional[int] = None, max_header_size: Optional[int] = None,
                 max_headers: Optional[int] = None, max_request_line: Optional[int] = None,
                 on_ready: Optional[Callable[["Server"], Any]] = None) -> None:
        if lifespan not in ("auto", "on", "off"):
            raise ValueError("lifespan must be 'auto', 'on' or 'off', got %r" % (lifespan,))
        if ws not in ("auto", "none", "powpow"):
            raise ValueError("ws must be 'auto' (powpow.ws), 'powpow' or 'none', got %r" % (ws,))
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.app = app
        self.host = host
        self.port: Optional[int] = port
        self.uds = uds
        self.workers = workers
        self.root_path = root_path.rstrip("/") if root_path else ""
        self.root_path_b = self.root_path.encode("utf-8")
        self.trust = app_server_trust(proxy_headers, forwarded_allow_ips, uds)
        self.log_level = log_level
        configure_server_logging(log_level)
        self.access_log = bool(access_log) and logging.getLogger("powpow.access").isEnabledFor(logging.INFO)
        self.timeout_keep_alive = timeout_keep_alive
        self.grace = GRACE_DEFAULT if timeout_graceful_shutdown is None else float(timeout_graceful_shutdown)
        self.limit = limit_concurrency if limit_concurrency else 1 << 62
        if ssl is None and ssl_certfile:
            from ..net.tls import server_context
            ssl = server_context(ssl_certfile, ssl_keyfile)
        self.ssl = ssl
        self.lifespan_mode = lifespan
        self.ws_enabled = ws != "none"
        from ..ws.connection import WsOptions
        self.ws_options = WsOptions(max_message_size=ws_max_size, ping_interval=ws_ping_interval,
                                    ping_timeout=ws_ping_timeout)
        self.on_ready = on_ready
        # None: no limit (the app reads the body as a stream and decides, as with uvicorn)
        self.max_body = UNLIMITED_BODY if max_body is None else int(max_body)
        # the request head's limits: HttpServer's defaults (8 KiB, 100 fields, 8 KiB line) unless given
        self.head_limits = {k: int(v) for k, v in (("max_header_size", max_header_size), ("max_headers", max_headers),
                                                    ("max_request_line", max_request_line)) if v is not None}
        self.state: dict = {}
        self.aio: Any = None
        self.http: Optional[_AsgiHttpServer] = None
        self.inflight = 0
        self.ready = False
        self.stopping = False
        self.websockets: set = set()
        self.exit_code = 0
        self._early: Optional[list] = []
        self._stop_fut: Any = None
        self._stop_requested = False
        self._signals = 0
        self._lifespan: Optional[Lifespan] = None
        self._fail_w: Optional[int] = None
        self._fail_r: Optional[int] = None

    # -- setup ------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.ssl is not None else "http"

    def listen(self) -> "Server":
        """Bind and listen (requests wait for lifespan startup, which ``run()`` does)."""
        if self.http is not None:
            return self
        options = dict(keepalive_timeout=self.timeout_keep_alive, access_log=self.access_log,
                       streaming=True, workers=self.workers, grace_period=self.grace, ssl=self.ssl,
                       max_body=self.max_body, **self.head_limits)
        if self.limit < 1 << 62:
            options["max_connections"] = self.limit
        http = self.http = _AsgiHttpServer(self, **options)
        if self.uds is not None:
            http.listen_unix(self.uds)
            self.port = None
        else:
            http.listen(self.port or 0, self.host)
            self.port = http.port
        return self

    @property
    def url(self) -> str:
        if self.uds is not None:
            return "unix:%s" % self.uds
        host = self.host if ":" not in self.host else "[%s]" % self.host
        return "%s://%s:%s/" % (self.scheme, host, self.port)

    # -- the request handler (HttpServer's, on the loop) ----------------------------

    def _handle(self, req, res) -> None:
        if not self.ready:
            if self._early is not None:
                self._early.append((req, res))  # lifespan startup is still running
                return
            res._close = True
            res.send(_503, 503, _503_HEADERS)
            return
        if self.inflight >= self.limit:
            res.send(_503, 503, _503_HEADERS)
            return
        self.inflight += 1
        if req.upgrade is not None and self.ws_enabled and req.upgrade.lower() == "websocket":
            from ..ws.handshake import check_request
            bad = check_request(req)
            if bad is not None:
                self.inflight -= 1
                from ..ws.server import _refuse
                _refuse(res, *bad)
                return
            cycle: Any = WsCycle(self, req, res)
            scope = build_scope(self, req, res, "websocket")
        else:
            cycle = HttpCycle(self, req, res)
            scope = build_scope(self, req, res, "http")
        aio = self.aio
        if aio._task_factory is None and aio not in _current_tasks:
            # Eager start: the task's first step runs now, inside the read that
            # brought the request (no loop pass, no Handle in between).  Task()
            # schedules that step with loop.call_soon(step, context=ctx): for the
            # time of the constructor call_soon is an instance attribute that only
            # records it, and the step runs here (a plain callback: never inside
            # another task, checked above, or the step would refuse to run).
            # Measured: 13% less CPU per hello-world request on CPython, 16% on PyPy.
            grab = _grab
            grab[0] = None
            aio.call_soon = _record_step
            try:
                _Task(cycle.run(self.app, scope), loop=aio)
            finally:
                del aio.call_soon
            step = grab[0]
            if step is not None:
                grab[0] = None
                ctx = grab[1]
                grab[1] = None
                if ctx is None:
                    step()
                else:
                    ctx.run(step)
        else:
            aio.create_task(cycle.run(self.app, scope))

    # -- running ----------------------------------------------------------------

    def run(self) -> int:
        """Serve until shut down; returns the exit code (0 clean, 3 startup failed, 1 shutdown failed)."""
        self.listen()
        http = self.http
        assert http is not None
        if self.workers > 1:
            # Workers report on a pipe: 0 when serving (the first one makes on_ready run
            # here), an exit code when lifespan startup failed (the parent then stops).
            self._fail_r, self._fail_w = os.pipe()
            codes: list = []
            reader = threading.Thread(target=self._read_reports, args=(self._fail_r, codes), daemon=True)
            reader.start()
            try:
                http.run()
            finally:
                os.close(self._fail_w)
                self._fail_w = None
                reader.join(5)
                os.close(self._fail_r)
                self._fail_r = None
                http.close()
            self.exit_code = max(codes + [1 if http.workers_code else 0])
            return self.exit_code
        return self._run_single()

    def _read_reports(self, fd: int, codes: list) -> None:
        announced = False
        while True:
            try:
                data = os.read(fd, 64)
            except OSError:
                return
            if not data:
                return
            for b in data:
                if b == 0:
                    if not announced and self.on_ready is not None:
                        announced = True
                        self.on_ready(self)
                else:
                    codes.append(b)
                    # not a SIGTERM from the worker: two of them would be a second signal
                    from ..http.workers import stop_workers
                    stop_workers(self.http)

    def _run_single(self) -> int:
        http = self.http
        assert http is not None
        http._ensure_tcp()  # makes the aio loop (a worker after fork: its own)
        aio = self.aio
        asyncio.set_event_loop(aio)
        signals: tuple = ()
        if threading.current_thread() is threading.main_thread():
            # a worker listens to its parent's SIGTERM alone (SIGINT is ignored: http.workers)
            signals = (signal.SIGTERM,) if self._fail_w is not None else (signal.SIGINT, signal.SIGTERM)
            for s in signals:
                aio.add_signal_handler(s, self._on_signal)
        try:
            aio.run_until_complete(self._main())
        finally:
            if signals:
                for s in signals:
                    try:
                        aio.remove_signal_handler(s)
                    except Exception:  # pragma: no cover - loop already closing
                        pass
            try:
                rest = [t for t in asyncio.all_tasks(aio) if not t.done()]
                for t in rest:
                    t.cancel()
                if rest:
                    aio.run_until_complete(asyncio.wait(rest, timeout=1.0))
                aio.run_until_complete(aio.shutdown_asyncgens())
            finally:
                http.close()
                self.websockets.clear()
                asyncio.set_event_loop(None)
                aio.close()
        return self.exit_code

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals > 1:
            if self._fail_w is not None:
                return  # a worker: its parent's second signal kills it
            log.warning("second signal: exiting now")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        log.info("shutting down (again to exit at once)")
        self._request_stop()

    def shutdown(self) -> None:
        """Start a graceful shutdown (from any thread); ``run()`` returns when it is done."""
        aio = self.aio
        if aio is None or aio.is_closed():
            self._stop_requested = True
            return
        try:
            aio.call_soon_threadsafe(self._request_stop)
        except RuntimeError:  # closed meanwhile
            pass

    def _request_stop(self) -> None:
        self._stop_requested = True
        fut = self._stop_fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _main(self) -> None:
        aio = self.aio
        self._stop_fut = aio.create_future()
        if self.lifespan_mode != "off":
            lifespan = self._lifespan = Lifespan(self.app, self.lifespan_mode, self.state, aio)
            if not await lifespan.startup():
                self.exit_code = STARTUP_FAILURE
                self._early = None
                self.stopping = True
                await self._drain(0.0)
                return
        self.ready = True
        early = self._early
        self._early = None
        for req, res in early or ():
            if not res._gone:
                self._handle(req, res)
        early = req = res = None  # (this frame lives as long as the server: hold no request)
        if self._fail_w is not None:  # a worker: tell the parent we serve
            try:
                os.write(self._fail_w, b"\0")
            except OSError:
                pass
        elif self.on_ready is not None:
            self.on_ready(self)
        if not self._stop_requested:
            await self._stop_fut
        await self._drain(self.grace)
        if self._lifespan is not None:
            if not await self._lifespan.shutdown(max(self.grace, 1.0)):
                self.exit_code = self.exit_code or 1

    def _busy(self) -> bool:
        if self.inflight > 0:
            return True
        tcp = self.http._tcp if self.http is not None else None
        if tcp is None:
            return False
        for conn in tcp.connections:
            if conn.closed:
                continue
            session = conn.context
            if session.__class__ is Session:
                if conn.output_pending or session.pending or session.state == BODY:
                    return True
            elif conn.output_pending:
                return True  # a WebSocket's close frame on its way
        return False

    async def _drain(self, grace: float) -> None:
        self.stopping = True
        http = self.http
        assert http is not None
        aio = self.aio
        http._draining = True
        tcp = http._tcp
        if tcp is not None:
            http._stop_taking_requests()
        for ws in list(self.websockets):
            ws.close(1001, "server shutting down")
        deadline = aio.time() + grace
        while self._busy() and aio.time() < deadline:
            await asyncio.sleep(0.02)
        me = asyncio.current_task()
        keep = self._lifespan.task if self._lifespan is not None else None
        rest = [t for t in asyncio.all_tasks(aio) if t is not me and t is not keep and not t.done()]
        if rest:
            log.info("cancelling %d task(s) still running after the %.1f s grace period", len(rest), grace)
            for t in rest:
                t.cancel()
            await asyncio.wait(rest, timeout=1.0)
        if tcp is not None:
            for conn in list(tcp.connections):
                conn.close()


def serve(app: Callable, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve ``app`` until SIGINT/SIGTERM (blocking).  Options: see ``Server``.

    Raises ``SystemExit`` with a non-zero code when lifespan startup (3) or
    shutdown (1) failed."""
    code = Server(app, host, port, **options).run()
    if code:
        raise SystemExit(code)
