"""The ASGI ``http`` cycle: one ``HttpCycle`` per request, on ``HttpServer(streaming=True)``.

The server's handler runs when a request head is in; it builds the scope and
starts one task (``HttpCycle.run``) on powpow.aio.  Per request that is the
whole cost: one cycle object, one scope dict, one coroutine and its task --
no future unless the app must wait (a body still arriving, a slow client, a
disconnect), no closure.

Request body (``receive``): pieces arrive through ``req.on_body`` into a
list; over ``BODY_HIGH_WATER`` buffered bytes the session stops reading
(``req.pause_body``: the rest waits in the kernel and TCP pushes back on the
client) until the app has taken them, so an upload of any size costs at most
about that much memory.  ``Expect: 100-continue`` is answered only when the
app first asks for the body; an app that answers without reading it gets its
response and the connection closes (the client may never send the body).
Likewise a response that completes while more than ``UNREAD_BODY_LIMIT``
(or an unknown amount: chunked) of the body is still to come closes the
connection after it, rather than reading and dropping the rest; ``receive()``
then answers ``http.disconnect`` at once (also one already parked there).  A
body the HTTP layer cuts (past ``max_body``: 413) ends a parked ``receive()``
the same way (``server._body_cut`` once the connection closes).

Response (``send``): ``http.response.start`` only records status and headers;
the head leaves with the first body piece, in one write (a whole response in
one ``res.send``).  ``more_body`` streams chunked (or with the app's
Content-Length); while the transport is over its high-water mark the app's
``send`` waits (a slow client pauses the app).  So does the final body, before
it is handed over (``_wait_room``), also while the answers ahead of it hold
``PIPELINE_HIGH_WATER`` bytes the transport has not taken: pipelined apps all
run at once, and their answers would otherwise pile up past the transport's
32 MiB cap.  Extensions:
``http.response.pathsend`` (sendfile), ``http.response.trailers`` (when the
request said ``TE: trailers``), ``http.response.early_hint`` (103).

Scope: ``headers`` as received, but for an absolute-form request
(``GET http://host/path``) the ``host`` field carries the target's authority
(RFC 9112 3.2.2), so an app that builds URLs from it sees the host the
request was routed on.

Errors: an exception before the head left is a 500 and a log line; after it
the connection is closed (a chunked body never gets its last chunk, a
Content-Length body stays short: never a response that looks complete).
Messages out of order raise ``RuntimeError`` in the app; ``send`` once the
client has gone raises ``ClientDisconnected`` (an ``OSError``, ASGI spec 2.4).
"""
import asyncio
import logging
import os
from typing import Dict, List, Optional

from ..http.response import HeaderValueError
from ..wsgi._rules import absolute_form_host
from ._waiters import Waiters

log = logging.getLogger("powpow.asgi")

BODY_HIGH_WATER = 256 << 10  # buffered request body before reading pauses
PIECE_COST = 64  # what each buffered piece costs besides its bytes (object + list slot)
# A body the app left unread when its response completed: read on and dropped
# (keep-alive) if declared no larger than this, else the connection closes.
# Go's net/http draws the same line (maxPostHandlerReadBytes, 256 KiB).
UNREAD_BODY_LIMIT = 256 << 10
PIPELINE_HIGH_WATER = 256 << 10  # a pipelined response waiting its turn: the app waits above this

_ASGI = {"version": "3.0", "spec_version": "2.5"}
_DISCONNECT = {"type": "http.disconnect"}  # never mutated by apps in practice; a fresh copy is made below
_EMPTY_BODY_DONE = None  # marker: the final empty http.request was handed out

_EXT_BASE: Dict[str, dict] = {"http.response.pathsend": {}, "http.response.early_hint": {}}
_EXT_TRAILERS: Dict[str, dict] = {"http.response.pathsend": {}, "http.response.early_hint": {},
                                  "http.response.trailers": {}}

_name_bytes: dict = {}


def _with_host(headers, host: str):
    """``headers`` with the Host of an absolute-form target (RFC 9112 3.2.2: the
    received Host field is ignored).  The field keeps its place; one is added
    first where the request had none (HTTP/1.0), removed where ``host`` is "".
    Every other field stays as received."""
    value = host.encode("latin-1")
    out = [(n, value) if n == b"host" else (n, v) for n, v in headers if n != b"host" or value]
    if value and not any(n == b"host" for n, _ in headers):
        out.insert(0, (b"host", value))
    return out


