"""HTTP/1.1 request grammar (RFC 9112): limits, byte tables and the validators
the parser calls once per request line, field name or framing field.

Invariants: everything here is a pure function of its arguments (plus the two
bounded caches below, which only ever hold validated input), raises only
``ParseError`` carrying the status to answer with, and never "repairs" input.
The parser's hot loop lives in parser.py; what is here runs on the slow paths
(an unusual method, target or version, a name not yet in the cache) or once
per request whose framing fields need deciding (``framing``).
"""
import re
from typing import List, Optional, Tuple

from powpow.errors import ParseError

# Defaults, configurable per parser.  Precedents: Apache LimitRequestLine and
# LimitRequestFieldSize are 8190, LimitRequestFields 100; nginx
# large_client_header_buffers is 4 x 8k; llhttp's header limit was 8 KiB until
# Node 13 (16 KiB since), h11 uses 16 KiB for a whole incomplete event.
MAX_REQUEST_LINE = 8192
MAX_HEADER_SIZE = 8192
MAX_HEADERS = 100
# nginx client_max_body_size defaults to 1m; bodies above client_body_buffer_size
# (8k/16k there; larger here since memory is cheaper than a file per request) go
# to a temporary file.
MAX_BODY = 1 << 20
SPOOL_THRESHOLD = 64 << 10
# chunk-size line including extensions (which nobody uses legitimately);
# llhttp and h11 bound these too, a bound that stops "extension" slowloris.
MAX_CHUNK_LINE = 4096
MAX_CL_DIGITS = 18  # below 2**63 without the cost of a big-int parse

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
BAD_TARGET = re.compile(rb"[^\x21-\x7e]|#")
# bytes allowed in a request-target: VCHAR except "#" (checked with one translate)
TARGET_CHARS = bytes(range(0x21, 0x7F)).replace(b"#", b"")
ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*://[^/?]")
HOSTPORT = rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)"
AUTHORITY = re.compile(HOSTPORT + rb":[0-9]+")
HOST = re.compile(rb"(?:" + HOSTPORT + rb"(?::[0-9]*)?)?")  # empty is allowed (RFC 9112 3.2)
VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")

