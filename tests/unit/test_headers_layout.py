"""Headers' layout (issue 13): a shared name index, offsets into the head, and the
attributes the ASGI/WSGI adapters read (``_buf``, ``_h0``, ``_ends``, ``_names``, ``_memo``)."""
from powpow.http import RequestParser
from powpow.http._headblock import parse_fields


HEAD = (b"GET /p HTTP/1.1\r\nHost: a.example\r\nX-Two:\t 2 \t\r\nx-two: again\r\n"
        b"Cookie: c=%d\r\nEmpty:   \r\n\r\n")


def _requests():
    p = RequestParser()
    return [p.feed(HEAD % i)[0] for i in (1, 2, 2, 2)]  # the last two repeat: shared Headers


def test_get_and_friends_on_every_path():
    for i, req in zip((1, 2, 2, 2), _requests()):
        h = req.headers
        for _ in range(2):  # the shared Headers memoise: ask twice
            assert h.get("host") == h.get("HOST") == h["Host"] == "a.example"
            assert h.get("x-two") == "2" and h.get_all("X-TWO") == ["2", "again"]
            assert h.get("cookie") == "c=%d" % i
            assert h.get("empty") == "" and h.get("missing") is None and h.get("missing", "d") == "d"
        assert "x-two" in h and "X-Two" in h and "nope" not in h and 3 not in h
        assert list(h) == h.keys() == ["host", "x-two", "x-two", "cookie", "empty"]
        assert h.items()[1] == ("x-two", "2") and len(h) == 5
        assert h.raw[1] == (b"X-Two", b"2") and h.raw[4] == (b"Empty", b"")


def test_adapter_attributes():
    for req in _requests():
        h = req.headers
        buf, s = h._buf, h._h0
        got = []
        for e in h._ends:
            got.append(buf[s:e])
            s = e + 2
        assert got[0] == b"Host: a.example" and got[4] == b"Empty:   " and len(got) == len(h._names) == 5
        memo = h._memo
        assert isinstance(memo, dict) and h._memo is memo


def test_trailer_headers_from_parse_fields():
    block = b"xxA: 1\r\nB:2 \r\n\r\n"
    h = parse_fields(block, 2, [6, 12], 2)
    assert h.get("a") == "1" and h.get("b") == "2" and h._h0 == 2 and list(h._ends) == [6, 12]


def test_path_without_and_with_query():
    p = RequestParser()
    a = p.feed(b"GET /a%20b HTTP/1.1\r\nHost: x\r\n\r\n")[0]
    b = p.feed(b"GET /a%20b?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")[0]
    c = p.feed(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")[0]
    assert (a.path, a.raw_path, a.query) == ("/a b", "/a%20b", "")
    assert (b.path, b.raw_path, b.query) == ("/a b", "/a%20b", "q=1")
    assert (c.path, c.query) == ("*", "")


def test_headers_without_a_signature():
    # names too long for a names signature: the parser's per-line path (as on PyPy)
    names = [b"X-Long-Header-Name-%03d" % i for i in range(30)]
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(n + b": v%d\r\n" % i for i, n in enumerate(names)) + b"\r\n"
    p = RequestParser()
    for _ in range(3):  # new, then the identical-head memo
        h = p.feed(head)[0].headers
        assert h.get("host") == "h" and h.get("X-LONG-HEADER-NAME-029") == "v29" and h.get("x") is None
        assert "x-long-header-name-001" in h and h.get_all("x-long-header-name-002") == ["v2"]
        assert h.raw[30] == (b"X-Long-Header-Name-029", b"v29") and len(h) == 31
