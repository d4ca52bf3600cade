"""Every kind of queued output counts as writing (issue 8 items 1, 4, 7, 21).

Item 1's fix must hold "for every kind of queued output, not only files": a
big ``res.send()`` body and a streamed ``res.write()`` body to a slow reader
both outlive ``keepalive_timeout``.  A producer that ignores ``write()``
returning False is told at the call when the queue passes its cap (never a
silent cut).  After ``upgrade()`` the new owner's callbacks are the ones that run.
"""
import hashlib
import socket
import threading
import time

from powpow.net.errors import WriteQueueFull

from ._http import serving


def slow_read(s, total, chunk=256 << 10, pause=0.05, timeout=20.0):
    """Read the whole response slowly; return (head, body)."""
    s.settimeout(5)
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        b = s.recv(chunk)
        if not b:
            break
        data += b
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and len(body) >= total:
            break
        time.sleep(pause)
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def small_buffers(port, rcvbuf=32768):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    return s


def test_big_send_body_to_a_slow_reader_outlives_keepalive():
    body = bytes(range(256)) * (24 << 12)  # 24 MiB
    with serving(lambda req, res: res.send(body), keepalive_timeout=0.2, write_timeout=5) as srv:
        with small_buffers(srv.port, rcvbuf=1 << 20) as s:
            s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            start = time.monotonic()
            head, got = slow_read(s, len(body), chunk=1 << 20, pause=0.03)
            assert time.monotonic() - start > 0.4  # longer than keepalive_timeout, by far
            assert head.startswith(b"HTTP/1.1 200 ")
            assert len(got) == len(body) and hashlib.sha256(got).digest() == hashlib.sha256(body).digest()


def test_streamed_body_to_a_slow_reader_outlives_keepalive():
    piece = b"s" * 65536
    total = 8 << 20

    def handler(req, res):
        state = {"sent": 0}

        def pump():
            while state["sent"] < total:
                state["sent"] += len(piece)
                if not res.write(piece):
                    return  # on_drain calls again
            res.end()

        res.on_drain = pump
        pump()

    with serving(handler, keepalive_timeout=0.2, write_timeout=5) as srv:
        with small_buffers(srv.port, rcvbuf=256 << 10) as s:
            s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            start = time.monotonic()
            head, got = slow_read(s, total, chunk=256 << 10, pause=0.03)
            assert time.monotonic() - start > 0.4
            assert head.startswith(b"HTTP/1.1 200 ") and b"chunked" in head.lower()
            # chunked framing: at least the payload's bytes arrived, and the last chunk
            assert len(got) >= total and got.endswith(b"0\r\n\r\n")


def test_producer_ignoring_backpressure_is_told_at_the_call():
    outcome = []
    done = threading.Event()

    def handler(req, res):
        chunk = b"w" * (1 << 20)
        try:
            for _ in range(64):  # 64 MiB, never looking at write()'s answer
                res.write(chunk)
            outcome.append("all written")
        except WriteQueueFull as exc:
            outcome.append(str(exc))
        done.set()

    with serving(handler) as srv:
        with small_buffers(srv.port) as s:
            s.sendall(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
            assert done.wait(10)
    assert len(outcome) == 1 and "cut" in outcome[0] and "on_drain" in outcome[0], outcome


def test_write_past_the_handlers_content_length_raises():
    outcome = []

    def handler(req, res):
        res.set_length(5)
        res.write(b"12345")
        try:
            res.write(b"6")
        except ValueError as exc:
            outcome.append(str(exc))
        res.end()

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.lower().count(b"content-length") == 1 and body == b"12345"
    assert outcome and "Content-Length" in outcome[0]


def test_upgraded_connection_runs_the_new_owners_on_close():
    events = []

    def handler(req, res):
        conn, rest = res.upgrade([("Upgrade", "echo")])
        conn.on_data = lambda c, data: c.send(bytes(data))
        conn.on_close = lambda c, exc: events.append(("closed", exc))

    with serving(handler, keepalive_timeout=0.2) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(4096)
            assert data.startswith(b"HTTP/1.1 101 ")
            s.sendall(b"ping")
            assert s.recv(100) == b"ping"
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events == [("closed", None)]  # the new owner's callback, an orderly close


def test_new_owner_may_set_context_on_an_upgraded_connection():
    """context belongs to the new owner after upgrade(): the HTTP sweep must not
    mistake it for its own session (it once called check_deadline on it)."""
    class Mine:
        pass

    def handler(req, res):
        conn, rest = res.upgrade([("Upgrade", "echo")])
        conn.context = Mine()
        conn.on_data = lambda c, data: c.send(bytes(data).upper() + (b"!" if isinstance(c.context, Mine) else b"?"))

    raised = []
    with serving(handler, keepalive_timeout=0.1, header_timeout=0.1) as srv:
        srv.loop._exception_handler = lambda exc, cb: raised.append(exc)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(4096)
            time.sleep(0.5)  # several sweeps
            s.sendall(b"abc")
            assert s.recv(100) == b"ABC!"
    assert raised == []
