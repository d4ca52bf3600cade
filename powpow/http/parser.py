"""Sans-I/O HTTP/1.1 request parser: incremental, zero-copy, strict (RFC 9112).

Shape of the API
----------------
``parser = RequestParser(on_headers=None, on_body=None, on_message_complete=None, **limits)``

``parser.feed(data) -> list[Request]`` takes any split of the input and returns
the requests *completed* by it, in order (feeding byte by byte gives exactly the
same requests, bodies and errors as feeding everything at once).  Every
rejection raises ``powpow.errors.ParseError`` carrying the status to answer with;
after one the parser is dead (every later ``feed`` re-raises it): answer, close.
When one ``feed`` completes requests and then meets an error, it returns those
requests and the *next* ``feed`` (``feed(b"")`` will do) raises: answers to the
good requests come first, as on the wire.

* ``on_headers(req)`` runs when a head is parsed, before its body (send
  ``100 Continue`` here; ``parser.current`` is the same request).
* Bodies are buffered by default: in memory (a zero-copy slice when the whole
  Content-Length body arrived with its head) up to ``spool_threshold``, then in an
  unnamed temporary file (``Request.body_file``; see ``_body.py``).  With ``on_body`` the
  body is streamed instead: ``on_body(req, chunk)`` per piece, nothing kept.
* ``on_message_complete(req)`` runs when a message ends (also returned by feed).
* A request that ends the connection (``keep_alive`` False) stops the parser;
  later bytes are ignored (``parser.closed``).
* ``max_pipeline`` caps how many requests one ``feed`` returns; the rest stay
  buffered, unparsed, until the next ``feed`` (``feed(b"")`` will do);
  ``parser.held`` says the last ``feed`` stopped there.

Protocol switches: ``upgraded``, ``take_remaining()``, ``decline_upgrade()``
--------------------------------------------------------------------------
A request asking to switch -- ``Connection: upgrade`` with ``Upgrade`` in
HTTP/1.1, or any CONNECT -- is parsed to the end of its message *as HTTP*: a
Content-Length or chunked body is read and delivered like any other (RFC 9110
7.8: the switch happens after the message that asked for it).  Then the parser
stops interpreting bytes:

* ``upgraded`` is True from that moment: every later byte, of this ``feed`` and
  of later ones, is kept unparsed (``feed`` returns ``[]``).  ``buffered``
  counts them; a server stops reading until it has decided.
* ``take_remaining()`` returns every byte after that message, intact, and
  forgets them (bytes fed later are kept again for the next call).  Use it when
  the switch is accepted: those bytes belong to the new protocol.
* ``decline_upgrade()`` says the switch did not happen (the handler answered
  normally): the kept bytes become ordinary HTTP input again and the next
  ``feed`` (``feed(b"")`` will do) parses and returns the requests that follow
  -- or, if the declined request was the connection's last (``keep_alive``
  False), the parser is ``closed``.  It is a no-op when nothing asked to switch.

Buffered mode (no callbacks): ``feed`` returns the switching request last;
``upgraded`` is already True when ``feed`` returns, and the caller decides
afterwards.  Streaming mode (callbacks): ``upgraded`` is True *inside*
``on_message_complete`` of the switching request, and already inside its
``on_headers`` when it has no body (the usual WebSocket GET or CONNECT), so a
handler run from ``on_headers`` can take the remaining bytes at once.  For a
switching request *with* a body, ``upgraded`` is False until the body ended;
``decline_upgrade()`` called before that marks the request so that it never
switches.  Called from inside a callback, ``decline_upgrade()`` takes effect
when the current ``feed`` returns, and the requests behind are parsed by the
next ``feed``.

Memory held
-----------
``buffered`` is the number of received bytes the parser holds unparsed (held
back by ``max_pipeline``, a partial head, chunk-size line or trailer section, or
kept after a switch).  Bodies are never counted: they go to the spool or to
``on_body`` as they arrive.  Bound: unless ``held`` or ``upgraded``,
``buffered <= max_request_line + max_header_size + 4`` (a partial head; a
longer one is an error).  While ``held`` or ``upgraded`` the parser cannot
refuse input, so it holds exactly the bytes fed and not yet consumed (never a
second copy): ``feed(data)`` grows ``buffered`` by at most ``len(data)`` and
``feed(b"")`` never grows it.  The caller bounds it by not reading while
``held`` or ``upgraded`` -- then it is at most one read beyond that bound.

Grammar accepted (RFC 9112 unless noted)
----------------------------------------
::

    request    = *( CRLF ) request-line *( field-line CRLF ) CRLF [ body ]
    request-line = method SP request-target SP ( "HTTP/1.1" / "HTTP/1.0" ) CRLF
    method     = token                       ; case-sensitive; common ones interned
    request-target = origin-form             ; "/" *( VCHAR except "#" )
                   / absolute-form           ; scheme "://" 1*( VCHAR except "#" )
                   / authority-form          ; host ":" port    (CONNECT only)
                   / "*"                     ; asterisk-form    (OPTIONS only)
    field-line = token ":" OWS *( VCHAR / obs-text / SP / HTAB ) OWS
    chunked    = *( chunk-size [ chunk-ext ] CRLF chunk-data CRLF )
                 "0" [ chunk-ext ] CRLF *( field-line CRLF ) CRLF
    chunk-size = 1*16HEXDIG

Everything else is rejected, never "repaired": a bare CR or LF anywhere (also in
chunk lines), NUL / control bytes (HTAB allowed in values), whitespace before a
colon, obs-fold and whitespace before the first field, empty or non-token names,
HTTP/1.1 without exactly one valid Host (or any request with two), Content-Length
with Transfer-Encoding, Transfer-Encoding in HTTP/1.0, a last coding other than
chunked or chunked twice (400; other codings are 501), Content-Length that is not
plain digits or disagrees between duplicates, chunk sizes that are not strict hex,
missing CRLF after chunk data.  Only SP and HTAB are stripped from values.
Request smuggling lives in exactly these gaps, so each rule is a test case.
A request line is judged as soon as its CRLF arrives, before the rest of the
head and before any error behind it: "GET /" CRLF (HTTP/0.9) fails at once
instead of waiting for a blank line that may never come (``scan_block``'s
``check_first``, run only when a read ends mid-head or a head fails a limit).

Limits and why
--------------
Limits are checked before any buffer grows past them, and by byte position, so
a limit trips at the same byte however the input is split:
414 request line > ``max_request_line``; 431 header section (field lines with
their CRLFs) > ``max_header_size`` or more than ``max_headers`` fields; 413
Content-Length or running chunked total > ``max_body``; 505 other HTTP
versions; 501 transfer codings other than chunked; 400 for the rest.

Where things live
-----------------
This module is the state machine (``feed``, heads, bodies, switches) and the
hot path that builds a Request from a head.  Around it: ``_grammar.py`` (limits,
byte tables, validators for request lines, names and framing fields),
``_headblock.py`` (incremental scanning of a CRLF block ending in an empty line:
heads, trailers, multipart part heads), ``_chunked.py`` (chunk-size lines),
``_message.py`` (Request and Headers, lazy views into the buffer).  Names other
modules import from here (``scan_block``, ``_fields``, the limits) stay here.

How it stays fast and linear
----------------------------
The head is found by one call of the (SSE2) ``scan_head`` scanner, which returns
the offset of every CRLF and the first forbidden byte; the parser then touches
each line once (``find(b":")``, a dict lookup in a cache of validated names).  A
head that arrives in pieces is scanned incrementally: the scan resumes where it
stopped, so dripping input costs O(n), never O(n^2).
"""
from typing import Any, Callable, List, Optional