def _bad_status(status) -> str:
    # RFC 9110 §15.2: a 1xx is interim; a client that gets one as the answer keeps
    # waiting for the final response (101 is the handshake's, 103 early_hint's)
    return "ASGI: invalid response status %r: a final response needs 200..599%s" % (
        status, " (1xx responses are interim, RFC 9110 §15.2)" if 100 <= status <= 199 else "")


def _declares_length(headers) -> bool:
    return any(name.lower() == "content-length" for name, _ in headers)


class ClientDisconnected(OSError):
    """``send()`` after the client went away (ASGI spec 2.4: an OSError subclass)."""


_RAW = object()  # key of the byte pairs in a Headers' memo (its other keys are str)


def _raw_headers(h):
    """``[(name, value), ...]`` as bytes, names lowercased, from a parsed ``Headers``.

    Memoised on the Headers object: the parser shares one between consecutive
    requests with byte-identical header sections (keep-alive clients); each
    scope gets its own copy of the list."""
    memo = h._memo
    raw = memo.get(_RAW)
    if raw is not None:
        return list(raw)
    raw = _build_raw(h)
    memo[_RAW] = raw
    return list(raw)


def _build_raw(h):
    names = h._names
    if not names:
        return []
    buf = h._buf
    if buf.__class__ is not bytes:
        buf = bytes(buf)
    ends = h._ends
    s = h._h0
    find = buf.find
    out = []
    nb = _name_bytes
    for i in range(len(names)):
        e = ends[i]
        name = names[i]
        b = nb.get(name)
        if b is None:
            b = name.encode("latin-1")
            if len(nb) < 1024:
                nb[name] = b
        out.append((b, buf[find(b":", s, e) + 1 : e].strip(b" \t")))
        s = e + 2
    return out


_str_cache: dict = {}


def _cached_str_headers(headers):
    """``_str_headers`` memoised on the app's pairs (apps tend to send the same
    header list every time; tuples of constant bytes hash for free).  The list
    returned is shared: it is never mutated (``Response`` replaces, never edits,
    a list it did not make -- see ``_own_headers``)."""
    if headers.__class__ is not list and headers.__class__ is not tuple:
        headers = list(headers)  # any iterable (the spec's type): read once, here
    try:
        key = tuple(headers)
        hs = _str_cache.get(key)
    except TypeError:  # lists of lists: not hashable
        return _str_headers(headers)
    if hs is None:
        hs = _str_headers(headers)
        if len(_str_cache) < 512:
            _str_cache[key] = hs
    return hs


def _str_headers(headers):
    """ASGI byte pairs -> the str pairs ``Response`` writes (latin-1 round trip)."""
    out = []
    for pair in headers:
        n, v = pair
        if n.__class__ is not str:
            n = n.decode("latin-1")
        if v.__class__ is not str:
            v = v.decode("latin-1")
        out.append((n, v))
    return out


class _PathPart:
    """A whole file as a static-plan part whose descriptor is already open."""

    __slots__ = ("fd", "offset", "count")

    def __init__(self, fd: int, count: int) -> None:
        self.fd = fd
        self.offset = 0
        self.count = count

    def take_fd(self) -> int:
        fd = self.fd
        self.fd = -1
        return fd


class _PathPlan:
    __slots__ = ("status", "headers", "content_length", "parts", "reason")

    def __init__(self, status: int, fd: int, size: int) -> None:
        self.status = status
        self.headers = ()
        self.content_length = size
        self.parts = (_PathPart(fd, size),)
        self.reason = ""

    def close(self) -> None:
        for p in self.parts:
            if p.fd >= 0:
                os.close(p.fd)
                p.fd = -1


