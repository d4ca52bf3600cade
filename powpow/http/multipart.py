"""Streaming ``multipart/form-data`` parser (RFC 7578 over RFC 2046), sans-I/O.

``MultipartParser(boundary, **limits).feed(data) -> list[Part]`` takes the body
in any split (e.g. from ``RequestParser(on_body=...)``) and returns the parts
completed by it; ``close()`` checks that the closing delimiter arrived.  When a
feed completes parts and then meets an error, it returns those parts and the
next ``feed``/``close`` raises (same results for any split of the input).  Every
rejection raises ``ParseError`` (400, or 413 for a size or count limit).

Invariants:

* Linear: the delimiter search resumes where it stopped; at most
  ``len(delimiter) - 1`` bytes (a possible partial delimiter) are kept back and
  looked at again, everything before is handed on and dropped.
* Part headers go through the same scanner and block rules as request heads
  (no bare CR/LF, no control bytes, token names, limits by byte position).
* Sizes are checked before bytes are kept: a field above ``max_field_size`` or
  a file above ``max_file_size`` is rejected as soon as it grows past the limit.
* File contents stay in memory up to ``spool_threshold``, then go to an unnamed
  temporary file (``O_TMPFILE``: never a name in ``spool_dir``, freed when closed
  or when the process dies); with ``on_data`` they are streamed to the callback
  instead and never kept.  At most ``max_files`` parts per body go to such files
  (one open descriptor each): one more is a 413.  The caller owns the parts it
  gets back and closes them (``Part.close()``, idempotent); a part being filled
  when an error is met is closed by the parser.
* ``Part.filename`` is always passed through ``safe_filename``: the client's
  name is never usable as a path (``raw_filename`` keeps what was sent).
"""
import re
import unicodedata
from typing import Callable, Dict, List, Optional, Tuple, Union

from powpow._ffi import new_line_offsets
from powpow.errors import ParseError

from ._body import SpooledBody
from ._message import Headers
from .parser import _fields, scan_block

__all__ = ["MultipartParser", "Part", "safe_filename", "parse_options_header",
           "boundary_from_content_type"]

# Defaults; precedents: Werkzeug's max_form_parts (1000) and max_form_memory_size,
# Starlette's max_files/max_fields (1000), PHP's max_file_uploads (20).
MAX_PARTS = 1000
MAX_PART_HEADER_SIZE = 8192
MAX_PART_HEADERS = 32
MAX_FIELD_SIZE = 1 << 20
MAX_FILE_SIZE = 1 << 30
MAX_FILES = 16  # parts spooled to temporary files per body: open descriptors per request
MAX_MEMORY_SIZE = 8 << 20  # bytes of all fields and unspooled files together (Werkzeug's max_form_memory_size)
SPOOL_THRESHOLD = 64 << 10
_MAX_PADDING = 64  # transport padding (LWSP) allowed after a delimiter, RFC 2046 5.1.1

# RFC 2046 5.1.1: 1-70 bchars, not ending in a space
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_PARAM = re.compile(r';[ \t]*([^ \t=;]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^;]*)')
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {"COM%d" % i for i in range(1, 10)} \
    | {"LPT%d" % i for i in range(1, 10)}

_PREAMBLE, _AFTER_DELIM, _HEADERS, _DATA, _EPILOGUE = range(5)


def parse_options_header(value: str) -> Tuple[str, Dict[str, str]]:
    """``'form-data; name="a"'`` -> ``('form-data', {'name': 'a'})``; keys lowercased.

    Quoted strings lose their quotes; only ``\\"`` and ``\\\\`` are unescaped,
    because browsers do not escape backslashes in Windows paths.  ``name*``
    parameters (RFC 5987 / 8187, ``UTF-8''%xx``) are decoded and win over the
    plain ones.
    """
    head, _, rest = value.partition(";")
    params: Dict[str, str] = {}
    extended: Dict[str, str] = {}
    for m in _PARAM.finditer(";" + rest):
        key = m.group(1).lower()
        v = m.group(2).strip(" \t")
        if v[:1] == '"':
            v = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if key.endswith("*"):
            charset, _, enc = v.partition("'")
            _, _, enc = enc.partition("'")
            if charset.lower() not in _EXT_CHARSETS:
                continue  # RFC 8187 3.2.1: UTF-8 and ISO-8859-1 only (any other codec is the client's pick)
            try:
                from urllib.parse import unquote

                extended[key[:-1]] = unquote(enc, encoding=charset, errors="strict")
            except (UnicodeError, ValueError):
                continue  # a bad value: the parameter is ignored
        else:
            params[key] = _utf8_or_latin1(v)
    params.update(extended)
    return head.strip(" \t").lower(), params


_EXT_CHARSETS = ("utf-8", "iso-8859-1")


def _utf8_or_latin1(v: str) -> str:
    """A header value came decoded as ISO-8859-1; browsers and curl send the ``name`` and
    ``filename`` of a form part as raw UTF-8 (RFC 7578 4.2, the HTML form encoding):
    read it so when it is valid UTF-8 ("résumé.pdf", not "rÃ©sumÃ©.pdf")."""
    if v.isascii():
        return v
    try:
        return v.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return v


