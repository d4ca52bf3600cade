"""Request conveniences (issue 8): path decoded / raw_path, args, cookies, json()."""
import pytest

from powpow.errors import ParseError
from powpow.http import RequestParser
from powpow.http._message import MAX_QUERY_FIELDS, QueryArgs


def request(target=b"/", headers=b"", body=None):
    head = b"POST " if body is not None else b"GET "
    head += target + b" HTTP/1.1\r\nHost: a\r\n" + headers
    if body is not None:
        head += b"Content-Length: %d\r\n" % len(body)
    (r,) = RequestParser().feed(head + b"\r\n" + (body or b""))
    return r


# --- path / raw_path ---------------------------------------------------------

@pytest.mark.parametrize("target,path,raw_path", [
    (b"/plain/path", "/plain/path", "/plain/path"),
    (b"/a%20b?x=%20", "/a b", "/a%20b"),
    (b"/caf%C3%A9", "/caf\u00e9", "/caf%C3%A9"),
    (b"/a%2Fb", "/a/b", "/a%2Fb"),                 # decoded; raw_path tells them apart
    (b"/%2e%2e/etc", "/../etc", "/%2e%2e/etc"),
    (b"/bad%FFutf8", "/bad\ufffdutf8", "/bad%FFutf8"),  # invalid UTF-8: U+FFFD, no exception
    (b"/half%C3", "/half\ufffd", "/half%C3"),
    (b"/trunc%2", "/trunc%2", "/trunc%2"),         # not an escape: left as is
    (b"/pct%zz", "/pct%zz", "/pct%zz"),
    (b"/nul%00x", "/nul\x00x", "/nul%00x"),
    (b"/plus+sign", "/plus+sign", "/plus+sign"),   # '+' is a space only in queries
    (b"http://h.example/x%41?q=%41", "/xA", "/x%41"),
    (b"http://h.example?q=1", "/", "/"),
])
def test_path_is_percent_decoded_and_raw_path_is_not(target, path, raw_path):
    r = request(target)
    assert (r.path, r.raw_path) == (path, raw_path)
    assert r.path.encode("utf-8")  # always encodable (no lone surrogates)


def test_path_of_other_forms():
    (r,) = RequestParser().feed(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (r.path, r.raw_path, r.query) == ("*", "*", "")
    (r,) = RequestParser().feed(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n")
    assert (r.path, r.raw_path, r.query) == ("", "", "")


# --- args ----------------------------------------------------------------------

def test_args_multi_valued_mapping():
    r = request(b"/s?a=1&b=two+words&a=3&empty=&flag&c=%E2%9C%93&=nameless&a=")
    args = r.args
    assert isinstance(args, QueryArgs)
    assert args["a"] == args.get("a") == "1"
    assert args.get_all("a") == ["1", "3", ""]
    assert args["b"] == "two words" and args["c"] == "\u2713"
    assert args["empty"] == "" and args["flag"] == "" and args[""] == "nameless"
    assert "flag" in args and "nope" not in args
    assert args.get("nope") is None and args.get("nope", "d") == "d" and args.get_all("nope") == []
    with pytest.raises(KeyError):
        args["nope"]
    assert list(args) == args.keys() == ["a", "b", "empty", "flag", "c", ""]
    assert len(args) == 6
    assert args.items() == [("a", "1"), ("b", "two words"), ("a", "3"), ("empty", ""),
                            ("flag", ""), ("c", "\u2713"), ("", "nameless"), ("a", "")]
    assert dict(args) == args.to_dict() and args.to_dict()["a"] == "1"
    assert r.args is args  # parsed once


def test_args_is_immutable_and_empty_without_query():
    args = request(b"/nothing").args
    assert len(args) == 0 and not args and list(args) == [] and args.items() == []
    with pytest.raises(TypeError):
        args["x"] = "1"  # type: ignore[index]
    assert request(b"/q?").args.items() == []
    assert QueryArgs([("a", "1")]) == request(b"/?a=1").args


def test_args_invalid_utf8_is_replaced_not_raised():
    assert request(b"/?n=%FF%FE").args["n"] == "\ufffd\ufffd"


def test_args_field_count_is_bounded():
    ok = b"&".join(b"f%d=1" % i for i in range(MAX_QUERY_FIELDS))
    (r,) = RequestParser(max_request_line=16384).feed(b"GET /?" + ok + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(r.args) == MAX_QUERY_FIELDS
    args = QueryArgs.parse("&".join("f%d=1" % i for i in range(MAX_QUERY_FIELDS)))
    assert len(args) == MAX_QUERY_FIELDS
    with pytest.raises(ParseError) as e:
        QueryArgs.parse("x=1&" * MAX_QUERY_FIELDS)
    assert e.value.status == 400
    r = request(b"/?" + b"&" * 1500)
    with pytest.raises(ParseError) as e:
        r.args.get("x")
    assert e.value.status == 400


# --- cookies -------------------------------------------------------------------

def test_cookies_first_value_wins_across_lines():
    r = request(b"/", headers=b"Cookie: sid=abc; theme=\"dark\"; sid=later\r\nCookie: lang=en; theme=x\r\n")
    assert r.cookies == {"sid": "abc", "theme": "dark", "lang": "en"}
    assert r.cookies is r.cookies


def test_cookies_lenient_and_empty():
    assert request(b"/").cookies == {}
    r = request(b"/", headers=b"Cookie: ;;novalue; =x; a=1=2;  b = 2 ;c=\xff\r\n")
    assert r.cookies == {"a": "1=2", "b": "2", "c": "\xff"}


# --- json() --------------------------------------------------------------------

def test_json_body():
    assert request(b"/j", body=b'{"a": [1, 2.5, null], "s": "\\u00e9"}').json() == {
        "a": [1, 2.5, None], "s": "\u00e9"}
    assert request(b"/j", body='["\u00e9"]'.encode("utf-16")).json() == ["\u00e9"]


@pytest.mark.parametrize("body,why", [
    (b"", "empty"),
    (b"{not json", "invalid JSON"),
    (b'{"a": 1} trailing', "invalid JSON"),
    (b'"\xff\xfe\xfd"', "invalid JSON"),
    (b"[" * 100000 + b"]" * 100000, "invalid JSON"),  # too deep: RecursionError inside
])
def test_json_bad_body_is_a_400(body, why):
    r = request(b"/j", body=body) if body else request(b"/j", body=b"")
    with pytest.raises(ParseError) as e:
        r.json()
    assert e.value.status == 400 and why in e.value.message


def test_json_from_spooled_body(tmp_path):
    body = b'{"k": "' + b"v" * 200000 + b'"}'
    p = RequestParser(spool_threshold=1024, spool_dir=str(tmp_path), max_body=1 << 20)
    got = p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
    for i in range(0, len(body), 4096):
        got += p.feed(body[i : i + 4096])
    (r,) = got
    assert r.body_file is not None and len(r.json()["k"]) == 200000
    r.close()
