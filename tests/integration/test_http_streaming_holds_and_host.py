"""HttpServer gaps: streaming mode holds pipelined requests above high water, a
streaming handler hears when its request's body fails, and ``Request.host`` /
absolute-form targets (RFC 9112 §3.2.2, RFC 9110 §4.2)."""
import asyncio
import hashlib
import os
import socket
import threading
import time

import pytest

import powpow.aio
from powpow import HttpServer
from ._asgi import asgi_server
from ._http import on_loop, read_answers, serving, split_responses, wait_quiet
from ._wsgi import wsgi_server

SIZE = 1 << 20  # one answer: 4x the transport's high water (HTTP_HIGH_WATER, 256 KiB)


def read_all(s, timeout=3.0):
    """Read until the server closes (or ``timeout`` passes)."""
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


def wait_for(cond, timeout=3.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.005)
    return cond()


def noread_client(port, data: bytes):
    """A client that sends ``data`` and reads nothing (a small receive buffer)."""
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(("127.0.0.1", port))
    c.sendall(data)
    return c


def _answer(mark: bytes) -> bytes:
    return mark.ljust(SIZE, b"x")


# -- 1. streaming mode: pipelined requests wait while the transport is above high water --


@pytest.mark.parametrize("how", ["send", "write"])
def test_streaming_pipelined_big_answers_are_made_only_as_the_client_reads(how):
    """64 pipelined GETs for 1 MiB answers in streaming mode, the client not reading:
    the handlers run only about as often as the socket buffers and the high water
    allow (every one ran before, their answers passed the transport's 32 MiB cap and
    the connection was killed: WriteQueueFull); then every answer arrives, in order."""
    calls = []

    def handler(req, res):
        calls.append(req.path)
        body = _answer(req.path.encode())
        if how == "send":
            res.send(body)
            return
        res.set_length(SIZE)  # a producer that honours write() / on_drain
        sent = [0]

        def pump():
            while sent[0] < SIZE:
                piece = body[sent[0]:sent[0] + 65536]
                sent[0] += len(piece)
                if not res.write(piece):
                    return
            res.end()

        res.on_drain = pump
        pump()

    with serving(handler, streaming=True) as srv:
        c = noread_client(srv.port, b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(64)))
        try:
            assert wait_for(lambda: len(calls) >= 1)
            ran = wait_quiet(lambda: len(calls))
            # kernel buffers (a few MiB on loopback) plus about high water in the queue
            assert ran <= 16, "%d handlers ran for a client that reads nothing" % ran
            assert on_loop(srv, lambda: srv.connection_count) == 1  # not killed
            got = read_answers(c, 64)
        finally:
            c.close()
    for i, (head, body) in enumerate(got):
        assert head.startswith(b"HTTP/1.1 200") and body == _answer(b"/%d" % i), i
    assert calls == ["/%d" % i for i in range(64)]


def test_streaming_pipelined_posts_held_above_high_water_get_their_bodies():
    """Pipelined POSTs whose handlers wait for the drain: the body that arrived
    meanwhile reaches ``on_body`` when each handler runs, whole and in order."""
    bodies = [os.urandom(3000) for _ in range(24)]
    calls = []

    def handler(req, res):
        calls.append(req.path)
        got = []
        req.on_body(got.append)
        req.on_end(lambda: res.send(_answer(hashlib.sha256(b"".join(got)).hexdigest().encode())))

    with serving(handler, streaming=True) as srv:
        data = b"".join(b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (i, len(b)) + b
                        for i, b in enumerate(bodies))
        c = noread_client(srv.port, data)
        try:
            assert wait_for(lambda: len(calls) >= 1)
            assert wait_quiet(lambda: len(calls)) <= 16
            got = read_answers(c, len(bodies))
        finally:
            c.close()
    assert [b[:64] for _, b in got] == [hashlib.sha256(b).hexdigest().encode() for b in bodies]
    assert calls == ["/%d" % i for i in range(len(bodies))]


# -- 2. a streaming handler reading the body hears when that body fails -------------------

CHUNKED = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
FIRST = b"5\r\nhello\r\n"

# (second part of the body, server options, the status the server answers)
BODY_FAILURES = {
    "bad-chunk": (b"ZZZ\r\n", {}, b"400"),
    "past-max-body": (b"40\r\n" + b"a" * 64 + b"\r\n", {"max_body": 32}, b"413"),
    "body-deadline": (b"", {"body_timeout": 0.3}, b"408"),
}


@pytest.mark.parametrize("case", list(BODY_FAILURES))
def test_streaming_handler_reading_the_body_is_told_when_it_fails(case):
    """on_body / on_end / on_disconnect: the handler waits for ``on_end``; the body
    fails under it.  The server answers the error and the handler's
    ``on_disconnect`` runs at once (nothing told it before: it waited forever)."""
    rest, options, status = BODY_FAILURES[case]
    reading = threading.Event()
    told = threading.Event()
    ended = []

    def handler(req, res):
        req.on_body(lambda chunk: reading.set())
        req.on_end(lambda: (ended.append(True), res.send(b"done")))
        req.on_disconnect(told.set)

    with serving(handler, streaming=True, **options) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(CHUNKED + FIRST)
            assert reading.wait(2)
            if rest:
                s.sendall(rest)
            s.settimeout(3)
            head = s.recv(4096)  # the client stays connected: only the failure tells the handler
            assert head.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in head, head
            assert told.wait(2), "the handler was never told that its body failed"
    assert not ended


