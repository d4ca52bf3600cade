"""One HTTP/1.x connection's state: a small state machine over a transport.

States (``Session.state``) and the transitions between them (methods named
``_to_*``; nothing else assigns ``state``):

    IDLE ──first byte of a head──▶ HEAD ──head parsed, body follows──▶ BODY
      ▲                                                                 │
      └─────────── every answer handed to the transport ◀───────────────┘
    any ──parse error / handler failure / shutdown──▶ CLOSING   (answer what precedes, then close)
    any ──res.upgrade()──▶ DETACHED   (the transport belongs to the caller)
    any ──transport closed──▶ GONE

Invariants:

* Answers leave in request order (``pending``); one read's answers leave in
  one write (``in_batch``).
* One batch makes at most about the transport's high water of output
  (``out_room``): once its answers pass it (each file range counting at least
  ``high_water // FILES_HIGH``, for the descriptor it pins), or the transport
  is above high water, the requests behind wait in ``waiting`` as if held
  (``_hold_rest``) and run from ``_pump`` once that output is handed over and
  drained.  Answers of one segment (a body under 16 KiB) are not counted:
  ``max_pipeline_depth`` bounds them, and the per-request check stays one
  ``len`` and a compare.
* Open files per connection are bounded (``max_queued_files``, default
  ``MAX_QUEUED_FILES``): each file part of an answer holds a descriptor until
  it is sent, and a client that pipelines GETs of static files and reads
  nothing pinned one per answer (~63 a connection: 16 such clients used up a
  1024-descriptor limit).  Once the files queued in the transport plus those
  in answers not handed over reach the bound, the next request waits (as
  above: ``_out_full``, ``waiting``), reading pauses, and after a hand-over
  that leaves the transport with that many (``_write``) the session is
  ``write_blocked`` with ``files_wait`` until fewer are queued (the transport
  is asked for ``on_drain`` then: ``_wake_when_fewer_files``).  Only answers
  with a file part pay for it (one count and a scan of ``pending``); one
  answer with more parts (multi-range) still goes out whole: the bound holds
  the *next* request, never the answer being made.  nginx and http.server
  hold one file per connection.
* Streaming mode runs a handler when its head is parsed, from inside the
  parser's ``feed`` (not in a batch): while the transport is above high water
  (``write_blocked``) that request waits in ``waiting`` instead, with every
  request parsed after it, and runs from ``_pump`` after the drain -- as in
  buffered mode, a client that pipelines and never reads makes about one
  answer beyond the high water, not one per request up to the transport's cap.
* Reading is paused whenever more input could only pile up in memory: the
  transport's queue is above its high-water mark (``write_blocked``; the
  kernel's window then pushes back on the client), ``max_pipeline_depth``
  answers are outstanding, the parser holds parsed-later requests (``held``),
  an Upgrade/CONNECT request waits to reach its handler, or its handler decides
  and ``UPGRADE_PEEK_BYTES`` came after it (below that, reading goes on, so a
  client that hangs up meanwhile is seen at once), or the handler paused the
  request body.  ``_pump`` is the one place that resumes (and
  ``_dispatch_upgrade``, for the peek).
* An Upgrade/CONNECT request pipelined behind answers still being made (or
  while the transport is over high water) reaches its handler only once those
  answers are complete and handed to the transport (``_pump`` defers
  ``_dispatch_upgrade``): ``res.upgrade()`` needs to be first in line, and the
  handler sees the connection as if the request had arrived alone.  The
  parser stops behind it and reading stays paused, so nothing piles up.
* Only requests with safe methods (GET, HEAD, OPTIONS, TRACE) run while an
  earlier answer is still being made (RFC 9112 §9.3.2); any other one waits,
  with every request behind it, in ``waiting`` (reading paused) until the
  earlier answers are handed over -- had one of them closed the connection,
  it would otherwise have run for an answer nobody gets.  Once a head says
  ``Connection: close`` (``answer_closes``: ``no_more``) no later request
  reaches a handler (RFC 9112 §9.6), and only the body of a request being
  answered is still read; CLOSING follows when that answer is handed over.
* A streamed answer behind an earlier one that is still being made keeps its
  output itself; ``write()`` judges that by the transport's high water and cap
  (``Response._queued_behind``), and ``on_drain`` runs once it is first in line.
* A streamed request whose body fails after its handler ran (bad framing, past
  ``max_body``, a body deadline: ``_reject``) is answered with the error in its
  handler's place (or, a head already sent, cut by the close), and the handler
  hears it as a disconnect (``Response._lost``: ``on_close``, an async task
  cancelled, ASGI's ``receive()``) -- its ``on_end`` never comes.
* A target that does not start with '/' is looked at once, at dispatch
  (``_refuse_target``): an absolute-form one that names no http(s) host is
  answered 400 and closes (RFC 9110 §4.2).  Origin-form requests pay one
  byte compare for it (callgrind: ~300 instructions a request, ~1 %, on
  CPython 3.11, whose bytes indexing is not specialised).
* An answer cut short after its head went out (its handler failed, or its
  request body did: ``cut_answer``) must not look complete.  Chunked, the
  missing last chunk tells, and a Content-Length not reached does; a
  close-delimited body (HTTP/1.0, a tunnel) has only the end of the
  connection to tell, so that ends with a reset (RST; over TLS without
  close_notify), never FIN (RFC 9112 §9.8: behind nginx's
  ``proxy_http_version 1.0`` the cut body was cached as complete).  An RST
  drops what the kernel still holds, so it waits until every byte before it
  is sent and acknowledged (``_ResetWhenDelivered``): the answers before the
  cut one arrive intact.
* Deadlines are checked by the server's sweep (``check_deadline``) from
  ``since`` (phase start / last progress) and, while output is pending, from
  the last time ``bytes_sent`` grew: a queue that grows is not progress.

``Response`` talks to its session only through: ``date``, ``closing``,
``in_batch``, ``server.access_log``, ``must_close(res)``, ``answer_closes()``,
``flush()`` / ``flush_now()``, ``writable``, ``pending``, ``conn``, ``ip``,
``upgrade(res, headers)``, ``client_ip(req)``, ``pause_body()`` /
``resume_body()`` and ``loop``; the session reads a response's ``ended``,
``_segments``, ``_close``, ``_upgrade``, ``on_drain``, ``_wants_drain``,
``_chunked``, ``_length``, ``_written``, ``_cut`` and calls ``_lost()`` /
``_reset()``; it sets ``_cut_reason`` before ``_lost()`` when its request body
failed (WSGI's input names the reason).
"""
import errno
import sys
from typing import Any, List, Optional

