"""Request and Headers: lazy views over the receive buffer.

The parser records a request head as offsets into the buffer it arrived in
(``bytes``, or a ``bytearray`` the parser promises never to touch again once a
request points into it).  Nothing is decoded until it is asked for: ``path``,
``target``, header values ... are built on first access and then cached.

Header names are stored once, lowercased, as ``str`` (the parser takes them from
a cache of validated names, so the common ones are shared objects); lookups go
through ``list.index`` on that list, which for the usual 5-20 fields beats
building a dict per request, and are memoised per Headers object.

Handler conveniences (``path`` decoded, ``raw_path``, ``args``, ``cookies``,
``json()``) never raise on odd input except where the input is the client's
mistake the handler asked about: ``args`` past ``MAX_QUERY_FIELDS`` fields and
``json()`` on a bad body raise ``ParseError(400)``, which the server answers.
"""
import os
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from powpow import _lazy
from powpow.errors import ParseError

from ._grammar import HOST as _HOST
from .cookies import parse_cookie_header

# Django's DATA_UPLOAD_MAX_NUMBER_FIELDS is 1000 too: enough for any real form
# or query, and a ceiling on the work one crafted query string costs.
MAX_QUERY_FIELDS = 1000


_MISSING = object()


def name_index(names) -> dict:
    """``{name: (k, skip)}`` for the first field of each name in ``names``: the
    field's value starts ``skip`` bytes after the CR that ends line ``k`` (the
    line before it; see ``Headers``).  The parser builds one per validated
    sequence of names and shares it by every Headers with those names."""
    index: dict = {}
    for k, name in enumerate(names):
        if name not in index:
            index[name] = (k, len(name) + 3)  # CRLF, the name, the colon
    return index


