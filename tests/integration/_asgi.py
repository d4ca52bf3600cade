"""Helpers for the ASGI tests: a ``powpow.asgi.Server`` in a thread, raw-socket reads."""
import contextlib
import socket
import threading
import time

from powpow.asgi import Server


@contextlib.contextmanager
def asgi_server(app, **options):
    """``Server(app, port=0, ...)`` running in a thread; yields it once lifespan startup is done.

    On exit: ``shutdown()`` and the thread must end (a hang fails the test)."""
    options.setdefault("log_level", "warning")
    options.setdefault("access_log", False)
    options.setdefault("timeout_graceful_shutdown", 2.0)
    ready = threading.Event()
    srv = Server(app, "127.0.0.1", 0, on_ready=lambda s: ready.set(), **options).listen()
    result = []
    th = threading.Thread(target=lambda: result.append(srv.run()), daemon=True)
    th.start()
    try:
        assert ready.wait(10), "server did not become ready"
        yield srv
    finally:
        srv.shutdown()
        th.join(15)
        assert not th.is_alive(), "ASGI server did not stop"
    srv.result = result[0] if result else None


def read_until(sock, marker: bytes, timeout: float = 5.0) -> bytes:
    """Read from ``sock`` until ``marker`` is in what arrived (or the peer closes)."""
    data = b""
    end = time.monotonic() + timeout
    while marker not in data and time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            b = sock.recv(65536)
        except socket.timeout:
            break
        if not b:
            break
        data += b
    return data


def read_all(sock, timeout: float = 5.0) -> bytes:
    """Read until the peer closes."""
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            b = sock.recv(65536)
        except socket.timeout:
            break
        if not b:
            break
        data += b
    return data


async def read_body(receive) -> bytes:
    body = b""
    while True:
        m = await receive()
        assert m["type"] == "http.request", m
        body += m.get("body", b"")
        if not m.get("more_body", False):
            return body


async def respond(send, status=200, body=b"", headers=((b"content-type", b"text/plain"),)):
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})
