"""Helpers for the WSGI tests: a powpow.wsgi.Server on its own thread, raw clients."""
import contextlib
import socket
import time

from powpow.wsgi import Server
from ._net import in_thread


@contextlib.contextmanager
def wsgi_server(app, check_released=True, **options):
    """``Server(app)`` on 127.0.0.1:0, run() in a thread; graceful shutdown at the end.

    ``check_released``: every request's slot was given back (nothing left in flight,
    no per-connection queue left behind)."""
    options.setdefault("access_log", False)
    srv = Server(app, "127.0.0.1", 0, **options).listen()
    th, errors = in_thread(srv.run)
    try:
        yield srv
    finally:
        srv.shutdown()
        th.join(15)
        assert not th.is_alive(), "server did not stop"
        assert not errors, errors
        if check_released:
            assert srv.in_flight == 0, srv.in_flight
            assert not srv._serial, srv._serial


def read_until_close(sock, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            b = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_until_close(s, timeout)


def read_response(sock, timeout: float = 10.0):
    """One Content-Length framed response from ``sock``: (head, body)."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = sock.recv(65536)
        if not b:
            raise ConnectionError("closed before a head: %r" % buf)
        buf += b
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        b = sock.recv(65536)
        if not b:
            raise ConnectionError("closed inside a body")
        rest += b
    return head, rest[:length]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        import os
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
