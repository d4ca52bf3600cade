"""Responses: the ``Response`` a handler answers with, and how heads are built.

``Response`` collects its output as segments (bytes, and file ranges that own
an open descriptor); its session (``powpow.http._session``) moves them to the
transport in request order.  What matters here is the cost per response, so
status lines are prebuilt bytes, the Date header is rebuilt at most once a
second (RFC 9110 §6.6.1 asks for second resolution), and header names/values
are validated with one ``str.isprintable`` call in the common case -- a CR,
LF or NUL set by a handler raises ``HeaderValueError`` and is never written
(response splitting).

One framing on the wire (RFC 9112 §6): powpow writes Content-Length /
Transfer-Encoding / Connection itself.  A handler's Content-Length is honoured
and enforced (a different body length raises ``HeaderValueError``, writing past
it raises ``ValueError``, ending short closes the connection); its
Transfer-Encoding may only be ``chunked`` and its Connection only ``close``,
``keep-alive`` (or ``upgrade`` on a 101).  HTTP/1.0 clients never get chunked:
a streamed body of unknown length is delimited by the close.  A 2xx answer to
CONNECT has no framing at all (RFC 9110 §9.3.6: it makes the connection a
tunnel): what ``send``/``write`` give it are the first tunnel bytes, and a
handler's Content-Length / Transfer-Encoding on it raises ``HeaderValueError``.
"""
import http
import os
import time
from typing import Callable, Iterable, List, Optional, Tuple

from .. import _lazy
from .._log import get_logger
from ..errors import PowpowError
from ..net.errors import WriteQueueFull
from ._dates import http_date

log = get_logger("powpow.http")

__all__ = ["Response", "HeaderValueError", "status_line", "reason", "DateCache", "encode_headers",
           "NO_BODY_STATUS"]


class HeaderValueError(PowpowError, ValueError):
    """A handler tried to set a header name or value that would split the response."""


_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_STATUS_LINES = {code: ("HTTP/1.1 %d %s\r\n" % (code, phrase)).encode("latin-1")
                 for code, phrase in _REASONS.items()}

# RFC 9110 §6.4.1 and §15: no content for 1xx, 204 and 304; nor for 205
# (§15.3.6), which, unlike them, a client frames as usual: it says Content-Length: 0.
NO_BODY_STATUS = frozenset([100, 101, 102, 103, 204, 205, 304])

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError("HTTP status must be a 3-digit number, got %r" % (status,))
        line = ("HTTP/1.1 %d %s\r\n" % (status, reason(status))).encode("latin-1")
    return line


def check_final_status(status) -> None:
    """Raise ValueError unless ``status`` can answer a request: three digits (RFC
    9110 §15), 200 to 999.  A 1xx is interim -- the client reads on for the final
    answer, so sent as one it hangs the connection: 103 goes through
    ``send_early_hints()``, 101 through ``upgrade()``."""
    if status.__class__ is not int and (isinstance(status, bool) or not hasattr(type(status), "__index__")):
        # (an IntEnum / HTTPStatus or a numpy integer is fine; True, "200" or 200.5 are not)
        raise ValueError("HTTP status must be an int from 200 to 999, got %r" % (status,))
    if not 200 <= status <= 999:
        if 100 <= status < 200:
            raise ValueError("status %d is interim (1xx), not an answer: use send_early_hints() for 103, "
                             "upgrade() for 101; a final status is 200 to 999" % status)
        raise ValueError("HTTP status must be a 3-digit number from 200 to 999, got %r" % (status,))


def _cacheable(headers) -> bool:
    """May ``headers`` key the header-block caches?  Only when every name and value
    is exactly ``str``: ``True == 1`` and ``2 == 2.0`` are equal keys that are
    written differently ("True" / "1"), so a cached block would answer for the other.
    Called only when a list is not cached yet: a hit costs nothing more."""
    for pair in headers:
        if pair.__class__ is not tuple or len(pair) != 2:
            return False
        name, value = pair
        if name.__class__ is not str or value.__class__ is not str:
            return False
    return True


def check_header(name: str, value: str) -> None:
    """Raise HeaderValueError unless ``name`` is a token and ``value`` has no CR/LF/NUL/controls."""
    if not name or not set(name) <= _TOKEN_CHARS:
        raise HeaderValueError("invalid header name %r: must be a non-empty token" % (name,))
    for ch in value:
        if (ch < " " and ch != "\t") or ch == "\x7f":
            raise HeaderValueError("header %s: value contains control character %r (CR/LF/NUL are "
                                   "never written: response splitting)" % (name, ch))


_checked_names: dict = {}


def encode_headers(headers: Iterable[Tuple[str, str]], out: List[str]) -> None:
    """Append ``"Name: value\\r\\n"`` for each pair to ``out``, validating as it goes."""
    for name, value in headers:
        if name.__class__ is not str:
            name = str(name)
        if value.__class__ is not str:
            value = str(value)
        # isprintable() is False for CR, LF, NUL and every other control
        # character (and HTAB, which is allowed: the slow path tells them apart).
        if name not in _checked_names or not value.isprintable():
            check_header(name, value)
            if len(_checked_names) < 1024:
                _checked_names[name] = True
        out.append("%s: %s\r\n" % (name, value))


