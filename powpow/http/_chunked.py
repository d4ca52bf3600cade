"""Chunked transfer coding (RFC 9112 7.1): the chunk-size line and the CRLF after
each chunk's data.  The chunk data itself and the trailer section are handled
by the parser's state machine (data is copied straight to the body sink; the
trailer section is a head block, see _headblock.py).

Strict, as everywhere in the parser: 1 to 16 hex digits (no sign, no "0x", no
leading whitespace; more digits would overflow 64 bits or be padding), optional
well-formed extensions, CRLF only.  A chunk-size line longer than
``max_chunk_line`` is a 400 at the byte that passes the limit (extensions are
an old slowloris vector).  Incremental like scan_block: a line arriving in
pieces is scanned once overall, and the verdict never depends on the split.
"""
import re

from powpow._ffi import NATIVE, scan_lines

from ._grammar import bad_byte, err
from ._headblock import resume_state

__all__ = ["parse_chunk_size", "expect_crlf"]

MAX_HEX_DIGITS = 16  # a 64-bit size; more digits are "absurdly long" (also leading zeros)
HEXDIGITS = b"0123456789abcdefABCDEF"
CHUNK_EXT = re.compile(
    rb"(?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
    rb"(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|\"(?:[^\"\\]|\\.)*\"))?)*"
)


def parse_chunk_size(buf, pos: int, end: int, out1, resume, max_chunk_line: int):
    """Parse the chunk-size line starting at ``pos``.

    ``out1`` is a one-slot line-offset array; ``resume`` the state returned by
    the previous call for this line, or None.  Returns ``(size, next_pos, None)``
    -- ``next_pos`` just after the line's CRLF -- or ``(-1, pos, resume)`` when
    the line is not complete yet.  Raises ParseError(400) on a malformed line.
    """
    frm = pos if resume is None else pos + resume[1]
    lim = pos + max_chunk_line + 2
    scan_end = end if end < lim else lim
    if not NATIVE:
        # The pure scanner's cost grows with the span (numpy, above NUMPY_MIN_SPAN: slow
        # to call on PyPy): scan the line, not max_chunk_line ahead of it.  Same verdict:
        # the scan still stops at the first CR, LF or forbidden byte before this CRLF.
        j = buf.find(b"\r\n", frm, scan_end)
        if j >= 0:
            scan_end = j + 2
    n, bad = scan_lines(buf, frm, scan_end, out1, pos) if frm < scan_end else (0, -1)
    if n == 0:
        if bad >= 0:
            raise bad_byte(buf, bad, "chunk-size line")
        if scan_end >= lim:
            raise err(400, "chunk-size line longer than %d bytes" % max_chunk_line)
        return -1, pos, resume_state(buf, pos, [], scan_end)
    cr = out1[0]
    semi = buf.find(b";", pos, cr)
    se = cr if semi < 0 else semi
    size = buf[pos:se].rstrip(b" \t") if semi >= 0 else buf[pos:se]
    if not size or size.translate(None, HEXDIGITS):
        raise err(400, "chunk size is not a hex number")
    if len(size) > MAX_HEX_DIGITS:
        raise err(400, "chunk size too long")
    if semi >= 0 and CHUNK_EXT.fullmatch(buf, se, cr) is None:
        raise err(400, "malformed chunk extension")
    return int(size, 16), cr + 2, None


def expect_crlf(buf, pos: int, end: int, got: int):
    """Consume the CRLF after a chunk's data; ``got`` bytes of it were seen already.

    Returns ``(pos, got)``; the CRLF is complete when ``got == 2``."""
    while got < 2 and pos < end:
        if buf[pos] != (13 if got == 0 else 10):
            raise err(400, "missing CRLF after chunk data")
        pos += 1
        got += 1
    return pos, got
