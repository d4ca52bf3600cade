"""PEP 3333 rules for what an application hands the server, and ``wsgi.file_wrapper``.

``start_response`` validation: the status must look like ``"200 OK"``, a final
status in 200..599 (a 1xx is interim, RFC 9110 §15.2); headers
must be ``(str, str)`` pairs, names tokens, values latin-1 without CR/LF/NUL
(response splitting), and never hop-by-hop (``Connection``,
``Transfer-Encoding``, ...: the server frames the message and manages the
connection).  Validated header lists and status strings are cached (apps
reuse theirs), so the common case costs one dict lookup.

Also the environ's name mapping (``header_key``), ``PATH_INFO`` decoding, and
the Host of an absolute-form request (``absolute_form_host``, shared with ASGI).
"""
import os
import sys
from typing import Optional
from urllib.parse import unquote_to_bytes

from ..http._grammar import HOST as _HOST
from ..http.response import check_header

# RFC 9110 §7.6.1 / PEP 3333: a WSGI application must not set these.
HOP_BY_HOP = frozenset(["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade", "proxy-connection"])

_NORMAL, _LENGTH = 0, 1
_header_kind: dict = {}   # validated header name -> _NORMAL / _LENGTH
_environ_key: dict = {}   # lowercased request header name -> environ key


_checked_lists: dict = {}  # header lists already validated (apps reuse theirs) -> (length, plain)
_status_codes: dict = {}


def _check_headers(headers):
    """Validate ``start_response``'s headers; return the declared Content-Length (or None)."""
    try:
        key: Optional[tuple] = tuple(headers)
        hit = _checked_lists.get(key)
    except TypeError:  # not a sequence, or [name, value] lists (allowed, not hashable)
        key = hit = None
    if hit is not None:
        return hit
    length = _validate_headers(headers)
    # the list without Content-Length: when the body matches it, powpow writes
    # the length itself (no framing-header path, one cached head block for
    # every length)
    plain = None if length is None else [h for h in headers if _header_kind.get(h[0]) is not _LENGTH]
    hit = (length, plain)
    if key is not None and len(_checked_lists) < 1024:
        _checked_lists[key] = hit
    return hit


def _validate_headers(headers):
    if headers.__class__ is not list:
        if not isinstance(headers, (list, tuple)):
            raise TypeError("WSGI response headers must be a list of (name, value) tuples, not %s"
                            % type(headers).__name__)
    length = None
    kinds = _header_kind
    for item in headers:
        if len(item) != 2:
            raise TypeError("WSGI response header must be a (name, value) pair, got %r" % (item,))
        name, value = item
        if value.__class__ is not str:
            raise TypeError("WSGI response header %r: the value must be str, not %s"
                            % (name, type(value).__name__))
        kind = kinds.get(name)
        if kind is None:
            if name.__class__ is not str:
                raise TypeError("WSGI response header name must be str, not %s" % type(name).__name__)
            lname = name.lower()
            if lname in HOP_BY_HOP:
                raise AssertionError("hop-by-hop header %r is not allowed from a WSGI application "
                                     "(PEP 3333); the server manages the connection" % name)
            check_header(name, "")
            kind = _LENGTH if lname == "content-length" else _NORMAL
            if len(kinds) < 2048:
                kinds[name] = kind
        if not (value.isascii() and value.isprintable()):
            check_header(name, value)  # CR/LF/NUL and controls raise HeaderValueError
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError("WSGI response header %s: value %r is not ISO-8859-1" % (name, value)) from None
        if kind is _LENGTH:
            v = value.strip()
            if not (v.isascii() and v.isdigit()) or len(v) > 18:
                raise ValueError("Content-Length %r is not a decimal length" % (value,))
            n = int(v)
            if length is not None and n != length:
                raise ValueError("two different Content-Length headers: %d and %d" % (length, n))
            length = n
    return length


