"""WebSocket client: ``connect`` on the loop against the websockets library and against bad servers."""
import asyncio
import contextlib
import socket
import threading

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
def fake_server(answer):
    """A raw server that reads the handshake and writes ``answer(key)``."""
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
