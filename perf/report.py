"""Print medians and powpow/peer ratios from pyperf JSON files.

    python perf/report.py perf/results/*.json

Pairs are benchmarks in the same file whose names share a prefix and differ
in the last part (``timers-wheel-1000000`` vs ``timers-heapq-1000000``);
the ratio is peer time / powpow time (> 1: powpow is faster).
"""
import sys

import pyperf

PAIRS = [
    ("timers-wheel-{n}", "timers-heapq-{n}", ("10000", "100000", "1000000")),
    ("scan_lines-400B-powpow", "scan_lines-400B-find-loop", ("",)),
    ("find_crlf-64KiB-powpow", "find_crlf-64KiB-bytes.find", ("",)),
    ("defer-powpow", "defer-asyncio-call_soon", ("",)),
    ("dispatch-{n}-native-epoll", "dispatch-{n}-select-epoll", ("64", "1024")),
]


def fmt(sec):
    for unit, scale in (("s", 1), ("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
        if sec * scale >= 1:
            return "%.3g %s" % (sec * scale, unit)
    return "%.3g ns" % (sec * 1e9)


def main(paths):
    for path in paths:
        suite = pyperf.BenchmarkSuite.load(path)
        meds = {b.get_name(): b.median() for b in suite.get_benchmarks()}
        print("## %s" % path)
        for name, med in meds.items():
            print("  %-32s median %s" % (name, fmt(med)))
        for ours, peer, params in PAIRS:
            for n in params:
                a, b = ours.format(n=n), peer.format(n=n)
                if a in meds and b in meds:
                    print("  ratio %-40s %.2fx" % (a + " vs " + b.split("-")[-2 if n else -1], meds[b] / meds[a]))


if __name__ == "__main__":
    main(sys.argv[1:])
