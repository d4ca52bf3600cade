"""ASGI ``http`` scope on a real powpow.asgi server with real clients (http.client, raw sockets, curl, httpx).

Includes the behaviours uvicorn's protocol tests check (message order,
disconnects, 100-continue only when the body is read, header splitting
refused, pipelining, keep-alive timeout, 503 over limit_concurrency,
shutdown during a request), written against the real server.
"""
import asyncio
import http.client
import logging
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from powpow.asgi import ClientDisconnected

from ._asgi import asgi_server, read_all, read_body, read_until, respond
from ._http import read_pipelined_answers


def get(port, path="/", method="GET", body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


# ---------------------------------------------------------------- scope

def test_scope_fields():
    seen = {}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        seen.update(scope)
        await respond(send, body=b"ok")

    with asgi_server(app) as srv:
        status, _, body = get(srv.port, "/caf%C3%A9/a%2Fb?x=1&y=%20", headers={"X-Test": "Value  ", "ACCEPT": "*/*"})
    assert (status, body) == (200, b"ok")
    assert seen["type"] == "http"
    assert seen["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert seen["http_version"] == "1.1"
    assert seen["method"] == "GET"
    assert seen["scheme"] == "http"
    assert seen["path"] == "/café/a/b"
    assert seen["raw_path"] == b"/caf%C3%A9/a%2Fb"
    assert seen["query_string"] == b"x=1&y=%20"
    assert seen["root_path"] == ""
    hdrs = seen["headers"]
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in hdrs)
    assert (b"x-test", b"Value") in hdrs and (b"accept", b"*/*") in hdrs
    assert (b"host", b"127.0.0.1:%d" % srv.port) in hdrs
    assert seen["client"][0] == "127.0.0.1" and isinstance(seen["client"][1], int) and seen["client"][1] > 0
    assert seen["server"] == ("127.0.0.1", srv.port)
    assert seen["state"] == {}
    ext = seen["extensions"]
    assert "http.response.pathsend" in ext and "http.response.early_hint" in ext
    assert "http.response.trailers" not in ext  # the request did not say TE: trailers


def test_root_path_and_http10():
    seen = {}

    async def app(scope, receive, send):
        if scope["type"] == "http":
            seen.update(scope)
            await respond(send, body=b"x")

    with asgi_server(app, root_path="/api/") as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET /items?q=1 HTTP/1.0\r\n\r\n")
            data = read_all(s)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nx")
    assert seen["http_version"] == "1.0"
    assert seen["root_path"] == "/api"
    assert seen["path"] == "/api/items" and seen["raw_path"] == b"/api/items"


ABSOLUTE_FORM = [
    # (request head, headers the app sees) -- RFC 9112 3.2.2: the target's authority, not Host
    (b"GET http://victim.example/admin HTTP/1.1\r\nHost: attacker.example\r\nX-A: 1\r\n",
     [(b"host", b"victim.example"), (b"x-a", b"1")]),
    (b"GET http://victim.example:8080/admin HTTP/1.1\r\nX-A: 1\r\nHost: attacker.example\r\n",
     [(b"x-a", b"1"), (b"host", b"victim.example:8080")]),
    (b"GET http://victim.example/admin HTTP/1.0\r\nConnection: keep-alive\r\n",  # no Host in HTTP/1.0
     [(b"host", b"victim.example"), (b"connection", b"keep-alive")]),
]


@pytest.mark.parametrize("target", [b"http://u@victim.example:8080/admin", b"http://bad<host>/admin"],
                         ids=["userinfo", "bad-host"])
def test_absolute_form_target_without_a_valid_host_is_answered_400(target):
    """RFC 9110 4.2.4 / RFC 9112 3.2: the HTTP layer answers it; the app never runs."""
    ran = []

    async def app(scope, receive, send):
        if scope["type"] == "http":
            ran.append(scope["path"])
            await respond(send, body=b"done")

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
            data = read_all(s)
    assert data.startswith(b"HTTP/1.1 400 ") and not ran


@pytest.mark.parametrize("head,headers", ABSOLUTE_FORM, ids=["replaced", "port", "http10-added"])
def test_absolute_form_target_sets_the_host_header(head, headers):
    seen = {}

    async def app(scope, receive, send):
        if scope["type"] == "http":
            seen.update(scope)
            await respond(send, body=b"done")

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(head + b"\r\n")
            data = read_until(s, b"\r\n\r\ndone")
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"done")
    assert seen["headers"] == headers
    assert seen["path"] == "/admin" and seen["raw_path"] == b"/admin"
    assert seen["server"] == ("127.0.0.1", srv.port)


