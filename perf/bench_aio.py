"""powpow.aio vs stock asyncio: call_later + cancel with 100 000 pending timers, call_soon, and a
protocol echo (in-process clients; perf/tcp_load.c is the external load client for bench_tcp).

    .venv/bin/python perf/bench_aio.py          # plain timing, medians of 5 runs; figures are indicative
    PY perf/bench_aio.py --echo [SECONDS]       # protocol echo, external C load client (perf/tcp_load.c):
                                                # server per loop kind (powpow.aio, asyncio, uvloop if
                                                # importable) pinned to core 0, load pinned to core 1,
                                                # 64 connections x 100 B ping-pong, 3 interleaved rounds
"""
import asyncio
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import powpow.aio  # noqa: E402

N_TIMERS = 100000


def bench_timers(loop) -> float:
    """Schedule N timers spread over 60 s, cancel them all, run one iteration: seconds per timer."""
    cb = int
    t0 = time.perf_counter()
    hs = [loop.call_later(1 + (i % 60000) / 1000.0, cb) for i in range(N_TIMERS)]
    for h in hs:
        h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    return (time.perf_counter() - t0) / N_TIMERS


def bench_call_soon(loop, n=200000) -> float:
    cb = int
    t0 = time.perf_counter()
    for _ in range(n):
        loop.call_soon(cb)
    loop.call_soon(loop.stop)
    loop.run_forever()
    return (time.perf_counter() - t0) / n


class Echo(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t

    def data_received(self, d):
        self.t.write(d)


def bench_echo(loop, conns=64, msgs=300, size=100) -> float:
    """Messages per second through 64 echo connections (clients on the same loop, sock_* API)."""
    async def main():
        srv = await loop.create_server(Echo, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        payload = b"x" * size

        async def client():
            s = socket.socket()
            s.setblocking(False)
            await loop.sock_connect(s, ("127.0.0.1", port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(msgs):
                await loop.sock_sendall(s, payload)
                got = 0
                while got < size:
                    got += len(await loop.sock_recv(s, 65536))
            s.close()
        t0 = time.perf_counter()
        await asyncio.gather(*[client() for _ in range(conns)])
        dt = time.perf_counter() - t0
        srv.close()
        await srv.wait_closed()
        return conns * msgs / dt
    return loop.run_until_complete(main())


def run(name, fn, reps=5):
    out = {}
    for kind, factory in (("powpow.aio", powpow.aio.new_event_loop), ("asyncio", asyncio.new_event_loop)):
        vals = []
        for _ in range(reps):
            loop = factory()
            try:
                vals.append(fn(loop))
            finally:
                loop.close()
        out[kind] = statistics.median(vals)
    return out


def _serve(kind: str) -> None:
    """Child process: an Echo server on the given loop kind; prints its port, runs until stdin closes."""
    if kind == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    elif kind == "asyncio":
        loop = asyncio.new_event_loop()
    else:
        loop = powpow.aio.new_event_loop()
    srv = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0, backlog=1024))
    print(srv.sockets[0].getsockname()[1], flush=True)
    loop.add_reader(sys.stdin.fileno(), loop.stop)
    loop.run_forever()


def echo_external(seconds: float = 5.0, rounds: int = 3) -> None:
    import subprocess
    import tempfile
    here = os.path.dirname(os.path.abspath(__file__))
    tmp = tempfile.mkdtemp()
    binary = os.path.join(tmp, "tcp_load")
    subprocess.run(["cc", "-O2", "-o", binary, os.path.join(here, "tcp_load.c")], check=True)
    kinds = ["powpow.aio", "asyncio"]
    try:
        import uvloop  # noqa: F401
        kinds.append("uvloop")
    except ImportError:
        pass
    if os.environ.get("BENCH_KINDS"):  # e.g. BENCH_KINDS=powpow.aio for an A/B of two checkouts
        kinds = os.environ["BENCH_KINDS"].split(",")
    res: dict = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind in kinds:
            srv = subprocess.Popen(["taskset", "-c", "0", sys.executable, os.path.abspath(__file__), "--serve", kind],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                port = srv.stdout.readline().strip()
                out = subprocess.run(["taskset", "-c", "1", binary, "pingpong", "127.0.0.1", port, "64", "100",
                                      str(seconds)], capture_output=True, text=True, timeout=seconds + 30).stdout
                n, secs = out.split()[1], out.split()[3]
                res[kind].append(int(n) / float(secs))
            finally:
                srv.stdin.close()
                srv.wait(10)
    impl = "%s %s" % (sys.implementation.name, ".".join(map(str, sys.version_info[:3])))
    med = {k: statistics.median(v) for k, v in res.items()}
    line = ", ".join("%s %.0f" % (k, med[k]) for k in kinds)
    print("%s protocol echo, tcp_load 64 conns x 100 B, %d x %.0f s, medians (round trips/s): %s"
          % (impl, rounds, seconds, line))
    if "asyncio" in med:
        print("  powpow.aio / asyncio = %.2fx%s" % (med["powpow.aio"] / med["asyncio"],
              ", powpow.aio / uvloop = %.2fx" % (med["powpow.aio"] / med["uvloop"]) if "uvloop" in med else ""))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        return _serve(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "--echo":
        return echo_external(float(sys.argv[2]) if len(sys.argv) > 2 else 5.0)
    impl = "%s %s" % (sys.implementation.name, ".".join(map(str, sys.version_info[:3])))
    t = run("timers", bench_timers)
    print("%s call_later+cancel, %d pending: powpow.aio %.0f ns, asyncio %.0f ns per timer -> %.2fx"
          % (impl, N_TIMERS, t["powpow.aio"] * 1e9, t["asyncio"] * 1e9, t["asyncio"] / t["powpow.aio"]))
    c = run("call_soon", bench_call_soon)
    print("%s call_soon: powpow.aio %.0f ns, asyncio %.0f ns per call -> %.2fx"
          % (impl, c["powpow.aio"] * 1e9, c["asyncio"] * 1e9, c["asyncio"] / c["powpow.aio"]))
    e = run("echo", bench_echo, reps=3)
    print("%s protocol echo (64 conns, 100 B, in-process sock_* clients): powpow.aio %.0f msg/s, asyncio %.0f msg/s"
          " -> %.2fx" % (impl, e["powpow.aio"], e["asyncio"], e["powpow.aio"] / e["asyncio"]))


if __name__ == "__main__":
    main()