class HttpCycle:
    """One request's ``receive``/``send`` (see the module docstring)."""

    # Class-level defaults (no __slots__): creating a cycle for a request
    # without a body costs three attribute stores.
    state = 0  # 0 before start, 1 started (the head may still wait), 3 body done (trailers), 2 complete
    # Parked tasks (see _waiters): receive() for a body piece or a disconnect,
    # send() for a drain.  Separate, and built on the first wait only.
    arrived: Optional[Waiters] = None
    drained: Optional[Waiters] = None
    final_sent = False
    trailers = False
    chunks: Optional[List[bytes]] = None
    nbytes = 0
    eof = True
    hold100 = False

    def __init__(self, srv, req, res) -> None:
        self.srv = srv
        self.req = req
        self.res = res
        if req.content_length or req.chunked:
            if req is not res._session.body_req:
                # dispatched late (it waited for lifespan startup): the body is complete
                body = req.body
                self.chunks = [body] if body else []
                self.nbytes = len(body)
                return
            early = bool(req._stream_buf)  # arrived before this cycle listened (the same wait)
            self.chunks = []
            self.eof = False
            req.on_body(self._on_body)  # (hands over what arrived already, at once)
            req.on_end(self._on_end)
            if req.expect_continue and not early:
                self.hold100 = True
                res._hold_continue = True

    # -- events from the HTTP side ----------------------------------------------

    def _on_body(self, chunk) -> None:
        if self.state == 2 and self.res.ended:
            return  # answered already: the rest of the body is read and dropped
        self.chunks.append(bytes(chunk))  # type: ignore[union-attr]
        self.nbytes += len(chunk) + PIECE_COST  # (memory, not payload: 1-byte chunks count)
        if self.nbytes >= BODY_HIGH_WATER:
            self.req.pause_body()
        if self.arrived is not None:
            self.arrived.wake()

    def _on_end(self) -> None:
        self.eof = True
        if self.arrived is not None:
            self.arrived.wake()

    def _on_drain(self) -> None:
        if self.drained is not None:
            self.drained.wake()

    def _on_close(self) -> None:
        # the client is gone: receive() answers http.disconnect, send() raises
        if self.arrived is not None:
            self.arrived.wake()
        if self.drained is not None:
            self.drained.wake()

    def _on_eof(self) -> None:
        # The client's EOF while the app waits for http.disconnect: it went away
        # (as uvicorn and asyncio see an EOF); close, so that send() raises too.
        self.res._session.conn.close()
        self._on_close()

    # -- receive ----------------------------------------------------------------

    async def receive(self):
        res = self.res
        while True:
            chunks = self.chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                paused = self.nbytes >= BODY_HIGH_WATER
                self.nbytes = 0
                if paused:
                    self.req.resume_body()
                eof = self.eof
                if eof:
                    self.final_sent = True
                return {"type": "http.request", "body": data, "more_body": not eof}
            if res._gone:
                return {"type": "http.disconnect"}
            if self.eof:
                if not self.final_sent:
                    self.final_sent = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                if self.state == 2:
                    return {"type": "http.disconnect"}
                if res._session.eof:
                    self._on_eof()
                    return {"type": "http.disconnect"}
                res.on_eof = self._on_eof
            elif self.state == 2:
                # answered before the whole body came: the rest is dropped (read on,
                # or the connection closes after the answer), none of it for the app
                return {"type": "http.disconnect"}
            elif self.hold100:
                self.hold100 = False
                res._hold_continue = False
                res._session._continue(self.req)
            # (not at a shutdown: the client is still there, and an app that stops at
            # http.disconnect -- Starlette's is_disconnected() -- would end its response
            # early and cleanly, a truncated 200; the grace period ends with a cancel)
            res.on_close = self._on_close
            w = self.arrived
            if w is None:
                w = self.arrived = Waiters(self.srv.aio)
            await w.wait()

    # -- send -------------------------------------------------------------------

    async def send(self, message):
        t = message["type"]
        res = self.res
        if t == "http.response.body":
            if self.state != 1:
                raise RuntimeError("ASGI: 'http.response.body' %s" % (
                    "before 'http.response.start'" if self.state == 0 else "after the response completed"))
            if res._gone:
                raise ClientDisconnected("the client has disconnected")
            body = message.get("body", b"")
            if message.get("more_body", False) or self.trailers:
                ok = res.write(body) if body or not res._sent_head else True
                if not message.get("more_body", False):
                    self.state = 3  # body done; the trailers end the response
                if not ok or res._segments:
                    await self._backpressure()
                return
            if body and self._no_room():
                await self._wait_room()
                if self.state != 1:  # another task of the app completed it meanwhile
                    raise RuntimeError("ASGI: 'http.response.body' after the response completed")
            eof = self.eof  # (True for a request without a body: a class default)
            if not eof:
                self._close_if_unread()
            if res._sent_head:
                res.end(body)
            elif body or self.req.method != "HEAD" or _declares_length(res._headers):
                res.send(body)
            else:
                # HEAD answered with no body and no length (Starlette's StreamingResponse):
                # framed as the GET's stream (chunked), not a Content-Length: 0 that a
                # client would take for the size (RFC 9110 §8.6)
                res.write(b"")
                res.end()
            self.state = 2
            if not eof:
                self._after_complete()
            self._pass_turn()
            return
        if t == "http.response.start":
            if self.state != 0:
                raise RuntimeError("ASGI: 'http.response.start' sent twice")
            status = message["status"]
            if status.__class__ is not int:
                status = int(status)
            if not 200 <= status <= 599:
                raise RuntimeError(_bad_status(status))
            res.status = status
            h = message.get("headers")
            if h:
                res._headers = _cached_str_headers(h)
            if message.get("trailers", False) and self.req.headers.get("te") is not None and \
                    "trailers" in self.req.headers.get("te").lower():
                self.trailers = True
            if res._gone:
                raise ClientDisconnected("the client has disconnected")
            self.state = 1
            if self.hold100 and not self.eof:
                # the body was never asked for: the client may not send it at all
                self.hold100 = False
                res._hold_continue = False
                res._close = True
            return
        if t == "http.response.trailers":
            if self.state not in (1, 3) or not self.trailers:
                raise RuntimeError("ASGI: 'http.response.trailers' without 'trailers': True in "
                                   "'http.response.start' (or after the response completed)")
            if res._gone:
                raise ClientDisconnected("the client has disconnected")
            hs = message.get("headers")
            if not self.eof:
                self._close_if_unread()
            res.end_with_trailers(_str_headers(hs) if hs else [])
            if not message.get("more_trailers", False):
                self.state = 2
                self._after_complete()
                self._pass_turn()
            return
        if t == "http.response.pathsend":
            if self.state != 1:
                raise RuntimeError("ASGI: 'http.response.pathsend' %s" % (
                    "before 'http.response.start'" if self.state == 0 else "after the body started"))
            if res._gone:
                raise ClientDisconnected("the client has disconnected")
            path = os.fspath(message["path"])
            if not os.path.isabs(path):
                raise RuntimeError("ASGI: 'http.response.pathsend' needs an absolute path, got %r" % (path,))
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                size = os.fstat(fd).st_size
            except BaseException:
                os.close(fd)
                raise
            res._headers = list(res._headers)  # (a shared cached list must not grow)
            if not self.eof:
                self._close_if_unread()
            res.send_plan(_PathPlan(res.status, fd, size))
            self.state = 2
            self._after_complete()
            self._pass_turn()
            return
        if t == "http.response.early_hint":
            if self.state != 0:
                raise RuntimeError("ASGI: 'http.response.early_hint' after 'http.response.start'")
            links = message.get("links") or ()
            hs = [("Link", v.decode("latin-1") if v.__class__ is not str else v) for v in links]
            extra = message.get("headers")
            if extra:
                hs += _str_headers(extra)
            if hs and not res._gone:
                res.send_early_hints(hs)
            return
        raise RuntimeError("ASGI: unexpected message type %r for an http scope" % (t,))

    def _close_if_unread(self) -> None:
        """The response completes before the request body has all arrived: close
        after it (``Connection: close`` if the head is still ours) rather than read
        and drop an unbounded rest -- an app that answers 413 to a 1 GB upload
        must not make the server take that gigabyte.  A body declared no larger
        than ``UNREAD_BODY_LIMIT`` is read on and dropped, keeping the connection."""
        req = self.req
        if req.chunked or (req.content_length or 0) > UNREAD_BODY_LIMIT:
            self.res._close = True

    def _after_complete(self) -> None:
        if self.chunks is not None and not self.eof:
            # the app answered without the whole body: drop what comes (streaming
            # mode reads it on: at most UNREAD_BODY_LIMIT, see _close_if_unread,
            # unless it was never asked for: then close, above)
            self.chunks = []
            if self.nbytes >= BODY_HIGH_WATER:
                self.nbytes = 0
                self.req.resume_body()
            if self.arrived is not None:
                self.arrived.wake()  # a receive() parked for more body: http.disconnect

    async def _backpressure(self) -> None:
        res = self.res
        session = res._session
        while not res._gone:
            if res._segments:
                # a pipelined answer waiting for the ones before it
                if sum(len(s) for s in res._segments if s.__class__ is bytes) < PIPELINE_HIGH_WATER:
                    return
                await asyncio.sleep(0.005)
                continue
            if session.writable:
                return
            await self._drain_waiters().wait()
        raise ClientDisconnected("the client has disconnected")

    def _drain_waiters(self) -> Waiters:
        """Hook the response's drain and close, and the waiters they wake."""
        res = self.res
        res.on_drain = self._on_drain
        res.on_close = self._on_close
        w = self.drained
        if w is None:
            w = self.drained = Waiters(self.srv.aio)
        return w

    def _no_room(self) -> bool:
        """Must a final body wait before it is handed over?  While the connection is
        above high water, or the answers ahead of it hold ``PIPELINE_HIGH_WATER``
        bytes the transport has not taken yet (made in the same read's batch, or
        waiting behind an answer still being made)."""
        res = self.res
        session = res._session
        if not session.writable:
            return True
        pending = session.pending
        if len(pending) < 2 or pending[0] is res:
            return False
        held = 0
        for r in pending:
            if r is res:
                break
            for seg in r._segments:
                if seg.__class__ is bytes:
                    held += len(seg)
        return held >= PIPELINE_HIGH_WATER

    async def _wait_room(self) -> None:
        """Park the final body until ``_no_room`` is over.  Woken by the drain (the
        session tells the first answer in line), by the answer before it completing
        (``_pass_turn``), or -- parked inside a read's batch -- once that batch is
        flushed, when ``writable`` tells the truth again."""
        res = self.res
        session = res._session
        while not res._gone:
            if not self._no_room():
                return
            w = self._drain_waiters()
            if session.in_batch:
                self.srv.aio.call_soon(self._on_drain)
            await w.wait()
        raise ClientDisconnected("the client has disconnected")

    def _pass_turn(self) -> None:
        """This answer is complete: an answer parked behind it (``_wait_room``) may go
        now -- no drain would tell it while the connection stays under high water.
        (Inside a read's batch the answers parked there re-check on their own.)"""
        session = self.res._session
        if session.in_batch:
            return
        pending = session.pending
        if pending and session.writable:
            nxt = pending[0]
            cb = nxt.on_drain
            if cb is not None and not nxt.ended:
                cb()

    # -- the task -----------------------------------------------------------------

    async def run(self, app, scope) -> None:
        srv = self.srv
        try:
            await app(scope, self.receive, self.send)
        except BaseException as exc:
            self._failed(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            state = self.state
            if state != 2:
                res = self.res
                if res._gone:
                    pass
                elif state == 0:
                    log.error("ASGI callable returned without starting the response (%s %s)",
                              self.req.method, self.req.target)
                    res._close = True
                    res.send_error(500)
                else:
                    log.error("ASGI callable returned without completing the response (%s %s): closing",
                              self.req.method, self.req.target)
                    res._session._handler_failed(self.req, RuntimeError("response not completed"))
        finally:
            srv.inflight -= 1

    def _failed(self, exc: BaseException) -> None:
        res = self.res
        if res._gone:
            if not isinstance(exc, (ClientDisconnected, asyncio.CancelledError)):
                log.info("ASGI app raised after the client left (%s %s): %r", self.req.method, self.req.target, exc)
            return
        if self.state == 2:
            log.error("Exception in ASGI application after the response completed", exc_info=exc)
            return
        status = 500
        if isinstance(exc, asyncio.CancelledError):
            log.info("ASGI task cancelled (%s %s): closing", self.req.method, self.req.target)
            status = 503  # the server is shutting down (the grace period is over)
        elif isinstance(exc, HeaderValueError):
            # the app's response was refused (a bad header, a Content-Length that does not
            # match the body): no traceback helps, the reason does
            log.error("ASGI response refused (%s %s): %s", self.req.method, self.req.target, exc)
        else:
            log.error("Exception in ASGI application (%s %s)", self.req.method, self.req.target, exc_info=exc)
        session = res._session
        session._to_closing()
        if not res.ended:
            if not res._sent_head:
                res._reset()
                res._close = True
                res.send_error(status)
            else:
                # too late for a status: end what was sent so that it never looks
                # complete (close-delimited: a reset, not a FIN; see cut_answer)
                session.cut_answer(res)
        session.flush()


def build_scope(srv, req, res, kind: str):
    """The ``http`` / ``websocket`` scope of ``req`` (ASGI spec 2.5)."""
    session = res._session
    conn = session.conn
    buf = req._buf
    ts = req._ts
    if buf[ts] == 47:  # origin-form: slices of the buffer
        te = req._te
        q = buf.find(b"?", ts, te)
        if q < 0:
            raw_path = bytes(buf[ts:te])
            query = b""
        else:
            raw_path = bytes(buf[ts:q])
            query = bytes(buf[q + 1 : te])
    else:
        raw_path = req.raw_path.encode("latin-1")
        query = req.query.encode("latin-1")
    peer = conn.peer_address
    tls = session.tls is not None
    if peer.__class__ is tuple:
        sa = conn.sock_address
        if len(peer) == 2:  # IPv4: the socket's own tuples (cached by the transport)
            client = peer
            server = sa
        else:  # IPv6 4-tuples; IPv4-mapped addresses shown as IPv4
            host = peer[0]
            client = (host[7:] if host.startswith("::ffff:") and "." in host else host, peer[1])
            server = (sa[0], sa[1]) if sa is not None else None
    else:  # unix socket
        client = None
        server = (srv.uds, None)
    headers = _raw_headers(req.headers)
    if buf[ts] != 47:  # not origin-form
        host = absolute_form_host(req.target)
        if host is not None:
            headers = _with_host(headers, host)
    scheme = None
    trust = srv.trust
    if trust is not None:
        names = req.headers._names
        if "x-forwarded-for" in names or "x-forwarded-proto" in names:
            ip = client[0] if client is not None else None
            if trust.trusts(ip, client is None):
                fwd = trust.client_ip(ip, client is None, req.headers)
                if fwd is not None and fwd != ip:
                    client = (fwd, 0)
                # the value the trusted peer (the nearest proxy) appended: the last one
                # of the last field line -- what came before it the client may have
                # written (as WSGI's wsgi.url_scheme, and as client_ip walks from the right)
                protos = req.headers.get_all("x-forwarded-proto")
                if protos:
                    proto = protos[-1].rpartition(",")[2].strip().lower()
                    if proto in ("http", "https", "ws", "wss"):
                        scheme = proto
    path = req.path
    root = srv.root_path
    if root:
        path = root + path
        raw_path = srv.root_path_b + raw_path
    if kind == "http":
        if scheme is None:
            scheme = "https" if tls else "http"
        elif scheme.startswith("ws"):
            scheme = "https" if scheme == "wss" else "http"
        te = req.headers.get("te") if "te" in req.headers._names else None
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": req.version,
            "method": req.method,
            "scheme": scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": root,
            "headers": headers,
            "client": client,
            "server": server,
            "state": srv.state.copy(),
            "extensions": dict(_EXT_TRAILERS if te is not None and "trailers" in te.lower() else _EXT_BASE),
        }
    if scheme is None:
        scheme = "wss" if tls else "ws"
    elif not scheme.startswith("ws"):
        scheme = "wss" if scheme == "https" else "ws"
    offered = req.headers.get_all("sec-websocket-protocol")
    subprotocols = [p.strip() for line in offered for p in line.split(",") if p.strip()]
    return {
        "type": "websocket",
        "asgi": _ASGI,
        "http_version": req.version,
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": root,
        "headers": headers,
        "client": client,
        "server": server,
        "subprotocols": subprotocols,
        "state": srv.state.copy(),
        "extensions": {"websocket.http.response": {}},
    }
