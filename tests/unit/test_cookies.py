"""powpow.http.cookies: Set-Cookie writer (strict) and Cookie reader (lenient), as case tables."""
import datetime

import pytest

from powpow.http.cookies import format_set_cookie, parse_cookie_header
from powpow.http.response import HeaderValueError

UTC = datetime.timezone.utc

GOOD = [
    (("sid", "abc"), {}, "sid=abc; Path=/"),
    (("sid", ""), {}, "sid=; Path=/"),
    (("sid", '"quoted"'), {}, 'sid="quoted"; Path=/'),
    (("sid", "a!#$%&'()*+-./:<=>?@[]^_`{|}~"), {}, "sid=a!#$%&'()*+-./:<=>?@[]^_`{|}~; Path=/"),
    (("s", "v"), {"path": None}, "s=v"),
    (("s", "v"), {"path": "/app/x y"}, "s=v; Path=/app/x y"),
    (("s", "v"), {"max_age": 3600}, "s=v; Max-Age=3600; Path=/"),
    (("s", "v"), {"max_age": 0}, "s=v; Max-Age=0; Path=/"),
    (("s", "v"), {"max_age": datetime.timedelta(days=1)}, "s=v; Max-Age=86400; Path=/"),
    (("s", "v"), {"expires": 784111777}, "s=v; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Path=/"),
    (("s", "v"), {"expires": 784111777.9}, "s=v; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Path=/"),
    (("s", "v"), {"expires": datetime.datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)},
     "s=v; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Path=/"),
    (("s", "v"), {"expires": datetime.datetime(1994, 11, 6, 8, 49, 37)},  # naive = UTC
     "s=v; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Path=/"),
    (("s", "v"), {"expires": datetime.datetime(1994, 11, 6, 9, 49, 37,
                                               tzinfo=datetime.timezone(datetime.timedelta(hours=1)))},
     "s=v; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Path=/"),
    (("s", "v"), {"domain": "example.com"}, "s=v; Domain=example.com; Path=/"),
    (("s", "v"), {"domain": ".sub.example-1.com"}, "s=v; Domain=.sub.example-1.com; Path=/"),
    (("s", "v"), {"secure": True, "httponly": True}, "s=v; Path=/; Secure; HttpOnly"),
    (("s", "v"), {"samesite": "lax"}, "s=v; Path=/; SameSite=Lax"),
    (("s", "v"), {"samesite": "STRICT"}, "s=v; Path=/; SameSite=Strict"),
    (("s", "v"), {"samesite": "None", "secure": True}, "s=v; Path=/; Secure; SameSite=None"),
    (("__Secure-id", "1"), {"secure": True}, "__Secure-id=1; Path=/; Secure"),
    (("__Host-id", "1"), {"secure": True}, "__Host-id=1; Path=/; Secure"),
    (("all", "x"), {"max_age": 5, "expires": 0, "domain": "a.b", "path": "/p", "secure": True,
                    "httponly": True, "samesite": "Strict"},
     "all=x; Max-Age=5; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Domain=a.b; Path=/p; Secure; "
     "HttpOnly; SameSite=Strict"),
]


@pytest.mark.parametrize("args,kw,expected", GOOD, ids=[g[2][:40] for g in GOOD])
def test_format_set_cookie(args, kw, expected):
    assert format_set_cookie(*args, **kw) == expected


BAD = [
    (("", "v"), {}, "not a token"),
    (("a b", "v"), {}, "not a token"),
    (("a;b", "v"), {}, "not a token"),
    (("a=b", "v"), {}, "not a token"),
    (("n\r\nSet-Cookie: evil", "v"), {}, "not a token"),
    (("caf\u00e9", "v"), {}, "not a token"),
    (("s", "a b"), {}, "cookie-octet"),
    (("s", "a;b"), {}, "cookie-octet"),
    (("s", "a,b"), {}, "cookie-octet"),
    (("s", 'a"b'), {}, "cookie-octet"),
    (("s", "a\\b"), {}, "cookie-octet"),
    (("s", "v\r\nX: y"), {}, "cookie-octet"),
    (("s", "\u00e9"), {}, "cookie-octet"),
    (("s", '"a b"'), {}, "cookie-octet"),
    (("s", b"v"), {}, "must be str"),
    (("s", "v"), {"path": "/a;Domain=evil.com"}, "path"),
    (("s", "v"), {"path": "/a\r\nX: y"}, "path"),
    (("s", "v"), {"path": ""}, "path"),
    (("s", "v"), {"domain": "evil.com; Secure"}, "domain"),
    (("s", "v"), {"domain": "a\r\n.com"}, "domain"),
    (("s", "v"), {"domain": ""}, "domain"),
    (("s", "v"), {"domain": "-bad.com"}, "domain"),
    (("s", "v"), {"samesite": "sometimes"}, "samesite"),
    (("s", "v"), {"samesite": "None"}, "requires secure"),
    (("s", "v"), {"max_age": -1}, ">= 0"),
    (("s", "v"), {"max_age": 1.5}, "int"),
    (("s", "v"), {"max_age": "10"}, "int"),
    (("s", "v"), {"max_age": True}, "int"),
    (("s", "v"), {"expires": "tomorrow"}, "datetime"),
    (("s", "v"), {"expires": 1e20}, "out of range"),
    (("__Secure-x", "v"), {}, "__Secure-"),
    (("__Host-x", "v"), {"secure": True, "domain": "a.com"}, "__Host-"),
    (("__Host-x", "v"), {"secure": True, "path": "/sub"}, "__Host-"),
]


@pytest.mark.parametrize("args,kw,why", BAD, ids=["%r %r" % (b[0], b[1]) for b in BAD])
def test_format_set_cookie_refuses_unsafe_input(args, kw, why):
    with pytest.raises(HeaderValueError) as e:
        format_set_cookie(*args, **kw)
    assert isinstance(e.value, ValueError)
    assert why in str(e.value)


PARSE = [
    ("a=1", {"a": "1"}),
    ("a=1; b=2", {"a": "1", "b": "2"}),
    ("a=1;b=2;;", {"a": "1", "b": "2"}),
    ("  a = 1 ;\tb=2\t", {"a": "1", "b": "2"}),
    ('a="quoted value"', {"a": "quoted value"}),
    ('a="', {"a": '"'}),
    ("a=1; a=2", {"a": "1"}),
    ("a=x=y", {"a": "x=y"}),
    ("novalue; b=2", {"b": "2"}),
    ("=nameless; b=2", {"b": "2"}),
    ("a=; b=2", {"a": "", "b": "2"}),
    ("a=%20x", {"a": "%20x"}),
    ("a=\u00e9\x00", {"a": "\u00e9\x00"}),
    ("", {}),
    (";;;", {}),
    (None, {}),
    (b"a=1", {}),
]


@pytest.mark.parametrize("header,expected", PARSE, ids=[repr(p[0]) for p in PARSE])
def test_parse_cookie_header(header, expected):
    assert parse_cookie_header(header) == expected


def test_round_trip():
    value = format_set_cookie("sid", "abc123", max_age=60, secure=True, samesite="Lax")
    assert parse_cookie_header(value.split(";", 1)[0]) == {"sid": "abc123"}
