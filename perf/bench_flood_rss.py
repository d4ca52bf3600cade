"""Server memory under a pipelining flood from clients that never read (issue 8, item 3).

    python perf/bench_flood_rss.py [CLIENTS] [SECONDS]   (run with the interpreter to measure)

The server (a child process, same interpreter) answers every request with a
2 KB body.  Each client pipelines small GET requests as fast as the kernel
takes them and never reads a byte.  With reading paused while a connection's
answers are queued above high water (and while max_pipeline_depth answers are
pending), the kernel's windows fill and push back on the clients: the server's
RSS must level off, not grow with what the clients send.  Prints RSS growth and
the bytes the clients managed to send, at 1/3, 2/3 and the end of the run.
"""
import os
import select
import socket
import subprocess
import sys
import time

SERVER = r"""
import sys, powpow
BODY = b"x" * 2048
def h(req, res):
    res.send(BODY, headers=[("Content-Type", "application/octet-stream")])
srv = powpow.HttpServer(h, keepalive_timeout=120, write_timeout=120, header_timeout=120)
srv.listen(0, "127.0.0.1")
print(srv.port, flush=True)
srv.run()
"""


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 15.0
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
    try:
        port = int(server.stdout.readline())
        time.sleep(0.5)
        base = rss_kib(server.pid)
        req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 256
        socks = []
        for _ in range(clients):
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(False)
            socks.append(s)
        sent = 0
        start = time.monotonic()
        marks = [start + seconds * k / 3 for k in (1, 2, 3)]
        while marks:
            _, w, _ = select.select([], socks, [], 0.05)
            for s in w:
                try:
                    sent += s.send(req)
                except BlockingIOError:
                    pass
            if time.monotonic() >= marks[0]:
                marks.pop(0)
                grow = rss_kib(server.pid) - base
                print("%s, %d clients, t=%4.1fs: client sent %7.1f MiB, server RSS +%6.1f MiB (%.2f MiB per client)"
                      % (sys.implementation.name, clients, time.monotonic() - start, sent / 2**20,
                         grow / 1024, grow / 1024 / clients), flush=True)
        for s in socks:
            s.close()
    finally:
        server.terminate()
        server.wait(10)
        if server.poll() is None:
            os.kill(server.pid, 9)


if __name__ == "__main__":
    main()
