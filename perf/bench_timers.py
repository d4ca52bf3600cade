"""Timers: insert N, cancel half, fire the rest -- powpow's wheel vs an asyncio-style heapq.

The baseline is written the way asyncio keeps its timers: a heap of handle
objects ordered by ``when``, cancellation by flag, popped until empty.
Each value is the time per timer: (N inserts + N/2 cancels + N/2 firings) / N.

    python perf/bench_timers.py --fast -o timers.json     (pin it: taskset -c 1 ...)
"""
import heapq
import random

import pyperf

from powpow.timers import TimerWheel

SPAN_MS = 60000  # deadlines spread over a minute, like keep-alive/idle deadlines


class HeapHandle:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when, callback):
        self.when = when
        self.callback = callback
        self.cancelled = False

    def __lt__(self, other):
        return self.when < other.when


def noop():
    pass


def deadlines(n):
    r = random.Random(n)
    return [r.randrange(1, SPAN_MS) for _ in range(n)]


def bench_wheel(loops, ds):
    total = 0.0
    for _ in range(loops):
        t0 = pyperf.perf_counter()
        w = TimerWheel(0)
        add = w.add
        handles = [add(d, noop) for d in ds]
        cancel = w.cancel
        for h in handles[::2]:
            cancel(h)
        for t in w.expire(SPAN_MS):
            t.callback()
        total += pyperf.perf_counter() - t0
    return total


def bench_heapq(loops, ds):
    total = 0.0
    for _ in range(loops):
        t0 = pyperf.perf_counter()
        q = []
        push = heapq.heappush
        handles = []
        for d in ds:
            h = HeapHandle(d, noop)
            push(q, h)
            handles.append(h)
        for h in handles[::2]:
            h.cancelled = True
        pop = heapq.heappop
        while q:
            h = pop(q)
            if not h.cancelled:
                h.callback()
        total += pyperf.perf_counter() - t0
    return total


def main():
    runner = pyperf.Runner()
    for n in (10000, 100000, 1000000):
        ds = deadlines(n)
        runner.bench_time_func("timers-wheel-%d" % n, bench_wheel, ds, inner_loops=n)
        runner.bench_time_func("timers-heapq-%d" % n, bench_heapq, ds, inner_loops=n)


if __name__ == "__main__":
    main()
