"""10 000 idle WebSocket connections on one server process: accepted in bulk, memory per connection reported.

The server runs in a child process (its RSS is its own); the test opens raw
sockets in batches (handshake bytes written for a whole batch, then the 101s
read), each batch under the server's ``max_handshakes`` so none is refused.
RLIMIT_NOFILE is raised for both processes.
"""
import base64
import os
import resource
import socket
import subprocess
import sys
import time

from powpow.ws import connect_sync

N = 10_000
BATCH = 500

SERVER = r"""
import os, sys
import powpow
from powpow import Events
srv = powpow.WsServer(on_message=lambda ws, d, t: ws.send(d), ping_interval=None, max_connections=20000,
                      max_handshakes=1024)
srv.listen(0, "127.0.0.1")
loop = srv.loop

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def on_stdin(fd, events):
    line = os.read(fd, 100)
    if not line or line.startswith(b"quit"):
        srv.shutdown(1.0)
        return
    import gc
    gc.collect()
    sys.stdout.write("stats %d %d %d %d\n" % (srv.connection_count, len(srv.handshaking), srv.refused_handshakes,
                                               rss_kib()))
    sys.stdout.flush()

w = loop.register(0, Events.READ, on_stdin)
print("port", srv.port, flush=True)
srv.run()
"""


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))  # root may raise the hard limit
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= N + 500, "RLIMIT_NOFILE too low for 10k sockets"


def stats(proc):
    proc.stdin.write(b"stats\n")
    proc.stdin.flush()
    line = proc.stdout.readline().split()
    assert line and line[0] == b"stats", line
    return [int(x) for x in line[1:]]  # open websockets, handshakes in flight, refused, rss KiB


def test_10k_idle_websockets():
    raise_nofile(N + 1000)
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    socks = []
    try:
        port = int(proc.stdout.readline().split()[1])
        _, _, _, rss0 = stats(proc)
        t0 = time.monotonic()
        ext = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        for _ in range(N // BATCH):
            batch = []
            for _ in range(BATCH):
                s = socket.socket()
                s.settimeout(20)
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET /idle HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) +
                          b"\r\nSec-WebSocket-Version: 13\r\n" + ext + b"\r\n")
                batch.append(s)
            for s in batch:
                head = b""
                while b"\r\n\r\n" not in head:
                    b = s.recv(4096)
                    assert b, "closed during the handshake"
                    head += b
                assert head.startswith(b"HTTP/1.1 101 "), head[:100]
            socks.extend(batch)
        opened = time.monotonic() - t0
        count, handshaking, refused, rss1 = stats(proc)
        assert (count, handshaking, refused) == (N, 0, 0)
        per_conn = (rss1 - rss0) * 1024 / N
        print("\n10k idle WebSockets (%s): opened in %.1f s; server RSS %d -> %d KiB: %.0f bytes per connection "
              "(user space; kernel socket buffers not included)"
              % (sys.implementation.name, opened, rss0, rss1, per_conn))
        assert per_conn < (64 if sys.implementation.name == "pypy" else 32) * 1024, per_conn
        # the server still answers at once with 10k idle sockets open
        c = connect_sync("ws://127.0.0.1:%d/" % port)
        t1 = time.monotonic()
        c.send("ping")
        assert c.recv(timeout=5) == "ping"
        assert time.monotonic() - t1 < 1.0
        c.close()
        # every socket goes away: the server forgets them all
        for s in socks:
            s.close()
        socks = []
        end = time.monotonic() + 20
        t2 = time.monotonic()
        while stats(proc)[0] != 0:
            assert time.monotonic() < end, "server still counts connections"
            time.sleep(0.1)  # the server closes them as it reads the EOFs; there is no event to wait on here
        print("all closed on the server %.1f s after the last close" % (time.monotonic() - t2))
    finally:
        for s in socks:
            s.close()
        if proc.poll() is None:
            proc.stdin.write(b"quit\n")
            proc.stdin.flush()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    assert proc.returncode == 0
