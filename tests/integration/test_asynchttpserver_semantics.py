"""powpow.asynchttpserver: HTTP semantics of the answers (RFC 9110 / 9112) -- a callback's
``Connection: close``, header field validation, ``Date``, HEAD's Content-Length."""
import asyncio
import calendar
import re
import socket
import time

import pytest

import powpow.aio
from powpow.asynchttpserver import AsyncHttpServer
from powpow.http import HeaderValueError

_DATE = re.compile(rb"\r\nDate: ([A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT)\r\n")


def _run(cb, client, server=None):
    """Serve ``cb`` (accept_request in a loop) on 127.0.0.1:0; ``client(port)`` runs in a thread."""
    server = server or AsyncHttpServer(header_timeout=2)

    async def main():
        server.listen(0, "127.0.0.1")
        port = server.get_port()

        async def accept_loop():
            while True:
                await server.accept_request(cb)

        loop = asyncio.get_running_loop()
        acc = loop.create_task(accept_loop())
        try:
            return await asyncio.wait_for(loop.run_in_executor(None, client, port), 8)
        finally:
            acc.cancel()
            server.close()
    return powpow.aio.run(main())


def _exchange(port, data, then=b"", wait=2.0):
    """Send ``data`` (and ``then`` once the first answer is in); read until the server closes.
    Returns (bytes got, True if the server closed within ``wait`` seconds)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    out = b""
    try:
        s.sendall(data)
        while True:
            if then and b"\r\n\r\n" in out:
                try:
                    s.sendall(then)
                except OSError:
                    pass
                then = b""
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return out, False
            except ConnectionResetError:
                return out + b"<RST>", True
            if not chunk:
                return out, True
            out += chunk
    finally:
        s.close()


# -- RFC 9112 9.6: a callback's Connection: close ends the connection after that answer --------

@pytest.mark.parametrize("connection", ["close", "Close", "keep-alive, close"])
def test_callback_connection_close_runs_nothing_behind_it_and_closes(connection):
    ran = []

    async def cb(req):
        ran.append(req.url.path)
        if req.url.path == "/logout":
            await req.respond(200, "bye", {"Connection": connection})
        else:
            await req.respond(200, "served " + req.url.path)
    data = (b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /logout HTTP/1.1\r\nHost: a\r\n\r\n"
            b"DELETE /account HTTP/1.1\r\nHost: a\r\n\r\n")
    out, closed = _run(cb, lambda p: _exchange(p, data))
    assert closed, "the connection stayed open after Connection: close"
    assert ran == ["/first", "/logout"]
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 2 and out.endswith(b"\r\n\r\nbye")


def test_callback_connection_close_answer_survives_a_request_sent_after_it():
    """The request sent after the close answer arrived is neither run nor allowed to turn the
    close into a reset: the client reads the whole answer, then EOF (lingering close)."""
    ran = []

    async def cb(req):
        ran.append(req.url.path)
        await req.respond(200, "bye", {"Connection": "close"})
    later = b"POST /late HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"z" * 100000
    out, closed = _run(cb, lambda p: _exchange(p, b"GET /logout HTTP/1.1\r\nHost: a\r\n\r\n", then=later))
    assert closed and out.endswith(b"\r\n\r\nbye") and b"<RST>" not in out
    assert ran == ["/logout"]


# -- RFC 9110 5.1, 5.5: header names are tokens, values have no CTL but HTAB -------------------

@pytest.mark.parametrize("name, value", [
    ("X Bad Name", "v"),
    ("", "empty-name"),
    ("X-Colon:", "v"),
    ("X-Nul", "a\x00b"),
    ("X-Vt", "a\x0bb"),
    ("X-Del", "a\x7fb"),
    ("X-Split", "a\r\nSet-Cookie: x=1"),
    ("X-Lf", "a\nb"),
    ("X-Euro", "\u20ac"),
])
def test_invalid_header_field_raises_and_nothing_is_sent(name, value):
    errors = []

    async def cb(req):
        for send in (lambda: req.respond(200, "x", [(name, value)]), lambda: req.send_headers({name: value})):
            try:
                await send()
            except ValueError as exc:
                errors.append(exc)
        await req.respond(200, "refused")
    out, _ = _run(cb, lambda p: _exchange(p, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    assert len(errors) == 2 and all(isinstance(e, HeaderValueError) for e in errors), errors
    assert _DATE.sub(b"\r\n", out) == b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nrefused"


def test_valid_header_fields_go_out_as_given():
    async def cb(req):
        await req.respond(200, "x", [("X-Tab", "a\tb"), ("X-Token!#$%&'*+-.^_`|~", "\xe9 printable ~")])
    out, _ = _run(cb, lambda p: _exchange(p, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    assert b"\r\nX-Tab: a\tb\r\n" in out and b"\r\nX-Token!#$%&'*+-.^_`|~: \xe9 printable ~\r\n" in out


# -- RFC 9110 6.6.1: Date on every final response, never twice ----------------------------------

def _dates(out):
    return [calendar.timegm(time.strptime(d.decode(), "%a, %d %b %Y %H:%M:%S GMT")) for d in _DATE.findall(out)]


def test_date_on_callback_and_server_answers():
    async def cb(req):
        if req.url.path == "/raise":
            raise RuntimeError("boom (expected by the test)")
        await req.respond(404 if req.url.path == "/missing" else 200, "x")

    def client(port):
        return [_exchange(port, b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")[0],
                _exchange(port, b"GET /missing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")[0],
                _exchange(port, b"GET /raise HTTP/1.1\r\nHost: a\r\n\r\n")[0],
                _exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")[0],
                _exchange(port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n")[0],
                _exchange(port, b"")[0]]   # idle: 408
    t0 = time.time()
    outs = _run(cb, client, AsyncHttpServer(header_timeout=0.5, max_body=1000))
    t1 = time.time()
    assert [o[9:12] for o in outs] == [b"200", b"404", b"500", b"400", b"413", b"408"]
    for out in outs:
        dates = _dates(out)
        assert len(dates) == 1, out
        assert int(t0) - 1 <= dates[0] <= t1 + 1


def test_callback_date_and_server_are_not_duplicated():
    async def cb(req):
        await req.respond(200, "x", {"Date": "Sun, 06 Nov 1994 08:49:37 GMT", "Server": "mine"})
    out, _ = _run(cb, lambda p: _exchange(p, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    head = out.split(b"\r\n\r\n")[0].lower()
    assert head.count(b"\r\ndate:") == 1 and b"\r\ndate: sun, 06 nov 1994 08:49:37 gmt" in head
    assert head.count(b"\r\nserver:") == 1 and b"\r\nserver: mine" in head


# -- RFC 9110 9.3.2, 8.6: HEAD answered with the GET's Content-Length ------------------------------

def test_head_with_the_gets_content_length_and_no_content():
    async def cb(req):
        if req.req_method == "HEAD":
            await req.respond(200, b"", {"Content-Length": "10000000", "Content-Type": "application/octet-stream"})
        else:
            await req.respond(200, "end")
    data = b"HEAD /file HTTP/1.1\r\nHost: a\r\n\r\nGET /end HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    out, closed = _run(cb, lambda p: _exchange(p, data))
    out = _DATE.sub(b"\r\n", out)
    assert closed and out == (b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n"
                              b"Content-Type: application/octet-stream\r\n\r\n"
                              b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nend")


@pytest.mark.parametrize("content, length", [(b"", "-1"), (b"", "abc"), (b"", "+5"), (b"", ""),
                                             (b"abc", "10"), (b"", ["5", "6"])])
def test_head_content_length_still_checked(content, length):
    """Empty content lifts only the size match: the length must still be one decimal number,
    and content given for HEAD must match it (it is checked, then not sent)."""
    errors = []
    headers = [("Content-Length", v) for v in (length if isinstance(length, list) else [length])]

    async def cb(req):
        try:
            await req.respond(200, content, headers)
        except ValueError as exc:
            errors.append(str(exc))
            await req.respond(200, "", {"Content-Length": "7"})
    out, _ = _run(cb, lambda p: _exchange(p, b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    assert len(errors) == 1 and "Content-Length" in errors[0]
    assert _DATE.sub(b"\r\n", out) == b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
