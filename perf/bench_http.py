"""End-to-end HTTP benchmark: wrk against powpow and peers, side by side in one run.

    python perf/bench_http.py [--duration 5] [--reps 3] [--only powpow-pypy,nginx]

Each server is pinned to core 0 and wrk (1 thread) to core 1 (``taskset``).
Workloads: hello world (13-byte body) with 64 keep-alive connections, the
same 16-deep pipelined (perf/pipeline.lua), and a 1 MiB static file (16
connections).  Each figure is the median of ``--reps`` runs of ``--duration``
seconds after a 1 s warm-up.  Peers are used where they can be found or
installed: nginx (1 worker, Debian package), socketify.py, uvicorn (httptools +
uvloop) and granian (ASGI) from a private venv ``perf/.venv-peers`` that this
script creates, and socketify on PyPy from ``perf/.venv-peers-pypy``.  Results are
printed as a markdown table and saved to
``perf/results/http.json``.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _harness  # noqa: E402
from _harness import NGINX_CONF, free_port, wait_port  # noqa: E402
PEERS_VENV = os.path.join(HERE, ".venv-peers")
PEER_PACKAGES = ["uvicorn", "httptools", "uvloop", "socketify", "granian"]



def peers_python():
    py = os.path.join(PEERS_VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable if sys.implementation.name == "cpython" else "python3",
                        "-m", "venv", PEERS_VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q"] + PEER_PACKAGES)
    return py


def pypy_peers_python():
    """socketify for PyPy, in its own venv (never in the project's .venv-pypy)."""
    venv = PEERS_VENV + "-pypy"
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        if not shutil.which("pypy3"):
            return None
        subprocess.run(["pypy3", "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "socketify"])
    ok = subprocess.run([py, "-c", "import socketify"], capture_output=True).returncode == 0
    return py if ok else None


def servers(static_dir: str, tmp: str):
    """name -> (argv builder(port), workload set)."""
    main_py = os.path.join(ROOT, ".venv", "bin", "python")
    pypy = os.path.join(ROOT, ".venv-pypy", "bin", "python")
    hello = os.path.join(HERE, "servers", "powpow_hello.py")
    out = {}
    if os.path.exists(main_py):
        out["powpow-cpython"] = lambda p: [main_py, hello, str(p), "static", static_dir]
    if os.path.exists(pypy):
        out["powpow-pypy"] = lambda p: [pypy, hello, str(p), "static", static_dir]
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx:
        def nginx_cmd(p):
            conf = os.path.join(tmp, "nginx-%d.conf" % p)
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(tmp=tmp, port=p, static=static_dir, tls=""))
            return [nginx, "-c", conf, "-p", tmp]
        out["nginx-1worker"] = nginx_cmd
    py = peers_python()
    asgi_dir = os.path.join(HERE, "servers")
    out["socketify-cpython"] = lambda p: [py, os.path.join(asgi_dir, "socketify_hello.py"), str(p)]
    out["uvicorn-httptools-uvloop"] = lambda p: [py, "-m", "uvicorn", "--app-dir", asgi_dir, "asgi_hello:app",
                                                 "--port", str(p), "--http", "httptools", "--loop", "uvloop",
                                                 "--no-access-log", "--log-level", "error"]
    out["granian-asgi"] = lambda p: ["env", "PYTHONPATH=" + asgi_dir, py, "-m", "granian", "--interface", "asgi",
                                      "--port", str(p), "--workers", "1", "--runtime-threads", "1", "--no-ws",
                                      "--log-level", "error", "asgi_hello:app"]
    pypy_peers = pypy_peers_python()
    if pypy_peers:
        out["socketify-pypy"] = lambda p: [pypy_peers, os.path.join(asgi_dir, "socketify_hello.py"), str(p)]
    return out


def wrk(url: str, conns: int, duration: int, script=None) -> float:
    return _harness.wrk(url, conns, duration, script).rps

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated server names")
    ap.add_argument("--interleave", action="store_true",
                    help="start the chosen servers together and alternate them within each repetition "
                         "(keep-alive and pipelined only): a noisy machine then slows every server alike")
    ap.add_argument("--workers", default="", help="with --interleave: also powpow-cpython with these worker "
                    "counts (comma-separated, e.g. 1,2; not pinned: the workers share the machine)")
    ap.add_argument("--base", default="", help="with --interleave: also powpow-cpython-base / powpow-pypy-base, "
                    "the powpow package of this checkout (e.g. a `git archive` of main with its native "
                    "module copied in) run by the same interpreters: a same-run A/B of a change")
    args = ap.parse_args()
    if args.interleave:
        interleaved(args)
        return
    tmp = tempfile.mkdtemp(prefix="powpow-bench-")
    static_dir = os.path.join(tmp, "static")
    os.mkdir(static_dir)
    with open(os.path.join(static_dir, "1m.bin"), "wb") as f:
        f.write(os.urandom(1 << 20))
    pipeline = os.path.join(HERE, "pipeline.lua")
    results = {}
    for name, argv in servers(static_dir, tmp).items():
        if args.only and name not in args.only.split(","):
            continue
        port = free_port()
        proc = subprocess.Popen(["taskset", "-c", "0"] + argv(port), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, cwd=tmp)
        try:
            if not wait_port(port, proc):
                why = proc.stderr.read().decode()[-300:] if proc.poll() is not None else "timeout"
                print("%-26s did not start: %s" % (name, why))
                continue
            base = "http://127.0.0.1:%d" % port
            static = base + ("/static/1m.bin" if name.startswith("nginx") else "/1m.bin")
            row = {}
            workloads = [("keepalive", base + "/", 64, None), ("pipelined", base + "/", 64, pipeline)]
            if name.startswith(("powpow", "nginx")):
                workloads.append(("static-1MiB", static, 16, None))
            for wl, url, conns, script in workloads:
                wrk(url, conns, 1, script)  # warm-up (and PyPy's JIT)
                runs = [wrk(url, conns, args.duration, script) for _ in range(args.reps)]
                row[wl] = statistics.median(runs)
            results[name] = row
            print("%-26s %s" % (name, "  ".join("%s=%.0f" % kv for kv in row.items())), flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "http.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\n| server | keep-alive req/s | pipelined req/s | 1 MiB static req/s |\n|---|---|---|---|")
    for name, row in results.items():
        print("| %s | %s | %s | %s |" % (name, *("%.0f" % row[k] if k in row else "-"
                                               for k in ("keepalive", "pipelined", "static-1MiB"))))
    shutil.rmtree(tmp, ignore_errors=True)


def interleaved(args) -> None:
    """Every chosen server up at once; per repetition, each server's keep-alive then pipelined run."""
    tmp = tempfile.mkdtemp(prefix="powpow-bench-")
    static_dir = os.path.join(tmp, "static")
    os.mkdir(static_dir)
    pipeline = os.path.join(HERE, "pipeline.lua")
    chosen = {n: a for n, a in servers(static_dir, tmp).items() if not args.only or n in args.only.split(",")}
    main_py = os.path.join(ROOT, ".venv", "bin", "python")
    hello = os.path.join(HERE, "servers", "powpow_hello.py")
    if args.base:
        base = os.path.abspath(args.base)
        for name in [n for n in chosen if n in ("powpow-cpython", "powpow-pypy")]:
            chosen[name + "-base"] = (lambda p, argv=chosen[name]: ["env", "PYTHONPATH=" + base] + argv(p))
    for w in [int(x) for x in args.workers.split(",") if x]:
        chosen["powpow-cpython-workers%d" % w] = (
            lambda p, w=w: ["env", "POWPOW_BENCH_WORKERS=%d" % w, main_py, hello, str(p)])
    procs = {}
    try:
        for name, argv in chosen.items():
            port = free_port()
            pin = [] if "-workers" in name else ["taskset", "-c", "0"]
            proc = subprocess.Popen(pin + argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp)
            if not wait_port(port, proc):
                print("%-26s did not start" % name)
                proc.kill()
                proc.wait()
                continue
            procs[name] = (proc, "http://127.0.0.1:%d/" % port)
        runs: dict = {n: {"keepalive": [], "pipelined": []} for n in procs}
        for _, url in procs.values():  # warm-up (and PyPy's JIT)
            wrk(url, 64, 2, None)
            wrk(url, 64, 2, pipeline)
        for rep in range(args.reps):
            for name, (_, url) in procs.items():
                runs[name]["keepalive"].append(wrk(url, 64, args.duration, None))
                runs[name]["pipelined"].append(wrk(url, 64, args.duration, pipeline))
            print("rep %d: %s" % (rep + 1, "  ".join("%s %.0f/%.0f" % (n, r["keepalive"][-1], r["pipelined"][-1])
                                                     for n, r in runs.items())), flush=True)
    finally:
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| server | keep-alive req/s (median) | pipelined x16 req/s (median) |\n|---|---|---|")
    for name, r in runs.items():
        print("| %s | %.0f | %.0f |" % (name, statistics.median(r["keepalive"]), statistics.median(r["pipelined"])))


if __name__ == "__main__":
    main()
