"""Response heads: status lines, the cached Date header, header validation.

Sans-I/O helpers for ``powpow.http.server``.  What matters here is the cost
per response, so status lines are prebuilt bytes, the Date header is rebuilt
at most once a second (RFC 9110 §6.6.1 asks for second resolution), and header
names/values are validated with one ``str.isprintable`` call in the common
case -- a CR, LF or NUL set by a handler raises ``HeaderValueError`` and is
never written (response splitting).
"""
import email.utils
import http
import time
from typing import Iterable, List, Tuple

from ..errors import PowpowError

__all__ = ["HeaderValueError", "status_line", "reason", "DateCache", "encode_headers", "NO_BODY_STATUS"]


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
