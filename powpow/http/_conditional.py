"""Validators and conditional requests (RFC 9110 §8.8, §13) for static files.

What: HTTP-date formatting and parsing (§5.6.7), entity-tag lists (§8.8.3),
and ``evaluate_preconditions``, which applies If-Match, If-Unmodified-Since,
If-None-Match and If-Modified-Since in the order of §13.2.2 and says whether
the answer is 412, 304 or "go on".  ``if_range_allows`` decides §13.1.5.

Invariants:
* Dates compare at one-second resolution (HTTP-dates have no finer grain):
  ``last_modified`` here is always an int of whole seconds.
* A field that does not parse is ignored, as if absent (§13.1.3, §13.1.4
  say so for the date fields; for entity-tag lists we drop what does not
  parse and keep what does), so garbage can never turn a 200 into a 304.
* If-None-Match uses weak comparison, If-Match and If-Range strong
  comparison (§8.8.3.2): a ``W/`` tag never satisfies If-Match or If-Range.

Why no clock: the module stays pure.  §13.1.3 lets an origin ignore an
If-Modified-Since later than its own clock; we do not (the mtime comparison
is already correct for every date a well-behaved cache sends).
"""
import re
from typing import Callable, List, Optional, Tuple

from ._dates import MONTHS, http_date

__all__ = ["http_date", "parse_http_date", "parse_etag_list", "evaluate_preconditions",
           "if_range_allows"]

_MONTH_NUMBER = {m: i + 1 for i, m in enumerate(MONTHS)}


# The three forms a recipient MUST accept (§5.6.7): IMF-fixdate, RFC 850, asctime.
_IMF = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) ([A-Z][a-z]{2}) (\d{4}) "
                  r"(\d\d):(\d\d):(\d\d) GMT\Z")
_RFC850 = re.compile(r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
                     r"(\d\d)-([A-Z][a-z]{2})-(\d\d) (\d\d):(\d\d):(\d\d) GMT\Z")
_ASCTIME = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) ([ \d]\d) "
                      r"(\d\d):(\d\d):(\d\d) (\d{4})\Z")


def parse_http_date(value: str) -> Optional[int]:
    """Seconds since the epoch for an HTTP-date, or None when it is not one."""
    value = value.strip(" \t")
    m = _IMF.match(value)
    if m:
        day, mon, year, hh, mm, ss = m.groups()
    else:
        m = _RFC850.match(value)
        if m:
            day, mon, yy, hh, mm, ss = m.groups()
            # §5.6.7: a two-digit year more than 50 years ahead is in the past.
            year = str(2000 + int(yy) if int(yy) < 70 else 1900 + int(yy))
        else:
            m = _ASCTIME.match(value)
            if not m:
                return None
            mon, day, hh, mm, ss, year = m.groups()
    month = _MONTH_NUMBER.get(mon)
    if month is None:
        return None
    d, h, mi, s = int(day), int(hh), int(mm), int(ss)
    if not (1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        return None
    import calendar  # with locale: only when a date field is present

    return calendar.timegm((int(year), month, d, h, mi, min(s, 59), 0, 0, 0))


_ETAG = re.compile(r'[ \t]*(W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|\Z)')


def parse_etag_list(value: str) -> Optional[List[Tuple[bool, str]]]:
    """``[(weak, opaque_tag_with_quotes), ...]``; None means ``*``.

    Elements that do not parse end the list (what came before is kept)."""
    if value.strip(" \t") == "*":
        return None
    tags: List[Tuple[bool, str]] = []
    pos, end = 0, len(value)
    while pos < end:
        # skip empty list elements (§5.6.1)
        while pos < end and value[pos] in " \t,":
            pos += 1
        if pos >= end:
            break
        m = _ETAG.match(value, pos)
        if m is None:
            break
        tags.append((m.group(1) is not None, m.group(2)))
        pos = m.end()
    return tags


def _strong_match(header: str, etag: str) -> bool:
    tags = parse_etag_list(header)
    if tags is None:
        return True  # "*": a current representation exists (we only get here if it does)
    return any(not weak and tag == etag for weak, tag in tags)


def _weak_match(header: str, etag: str) -> bool:
    bare = etag[2:] if etag.startswith("W/") else etag
    tags = parse_etag_list(header)
    if tags is None:
        return True
    return any(tag == bare for _weak, tag in tags)


def evaluate_preconditions(
    method: str, get_header: Callable[[str], Optional[str]], etag: str, last_modified: int,
) -> Optional[int]:
    """412, 304 or None (serve), per RFC 9110 §13.2.2 steps 1-4.

    ``etag`` is the strong tag of the selected representation (with quotes);
    ``last_modified`` its modification time in whole seconds."""
    if_match = get_header("if-match")
    if if_match is not None:
        if not _strong_match(if_match, etag):
            return 412
    else:
        ius = get_header("if-unmodified-since")
        if ius is not None:
            date = parse_http_date(ius)
            if date is not None and last_modified > date:
                return 412
    safe = method == "GET" or method == "HEAD"
    inm = get_header("if-none-match")
    if inm is not None:
        if _weak_match(inm, etag):
            return 304 if safe else 412
    elif safe:
        ims = get_header("if-modified-since")
        if ims is not None:
            date = parse_http_date(ims)
            if date is not None and last_modified <= date:
                return 304
    return None


def if_range_allows(value: str, etag: str, last_modified: int) -> bool:
    """True when the Range may be honoured (§13.1.5): the validator matches strongly.

    A date matches only if it equals Last-Modified exactly; an entity-tag only if
    both are strong and identical.  Anything unparseable -> False (send 200)."""
    value = value.strip(" \t")
    if value.startswith('"'):
        return value == etag and not etag.startswith("W/")
    if value.startswith("W/"):
        return False
    date = parse_http_date(value)
    return date is not None and date == last_modified
