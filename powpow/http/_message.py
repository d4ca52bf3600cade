"""Request and Headers: lazy views over the receive buffer.

The parser records a request head as offsets into the buffer it arrived in
(``bytes``, or a ``bytearray`` the parser promises never to touch again once a
request points into it).  Nothing is decoded until it is asked for: ``path``,
``target``, header values ... are built on first access and then cached.

Header names are stored once, lowercased, as ``str`` (the parser takes them from
a cache of validated names, so the common ones are shared objects); lookups go
through ``list.index`` on that list, which for the usual 5-20 fields beats
building a dict per request, and are memoised per Headers object.
"""
import os
from typing import Callable, Iterator, List, Optional, Tuple

from powpow.errors import ParseError


_MISSING = object()


class Headers:
    """Header (or trailer) fields of one message, in arrival order.

    ``get(name)`` / ``headers[name]`` / ``name in headers`` are case-insensitive
    and return the *first* field of that name; ``get_all(name)`` returns every
    value in order (repeated fields are never merged); ``raw`` is the list of
    ``(name, value)`` byte pairs exactly as sent (values without surrounding
    SP/HTAB).  Values are ``str`` decoded as latin-1 (RFC 9110 5.5: field
    values are octets; obs-text survives the round trip).

    Immutable.  The parser shares one Headers between consecutive requests whose
    header sections are byte-for-byte identical (see parser.py), so ``get``
    memoises its answers per name.
    """

    __slots__ = ("_buf", "_h0", "_names", "_ends", "_memo")

    def __init__(self, buf=b"", h0: int = 0, names: Optional[List[str]] = None,
                 ends: Optional[List[int]] = None) -> None:
        # ends[i] is the CR offset of field line i in buf; line i starts two
        # bytes after ends[i-1] (line 0 at h0).  Colons are found on access.
        self._buf = buf
        self._h0 = h0
        self._names = names if names is not None else []
        self._ends = ends if ends is not None else []
        self._memo: dict = {}

    def _span(self, i: int):
        ends = self._ends
        e = ends[i]
        s = ends[i - 1] + 2 if i else self._h0
        return s, self._buf.find(b":", s, e), e

    def _value(self, i: int) -> str:
        s, c, e = self._span(i)
        return self._buf[c + 1 : e].strip(b" \t").decode("latin-1")

    def _lookup(self, name: str):
        key = name.lower()
        names = self._names
        if key in names:
            return self._value(names.index(key))
        return None

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        # One flat function: on CPython each extra Python call costs as much
        # as the whole lookup.
        memo = self._memo
        v = memo.get(name, _MISSING)
        if v is _MISSING:
            names = self._names
            key = name.lower()
            if key in names:
                i = names.index(key)
                ends = self._ends
                buf = self._buf
                e = ends[i]
                s = ends[i - 1] + 2 if i else self._h0
                v = buf[buf.find(b":", s, e) + 1 : e].strip(b" \t").decode("latin-1")
            else:
                v = None
            if len(memo) < 64:
                memo[name] = v
        return default if v is None else v

    def __getitem__(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._names

    def get_all(self, name: str) -> List[str]:
        key = name.lower()
        return [self._value(i) for i, k in enumerate(self._names) if k == key]

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def keys(self) -> List[str]:
        return list(self._names)

    def items(self) -> List[Tuple[str, str]]:
        return [(k, self._value(i)) for i, k in enumerate(self._names)]

    @property
    def raw(self) -> List[Tuple[bytes, bytes]]:
        buf = self._buf
        out = []
        for i in range(len(self._names)):
            s, c, e = self._span(i)
            out.append((buf[s:c], buf[c + 1 : e].strip(b" \t")))
        return out

    def __repr__(self) -> str:
        return "Headers(%r)" % (self.items(),)


_EMPTY_HEADERS = Headers()


class Request:
    """One parsed request.  Cheap to create; strings are built on first access.

    Attributes set by the parser: ``method`` (str), ``version`` ("1.1" or
    "1.0"), ``keep_alive``, ``expect_continue``, ``content_length`` (int or
    None), ``chunked``, ``upgrade`` (the Upgrade protocol string when the
    client asked to switch with ``Connection: upgrade``, else None),
    ``trailers`` (Headers; empty unless a chunked body carried some).

    Body, once the message is complete: ``body`` (bytes; read from the spool
    file if it went to disk), ``body_file`` (the spooled temporary file, or
    None), ``body_size``.  With a streaming parser (``on_body`` given) the body
    is delivered to the callback and ``body`` is ``b""``.
    """

    # Class-level defaults: the parser sets only what differs, so creating a
    # Request costs a handful of attribute stores.
    content_length: Optional[int] = None
    chunked = False
    keep_alive = True
    expect_continue = False
    upgrade: Optional[str] = None
    trailers = _EMPTY_HEADERS
    body_file = None
    body_size = 0
    _body_buf = b""
    _body_start = 0
    _body_end = 0
    _conn_close = False  # the client sent Connection: close

    _special = False     # anything but a keep-alive request without body (parser fast path)
    _target: Optional[str] = None
    _path: Optional[str] = None
    _query: Optional[str] = None
    version = "1.1"

    def __init__(self) -> None:  # the parser builds requests via __new__
        self.method = ""
        self._buf = b""
        self._ts = self._te = 0
        self.headers = _EMPTY_HEADERS

    # Cached properties written out by hand: a C-level property call plus one
    # attribute load beats a Python-level descriptor on CPython.
    @property
    def target(self) -> str:
        t = self._target
        if t is None:
            t = self._target = self._buf[self._ts : self._te].decode("latin-1")
        return t

    @property
    def path(self) -> str:
        p = self._path
        if p is None:
            buf = self._buf
            ts = self._ts
            if buf[ts] == 47:  # origin-form
                te = self._te
                q = buf.find(b"?", ts, te)
                p = buf[ts : (q if q >= 0 else te)].decode("latin-1")
            else:  # '*', authority- or absolute-form
                p = _split_other(self, 0)
            self._path = p
        return p

    @property
    def query(self) -> str:
        q = self._query
        if q is None:
            buf = self._buf
            ts = self._ts
            if buf[ts] == 47:
                te = self._te
                i = buf.find(b"?", ts, te)
                q = buf[i + 1 : te].decode("latin-1") if i >= 0 else ""
            else:
                q = _split_other(self, 1)
            self._query = q
        return q

    @property
    def body(self) -> bytes:
        f = self.body_file
        if f is not None:
            f.seek(0)
            data = f.read()
            f.seek(0)
            return data
        return self._body_buf[self._body_start : self._body_end]

    # -- streaming bodies (HttpServer(streaming=True)) -------------------------
    # The handler runs when the head is in; these say where the body goes.
    _body_cb = None
    _end_cb = None
    _stream_buf = b""
    _file_fd: Optional[int] = None
    response = None  # set by the server: the Response answering this request
    _client_ip: Optional[str] = None

    @property
    def client_ip(self) -> Optional[str]:
        """The client's address, worked out on first use by the server that answers
        (``X-Forwarded-For`` only from its trusted proxies); None without a server."""
        ip = self._client_ip
        if ip is None and self.response is not None:
            ip = self._client_ip = self.response.client_ip()
        return ip

    def on_body(self, callback: Callable[[bytes], object]) -> None:
        """Streaming mode: ``callback(chunk)`` for each piece of the body as it arrives."""
        self._body_cb = callback
        self._stream_buf = b""

    def on_end(self, callback: Callable[[], object]) -> None:
        """Streaming mode: ``callback()`` once the whole body has arrived (``body`` is
        complete by then unless ``on_body``/``stream_to_file`` took it)."""
        self._end_cb = callback

    def stream_to_file(self, path, mode: int = 0o600) -> None:
        """Streaming mode: write the body to a new file ``path`` (created exclusively,
        ``mode`` 0600 by default); it is closed when the body ends, before ``on_end``
        runs (or when the connection drops first)."""
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
        self._file_fd = fd

        def write(chunk) -> None:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]

        self._body_cb = write

    def _close_stream_file(self) -> None:
        fd = self._file_fd
        if fd is not None:
            self._file_fd = None
            os.close(fd)

    def form(self, **limits) -> list:
        """The ``multipart/form-data`` body as a list of ``multipart.Part`` (buffered bodies).

        Files above the spool threshold live in 0600 temporary files; names go
        through ``safe_filename``.  ``limits`` go to ``MultipartParser``
        (``max_file_size``, ``max_field_size``, ``max_parts`` ...).  Raises
        ``ParseError`` (400, or 413 for a limit), which the server answers.
        """
        from .multipart import MultipartParser, boundary_from_content_type

        ctype = self.headers.get("content-type") or ""
        if not ctype.lower().startswith("multipart/form-data"):
            raise ParseError(415, "expected multipart/form-data, got %r" % ctype[:100])
        parser = MultipartParser(boundary_from_content_type(ctype), **limits)
        f = self.body_file
        if f is None:
            parts = parser.feed(self.body)
        else:
            f.seek(0)
            parts = []
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    break
                parts += parser.feed(chunk)
        parser.close()
        return parts

    def close(self) -> None:
        """Release the spooled body file, if any (it is deleted on close)."""
        f = self.body_file
        if f is not None:
            self.body_file = None
            f.close()

    def __repr__(self) -> str:
        return "<Request %s %s HTTP/%s>" % (self.method, self.target, self.version)


def _split_other(req: Request, part: int) -> str:
    """path/query of an absolute-form target; '*' for asterisk-form; '' for authority-form."""
    target = req.target
    if target == "*":
        return "*" if part == 0 else ""
    if req.method == "CONNECT":
        return ""
    rest = target.split("://", 1)[1] if "://" in target else target.split(":", 1)[1]
    slash = rest.find("/") if "://" in target else 0
    if slash < 0:
        rest = "/"
    else:
        rest = rest[slash:]
    path, _, query = rest.partition("?")
    return (path or "/") if part == 0 else query
