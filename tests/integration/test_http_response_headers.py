"""Header rules of ``Response`` seen on the wire: a handler's own Server / Date
replace powpow's (RFC 9110 §5.3: single-valued fields), set_header / add_header
refuse CR/LF/NUL at the call, and a 304 keeps the Content-Length the handler
announced (RFC 9110 §8.6, §15.4.5) without a short-body close; a 204 never has one."""
import socket

import pytest

from powpow.http.response import HeaderValueError

from ._asgi import asgi_server
from ._asgi import read_all as asgi_read_all
from ._http import raw, serving
from ._wsgi import raw as wsgi_raw
from ._wsgi import wsgi_server

_OLD_DATE = "Mon, 01 Jan 2001 00:00:00 GMT"


def _fields(head: bytes, name: bytes) -> list:
    out = []
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            out.append(v.strip())
    return out


def _heads(data: bytes) -> list:
    """Every head in ``data`` (the bodies here never contain "HTTP/1.1 ")."""
    out = []
    start = data.find(b"HTTP/1.1 ")
    while start >= 0:
        end = data.index(b"\r\n\r\n", start)
        out.append(data[start:end])
        start = data.find(b"HTTP/1.1 ", end)
    return out


# -- handler's Server / Date ------------------------------------------------------

_OWN_CASES = [
    # (headers the handler gives, expected Server values, whether Date is the handler's)
    ([("Server", "myapp/2.0"), ("Date", _OLD_DATE)], [b"myapp/2.0"], True),
    ([("server", "lower/1")], [b"lower/1"], False),
    ([("DATE", _OLD_DATE)], [b"powpow"], True),
    ([("Server", "withlen"), ("Content-Length", "2")], [b"withlen"], False),
    ([("X-Other", "1")], [b"powpow"], False),
]


def _check_own(head: bytes, servers, own_date: bool) -> None:
    assert _fields(head, b"server") == servers, head
    dates = _fields(head, b"date")
    assert len(dates) == 1, head
    assert (dates[0] == _OLD_DATE.encode()) is own_date, head


@pytest.mark.parametrize("headers,servers,own_date", _OWN_CASES)
def test_handler_server_and_date_replace_powpows(headers, servers, own_date):
    def handler(req, res):
        path = req.path
        if path == "/send":
            res.send(b"hi", headers=headers)  # the same list each time: cached block
        elif path == "/set":
            for k, v in headers:
                res.set_header(k, v)
            res.send(b"hi")
        elif path == "/stream":
            res.set_status(201)
            for k, v in headers:
                if k.lower() != "content-length":
                    res.add_header(k, v)
            res.write(b"h")
            res.end(b"i")
        else:
            res.send_error(404)

    with serving(handler) as srv:
        req = b"".join(b"GET /%s HTTP/1.1\r\nHost: a\r\n\r\n" % p for p in (b"send", b"send", b"set", b"stream"))
        req += b"GET /send HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        heads = _heads(raw(srv.port, req))
    assert len(heads) == 5, heads
    for head in heads:
        _check_own(head, servers, own_date)