def test_proxy_headers_from_trusted_peer_only():
    seen = []

    async def app(scope, receive, send):
        if scope["type"] == "http":
            seen.append((scope["client"], scope["scheme"]))
            await respond(send)

    hdrs = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1", "X-Forwarded-Proto": "https"}
    with asgi_server(app, forwarded_allow_ips="127.0.0.1,10.0.0.0/8") as srv:
        get(srv.port, headers=hdrs)
    with asgi_server(app, forwarded_allow_ips="192.0.2.1") as srv:  # we are not a trusted proxy
        get(srv.port, headers=hdrs)
    with asgi_server(app, proxy_headers=False) as srv:
        get(srv.port, headers=hdrs)
    assert seen[0] == (("203.0.113.9", 0), "https")
    assert seen[1][0][0] == "127.0.0.1" and seen[1][1] == "http"
    assert seen[2][0][0] == "127.0.0.1" and seen[2][1] == "http"


@pytest.mark.parametrize("lines, scheme", [
    ([b"https, http"], "http"),           # the client wrote "https"; our proxy appended "http"
    ([b"http, https"], "https"),
    ([b"https", b"http"], "http"),        # the proxy added its own field line after the client's
    ([b"HTTPS"], "https"),
])
def test_forwarded_proto_is_the_value_the_trusted_proxy_appended(lines, scheme):
    """X-Forwarded-Proto is read like X-Forwarded-For: from the nearest hop, never
    the client-controlled left end (and as WSGI's wsgi.url_scheme does)."""
    seen = []

    async def app(scope, receive, send):
        if scope["type"] == "http":
            seen.append((scope["client"], scope["scheme"]))
            await respond(send)

    head = b"".join(b"X-Forwarded-Proto: %s\r\n" % v for v in lines)
    with asgi_server(app, forwarded_allow_ips="127.0.0.1") as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.9\r\n%s"
                      b"Connection: close\r\n\r\n" % head)
            assert read_all(s).startswith(b"HTTP/1.1 200")
    assert seen == [(("203.0.113.9", 0), scheme)]


# ---------------------------------------------------------------- request bodies

def test_body_streams_with_backpressure_bounded_messages():
    """A 24 MiB upload: the app reads slowly; no message (and so no buffer) exceeds the high-water mark."""
    sizes = []
    total = [0]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await asyncio.sleep(0.3)  # the client is pushing meanwhile: reading must pause
        while True:
            m = await receive()
            sizes.append(len(m["body"]))
            total[0] += len(m["body"])
            if not m["more_body"]:
                break
        await respond(send, body=str(total[0]).encode())

    size = 24 << 20
    chunk = b"z" * (1 << 20)

    def gen():
        for _ in range(size >> 20):
            yield chunk

    with asgi_server(app) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
        c.request("POST", "/up", body=gen(), headers={"Content-Length": str(size)})
        r = c.getresponse()
        assert (r.status, r.read()) == (200, str(size).encode())
        c.close()
    assert total[0] == size
    assert max(sizes) <= (256 << 10) + (1 << 20)  # the high-water mark plus one read at most


def test_chunked_request_body_and_more_body_flags():
    msgs = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while True:
            m = await receive()
            msgs.append(m)
            if not m["more_body"]:
                break
        await respond(send, body=b"".join(m["body"] for m in msgs))

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            time.sleep(0.1)
            s.sendall(b"6\r\n world\r\n0\r\n\r\n")
            data = read_until(s, b"hello world")
    assert data.endswith(b"hello world")
    assert all(m["type"] == "http.request" for m in msgs)
    assert msgs[-1]["more_body"] is False
    assert b"".join(m["body"] for m in msgs) == b"hello world"


def test_no_body_request_gives_one_empty_message_then_disconnect_after_response():
    got = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        got.append(await receive())
        await respond(send, body=b"done")
        got.append(await receive())  # after the response: http.disconnect at once

    with asgi_server(app) as srv:
        assert get(srv.port)[2] == b"done"
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert got == [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]