from powpow.errors import ParseError
from _thread import get_ident as _get_ident

from powpow._ffi import HEAD_SIG as _HEAD_SIG, blank as _blank, head_lines, head_scratch, memcmp_at as _memcmp_at
from powpow._ffi import new_line_offsets, same_thread as _same_thread

from ._body import SpooledBody
from ._chunked import expect_crlf, parse_chunk_size
from ._grammar import (
    FIRST as _FIRST,
    HOST as _HOST,
    HOSTS_MAX as _HOSTS_MAX,
    HOSTS_OK as _HOSTS_OK,
    MAX_BODY,
    MAX_CHUNK_LINE,
    MAX_HEADER_SIZE,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    NAMES as _NAMES,
    RL_FAST as _RL_FAST,
    SPECIAL as _SPECIAL,
    SPOOL_THRESHOLD,
    TARGET_CHARS as _TARGET_CHARS,
    check_target as _check_target,
    check_version as _check_version,
    err as _err,
    framing as _framing,
    method_slow as _method_slow,
    new_name as _new_name,
)
from ._headblock import parse_fields as _fields
from ._headblock import scan_block
from ._message import Headers, Request, _ScanHeaders, _SharedHeaders, name_index

__all__ = [
    "RequestParser", "ParseError", "Request", "Headers",
    "MAX_REQUEST_LINE", "MAX_HEADER_SIZE", "MAX_HEADERS", "MAX_BODY",
    "SPOOL_THRESHOLD", "MAX_CHUNK_LINE",
]

# parser states
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS = 0, 1, 2, 3, 4, 5
_UPGRADED, _CLOSED, _FAILED = 6, 7, 8

_new = object.__new__

