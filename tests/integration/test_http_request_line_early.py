"""HttpServer answers a request line that can never become valid as soon as
its CRLF arrives, not after ``header_timeout`` (RFC 9112 3: an invalid
request-line SHOULD get 400; an unsupported version gets 505, as on a whole
head), and a valid request line sent alone is still served normally."""
import socket
import time

import pytest

from ._http import serving, split_responses

MODES = [False, True]  # HttpServer buffered, streaming=True
HEAD_REST = b"Host: x\r\n\r\n"


def hello(req, res):
    res.send(b"hi")


def answer_to(port: int, data: bytes, timeout: float = 3.0):
    """Send ``data`` and nothing more; return (answer, seconds until the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        t0 = time.monotonic()
        s.sendall(data)
        return read_to_close(s, timeout), time.monotonic() - t0


def read_to_close(s, timeout: float) -> bytes:
    s.settimeout(timeout)
    chunks = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def read_answer(s, timeout: float = 3.0) -> bytes:
    """One Content-Length framed answer (head and body)."""
    s.settimeout(timeout)
    data = b""
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            [(head, body)] = split_responses(data)
            if b"Content-Length: %d\r\n" % len(body) in head + b"\r\n":
                return data
        b = s.recv(65536)
        assert b, "closed before a whole answer: %r" % data
        data += b


@pytest.mark.parametrize("streaming", MODES, ids=["buffered", "streaming"])
@pytest.mark.parametrize("line,status,why", [
    (b"GET /\r\n", 400, b"request line"),                  # HTTP/0.9: no version at all
    (b"GET / FOO\r\n", 400, b"malformed HTTP version"),
    (b"GET / HTTP/1.2\r\n", 505, b"HTTP/1.2"),
    (b"PRI * HTTP/2.0\r\n", 505, b"HTTP/2.0"),
    (b"G@T / HTTP/1.1\r\n", 400, b"invalid method"),
    (b"GET /a#b HTTP/1.1\r\n", 400, b"request target"),
], ids=["http09", "garbled-version", "http12", "prior-knowledge-h2", "bad-method", "fragment"])
def test_invalid_request_line_alone_is_answered_at_once(streaming, line, status, why):
    # header_timeout stays at its default (10 s): an answer within 1 s is the early check
    with serving(hello, streaming=streaming) as srv:
        got, took = answer_to(srv.port, line)
    assert got.startswith(b"HTTP/1.1 %d " % status), got
    assert why in got.partition(b"\r\n\r\n")[2], got
    assert b"Connection: close\r\n" in got
    assert took < 1.0, took


@pytest.mark.parametrize("streaming", MODES, ids=["buffered", "streaming"])
def test_same_answer_as_for_the_whole_head(streaming):
    """The early verdict is the one the whole head gets (status and message)."""
    with serving(hello, streaming=streaming) as srv:
        for line in (b"GET /\r\n", b"GET / FOO\r\n", b"GET / HTTP/1.2\r\n"):
            early, _ = answer_to(srv.port, line)
            whole, _ = answer_to(srv.port, line + HEAD_REST)
            assert early.partition(b"\r\n")[0] == whole.partition(b"\r\n")[0], (early, whole)
            assert early.partition(b"\r\n\r\n")[2] == whole.partition(b"\r\n\r\n")[2], (early, whole)


@pytest.mark.parametrize("streaming", MODES, ids=["buffered", "streaming"])
def test_valid_request_line_alone_then_the_rest_is_served(streaming):
    with serving(hello, streaming=streaming) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as s:
            s.sendall(b"GET / HTTP/1.1\r\n")
            # the gap is the point: the line must arrive as a read of its own (nothing to await)
            time.sleep(0.2)
            s.sendall(HEAD_REST)
            got = read_answer(s)
            assert got.startswith(b"HTTP/1.1 200 "), got
            assert got.endswith(b"\r\n\r\nhi"), got
            # keep-alive: the next message is checked afresh, a line split mid-version too
            s.sendall(b"GET / HT")
            time.sleep(0.2)
            s.sendall(b"TP/1.1\r\n" + HEAD_REST)
            got = read_answer(s)
            assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"hi"), got


@pytest.mark.parametrize("streaming", MODES, ids=["buffered", "streaming"])
def test_bad_line_after_a_good_request_on_the_same_connection(streaming):
    with serving(hello, streaming=streaming) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as s:
            s.sendall(b"GET / HTTP/1.1\r\n" + HEAD_REST)
            assert read_answer(s).startswith(b"HTTP/1.1 200 ")
            t0 = time.monotonic()
            s.sendall(b"GET / HTTP/1.2\r\n")
            got = read_to_close(s, 3.0)
            took = time.monotonic() - t0
    assert got.startswith(b"HTTP/1.1 505 "), got
    assert took < 1.0, took


@pytest.mark.parametrize("streaming", MODES, ids=["buffered", "streaming"])
def test_overlong_request_line_without_crlf_is_414_at_once(streaming):
    # (this one was early before the fix already: kept as a guard)
    with serving(hello, streaming=streaming, max_request_line=1024) as srv:
        got, took = answer_to(srv.port, b"GET /" + b"a" * 2048)
    assert got.startswith(b"HTTP/1.1 414 "), got
    assert took < 1.0, took
