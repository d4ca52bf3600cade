"""WebSocket review fixes: ``idle_timeout`` counts broadcast/publish, no subscribe after the close,
``connect_sync``'s deadline for the whole opening handshake, repeated handshake headers (server
and ASGI)."""
import contextlib
import queue
import socket
import threading
import time

import pytest

from powpow import Loop
from powpow.ws import Hub, WsClosed, WsHandshakeError, broadcast, connect, connect_sync, upgrade

from ._asgi import asgi_server, read_until
from ._ws import http_serving, read_head, wait_for, ws_serving

K1 = b"dGhlIHNhbXBsZSBub25jZQ=="
K2 = b"AQIDBAUGBwgJCgsMDQ4PEA=="


def on_loop(srv, fn):
    """Run ``fn()`` on the server's loop thread and return its result."""
    q = queue.Queue()
    srv.loop.post(lambda: q.put(fn()))
    return q.get(timeout=5)


# -- idle_timeout: a message sent by broadcast / publish is activity ------------------------------

@pytest.mark.parametrize("how", ["publish", "server.broadcast", "broadcast()"])
def test_idle_timeout_is_kept_off_by_broadcast_and_publish(how):
    send = {
        "publish": lambda srv, m: srv.publish("t", m),
        "server.broadcast": lambda srv, m: srv.broadcast(m),
        "broadcast()": lambda srv, m: broadcast(list(srv.clients), m),
    }[how]
    with ws_serving(idle_timeout=0.5, ping_interval=None, on_open=lambda s: s.subscribe("t")) as srv:
        c = connect_sync("ws://127.0.0.1:%d/" % srv.port, timeout=3)
        n = [0]

        def tick():
            n[0] += 1
            send(srv, "tick %d" % n[0])

        timer = on_loop(srv, lambda: srv.loop.add_interval(100, tick))
        # three idle periods of messages going out only: the socket stays open
        end = time.monotonic() + 1.5
        got = 0
        while time.monotonic() < end:
            assert c.recv(timeout=2).startswith("tick ")
            got += 1
        assert got >= 8
        # the messages stop: idle_timeout still closes, with 1001
        on_loop(srv, lambda: srv.loop.cancel_timer(timer))
        with pytest.raises(WsClosed) as ei:
            while True:
                c.recv(timeout=3)
        assert ei.value.code == 1001 and ei.value.reason == "idle timeout"
        c.close()


# -- subscribe on a closed / closing socket ---------------------------------------------------

def test_subscribe_after_the_close_is_a_noop_returning_false():
    opened = queue.Queue()
    with ws_serving(ping_interval=None, close_timeout=0.5, on_open=opened.put) as srv:
        c = connect_sync("ws://127.0.0.1:%d/" % srv.port, timeout=3)
        ws = opened.get(timeout=5)
        assert on_loop(srv, lambda: ws.subscribe("open")) is True
        c.close()
        assert wait_for(lambda: on_loop(srv, lambda: ws.closed))
        # e.g. posted from a worker thread that authorised the socket after it left
        assert on_loop(srv, lambda: ws.subscribe("room")) is False
        assert on_loop(srv, lambda: (srv.hub.subscribers("room"), srv.hub.subscribers("open"))) == (0, 0)
        assert on_loop(srv, lambda: srv.publish("room", "hello")) == []
        assert on_loop(srv, lambda: srv.hub.topics) == {}

        # closing (our close frame sent, the peer's not yet come): nothing could reach it either
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: " + K1 + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert read_head(raw)[0].startswith(b"HTTP/1.1 101 ")
        ws2 = opened.get(timeout=5)
        assert on_loop(srv, lambda: (ws2.close(1000, "bye"), ws2.closed, ws2.subscribe("room"))) == (
            None, False, False)
        assert on_loop(srv, lambda: srv.hub.subscribers("room")) == 0
        raw.close()


def test_publish_local_drops_a_closed_member_the_close_did_not_remove():
    """A socket subscribed straight through ``hub.subscribe`` while its own ``ws.hub`` is None:
    its close cannot reach this hub, so the first publish that meets it reports it and drops it."""
    hub = Hub()
    opened = queue.Queue()

    def handler(req, res):
        upgrade(req, res, ping_interval=None, on_open=lambda ws: (hub.subscribe(ws, "t"), opened.put(ws)))

    with http_serving(handler) as srv:
        c = connect_sync("ws://127.0.0.1:%d/" % srv.port, timeout=3)
        ws = opened.get(timeout=5)
        c.close()
        assert wait_for(lambda: on_loop(srv, lambda: ws.closed))
        assert on_loop(srv, lambda: hub.subscribers("t")) == 1
        assert on_loop(srv, lambda: hub.publish_local("t", "x")) == [ws]
        assert on_loop(srv, lambda: (hub.subscribers("t"), hub.topics)) == (0, {})
        assert on_loop(srv, lambda: hub.publish_local("t", "x")) == []


# -- connect_sync: one deadline for the whole opening handshake --------------------------------