# Names signatures (see powpow._ffi.scan_head) of validated header sections ->
# (names list, ((line index, SPECIAL code), ...), the signature itself, name_index(names)).  Shared by all parsers,
# bounded; holds only sequences of names that passed validation.  The names
# lists are shared by every Headers built from them and never mutated.
_SIGS: dict = {}
_SIGS_MAX = 1024


def _memo_headers(memo) -> Headers:
    """Headers over the memo's own copy of the header block.

    The memo must not point into the read buffer the block came from: on an
    idle keep-alive connection that would pin the whole last read (up to 64
    KiB) for nothing.  ``block`` is a copy already (a slice of bytes), so the
    first repeat rebases the offsets onto it, once.
    """
    h0 = memo[5]
    names = memo[3]
    hdrs = _new(_SharedHeaders)
    hdrs._buf = memo[0]
    hdrs._lines = [e - h0 for e in memo[4][: len(names) + 1]]
    hdrs._names = names
    index = memo[6]
    hdrs._index = index if index is not None else name_index(names)
    hdrs._memo_d = {}
    return hdrs


def _check_request_line(buf, pos: int, cr: int) -> None:
    """Validate a complete request line buf[pos:cr] before its head is complete.

    The same validators ``_build`` calls on its slow path, in the same order,
    so the verdict is the one the whole head would get; ``scan_block`` calls
    this once per head, only when a read ends mid-head (or the head fails a
    limit), so that "GET /" CRLF (HTTP/0.9) or "GET / HTTP/1.2" CRLF is
    answered at once instead of after the header timeout.
    """
    method, ts = _method_slow(buf, pos, cr)  # FIRST's prefixes find the same method and target start
    te = _check_version(buf, ts, cr)[1]
    _check_target(buf, ts, te, method)


