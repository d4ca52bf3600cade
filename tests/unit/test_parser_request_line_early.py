"""RequestParser refuses a complete request line that can never become valid
as soon as its CRLF arrives, with the verdict the whole head would get, and
still decides every input the same however it is split."""
import pytest

import powpow.http.parser as parser_mod
from powpow.http import ParseError, RequestParser

REST = b"Host: a\r\n\r\n"

BAD_LINES = [
    (b"GET /\r\n", 400),                    # HTTP/0.9: no version
    (b"GET \r\n", 400),
    (b"GET\r\n", 400),
    (b"GET / FOO\r\n", 400),
    (b"GET / HTTP/1.2\r\n", 505),
    (b"GET / HTTP/2.0\r\n", 505),
    (b"PRI * HTTP/2.0\r\n", 505),
    (b"GET / http/1.1\r\n", 400),
    (b"G@T / HTTP/1.1\r\n", 400),
    (b"GET a HTTP/1.1\r\n", 400),
    (b"GET /a#b HTTP/1.1\r\n", 400),
    (b"GET * HTTP/1.1\r\n", 400),
    (b"CONNECT /x HTTP/1.1\r\n", 400),
    (b"GET  / HTTP/1.1\r\n", 400),
    (b"\r\n\r\nGET / HTTP/1.2\r\n", 505),    # after empty lines (RFC 9112 2.2)
]

GOOD_LINES = [
    b"GET / HTTP/1.1\r\n",
    b"GET /a?b=c HTTP/1.0\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"CONNECT a.example:443 HTTP/1.1\r\n",
    b"GET http://a/x HTTP/1.1\r\n",
    b"PROPFIND /dav HTTP/1.1\r\n",
    b"\r\nPATCH /p HTTP/1.1\r\n",
]


def verdict(pieces, **kw):
    p = RequestParser(**kw)
    try:
        for piece in pieces:
            p.feed(piece)
        p.feed(b"")
    except ParseError as exc:
        return exc.status, exc.message
    return "need more" if p.pending else "ok"


def ways(data):
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    yield [data[:3], data[3:]]


@pytest.mark.parametrize("line,status", BAD_LINES, ids=[repr(x[0]) for x in BAD_LINES])
def test_bad_line_refused_at_its_crlf_with_the_whole_heads_verdict(line, status):
    whole = verdict([line + REST])
    assert whole[0] == status, whole
    for pieces in ways(line):
        assert verdict(pieces) == whole
    # streaming parser (callbacks) too
    p = RequestParser(on_headers=lambda r: None, on_body=lambda r, c: None)
    with pytest.raises(ParseError) as info:
        p.feed(line)
    assert (info.value.status, info.value.message) == whole
    # one byte short of the CRLF the line may still become anything
    assert verdict([line[:-1]]) == "need more"


@pytest.mark.parametrize("line", GOOD_LINES, ids=[repr(x) for x in GOOD_LINES])
def test_good_line_alone_waits_then_serves(line):
    for pieces in ways(line):
        p = RequestParser()
        for piece in pieces:
            assert p.feed(piece) == []
        assert not p.failed
        [req] = p.feed(REST)
        assert req.headers.get("host") == "a"


@pytest.mark.parametrize("data,status", [
    # the request line's verdict comes first (by byte position): same status whole or split
    (b"GET / HTTP/1.2\r\nX: \x01\r\n\r\n", 505),
    (b"GET / FOO\r\nBad\nLine\r\n\r\n", 400),
    (b"GET / HTTP/1.2\r\n" + b"X: y\r\n" * 40 + b"\r\n", 505),
    (b"GET / HTTP/1.2\r\n" + b"X: " + b"y" * 300 + b"\r\n\r\n", 505),
    (b"GET / HTTP/1.2\r\n" + b"X: " + b"y" * 300, 505),
    # a forbidden byte inside the line comes before it
    (b"GET /\x01 HTTP/1.2\r\n\r\n", 400),
    (b"GET /\x01 HTTP/1.2\r\n", 400),
])
def test_verdict_independent_of_splits_when_more_is_wrong(data, status):
    kw = dict(max_headers=20, max_header_size=256)
    whole = verdict([data], **kw)
    assert whole[0] == status, whole
    for pieces in ways(data):
        assert verdict(pieces, **kw) == whole
    for cut in range(1, len(data)):
        assert verdict([data[:cut], data[cut:]], **kw) == whole, cut


def test_overlong_line_without_crlf_is_414_at_once():
    p = RequestParser(max_request_line=64)
    with pytest.raises(ParseError) as info:
        p.feed(b"GET /" + b"a" * 100)
    assert info.value.status == 414


def test_checked_once_per_message_and_never_on_whole_heads(monkeypatch):
    calls = []
    check = parser_mod._check_request_line

    def counting(buf, pos, cr):
        calls.append(bytes(buf[pos:cr]))
        check(buf, pos, cr)

    monkeypatch.setattr(parser_mod, "_check_request_line", counting)
    one = b"GET /x HTTP/1.1\r\n" + b"X: y\r\n" * 5 + REST
    p = RequestParser()
    assert len(p.feed(one * 3)) == 3
    assert calls == []  # whole heads: the full path validates, nothing more
    got = []
    for i in range(len(one) * 2):  # two messages dripping in byte by byte, keep-alive
        got += p.feed((one * 2)[i : i + 1])
    assert len(got) == 2
    assert calls == [b"GET /x HTTP/1.1"] * 2
