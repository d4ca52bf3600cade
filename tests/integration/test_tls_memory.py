"""Memory of a TLS server while data streams through it, in a real server process
(its RSS read from /proc), on whichever interpreter runs the tests.

On PyPy the ``ssl`` module copied every ``bytes``/``memoryview`` handed to
``MemoryBIO.write`` and ``SSLObject.write`` into memory that only a major collection
frees, and the TLS path makes too little garbage to start one: the server's RSS grew
by what it received, about 1 MB per MB (found by review: eight 200 MB uploads took a
server to 1.7 GB), and downloads left it ~450 MB higher.  ``TlsTransport`` lends PyPy
a ``bytearray`` instead (``_LEND`` in powpow/net/tls.py).

What is asserted is growth after a warm-up, never an absolute size: the heap a PyPy
server settles at depends on the machine (its nursery is sized from the CPU's cache;
one CI machine settled ~470 MiB after the first download, another ~150).  Without
the fix every 300 MB moved adds ~300 MiB, whatever the machine."""
import os
import socket
import subprocess
import sys
import time

SERVER = r"""
import sys
import powpow
from powpow.net.tls import server_context

cert, key, mode = sys.argv[1:4]
loop = powpow.Loop()
blob = b"d" * (1 << 20)

def on_data(conn, data):
    if mode == "download" and bytes(data[:4]) == b"GET ":
        conn.context = 0
        send_more(conn)

def send_more(conn):
    while conn.context is not None and conn.context < 300:
        conn.context += 1
        if not conn.write(blob):
            break  # above high water: on_drain brings us back
    if conn.context is not None and conn.context >= 300:
        conn.context = None
        conn.close_after_drain()

def on_accept(conn):
    conn.on_drain = send_more

srv = powpow.TcpServer(loop, on_accept=on_accept, on_data=on_data,
                       ssl=server_context(cert, key, alpn=None)).listen(0, "127.0.0.1")
print(srv.port, flush=True)
loop.run()
"""


def _rss_mib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def _serve(certs, mode):
    p = subprocess.Popen([sys.executable, "-c", SERVER, certs.cert, certs.key, mode], stdout=subprocess.PIPE)
    return p, int(p.stdout.readline())


def _stop(p):
    p.kill()
    p.wait()


def test_receiving_300_mb_over_tls_keeps_the_server_flat(certs):
    p, port = _serve(certs, "upload")
    try:
        ctx = certs.client_ctx()
        chunk = os.urandom(1 << 20)
        # a first 350 MB: the heap, the JIT and the pools reach their size (the GC's
        # threshold too: on some machines the heap still grows ~130 MiB past 50 MB)
        for i, rounds in enumerate((50, 300, 300)):
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                                 server_hostname="localhost") as s:
                for _ in range(rounds):
                    s.sendall(chunk)
            time.sleep(0.3)
            if i == 1:
                base = _rss_mib(p.pid)
        grown = _rss_mib(p.pid) - base
        assert grown < 100, "server RSS grew %d MiB while receiving 300 MB over TLS" % grown
    finally:
        _stop(p)


def test_sending_300_mb_over_tls_keeps_the_server_flat(certs):
    p, port = _serve(certs, "download")
    try:
        ctx = certs.client_ctx()
        sizes = []
        for _ in range(2):
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                                 server_hostname="localhost") as s:
                s.sendall(b"GET ")
                got = 0
                while True:
                    b = s.recv(1 << 20)
                    if not b:
                        break
                    got += len(b)
            assert got == 300 << 20, got
            time.sleep(0.3)
            sizes.append(_rss_mib(p.pid))
        # the second 300 MB adds nothing to what the first left (it added ~350 MiB)
        assert sizes[1] - sizes[0] < 60, sizes
    finally:
        _stop(p)


def test_closed_tls_connections_nudge_pypys_collector(certs, monkeypatch):
    """On PyPy a closed TLS connection's OpenSSL memory (its SSL object and memory BIOs, ~190
    KiB after a large download) is freed by finalizers only, which PyPy's collector does not
    count: +600 MB over 4,000 connections, measured, where CPython stays flat.  Every 16 closed
    connections run one incremental step of the major collection (``gc.collect_step``, set on
    PyPy only).  The step is swapped for a counter here, so the test runs on both."""
    from powpow.net import tls as tls_mod

    from ._http import serving

    steps = []
    monkeypatch.setattr(tls_mod, "_GC_STEP", lambda: steps.append(1))
    monkeypatch.setattr(tls_mod, "_closed_since_nudge", [0])
    if sys.implementation.name == "pypy":
        import gc
        assert getattr(gc, "collect_step", None) is not None  # what the module uses there
    with serving(lambda req, res: res.send(b"hi"), ssl=certs.server_ctx()) as srv:
        for _ in range(32):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            with certs.client_ctx().wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while t.recv(4096):
                    pass
        end = time.monotonic() + 5
        while len(steps) < 2 and time.monotonic() < end:
            time.sleep(0.01)
    assert len(steps) == 2, steps
