"""Cookies (RFC 6265): a strict ``Set-Cookie`` writer and a lenient ``Cookie`` reader.

Writing is strict because a value we emit lands in a header: a ``;``, CR or LF
smuggled into a name, value, Path or Domain would set attributes or headers the
application never meant (response splitting, cookie injection).  So
``format_set_cookie`` refuses -- ``HeaderValueError`` (a ``ValueError``) at the
call -- anything outside the RFC 6265 4.1.1 grammar instead of escaping it:
encode values yourself (e.g. ``urllib.parse.quote``) when they may hold spaces,
commas, semicolons, quotes or backslashes.  It also refuses combinations every
current browser drops silently: ``SameSite=None`` without ``Secure``, and the
``__Secure-`` / ``__Host-`` name prefixes without what they require.

Reading is lenient because what arrives comes from browsers and proxies in the
wild: ``parse_cookie_header`` never raises; malformed pairs are skipped, the
first value of a name wins (RFC 6265 5.4 orders the most specific first), and
surrounding double quotes are removed.
"""
import re
from typing import Dict, Optional, Union

TYPE_CHECKING = False  # mypy treats this name as True
if TYPE_CHECKING:
    import datetime

__all__ = ["format_set_cookie", "parse_cookie_header"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# cookie-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
_COOKIE_OCTETS = re.compile(r'[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*')
# av-octet: any CHAR except CTLs or ";" (RFC 6265 4.1.1 path-value / extension-av)
_AV_OCTETS = re.compile(r"[\x20-\x3a\x3c-\x7e]*")
# Domain: a host name (LDH labels; IDNs in their A-label form), optional leading dot
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(r"\.?" + _LABEL + r"(?:\." + _LABEL + r")*")
_SAMESITE = {"strict": "Strict", "lax": "Lax", "none": "None"}

# datetime and email.utils (~10 ms together) load only when a cookie carries
# Max-Age as a timedelta or an Expires: the Cookie reader needs neither.
Expires = Union["datetime.datetime", int, float]


def _error(message: str) -> ValueError:
    # Imported here: response.py imports this module for Response.set_cookie.
    from .response import HeaderValueError
    return HeaderValueError(message)


def format_set_cookie(
    name: str,
    value: str,
    *,
    max_age: Optional[Union[int, "datetime.timedelta"]] = None,
    expires: Optional[Expires] = None,
    path: Optional[str] = "/",
    domain: Optional[str] = None,
    secure: bool = False,
    httponly: bool = False,
    samesite: Optional[str] = None,
) -> str:
    """The value of one ``Set-Cookie`` header (without the ``Set-Cookie:`` name).

    ``name``: a token.  ``value``: cookie-octets (no space, ``"``, ``,``, ``;``
    or ``\\``), or the same wrapped in double quotes; may be empty.
    ``max_age``: seconds (int >= 0, or a ``timedelta``); 0 deletes the cookie.
    ``expires``: an aware ``datetime`` (a naive one is taken as UTC) or a Unix
    time, written as an IMF-fixdate.  ``path``: default ``"/"``; None leaves it
    out.  ``domain``: a host name, or None (host-only cookie).  ``samesite``:
    ``"Strict"``, ``"Lax"`` or ``"None"`` (any case); ``"None"`` needs
    ``secure=True``.  Raises ``HeaderValueError`` (a ``ValueError``) on anything
    unsafe or that browsers would reject.
    """
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        raise _error("cookie name %r is not a token (RFC 6265 4.1.1)" % (name,))
    if not isinstance(value, str):
        raise _error("cookie value must be str, got %s" % type(value).__name__)
    inner = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if _COOKIE_OCTETS.fullmatch(inner) is None:
        raise _error("cookie value %r has characters outside cookie-octet "
                     "(space, '\"', ',', ';', '\\\\', controls or non-ASCII): encode it first"
                     % (value[:100],))
    parts = [name + "=" + value]
    if max_age is not None:
        if not isinstance(max_age, int):
            import datetime
            if isinstance(max_age, datetime.timedelta):
                max_age = int(max_age.total_seconds())
        if isinstance(max_age, bool) or not isinstance(max_age, int):
            raise _error("max_age must be an int number of seconds, got %r" % (max_age,))
        if max_age < 0:
            raise _error("max_age must be >= 0 (use 0 to delete the cookie), got %d" % max_age)
        parts.append("Max-Age=%d" % max_age)
    if expires is not None:
        parts.append("Expires=" + _http_date(expires))
    if domain is not None:
        if not isinstance(domain, str) or _DOMAIN.fullmatch(domain) is None:
            raise _error("cookie domain %r is not a host name" % (domain,))
        parts.append("Domain=" + domain)
    if path is not None:
        if not isinstance(path, str) or _AV_OCTETS.fullmatch(path) is None or not path:
            raise _error("cookie path %r is empty or has ';' or control characters" % (path,))
        parts.append("Path=" + path)
    if secure:
        parts.append("Secure")
    if httponly:
        parts.append("HttpOnly")
    if samesite is not None:
        canonical = _SAMESITE.get(str(samesite).lower())
        if canonical is None:
            raise _error("samesite must be 'Strict', 'Lax' or 'None', got %r" % (samesite,))
        if canonical == "None" and not secure:
            raise _error("SameSite=None requires secure=True (browsers drop the cookie)")
        parts.append("SameSite=" + canonical)
    # Name prefixes (RFC 6265bis 4.1.3): browsers reject such cookies otherwise.
    if name.startswith("__Secure-") and not secure:
        raise _error("a __Secure- cookie requires secure=True")
    if name.startswith("__Host-") and (not secure or domain is not None or path != "/"):
        raise _error("a __Host- cookie requires secure=True, path='/' and no domain")
    return "; ".join(parts)


def _http_date(when: Expires) -> str:
    import datetime
    from email.utils import formatdate

    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        ts = when.timestamp()
    elif isinstance(when, (int, float)) and not isinstance(when, bool):
        ts = float(when)
    else:
        raise _error("expires must be a datetime or a Unix time, got %r" % (when,))
    try:
        return formatdate(ts, usegmt=True)  # IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    except (OverflowError, OSError, ValueError):
        raise _error("expires %r is out of range" % (when,)) from None


def parse_cookie_header(value: Optional[str]) -> Dict[str, str]:
    """``"a=1; b=2"`` -> ``{"a": "1", "b": "2"}``.  Never raises.

    Pairs are split on ``;``; whitespace around names and values is removed,
    and one pair of double quotes around a value; pairs without ``=`` or with
    an empty name are skipped; the first value of a name wins.  Values are
    returned as sent (no percent-decoding: cookie encodings vary by site).
    """
    out: Dict[str, str] = {}
    if not value or not isinstance(value, str):
        return out
    for pair in value.split(";"):
        name, eq, val = pair.partition("=")
        if not eq:
            continue
        name = name.strip(" \t")
        if not name or name in out:
            continue
        val = val.strip(" \t")
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        out[name] = val
    return out