def boundary_from_content_type(value: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, validated (400 if not)."""
    kind, params = parse_options_header(value)
    if kind != "multipart/form-data":
        raise ParseError(400, "not multipart/form-data")
    b = params.get("boundary")
    if b is None or _BOUNDARY.fullmatch(b) is None:
        raise ParseError(400, "missing or invalid multipart boundary")
    return b.encode("ascii")


def safe_filename(name: str, default: str = "upload") -> str:
    """A file name that is safe to join to a directory: no path, no specials.

    Takes the last path component under both ``/`` and ``\\``, drops control
    and shell/Windows-special characters, leading dots (hidden files, ``..``)
    and trailing dots/spaces, renames Windows device names, and caps the UTF-8
    length at 255 bytes keeping the extension.  Empty results become ``default``.
    """
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_CHARS.sub("_", name)
    name = name.lstrip(". ").rstrip(". ")
    if not name:
        return default
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if stem.upper() in _WINDOWS_RESERVED:
        name = "_" + name
    while len(name.encode("utf-8")) > 255:
        if ext and len(ext) < 32 and len(name) > len(ext) + 2:
            name = name[: -len(ext) - 2] + "." + ext
        else:
            name = name[:-1]
    return name


class Part:
    """One form part.  ``value`` holds a field's bytes (or a small file's)."""

    __slots__ = ("headers", "name", "filename", "raw_filename", "content_type",
                 "size", "value", "file", "_sink")

    def __init__(self, headers: Headers, name: str, raw_filename: Optional[str],
                 content_type: str) -> None:
        self.headers = headers
        self.name = name
        self.raw_filename = raw_filename
        self.filename = None if raw_filename is None else safe_filename(raw_filename)
        self.content_type = content_type
        self.size = 0
        self.value = b""
        self.file = None
        self._sink: Optional[SpooledBody] = None

    @property
    def is_file(self) -> bool:
        return self.raw_filename is not None

    def text(self, encoding: str = "utf-8") -> str:
        return self.value.decode(encoding)

    def close(self) -> None:
        """Close the part's temporary file, if any (idempotent)."""
        f = self.file
        if f is not None:
            self.file = None
            f.close()
        sink = self._sink
        if sink is not None:
            self._sink = None
            sink.close()

    def __enter__(self) -> "Part":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<Part name=%r filename=%r size=%d>" % (self.name, self.filename, self.size)