class Headers:
    """Header (or trailer) fields of one message, in arrival order.

    ``get(name)`` / ``headers[name]`` / ``name in headers`` are case-insensitive
    and return the *first* field of that name; ``get_all(name)`` returns every
    value in order (repeated fields are never merged); ``raw`` is the list of
    ``(name, value)`` byte pairs exactly as sent (values without surrounding
    SP/HTAB).  Values are ``str`` decoded as latin-1 (RFC 9110 5.5: field
    values are octets; obs-text survives the round trip).

    Immutable.  Layout (issue 13: ``get`` is a dict lookup and one slice): ``_lines[0] + 2``
    is where the first field line starts and ``_lines[k + 1]`` is the CR that ends
    field line ``k`` (the parser passes its tuple of line offsets as is: the
    request line's CR comes first); ``_names`` are the lowercased names
    (raw names are tokens: same length); ``_index`` maps a name to
    ``name_index``'s entry, shared between requests with the same names.  The
    parser shares one Headers between consecutive requests whose header
    sections are byte-for-byte identical (``_SharedHeaders``: its ``get``
    memoises).
    """

    __slots__ = ("_buf", "_lines", "_names", "_index", "_memo_d")

    def __init__(self, buf=b"", h0: int = 0, names: Optional[List[str]] = None,
                 ends: Optional[List[int]] = None) -> None:
        # ends[i] is the CR offset of field line i in buf; line i starts two
        # bytes after ends[i-1] (line 0 at h0).
        self._buf = buf
        self._names = names = names if names is not None else []
        self._lines = [h0 - 2] + list(ends or ())
        self._index = name_index(names)

    # The layout older callers (ASGI, WSGI adapters) read: line k starts at
    # _ends[k-1] + 2 (line 0 at _h0) and ends at the CR _ends[k].
    @property
    def _h0(self) -> int:
        return self._lines[0] + 2

    @property
    def _ends(self):
        return self._lines[1 : len(self._names) + 1]

    @property
    def _memo(self) -> dict:
        """A dict for callers to memoise what they derive from these headers."""
        try:
            return self._memo_d  # type: ignore[has-type]
        except AttributeError:
            d: dict = {}
            self._memo_d = d
            return d

    def _value(self, k: int) -> str:
        lines = self._lines
        return self._buf[lines[k] + len(self._names[k]) + 3 : lines[k + 1]].strip(b" \t").decode("latin-1")

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        # One flat function: on CPython each extra Python call costs as much
        # as the whole lookup.
        index = self._index
        if name in index:
            k, skip = index[name]
        else:
            name = name.lower()
            if name not in index:
                return default
            k, skip = index[name]
        lines = self._lines
        return self._buf[lines[k] + skip : lines[k + 1]].strip(b" \t").decode("latin-1")

    def __getitem__(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._names

    def get_all(self, name: str) -> List[str]:
        key = name.lower()
        return [self._value(k) for k, n in enumerate(self._names) if n == key]

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def keys(self) -> List[str]:
        return list(self._names)

    def items(self) -> List[Tuple[str, str]]:
        return [(n, self._value(k)) for k, n in enumerate(self._names)]

    @property
    def raw(self) -> List[Tuple[bytes, bytes]]:
        buf = self._buf
        lines = self._lines
        out = []
        for k, n in enumerate(self._names):
            s = lines[k] + 2
            c = s + len(n)
            out.append((buf[s:c], buf[c + 1 : lines[k + 1]].strip(b" \t")))
        return out

    def __repr__(self) -> str:
        return "Headers(%r)" % (self.items(),)


class _ScanHeaders(Headers):
    """Headers without a shared name index (``_index`` is None): the parser's
    per-line path, taken where names signatures are not made (PyPy, whose JIT
    runs this list scan faster than it builds a dict per request)."""

    __slots__ = ()

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        key = name.lower()
        names = self._names
        if key not in names:
            return default
        k = names.index(key)
        lines = self._lines
        return self._buf[lines[k] + len(key) + 3 : lines[k + 1]].strip(b" \t").decode("latin-1")


class _SharedHeaders(Headers):
    """Headers the parser shares between consecutive requests with byte-identical
    header sections: ``get`` memoises its answers per name (a keep-alive
    client asks for the same few names on every request)."""

    __slots__ = ()

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        memo = self._memo_d
        v = memo.get(name, _MISSING)
        if v is _MISSING:
            v = Headers.get(self, name)
            if len(memo) < 64:
                memo[name] = v
        return default if v is None else v


_EMPTY_HEADERS = Headers()


class QueryArgs:
    """Parsed query string (or form fields): an immutable multi-valued mapping.

    ``args[name]`` / ``get(name, default)`` give the *first* value of ``name``;
    ``get_all(name)`` every value in order; ``name in args``; iteration,
    ``keys()`` and ``len()`` see each distinct name once, in first-seen order;
    ``items()`` is every ``(name, value)`` pair in order (like
    ``Headers.items()``); ``to_dict()`` keeps first values.  Names and values
    are ``str``: ``+`` is a space and percent-escapes are decoded as UTF-8,
    invalid sequences becoming U+FFFD (as ``urllib.parse.parse_qsl`` does);
    fields without ``=`` have the value ``""``.
    """

    __slots__ = ("_pairs", "_first")

    def __init__(self, pairs: Iterable[Tuple[str, str]] = ()) -> None:
        self._pairs = list(pairs)
        first: Dict[str, str] = {}
        for k, v in self._pairs:
            if k not in first:
                first[k] = v
        self._first = first

    @classmethod
    def parse(cls, query: str, max_fields: int = MAX_QUERY_FIELDS) -> "QueryArgs":
        """Parse ``a=1&b=2&a=3``; more than ``max_fields`` fields is ``ParseError(400)``."""
        if not query:
            return _EMPTY_ARGS
        if query.count("&") >= max_fields:
            raise ParseError(400, "more than %d fields in the query string" % max_fields)
        return cls(_lazy.parse_qsl(query, keep_blank_values=True))

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self._first.get(name, default)

    def get_all(self, name: str) -> List[str]:
        return [v for k, v in self._pairs if k == name]

    def __getitem__(self, name: str) -> str:
        return self._first[name]

    def __contains__(self, name: object) -> bool:
        return name in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def keys(self) -> List[str]:
        return list(self._first)

    def items(self) -> List[Tuple[str, str]]:
        return list(self._pairs)

    def to_dict(self) -> Dict[str, str]:
        return dict(self._first)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QueryArgs):
            return self._pairs == other._pairs
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "QueryArgs(%r)" % (self._pairs,)


