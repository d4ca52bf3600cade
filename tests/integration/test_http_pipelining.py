"""Pipelined requests behind an answer that is still being made: backpressure for a
streamed answer that waits its turn, and no request processed after a close."""
import asyncio
import logging
import socket
import threading
import time

import pytest

import powpow.aio
from powpow import HttpServer
from powpow.net.errors import WriteQueueFull
from ._http import on_loop, serving, split_responses

CHUNK = b"z" * 65536
HIGH_WATER = 256 << 10  # powpow.http.server.HTTP_HIGH_WATER: the transport's high-water mark


def read_until_closed(s, timeout=10.0):
    s.settimeout(timeout)
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            b = s.recv(1 << 16)
        except socket.timeout:
            break
        if not b:
            break
        data += b
    return data


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()


# -- a streamed answer queued behind a slower one -------------------------------------


def test_stream_behind_a_slower_answer_stops_at_high_water_and_resumes_when_first():
    """/big is pipelined behind /slow: its chunks cannot leave before /slow's answer,
    so they wait in the server.  A well-behaved producer (stops when write() is False,
    goes on from on_drain) must be stopped at high water -- it was told True for every
    chunk, and the whole body piled up in memory -- and resumed once /big is first."""
    total = 128  # 8 MiB
    state = {"writes": 0, "first_false": None, "held_at_false": None, "drains": 0}
    slow = []

    def handler(req, res):
        if req.path == "/slow":
            slow.append(res)  # answered later, from the test
            return
        res.set_length(total * len(CHUNK))

        def pump():
            while state["writes"] < total:
                state["writes"] += 1
                if not res.write(CHUNK):
                    if state["first_false"] is None:
                        state["first_false"] = state["writes"]
                        state["held_at_false"] = sum(len(x) for x in res._segments)
                    return  # wait for on_drain
            res.end()

        def drained():
            state["drains"] += 1
            pump()

        res.on_drain = drained
        pump()

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            wait_for(lambda: state["first_false"] is not None or state["writes"] == total)
            time.sleep(0.1)
            writes = state["writes"]
            assert state["first_false"] is not None, "write() never returned False: %d chunks held" % writes
            assert writes == state["first_false"] <= HIGH_WATER // len(CHUNK) + 1
            assert state["held_at_false"] <= HIGH_WATER + len(CHUNK) + 1024  # + the head
            assert slow
            on_loop(srv, lambda: slow[0].send(b"slow done"))
            data = read_until_closed(s)
    (h1, b1), (h2, b2) = split_responses(data)
    assert h1.startswith(b"HTTP/1.1 200 ") and b1 == b"slow done"
    assert h2.startswith(b"HTTP/1.1 200 ") and len(b2) == total * len(CHUNK) and b2 == CHUNK * total
    assert state["writes"] == total and state["drains"] >= 1  # on_drain resumed it once first in line


