"""Syscalls per HTTP request, counted with ``strace -c -f`` over a fixed run (issue 13).

    python perf/syscalls.py [--python .venv/bin/python] [--seconds 5]

Starts perf/servers/powpow_hello.py under ``strace -c -f`` (server on core 0),
runs wrk for a fixed time over 64 keep-alive connections with wrk
(core 1) -- once one request per round trip, once 16 pipelined per write
(perf/pipeline.lua) -- and divides the syscalls strace counted by the requests
wrk completed.  Start-up and shutdown syscalls (a few thousand, imports) are
subtracted (a baseline run starts and stops the server with no requests).
The physical floor is one ``recv`` and one ``send`` per keep-alive round trip plus a share of
``epoll_wait``; targets (issue 13): keep-alive <= 2.2, pipelined x16 <= 0.25.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import free_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def wait_port(port: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def run_once(python: str, pipelined, seconds: int):
    """(requests, {syscall: calls}); ``pipelined`` None: start and stop only (the baseline)."""
    port = free_port()
    out = tempfile.mktemp(prefix="powpow-strace-")
    server = subprocess.Popen(["taskset", "-c", "0", "strace", "-c", "-f", "-o", out, python,
                               os.path.join(HERE, "servers", "powpow_hello.py"), str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        requests = 0
        if pipelined is not None:
            cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d%ds" % seconds]
            if pipelined:
                cmd += ["-s", os.path.join(HERE, "pipeline.lua")]
            res = subprocess.run(cmd + ["http://127.0.0.1:%d/" % port], capture_output=True, text=True,
                                 timeout=seconds + 60).stdout
            m = re.search(r"(\d+) requests in", res)
            requests = int(m.group(1)) if m else 0
    finally:
        # stop the traced server itself (strace then writes its summary and exits)
        kids = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
        for pid in kids:
            os.kill(int(pid), signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    with open(out) as f:
        text = f.read()
    os.unlink(out)
    calls = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            try:
                calls[parts[-1]] = int(parts[3])
            except ValueError:
                pass
    return requests, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    _, base = run_once(args.python, None, 0)  # start-up and shutdown, subtracted below
    print("baseline (start + stop, no requests): %d syscalls" % sum(base.values()))
    for name, pipelined in (("keep-alive", False), ("pipelined x16", True)):
        requests, calls = run_once(args.python, pipelined, args.seconds)
        calls = {k: v - base.get(k, 0) for k, v in calls.items() if v - base.get(k, 0) > 0}
        total = sum(calls.values())
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
        print("%-14s %8d requests  %6.3f syscalls/request  (%s)" % (
            name, requests, total / max(requests, 1),
            ", ".join("%s %.3f" % (k, v / max(requests, 1)) for k, v in top)))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
