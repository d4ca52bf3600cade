#!/usr/bin/env bash
# Build Autobahn|Testsuite's `wstest` (a Python 2.7 program) once, in a cache directory, and print its path.
#
#   bash tests/conformance/autobahn/setup_wstest.sh [CACHE_DIR]   (default: $POWPOW_AUTOBAHN_DIR or ~/.cache/autobahn)
#
# Needs pyenv's CPython 2.7 (present on the development and CI machines). Without it this exits 3
# with a message: the conformance step must then FAIL, never be skipped.
set -euo pipefail
cache=${1:-${POWPOW_AUTOBAHN_DIR:-$HOME/.cache/autobahn}}
wstest="$cache/ab27/bin/wstest"
if [ -x "$wstest" ] && "$wstest" --autobahnversion >/dev/null 2>&1; then
    echo "$wstest"
    exit 0
fi
pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
py27=""
for cand in "$pyenv_root"/versions/2.7*/bin/python2.7; do
    [ -x "$cand" ] && { py27=$cand; break; }
done
if [ -z "$py27" ]; then
    echo "setup_wstest.sh: no CPython 2.7 under $pyenv_root/versions: Autobahn|Testsuite cannot run" >&2
    exit 3
fi
mkdir -p "$cache"
# virtualenv 20.21 is the last release that still makes Python 2.7 environments
[ -x "$cache/venv3/bin/virtualenv" ] || {
    python3 -m venv "$cache/venv3"
    "$cache/venv3/bin/pip" install -q "virtualenv==20.21.1"
}
"$cache/venv3/bin/virtualenv" -q -p "$py27" "$cache/ab27"
"$cache/ab27/bin/pip" install -q "autobahntestsuite==25.10.1"
"$wstest" --autobahnversion >/dev/null
echo "$wstest"
