"""ASGI ``websocket`` scope on a real powpow.asgi server, with the powpow WebSocket client
(``connect_sync``), raw sockets and the ``websockets`` library: accept with subprotocol and
headers, text/bytes both ways, close codes and reasons both ways, reject (403), denial
responses, disconnects, send after close, graceful shutdown with 1001."""
import asyncio
import base64
import os
import socket
import threading
import time

import pytest

from powpow.asgi import ClientDisconnected
from powpow.ws import WsClosed, WsHandshakeError, connect_sync

from ._asgi import asgi_server, read_all, read_until


def url(srv, path="/ws"):
    return "ws://127.0.0.1:%d%s" % (srv.port, path)


def handshake(path="/ws", extra=b""):
    key = base64.b64encode(os.urandom(16))
    return (b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n" % (path.encode(), key, extra))


def test_accept_subprotocol_headers_echo_and_server_close():
    seen = {}

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        seen["scope"] = scope
        assert await receive() == {"type": "websocket.connect"}
        await send({"type": "websocket.accept", "subprotocol": "chat.v2", "headers": [(b"x-hello", b"there")]})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            if m.get("text") == "bye":
                await send({"type": "websocket.close", "code": 4321, "reason": "see you"})
                continue
            if "text" in m and m["text"] is not None:
                await send({"type": "websocket.send", "text": "echo:" + m["text"]})
            else:
                await send({"type": "websocket.send", "bytes": b"echo:" + m["bytes"]})

    with asgi_server(app) as srv:
        c = connect_sync(url(srv, "/ws?room=1"), subprotocols=["chat.v1", "chat.v2"])
        assert c.subprotocol == "chat.v2"
        assert c.response.headers.get("x-hello") == ["there"] or c.response.headers.get("x-hello") == "there"
        c.send("héllo")
        assert c.recv() == "echo:héllo"
        c.send(b"\x00\x01")
        assert c.recv() == b"echo:\x00\x01"
        c.send("bye")
        with pytest.raises(WsClosed) as ei:
            c.recv()
        assert (ei.value.code, ei.value.reason) == (4321, "see you")
        c.close()
    scope = seen["scope"]
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["path"] == "/ws" and scope["query_string"] == b"room=1"
    assert scope["subprotocols"] == ["chat.v1", "chat.v2"]
    assert "websocket.http.response" in scope["extensions"]
    assert scope["asgi"]["version"] == "3.0"


def test_client_close_code_and_reason_reach_the_app():
    got = []
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        got.append(await receive())
        got.append(await receive())
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            got.append(exc)
        done.set()

    with asgi_server(app) as srv:
        c = connect_sync(url(srv))
        c.send("one")
        assert c.close(4001, "client leaving") == 4001
        assert done.wait(5)
    assert got[0] == {"type": "websocket.receive", "text": "one"}
    assert got[1] == {"type": "websocket.disconnect", "code": 4001, "reason": "client leaving"}
    assert isinstance(got[2], ClientDisconnected)


def test_abrupt_disconnect_is_1006():
    got = []
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        got.append(await receive())
        done.set()

    with asgi_server(app) as srv:
        c = connect_sync(url(srv))
        c.sock.close()
        assert done.wait(5)
    assert got == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]


def test_close_before_accept_is_403():
    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.close"})

    with asgi_server(app) as srv:
        with pytest.raises(WsHandshakeError) as ei:
            connect_sync(url(srv))
        assert ei.value.status == 403 or "403" in str(ei.value)
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(handshake())
            assert read_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 403")


def test_denial_response_extension():
    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "websocket.http.response.body", "body": b"token ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"needed"})

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(handshake())
            data = read_all(s)
    assert data.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"www-authenticate: Bearer" in data.lower().replace(b"bearer", b"Bearer")
    assert data.endswith(b"6\r\ntoken \r\n6\r\nneeded\r\n0\r\n\r\n")


def test_app_error_before_accept_is_500_after_accept_is_1011():
    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        if scope["path"] == "/late":
            await send({"type": "websocket.accept"})
            await receive()
        raise RuntimeError("app bug")

    with asgi_server(app, log_level="critical") as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(handshake("/early"))
            assert read_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 500")
        c = connect_sync(url(srv, "/late"))
        c.send("trigger")
        with pytest.raises(WsClosed) as ei:
            c.recv()
        assert ei.value.code == 1011
        c.close()


