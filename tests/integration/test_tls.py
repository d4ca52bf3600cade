"""TLS on the transport seam (powpow.net.tls): handshakes, data both ways, closing, backpressure,
and bad input -- with Python's ssl module as the real peer, and powpow's own TLS client."""
import contextlib
import hashlib
import os
import socket
import ssl
import time
import warnings

import pytest

import powpow
from powpow.net.tls import OP_NO_RENEGOTIATION, TlsTransport, server_context
from ._net import in_thread


@contextlib.contextmanager
def tcp_serving(on_accept, ctx, **kw):
    loop = powpow.Loop(debug=True)
    srv = powpow.TcpServer(loop, on_accept=on_accept, ssl=ctx, **kw)
    srv.listen(0, "127.0.0.1")
    th, errors = in_thread(loop.run)
    try:
        yield srv
    finally:
        loop.post(loop.stop)
        th.join(10)
        assert not th.is_alive()
        srv.close()
        loop.close()
        assert not errors, errors


def tls_client(certs, port, timeout=5.0, **kw):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return certs.client_ctx(**kw).wrap_socket(s, server_hostname="localhost")


def recv_until(s, n, timeout=5.0):
    buf = bytearray()
    end = time.monotonic() + timeout
    while len(buf) < n and time.monotonic() < end:
        b = s.recv(1 << 20)
        if not b:
            break
        buf += b
    return bytes(buf)


def echo_accept(conn):
    assert isinstance(conn, TlsTransport) and isinstance(conn, powpow.Transport)
    conn.on_data = lambda c, d: c.write(b"echo:" + bytes(d))


def test_server_echo_with_python_ssl_client(certs):
    with tcp_serving(echo_accept, certs.server_ctx()) as srv:
        with tls_client(certs, srv.port) as t:
            assert t.version() == "TLSv1.3"
            for i in range(3):
                t.sendall(b"ping%d" % i)
                assert recv_until(t, 10) == b"echo:ping%d" % i
            t.unwrap()  # our close_notify; the server answers with its own


def test_powpow_client_to_powpow_server_and_verification_errors(certs):
    loop = powpow.Loop(debug=True)
    srv = powpow.TcpServer(loop, on_accept=echo_accept, ssl=certs.server_ctx()).listen(0, "127.0.0.1")
    port = srv.port
    got, errs = [], []

    def on_connect(conn):
        assert conn.tls.version == "TLSv1.3" and conn.tls.peer_cert["subject"][0][0] == ("commonName", "localhost")
        conn.write(b"x" * 100000)  # larger than a record: several records, one raw write

    def on_data(conn, d):
        got.append(bytes(d))
        if sum(map(len, got)) >= 100005:
            conn.close()

    powpow.connect(loop, "127.0.0.1", srv.port, on_connect, on_data, on_error=errs.append,
                   ssl=certs.client_ctx(), server_hostname="localhost")
    # default verification (system CAs only): the test CA is unknown
    powpow.connect(loop, "127.0.0.1", srv.port, None, None, on_error=errs.append, ssl=True)
    # the test CA, but the wrong name
    powpow.connect(loop, "127.0.0.1", srv.port, None, None, on_error=errs.append, ssl=certs.client_ctx(),
                   server_hostname="wrong.test")
    end = time.monotonic() + 5
    while (len(errs) < 2 or sum(map(len, got)) < 100005) and time.monotonic() < end:
        loop.run_once(50)
    srv.close()
    loop.run_once(0)
    loop.close()
    data = b"".join(got)
    assert data.startswith(b"echo:") and data.count(b"x") == 100000
    msgs = sorted(str(e) for e in errs)
    assert len(msgs) == 2, msgs
    assert all(isinstance(e, powpow.ConnectError) for e in errs)
    assert all("TLS handshake with 127.0.0.1:%d failed" % port in m for m in msgs), msgs
    assert any("CERTIFICATE_VERIFY_FAILED" in m and "unable to get local issuer" in m for m in msgs), msgs
    assert any("Hostname mismatch" in m and "wrong.test" in m for m in msgs), msgs


