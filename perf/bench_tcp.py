"""TCP echo benchmarks: powpow vs asyncio Protocol vs uvloop, same C client, same run.

    python perf/bench_tcp.py [--seconds 3] [--reps 3] [--bulk-mib 1024] [--idle 10000]

* ping-pong: 64 connections, 100-byte messages, one in flight per connection;
  round trips per second (median of ``--reps`` runs).
* bulk: ``--bulk-mib`` MiB sent through one connection and echoed back.
* idle: server RSS per idle connection with ``--idle`` connections open.

The client (``perf/tcp_load.c``) is compiled here with ``cc`` into a temporary
directory: a Python client would be the bottleneck.  Server pinned to CPU 0,
client to CPU 1 (``taskset``).  Servers run under CPython (powpow, asyncio,
uvloop if installed there or in ``--peers-python``, default
``perf/.venv-peers/bin/python``) and PyPy (powpow, asyncio) when ``.venv-pypy`` exists.
Instructions per round trip (deterministic, for A/B work on a busy machine):
``perf/cg_tcp.py``.
``python perf/bench_tcp.py --serve KIND`` runs one echo server (used by the
harness; prints its port).

``--interleave`` (ping-pong only): on a shared machine the sequential runs
above drift by 20-40 % between servers measured a minute apart.  This starts
every server of one interpreter at once (idle ones sleep in their poller) and
takes ``--reps`` rounds, each running the client against every server in turn
(the order rotates each round); the figures are medians per server, and the
ratios medians of the per-round ratios -- a peer and powpow measured seconds apart.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _harness import tree_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- servers

def serve_powpow() -> None:
    sys.path.insert(0, ROOT)
    import powpow

    loop = powpow.Loop()

    def on_data(c, data):
        if not c.send(data):
            c.pause_reading()

    # CPython: on_data gets bytes (Connection.data_as_bytes: the copy is made in the
    # recv call, and sending bytes is the cheapest send); PyPy: the default
    # memoryview, sent straight from the receive buffer (its JIT makes the view free).
    as_bytes = sys.implementation.name == "cpython" and os.environ.get("POWPOW_BENCH_VIEW") is None

    def on_accept(c):
        c.on_drain = _resume
        c.data_as_bytes = as_bytes

    srv = powpow.TcpServer(loop, on_accept=on_accept, on_data=on_data, max_connections=100000)
    srv.listen(0, "127.0.0.1", backlog=4096)
    print(srv.port, flush=True)
    loop.run()


def _resume(c):
    c.resume_reading()


def serve_asyncio(use_uvloop: bool) -> None:
    import asyncio

    if use_uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport

        def data_received(self, data):
            self.t.write(data)

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------- harness

def start_server(python: str, kind: str):
    p = subprocess.Popen(["taskset", "-c", "0", python, os.path.abspath(__file__), "--serve", kind],
                         stdout=subprocess.PIPE, cwd=ROOT)
    port = int(p.stdout.readline())
    return p, port


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def client(binary: str, *args) -> str:
    r = subprocess.run(["taskset", "-c", "1", binary] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=600)
    if r.returncode:
        raise RuntimeError("client failed: %s" % r.stderr)
    return r.stdout


def bench(python: str, kind: str, binary: str, a) -> dict:
    res = {}
    p, port = start_server(python, kind)
    try:
        client(binary, "pingpong", "127.0.0.1", port, 64, 100, 1)  # warm-up (PyPy JIT)
        rates = []
        cpu = []
        for _ in range(a.reps):
            c0 = tree_cpu(p.pid)
            out = client(binary, "pingpong", "127.0.0.1", port, 64, 100, a.seconds).split()
            # server CPU per round trip: robust when a noisy machine or the client caps the rate
            cpu.append((tree_cpu(p.pid) - c0) * 1e6 / max(int(out[1]), 1))
            rates.append(int(out[1]) / float(out[3]))
        res["pingpong"] = statistics.median(rates)
        res["cpu_us"] = statistics.median(cpu)
        if a.bulk_mib:
            client(binary, "bulk", "127.0.0.1", port, 64 << 20)  # warm-up
            rates = []
            for _ in range(a.bulk_reps):
                out = client(binary, "bulk", "127.0.0.1", port, a.bulk_mib << 20).split()
                rates.append(int(out[1]) / float(out[3]) / (1 << 20))
            res["bulk"] = statistics.median(rates)
        if a.idle:
            time.sleep(0.2)
            before = rss_kib(p.pid)
            c = subprocess.Popen(["taskset", "-c", "1", binary, "idle", "127.0.0.1", str(port), str(a.idle)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            c.stdout.readline()
            time.sleep(1.0)  # let the server accept them all
            res["idle_bytes"] = (rss_kib(p.pid) - before) * 1024.0 / a.idle
            c.stdin.close()
            c.wait()
    finally:
        p.kill()
        p.wait()
    return res


def pingpong(binary: str, p, port: int, seconds: float):
    c0 = tree_cpu(p.pid)
    out = client(binary, "pingpong", "127.0.0.1", port, 64, 100, seconds).split()
    rts = max(int(out[1]), 1)
    return rts / float(out[3]), (tree_cpu(p.pid) - c0) * 1e6 / rts


def interleaved(impl: str, kinds, binary: str, a) -> None:
    """Every server up at once; rounds of one ping-pong run each, rotating the order."""
    servers = {}
    try:
        for kind, py in kinds:
            servers[kind] = start_server(py, kind)
            client(binary, "pingpong", "127.0.0.1", servers[kind][1], 64, 100, 1)  # warm-up (PyPy JIT)
        rates = {k: [] for k in servers}
        cpu = {k: [] for k in servers}
        order = list(servers)
        for r in range(a.reps):
            for kind in order[r % len(order):] + order[:r % len(order)]:
                rate, us = pingpong(binary, servers[kind][0], servers[kind][1], a.seconds)
                rates[kind].append(rate)
                cpu[kind].append(us)
        for kind in order:
            print("%-8s %-8s ping-pong %9.0f rt/s (server %.2f CPU us/rt)   median of %d interleaved rounds"
                  % (impl, kind, statistics.median(rates[kind]), statistics.median(cpu[kind]), a.reps))
        for peer in order[1:]:
            rr = [x / y for x, y in zip(rates["powpow"], rates[peer])]
            cr = [y / x for x, y in zip(cpu["powpow"], cpu[peer])]
            print("%-8s powpow / %-8s ping-pong %.2fx (server CPU per round trip, peer / powpow: %.2fx)"
                  "   per round: %s" % (impl, peer, statistics.median(rr), statistics.median(cr),
                                        " ".join("%.2f" % x for x in cr)), flush=True)
    finally:
        for p, _ in servers.values():
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", choices=["powpow", "asyncio", "uvloop"])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bulk-mib", type=int, default=1024)
    ap.add_argument("--bulk-reps", type=int, default=3)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--interleave", action="store_true",
                    help="ping-pong only: all servers up at once, measured in rotating rounds")
    ap.add_argument("--peers-python", default=os.path.join(ROOT, "perf/.venv-peers/bin/python"),
                    help="a python with uvloop, used for the uvloop server when .venv lacks it")
    a = ap.parse_args()
    if a.serve == "powpow":
        return serve_powpow()
    if a.serve:
        return serve_asyncio(a.serve == "uvloop")

    tmp = tempfile.mkdtemp()
    binary = os.path.join(tmp, "tcp_load")
    subprocess.run(["cc", "-O2", "-o", binary, os.path.join(HERE, "tcp_load.c")], check=True)
    pythons = [("cpython", os.path.join(ROOT, ".venv/bin/python"))]
    if os.path.exists(os.path.join(ROOT, ".venv-pypy/bin/python")):
        pythons.append(("pypy", os.path.join(ROOT, ".venv-pypy/bin/python")))
    results = {}
    try:
        for impl, py in pythons:
            kinds = ["powpow", "asyncio"]
            if impl == "cpython" and subprocess.run([py, "-c", "import uvloop"], capture_output=True).returncode == 0:
                kinds.append("uvloop")
            uv_py = py
            if impl == "cpython" and "uvloop" not in kinds and os.path.exists(a.peers_python) and subprocess.run(
                    [a.peers_python, "-c", "import uvloop"], capture_output=True).returncode == 0:
                kinds.append("uvloop")
                uv_py = a.peers_python
            if a.interleave:
                interleaved(impl, [(k, uv_py if k == "uvloop" else py) for k in kinds], binary, a)
                continue
            for kind in kinds:
                results[(impl, kind)] = r = bench(uv_py if kind == "uvloop" else py, kind, binary, a)
                print("%-8s %-8s ping-pong %9.0f rt/s (server %.2f CPU us/rt)   bulk %7.1f MiB/s   idle %6.0f B/conn"
                      % (impl, kind, r["pingpong"], r["cpu_us"], r.get("bulk", 0), r.get("idle_bytes", 0)), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    for impl in ("cpython", "pypy"):
        ours = results.get((impl, "powpow"))
        if not ours:
            continue
        for peer in ("asyncio", "uvloop"):
            theirs = results.get((impl, peer))
            if theirs:
                print("%-8s powpow / %-8s ping-pong %.2fx (server CPU per round trip, peer / powpow: %.2fx)"
                      "   bulk %.2fx" % (
                          impl, peer, ours["pingpong"] / theirs["pingpong"], theirs["cpu_us"] / ours["cpu_us"],
                          ours.get("bulk", 0) / theirs["bulk"] if theirs.get("bulk") else 0))


if __name__ == "__main__":
    main()
