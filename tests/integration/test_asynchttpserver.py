"""powpow.asynchttpserver: the Nim std/asynchttpserver API (tasynchttpserver's cases ported), on powpow.aio."""
import asyncio
import http.client
import re
import socket
import time

import pytest

import powpow.aio
from powpow.asynchttpserver import AsyncHttpServer, Request


def _run(cb, client, server=None):
    """Serve ``cb`` with accept_request in a loop (the user's server loop); ``client(port)`` in a thread."""
    server = server or AsyncHttpServer()

    async def main():
        server.listen(0, "127.0.0.1")
        port = server.get_port()

        async def accept_loop():
            while True:
                if server.should_accept_request():
                    await server.accept_request(cb)
                else:
                    await asyncio.sleep(0.5)

        acc = asyncio.get_running_loop().create_task(accept_loop())
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, client, port), 8)
        finally:
            acc.cancel()
            server.close()
    return powpow.aio.run(main())


def _get(port, method="GET", path="/", body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


_DATE = re.compile(rb"\r\nDate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n")


def _undated(out: bytes) -> bytes:
    """``out`` without the Date line every final response carries (RFC 9110 6.6.1), so whole
    answers can be compared byte for byte."""
    return _DATE.sub(b"\r\n", out)


def _raw(port, data, read_until_close=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def test_200_hello_world():
    async def cb(req: Request):
        await req.respond(200, "Hello World", {"Content-Type": "text/plain; charset=utf-8"})
    status, headers, body = _run(cb, _get)
    assert (status, body, headers["Content-Length"]) == (200, b"Hello World", "11")


def test_404_body():
    async def cb(req):
        await req.respond(404, "Hello World")
    status, headers, body = _run(cb, _get)
    assert (status, body, headers["Content-Length"]) == (404, b"Hello World", "11")


def test_custom_empty_headers():
    async def cb(req):
        await req.respond(200, "Hello World", {})
    status, headers, body = _run(cb, _get)
    assert (status, body, headers["Content-Length"]) == (200, b"Hello World", "11")


def test_custom_content_length_honoured():
    async def cb(req):
        await req.respond(200, b"", [("Content-Length", "0")])
    status, headers, body = _run(cb, _get)
    assert (status, body, headers["Content-Length"]) == (200, b"", "0")


def test_content_length_mismatch_is_an_error_nothing_sent():
    errors = []

    async def cb(req):
        try:
            await req.respond(200, "Hello World", {"Content-Length": "0"})
        except ValueError as exc:
            errors.append(str(exc))
            await req.respond(500, "mismatch")
    status, headers, body = _run(cb, _get)
    assert status == 500 and body == b"mismatch" and "Content-Length 0" in errors[0]


def test_chunked_request_body_with_crlf_in_data():
    got = []

    async def cb(req):
        got.append(req.body)
        await req.respond(200, req.body)
    req = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           b"4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n")
    out = _run(cb, lambda p: _raw(p, req))
    assert got == [b"Wikipedia in\r\n\r\nchunks."]
    assert out.endswith(b"Wikipedia in\r\n\r\nchunks.")


def test_230000_byte_response():
    async def cb(req):
        await req.respond(200, b"x" * 230000)
    status, headers, body = _run(cb, _get)
    assert status == 200 and len(body) == 230000 and headers["Content-Length"] == "230000"


def test_request_fields():
    seen = {}

    async def cb(req):
        seen.update(method=req.req_method, proto=req.protocol, path=req.url.path, query=req.url.query,
                    host=req.hostname, a=req.headers.get_all("x-a"), body=req.body, client=req.client)
        await req.respond(200, "ok")
    _run(cb, lambda p: _get(p, "PUT", "/p/q?x=1", b"data", {"X-A": "1"}))
    assert seen["method"] == "PUT" and seen["proto"] == ("HTTP/1.1", 1, 1)
    assert (seen["path"], seen["query"], seen["host"], seen["body"]) == ("/p/q", "x=1", "127.0.0.1", b"data")
    assert seen["a"] == ["1"] and isinstance(seen["client"], socket.socket)


def test_send_headers_sends_header_lines():
    async def cb(req):
        await req._conn.send(b"HTTP/1.1 200 OK\r\n")
        await req.send_headers({"X-Custom": "v", "Content-Length": "2"})
        await req._conn.send(b"\r\nok")
    status, headers, body = _run(cb, _get)
    assert (status, headers["X-Custom"], body) == (200, "v", b"ok")


def test_keepalive_and_pipelining_in_order():
    async def cb(req):
        if req.url.path == "/slow":
            await asyncio.sleep(0.05)
        await req.respond(200, req.url.path)
    data = (b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /last HTTP/1.0\r\n\r\n")
    out = _run(cb, lambda p: _raw(p, data))
    assert out.count(b"HTTP/1.1 200") == 3
    assert out.index(b"/slow") < out.index(b"/fast") < out.index(b"/last")


def test_http10_closes_unless_keepalive():
    async def cb(req):
        await req.respond(200, "a")
    out = _run(cb, lambda p: _raw(p, b"GET / HTTP/1.0\r\n\r\n"))
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"a")


def test_100_continue_and_413_and_411():
    async def cb(req):
        await req.respond(200, b"len=%d" % len(req.body))

    def client(port):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        first = s.recv(100)
        s.sendall(b"abc")
        time.sleep(0.05)
        rest = s.recv(1000)
        s.close()
        big = _raw(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + b"y" * 2000)
        nolen = _raw(port, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
        return first, rest, big, nolen
    first, rest, big, nolen = _run(cb, client, AsyncHttpServer(max_body=1000))
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"len=3")
    assert big.startswith(b"HTTP/1.1 413")
    assert nolen.startswith(b"HTTP/1.1 411")


def test_bad_request_closes_connection():
    async def cb(req):
        await req.respond(200, "no")
    out = _run(cb, lambda p: _raw(p, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
    assert out.startswith(b"HTTP/1.1 400") and b"Connection: close" in out


def test_should_accept_request_and_get_port():
    s = AsyncHttpServer()
    with pytest.raises(RuntimeError):
        s.get_port()
    assert s.should_accept_request(-1)
    assert s.should_accept_request(5)
    assert not s.should_accept_request(s.max_fds)


def test_serve_runs_until_cancelled():
    async def cb(req):
        await req.respond(200, "served")

    async def main():
        server = AsyncHttpServer()
        loop = asyncio.get_running_loop()
        task = loop.create_task(server.serve(0, cb, address="127.0.0.1"))
        while server.socket is None:
            await asyncio.sleep(0.001)
        port = server.get_port()
        res = await loop.run_in_executor(None, _get, port)
        task.cancel()
        server.close()
        return res
    status, _, body = powpow.aio.run(main())
    assert (status, body) == (200, b"served")


# -- header_timeout: one deadline per head, from its first byte ---------------------------------

_SLOW_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40   # never ends: no blank line
_FIRST_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n/1"

# case: (pieces dripped 0.15 s apart, bytes the client must get before the close)
_DRIP_CASES = {
    "head byte by byte": ([bytes([b]) for b in _SLOW_HEAD], b""),
    "blank lines before the request line": ([b"\r\n"] * 40, b""),
    "second head on a keep-alive connection": (
        [b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nG"] + [bytes([b]) for b in _SLOW_HEAD[1:]], _FIRST_OK),
}


def _drip(port, pieces, idle_first, interval=0.15, give_up=3.0):
    """Send ``pieces`` ``interval`` apart (each gap well under the timeout); return (bytes got,
    seconds from the first byte to the server's close, or None if it never closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    got = b""
    try:
        time.sleep(idle_first)
        t0 = time.monotonic()
        for piece in pieces:
            if time.monotonic() - t0 > give_up:
                return got, None
            try:
                s.sendall(piece)
                s.settimeout(interval)
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return got, time.monotonic() - t0
                    got += chunk
            except socket.timeout:
                continue
            except OSError:   # reset: we wrote after the server closed
                return got, time.monotonic() - t0
        return got, None
    finally:
        s.close()


@pytest.mark.parametrize("case", sorted(_DRIP_CASES))
def test_header_timeout_bounds_the_whole_head_not_each_read(case):
    pieces, expected = _DRIP_CASES[case]

    async def cb(req):
        await req.respond(200, req.url.path)
    # idle 0.3 s first: the idle wait is not part of the head's deadline
    got, closed_after = _run(cb, lambda p: _drip(p, pieces, idle_first=0.3),
                             AsyncHttpServer(header_timeout=0.5))
    assert closed_after is not None, "a dripped head was never timed out"
    assert 0.4 <= closed_after < 2.0
    assert _undated(got) == expected   # half a head is owed no answer (as powpow.http's HttpServer)


def test_header_timeout_idle_connection_gets_408():
    async def cb(req):
        await req.respond(200, "no")
    t0 = time.monotonic()
    out = _run(cb, lambda p: _raw(p, b""), AsyncHttpServer(header_timeout=0.3))
    assert out.startswith(b"HTTP/1.1 408 ") and b"Connection: close\r\n" in out
    assert 0.25 <= time.monotonic() - t0 < 3


def test_header_timeout_head_within_deadline_is_served():
    async def cb(req):
        await req.respond(200, "ok")

    def client(port):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        for piece in (b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n\r\n"):
            s.sendall(piece)
            time.sleep(0.2)
        out = s.recv(65536)
        s.close()
        return out
    assert _run(cb, client, AsyncHttpServer(header_timeout=1.0)).endswith(b"\r\n\r\nok")


# -- framing of responses without content, failing callbacks, 100 Continue order ----------------

def test_1xx_204_304_have_no_content_length_head_keeps_it():
    async def cb(req):
        p = req.url.path
        if p == "/204":
            await req.respond(204, "")
        elif p == "/304":
            await req.respond(304, b"", {"ETag": '"v1"'})
        elif p == "/304-len":
            await req.respond(304, "", {"Content-Length": "11"})   # the 200's length, passed as given
        elif p == "/103":
            await req.respond(103, "", {"Link": "</s.css>; rel=preload"})
            await req.respond(200, "hinted")
        else:
            await req.respond(200, "Hello World")
    reqs = b"".join(b"%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (m, p) for m, p in
                    [(b"GET", b"/204"), (b"GET", b"/304"), (b"GET", b"/304-len"), (b"GET", b"/103"),
                     (b"HEAD", b"/")])
    reqs += b"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = _undated(_run(cb, lambda p: _raw(p, reqs)))
    assert out == (b"HTTP/1.1 204 No Content\r\n\r\n"
                   b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n"
                   b"HTTP/1.1 304 Not Modified\r\nContent-Length: 11\r\n\r\n"
                   b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhinted"
                   b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nHello World")


def test_205_is_sent_with_content_length_zero():
    """RFC 9110 15.3.6: no content, and a length a client can frame by (205 is not
    bodiless by definition as 204 is: without one the client reads to the close)."""
    async def cb(req):
        await req.respond(205, "")
    out = _run(cb, lambda p: _raw(p, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert _undated(out) == b"HTTP/1.1 205 Reset Content\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("code, content, headers", [
    (204, "x", None),
    (304, b"body", None),
    (100, "x", None),
    (204, "", {"Content-Length": "0"}),
    (204, "", {"Transfer-Encoding": "chunked"}),
    (103, "", {"Content-Length": "0"}),
    (205, "form reset", None),                # RFC 9110 15.3.6 (was: sent with its content)
    (205, "", {"Content-Length": "3"}),
])
def test_no_content_status_refuses_content_and_framing_nothing_sent(code, content, headers):
    errors = []

    async def cb(req):
        try:
            await req.respond(code, content, headers)
        except ValueError as exc:
            errors.append(str(exc))
            await req.respond(200, "refused")
    out = _run(cb, lambda p: _raw(p, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert _undated(out) == b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nrefused"
    assert len(errors) == 1 and str(code) in errors[0]


def test_callback_raising_before_answering_gets_500_and_close(caplog):
    async def cb(req):
        if req.url.path == "/interim":
            await req.respond(100, "")   # interim: the final answer is still owed
        raise RuntimeError("boom")
    # the second request must never be served: the connection closes after the 500
    data = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /interim HTTP/1.1\r\nHost: x\r\n\r\n")
    with caplog.at_level("ERROR", logger="powpow.asynchttpserver"):
        outs = _run(cb, lambda p: [_raw(p, data), _raw(p, data[data.index(b"HEAD"):]),
                                   _raw(p, data[data.index(b"GET /interim"):])])
    get, head, interim = outs
    assert get.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") and b"Connection: close\r\n" in get
    assert get.count(b"HTTP/1.1") == 1
    assert get.endswith(b"\r\n\r\n500 Internal Server Error: the request handler failed\n")
    assert head.startswith(b"HTTP/1.1 500 ") and head.endswith(b"\r\n\r\n")   # HEAD: no body
    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 ")
    failures = [r for r in caplog.records if r.exc_info and "boom" in str(r.exc_info[1])]
    assert len(failures) == 3


def test_callback_raising_after_answering_began_just_closes(caplog):
    async def cb(req):
        await req.send_headers({"X-Begun": "1"})
        raise RuntimeError("boom")
    with caplog.at_level("ERROR", logger="powpow.asynchttpserver"):
        out = _run(cb, lambda p: _raw(p, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert out == b"X-Begun: 1\r\n"   # no 500 spliced into a started response; closed
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


def test_pipelined_100_continue_waits_for_the_previous_response():
    async def cb(req):
        if req.url.path == "/a":
            await asyncio.sleep(0.1)
        await req.respond(200, req.url.path.encode() + b":" + req.body)

    def client(port):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n"
                  b"Connection: close\r\n\r\n")
        out = b""
        while b"100 Continue\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        s.sendall(b"abc")
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        s.close()
        return out
    out = _undated(_run(cb, client))
    assert out == (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n/a:"
                   b"HTTP/1.1 100 Continue\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n/b:abc")


def test_upgrade_answered_as_plain_http_keeps_serving_what_follows():
    """Regression: an Upgrade request answered normally left the parser holding every later
    byte as the new protocol's: the pipelined request behind it was never answered."""
    async def cb(req: Request):
        await req.respond(200, "no switch: " + req.url.path)

    def client(port):
        return _raw(port, b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                          b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    out = _run(cb, client, AsyncHttpServer(header_timeout=2))
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert out.index(b"no switch: /a") < out.index(b"no switch: /b")


def test_a_101_hands_the_connection_and_the_bytes_behind_it_to_the_callback():
    """After respond(101): the server reads nothing more from the socket (it is the callback's),
    and req.take_remaining() gives the bytes that arrived with the handshake."""
    async def cb(req: Request):
        assert req.take_remaining() == b""  # nothing has switched yet
        await req.respond(101, "", {"Upgrade": "echo", "Connection": "Upgrade"})
        loop = asyncio.get_running_loop()
        data = req.take_remaining()
        while data:
            await loop.sock_sendall(req.client, data.upper())
            data = await loop.sock_recv(req.client, 1024)

    def client(port):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly")
            got = b""
            while not got.endswith(b"EARLY"):
                chunk = s.recv(1024)
                if not chunk:
                    break
                got += chunk
            s.sendall(b"later")
            later = s.recv(1024)
            s.shutdown(socket.SHUT_WR)
            return got, later
        finally:
            s.close()

    got, later = _run(cb, client)
    assert got.startswith(b"HTTP/1.1 101 Switching Protocols\r\n") and got.endswith(b"\r\n\r\nEARLY")
    assert later == b"LATER"


SERVE_WITH_FEW_FDS = r"""
import asyncio, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
import powpow.aio
from powpow.asynchttpserver import AsyncHttpServer

server = AsyncHttpServer(reuse_addr=True)

async def cb(req):
    await req.respond(200, "hi", {"Content-Type": "text/plain"})

async def tell_port():
    while server.socket is None:
        await asyncio.sleep(0.01)
    print(server.get_port(), flush=True)

async def main():
    t = asyncio.ensure_future(tell_port())
    await server.serve(0, cb, address="127.0.0.1", assumed_descriptors_per_request=-1)
    await t

powpow.aio.run(main())
"""


def test_serve_outlives_running_out_of_descriptors():
    """accept() failing with EMFILE ended ``serve`` (the README's own example, with
    ``assumed_descriptors_per_request=-1``): the listener was gone for good."""
    import subprocess
    import sys

    from ._procs import stop_and_read_log

    p = subprocess.Popen([sys.executable, "-c", SERVE_WITH_FEW_FDS], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    held = []
    try:
        port = int(p.stdout.readline())
        for _ in range(100):  # more than the 64 descriptors: accept() meets EMFILE
            held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        time.sleep(1.0)
        assert p.poll() is None, p.stderr.read().decode()
        for c in held:
            c.close()
        held = []
        time.sleep(1.5)  # its back-off, then the backlog drains (those clients are gone)
        answered = 0
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                c.settimeout(5)
                data = b""
                while not data.endswith(b"hi"):
                    b = c.recv(4096)
                    if not b:
                        break
                    data += b
                answered += data.startswith(b"HTTP/1.1 200 ")
        assert answered == 20
    finally:
        for c in held:
            c.close()
        log = stop_and_read_log(p)
    assert "Traceback" not in log, log
    assert "accept(): Too many open files" in log, log