class MultipartParser:
    """Incremental multipart/form-data parser (see the module docstring)."""

    def __init__(
        self,
        boundary: Union[bytes, str],
        on_part: Optional[Callable[[Part], None]] = None,
        on_data: Optional[Callable[[Part, bytes], None]] = None,
        *,
        max_parts: int = MAX_PARTS,
        max_part_header_size: int = MAX_PART_HEADER_SIZE,
        max_part_headers: int = MAX_PART_HEADERS,
        max_field_size: int = MAX_FIELD_SIZE,
        max_file_size: int = MAX_FILE_SIZE,
        max_files: int = MAX_FILES,
        spool_threshold: int = SPOOL_THRESHOLD,
        spool_dir: Optional[str] = None,
        max_memory_size: int = MAX_MEMORY_SIZE,
    ) -> None:
        if isinstance(boundary, bytes):
            boundary = boundary.decode("latin-1")
        if _BOUNDARY.fullmatch(boundary) is None:
            raise ParseError(400, "invalid multipart boundary")
        self._delim = b"\r\n--" + boundary.encode("ascii")
        self.on_part = on_part
        self.on_data = on_data
        self.max_parts = max_parts
        self.max_part_header_size = max_part_header_size
        self.max_part_headers = max_part_headers
        self.max_field_size = max_field_size
        self.max_file_size = max_file_size
        self.max_files = max_files
        self._nfiles = 0
        self.max_memory_size = max_memory_size
        self._in_memory = 0  # bytes of fields and of files not (yet) spooled
        self.spool_threshold = spool_threshold
        self.spool_dir = spool_dir
        # The first delimiter may open the body without a CRLF before it:
        # start from a virtual CRLF so every delimiter looks the same.
        self._buf = bytearray(b"\r\n")
        self._pos = 0
        self._state = _PREAMBLE
        self._resume = None
        self._out = new_line_offsets(max_part_headers + 2)
        self._part: Optional[Part] = None
        self._nparts = 0
        self._error: Optional[ParseError] = None

    @property
    def done(self) -> bool:
        """True once the closing delimiter was seen."""
        return self._state == _EPILOGUE

    def feed(self, data) -> List[Part]:
        if self._error is not None:
            raise self._error
        if self._state == _EPILOGUE:
            return []  # epilogue: ignored (RFC 2046)
        buf = self._buf
        pos = self._pos
        if pos > 4096 and pos * 2 > len(buf):
            del buf[:pos]  # every offset we keep is relative to pos
            pos = 0
        buf += data
        done: List[Part] = []
        try:
            self._pos = self._run(buf, pos, done)
        except ParseError as exc:
            self._error = exc
            self._discard()
            if done:
                return done  # parts before the error first; the next feed/close raises
            raise
        return done

    def close(self) -> None:
        """The body ended: raise ParseError unless the closing delimiter arrived."""
        if self._error is not None:
            raise self._error
        if self._state != _EPILOGUE:
            self._discard()
            self._error = ParseError(400, "multipart body ended before the closing delimiter")
            raise self._error

    def _discard(self) -> None:
        part = self._part
        self._part = None
        if part is not None and part._sink is not None:
            part._sink.discard()
            part._sink = None

    def _run(self, buf: bytearray, pos: int, done: List[Part]) -> int:
        delim = self._delim
        dlen = len(delim)
        while True:
            end = len(buf)
            state = self._state
            if state == _PREAMBLE or state == _DATA:
                i = buf.find(delim, pos)
                if i < 0:
                    keep = end - (dlen - 1)  # a delimiter may straddle the next feed
                    if keep > pos:
                        if state == _DATA:
                            self._data(buf, pos, keep)
                        pos = keep
                    return pos
                if state == _DATA:
                    self._data(buf, pos, i)
                    self._end_part(done)
                pos = i + dlen
                self._state = _AFTER_DELIM
            elif state == _AFTER_DELIM:
                if end - pos < 2:
                    return pos
                if buf[pos] == 45 and buf[pos + 1] == 45:  # "--": close delimiter
                    self._state = _EPILOGUE
                    return end
                j = pos
                while j < end and buf[j] in (32, 9):
                    j += 1
                if j - pos > _MAX_PADDING:
                    raise ParseError(400, "too much padding after a multipart delimiter")
                if end - j < 2:
                    return pos
                if buf[j] != 13 or buf[j + 1] != 10:
                    raise ParseError(400, "malformed multipart delimiter line")
                if self._nparts >= self.max_parts:
                    raise ParseError(413, "more than %d multipart parts" % self.max_parts)
                pos = j + 2
                self._state = _HEADERS
            elif state == _HEADERS:
                lines, n, self._resume = scan_block(
                    buf, pos, end, self._out, self._resume, -1, self.max_part_header_size,
                    self.max_part_headers, "part headers", 400)
                if lines is None:
                    return pos
                blank = lines[n - 1]
                head = bytes(buf[pos:blank])  # frozen: buf is compacted later
                self._begin_part(_fields(head, 0, [x - pos for x in lines], n - 1))
                pos = blank + 2
                self._state = _DATA
            else:
                return end

    def _begin_part(self, headers: Headers) -> None:
        cd = headers.get("content-disposition")
        if cd is None:
            raise ParseError(400, "multipart part without Content-Disposition")
        kind, params = parse_options_header(cd)
        if kind != "form-data" or "name" not in params:
            raise ParseError(400, "Content-Disposition is not form-data with a name")
        part = Part(headers, params["name"], params.get("filename"),
                    headers.get("content-type") or "text/plain")
        self._nparts += 1
        if self.on_data is None:
            part._sink = SpooledBody(self.spool_threshold if part.is_file else self.max_field_size,
                                     self.spool_dir)
        self._part = part
        if self.on_part is not None:
            self.on_part(part)

    def _data(self, buf: bytearray, s: int, e: int) -> None:
        if e <= s:
            return
        part = self._part
        size = part.size + (e - s)  # type: ignore[union-attr]
        if part.raw_filename is None:  # type: ignore[union-attr]
            if size > self.max_field_size:
                raise ParseError(413, "form field larger than %d bytes" % self.max_field_size)
        elif size > self.max_file_size:
            raise ParseError(413, "uploaded file larger than %d bytes" % self.max_file_size)
        part.size = size  # type: ignore[union-attr]
        chunk = bytes(buf[s:e])
        if self.on_data is not None:
            self.on_data(part, chunk)  # type: ignore[arg-type]
        else:
            sink = part._sink  # type: ignore[union-attr]
            if sink.will_spill(len(chunk)):  # type: ignore[union-attr]
                if self._nfiles >= self.max_files:
                    raise ParseError(413, "more than %d uploaded files in temporary files"
                                     % self.max_files)
                self._nfiles += 1
                self._in_memory -= sink.size  # (moves to the file)
            elif sink.file is None:
                self._in_memory += len(chunk)
                if self._in_memory > self.max_memory_size:
                    raise ParseError(413, "form fields and small files larger than %d bytes in all"
                                     % self.max_memory_size)
            sink.write(chunk)  # type: ignore[union-attr]

    def _end_part(self, done: List[Part]) -> None:
        part = self._part
        self._part = None
        sink = part._sink  # type: ignore[union-attr]
        if sink is not None:
            part._sink = None  # type: ignore[union-attr]
            value, f = sink.finish()
            part.value = value  # type: ignore[union-attr]
            part.file = f  # type: ignore[union-attr]
        done.append(part)  # type: ignore[arg-type]
