"""Broadcast (one frame shared by every socket) and local pub/sub, with a client that never reads."""
import queue
import socket

from powpow.ws import SendStatus, broadcast, connect_sync

from ._ws import handshake, read_head, wait_for, ws_serving


def on_loop(srv, fn):
    """Run ``fn()`` on the server's loop thread and return its result."""
    q = queue.Queue()
    srv.loop.post(lambda: q.put(fn()))
    return q.get(timeout=5)


def test_broadcast_to_many_with_one_that_never_reads():
    n = 1000

    def on_message(ws, data, is_text):
        if data == "fill":  # make this one a slow consumer: fill its queue past max_buffered
            while ws.send(b"z" * 100_000) != SendStatus.DROPPED:
                pass
            ws.context = "slow"

    with ws_serving(on_message=on_message, max_buffered=500_000, compression=None, ping_interval=None) as srv:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(5)
        slow.connect(("127.0.0.1", srv.port))
        slow.sendall(handshake())
        read_head(slow)
        from powpow.ws.frames import OP_TEXT, build_frame
        slow.sendall(build_frame(OP_TEXT, b"fill", mask=b"abcd"))
        assert wait_for(lambda: any(ws.context == "slow" for ws in list(srv.clients)))
        clients = [connect_sync("ws://127.0.0.1:%d/" % srv.port) for _ in range(n)]
        assert wait_for(lambda: srv.connection_count == n + 1)
        for i in range(3):
            failed = on_loop(srv, lambda i=i: srv.broadcast("news %d" % i))
            assert [ws.context for ws in failed] == ["slow"]  # only the slow one failed
            for c in clients:  # the others are not held back
                assert c.recv(timeout=2) == "news %d" % i
        # the shared-frame path, direct
        failed = on_loop(srv, lambda: broadcast([ws for ws in srv.clients if ws.context != "slow"], b"\x01\x02"))
        assert failed == []
        assert all(c.recv(timeout=2) == b"\x01\x02" for c in clients)
        for c in clients:
            c.close()
        slow.close()


def test_topics_subscribe_publish_unsubscribe_on_close():
    def on_message(ws, data, is_text):
        cmd, _, topic = data.partition(":")
        if cmd == "sub":
            ws.subscribe(topic)
        elif cmd == "unsub":
            ws.unsubscribe(topic)
        ws.send("ok " + data)

    with ws_serving(on_message=on_message) as srv:
        a = connect_sync("ws://127.0.0.1:%d/" % srv.port)
        b = connect_sync("ws://127.0.0.1:%d/" % srv.port)
        c = connect_sync("ws://127.0.0.1:%d/" % srv.port)
        for cl, msg in ((a, "sub:red"), (b, "sub:red"), (b, "sub:blue"), (c, "sub:blue")):
            cl.send(msg)
            assert cl.recv() == "ok " + msg
        assert on_loop(srv, lambda: srv.publish("red", "to red")) == []
        assert a.recv() == "to red" and b.recv() == "to red"
        on_loop(srv, lambda: srv.publish("blue", b"to blue"))
        assert b.recv() == b"to blue" and c.recv() == b"to blue"
        b.send("unsub:red")
        assert b.recv() == "ok unsub:red"
        on_loop(srv, lambda: srv.publish("red", "again"))
        assert a.recv() == "again"
        b.send("ping")
        assert b.recv() == "ok ping"  # nothing from red arrived before this
        a.close()
        assert wait_for(lambda: on_loop(srv, lambda: srv.hub.subscribers("red")) == 0)
        assert on_loop(srv, lambda: srv.hub.subscribers("blue")) == 2
        b.close()
        c.close()
        assert wait_for(lambda: on_loop(srv, lambda: srv.hub.topics) == {})


def test_broadcast_deadline_closes_clients_still_in_flight():
    late_q = queue.Queue()
    with ws_serving(on_message=lambda ws, d, t: setattr(ws, "context", d), compression=None,
                    ping_interval=None, close_timeout=0.5) as srv:
        fast = connect_sync("ws://127.0.0.1:%d/" % srv.port, max_message_size=16 << 20)
        fast.send("fast")
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(5)
        slow.connect(("127.0.0.1", srv.port))
        slow.sendall(handshake())
        read_head(slow)
        from powpow.ws.frames import OP_TEXT, build_frame
        slow.sendall(build_frame(OP_TEXT, b"slow", mask=b"abcd"))
        assert wait_for(lambda: sorted(str(ws.context) for ws in list(srv.clients)) == ["fast", "slow"])
        big = b"x" * (8 << 20)  # far more than the slow client's window and buffers
        failed = on_loop(srv, lambda: broadcast(list(srv.clients), big, deadline=0.3,
                                                on_late=lambda late: late_q.put([ws.context for ws in late])))
        assert failed == []
        assert fast.recv(timeout=5) == big  # the reader gets it whole
        assert late_q.get(timeout=3) == ["slow"]
        fast.close()
        slow.close()
