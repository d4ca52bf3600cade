"""An answered request lets go of its Response (issue 13).

The server links ``req.response`` and ``res.request`` both ways while an answer
is in flight.  Once the answer is handed to the connection it drops
``req.response``: on CPython both objects are then freed by reference count at
once, instead of piling up for the cyclic GC (about 2k instructions a request,
and memory held until a collection).  What a handler may still ask of a request
it kept (``client_ip``, ``loop``, ``tls``, ``on_disconnect``) keeps working.
"""
import gc
import socket
import sys
import threading

import pytest

from ._http import raw, serving

REQ = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def _drive(port: int, rounds: int, depth: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for _ in range(rounds):
            s.sendall(REQ * depth)
            buf = b""
            while buf.count(b"hello") < depth:
                got = s.recv(65536)
                assert got, "server closed the connection"
                buf += got


@pytest.mark.skipif(sys.implementation.name != "cpython",
                    reason="reference counting is CPython's: PyPy's GC frees everything alike")
@pytest.mark.parametrize("depth", [1, 16])
def test_answered_requests_leave_no_cyclic_garbage(depth):
    def hello(req, res):
        res.send(b"hello")

    with serving(hello) as server:
        _drive(server.port, 5, depth)  # warm up: first-use caches are not garbage
        gc.collect()
        was = gc.isenabled()
        gc.disable()
        try:
            gc.set_debug(gc.DEBUG_SAVEALL)
            _drive(server.port, 20, depth)
            gc.collect()
            kinds = sorted({type(o).__name__ for o in gc.garbage})
        finally:
            gc.set_debug(0)
            del gc.garbage[:]
            if was:
                gc.enable()
    assert "Request" not in kinds and "Response" not in kinds, kinds


def test_kept_request_still_answers_after_its_response_is_gone():
    kept = []
    seen = {}
    done = threading.Event()

    def handler(req, res):
        if req.path == "/keep":
            kept.append(req)
            res.send(b"kept")
            return
        old = kept[0]
        # the first request's answer went out: its link to the Response is dropped ...
        seen["response"] = old.response
        # ... but what it can still tell about its connection it tells
        seen["ip"] = old.client_ip
        seen["loop"] = old.loop is res.loop
        seen["tls"] = old.tls
        old.on_disconnect(lambda: seen.setdefault("late_cb", True))  # answered: nothing to watch
        res.send(b"second")
        done.set()

    with serving(handler) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET /keep HTTP/1.1\r\nHost: t\r\n\r\n")
            out = b""
            while b"kept" not in out:
                out += s.recv(65536)
            s.sendall(b"GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            while True:
                got = s.recv(65536)
                if not got:
                    break
                out += got
        assert done.wait(5)
    assert out.count(b"HTTP/1.1 200") == 2, out
    assert seen["response"] is None
    assert seen["ip"] == "127.0.0.1"
    assert seen["loop"] is True
    assert seen["tls"] is None
    assert "late_cb" not in seen


def test_request_of_an_answer_in_flight_keeps_its_response():
    got = {}

    def handler(req, res):
        got["same"] = req.response is res
        res.send(b"x")
        got["after_send"] = req.response  # flushed at the end of the read, not inside send()

    with serving(handler) as server:
        raw(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert got["same"] is True
    assert got["after_send"] is not None


def test_dispatched_response_matches_the_constructor():
    """The read loop builds each Response without the class call (issue 13): what
    it sets must stay exactly what ``Response.__init__`` sets."""
    from powpow.http.response import Response

    seen = []

    def handler(req, res):
        made = Response(res._session, req)
        seen.append((dict(vars(res)), dict(vars(made)), req.method))
        res.send(b"ok")

    with serving(handler) as server:
        raw(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                         b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"
                         b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
    assert [m for _, _, m in seen] == ["GET", "HEAD", "GET"]
    for got, want, _ in seen:
        assert sorted(got) == sorted(want)
        for k in want:
            if k not in ("_headers", "_segments"):  # fresh lists each: equal, not identical
                assert got[k] == want[k], k
            else:
                assert got[k] == want[k] == [] and got[k] is not want[k]


def test_parse_error_answer_keeps_no_connection_alive():
    """The stand-in request of a parse-error answer is one object shared by every
    connection: the answered-request bookkeeping must not store the session on it."""
    from powpow.http.response import _UNPARSED

    with serving(lambda req, res: res.send(b"x")) as server:
        out = raw(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\nBAD\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 1 and b"HTTP/1.1 400" in out
    assert vars(_UNPARSED) == {}
    assert _UNPARSED._session is None and _UNPARSED.response is None