def test_async_stream_behind_a_slower_answer_waits_in_write():
    """``await res.write()`` of an answer queued behind a slower one blocks at high
    water (it returned at once: the body piled up) and goes on once it is first."""
    total = 64
    state = {"writes": 0}
    box = {}

    async def handler(req, res):
        if req.path == "/slow":
            await box["release"].wait()
            res.send(b"slow done")
            return
        res.set_length(total * len(CHUNK))
        while state["writes"] < total:
            await res.write(CHUNK)
            state["writes"] += 1
        res.end()

    def client(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            wait_for(lambda: state["writes"] == total, 1.0)
            stopped_at = state["writes"]
            box["aio"].call_soon_threadsafe(box["release"].set)
            return stopped_at, read_until_closed(s)

    async def main():
        aio = asyncio.get_running_loop()
        box["aio"] = aio
        box["release"] = asyncio.Event()
        srv = HttpServer(handler, aio).listen(0, "127.0.0.1")
        try:
            return await asyncio.wait_for(aio.run_in_executor(None, client, srv.port), 20)
        finally:
            srv.close()

    stopped_at, data = powpow.aio.run(main())
    assert stopped_at <= HIGH_WATER // len(CHUNK) + 1, "await res.write() never waited: %d chunks held" % stopped_at
    (_, b1), (_, b2) = split_responses(data)
    assert b1 == b"slow done" and b2 == CHUNK * total


def test_stream_behind_a_slower_answer_that_ignores_backpressure_is_refused_loudly(caplog):
    """Past the transport's cap (32 MiB) held behind an earlier answer, a producer that
    ignores write() returning False gets WriteQueueFull at the call and the connection
    closes with a logged error -- as the transport's own cap does -- instead of
    growing without bound."""
    big = b"q" * (1 << 20)  # one object, queued by reference: the test itself stays small
    state = {"writes": 0, "raised": None, "cap": None}

    def handler(req, res):
        if req.path == "/slow":
            return  # never answered
        state["cap"] = res._session.conn.max_queued
        res.set_length(64 * len(big))
        try:
            for _ in range(64):  # 64 MiB, never waiting
                res.write(big)
                state["writes"] += 1
        except WriteQueueFull as exc:
            state["raised"] = str(exc)

    with caplog.at_level(logging.ERROR, logger="powpow.http"):
        with serving(handler) as srv:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                data = read_until_closed(s, 5)
    assert state["raised"] is not None, "all %d MiB were held" % state["writes"]
    assert "behind an earlier pipelined answer" in state["raised"]
    assert state["writes"] * len(big) <= state["cap"] + len(big)
    assert data == b""  # closed: nothing of /slow was ever answered
    assert any("behind an earlier pipelined answer" in r.getMessage() and r.levelno >= logging.ERROR
               for r in caplog.records)


# -- nothing after Connection: close; non-safe methods wait their turn -------------------


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("when", ["at_once", "later"])
def test_no_request_behind_a_closing_answer_is_processed(streaming, when):
    """RFC 9112 §9.6: after an answer with Connection: close the server processes no
    further request.  The handlers of requests pipelined behind it ran (their side
    effects happened) and their answers were dropped."""
    effects = []
    servers = []

    def handler(req, res):
        if req.path == "/close":
            def answer():
                res.send(b"bye", headers=[("Connection", "close")])
            if when == "at_once":
                answer()
            else:
                servers[0].loop.add_timer(100, answer)
        else:
            effects.append((req.method, req.path))
            res.send(b"done")

    with serving(handler, streaming=streaming) as srv:
        servers.append(srv)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"POST /effect HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                      b"DELETE /effect HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /read HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_until_closed(s, 5)
        time.sleep(0.05)
    answers = split_responses(data)
    assert len(answers) == 1 and answers[0][1] == b"bye" and b"Connection: close" in answers[0][0]
    assert effects == []


@pytest.mark.parametrize("same_read", [True, False])
def test_no_request_runs_behind_a_streamed_answer_that_says_close(same_read):
    """Once a streamed answer's head says Connection: close, even a safe request
    behind it is not processed (it ran, and its answer was dropped)."""
    effects = []
    servers = []

    def handler(req, res):
        if req.path == "/stream":
            res.set_header("Connection", "close")
            res.set_length(17)
            res.write(b"part one;")
            servers[0].loop.add_timer(200, lambda: res.end(b"part two"))
        else:
            effects.append(req.path)
            res.send(b"x")

    with serving(handler) as srv:
        servers.append(srv)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            if not same_read:
                time.sleep(0.05)  # its head is out already
            s.sendall(b"GET /effect HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_until_closed(s, 5)
    assert data.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in data
    assert data.endswith(b"part one;part two") and effects == []


def test_streamed_close_answer_still_reads_the_body_it_answers():
    """An answer that says close while its request body still arrives (streaming
    mode) keeps reading that body, and pause_body / resume_body still work."""
    servers = []
    got = []

    def handler(req, res):
        res.set_header("Connection", "close")
        res.set_length(17)
        res.write(b"started;")

        def chunk(c):
            got.append(c)
            if sum(len(c) for c in got) < 30000:
                req.pause_body()
                servers[0].loop.add_timer(20, req.resume_body)

        req.on_body(chunk)
        req.on_end(lambda: res.end(b"got %d" % sum(len(c) for c in got)))

    with serving(handler, streaming=True) as srv:
        servers.append(srv)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n\r\n" + b"a" * 10000)
            for _ in range(2):
                time.sleep(0.05)
                s.sendall(b"b" * 10000)
            data = read_until_closed(s, 5)
    assert data.endswith(b"started;got 30000") and b"".join(got) == b"a" * 10000 + b"b" * 20000


@pytest.mark.parametrize("streaming", [False, True])
def test_a_request_that_is_not_safe_waits_for_the_answers_before_it(streaming):
    """RFC 9112 §9.3.2: only safe requests are processed while an earlier answer is
    still being made.  The POST behind a slow GET ran at once; now it (and what
    follows it) runs once the GET's answer is out; a safe request before it still
    runs at once.  Its body arrives whole (streaming mode: through on_body/on_end)."""
    events = []
    servers = []

    def handler(req, res):
        events.append("run " + req.path)
        if req.path == "/slow":
            def answer():
                events.append("answered /slow")
                res.send(b"slow")
            servers[0].loop.add_timer(150, answer)
        elif req.method == "POST" and streaming:
            parts = []
            req.on_body(parts.append)
            req.on_end(lambda: res.send(b"got " + b"".join(parts)))
        elif req.method == "POST":
            res.send(b"got " + req.body)
        else:
            res.send(req.path.encode())

    with serving(handler, streaming=streaming) as srv:
        servers.append(srv)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /safe HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                      b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_until_closed(s, 5)
    assert [b for _, b in split_responses(data)] == [b"slow", b"/safe", b"got hello", b"/after"]
    assert events == ["run /slow", "run /safe", "answered /slow", "run /post", "run /after"]


def test_streaming_held_request_gets_the_body_that_arrived_while_it_waited():
    """Streaming mode: a POST held behind a slow answer with part of its body in;
    once it runs, its on_body gets that part, then the rest as it arrives."""
    servers = []
    chunks = []

    def handler(req, res):
        if req.path == "/slow":
            servers[0].loop.add_timer(150, lambda: res.send(b"slow"))
            return
        req.on_body(chunks.append)
        req.on_end(lambda: res.send(b"got " + b"".join(chunks)))

    with serving(handler, streaming=True) as srv:
        servers.append(srv)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello")
            time.sleep(0.05)
            s.sendall(b"world")
            data = read_until_closed(s, 5)
    assert [b for _, b in split_responses(data)] == [b"slow", b"got helloworld"]


def test_requests_keep_running_one_after_another_when_nothing_closes():
    """Many POSTs behind slow answers: each waits for the one before it, none is lost."""
    order = []
    servers = []
    lock = threading.Lock()

    def handler(req, res):
        with lock:
            order.append(req.path)
        servers[0].loop.add_timer(5, lambda: res.send(req.path.encode()))

    with serving(handler) as srv:
        servers.append(srv)
        reqs = b"".join(b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % i for i in range(20))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(reqs + b"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_until_closed(s, 10)
    want = ["/%d" % i for i in range(20)] + ["/end"]
    assert [b.decode() for _, b in split_responses(data)] == want and order == want


# -- one read's pipelined answers respect the transport's high water ------------------


def _pipeline_noread(port, request: bytes, n: int):
    """``n`` copies of ``request`` in one sendall; a small receive buffer, nothing read."""
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel absorbs little
    c.connect(("127.0.0.1", port))
    c.sendall(request * n)
    return c


def _read_answers(c, n: int, timeout=30.0):
    """Read until ``n`` Content-Length framed answers are complete; (head, body) pairs."""
    c.settimeout(timeout)
    data = bytearray()
    out = []
    pos = 0
    end = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < end, "timed out with %d answers, %d bytes" % (len(out), len(data))
        b = c.recv(1 << 20)
        assert b, "connection closed after %d answers" % len(out)
        data += b
        while len(out) < n:
            i = data.find(b"\r\n\r\n", pos)
            if i < 0:
                break
            head = bytes(data[pos:i])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(data) < i + 4 + length:
                break
            out.append((head, bytes(data[i + 4:i + 4 + length])))
            pos = i + 4 + length
    assert pos == len(data), "bytes after the last answer"
    return out


def test_one_reads_big_answers_are_made_only_as_the_client_reads():
    """64 pipelined GETs for 1 MiB answers, the client not reading: the handler
    runs only about as often as the socket buffers and the high water allow
    (it ran 64 times, 64 MiB held, before), and every answer arrives, in order."""
    size = 1 << 20
    calls = []

    def handler(req, res):
        calls.append(req.path)
        res.send(req.path.encode().ljust(size, b"x"))

    with serving(handler) as srv:
        reqs = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(64))
        c = _pipeline_noread(srv.port, reqs, 1)
        try:
            wait_for(lambda: len(calls) >= 1)
            time.sleep(0.5)  # let it make whatever it would make
            ran = len(calls)
            # kernel buffers (a few MiB on loopback) plus about high water in the queue
            assert ran <= 16, "%d handlers ran for a client that reads nothing" % ran
            got = _read_answers(c, 64)
        finally:
            c.close()
    assert [b[:8].rstrip(b"x") for _, b in got] == [b"/%d" % i for i in range(64)]
    assert all(h.startswith(b"HTTP/1.1 200") and len(b) == size for h, b in got)
    assert calls == ["/%d" % i for i in range(64)]


def _open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="needs /proc")
def test_pipelined_multi_range_answers_pin_a_bounded_number_of_descriptors(tmp_path):
    """64 pipelined 16-part range requests, the client not reading: each part
    holds a descriptor until sent, so the batch stops at about FILES_HIGH of
    them (it held ~1000 before); after reading, every answer is complete."""
    import powpow

    data = bytes(range(256)) * (8 << 10)  # 2 MiB
    (tmp_path / "big.bin").write_bytes(data)
    ranges = [(i * 131072, i * 131072 + 65535) for i in range(16)]
    spec = ",".join("%d-%d" % r for r in ranges)
    request = b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=" + spec.encode() + b"\r\n\r\n"

    def handler(req, res):
        if not powpow.serve_static(req, res, str(tmp_path)):
            res.send(b"no", status=404)

    with serving(handler) as srv:
        base = _open_fds()
        c = _pipeline_noread(srv.port, request, 64)
        try:
            time.sleep(1.0)
            held = _open_fds() - base
            assert held <= 200, "%d descriptors held for a client that reads nothing" % held
            got = _read_answers(c, 64)
        finally:
            c.close()
        assert wait_for(lambda: _open_fds() <= base + 1)
    for head, body in got:
        assert head.startswith(b"HTTP/1.1 206")
        for first, last in ranges:
            assert data[first:last + 1] in body
        assert len(body) > 16 * 65536
