"""powpow.aio vs stock asyncio: call_later + cancel with 100 000 pending timers, call_soon, and a
protocol echo (in-process clients; perf/tcp_load.c is the external load client for bench_tcp).

    .venv/bin/python perf/bench_aio.py          # plain timing, medians of 5 runs; figures are indicative
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


def main() -> None:
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