class RequestParser:
    """Incremental HTTP/1.x request parser (see the module docstring)."""

    # Slots: one parser lives per connection, and an instance dict of this many
    # attributes cost ~1.5 KiB per idle keep-alive connection on CPython.
    __slots__ = ("_after_switch", "_buf", "_crlf", "_decline_pending", "_declined", "_error", "_head_cap",
                 "_held", "_idle", "_in_cb", "_memo", "_no_callbacks", "_out", "_out1", "_pos", "_remaining",
                 "_parts", "_req", "_rest", "_resume", "_sc", "_sc_cap", "_sigent", "_tid", "_lastsig", "_sink",
                 "_state", "_switch_req", "_total", "max_body",
                 "max_chunk_line", "max_header_size", "max_headers", "max_pipeline", "max_request_line",
                 "on_body", "on_headers", "on_message_complete", "spool_dir", "spool_threshold")

    def __init__(
        self,
        on_headers: Optional[Callable[[Request], None]] = None,
        on_body: Optional[Callable[[Request, bytes], None]] = None,
        on_message_complete: Optional[Callable[[Request], None]] = None,
        *,
        max_request_line: int = MAX_REQUEST_LINE,
        max_header_size: int = MAX_HEADER_SIZE,
        max_headers: int = MAX_HEADERS,
        max_body: int = MAX_BODY,
        spool_threshold: int = SPOOL_THRESHOLD,
        spool_dir: Optional[str] = None,
        max_chunk_line: int = MAX_CHUNK_LINE,
        max_pipeline: int = 0,
    ) -> None:
        self.on_headers = on_headers
        self.on_body = on_body
        self.on_message_complete = on_message_complete
        self._no_callbacks = on_headers is None and on_body is None and on_message_complete is None
        self.max_request_line = max_request_line
        self.max_header_size = max_header_size
        self.max_headers = max_headers
        self.max_body = max_body
        self.spool_threshold = spool_threshold
        self.spool_dir = spool_dir
        self.max_chunk_line = max_chunk_line
        self.max_pipeline = max_pipeline
        # a head can be at most this long: request line, CRLF, fields, blank line
        self._head_cap = max_request_line + max_header_size + 4
        # scan_head's memory: this thread's (fetched again when another thread feeds; shared by
        # the parsers of a thread); its line offsets array is the slow paths' `_out`
        self._sc_cap = max_headers + 2
        self._sc = sc = head_scratch(self._sc_cap)
        self._out = sc.out
        self._parts = sc.parts
        self._tid = _get_ident()
        self._out1 = new_line_offsets(1)
        # the names signature validated last on this connection, and its _SIGS entry
        self._lastsig: Optional[bytes] = None
        self._sigent: Optional[tuple] = None
        self._buf: Any = b""  # bytes, or a bytearray this parser owns
        self._pos = 0
        self._state = _HEAD
        self._resume = None   # (line offsets, scan-from), relative to _pos, of a partial block
        self._req: Optional[Request] = None
        self._sink: Optional[SpooledBody] = None
        self._remaining = 0
        self._total = 0
        self._crlf = 0
        self._rest = bytearray()   # bytes after a switching request (state _UPGRADED)
        self._switch_req: Optional[Request] = None  # the request whose message switched
        self._after_switch = _HEAD  # state to resume in if the switch is declined
        self._declined: Optional[Request] = None    # declined before its body ended
        self._decline_pending = False  # decline_upgrade() came from inside a callback
        self._in_cb = False   # a callback runs (inside feed)
        self._held = False    # the last feed stopped at max_pipeline with bytes left
        self._error: Optional[ParseError] = None
        # (header block (a copy), framing, Headers over the block or None,
        #  names, CR offsets, block start) of the last request: see _memo_headers
        self._memo: Optional[tuple] = None
        self._idle = True     # state _HEAD, nothing pending: feed may take the fast path

    # -- public state -------------------------------------------------------

    @property
    def current(self) -> Optional[Request]:
        """The request whose head is parsed but whose body is still arriving."""
        return self._req

    @property
    def upgraded(self) -> bool:
        """A request asked to switch protocols and its message ended: bytes after it
        are kept unparsed (see "Protocol switches" in the module docstring)."""
        return self._state == _UPGRADED

    @property
    def held(self) -> bool:
        """The last ``feed`` stopped at ``max_pipeline`` with input left unparsed."""
        return self._held

    @property
    def buffered(self) -> int:
        """Bytes received and held unparsed (see "Memory held" in the module docstring)."""
        return len(self._buf) - self._pos + len(self._rest)

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def failed(self) -> bool:
        """A ParseError was met; the next ``feed`` raises it (answer, then close)."""
        return self._state == _FAILED

    @property
    def pending(self) -> int:
        """Bytes received but not yet parsed (a partial head, or held back by max_pipeline)."""
        return len(self._buf) - self._pos

    def take_remaining(self) -> bytes:
        """After a switch (``upgraded``): every byte that followed the switching
        message, intact; they are forgotten here.  ``b""`` when not upgraded."""
        rest = bytes(self._rest)
        self._rest = bytearray()
        return rest

    def decline_upgrade(self) -> None:
        """The switch asked for did not happen: parse what follows as HTTP again.

        After it the next ``feed`` (``feed(b"")``) returns the requests buffered
        behind the switching one.  Before the switching request's body ended,
        it marks that request so it never switches.  No-op otherwise.
        """
        if self._state == _UPGRADED:
            if self._in_cb:
                self._decline_pending = True  # applied when the feed ends
            else:
                self._resume_http()
            return
        req = self._req
        if req is not None and (req.upgrade is not None or req.method == "CONNECT"):
            self._declined = req

    def _switch(self, req: Request, buf, pos: int, end: int) -> None:
        """Stop interpreting bytes after ``req``'s message (which ends at ``pos``)."""
        self._state = _UPGRADED
        self._idle = False
        self._switch_req = req
        self._after_switch = _HEAD if req.keep_alive else _CLOSED
        self._rest += buf[pos:end]

    def _resume_http(self) -> None:
        rest = bytes(self._rest)
        self._rest = bytearray()
        self._switch_req = None
        self._decline_pending = False
        state = self._after_switch
        self._state = state
        if state == _CLOSED:
            rest = b""
        self._buf = rest
        self._pos = 0
        self._idle = state == _HEAD and not rest

    # -- feeding ------------------------------------------------------------

    def close(self) -> None:
        """The connection is gone: release a body still being spooled (idempotent).

        A request whose body never finished is never handed out, so nobody
        else would close its temporary file; the parser owns it until then."""
        sink = self._sink
        if sink is not None:
            self._sink = None
            sink.discard()

    def feed(self, data=b"") -> List[Request]:
        """Parse ``data`` (bytes-like); return the requests it completed, in order."""
        if not _same_thread(self._tid):
            # fed from another thread than last time: that thread's scratch (an
            # ident is reused only once its thread has ended, so never shared)
            sc = self._sc = head_scratch(self._sc_cap)
            self._out = sc.out
            self._parts = sc.parts
            self._tid = _get_ident()
        # Fast path: nothing pending and a whole head at the start of data.  Each
        # guard leaves with a short jump (a compare followed by an EXTENDED_ARG jump,
        # or whose result is stored, is never specialised on CPython 3.11).
        if not (self._idle and data.__class__ is bytes and data):
            return self._feed(data)
        end = len(data)
        r, lines = head_lines(data, 0, end if end < self._head_cap else self._head_cap, self._parts,
                              self._lastsig)
        if lines is not None:
            # a names signature: the head is complete, has no forbidden byte, and does
            # not start with a blank line.  (len, not r & 0xFFFFFFF: int bit operations
            # are not specialised on CPython 3.11 either, ~60 instructions each)
            n = len(lines)
            if lines[0] > self.max_request_line or lines[n - 1] - lines[0] - 2 > self.max_header_size:
                return self._feed(data)
        elif r < _HEAD_SIG:  # no forbidden byte, no signature (no flag bits): r is n, offsets in _out
            n = r
            lines = self._out
            if not (n >= 2 and lines[n - 1] == lines[n - 2] + 2 and data[0] != 13
                    and lines[0] <= self.max_request_line
                    and lines[n - 1] - lines[0] - 2 <= self.max_header_size):
                return self._feed(data)
        else:
            return self._feed(data)
        try:
            req = self._build(data, 0, lines, n, r)
        except ParseError as exc:
            self._fail(exc)
            raise
        pos = lines[n - 1] + 2
        if pos == end and not req._special and self._no_callbacks:
            return [req]  # the whole read was one plain request
        done: List[Request] = []
        try:
            pos, state = self._start_message(req, data, pos, end, done)
            return self._run(data, pos, state, done)
        except ParseError as exc:
            self._fail(exc)
            if done:
                return done  # the error is raised by the next feed()
            raise

    def _feed(self, data) -> List[Request]:
        state = self._state
        if state >= _UPGRADED:
            if state == _UPGRADED:
                self._rest += data
                return []
            if state == _FAILED:
                raise self._error  # type: ignore[misc]
            return []
        buf = self._buf
        pos = self._pos
        if pos == len(buf):
            # Nothing pending: parse in the caller's bytes without copying.
            buf = data if data.__class__ is bytes else bytes(data)
            pos = 0
        elif data:
            if self._held:
                # Whole requests wait behind max_pipeline: they will be frozen
                # into bytes anyway, so build that bytes object in one copy.
                buf = bytes(buf[pos:]) + bytes(data)
                pos = 0
            else:
                # Partial head or chunk line pending: accumulate in a bytearray we
                # own (amortised O(1) per byte).  Requests only ever point into
                # bytes: a head completed here is frozen with one copy (see _run).
                if buf.__class__ is not bytearray:
                    buf = bytearray(buf[pos:])
                    pos = 0
                elif pos > 4096 and pos * 2 > len(buf):
                    del buf[:pos]  # all in-progress offsets are relative to pos
                    pos = 0
                buf += data
        done: List[Request] = []
        try:
            return self._run(buf, pos, state, done)
        except ParseError as exc:
            self._fail(exc)
            if done:
                return done  # the error is raised by the next feed()
            raise

    def _fail(self, exc: ParseError) -> None:
        self._state = _FAILED
        self._idle = False
        self._held = False
        self._error = exc
        self._buf = b""
        self._pos = 0
        self._req = None
        sink = self._sink
        if sink is not None:
            self._sink = None
            sink.discard()

    def _run(self, buf, pos: int, state: int, done: List[Request]) -> List[Request]:
        end = len(buf)
        out = self._out
        parts = self._parts
        max_rl = self.max_request_line
        max_hs = self.max_header_size
        cap = self.max_pipeline
        held = False
        while pos < end and state <= _TRAILERS:
            if state == _HEAD:
                if cap and len(done) >= cap:
                    held = True
                    break
                r = 0
                if self._resume is None and buf[pos] != 13:
                    lim = pos + self._head_cap
                    r, lines = head_lines(buf, pos, end if end < lim else lim, parts, self._lastsig)
                    if lines is not None:  # HEAD_SIG: complete, and no forbidden byte
                        n = len(lines)
                        ok = lines[0] - pos <= max_rl and lines[n - 1] - lines[0] - 2 <= max_hs
                    else:
                        n = r & 0xFFFFFFF
                        lines = out
                        ok = (r >> 32 == 0 and n >= 2 and lines[n - 1] == lines[n - 2] + 2
                              and lines[0] - pos <= max_rl and lines[n - 1] - lines[0] - 2 <= max_hs)
                    if not ok:
                        bad = (r >> 32) - 1
                        r = 0
                        lines, n, pos = self._head_slow(buf, pos, end, n, bad)
                        if lines is None:
                            break
                else:
                    lines, n, pos = self._head_slow(buf, pos, end, -1, -1)
                    if lines is None:
                        break
                if buf.__class__ is bytearray:
                    buf = bytes(buf)  # freeze: the request will point into it
                req = self._build(buf, pos, lines, n, r)
                if not req._special and self._no_callbacks:
                    done.append(req)  # _start_message's common case, inlined: no body, no switch
                    pos = lines[n - 1] + 2
                else:
                    pos, state = self._start_message(req, buf, lines[n - 1] + 2, end, done)
            elif state == _BODY:
                rem = self._remaining
                e = pos + rem if end - pos >= rem else end
                self._body_piece(buf, pos, e)
                self._remaining = rem - (e - pos)
                pos = e
                if self._remaining == 0:
                    state = self._complete(self._req, done, buf, pos, end)  # type: ignore[arg-type]
                    if state != _HEAD:
                        break
            elif state == _CHUNK_DATA:
                rem = self._remaining
                e = pos + rem if end - pos >= rem else end
                self._body_piece(buf, pos, e)
                self._remaining = rem - (e - pos)
                pos = e
                if self._remaining == 0:
                    state = _CHUNK_CRLF
                    self._crlf = 0
            elif state == _CHUNK_SIZE:
                pos, state = self._chunk_size(buf, pos, end)
                if state == _CHUNK_SIZE:
                    break
            elif state == _CHUNK_CRLF:
                pos, got = expect_crlf(buf, pos, end, self._crlf)
                self._crlf = got
                if got == 2:
                    state = _CHUNK_SIZE
            else:  # _TRAILERS
                r = self._block(buf, pos, end, False, self.max_header_size, "trailer section")
                if r is None:
                    break
                lines, n = r
                if buf.__class__ is bytearray:
                    buf = bytes(buf)
                req = self._req  # type: ignore[assignment]
                req.trailers = _fields(buf, pos, lines, n - 1)
                pos = lines[n - 1] + 2
                state = self._complete(req, done, buf, pos, end)
                if state != _HEAD:
                    break
        self._held = held
        if state == _UPGRADED:
            pos = end  # the bytes after the message are in self._rest already
            if self._decline_pending:  # declined from inside a callback
                self._resume_http()
                return done
        elif state == _CLOSED:
            pos = end
        self._state = state
        if pos >= end:
            self._buf = b""
            self._pos = 0
        else:
            self._buf = buf
            self._pos = pos
        self._idle = state == _HEAD and pos >= end and self._resume is None
        return done

    # -- message boundaries ---------------------------------------------------

    def _start_message(self, req: Request, buf, pos: int, end: int, done: List[Request]):
        """After a head: set up the body, or complete a body-less message."""
        if not req._special:
            if self._no_callbacks:  # no body, no switch, no close: the common case
                done.append(req)
                return pos, _HEAD
        elif (req.upgrade is not None or req.method == "CONNECT") \
                and not req.chunked and not req.content_length:
            # Switching with no body: the switch point is known now; a handler run
            # from on_headers may already take the bytes behind it.
            self._switch(req, buf, pos, end)
            pos = end
        if self.on_headers is not None:
            self._req = req
            self._in_cb = True
            try:
                self.on_headers(req)
            finally:
                self._in_cb = False
        if req.chunked:
            self._req = req
            self._total = 0
            if self.on_body is None:
                self._sink = SpooledBody(self.spool_threshold, self.spool_dir)
            return pos, _CHUNK_SIZE
        cl = req.content_length
        if cl:
            if self.on_body is None and end - pos >= cl:
                req._body_buf = buf  # zero-copy: the body is a slice of buf
                req._body_start = pos
                pos += cl
                req._body_end = pos
                req.body_size = cl
            else:
                self._req = req
                self._remaining = cl
                if self.on_body is None:
                    self._sink = SpooledBody(self.spool_threshold, self.spool_dir)
                return pos, _BODY
        return pos, self._complete(req, done, buf, pos, end)

    def _complete(self, req: Request, done: List[Request], buf, pos: int, end: int) -> int:
        sink = self._sink
        if sink is not None:
            self._sink = None
            data, f = sink.finish()
            req.body_size = sink.size
            if f is not None:
                req.body_file = f
            else:
                req._body_buf = data
                req._body_end = len(data)
        self._req = None
        done.append(req)
        if not req._special:
            if self.on_message_complete is not None:
                self._in_cb = True
                try:
                    self.on_message_complete(req)
                finally:
                    self._in_cb = False
            return _HEAD
        if req.upgrade is not None or req.method == "CONNECT":
            if self._declined is req:
                self._declined = None  # declined while its body arrived: plain HTTP
            elif self._switch_req is not req:
                self._switch(req, buf, pos, end)
        if self.on_message_complete is not None:
            self._in_cb = True
            try:
                self.on_message_complete(req)
            finally:
                self._in_cb = False
        if self._state == _UPGRADED and self._switch_req is req:
            return _UPGRADED
        if not req.keep_alive:
            return _CLOSED
        return _HEAD

    def _body_piece(self, buf, s: int, e: int) -> None:
        if e <= s:
            return
        chunk = buf[s:e]
        if self.on_body is not None:
            if chunk.__class__ is not bytes:
                chunk = bytes(chunk)
            self.on_body(self._req, chunk)  # type: ignore[arg-type]
        else:
            self._sink.write(chunk)  # type: ignore[union-attr]

    # -- heads ----------------------------------------------------------------

    def _head_slow(self, buf, pos: int, end: int, n: int, bad: int):
        """Leading CRLFs, partial heads and errors; returns (lines, n, pos) or (None, 0, pos)."""
        if self._resume is None:
            # RFC 9112 2.2: ignore empty lines before a request line.
            skipped = False
            while pos < end and buf[pos] == 13:
                if pos + 1 >= end:
                    return None, 0, pos
                if buf[pos + 1] != 10:
                    raise _err(400, "bare CR before request line")
                pos += 2
                skipped = True
            if pos >= end:
                return None, 0, pos
            if skipped:
                n = -1
        r = self._block(buf, pos, end, True, self.max_header_size, "request head", n, bad)
        if r is None:
            return None, 0, pos
        return r[0], r[1], pos

    def _block(self, buf, pos: int, end: int, head: bool, max_block: int, what: str,
               n: int = -1, bad: int = -1):
        lines, total, self._resume = scan_block(
            buf, pos, end, self._out, self._resume,
            self.max_request_line if head else -1, max_block, self.max_headers,
            what, 431, n, bad, _check_request_line if head else None)
        return None if lines is None else (lines, total)

    def _build(self, buf, pos: int, lines, n: int, r: int = 0) -> Request:
        """Turn a complete head (CR offsets in lines[:n]) into a Request; validate it.

        The hot path of the parser: every operation here runs once per request
        or once per field line, so it is written for CPython's bytecode costs
        (locals, C-level bytes methods, no per-line calls in the common case).
        """
        c0 = lines[0]
        # r >= HEAD_SIG is "r has HEAD_SIG" here: r < 2**30 in every call (see feed)
        rl = _RL_FAST[self._sc.cols[n - 1]] if r >= _HEAD_SIG else None
        if rl is not None:  # the scan checked the request line (issue 13)
            method, ts, v11, noquery = rl
            ts += pos
            te = c0 - 9
        else:
            noquery = False
            first = _FIRST[buf[pos]]
            if first is not None and buf.startswith(first[0], pos):
                method = first[1]
                ts = pos + first[2]
            else:
                method, ts = _method_slow(buf, pos, c0)
            te = c0 - 9
            if te > ts and buf.startswith(b" HTTP/1.1", te):
                v11 = True
            elif te > ts and buf.startswith(b" HTTP/1.0", te):
                v11 = False
            else:
                version, te = _check_version(buf, ts, c0)
                v11 = version == "1.1"
            if buf[ts] != 47 or buf[ts:te].translate(None, _TARGET_CHARS) or method == "CONNECT":
                _check_target(buf, ts, te, method)
        req = _blank(Request)
        req.method = method
        req._buf = buf
        req._ts = ts
        req._te = te
        if noquery:
            req._q = te
        h0 = c0 + 2
        hend = lines[n - 1]
        memo = self._memo
        if _memcmp_at is None:  # CPython (or pure): slicing and == are memcpy and memcmp
            block = buf[h0:hend]
            same = memo is not None and memo[0] == block
        else:  # PyPy, whose bytes == compares a byte at a time: memcmp through cffi
            block = None
            same = memo is not None and len(memo[0]) == hend - h0 and _memcmp_at(buf, h0, memo[0], hend - h0)
        if v11 and same and method != "CONNECT" and memo is not None:  # (memo: for mypy, same implies it)
            # Same header section as the previous request on this connection
            # (the usual case for keep-alive clients): it was validated then,
            # and its Headers and framing are pure functions of these bytes.
            hdrs = memo[2]
            if hdrs is None:
                hdrs = _memo_headers(memo)
                self._memo = (memo[0], memo[1], hdrs, None, None, 0, None)
            req.headers = hdrs
            framing = memo[1]
            if framing is not None:
                (req.content_length, req.chunked, req.keep_alive, req.expect_continue,
                 req.upgrade, req._conn_close, req._special) = framing
            else:
                # Stored, not left to the class defaults: CPython 3.11 specialises
                # reads of instance attributes only, and the server reads these three
                # on every request (issue 13).
                req._special = False
                req.keep_alive = True
                req.version = "1.1"
            return req
        if block is None:
            block = buf[h0:hend]  # (a copy: the memo must not pin the whole read)
        nhost = 0
        hc = he = 0
        specials = None
        sig = None
        f = r >> 28
        if f == 3:  # HEAD_SAME: the same field names as the last head validated here
            ent = self._sigent
        elif f == 1:  # HEAD_SIG
            sc = self._sc
            sig = bytes(sc.mem[: sc.cols[0]])
            ent = _SIGS.get(sig)
            if ent is not None:
                self._lastsig = ent[2]  # the dict's key: nothing more held per connection
                self._sigent = ent
        else:
            ent = None
        if ent is not None:
            # A sequence of field names seen (and validated) before: the names
            # list is shared, and only the framing fields are looked at --
            # no per-line Python work (issue 13).
            names, layout, _, index = ent
            if layout:
                colons = self._sc.cols
                for i, code in layout:
                    c = colons[i]
                    e = lines[i]
                    if code == 1:
                        nhost += 1
                        hc = c
                        he = e
                    elif code == 4 and v11 and e - c == 12 and buf[c + 1 : e] == b" keep-alive":
                        pass  # the default in HTTP/1.1; only HTTP/1.0 needs to see it
                    elif specials is None:
                        specials = [code, c, e]
                    else:
                        specials += (code, c, e)
        else:
            names = []
            ends = [c0]  # Headers' _lines: the request line's CR, then each field line's
            lay: List[tuple] = []
            find = buf.find
            names_get = _NAMES.get
            special_get = _SPECIAL.get
            add_name = names.append
            add_end = ends.append
            s = h0
            for i in range(1, n - 1):
                e = lines[i]
                c = find(b":", s, e)
                k = names_get(buf[s:c])
                if k is None:
                    k = _new_name(buf, s, c)
                add_name(k)
                add_end(e)
                code = special_get(k)
                if code is not None:
                    lay.append((i, code))
                    if code == 1:
                        nhost += 1
                        hc = c
                        he = e
                    elif code == 4 and v11 and buf[c + 1 : e] == b" keep-alive":
                        pass  # the default in HTTP/1.1; only HTTP/1.0 needs to see it
                    elif specials is None:
                        specials = [code, c, e]
                    else:
                        specials += (code, c, e)
                s = e + 2
            if sig is not None:
                # every name validated: later heads with these names skip the loop
                index = name_index(names)
                ent = (names, tuple(lay), sig, index)
                if len(_SIGS) < _SIGS_MAX:
                    _SIGS[sig] = ent
                self._lastsig = sig
                self._sigent = ent
            else:
                index = None  # _ScanHeaders
            lines = ends
        if v11 and specials is None and nhost == 1:
            hv = buf[hc + 1 : he]
            if hv in _HOSTS_OK:  # the common case: nothing more to decide
                hdrs = _new(Headers if index is not None else _ScanHeaders)
                hdrs._buf = buf
                hdrs._lines = lines
                hdrs._names = names
                hdrs._index = index
                req.headers = hdrs
                if method != "CONNECT":
                    self._memo = (block, None, None, names, lines, h0, index)
                    req._special = False  # (as above)
                    req.keep_alive = True
                    req.version = "1.1"
                else:
                    req._special = True
                return req
        if nhost != 1:
            if nhost > 1:
                raise _err(400, "more than one Host header")
            if v11:
                raise _err(400, "HTTP/1.1 request without Host")
        else:
            hv = buf[hc + 1 : he]
            if hv not in _HOSTS_OK:
                if _HOST.fullmatch(hv.strip(b" \t")) is None:
                    raise _err(400, "invalid Host header")
                if len(_HOSTS_OK) < _HOSTS_MAX:
                    _HOSTS_OK[bytes(hv)] = True
        framing = None
        if specials is not None or not v11:
            framing = _framing(buf, specials or (), v11, method, self.max_body)
            (req.content_length, req.chunked, req.keep_alive, req.expect_continue,
             req.upgrade, req._conn_close, req._special) = framing
            if not v11:
                req.version = "1.0"
        hdrs = _new(Headers if index is not None else _ScanHeaders)
        hdrs._buf = buf
        hdrs._lines = lines
        hdrs._names = names
        hdrs._index = index
        req.headers = hdrs
        if method == "CONNECT":
            req._special = True
        elif v11:
            self._memo = (block, framing, None, names, lines, h0, index)
        return req

    # -- chunked --------------------------------------------------------------

    def _chunk_size(self, buf, pos: int, end: int):
        size, pos, self._resume = parse_chunk_size(buf, pos, end, self._out1, self._resume,
                                                   self.max_chunk_line)
        if size < 0:
            return pos, _CHUNK_SIZE
        if size == 0:
            return pos, _TRAILERS
        total = self._total + size
        if total > self.max_body:
            raise _err(413, "chunked body exceeds %d bytes" % self.max_body)
        self._total = total
        self._remaining = size
        return pos, _CHUNK_DATA