def test_disconnect_while_waiting_reaches_receive():
    got = threading.Event()
    box = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await read_body(receive)
        m = await receive()  # long poll: waits for the client to go away
        box.append(m)
        try:
            await respond(send, body=b"late")
        except OSError as exc:
            box.append(exc)
        got.set()

    with asgi_server(app) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        s.close()
        assert got.wait(5)
    assert box[0] == {"type": "http.disconnect"}
    assert isinstance(box[1], ClientDisconnected) and isinstance(box[1], OSError)


def test_disconnect_reaches_a_receive_parked_while_another_task_sent_with_backpressure():
    """Starlette's StreamingResponse: one task waits in receive() for http.disconnect
    while another streams; that send() waiting for a slow client must not steal
    the wake-up meant for the receive()."""
    box = {}
    done = threading.Event()
    size = 8 << 20

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await receive()  # the (empty) body

        async def watch():
            box["watch"] = await receive()  # parks until the client goes away
        watcher = asyncio.ensure_future(watch())
        await asyncio.sleep(0.1)  # the watcher is parked
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * size, "more_body": True})  # waits: slow client
        box["sent"] = True
        try:
            await asyncio.wait_for(watcher, 5)
        except asyncio.TimeoutError:
            box["watch"] = "no http.disconnect within 5 s"
        done.set()

    with asgi_server(app) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)  # the send() is blocked by now
        assert "sent" not in box
        got = 0
        while got < size:  # read it all: the send() completes
            b = s.recv(1 << 20)
            assert b
            got += len(b)
        time.sleep(0.2)
        s.close()
        assert done.wait(8)
    assert box["watch"] == {"type": "http.disconnect"}


def test_expect_100_continue_sent_only_when_body_read():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/read":
            body = await read_body(receive)
            await respond(send, body=b"got " + body)
        else:
            await respond(send, status=401, body=b"no")

    with asgi_server(app) as srv:
        # the app reads: 100 Continue comes, then the final answer
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
            first = read_until(s, b"\r\n\r\n")
            assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
            s.sendall(b"data")
            rest = read_until(s, b"got data")
            assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"got data")
        # the app answers without reading: no 100, the answer, and the connection closes
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"POST /deny HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
            data = read_all(s)
            assert data.startswith(b"HTTP/1.1 401")
            assert b"100 Continue" not in data
            assert b"connection: close" in data.lower()


# ---------------------------------------------------------------- responses

def test_head_and_first_chunk_leave_together():
    """start is not written on its own: the head waits for the first body piece."""
    release = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
        await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        ev = asyncio.Event()
        release.append((asyncio.get_running_loop(), ev))
        await ev.wait()
        await send({"type": "http.response.body", "body": b"second"})

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            first = s.recv(65536)  # one recv: what the first write carried
            assert first.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"transfer-encoding: chunked" in first.lower()
            assert first.endswith(b"\r\n\r\n5\r\nfirst\r\n")
            deadline = time.monotonic() + 5
            while not release and time.monotonic() < deadline:  # the app gets there just after its send
                time.sleep(0.005)
            loop, ev = release[0]
            loop.call_soon_threadsafe(ev.set)
            rest = read_until(s, b"0\r\n\r\n")
            assert rest == b"6\r\nsecond\r\n0\r\n\r\n"


def test_streaming_response_with_curl():
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(50):
            await send({"type": "http.response.body", "body": b"line %d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with asgi_server(app) as srv:
        out = subprocess.run(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:%d/" % srv.port],
                             capture_output=True, check=True).stdout
    assert out == b"".join(b"line %d\n" % i for i in range(50))


def test_app_content_length_is_used_for_streaming():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"01234", "more_body": True})
        await send({"type": "http.response.body", "body": b"56789"})

    with asgi_server(app) as srv:
        status, hdrs, body = get(srv.port)
    assert (status, body, hdrs["content-length"]) == (200, b"0123456789", "10")
    assert "transfer-encoding" not in hdrs


