"""WebSocket over TLS: ``WsServer(ssl=ctx)`` and ``wss://`` in both clients, verified by default."""
import ssl
import threading

import pytest

from powpow import Loop
from powpow.ws import connect, connect_sync

from ._ws import ws_serving


def echo(ws, data, is_text):
    ws.send(data)


def test_wss_echo_with_the_sync_client(certs):
    with ws_serving(on_message=echo, ssl=certs.server_ctx()) as srv:
        client = connect_sync("wss://localhost:%d/chat" % srv.port, ssl=certs.client_ctx())
        try:
            client.send("hello over TLS")
            assert client.recv() == "hello over TLS"
            client.send(b"\x00" * 100000)
            assert client.recv() == b"\x00" * 100000
        finally:
            client.close()


def test_wss_echo_with_the_loop_client(certs):
    got = []
    done = threading.Event()

    with ws_serving(on_message=echo, ssl=certs.server_ctx()) as srv:
        loop = Loop(debug=True)

        def on_open(ws):
            ws.send("ping-pong")

        def on_message(ws, data, is_text):
            got.append((data, is_text))
            ws.close()

        def on_close(ws, code, reason):
            got.append(code)
            loop.stop()

        connect(loop, "wss://localhost:%d/" % srv.port, on_open=on_open, on_message=on_message,
                on_close=on_close, on_error=lambda exc: (got.append(exc), loop.stop()), ssl=certs.client_ctx())
        t = loop.add_timer(5000, loop.stop)
        loop.run()
        loop.cancel_timer(t)
        for _ in range(5):  # the closed client's transport and timers go in the next iterations
            loop.run_once(10)
        loop.close()
        done.set()
    assert got == [("ping-pong", True), 1000], got


def test_wss_refuses_an_unknown_certificate_authority(certs):
    errors = []
    with ws_serving(on_message=echo, ssl=certs.server_ctx()) as srv:
        loop = Loop(debug=True)
        connect(loop, "wss://localhost:%d/" % srv.port, on_error=lambda exc: (errors.append(exc), loop.stop()),
                ssl=ssl.create_default_context(), open_timeout=5)  # the system CAs: not our test CA
        t = loop.add_timer(6000, loop.stop)
        loop.run()
        loop.cancel_timer(t)
        for _ in range(5):  # the failed attempt's transport is released in the next iterations
            loop.run_once(10)
        loop.close()
        with pytest.raises(ssl.SSLError):
            connect_sync("wss://localhost:%d/" % srv.port)  # default context: verification fails
    assert len(errors) == 1 and "CERTIFICATE_VERIFY_FAILED" in str(errors[0]) and "localhost" in str(errors[0])


def test_ssl_context_for_a_plain_ws_url_is_refused(certs):
    with pytest.raises(ValueError, match="wss://"):
        connect_sync("ws://localhost:1/", ssl=certs.client_ctx())
