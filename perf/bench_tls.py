"""HTTPS benchmark: wrk over TLS 1.3 against powpow (CPython, PyPy) and nginx, side by side.

    python perf/bench_tls.py [--duration 5] [--reps 3] [--only powpow-pypy,nginx-1worker] [--idle N]

One ECDSA P-256 certificate (made here with the openssl command) for every
server; TLS 1.3 only on nginx (powpow negotiates TLS 1.3 with wrk's OpenSSL).
Each server is pinned to core 0 and wrk (1 thread) to core 1 (``taskset``).
Workloads: keep-alive hello (64 connections); new TLS connection per request
(``Connection: close``: wrk reconnects, one full handshake per request; 16
connections); a 1 MiB static file (16 connections).  ``--idle N`` also
measures the server's RSS per idle TLS keep-alive connection (N clients that
each made one request).  Figures are medians of ``--reps`` runs after a 1 s
warm-up, printed as a markdown table and saved to ``perf/results/tls.json``.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

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
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        location = / {{ default_type text/plain; return 200 "Hello, World!"; }}
        location /static/ {{ alias {static}/; }}
    }}
}}
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, proc, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def make_cert(tmp: str):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def _argv(py, hello, cert, key, static_dir):
    return lambda p: [py, hello, str(p), cert, key, "static", static_dir]


def servers(static_dir: str, tmp: str, cert: str, key: str):
    hello = os.path.join(HERE, "servers", "powpow_tls_hello.py")
    out = {}
    for name, venv in (("powpow-cpython", ".venv"), ("powpow-pypy", ".venv-pypy")):
        py = os.path.join(ROOT, venv, "bin", "python")
        if os.path.exists(py):
            out[name] = _argv(py, hello, cert, key, static_dir)
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx:
        def nginx_cmd(p):
            conf = os.path.join(tmp, "nginx-%d.conf" % p)
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(tmp=tmp, port=p, static=static_dir, cert=cert, key=key))
            return [nginx, "-c", conf, "-p", tmp]
        out["nginx-1worker"] = nginx_cmd
    return out


def wrk(url: str, conns: int, duration: int, headers=()) -> float:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % duration]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        print("    wrk reported: %s" % errors.group(0), file=sys.stderr)
        return 0.0
    return float(m.group(1)) if m else 0.0


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def idle_rss(port: int, pid: int, n: int) -> float:
    """KiB of server RSS per idle TLS keep-alive connection (each made one request)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"

    def one():
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
        s.sendall(req)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        return s
    for s in [one() for _ in range(100)]:  # warm-up: pools, code, the JIT
        s.close()
    time.sleep(0.5)
    before = rss_kib(pid)
    conns = [one() for _ in range(n)]
    time.sleep(1.0)
    after = rss_kib(pid)
    for s in conns:
        s.close()
    return (after - before) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated server names")
    ap.add_argument("--idle", type=int, default=0, help="also measure RSS per idle TLS connection with N clients")
    args = ap.parse_args()
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="powpow-bench-tls-")
    static_dir = os.path.join(tmp, "static")
    os.mkdir(static_dir)
    with open(os.path.join(static_dir, "1m.bin"), "wb") as f:
        f.write(os.urandom(1 << 20))
    cert, key = make_cert(tmp)
    results = {}
    for name, argv in servers(static_dir, tmp, cert, key).items():
        if args.only and name not in args.only.split(","):
            continue
        port = free_port()
        proc = subprocess.Popen(["taskset", "-c", "0"] + argv(port), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, cwd=tmp)
        try:
            if not wait_port(port, proc):
                why = proc.stderr.read().decode()[-300:] if proc.poll() is not None else "timeout"
                print("%-16s did not start: %s" % (name, why))
                continue
            base = "https://127.0.0.1:%d" % port
            static = base + ("/static/1m.bin" if name.startswith("nginx") else "/1m.bin")
            row = {}
            for wl, url, conns, headers in (("keepalive", base + "/", 64, ()),
                                            ("new-conn", base + "/", 16, ("Connection: close",)),
                                            ("static-1MiB", static, 16, ())):
                wrk(url, conns, 1, headers)  # warm-up (and PyPy's JIT)
                row[wl] = statistics.median([wrk(url, conns, args.duration, headers) for _ in range(args.reps)])
            if args.idle:
                row["idle-KiB-per-conn"] = idle_rss(port, proc.pid, args.idle)
            results[name] = row
            print("%-16s %s" % (name, "  ".join("%s=%.1f" % kv for kv in row.items())), flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "tls.json"), "w") as f:
        json.dump(results, f, indent=1)
    keys = ("keepalive", "new-conn", "static-1MiB", "idle-KiB-per-conn")
    print("\n| server | keep-alive req/s | new TLS conn req/s | 1 MiB static req/s | idle KiB/conn |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        print("| %s | %s |" % (name, " | ".join("%.1f" % row[k] if k in row else "-" for k in keys)))
    ng = results.get("nginx-1worker")
    if ng:
        for name, row in results.items():
            if name.startswith("powpow"):
                print("%s / nginx: %s" % (name, "  ".join("%s %.2fx" % (k, row[k] / ng[k]) for k in keys[:3]
                                                           if ng.get(k))))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