def test_slow_client_pauses_the_app():
    state = {"sent": 0, "exc": None}
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        block = b"x" * 65536
        try:
            while True:
                await send({"type": "http.response.body", "body": block, "more_body": True})
                state["sent"] += len(block)
        except Exception as exc:
            state["exc"] = exc
        done.set()

    with asgi_server(app) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # wait until the app stops (the kernel buffers and the high-water mark are full) ...
        deadline = time.monotonic() + 5
        prev = -1
        while state["sent"] != prev and time.monotonic() < deadline:
            prev = state["sent"]
            time.sleep(0.2)
        first = state["sent"]
        time.sleep(0.3)
        # ... and stays paused: nothing more went out while the client read nothing
        assert state["sent"] == first
        assert 0 < first < 32 << 20, first
        s.close()
        assert done.wait(5)
    assert isinstance(state["exc"], ClientDisconnected)


def test_app_exception_before_start_is_500_and_logged(caplog):
    async def app(scope, receive, send):
        if scope["type"] == "http":
            raise ValueError("boom")

    with caplog.at_level(logging.ERROR, logger="powpow.asgi"):
        with asgi_server(app, log_level=None) as srv:
            status, hdrs, body = get(srv.port)
    assert status == 500 and hdrs.get("connection") == "close"
    assert any("Exception in ASGI application" in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.mark.parametrize("status", [100, 101, 102, 103, 150, 199, 600])
def test_1xx_or_out_of_range_final_status_is_500(status, caplog):
    """RFC 9110 §15.2: a 1xx is interim -- as the final answer a client would wait on."""
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await respond(send, status=status, body=b"final body")

    with caplog.at_level(logging.ERROR, logger="powpow.asgi"):
        with asgi_server(app, log_level=None) as srv:
            with socket.create_connection(("127.0.0.1", srv.port)) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                data = read_all(s)
    assert data.startswith(b"HTTP/1.1 500 ") and data.count(b"HTTP/1.1") == 1
    assert b"final body" not in data
    assert any("invalid response status %d" % status in str(r.exc_info[1]) and "200..599" in str(r.exc_info[1])
               for r in caplog.records if r.exc_info)


def test_refused_response_head_is_500_and_the_log_says_why(caplog):
    """A response powpow refuses (Content-Length 10 with a 3-byte body: the connection would
    be desynchronised) is a 500; the log names the reason -- it said only "Exception in ASGI
    application", with neither message nor traceback."""
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"abc"})

    with caplog.at_level(logging.ERROR, logger="powpow.asgi"):
        with asgi_server(app, log_level=None) as srv:
            status, hdrs, body = get(srv.port)
    assert status == 500 and hdrs.get("connection") == "close"
    msgs = [r.getMessage() for r in caplog.records if r.name == "powpow.asgi"]
    assert any("GET /" in m and "Content-Length" in m and "10" in m for m in msgs), msgs


def test_app_exception_after_start_closes_without_complete_body():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("mid-body")

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_all(s)  # the server closes
    assert data.startswith(b"HTTP/1.1 200") and b"7\r\npartial\r\n" in data
    assert not data.endswith(b"0\r\n\r\n")  # never looks complete
    with asgi_server(app) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        c.request("GET", "/")
        r = c.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            r.read()


def test_returning_without_response_is_500_and_without_completing_closes():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/half":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"12345", "more_body": True})

    with asgi_server(app) as srv:
        assert get(srv.port, "/none")[0] == 500
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_all(s)
    assert data.endswith(b"\r\n\r\n12345")  # then the close: 5 of 10 bytes, never complete


