#!/usr/bin/env bash
# The whole test suite, as the README says: `bash tests/run_all.sh`.
#
# Installs what it needs on a fresh Debian/Ubuntu machine (apt packages when
# run as root; one venv per interpreter), builds the native module for CPython
# and PyPy, fails loudly if that build is missing, then runs the suite four
# ways: CPython and PyPy x native and POWPOW_PURE=1.  Extra arguments go to
# pytest (e.g. `bash tests/run_all.sh -k timers`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '\n=== %s\n' "$*"; }

# ---------------------------------------------------------------- system packages
missing=()
command -v pypy3 >/dev/null 2>&1 || missing+=(pypy3)
# pypy3-dev ships the headers cffi needs to compile the native module for PyPy
[ -d /usr/lib/pypy3.9/include ] || [ -d /usr/lib/pypy3/include ] || dpkg -s pypy3-dev >/dev/null 2>&1 || missing+=(pypy3-dev)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
# real HTTP clients for the server tests
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
# TLS tests: certificates are made with the openssl command, which is also a real client (s_client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# a real HTTPS client from another TLS stack (tests/integration/test_tls_http.py)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
# a real reverse proxy in front of the HTTP server (tests/integration/test_http_proxy.py)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-dev python3-venv)
# Node's `ws` library as a WebSocket peer (tests/integration/test_ws_node.py)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# a real Redis for the WebSocket pub/sub fan-out across processes (tests/integration/test_ws_redis.py)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# a real browser as a WebSocket client and for live reload (tests/integration/test_ws_chromium.py)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing system packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- venvs + native build
setup_venv() {  # $1 = interpreter, $2 = venv dir, $3 = extras (default: test)
    local py=$1 venv=$2 extras=${3:-test}
    if [ ! -x "$venv/bin/python" ]; then
        log "creating $venv with $py"
        "$py" -m venv "$venv"
    fi
    log "installing powpow (compiling the native module) into $venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$venv/bin/python" -m pip install -q -e "$ROOT[$extras]"
    # Fail loudly when the native module did not build: never let the pure
    # twins silently stand in for it.
    POWPOW_REQUIRE_NATIVE=1 "$venv/bin/python" -c \
        'import powpow._ffi as f, sys; assert f.NATIVE, "native module not in use"; print("native module OK on", sys.implementation.name, sys.version.split()[0])'
}

if [ ! -d "$ROOT/tests/node/node_modules/ws" ]; then
    log "installing the Node WebSocket peer (npm install in tests/node)"
    (cd "$ROOT/tests/node" && npm install --no-audit --no-fund --silent)
fi

CPY=${POWPOW_CPYTHON:-python3}
setup_venv "$CPY" "$ROOT/.venv" "test,lint,apps"
setup_venv pypy3 "$ROOT/.venv-pypy" "test,apps"

status=0
summary=()

# ---------------------------------------------------------------- lint (once, CPython venv)
# ruff (config in pyproject.toml) over the whole tree; mypy over the files
# listed in [tool.mypy] (the public API; py.typed ships).  A failure fails the
# run (POWPOW_RUFF_STRICT=0 makes ruff's verdict advisory for a local run).
RUFF_STRICT=${POWPOW_RUFF_STRICT:-1}
log "ruff"
set +e
"$ROOT/.venv/bin/ruff" check "$ROOT"
rc=$?
set -e
if [ $rc -eq 0 ]; then
    summary+=("ruff: passed")
elif [ "$RUFF_STRICT" = 1 ]; then
    summary+=("ruff: FAILED (rc=$rc)")
    status=1
else
    summary+=("ruff: problems found (advisory: POWPOW_RUFF_STRICT=0)")
fi
log "mypy"
set +e
(cd "$ROOT" && "$ROOT/.venv/bin/mypy")
rc=$?
set -e
summary+=("mypy: $([ $rc -eq 0 ] && echo passed || echo "FAILED (rc=$rc)")")
[ $rc -eq 0 ] || status=1

# ---------------------------------------------------------------- the four runs
for interp in cpython pypy; do
    venv="$ROOT/.venv"; [ "$interp" = pypy ] && venv="$ROOT/.venv-pypy"
    for mode in native pure; do
        log "pytest: $interp, $mode"
        if [ "$mode" = pure ]; then
            envs=(POWPOW_PURE=1)
        else
            envs=(POWPOW_REQUIRE_NATIVE=1)
        fi
        set +e
        env "${envs[@]}" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
        rc=$?
        set -e
        summary+=("$interp/$mode: $([ $rc -eq 0 ] && echo passed || echo "FAILED (rc=$rc)")")
        [ $rc -eq 0 ] || status=1
    done
done

# ---------------------------------------------------------------- Autobahn|Testsuite (quick profile)
# wstest (Python 2.7 from pyenv) against the echo server and as the server for our client, on each
# interpreter, native.  No pyenv 2.7 -> setup fails and this step FAILS (it is never skipped).
# The full 517-case run: tests/conformance/autobahn/run_full.sh (results in the README).
for interp in cpython pypy; do
    venv="$ROOT/.venv"; [ "$interp" = pypy ] && venv="$ROOT/.venv-pypy"
    log "autobahn quick profile: $interp, native"
    set +e
    POWPOW_REQUIRE_NATIVE=1 python3 "$ROOT/tests/conformance/autobahn/run_autobahn.py" --profile quick \
        --python "$venv/bin/python"
    rc=$?
    set -e
    summary+=("autobahn $interp: $([ $rc -eq 0 ] && echo passed || echo "FAILED (rc=$rc)")")
    [ $rc -eq 0 ] || status=1
done

log "summary"
printf '  %s\n' "${summary[@]}"
exit $status
