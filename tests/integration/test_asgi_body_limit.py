"""ASGI ``max_body``: a request body cut by the HTTP layer ends the app's ``receive()``.

With an explicit ``max_body`` the HTTP layer answers 413 itself once a chunked
body grows past it (``Session._reject``), while the app may be parked in
``receive()`` for the next piece.  The app must get ``http.disconnect`` at
once -- not sit there until shutdown cancels it, holding its task and an
``inflight`` slot.  A Content-Length above the limit never reaches the app.
Real server in a thread, raw-socket clients on 127.0.0.1.
"""
import asyncio
import socket
import threading
import time

import pytest

from ._asgi import asgi_server, read_all, read_until

MiB = 1 << 20
PIECE = b"10000\r\n" + b"c" * 0x10000 + b"\r\n"  # one 64 KiB chunk
CHUNKED_POST = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def reading_app(first_part: int):
    """An app that reads the body piece by piece; ``consumed`` is set once it has
    ``first_part`` bytes (it then calls ``receive()`` again in the same step, so
    it is parked there before the loop reads anything more)."""
    seen = []
    consumed = threading.Event()
    returned = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        got = 0
        try:
            while True:
                if got >= first_part:
                    consumed.set()
                message = await receive()
                seen.append(message["type"])
                if message["type"] != "http.request":
                    return
                got += len(message["body"])
                if not message["more_body"]:
                    break
        finally:
            returned.set()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app, seen, consumed, returned


def wait_inflight_zero(srv, timeout: float = 2.0) -> int:
    end = time.monotonic() + timeout
    while srv.inflight and time.monotonic() < end:
        time.sleep(0.01)
    return srv.inflight


# What the client sends once the app has 128 KiB and waits in receive() for more:
# a chunk-size line alone that passes the limit (the parser refuses it before any
# data: nothing wakes the app but the cut), or data and then such a line.
CUTS = {
    "size-line-alone": b"100000\r\n",
    "data-then-past-limit": PIECE * 15,
}


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_chunked_body_past_max_body_ends_a_waiting_receive(cut):
    app, seen, consumed, returned = reading_app(2 * 0x10000)
    with asgi_server(app, max_body=MiB) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(CHUNKED_POST + PIECE * 2)
            assert consumed.wait(5), seen
            s.sendall(CUTS[cut])
            answer = read_all(s, 5)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b"\r\nConnection: close\r\n" in answer
        # the parked receive() hears of it (before the fix: only at shutdown's cancel)
        assert returned.wait(2), seen
        assert seen[-1] == "http.disconnect", seen
        assert seen.count("http.disconnect") == 1, seen
        assert wait_inflight_zero(srv) == 0, srv.inflight
        # the server goes on serving
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(CHUNKED_POST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
                      + PIECE + b"0\r\n\r\n")
            assert read_all(s, 5).startswith(b"HTTP/1.1 200 ")


# An app answers before the body arrived: the rest is dropped (a chunked body:
# the connection closes after the answer; a small declared rest: read on and
# dropped, keep-alive).  Its receive() -- called afterwards, or parked since
# before the answer in another task (Starlette's StreamingResponse listens for
# http.disconnect that way) -- answers http.disconnect at once (README: "and at
# once after the response is complete"), not when a body that nobody reads ends.
EARLY = {
    "chunked": b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    "small-rest": b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"h" * 10,
}


@pytest.mark.parametrize("listener", ["after-answer", "parked-before"])
@pytest.mark.parametrize("body", sorted(EARLY))
def test_receive_after_an_early_answer_gets_disconnect_at_once(body, listener):
    seen = []
    returned = threading.Event()

    async def listen(receive):
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] != "http.request" or not message["more_body"]:
                return

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/next":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
            await send({"type": "http.response.body", "body": b"next"})
            return
        try:
            parked = None
            if listener == "parked-before":
                parked = asyncio.ensure_future(listen(receive))
                await asyncio.sleep(0)  # it runs and waits for the body
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            await (parked if parked is not None else listen(receive))
        finally:
            returned.set()

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(EARLY[body])
            answer = read_until(s, b"\r\n\r\nok")
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok"), answer
            # before the body ends (or the connection closes): the client still holds both
            assert returned.wait(2), seen
            assert seen[-1:] == ["http.disconnect"] and seen.count("http.disconnect") == 1, seen
            if body == "chunked":
                assert b"\r\nConnection: close\r\n" in answer
                assert read_all(s, 5) == b""
            else:  # the rest is read and dropped: the connection serves the next request
                assert b"Connection: close" not in answer
                s.sendall(b"h" * 990 + b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert read_all(s, 5).endswith(b"\r\n\r\nnext")
        assert wait_inflight_zero(srv) == 0, srv.inflight


def test_content_length_past_max_body_never_reaches_the_app():
    calls = []

    async def app(scope, receive, send):
        if scope["type"] == "http":
            calls.append(scope["path"])

    with asgi_server(app, max_body=MiB) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MiB + 1) + b"k" * 1000)
            answer = read_all(s, 5)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert calls == []
        assert srv.inflight == 0
