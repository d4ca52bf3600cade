"""TLS transport review fixes: bytes after the peer's close_notify, the alert of a fatal record
error, a FIN during the handshake, and Connection's API (set_nodelay, data_as_bytes,
close(reset=True)) on TlsTransport -- with real sockets and Python's ssl as the peer."""
import errno
import logging
import os
import select
import socket
import ssl
import struct
import threading
import time

import pytest

import powpow
from powpow.net.errors import ConnectionLost

from ._http import serving
from .test_tls import echo_accept, recv_until, tcp_serving, tls_client


class BioClient:
    """A blocking TLS client on MemoryBIOs: its close_notify and its raw bytes are the test's to send."""

    def __init__(self, certs, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = certs.client_ctx().wrap_bio(self.inc, self.out, server_hostname="localhost")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                data = self.sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("EOF during the handshake") from None
                self.inc.write(data)
        self.flush()

    def flush(self) -> None:
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def send(self, data: bytes) -> None:
        self.obj.write(data)
        self.flush()

    def close_notify(self) -> None:
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # ours is written; the server's is not expected
        self.flush()

    def read_to_end(self, timeout: float = 3.0):
        """Plaintext until the end; returns (data, how): "close_notify", "eof" (TCP without an
        alert), the ssl.SSLError that ended it, or "timeout"."""
        out = bytearray()
        end = time.monotonic() + timeout
        while True:
            try:
                while True:
                    chunk = self.obj.read(1 << 16)
                    if not chunk:
                        return bytes(out), "close_notify"
                    out += chunk
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return bytes(out), "close_notify"
            except ssl.SSLError as exc:
                return bytes(out), exc
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return bytes(out), "timeout"
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                data = b""
            if not data:
                return bytes(out), "eof"
            self.inc.write(data)

    def close(self) -> None:
        self.sock.close()


def flood(sock, limit: int) -> int:
    """Raw bytes (not TLS records) until the server cuts the connection or ``limit`` went out;
    returns how many were sent then, -1 if the connection was never cut."""
    junk = os.urandom(1 << 16)
    sent = 0
    try:
        while sent < limit:
            sock.sendall(junk)
            sent += len(junk)
        sock.settimeout(3)
        return sent if sock.recv(1 << 16) == b"" else -1  # cut after all? its FIN then
    except (ConnectionResetError, BrokenPipeError):
        return sent
    except socket.timeout:
        return -1


# ---------------------------------------------------------------- after the peer's close_notify

def test_bytes_after_close_notify_are_not_buffered_and_a_flood_is_cut_off(certs):
    """A client sends a request, its close_notify (TCP stays open), then streams bytes: the
    server kept every one in the incoming MemoryBIO (+1.2 GiB in the review).  Now they are
    dropped undecrypted (RFC 8446 6.1), and past a small allowance the connection is cut."""
    seen = {}
    closes = []

    def on_accept(conn):
        if "first" in seen:
            echo_accept(conn)
            return
        seen["first"] = conn

        def on_eof(c):  # half-close kept open: the answer would come later (a long poll)
            seen["notify"] = c.close_notify_received
        conn.on_data = lambda c, d: seen.setdefault("data", bytes(d))
        conn.on_eof = on_eof
        conn.on_close = lambda c, exc: closes.append((exc, c._in.pending))

    with tcp_serving(on_accept, certs.server_ctx()) as srv:
        c = BioClient(certs, srv.port)
        try:
            c.send(b"hello")
            c.close_notify()
            sent = flood(c.sock, 32 << 20)
        finally:
            c.close()
        end = time.monotonic() + 3
        while not closes and time.monotonic() < end:
            time.sleep(0.01)
        with tls_client(certs, srv.port) as t:  # the server serves on
            t.sendall(b"next")
            assert recv_until(t, 9) == b"echo:next"
    assert sent != -1, "the server took 32 MiB after the client's close_notify and never cut it off"
    assert seen["data"] == b"hello" and seen["notify"] is True
    assert len(closes) == 1, closes
    exc, pending = closes[0]
    assert isinstance(exc, ConnectionLost) and exc.errno == errno.EPROTO
    assert "after its close_notify" in str(exc) and "127.0.0.1" in str(exc), str(exc)
    assert pending == 0  # nothing of it was kept


def test_https_long_poll_client_streaming_after_close_notify_is_cut_off(certs):
    """The review's case: HttpServer over TLS, a handler that answers later, the client's
    close_notify, then raw bytes on the open TCP connection."""
    held = []

    def handler(req, res):
        if req.path == "/poll":
            held.append(res)  # never answered in this test
        else:
            res.send(b"fine")

    with serving(handler, ssl=certs.server_ctx()) as server:
        c = BioClient(certs, server.port)
        try:
            c.send(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
            c.close_notify()
            sent = flood(c.sock, 32 << 20)
        finally:
            c.close()
        with tls_client(certs, server.port) as t:
            t.sendall(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = recv_until(t, 1 << 16)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"fine"), answer
    assert held and sent != -1, "32 MiB after close_notify were taken and the connection never cut"


def test_data_with_close_notify_then_fin_still_ends_cleanly(certs):
    """The usual close: data, close_notify, FIN -- unchanged (on_eof, then the close)."""
    seen = {}
    closed = threading.Event()

    def on_accept(conn):
        conn.on_data = lambda c, d: seen.setdefault("data", bytearray()).extend(d)

        def on_eof(c):
            seen["notify"] = c.close_notify_received
            c.write(b"bye")
            c.close_after_drain()
        conn.on_eof = on_eof
        conn.on_close = lambda c, exc: (seen.__setitem__("exc", exc), closed.set())

    with tcp_serving(on_accept, certs.server_ctx()) as srv:
        c = BioClient(certs, srv.port)
        try:
            c.send(b"last words")
            c.close_notify()
            data, how = c.read_to_end()
            c.sock.shutdown(socket.SHUT_WR)
            assert closed.wait(3)
        finally:
            c.close()
    assert data == b"bye" and how == "close_notify"
    assert seen == {"data": b"last words", "notify": True, "exc": None}


# ---------------------------------------------------------------- fatal errors send their alert

def test_corrupted_record_is_answered_with_the_bad_record_mac_alert(certs):
    """RFC 8446 5.2: a record that does not authenticate ends the connection WITH the
    bad_record_mac alert; the server used to close TCP with the alert still in its BIO."""
    closes = []

    def on_accept(conn):
        conn.on_data = lambda c, d: c.write(b"echo:" + bytes(d))
        conn.on_close = lambda c, exc: closes.append(exc)

    with tcp_serving(on_accept, certs.server_ctx()) as srv:
        c = BioClient(certs, srv.port)
        try:
            c.send(b"good")
            c.obj.write(b"tampered")
            record = bytearray(c.out.read())
            record[-3] ^= 0xFF  # inside the AEAD tag
            c.sock.sendall(bytes(record))
            data, how = c.read_to_end()
        finally:
            c.close()
        with tls_client(certs, srv.port) as t:
            t.sendall(b"next")
            assert recv_until(t, 9) == b"echo:next"
    assert data == b"echo:good"
    assert isinstance(how, ssl.SSLError) and "BAD_RECORD_MAC" in (how.reason or ""), how
    assert len(closes) == 2 and isinstance(closes[0], ConnectionLost), closes
    assert "BAD_RECORD_MAC" in str(closes[0])


# ---------------------------------------------------------------- a FIN during the handshake

def _client_hello(certs) -> bytes:
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = certs.client_ctx().wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_server_logs_a_fin_during_the_handshake_as_a_close_not_a_reset(certs, caplog):
    caplog.set_level(logging.INFO, logger="powpow.net")
    hello = _client_hello(certs)
    with tcp_serving(echo_accept, certs.server_ctx()) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(hello[:50])
            s.shutdown(socket.SHUT_WR)  # an orderly FIN, half a ClientHello sent
            assert recv_until(s, 1) == b""
        end = time.monotonic() + 3
        while srv.tls_failures < 1 and time.monotonic() < end:
            time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if "TLS handshake with" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "peer closed the connection during the TLS handshake" in lines[0], lines
    assert "reset" not in lines[0].lower() and "Errno" not in lines[0], lines


def test_client_tells_a_fin_from_a_reset_during_the_handshake(certs):
    """powpow's TLS client against a server that reads the ClientHello, then closes: with a
    FIN the error says the peer closed; with an RST it still says reset."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    port = lst.getsockname()[1]

    def serve(how):
        c, _ = lst.accept()
        with c:
            c.settimeout(5)
            c.recv(1 << 16)
            if how == "fin":
                c.shutdown(socket.SHUT_WR)
                c.recv(1 << 16)  # until the client closes
            else:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    loop = powpow.Loop(debug=True)
    errs = {}
    try:
        for how in ("fin", "rst"):
            th = threading.Thread(target=serve, args=(how,), daemon=True)
            th.start()
            powpow.connect(loop, "127.0.0.1", port, None, None, on_error=lambda e, how=how: errs.setdefault(how, e),
                           ssl=certs.client_ctx(), server_hostname="localhost")
            end = time.monotonic() + 5
            while how not in errs and time.monotonic() < end:
                loop.run_once(20)
            th.join(5)
    finally:
        lst.close()
        for _ in range(5):
            loop.run_once(0)
        loop.close()
    fin, rst = str(errs["fin"]), str(errs["rst"])
    assert isinstance(errs["fin"], powpow.ConnectError) and isinstance(errs["rst"], powpow.ConnectError)
    assert fin == "TLS handshake with 127.0.0.1:%d failed: peer closed the connection during the TLS handshake" % port
    assert "Connection reset by peer" in rst, rst


# ---------------------------------------------------------------- Connection's API on TlsTransport

def test_set_nodelay_data_as_bytes_and_close_reset_over_tls(certs):
    """What the README tells TcpServer users to call in on_accept works with ssl= too."""
    seen = {"types": []}

    def on_accept(conn):
        sock = conn.raw._socket()
        conn.set_nodelay(False)
        seen["off"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        conn.set_nodelay()
        seen["on"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        seen["default"] = conn.data_as_bytes

        def on_data(c, d):
            seen["types"].append(type(d))
            if bytes(d) == b"reset":
                c.close(reset=True)  # an RST, no close_notify
                return
            c.write(b"echo:" + d)
            c.data_as_bytes = True  # from the next record on
        conn.on_data = on_data

    with tcp_serving(on_accept, certs.server_ctx()) as srv:
        with tls_client(certs, srv.port) as t:
            for word in (b"one", b"two"):
                t.sendall(word)
                assert recv_until(t, 8) == b"echo:" + word
            t.sendall(b"reset")
            with socket.socket(fileno=os.dup(t.fileno())) as s:  # below TLS: an RST, not a FIN
                s.settimeout(5)
                with pytest.raises(ConnectionResetError):
                    s.recv(100)
    assert seen["off"] == 0 and seen["on"] != 0 and seen["default"] is False
    assert seen["types"] == [memoryview, bytes, bytes]
