"""Helpers for the WebSocket tests: servers on a loop thread, raw handshakes."""
import base64
import contextlib
import os
import socket
import time

from powpow import Loop
from powpow.http import HttpServer
from powpow.ws import WsServer
from ._net import in_thread


@contextlib.contextmanager
def on_loop_thread(make):
    """``make(loop)`` builds a server (it must listen); run the loop in a thread; leak-checked teardown."""
    loop = Loop(debug=True)
    server = make(loop)
    th, errors = in_thread(loop.run)
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


class PyPeer:
    """The ``websockets`` library's asyncio client, stepped from the test thread (no threads of its own).

    Its sync client runs a thread per connection, and PyPy 3.9's ``Thread.join``
    can fail under load ("cannot release un-acquired lock"); this one only
    runs while a call waits on it.
    """

    def __init__(self):
        import asyncio
        self.asyncio = asyncio
        self.loop = asyncio.new_event_loop()
        self.conns = []

    def run(self, coro, timeout=10.0):
        return self.loop.run_until_complete(self.asyncio.wait_for(coro, timeout))

    def connect(self, url, **kw):
        from websockets.asyncio.client import connect
        kw.setdefault("compression", "deflate")
        kw.setdefault("ping_interval", None)
        kw.setdefault("max_size", 2 << 20)
        c = self.run(connect(url, **kw))
        self.conns.append(c)
        return c

    def send(self, c, message):
        self.run(c.send(message))

    def recv(self, c, timeout=5.0):
        return self.run(c.recv(), timeout)

    def close(self):
        for c in self.conns:
            try:
                self.run(c.close(), 5)
            except Exception:
                pass
        self.conns = []
        self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()
