"""Helpers shared by the networking tests (real loopback sockets, port 0)."""
import os
import socket
import threading
import time

import pytest

import powpow

PURE = not powpow.NATIVE
IMPL = "pypy" if hasattr(__import__("sys"), "pypy_version_info") else "cpython"


def in_thread(target):
    """Start ``target()`` in a daemon thread; returns (thread, errors): what it raised lands
    in ``errors`` so the fixture's teardown can assert that nothing did."""
    errors = []

    def run():
        try:
            target()
        except BaseException as exc:  # pragma: no cover - surfaces in the test
            errors.append(exc)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, errors


def run_until(loop, cond, timeout=20.0, step_ms=20):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in %.1fs" % timeout
        loop.run_once(step_ms)


def settle(loop, n=5):
    """A few zero-timeout iterations: deferred calls and closes finish."""
    for _ in range(n):
        loop.run_once(0)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pattern(n: int, seed: int = 0) -> bytes:
    """n pseudo-random bytes, fast to make (so reordering shows up in a hash)."""
    block = os.urandom(1 << 16) if seed == 0 else bytes((i * seed + 7) % 251 for i in range(1 << 16))
    reps, rest = divmod(n, len(block))
    # vary each repetition so equal blocks cannot hide reordering
    parts = [block[i % len(block):] + block[:i % len(block)] for i in range(reps)]
    return b"".join(parts) + block[:rest]


@pytest.fixture
def net_loop():
    """One loop on the default (edge-capable) backend, for the heavy tests."""
    lp = powpow.Loop(debug=True)
    yield lp
    lp.close()


def full_backlog_listener():
    """A listener that never accepts, with its backlog filled: SYNs to it are dropped
    (a connect to it stalls).  Returns ``(listener, fillers)``: close them all."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    fillers = []
    for _ in range(8):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(lst.getsockname())
        fillers.append(c)
    time.sleep(0.05)
    return lst, fillers