@pytest.mark.parametrize("order", ["body_first", "start_twice", "after_complete", "unknown"])
def test_wrong_message_order_raises_in_the_app(order):
    box = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        try:
            if order == "body_first":
                await send({"type": "http.response.body", "body": b"x"})
            elif order == "start_twice":
                await send({"type": "http.response.start", "status": 200})
                await send({"type": "http.response.start", "status": 200})
            elif order == "after_complete":
                await respond(send, body=b"ok")
                await send({"type": "http.response.body", "body": b"more"})
            else:
                await send({"type": "http.response.bogus"})
        except RuntimeError as exc:
            box.append(str(exc))
            raise

    with asgi_server(app, log_level="critical") as srv:
        status = get(srv.port)[0]
    assert box and "ASGI" in box[0]
    expect = {"body_first": "before 'http.response.start'", "start_twice": "twice",
              "after_complete": "after the response completed", "unknown": "unexpected message type"}[order]
    assert expect in box[0]
    assert status == (200 if order == "after_complete" else 500)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_response_to_a_big_unread_body_closes_the_connection(framing):
    """An app that answers 413 without reading a 1 GB upload: Connection: close and
    the server hangs up, instead of keeping the connection to read the gigabyte."""
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await respond(send, status=413, body=b"too big")

    if framing == "content-length":
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n" + b"x" * 65536
    else:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n" + b"x" * 65536
    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(head)
            t0 = time.monotonic()
            data = read_all(s, timeout=5)  # ends at the server's FIN
            assert time.monotonic() - t0 < 3
    assert data.startswith(b"HTTP/1.1 413")
    assert b"\r\nConnection: close\r\n" in data and data.endswith(b"too big")


def test_response_to_a_small_unread_body_keeps_the_connection():
    """Below UNREAD_BODY_LIMIT the rest of an unread body is read and dropped: keep-alive."""
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await respond(send, status=401, body=scope["path"].encode())

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            first = read_until(s, b"/first")
            assert first.startswith(b"HTTP/1.1 401") and b"Connection: close" not in first
            s.sendall(b"x" * 990 + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_until(s, b"/second").startswith(b"HTTP/1.1 401")


def test_header_splitting_refused():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-evil", b"a\r\nSet-Cookie: injected=1")]})
        await send({"type": "http.response.body", "body": b"x"})

    with asgi_server(app, log_level="critical") as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_all(s)
    assert data.startswith(b"HTTP/1.1 500")
    assert b"injected" not in data


def test_pipelined_requests_answered_in_order():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        n = int(scope["path"][1:])
        await asyncio.sleep((3 - n) * 0.05)  # later requests finish first
        await respond(send, body=b"r%d" % n)

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)))
            data = read_until(s, b"r2")
    assert data.count(b"HTTP/1.1 200") == 3
    assert data.index(b"r0") < data.index(b"r1") < data.index(b"r2")


@pytest.mark.parametrize("awaits", [False, True], ids=["at-once", "after-await"])
def test_pipelined_big_answers_wait_for_a_slow_client(awaits):
    # 48 pipelined GETs for 1 MiB answers, each a single final body: sent
    # without waiting, they (48 MiB) pass the connection's 32 MiB write-queue cap
    # and cut off an honest client that reads slower than the app produces.  The
    # final body must wait for the connection like a more_body chunk does.
    n, size = 48, 1 << 20

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if awaits:
            await asyncio.sleep(0)
        await respond(send, body=scope["path"][1:].encode().rjust(6, b"0") + b"x" * (size - 6))

    with asgi_server(app) as srv:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            s.connect(("127.0.0.1", srv.port))
            s.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n)))
            time.sleep(0.5)  # the client is busy: the server has produced all it would
            marks = read_pipelined_answers(s, n, size)
    assert marks == [b"%06d" % i for i in range(n)]


def test_keep_alive_timeout_closes_idle_connection():
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await respond(send, body=b"ok")

    with asgi_server(app, timeout_keep_alive=0.3) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_until(s, b"ok").endswith(b"ok")
            t0 = time.monotonic()
            s.settimeout(5)
            assert s.recv(100) == b""  # closed by the server
            assert 0.2 < time.monotonic() - t0 < 3


def test_limit_concurrency_answers_503():
    gate = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            ev = asyncio.Event()
            gate.append((asyncio.get_running_loop(), ev))
            await ev.wait()
        await respond(send, body=b"ok")

    with asgi_server(app, limit_concurrency=1) as srv:
        slow = socket.create_connection(("127.0.0.1", srv.port))
        slow.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 5
        while not gate and time.monotonic() < deadline:
            time.sleep(0.01)
        status, hdrs, _ = get(srv.port, "/fast")  # a second connection while one request is in flight
        assert status == 503
        # the same over one connection: a pipelined second request is over the limit too
        slow.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        loop, ev = gate[0]
        loop.call_soon_threadsafe(ev.set)
        data = read_until(slow, b"\r\n\r\nService Unavailable\n")
        assert data.startswith(b"HTTP/1.1 200") and data.index(b"ok") < data.index(b"HTTP/1.1 503")
        slow.close()
        time.sleep(0.05)
        assert get(srv.port, "/fast")[0] == 200