def test_returning_after_accept_closes_1000():
    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "only message"})

    with asgi_server(app) as srv:
        c = connect_sync(url(srv))
        assert c.recv() == "only message"
        with pytest.raises(WsClosed) as ei:
            c.recv()
        assert ei.value.code == 1000
        c.close()


def test_wrong_order_raises_in_the_app():
    box = []

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        try:
            await send({"type": "websocket.send", "text": "before accept"})
        except RuntimeError as exc:
            box.append(str(exc))
        await send({"type": "websocket.accept"})
        try:
            await send({"type": "websocket.accept"})
        except RuntimeError as exc:
            box.append(str(exc))
        await send({"type": "websocket.close"})

    with asgi_server(app) as srv:
        c = connect_sync(url(srv))
        with pytest.raises(WsClosed):
            c.recv()
        c.close()
    assert "before 'websocket.accept'" in box[0] and "twice" in box[1]


def test_shutdown_closes_websockets_with_1001():
    opened = threading.Event()
    got = []

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        opened.set()
        got.append(await receive())

    with asgi_server(app) as srv:
        c = connect_sync(url(srv))
        assert opened.wait(5)
        t0 = time.monotonic()
        srv.shutdown()
        with pytest.raises(WsClosed) as ei:
            c.recv(timeout=5)
        assert ei.value.code == 1001
        c.close()
    assert time.monotonic() - t0 < 3
    assert got and got[0]["type"] == "websocket.disconnect" and got[0]["code"] == 1001


def test_many_messages_with_slow_app_are_all_delivered_in_order():
    got = []
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(0.3)  # messages pile up: reading pauses at the high-water mark
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                break
            got.append(m["text"])
            if len(got) == 500:
                await send({"type": "websocket.send", "text": "all"})
        done.set()

    with asgi_server(app) as srv:
        c = connect_sync(url(srv))
        for i in range(500):
            c.send("m%d" % i)
        assert c.recv(timeout=10) == "all"
        c.close()
        assert done.wait(5)
    assert got == ["m%d" % i for i in range(500)]


def test_websockets_library_client():
    pytest.importorskip("websockets.asyncio.client")
    from ._ws import PyPeer

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": m["text"].upper()})

    with asgi_server(app) as srv:
        # the asyncio client stepped from this thread: the sync client's threads hit PyPy
        # 3.9's Thread.join race under load (CI: "cannot release un-acquired lock")
        with PyPeer() as peer:
            ws = peer.connect(url(srv), compression=None)
            peer.send(ws, "shout")
            assert peer.recv(ws) == "SHOUT"
            peer.send(ws, "ünïcode")
            assert peer.recv(ws) == "ÜNÏCODE"


def test_ws_none_treats_upgrade_as_http():
    seen = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return
        seen.append(scope["type"])
        await send({"type": "http.response.start", "status": 426, "headers": []})
        await send({"type": "http.response.body", "body": b"no ws"})

    with asgi_server(app, ws="none") as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(handshake())
            data = read_until(s, b"no ws")
    assert data.startswith(b"HTTP/1.1 426") and seen == ["http"]


def test_big_messages_pause_reading_by_bytes_and_arrive_whole():
    got = []
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(0.3)  # 8 MiB arrive meanwhile: reading pauses past 1 MiB queued
        while len(got) < 8:
            m = await receive()
            got.append(len(m["bytes"]))
        await send({"type": "websocket.send", "text": "done"})
        done.set()

    with asgi_server(app) as srv:
        c = connect_sync(url(srv), max_message_size=2 << 20)
        for _ in range(8):
            c.send(b"b" * (1 << 20))
        assert c.recv(timeout=10) == "done"
        c.close()
        assert done.wait(5)
    assert got == [1 << 20] * 8


