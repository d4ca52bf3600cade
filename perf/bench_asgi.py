"""ASGI benchmark (issue 12): wrk against powpow.asgi and its peers, side by side in one run.

    python perf/bench_asgi.py [--duration 5] [--reps 3] [--only powpow-cpython,uvicorn] [--apps hello,fastapi]

Same set-up as bench_http.py: each server is pinned to core 0 (``taskset``),
wrk (1 thread, 64 keep-alive connections) to core 1; one worker each, access
logs off.  Each figure is the median of ``--reps`` runs of ``--duration``
seconds after a 1 s warm-up (2 s for PyPy's JIT).  The servers of one
workload run interleaved, rep by rep (A B C A B C ...), so a noisy moment on
this machine hits all of them alike.

Applications (perf/servers/): ``hello`` -- a raw ASGI hello world (no
framework), ``fastapi`` -- a FastAPI JSON endpoint (``GET /json`` ->
``{"message": "Hello, World!"}``).

Servers: powpow.asgi on CPython and on PyPy (the project's .venv and
.venv-pypy), uvicorn (httptools + uvloop) and granian (ASGI, 1 worker, 1
runtime thread) from the CPython peers venv, socketify's ASGI on PyPy from
the PyPy peers venv (``POWPOW_PEERS_VENV`` / ``POWPOW_PEERS_VENV_PYPY``
override where they are; by default perf/.venv-peers[-pypy], created with
pip when missing, as bench_http.py does).  FastAPI is pip-installed into
the peers venvs when missing.

``--wsgi``: the WSGI counterpart lives in ``bench_wsgi.py``; this flag only
runs it (so that one command measures both).  Results: a markdown table and
perf/results/asgi.json.
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
from _harness import free_port, wait_port  # noqa: E402
SERVERS = os.path.join(HERE, "servers")
PEERS_VENV = os.environ.get("POWPOW_PEERS_VENV", os.path.join(HERE, ".venv-peers"))
PEERS_VENV_PYPY = os.environ.get("POWPOW_PEERS_VENV_PYPY", PEERS_VENV + "-pypy")

APPS = {
    # name: (module:attr, URL path, expected body prefix)
    "hello": ("asgi_hello:app", "/", b"Hello, World!"),
    "fastapi": ("asgi_fastapi:app", "/json", b'{"message":"Hello, World!"}'),
}


def _venv_python(venv: str, interp: str, packages) -> str:
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        if not shutil.which(interp):
            return ""
        subprocess.run([interp, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q"] + list(packages))
    return py


def _has(py: str, module: str) -> bool:
    return bool(py) and subprocess.run([py, "-c", "import " + module], capture_output=True).returncode == 0


def _ensure(py: str, module: str, package: str) -> bool:
    if _has(py, module):
        return True
    subprocess.run([py, "-m", "pip", "install", "-q", package], capture_output=True)
    return _has(py, module)


def servers(app_name: str):
    """name -> argv builder(port) for one application."""
    spec = APPS[app_name][0]
    out = {}
    needs_fastapi = app_name == "fastapi"
    main_py = os.path.join(ROOT, ".venv", "bin", "python")
    pypy = os.path.join(ROOT, ".venv-pypy", "bin", "python")
    common = ["--app-dir", SERVERS, "--no-access-log", "--log-level", "warning", "--lifespan", "off"]
    def powpow_cmd(py):
        return lambda p: [py, "-m", "powpow", "asgi", spec, "--port", str(p)] + common

    for name, py in (("powpow-cpython", main_py), ("powpow-pypy", pypy)):
        if os.path.exists(py) and (not needs_fastapi or _has(py, "fastapi")):
            out[name] = powpow_cmd(py)
    peers = _venv_python(PEERS_VENV, "python3", ["uvicorn", "httptools", "uvloop", "granian", "socketify"])
    if peers and (not needs_fastapi or _ensure(peers, "fastapi", "fastapi")):
        out["uvicorn-httptools-uvloop"] = lambda p: [
            peers, "-m", "uvicorn", "--app-dir", SERVERS, spec, "--port", str(p), "--http", "httptools",
            "--loop", "uvloop", "--no-access-log", "--log-level", "error", "--lifespan", "off"]
        out["granian-asgi"] = lambda p: [
            "env", "PYTHONPATH=" + SERVERS, peers, "-m", "granian", "--interface", "asgi", "--port", str(p),
            "--workers", "1", "--runtime-threads", "1", "--no-ws", "--log-level", "error", spec]
    pypy_peers = _venv_python(PEERS_VENV_PYPY, "pypy3", ["socketify"])
    if pypy_peers and _has(pypy_peers, "socketify") and (not needs_fastapi or _ensure(pypy_peers, "fastapi",
                                                                                        "fastapi")):
        out["socketify-asgi-pypy"] = lambda p: [pypy_peers, os.path.join(SERVERS, "socketify_asgi.py"),
                                                str(p), spec]
    return out


def wait_ready(port: int, proc, path: str, timeout: float = 30.0) -> bool:
    return wait_port(port, proc, timeout, path)


def wrk(url: str, conns: int, duration: int, pid: int = 0):
    """(req/s, requests per CPU-second of the server process tree)."""
    r = _harness.wrk(url, conns, duration, pid=pid)
    return r.rps, r.req_per_cpu_s


def bench_app(app_name: str, args) -> dict:
    path = APPS[app_name][1]
    procs = {}
    tmp = tempfile.mkdtemp(prefix="powpow-asgi-bench-")
    try:
        for name, argv in servers(app_name).items():
            if args.only and name not in args.only.split(","):
                continue
            port = free_port()
            proc = subprocess.Popen(["taskset", "-c", "0"] + argv(port), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, cwd=tmp)
            if not wait_ready(port, proc, path):
                why = proc.stderr.read().decode()[-400:] if proc.poll() is not None else "timeout"
                print("%-26s did not start: %s" % (name, why), flush=True)
                _stop(proc)
                continue
            procs[name] = (proc, "http://127.0.0.1:%d%s" % (port, path))
        for name, (_proc, url) in procs.items():  # warm-up (PyPy's JIT wants a little longer)
            wrk(url, args.conns, 3 if "pypy" in name else 1)
        runs: dict = {name: [] for name in procs}
        for _ in range(args.reps):  # interleaved: A B C, A B C ...
            for name, (proc, url) in procs.items():
                runs[name].append(wrk(url, args.conns, args.duration, proc.pid))
        return {name: {"median": statistics.median(x[0] for x in r), "runs": [x[0] for x in r],
                       "per_cpu_s": statistics.median(x[1] for x in r)} for name, r in runs.items()}
    finally:
        for proc, _url in procs.values():
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _stop(proc) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--only", default="", help="comma-separated server names")
    ap.add_argument("--apps", default="hello,fastapi", help="comma-separated: " + ", ".join(APPS))
    ap.add_argument("--wsgi", action="store_true", help="also run perf/bench_wsgi.py (the WSGI counterpart)")
    args = ap.parse_args()
    results = {}
    for app_name in args.apps.split(","):
        print("== %s" % app_name, flush=True)
        res = results[app_name] = bench_app(app_name, args)
        for name, row in res.items():
            print("%-26s median %8.0f req/s  %8.0f req/CPU-s  runs %s"
                  % (name, row["median"], row["per_cpu_s"], " ".join("%.0f" % r for r in row["runs"])), flush=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "asgi.json"), "w") as f:
        json.dump(results, f, indent=1)
    for app_name, res in results.items():
        print("\n%s\n| server | req/s (median) | req per CPU-second (median) |\n|---|---|---|" % app_name)
        for name, row in sorted(res.items(), key=lambda kv: -kv[1]["median"]):
            print("| %s | %.0f | %.0f |" % (name, row["median"], row["per_cpu_s"]))
    if args.wsgi:
        wsgi = os.path.join(HERE, "bench_wsgi.py")
        if os.path.exists(wsgi):
            subprocess.run([sys.executable, wsgi, "--duration", str(args.duration), "--reps", str(args.reps)])
        else:
            print("perf/bench_wsgi.py is not there (the WSGI benchmark comes with powpow.wsgi)")


if __name__ == "__main__":
    main()
