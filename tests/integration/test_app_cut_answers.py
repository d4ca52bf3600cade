"""ASGI and WSGI: an answer cut by an application error never looks complete.

The application fails after its answer's head and part of its body went out.  The
ASGI and WSGI servers ended such an answer with an orderly close (FIN): to an
HTTP/1.0 client (nginx's default ``proxy_http_version 1.0``) a close-delimited
body then looks complete (RFC 9112 §9.8).  Now they end it as HttpServer does
(``Session.cut_answer``): close-delimited, with a reset, once the complete answers
before it are delivered; chunked, without the last chunk, and the connection closes.
"""
import socket
import threading
import time

import pytest

from ._asgi import asgi_server
from ._wsgi import wsgi_server

BEFORE = 200 << 10  # a complete answer ahead of the cut one: in the server's buffers when it is cut
PART = b"first half of the report "


def _asgi_app(cutting: threading.Event):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/before":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % BEFORE)]})
            await send({"type": "http.response.body", "body": b"B" * BEFORE})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": PART, "more_body": True})
        cutting.set()
        raise RuntimeError("database went away")
    return app


def _wsgi_app(cutting: threading.Event):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/before":
            start_response("200 OK", [("Content-Length", str(BEFORE))])
            return [b"B" * BEFORE]
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield PART
            cutting.set()
            raise RuntimeError("database went away")
        return body()
    return app


SERVERS = {
    "asgi": lambda cutting: asgi_server(_asgi_app(cutting)),
    "wsgi-threads": lambda cutting: wsgi_server(_wsgi_app(cutting), threads=2),
    "wsgi-inline": lambda cutting: wsgi_server(_wsgi_app(cutting), inline=True),
}


def _read_to_the_end(s, timeout=5.0):
    """Everything until the connection ends; (bytes, how it ended)."""
    data = bytearray()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            b = s.recv(1 << 20)
        except ConnectionResetError:
            return bytes(data), "reset"
        except socket.timeout:
            break
        if not b:
            return bytes(data), "clean close"  # FIN
        data += b
    return bytes(data), "timeout"


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_a_cut_close_delimited_answer_ends_with_a_reset_after_the_answer_before_it(server):
    """HTTP/1.0 with keep-alive: a complete 200 KiB answer, then one whose app fails
    after part of its body.  The client reads the first whole, then the cut one's
    head and part -- and a reset (ECONNRESET), never the FIN that would say the
    close-delimited body is complete."""
    cutting = threading.Event()
    with SERVERS[server](cutting) as srv:
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # /before waits in the server's buffers
            s.connect(("127.0.0.1", srv.port))
            s.sendall(b"GET /before HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /cut HTTP/1.0\r\n\r\n")
            assert cutting.wait(3), "the cut request never ran"
            data, how = _read_to_the_end(s)
        finally:
            s.close()
    head1, _, rest = data.partition(b"\r\n\r\n")
    assert head1.startswith(b"HTTP/1.1 200 ") and b"Content-Length: %d\r\n" % BEFORE in head1 + b"\r\n", head1
    assert rest[:BEFORE] == b"B" * BEFORE  # the answer before the cut one arrived whole
    head2, _, body2 = rest[BEFORE:].partition(b"\r\n\r\n")
    assert head2.startswith(b"HTTP/1.1 200 "), head2
    assert b"content-length" not in head2.lower() and b"chunked" not in head2.lower(), head2  # close-delimited
    assert body2 == PART
    assert how == "reset", how


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_a_cut_chunked_answer_lacks_its_last_chunk_and_closes(server):
    """HTTP/1.1: the cut answer is chunked; its last chunk never comes, the
    connection closes, and the request pipelined behind it is not answered."""
    cutting = threading.Event()
    with SERVERS[server](cutting) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\nGET /before HTTP/1.1\r\nHost: x\r\n\r\n")
            data, how = _read_to_the_end(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower(), head
    assert body == b"%x\r\n%s\r\n" % (len(PART), PART)  # no 0\r\n\r\n, and /before never answered
    assert how in ("clean close", "reset"), how