def test_client_leaving_before_accept():
    got = []
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        got.append(await receive())
        got.append(await receive())  # the client hung up while we decided
        try:
            await send({"type": "websocket.accept"})
        except OSError as exc:
            got.append(exc)
        done.set()

    with asgi_server(app, timeout_keep_alive=0.5) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(handshake())
        time.sleep(0.1)
        s.close()
        assert done.wait(15)  # (generous: once timed out at 5 s on PyPy, under a full parallel CI load)
    assert got[0] == {"type": "websocket.connect"}
    assert got[1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    assert isinstance(got[2], ClientDisconnected)


def test_client_leaving_while_the_app_decides_is_seen_at_once():
    # Reading went on pause while the app decided, so the hang-up was seen only at the
    # keep-alive timeout (5 s here; 75 s behind a typical load balancer).
    got = []
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        got.append(await receive())
        t0 = time.monotonic()
        got.append(await receive())  # (no accept yet: only a disconnect can come)
        got.append(time.monotonic() - t0)
        done.set()

    with asgi_server(app, timeout_keep_alive=5) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(handshake())
        time.sleep(0.2)
        s.close()
        assert done.wait(15)
    assert got[0] == {"type": "websocket.connect"}
    assert got[1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    assert got[2] < 3.0, got


def test_a_frame_sent_before_the_101_reaches_the_app_after_a_slow_accept():
    # The bytes read while the app decides are the new protocol's: kept, in order.
    got = []

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await asyncio.sleep(0.3)
        await send({"type": "websocket.accept"})
        m = await receive()
        got.append(m)
        await send({"type": "websocket.send", "text": "got:" + (m.get("text") or "")})
        await receive()

    with asgi_server(app) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.settimeout(5)
        s.sendall(handshake() + masked_frame(b"early"))
        data = read_until(s, b"got:early")
        s.close()
    assert data.startswith(b"HTTP/1.1 101")
    assert got == [{"type": "websocket.receive", "text": "early"}]


# ---------------------------------------------------------------- concurrent receive / send

def masked_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One final client frame (masked, as RFC 6455 §5.3 requires of a client)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def slow_client(srv):
    """A raw WebSocket client with a small receive window that reads nothing yet."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(5)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(handshake())
    head = b""
    while b"\r\n\r\n" not in head:  # byte by byte: leave the frames in the kernel
        b = s.recv(1)
        assert b
        head += b
    assert head.startswith(b"HTTP/1.1 101")
    return s


def test_receive_in_one_task_gets_messages_while_send_waits_for_a_slow_client():
    """A reader task parked in receive() while a writer's send() waits for the
    transport to drain: the message that arrives must reach the reader (its
    wake-up used to be taken by the writer's wait, and lost)."""
    hello = threading.Event()
    state = {}

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})

        async def reader():
            while True:
                m = await receive()
                if m["type"] == "websocket.disconnect":
                    return
                if m.get("text") == "hello":
                    hello.set()
        rt = asyncio.ensure_future(reader())
        await asyncio.sleep(0.2)  # the reader is parked
        try:
            await send({"type": "websocket.send", "bytes": b"x" * (16 << 20)})  # the client reads nothing
        except OSError:
            pass
        state["sent"] = True
        await asyncio.wait_for(rt, 5)

    with asgi_server(app) as srv:
        s = slow_client(srv)
        time.sleep(0.6)  # the send() is blocked by now
        assert "sent" not in state
        s.sendall(masked_frame(b"hello"))
        assert hello.wait(3), "the reader never got the message"
        assert "sent" not in state  # it arrived while the send() still waited
        s.close()


def test_two_tasks_sending_to_a_slow_client_both_finish():
    done = {}
    finished = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})

        async def writer(name, size):
            await send({"type": "websocket.send", "bytes": b"x" * size})
            done[name] = True
        a = asyncio.ensure_future(writer("A", 6 << 20))
        await asyncio.sleep(0.2)  # A waits for the client
        b = asyncio.ensure_future(writer("B", 1 << 20))
        await asyncio.wait([a, b], timeout=6)
        a.cancel()
        b.cancel()
        finished.set()
        await send({"type": "websocket.close"})

    with asgi_server(app) as srv:
        s = slow_client(srv)
        time.sleep(0.6)  # both sends are blocked by now
        assert not done
        got = 0
        deadline = time.monotonic() + 8
        while got < 7 << 20 and time.monotonic() < deadline:  # now read all of both
            b = s.recv(1 << 20)
            assert b
            got += len(b)
        assert finished.wait(8)
        s.close()
    assert got >= 7 << 20
    assert sorted(done) == ["A", "B"]


def test_receive_polled_with_timeouts_still_gets_the_next_message():
    polled = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        for _ in range(20):  # each timeout cancels a parked receive()
            try:
                await asyncio.wait_for(receive(), 0.005)
            except asyncio.TimeoutError:
                pass
        polled.set()
        m = await asyncio.wait_for(receive(), 5)
        await send({"type": "websocket.send", "text": "got:" + m["text"]})
        await receive()

    with asgi_server(app) as srv:
        c = connect_sync(url(srv))
        assert polled.wait(5)
        c.send("late")
        assert c.recv(timeout=5) == "got:late"
        c.close()


