"""Loop: defer_call throughput vs asyncio call_soon; dispatch of ready fds, native vs select.epoll.

* defer: schedule 10 000 callbacks, run one iteration that runs them all
  (asyncio: call_soon x 10 000 then run until the last one stops the loop).
* dispatch: N pipes (64 and 1024) kept readable, level-triggered, an empty
  callback each; one iteration = one poll + N dispatches.  The same Loop code
  on powpow's native epoll and on the ``select.epoll`` twin.
"""
import asyncio
import os
import resource

import pyperf

import powpow
from powpow.poller import epoll as epoll_mod

BATCH = 10000


def noop():
    pass


def defer_powpow(loops):
    lp = powpow.Loop()
    defer = lp.defer_call
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        for _ in range(BATCH):
            defer(noop)
        lp.run_once(0)
    dt = pyperf.perf_counter() - t0
    lp.close()
    return dt


def defer_asyncio(loops):
    lp = asyncio.new_event_loop()
    call_soon = lp.call_soon
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        for _ in range(BATCH - 1):
            call_soon(noop)
        call_soon(lp.stop)
        lp.run_forever()
    dt = pyperf.perf_counter() - t0
    lp.close()
    return dt


def dispatch(loops, n, native):
    poller = epoll_mod.NativeEpoll() if native else epoll_mod.SelectEpoll()
    lp = powpow.Loop(poller=poller)
    pipes = [os.pipe() for _ in range(n)]
    cb = lambda fd, ev: None  # noqa: E731
    for r, w in pipes:
        os.write(w, b"x")
        lp.register(r, powpow.Events.READ, cb)
    for _ in range(4):  # let the event array grow to n
        lp.run_once(0)
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        lp.run_once(0)
    dt = pyperf.perf_counter() - t0
    for r, w in pipes:
        lp.unregister(r)
        os.close(r)
        os.close(w)
    lp.close()
    return dt


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    runner = pyperf.Runner()
    runner.bench_time_func("defer-powpow", defer_powpow, inner_loops=BATCH)
    runner.bench_time_func("defer-asyncio-call_soon", defer_asyncio, inner_loops=BATCH)
    if powpow.NATIVE:
        for n in (64, 1024):
            runner.bench_time_func("dispatch-%d-native-epoll" % n, dispatch, n, True, inner_loops=n)
            runner.bench_time_func("dispatch-%d-select-epoll" % n, dispatch, n, False, inner_loops=n)


if __name__ == "__main__":
    main()
