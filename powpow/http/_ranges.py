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
import re
import secrets
from typing import List, NamedTuple, Optional, Tuple, Union

__all__ = ["FileRange", "MAX_RANGES", "MAX_OVERLAP_FACTOR", "parse_range",
           "content_range", "multipart_byteranges"]

MAX_RANGES = 16          # nginx: max_ranges unset; Apache: MaxRanges 200; 16 covers PDF viewers
MAX_OVERLAP_FACTOR = 2   # requested bytes may add up to at most 2x the representation
_HUGE = 10 ** 18

_SPEC = re.compile(r"[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*\Z")


class FileRange(NamedTuple):
    """``count`` bytes of the file at ``path`` from ``offset``: the server sends them
    with sendfile (or pread)."""
    path: str
    offset: int
    count: int


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
    path: str, ranges: List[Tuple[int, int]], size: int, content_type: str,
    boundary: Optional[str] = None,
) -> Tuple[str, List[Union[bytes, FileRange]], int]:
    """Body of a multipart/byteranges response (RFC 9110 §14.6, RFC 2046 §5.1.1).

    Returns ``(content_type_value, parts, length)``: the parts alternate between
    ``bytes`` (delimiters and part headers) and ``FileRange`` (file data), so the
    file bytes go out zero-copy.  The boundary is 32 random hex digits: the odds
    that it occurs in the file are 2**-128, so it is not searched for."""
    if boundary is None:
        boundary = secrets.token_hex(16)
    parts: List[Union[bytes, FileRange]] = []
    length = 0
    lead = b"--"
    for first, last in ranges:
        head = ("%s%s\r\nContent-Type: %s\r\nContent-Range: %s\r\n\r\n"
                % (lead.decode(), boundary, content_type, content_range(first, last, size))).encode("latin-1")
        parts.append(head)
        count = last - first + 1
        parts.append(FileRange(path, first, count))
        length += len(head) + count
        lead = b"\r\n--"
    tail = ("\r\n--%s--\r\n" % boundary).encode("latin-1")
    parts.append(tail)
    length += len(tail)
    return "multipart/byteranges; boundary=" + boundary, parts, length
