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

Limits and why
--------------
Limits are checked before any buffer grows past them, and by byte position, so
a limit trips at the same byte however the input is split:
414 request line > ``max_request_line``; 431 header section (field lines with
their CRLFs) > ``max_header_size`` or more than ``max_headers`` fields; 413
Content-Length or running chunked total > ``max_body``; 505 other HTTP
versions; 501 transfer codings other than chunked; 400 for the rest.

How it stays fast and linear
----------------------------
The head is found by one call of the (SSE2) ``scan_lines`` scanner, which returns
the offset of every CRLF and the first forbidden byte; the parser then touches
each line once (``find(b":")``, a dict lookup in a cache of validated names).  A
head that arrives in pieces is scanned incrementally: the scan resumes where it
stopped, so dripping input costs O(n), never O(n^2).
"""
import re
from typing import Callable, List, Optional

from powpow._ffi import new_line_offsets, scan_lines
from powpow.errors import ParseError

from ._body import SpooledBody
from ._message import Headers, Request

__all__ = [
    "RequestParser", "ParseError", "Request", "Headers",
    "MAX_REQUEST_LINE", "MAX_HEADER_SIZE", "MAX_HEADERS", "MAX_BODY",
    "SPOOL_THRESHOLD", "MAX_CHUNK_LINE",
]

# Defaults, configurable per parser.  Precedents: Apache LimitRequestLine and
# LimitRequestFieldSize are 8190, LimitRequestFields 100; nginx
# large_client_header_buffers is 4 x 8k; llhttp's header limit was 8 KiB until
# Node 13 (16 KiB since), h11 uses 16 KiB for a whole incomplete event.
MAX_REQUEST_LINE = 8192
MAX_HEADER_SIZE = 8192
MAX_HEADERS = 100
# nginx client_max_body_size defaults to 1m; bodies above client_body_buffer_size
# (8k/16k there; larger here since memory is cheaper than a file per request) go
# to a temporary file.
MAX_BODY = 1 << 20
SPOOL_THRESHOLD = 64 << 10
# chunk-size line including extensions (which nobody uses legitimately);
# llhttp and h11 bound these too, a bound that stops "extension" slowloris.
MAX_CHUNK_LINE = 4096
_MAX_HEX_DIGITS = 16  # a 64-bit size; more digits are "absurdly long" (also leading zeros)
_MAX_CL_DIGITS = 18   # below 2**63 without the cost of a big-int parse

# parser states
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS = 0, 1, 2, 3, 4, 5
_UPGRADED, _CLOSED, _FAILED = 6, 7, 8

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_TARGET = re.compile(rb"[^\x21-\x7e]|#")
# bytes allowed in a request-target: VCHAR except "#" (checked with one translate)
_TARGET_CHARS = bytes(range(0x21, 0x7F)).replace(b"#", b"")
_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*://[^/?]")
_HOSTPORT = rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)"
_AUTHORITY = re.compile(_HOSTPORT + rb":[0-9]+")
_HOST = re.compile(rb"(?:" + _HOSTPORT + rb"(?::[0-9]*)?)?")  # empty is allowed (RFC 9112 3.2)
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_CHUNK_EXT = re.compile(
    rb"(?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
    rb"(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|\"(?:[^\"\\]|\\.)*\"))?)*"
)
_HEXDIGITS = b"0123456789abcdefABCDEF"

_METHODS = {m.encode(): m for m in (
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")}
# First-byte dispatch: the most common method for each first byte is checked
# with one startswith; anything else goes through _method_slow.
_FIRST = [None] * 256
for _m in ("GET", "POST", "HEAD", "DELETE", "OPTIONS", "CONNECT", "TRACE"):
    _FIRST[ord(_m[0])] = (_m.encode() + b" ", _m, len(_m) + 1)
del _m

# Validated header names (raw bytes -> lowercased str).  A hit proves the name
# is a token; shared by all parsers, bounded so hostile clients cannot grow it.
_NAMES: dict = {}
_NAMES_MAX = 4096
_HOSTS_OK: dict = {}
_HOSTS_MAX = 1024
# Fields that decide framing or connection handling, looked up per field line.
_SPECIAL = {"host": 1, "content-length": 2, "transfer-encoding": 3,
            "connection": 4, "expect": 5, "upgrade": 6}


_new = object.__new__


def _err(status: int, message: str) -> ParseError:
    return ParseError(status, message)


def _new_name(buf, s: int, c: int) -> str:
    """Validate a field name not yet in the cache; return it lowercased."""
    if c < 0:
        raise _err(400, "header line without a colon")
    name = buf[s:c]
    if not name:
        raise _err(400, "empty header name")
    if _TOKEN.fullmatch(name) is None:
        if name[:1] in (b" ", b"\t"):
            raise _err(400, "obs-fold or whitespace before a header line")
        if name[-1:] in (b" ", b"\t"):
            raise _err(400, "whitespace between header name and colon")
        raise _err(400, "invalid character in header name")
    k = name.decode("ascii").lower()
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[bytes(name)] = k
    return k


def _method_slow(buf, pos: int, c0: int):
    sp = buf.find(b" ", pos, c0)
    if sp < 0:
        raise _err(400, "malformed request line")
    mb = bytes(buf[pos:sp])
    m = _METHODS.get(mb)
    if m is None:
        if _TOKEN.fullmatch(mb) is None:
            raise _err(400, "invalid method")
        m = mb.decode("ascii")
    return m, sp + 1


def _check_version(buf, ts: int, c0: int):
    """Slow path of the version check; returns (version, end of target)."""
    sp = buf.rfind(b" ", ts, c0)
    if sp < 0:
        raise _err(400, "malformed request line")
    v = buf[sp + 1 : c0]
    if v == b"HTTP/1.1":
        return "1.1", sp
    if v == b"HTTP/1.0":
        return "1.0", sp
    # target before version: a garbled line is 400, a clean one with another version 505
    if sp <= ts or _BAD_TARGET.search(buf, ts, sp) is not None:
        raise _err(400, "malformed request line")
    if _VERSION.fullmatch(v) is not None:
        raise _err(505, "HTTP version not supported: %s" % v.decode("ascii"))
    raise _err(400, "malformed HTTP version")


def _check_target(buf, ts: int, te: int, method: str) -> None:
    if te <= ts:
        raise _err(400, "empty request target")
    if _BAD_TARGET.search(buf, ts, te) is not None:
        raise _err(400, "invalid character in request target")
    if method == "CONNECT":
        if _AUTHORITY.fullmatch(buf, ts, te) is None:
            raise _err(400, "CONNECT needs an authority-form target (host:port)")
        return
    c = buf[ts]
    if c == 47:  # origin-form
        return
    if c == 42 and te == ts + 1:  # '*'
        if method != "OPTIONS":
            raise _err(400, "asterisk-form target is only valid for OPTIONS")
        return
    if _ABSOLUTE.match(buf, ts, te) is None:
        raise _err(400, "invalid request target")


def _bad_byte(buf, bad: int, what: str) -> ParseError:
    b = buf[bad]
    if b == 13:
        return _err(400, "bare CR in " + what)
    if b == 10:
        return _err(400, "bare LF in " + what)
    return _err(400, "control character 0x%02x in %s" % (b, what))


def _fields(buf, pos: int, lines, last: int) -> Headers:
    """Validate field lines lines[:last] of a trailer section; return them as Headers."""
    names: List[str] = []
    ends: List[int] = []
    s = pos
    for i in range(last):
        e = lines[i]
        c = buf.find(b":", s, e)
        k = _NAMES.get(buf[s:c]) if c >= 0 else None
        if k is None:
            k = _new_name(buf, s, c)
        names.append(k)
        ends.append(e)
        s = e + 2
    return Headers(buf, pos, names, ends)


def _list_tokens(value: bytes) -> List[bytes]:
    """Elements of a comma-separated list field, lowercased; empty elements ignored."""
    return [t for t in (x.strip(b" \t") for x in value.lower().split(b",")) if t]


def scan_block(buf, pos: int, end: int, out, resume, max_first: int, max_block: int,
               max_fields: int, what: str, status: int, n: int = -1, bad: int = -1):
    """Incremental scan of a CRLF line block that ends with an empty line.

    ``max_first >= 0``: the first line is a request line with its own limit (414)
    and does not count as a field.  ``resume`` is the state returned by the
    previous call for the same block (offsets relative to ``pos``) or None; ``n``
    and ``bad`` may pass in a scan of ``buf[pos:...]`` already done by the caller.
    Errors are decided by byte position, so for any prefix of the input the
    verdict is either "need more" or the verdict for the whole input.

    Returns ``(lines, count, resume)``: absolute CR offsets of every line (the
    last one the empty line) or ``(None, 0, new_resume)`` to wait for more.
    """
    if resume is None:
        prev: List[int] = []
        frm = pos
    else:
        prev = [pos + r for r in resume[0]]
        frm = pos + resume[1]
    head = max_first >= 0
    lim = pos + (max_first + max_block + 4 if head else max_block + 2)
    scan_end = end if end < lim else lim
    if n < 0:
        if frm < scan_end:
            n, bad = scan_lines(buf, frm, scan_end, out, prev[-1] + 2 if prev else pos)
        else:
            n, bad = 0, -1
    lines = prev + [out[i] for i in range(n)]
    total = len(lines)
    if head:
        t1 = pos + max_first + 1
        if total == 0 or lines[0] > pos + max_first:
            if bad >= 0 and bad <= t1:
                raise _bad_byte(buf, bad, "request line")
            if total or scan_end > t1:
                raise _err(414, "request line longer than %d bytes" % max_first)
            return None, 0, _resume_state(buf, pos, lines, scan_end)
        h0 = lines[0] + 2
        nfields = total - 1
    else:
        h0 = pos
        nfields = total
    t2 = h0 + max_block + 1
    if total >= 1 and lines[-1] == (lines[-2] + 2 if total >= 2 else pos):
        if lines[-1] - h0 > max_block:
            raise _err(status, "%s larger than %d bytes" % (what, max_block))
        if nfields - 1 > max_fields:
            raise _err(status, "more than %d fields in %s" % (max_fields, what))
        return lines, total, None
    if nfields > max_fields:
        raise _err(status, "more than %d fields in %s" % (max_fields, what))
    if bad >= 0:
        if bad <= t2:
            raise _bad_byte(buf, bad, what)
        raise _err(status, "%s larger than %d bytes" % (what, max_block))
    if scan_end > t2:
        raise _err(status, "%s larger than %d bytes" % (what, max_block))
    return None, 0, _resume_state(buf, pos, lines, scan_end)


def _resume_state(buf, pos: int, lines: List[int], scan_end: int):
    # resume at a pending CR (its LF may come next), else where the scan ended
    frm = scan_end - 1 if scan_end > pos and buf[scan_end - 1] == 13 else scan_end
    return [x - pos for x in lines], frm - pos


def _memo_headers(memo) -> Headers:
    """Headers over the memo's own copy of the header block.

    The memo must not point into the read buffer the block came from: on an
    idle keep-alive connection that would pin the whole last read (up to 64
    KiB) for nothing.  ``block`` is a copy already (a slice of bytes), so the
    first repeat rebases the offsets onto it, once.
    """
    h0 = memo[5]
    hdrs = _new(Headers)
    hdrs._buf = memo[0]
    hdrs._h0 = 0
    hdrs._names = memo[3]
    hdrs._ends = [e - h0 for e in memo[4]]
    hdrs._memo = {}
    memo[2] = hdrs
    memo[3] = memo[4] = None
    return hdrs


class RequestParser:
    """Incremental HTTP/1.x request parser (see the module docstring)."""

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
        self._out = new_line_offsets(max_headers + 2)
        self._out1 = new_line_offsets(1)
        self._buf = b""
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
        # [header block (a copy), framing, Headers over the block or None,
        #  names, CR offsets, block start] of the last request: see _memo_headers
        self._memo: Optional[list] = None
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

    def feed(self, data=b"") -> List[Request]:
        """Parse ``data`` (bytes-like); return the requests it completed, in order."""
        if self._idle and data.__class__ is bytes and data:
            # Fast path: nothing pending and a whole head at the start of data.
            out = self._out
            end = len(data)
            n, bad = scan_lines(data, 0, end if end < self._head_cap else self._head_cap, out)
            if (bad < 0 and n >= 2 and out[n - 1] == out[n - 2] + 2 and data[0] != 13
                    and out[0] <= self.max_request_line
                    and out[n - 1] - out[0] - 2 <= self.max_header_size):
                done: List[Request] = []
                try:
                    req = self._build(data, 0, out, n)
                    pos = out[n - 1] + 2
                    if pos == end and not req._special and self._no_callbacks:
                        return [req]
                    pos, state = self._start_message(req, data, pos, end, done)
                    return self._run(data, pos, state, done)
                except ParseError as exc:
                    self._fail(exc)
                    if done:
                        return done  # the error is raised by the next feed()
                    raise
        return self._feed(data)

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
        done = []
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
        max_rl = self.max_request_line
        max_hs = self.max_header_size
        cap = self.max_pipeline
        held = False
        while pos < end and state <= _TRAILERS:
            if state == _HEAD:
                if cap and len(done) >= cap:
                    held = True
                    break
                if self._resume is None and buf[pos] != 13:
                    lim = pos + self._head_cap
                    n, bad = scan_lines(buf, pos, end if end < lim else lim, out)
                    if (bad < 0 and n >= 2 and out[n - 1] == out[n - 2] + 2
                            and out[0] - pos <= max_rl and out[n - 1] - out[0] - 2 <= max_hs):
                        lines = out
                    else:
                        lines, n, pos = self._head_slow(buf, pos, end, n, bad)
                        if lines is None:
                            break
                else:
                    lines, n, pos = self._head_slow(buf, pos, end, -1, -1)
                    if lines is None:
                        break
                if buf.__class__ is bytearray:
                    buf = bytes(buf)  # freeze: the request will point into it
                req = self._build(buf, pos, lines, n)
                pos, state = self._start_message(req, buf, lines[n - 1] + 2, end, done)
            elif state == _BODY:
                rem = self._remaining
                e = pos + rem if end - pos >= rem else end
                self._body_piece(buf, pos, e)
                self._remaining = rem - (e - pos)
                pos = e
                if self._remaining == 0:
                    state = self._complete(self._req, done, buf, pos, end)
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
                got = self._crlf
                while got < 2 and pos < end:
                    if buf[pos] != (13 if got == 0 else 10):
                        raise _err(400, "missing CRLF after chunk data")
                    pos += 1
                    got += 1
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
                req = self._req
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
        if req._special and (req.upgrade is not None or req.method == "CONNECT") \
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
            self.on_body(self._req, chunk)
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
            what, 431, n, bad)
        return None if lines is None else (lines, total)

    def _build(self, buf, pos: int, lines, n: int) -> Request:
        """Turn a complete head (CR offsets in lines[:n]) into a Request; validate it.

        The hot path of the parser: every operation here runs once per request
        or once per field line, so it is written for CPython's bytecode costs
        (locals, C-level bytes methods, no per-line calls in the common case).
        """
        c0 = lines[0]
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
        req = _new(Request)
        req.method = method
        req._buf = buf
        req._ts = ts
        req._te = te
        h0 = c0 + 2
        block = buf[h0 : lines[n - 1]]
        memo = self._memo
        if v11 and memo is not None and memo[0] == block and method != "CONNECT":
            # Same header section as the previous request on this connection
            # (the usual case for keep-alive clients): it was validated then,
            # and its Headers and framing are pure functions of these bytes.
            hdrs = memo[2]
            if hdrs is None:
                hdrs = _memo_headers(memo)
            req.headers = hdrs
            framing = memo[1]
            if framing is not None:
                (req.content_length, req.chunked, req.keep_alive, req.expect_continue,
                 req.upgrade, req._conn_close, req._special) = framing
            return req
        names: List[str] = []
        ends: List[int] = []
        find = buf.find
        names_get = _NAMES.get
        special_get = _SPECIAL.get
        add_name = names.append
        add_end = ends.append
        nhost = 0
        hc = he = 0
        specials = None
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
        if v11 and specials is None and nhost == 1:
            hv = buf[hc + 1 : he]
            if hv in _HOSTS_OK:  # the common case: nothing more to decide
                hdrs = _new(Headers)
                hdrs._buf = buf
                hdrs._h0 = h0
                hdrs._names = names
                hdrs._ends = ends
                hdrs._memo = {}
                req.headers = hdrs
                if method != "CONNECT":
                    self._memo = [block, None, None, names, ends, h0]
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
            framing = self._framing(buf, specials or (), v11, method)
            (req.content_length, req.chunked, req.keep_alive, req.expect_continue,
             req.upgrade, req._conn_close, req._special) = framing
            if not v11:
                req.version = "1.0"
        hdrs = _new(Headers)
        hdrs._buf = buf
        hdrs._h0 = h0
        hdrs._names = names
        hdrs._ends = ends
        hdrs._memo = {}
        req.headers = hdrs
        if method == "CONNECT":
            req._special = True
        elif v11:
            self._memo = [block, framing, None, names, ends, h0]
        return req

    def _framing(self, buf, specials, v11: bool, method: str):
        """Content-Length, Transfer-Encoding, Connection, Expect, Upgrade.

        Returns (content_length, chunked, keep_alive, expect_continue, upgrade,
        conn_close, special) -- a pure function of the header bytes, version and
        method, so the parser can reuse it for an identical header section.
        """
        cl = None
        codings: Optional[List[bytes]] = None
        conn: List[bytes] = []
        upgrade = None
        expect = False
        for j in range(0, len(specials), 3):
            code = specials[j]
            v = buf[specials[j + 1] + 1 : specials[j + 2]].strip(b" \t")
            if code == 2:  # Content-Length
                if not v.isdigit():
                    raise _err(400, "Content-Length is not a plain decimal number")
                digits = v.lstrip(b"0") or b"0"
                if len(digits) > _MAX_CL_DIGITS:
                    raise _err(400, "Content-Length overflows")
                value = int(digits)
                if cl is not None and cl != value:
                    raise _err(400, "conflicting Content-Length headers")
                cl = value
            elif code == 3:  # Transfer-Encoding
                if codings is None:
                    codings = []
                elements = [x.strip(b" \t") for x in v.lower().split(b",")]
                if b"" in elements:
                    # "chunked," / ", chunked" / an empty line beside "chunked":
                    # nginx, Apache, h11 and llhttp all refuse these.
                    raise _err(400, "empty element in Transfer-Encoding")
                codings += elements
            elif code == 4:  # Connection
                conn += _list_tokens(v)
            elif code == 5:  # Expect
                if v11 and v.lower() == b"100-continue":
                    expect = True
            else:  # Upgrade
                upgrade = v
        chunked = False
        if codings is not None:
            if cl is not None:
                raise _err(400, "both Transfer-Encoding and Content-Length")
            if not v11:
                raise _err(400, "Transfer-Encoding in an HTTP/1.0 request")
            if not codings:
                raise _err(400, "empty Transfer-Encoding")
            for t in codings:
                if _TOKEN.fullmatch(t.split(b";", 1)[0].rstrip(b" \t")) is None:
                    raise _err(400, "invalid transfer coding")
            if codings.count(b"chunked") > 1:
                raise _err(400, "chunked applied twice")
            if codings[-1] != b"chunked":
                raise _err(400, "last transfer coding is not chunked")
            if len(codings) > 1:
                raise _err(501, "transfer coding not implemented: %s"
                           % codings[0].decode("latin-1"))
            chunked = True
        elif cl is not None and cl > self.max_body:
            raise _err(413, "Content-Length %d exceeds %d" % (cl, self.max_body))
        if method == "CONNECT" and (cl or chunked):
            raise _err(400, "CONNECT request with a body")
        keep_alive = v11
        conn_close = False
        proto = None
        if conn:
            if b"close" in conn:
                keep_alive = False
                conn_close = True
            elif not v11 and b"keep-alive" in conn:
                keep_alive = True
            if upgrade is not None and v11 and b"upgrade" in conn:
                if not upgrade:
                    raise _err(400, "empty Upgrade header")
                proto = upgrade.decode("latin-1")
        special = bool(cl) or chunked or not keep_alive or proto is not None or method == "CONNECT"
        return cl, chunked, keep_alive, expect, proto, conn_close, special

    # -- chunked --------------------------------------------------------------

    def _chunk_size(self, buf, pos: int, end: int):
        out1 = self._out1
        resume = self._resume
        frm = pos if resume is None else pos + resume[1]
        lim = pos + self.max_chunk_line + 2
        scan_end = end if end < lim else lim
        n, bad = scan_lines(buf, frm, scan_end, out1, pos) if frm < scan_end else (0, -1)
        if n == 0:
            if bad >= 0:
                raise _bad_byte(buf, bad, "chunk-size line")
            if scan_end >= lim:
                raise _err(400, "chunk-size line longer than %d bytes" % self.max_chunk_line)
            self._resume = _resume_state(buf, pos, [], scan_end)
            return pos, _CHUNK_SIZE
        self._resume = None
        cr = out1[0]
        semi = buf.find(b";", pos, cr)
        se = cr if semi < 0 else semi
        size = buf[pos:se].rstrip(b" \t") if semi >= 0 else buf[pos:se]
        if not size or size.translate(None, _HEXDIGITS):
            raise _err(400, "chunk size is not a hex number")
        if len(size) > _MAX_HEX_DIGITS:
            raise _err(400, "chunk size too long")
        if semi >= 0 and _CHUNK_EXT.fullmatch(buf, se, cr) is None:
            raise _err(400, "malformed chunk extension")
        value = int(size, 16)
        pos = cr + 2
        if value == 0:
            return pos, _TRAILERS
        total = self._total + value
        if total > self.max_body:
            raise _err(413, "chunked body exceeds %d bytes" % self.max_body)
        self._total = total
        self._remaining = value
        return pos, _CHUNK_DATA