_EMPTY_ARGS = QueryArgs()


def _decode_path(raw: str) -> str:
    """Percent-decode a path as UTF-8; never raises (invalid bytes become U+FFFD)."""
    if "%" not in raw:
        return raw
    return _lazy.unquote(raw, encoding="utf-8", errors="replace")


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

    Target: ``target`` (as sent), ``path`` (percent-decoded), ``raw_path``
    (not decoded), ``query`` (raw query string), ``args`` (``QueryArgs``),
    ``host`` (the host the request is for: the authority of an absolute-form
    target such as ``GET http://example.com/x``, which replaces the Host field
    (RFC 9112 §3.2.2), else the Host field; see there).
    Also ``headers`` (``Headers``), ``cookies`` (dict) and ``json()``.
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
    _form_parts: Optional[list] = None
    body_size = 0
    _body_buf = b""
    _body_start = 0
    _body_end = 0
    _conn_close = False  # the client sent Connection: close

    _special = False     # anything but a keep-alive request without body (parser fast path)
    _q = -1              # where the path ends ("?" or the target's end) when the parser knows
    _target: Optional[str] = None
    _path: Optional[str] = None
    _raw_path: Optional[str] = None
    _query: Optional[str] = None
    _host: Optional[str] = None
    _args: Optional[QueryArgs] = None
    _cookies: Optional[Dict[str, str]] = None
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
        """The path, percent-decoded (UTF-8; invalid sequences become U+FFFD).

        Everything is decoded, ``%2F`` included (as WSGI's PATH_INFO and ASGI's
        ``path`` do), so ``/a%2Fb`` and ``/a/b`` look the same here: route on
        ``raw_path`` where that matters, and never build file names from either
        without confining them (``serve_static`` works on ``raw_path``).  ``%00``
        decodes to NUL.  ``"*"`` for ``OPTIONS *``, ``""`` for CONNECT, and
        ``"/"`` for an absolute-form target without a path.
        """
        p = self._path
        if p is None:
            buf = self._buf
            ts = self._ts
            if buf[ts] == 47:  # origin-form
                q = self._q
                if q < 0:
                    te = self._te
                    q = buf.find(b"?", ts, te)
                    if q < 0:
                        q = te
                p = buf[ts:q].decode("latin-1")
                if "%" in p:  # else nothing to decode: the usual case
                    p = _decode_path(p)
            else:  # '*', authority- or absolute-form
                p = _decode_path(self.raw_path)
            self._path = p
        return p

    @property
    def raw_path(self) -> str:
        """The path exactly as sent (percent-escapes kept), without the query."""
        p = self._raw_path
        if p is None:
            buf = self._buf
            ts = self._ts
            if buf[ts] == 47:  # origin-form
                te = self._te
                q = buf.find(b"?", ts, te)
                p = buf[ts : (q if q >= 0 else te)].decode("latin-1")
            else:  # '*', authority- or absolute-form
                p = _split_other(self, 0)
            self._raw_path = p
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
    def host(self) -> str:
        """The host this request is for, ``host[:port]`` as sent (RFC 9112 §3.3).

        For an absolute-form target (``GET http://example.com:8080/x HTTP/1.1``,
        as sent to proxies) it is the target's authority, ``"example.com:8080"``:
        RFC 9112 §3.2.2 says to ignore the Host field then (a proxy that routed on
        the target and a handler that read Host would otherwise see two different
        hosts; ASGI's scope and WSGI's ``HTTP_HOST`` do the same).  For CONNECT it
        is the target (``host:port``); else the ``Host`` field's value, ``""``
        when there is none (HTTP/1.0).

        The server answers 400 to an absolute-form target whose scheme is not
        http or https, or whose authority is no valid ``host[:port]`` (userinfo,
        an empty host, a port past 65535), so a handler never sees one (a
        request parsed without a server gives ``""`` for it).  Never checked
        against the names the server is meant to serve: route on it, do not
        trust it."""
        h = self._host
        if h is None:
            buf = self._buf
            ts = self._ts
            if self._te > ts and buf[ts] != 47:  # '*', authority- or absolute-form
                target = self.target
                if self.method == "CONNECT":
                    h = target
                elif "://" in target:
                    h = "" if absolute_form_problem(target) is not None else _authority(target)
            if h is None:
                h = self.headers.get("host") or ""
            self._host = h
        return h

    @property
    def args(self) -> QueryArgs:
        """The query string parsed (``QueryArgs``: ``get``, ``get_all``, ``[]``, ``in``).

        More than ``MAX_QUERY_FIELDS`` fields raises ``ParseError(400)``."""
        a = self._args
        if a is None:
            a = self._args = QueryArgs.parse(self.query)
        return a

    @property
    def cookies(self) -> Dict[str, str]:
        """Cookies sent in ``Cookie`` header(s): name -> value, the first one wins
        (RFC 6265 5.4: the most specific path comes first).  Lenient: malformed
        pairs are skipped, never an error.  A fresh dict per request."""
        c = self._cookies
        if c is None:
            values = self.headers.get_all("cookie")
            c = self._cookies = parse_cookie_header("; ".join(values)) if values else {}
        return c

    def json(self):
        """The body decoded as JSON (``json.loads``: UTF-8/16/32 detected).

        An empty or invalid body raises ``ParseError(400)`` with the reason,
        which the server answers as a 400 when the handler lets it through.
        The Content-Type is not checked.  Streaming mode: only once the body
        is complete (``on_end``) and when no ``on_body`` callback took it."""
        data = self.body
        if not data:
            raise ParseError(400, "expected a JSON body, got an empty body")
        try:
            return _lazy.json_loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ParseError(400, "invalid JSON body: %s" % (str(exc)[:200],)) from None

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
    _body_cb: Any = None  # Callable[[bytes], object]
    _end_cb: Any = None   # Callable[[], object]
    _stream_buf = b""
    _ended = False  # streaming: the whole body has arrived (on_end's moment has come)
    _end_due = False  # on_end set after that: its call is scheduled
    _held_body = False  # reading paused with STREAM_HOLD_BYTES kept, until a callback is set
    _file_fd: Optional[int] = None
    # Set by the server: the Response answering this request.  Once that answer
    # has been handed to the connection, the server drops it (None again) and
    # keeps only its connection in _session: the two no longer form a cycle, so
    # they are freed at once rather than by the cyclic GC.
    response = None
    _session: Any = None
    _client_ip: Optional[str] = None

    @property
    def loop(self):
        """The loop of the server answering this request (None without a server)."""
        res = self.response
        if res is not None:
            return res.loop
        s = self._session
        return s.loop if s is not None else None

    async def read(self) -> bytes:
        """``async def`` handlers: the whole body (up to ``max_body``).  Buffered, it is
        complete before the handler runs; streaming (``streaming=True``), this waits for
        it (a client that goes away cancels the handler's task meanwhile)."""
        res = self.response
        s = res._session if res is not None else self._session
        if s is None or not s.server.streaming or self._ended:
            return self.body
        if self._body_cb is not None:
            raise RuntimeError("read() after on_body() or stream_to_file(): the body goes there")
        import asyncio
        done = asyncio.get_running_loop().create_future()
        parts: list = []
        before = self._end_cb

        def ended() -> None:
            if not done.done():
                done.set_result(None)
            if before is not None:
                before()

        self.on_body(parts.append)  # (what arrived already comes at once)
        self.on_end(ended)
        await done
        body = b"".join(parts)
        self._body_buf, self._body_start, self._body_end = body, 0, len(body)
        return body

    def on_disconnect(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` if the client goes away before the response has ended
        (server-sent events, long polling).  Same as ``response.on_close``.

        Streaming mode: also when the request's body fails while the handler
        runs (bad chunked framing, past ``max_body``, a body deadline): the
        server answers the error itself (400, 413, 408) and closes, ``on_end``
        never runs, and what the handler sends after it goes nowhere."""
        if self.response is None:
            if self._session is not None:
                return  # answered already: the client can no longer miss the end of it
            raise RuntimeError("on_disconnect() needs a request being answered by a server")
        self.response.on_close = callback

    def pause_body(self) -> None:
        """Streaming bodies: stop reading this body (the rest waits in the kernel)."""
        if self.response is not None:
            self.response.pause_body()

    def resume_body(self) -> None:
        """Streaming bodies: read again after ``pause_body()``."""
        if self.response is not None:
            self.response.resume_body()

    @property
    def tls(self):
        """What TLS negotiated for this request's connection (``powpow.net.tls.TlsInfo``:
        ``version``, ``cipher``, ``alpn``, ``peer_cert``, ``peer_cert_der``), or None over plain TCP."""
        res = self.response
        s = res._session if res is not None else self._session
        return s.tls if s is not None else None

    @property
    def client_ip(self) -> Optional[str]:
        """The client's address, worked out on first use by the server that answers
        (``X-Forwarded-For`` only from its trusted proxies); None without a server."""
        ip = self._client_ip
        if ip is None:
            if self.response is not None:
                ip = self._client_ip = self.response.client_ip()
            elif self._session is not None:
                ip = self._client_ip = self._session.client_ip(self)
        return ip

    def on_body(self, callback: Callable[[bytes], object]) -> None:
        """Streaming mode: ``callback(chunk)`` for each piece of the body as it arrives.

        What arrived before it was set (an ``async def`` handler's task starts after
        the head, often after some of the body) is given to it at once, here."""
        self._body_cb = callback
        self._catch_up()

    def on_end(self, callback: Callable[[], object]) -> None:
        """Streaming mode: ``callback()`` once the whole body has arrived (``body`` is
        complete by then unless ``on_body``/``stream_to_file`` took it).  A body
        that fails first never ends: ``on_disconnect``'s callback runs instead.
        Set after the body ended (an ``async def`` handler), it runs on the next
        loop iteration, after whatever the handler sets in the same step."""
        self._end_cb = callback
        self._release_hold()  # (the body is kept for it: bounded by max_body, as buffered)
        if self._ended and not self._end_due:
            loop = self.loop
            if loop is not None:
                self._end_due = True  # one call, to the callback set last (as before the end)
                loop.defer_call(self._late_end)

    def _late_end(self) -> None:
        self._end_due = False
        cb = self._end_cb
        if cb is None:
            return
        try:
            cb()
        except Exception as exc:
            res = self.response
            s = res._session if res is not None else self._session
            if s is None:
                raise
            s._handler_failed(self, exc)

    def _catch_up(self) -> None:
        """Hand the body callback what arrived before it was set: the bytes kept
        meanwhile, or, once the message is complete, the body (it is then the
        callback's: ``body`` is empty, as when it arrives in pieces)."""
        early = self._stream_buf
        if early:
            self._stream_buf = b""
            self._body_cb(bytes(early))
        elif self._ended and self._body_end > self._body_start:
            body = self.body
            self._body_buf, self._body_start, self._body_end = b"", 0, 0
            self._body_cb(body)
        if self._ended:
            self._close_stream_file()
        self._release_hold()

    def _release_hold(self) -> None:
        if self._held_body:
            self._held_body = False
            self.resume_body()

    def stream_to_file(self, path, mode: int = 0o600) -> None:
        """Streaming mode: write the body to a new file ``path`` (created exclusively,
        ``mode`` 0600 by default); it is closed when the body ends, before ``on_end``
        runs (or when the body fails or the connection drops first)."""
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
        self._file_fd = fd

        def write(chunk) -> None:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]

        self._body_cb = write
        self._catch_up()  # (what arrived already; the file is closed here if that was all)

    def _close_stream_file(self) -> None:
        fd = self._file_fd
        if fd is not None:
            self._file_fd = None
            os.close(fd)

    def form(self, **limits) -> list:
        """The ``multipart/form-data`` body as a list of ``multipart.Part`` (buffered bodies).

        Files above the spool threshold live in 0600 temporary files; names go
        through ``safe_filename``.  ``limits`` go to ``MultipartParser``
        (``max_file_size``, ``max_field_size``, ``max_parts``, ``max_memory_size``
        ...).  Raises ``ParseError`` (400, or 413 for a limit), which the server
        answers.  A second call returns the same parts (middleware then handler:
        the body is parsed, and its files spooled, once).
        """
        if self._form_parts is not None:
            return self._form_parts
        from .multipart import MultipartParser, boundary_from_content_type

        ctype = self.headers.get("content-type") or ""
        if not ctype.lower().startswith("multipart/form-data"):
            raise ParseError(415, "expected multipart/form-data, got %r" % ctype[:100])
        parser = MultipartParser(boundary_from_content_type(ctype), **limits)
        f = self.body_file
        parts: list = []
        try:
            if f is None:
                parts = parser.feed(self.body)
            else:
                f.seek(0)
                while True:
                    chunk = f.read(1 << 16)
                    if not chunk:
                        break
                    parts += parser.feed(chunk)
            parser.close()
        except BaseException:
            # a bad or too large form: the parts made so far hold open files
            for p in parts:
                p.close()
            raise
        # close() (at the end of the response) releases their spooled files
        self._form_parts = parts
        return parts

    def close(self) -> None:
        """Release the spooled body file and the files of ``form()`` parts (idempotent).

        The server calls this when the response has ended: nothing a request
        spooled outlives its answer (the files are unnamed, so they vanish
        with their last descriptor)."""
        f = self.body_file
        if f is not None:
            self.body_file = None
            f.close()
        parts = self._form_parts
        if parts:
            self._form_parts = None
            for p in parts:
                p.close()

    def __repr__(self) -> str:
        return "<Request %s %s HTTP/%s>" % (self.method, self.target, self.version)


def _split_other(req: Request, part: int) -> str:
    """Raw path (part 0) or query (1) of an absolute-form target (RFC 3986 3.2: the
    authority ends at the first "/" or "?"); '*' for asterisk-form; '' for CONNECT."""
    target = req.target
    if target == "*":
        return "*" if part == 0 else ""
    if req.method == "CONNECT":
        return ""
    i = target.find("://")
    if i < 0:  # the parser accepts no other form; be safe anyway
        return "/" if part == 0 else ""
    rest = target[i + 3 :]
    q = rest.find("?")
    s = rest.find("/", 0, q if q >= 0 else len(rest))
    if part == 1:
        return rest[q + 1 :] if q >= 0 else ""
    if s < 0:
        return "/"
    return rest[s : q if q >= 0 else len(rest)]


def _authority(target: str) -> str:
    """The authority of an absolute-form target: after "://", up to the first
    "/" or "?" (RFC 3986 §3.2; the parser refuses "#")."""
    start = target.find("://") + 3
    end = len(target)
    for sep in "/?":
        j = target.find(sep, start, end)
        if j >= 0:
            end = j
    return target[start:end]


def absolute_form_problem(target: str) -> Optional[str]:
    """Why an absolute-form ``target`` names no host this server could answer
    for (the message for the 400), or None when it is fine or of another form.

    The parser's grammar takes any ``scheme://`` followed by target bytes; an
    origin server answers only for http and https (RFC 9110 §4.2), and the
    authority must be a valid ``host[:port]`` -- the Host field's grammar --
    with a host (RFC 9110 §4.2.1: an empty one MUST be rejected), no userinfo
    (§4.2.4: treat its presence as an error; it hides the real host from a
    reader: ``http://trusted.example@evil.example/``) and a port that can
    exist (16 bits, RFC 9293 §3.1).  Runs only for targets that do not start
    with "/" (the server's hot path never calls it)."""
    i = target.find("://")
    if i < 0:
        return None  # '*' or CONNECT's authority-form (the parser checked that)
    scheme = target[:i].lower()
    if scheme != "http" and scheme != "https":
        return "absolute-form target with scheme %r: only http and https are served" % (target[:i][:20],)
    auth = _authority(target)
    if "@" in auth:
        return "userinfo in the target's authority is not allowed (RFC 9110 4.2.4)"
    if not auth or auth[0] == ":":
        return "absolute-form target without a host (RFC 9110 4.2.1)"
    if _HOST.fullmatch(auth.encode("latin-1")) is None:
        return "invalid host in the target's authority: %r" % (auth[:100],)
    if ":" in auth and auth[-1] != "]":  # (an IP literal's colons are inside its brackets)
        port = auth.rpartition(":")[2].lstrip("0")  # digits, maybe none (the grammar)
        if len(port) > 5 or (port and int(port) > 65535):
            return "port out of range in the target's authority: %r" % (auth[:100],)
    return None
