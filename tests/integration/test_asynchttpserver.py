"""powpow.asynchttpserver: the Nim std/asynchttpserver API (tasynchttpserver's cases ported), on powpow.aio."""
import asyncio
import http.client
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
