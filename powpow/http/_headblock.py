"""Head-block scanning: a CRLF-terminated block of lines that ends with an empty
line -- a request head, a chunked trailer section, a multipart part head.

Shared by the request parser and the multipart parser.  ``scan_block`` is
incremental: given the state it returned for a previous, shorter prefix of the
same block it scans only the new bytes, so a block dripping in costs O(n).
Verdicts depend on byte positions only, never on how the input was split:
for any prefix the answer is "need more" or the answer for the whole input.
Offsets returned are absolute offsets into the caller's buffer (the CR of
each line); the resume state holds them relative to the block start, so the
caller may move the buffer between calls.
"""
from typing import Any, Callable, List, Optional

from powpow._ffi import scan_lines

from ._grammar import NAMES, bad_byte, err, new_name
from ._message import Headers


def parse_fields(buf, pos: int, lines, last: int) -> Headers:
    """Validate field lines lines[:last] of a trailer section; return them as Headers."""
    names: List[str] = []
    ends: List[int] = []
    s = pos
    for i in range(last):
        e = lines[i]
        c = buf.find(b":", s, e)
        k = NAMES.get(buf[s:c]) if c >= 0 else None
        if k is None:
            k = new_name(buf, s, c)
        names.append(k)
        ends.append(e)
        s = e + 2
    return Headers(buf, pos, names, ends)


def scan_block(buf, pos: int, end: int, out, resume, max_first: int, max_block: int,
               max_fields: int, what: str, status: int, n: int = -1, bad: int = -1,
               check_first: Optional[Callable[[Any, int, int], None]] = None):
    """Incremental scan of a CRLF line block that ends with an empty line.

    ``max_first >= 0``: the first line is a request line with its own limit (414)
    and does not count as a field.  ``check_first(buf, start, cr)``, if given,
    validates that line (raising ParseError) the first time it is complete and
    free of forbidden bytes, before any verdict on the bytes behind it -- except
    for a whole head with no other error, which the caller validates itself.
    So an invalid request line is refused as soon as its CRLF arrives, not
    after the rest of a head that may never come (RFC 9112 3: an invalid
    request-line SHOULD get 400), and still at the same byte however the input
    is split.  It runs at most once per block: a resume state that holds a
    line means it ran already.  ``resume`` is the state returned by the
    previous call for the same block (offsets relative to ``pos``) or None; ``n``
    and ``bad`` may pass in a scan of ``buf[pos:...]`` already done by the caller.
    Errors are decided by byte position, so for any prefix of the input the
    verdict is either "need more" or the verdict for the whole input.

    Returns ``(lines, count, resume)``: absolute CR offsets of every line (the
    last one the empty line) or ``(None, 0, new_resume)`` to wait for more.
    """
    if resume is None:
        prev: List[int] = []
        frm = pos
    else:
        prev = [pos + r for r in resume[0]]
        frm = pos + resume[1]
    head = max_first >= 0
    lim = pos + (max_first + max_block + 4 if head else max_block + 2)
    scan_end = end if end < lim else lim
    if n < 0:
        if frm < scan_end:
            n, bad = scan_lines(buf, frm, scan_end, out, prev[-1] + 2 if prev else pos)
        else:
            n, bad = 0, -1
    lines = prev + [out[i] for i in range(n)]
    total = len(lines)
    if head:
        t1 = pos + max_first + 1
        if total == 0 or lines[0] > pos + max_first:
            if bad >= 0 and bad <= t1:
                raise bad_byte(buf, bad, "request line")
            if total or scan_end > t1:
                raise err(414, "request line longer than %d bytes" % max_first)
            return None, 0, resume_state(buf, pos, lines, scan_end)
        h0 = lines[0] + 2
        nfields = total - 1
        if prev or (0 <= bad < lines[0]):
            check_first = None  # checked by an earlier call, or a forbidden byte comes first
    else:
        h0 = pos
        nfields = total
        check_first = None
    t2 = h0 + max_block + 1
    if total >= 1 and lines[-1] == (lines[-2] + 2 if total >= 2 else pos):
        if lines[-1] - h0 > max_block:
            problem = err(status, "%s larger than %d bytes" % (what, max_block))
        elif nfields - 1 > max_fields:
            problem = err(status, "more than %d fields in %s" % (max_fields, what))
        else:
            return lines, total, None
    elif nfields > max_fields:
        problem = err(status, "more than %d fields in %s" % (max_fields, what))
    elif bad >= 0:
        if bad <= t2:
            problem = bad_byte(buf, bad, what)
        else:
            problem = err(status, "%s larger than %d bytes" % (what, max_block))
    elif scan_end > t2:
        problem = err(status, "%s larger than %d bytes" % (what, max_block))
    else:
        problem = None
    if check_first is not None:
        check_first(buf, pos, lines[0])  # the request line's verdict comes first (by position)
    if problem is not None:
        raise problem
    return None, 0, resume_state(buf, pos, lines, scan_end)


def resume_state(buf, pos: int, lines: List[int], scan_end: int):
    # resume at a pending CR (its LF may come next), else where the scan ended
    frm = scan_end - 1 if scan_end > pos and buf[scan_end - 1] == 13 else scan_end
    return [x - pos for x in lines], frm - pos
