"""Protocol switches: Upgrade/CONNECT answered normally, and the upgrade handover (issue 8 items 2, 4)."""
import socket
import threading
import time

import pytest

from powpow.net.errors import ConnectionLost

from ._http import serving, split_responses


def recv_until(s, marker, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    end = time.monotonic() + timeout
    while marker not in data and time.monotonic() < end:
        b = s.recv(65536)
        if not b:
            break
        data += b
    return data


def read_all(s, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        if not b:
            break
        data += b
    return data


H2C = (b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
       b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")


@pytest.mark.parametrize("streaming", [False, True])
def test_declined_h2c_upgrade_keeps_the_connection_as_http(streaming):
    def handler(req, res):
        res.send(req.path.encode())

    with serving(handler, streaming=streaming, keepalive_timeout=2) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            # the next request pipelined right behind the Upgrade request
            s.sendall(H2C + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
            data = recv_until(s, b"/second")
            bodies = [b for _, b in split_responses(data)]
            assert bodies == [b"/first", b"/second"]  # was: the second never answered
            s.sendall(b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_all(s)
            assert data.endswith(b"/third")


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("delay_ms", [0, 100])
def test_declined_upgrade_then_half_close_still_answers_the_request_behind(streaming, delay_ms):
    """A request pipelined behind a declined Upgrade, then the client's FIN
    (``shutdown(SHUT_WR)``, as ``curl``/``nc -N`` do): both are answered before the
    close.  Was: the second request was dropped -- the FIN found nothing pending
    while the parser still held it, and the connection closed."""
    def handler(req, res):
        if delay_ms and req.path == "/first":
            res.loop.add_timer(delay_ms, lambda: res.send(req.path.encode()))
        else:
            res.send(req.path.encode())

    with serving(handler, streaming=streaming, keepalive_timeout=2) as srv:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(H2C + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
                s.shutdown(socket.SHUT_WR)
                bodies = [b for _, b in split_responses(read_all(s))]
                assert bodies == [b"/first", b"/second"]


def test_connect_answered_normally_closes_cleanly_and_buffers_nothing():
    def handler(req, res):
        res.send_error(405)

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            # a client that keeps sending is not buffered without bound: the
            # connection is closed after the answer
            s.setblocking(False)
            junk = b"\x16\x03\x01" * 20000
            sent = 0
            end = time.monotonic() + 1.0
            while time.monotonic() < end and sent < 50 << 20:
                try:
                    sent += s.send(junk)
                except BlockingIOError:
                    time.sleep(0.01)
                except OSError:
                    break  # reset: closed
            s.setblocking(True)
            s.settimeout(3)
            data = b""
            closed = False
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        closed = True
                        break
                    data += b
            except ConnectionResetError:
                closed = True  # closed with our junk unread: RST
            except socket.timeout:
                pass
            assert data.startswith(b"HTTP/1.1 405 ") or not data
            assert closed  # was: kept open, everything sent buffered
        deadline = time.monotonic() + 3
        while srv.connection_count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.connection_count == 0


def _echo_upgrade_handler(delay_ms=0, results=None):
    """Take the upgrade; echo upper-cased whatever arrives on the raw connection."""
    def take(res):
        conn, rest = res.upgrade([("Upgrade", "echo")])

        def on_data(c, data):
            c.send(bytes(data).upper())

        conn.on_data = on_data
        conn.send(b"[rest=" + rest + b"]")  # the new owner writes at once: after the 101

    def handler(req, res):
        if delay_ms:
            res.loop.add_timer(delay_ms, lambda: take(res))
        else:
            take(res)
    return handler


@pytest.mark.parametrize("streaming", [False, True])
def test_upgrade_handover_101_first_rest_handed_over_no_http_deadline(streaming):
    with serving(_echo_upgrade_handler(), streaming=streaming, header_timeout=0.3,
                 keepalive_timeout=0.3) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nearly bytes")
            data = recv_until(s, b"]")
            assert data.startswith(b"HTTP/1.1 101 ")  # the 101 before the new owner's bytes
            head, _, after = data.partition(b"\r\n\r\n")
            assert b"Upgrade: echo" in head and b"Connection: Upgrade" in head
            assert after == b"[rest=early bytes]"  # both parser modes hand the rest over
            time.sleep(0.8)  # past every HTTP deadline: the connection is not HTTP's any more
            s.sendall(b"hello")
            assert recv_until(s, b"HELLO") == b"HELLO"


def test_late_upgrade_after_the_client_left_raises_connection_lost():
    outcome = []
    done = threading.Event()

    def handler(req, res):
        def later():
            try:
                res.upgrade([("Upgrade", "echo")])
                outcome.append("returned")
            except ConnectionLost:
                outcome.append("lost")
            done.set()
        res.loop.add_timer(300, later)

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        # meanwhile another client gets a (pooled) connection
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5):
            assert done.wait(5)
            assert outcome == ["lost"]


def test_delayed_upgrade_with_bytes_sent_meanwhile():
    with serving(_echo_upgrade_handler(delay_ms=150)) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nab")
            time.sleep(0.05)
            s.sendall(b"cd")  # arrives while the handler decides
            data = recv_until(s, b"]")
            if b"[rest=ab]" in data and not data.endswith(b"CD"):
                data += recv_until(s, b"CD")
            # what the server read while the handler decided is ``rest`` (it reads on, a
            # little, to see a hang-up); what it had not read reaches on_data
            assert data.split(b"\r\n\r\n", 1)[1] in (b"[rest=ab]CD", b"[rest=abcd]")


def test_bytes_read_while_the_handler_decides_are_bounded_and_handed_over_intact():
    # Reading goes on while the handler decides (to see a hang-up at once), but only
    # up to UPGRADE_PEEK_BYTES (plus one read) behind the request: the rest waits in
    # the kernel and reaches the new owner's on_data, in order.
    got = {}
    done = threading.Event()
    payload = bytes(range(256)) * 4096  # 1 MiB

    def handler(req, res):
        def later():
            conn, rest = res.upgrade([("Upgrade", "raw")])
            got["rest"] = len(rest)
            buf = bytearray(rest)

            def on_data(c, data):
                buf.extend(data)
                if len(buf) >= len(payload):
                    got["intact"] = bytes(buf) == payload
                    done.set()

            conn.on_data = on_data
        res.loop.add_timer(300, later)

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\n" + payload)
            assert done.wait(10)
    assert got["intact"]
    assert got["rest"] <= (16 << 10) + (64 << 10), got


def test_connect_tunnel_taken_by_the_handler():
    def handler(req, res):
        conn, rest = res.upgrade([])
        conn.on_data = lambda c, data: c.send(b"tunnel:" + bytes(data))
        if rest:
            conn.send(b"tunnel:" + rest)

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nhello")
            data = recv_until(s, b"tunnel:hello")
            head, _, after = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length" not in head
            assert b"Transfer-Encoding" not in head
            assert after == b"tunnel:hello"


def test_new_owner_gets_the_transports_default_memoryviews():
    """The HTTP server reads plain TCP as bytes (``data_as_bytes``, issue 13); after the
    handover the new owner gets what a fresh connection delivers: memoryviews."""
    kinds = []

    def handler(req, res):
        conn, rest = res.upgrade([("Upgrade", "echo")])

        def on_data(c, data):
            kinds.append(type(data))
            c.send(bytes(data).upper())

        conn.on_data = on_data

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
            assert recv_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
            s.sendall(b"abc")
            assert recv_until(s, b"ABC").endswith(b"ABC")
    assert kinds and all(k is memoryview for k in kinds)


def _slow_first(inner, delay_ms=150):
    """``/first`` is answered ``delay_ms`` later; every other request goes to ``inner``."""
    def handler(req, res):
        if req.path == "/first":
            res.loop.add_timer(delay_ms, lambda: res.send(b"first"))
        else:
            inner(req, res)
    return handler


UPGRADE_ECHO = b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"


@pytest.mark.parametrize("streaming", [False, True])
def test_upgrade_pipelined_behind_a_pending_answer_waits_for_it(streaming):
    """Was: the upgrade ran while the first answer was pending: 500 instead of 101."""
    with serving(_slow_first(_echo_upgrade_handler()), streaming=streaming) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + UPGRADE_ECHO + b"tail bytes")
            data = recv_until(s, b"]")
            first, sep, after = data.partition(b"HTTP/1.1 101 ")
            assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"\r\n\r\nfirst"), data[:300]
            assert sep, data[:300]
            assert after.partition(b"\r\n\r\n")[2] == b"[rest=tail bytes]"  # they belong to the new protocol
            s.sendall(b"abc")
            assert recv_until(s, b"ABC") == b"ABC"


@pytest.mark.parametrize("streaming", [False, True])
def test_declined_upgrade_pipelined_behind_a_pending_answer_stays_http(streaming):
    def inner(req, res):
        res.send(req.path.encode())

    with serving(_slow_first(inner), streaming=streaming, keepalive_timeout=2) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + H2C.replace(b"/first", b"/h2c")
                      + b"GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            bodies = [b for _, b in split_responses(read_all(s))]
            assert bodies == [b"first", b"/h2c", b"/second"]


CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"


@pytest.mark.parametrize("how", ["send", "write"])
def test_connect_2xx_answered_normally_has_no_framing_headers(how):
    """RFC 9110 §9.3.6: no Content-Length / Transfer-Encoding in a 2xx to CONNECT.
    Its body is the first tunnel bytes; the handler kept no tunnel, so the
    connection closes after them.  Was: ``Content-Length: 7`` (``send``) or
    chunked framing (``write``)."""
    def handler(req, res):
        if how == "send":
            res.send(b"tunnel!", headers=[("X-Proxy", "p")])
        else:
            res.write(b"tun")
            res.end(b"nel!")

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(CONNECT)
            data = read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data[:300]
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    assert body == b"tunnel!"


def test_connect_refused_keeps_its_content_length():
    with serving(lambda req, res: res.send(b"no tunnels here", status=403)) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(CONNECT)
            data = read_all(s)
    assert split_responses(data)[0][1] == b"no tunnels here"
    assert data.startswith(b"HTTP/1.1 403 ") and b"\r\nContent-Length: 15\r\n" in data


@pytest.mark.parametrize("how", ["Content-Length", "Transfer-Encoding", "set_length"])
def test_connect_2xx_with_framing_from_the_handler_is_refused(how):
    errors = []

    def handler(req, res):
        try:
            if how == "Content-Length":
                res.send(b"x", headers=[("Content-Length", "1")])
            elif how == "Transfer-Encoding":
                res.set_header("Transfer-Encoding", "chunked")
                res.write(b"x")
            else:
                res.set_length(1)
                res.write(b"x")
        except ValueError as exc:
            errors.append(str(exc))
            res.send(b"", status=502)

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(CONNECT)
            data = read_all(s)
    assert data.startswith(b"HTTP/1.1 502 ")
    assert errors and "CONNECT" in errors[0]
