"""WebSocket client: ``connect`` on the loop against the websockets library and against bad servers."""
import asyncio
import base64
import contextlib
import socket
import struct
import threading
import time

import pytest

from powpow import Loop
from powpow.ws import WsClosed, WsHandshakeError, connect, connect_sync
from powpow.ws.handshake import accept_key

from ._net import full_backlog_listener
from ._ws import http_serving, ws_serving


@contextlib.contextmanager
def websockets_server(compression="deflate", subprotocols=None):
    """The websockets library's echo server on its own asyncio thread."""
    from websockets.asyncio.server import serve

    box = {}
    ready = threading.Event()

    async def handler(ws):
        async for msg in ws:
            if msg == "close-me":
                await ws.close(4002, "asked")
                return
            await ws.send(msg)

    async def main():
        async with serve(handler, "127.0.0.1", 0, compression=compression, subprotocols=subprotocols,
                         max_size=2 << 20) as server:
            box["port"] = server.sockets[0].getsockname()[1]
            box["stop"] = asyncio.get_running_loop().create_future()
            ready.set()
            await box["stop"]

    loop = asyncio.new_event_loop()
    th = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    th.start()
    assert ready.wait(5)
    try:
        yield box["port"]
    finally:
        loop.call_soon_threadsafe(box["stop"].set_result, None)
        th.join(5)
        loop.close()


def run_client(url, messages, timeout=5.0, **kw):
    """Open, send each message, collect the echoes, close; returns (echoes, close info, errors, ws)."""
    loop = Loop(debug=True)
    got, closed, errors, opened = [], [], [], []

    def on_open(ws):
        opened.append(ws)
        for m in messages:
            ws.send(m)

    def on_message(ws, data, is_text):
        got.append(data)
        if len(got) == len(messages):
            ws.close(1000, "done")

    def on_close(ws, code, reason):
        closed.append((code, reason))

    def on_error(exc):
        errors.append(exc)
        loop.stop()

    connect(loop, url, on_open=on_open, on_message=on_message, on_close=on_close, on_error=on_error, **kw)
    timer = loop.add_timer(int(timeout * 1000), loop.stop)

    def check():
        if closed and (not opened or opened[0].transport.closed):
            loop.stop()
    tick = loop.add_interval(10, check)
    loop.run()
    loop.cancel_timer(timer)
    loop.cancel_timer(tick)
    loop.run_once(0)
    loop.close()
    return got, closed, errors, opened


MESSAGES = ["hello", "é" * 1000, b"\x00" * 70000, b"", "x" * 300_000, bytes(range(256)) * 100]


@pytest.mark.parametrize("compression", ["deflate", None])
def test_client_against_websockets_server(compression):
    with websockets_server(compression="deflate") as port:
        got, closed, errors, opened = run_client("ws://127.0.0.1:%d/p" % port, MESSAGES, compression=compression)
        assert not errors
        assert got == MESSAGES
        assert closed == [(1000, "done")]
        assert (opened[0].protocol.deflate is not None) == (compression is not None)


def test_client_reports_the_server_close_code():
    with websockets_server() as port:
        got, closed, errors, _ = run_client("ws://127.0.0.1:%d/" % port, ["close-me", "never"])
        assert closed == [(4002, "asked")] and not errors


def test_client_against_our_server_and_subprotocol():
    with ws_serving(on_message=lambda ws, d, t: ws.send(d), subprotocols=("v2",)) as srv:
        got, closed, errors, opened = run_client("ws://127.0.0.1:%d/" % srv.port, MESSAGES,
                                                 subprotocols=["v1", "v2"])
        assert got == MESSAGES and closed == [(1000, "")]  # our server echoes the code, not the reason
        assert opened[0].subprotocol == "v2"


def test_redirect_is_refused_with_a_clear_error():
    with http_serving(lambda req, res: res.redirect("/elsewhere", 301)) as srv:
        got, closed, errors, _ = run_client("ws://127.0.0.1:%d/" % srv.port, ["x"])
        assert len(errors) == 1 and isinstance(errors[0], WsHandshakeError)
        assert "redirect refused: 301" in str(errors[0]) and "/elsewhere" in str(errors[0])
        assert not closed


