"""A handler that raises closes its WebSocket with 1011; what each side reports afterwards.

``on_close(ws, code, reason)`` promises "1011 after a handler raised" (the
``powpow.ws.connection`` docstring, README "WebSocket"): that holds when the
peer never answers our close frame too -- the close timeout ends the wait, it
does not turn the handler's error into a 1006.  The close frames themselves are
kept apart, as RFC 6455 7.1.5/7.1.6 define them: ``close_code_sent`` /
``close_reason_sent`` (ours), ``close_code_received`` / ``close_reason_received``
(the peer's; None when none came, which the RFC calls 1006).

Raw sockets on 127.0.0.1 port 0 for the silent peer (handshake, then never a
close frame), powpow's own clients for the received side.
"""
import logging
import queue
import socket
import time

import pytest

from powpow import Loop
from powpow.ws import WsClosed, connect, connect_sync
from powpow.ws.frames import OP_CLOSE, OP_PING, OP_TEXT, FrameParser, build_frame, close_payload

from ._net import run_until
from ._ws import handshake, read_head, read_until_closed, ws_serving

M = b"\x01\x02\x03\x04"
CLOSE_TIMEOUT = 0.3


def server_frames(data):
    return [(o, bytes(p)) for f, r, o, p in FrameParser(lambda *a: None).feed_all(data)]


def boom(ws, *args):
    raise RuntimeError("handler bug")


def report(closed):
    """on_close that records what the server's WebSocket says about both close frames."""
    def on_close(ws, code, reason):
        closed.put({"on_close": (code, reason), "close_code": (ws.close_code, ws.close_reason),
                    "sent": (ws.close_code_sent, ws.close_reason_sent),
                    "received": (ws.close_code_received, ws.close_reason_received)})
    return on_close


@pytest.mark.parametrize("callback,trigger", [
    ("on_message", build_frame(OP_TEXT, b"go", mask=M)),
    ("on_ping", build_frame(OP_PING, b"hi", mask=M)),
], ids=["on_message", "on_ping"])
def test_handler_error_to_a_silent_peer_is_1011_on_the_wire_and_in_on_close(callback, trigger, caplog):
    closed = queue.Queue()
    with caplog.at_level(logging.INFO, logger="powpow.ws"), \
            ws_serving(ping_interval=None, close_timeout=CLOSE_TIMEOUT, compression=None,
                       on_close=report(closed), **{callback: boom}) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(handshake())
            head, rest = read_head(s)
            assert head.startswith(b"HTTP/1.1 101 ")
            s.sendall(trigger)
            t0 = time.monotonic()
            data, how = read_until_closed(s, 3)  # never sends a close frame back
            elapsed = time.monotonic() - t0
        frames = server_frames(rest + data)
        assert frames[-1] == (OP_CLOSE, close_payload(1011, "internal error"))
        assert [f for f in frames if f[0] == OP_CLOSE] == frames[-1:]
        # TCP closed by the close timeout: not before it (the peer may still answer), and
        # soon after (generous margin for a loaded machine)
        assert how in ("eof", "reset")
        assert CLOSE_TIMEOUT - 0.1 <= elapsed < CLOSE_TIMEOUT + 1.5, elapsed
        got = closed.get(timeout=3)
    assert got == {"on_close": (1011, "internal error"), "close_code": (1011, "internal error"),
                   "sent": (1011, "internal error"), "received": (None, "")}
    timeouts = [r for r in caplog.records if r.name == "powpow.ws" and "no close frame" in r.getMessage()]
    assert len(timeouts) == 1 and "1011 'internal error'" in timeouts[0].getMessage()
    assert any(r.levelno == logging.ERROR and "1011" in r.getMessage() for r in caplog.records)


def test_peer_answering_with_a_codeless_close_is_received_as_1005():
    closed = queue.Queue()
    with ws_serving(ping_interval=None, close_timeout=CLOSE_TIMEOUT, on_close=report(closed),
                    on_message=boom) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(handshake())
            _, data = read_head(s)
            s.sendall(build_frame(OP_TEXT, b"go", mask=M))
            while len(data) < 18:  # the close frame: 2 + 2 + len("internal error")
                data += s.recv(100)
            assert server_frames(data) == [(OP_CLOSE, close_payload(1011, "internal error"))]
            s.sendall(build_frame(OP_CLOSE, b"", mask=M))  # an answer without a code (RFC 6455 7.1.5: 1005)
            _, how = read_until_closed(s, 3)
            assert how in ("eof", "reset")
        got = closed.get(timeout=3)
    assert got == {"on_close": (1011, "internal error"), "close_code": (1011, "internal error"),
                   "sent": (1011, "internal error"), "received": (1005, "")}


def test_our_own_close_to_a_silent_peer_still_reports_1006_with_what_we_sent():
    """Not a handler error: the documented 1006 ("TCP went away without a close frame")
    stays, and what we sent is there to read."""
    closed = queue.Queue()
    with ws_serving(ping_interval=None, close_timeout=CLOSE_TIMEOUT, on_close=report(closed),
                    on_message=lambda ws, d, t: ws.close(4000, "done")) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(handshake())
            _, rest = read_head(s)
            s.sendall(build_frame(OP_TEXT, b"go", mask=M))
            data, how = read_until_closed(s, 3)
        assert server_frames(rest + data) == [(OP_CLOSE, close_payload(4000, "done"))]
        assert how in ("eof", "reset")
        got = closed.get(timeout=3)
    assert got == {"on_close": (1006, "close timeout"), "close_code": (1006, "close timeout"),
                   "sent": (4000, "done"), "received": (None, "")}


def test_peer_that_answers_the_1011_is_reported_on_both_sides():
    """powpow's loop client and blocking client against a handler that raises: both
    report the received 1011 with its reason; the server's on_close says 1011 too."""
    closed = queue.Queue()
    with ws_serving(ping_interval=None, close_timeout=CLOSE_TIMEOUT, on_close=report(closed),
                    on_message=boom) as srv:
        url = "ws://127.0.0.1:%d/" % srv.port
        loop = Loop(debug=True)
        client = {}

        def on_close(ws, code, reason):
            client.update(on_close=(code, reason), sent=(ws.close_code_sent, ws.close_reason_sent),
                          received=(ws.close_code_received, ws.close_reason_received))

        errors = []
        connect(loop, url, on_open=lambda ws: ws.send("go"), on_close=on_close, on_error=errors.append)
        try:
            run_until(loop, lambda: client or errors, timeout=3)
            run_until(loop, lambda: loop.watcher_count == 0, timeout=3)  # TCP closed after the echo
        finally:
            loop.close()
        assert errors == []
        # the client's close echoes the code (RFC 6455 5.5.1), without a reason
        assert client == {"on_close": (1011, "internal error"), "sent": (1011, ""),
                          "received": (1011, "internal error")}
        assert closed.get(timeout=3) == {"on_close": (1011, "internal error"),
                                         "close_code": (1011, "internal error"),
                                         "sent": (1011, "internal error"), "received": (1011, "")}

        c = connect_sync(url)
        c.send("go")
        with pytest.raises(WsClosed) as e:
            c.recv()
        assert (e.value.code, e.value.reason) == (1011, "internal error")
        assert (c.protocol.close_code_received, c.protocol.close_reason_received) == (1011, "internal error")
        c.close()
        assert closed.get(timeout=3)["on_close"] == (1011, "internal error")