def test_backpressure_and_drain_over_tls(certs):
    """A 16 MiB write to a slow reader: write() says False, queued_bytes counts plaintext and
    ciphertext, memory stays bounded by the chunked encryption, on_drain fires, all bytes arrive."""
    payload = os.urandom(1 << 20) * 16
    seen = {}

    def on_accept(conn):
        conn.set_write_buffer_limits(256 << 10, 64 << 10)
        ok = conn.write(payload)
        seen["ok"] = ok
        seen["queued"] = conn.queued_bytes
        seen["pending"] = conn.output_pending
        conn.on_drain = lambda c: (seen.setdefault("drained", c.queued_bytes), c.close_after_drain())

    with tcp_serving(on_accept, certs.server_ctx()) as srv:
        with tls_client(certs, srv.port, timeout=10) as t:
            time.sleep(0.2)
            data = recv_until(t, len(payload), timeout=10)
            assert t.recv(10) == b""  # close_notify read: a clean end
    assert seen["ok"] is False and seen["pending"] is True
    assert seen["queued"] >= 4 << 20  # what the kernel did not take yet, mostly plaintext waiting
    assert seen["drained"] <= 64 << 10
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()


def test_send_file_over_tls_in_chunks(certs, tmp_path):
    path = tmp_path / "blob"
    blob = os.urandom(3 << 20) + b"tail"
    path.write_bytes(blob)

    def on_accept(conn):
        conn.send_file(str(path), 1000, len(blob) - 2000, header=b"HEAD")
        assert conn.output_pending and conn.queued_bytes < 1 << 20  # the file is not read whole
        conn.close_after_drain()

    with tcp_serving(on_accept, certs.server_ctx()) as srv:
        with tls_client(certs, srv.port) as t:
            data = recv_until(t, len(blob))
    assert data == b"HEAD" + blob[1000:-1000]


@pytest.mark.parametrize("case", ["empty file", "count 0", "writev with an empty buffer"])
@pytest.mark.parametrize("tls", [True, False])
def test_nothing_to_send_is_not_an_error_over_tls_either(certs, tmp_path, case, tls):
    """An empty file, a send_file with count=0, and an empty buffer in a large writev send
    nothing and go on, over TLS as over TCP.  Was, over TLS: the empty file and count=0
    closed the connection with EIO ("file ended 0 bytes early": a read of 0 bytes taken
    for the file's end), and on PyPy the empty buffer reached SSL_write, whose 0 PyPy's
    ssl takes for an EOF (connection failed, the stream cut short)."""
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    ten = tmp_path / "ten"
    ten.write_bytes(b"0123456789")
    closes = []

    def on_accept(conn):
        conn.on_close = lambda c, exc: closes.append(exc)
        conn.send(b"HEAD;")
        if case == "empty file":
            conn.send_file(str(empty))
        elif case == "count 0":
            conn.send_file(str(ten), offset=3, count=0)
        else:
            conn.writev([b"A" * 200000, b"", b"B"])
        conn.send(b"TAIL")
        conn.close_after_drain()

    want = b"HEAD;" + (b"A" * 200000 + b"B" if case.startswith("writev") else b"") + b"TAIL"
    with tcp_serving(on_accept, certs.server_ctx() if tls else None) as srv:
        if tls:
            c = tls_client(certs, srv.port)
        else:
            c = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        with c:
            data = recv_until(c, len(want) + 1)
        end = time.monotonic() + 5
        while not closes and time.monotonic() < end:
            time.sleep(0.01)
    assert data == want
    assert closes == [None], closes


def test_send_file_from_an_empty_pipe_over_tls_does_not_block_the_loop(certs):
    """Regression: the TLS write pump read a send_file pipe blocking on the loop thread, so
    every other connection stalled until the pipe's writer wrote."""
    rp, wp = os.pipe()
    accepted = []

    def on_accept(conn):
        accepted.append(conn)
        if len(accepted) == 1:
            conn.write(b"<")
            conn.send_file(rp, count=None)  # a pipe: up to its EOF
            conn.write(b">")
            conn.close_after_drain()
        else:
            echo_accept(conn)

    try:
        with tcp_serving(on_accept, certs.server_ctx()) as srv:
            with tls_client(certs, srv.port) as t:
                assert recv_until(t, 1) == b"<"
                with tls_client(certs, srv.port, timeout=3.0) as t2:  # the loop still serves others
                    t2.sendall(b"ping")
                    assert recv_until(t2, 9, timeout=3.0) == b"echo:ping"
                os.write(wp, b"from the pipe")
                os.close(wp)
                wp = -1
                assert recv_until(t, 14) == b"from the pipe>"
    finally:
        if wp >= 0:
            os.close(wp)
        os.close(rp)


