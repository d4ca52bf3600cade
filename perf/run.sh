#!/usr/bin/env bash
# Run every benchmark on CPython and PyPy, pinned to one core (the other core
# is left for the OS / load generators), and print medians and ratios.
#   bash perf/run.sh [bench_timers bench_scanner ...]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p perf/results
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(bench_timers bench_scanner bench_loop)
for venv in .venv .venv-pypy; do
    py="$venv/bin/python"
    [ -x "$py" ] || { echo "missing $py: run tests/run_all.sh first" >&2; exit 1; }
    impl=$("$py" -c 'import sys; print(sys.implementation.name)')
    for b in "${benches[@]}"; do
        [ -f "perf/$b.py" ] || continue
        out="perf/results/$b-$impl.json"
        rm -f "$out"
        taskset -c 1 "$py" "perf/$b.py" --fast --quiet -o "$out"
    done
done
.venv/bin/python perf/report.py perf/results/*.json