def test_upgrade_101_keeps_one_server():
    def handler(req, res):
        transport, _rest = res.upgrade([("Upgrade", "x-test"), ("Server", "tunnel/1")])
        transport.close()

    with serving(handler) as srv:
        out = raw(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n")
    head = out.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 101 "), out
    assert _fields(head, b"server") == [b"tunnel/1"], head
    assert len(_fields(head, b"date")) == 1, head


def test_wsgi_app_server_and_date_are_sent_once():
    def app(environ, start_response):
        start_response("200 OK", [("Date", _OLD_DATE), ("Server", "myapp"), ("Content-Length", "2")])
        return [b"ok"]

    with wsgi_server(app, threads=2) as srv:
        out = wsgi_raw(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == b"ok", out
    _check_own(head, [b"myapp"], True)


def test_asgi_app_server_and_date_are_sent_once():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"date", _OLD_DATE.encode()), (b"server", b"myapp")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with asgi_server(app, lifespan="off") as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out = asgi_read_all(s)
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == b"ok", out
    _check_own(head, [b"myapp"], True)


# -- set_header / add_header validate at the call ----------------------------------

@pytest.mark.parametrize("method", ["set_header", "add_header"])
@pytest.mark.parametrize("name,value", [
    ("X-Echo", "fine\r\nSet-Cookie: session=attacker"),
    ("X-Echo", "a\nb"),
    ("X-Echo", "nul\x00"),
    ("X-Echo", "euro \u20ac"),   # not ISO-8859-1
    ("Bad Name", "v"),
    ("X-Bad\r\nInjected", "v"),
])
def test_set_and_add_header_raise_at_the_call(method, name, value):
    seen = []

    def handler(req, res):
        try:
            getattr(res, method)(name, value)
        except HeaderValueError as exc:
            seen.append(str(exc))
            res.send(b"bad input", status=400)  # the handler's own answer still works
            return
        res.send(b"accepted")

    with serving(handler) as srv:
        out = raw(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert out.endswith(b"\r\n\r\nbad input"), out
    assert b"attacker" not in out and b"Injected" not in out
    assert len(seen) == 1, seen


def test_set_header_accepts_tab_latin1_and_non_str():
    def handler(req, res):
        res.set_header("X-Tab", "a\tb")
        res.set_header("X-Latin", "caf\u00e9")
        res.add_header("X-Num", 42)
        res.send(b"ok")

    with serving(handler) as srv:
        out = raw(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head = out.split(b"\r\n\r\n")[0]
    assert b"\r\nX-Tab: a\tb\r\n" in head, out
    assert b"\r\nX-Latin: caf\xe9\r\n" in head, out
    assert b"\r\nX-Num: 42\r\n" in head, out


# -- 304 / 204 with set_length --------------------------------------------------------

@pytest.mark.parametrize("how", ["set_length", "header_send", "header_end"])
def test_304_keeps_announced_length_and_the_connection(how):
    def handler(req, res):
        if req.path == "/cached":
            res.set_status(304)
            res.set_header("ETag", '"v1"')
            if how == "set_length":
                res.set_length(1234)
                res.end()
            elif how == "header_send":
                res.send(b"", status=304, headers=[("Content-Length", "1234")])
            else:
                res.set_header("Content-Length", "1234")
                res.end()
        else:
            res.send(b"second answer")

    with serving(handler) as srv:
        out = raw(srv.port, b"GET /cached HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"v1\"\r\n\r\n"
                            b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    first, _, rest = out.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 304 "), out
    assert _fields(first, b"content-length") == [b"1234"], out
    assert not _fields(first, b"connection"), out  # kept alive: no short-body close
    assert rest.startswith(b"HTTP/1.1 200 "), out
    assert rest.endswith(b"\r\n\r\nsecond answer"), out


@pytest.mark.parametrize("how", ["set_length", "header"])
def test_204_never_carries_content_length(how):
    def handler(req, res):
        if req.path == "/empty":
            res.set_status(204)
            if how == "set_length":
                res.set_length(10)
            else:
                res.set_header("Content-Length", "10")
            res.end()
        else:
            res.send(b"second answer")

    with serving(handler) as srv:
        out = raw(srv.port, b"GET /empty HTTP/1.1\r\nHost: a\r\n\r\n"
                            b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    first, _, rest = out.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 204 "), out
    assert not _fields(first, b"content-length"), out
    assert not _fields(first, b"connection"), out
    assert rest.startswith(b"HTTP/1.1 200 "), out
    assert rest.endswith(b"\r\n\r\nsecond answer"), out


@pytest.mark.parametrize("how", ["send", "write", "header"])
def test_205_sends_no_content_and_says_content_length_0(how):
    """RFC 9110 §15.3.6: a 205 has no content.  Unlike a 204 a client frames it as
    any response, so it carries ``Content-Length: 0``.  Was: the handler's body
    went out with it (``send``), or chunked framing (``write``)."""
    def handler(req, res):
        if req.path == "/reset":
            if how == "send":
                res.send(b"form cleared", status=205)
            elif how == "write":
                res.set_status(205)
                res.write(b"form ")
                res.end(b"cleared")
            else:
                res.set_status(205)
                res.set_header("Content-Length", "12")
                res.end(b"form cleared")
        else:
            res.send(b"second answer")

    with serving(handler) as srv:
        out = raw(srv.port, b"GET /reset HTTP/1.1\r\nHost: a\r\n\r\n"
                            b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    first, _, rest = out.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 205 "), out
    assert _fields(first, b"content-length") == [b"0"], out
    assert not _fields(first, b"transfer-encoding"), out
    assert rest.startswith(b"HTTP/1.1 200 "), out  # nothing between the two heads
    assert rest.endswith(b"\r\n\r\nsecond answer"), out
