"""Memory per idle WebSocket connection on the server (Python heap, traced), with and without compression.

Usage: python perf/ws_memory.py [N]   (default 2000 connections; CPython: tracemalloc)

Clients are raw sockets in this process that complete the handshake (with or
without a permessage-deflate offer) and optionally send one compressible
message; only allocations made by powpow's own files are counted, so the
figure is the server's cost per connection (kernel socket buffers excluded).
"""
import base64
import os
import socket
import sys
import threading
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import powpow  # noqa: E402
from powpow.ws.frames import OP_TEXT, build_frame  # noqa: E402


def measure(n: int, offer_deflate: bool, send_one: bool) -> float:
    loop = powpow.Loop()
    srv = powpow.WsServer(on_message=lambda ws, d, t: None, loop=loop, ping_interval=None).listen(0, "127.0.0.1")
    th = threading.Thread(target=loop.run, daemon=True)
    th.start()
    ext = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if offer_deflate else b""
    socks = []
    try:
        time.sleep(0.1)
        tracemalloc.start()
        base = tracemalloc.take_snapshot()
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", srv.port))
            key = base64.b64encode(os.urandom(16))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + ext + b"\r\n")
            s.recv(4096)
            if send_one:
                payload = b"hello powpow " * 50
                s.sendall(build_frame(OP_TEXT, payload, mask=b"abcd") if not offer_deflate else
                          build_frame(OP_TEXT, _deflated(payload), rsv1=True, mask=b"abcd"))
            socks.append(s)
        deadline = time.monotonic() + 10
        while srv.connection_count < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        snap = tracemalloc.take_snapshot()
        filt = [tracemalloc.Filter(True, "*powpow*")]
        diff = snap.filter_traces(filt).compare_to(base.filter_traces(filt), "filename")
        total = sum(d.size_diff for d in diff)
        tracemalloc.stop()
        return total / n
    finally:
        for s in socks:
            s.close()
        loop.post(lambda: srv.shutdown(0.5))
        th.join(5)
        srv.close()
        loop.close()


def _deflated(data: bytes) -> bytes:
    import zlib
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for offer, one, label in ((False, False, "idle, no compression"), (True, False, "idle, deflate negotiated"),
                              (True, True, "after one compressed message (inflate context kept)"),
                              (False, True, "after one plain message")):
        print("%-55s %8.0f bytes/connection" % (label, measure(n, offer, one)))
