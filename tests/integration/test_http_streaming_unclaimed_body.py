"""Streaming mode (``HttpServer(streaming=True)``): a request body that no callback has
claimed is bounded in memory.

- A handler that answers at once without taking the body (a 401 to an upload):
  the rest of the body was kept in memory to the last byte, up to ``max_body``
  (a 900 MiB upload: +1.3 GiB RSS, nothing logged).  It is now dropped as it
  comes, and the next request on the connection is answered.
- A handler that says where the body goes only later (an ``async def`` task
  awaiting something first): at most ``STREAM_HOLD_BYTES`` are kept meanwhile
  (reading pauses; the kernel's window holds the rest), and everything reaches
  the callback once it is set.
"""
import asyncio
import hashlib
import os
import socket
import threading
import time

import powpow.aio
from powpow import HttpServer
from powpow.http._session import STREAM_HOLD_BYTES

from ._http import serving
from ._net import rss_bytes

MiB = 1 << 20


def test_an_upload_answered_without_reading_is_dropped_not_kept():
    size = 256 * MiB
    seen = []

    def handler(req, res):
        seen.append(req.path)
        if req.path == "/upload":
            res.send_error(401)  # at once, body unread
        else:
            res.send(b"next")

    with serving(handler, streaming=True, max_body=1 << 30) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        try:
            base = rss_bytes()
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"u" * MiB
            peak = 0
            for i in range(size // MiB):
                s.sendall(block)
                if i % 16 == 0:
                    peak = max(peak, rss_bytes() - base)
            s.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            end = time.monotonic() + 10
            while b"next" not in got and time.monotonic() < end:
                got += s.recv(65536)
            peak = max(peak, rss_bytes() - base)
        finally:
            s.close()
    assert got.startswith(b"HTTP/1.1 401 "), got[:100]
    assert got.endswith(b"next"), got[-100:]
    assert seen == ["/upload", "/next"]
    assert peak < 64 * MiB, "the server kept the unread body: +%d MiB" % (peak // MiB)


def test_an_async_handler_that_claims_its_body_late_gets_it_all_and_little_is_kept_meanwhile():
    body = os.urandom(8 * MiB)
    chunks = []

    async def handler(req, res):
        await asyncio.sleep(0.5)  # the client sends on meanwhile
        done = asyncio.get_running_loop().create_future()
        req.on_body(chunks.append)
        req.on_end(lambda: done.set_result(None))
        await asyncio.wait_for(done, 10)
        data = b"".join(chunks)
        res.send(b"%d %s" % (len(data), hashlib.sha1(data).hexdigest().encode()))

    result = {}

    def client(port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                      % len(body) + body)
            out = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
            result["out"] = out
        finally:
            s.close()

    async def main():
        srv = HttpServer(handler, asyncio.get_running_loop(), streaming=True, max_body=64 * MiB)
        srv.listen(0, "127.0.0.1")
        th = threading.Thread(target=client, args=(srv.port,))
        th.start()
        try:
            while th.is_alive():
                await asyncio.sleep(0.05)
        finally:
            th.join()
            srv.close()

    powpow.aio.run(main())
    assert result["out"].endswith(b"%d %s" % (len(body), hashlib.sha1(body).hexdigest().encode())), \
        result["out"][-200:]
    # what was kept before on_body was set came as its first chunk: the hold, plus one read at most
    assert len(chunks[0]) <= STREAM_HOLD_BYTES + 256 * 1024, len(chunks[0])


def _one_final_answer(port: int, data: bytes, more: bytes = b"") -> bytes:
    """Send ``data`` (then ``more``), read to the server's close (a timeout fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if more:
            try:
                s.sendall(more)
            except OSError:
                pass  # the server may have closed already
        s.settimeout(10)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            out += b
        return out


def test_a_body_that_fails_after_an_early_answer_gets_no_second_answer():
    """The handler answers at once and leaves the body unread; the body then fails (stalls
    past body_timeout, bad chunked framing, chunked past max_body).  The request has had its
    one final response (RFC 9112 §9.3): the connection closes after it.  Was: a second status
    line followed on the same connection (200, then 408 / 400 / 413), which a client or a
    proxy reads as the answer to a request never sent."""
    def handler(req, res):
        res.send(b"early")

    cases = [
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789", b""),   # stalls: 408
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n", b""),  # 400
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"4000\r\n" + b"x" * 0x4000 + b"\r\n"),
    ]
    with serving(handler, streaming=True, body_timeout=0.5, max_body=1000) as srv:
        for data, more in cases:
            t0 = time.monotonic()
            out = _one_final_answer(srv.port, data, more)
            assert out.count(b"HTTP/1.1 ") == 1 and out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"early"), out
            assert time.monotonic() - t0 < 5
        # the server goes on: a new connection is answered
        assert _one_final_answer(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"early")
