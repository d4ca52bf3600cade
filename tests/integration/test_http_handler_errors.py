"""Handlers that fail or misuse a response, and requests in forms the fast paths skipped.

Each test here failed before its fix (a review of the HTTP fast paths, issue 13):
a handler raising after its answer left the connection open forever; pipelined
requests behind a failed handler still ran with their answers thrown away;
``send()`` after ``write()`` put a second status line inside a chunked body; an
absolute-form target bypassed ``serve_static``; a WebSocket subprotocol was
echoed in the server's spelling, not the client's.
"""
import base64
import os
import time

import pytest

import powpow
from powpow import ws

from ._http import on_loop, raw, serving, split_responses


@pytest.mark.parametrize("streaming", [False, True])
def test_handler_raising_after_its_answer_closes_the_connection(streaming):
    def handler(req, res):
        res.send(b"ok\n")
        raise RuntimeError("after the answer")

    with serving(handler, streaming=streaming, keepalive_timeout=30) as srv:
        t0 = time.monotonic()
        out = raw(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", timeout=10)
        took = time.monotonic() - t0
        (head, body), = split_responses(out)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok\n"
        assert took < 5, "the connection stayed open (%.1f s)" % took


def test_pipelined_requests_behind_a_failed_handler_do_not_run():
    """RFC 9112 9.3.2: a client may retry requests that got no answer; they must not have run."""
    ran = []

    def handler(req, res):
        if req.path == "/raise":
            raise RuntimeError("boom")
        ran.append(req.path)
        res.send(b"done")

    with serving(handler) as srv:
        out = raw(srv.port, b"GET /raise HTTP/1.1\r\nHost: a\r\n\r\n"
                            b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
                            b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", timeout=10)
        (head, _body), = split_responses(out)
        assert head.startswith(b"HTTP/1.1 500")
        assert ran == []


def test_send_after_write_is_refused_and_the_body_stays_well_framed():
    errors = []

    def handler(req, res):
        if req.path == "/stream":
            res.write(b"abc")
            try:
                res.send(b"xyz")
            except RuntimeError as exc:
                errors.append(str(exc))
            res.end()
        else:
            res.send(b"next")

    with serving(handler) as srv:
        out = raw(srv.port, b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n"
                            b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", timeout=10)
        first, sep, rest = out.partition(b"\r\n0\r\n\r\n")
        assert sep and first.count(b"HTTP/1.1 ") == 1 and b"\r\n3\r\nabc" in first
        assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"next")
        assert errors and "head already sent" in errors[0]


def test_serve_static_takes_absolute_form_targets(tmp_path):
    """RFC 9112 3.2.2: a server MUST accept the absolute form (what a client sends to a proxy)."""
    (tmp_path / "a.txt").write_bytes(b"hello-static\n")

    def handler(req, res):
        if not powpow.serve_static(req, res, str(tmp_path), prefix="/static/"):
            res.send(b"app")

    with serving(handler) as srv:
        for target in (b"/static/a.txt", b"http://a/static/a.txt"):
            out = raw(srv.port, b"GET " + target + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            (head, body), = split_responses(out)
            assert head.startswith(b"HTTP/1.1 200") and body == b"hello-static\n", target


def test_websocket_subprotocol_is_echoed_as_the_client_spelled_it():
    """RFC 6455 4.2.2: the value is derived from the client's handshake; clients compare it exactly."""
    chosen = []

    def handler(req, res):
        sess = ws.upgrade(req, res, on_message=lambda s, d, t: s.send(d), subprotocols=("Chat.V2",))
        if sess is not None:
            chosen.append(sess.subprotocol)

    with serving(handler) as srv:
        key = base64.b64encode(os.urandom(16))
        out = raw(srv.port, b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
                            b"Sec-WebSocket-Protocol: other, chat.v2\r\n\r\n", timeout=1.0)
        assert out.startswith(b"HTTP/1.1 101")
        assert b"\r\nSec-WebSocket-Protocol: chat.v2\r\n" in out
        c = ws.connect_sync("ws://127.0.0.1:%d/ws" % srv.port, subprotocols=["chat.v2"], timeout=5)
        try:
            c.send("hi")
            assert c.recv(timeout=5) == "hi"
        finally:
            c.close()
        assert chosen and chosen[0] == "Chat.V2"  # the application sees its own name


def test_websocket_peer_that_pings_and_never_reads_keeps_the_queue_bounded():
    """Every ping queued a pong with no bound but the transport's 32 MiB cap, so a peer
    that pings and never reads cost 32 MiB a connection.  Above high_water only the latest
    pong is held (RFC 6455 5.5.3) and it goes out on drain."""
    import socket

    peak = [0]
    timers = []

    def handler(req, res):
        sess = ws.upgrade(req, res)
        if sess is not None:
            def sample():
                peak[0] = max(peak[0], sess.buffered_amount)
            timers.append(srv.loop.add_interval(2, sample))

    with serving(handler) as srv:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        key = base64.b64encode(os.urandom(16))
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        s.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        n = 100000
        pings = b"".join(bytes([0x89, 0x80 | 120]) + b"\0\0\0\0" + b"%0120d" % i for i in range(n))
        s.sendall(pings)  # 12.6 MB of pings; nothing read meanwhile
        time.sleep(0.5)
        assert peak[0] < (1 << 20), peak[0]  # high_water is 256 KiB
        # now read: pongs answer in order, and the last one answers the last ping
        s.settimeout(2)
        data = bytearray()
        try:
            while True:
                d = s.recv(1 << 20)
                if not d:
                    break
                data += d
        except socket.timeout:
            pass
        last = None
        i = 0
        while i + 2 <= len(data):
            assert data[i] == 0x8A  # FIN + pong, unmasked
            ln = data[i + 1]
            assert ln == 120
            last = bytes(data[i + 2:i + 2 + ln])
            i += 2 + ln
        assert last == b"%0120d" % (n - 1)
        s.close()
        for t in timers:
            on_loop(srv, lambda t=t: srv.loop.cancel_timer(t))
