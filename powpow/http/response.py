"""Responses: the ``Response`` a handler answers with, and how heads are built.

``Response`` collects its output as segments (bytes and file ranges); the
connection (``powpow.http.server``) moves them to the socket in request order.  What matters here is the cost
per response, so status lines are prebuilt bytes, the Date header is rebuilt
at most once a second (RFC 9110 §6.6.1 asks for second resolution), and header
names/values are validated with one ``str.isprintable`` call in the common
case -- a CR, LF or NUL set by a handler raises ``HeaderValueError`` and is
never written (response splitting).
"""
import email.utils
import http
import logging
import os
import time
from typing import Iterable, List, Optional, Tuple

from ..errors import PowpowError

log = logging.getLogger("powpow.http")

__all__ = ["Response", "HeaderValueError", "status_line", "reason", "DateCache", "encode_headers",
           "NO_BODY_STATUS"]


class HeaderValueError(PowpowError, ValueError):
    """A handler tried to set a header name or value that would split the response."""


_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_STATUS_LINES = {code: ("HTTP/1.1 %d %s\r\n" % (code, phrase)).encode("latin-1")
                 for code, phrase in _REASONS.items()}

# RFC 9110 §6.4.1 and §15: no content for 1xx, 204 and 304.
NO_BODY_STATUS = frozenset([100, 101, 102, 103, 204, 304])

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
            self.header = ("Date: %s\r\n" % email.utils.formatdate(now, usegmt=True)).encode("ascii")
        return self.header


_STATUS_200 = status_line(200)
_header_blocks: dict = {}


def _encode_block(headers) -> bytes:
    parts: List[str] = []
    encode_headers(headers, parts)  # validates: raises HeaderValueError
    try:
        return "".join(parts).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise HeaderValueError("header value not encodable as ISO-8859-1: %s" % exc) from None
_SERVER = b"Server: powpow\r\n"


class _FilePart:
    __slots__ = ("path", "offset", "count")

    def __init__(self, path: str, offset: int, count: int) -> None:
        self.path = path
        self.offset = offset
        self.count = count


class _Unparsed:
    """Stands for the request a ParseError answers (there is none to show)."""

    method = "-"
    target = "-"
    version = "1.1"
    keep_alive = False
    headers: dict = {}


_UNPARSED = _Unparsed()