def test_head_request_gets_no_body():
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await respond(send, body=b"hello")

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_until(s, b"hello")
    assert data.count(b"Content-Length: 5") == 2
    assert data.count(b"hello") == 1


# ---------------------------------------------------------------- extensions

def test_pathsend_serves_the_file(tmp_path):
    f = tmp_path / "big.bin"
    payload = os.urandom(300000)
    f.write_bytes(payload)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.pathsend", "path": str(f)})

    with asgi_server(app) as srv:
        status, hdrs, body = get(srv.port)
        assert (status, hdrs["content-length"], body == payload) == (200, str(len(payload)), True)
        status, hdrs, body = get(srv.port, method="HEAD")
        assert (status, hdrs["content-length"], body) == (200, str(len(payload)), b"")


def test_trailers_only_when_requested():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        ok = "http.response.trailers" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"trailer", b"x-checksum")],
                    "trailers": ok})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def", "more_body": False})
        if ok:
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"42")],
                        "more_trailers": False})

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
            data = read_until(s, b"\r\n0\r\nx-checksum: 42\r\n\r\n")
        assert b"transfer-encoding: chunked" in data.lower()
        assert data.endswith(b"3\r\nabc\r\n3\r\ndef\r\n0\r\nx-checksum: 42\r\n\r\n")
        status, hdrs, body = get(srv.port)  # no TE: trailers: no extension, plain body
        assert (status, body) == (200, b"abcdef")


def test_early_hint_103_before_the_response():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        assert "http.response.early_hint" in scope["extensions"]
        await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]})
        await asyncio.sleep(0.1)
        await respond(send, body=b"page")

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            first = read_until(s, b"\r\n\r\n")
            assert first == b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
            rest = read_until(s, b"page")
            assert rest.startswith(b"HTTP/1.1 200 OK") and rest.endswith(b"page")


# ---------------------------------------------------------------- lifespan and shutdown

def test_lifespan_state_reaches_requests_and_shutdown_runs():
    events = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                events.append(m["type"])
                if m["type"] == "lifespan.startup":
                    scope["state"]["db"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await respond(send, body=scope["state"]["db"].encode())

    with asgi_server(app) as srv:
        assert get(srv.port)[2] == b"connected"
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert srv.result == 0


@pytest.mark.parametrize("how", ["failed", "raise_on"])
def test_lifespan_startup_failure_exit_code(how):
    from powpow.asgi import Server

    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        await receive()
        if how == "failed":
            await send({"type": "lifespan.startup.failed", "message": "no database"})
        else:
            raise RuntimeError("cannot start")

    srv = Server(app, port=0, lifespan="on" if how == "raise_on" else "auto", log_level="critical")
    t0 = time.monotonic()
    assert srv.run() == 3
    assert time.monotonic() - t0 < 5


def test_lifespan_auto_tolerates_an_app_without_lifespan():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            raise ValueError("only http here")
        await respond(send, body=b"fine")

    with asgi_server(app, lifespan="auto") as srv:
        assert get(srv.port)[2] == b"fine"
    assert srv.result == 0


def test_shutdown_during_a_request_lets_it_finish():
    started = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        started.set()
        await asyncio.sleep(0.3)
        await respond(send, body=b"finished")

    with asgi_server(app) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        c.request("GET", "/")
        assert started.wait(5)
        t0 = time.monotonic()
        srv.shutdown()
        r = c.getresponse()
        assert (r.status, r.read(), r.getheader("connection")) == (200, b"finished", "close")
        c.close()
        # new connections are refused once shutting down
        time.sleep(0.05)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
    assert time.monotonic() - t0 < 3


def test_shutdown_cancels_requests_past_the_grace_period():
    box = []
    started = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            box.append("cancelled")
            raise

    with asgi_server(app, timeout_graceful_shutdown=0.3, log_level="critical") as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert started.wait(5)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 3
    assert box == ["cancelled"]
    data = read_all(s, 2)
    assert data.startswith(b"HTTP/1.1 503") and b"connection: close" in data.lower()  # then closed
    s.close()


@pytest.mark.parametrize("declared", [False, True])
def test_head_answered_with_an_empty_body_and_no_length_is_not_content_length_0(declared):
    """Starlette's StreamingResponse answers HEAD with one empty final body.  Without
    a length from the app the HEAD is framed as the GET's stream (chunked); it claimed
    ``Content-Length: 0`` (RFC 9110 §8.6).  A length the app gives is kept."""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/plain")] + ([(b"content-length", b"11")] if declared else [])
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else b"hello world"})

    with asgi_server(app) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_all(s, 5)
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    fields = head.lower().split(b"\r\n")
    if declared:
        assert b"content-length: 11" in fields, head
    else:
        assert not [f for f in fields if f.startswith(b"content-length")], head
        assert b"transfer-encoding: chunked" in fields, head
    assert rest.startswith(b"HTTP/1.1 200 "), data


