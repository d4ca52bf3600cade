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

Deadlines
---------
One sweep per server (an interval timer at a fraction of the shortest
timeout), not a timer per request: each connection carries its phase and the
loop time when the phase began or last progressed.

* reading a head: ``header_timeout`` from its *first* byte (slow-drip
  slowloris heads are cut off however slowly they trickle);
* reading a body: ``body_timeout`` of idleness;
* keep-alive between requests: ``keepalive_timeout``;
* writing: ``write_timeout`` without the peer taking any of the queued bytes.

Errors
------
A ``ParseError`` is answered with its status and ``Connection: close``, after
the responses to the good requests before it.  An exception in a handler is
logged; a 500 goes out if nothing was sent yet; the connection is closed
after what precedes it has been delivered.  Other connections never notice.
"""
import logging
import os
import signal
import socket
import time
from typing import Callable, Optional, Sequence

from ..errors import ParseError
from ..loop import Loop
from ..net.tcp import TcpServer
from .parser import MAX_BODY, MAX_HEADER_SIZE, MAX_HEADERS, MAX_REQUEST_LINE, RequestParser
from .response import _SERVER, _UNPARSED, DateCache, HeaderValueError, Response, _FilePart, status_line

__all__ = ["HttpServer", "Response", "HeaderValueError"]

log = logging.getLogger("powpow.http")
access_log = logging.getLogger("powpow.access")

# Defaults (seconds); each one is a server option.
HEADER_TIMEOUT = 10.0    # nginx client_header_timeout is 60 s; 10 s stops slowloris sooner
BODY_TIMEOUT = 30.0      # idle time allowed between two pieces of a body
KEEPALIVE_TIMEOUT = 5.0  # nginx keepalive_timeout 75 s; idle sockets cost memory and fds
WRITE_TIMEOUT = 30.0     # a reader that takes nothing for this long is dropped
MAX_PIPELINE_DEPTH = 64  # responses in flight per connection before reading pauses
MAX_CONNECTIONS = 10000

_IDLE, _HEAD, _BODY = 0, 1, 2

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
class _HttpConnection:
    """Per-connection HTTP state (``conn.context``)."""

    __slots__ = ("server", "conn", "parser", "pending", "in_batch", "phase", "since",
                 "closing", "queued_seen", "continued", "streaming", "ip", "held")

    def __init__(self, server: "HttpServer", conn) -> None:
        self.server = server
        self.conn = conn
        # Snapshot: connection objects are pooled, and a response may end
        # (and be logged) after its connection was closed and reused.
        self.ip = conn.get_client_ip()
        self.streaming = server.streaming
        # max_pipeline: one feed hands out at most max_pipeline_depth requests;
        # the rest stay parsed-later in the parser's buffer until answers drain.
        limits = dict(max_request_line=server.max_request_line, max_header_size=server.max_header_size,
                      max_headers=server.max_headers, max_body=server.max_body,
                      max_pipeline=server.max_pipeline_depth)
        if self.streaming:
            self.parser = RequestParser(on_headers=self._on_headers_streaming, on_body=self._on_body,
                                        on_message_complete=self._on_complete, **limits)
        else:
            # No callbacks: the parser keeps its fast path (a whole small
            # request in one read costs one scan and no state machine).
            self.parser = RequestParser(**limits)
        self.continued = None
        self.held = False  # the last feed stopped at max_pipeline_depth: more may be buffered
        # A list, not a deque: an empty deque is 760 bytes on CPython, and an
        # idle keep-alive connection must cost under 3 KB; depth stays small.
        self.pending = []
        self.in_batch = False
        self.phase = _IDLE
        self.since = server.loop.now_ms()
        self.closing = False
        self.queued_seen = 0

    def _continue(self, req) -> None:
        if req.expect_continue and (req.content_length or req.chunked) and req is not self.continued:
            # The body will be read (it is within max_body, or the parser would
            # have raised 413 already): ask for it (RFC 9110 §10.1.1).
            self.continued = req
            self.conn.send(_CONTINUE)

    # -- streaming mode: the handler runs when the head is in ----------------

    def _on_headers_streaming(self, req) -> None:
        self._continue(req)
        self._dispatch(req)

    def _on_body(self, req, chunk) -> None:
        cb = req._body_cb
        if cb is None:
            req._stream_buf += chunk
            return
        try:
            cb(chunk)
        except Exception as exc:
            self._handler_failed(req, exc)

    def _on_complete(self, req) -> None:
        req._close_stream_file()
        if req._body_cb is None and req._stream_buf:
            buf = bytes(req._stream_buf)
            req._body_buf, req._body_start, req._body_end = buf, 0, len(buf)
            req._stream_buf = None
        cb = req._end_cb
        if cb is not None:
            try:
                cb()
            except Exception as exc:
                self._handler_failed(req, exc)

    def on_data(self, conn, data) -> None:
        server = self.server
        parser = self.parser
        try:
            # bytes: the TCP layer's view is into a shared buffer anyway, and the
            # parser's fast path (whole requests, nothing pending) wants bytes.
            reqs = parser.feed(bytes(data))
        except ParseError as exc:
            self._reject(exc)
            return
        if reqs:
            self.held = len(reqs) >= server.max_pipeline_depth
            self.in_batch = True  # collect every answer of this read: one write
            try:
                if not self.streaming:  # (streaming: dispatched when each head arrived)
                    for req in reqs:
                        self._dispatch(req)
                if parser.failed:  # good requests came first; now answer the bad one
                    try:
                        parser.feed(b"")
                    except ParseError as exc:
                        self._reject(exc)
            finally:
                self.in_batch = False
        self.flush()
        if self.closing:
            return
        p = self.parser
        cur = p.current
        if cur is not None and cur.expect_continue:
            self._continue(cur)
        # (no pending answers and nothing buffered: flush() already made it _IDLE)
        if cur is not None:
            # a body is arriving -- also while its handler already runs
            # (streaming): the body idle deadline applies either way
            self.phase = _BODY
            self.since = server.loop.now_ms()
        else:
            if self.phase == _BODY:
                self.phase = _IDLE  # body complete: the handler answers (pending guards it)
            if not self.pending and not p._idle and self.phase != _HEAD:
                self.phase = _HEAD  # a partial head: its deadline runs from its first byte
                self.since = server.loop.now_ms()
        if len(self.pending) >= server.max_pipeline_depth:
            conn.pause_reading()

    def _parse_held(self) -> None:
        if not self.conn.closed and not self.pending and not self.closing:
            self.on_data(self.conn, b"")

    def _dispatch(self, req) -> None:
        res = Response(self, req)
        self.pending.append(res)
        req.response = res
        try:
            self.server.handler(req, res)
        except Exception as exc:
            self._handler_failed(req, exc)

    def _handler_failed(self, req, exc: Exception) -> None:
        """500 if nothing was sent yet; close after what precedes it either way.

        A ParseError from the handler (``req.form()`` on a bad or too large
        multipart body) is the client's fault: it gets its own status."""
        res = req.response
        if isinstance(exc, ParseError) and not res.headers_sent and not res.ended:
            log.info("bad request body from %s: %s", self.ip, exc)
            res._segments.clear()
            res._headers = []
            res.send_error(exc.status, exc.message)
            return
        log.error("handler raised for %s %s", req.method, req.target, exc_info=exc)
        self.closing = True
        if not res.ended:
            if not res.headers_sent:
                res._segments.clear()
                res._headers = []
                res._close = True
                try:
                    res.send_error(500)
                except Exception:  # pragma: no cover - our own error path
                    res.ended = True
            else:
                res._close = True
                res.ended = True
        self.flush()

    def _reject(self, exc: ParseError) -> None:
        """Answer a parse error (after what precedes it), then close."""
        log.info("bad request from %s: %s", self.ip, exc)
        self.closing = True
        res = Response(self, _UNPARSED)
        self.pending.append(res)
        res.send_error(exc.status, exc.message)

    def flush(self) -> None:
        """Move finished output, in request order, to the connection."""
        if self.in_batch:
            return
        pending = self.pending
        conn = self.conn
        if conn.closed:
            pending.clear()
            return
        if len(pending) == 1:
            # Fast path (keep-alive, one request per read): one finished answer
            # in one piece goes straight out.
            res = pending[0]
            segs = res._segments
            if (res.ended and len(segs) == 1 and not res._close and not res._upgrade
                    and segs[0].__class__ is bytes):
                conn.send(segs[0])
                del pending[0]
                self._drained()
                return
        out = []
        close = False
        while pending:
            res = pending[0]
            if res._segments:
                out.extend(res._segments)
                res._segments.clear()
            if not res.ended:
                break
            del pending[0]
            if res._close or res._upgrade:
                close = not res._upgrade
                pending.clear()
                break
        if out:
            self._write(out)
        if close:
            self.closing = True
            conn.close_after_drain()
            return
        if not pending:
            self._drained()

    def _drained(self) -> None:
        """Every answer is out: read (or parse) the next requests; keep-alive deadline starts."""
        if not self.closing:
            conn = self.conn
            if self.held:
                # requests held back at the depth limit: parse the next batch
                # on the next iteration (not recursively from here)
                self.held = False
                self.server.loop.defer_call(self._parse_held)
            elif conn.reading_paused:
                conn.resume_reading()
        if self.phase != _HEAD:
            self.phase = _IDLE
            self.since = self.server.loop.now_ms()

    def _write(self, out: list) -> None:
        conn = self.conn
        data = []
        for seg in out:
            if seg.__class__ is _FilePart:
                conn.send_file(seg.path, seg.offset, seg.count, header=b"".join(data) if data else None)
                data = []
            else:
                data.append(seg)
        if data:
            conn.send(data[0] if len(data) == 1 else b"".join(data))


