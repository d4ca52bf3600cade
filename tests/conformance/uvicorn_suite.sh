#!/usr/bin/env bash
# uvicorn's own test suite with powpow.aio swapped in underneath, compared with the same suite on stock
# asyncio.  NOT part of CI: it needs the package index (uvicorn's sdist and its test dependencies).
#
#   bash tests/conformance/uvicorn_suite.sh [python3] [uvicorn version]
#
# Fetches uvicorn's sdist (pip download --no-binary :all: --no-deps) into $WORK (default /tmp/uvicorn-suite),
# makes a venv there with uvicorn's test dependencies, and runs tests/ twice from the sdist:
#   1. stock asyncio (the reference counts);
#   2. with -p uvicorn_powpow_plugin (tests/conformance/uvicorn_powpow_plugin.py): anyio's test loops,
#      uvicorn's "auto"/"asyncio" loop factories and asyncio.new_event_loop() all give powpow.aio loops.
# Prints both summary lines.  Three tests assert the loop's class (test_loop_auto,
# test_asyncio_run__default_loop_factory, test_get_loop_factory[asyncio-...]): they fail by design on a
# swapped loop.  tests/benchmarks (pytest-codspeed) are left out.
# PyPy 3.9: current uvicorn needs Python >= 3.10 (its _types.py uses `X | None` at runtime), so pass an
# older version (the newest pip picks for 3.9 is 0.39.0); trustme's cryptography needs a Rust build there
# (and crates.io), so its TLS tests skip.  Not run on PyPy for the figures in perf/README.md.  uvloop is installed as uvicorn's
# "standard" extra wants, but the plugin replaces the "auto" factory, so powpow.aio runs everything.
set -euo pipefail
PY=${1:-python3}
VER=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-/tmp/uvicorn-suite}
mkdir -p "$WORK"
cd "$WORK"
if [ ! -x venv/bin/python ]; then
    "$PY" -m venv venv
    venv/bin/pip install -q pytest pytest-mock trustme cryptography httpx2 httptools h11 websockets wsproto \
        click pyyaml python-dotenv watchfiles anyio a2wsgi
    venv/bin/pip install -q uvloop || true   # not on PyPy
    venv/bin/pip install -q -e "$ROOT"
fi
rm -rf sdist && mkdir sdist
venv/bin/pip download -q --no-binary :all: --no-deps -d sdist "uvicorn${VER:+==$VER}"
tar xzf sdist/uvicorn-*.tar.gz -C sdist
SRC=$(ls -d sdist/uvicorn-*/)
cd "$SRC"
run() {
    PYTHONPATH="$HERE:." timeout 1200 ../../venv/bin/python -m pytest -p no:cacheprovider -o addopts="" \
        -o faulthandler_timeout=60 -q --ignore=tests/benchmarks "$@" tests 2>&1 | tail -n 15
}
echo "== uvicorn $(basename "$SRC") on stock asyncio"
run || true
echo "== uvicorn $(basename "$SRC") on powpow.aio"
run -p uvicorn_powpow_plugin || true
