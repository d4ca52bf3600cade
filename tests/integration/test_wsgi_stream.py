"""powpow.wsgi under volume: big uploads, slow readers, sendfile."""
import gc
import hashlib
import http.client
import io
import json
import os
import socket
import threading
import time

import pytest

from ._wsgi import read_response, read_until_close, rss_bytes, wsgi_server
from ._http import read_pipelined_answers

MiB = 1 << 20


def test_100_mib_upload_streams_in_linear_time_and_bounded_memory():
    stats = {}

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        h = hashlib.md5()
        total = 0
        gc.collect()
        base = rss_bytes()
        peak = base
        while True:
            chunk = inp.read(256 << 10)
            if not chunk:
                break
            h.update(chunk)
            total += len(chunk)
            if total % (8 * MiB) < len(chunk):
                gc.collect()  # PyPy frees garbage late: measure what is live, not what awaits the GC
                peak = max(peak, rss_bytes())
        stats.update(total=total, growth=peak - base)
        body = json.dumps({"total": total, "md5": h.hexdigest()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    block = os.urandom(MiB)
    n = 100
    expect = hashlib.md5()
    for _ in range(n):
        expect.update(block)
    with wsgi_server(app) as srv:
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as s:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                      b"Content-Length: %d\r\n\r\n" % (n * MiB))
            for _ in range(n):
                s.sendall(block)
            head, body = read_response(s, 60)
        elapsed = time.monotonic() - t0
    assert head.startswith(b"HTTP/1.1 200")
    got = json.loads(body)
    assert got == {"total": n * MiB, "md5": expect.hexdigest()}
    # generous: a quadratic `+=` reader takes minutes for 100 MiB; this takes a second or two
    assert elapsed < 40, elapsed
    # the body never sits in memory: the loop pauses reading above the input's high water
    assert stats["growth"] < 48 * MiB, stats


def test_slow_client_pauses_a_big_iterable():
    produced = [0]
    chunk = b"z" * (64 << 10)
    total_chunks = 1024  # 64 MiB
    finished = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(chunk) * total_chunks))])

        def gen():
            try:
                for _ in range(total_chunks):
                    produced[0] += len(chunk)
                    yield chunk
            finally:
                finished.set()
        return gen()

    with wsgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            # the client reads nothing: the app must stall once the buffers are full
            last, stable_since = -1, time.monotonic()
            end = time.monotonic() + 10
            while time.monotonic() < end:
                now = produced[0]
                if now != last:
                    last, stable_since = now, time.monotonic()
                elif time.monotonic() - stable_since > 0.5:
                    break
                time.sleep(0.05)
            assert produced[0] < 24 * MiB, produced[0]  # stalled, far below the 64 MiB body
            assert not finished.is_set()
            # now read it all: the app resumes and the body arrives whole
            got = 0
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            got = len(buf.partition(b"\r\n\r\n")[2])
            while got < len(chunk) * total_chunks:
                b = s.recv(1 << 20)
                assert b
                got += len(b)
            assert got == len(chunk) * total_chunks
        assert finished.wait(10)


class CountingFile(io.FileIO):
    reads = 0
    closed_by_server = False

    def read(self, *args):
        CountingFile.reads += 1
        return super().read(*args)

    def readinto(self, b):
        CountingFile.reads += 1
        return super().readinto(b)

    def close(self):
        CountingFile.closed_by_server = True
        super().close()


def test_file_wrapper_is_sent_with_sendfile(tmp_path):
    path = tmp_path / "big.bin"
    data = os.urandom(3 * MiB + 123)
    path.write_bytes(data)

    def app(environ, start_response):
        f = CountingFile(str(path), "r")
        if environ["QUERY_STRING"] == "offset":
            f.seek(1000)
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
        else:
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(len(data)))])
        return environ["wsgi.file_wrapper"](f, 8192)

    with wsgi_server(app) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
        c.request("GET", "/")
        r = c.getresponse()
        assert r.status == 200 and r.getheader("Content-Length") == str(len(data))
        assert r.read() == data
        c.request("GET", "/?offset")  # same connection: keep-alive after a sendfile answer
        r = c.getresponse()
        assert r.getheader("Content-Length") == str(len(data) - 1000)
        assert r.read() == data[1000:]
        c.request("HEAD", "/")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"" and r.getheader("Content-Length") == str(len(data))
        c.close()
    assert CountingFile.reads == 0  # never read in Python: the kernel sent it
    assert CountingFile.closed_by_server  # close() called through the wrapper


