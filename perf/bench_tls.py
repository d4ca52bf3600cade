"""HTTPS benchmark: wrk over TLS 1.3 against powpow (CPython, PyPy), nginx, uvicorn and socketify, interleaved.

    python perf/bench_tls.py [--duration 3] [--reps 5] [--only powpow-pypy,nginx-1worker]
                             [--workloads keepalive,new-conn,static-1MiB] [--idle N] [--warmup 3]

One ECDSA P-256 certificate (made here with the openssl command) for every
server, TLS 1.3 negotiated by all (nginx is limited to it).  Every server is
started once and stays up; each repetition then runs every workload against
every server in turn (interleaved, so that the shared machine's load swings
hit all of them alike).  Servers are pinned to core 0, wrk (1 thread) to core 1
(``taskset``).  Workloads: keep-alive hello (64 connections); a new TLS
connection per request (``Connection: close``: wrk reconnects, one handshake per
request, 16 connections -- wrk keeps the TLS session across reconnects, so these
are TLS 1.3 PSK resumptions with (EC)DHE, on every server alike; the count is
printed); full handshakes, one connection at a time (``openssl s_time -new -www /``:
a C client on OpenSSL that never resumes, so each connection costs the server an
ECDSA P-256 signature; one connection at a time, its rate is latency-bound and
depends on how each server closes (read the server CPU per connection); a
1 MiB static file (16 connections; powpow and nginx only).

Besides req/s, the server's own CPU time per request (user+sys from /proc,
microseconds) is reported: on a 2-core machine the client is often the
bottleneck, and CPU per request is what the server adds.  ``--idle N`` measures
the server's RSS per idle TLS keep-alive connection (N clients that each made
one request).  Medians of ``--reps`` runs after a warm-up (``--warmup`` seconds
per server and workload, PyPy's JIT included); the markdown tables are printed
and the raw figures saved to ``perf/results/tls.json``.

Peers come from ``perf/.venv-peers`` (CPython: uvicorn with httptools/uvloop,
socketify) and ``perf/.venv-peers-pypy`` (socketify), as for perf/bench_http.py.
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
sys.path.insert(0, HERE)

import _harness  # noqa: E402
from _harness import NGINX_CONF, TLS_LINES, free_port, tree_cpu, wait_port  # noqa: E402


WORKLOADS = ("keepalive", "new-conn", "full-handshake", "static-1MiB")


def make_cert(tmp: str):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def _powpow_argv(py, hello, cert, key, static_dir):
    return lambda p: [py, hello, str(p), cert, key, "static", static_dir]


def servers(static_dir: str, tmp: str, cert: str, key: str):
    """name -> (argv(port), serves static files)."""
    sdir = os.path.join(HERE, "servers")
    hello = os.path.join(sdir, "powpow_tls_hello.py")
    out = {}
    for name, venv in (("powpow-cpython", ".venv"), ("powpow-pypy", ".venv-pypy")):
        py = os.path.join(ROOT, venv, "bin", "python")
        if os.path.exists(py):
            out[name] = (_powpow_argv(py, hello, cert, key, static_dir), True)
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx:
        def nginx_cmd(p):
            conf = os.path.join(tmp, "nginx-%d.conf" % p)
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(tmp=tmp, port=p, static=static_dir, tls=TLS_LINES.format(cert=cert, key=key)))
            return [nginx, "-c", conf, "-p", tmp]
        out["nginx-1worker"] = (nginx_cmd, True)
    peers = os.path.join(HERE, ".venv-peers", "bin", "python")
    if os.path.exists(peers):
        out["uvicorn-cpython"] = (lambda p: [peers, "-m", "uvicorn", "--app-dir", sdir, "asgi_hello:app",
                                             "--port", str(p), "--http", "httptools", "--loop", "uvloop",
                                             "--no-access-log", "--log-level", "error",
                                             "--ssl-certfile", cert, "--ssl-keyfile", key], False)
        out["socketify-cpython"] = (lambda p: [peers, os.path.join(sdir, "socketify_tls_hello.py"), str(p),
                                               cert, key], False)
    pypy_peers = os.path.join(HERE, ".venv-peers-pypy", "bin", "python")
    if os.path.exists(pypy_peers):
        out["socketify-pypy"] = (lambda p: [pypy_peers, os.path.join(sdir, "socketify_tls_hello.py"), str(p),
                                            cert, key], False)
    return out


def wrk(url: str, conns: int, duration: int, headers=(), pid: int = 0):
    """(req/s, server CPU microseconds per request) of one wrk run (socket errors allowed: new-conn runs)."""
    r = _harness.wrk(url, conns, duration, headers=headers, pid=pid, socket_errors_fail=False)
    return r.rps, r.cpu_us_per_req


def s_time(port: int, duration: int, pid: int = 0):
    """(connections/s, server CPU microseconds per connection): sequential full handshakes."""
    cmd = ["taskset", "-c", "1", "openssl", "s_time", "-connect", "127.0.0.1:%d" % port, "-new", "-www", "/",
           "-time", str(duration)]
    c0 = tree_cpu(pid) if pid else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    c1 = tree_cpu(pid) if pid else 0.0
    m = re.search(r"(\d+) connections in ([\d.]+) real seconds", out)
    if not m or not int(m.group(1)):
        print("    s_time: %s" % out.strip()[-200:], file=sys.stderr)
        return 0.0, 0.0
    n = int(m.group(1))
    return n / float(m.group(2)), (c1 - c0) * 1e6 / n


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


def resumed_share(port: int) -> str:
    """How wrk's reconnects look to a server: s_client with a saved session, as wrk does."""
    sess = tempfile.mktemp(prefix="powpow-tls-sess-")
    req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    base = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-ign_eof"]
    try:
        subprocess.run(base + ["-sess_out", sess], input=req, capture_output=True, timeout=10)
        out = subprocess.run(base + ["-sess_in", sess], input=req, capture_output=True, timeout=10).stdout
    finally:
        if os.path.exists(sess):
            os.unlink(sess)
    return "resumed" if b"Reused, TLSv1.3" in out else "full"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3, help="seconds of wrk per server and workload before measuring")
    ap.add_argument("--only", default="", help="comma-separated server names")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
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
    workloads = [w for w in args.workloads.split(",") if w]
    running = {}
    try:
        for name, (argv, static) in servers(static_dir, tmp, cert, key).items():
            if args.only and name not in args.only.split(","):
                continue
            port = free_port()
            proc = subprocess.Popen(["taskset", "-c", "0"] + argv(port), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, cwd=tmp)
            if not wait_port(port, proc, 30.0):
                why = proc.stderr.read().decode()[-300:] if proc.poll() is not None else "timeout"
                print("%-18s did not start: %s" % (name, why))
                proc.kill()
                proc.wait()
                continue
            running[name] = (proc, port, static)
        print("TLS session on reconnect (as wrk does it): %s" % ", ".join(
            "%s %s" % (n, resumed_share(port)) for n, (_, port, _) in running.items()), flush=True)

        def plan(name):
            proc, port, static = running[name]
            base = "https://127.0.0.1:%d" % port
            st = base + ("/static/1m.bin" if name.startswith("nginx") else "/1m.bin")
            for wl, url, conns, headers in (("keepalive", base + "/", 64, ()),
                                            ("new-conn", base + "/", 16, ("Connection: close",)),
                                            ("full-handshake", port, 1, ()),
                                            ("static-1MiB", st, 16, ())):
                if wl in workloads and (static or wl != "static-1MiB"):
                    yield wl, url, conns, headers, proc.pid

        for name in running:  # warm-up (PyPy's JIT)
            for wl, url, conns, headers, _pid in plan(name):
                if wl == "full-handshake":
                    s_time(url, args.warmup)
                else:
                    wrk(url, conns, args.warmup, headers)
        raw = {name: {} for name in running}
        for rep in range(args.reps):
            for wl in workloads:
                for name in running:
                    for w, url, conns, headers, pid in plan(name):
                        if w == wl:
                            run = (s_time(url, args.duration, pid) if wl == "full-handshake" else
                                   wrk(url, conns, args.duration, headers, pid))
                            raw[name].setdefault(wl, []).append(run)
            print("rep %d: %s" % (rep + 1, "  ".join("%s %s=%.0f" % (n, wl, r[wl][-1][0])
                                                       for n, r in raw.items() for wl in r)), flush=True)
        results = {}
        for name, r in raw.items():
            row = {}
            for wl, runs in r.items():
                runs = [x for x in runs if x[0] > 0]  # a client that failed against this server
                if not runs:
                    continue
                row[wl] = statistics.median(x[0] for x in runs)
                row[wl + " cpu-us/req"] = statistics.median(x[1] for x in runs)
                row[wl + " runs"] = [round(x[0]) for x in runs]
            results[name] = row
        if args.idle:
            for name, (proc, port, _static) in running.items():
                results[name]["idle-KiB-per-conn"] = idle_rss(port, proc.pid, args.idle)
    finally:
        for proc, _, _ in running.values():
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "tls.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\n| server | " + " | ".join("%s req/s (server CPU us/req)" % w for w in workloads) + " | idle KiB/conn |")
    print("|---|" + "---|" * (len(workloads) + 1))
    for name, row in results.items():
        cells = ["%.0f (%.0f)" % (row[w], row[w + " cpu-us/req"]) if w in row else "-" for w in workloads]
        idle = row.get("idle-KiB-per-conn")
        print("| %s | %s | %s |" % (name, " | ".join(cells), "%.1f" % idle if idle is not None else "-"))
    print()
    for ref in ("nginx-1worker", "uvicorn-cpython", "socketify-cpython", "socketify-pypy"):
        ref_row = results.get(ref)
        if not ref_row:
            continue
        for name, row in results.items():
            if name.startswith("powpow"):
                parts = ["%s %.2fx req/s, %.2fx CPU/req" % (w, row[w] / ref_row[w],
                                                           row[w + " cpu-us/req"] / ref_row[w + " cpu-us/req"])
                         for w in workloads if ref_row.get(w) and w in row and ref_row.get(w + " cpu-us/req")]
                print("%s / %s: %s" % (name, ref, "; ".join(parts)))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
