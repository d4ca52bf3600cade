"""Review 7: CORS answers a shared cache may hand to other requests; origins with a
trailing slash; content types of HTML (no charset) and of the other text types."""
import pytest

from powpow.http._mime import content_type_for
from powpow.http.cors import CorsConfigError, CorsOptions, cors_headers

SITE = "https://app.example"
EVIL = "https://evil.example"


def run(method, opts, **headers):
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    return cors_headers(method, h.get, opts)


def policy(name):
    return {
        "any": CorsOptions(),
        "any+expose": CorsOptions(expose_headers=["ETag", "Content-Range"]),
        "list": CorsOptions(allow_origins=[SITE]),
        "predicate": CorsOptions(allow_origins=lambda o: o == SITE),
        "any+credentials": CorsOptions(allow_origins=["*"], allow_credentials=True),
    }[name]


# (policy, request Origin or None, the headers every non-preflight answer gets)
NOT_PREFLIGHT = [
    # "*" without credentials: the same answer for everyone, so always say so
    ("any", None, [("Access-Control-Allow-Origin", "*")]),
    ("any", EVIL, [("Access-Control-Allow-Origin", "*")]),
    ("any", "a, b", [("Access-Control-Allow-Origin", "*")]),  # nothing is echoed: nothing to refuse
    ("any+expose", None, [("Access-Control-Allow-Origin", "*"),
                          ("Access-Control-Expose-Headers", "ETag, Content-Range")]),
    # the answer depends on the origin: Vary: Origin on every answer, with or without one
    ("list", None, [("Vary", "Origin")]),
    ("list", EVIL, [("Vary", "Origin")]),
    ("list", SITE, [("Access-Control-Allow-Origin", SITE), ("Vary", "Origin")]),
    ("predicate", None, [("Vary", "Origin")]),
    ("predicate", SITE, [("Access-Control-Allow-Origin", SITE), ("Vary", "Origin")]),
    ("any+credentials", None, [("Vary", "Origin")]),
    ("any+credentials", SITE, [("Access-Control-Allow-Origin", SITE), ("Vary", "Origin"),
                               ("Access-Control-Allow-Credentials", "true")]),
]


@pytest.mark.parametrize("name,origin,expected", NOT_PREFLIGHT)
def test_answers_a_cache_may_reuse_carry_acao_star_or_vary_origin(name, origin, expected):
    for method in ("GET", "HEAD", "POST"):
        headers = {"origin": origin} if origin is not None else {}
        assert run(method, policy(name), **headers) == (False, None, expected), method
    # OPTIONS without Origin is not a preflight, whatever else it says
    assert run("OPTIONS", policy(name), access_control_request_method="GET")[:2] == (False, None)


def test_headers_returned_are_the_callers_to_extend():
    opts = CorsOptions()
    first = run("GET", opts)[2]
    first.append(("X-Mine", "1"))
    assert run("GET", opts)[2] == [("Access-Control-Allow-Origin", "*")]


def test_preflights_unchanged():
    opts = CorsOptions(allow_origins=[SITE], allow_headers=["range"])
    pre, status, headers = run("OPTIONS", opts, origin=SITE, access_control_request_method="GET",
                               access_control_request_headers="Range")
    assert (pre, status) == (True, 204) and ("Access-Control-Allow-Headers", "range") in headers
    assert run("OPTIONS", opts, origin=EVIL, access_control_request_method="GET")[:2] == (True, 403)


@pytest.mark.parametrize("configured,kept", [
    ("https://app.example/", "https://app.example"),      # copied from the address bar
    ("http://localhost:8080/", "http://localhost:8080"),
    ("https://app.example", "https://app.example"),
    ("null", "null"),
    ("*", "*"),
])
def test_one_trailing_slash_is_dropped(configured, kept):
    opts = CorsOptions(allow_origins=[configured])
    assert opts.allow_origins == (kept,)
    if kept not in ("*", "null"):
        assert run("GET", opts, origin=kept)[2][0] == ("Access-Control-Allow-Origin", kept)


@pytest.mark.parametrize("bad", ["https://app.example/path", "https://app.example//", "https://",
                                 "https:///", "app.example/", "*/"])
def test_other_paths_are_still_refused(bad):
    with pytest.raises(CorsConfigError):
        CorsOptions(allow_origins=[bad])


@pytest.mark.parametrize("name,expected", [
    ("index.html", "text/html"),        # the page's <meta charset> / BOM decides
    ("OLD.HTM", "text/html"),
    ("notes.txt", "text/plain; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("data.json", "application/json; charset=utf-8"),
    ("feed.xml", "application/xml; charset=utf-8"),
    ("page.xhtml", "application/xhtml+xml; charset=utf-8"),
    ("logo.svg", "image/svg+xml; charset=utf-8"),
    ("pic.png", "image/png"),
])
def test_content_types(name, expected):
    assert content_type_for(name) == expected