def test_peer_closes_without_close_notify_is_an_eof(certs):
    seen = {}

    def on_accept(conn):
        buf = []
        conn.on_data = lambda c, d: buf.append(bytes(d))

        def on_eof(c):
            seen["data"] = b"".join(buf)
            seen["notify"] = c.close_notify_received
            seen["peer_closed"] = c.peer_closed
            c.write(b"bye")  # the write side stays open after the peer's end
            c.close_after_drain()
        conn.on_eof = on_eof

    with tcp_serving(on_accept, certs.server_ctx()) as srv:
        with tls_client(certs, srv.port) as t:
            t.sendall(b"last words")
            time.sleep(0.1)
            dup = socket.socket(fileno=os.dup(t.fileno()))
            dup.shutdown(socket.SHUT_WR)  # TCP FIN, no close_notify
            dup.close()
            assert recv_until(t, 3) == b"bye"
    assert seen == {"data": b"last words", "notify": False, "peer_closed": True}


def test_close_notify_from_peer_then_half_close(certs):
    seen = {}

    def on_accept(conn):
        def on_eof(c):
            seen["notify"] = c.close_notify_received
            c.close()
        conn.on_eof = on_eof

    with tcp_serving(on_accept, certs.server_ctx()) as srv:
        with tls_client(certs, srv.port) as t:
            t.unwrap()
            time.sleep(0.2)
    assert seen == {"notify": True}


def test_plaintext_http_to_tls_port_is_refused_cleanly(certs):
    with tcp_serving(echo_accept, certs.server_ctx()) as srv:
        with tls_client(certs, srv.port) as good:  # a TLS connection that must not notice
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = recv_until(s, 1 << 16)
            assert answer.startswith(b"HTTP/1.1 400 Bad Request") and b"HTTPS" in answer
            good.sendall(b"still here")
            assert recv_until(good, 15) == b"echo:still here"
        assert srv.tls_failures == 1


def _client_hello(certs) -> bytes:
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = certs.client_ctx().wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_truncated_handshake_and_garbage_records(certs):
    hello = _client_hello(certs)
    with tcp_serving(echo_accept, certs.server_ctx()) as srv:
        # half a ClientHello, then the client goes away
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(hello[: len(hello) // 2])
            s.shutdown(socket.SHUT_WR)
            assert recv_until(s, 1) == b""
        # a handshake record full of garbage: an alert, then the close
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01\x00\x20" + b"\xee" * 32)
            out = recv_until(s, 1 << 16)
            assert out[:1] in (b"\x15", b"")  # a TLS alert record (or just the close)
        # garbage application records after a good handshake
        with tls_client(certs, srv.port) as t:
            t.sendall(b"ok")
            assert recv_until(t, 7) == b"echo:ok"
            raw = socket.socket(fileno=os.dup(t.fileno()))
            raw.sendall(b"\x17\x03\x03\x00\x30" + b"\x55" * 0x30)
            raw.close()
            with pytest.raises((ssl.SSLError, ConnectionError)):
                got = t.recv(100)
                if got == b"":
                    raise ConnectionError("closed")
        with tls_client(certs, srv.port) as t:  # the server serves on
            t.sendall(b"again")
            assert recv_until(t, 10) == b"echo:again"
        assert srv.tls_failures == 2
        assert srv.connection_count <= 1


def test_handshake_timeout(certs):
    hello = _client_hello(certs)
    accepted = []
    with tcp_serving(accepted.append, certs.server_ctx(), handshake_timeout=0.3) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as idle, \
                socket.create_connection(("127.0.0.1", srv.port), timeout=5) as half:
            half.sendall(hello[:20])
            t0 = time.monotonic()
            assert recv_until(idle, 1) == b""
            assert recv_until(half, 1) == b""
            assert time.monotonic() - t0 < 3
        time.sleep(0.05)
        assert srv.tls_failures == 2 and srv.connection_count == 0 and not accepted


def test_tls_old_versions_and_renegotiation_refused_by_default(certs):
    ctx = certs.server_ctx()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & OP_NO_RENEGOTIATION
    with tcp_serving(echo_accept, ctx) as srv:
        old = certs.client_ctx()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError):
            with old.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=5),
                                 server_hostname="localhost"):
                pass
        v12 = certs.client_ctx()
        v12.maximum_version = ssl.TLSVersion.TLSv1_2
        with v12.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=5),
                             server_hostname="localhost") as t:
            assert t.version() == "TLSv1.2"
            t.sendall(b"12")
            assert recv_until(t, 7) == b"echo:12"


