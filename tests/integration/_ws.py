"""Helpers for the WebSocket tests: servers on a loop thread, raw handshakes."""
import base64
import contextlib
import os
import socket
import threading
import time

from powpow import Loop
from powpow.http import HttpServer
from powpow.ws import WsServer


@contextlib.contextmanager
def on_loop_thread(make):
    """``make(loop)`` builds a server (it must listen); run the loop in a thread; leak-checked teardown."""
    loop = Loop(debug=True)
    server = make(loop)
    errors = []

    def run():
        try:
            loop.run()
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        yield server
    finally:
        if th.is_alive():
            loop.post(loop.stop)
        th.join(10)
        assert not th.is_alive(), "server loop did not stop"
        server.close()
        loop.run_once(0)
        loop.close()
        assert not errors, errors


def ws_serving(**kw):
    return on_loop_thread(lambda loop: WsServer(loop=loop, **kw).listen(0, "127.0.0.1"))


def http_serving(handler, **kw):
    return on_loop_thread(lambda loop: HttpServer(handler, loop=loop, **kw).listen(0, "127.0.0.1"))


def handshake(key=None, path="/", extra=b"", version=b"13", method=b"GET", proto=b"HTTP/1.1"):
    key = key if key is not None else base64.b64encode(os.urandom(16))
    return (method + b" " + path.encode() + b" " + proto + b"\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: " + version +
            b"\r\n" + extra + b"\r\n")


def read_head(s, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        if not b:
            break
        data += b
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def read_until_closed(s, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return data, "reset"
        if not b:
            return data, "eof"
        data += b
    return data, "open"


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()
