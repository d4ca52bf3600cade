"""Response API misuse a handler author hits, and what the wire must show: never a
desynchronised stream (each found by review; each test failed before its fix).

- ``send_file()`` after ``send()`` (or twice, or after ``write()``) wrote a second full
  response into the stream; it raises ``RuntimeError`` now, as ``send()`` does, and
  opens nothing.
- A typed buffer body (``array('i')``, a memoryview of one) got a Content-Length (or a
  chunk size) counting items, not bytes: the rest of the body was read as the next
  response.
- ``set_length(-1)`` put ``Content-Length: -1`` on the wire; ``set_status(201.9)``
  answered 201; trailers could carry Content-Length / Transfer-Encoding (RFC 9110 6.5.1),
  and a non-Latin-1 trailer raised ``UnicodeEncodeError`` instead of ``HeaderValueError``.
"""
import array
import socket

import pytest

from powpow.http import HeaderValueError

from ._http import read_answers, serving


@pytest.fixture
def file100(tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes(b"0123456789" * 10)
    return str(p)


def _pipelined(port, path):
    """GET ``path`` then GET /ok on one connection: both answers, Content-Length framed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        return read_answers(c, 2, timeout=5)


def test_send_file_after_the_answer_began_raises_and_the_stream_stays_in_sync(file100):
    seen = {}

    def handler(req, res):
        p = req.path
        if p == "/ok":
            res.send(b"OK")
            return
        try:
            if p == "/send_then_file":
                res.send(b"first")
                res.send_file(file100)
            elif p == "/file_twice":
                res.send_file(file100)
                res.send_file(file100)
            elif p == "/write_then_file":
                res.set_length(3)
                res.write(b"abc")
                res.send_file(file100)
        except RuntimeError as exc:
            seen[p] = str(exc)
        if not res.ended:
            res.end()

    with serving(handler) as srv:
        for path, body in [("/send_then_file", b"first"), ("/file_twice", b"0123456789" * 10),
                           ("/write_then_file", b"abc")]:
            (h1, b1), (h2, b2) = _pipelined(srv.port, path)
            assert b1 == body and h1.startswith(b"HTTP/1.1 200 "), (path, h1, b1)
            assert b2 == b"OK", (path, h2, b2)
            assert "send_file() starts an answer" in seen[path], seen
        assert len(seen) == 3


@pytest.mark.parametrize("how", ["send", "send_memoryview", "write", "write_length"])
def test_a_typed_buffer_body_is_measured_in_bytes(how):
    data = array.array("i", [0x41414141, 0x42424242] * 3000)  # 24000 bytes, 6000 items

    def handler(req, res):
        if req.path == "/ok":
            res.send(b"OK")
        elif how == "send":
            res.send(data)
        elif how == "send_memoryview":
            res.send(memoryview(data))
        elif how == "write_length":
            res.set_length(len(data) * data.itemsize)
            res.write(memoryview(data))
            res.end()
        else:
            res.set_length(len(data) * data.itemsize)  # (chunked is checked below too)
            res.write(data)
            res.end()

    with serving(handler) as srv:
        (h1, b1), (h2, b2) = _pipelined(srv.port, "/typed")
    assert b1 == data.tobytes() and b"Content-Length: 24000" in h1, h1
    assert b2 == b"OK"


def test_a_typed_buffer_chunk_gets_its_size_in_bytes():
    data = array.array("i", [0x41414141, 0x42424242])

    def handler(req, res):
        res.write(data)
        res.end()

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out = b""
            while True:
                b = c.recv(65536)
                if not b:
                    break
                out += b
    assert out.endswith(b"\r\n\r\n8\r\nAAAABBBB\r\n0\r\n\r\n"), out


@pytest.mark.parametrize("call,arg", [("set_length", -1), ("set_length", 1.5), ("set_length", True),
                                      ("set_status", 201.9), ("set_status", "201")])
def test_bad_lengths_and_statuses_raise_at_the_call(call, arg):
    seen = []

    def handler(req, res):
        try:
            getattr(res, call)(arg)
        except ValueError as exc:
            seen.append(str(exc))
        res.send(b"x")

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            ((head, body),) = read_answers(c, 1, timeout=5)
    assert len(seen) == 1, seen
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"x" and head.endswith(b"Content-Length: 1")


@pytest.mark.parametrize("trailers,words", [
    ([("Content-Length", "99")], "Content-Length may not be sent as a trailer"),
    ([("Transfer-Encoding", "chunked")], "Transfer-Encoding may not be sent as a trailer"),
    ([("X-Sum", "\u20ac")], "ISO-8859-1"),
])
def test_trailers_are_checked(trailers, words):
    seen = []

    def handler(req, res):
        res.write(b"body")
        try:
            res.end_with_trailers(trailers)
        except HeaderValueError as exc:
            seen.append(str(exc))
            res.end_with_trailers([("X-Ok", "1")])

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
            out = b""
            while True:
                b = c.recv(65536)
                if not b:
                    break
                out += b
    assert len(seen) == 1 and words in seen[0], seen
    assert out.endswith(b"4\r\nbody\r\n0\r\nX-Ok: 1\r\n\r\n"), out


@pytest.mark.parametrize("call", ["set_header", "add_header"])
@pytest.mark.parametrize("name,value,words", [
    ("Transfer-Encoding", "gzip", "only 'chunked'"),
    ("Content-Length", "abc", "not a decimal length"),
    ("Content-Length", "-1", "not a decimal length"),
    ("Connection", "foo", "only close, keep-alive and upgrade"),
    ("connection", "Upgrade", "only for a 101 response"),
])
def test_framing_fields_no_answer_can_carry_raise_at_the_call(call, name, value, words):
    """Like a CR/LF value, a framing field powpow cannot send raises at set_header /
    add_header, so the handler's own fallback answer goes out.  Was: stored, it raised
    only when the head was built, and it failed the fallback too (a 500)."""
    seen = []

    def handler(req, res):
        try:
            getattr(res, call)(name, value)
        except HeaderValueError as exc:
            seen.append(str(exc))
        res.send(b"fallback")

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            ((head, body),) = read_answers(c, 1, timeout=5)
    assert len(seen) == 1 and words in seen[0], seen
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"fallback", head
