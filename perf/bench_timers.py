"""Timers: insert N, cancel half, fire the rest -- powpow's wheel vs an asyncio-style heapq.

The baseline is written the way asyncio keeps its timers: a heap of handle
objects ordered by ``when``, cancellation by flag, popped until empty.
Each value is the time per timer: (N inserts + N/2 cancels + N/2 firings) / N.

    python perf/bench_timers.py --fast -o timers.json     (pin it: taskset -c 1 ...)

``--phases`` (no pyperf) is the diagnosis of how the cost grows with N: the sizes
run interleaved, round after round, and each run is timed per phase (insert,
cancel, expire + fire) in CPU time (``time.process_time``: the time this process
was descheduled on a shared machine does not count); on PyPy the time its GC
spent inside each run is read from ``gc.hooks``.  ``--floor`` adds the same
workload without the wheel: N ``Timer`` objects made, held in one list, half of
them dropped, then all -- what any design that hands out one object per
pending timer pays at that N.  ``--promote`` (PyPy) forces a minor collection
after the inserts at every N, so that small N pays the promotion of its
timers to the old generation as large N does (see perf/README.md, issue 13).

    python perf/bench_timers.py --phases [--floor] [--promote] [--rounds 5] [--sizes 10000,100000,1000000]
"""
import heapq
import random
import sys
import time

from powpow.timers import Timer, TimerWheel

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
        t0 = time.perf_counter()
        w = TimerWheel(0)
        add = w.add
        handles = [add(d, noop) for d in ds]
        cancel = w.cancel
        for h in handles[::2]:
            cancel(h)
        for t in w.expire(SPAN_MS):
            t.callback()
        total += time.perf_counter() - t0
    return total


def bench_heapq(loops, ds):
    total = 0.0
    for _ in range(loops):
        t0 = time.perf_counter()
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
        total += time.perf_counter() - t0
    return total


class _GcClock:
    """Seconds PyPy's GC spent so far (minor collections and major steps); 0 elsewhere."""

    def __init__(self) -> None:
        self.spent = 0.0
        hooks = getattr(__import__("gc"), "hooks", None)
        if hooks is not None:
            hooks.on_gc_minor = self._add
            hooks.on_gc_collect_step = self._add

    def _add(self, stats) -> None:
        self.spent += stats.duration


def _phases_wheel(ds, clock, promote):
    c = time.process_time
    g0 = clock.spent
    t0 = c()
    w = TimerWheel(0)
    add = w.add
    handles = [add(d, noop) for d in ds]
    if promote:
        promote()
    t1 = c()
    cancel = w.cancel
    for h in handles[::2]:
        cancel(h)
    t2 = c()
    for t in w.expire(SPAN_MS):
        t.callback()
    t3 = c()
    return t1 - t0, t2 - t1, t3 - t2, clock.spent - g0


def _phases_floor(ds, clock, promote):
    c = time.process_time
    g0 = clock.spent
    t0 = c()
    handles = [Timer(d, noop) for d in ds]
    if promote:
        promote()
    t1 = c()
    del handles[::2]
    t2 = c()
    for t in handles:
        t.callback()
    del handles
    t3 = c()
    return t1 - t0, t2 - t1, t3 - t2, clock.spent - g0


def _phases_one(argv) -> None:
    """Child of --phases: one size in a fresh interpreter; prints one JSON line of ns/timer."""
    import json

    n, kind = int(argv[argv.index("--phases-one") + 1]), argv[argv.index("--phases-one") + 2]
    promote = None
    if "--promote" in argv:
        import gc

        promote = getattr(gc, "collect_step", None)
        if promote is None:
            sys.exit("--promote needs PyPy (gc.collect_step)")
    fn = _phases_wheel if kind == "wheel" else _phases_floor
    clock = _GcClock()
    ds = deadlines(n)
    reps = max(3, 2000000 // n)  # about 2M timers: several nursery fills on PyPy
    for _ in range(reps):  # warm-up (the JIT, the allocator)
        fn(ds, clock, promote)
    tot = [0.0, 0.0, 0.0, 0.0]
    for _ in range(reps):
        for j, v in enumerate(fn(ds, clock, promote)):
            tot[j] += v
    print(json.dumps([v * 1e9 / (n * reps) for v in tot]))


def phases(argv) -> None:
    """Each size in its own process (no GC work of one size spilling into another), rounds interleaved."""
    import json
    import subprocess

    sizes = [10000, 100000, 1000000]
    rounds = 5
    for i, a in enumerate(argv):
        if a == "--sizes":
            sizes = [int(x) for x in argv[i + 1].split(",")]
        elif a == "--rounds":
            rounds = int(argv[i + 1])
    extra = ["--promote"] if "--promote" in argv else []
    kinds = ["wheel"] + (["floor"] if "--floor" in argv else [])
    res = {(k, n): [] for k in kinds for n in sizes}
    for _ in range(rounds):
        for n in sizes:
            for k in kinds:
                out = subprocess.run([sys.executable, __file__, "--phases-one", str(n), k] + extra,
                                     check=True, stdout=subprocess.PIPE, timeout=300).stdout
                res[k, n].append(json.loads(out.decode().strip().splitlines()[-1]))
    print("%s %s%s, %d rounds, CPU ns per timer: median [min-max] (insert / cancel / fire; GC inside, mean)" % (
        sys.implementation.name, sys.version.split()[0], " --promote" if extra else "", rounds))
    for k in kinds:
        meds = {}
        for n in sizes:
            rows = res[k, n]
            totals = sorted(r[0] + r[1] + r[2] for r in rows)
            med = [sorted(r[j] for r in rows)[len(rows) // 2] for j in range(3)]
            gc_mean = sum(r[3] for r in rows) / len(rows)
            meds[n] = totals[len(totals) // 2]
            print("  %-5s N=%-8d %7.1f [%.1f-%.1f]  (%.1f / %.1f / %.1f; GC %.1f)" % (
                k, n, meds[n], totals[0], totals[-1], med[0], med[1], med[2], gc_mean))
        if len(sizes) > 1:
            print("  %-5s %d/%d: %.2fx" % (k, sizes[-1], sizes[0], meds[sizes[-1]] / meds[sizes[0]]))


def main():
    if "--phases-one" in sys.argv:
        _phases_one(sys.argv)
        return
    if "--phases" in sys.argv:
        phases(sys.argv)
        return
    import pyperf

    runner = pyperf.Runner()
    for n in (10000, 100000, 1000000):
        ds = deadlines(n)
        runner.bench_time_func("timers-wheel-%d" % n, bench_wheel, ds, inner_loops=n)
        runner.bench_time_func("timers-heapq-%d" % n, bench_heapq, ds, inner_loops=n)


if __name__ == "__main__":
    main()