def test_certificate_key_mismatch_is_an_error_before_listening(certs):
    with pytest.raises(ssl.SSLError):
        server_context(certs.cert, certs.other_key)


def test_drain_fires_when_the_ciphertext_queue_stays_under_its_own_high_mark(certs):
    """The owner is above its high mark while the raw queue is below the TLS layer's:
    on_drain must still come once the socket drains (no stall)."""
    payload = os.urandom(200 << 10)
    seen = {}

    def on_accept(conn):
        conn.raw._socket().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        conn.set_write_buffer_limits(100 << 10, 20 << 10)
        seen["ok"] = conn.write(payload)
        seen["raw_queued"] = conn.raw.queued_bytes

        def drained(c):
            seen["drained"] = True
            c.write(b"END")
            c.close_after_drain()
        conn.on_drain = drained

    with tcp_serving(on_accept, certs.server_ctx()) as srv:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.settimeout(5)
        s.connect(("127.0.0.1", srv.port))
        with certs.client_ctx().wrap_socket(s, server_hostname="localhost") as t:
            time.sleep(0.3)
            data = recv_until(t, len(payload) + 3)
    assert seen["ok"] is False and 0 < seen["raw_queued"] < 256 << 10, seen
    assert seen.get("drained") and data == payload + b"END"


def test_client_write_eof_half_close_and_handshake_timeout(certs):
    """powpow's TLS client: write_eof() sends close_notify (the server's on_eof), the answer
    still arrives; a server that never answers the ClientHello is a ConnectError after
    handshake_timeout."""
    loop = powpow.Loop(debug=True)

    def on_accept(conn):
        buf = []
        conn.on_data = lambda c, d: buf.append(bytes(d))

        def on_eof(c):
            assert c.close_notify_received
            c.write(b"got " + b"".join(buf))
            c.close_after_drain()
        conn.on_eof = on_eof

    srv = powpow.TcpServer(loop, on_accept=on_accept, ssl=certs.server_ctx()).listen(0, "127.0.0.1")
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(4)  # accepts TCP (backlog) but never speaks TLS
    mute_port = mute.getsockname()[1]
    got, errs, closed = [], [], []

    def on_connect(conn):
        conn.write(b"question")
        conn.write_eof()
        assert not conn.writable and conn.write(b"late") is False
        conn.on_eof = lambda c: got.append("eof")

    powpow.connect(loop, "127.0.0.1", srv.port, on_connect, lambda c, d: got.append(bytes(d)),
                   on_close=lambda c, exc: closed.append(exc), on_error=errs.append,
                   ssl=certs.client_ctx(), server_hostname="localhost")
    t0 = time.monotonic()
    powpow.connect(loop, "127.0.0.1", mute_port, None, None, on_error=errs.append,
                   ssl=certs.client_ctx(), server_hostname="localhost", handshake_timeout=0.3)
    end = time.monotonic() + 5
    while (not closed or not errs) and time.monotonic() < end:
        loop.run_once(50)
    srv.close()
    mute.close()
    loop.run_once(0)
    loop.close()
    assert got == [b"got question", "eof"] and closed == [None]
    assert len(errs) == 1 and "no handshake within the time allowed" in str(errs[0])
    assert "TLS handshake with 127.0.0.1:%d failed" % mute_port in str(errs[0])
    assert time.monotonic() - t0 < 4


def test_paused_reading_bounds_buffered_ciphertext(certs):
    """While the owner has paused reading, the kernel holds the peer's bytes: at most one
    raw read's worth of ciphertext waits in the TLS layer; resuming delivers everything."""
    payload = os.urandom(8 << 20)
    seen = {"got": bytearray(), "max_pending": 0}

    def on_accept(conn):
        def on_data(c, d):
            seen["got"] += d
            if "paused" not in seen:
                seen["paused"] = True
                c.pause_reading()
                c.loop.add_timer(300, lambda: (seen.__setitem__("max_pending", c._in.pending), c.resume_reading()))
            if len(seen["got"]) == len(payload):
                c.write(b"done")
        conn.on_data = on_data

    with tcp_serving(on_accept, certs.server_ctx()) as srv:
        with tls_client(certs, srv.port, timeout=10) as t:
            t.sendall(payload)  # completes once the server resumed and read most of it
            assert recv_until(t, 4, timeout=10) == b"done"
    assert seen["max_pending"] <= 80 << 10, seen["max_pending"]
    assert bytes(seen["got"]) == payload
