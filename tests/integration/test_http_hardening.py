"""Issue 8 regressions on real sockets: deadlines, backpressure, hang-ups, half-close, framing."""
import os
import socket
import subprocess
import sys
import threading
import time

from powpow.http import serve_static

from ._http import raw, serving, split_responses


def on_loop(srv, fn):
    """Run ``fn()`` on the server's loop thread; return its result."""
    box = []
    done = threading.Event()

    def call():
        try:
            box.append(fn())
        finally:
            done.set()

    srv.loop.post(call)
    assert done.wait(5)
    return box[0]


def read_all(s, timeout=5.0):
    s.settimeout(timeout)
    chunks = []
    while True:
        try:
            b = s.recv(1 << 16)
        except socket.timeout:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def content_length(data):
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return None


# -- item 1: downloads are writing, not idle ----------------------------------------


def test_slow_download_outlives_keepalive_timeout(tmp_path):
    """A file download slower than keepalive_timeout arrives whole (was: cut at keep-alive)."""
    size = 12 << 20
    (tmp_path / "big.bin").write_bytes(b"z" * size)

    def handler(req, res):
        serve_static(req, res, str(tmp_path))

    with serving(handler, keepalive_timeout=0.3, write_timeout=3) as srv:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.connect(("127.0.0.1", srv.port))
        with s:
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            got = 0
            head = b""
            total = None
            start = time.monotonic()
            s.settimeout(5)
            while total is None or got < total:
                b = s.recv(65536)
                if not b:
                    break
                got += len(b)
                if total is None:
                    head += b
                    if b"\r\n\r\n" in head:
                        total = head.index(b"\r\n\r\n") + 4 + content_length(head)
                # about 8 MB/s: the transfer takes well over keepalive_timeout
                ahead = got / (8 << 20) - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            elapsed = time.monotonic() - start
        assert content_length(head) == size
        assert got == total  # the whole file (was: cut off at keepalive_timeout)
        assert elapsed > 0.6  # it really was slower than keepalive_timeout


def test_reader_that_stops_is_cut_at_write_timeout_not_keepalive(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"z" * (16 << 20))

    def handler(req, res):
        serve_static(req, res, str(tmp_path))

    with serving(handler, keepalive_timeout=0.2, write_timeout=1.2) as srv:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        with s:
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            start = time.monotonic()
            time.sleep(0.5)
            assert srv.connection_count == 1  # past keepalive_timeout: still writing
            while srv.connection_count and time.monotonic() - start < 5:
                time.sleep(0.02)
            elapsed = time.monotonic() - start
            assert srv.connection_count == 0
            assert 1.0 <= elapsed < 3.0, elapsed


# -- item 3: a client that pipelines and never reads costs bounded memory ------------


def _never_reading_flood(srv, seconds=2.0, cap=24 << 20):
    """Pipeline GETs for 2 KB answers without reading; return (bytes sent, server-side bytes held)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.connect(("127.0.0.1", srv.port))
    s.setblocking(False)
    req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 2048
    sent = 0
    stalled_since = None
    end = time.monotonic() + seconds
    while time.monotonic() < end and sent < cap:
        try:
            n = s.send(req)
            sent += n
            stalled_since = None
        except BlockingIOError:
            if stalled_since is None:
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since > 0.5:
                break  # the server pushes back: its window is closed
            time.sleep(0.01)

    def held():
        total = 0
        for conn in srv._tcp.connections:
            session = conn.context
            total += conn.queued_bytes
            if session is not None:
                total += session.parser.pending
        return total

    return s, sent, on_loop(srv, held)


def test_pipelining_client_that_never_reads_is_pushed_back():
    answer = b"a" * 2048
    with serving(lambda req, res: res.send(answer)) as srv:
        s, sent, held = _never_reading_flood(srv)
        with s:
            # Was: every request parsed and answered into memory (32 MiB queue, then torn down).
            assert held <= 1 << 20, held
            assert sent < 24 << 20, sent
            assert srv.connection_count == 1


def test_pipelining_with_async_answers_is_held_at_depth_without_buffering():
    pending = []

    def handler(req, res):
        pending.append(res)  # answered later: requests pile up at max_pipeline_depth

    with serving(handler, max_pipeline_depth=8) as srv:
        s, sent, held = _never_reading_flood(srv, seconds=1.5)
        with s:
            assert held <= 1 << 20, held
            assert on_loop(srv, lambda: len(pending)) <= 8


# -- item 22 / 10: hang-ups and half-closes ------------------------------------------


def test_paused_connection_notices_the_hang_up():
    """Past max_pipeline_depth reading pauses; a client that then leaves is noticed (was: CLOSE-WAIT)."""
    held = []
    with serving(lambda req, res: held.append(res), max_pipeline_depth=2,
                 keepalive_timeout=0.3) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 6)
            time.sleep(0.2)
        start = time.monotonic()
        while srv.connection_count and time.monotonic() - start < 4:
            time.sleep(0.02)
        assert srv.connection_count == 0
        assert time.monotonic() - start < 2.0


def test_half_closed_client_gets_its_late_answer():
    servers = []

    def handler(req, res):
        servers[0].loop.add_timer(200, lambda: res.send(b"late answer"))

    with serving(handler) as srv:
        servers.append(srv)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.shutdown(socket.SHUT_WR)  # nc -N
            data = read_all(s)
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"late answer")


def test_half_closed_client_with_nothing_in_flight_is_closed():
    with serving(lambda req, res: res.send(b"x")) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            start = time.monotonic()
            data = read_all(s)
        assert data.count(b"HTTP/1.1 200 ") == 2
        assert time.monotonic() - start < 2.0
