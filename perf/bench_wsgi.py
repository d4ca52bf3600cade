"""WSGI benchmark (issue 12): a raw WSGI hello app under wrk, powpow and peers side by side.

    python perf/bench_wsgi.py [--duration 5] [--reps 3] [--conns 64] [--only powpow-cpython,granian-wsgi]

Same set-up as perf/bench_http.py: each server pinned to core 0, wrk (1
thread, keep-alive) to core 1, one worker process each.  The app is the
smallest honest WSGI app (``start_response`` + a one-element list, 13-byte
body, Content-Type and Content-Length set by the app).  Rounds are
interleaved: every rep starts each server in turn, warms it for 1 s (PyPy's
JIT), measures, stops it; the figure is the median over reps.

Servers: powpow on CPython (default thread pool, threads=10) and with
``inline=True`` (app on the loop thread), granian ``--interface wsgi``
(1 worker, 1 runtime thread, blocking threads default), gunicorn
``--worker-class gthread --threads 10``; on PyPy powpow (pool and inline) and
socketify's WSGI.  Peers come from perf/.venv-peers (CPython) and
perf/.venv-peers-pypy; missing ones are skipped.  Results print as a
markdown table and are saved to perf/results/wsgi.json.

Two figures per server: requests/s, and requests per CPU-second the server
process tree used during the run (``/proc`` utime+stime).  The second is what
a request costs the server; it does not move when other load on the machine
takes core 0 away, and it does not reward a server for having more threads
to be scheduled (on a shared core the kernel's fair scheduler gives a
process with ten runnable threads a bigger share than one with one).
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _harness  # noqa: E402
from _harness import free_port, tree_cpu, wait_port  # noqa: E402
PEERS = os.path.join(HERE, ".venv-peers", "bin", "python")
PEERS_PYPY = os.path.join(HERE, ".venv-peers-pypy", "bin", "python")
for base in (HERE, "/work/main/perf"):  # worktrees share the main checkout's peer venvs
    if not os.path.exists(PEERS) and os.path.exists(os.path.join(base, ".venv-peers", "bin", "python")):
        PEERS = os.path.join(base, ".venv-peers", "bin", "python")
    if not os.path.exists(PEERS_PYPY) and os.path.exists(os.path.join(base, ".venv-peers-pypy", "bin", "python")):
        PEERS_PYPY = os.path.join(base, ".venv-peers-pypy", "bin", "python")

APP = '''
BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
'''

POWPOW = '''
import sys
sys.path.insert(0, {root!r})
import powpow.wsgi
from wsgi_hello import app
powpow.wsgi.serve(app, "127.0.0.1", int(sys.argv[1]), access_log=False, log_level="warning",
                  inline=sys.argv[2] == "inline")
'''

SOCKETIFY = '''
import sys
from socketify import WSGI
from wsgi_hello import app
WSGI(app).listen(int(sys.argv[1]), lambda config: None).run()
'''


def wrk(url: str, conns: int, duration: int) -> float:
    return _harness.wrk(url, conns, duration).rps


def servers(tmp: str):
    cpy = os.path.join(ROOT, ".venv", "bin", "python")
    pypy = os.path.join(ROOT, ".venv-pypy", "bin", "python")
    runner = os.path.join(tmp, "powpow_wsgi.py")
    out = {}
    if os.path.exists(cpy):
        out["powpow-cpython"] = lambda p: [cpy, runner, str(p), "pool"]
        out["powpow-cpython-inline"] = lambda p: [cpy, runner, str(p), "inline"]
    if os.path.exists(PEERS):
        out["granian-wsgi"] = lambda p: [PEERS, "-m", "granian", "--interface", "wsgi", "--port", str(p),
                                         "--workers", "1", "--runtime-threads", "1", "--log-level", "error",
                                         "--no-ws", "wsgi_hello:app"]
        if os.path.exists(os.path.join(os.path.dirname(PEERS), "gunicorn")):
            out["gunicorn-gthread"] = lambda p: [PEERS, "-m", "gunicorn", "-w", "1", "-k", "gthread",
                                                 "--threads", "10", "-b", "127.0.0.1:%d" % p,
                                                 "--log-level", "error", "wsgi_hello:app"]
    if os.path.exists(pypy):
        out["powpow-pypy"] = lambda p: [pypy, runner, str(p), "pool"]
        out["powpow-pypy-inline"] = lambda p: [pypy, runner, str(p), "inline"]
    if os.path.exists(PEERS_PYPY):
        out["socketify-wsgi-pypy"] = lambda p: [PEERS_PYPY, os.path.join(tmp, "socketify_wsgi.py"), str(p)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--only", default="", help="comma-separated server names")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="powpow-wsgi-bench-")
    with open(os.path.join(tmp, "wsgi_hello.py"), "w") as f:
        f.write(APP)
    with open(os.path.join(tmp, "powpow_wsgi.py"), "w") as f:
        f.write(POWPOW.format(root=ROOT))
    with open(os.path.join(tmp, "socketify_wsgi.py"), "w") as f:
        f.write(SOCKETIFY)
    table = {name: argv for name, argv in servers(tmp).items()
             if not args.only or name in args.only.split(",")}
    runs: dict = {name: [] for name in table}
    per_cpu: dict = {name: [] for name in table}
    env = dict(os.environ, PYTHONPATH=tmp)
    for rep in range(args.reps):
        for name, argv in table.items():
            port = free_port()
            proc = subprocess.Popen(["taskset", "-c", "0"] + argv(port), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, cwd=tmp, env=env)
            try:
                if not wait_port(port, proc):
                    why = proc.stderr.read().decode()[-300:] if proc.poll() is not None else "timeout"
                    print("%-24s did not start: %s" % (name, why))
                    continue
                url = "http://127.0.0.1:%d/" % port
                wrk(url, args.conns, 1)  # warm-up (and PyPy's JIT)
                cpu0 = tree_cpu(proc.pid)
                rps = wrk(url, args.conns, args.duration)
                cpu = tree_cpu(proc.pid) - cpu0
                runs[name].append(rps)
                # requests per CPU-second of the server: what the server costs per request,
                # robust against other load on the machine taking core 0 away from it
                eff = rps * args.duration / cpu if cpu > 0 else 0.0
                per_cpu[name].append(eff)
                print("rep %d  %-24s %8.0f req/s  %8.0f req per CPU-s (%.0f%% of a core)"
                      % (rep + 1, name, rps, eff, 100.0 * cpu / args.duration), flush=True)
            finally:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    results = {name: statistics.median(r) for name, r in runs.items() if r}
    eff = {name: statistics.median(r) for name, r in per_cpu.items() if r}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "wsgi.json"), "w") as f:
        json.dump({"median": results, "runs": runs, "per_cpu_second": per_cpu}, f, indent=1)
    print("\n| server | hello req/s (median of %d) | req per server CPU-second |\n|---|---|---|" % args.reps)
    for name, rps in results.items():
        print("| %s | %.0f | %.0f |" % (name, rps, eff.get(name, 0.0)))
    pairs = [("powpow-cpython", "granian-wsgi"), ("powpow-cpython", "gunicorn-gthread"),
             ("powpow-cpython-inline", "granian-wsgi"), ("powpow-cpython-inline", "gunicorn-gthread"),
             ("powpow-pypy", "socketify-wsgi-pypy"), ("powpow-pypy-inline", "socketify-wsgi-pypy"),
             ("powpow-pypy", "granian-wsgi")]
    for a, b in pairs:
        if results.get(a) and results.get(b):
            print("%s / %s = %.2fx req/s, %.2fx req per CPU-s" % (a, b, results[a] / results[b],
                                                                 eff.get(a, 0) / (eff.get(b) or 1)))

if __name__ == "__main__":
    main()