@contextlib.contextmanager
def dripping_server(period=0.1, for_at_most=4.0):
    """Reads the request, then drips ``H`` every ``period`` s (never a whole head) for ``for_at_most`` s."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    stop = threading.Event()

    def serve():
        try:
            c, _ = ls.accept()
        except OSError:
            return
        with c:
            c.settimeout(2)
            try:
                c.recv(4096)
                end = time.monotonic() + for_at_most
                while not stop.is_set() and time.monotonic() < end:
                    c.sendall(b"H")
                    stop.wait(period)
            except OSError:
                pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        yield ls.getsockname()[1]
    finally:
        stop.set()
        ls.close()
        th.join(5)


@pytest.mark.parametrize("kw,limit", [({"timeout": 0.5}, "0.5"), ({"timeout": 5, "open_timeout": 0.5}, "0.5")],
                         ids=["timeout", "open_timeout"])
def test_connect_sync_deadline_covers_a_dripping_101(kw, limit):
    with dripping_server() as port:
        t0 = time.monotonic()
        with pytest.raises(WsHandshakeError) as ei:
            connect_sync("ws://127.0.0.1:%d/" % port, **kw)
        took = time.monotonic() - t0
    assert str(ei.value) == "opening handshake timed out after %s s" % limit
    assert 0.4 < took < 2.0, took


def test_connect_sync_open_timeout_leaves_recv_its_own_timeout():
    with ws_serving(ping_interval=None) as srv:
        c = connect_sync("ws://127.0.0.1:%d/" % srv.port, timeout=0.3, open_timeout=5)
        t0 = time.monotonic()
        with pytest.raises(socket.timeout):
            c.recv()
        assert time.monotonic() - t0 < 2.0
        c.close()


def test_async_connect_names_its_open_timeout():
    with dripping_server() as port:
        loop = Loop(debug=True)
        errors = []
        connect(loop, "ws://127.0.0.1:%d/" % port, open_timeout=0.5,
                on_error=lambda e: (errors.append(e), loop.stop()))
        guard = loop.add_timer(3000, loop.stop)
        loop.run()
        loop.cancel_timer(guard)
        loop.run_once(0)
        loop.close()
    assert len(errors) == 1 and isinstance(errors[0], WsHandshakeError)
    assert str(errors[0]) == "opening handshake timed out after 0.5 s"


# -- repeated handshake headers ---------------------------------------------------------------

def request(*lines, connection=b"Connection: Upgrade"):
    return (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" + connection + b"\r\n"
            + b"".join(ln + b"\r\n" for ln in lines) + b"\r\n")


V13 = b"Sec-WebSocket-Version: 13"
HANDSHAKES = [
    # name, request, status, (header expected in the answer or b""), words of the 400 body
    ("two keys", request(V13, b"Sec-WebSocket-Key: " + K1, b"Sec-WebSocket-Key: " + K2), 400, b"",
     b"more than one Sec-WebSocket-Key"),
    ("one key twice", request(V13, b"Sec-WebSocket-Key: " + K1, b"Sec-WebSocket-Key: " + K1), 400, b"",
     b"more than one Sec-WebSocket-Key"),
    ("versions 13 and 8", request(V13, b"Sec-WebSocket-Version: 8", b"Sec-WebSocket-Key: " + K1), 400, b"",
     b"more than one Sec-WebSocket-Version"),
    ("version 13 twice", request(V13, V13, b"Sec-WebSocket-Key: " + K1), 101, b"", b""),
    ("protocol on a second line", request(V13, b"Sec-WebSocket-Key: " + K1, b"Sec-WebSocket-Protocol: a",
                                          b"Sec-WebSocket-Protocol: B"), 101, b"Sec-WebSocket-Protocol: B", b""),
    ("Connection over two lines", request(V13, b"Sec-WebSocket-Key: " + K1, b"Connection: Upgrade",
                                          connection=b"Connection: keep-alive"), 101, b"", b""),
    ("extension on a second line", request(V13, b"Sec-WebSocket-Key: " + K1, b"Sec-WebSocket-Extensions: x-foo",
                                           b"Sec-WebSocket-Extensions: permessage-deflate"), 101,
     b"Sec-WebSocket-Extensions: permessage-deflate", b""),
]


@pytest.mark.parametrize("name,req,status,header,words", HANDSHAKES, ids=[h[0] for h in HANDSHAKES])
def test_repeated_handshake_headers(name, req, status, header, words):
    with ws_serving(ping_interval=None, subprotocols=("b",)) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(req)
            if status == 101:
                head, _ = read_head(s)
                assert head.startswith(b"HTTP/1.1 101 "), head
                assert header in head
            else:
                answer = read_until(s, words)
                assert answer.startswith(b"HTTP/1.1 %d " % status), answer
                assert words in answer.partition(b"\r\n\r\n")[2], answer


def test_asgi_handshake_sees_every_header_line():
    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        assert await receive() == {"type": "websocket.connect"}
        await send({"type": "websocket.accept", "subprotocol": scope["subprotocols"][-1]})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    with asgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(request(V13, b"Sec-WebSocket-Key: " + K1, b"Sec-WebSocket-Protocol: a",
                              b"Sec-WebSocket-Protocol: chat.v2"))
            head, _ = read_head(s)
            assert head.startswith(b"HTTP/1.1 101 "), head
            assert b"\r\nSec-WebSocket-Protocol: chat.v2" in head
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(request(V13, b"Sec-WebSocket-Key: " + K1, b"Sec-WebSocket-Key: " + K2))
            answer = read_until(s, b"more than one")
            assert answer.startswith(b"HTTP/1.1 400 "), answer
            assert b"more than one Sec-WebSocket-Key" in answer