def _check_stored_header(name: str, value: str) -> None:
    """``Response.set_header`` / ``add_header``: what ``_encode_block`` would reject
    later, raised now (same messages)."""
    check_header(name, value)
    if len(_checked_names) < 1024:
        _checked_names[name] = True
    try:
        value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise HeaderValueError("header value not encodable as ISO-8859-1: %s" % exc) from None


class DateCache:
    """``Date: <IMF-fixdate>\\r\\n`` as bytes, refreshed when the second changes."""

    __slots__ = ("second", "header")

    def __init__(self) -> None:
        self.second = -1
        self.header = b""
        self.refresh()

    def refresh(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.header = ("Date: %s\r\n" % http_date(now)).encode("ascii")
        return self.header


_STATUS_200 = status_line(200)
# tuple(headers) -> encoded block (bytes or _Framing); only lists of str pairs
# are stored (see _cacheable), so a hit needs no check per pair.
_header_blocks: dict = {}


_FRAMING_NAMES = frozenset(["content-length", "transfer-encoding", "connection"])
_FRAMING_LENS = frozenset(len(n) for n in _FRAMING_NAMES)  # add_header looks closer at these only
# Names that send a list down the general path (a ``_Framing`` block): the framing
# ones above, and Server / Date, single-valued fields (RFC 9110 §5.3, §6.6.1,
# §10.2.4) that powpow writes itself unless the handler gave its own.  Looked at
# only when a list is encoded (a cache miss): lists without them cost nothing more.
_SPECIAL_NAMES = _FRAMING_NAMES | frozenset(["server", "date"])


class _Framing:
    """A handler's header list that names framing headers (the rest encoded, those
    apart) or its own Server / Date (kept in ``block``; ``server`` / ``date`` say
    that powpow's line is left out)."""

    __slots__ = ("block", "length", "te", "conn", "server", "date")

    def __init__(self, block: bytes, length: Optional[int], te: Optional[str], conn: List[str],
                 server: bool = False, date: bool = False) -> None:
        self.block = block
        self.length = length
        self.te = te
        self.conn = conn
        self.server = server
        self.date = date


def _framing_field(lname: str, value):
    """A handler's Content-Length (-> int), Transfer-Encoding (-> "chunked") or
    Connection (-> its tokens), checked: anything powpow cannot frame raises
    ``HeaderValueError`` (at ``set_header``/``add_header``, and again when the head
    is built from a list given to ``send``)."""
    value = str(value).strip()
    if lname == "content-length":
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            raise HeaderValueError("Content-Length %r is not a decimal length" % (value,))
        return int(value)
    if lname == "transfer-encoding":
        if value.lower() != "chunked":
            raise HeaderValueError("Transfer-Encoding %r: powpow frames bodies itself; only "
                                   "'chunked' (the default for streamed bodies) is accepted" % (value,))
        return "chunked"
    tokens = []
    for tok in value.lower().split(","):
        tok = tok.strip()
        if tok not in ("close", "keep-alive", "upgrade"):
            raise HeaderValueError("Connection %r: only close, keep-alive and upgrade are "
                                   "accepted from a handler" % (value,))
        tokens.append(tok)
    return tokens


def _stored_framing_field(lname: str, value) -> None:
    """``set_header``/``add_header``: a framing field no answer of theirs could carry
    raises at the call.  ``Connection: upgrade`` belongs to a 101, which only
    ``res.upgrade()`` sends."""
    parsed = _framing_field(lname, value)
    if lname == "connection" and "upgrade" in parsed:
        raise HeaderValueError("Connection: upgrade is only for a 101 response (use res.upgrade())")


def _encode_block(headers):
    """The encoded header block (bytes), or a ``_Framing`` when the handler set
    Content-Length / Transfer-Encoding / Connection: powpow writes the framing
    itself, once (RFC 9112 §6), after validating the handler's values -- or its
    own Server / Date: written instead of powpow's, never beside (RFC 9110 §5.3)."""
    parts: List[str] = []
    encode_headers(headers, parts)  # validates: raises HeaderValueError
    framing = any(str(h[0]).lower() in _SPECIAL_NAMES for h in headers)
    if framing:
        rest = []
        length = None
        te = None
        conn: List[str] = []
        server = date = False
        for name, value in headers:
            lname = str(name).lower()
            if lname not in _FRAMING_NAMES:
                if lname == "server":
                    server = True
                elif lname == "date":
                    date = True
                rest.append((name, value))
                continue
            parsed = _framing_field(lname, value)
            if lname == "content-length":
                if length is not None and parsed != length:
                    raise HeaderValueError("two different Content-Length headers: %d and %d" % (length, parsed))
                length = parsed
            elif lname == "transfer-encoding":
                if te is not None:
                    raise HeaderValueError("Transfer-Encoding set twice: powpow frames bodies itself; only "
                                           "one 'chunked' (the default for streamed bodies) is accepted")
                te = "chunked"
            else:
                conn.extend(parsed)
        if length is not None and te is not None:
            raise HeaderValueError("both Content-Length and Transfer-Encoding set by the handler")
        parts = []
        encode_headers(rest, parts)
    try:
        block = "".join(parts).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise HeaderValueError("header value not encodable as ISO-8859-1: %s" % exc) from None
    if framing:
        return _Framing(block, length, te, conn, server, date)
    return block


_SERVER = b"Server: powpow\r\n"

# Fields a trailer section must not carry (RFC 9110 6.5.1: framing, routing, auth,
# and what controls the message): a proxy that merged them into the head could be
# made to read the next message wrongly.
_NOT_IN_TRAILERS = frozenset([
    "content-length", "transfer-encoding", "host", "connection", "keep-alive", "te", "trailer",
    "upgrade", "content-type", "content-encoding", "content-range", "expect", "authorization",
    "proxy-authorization", "set-cookie", "cookie", "cache-control", "expires", "pragma", "date",
    "location", "retry-after", "vary", "www-authenticate", "proxy-authenticate", "age", "warning",
    "max-forwards"])


def _latin1(parts: List[str]) -> bytes:
    try:
        return "".join(parts).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise HeaderValueError("header value not encodable as ISO-8859-1: %s" % exc) from None


def _trailer_block(trailers) -> bytes:
    """The encoded trailer fields, validated: no CR/LF/NUL, ISO-8859-1, and none of the
    fields a trailer may not carry (``HeaderValueError`` names it)."""
    pairs = list(trailers.items()) if hasattr(trailers, "items") else list(trailers)
    for name, _ in pairs:
        if str(name).lower() in _NOT_IN_TRAILERS:
            raise HeaderValueError("%s may not be sent as a trailer field (RFC 9110 6.5.1)" % (name,))
    parts: List[str] = []
    encode_headers(pairs, parts)
    return _latin1(parts)


def _as_bytes_like(body):
    """A body whose ``len`` is its length in bytes: str and bytes-likes of bytes as they are;
    a typed buffer (``array('i')``, a memoryview of one) as its bytes -- its ``len`` counts
    items, and a Content-Length or chunk size made from it desynchronised the stream."""
    cls = body.__class__
    if cls is bytes or cls is bytearray or cls is str:
        return body
    if cls is memoryview:
        return body if body.itemsize == 1 and body.ndim == 1 and body.c_contiguous else body.tobytes()
    try:
        view = memoryview(body)
    except TypeError:
        return body  # (not a buffer: whatever fails on it fails as before)
    return body if view.itemsize == 1 and view.ndim == 1 and view.c_contiguous else view.tobytes()

# The last plain head (status 200, HTTP/1.1 keep-alive, Content-Length, no
# framing headers from the handler) that ``Response.send`` built:
# (the handler's header list, a shallow copy of it, the Date line, the body
# length, the head).  A handler that answers with the same list object, the
# same content and body length within the same second reuses the head without
# building anything; one tuple, read and replaced whole (threads need no lock).
_last_head: tuple = (0, None, None, -1, b"")


def _plain_head(headers, date: bytes, length: int) -> Optional[bytes]:
    """The head ``Response._build_head`` would build for a 200 on a kept-alive
    HTTP/1.1 connection; None if ``headers`` name framing headers (then the
    general path applies them).  Remembered in ``_last_head`` when ``headers``
    is None or a list of str pairs (immutable: an equal copy stays equal; see
    ``_cacheable`` for why other values are never remembered)."""
    global _last_head
    if headers:
        key = tuple(headers)
        try:
            block = _header_blocks.get(key)
        except TypeError:  # unhashable pairs (lists): the general path
            return None
        if block is None:
            block = _encode_block(headers)
            if not _cacheable(headers):
                # (True, 1, 2.0 ...): encoded every time, remembered nowhere
                return _plain_uncached(block, date, length)
            if len(_header_blocks) < 512:
                _header_blocks[key] = block
        if block.__class__ is not bytes:
            return None  # Content-Length / Transfer-Encoding / Connection from the handler
        for pair in headers:
            if pair.__class__ is not tuple:
                return None
        snapshot: Optional[list] = list(headers)
    else:
        block = b""
        snapshot = None if headers is None else []  # a list of its own: the handler's may grow
    head = b"".join((_STATUS_200, date, _SERVER, block, b"Content-Length: %d\r\n\r\n" % length))
    _last_head = (headers, snapshot, date, length, head)
    return head


def _plain_uncached(block, date: bytes, length: int) -> Optional[bytes]:
    """``_plain_head`` for a list that is never remembered (see ``_cacheable``)."""
    if block.__class__ is not bytes:
        return None
    return b"".join((_STATUS_200, date, _SERVER, block, b"Content-Length: %d\r\n\r\n" % length))


_UP_ASKED = 1  # Response._upgrade: the request asked to switch (Upgrade/CONNECT)
_TUNNEL_FRAMING = ("a 2xx answer to CONNECT opens a tunnel: it has no Content-Length or "
                   "Transfer-Encoding (RFC 9110 §9.3.6); its body, if any, is the first tunnel bytes")


class _FileSeg:
    """A file range to send, owning its descriptor until handed to the transport."""

    __slots__ = ("fd", "offset", "count")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count

    def take(self) -> int:
        fd = self.fd
        self.fd = -1
        return fd

    def close(self) -> None:
        fd = self.fd
        if fd >= 0:
            self.fd = -1
            os.close(fd)


def close_segments(segments: list) -> None:
    """Segments dropped unsent: close the descriptors they own."""
    for seg in segments:
        if seg.__class__ is _FileSeg:
            seg.close()
    segments.clear()


class _Unparsed:
    """Stands for the request a ParseError answers (there is none to show)."""

    method = "-"
    target = "-"
    version = "1.1"
    keep_alive = False
    body_size = 0
    _special = True
    # Session.flush drops an answered request's link to its Response and keeps
    # the session instead (see Request.response); this object is shared by every
    # connection, so it must keep neither: both ignore what is stored.
    response = property(lambda self: None, lambda self, value: None)
    _session = property(lambda self: None, lambda self, value: None)
    headers: dict = {}

    def close(self) -> None:
        pass


_UNPARSED = _Unparsed()


class Response:
    """What a handler answers with.  See README "HTTP server" for the full API.

    Streaming: ``write(chunk)`` returns False while the client is behind
    (stop producing until ``on_drain`` runs) or gone; ``on_close`` runs if the
    client goes away before the response ended (writes are then dropped) --
    also, in streaming mode, when the request's body fails under the handler
    (the server answers the error in its place).
    """

    # Class-level defaults (no __slots__): a response lives for one request,
    # and creating it should cost only the stores that differ per request.
    status = 200
    ended = False
    _sent_head = False
    _chunked = False
    _length: Optional[int] = None
    _written = 0
    _upgrade = None
    _gone = False
    # write() behind an earlier answer still being made (see _queued_behind):
    # segments and bytes counted so far; on_drain owed once first in line.
    _held_n = 0
    _held_bytes = 0
    _wants_drain = False
    # Cut short after its head went out (Session.cut_answer): the connection ends with
    # a reset, not FIN / close_notify, when the framing cannot tell the client.
    _cut = False
    # Why the server gave up on the request's body (a ParseError: 413, 400, 408), set
    # before _lost() tells the handler; None when the client went away.
    _cut_reason: Optional[Exception] = None
    on_drain: Optional[Callable[[], object]] = None
    on_close: Optional[Callable[[], object]] = None

    def __init__(self, session, request) -> None:  # session: _session.Session
        self._session = session
        self.request = request
        self._headers: List[Tuple[str, str]] = []
        self._segments: list = []
        self._close = not request.keep_alive
        self._head_only = request.method == "HEAD"
        # Read on every request: as instance attributes their reads are
        # specialised by CPython 3.11+ (a class-level default is a dict lookup).
        self.status = 200
        self.ended = False
        self._sent_head = False
        self._upgrade = None

    @property
    def _proto(self):  # the name tests and older code used
        return self._session

    @property
    def loop(self):
        """The loop this response's connection runs on (timers, ``post``...)."""
        return self._session.loop

    # -- head ----------------------------------------------------------------

    @property
    def headers_sent(self) -> bool:
        return self._sent_head

    def set_status(self, status: int) -> "Response":
        """The final status, 200 to 999 (``ValueError`` otherwise; see ``check_final_status``)."""
        self._check_open_head()
        check_final_status(status)  # (the value as given: 201.9 or "201" are not statuses)
        self.status = int(status)
        return self

    def set_header(self, name: str, value) -> "Response":
        """Set (replace) a header.  CR, LF or NUL in it raise HeaderValueError."""
        self._check_open_head()
        if value.__class__ is not str:
            value = str(value)
        # Checked here, at the call, not when the head is built: stored, a bad value
        # would fail every later answer of the handler too (its fallback included).
        if name not in _checked_names or not (value.isascii() and value.isprintable()):
            _check_stored_header(name, value)
        lname = name.lower()
        if lname in _FRAMING_NAMES:
            _stored_framing_field(lname, value)  # (see above: a bad one raises now, not at send)
        self._headers = [h for h in self._headers if h[0].lower() != lname]
        self._headers.append((name, value))
        return self

    def add_header(self, name: str, value) -> "Response":
        """Add a header, keeping earlier ones of the same name (e.g. Set-Cookie).
        CR, LF or NUL in it raise HeaderValueError."""
        self._check_open_head()
        if name.__class__ is not str:
            name = str(name)
        if value.__class__ is not str:
            value = str(value)
        if name not in _checked_names or not (value.isascii() and value.isprintable()):
            _check_stored_header(name, value)  # (see set_header)
        if len(name) in _FRAMING_LENS and name.lower() in _FRAMING_NAMES:
            _stored_framing_field(name.lower(), value)
        self._headers.append((name, value))
        return self

    def _check_open_head(self) -> None:
        if self._sent_head:
            raise RuntimeError("response head already sent")

    def _reset(self) -> None:
        """Forget what the handler prepared (an error answer replaces it)."""
        close_segments(self._segments)
        self._headers = []
        self._length = None

    def _build_head(self, length: Optional[int], hs=None) -> bytes:
        status = self.status
        # The status line first: a bad status raises before anything is marked
        # sent, so the handler's failure is still answered with a 500.
        line = _STATUS_200 if status == 200 else self._status_line(status)
        if hs is None:
            hs = self._headers
        own = None  # a _Framing: the handler's framing headers, its own Server / Date
        if hs:
            # Handlers tend to send the same header list every time: validate
            # and encode it once (CR/LF/NUL still raise HeaderValueError).
            key: Optional[tuple] = tuple(hs)
            try:
                block = _header_blocks.get(key)
            except TypeError:  # unhashable pairs (lists): encode without caching
                key = None
                block = None
            if block is None:
                block = _encode_block(hs)
                if key is not None and len(_header_blocks) < 512 and _cacheable(hs):
                    _header_blocks[key] = block
            if block.__class__ is not bytes:
                own = block
                block, length = self._handler_framing(block, length)
        else:
            block = b""
        session = self._session
        if session.closing and session.must_close(self):
            self._close = True
        if status in NO_BODY_STATUS:
            # A 304 may carry the Content-Length the 200 would have (RFC 9110 §8.6,
            # §15.4.5: a handler relaying an upstream 304); a 204 or 1xx never does.
            if status == 304:
                framing = b"Content-Length: %d\r\n" % self._length if self._length is not None else b""
            else:  # a 205 is read as any response: without a length the client would wait for the close
                framing = b"Content-Length: 0\r\n" if status == 205 else b""
        elif self._upgrade is not None and self._opens_tunnel():
            if self._length is not None:
                raise HeaderValueError(_TUNNEL_FRAMING)
            framing = b""  # the bytes after the head are the tunnel's (the session closes after them)
        elif length is None:
            if self.request.version == "1.0":
                # RFC 9112 §6.1: no chunked to a 1.0 client; the close delimits the body
                self._close = True
                framing = b""
            else:
                self._chunked = True
                framing = b"Transfer-Encoding: chunked\r\n"
        else:
            framing = b"Content-Length: %d\r\n" % length
        if self._close:
            framing += b"Connection: close\r\n"
            session.answer_closes()  # nothing pipelined behind this is processed (RFC 9112 §9.6)
        elif self.request.version == "1.0":
            framing += b"Connection: keep-alive\r\n"
        elif status == 101:
            framing += b"Connection: Upgrade\r\n"
        self._sent_head = True
        if own is None:
            return b"".join((line, session.date.header, _SERVER, block, framing, b"\r\n"))
        # the handler's own Server / Date (in its block) replace powpow's (RFC 9110 §5.3)
        return b"".join((line, b"" if own.date else session.date.header, b"" if own.server else _SERVER,
                         block, framing, b"\r\n"))

    def _status_line(self, status) -> bytes:
        """``_build_head``'s status line for every status but 200."""
        if status == 101 and self._upgrade is not None and self.request.method != "CONNECT":
            return status_line(101)  # upgrade(): its handover
        check_final_status(status)
        return status_line(status)

    def _handler_framing(self, f: _Framing, length: Optional[int]):
        """Apply the framing headers a handler set (validated in ``_encode_block``)."""
        if "close" in f.conn:
            self._close = True
        if "upgrade" in f.conn and self.status != 101:
            raise HeaderValueError("Connection: upgrade is only for a 101 response (use res.upgrade())")
        if (f.length is not None or f.te is not None) and self._upgrade is not None and self._opens_tunnel():
            raise HeaderValueError(_TUNNEL_FRAMING)
        if f.length is not None and self.status not in NO_BODY_STATUS:
            if length is None:
                self._length = length = f.length  # streamed: enforced by write()/end()
            elif length != f.length:
                if not (self._head_only and length == 0):
                    raise HeaderValueError("Content-Length %d set by the handler, but the body is %d bytes"
                                           % (f.length, length))
                length = f.length  # HEAD: the length a GET would have
        elif f.length is not None and self.status == 304:
            self._length = f.length  # written by _build_head (a 204's is dropped: RFC 9110 §8.6)
        return f.block, length

    def _opens_tunnel(self) -> bool:
        """A 2xx answer to CONNECT (RFC 9110 §9.3.6): no Content-Length, no Transfer-Encoding."""
        return 200 <= self.status < 300 and self.request.method == "CONNECT"

    def client_ip(self) -> Optional[str]:
        """Address of the client this answers (see ``Request.client_ip``)."""
        return self._session.client_ip(self.request)

    # -- whole responses -------------------------------------------------

    def send(self, body=b"", status: Optional[int] = None, headers=None) -> None:
        """Send a complete response (Content-Length framing) and end it.

        ``headers``: pairs or a mapping.  A ``bytes`` body of any size arrives
        whole: it is queued by reference and streamed as the socket drains."""
        # The common answer (200, an HTTP/1.1 keep-alive GET/POST, the same header
        # list as last time): its head comes whole from _last_head.  Every other one
        # is _send's.  (The guards leave by short jumps: on CPython 3.11 a compare
        # followed by an EXTENDED_ARG jump is never specialised.)
        if not (body.__class__ is bytes and (status is None or status == 200) and self.status == 200
                and not self._close and not self._headers and not self._head_only and not self.ended
                and not self._sent_head and (headers is None or headers.__class__ is list)
                and self._upgrade is None):  # (Upgrade/CONNECT: a CONNECT's 2xx has no Content-Length)
            return self._send(body, status, headers)
        session = self._session
        if session.closing or self.request.version != "1.1":
            return self._send(body, status, headers)
        n = len(body)
        date = session.date.header
        last = _last_head
        if last[0] is headers and last[2] is date and last[3] == n and last[1] == headers:
            head = last[4]
        else:
            head = _plain_head(headers, date, n)
            if head is None:
                return self._send(body, status, headers)
        if status is not None:
            self.status = status  # (an HTTPStatus stays what the handler gave)
        self._sent_head = True
        if n < 16384:
            self._segments.append(head + body)  # one small copy beats a second segment
        else:
            self._segments.append(head)
            self._segments.append(body)
        # _finish(), inlined
        self.ended = True
        if session.server.access_log:
            session.server._log_access(session, self)
        if not session.in_batch:
            session.flush()

    def _send(self, body, status: Optional[int], headers) -> None:
        """``send`` for every answer but the common one (see there)."""
        if self.ended:
            raise RuntimeError("response already ended")
        if self._sent_head:
            raise RuntimeError("response head already sent (write() began a streamed body): "
                               "finish it with write() and end(), not send()")
        if status is not None:
            check_final_status(status)  # (before anything changes: the handler may still answer)
            self.status = status
        body = _as_bytes_like(body)
        hs = self._headers
        if headers:
            if headers.__class__ is not list and hasattr(headers, "items"):
                headers = list(headers.items())  # a mapping
            # the handler's own list as is when nothing was set before (no copy;
            # the head builder caches its encoding by content)
            hs = headers if not hs else hs + list(headers)
        if body.__class__ is str:
            body = body.encode("utf-8")
            if not any(h[0].lower() == "content-type" for h in hs):
                hs = list(hs) + [("Content-Type", "text/plain; charset=utf-8")]
        no_body = self.status in NO_BODY_STATUS
        head = self._build_head(0 if no_body else len(body), hs)
        if self._head_only or no_body or not body:
            self._segments.append(head)
        elif len(body) < 16384:
            self._segments.append(head + body)  # one small copy beats a second segment
        else:
            self._segments.append(head)
            self._segments.append(body if body.__class__ is bytes else bytes(body))
        self._finish()

    def send_error(self, status: int, message: Optional[str] = None) -> None:
        """A small text/plain error response; closes the connection for 4xx framing errors."""
        text = "%d %s\n" % (status, message or reason(status))
        self._headers = [h for h in self._headers if h[0].lower() != "content-type"]
        self._headers.append(("Content-Type", "text/plain; charset=utf-8"))
        self.send(text.encode("utf-8"), status=status)

    def json(self, obj, status: int = 200, headers=None) -> None:
        """Send ``obj`` as JSON (``application/json``, UTF-8) and end the response."""
        body = _lazy.json_dumps_compact(obj).encode("utf-8")
        if not headers:
            hs = [] if self._has_content_type(()) else [("Content-Type", "application/json")]
        else:
            given = list(headers.items()) if hasattr(headers, "items") else list(headers)
            # the caller's Content-Type (application/problem+json ...) replaces the default
            hs = given if self._has_content_type(given) else [("Content-Type", "application/json")] + given
        self.send(body, status=status, headers=hs)

    def _has_content_type(self, headers) -> bool:
        for h in self._headers:
            if str(h[0]).lower() == "content-type":
                return True
        for h in headers:
            if str(h[0]).lower() == "content-type":
                return True
        return False

    def redirect(self, url: str, status: int = 302) -> None:
        """Redirect to ``url`` (301, 302, 303, 307 or 308) with a short text body."""
        if status not in (301, 302, 303, 307, 308):
            raise ValueError("redirect status must be 301, 302, 303, 307 or 308, got %r" % (status,))
        self.set_header("Location", url)  # CR/LF in url raise HeaderValueError
        self.send("%d %s: %s\n" % (status, reason(status), url), status=status)

    def set_cookie(self, name: str, value: str, **attributes) -> "Response":
        """Add a ``Set-Cookie`` header (``powpow.http.cookies.format_set_cookie`` keywords:
        max_age, expires, path, domain, secure, httponly, samesite)."""
        from .cookies import format_set_cookie
        return self.add_header("Set-Cookie", format_set_cookie(name, value, **attributes))

    # -- streaming ---------------------------------------------------------

    def set_length(self, length: int) -> "Response":
        """Announce the body length before ``write``: Content-Length instead of chunked."""
        self._check_open_head()
        if length.__class__ is not int and (isinstance(length, bool) or not hasattr(type(length), "__index__")):
            raise ValueError("set_length() takes a length in bytes (an int >= 0), got %r" % (length,))
        if length < 0:
            raise ValueError("set_length() takes a length in bytes (an int >= 0), got %r" % (length,))
        self._length = int(length)
        return self

    def write(self, chunk) -> bool:
        """Stream a piece of the body (chunked unless ``set_length`` was called).

        Returns False when the client is behind (wait for ``on_drain``) or has
        gone (the chunk is dropped; ``on_close`` told the handler)."""
        if self._gone:
            return False
        if self.ended:
            raise RuntimeError("response already ended")
        if not self._sent_head:
            self._segments.append(self._build_head(self._length))
        if chunk.__class__ is str:
            chunk = chunk.encode("utf-8")
        elif chunk.__class__ is not bytes:
            chunk = _as_bytes_like(chunk)
        if chunk and not self._head_only and self.status not in NO_BODY_STATUS:
            n = len(chunk)
            if self._length is not None and self._written + n > self._length:
                raise ValueError("write() past the announced Content-Length (%d + %d > %d)"
                                 % (self._written, n, self._length))
            if self._chunked:
                self._segments.append(b"%x\r\n" % n + bytes(chunk) + b"\r\n")
            else:
                self._segments.append(bytes(chunk))
            self._written += n
        session = self._session
        if session.in_batch:
            # inside a read the connection flushes once at the end -- unless a
            # handler streams a lot right there: then it must see backpressure
            segs = self._segments
            if len(segs) > 16 or (segs and len(segs[-1]) > 16384):
                session.flush_now()
        else:
            session.flush()
        if self._gone:
            exc = session.lost_exc
            if exc.__class__ is WriteQueueFull:
                # This producer ignored write() returning False until the queue
                # passed its cap: the body is cut, so say so at the call (item 21:
                # never a silent cut).  The connection is already closed.
                raise WriteQueueFull("response body cut: %s (write() returned False; "
                                     "wait for on_drain before writing more)" % (exc,))
            return False
        if self._segments:
            # not handed to the transport: behind an earlier answer, or inside a read's batch
            return self._queued_behind(session)
        return session.writable

    def _queued_behind(self, session) -> bool:
        """``write()`` when this answer's segments stayed here after the flush.

        Behind an earlier pipelined answer that is still being made they cannot
        reach the transport, so they are this answer's own queue, judged by the
        transport's limits: at ``high_water`` False (``on_drain`` runs once this
        answer is first in line), and a write while more than ``max_queued`` is
        held is refused loudly (the connection closes, ``WriteQueueFull``), as the
        transport refuses.  Until it is first in line nothing is taken from
        ``_segments``, so the count only grows: each call adds the new segments."""
        pending = session.pending
        if not pending or pending[0] is self:
            return session.writable  # first in line, inside a read: out at the batch's end
        segs = self._segments
        before = held = self._held_bytes
        n = len(segs)
        for i in range(self._held_n, n):
            seg = segs[i]
            held += seg.count if seg.__class__ is _FileSeg else len(seg)
        self._held_n = n
        self._held_bytes = held
        conn = session.conn
        if before > conn.max_queued:
            exc = WriteQueueFull(
                "write of %d bytes refused: %s %s holds %d bytes behind an earlier pipelined answer still "
                "being made, past the %d-byte cap (client %s); connection closed"
                % (held - before, self.request.method, self.request.target, before, conn.max_queued, session.ip))
            log.error("%s", exc)
            conn.close()  # every answer of the connection goes (this one too: _lost)
            raise WriteQueueFull("response body cut: %s (write() returned False; "
                                 "wait for on_drain before writing more)" % (exc,))
        if held >= conn.high_water:
            self._wants_drain = True  # the session calls on_drain when it is first in line
            return False
        return True

    def end(self, chunk=b"") -> None:
        """Finish a streamed response (or send an empty one)."""
        if self.ended:
            return
        if self._gone:
            self.ended = True
            return
        if not self._sent_head:
            if self._length is None:
                self.send(chunk)
                return
            self._segments.append(self._build_head(self._length))
        if chunk:
            Response.write(self, chunk)  # the class's: an async handler's res.write is a coroutine
        if self._chunked and not self._head_only:
            self._segments.append(b"0\r\n\r\n")
        elif (self._length is not None and self._written != self._length and not self._head_only
              and self.status not in NO_BODY_STATUS):  # (204/304: no body; a 304 keeps its Content-Length)
            # A short body would desynchronise the client: close after it.
            log.error("response ended after %d of %d announced bytes; closing", self._written, self._length)
            self._close = True
            self._session.answer_closes()
        self._finish()

    def send_file(self, path, content_type: Optional[str] = None, download: bool = False) -> None:
        """Send a file with sendfile, with ETag/Last-Modified, conditional requests and Range."""
        from .static import plan_file
        if self.ended or self._sent_head:  # (before a file is opened for nothing)
            raise RuntimeError("response already %s: send_file() starts an answer"
                               % ("ended" if self.ended else "begun (its head is out)"))
        req = self.request
        plan = plan_file(req.method, os.fspath(path), req.headers.get, content_type=content_type,
                         download=download)
        self.send_plan(plan)

    def send_plan(self, plan) -> None:
        """Execute a ``powpow.http.static`` plan (status, headers, bytes and file ranges).

        The plan's open descriptors are taken over (sent from, never re-opened
        by path) and closed when sent or dropped.  After the answer began or
        ended it raises ``RuntimeError`` (as ``send`` does), the plan closed."""
        if self.ended or self._sent_head:
            close = getattr(plan, "close", None)
            if close is not None:
                close()
            raise RuntimeError("response already %s: send_file()/send_plan() start an answer"
                               % ("ended" if self.ended else "begun (its head is out)"))
        try:
            if plan.status in NO_BODY_STATUS:
                length = 0
            else:
                length = plan.content_length
            self.status = plan.status
            self._headers.extend(plan.headers)
            head = self._build_head(length)
            self._segments.append(head)
            if not self._head_only and plan.status not in NO_BODY_STATUS:
                for part in plan.parts:
                    if part.__class__ is bytes:
                        self._segments.append(part)
                    elif part.count:
                        take = getattr(part, "take_fd", None)
                        if take is not None:
                            self._segments.append(_FileSeg(take(), part.offset, part.count))
                        else:  # a plan without descriptors: open now
                            fd = os.open(part.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                            self._segments.append(_FileSeg(fd, part.offset, part.count))
        finally:
            close = getattr(plan, "close", None)
            if close is not None:
                close()  # descriptors not taken (HEAD, 304, errors)
        if self._gone:
            close_segments(self._segments)
        self._finish()

    def upgrade(self, status_headers=None):
        """Hand the connection over (WebSocket, CONNECT): returns ``(transport, rest)``.

        With ``status_headers`` (a list of pairs, may be empty) a ``101
        Switching Protocols`` head -- for CONNECT a ``200`` without framing
        headers -- is written to the transport first, after every earlier
        pipelined answer; None writes nothing.  Then HTTP forgets the connection: no deadline applies, and
        ``on_data``/``on_close``/``on_drain``/``on_eof``/``context`` are None
        for the new owner to set.  ``rest``: the bytes the client sent after the
        request.  Raises ``ConnectionLost`` if the client has already gone."""
        return self._session.upgrade(self, status_headers)

    def pause_body(self) -> None:
        """Streaming request body: stop reading it until ``resume_body()``."""
        self._session.pause_body()

    def resume_body(self) -> None:
        self._session.resume_body()

    def _lost(self) -> None:
        """The client went away (or the answer can no longer be delivered)."""
        if self._gone:
            return
        self._gone = True
        close_segments(self._segments)
        if not self.ended:
            cb = self.on_close
            if cb is not None:
                self.on_close = None
                try:
                    cb()
                except Exception:
                    log.exception("on_close callback raised")

    def _finish(self) -> None:
        self.ended = True
        session = self._session
        if session.server.access_log:
            session.server._log_access(session, self)
        if not session.in_batch:  # inside a read, the connection flushes once at the end
            session.flush()

    # -- ASGI extensions (issue 12): 103 Early Hints and trailers ------------------

    # The request's 100 Continue waits until the handler asks for the body
    # (ASGI: the app's first receive()); the session skips it while True.
    _hold_continue = False
    # Called when the client half-closes (EOF) while this response is pending:
    # ASGI tells an app that waits for http.disconnect.
    on_eof: Optional[Callable[[], object]] = None

    def send_early_hints(self, headers) -> None:
        """A ``103 Early Hints`` interim response (RFC 8297) with ``headers`` (pairs,
        typically ``Link``), ahead of this response's head and after every earlier
        pipelined answer.  HTTP/1.0 clients get nothing (no 1xx for them)."""
        if self._sent_head or self.ended:
            raise RuntimeError("early hints after the response head")
        if self._gone or self.request.version == "1.0":
            return
        parts: List[str] = []
        encode_headers(headers, parts)  # CR/LF/NUL raise HeaderValueError
        self._segments.append(status_line(103) + _latin1(parts) + b"\r\n")
        session = self._session
        if not session.in_batch:
            session.flush()

    def end_with_trailers(self, trailers) -> None:
        """Finish a streamed response with trailer fields (RFC 9112 §7.1.2).

        The body must be chunked: with a Content-Length, to an HTTP/1.0 client
        or for HEAD the trailers are dropped (a recipient may discard them
        anyway, RFC 9110 §6.5) and the response simply ends."""
        if self.ended:
            return
        if self._gone:
            self.ended = True
            return
        if not self._sent_head:
            self._segments.append(self._build_head(self._length))
        if self._chunked and not self._head_only:
            block = _trailer_block(trailers)
            self._segments.append(b"0\r\n" + block + b"\r\n")
            self._chunked = False  # the last chunk is written: end() adds none
        self.end()
