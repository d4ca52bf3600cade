"""Request latency when the server's process has CPU-bound Python threads (the GIL), vs a peer.

    python perf/bench_gil_latency.py [--rounds 3] [--threads 0,1,3] [--requests 100]

* http: powpow ``HttpServer`` vs an asyncio ``Protocol`` giving the same fixed answer, each with
  N threads in the server process that only count (a CPU-bound app thread, a background job).
  One keep-alive connection from this process, one request at a time, 10 ms apart; milliseconds
  from the send to the whole answer.
* wsgi: ``powpow.wsgi.Server(threads=8)`` vs wsgiref with a thread per connection, serving
  four clients that read endless generators of 10-byte chunks (the readers are a process of
  their own, pinned to CPU 1; the server to CPU 0) while this process times ``/ping`` on a new
  connection, 15 times.

Rounds alternate powpow and the peer; each line is one run (median, p90, max).  On CPython a
thread that left the GIL for a blocking wait (``epoll_wait``) waits up to the switch interval
(5 ms) for it when the wait ends, so with a busy thread every answer costs about one interval,
whoever the server is.  Every process started here is killed by PID at the end of its run.
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_BURN = r'''
import sys, threading
sys.path.insert(0, sys.argv[1])
def burn():
    x = 0
    while True:
        x += 1
for _ in range(int(sys.argv[2])):
    threading.Thread(target=burn, daemon=True).start()
'''

HTTP = {
    "powpow": _BURN + r'''
import powpow
srv = powpow.HttpServer(lambda req, res: res.send(b"hello"))
srv.listen(0, "127.0.0.1")
print(srv.port, flush=True)
srv.run()
''',
    "asyncio": _BURN + r'''
import asyncio
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
class Hello(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        while b"\r\n\r\n" in self.buf:
            self.buf = self.buf.partition(b"\r\n\r\n")[2]
            self.t.write(ANSWER)
async def main():
    srv = await asyncio.get_running_loop().create_server(Hello, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Future()
asyncio.run(main())
''',
}

_WSGI_APP = r'''
import sys
sys.path.insert(0, sys.argv[1])
def app(environ, start_response):
    if environ["PATH_INFO"] == "/ping":
        start_response("200 OK", [("Content-Length", "4")])
        return [b"pong"]
    start_response("200 OK", [])
    def tiny():
        while True:
            yield b"0123456789"
    return tiny()
'''

WSGI = {
    "powpow": _WSGI_APP + r'''
from powpow.wsgi import Server
srv = Server(app, "127.0.0.1", 0, threads=8, access_log=False).listen()
print(srv.port, flush=True)
srv.run()
''',
    "wsgiref": _WSGI_APP + r'''
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
class Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
srv = make_server("127.0.0.1", 0, app, server_class=Threaded, handler_class=Quiet)
print(srv.server_port, flush=True)
srv.serve_forever()
''',
}

_READERS = r'''
import socket, sys, threading
def read(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /tiny HTTP/1.1\r\nHost: x\r\n\r\n")
    while s.recv(1 << 16):
        pass
for _ in range(4):
    threading.Thread(target=read, args=(int(sys.argv[1]),), daemon=True).start()
sys.stdin.read()
'''


def _read_to(sock, end: bytes) -> None:
    data = b""
    while not data.endswith(end):
        b = sock.recv(65536)
        if not b:
            break
        data += b
    if not data.endswith(end):
        raise RuntimeError("unexpected answer %r" % data[-200:])


def _line(kind: str, what: str, times: list) -> str:
    times = sorted(times)
    return "%-8s %-10s ms: median %6.2f  p90 %6.2f  max %6.2f" % (
        kind, what, statistics.median(times), times[int(len(times) * 0.9) - 1], times[-1])


def run_http(kind: str, threads: int, requests: int) -> str:
    srv = subprocess.Popen([sys.executable, "-c", HTTP[kind], ROOT, str(threads)], stdout=subprocess.PIPE)
    try:
        port = int(srv.stdout.readline())
        time.sleep(0.5)
        times = []
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            for _ in range(requests):
                t0 = time.monotonic()
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                _read_to(c, b"hello")
                times.append((time.monotonic() - t0) * 1000)
                time.sleep(0.01)
    finally:
        srv.kill()
        srv.wait()
        srv.stdout.close()
    return _line(kind, "threads=%d" % threads, times)


def run_wsgi(kind: str) -> str:
    srv = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", WSGI[kind], ROOT], stdout=subprocess.PIPE)
    readers = None
    try:
        port = int(srv.stdout.readline())
        readers = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", _READERS, str(port)],
                                   stdin=subprocess.PIPE)
        time.sleep(1.0)
        times = []
        for _ in range(15):
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                _read_to(c, b"pong")
            times.append((time.monotonic() - t0) * 1000)
            time.sleep(0.05)
    finally:
        for p in (readers, srv):
            if p is not None:
                p.kill()
                p.wait()
        srv.stdout.close()
        if readers is not None:
            readers.stdin.close()
    return _line(kind, "4 streams", times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="0,1,3")
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--only", choices=["http", "wsgi"])
    a = ap.parse_args()
    print("%s %s" % (sys.implementation.name, sys.version.split()[0]))
    for _ in range(a.rounds):
        if a.only != "wsgi":
            for n in (int(x) for x in a.threads.split(",")):
                for kind in HTTP:
                    print("http", run_http(kind, n, a.requests), flush=True)
        if a.only != "http":
            for kind in WSGI:
                print("wsgi", run_wsgi(kind), flush=True)


if __name__ == "__main__":
    main()
