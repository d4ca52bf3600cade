"""Instructions per echo round trip (callgrind), for the ping-pong of perf/bench_tcp.py.

    python perf/cg_tcp.py [--tree DIR] [--kind powpow|asyncio] [--seconds 4] [--conns 64]

Runs ``DIR/perf/bench_tcp.py --serve KIND`` (default: this checkout) under
``valgrind --tool=callgrind`` with instrumentation off, warms it up with the C
client (``perf/tcp_load.c``), switches instrumentation on for one fixed-length
client run, and prints instructions per round trip.  Deterministic enough
(within ~1%) to compare two trees on a loaded machine, which wall-clock
figures are not.  ``--tree`` points at a second checkout (with its native
module built) for a before/after comparison; ``POWPOW_PURE=1`` in the
environment measures the pure twins.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", default=ROOT)
    ap.add_argument("--kind", default="powpow")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    client = os.path.join(tmp, "tcp_load")
    subprocess.run(["cc", "-O2", "-o", client, os.path.join(HERE, "tcp_load.c")], check=True)
    out = os.path.join(tmp, "cg.out")
    env = dict(os.environ, PYTHONPATH=a.tree)
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=" + out,
                          a.python, os.path.join(a.tree, "perf", "bench_tcp.py"), "--serve", a.kind],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        port = int(p.stdout.readline())
        subprocess.run([client, "pingpong", "127.0.0.1", str(port), str(a.conns), str(a.size), "1"],
                       capture_output=True, check=True)
        subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], capture_output=True, check=True)
        r = subprocess.run([client, "pingpong", "127.0.0.1", str(port), str(a.conns), str(a.size),
                            str(a.seconds)], capture_output=True, text=True, check=True)
        subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], capture_output=True, check=True)
        rts = int(r.stdout.split()[1])
        subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True)
        time.sleep(0.5)
    finally:
        p.terminate()
        p.wait()
    if os.environ.get("CG_KEEP"):
        print("dump in", tmp)
    total = 0
    for name in os.listdir(tmp):
        if name.startswith("cg.out"):
            with open(os.path.join(tmp, name)) as f:
                for line in f:
                    m = re.match(r"summary: (\d+)", line) or re.match(r"totals: (\d+)", line)
                    if m:
                        total = max(total, int(m.group(1)))
    print("%s %s: %d round trips, %.0f instructions per round trip" % (a.tree, a.kind, rts, total / rts))


if __name__ == "__main__":
    main()