def test_shutdown_does_not_tell_a_streaming_app_its_client_left():
    """A streaming export that checks for a disconnect between rows (Starlette's
    ``request.is_disconnected()``) runs to its end within the grace period.  Was:
    from the shutdown on, ``receive()`` said ``http.disconnect`` while the client was
    still there, the app stopped early and cleanly, and the client got a truncated
    200 that looked complete."""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/csv")]})
        for i in range(10):
            try:  # is the client gone?  (a look, not a wait)
                msg = await asyncio.wait_for(receive(), 0.001)
            except asyncio.TimeoutError:
                msg = None
            if msg is not None and msg["type"] == "http.disconnect":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send({"type": "http.response.body", "body": b"row %d\n" % i, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"END\n", "more_body": False})

    with asgi_server(app, timeout_graceful_shutdown=5) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"GET /export HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"row 1" in read_until(s, b"row 1")
        srv.shutdown()
        data = read_all(s, 5)
        s.close()
    assert b"row 9\n" in data and b"END\n" in data, data


# ---------------------------------------------------------------- other clients and transports

def test_httpx_streaming_upload_and_download():
    httpx = pytest.importorskip("httpx")

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        n = 0
        while True:
            m = await receive()
            n += len(m["body"])
            if not m["more_body"]:
                break
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-got", str(n).encode())]})
        for _ in range(10):
            await send({"type": "http.response.body", "body": b"y" * 10000, "more_body": True})
        await send({"type": "http.response.body"})

    def upload():
        for _ in range(20):
            yield b"q" * 50000

    with asgi_server(app) as srv:
        with httpx.Client(timeout=5) as client:
            with client.stream("PUT", "http://127.0.0.1:%d/u" % srv.port, content=upload()) as r:
                assert r.status_code == 201 and r.headers["x-got"] == "1000000"
                assert sum(len(c) for c in r.iter_bytes()) == 100000


def test_unix_socket(tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    seen = {}

    async def app(scope, receive, send):
        if scope["type"] == "http":
            seen.update(scope)
            await respond(send, body=b"unix ok")

    path = str(tmp_path / "asgi.sock")
    with asgi_server(app, uds=path):
        out = subprocess.run(["curl", "-sS", "--max-time", "5", "--unix-socket", path, "http://localhost/x"],
                             capture_output=True, check=True).stdout
    assert out == b"unix ok"
    assert seen["client"] is None and seen["server"] == (path, None)


def test_tls_scheme_https(certs):
    import ssl
    seen = {}

    async def app(scope, receive, send):
        if scope["type"] == "http":
            seen["scheme"] = scope["scheme"]
            await respond(send, body=b"secure")

    with asgi_server(app, ssl_certfile=certs.cert, ssl_keyfile=certs.key) as srv:
        ctx = ssl.create_default_context(cafile=certs.ca)
        c = http.client.HTTPSConnection("localhost", srv.port, context=ctx, timeout=5)
        c.request("GET", "/")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"secure")
        c.close()
    assert seen["scheme"] == "https"


