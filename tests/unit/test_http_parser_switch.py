"""RequestParser: protocol switches (Upgrade, CONNECT) accepted or declined, and
the bytes it holds (``buffered``, ``held``) -- issue 8 items 2, 3 and 25.

Every case is fed whole, byte by byte and in random pieces, in both parser
modes (buffered: no callbacks; streaming: on_headers/on_body/on_message_complete).
"""
import pytest

from powpow.http import ParseError, RequestParser

try:  # tests/unit is a package in this repo; also work if it stops being one
    from .test_http_parser_cases import splits
except ImportError:
    from test_http_parser_cases import splits

MODES = ("whole", "bytes", "random")

H2C = (b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
       b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
NEXT = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
AFTER = b"POST /after HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"


def feed_pieces(p, data, mode, seed=0):
    out = []
    for piece in splits(data, mode, seed):
        out.extend(p.feed(piece))
    return out


class Recorder:
    """A streaming parser whose callbacks record what they saw; ``act`` runs in on_headers."""

    def __init__(self, on_headers_act=None, on_complete_act=None, **kw):
        self.events = []
        self.on_headers_act = on_headers_act
        self.on_complete_act = on_complete_act
        self.p = RequestParser(on_headers=self._h, on_body=self._b, on_message_complete=self._c, **kw)

    def _h(self, req):
        self.events.append(("head", req.path))
        if self.on_headers_act is not None:
            self.on_headers_act(self.p, req)

    def _b(self, req, chunk):
        if self.events and self.events[-1][0] == "body" and self.events[-1][1] == req.path:
            self.events[-1] = ("body", req.path, self.events[-1][2] + chunk)
        else:
            self.events.append(("body", req.path, chunk))

    def _c(self, req):
        self.events.append(("done", req.path, self.p.upgraded))
        if self.on_complete_act is not None:
            self.on_complete_act(self.p, req)


# --- declined switches: the connection goes on as HTTP (item 2) -------------

@pytest.mark.parametrize("mode", MODES)
def test_declined_upgrade_parses_the_requests_behind_it(mode):
    p = RequestParser()
    got = feed_pieces(p, H2C + NEXT + AFTER, mode)
    assert [r.path for r in got] == ["/up"] and got[0].upgrade == "h2c"
    assert p.upgraded and p.buffered == len(NEXT + AFTER)
    p.decline_upgrade()
    assert not p.upgraded
    got = p.feed(b"")
    assert [(r.path, r.body) for r in got] == [("/next", b""), ("/after", b"abc")]
    assert p.buffered == 0 and not p.upgraded
    assert [r.path for r in p.feed(NEXT)] == ["/next"]  # and it keeps going


def test_declined_upgrade_then_more_input_in_later_feeds():
    p = RequestParser()
    assert [r.path for r in p.feed(H2C + NEXT[:10])] == ["/up"]
    assert p.feed(NEXT[10:]) == []  # still switched: kept, not parsed
    p.decline_upgrade()
    assert [r.path for r in p.feed(AFTER)] == ["/next", "/after"]


@pytest.mark.parametrize("mode", MODES)
def test_declined_connect_resumes_http(mode):
    p = RequestParser()
    got = feed_pieces(p, b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n" + NEXT, mode)
    assert [r.method for r in got] == ["CONNECT"] and p.upgraded
    p.decline_upgrade()
    assert [r.path for r in p.feed(b"")] == ["/next"]


def test_declined_upgrade_that_closes_the_connection_stops_the_parser():
    p = RequestParser()
    up = H2C.replace(b"Connection: Upgrade,", b"Connection: close, Upgrade,")
    (r,) = p.feed(up + NEXT)
    assert r.upgrade == "h2c" and not r.keep_alive and p.upgraded
    p.decline_upgrade()
    assert p.closed and p.buffered == 0 and p.feed(b"") == []


def test_declined_switch_with_garbage_behind_it_is_a_400():
    # A CONNECT client that sent TLS at once and got a refusal: the bytes are
    # not HTTP -- a clean 400 and a close, never a stall.
    p = RequestParser()
    p.feed(b"CONNECT db:443 HTTP/1.1\r\nHost: db:443\r\n\r\n\x16\x03\x01\x02\x00\x01")
    p.decline_upgrade()
    with pytest.raises(ParseError) as e:
        p.feed(b"")
    assert e.value.status == 400


def test_decline_without_a_switch_is_a_no_op():
    p = RequestParser()
    p.decline_upgrade()
    assert [r.path for r in p.feed(NEXT + NEXT)] == ["/next", "/next"]
    p.decline_upgrade()
    assert p.feed(b"") == [] and p.buffered == 0


def test_accepted_upgrade_hands_over_every_later_byte():
    p = RequestParser()
    (r,) = p.feed(H2C + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert p.take_remaining() == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    assert p.buffered == 0
    assert p.feed(b"\x00\x00\x12") == [] and p.buffered == 3
    assert p.take_remaining() == b"\x00\x00\x12"


# --- the body of a switching request is HTTP (RFC 9110 7.8) -----------------

UP_CL = (b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
         b"Content-Length: 5\r\n\r\nhello")
UP_CHUNKED = (b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("up", [UP_CL, UP_CHUNKED], ids=["content-length", "chunked"])
def test_switching_request_body_is_read_before_the_switch(up, mode):
    p = RequestParser()
    (r,) = feed_pieces(p, up + b"PRI * HTTP/2.0\r\n", mode)
    assert r.body == b"hello" and p.upgraded
    assert p.take_remaining() == b"PRI * HTTP/2.0\r\n"
    # declined instead: the request behind is parsed
    p = RequestParser()
    feed_pieces(p, up + NEXT, mode)
    p.decline_upgrade()
    assert [x.path for x in p.feed(b"")] == ["/next"]


# --- streaming mode (callbacks) ---------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_streaming_handler_takes_remaining_bytes_from_on_headers(mode):
    taken = []

    def take(p, req):  # what a WebSocket handler does from on_headers
        if req.upgrade:
            assert p.upgraded
            taken.append(p.take_remaining())

    rec = Recorder(on_headers_act=take)
    frames = b"\x81\x05hello\x81\x05world"
    ws = (b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    feed_pieces(rec.p, ws + frames, mode)
    # what arrived with the head was taken in on_headers; later feeds keep the rest
    assert b"".join(taken) + rec.p.take_remaining() == frames
    if mode == "whole":
        assert taken == [frames]
    assert rec.events == [("head", "/ws"), ("done", "/ws", True)]


@pytest.mark.parametrize("mode", MODES)
def test_streaming_switch_with_body_happens_after_the_body(mode):
    seen = []
    rec = Recorder(on_complete_act=lambda p, req: seen.append(p.take_remaining()))
    feed_pieces(rec.p, UP_CL + b"PRI", mode)
    assert rec.events[0] == ("head", "/up") and rec.events[-1] == ("done", "/up", True)
    assert b"".join(e[2] for e in rec.events if e[0] == "body") == b"hello"
    assert b"".join(seen) + rec.p.take_remaining() == b"PRI"


@pytest.mark.parametrize("mode", MODES)
def test_streaming_decline_from_on_headers_resumes_on_next_feed(mode):
    def decline(p, req):  # the handler answered normally at once
        if req.upgrade:
            p.decline_upgrade()

    rec = Recorder(on_headers_act=decline)
    got = feed_pieces(rec.p, H2C + NEXT + AFTER, mode)
    got += rec.p.feed(b"")
    assert [r.path for r in got] == ["/up", "/next", "/after"]
    assert [e[0:2] for e in rec.events] == [
        ("head", "/up"), ("done", "/up"), ("head", "/next"), ("done", "/next"),
        ("head", "/after"), ("body", "/after"), ("done", "/after")]
    assert not rec.p.upgraded and rec.p.buffered == 0


@pytest.mark.parametrize("mode", MODES)
def test_streaming_decline_before_the_body_ended_never_switches(mode):
    def decline(p, req):
        if req.upgrade:
            p.decline_upgrade()

    rec = Recorder(on_headers_act=decline)
    got = feed_pieces(rec.p, UP_CHUNKED + NEXT, mode)
    assert [r.path for r in got] == ["/up", "/next"]
    assert ("done", "/up", False) in rec.events and not rec.p.upgraded


@pytest.mark.parametrize("mode", MODES)
def test_streaming_decline_from_on_message_complete(mode):
    def decline(p, req):
        if req.upgrade:
            assert p.upgraded
            p.decline_upgrade()

    rec = Recorder(on_complete_act=decline)
    got = feed_pieces(rec.p, UP_CL + NEXT, mode) + rec.p.feed(b"")
    assert [r.path for r in got] == ["/up", "/next"]


# --- bytes held: buffered, held (item 3) ------------------------------------

def test_held_requests_are_counted_and_never_copied_twice():
    one = b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n"
    p = RequestParser(max_pipeline=4)
    data = one * 100
    fed = 0
    consumed = 0
    for i in range(0, len(data), 700):  # reads keep coming while held
        piece = data[i : i + 700]
        before = p.buffered
        got = p.feed(piece)
        fed += len(piece)
        consumed += len(one) * len(got)
        assert len(got) <= 4
        assert p.buffered == fed - consumed  # exactly the bytes not yet consumed
        assert p.buffered <= before + len(piece)
        assert p.held == (p.buffered >= len(one))
    while p.held:
        before = p.buffered
        got = p.feed(b"")
        assert len(got) == 4 or not p.held
        assert p.buffered == before - len(one) * len(got)  # feed(b"") never grows it
    assert p.buffered == 0 and not p.held


def test_buffered_is_bounded_by_the_head_limit_unless_held():
    p = RequestParser(max_request_line=64, max_header_size=128)
    head = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 90
    for b in head:
        p.feed(bytes([b]))
        assert p.buffered <= 64 + 128 + 4 and not p.held
    assert p.buffered == len(head)
    with pytest.raises(ParseError) as e:
        p.feed(b"q" * 40)
    assert e.value.status == 431


def test_switched_bytes_count_as_buffered():
    p = RequestParser()
    p.feed(H2C)
    for _ in range(10):
        p.feed(b"x" * 1000)
    assert p.upgraded and p.buffered == 10000
    p.decline_upgrade()
    with pytest.raises(ParseError):
        p.feed(b"")


def test_an_error_behind_held_requests_clears_held():
    p = RequestParser(max_pipeline=1)
    assert len(p.feed(NEXT + NEXT + b"BAD\r\n\r\n")) == 1 and p.held
    assert len(p.feed(b"")) == 1
    with pytest.raises(ParseError):
        p.feed(b"")
    assert p.failed and not p.held and p.buffered == 0