@contextlib.contextmanager
def fake_server(answer, then=None):
    """A raw server that reads the handshake and writes ``answer(key)``; then ``then(sock)``
    (default: wait up to 2 s for the client to send or close)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)

    def serve():
        try:
            c, _ = ls.accept()
        except OSError:
            return
        with c:
            data = b""
            while b"\r\n\r\n" not in data:
                data += c.recv(4096)
            key = [ln.split(b":", 1)[1].strip() for ln in data.split(b"\r\n")
                   if ln.lower().startswith(b"sec-websocket-key")][0].decode()
            c.sendall(answer(key))
            if then is not None:
                then(c)
                return
            c.settimeout(2)
            try:
                c.recv(100)
            except OSError:
                pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield ls.getsockname()[1]
    finally:
        ls.close()
        th.join(3)


def ok_head(key, extra=""):
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: %s\r\n%s\r\n" % (accept_key(key), extra)).encode()


@pytest.mark.parametrize("name,answer,words", [
    ("wrong accept", lambda k: ok_head("AAAAAAAAAAAAAAAAAAAAAA=="), "Sec-WebSocket-Accept"),
    ("not 101", lambda k: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "200"),
    ("bad status line", lambda k: b"HTTP/1.1 101\r\n\r\n", "status line"),
    ("obs-fold", lambda k: ok_head(k, "X: a\r\n b\r\n"), "header line"),
    ("control byte", lambda k: ok_head(k, "X: a\x01b\r\n"), "header value"),
    ("subprotocol not offered", lambda k: ok_head(k, "Sec-WebSocket-Protocol: evil\r\n"), "subprotocol"),
    ("extension not offered", lambda k: ok_head(k, "Sec-WebSocket-Extensions: x-evil\r\n"), "not offered"),
    ("no upgrade header", lambda k: ok_head(k).replace(b"Upgrade: websocket\r\n", b""), "Upgrade"),
])
def test_strict_101_checks(name, answer, words):
    with fake_server(answer) as port:
        got, closed, errors, opened = run_client("ws://127.0.0.1:%d/" % port, ["x"], compression=None)
        assert len(errors) == 1 and isinstance(errors[0], WsHandshakeError), errors
        assert words in str(errors[0])
        assert not opened and not closed


def test_open_timeout():
    with fake_server(lambda k: b"") as port:
        got, closed, errors, opened = run_client("ws://127.0.0.1:%d/" % port, ["x"], open_timeout=0.3)
        assert len(errors) == 1 and "timed out" in str(errors[0])


def test_masked_server_frame_fails_the_client_1002():
    from powpow.ws.frames import OP_TEXT, build_frame

    with fake_server(lambda k: ok_head(k) + build_frame(OP_TEXT, b"hi", mask=b"abcd")) as port:
        with pytest.raises(WsClosed) as e:
            connect_sync("ws://127.0.0.1:%d/" % port).recv(timeout=2)
        assert e.value.code == 1002


@contextlib.contextmanager
def capturing_server():
    """A raw server that answers each opening handshake with a 101 and keeps the
    request heads it read (``box["heads"]``)."""
    box = {"heads": []}
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    ls.settimeout(0.1)  # (a close from another thread does not wake accept())
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            with c:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += c.recv(4096)
                head = data.split(b"\r\n\r\n")[0].decode("latin-1")
                box["heads"].append(head)
                key = [ln.split(":", 1)[1].strip() for ln in head.split("\r\n")
                       if ln.lower().startswith("sec-websocket-key")][0]
                c.sendall(ok_head(key) + b"\x88\x02\x03\xe8")  # then a close 1000
                c.settimeout(2)
                try:
                    c.recv(100)  # the client's close frame
                except OSError:
                    pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        box["port"] = ls.getsockname()[1]
        yield box
    finally:
        done.set()
        th.join(3)
        ls.close()


def _fields(head, name):
    return [ln.split(":", 1)[1].strip() for ln in head.split("\r\n")[1:] if ln.split(":")[0].lower() == name]


@pytest.mark.parametrize("sync", [True, False])
def test_opening_request_encodes_the_resource_and_takes_host_and_credentials(sync):
    """Was (found against a Node ws server): a non-ASCII path went out as raw latin-1
    bytes (400) or not at all (UnicodeEncodeError); ``headers={"Host": ...}`` added a
    second Host line (powpow's own server answers that 400); credentials in the URL
    were dropped.  Now: the resource is percent-encoded from UTF-8 (escapes already
    made are kept), a Host/Authorization header replaces the URL's, and the URL's
    credentials become ``Authorization: Basic``."""
    with capturing_server() as box:
        url = "ws://alice:s%%C3%%A9cret@127.0.0.1:%d/p\u00e4th/%%2F/\u65e5 x?q=\u00fc&r=%%41" % box["port"]
        url2 = "ws://127.0.0.1:%d/chat" % box["port"]
        hdrs = {"Host": "chat.example.com", "Authorization": "Bearer t0k", "X-Trace": "1"}
        if sync:
            for u, h in ((url, None), (url2, hdrs)):
                with pytest.raises(WsClosed):
                    connect_sync(u, headers=h).recv(timeout=5)
        else:
            for u, h in ((url, None), (url2, hdrs)):
                got, closed, errors, _ = run_client(u, [], headers=h)
                assert not errors and closed and closed[0][0] == 1000, (errors, closed)
        first, second = box["heads"]
    assert first.split("\r\n")[0] == "GET /p%C3%A4th/%2F/%E6%97%A5%20x?q=%C3%BC&r=%41 HTTP/1.1"
    assert _fields(first, "host") == ["127.0.0.1:%d" % box["port"]]
    assert _fields(first, "authorization") == ["Basic " + base64.b64encode("alice:s\u00e9cret".encode()).decode()]
    assert _fields(second, "host") == ["chat.example.com"]
    assert _fields(second, "authorization") == ["Bearer t0k"]
    assert _fields(second, "x-trace") == ["1"]


@pytest.mark.parametrize("name, words", [("Sec-WebSocket-Protocol", "use subprotocols="),
                                         ("sec-websocket-extensions", "use compression="),
                                         ("Upgrade", "handshake's own"), ("Sec-WebSocket-Key", "handshake's own")])
def test_a_header_that_contradicts_the_handshake_is_refused_at_the_call(name, words):
    loop = Loop()
    try:
        with pytest.raises(ValueError, match=words):
            connect(loop, "ws://127.0.0.1:9/", headers={name: "x"})
        with pytest.raises(ValueError, match=words):
            connect_sync("ws://127.0.0.1:9/", headers=[(name, "x")])
    finally:
        loop.close()


def test_a_lost_connection_says_so_in_ws_closed():
    """The server's TCP goes away without a close frame: ``WsClosed`` 1006, whose message
    says what that means.  Was: ``connection closed: 1006 `` (an empty reason)."""
    with fake_server(lambda k: ok_head(k)) as port:  # answers, then closes after 2 s of silence
        with pytest.raises(WsClosed) as e:
            connect_sync("ws://127.0.0.1:%d/" % port).recv(timeout=5)
        assert e.value.code == 1006 and e.value.reason == ""
        assert str(e.value) == "connection closed: 1006 (no close frame: the connection was lost)"


@contextlib.contextmanager
def resetting_server():
    """A raw server that answers the handshake with a 101 and a text frame "one", then
    resets the connection (SO_LINGER 0) once ``box["reset"]`` is set."""
    from powpow.ws.frames import OP_TEXT, build_frame

    box = {"reset": threading.Event(), "done": threading.Event()}

    def reset(c):
        box["reset"].wait(5)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        box["done"].set()

    try:
        with fake_server(lambda k: ok_head(k) + build_frame(OP_TEXT, b"one"), then=reset) as port:
            box["port"] = port
            yield box
    finally:
        box["reset"].set()


@pytest.mark.parametrize("first", ["recv", "send"])
def test_connect_sync_reports_a_reset_as_ws_closed_1006(first):
    """The server resets TCP (no close frame): ``recv`` and ``send`` raise ``WsClosed`` 1006,
    the reset as its ``__cause__``, after the message that came before it.  Was: a bare
    ``ConnectionResetError`` from ``recv`` and ``BrokenPipeError`` from ``send``, which
    scripts that catch ``WsClosed`` (as the README says to) did not expect."""
    with resetting_server() as box:
        c = connect_sync("ws://127.0.0.1:%d/" % box["port"], timeout=5)
        try:
            box["reset"].set()
            assert box["done"].wait(5)
            time.sleep(0.2)  # the RST is in
            assert c.recv() == "one"  # what arrived before the reset is still handed out
            calls = [c.recv, lambda: c.send("x")]
            if first == "send":
                calls.reverse()
            for call in calls:
                with pytest.raises(WsClosed) as e:
                    call()
                assert e.value.code == 1006 and e.value.reason == ""
                assert isinstance(e.value.__cause__, OSError), e.value.__cause__
        finally:
            c.close()


def test_connect_sync_against_websockets_server_with_compression():
    with websockets_server() as port:
        with connect_sync("ws://127.0.0.1:%d/" % port, compression="deflate") as c:
            assert c.protocol.deflate is not None
            for m in MESSAGES:
                c.send(m)
                assert c.recv() == m
            c.send("close-me")
            with pytest.raises(WsClosed) as e:
                c.recv()
            assert e.value.code == 4002


def test_connect_sync_open_timeout_covers_a_stalled_tcp_connect():
    """Regression: a TCP connect that stalls (a listener whose backlog is full drops the SYN)
    raised a bare ``TimeoutError`` from ``connect_sync``, not the documented
    ``WsHandshakeError: opening handshake timed out after N s``."""
    import time
    lst, fillers = full_backlog_listener()
    try:
        t0 = time.monotonic()
        with pytest.raises(WsHandshakeError, match=r"opening handshake timed out after 0\.5 s"):
            connect_sync("ws://127.0.0.1:%d/" % lst.getsockname()[1], open_timeout=0.5)
        assert time.monotonic() - t0 < 3
    finally:
        for c in fillers:
            c.close()
        lst.close()