def _status_code(status) -> int:
    code = _status_codes.get(status)
    if code is not None:
        return code
    code = _parse_status(status)
    if len(_status_codes) < 256:
        _status_codes[status] = code
    return code


def _parse_status(status) -> int:
    if status.__class__ is not str:
        raise TypeError("WSGI status must be a str such as '200 OK', not %s" % type(status).__name__)
    if len(status) < 4 or status[3] != " " or not status[:3].isdigit() or status[0] == "0":
        raise ValueError("WSGI status must look like '200 OK', got %r" % (status,))
    if "\r" in status or "\n" in status:
        raise ValueError("WSGI status contains CR/LF: %r" % (status,))
    code = int(status[:3])
    if code < 200 or code > 599:
        # RFC 9110 §15.2: a 1xx is interim (a client keeps waiting for the final
        # answer); 100 Continue is the server's to send, when the app reads the body
        raise ValueError("WSGI status %r: a final response needs a status in 200..599%s" % (
            status, " (1xx responses are interim, RFC 9110 §15.2)" if code < 200 else ""))
    return code


class FileWrapper:
    """``wsgi.file_wrapper``: a file to send.  Served with ``sendfile`` when it wraps a
    regular file with a ``fileno()``; otherwise iterated in ``block_size`` pieces."""

    def __init__(self, filelike, block_size: int = 65536) -> None:
        self.filelike = filelike
        self.block_size = block_size
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self):
        read = self.filelike.read
        size = self.block_size
        while True:
            data = read(size)
            if not data:
                return
            yield data


class _FilePart:
    __slots__ = ("fd", "offset", "count")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count

    def take_fd(self) -> int:
        fd = self.fd
        self.fd = -1
        return fd


class _FilePlan:
    """What ``Response.send_plan`` executes: a head and one file range (our own dup'd fd)."""

    def __init__(self, status: int, headers, part: _FilePart) -> None:
        self.status = status
        self.headers = headers
        self.content_length = part.count
        self.parts = [part]
        self.reason = None

    def close(self) -> None:
        fd = self.parts[0].fd
        if fd >= 0:
            self.parts[0].fd = -1
            os.close(fd)


# -------------------------------------------------------------------------- environ

def path_info(raw_path: str) -> str:
    """PEP 3333: PATH_INFO is the percent-decoded path's *bytes*, as a latin-1 str."""
    if "%" not in raw_path:
        return raw_path
    return unquote_to_bytes(raw_path).decode("latin-1")


def absolute_form_host(target: str) -> Optional[str]:
    """The host an absolute-form target names, to use in place of the Host field.

    RFC 9112 3.2.2: an origin server MUST ignore Host for such a request and use
    the target's authority, else a proxy that routed on the target and an app
    that trusts Host see two different hosts.  Returns ``host[:port]`` without
    userinfo (RFC 9110 7.2), ``""`` when that is no valid host (the request
    then has none: nothing the Host grammar would refuse reaches the app), and
    None for a target of another form ('*', CONNECT's authority-form).
    """
    i = target.find("://")
    if i < 0:
        return None
    start = i + 3
    end = len(target)
    for sep in "/?":  # RFC 3986 3.2: the authority ends at the first "/" or "?"
        j = target.find(sep, start, end)
        if j >= 0:
            end = j
    host = target[start:end].rpartition("@")[2]
    return host if _HOST.fullmatch(host.encode("latin-1")) is not None else ""


def header_key(name: str) -> str:
    """``content-type`` -> ``CONTENT_TYPE``; ``x-foo`` -> ``HTTP_X_FOO``; ``""`` for a
    name with ``_`` (dropped: it would look like the dashed name in the environ)."""
    key = _environ_key.get(name)
    if key is None:
        up = name.upper().replace("-", "_")
        if "_" in name:
            key = ""
        else:
            key = up if up in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + up
        if len(_environ_key) < 4096:
            _environ_key[name] = key
    return key


STDERR = sys.stderr