@pytest.mark.parametrize("status", [101, 102, 199, 600])
def test_denial_response_with_a_non_final_status_is_500(status):
    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.http.response.start", "status": status, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"denied"})

    with asgi_server(app, log_level="critical") as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(handshake())
            data = read_all(s)
    assert data.startswith(b"HTTP/1.1 500 ") and b"denied" not in data


def test_many_tasks_sending_at_once_to_a_briefly_slow_client_lose_nothing():
    """Regression: 100 tasks each sending 128 KiB at once to a client that starts reading
    1 s later: every send wrote at once (waiting only after its write), the queue passed
    the connection's cap (``max_buffered``), and 38 messages were dropped -- their send()
    raising ClientDisconnected on a connection that stayed open.  Now a send waits
    *before* writing while the client is behind: all 100 arrive, no send fails."""
    results = []
    count, size = 100, 128 << 10

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})

        async def one(i):
            try:
                await send({"type": "websocket.send", "bytes": bytes([i]) * size})
                results.append("ok")
            except OSError as exc:
                results.append(repr(exc))
        await asyncio.gather(*(one(i) for i in range(count)))
        await send({"type": "websocket.close", "code": 1000})

    with asgi_server(app) as srv:
        c = connect_sync(url(srv), timeout=10)
        time.sleep(1.0)  # the client is behind: the sends pile up against it
        got = []
        with pytest.raises(WsClosed):
            while True:
                got.append(c.recv(10))
        c.close()
    assert results == ["ok"] * count, [r for r in results if r != "ok"][:3]
    assert len(got) == count and all(len(m) == size for m in got)
    assert sorted(m[0] for m in got) == list(range(count))


def test_receive_after_the_disconnect_gets_it_again_in_every_task():
    """Regression: two tasks parked in receive() when the client closed: one got
    websocket.disconnect, the other waited forever (as did any receive() after it).
    Every receive() after the disconnect now answers it again (as http.disconnect)."""
    got = []
    done = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})

        async def listen(name):
            m = await receive()
            got.append((name, m["type"], m.get("code")))
        await asyncio.wait_for(asyncio.gather(listen("a"), listen("b")), 5)
        m = await asyncio.wait_for(receive(), 5)
        got.append(("later", m["type"], m.get("code")))
        done.set()

    with asgi_server(app) as srv:
        c = connect_sync(url(srv), timeout=5)
        time.sleep(0.2)  # both tasks are parked in receive()
        c.close(4000)
        assert done.wait(8), got
    assert sorted(got) == [("a", "websocket.disconnect", 4000), ("b", "websocket.disconnect", 4000),
                           ("later", "websocket.disconnect", 4000)], got


def test_compressed_messages_to_an_app_that_does_not_receive_are_held_to_about_the_queue_mark():
    """Regression: the receive queue's byte mark (1 MiB) paused reading only after the
    whole read was decoded: a 64 KiB read of ~1 KiB compressed frames is ~62 MiB once
    inflated, held while the app did not receive (two clients: +130 MiB from 3 MiB
    sent).  Now a turn decodes about 1 MiB of messages and a pause stops the rest."""
    import struct
    import zlib
    from ._net import rss_bytes

    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = (c.compress(b"\0" * ((1 << 20) - 16)) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    bomb = struct.pack("!BBH", 0xC2, 0x80 | 126, len(payload)) + b"\0\0\0\0" + payload  # zero mask

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(30)  # never receives (cancelled at shutdown)

    with asgi_server(app, ws_max_size=2 << 20) as srv:
        base = rss_bytes()
        socks = []
        try:
            for _ in range(2):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect(("127.0.0.1", srv.port))
                s.sendall(handshake(extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n"))
                assert b" 101 " in read_until(s, b"\r\n\r\n")
                s.settimeout(0.2)
                socks.append(s)
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                for s in socks:
                    try:
                        s.send(bomb * 20)
                    except socket.timeout:
                        pass
            time.sleep(0.3)
            grew = rss_bytes() - base
        finally:
            for s in socks:
                s.close()
    assert grew < 40 << 20, "held %d MiB" % (grew >> 20)