from .. import _ffi
from .._log import get_logger
from ..errors import ParseError
from ..net._writing import FILES_HIGH
from ..net.errors import ConnectionLost
from ._message import Request, absolute_form_problem
from .parser import _FAILED, RequestParser
from .response import _UNPARSED, _UP_ASKED, NO_BODY_STATUS, Response, _FileSeg, close_segments

log = get_logger("powpow.http")
_new = _ffi.blank  # object.__new__ (a specialised builtin call on CPython)

# RFC 9110 §9.2.1.  Pipelined behind an answer still being made, only these run
# at once (RFC 9112 §9.3.2); any other method waits (see the module docstring).
SAFE_METHODS = frozenset(["GET", "HEAD", "OPTIONS", "TRACE"])
_GET = "GET"  # (the parser interns it: an identity test first, for pipelined GETs)

IDLE, HEAD, BODY, CLOSING, DETACHED, GONE = range(6)
STATE_NAMES = ("idle", "head", "body", "closing", "detached", "gone")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Streaming mode: body bytes kept for a handler that runs but has not said where its
# body goes yet (an async task not started): past this, reading pauses until it does.
STREAM_HOLD_BYTES = 256 << 10

# Open files (file parts of answers) one connection may hold queued before the next
# request waits: a sendfile stream is kept busy with a few queued behind the one being
# sent, and a client that reads nothing pins that many descriptors, not one per
# pipelined answer (see the module docstring; nginx and http.server: one).
MAX_QUEUED_FILES = 4

# An Upgrade/CONNECT request whose handler is deciding (an ASGI app, an ``async def``
# handler): reading goes on up to this many bytes after it, so that a client that hangs
# up meanwhile is seen at once (its FIN or reset), not at the keep-alive timeout.  A
# WebSocket client sends nothing before the 101; what does come is kept for the new
# owner (or parsed as HTTP if the switch is declined).
UPGRADE_PEEK_BYTES = 16 << 10


def _send_parse_error(res, exc: ParseError) -> None:
    if exc.status == 503:
        res._headers.append(("Retry-After", "1"))  # (a passing lack of descriptors or space)
    res.send_error(exc.status, exc.message)


def _queued_files(conn) -> int:
    """File chunks (each an open descriptor) in ``conn``'s write queue: ``Connection``
    and ``TlsTransport`` count them for their water marks; 0 for a transport that does not."""
    return getattr(conn, "queued_files", 0)


def _wake_when_fewer_files(conn) -> None:
    """Have ``conn`` call ``on_drain`` once its queue makes progress and is under its low
    mark.  The transports count a queued file as ``high_water // FILES_HIGH`` (64 to reach
    high water), so a few would never make them call it: ``want_drain`` does (``on_drain``
    looks again and asks anew while the files are still that many)."""
    want = getattr(conn, "want_drain", None)
    if want is not None:
        want()


def _kernel_unsent(conn) -> int:
    """Bytes in ``conn``'s socket send queue the peer has not acknowledged yet (Linux
    ``SIOCOUTQ``); 0 where the platform cannot tell.  An RST makes the kernel drop them."""
    if not sys.platform.startswith("linux"):
        return 0
    raw = getattr(conn, "raw", None) or conn  # TlsTransport: the TCP connection under it
    fd = getattr(raw, "fd", -1)
    if fd < 0:
        return 0
    import fcntl
    import termios
    try:
        out = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")  # (TIOCOUTQ == SIOCOUTQ)
    except OSError:
        return 0
    return int.from_bytes(out, sys.byteorder, signed=True)


class _ResetWhenDelivered:
    """Timer callback: reset (``abort()``) a session's connection once everything written
    before the cut answer's end is sent and acknowledged (see ``Session.cut_answer``).

    An RST makes the kernel drop its send queue, and would take the complete answers
    before the cut one with it; the peer keeps what it has acknowledged.  Polled: a
    transport says nothing when its queue empties (below high water), the kernel nothing
    when the peer acknowledges -- 1 ms doubling to 100 ms (this runs only for cut
    answers).  A client that takes nothing for ``write_timeout`` is reset anyway."""

    __slots__ = ("session", "delay", "seen", "since")

    def __init__(self, session) -> None:
        self.session = session
        self.delay = 1
        self.seen: Optional[tuple] = None
        self.since = session.loop.now_ms()

    def __call__(self) -> None:
        session = self.session
        session.reset_timer = None
        if session.state == GONE:
            return
        conn = session.conn
        unsent = _kernel_unsent(conn)
        if not unsent and not conn.output_pending:
            conn.abort()
            return
        now = session.loop.now_ms()
        seen = (conn.bytes_sent, unsent)
        if seen != self.seen:
            self.seen = seen
            self.since = now  # progress
        elif now - self.since >= session.server.write_timeout_ms:
            log.info("resetting %s: the client took nothing for %d ms of the answers before a cut one",
                     session.ip, session.server.write_timeout_ms)
            conn.abort()
            return
        session.reset_timer = session.loop.add_timer(self.delay, self)
        self.delay = min(self.delay * 2, 100)


