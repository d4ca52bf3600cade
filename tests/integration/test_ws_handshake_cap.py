"""WsServer(max_handshakes=N): connections not yet upgraded are capped; one more gets a 503 and is closed."""
import socket

import pytest

from powpow.ws import WsServer, connect_sync

from ._ws import handshake, read_head, read_until_closed, wait_for, ws_serving


def echo(ws, data, is_text):
    ws.send(data)


def test_excess_handshakes_are_refused_with_503_and_closed():
    with ws_serving(on_message=echo, max_handshakes=3, ping_interval=None) as srv:
        port = srv.port
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            assert wait_for(lambda: len(srv.handshaking) == 3)
            # a fourth connection that is mid-handshake: refused before the handler sees it
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(handshake())
                data, how = read_until_closed(s, 3.0)
                assert data.startswith(b"HTTP/1.1 503 "), data
                assert b"Retry-After: 1" in data and b"Connection: close" in data
                assert how in ("eof", "reset")
            assert srv.refused_handshakes == 1 and srv.connection_count == 0
            # one of the three upgrades: it leaves the count, a new handshake fits again
            idle[0].sendall(handshake())
            head, _ = read_head(idle[0])
            assert head.startswith(b"HTTP/1.1 101 ")
            assert wait_for(lambda: len(srv.handshaking) == 2 and srv.connection_count == 1)
            c = connect_sync("ws://127.0.0.1:%d/" % port)
            c.send("still serving")
            assert c.recv(timeout=3) == "still serving"
            assert len(srv.handshaking) == 2 and srv.connection_count == 2
            c.close()
            # a connection that gives up before upgrading leaves the count too
            idle[1].close()
            assert wait_for(lambda: len(srv.handshaking) == 1)
            assert srv.refused_handshakes == 1
        finally:
            for s in idle:
                s.close()


def test_handshake_timeout_frees_the_slot():
    with ws_serving(on_message=echo, max_handshakes=1, handshake_timeout=0.3, ping_interval=None) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            assert wait_for(lambda: len(srv.handshaking) == 1)
            data, how = read_until_closed(s, 3.0)  # the silent one is dropped at the timeout
            assert how in ("eof", "reset")
        assert wait_for(lambda: len(srv.handshaking) == 0)
        c = connect_sync("ws://127.0.0.1:%d/" % srv.port)
        c.send(b"x")
        assert c.recv(timeout=3) == b"x"
        c.close()


def test_max_handshakes_is_validated():
    with pytest.raises(ValueError):
        WsServer(on_message=echo, max_handshakes=0)
    assert WsServer(on_message=echo, max_handshakes=None).max_handshakes is None
    assert WsServer(on_message=echo).max_handshakes == 1024
