"""Streaming responses and requests, framing and interim answers (issue 8 items 5-9, 20, 21, 25)."""
import asyncio
import http.client
import json
import socket
import struct
import threading
import time

import pytest

import powpow.aio
from powpow import HttpServer
from ._http import on_loop, raw, serving, split_responses


def read_all(s, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            b = s.recv(1 << 16)
        except socket.timeout:
            break
        if not b:
            break
        data += b
    return data


# -- item 20: streaming responses know about backpressure and disconnects -----------


def test_stream_to_a_client_that_left_stops_and_is_told():
    events = []
    responses = []

    def handler(req, res):
        responses.append(res)
        res.set_header("Content-Type", "text/event-stream")
        res.on_close = lambda: events.append("closed")

        def tick():
            ok = res.write(b"data: " + b"x" * 1000 + b"\n\n")
            events.append(ok)
            if "closed" not in events or events.index("closed") > len(events) - 20:
                res.loop.add_timer(2, tick)

        tick()

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200 ")
        deadline = time.monotonic() + 5
        while "closed" not in events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "closed" in events  # the handler learns the client went away
        n = len(events)
        time.sleep(0.2)
        after = events[events.index("closed") + 1:]
        assert after and not any(after)  # writes after the disconnect are dropped: False
        assert len(events) > n
        held = on_loop(srv, lambda: sum(len(x) for x in responses[0]._segments))
        assert held == 0  # nothing kept in memory for a gone client


def test_write_reports_backpressure_and_on_drain_resumes():
    state = {"writes": 0, "drains": 0, "first_false": None}
    chunk = b"y" * 65536
    total = 256  # 16 MiB: more than the kernel's socket buffers hold

    def handler(req, res):
        res.set_length(total * len(chunk))

        def pump():
            while state["writes"] < total:
                state["writes"] += 1
                if not res.write(chunk):
                    if state["first_false"] is None:
                        state["first_false"] = state["writes"]
                    return  # wait for on_drain
            res.end()

        def drained():
            state["drains"] += 1
            pump()

        res.on_drain = drained
        pump()

    with serving(handler) as srv:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.connect(("127.0.0.1", srv.port))
        with s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            time.sleep(0.3)  # not reading: the server must stop at high water
            assert state["first_false"] is not None and state["writes"] < total
            data = read_all(s)
        body = data.split(b"\r\n\r\n", 1)[1]
        assert len(body) == total * len(chunk) and state["drains"] >= 1


def _async_serve(handler, client):
    """Run ``handler`` (``async def``) on an HttpServer under powpow.aio; ``client(port)`` in a thread."""
    async def main():
        aio = asyncio.get_running_loop()
        srv = HttpServer(handler, aio).listen(0, "127.0.0.1")
        try:
            return await asyncio.wait_for(aio.run_in_executor(None, client, srv.port), 10)
        finally:
            srv.close()
    return powpow.aio.run(main())


@pytest.mark.parametrize("hook", ["on_disconnect", "on_close"])
def test_async_handler_blocked_on_write_ends_when_the_client_leaves_despite_its_own_hook(hook):
    """An ``async def`` handler that set its own disconnect callback, then awaits
    backpressure: a client that leaves mid-stream runs that callback *and* ends the
    task (it used to replace the task's cancel hook: the task waited forever)."""
    told = threading.Event()
    finished = threading.Event()
    state = {"writes": 0, "exit": None}

    async def handler(req, res):
        if hook == "on_disconnect":
            req.on_disconnect(told.set)
        else:
            res.on_close = told.set
        try:
            while True:
                await res.write(b"x" * 65536)
                state["writes"] += 1
        except (asyncio.CancelledError, ConnectionResetError) as exc:
            state["exit"] = type(exc).__name__
            finished.set()
            raise

    def client(port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 5
        while state["writes"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # not reading: the server's queue fills, the handler awaits drain
        time.sleep(0.2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST: gone mid-stream
        return told.wait(5), finished.wait(5)

    assert _async_serve(handler, client) == (True, True)
    assert state["exit"] in ("CancelledError", "ConnectionResetError")


# -- item 9: streaming mode answers a malformed chunked body like buffered mode -------


@pytest.mark.parametrize("later", [False, True])
def test_streaming_bad_chunked_body_gets_400(later):
    def handler(req, res):
        req.on_body(lambda chunk: None)
        req.on_end(lambda: res.send(b"done"))

    with serving(handler, streaming=True) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            bad = b"5\r\nhello\r\nZZZ\r\n"
            if later:
                s.sendall(head + b"5\r\nhello\r\n")
                time.sleep(0.1)
                s.sendall(b"ZZZ\r\n")
            else:
                s.sendall(head + bad)
            start = time.monotonic()
            data = read_all(s, 3)
        assert data.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in data
        assert time.monotonic() - start < 2


# -- item 5 / 25: 100 Continue keeps order, and is not sent when the answer is known ----


def test_100_continue_waits_behind_an_earlier_answer():
    servers = []

    def handler(req, res):
        if req.path == "/slow":
            servers[0].loop.add_timer(200, lambda: res.send(b"slow"))
        else:
            res.send(b"got " + req.body)

    with serving(handler) as srv:
        servers.append(srv)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            data = b""
            while b"100 Continue" not in data:
                b = s.recv(4096)
                assert b
                data += b
            # the interim answer comes after the first request's answer (was: before it)
            assert data.startswith(b"HTTP/1.1 200 ") and data.index(b"slow") < data.index(b"100 Continue")
            s.sendall(b"hello")
            while b"got hello" not in data:
                b = s.recv(4096)
                assert b
                data += b


def test_no_100_continue_when_the_answer_is_already_known():
    def handler(req, res):
        res.send_error(405)  # decided from the head: the body is not wanted

    with serving(handler, streaming=True) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            time.sleep(0.2)
            data = s.recv(4096)
        assert data.startswith(b"HTTP/1.1 405 ") and b"100 Continue" not in data


# -- item 6, 7, 8: framing ---------------------------------------------------------------


def test_set_length_zero_then_end_sends_a_head():
    def handler(req, res):
        if req.path == "/empty":
            res.set_length(0)
            res.end()
        else:
            res.send(b"second")

    with serving(handler) as srv:
        data = raw(srv.port, b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = split_responses(data)
        assert [b for _, b in answers] == [b"", b"second"]
        assert b"Content-Length: 0" in answers[0][0]


def test_handler_content_length_is_written_once_and_enforced():
    def handler(req, res):
        if req.path == "/same":
            res.send(b"hello", headers=[("Content-Length", "5")])
        elif req.path == "/head":
            res.send(b"", headers=[("Content-Length", "1234")])  # HEAD: the GET's length
        elif req.path == "/conflict":
            res.send(b"hello", headers=[("Content-Length", "9")])
        elif req.path == "/stream":
            res.set_header("Content-Length", "6")
            res.write(b"abc")
            res.end(b"def")
        elif req.path == "/short":
            res.set_header("Content-Length", "10")
            res.write(b"abc")
            res.end()

    with serving(handler) as srv:
        data = raw(srv.port, b"GET /same HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert data.count(b"Content-Length") == 1 and data.endswith(b"\r\n\r\nhello")
        data = raw(srv.port, b"HEAD /head HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert data.count(b"Content-Length") == 1 and b"Content-Length: 1234" in data
        data = raw(srv.port, b"GET /conflict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 500 ") and b"Content-Length: 9" not in data
        data = raw(srv.port, b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert data.count(b"Content-Length") == 1 and b"chunked" not in data and data.endswith(b"abcdef")
        # a shortfall closes the connection (the next pipelined request is not answered)
        data = raw(srv.port, b"GET /short HTTP/1.1\r\nHost: x\r\n\r\nGET /same HTTP/1.1\r\nHost: x\r\n\r\n")
        assert data.endswith(b"abc") and data.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("name, value", [
    ("Transfer-Encoding", "gzip"),
    ("Connection", "upgrade"),
    ("Connection", "x-private"),
    ("Content-Length", "12abc"),
])
def test_handler_framing_headers_are_validated(name, value):
    def handler(req, res):
        res.send(b"body", headers=[(name, value)])

    with serving(handler) as srv:
        data = raw(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 500 ") and value.encode() not in data


def test_handler_connection_close_is_honoured():
    with serving(lambda req, res: res.send(b"bye", headers=[("Connection", "close")])) as srv:
        data = raw(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert data.count(b"HTTP/1.1 200") == 1 and data.count(b"Connection") == 1


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_http10_client_gets_no_chunked_framing(method):
    def handler(req, res):
        res.write(b"part1,")
        res.end(b"part2")

    with serving(handler) as srv:
        data = raw(srv.port, method + b" / HTTP/1.0\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"chunked" not in head.lower()
        assert b"Connection: close" in head
        assert body == (b"part1,part2" if method == b"GET" else b"")  # close-delimited


# -- item 21: a body bigger than the write-queue cap arrives whole ---------------------


def test_send_of_a_body_larger_than_the_queue_cap_arrives_whole():
    body = bytes(range(256)) * (160 << 10)  # 40 MiB > the 32 MiB cap

    with serving(lambda req, res: res.send(body)) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            time.sleep(0.3)  # everything handed over while we do not read
            data = read_all(s, 10)
        head, _, got = data.partition(b"\r\n\r\n")
        assert len(got) == len(body) and got == body


# -- item 25 and conveniences --------------------------------------------------------


def test_dict_headers_json_redirect_and_cookie():
    def handler(req, res):
        if req.path == "/dict":
            res.send(b"x", headers={"X-A": "1", "X-B": "2"})
        elif req.path == "/json":
            res.json({"a": [1, 2], "é": None}, status=201)
        elif req.path == "/go":
            res.redirect("/elsewhere", status=303)
        else:
            res.set_cookie("sid", "abc", httponly=True)
            res.send(b"c")

    with serving(handler) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        c.request("GET", "/dict")
        r = c.getresponse()
        assert r.status == 200 and r.getheader("X-A") == "1" and r.getheader("X-B") == "2" and r.read() == b"x"
        c.request("GET", "/json")
        r = c.getresponse()
        assert r.status == 201 and r.getheader("Content-Type") == "application/json"
        assert json.loads(r.read()) == {"a": [1, 2], "é": None}
        c.request("GET", "/go")
        r = c.getresponse()
        assert r.status == 303 and r.getheader("Location") == "/elsewhere"
        r.read()
        c.request("GET", "/cookie")
        r = c.getresponse()
        cookie = r.getheader("Set-Cookie")
        assert cookie.startswith("sid=abc") and "HttpOnly" in cookie
        r.read()
        c.close()


def test_streaming_request_without_body_callback_is_buffered_linearly():
    def handler(req, res):
        req.on_end(lambda: res.send(b"%d" % len(req.body)))

    with serving(handler, streaming=True, max_body=8 << 20) as srv:
        body = b"q" * (4 << 20)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                      % len(body))
            start = time.monotonic()
            for i in range(0, len(body), 1024):  # many small pieces: += on bytes was quadratic
                s.sendall(body[i:i + 1024])
            data = read_all(s)
        assert data.endswith(b"\r\n\r\n%d" % len(body))
        assert time.monotonic() - start < 5


def test_streaming_request_body_can_be_paused_and_resumed():
    """res.pause_body(): the server stops reading the body (the client's sends block), then resumes."""
    got = {"n": 0, "paused_at": None}

    def handler(req, res):
        def on_chunk(chunk):
            got["n"] += len(chunk)
            if got["paused_at"] is None and got["n"] >= 65536:
                got["paused_at"] = got["n"]
                res.pause_body()
                res.loop.add_timer(400, res.resume_body)

        req.on_body(on_chunk)
        req.on_end(lambda: res.send(b"%d" % got["n"]))

    size = 32 << 20
    with serving(handler, streaming=True, max_body=size) as srv:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.connect(("127.0.0.1", srv.port))
        with s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
            s.setblocking(False)
            sent = 0
            chunk = b"p" * 65536
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                try:
                    sent += s.send(chunk)
                except BlockingIOError:
                    time.sleep(0.005)
            assert got["paused_at"] is not None
            # paused: the rest waits in the kernel, not in the server (one read turn at most)
            assert got["n"] - got["paused_at"] <= 2 << 20, (got, sent)
            assert sent < size
            s.setblocking(True)
            s.settimeout(10)
            while sent < size:
                sent += s.send(chunk[: size - sent])
            data = read_all(s, 10)
        assert data.endswith(b"\r\n\r\n%d" % size)


@pytest.mark.parametrize("streaming", [False, True])
def test_bad_request_after_a_slow_good_one_keeps_the_good_answer(streaming):
    """The good request's late answer goes out (without Connection: close), then the 400."""
    servers = []

    def handler(req, res):
        servers[0].loop.add_timer(150, lambda: res.send(b"good"))

    with serving(handler, streaming=streaming) as srv:
        servers.append(srv)
        data = raw(srv.port, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nBROKEN\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 ") and b"good" in data
        assert data.index(b"HTTP/1.1 400 ") > data.index(b"good")


def test_paused_body_is_not_cut_by_the_body_deadlines():
    """A handler that pauses the body longer than body_timeout / below min_body_rate is not cut."""
    def handler(req, res):
        res.pause_body()
        res.loop.add_timer(900, res.resume_body)
        req.on_end(lambda: res.send(b"%d" % len(req.body)))

    with serving(handler, streaming=True, body_timeout=0.3, min_body_rate=100000, body_grace=0.2) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
            time.sleep(0.1)
            s.sendall(b"hello")
            data = read_all(s)
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"5")