METHODS = {m.encode(): m for m in (
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")}
# First-byte dispatch: the most common method for each first byte is checked
# with one startswith; anything else goes through method_slow.
FIRST: List[Optional[Tuple[bytes, str, int]]] = [None] * 256
for _m in ("GET", "POST", "HEAD", "DELETE", "OPTIONS", "CONNECT", "TRACE"):
    FIRST[ord(_m[0])] = (_m.encode() + b" ", _m, len(_m) + 1)
del _m

# pp_request_line's verdict (powpow._ffi.scan_head) -> (method, target start
# relative to the line, HTTP/1.1?) when the parser has nothing left to check:
# a known method other than CONNECT, HTTP/1.1 or 1.0, a clean origin-form target
# (the last item: the target has no query).
RL_FAST: List[Optional[Tuple[str, int, bool, bool]]] = [None] * 256
for _k, _m in enumerate(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")):
    if _m != "CONNECT":
        for _nq in (0, 128):
            RL_FAST[(_k + 1) | 16 | 64 | _nq] = (_m, len(_m) + 1, True, _nq != 0)
            RL_FAST[(_k + 1) | 32 | 64 | _nq] = (_m, len(_m) + 1, False, _nq != 0)
del _k, _m, _nq

# Validated header names (raw bytes -> lowercased str).  A hit proves the name
# is a token; shared by all parsers, bounded so hostile clients cannot grow it.
NAMES: dict = {}
NAMES_MAX = 4096
HOSTS_OK: dict = {}
HOSTS_MAX = 1024
# Fields that decide framing or connection handling, looked up per field line.
SPECIAL = {"host": 1, "content-length": 2, "transfer-encoding": 3,
           "connection": 4, "expect": 5, "upgrade": 6}


def err(status: int, message: str) -> ParseError:
    return ParseError(status, message)


def new_name(buf, s: int, c: int) -> str:
    """Validate a field name not yet in the cache; return it lowercased."""
    if c < 0:
        raise err(400, "header line without a colon")
    name = buf[s:c]
    if not name:
        raise err(400, "empty header name")
    if TOKEN.fullmatch(name) is None:
        if name[:1] in (b" ", b"\t"):
            raise err(400, "obs-fold or whitespace before a header line")
        if name[-1:] in (b" ", b"\t"):
            raise err(400, "whitespace between header name and colon")
        raise err(400, "invalid character in header name")
    k = name.decode("ascii").lower()
    if len(NAMES) < NAMES_MAX:
        NAMES[bytes(name)] = k
    return k


def method_slow(buf, pos: int, c0: int):
    sp = buf.find(b" ", pos, c0)
    if sp < 0:
        raise err(400, "malformed request line")
    mb = bytes(buf[pos:sp])
    m = METHODS.get(mb)
    if m is None:
        if TOKEN.fullmatch(mb) is None:
            raise err(400, "invalid method")
        m = mb.decode("ascii")
    return m, sp + 1


def check_version(buf, ts: int, c0: int):
    """Slow path of the version check; returns (version, end of target)."""
    sp = buf.rfind(b" ", ts, c0)
    if sp < 0:
        raise err(400, "request line has no HTTP version (HTTP/0.9 is not supported)")
    v = buf[sp + 1 : c0]
    if v == b"HTTP/1.1":
        return "1.1", sp
    if v == b"HTTP/1.0":
        return "1.0", sp
    # target before version: a garbled line is 400, a clean one with another version 505
    if sp <= ts or BAD_TARGET.search(buf, ts, sp) is not None:
        raise err(400, "malformed request line")
    if VERSION.fullmatch(v) is not None:
        raise err(505, "HTTP version not supported: %s" % v.decode("ascii"))
    raise err(400, "malformed HTTP version")


def check_target(buf, ts: int, te: int, method: str) -> None:
    if te <= ts:
        raise err(400, "empty request target")
    if BAD_TARGET.search(buf, ts, te) is not None:
        raise err(400, "invalid character in request target")
    if method == "CONNECT":
        if AUTHORITY.fullmatch(buf, ts, te) is None:
            raise err(400, "CONNECT needs an authority-form target (host:port)")
        return
    c = buf[ts]
    if c == 47:  # origin-form
        return
    if c == 42 and te == ts + 1:  # '*'
        if method != "OPTIONS":
            raise err(400, "asterisk-form target is only valid for OPTIONS")
        return
    if ABSOLUTE.match(buf, ts, te) is None:
        raise err(400, "invalid request target")


def bad_byte(buf, bad: int, what: str) -> ParseError:
    b = buf[bad]
    if b == 13:
        return err(400, "bare CR in " + what)
    if b == 10:
        return err(400, "bare LF in " + what)
    return err(400, "control character 0x%02x in %s" % (b, what))


def list_tokens(value: bytes) -> List[bytes]:
    """Elements of a comma-separated list field, lowercased; empty elements ignored."""
    return [t for t in (x.strip(b" \t") for x in value.lower().split(b",")) if t]


def framing(buf, specials, v11: bool, method: str, max_body: int):
    """Content-Length, Transfer-Encoding, Connection, Expect, Upgrade.

    ``specials`` is a flat sequence of (code, colon offset, CR offset) triples
    (codes from ``SPECIAL``).  Returns (content_length, chunked, keep_alive,
    expect_continue, upgrade, conn_close, special) -- a pure function of the
    header bytes, version, method and max_body, so the parser can reuse it for
    an identical header section.
    """
    cl = None
    codings: Optional[List[bytes]] = None
    conn: List[bytes] = []
    upgrade = None
    expect = False
    for j in range(0, len(specials), 3):
        code = specials[j]
        v = buf[specials[j + 1] + 1 : specials[j + 2]].strip(b" \t")
        if code == 2:  # Content-Length
            if not v.isdigit():
                raise err(400, "Content-Length is not a plain decimal number")
            digits = v.lstrip(b"0") or b"0"
            if len(digits) > MAX_CL_DIGITS:
                raise err(400, "Content-Length overflows")
            value = int(digits)
            if cl is not None and cl != value:
                raise err(400, "conflicting Content-Length headers")
            cl = value
        elif code == 3:  # Transfer-Encoding
            if codings is None:
                codings = []
            elements = [x.strip(b" \t") for x in v.lower().split(b",")]
            if b"" in elements:
                # "chunked," / ", chunked" / an empty line beside "chunked":
                # nginx, Apache, h11 and llhttp all refuse these.
                raise err(400, "empty element in Transfer-Encoding")
            codings += elements
        elif code == 4:  # Connection
            conn += list_tokens(v)
        elif code == 5:  # Expect
            if v11 and v.lower() == b"100-continue":
                expect = True
        else:  # Upgrade
            upgrade = v
    chunked = False
    if codings is not None:
        if cl is not None:
            raise err(400, "both Transfer-Encoding and Content-Length")
        if not v11:
            raise err(400, "Transfer-Encoding in an HTTP/1.0 request")
        if not codings:
            raise err(400, "empty Transfer-Encoding")
        for t in codings:
            if TOKEN.fullmatch(t.split(b";", 1)[0].rstrip(b" \t")) is None:
                raise err(400, "invalid transfer coding")
        if codings.count(b"chunked") > 1:
            raise err(400, "chunked applied twice")
        if codings[-1] != b"chunked":
            raise err(400, "last transfer coding is not chunked")
        if len(codings) > 1:
            raise err(501, "transfer coding not implemented: %s"
                       % codings[0].decode("latin-1"))
        chunked = True
    elif cl is not None and cl > max_body:
        raise err(413, "Content-Length %d exceeds %d" % (cl, max_body))
    if method == "CONNECT" and (cl or chunked):
        raise err(400, "CONNECT request with a body")
    keep_alive = v11
    conn_close = False
    proto = None
    if conn:
        if b"close" in conn:
            keep_alive = False
            conn_close = True
        elif not v11 and b"keep-alive" in conn:
            keep_alive = True
        if upgrade is not None and v11 and b"upgrade" in conn:
            if not upgrade:
                raise err(400, "empty Upgrade header")
            proto = upgrade.decode("latin-1")
    special = bool(cl) or chunked or not keep_alive or proto is not None or method == "CONNECT"
    return cl, chunked, keep_alive, expect, proto, conn_close, special