def test_requests_during_a_slow_startup_wait_for_it():
    """Requests that arrive while lifespan startup runs are served after it (bodies complete or partial)."""
    from powpow.asgi import Server

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await asyncio.sleep(0.4)
            scope["state"]["up"] = "yes"
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await read_body(receive)
        await respond(send, body=scope["state"]["up"].encode() + b" " + body)

    srv = Server(app, port=0, log_level="warning", access_log=False).listen()
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as a, \
                socket.create_connection(("127.0.0.1", srv.port)) as b:
            a.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nfull")
            b.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nhalf")
            time.sleep(0.1)
            assert srv.ready is False
            ra = read_until(a, b"yes full")
            b.sendall(b"-way")
            rb = read_until(b, b"yes half-way")
        assert ra.startswith(b"HTTP/1.1 200") and ra.endswith(b"yes full")
        assert rb.startswith(b"HTTP/1.1 200") and rb.endswith(b"yes half-way")
    finally:
        srv.shutdown()
        th.join(10)
    assert not th.is_alive()


def test_lifespan_shutdown_failure_exit_code():
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.failed", "message": "could not flush"})
            return
        await respond(send, body=b"ok")

    with asgi_server(app, log_level="critical") as srv:
        assert get(srv.port)[2] == b"ok"
    assert srv.result == 1


def test_a_body_of_one_byte_chunks_to_an_app_not_receiving_pauses_at_its_memory_not_its_payload():
    """Regression: the body buffer counted payload bytes, not the memory of its pieces:
    1-byte chunks pinned ~10 MiB per request (a quarter of a million pieces) before reading
    paused at 256 KiB of payload.  Now it pauses at about BODY_HIGH_WATER / PIECE_COST
    pieces, plus the read being parsed."""
    import struct
    from powpow.asgi import _http
    BODY_HIGH_WATER, PIECE_COST = _http.BODY_HIGH_WATER, getattr(_http, "PIECE_COST", 64)
    cycles = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        cycles.append(receive.__self__)
        await asyncio.sleep(30)  # never receives (cancelled at shutdown)

    with asgi_server(app) as srv:
        socks = []
        try:
            for _ in range(4):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
                s.settimeout(5)
                s.connect(("127.0.0.1", srv.port))
                s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                s.settimeout(0.2)
                socks.append(s)
            piece = b"1\r\na\r\n" * 10000
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                for s in socks:
                    try:
                        s.send(piece)
                    except socket.timeout:
                        pass
            held = [len(c.chunks) for c in cycles]
        finally:
            for s in socks:
                s.close()
    assert len(held) == 4 and min(held) > 1000, held  # the flood did reach them
    one_read = (64 << 10) // 6  # 1-byte chunks in one 64 KiB read ("1\r\na\r\n")
    assert max(held) <= BODY_HIGH_WATER // PIECE_COST + 2 * one_read, held


def test_headers_given_as_a_generator_are_sent_and_do_not_poison_later_answers():
    """Regression: ``headers`` as an iterator (the spec's type is Iterable) was used up
    building the cache key: no header was sent, and the process-wide cache then held
    ``[]`` for those pairs, so later answers sending them as a list lost them too."""
    pairs = [(b"content-type", b"application/json"), (b"x-gen-test", b"1")]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        hs = (p for p in pairs) if scope["path"] == "/gen" else list(pairs)
        await send({"type": "http.response.start", "status": 200, "headers": hs})
        await send({"type": "http.response.body", "body": b"{}"})

    with asgi_server(app) as srv:
        heads = []
        for path in ("/gen", "/list", "/gen"):
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            heads.append((r.getheader("content-type"), r.getheader("x-gen-test")))
            c.close()
    assert heads == [("application/json", "1")] * 3, heads


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_client_closing_mid_body_is_a_disconnect_at_once(framing):
    """Regression: a client that closed (FIN) part-way through its request body: the app's
    next receive() waited for the keep-alive timeout (5 s; 75 s behind a typical load
    balancer) before http.disconnect, its task and concurrency slot held meanwhile."""
    events = []
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        t0 = time.monotonic()
        while True:
            m = await receive()
            events.append((m["type"], round(time.monotonic() - t0, 1)))
            if m["type"] == "http.disconnect" or not m.get("more_body"):
                break
        done.set()

    with asgi_server(app) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        if framing == "length":
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        else:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        time.sleep(0.3)
        s.close()
        assert done.wait(3), events  # (it took 5.8 s)
    assert events[0][0] == "http.request" and events[-1][0] == "http.disconnect", events
