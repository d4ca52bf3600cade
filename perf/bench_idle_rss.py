"""RSS per idle keep-alive connection: 10 000 clients that each made one request and stay open.

    python perf/bench_idle_rss.py [N]      (run it with the interpreter to measure)

The server runs in a child process (same interpreter); this process opens N
connections, sends one request on each, reads the answer, and keeps them idle.
RSS of the server is read from /proc before and after; the difference / N is
the cost of one idle connection (connection object, parser, socket object).
"""
import os
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 1000)), hard))
    server = subprocess.Popen([sys.executable, "-c", """
import resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sys.path.insert(0, %r)
from servers.powpow_hello import main
sys.argv = ["x", "0"]
main()
""" % (HERE,)], stdout=subprocess.PIPE)
    line = server.stdout.readline().split()
    assert line[0] == b"ready", line
    port = int(line[1])
    conns = []
    try:
        warm = []
        for _ in range(100):  # warm up: the first connections pay for pools and code
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(4096)
            warm.append(s)
        for s in warm:
            s.close()
        time.sleep(0.5)
        before = rss_kib(server.pid)
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(s)
        for s in conns:
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(1.0)
        after = rss_kib(server.pid)
        print("%s: %d idle keep-alive connections: RSS %d -> %d KiB: %.2f KiB per connection"
              % (sys.implementation.name, n, before, after, (after - before) / n))
    finally:
        for s in conns:
            s.close()
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
