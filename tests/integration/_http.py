"""Helpers for the HTTP server tests: a server on its own loop thread, raw clients."""
import contextlib
import socket
import threading
import time

from powpow import Loop
from powpow.http import HttpServer
from ._net import in_thread


@contextlib.contextmanager
def serving(handler, **options):
    """An HttpServer on 127.0.0.1:0, its loop running in a thread; torn down with the leak check."""
    loop = Loop(debug=True)
    server = HttpServer(handler, loop=loop, **options)
    server.listen(0, "127.0.0.1")
    th, errors = in_thread(loop.run)
    try:
        yield server
    finally:
        loop.post(loop.stop)
        th.join(10)
        assert not th.is_alive(), "server loop did not stop"
        server.close()
        loop.close()  # debug mode: raises ResourceLeakError if anything leaked
        assert not errors, errors


def raw(port: int, data: bytes, timeout: float = 5.0, until_close: bool = True, expect: int = 0) -> bytes:
    """Send ``data`` on a fresh connection; read until the server closes (or ``expect`` bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if data:
            s.sendall(data)
        chunks = []
        got = 0
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            got += len(b)
            if expect and got >= expect and not until_close:
                break
        return b"".join(chunks)


def read_until_close(s, timeout: float = 5.0) -> bytes:
    """Everything ``s`` receives until the peer closes (a timeout raises)."""
    s.settimeout(timeout)
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            return data
        data += b


def split_responses(data: bytes):
    """Split a byte stream of Content-Length framed responses into (head, body) pairs."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, "incomplete head: %r" % data[:200]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        out.append((head, rest[:length]))
        data = rest[length:]
    return out


def on_loop(srv, fn):
    """Run ``fn()`` on the server's loop thread; return its result."""
    box = []
    done = threading.Event()

    def call():
        try:
            box.append(fn())
        finally:
            done.set()

    srv.loop.post(call)
    assert done.wait(5)
    return box[0]


def read_pipelined_answers(sock, n: int, size: int, timeout: float = 30.0) -> list:
    """Read ``n`` Content-Length answers of ``size`` body bytes at a steady, modest
    pace (a slow but honest client); return their bodies' first 6 bytes, in order.
    Stops early at EOF: the caller compares the count."""
    sock.settimeout(timeout)
    marks = []
    buf = b""
    end = time.monotonic() + timeout
    while len(marks) < n and time.monotonic() < end:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0 and len(buf) >= head_end + 4 + size:
            assert b"\r\nContent-Length: %d\r\n" % size in buf[:head_end + 2], buf[:head_end]
            marks.append(buf[head_end + 4:head_end + 10])
            buf = buf[head_end + 4 + size:]
            continue
        try:
            b = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not b:
            break
        buf += b
        time.sleep(0.002)  # at most ~32 MB/s: the server's queue builds up
    return marks


def wait_quiet(counter, quiet=0.3, timeout=3.0) -> int:
    """Wait until ``counter()`` stops changing for ``quiet`` seconds; its value then."""
    end = time.monotonic() + timeout
    last, since = counter(), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.02)
        now = counter()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def read_answers(c, n: int, timeout=20.0):
    """Read ``n`` Content-Length framed answers; (head, body) pairs."""
    c.settimeout(timeout)
    data = bytearray()
    out = []
    pos = 0
    end = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < end, "timed out with %d answers" % len(out)
        b = c.recv(1 << 20)
        assert b, "connection closed after %d answers" % len(out)
        data += b
        while len(out) < n:
            i = data.find(b"\r\n\r\n", pos)
            if i < 0:
                break
            head = bytes(data[pos:i])
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(data) < i + 4 + length:
                break
            out.append((head, bytes(data[i + 4:i + 4 + length])))
            pos = i + 4 + length
    assert pos == len(data), "bytes after the last answer"
    return out
