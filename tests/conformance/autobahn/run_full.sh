#!/usr/bin/env bash
# The FULL Autobahn|Testsuite (all 517 cases, both roles) on CPython and PyPy (native); the counts
# go to tests/conformance/autobahn/results-<interp>.json and the README records them.  About 20
# minutes per role and interpreter on a quiet 2-core machine (wstest's compression cases are slow).
# Usage: bash tests/conformance/autobahn/run_full.sh [cpython|pypy ...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
status=0
for interp in "${@:-cpython pypy}"; do
    for i in $interp; do
        py=.venv/bin/python; [ "$i" = pypy ] && py=.venv-pypy/bin/python
        POWPOW_REQUIRE_NATIVE=1 python3 tests/conformance/autobahn/run_autobahn.py --profile full --python "$py" \
            --json "tests/conformance/autobahn/results-$i.json" --keep "/tmp/powpow-autobahn-full-$i" || status=1
    done
done
exit $status
