"""``Response.send``'s fast path (a remembered head for the common 200) must write
exactly what the general head builder writes, and never a stale head."""
import random

from powpow.http import response as response_mod
from powpow.http.response import Response

from ._http import raw, serving


class _Date:
    def __init__(self, header: bytes) -> None:
        self.header = header


class _Server:
    access_log = False


class _Session:
    closing = False
    in_batch = True  # no flush: the test reads the segments

    def __init__(self, date: bytes) -> None:
        self.date = _Date(date)
        self.server = _Server()

    def answer_closes(self) -> None:
        pass


class _Req:
    def __init__(self, method="GET", version="1.1", keep_alive=True) -> None:
        self.method = method
        self.version = version
        self.keep_alive = keep_alive


def _general(session, req, body, headers, status=None):
    """What the general path writes: pairs as lists (unhashable) or an empty
    mapping keep ``send`` off its fast path, and encode the same."""
    res = Response(session, req)
    res.send(body, status=status, headers=[list(h) for h in headers] if headers else {})
    return b"".join(res._segments)


def _sent(session, req, body, headers, status=None):
    res = Response(session, req)
    res.send(body, status=status, headers=headers)
    assert res.ended and res.headers_sent
    return b"".join(res._segments)


def test_fast_head_equals_general_head_on_random_answers():
    rnd = random.Random(13)
    names = ["Content-Type", "X-A", "Cache-Control", "Set-Cookie", "Vary"]
    dates = [b"Date: Tue, 01 Dec 2026 21:00:0%d GMT\r\n" % i for i in range(3)]
    lists = [None, []] + [[(rnd.choice(names), "v%d" % rnd.randrange(5)) for _ in range(rnd.randrange(1, 4))]
                          for _ in range(6)]
    for _ in range(400):
        session = _Session(rnd.choice(dates))
        headers = rnd.choice(lists)
        if headers and rnd.random() < 0.2:
            headers.append(("X-Grown", str(rnd.randrange(100))))  # the same list object, new content
        body = b"x" * rnd.choice([0, 1, 13, 13, 200, 20000])
        req = rnd.choice([_Req(), _Req(), _Req("HEAD"), _Req(version="1.0"), _Req(keep_alive=False)])
        status = rnd.choice([None, None, 200, 201, 204])
        want = _general(session, req, body, headers, status)
        got = _sent(session, req, body, headers, status)
        assert got == want, (headers, len(body), req.__dict__, status)


def test_mutated_pairs_and_framing_headers_never_reuse_a_head():
    session = _Session(b"Date: Tue, 01 Dec 2026 21:00:00 GMT\r\n")
    pair = ["X-Count", "1"]
    hs = [pair]  # mutable pairs: never remembered
    assert b"X-Count: 1\r\n" in _sent(session, _Req(), b"a", hs)
    pair[1] = "2"
    assert b"X-Count: 2\r\n" in _sent(session, _Req(), b"a", hs)
    framed = [("Content-Length", "1"), ("Connection", "close")]
    out = _sent(session, _Req(), b"a", framed)
    assert out.count(b"Content-Length") == 1 and b"Connection: close\r\n" in out
    assert response_mod._last_head[0] is not framed
    out = _sent(session, _Req(), b"abc", [("X-A", "1")])
    assert out.endswith(b"Content-Length: 3\r\n\r\nabc")


def test_keep_alive_connection_with_changing_header_list_on_the_wire():
    hs = [("Content-Type", "text/plain")]

    def handler(req, res):
        if req.path == "/grow":
            hs.append(("X-Grown", "yes"))
        res.send(req.path.encode() * 2, headers=hs)

    with serving(handler) as srv:
        data = raw(srv.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /grow HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /bb HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                             b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    resp = [part.partition(b"\r\n\r\n") for part in data.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    heads = [h for h, _, _ in resp]
    assert [b for _, _, b in resp] == [b"/a/a", b"/a/a", b"/grow/grow", b"/bb/bb", b"", b"/a/a"]
    assert b"X-Grown" not in heads[1] and b"X-Grown: yes" in heads[2]
    assert b"Connection: keep-alive" in heads[3] and b"Content-Length: 6" in heads[3]
    assert b"Content-Length: 4" in heads[4]  # HEAD: the length a GET would have, no body
    assert b"Connection: close" in heads[5] and b"X-Grown: yes" in heads[5]
