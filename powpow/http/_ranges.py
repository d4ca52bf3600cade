"""Byte ranges: the ``Range`` header (RFC 9110 §14.1-14.2) and multipart/byteranges
bodies (RFC 9110 §14.6), for the static-file planner.

What: ``parse_range(value, size)`` turns a ``Range`` field value and the length
of the selected representation into one of three answers:

* ``None``  - ignore the header and send the whole representation (200):
  a syntax error, a unit other than ``bytes``, or a request we refuse to honour
  (§14.2: "a server MAY ignore the Range header field");
* ``[]``    - nothing satisfiable: 416 with ``Content-Range: bytes */size``;
* ``[(first, last), ...]`` - inclusive byte positions, sorted, coalesced,
  non-empty, every one inside ``0..size-1``: 206.

Policy where the RFC leaves room (each one a test case):
* More than ``MAX_RANGES`` range-specs, or requested lengths that add up to
  more than ``MAX_OVERLAP_FACTOR`` times the representation -> ignored (200).
  That is the CVE-2011-3192 ("Apache killer") defence: a client must not make
  us send many times the file, or thousands of tiny parts.  Ignoring beats 416
  because the client still gets a correct answer.
* Ranges that overlap or touch are coalesced, and the parts are sent in
  ascending order (§14.2 allows coalescing "regardless of the order in which
  the corresponding range-spec appeared").  After coalescing the body can never
  be longer than the file plus part headers.
* A zero-length representation has no byte that a Content-Range could name:
  ``bytes=-N`` (satisfiable by §14.1.1, but empty) is ignored -> 200 with the
  empty body; ``bytes=0-`` and friends are unsatisfiable -> 416 ``bytes */0``.
* Numbers longer than 18 digits are read as 10**18 (no file is that long):
  no int() of a hostile 5000-digit string (CPython 3.11 refuses them anyway).
* Empty list elements (``bytes=0-1,,2-3``) are allowed (RFC 9110 §5.6.1 asks
  recipients to accept them); a header with no range-spec at all is invalid.
"""
import os
import re
from typing import List, Optional, Tuple, Union

__all__ = ["FilePart", "FileRange", "MAX_RANGES", "MAX_OVERLAP_FACTOR", "parse_range",
           "content_range", "multipart_byteranges"]

MAX_RANGES = 16          # nginx: max_ranges unset; Apache: MaxRanges 200; 16 covers PDF viewers
MAX_OVERLAP_FACTOR = 2   # requested bytes may add up to at most 2x the representation
_HUGE = 10 ** 18

_SPEC = re.compile(r"[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*\Z")


class FilePart:
    """``count`` bytes from ``offset`` of an already open file: the server sends them
    with sendfile (or pread) from ``fd``.

    ``fd`` is a descriptor opened while planning (``O_RDONLY | O_NOFOLLOW |
    O_CLOEXEC``) and owned by this part until ``take_fd()`` hands it over (the
    part then holds ``None``); ``close()`` closes it if still held (idempotent).
    ``path`` is the real path, for logs only: nothing re-opens it.  A part
    dropped with its fd still held closes it when collected (a safety net; the
    owner should call ``close()``)."""

    __slots__ = ("fd", "path", "offset", "count")

    def __init__(self, fd: Optional[int], path: str, offset: int, count: int) -> None:
        self.fd = fd
        self.path = path
        self.offset = offset
        self.count = count

    def take_fd(self) -> int:
        """Hand the descriptor over: the caller now owns (and must close) it."""
        fd = self.fd
        if fd is None:
            raise ValueError("the file descriptor of %r was already taken or closed" % (self,))
        self.fd = None
        return fd

    def close(self) -> None:
        fd = self.fd
        if fd is not None:
            self.fd = None
            os.close(fd)

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            self.fd = None
            try:
                os.close(fd)
            except OSError:
                pass

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FilePart):
            return NotImplemented
        return (self.path, self.offset, self.count) == (other.path, other.offset, other.count)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "FilePart(fd=%r, path=%r, offset=%d, count=%d)" % (
            self.fd, self.path, self.offset, self.count)


# The name this class had when parts were paths re-opened at send time.
FileRange = FilePart


def _int(digits: str) -> int:
    return _HUGE if len(digits) > 18 else int(digits)


def parse_range(value: str, size: int) -> Optional[List[Tuple[int, int]]]:
    """Satisfiable ranges of ``value`` for a representation of ``size`` bytes.

    See the module docstring for the three kinds of answer."""
    unit, eq, rest = value.partition("=")
    if not eq or unit.strip(" \t").lower() != "bytes":
        return None
    wanted: List[Tuple[int, int]] = []
    specs = 0
    suffix_on_empty = False
    requested = 0
    for element in rest.split(","):
        if not element.strip(" \t"):
            continue
        m = _SPEC.match(element)
        if m is None:
            return None
        first_s, last_s = m.group(1), m.group(2)
        specs += 1
        if specs > MAX_RANGES:
            return None
        if first_s:
            first = _int(first_s)
            last = _int(last_s) if last_s else _HUGE
            if last < first:
                return None  # §14.1.1: invalid -> the whole field is ignored
            if first >= size:
                continue     # unsatisfiable on its own
            last = min(last, size - 1)
        elif last_s:
            n = _int(last_s)
            if n == 0:
                continue
            if size == 0:
                suffix_on_empty = True
                continue
            first, last = max(0, size - n), size - 1
        else:
            return None      # "-" alone
        requested += last - first + 1
        wanted.append((first, last))
    if specs == 0:
        return None
    if suffix_on_empty:
        return None
    if requested > MAX_OVERLAP_FACTOR * size:
        return None
    wanted.sort()
    merged: List[Tuple[int, int]] = []
    for first, last in wanted:
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def content_range(first: int, last: int, size: int) -> str:
    return "bytes %d-%d/%d" % (first, last, size)


def multipart_byteranges(
    fd: int, path: str, ranges: List[Tuple[int, int]], size: int, content_type: str,
    boundary: Optional[str] = None,
) -> Tuple[str, List[Union[bytes, FilePart]], int]:
    """Body of a multipart/byteranges response (RFC 9110 §14.6, RFC 2046 §5.1.1).

    Returns ``(content_type_value, parts, length)``: the parts alternate between
    ``bytes`` (delimiters and part headers) and ``FilePart`` (file data), so the
    file bytes go out zero-copy.  Every ``FilePart`` gets its own descriptor,
    ``os.dup(fd)`` (``fd`` itself stays the caller's; on an ``OSError`` the dups
    made so far are closed and the error propagates).  The boundary is 32 random
    hex digits: the odds that it occurs in the file are 2**-128, so it is not
    searched for."""
    if boundary is None:
        import secrets  # with hmac and hashlib (OpenSSL): only for multi-range answers

        boundary = secrets.token_hex(16)
    parts: List[Union[bytes, FilePart]] = []
    length = 0
    lead = b"--"
    try:
        for first, last in ranges:
            head = ("%s%s\r\nContent-Type: %s\r\nContent-Range: %s\r\n\r\n"
                    % (lead.decode(), boundary, content_type, content_range(first, last, size))
                    ).encode("latin-1")
            parts.append(head)
            count = last - first + 1
            parts.append(FilePart(os.dup(fd), path, first, count))
            length += len(head) + count
            lead = b"\r\n--"
    except BaseException:
        for p in parts:
            if isinstance(p, FilePart):
                p.close()
        raise
    tail = ("\r\n--%s--\r\n" % boundary).encode("latin-1")
    parts.append(tail)
    length += len(tail)
    return "multipart/byteranges; boundary=" + boundary, parts, length
