"""Deterministic per-request cost of the HTTP server: callgrind instructions and cProfile calls.

    python perf/http_instr.py [--python .venv/bin/python] [--base DIR] [--n 2000,6000]
                              [--what callgrind,profile] [--modes keepalive,pipelined]

Runs perf/servers/powpow_hello.py (the wrk benchmark's server) under
``valgrind --tool=callgrind`` (or ``cProfile``) and drives it with a bounded
client in this process: 8 connections, each with one request (keep-alive) or
16 pipelined requests in one write (pipelined) outstanding.  Each figure is the
difference of two runs (``--n`` requests each) divided by the difference in
requests, so start-up, imports and shutdown cancel out.  ``--base DIR``: also
measure the powpow package in DIR (a ``git archive`` / worktree checkout) with
the same interpreter, for a same-run A/B.  Wall-clock benchmarks on a shared
machine are noise; instruction counts are not.
"""
import argparse
import os
import pstats
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import free_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HELLO = os.path.join(HERE, "servers", "powpow_hello.py")
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # what wrk sends, but its port
CONNS = 8

_PROFILE = """
import cProfile, runpy, signal, sys

sys.argv = [%r, %r]
prof = cProfile.Profile()
prof.enable()
try:
    runpy.run_path(%r, run_name="__main__")
finally:
    prof.disable()
    prof.dump_stats(%r)
"""


def drive(port: int, total: int, depth: int) -> None:
    """``total`` requests over CONNS connections, ``depth`` in flight per connection."""
    sel = selectors.DefaultSelector()
    batch = REQUEST * depth
    left = total
    socks = []
    for _ in range(CONNS):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    want = {}
    for s in socks:
        if left <= 0:
            break
        s.sendall(batch)
        left -= depth
        want[s] = depth
        sel.register(s, selectors.EVENT_READ)
    bufs = {s: b"" for s in socks}
    while want:
        for key, _ in sel.select(30):
            s = key.fileobj
            data = s.recv(1 << 16)
            if not data:
                raise SystemExit("server closed a connection")
            buf = bufs[s] + data
            got = buf.count(b"Hello, World!")
            want[s] -= got
            bufs[s] = buf[buf.rfind(b"Hello, World!") + 13:] if got else buf
            if want[s] == 0:
                if left > 0:
                    s.sendall(batch)
                    left -= depth
                    want[s] = depth
                else:
                    del want[s]
                    sel.unregister(s)
    for s in socks:
        s.close()


def run_server(python: str, pkgdir: str, what: str, total: int, depth: int):
    port = free_port()
    out = tempfile.mktemp(prefix="powpow-instr-")
    env = dict(os.environ, PYTHONPATH=pkgdir, PYTHONHASHSEED="0")
    if what == "callgrind":
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, python, HELLO, str(port)]
    else:
        cmd = [python, "-c", _PROFILE % (HELLO, str(port), HELLO, out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=pkgdir)
    try:
        line = proc.stdout.readline()
        if not line.startswith(b"ready"):
            raise SystemExit("server did not start: %r" % line)
        drive(port, total, depth)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def instructions(path: str) -> int:
    with open(path) as f:
        text = f.read()
    os.unlink(path)
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    return int(m.group(1))


def calls(path: str) -> dict:
    st = pstats.Stats(path)
    os.unlink(path)
    out = {}
    for (fn, line, name), row in st.stats.items():
        nc = row[1]
        out["%s:%d(%s)" % (os.path.basename(fn), line, name) if line else name] = nc
    return out


def measure(python: str, pkgdir: str, what: str, depth: int, n1: int, n2: int):
    a = run_server(python, pkgdir, what, n1, depth)
    b = run_server(python, pkgdir, what, n2, depth)
    if what == "callgrind":
        return (instructions(b) - instructions(a)) / (n2 - n1)
    ca, cb = calls(a), calls(b)
    per = {k: (v - ca.get(k, 0)) / (n2 - n1) for k, v in cb.items()}
    return {k: v for k, v in per.items() if v >= 0.01}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    ap.add_argument("--base", default="", help="a checkout of the base to compare with")
    ap.add_argument("--n", default="1000,3000", help="requests in the two runs (callgrind)")
    ap.add_argument("--what", default="callgrind,profile")
    ap.add_argument("--modes", default="keepalive,pipelined")
    args = ap.parse_args()
    n1, n2 = (int(x) for x in args.n.split(","))
    trees = [("this", ROOT)] + ([("base", os.path.abspath(args.base))] if args.base else [])
    for mode in args.modes.split(","):
        depth = 16 if mode == "pipelined" else 1
        for what in args.what.split(","):
            scale = 1 if what == "callgrind" else 10  # cProfile is cheap: more requests
            res = {name: measure(args.python, tree, what, depth, n1 * scale, n2 * scale) for name, tree in trees}
            if what == "callgrind":
                print("%-10s instructions/request: %s" % (mode, "  ".join(
                    "%s %.0f" % kv for kv in res.items())), flush=True)
            else:
                for name, per in res.items():
                    print("%-10s %s Python calls/request: %.2f" % (mode, name, sum(per.values())))
                    for fn, c in sorted(per.items(), key=lambda kv: -kv[1])[:40]:
                        print("    %7.3f  %s" % (c, fn))
                sys.stdout.flush()


if __name__ == "__main__":
    t0 = time.monotonic()
    main()
    print("(%.0f s)" % (time.monotonic() - t0))
