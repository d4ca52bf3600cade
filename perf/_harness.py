"""Shared pieces of the end-to-end benchmarks (perf/bench_*.py).

Free ports, waiting for a server to listen (or answer 200), CPU seconds of a
server's process tree from /proc, and one wrk run parsed into a ``WrkRun``.
wrk is pinned to CPU 1 (servers go on CPU 0), one thread.
"""
import os
import re
import socket
import subprocess
import sys
import time
from typing import NamedTuple, Optional, Sequence

_TICK = os.sysconf("SC_CLK_TCK")

# One nginx worker as a peer: hello at / and static files under /static/.
# format(): tmp (its prefix, logs and temp paths), port, static (a folder), tls
# ("" for plain HTTP, or TLS_LINES formatted with cert and key).
NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    sendfile on;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port}{tls};
        location = / {{ default_type text/plain; return 200 "Hello, World!"; }}
        location /static/ {{ alias {static}/; }}
    }}
}}
"""
TLS_LINES = " ssl;\n        ssl_certificate {cert};\n        ssl_certificate_key {key};\n        ssl_protocols TLSv1.3"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, proc, timeout: float = 20.0, path: Optional[str] = None) -> bool:
    """True once 127.0.0.1:``port`` accepts (and, with ``path``, answers ``GET path`` with 200);
    False if ``proc`` exits first or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if path is None:
                    return True
                s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and all its descendants, all threads.

    On a loaded machine a server's share of core 0 depends on its neighbours
    (and a multi-threaded server gets more of it), so besides req/s the
    benchmarks report the CPU cost of a request, whatever else runs."""
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    total = 0
    todo = [pid]
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        if p in stats:
            total += stats[p][1]
        todo.extend(c for c, (pp, _) in stats.items() if pp == p)
    return total / _TICK


class WrkRun(NamedTuple):
    rps: float  # 0.0 when wrk saw errors (errors are not throughput)
    requests: int
    cpu_s: float  # server process tree CPU seconds during the run (0.0 without a pid)
    error: str  # "" or what wrk reported

    @property
    def cpu_us_per_req(self) -> float:
        return self.cpu_s * 1e6 / self.requests if self.requests and self.cpu_s else 0.0

    @property
    def req_per_cpu_s(self) -> float:
        return self.requests / self.cpu_s if self.requests and self.cpu_s else 0.0


def wrk(url: str, conns: int, duration: int, script: Optional[str] = None, headers: Sequence[str] = (),
        pid: int = 0, socket_errors_fail: bool = True) -> WrkRun:
    """One ``wrk -t1`` run on CPU 1.  Non-2xx/3xx answers always count as failure;
    socket errors too unless ``socket_errors_fail`` is False (new-connection TLS runs)."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % duration]
    if script:
        cmd += ["-s", script]
    for h in headers:
        cmd += ["-H", h]
    cpu0 = tree_cpu(pid) if pid else 0.0
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 60).stdout
    cpu = tree_cpu(pid) - cpu0 if pid else 0.0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    pattern = r"Non-2xx or 3xx responses: (\d+)" + (r"|Socket errors: .*" if socket_errors_fail else "")
    bad = re.search(pattern, out)
    if bad or not m or not n:
        why = bad.group(0) if bad else out.strip()[-200:]
        print("    wrk reported: %s" % why, file=sys.stderr)
        return WrkRun(0.0, 0, cpu, why or "no output")
    return WrkRun(float(m.group(1)), int(n.group(1)), cpu, "")