def test_streaming_error_answer_is_kept_when_it_fails_in_the_same_read_as_good_requests():
    """A GET and a POST whose chunked body is bad, in one read: the GET's answer,
    then the 400 (the 400 was dropped, the connection just closed)."""
    told = threading.Event()

    def handler(req, res):
        if req.method == "GET":
            res.send(b"ok")
            return
        req.on_body(lambda chunk: None)
        req.on_end(lambda: res.send(b"done"))
        req.on_disconnect(told.set)

    with serving(handler, streaming=True) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + CHUNKED + FIRST + b"ZZZ\r\n")
            data = read_all(s)
    answers = split_responses(data)
    assert [h.split(b"\r\n")[0] for h, _ in answers] == [b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request"]
    assert answers[0][1] == b"ok" and b"chunk size" in answers[1][1]
    assert told.wait(2)


def test_streaming_answer_already_started_is_cut_and_its_handler_told():
    """The handler streams its answer while the body arrives; the body fails: no
    status can be sent any more -- the answer is cut by the close (never its last
    chunk), and the handler is told."""
    told = threading.Event()
    writes = []

    def handler(req, res):
        res.write(b"started")
        req.on_body(lambda chunk: writes.append(res.write(chunk)))
        req.on_disconnect(told.set)

    with serving(handler, streaming=True) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(CHUNKED + FIRST)
            assert wait_for(lambda: writes)
            s.sendall(b"ZZZ\r\n")
            assert told.wait(2)
            data = read_all(s)
    assert data.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding: chunked" in data
    assert b"hello" in data and not data.endswith(b"0\r\n\r\n") and b" 400 " not in data


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_stream_to_file_descriptor_is_closed_when_the_body_fails(tmp_path):
    """``stream_to_file``: the file's descriptor is closed once the body fails (it
    stayed open for the life of the process: the parser had forgotten the request)."""
    path = str(tmp_path / "upload.bin")
    told = threading.Event()

    def handler(req, res):
        req.stream_to_file(path)
        req.on_end(lambda: res.send(b"stored"))
        req.on_disconnect(told.set)

    def open_on(p):
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink("/proc/self/fd/" + fd) == p:
                    return True
            except OSError:
                pass
        return False

    with serving(handler, streaming=True) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(CHUNKED + FIRST)
            assert wait_for(lambda: os.path.exists(path) and os.path.getsize(path) == 5)
            assert open_on(path)
            s.sendall(b"ZZZ\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
            assert told.wait(2)
            assert wait_for(lambda: not open_on(path)), "the upload's descriptor is still open"


def test_async_handler_awaiting_the_body_is_cancelled_when_it_fails():
    """An ``async def`` handler awaiting its streamed body (a future set by
    ``on_end``) ends with CancelledError when the body fails."""
    state = {"exit": None}
    finished = threading.Event()
    reading = threading.Event()

    async def handler(req, res):
        done = asyncio.get_running_loop().create_future()
        req.on_end(lambda: done.done() or done.set_result(None))
        reading.set()
        try:
            await done
            state["exit"] = "body"
        except asyncio.CancelledError:
            state["exit"] = "cancelled"
            raise
        finally:
            finished.set()

    def client(port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(CHUNKED + FIRST)
            assert reading.wait(2)
            s.sendall(b"ZZZ\r\n")
            head = s.recv(4096)
            return head[:12], finished.wait(2)  # still connected

    async def main():
        aio = asyncio.get_running_loop()
        srv = HttpServer(handler, aio, streaming=True).listen(0, "127.0.0.1")
        try:
            return await asyncio.wait_for(aio.run_in_executor(None, client, srv.port), 10)
        finally:
            srv.close()

    assert powpow.aio.run(main()) == (b"HTTP/1.1 400", True)
    assert state["exit"] == "cancelled"


def test_asgi_receive_answers_disconnect_when_the_body_fails():
    """An ASGI app waiting in ``receive()`` for more body gets ``http.disconnect``
    when the body fails (it waited until the client closed its socket)."""
    got = []
    reading = threading.Event()
    told = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while True:
            reading.set()
            m = await receive()
            got.append(m["type"])
            if m["type"] == "http.disconnect" or not m.get("more_body"):
                break
        told.set()

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(CHUNKED + FIRST)
            assert reading.wait(2) and wait_for(lambda: got)
            s.sendall(b"ZZZ\r\n")
            s.settimeout(3)
            assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
            assert told.wait(2), got  # the client is still connected
    assert got == ["http.request", "http.disconnect"]


def test_wsgi_app_reading_the_input_is_told_when_the_body_passes_max_body():
    """A WSGI app blocked in ``wsgi.input.read()`` gets an error as soon as the body
    passes ``max_body`` (it waited until the client closed its socket)."""
    errors = []
    reading = threading.Event()
    done = threading.Event()

    def app(environ, start_response):
        reading.set()
        try:
            environ["wsgi.input"].read()
        except OSError as exc:
            errors.append(exc)
            raise
        finally:
            done.set()
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with wsgi_server(app, max_body=1 << 16) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(CHUNKED + FIRST)
            assert reading.wait(2)
            s.sendall(b"10000\r\n" + b"c" * 0x10000 + b"\r\n")
            s.settimeout(3)
            assert s.recv(4096).startswith(b"HTTP/1.1 413 ")
            assert done.wait(2), "the app is still blocked in wsgi.input.read()"
    assert len(errors) == 1


# -- 3. Request.host and absolute-form targets ------------------------------------------

HOSTS = [
    # (request line + fields, req.host)
    (b"GET /x HTTP/1.1\r\nHost: a.example:8080\r\n", "a.example:8080"),
    (b"GET http://victim.example/x HTTP/1.1\r\nHost: attacker.example\r\n", "victim.example"),  # §3.2.2
    (b"GET HTTP://Victim.example:8080?q=1 HTTP/1.1\r\nHost: attacker.example\r\n", "Victim.example:8080"),
    (b"GET https://[::1]:8443/v6 HTTP/1.1\r\nHost: attacker.example\r\n", "[::1]:8443"),
    (b"GET http://victim.example/10 HTTP/1.0\r\n", "victim.example"),  # HTTP/1.0: no Host needed
    (b"GET /10 HTTP/1.0\r\n", ""),
    (b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n", "a.example"),
    (b"CONNECT tunnel.example:443 HTTP/1.1\r\nHost: tunnel.example:443\r\n", "tunnel.example:443"),
]


@pytest.mark.parametrize("streaming", [False, True])
def test_request_host_is_the_target_authority_or_the_host_field(streaming):
    seen = []

    def handler(req, res):
        seen.append(req.host)
        res.send(req.host.encode())

    with serving(handler, streaming=streaming) as srv:
        for head, host in HOSTS:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(head + b"Connection: close\r\n\r\n")
                data = read_all(s)
            assert data.startswith(b"HTTP/1.1 200 "), (head, data[:100])
            assert data.endswith(b"\r\n\r\n" + host.encode()), (head, data[-100:])
    assert seen == [h for _, h in HOSTS]


BAD_TARGETS = [
    # (target, words of the 400's message)
    (b"http://exa mple.com/", b"invalid character"),  # (the parser's)
    (b"http://:99999/", b"without a host"),
    (b"http://:80/x", b"without a host"),
    (b"http://h:99999/", b"port out of range"),
    (b"http://h:65536/", b"port out of range"),
    (b"http://u@h/", b"userinfo"),
    (b"http://trusted.example:pw@evil.example/", b"userinfo"),
    (b"http://bad<host>/x", b"invalid host"),
    (b"http://h:8x/", b"invalid host"),
    (b"ftp://h/file", b"scheme 'ftp'"),
    (b"file://h/etc/passwd", b"scheme 'file'"),
]


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("target,why", BAD_TARGETS, ids=[t.decode() for t, _ in BAD_TARGETS])
def test_bad_absolute_form_target_is_answered_400(target, why, streaming):
    """Nothing behind it is processed; the handler never runs for it."""
    seen = []

    def handler(req, res):
        seen.append(req.target)
        res.send(b"ran")

    with serving(handler, streaming=streaming) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n")
            data = read_all(s)
    answers = split_responses(data)
    assert len(answers) == 1 and answers[0][0].startswith(b"HTTP/1.1 400 "), data[:300]
    assert b"Connection: close" in answers[0][0] and why in answers[0][1], answers[0][1]
    assert seen == []


@pytest.mark.parametrize("streaming", [False, True])
def test_bad_absolute_form_target_is_answered_after_the_answers_before_it(streaming):
    servers = []

    def handler(req, res):
        servers[0].loop.add_timer(100, lambda: res.send(b"slow"))

    with serving(handler, streaming=streaming) as srv:
        servers.append(srv)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"
                      b"POST ftp://h/x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                      b"GET /never HTTP/1.1\r\nHost: h\r\n\r\n")
            data = read_all(s)
    answers = split_responses(data)
    assert [h.split(b"\r\n")[0] for h, _ in answers] == [b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request"]
    assert answers[0][1] == b"slow" and b"Connection: close" not in answers[0][0]


def test_valid_absolute_form_requests_keep_the_connection_alive():
    """Proxy-style requests that are fine go on as usual (keep-alive, path, query)."""
    def handler(req, res):
        res.send(("%s %s %s" % (req.host, req.path, req.query)).encode())

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET http://a.example/p?q=1 HTTP/1.1\r\nHost: a.example\r\n\r\n"
                      b"GET https://b.example:8443 HTTP/1.1\r\nHost: b.example\r\n\r\n"
                      b"GET http://c.example:/x HTTP/1.1\r\nHost: c.example\r\nConnection: close\r\n\r\n")
            data = read_all(s)
    assert [b for _, b in split_responses(data)] == [b"a.example /p q=1", b"b.example:8443 / ",
                                                      b"c.example: /x "]