def test_file_wrapper_without_fileno_is_iterated():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"abc" * 10000), 1000)
    with wsgi_server(app) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        c.request("GET", "/")
        assert c.getresponse().read() == b"abc" * 10000
        c.close()


def test_upload_to_app_that_does_not_read_closes_instead_of_buffering():
    calls = []

    def app(environ, start_response):
        calls.append(environ["CONTENT_LENGTH"])
        start_response("413 Payload Too Large", [("Content-Type", "text/plain"), ("Content-Length", "8")])
        return [b"too big\n"]
    with wsgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (200 * MiB))
            s.sendall(b"x" * MiB)
            head, body = read_response(s)
            assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower()
            assert body == b"too big\n"
    assert calls == [str(200 * MiB)]


@pytest.mark.parametrize("mode", [{}, {"inline": True}], ids=["threads", "inline"])
def test_pipelined_big_answers_wait_for_a_slow_client(mode):
    # 48 pipelined GETs for 1 MiB answers: started all at once, their answers
    # (48 MiB) pass the connection's 32 MiB write-queue cap and an honest client
    # that only reads slower than the app produces is cut off.  The next
    # pipelined request must start only once the connection is writable.
    n = 48

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [environ["PATH_INFO"][1:].encode().rjust(6, b"0") + b"x" * (MiB - 6)]

    with wsgi_server(app, **mode) as srv:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            s.connect(("127.0.0.1", srv.port))
            s.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n)))
            time.sleep(0.5)  # the client is busy: the server has produced all it would
            marks = read_pipelined_answers(s, n, MiB)
    assert marks == [b"%06d" % i for i in range(n)]


@pytest.mark.parametrize("mode", [{"inline": True}, {"threads": 0}], ids=["inline", "threads=0"])
def test_inline_mode_limits_request_bodies_by_default(mode):
    # Inline, a body is read whole before the app runs: without a limit, clients
    # sending endless bodies grow the server's memory without bound.  The default
    # is then HttpServer's max_body (1 MiB): past it 413 and the connection closes.
    calls = []

    def app(environ, start_response):
        n = len(environ["wsgi.input"].read())
        calls.append(n)
        body = b"%d" % n
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    with wsgi_server(app, **mode) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MiB + 1))
            answer = read_until_close(s, 5)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            piece = b"10000\r\n" + b"c" * 0x10000 + b"\r\n"
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + piece * 17)
            answer = read_until_close(s, 5)  # 1 MiB + 64 KiB, and more to come: cut at the limit
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert calls == []  # the app never ran for either
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % MiB + b"k" * MiB)
            head, body = read_response(s)
        assert head.startswith(b"HTTP/1.1 200") and body == b"%d" % MiB
    with wsgi_server(app, max_body=4 * MiB, **mode) as srv:  # an explicit limit wins
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (3 * MiB) + b"k" * (3 * MiB))
            head, body = read_response(s)
        assert head.startswith(b"HTTP/1.1 200") and body == b"%d" % (3 * MiB)


def test_chunked_body_past_max_body_releases_its_exchange():
    # The HTTP layer answers 413 itself once a chunked body passes max_body, while
    # the app is reading it: the app must hear of it (ClientDisconnected from
    # wsgi.input) and the request's slot be given back (wsgi_server checks in_flight).
    errors = []
    done = threading.Event()
    reading = threading.Event()

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

    with wsgi_server(app, max_body=MiB) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            piece = b"10000\r\n" + b"c" * 0x10000 + b"\r\n"
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + piece)
            assert reading.wait(5)  # the app reads wsgi.input (told before it runs, it is not run at all)
            s.sendall(piece * 16)
            answer = read_until_close(s, 5)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert done.wait(5)
        deadline = time.monotonic() + 5
        while srv.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.in_flight == 0
    assert len(errors) == 1
