"""powpow.http.cors: preflight, simple requests, credentials, Vary."""
import pytest

from powpow.http.cors import CorsConfigError, CorsOptions, cors_headers

SITE = "https://app.example"


def run(method, opts, **headers):
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    return cors_headers(method, h.get, opts)


def as_dict(headers):
    d = {}
    for k, v in headers:
        assert k not in d, "duplicate header %s" % k
        d[k] = v
    return d


def test_no_origin_is_not_cors():
    # (``*`` without credentials: every answer says so, also without Origin -- caches)
    assert run("GET", CorsOptions()) == (False, None, [("Access-Control-Allow-Origin", "*")])
    # OPTIONS without Origin is an ordinary OPTIONS, not a preflight
    assert run("OPTIONS", CorsOptions(), access_control_request_method="PUT") == (
        False, None, [("Access-Control-Allow-Origin", "*")])


def test_simple_request_wildcard():
    pre, status, headers = run("GET", CorsOptions(), origin=SITE)
    assert (pre, status) == (False, None)
    assert as_dict(headers) == {"Access-Control-Allow-Origin": "*"}


def test_simple_request_listed_origin_echoed_with_vary():
    opts = CorsOptions(allow_origins=[SITE, "http://localhost:8080"],
                       expose_headers=["X-Total", "ETag"])
    _, _, headers = run("POST", opts, origin=SITE)
    assert as_dict(headers) == {
        "Access-Control-Allow-Origin": SITE, "Vary": "Origin",
        "Access-Control-Expose-Headers": "X-Total, ETag",
    }
    # a disallowed origin gets no Access-Control-* at all, but Vary so caches split
    pre, status, headers = run("GET", opts, origin="https://evil.example")
    assert (pre, status, headers) == (False, None, [("Vary", "Origin")])
    # origins compare exactly: scheme and port matter
    assert run("GET", opts, origin="http://app.example")[2] == [("Vary", "Origin")]
    assert run("GET", opts, origin="http://localhost:8081")[2] == [("Vary", "Origin")]


def test_credentials_never_wildcard():
    opts = CorsOptions(allow_origins=("*",), allow_credentials=True)
    _, _, headers = run("GET", opts, origin=SITE)
    d = as_dict(headers)
    assert d["Access-Control-Allow-Origin"] == SITE
    assert d["Access-Control-Allow-Credentials"] == "true"
    assert d["Vary"] == "Origin"
    pre, status, headers = run("OPTIONS", opts, origin=SITE, access_control_request_method="GET")
    d = as_dict(headers)
    assert status == 204 and d["Access-Control-Allow-Origin"] == SITE
    assert d["Access-Control-Allow-Credentials"] == "true"


def test_preflight_allowed():
    opts = CorsOptions(allow_origins=[SITE], allow_methods=["GET", "PUT", "DELETE"],
                       allow_headers=["Content-Type", "X-Token"], max_age=3600)
    pre, status, headers = run("OPTIONS", opts, origin=SITE,
                               access_control_request_method="PUT",
                               access_control_request_headers="content-type, X-Token")
    assert (pre, status) == (True, 204)
    assert as_dict(headers) == {
        "Access-Control-Allow-Origin": SITE,
        "Access-Control-Allow-Methods": "GET, PUT, DELETE",
        "Access-Control-Allow-Headers": "content-type, x-token",
        "Access-Control-Max-Age": "3600",
        "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    }


PREFLIGHT_REFUSALS = [
    ({"origin": "https://evil.example", "access_control_request_method": "GET"}, "origin"),
    ({"origin": SITE, "access_control_request_method": "PATCH"}, "method"),
    ({"origin": SITE, "access_control_request_method": "put"}, "methods are case-sensitive"),
    ({"origin": SITE, "access_control_request_method": "PUT",
      "access_control_request_headers": "x-token, x-other"}, "header"),
    ({"origin": SITE, "access_control_request_method": "PUT",
      "access_control_request_headers": "x token"}, "header not a token"),
    ({"origin": SITE, "access_control_request_method": ""}, "empty method"),
]


@pytest.mark.parametrize("headers,why", PREFLIGHT_REFUSALS, ids=[c[1] for c in PREFLIGHT_REFUSALS])
def test_preflight_refused(headers, why):
    opts = CorsOptions(allow_origins=[SITE], allow_methods=["GET", "PUT"], allow_headers=["X-Token"])
    pre, status, out = run("OPTIONS", opts, **headers)
    assert (pre, status) == (True, 403), why
    assert not any(k.startswith("Access-Control-") for k, _ in out)


def test_preflight_wildcards_echo():
    opts = CorsOptions(allow_methods=["*"], allow_headers=["*"], max_age=None)
    pre, status, headers = run("OPTIONS", opts, origin=SITE,
                               access_control_request_method="PROPFIND",
                               access_control_request_headers="X-A,,X-B")
    d = as_dict(headers)
    assert status == 204
    assert d["Access-Control-Allow-Origin"] == "*"
    assert d["Access-Control-Allow-Methods"] == "PROPFIND"
    assert d["Access-Control-Allow-Headers"] == "x-a, x-b"
    assert "Access-Control-Max-Age" not in d


def test_options_without_request_method_is_a_simple_request():
    pre, status, headers = run("OPTIONS", CorsOptions(), origin=SITE)
    assert (pre, status) == (False, None)
    assert as_dict(headers) == {"Access-Control-Allow-Origin": "*"}


def test_origin_predicate():
    opts = CorsOptions(allow_origins=lambda o: o.endswith(".example"))
    assert as_dict(run("GET", opts, origin=SITE)[2]) == {
        "Access-Control-Allow-Origin": SITE, "Vary": "Origin"}
    assert run("GET", opts, origin="https://x.test")[2] == [("Vary", "Origin")]


def test_null_origin_only_when_listed():
    assert run("GET", CorsOptions(allow_origins=[SITE]), origin="null")[2] == [("Vary", "Origin")]
    d = as_dict(run("GET", CorsOptions(allow_origins=["null"]), origin="null")[2])
    assert d["Access-Control-Allow-Origin"] == "null"


@pytest.mark.parametrize("kwargs", [
    {"allow_origins": ["app.example"]},
    {"allow_origins": ["https://app.example/path"]},
    {"allow_origins": ["https://a\r\nX: y"]},
    {"allow_headers": ["X-A\n"]},
    {"expose_headers": ["a, b"]},
    {"max_age": -1},
])
def test_bad_config(kwargs):
    with pytest.raises(CorsConfigError):
        CorsOptions(**kwargs)