class HttpServer:
    """An HTTP/1.1 server.  ``handler(req, res)``; see the module docstring and README."""

    def __init__(self, handler: Callable, loop: Optional[Loop] = None, *,
                 max_connections: int = MAX_CONNECTIONS, max_pipeline_depth: int = MAX_PIPELINE_DEPTH,
                 max_body: int = MAX_BODY, max_request_line: int = MAX_REQUEST_LINE,
                 max_header_size: int = MAX_HEADER_SIZE, max_headers: int = MAX_HEADERS,
                 header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT, write_timeout: float = WRITE_TIMEOUT,
                 access_log: bool = False, trusted_proxies: Sequence[str] = (),
                 workers: int = 1, grace_period: float = 10.0, streaming: bool = False,
                 worker_mode: str = "process") -> None:
        # every option but the loop, for the copies thread workers make
        self._options = {k: v for k, v in locals().items() if k not in ("self", "handler", "loop")}
        if worker_mode not in ("process", "thread"):
            raise ValueError("worker_mode must be 'process' or 'thread', got %r" % (worker_mode,))
        self.worker_mode = worker_mode
        self.handler = handler
        self.streaming = streaming
        self._own_loop = loop is None
        self.loop = loop
        self.max_connections = max_connections
        self.max_pipeline_depth = max_pipeline_depth
        self.max_body = max_body
        self.max_request_line = max_request_line
        self.max_header_size = max_header_size
        self.max_headers = max_headers
        self.header_timeout_ms = int(header_timeout * 1000)
        self.body_timeout_ms = int(body_timeout * 1000)
        self.keepalive_timeout_ms = int(keepalive_timeout * 1000)
        self.write_timeout_ms = int(write_timeout * 1000)
        self.access_log = access_log
        self._trusted_proxies = frozenset(trusted_proxies)
        self.workers = workers
        self.grace_period = grace_period
        self._date = DateCache()
        self._tcp = None
        self._timers = []
        self._draining = False
        self._listen_args = []
        self._reserve = None
        self.port = None

    # -- setup ------------------------------------------------------------

    def _ensure_loop(self) -> Loop:
        if self.loop is None:
            self.loop = Loop()
        return self.loop

    def _ensure_tcp(self) -> TcpServer:
        if self._tcp is None:
            loop = self._ensure_loop()
            self._tcp = TcpServer(loop, on_accept=self._on_accept, on_close=self._on_close,
                                  max_connections=self.max_connections, on_overload=self._on_overload)
            self._timers.append(loop.add_interval(1000, self._date.refresh))
            shortest = min(self.header_timeout_ms, self.body_timeout_ms, self.keepalive_timeout_ms,
                           self.write_timeout_ms)
            self._timers.append(loop.add_interval(max(20, min(1000, shortest // 4)), self._sweep))
        return self._tcp

    def listen(self, port: int = 0, host: str = "0.0.0.0", backlog: int = 1024,
               reuse_port: bool = False) -> "HttpServer":
        """Listen on ``host:port`` (port 0 picks one; ``.port`` tells which)."""
        if self.workers > 1:
            # Reserve the port in the parent; workers bind it with SO_REUSEPORT.
            self._reserve = _reserve_port(host, port)
            self.port = self._reserve.getsockname()[1]
            self._listen_args.append((self.port, host, backlog))
            return self
        tcp = self._ensure_tcp()
        tcp.listen(port, host, backlog, reuse_port)
        if self.port is None:
            self.port = tcp.port
        return self

    @property
    def connection_count(self) -> int:
        """Open client connections (of this process)."""
        return self._tcp.connection_count if self._tcp is not None else 0

    def listen_unix(self, path: str, mode: int = 0o660) -> "HttpServer":
        self._ensure_tcp().listen_unix(path, mode)
        return self

    # -- connections --------------------------------------------------------

    def _on_accept(self, conn) -> None:
        proto = _HttpConnection(self, conn)
        conn.context = proto
        conn.on_data = proto.on_data

    def _on_close(self, conn, exc) -> None:
        proto = conn.context
        if proto is not None:
            cur = proto.parser.current
            if cur is not None:
                cur._close_stream_file()  # the body never finished
            proto.pending.clear()
            proto.closing = True
            conn.context = None
        if self._draining and self._tcp is not None and not self._tcp.connection_count:
            self._finish_drain()

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
            proto = conn.context
            if proto is None or conn.closed:
                continue
            q = conn.queued_bytes
            if q:
                # writing: the deadline moves whenever the peer takes bytes
                if proto.queued_seen != q:
                    proto.queued_seen = q
                    proto.since = now
                elif now - proto.since >= self.write_timeout_ms:
                    log.info("closing %s: slow reader took nothing for %d ms",
                             conn.get_client_ip(), self.write_timeout_ms)
                    conn.close()
                continue
            proto.queued_seen = 0
            phase = proto.phase
            if proto.pending and phase != _BODY:
                continue  # a handler is still answering: its own business
            if phase == _IDLE:
                limit = self.keepalive_timeout_ms
            elif phase == _HEAD:
                limit = self.header_timeout_ms
            else:
                limit = self.body_timeout_ms
            if now - proto.since >= limit:
                conn.close()

    def _client_ip(self, ip: Optional[str], req) -> Optional[str]:
        if ip not in self._trusted_proxies:
            return ip
        xff = req.headers.get("x-forwarded-for")
        if not xff:
            return ip
        # walk from the nearest hop: the first address we do not trust is the client
        for hop in reversed([h.strip() for h in xff.split(",")]):
            if hop and hop not in self._trusted_proxies:
                return hop
            ip = hop or ip
        return ip

    def _log_access(self, proto, res) -> None:
        req = res.request
        access_log.info('%s - - [%s] "%s %s HTTP/%s" %d -', proto.ip or "-",
                        time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
                        req.method, req.target, req.version, res.status)

    # -- running and stopping -------------------------------------------------

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (graceful) or ``stop()``."""
        if self.workers > 1:
            from .workers import run_threads, run_workers
            (run_threads if self.worker_mode == "thread" else run_workers)(self)
            return
        loop = self._ensure_loop()
        loop.add_signal(signal.SIGINT, lambda s: self.shutdown())
        loop.add_signal(signal.SIGTERM, lambda s: self.shutdown())
        try:
            loop.run()
        finally:
            loop.remove_signal(signal.SIGINT)
            loop.remove_signal(signal.SIGTERM)
            self.close()

    def shutdown(self, grace_period: Optional[float] = None) -> None:
        """Stop accepting; let in-flight requests finish (up to the grace period); then stop the loop."""
        if self._draining:
            return
        self._draining = True
        tcp = self._tcp
        if tcp is None:
            self.loop.stop()
            return
        tcp.stop_listening()
        for conn in list(tcp.connections):
            proto = conn.context
            if proto is None or (not proto.pending and proto.phase == _IDLE and not conn.queued_bytes):
                conn.close()
            elif proto is not None:
                proto.closing = True
        grace = self.grace_period if grace_period is None else grace_period
        self._timers.append(self.loop.add_timer(int(grace * 1000), self._finish_drain))
        if not tcp.connection_count:
            self._finish_drain()

    def _finish_drain(self) -> None:
        if self._tcp is not None:
            for conn in list(self._tcp.connections):
                conn.close()
        self.loop.stop()

    def close(self) -> None:
        """Release the listener, every connection and the timers (the loop too if the server made it)."""
        for t in self._timers:
            self.loop.cancel_timer(t)
        self._timers = []
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        if self._reserve is not None:
            self._reserve.close()
            self._reserve = None
        if self._own_loop and self.loop is not None:
            self.loop.close()
            self.loop = None


def _reserve_port(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    return s


# ---------------------------------------------------------------- static files

_static_options: dict = {}


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
    from .static import StaticOptions, plan_static
    key = (os.fspath(root), prefix, tuple(index), listing, tuple(sorted(options.items())))
    opts = _static_options.get(key)
    if opts is None:
        opts = StaticOptions(os.fspath(root), prefix=prefix, index=tuple(index), listing=listing, **options)
        if len(_static_options) < 64:
            _static_options[key] = opts
    plan = plan_static(req.method, req.target.split("?", 1)[0], req.headers.get, opts)
    if plan is None:
        return False
    if plan.reason:
        log.info("static %s %s -> %d: %s", req.method, req.target, plan.status, plan.reason)
    if plan.status == 301 and req.query:
        plan.headers = [(n, v + "?" + req.query if n.lower() == "location" else v) for n, v in plan.headers]
    res.send_plan(plan)
    return True