class Session:
    """Per-connection HTTP state (``transport.context``)."""

    __slots__ = ("server", "conn", "parser", "pending", "in_batch", "state", "since", "depth",
                 "sent_seen", "write_since", "continued", "want_continue", "streaming", "ip", "held",
                 "write_blocked", "body_paused", "eof", "eof_since", "body_start", "body_got",
                 "date", "loop", "upgrade_req", "closing", "body_req", "lost_exc", "tls", "waiting",
                 "no_more", "out_room", "files_wait", "reset_timer")

    def __init__(self, server, conn) -> None:
        self.server = server
        self.conn = conn
        self.lost_exc = None  # why the transport closed (given to on_close), once it has
        self.loop = server.loop
        self.date = server._date
        # Snapshot: transports are pooled, and a response may end (and be
        # logged) after its connection was closed and reused.
        self.ip = conn.get_client_ip()
        self.tls = getattr(conn, "tls", None)  # net.tls.TlsInfo over TLS, else None
        self.streaming = server.streaming
        self.depth = server.max_pipeline_depth
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
        self.continued: Optional[Request] = None
        self.want_continue = False
        self.held = False
        # A list, not a deque: an empty deque is 760 bytes on CPython, and an
        # idle keep-alive connection must cost under 3 KB; depth stays small.
        self.pending: List[Response] = []
        self.in_batch = False
        self.state = IDLE
        self.since = self.loop.now_ms()
        self.sent_seen = -1
        self.write_since = 0
        self.write_blocked = False
        self.body_paused = False
        self.eof = False
        self.eof_since = 0
        self.body_start = 0
        self.body_got = 0
        self.upgrade_req: Optional[Request] = None
        self.closing = False  # CLOSING, or the server drains: heads may say Connection: close
        self.body_req: Optional[Request] = None  # streaming: the dispatched request whose body is still arriving
        # Requests parsed but held back, in order, behind an answer still being made
        # (see _hold); None when there are none (most connections never have any).
        self.waiting: Optional[List[Request]] = None
        # No request reaches a handler any more: CLOSING or beyond, or a head said
        # Connection: close (answer_closes).  One flag, read once per request.
        self.no_more = False
        # Output bytes this batch may still make before later requests wait (see
        # the module docstring); full again once a batch's output is handed over
        # (_write), not per read: the hot path pays only for the compare.
        self.out_room = conn.high_water
        # write_blocked because max_queued_files files are queued in the transport
        # (``_write``): on_drain resumes only once fewer are
        self.files_wait = False
        # a cut answer ends the connection with a reset once what precedes it is
        # delivered: the pending check (_ResetWhenDelivered), else None
        self.reset_timer: Any = None

    # -- transitions ----------------------------------------------------------

    def _to_idle(self) -> None:
        self.state = IDLE
        self.since = self.loop.now_ms()

    def _to_head(self) -> None:
        self.state = HEAD  # a head's deadline runs from its first byte
        self.since = self.loop.now_ms()

    def _to_body(self) -> None:
        self.state = BODY
        self.since = self.body_start = self.loop.now_ms()
        self.body_got = 0

    def _body_done(self) -> None:
        self.state = IDLE  # the handler answers; ``pending`` keeps the keep-alive clock off
        if self.no_more:
            self.conn.pause_reading()  # the body answered with a close is in: nothing more to read

    def _to_detached(self) -> None:
        self.state = DETACHED
        self.no_more = True

    def _to_closing(self) -> None:
        self.closing = True
        self.no_more = True
        if self.state < CLOSING:
            self.state = CLOSING

    def _to_gone(self) -> None:
        """The transport closed: drop what was not sent, tell streaming handlers."""
        self.state = GONE
        self.no_more = True
        if self.reset_timer is not None:
            self.loop.cancel_timer(self.reset_timer)
            self.reset_timer = None
        cur = self.parser.current
        if cur is not None:
            cur._close_stream_file()  # the body never finished
        self.parser.close()  # a body being spooled: its file goes now, not at GC
        pending = self.pending
        self.pending = []
        for res in pending:
            res._lost()
            if res.request.body_size:
                res.request.close()  # spooled body files go with the connection
        self._drop_waiting()

    def _drop_waiting(self) -> None:
        waiting = self.waiting
        if waiting is not None:
            self.waiting = None
            for req in waiting:
                if req.body_size:
                    req.close()  # never answered: its spooled body goes now

    # -- input ------------------------------------------------------------------

    def on_data(self, conn, data) -> None:
        parser = self.parser
        try:
            # bytes: the transport's view is into a shared buffer anyway, and the
            # parser's fast path (whole requests, nothing pending) wants bytes
            # (plain TCP delivers bytes already: data_as_bytes, see server.py).
            reqs = parser.feed(data if data.__class__ is bytes else bytes(data))
        except ParseError as exc:
            self._reject(exc)
            return
        if reqs:
            if len(reqs) < self.depth:  # (an if: a compare whose result is stored never specialises)
                self.held = False
            else:
                self.held = True
            last = reqs[-1]
            if last._special and (last.upgrade is not None or last.method == "CONNECT"):
                self.upgrade_req = last  # the parser stopped behind it; the handler decides
            self.in_batch = True  # collect every answer of this read: one write
            try:
                if self.streaming:
                    for req in reqs:  # (dispatched when each head arrived, but Upgrade/CONNECT)
                        if req.response is None:
                            self._dispatch(req)
                else:
                    # _dispatch(), inlined: this loop runs once per request
                    handler = self.server.handler
                    pending = self.pending
                    upgrade_req = self.upgrade_req
                    for req in reqs:
                        if self.no_more:
                            # an earlier answer closes the connection (a handler's Connection:
                            # close, or its failure's 500: what follows would run with its
                            # answer thrown away), a handler took the connection, or it is gone
                            break
                        if pending and req.method is not _GET and req.method not in SAFE_METHODS \
                                and self._hold(req, reqs):
                            break  # it waits, with what follows, for the answers before it
                        if req is upgrade_req and self._upgrade_must_wait():
                            break  # (it is the last) see _dispatch_upgrade
                        if req._buf[req._ts] != 47 and self._refuse_target(req):
                            break  # (not origin-form: rare) answered 400, the connection closes
                        # Response(self, req) without the class call (its __init__, inlined:
                        # ~500 instructions a request less on CPython 3.11; keep the two alike)
                        res = _new(Response)
                        res._session = self
                        res.request = req
                        res._headers = []
                        res._segments = []
                        res._close = not req.keep_alive
                        if req.method == "HEAD":
                            res._head_only = True
                        else:
                            res._head_only = False
                        res.status = 200
                        res.ended = False
                        res._sent_head = False
                        res._upgrade = _UP_ASKED if req is upgrade_req else None  # type: ignore[assignment]
                        pending.append(res)
                        req.response = res  # type: ignore[assignment]  # (declared None in _message)
                        try:
                            handler(req, res)
                        except Exception as exc:
                            self._handler_failed(req, exc)
                        # (one segment: a small whole answer, bounded by the depth limit)
                        if len(res._segments) != 1 and self._out_full(res, reqs):
                            break  # this batch made enough output: the rest waits for the drain
                if parser._state == _FAILED:  # good requests came first; now answer the bad one
                    try:
                        parser.feed(b"")
                    except ParseError as exc:
                        self._reject(exc)
            finally:
                self.in_batch = False
            if self.state >= DETACHED:
                return  # upgraded (or lost) inside a handler
        self.flush()
        state = self.state
        if state >= CLOSING:
            if state == CLOSING and parser._held:
                # requests that will never run pile up in the parser: read no more
                # (close_after_drain reads on, discarding, once the last answer is out)
                conn.pause_reading()
            return
        cur = parser._req  # parser.current (an attribute read: once per read)
        if cur is not None:
            # a body is arriving -- also while its handler already runs
            # (streaming): the body deadlines apply either way
            if state != BODY:
                self._to_body()
            else:
                self.since = self.loop.now_ms()
            self.body_got += len(data)
            if cur.expect_continue:
                self._continue(cur)
        else:
            if state == BODY:
                self._body_done()
            if not self.pending and not parser._idle and not self.held and self.state != HEAD:
                self._to_head()  # a partial head (an attribute, not a property: hot path)
        # parser.held, not only self.held: flush() above may already have
        # drained this batch and scheduled the next (clearing self.held); reading
        # on would append a whole read to the held bytes for every 64 answers.
        if (self.held or parser._held or self.write_blocked or len(self.pending) >= self.depth
                or (self.upgrade_req is not None and self._upgrade_holds_input())):
            conn.pause_reading()  # see the module docstring; _pump resumes

    def _upgrade_holds_input(self) -> bool:
        """Must reading pause for the pending Upgrade/CONNECT request?  Not while its
        handler decides and little has come after it (``UPGRADE_PEEK_BYTES``)."""
        up = self.upgrade_req
        if up is None:
            return False
        res = up.response
        parser = self.parser
        return (res is None or res.ended or not parser.upgraded
                or parser.buffered >= UPGRADE_PEEK_BYTES)

    def on_eof(self, conn) -> None:
        """The client half-closed: answer what is in flight, then close."""
        self.eof = True
        self.eof_since = self.loop.now_ms()
        for res in self.pending:
            if res.on_eof is not None:  # ASGI: an app waiting for http.disconnect
                res.on_eof()
        if self.state >= CLOSING:
            return
        failed = self.body_req
        if failed is not None:
            # Streaming: a body still arriving can never complete now.  Its handler hears
            # it at once, as of a bad body (on_disconnect, an async task cancelled, ASGI's
            # http.disconnect), not at the keep-alive timeout (it did: a slot held 5-75 s
            # per aborted upload).
            answer = failed.response
            if answer is not None and not answer.ended and answer in self.pending:
                log.info("client %s ended its side before the request body was complete", self.ip)
                self._to_closing()
                failed._close_stream_file()
                self._body_failed(answer, ParseError(400, "the client closed before the request body was complete"))
                return
        if not self.pending and not self.held and self.waiting is None:
            if self.parser.buffered and self.upgrade_req is None and not conn.closed:
                # bytes not parsed yet (pipelined behind a declined Upgrade, whose
                # deferred _parse_held has not run): the requests complete in them
                # are answered before the close, as any pipelined ones are
                self.on_data(conn, b"")
                if self.state >= CLOSING or self.pending or self.held or self.waiting is not None:
                    return  # _pump closes once their answers are out
            conn.close_after_drain()  # nothing in flight: FIN after what is queued
            self._to_closing()

    def _parse_held(self) -> None:
        if self.state < CLOSING and not self.conn.closed and not self.write_blocked:
            self.on_data(self.conn, b"")

    def _pump(self) -> None:
        """Resume input once nothing holds it back (the one place that resumes)."""
        cur = self.body_req
        if cur is not None and cur._held_body and cur._body_cb is None and cur._end_cb is None:
            res = cur.response
            if res is None or res.ended:  # answered without taking its body: drop it, read on
                cur._held_body = False
                cur._stream_buf = b""
                self.body_paused = False
        if self.state >= CLOSING or self.write_blocked or len(self.pending) >= self.depth:
            return
        if self.no_more:
            # an answer closes the connection: only a body being answered is still read
            cur = self.parser._req
            if (cur is not None and cur.response is not None and not self.body_paused
                    and self.conn.reading_paused):
                self.conn.resume_reading()
            return
        if self.waiting is not None:
            # held requests first (they precede an Upgrade/CONNECT one); reading
            # stays paused until they run
            if not self.pending:
                self.loop.defer_call(self._dispatch_waiting)
            return
        up = self.upgrade_req
        if up is not None:
            # reading stays paused until its handler decides; one that waited for
            # earlier answers runs now that they are out (next iteration: not from
            # inside the res.end() that got us here)
            if up.response is None:
                if not self.pending:
                    self.loop.defer_call(self._dispatch_upgrade)
            elif self.conn.reading_paused and not self._upgrade_holds_input():
                self.conn.resume_reading()  # its handler decides: watch for a hang-up
            return
        if self.held or self.parser._held:
            # requests held back at the depth limit: parse the next batch on
            # the next iteration (not recursively from here)
            self.held = False
            self.loop.defer_call(self._parse_held)
        elif self.eof:
            if not self.pending:
                self._to_closing()
                self.conn.close_after_drain()
        elif self.conn.reading_paused and not self.body_paused:
            self.conn.resume_reading()

    def on_drain(self, conn) -> None:
        """The transport's queue fell under low water."""
        if self.files_wait:
            if _queued_files(conn) >= self.server.max_queued_files:
                _wake_when_fewer_files(conn)  # still that many open files queued: wait on
                return
            self.files_wait = False
        self.write_blocked = False
        if self.pending:
            res = self.pending[0]
            cb = res.on_drain
            res._wants_drain = False  # (told now, if it waited behind an earlier answer)
            if cb is not None and not res.ended:
                try:
                    cb()
                except Exception as exc:
                    self._handler_failed(res.request, exc)
                    return
        self._pump()

    # -- streaming mode: the handler runs when the head is in ---------------------

    def _on_headers_streaming(self, req) -> None:
        if req._special and (req.upgrade is not None or req.method == "CONNECT"):
            return  # dispatched once the message is complete: the rest is then known
        self.body_req = req
        self._dispatch(req)
        if req.expect_continue:
            self._continue(req)

    def _on_body(self, req, chunk) -> None:
        if self.state >= DETACHED:
            return  # taken over from inside the parser's feed: these bytes are not HTTP's
        cb = req._body_cb
        if cb is None:
            res = req.response
            if res is not None and res.ended and req._end_cb is None:
                return  # answered, and nobody takes the body: the rest is dropped as it comes
            buf = req._stream_buf
            if buf.__class__ is not bytearray:
                buf = req._stream_buf = bytearray(buf)  # amortised appends, not quadratic +=
            buf += chunk
            if (len(buf) >= STREAM_HOLD_BYTES and res is not None and req._end_cb is None
                    and not req._held_body):
                # its handler runs and has not said where the body goes (an async task
                # not there yet): keep no more than this, the kernel's window holds the
                # rest (on_body / stream_to_file / on_end, or the answer's end, resume)
                req._held_body = True
                self.pause_body()
            return
        try:
            cb(chunk)
        except Exception as exc:
            self._handler_failed(req, exc)

    def _on_complete(self, req) -> None:
        req._ended = True
        if req is self.body_req:
            self.body_req = None
        req._close_stream_file()
        if req._body_cb is None and req._stream_buf:
            buf = bytes(req._stream_buf)
            req._body_buf, req._body_start, req._body_end = buf, 0, len(buf)
            req._stream_buf = b""
        cb = req._end_cb
        if cb is not None:
            try:
                cb()
            except Exception as exc:
                self._handler_failed(req, exc)

    def pause_body(self) -> None:
        self.body_paused = True
        if self.state < CLOSING:
            self.conn.pause_reading()

    def resume_body(self) -> None:
        if self.body_paused:
            self.body_paused = False
            self._pump()

    # -- requests and answers -------------------------------------------------

    def _continue(self, req) -> None:
        """``100 Continue`` for ``req`` (RFC 9110 §10.1.1), in request order, and only
        while its final answer is not known yet."""
        if req is self.continued or not (req.content_length or req.chunked):
            return
        res = req.response
        pending = self.pending
        if res is not None:  # streaming: its handler runs already
            if res._hold_continue:
                return  # ASGI: sent when the app first asks for the body
            if res.ended or res._sent_head:
                self.continued = req  # the answer is known: no interim one
                return
            if pending[0] is not res:
                self.want_continue = True  # earlier answers first
                return
        elif pending or self.waiting is not None:
            self.want_continue = True  # (held requests come before it, see _hold)
            return
        self.want_continue = False
        self.continued = req
        self.conn.write(_CONTINUE)

    def _dispatch(self, req) -> None:
        if self.no_more:
            return  # an earlier answer closes the connection, a handler took it, or it is gone
        waiting = self.waiting
        if waiting is not None:
            for r in waiting:
                if r is req:
                    return  # held since its head (streaming): it runs from _dispatch_waiting
            waiting.append(req)  # behind a held request: order is kept
            return
        if self.write_blocked or (self.out_room < 0 and (self.in_batch or self.pending)):
            # a batch that made enough output (_dispatch_waiting) -- or, streaming, the
            # answers kept behind one still being made did (files: max_queued_files) --
            # or the transport is above high water -- also for a head parsed in
            # streaming mode, whose handler would otherwise run (and answer into the
            # transport) for a client that reads nothing: it waits, with what follows,
            # for the drain (or for the answers before it to be handed over)
            self.waiting = [req]
            self.conn.pause_reading()
            return
        upgrade = req is self.upgrade_req
        if upgrade:
            if self._upgrade_must_wait():
                return  # see _dispatch_upgrade
        elif self.pending and req.method not in SAFE_METHODS and self._hold(req, None):
            return
        if req._buf[req._ts] != 47 and self._refuse_target(req):
            return  # (not origin-form: rare) answered 400, the connection closes
        res = Response(self, req)
        if upgrade:
            res._upgrade = _UP_ASKED  # type: ignore[assignment]
        self.pending.append(res)
        req.response = res
        try:
            self.server.handler(req, res)
        except Exception as exc:
            self._handler_failed(req, exc)
        if (self.in_batch or res._segments) and len(res._segments) != 1:
            # (outside a batch, segments left mean it waits behind an answer still
            # being made: what piles up there counts too)
            self._out_full(res)

    def _refuse_target(self, req) -> bool:
        """400 for an absolute-form target that names no host to answer for: a
        scheme other than http/https, or an authority that is no valid
        ``host[:port]`` (see ``absolute_form_problem``; the parser's grammar lets
        any through).  Answered in order, after what precedes it, with
        ``Connection: close``; no later request is processed.  Only asked for a
        target that does not start with '/'."""
        why = absolute_form_problem(req.target)
        if why is None:
            return False
        log.info("bad request from %s: %s", self.ip, why)
        if req is self.body_req:
            self.body_req = None  # (streaming) its handler never runs: nothing to tell
        self._to_closing()
        res = Response(self, req)
        res._close = True
        self.pending.append(res)
        req.response = res
        res.send_error(400, why)
        return True

    def _hold(self, req, reqs) -> bool:
        """Hold ``req`` (and what follows it in ``reqs``) back if an earlier answer
        is still being made: its method is not safe, and that answer may yet
        close the connection (RFC 9112 §9.3.2, §9.6).  Reading pauses until
        ``_dispatch_waiting`` runs it."""
        for res in self.pending:
            if not res.ended:
                break
        else:
            return False
        if reqs is None:
            self.waiting = [req]
        else:
            i = 0
            while reqs[i] is not req:
                i += 1
            self.waiting = reqs[i:]
        self.conn.pause_reading()
        return True

    def _out_full(self, res, reqs=None) -> bool:
        """Count ``res``'s output against this batch's ``out_room``; True once it
        is spent, the transport is above high water, or the connection's open
        files reach ``max_queued_files`` (see the module docstring) -- and, given
        the batch ``reqs``, the requests after ``res``'s wait (``_hold_rest``:
        False when there are none)."""
        room = self.out_room
        files = False
        for seg in res._segments:
            if seg.__class__ is _FileSeg:
                # a descriptor held until sent: weighed so that one batch pins at
                # most about FILES_HIGH of them (multi-range answers: one per part)
                fd_weight = self.conn.high_water // FILES_HIGH
                room -= seg.count if seg.count > fd_weight else fd_weight
                files = True
            else:
                room -= len(seg)
        if files and self._files_full():
            # the next request waits, and so does the next read (were this the last
            # request of its read): _pump resumes once the files are handed over
            if room >= 0:
                room = -1
            self.conn.pause_reading()
        self.out_room = room
        if room >= 0 and not self.write_blocked:
            return False
        return reqs is None or self._hold_rest(res.request, reqs)

    def _files_full(self) -> bool:
        """Do the open files of this connection -- queued in the transport, or file
        parts of answers not handed over yet -- reach ``max_queued_files``?"""
        n = _queued_files(self.conn)
        for res in self.pending:
            for seg in res._segments:
                if seg.__class__ is _FileSeg:
                    n += 1
        return n >= self.server.max_queued_files

    def _hold_rest(self, req, reqs) -> bool:
        """Hold the requests after ``req`` in ``reqs`` back until this batch's
        output is handed over (``_pump`` runs them, from ``_dispatch_waiting``)."""
        i = 0
        while reqs[i] is not req:
            i += 1
        i += 1
        if i == len(reqs) or self.no_more:
            return False
        self.waiting = reqs[i:]
        self.conn.pause_reading()
        return True

    def _dispatch_waiting(self) -> None:
        """Deferred by ``_pump``: the held requests run, in order, now that every
        earlier answer is handed over (a request that is not safe may be held
        again behind one of them that is still being made)."""
        waiting = self.waiting
        if waiting is None or self.pending:
            return  # ran already (more than one _pump), or held again
        if self.no_more or self.conn.closed:
            self._drop_waiting()
            return
        self.waiting = None
        streaming = self.streaming
        self.out_room = self.conn.high_water
        self.in_batch = True
        try:
            for req in waiting:
                if self.no_more:
                    break
                if streaming and self.waiting is None:
                    self._dispatch_late(req)
                else:
                    self._dispatch(req)
        finally:
            self.in_batch = False
        if self.no_more:
            self._drop_waiting()
        self.flush()
        if self.state < CLOSING and self.waiting is None and self.pending:
            # answers still being made: read on (a held body resumes) as before the
            # hold (with none left, flush() did this already)
            self._pump()

    def _dispatch_late(self, req: Request) -> None:
        """Streaming: a held request's handler runs after (some of) its body
        arrived.  That part was kept (``_on_body`` without a callback; once the
        message is complete, as ``body``): ``on_body`` / ``stream_to_file`` /
        ``on_end`` hand it over when the handler sets them, as if it had just
        arrived (``Request._catch_up``) -- as for an ``async def`` handler, whose
        task runs after the head and often after some of the body."""
        self._dispatch(req)

    def _upgrade_must_wait(self) -> bool:
        """Must the Upgrade/CONNECT request wait before its handler runs?

        Yes while an earlier answer is still being made (``res.upgrade()``
        could not put its 101 behind it) or the transport is over high water
        (had it arrived alone, it would not have been read yet)."""
        if self.write_blocked:
            return True
        for res in self.pending:
            if not res.ended:
                return True
        return False

    def _dispatch_upgrade(self) -> None:
        """Deferred by ``_pump``: run the handler of the Upgrade/CONNECT request
        that waited for the answers before it, as if it had arrived alone."""
        req = self.upgrade_req
        if (req is None or req.response is not None or self.pending or self.no_more
                or self.conn.closed or self.waiting is not None):
            return  # dispatched already (more than one _pump), held ones first, or the connection ends
        self.out_room = self.conn.high_water
        self.in_batch = True
        try:
            self._dispatch(req)
        finally:
            self.in_batch = False
        self.flush()
        conn = self.conn
        if (self.state < CLOSING and self.upgrade_req is req and conn.reading_paused
                and not conn.closed and not self._upgrade_holds_input()):
            conn.resume_reading()  # its handler decides: watch for a hang-up

    def _handler_failed(self, req, exc: Exception) -> None:
        """500 if nothing was sent yet; close after what precedes it either way.

        A ParseError from the handler (``req.form()`` on a bad or too large
        multipart body) is the client's fault: it gets its own status."""
        res = req.response
        if res is None or self.state >= DETACHED:
            log.error("handler raised for %s %s", req.method, req.target, exc_info=exc)
            if res is None and req._session is self and self.state < DETACHED:
                # Its answer went out already (the link to it was dropped then, see
                # flush): close after what is queued, or after the last answer owed.
                self._to_closing()
                if self.pending:
                    self.pending[-1]._close = True
                self.flush()
                if not self.pending and self.state < DETACHED:
                    self.conn.close_after_drain()
            return
        if isinstance(exc, ParseError) and not res.headers_sent and not res.ended:
            if exc.status >= 500:  # (a form part the server cannot spool)
                log.warning("request body from %s answered %d: %s (%s)", self.ip, exc.status, exc.message,
                            exc.__cause__ or "")
            else:
                log.info("bad request body from %s: %s", self.ip, exc)
            res._reset()
            _send_parse_error(res, exc)
            return
        log.error("handler raised for %s %s", req.method, req.target, exc_info=exc)
        self._to_closing()
        ended = res.ended
        if ended:
            # its answer is complete: close after the last answer owed (it, or one that
            # follows it); if every answer is out already, after what is queued (below)
            if self.pending:
                self.pending[-1]._close = True
        else:
            if not res.headers_sent:
                res._reset()
                res._close = True
                try:
                    res.send_error(500)
                except Exception:  # pragma: no cover - our own error path
                    res.ended = True
            else:
                self.cut_answer(res)  # too late for a status: its body ends here
        self.flush()
        if ended and not self.pending and self.state == CLOSING:
            self.conn.close_after_drain()

    def _reject(self, exc: ParseError) -> None:
        """Answer a parse error (after what precedes it), then close."""
        if exc.status >= 500:
            # the server's trouble (a body it cannot spool: no descriptor, disk full)
            log.warning("request from %s answered %d: %s (%s)", self.ip, exc.status, exc.message,
                        exc.__cause__ or "")
        else:
            log.info("bad request from %s: %s", self.ip, exc)
        self._to_closing()
        failed = self.body_req
        if failed is not None:
            # Streaming: the body of a dispatched request failed (bad framing, over
            # max_body, a body deadline).  The parser has forgotten the request.
            failed._close_stream_file()  # stream_to_file: its descriptor goes now
            res = failed.response
            if res is not None and not res.ended and res in self.pending:
                self._body_failed(res, exc)
                return
            if res is not None and res.ended:
                # The handler answered before its body failed (an early answer, the
                # body left unread): that answer is the request's one final response
                # (RFC 9112 §9.3), so no error answer follows it -- one did (a 200,
                # then a 408 or 400 on the same connection).  It closes once out.
                res._cut_reason = exc
                if res in self.pending:
                    res._close = True
                    self.flush()
                elif not self.pending:
                    self.conn.close_after_drain()
                return
        res = Response(self, _UNPARSED)
        self.pending.append(res)
        _send_parse_error(res, exc)

    def _body_failed(self, res: Response, exc: ParseError) -> None:
        """``_reject`` for a request whose handler runs already (streaming) and
        has not finished its answer: the error answers the request in its place
        (like in buffered mode), or closes the connection if a head went out.

        The handler hears of it as of a disconnect -- before its response is
        marked ended, else nothing would tell it: ``on_close`` /
        ``req.on_disconnect`` run, an async handler's task is cancelled, an
        ASGI ``receive()`` answers ``http.disconnect``.  Its ``on_end`` never
        runs; what it sends from now on goes nowhere."""
        pending = self.pending
        res._cut_reason = exc  # (WSGI's input names it: not "the client went away")
        if res._sent_head:
            res._lost()
            self.cut_answer(res)  # too late for a status: end what was sent, close
        else:
            err = Response(self, res.request)
            err._close = True
            pending[pending.index(res)] = err  # (the handler's answer is not awaited any more)
            res._lost()
            _send_parse_error(err, exc)
        self.flush()

    def cut_answer(self, res: Response) -> None:
        """End ``res``, whose head went out, short: its body will never be complete
        (its handler failed, or its request body did).  The connection closes after
        the answers before it (``flush()`` moves it on).  Chunked, the missing last
        chunk tells the client, and a Content-Length not reached does: those close
        as usual (so does a body that has none: HEAD, 204/304).  A close-delimited
        body (HTTP/1.0, a tunnel) ends with a reset once what precedes it is
        delivered: a FIN or close_notify would say it is complete (RFC 9112 §9.8)."""
        res._close = True
        if res._length is None and not (res._chunked or res._head_only or res.status in NO_BODY_STATUS):
            res._cut = True
        res.ended = True

    def _reset_when_delivered(self) -> None:
        """The cut answer is handed over: reset the connection once everything
        before its end is delivered (``_ResetWhenDelivered``); nothing more is read."""
        if self.reset_timer is not None or self.state == GONE:
            return
        self.conn.pause_reading()
        # (from the loop: never torn down inside the handler or read that cut it)
        self.reset_timer = self.loop.add_timer(0, _ResetWhenDelivered(self))

    def answer_closes(self) -> None:
        """A head says ``Connection: close``: answer what precedes it, then close;
        no later request is processed (RFC 9112 §9.6), also one already read.
        Reading stops unless the body of a request being answered still arrives."""
        if self.no_more:
            return  # (said already, or CLOSING or beyond)
        self.no_more = True
        parser = self.parser
        cur = parser._req
        if (cur is None or cur.response is None) and not parser.closed:
            # (closed: the request itself said close, the parser reads nothing more)
            self.conn.pause_reading()

    def must_close(self, res) -> bool:
        """While CLOSING (or the server drains): does ``res`` carry ``Connection: close``?

        Only the last answer owed does: the ones before it (good requests
        ahead of a bad one, requests accepted before shutdown) still go out."""
        pending = self.pending
        return not pending or pending[-1] is res

    @property
    def writable(self) -> bool:
        return self.state < DETACHED and not self.write_blocked

    def client_ip(self, req):
        return self.server._client_ip(self.ip, req)

    def flush_now(self) -> None:
        """Flush even inside a read's batch (a handler streaming from there)."""
        was = self.in_batch
        self.in_batch = False
        try:
            self.flush()
        finally:
            self.in_batch = was

    def flush(self) -> None:
        """Move finished output, in request order, to the transport."""
        if self.in_batch or self.state >= DETACHED:
            return
        pending = self.pending
        # Fast path (keep-alive, one request per read): one finished answer in one
        # piece goes straight out; everything else is _flush_all's.  (Negated guards:
        # short jumps, so their compares specialise on CPython 3.11.)
        if len(pending) != 1:
            self._flush_all()
            return
        res = pending[0]
        segs = res._segments
        if not (res.ended and len(segs) == 1 and not res._close and res._upgrade is None
                and segs[0].__class__ is bytes):
            self._flush_all()
            return
        conn = self.conn
        if not conn.write(segs[0]):
            if conn.closed:  # (asked only now: a property, and rarely true)
                segs.clear()
                pending.clear()
                return
            self._blocked()
        del pending[0]
        req = res.request
        if req._special and req.body_size:  # (only a special request has a body)
            req.close()  # a spooled body file goes now, not at GC
        if not self.streaming:
            # Answered: break the request <-> response cycle, so both go by
            # reference count at once instead of waiting for the cyclic GC
            # (which cost ~2k instructions a request, issue 13).
            req.response = None
            req._session = self
        # _drained(), inlined for the common case
        if self.state == IDLE:
            self.since = self.loop._now  # keep-alive starts (now_ms(), without the call)
        if (self.want_continue or self.held or self.eof or self.write_blocked or self.closing
                or conn._paused):  # reading_paused (Connection and TlsTransport), without the call
            self._drained_more()

    def _flush_all(self) -> None:
        """``flush`` for a batch (pipelined answers), a streamed answer, or a lost connection."""
        pending = self.pending
        conn = self.conn
        if conn.closed:
            for res in pending:
                close_segments(res._segments)
            pending.clear()
            return
        out: list = []
        close = False
        cut = False
        done = 0
        for res in pending:  # (a pipelined batch: once per answer)
            segs = res._segments
            if segs:
                out += segs
                segs.clear()
            if not res.ended:
                break
            done += 1
            req = res.request
            if req._special and req.body_size:  # (only a special request has a body)
                req.close()
            if not self.streaming:
                req.response = None  # the cycle, as above
                req._session = self
            if res._close:
                close = True
                cut = res._cut
                break
            if res._upgrade is not None:
                # An Upgrade/CONNECT request answered normally (the handler did
                # not take the connection): CONNECT closes; Upgrade goes on as HTTP.
                self.upgrade_req = None
                decline = getattr(self.parser, "decline_upgrade", None)
                if req.method == "CONNECT" or decline is None:
                    close = True
                    break
                decline()
                self.held = True  # parse what the client sent behind it
        if done:
            del pending[:done]
            if pending and not close and pending[0]._wants_drain:
                # a streamed answer whose write() returned False while it waited
                # behind them is first in line: its producer resumes (next iteration,
                # not from inside the send() that ended the answer before it)
                self.loop.defer_call(self._resume_head)
        if close:
            for later in pending:
                later._lost()
            pending.clear()
        if out:
            self._write(out)
        if close:
            self._to_closing()
            if cut:
                self._reset_when_delivered()  # see cut_answer
            else:
                conn.close_after_drain()
            return
        if self.want_continue:
            cur = self.parser.current
            if cur is not None:
                self._continue(cur)
        if not pending:
            self._drained()

    def _resume_head(self) -> None:
        """Deferred by ``_flush_all``: ``on_drain`` of the answer now first in line."""
        pending = self.pending
        if not pending or self.state >= DETACHED or self.write_blocked:
            return  # (write_blocked: on_drain runs when the transport drains)
        res = pending[0]
        if not res._wants_drain:
            return
        res._wants_drain = False
        cb = res.on_drain
        if cb is not None and not res.ended:
            try:
                cb()
            except Exception as exc:
                self._handler_failed(res.request, exc)

    def _drained(self) -> None:
        """Every answer is handed over: read (or parse) the next requests; keep-alive starts."""
        if self.state == IDLE:
            self.since = self.loop.now_ms()  # keep-alive starts (HEAD/BODY keep their clocks)
        self._drained_more()

    def _drained_more(self) -> None:
        if self.want_continue:
            cur = self.parser.current
            if cur is not None:
                self._continue(cur)
        if self.held or self.eof or self.write_blocked or self.conn.reading_paused:
            self._pump()
        elif self.closing and self.server._draining:
            self.server._session_quiet(self)

    def _write(self, out: list) -> None:
        conn = self.conn
        data = []
        ok = True
        files = False
        for seg in out:
            if seg.__class__ is bytes:
                data.append(seg)
            elif seg.__class__ is _FileSeg:
                if conn.closed:
                    seg.close()
                    continue
                # False: above high water (FILES_HIGH file chunks queued, or the bytes),
                # the chunk IS queued; or refused (the connection closes, the fd with it)
                if not conn.send_file(seg.take(), seg.offset, seg.count,
                                      header=b"".join(data) if data else None, own_fd=True):
                    ok = False
                data = []
                files = True
            else:
                data.append(bytes(seg))
        if data and not conn.closed:
            if len(data) == 1:
                sent = conn.write(data[0])
            elif (len(data) > 2 or len(data[-1]) < 65536) and self.out_room > conn.high_water >> 1:
                # small answers (the batch counted under half high water in answers of
                # several segments; one-segment ones are under 16 KiB): one copy, one buffer
                sent = conn.write(b"".join(data))
            else:
                sent = conn.writev(data)  # big bodies: queued by reference, no second copy
            if not sent:
                ok = False
        self.out_room = conn.high_water  # this batch's output is handed over
        if files and not conn.closed and _queued_files(conn) >= self.server.max_queued_files:
            # that many open files wait in the transport: no request runs (and opens
            # one more) until fewer do -- on_drain looks (see the module docstring)
            self.files_wait = True
            _wake_when_fewer_files(conn)
            ok = False
        if not ok:
            self._blocked()

    def _blocked(self) -> None:
        """The transport's queue is above high water: stop reading until it drains."""
        self.write_blocked = True
        conn = self.conn
        if conn.on_drain is None and self.state < DETACHED:
            conn.on_drain = self.on_drain  # set on first need: idle connections stay small

    # -- upgrade handover -----------------------------------------------------

    def upgrade(self, res, status_headers):
        """See ``Response.upgrade``."""
        conn = self.conn
        if self.state >= DETACHED or conn.closed or res._gone or conn.peer_closed:
            if self.state < DETACHED and not conn.closed:
                conn.close()  # the client hung up while the handler decided
            raise ConnectionLost(errno.ENOTCONN, "upgrade of", "a client that has gone")
        if res.ended:
            raise RuntimeError("response already ended")
        pending = self.pending
        self.flush_now()  # earlier answers that are complete go first
        if not pending or pending[0] is not res:
            raise RuntimeError("upgrade(): an earlier pipelined response has not ended yet")
        if status_headers is not None:
            connect = res.request.method == "CONNECT"
            # CONNECT: a 2xx opens the tunnel, with no framing headers (RFC 9110 §9.3.6)
            res.status = (res.status if 200 <= res.status < 300 else 200) if connect else 101
            if status_headers:
                res._headers.extend(status_headers)
            res._segments.append(res._build_head(0))  # (a CONNECT's 2xx: no framing, see there)
        res.ended = True
        out = list(res._segments)
        res._segments.clear()
        del pending[0]
        if out:
            self._write(out)  # the 101 is in the transport before the new owner's bytes
        parser = self.parser
        rest = parser.take_remaining() if parser.upgraded else b""
        self._to_detached()
        for later in pending:
            later._lost()
        pending.clear()
        self.upgrade_req = None
        conn.context = None
        conn.on_data = None
        conn.on_close = None
        conn.on_drain = None
        if hasattr(conn, "on_eof"):
            conn.on_eof = None
        if getattr(conn, "data_as_bytes", False):
            conn.data_as_bytes = False  # the new owner gets the transport's default (memoryviews)
        if conn.reading_paused:
            conn.resume_reading()  # data flows to the new owner's on_data from the next iteration
        return conn, rest

    # -- deadlines (called by the server's sweep) ---------------------------------

    def check_deadline(self, conn, now: int) -> None:
        if self.reset_timer is not None:
            return  # a cut answer's connection: _ResetWhenDelivered ends it (with its own deadline)
        server = self.server
        if conn.output_pending:
            # writing: progress is bytes the kernel took, not a queue that grows
            sent = conn.bytes_sent
            if sent != self.sent_seen or not self.write_since:
                self.sent_seen = sent
                self.write_since = now
            elif now - self.write_since >= server.write_timeout_ms:
                log.info("closing %s: slow reader took nothing for %d ms", self.ip, server.write_timeout_ms)
                conn.close()
            return
        self.write_since = 0
        if conn.peer_closed or self.eof:
            # the client left (or half-closed): answers still being made get
            # keepalive_timeout to arrive; nothing to answer -> close now
            if not self.eof:
                self.eof = True
                self.eof_since = now
            if ((not self.pending and not self.held and self.waiting is None)
                    or now - self.eof_since >= server.keepalive_timeout_ms):
                conn.close()
            return
        state = self.state
        if state == BODY:
            if conn.reading_paused:
                # we are not reading (pause_body(), backpressure): the client is not slow
                self.since = self.body_start = now
                self.body_got = 0
                return
            if now - self.since >= server.body_timeout_ms:
                self._cut(408, "request body idle for %d ms" % server.body_timeout_ms)
                return
            elapsed = now - self.body_start
            if (elapsed >= server.body_grace_ms and server.min_body_rate
                    and self.body_got * 1000 < server.min_body_rate * elapsed):
                self._cut(408, "request body slower than %d bytes/s" % server.min_body_rate)
            return
        if self.pending or state >= CLOSING:
            return  # a handler is still answering: its own business
        if state == IDLE:
            if now - self.since >= server.keepalive_timeout_ms:
                conn.close()
        elif state == HEAD:
            if now - self.since >= server.header_timeout_ms:
                self._cut(408, "request head not complete in %d ms" % server.header_timeout_ms)

    def _cut(self, status: int, why: str) -> None:
        """A deadline passed while reading a request: answer it if nothing was sent, close."""
        log.info("closing %s: %s", self.ip, why)
        if self.state == HEAD:
            self.conn.close()  # slowloris: no answer owed for a partial head
            return
        self._reject(ParseError(status, why))
        self.flush()
        if self.state != GONE and not self.conn.closed and self.reset_timer is None:
            self.conn.close_after_drain()