class Response:
    """What a handler answers with.  See README "HTTP server" for the full API."""

    # Class-level defaults (no __slots__): a response lives for one request,
    # and creating it should cost only the stores that differ per request.
    status = 200
    ended = False
    _sent_head = False
    _chunked = False
    _length: Optional[int] = None
    _written = 0
    _upgrade = None

    def __init__(self, proto, request) -> None:  # proto: server._HttpConnection
        self._proto = proto
        self.request = request
        self._headers: List[Tuple[str, str]] = []
        self._segments: list = []
        self._close = not request.keep_alive
        self._head_only = request.method == "HEAD"

    # -- head ----------------------------------------------------------------

    @property
    def headers_sent(self) -> bool:
        return self._sent_head

    def set_status(self, status: int) -> "Response":
        self._check_open_head()
        self.status = int(status)
        return self

    def set_header(self, name: str, value) -> "Response":
        """Set (replace) a header.  CR, LF or NUL in it raise HeaderValueError."""
        self._check_open_head()
        lname = name.lower()
        self._headers = [h for h in self._headers if h[0].lower() != lname]
        self._headers.append((name, str(value)))
        return self

    def add_header(self, name: str, value) -> "Response":
        """Add a header, keeping earlier ones of the same name (e.g. Set-Cookie)."""
        self._check_open_head()
        self._headers.append((name, str(value)))
        return self

    def _check_open_head(self) -> None:
        if self._sent_head:
            raise RuntimeError("response head already sent")

    def _build_head(self, length: Optional[int], hs=None) -> bytes:
        status = self.status
        if hs is None:
            hs = self._headers
        if hs:
            # Handlers tend to send the same header list every time: validate
            # and encode it once (CR/LF/NUL still raise HeaderValueError).
            key = tuple(hs)
            try:
                block = _header_blocks.get(key)
            except TypeError:  # unhashable pairs (lists): encode without caching
                key = None
                block = None
            if block is None:
                block = _encode_block(hs)
                if key is not None and len(_header_blocks) < 512:
                    _header_blocks[key] = block
        else:
            block = b""
        proto = self._proto
        if proto.closing or proto.server._draining:
            self._close = True
        if status in NO_BODY_STATUS:
            framing = b""
        elif length is None:
            self._chunked = True
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            framing = b"Content-Length: %d\r\n" % length
        if self._close:
            framing += b"Connection: close\r\n"
        elif self.request.version == "1.0":
            framing += b"Connection: keep-alive\r\n"
        self._sent_head = True
        line = _STATUS_200 if status == 200 else status_line(status)
        return b"".join((line, proto.server._date.header, _SERVER, block, framing, b"\r\n"))

    def client_ip(self) -> Optional[str]:
        """Address of the client this answers (see ``Request.client_ip``)."""
        proto = self._proto
        if proto.server._trusted_proxies:
            return proto.server._client_ip(proto.ip, self.request)
        return proto.ip

    # -- whole responses -------------------------------------------------

    def send(self, body=b"", status: Optional[int] = None, headers=None) -> None:
        """Send a complete response (Content-Length framing) and end it."""
        if self.ended:
            raise RuntimeError("response already ended")
        if status is not None:
            self.status = status
        hs = self._headers
        if headers:
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

    # -- streaming ---------------------------------------------------------

    def set_length(self, length: int) -> "Response":
        """Announce the body length before ``write``: Content-Length instead of chunked."""
        self._check_open_head()
        self._length = int(length)
        return self

    def write(self, chunk) -> None:
        """Stream a piece of the body (chunked unless ``set_length`` was called)."""
        if self.ended:
            raise RuntimeError("response already ended")
        if not self._sent_head:
            self._segments.append(self._build_head(self._length))
        if chunk.__class__ is str:
            chunk = chunk.encode("utf-8")
        if chunk and not self._head_only and self.status not in NO_BODY_STATUS:
            if self._chunked:
                self._segments.append(b"%x\r\n" % len(chunk) + bytes(chunk) + b"\r\n")
            else:
                self._segments.append(bytes(chunk))
            self._written += len(chunk)
        self._proto.flush()

    def end(self, chunk=b"") -> None:
        """Finish a streamed response (or send an empty one)."""
        if self.ended:
            return
        if not self._sent_head:
            if self._length is None:
                self.send(chunk)
                return
        if chunk:
            self.write(chunk)
        if self._chunked and not self._head_only:
            self._segments.append(b"0\r\n\r\n")
        elif self._length is not None and self._written != self._length and not self._head_only:
            # A short body would desynchronise the client: close after it.
            log.error("response ended after %d of %d announced bytes; closing", self._written, self._length)
            self._close = True
        self._finish()

    def send_file(self, path, content_type: Optional[str] = None, download: bool = False) -> None:
        """Send a file with sendfile, with ETag/Last-Modified, conditional requests and Range."""
        from .static import plan_file
        req = self.request
        plan = plan_file(req.method, os.fspath(path), req.headers.get, content_type=content_type,
                         download=download)
        self.send_plan(plan)

    def send_plan(self, plan) -> None:
        """Execute a ``powpow.http.static`` plan (status, headers, bytes and file ranges)."""
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
                    self._segments.append(_FilePart(part.path, part.offset, part.count))
        self._finish()

    def upgrade(self, status_headers=None):
        """Hand the connection over (WebSocket): returns ``(connection, remaining_bytes)``."""
        proto = self._proto
        remaining = proto.parser.take_remaining() if proto.parser.upgraded else b""
        if status_headers is not None:
            self.status = 101
            self._headers.extend(status_headers)
            self._segments.append(self._build_head(0))
        self._upgrade = True
        self._finish()
        return proto.conn, remaining

    def _finish(self) -> None:
        self.ended = True
        proto = self._proto
        server = proto.server
        if server.access_log:
            server._log_access(proto, self)
        if not proto.in_batch:  # inside a read, the connection flushes once at the end
            proto.flush()
