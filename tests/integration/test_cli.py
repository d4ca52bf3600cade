"""The command line: `python -m powpow serve` (the README's main job) and `demo`, as real processes."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest


def test_demo_runs_echoes_and_exits_cleanly():
    proc = subprocess.run([sys.executable, "-m", "powpow", "demo", "--seconds", "1", "--clients", "4"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rates = [int(m) for m in re.findall(r"(\d+) echoes/s", proc.stdout)]
    assert rates and rates[0] > 100, proc.stdout
    assert "done:" in proc.stdout


def test_demo_stops_on_sigint():
    proc = subprocess.Popen([sys.executable, "-m", "powpow", "demo", "--seconds", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "TCP echo on 127.0.0.1:" in line
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "signal %d: stopping" % signal.SIGINT in out
    assert "done:" in out and "Traceback" not in err


_started = []


@pytest.fixture(autouse=True)
def _kill_leftover_servers():
    """A test that fails between start_serve and stop must not leave its server running."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def start_serve(*args):
    proc = subprocess.Popen([sys.executable, "-m", "powpow", "serve", "--port", "0"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _started.append(proc)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, int(m.group(1))


def get(port, path, headers=None):
    # (no retry: the URL is printed once every listener, the workers' too, exists)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def stop(proc, sig=signal.SIGINT):
    try:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err


def test_serve_builtin_site_then_ctrl_c():
    proc, port = start_serve()
    r, body = get(port, "/")
    assert r.status == 200 and b"powpow is serving" in body
    assert r.getheader("Content-Type") == "text/html"
    r, body = get(port, "/_powpow/info")
    info = json.loads(body)
    assert info["server"] == "powpow" and info["pid"] == proc.pid
    r, body = get(port, "/sample.txt", {"Range": "bytes=0-3"})
    assert r.status == 206 and body == b"0000"
    etag = get(port, "/sample.txt")[0].getheader("ETag")
    assert get(port, "/sample.txt", {"If-None-Match": etag})[0].status == 304
    out, err = stop(proc)
    assert proc.returncode == 0, err
    assert "shut down cleanly" in out and "Traceback" not in err


def test_serve_directory_with_workers_replaces_a_crashed_worker(tmp_path):
    (tmp_path / "hello.txt").write_bytes(b"hello from disk")
    proc, port = start_serve(str(tmp_path), "--workers", "2")
    try:
        deadline = time.monotonic() + 20
        while len(children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(port, "/hello.txt")[1] == b"hello from disk"
        workers = children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = children(proc.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            time.sleep(0.1)
        now = children(proc.pid)
        assert len(now) == 2 and workers[0] not in now  # replaced
        for _ in range(10):
            assert get(port, "/hello.txt")[1] == b"hello from disk"
    finally:
        out, err = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, err


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(x) for x in f.read().split()]


def test_serve_with_worker_threads_shuts_down_cleanly():
    proc, port = start_serve("--workers", "3", "--worker-threads")
    try:
        get(port, "/")  # up (a worker thread may answer before the last one has started)
        time.sleep(0.2)
        for _ in range(5):
            r, body = get(port, "/_powpow/info")
            info = json.loads(body)
            assert info["pid"] == proc.pid and info["threads"] >= 3  # one process, three loops
        assert children(proc.pid) == []  # no forked workers
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert "shut down cleanly" in out


def test_serve_rate_limited_download_outlasts_the_keepalive_timeout(tmp_path):
    """Issue 8 item 1 as reported: `serve DIR` + `curl --limit-rate` of a file that takes longer
    than keepalive_timeout to download (was: cut off at keep-alive, curl exit 18)."""
    size = 24 << 20
    (tmp_path / "big.bin").write_bytes(os.urandom(1 << 20) * 24)
    proc, port = start_serve(str(tmp_path), "--keepalive-timeout", "0.5")
    try:
        t0 = time.monotonic()
        out = subprocess.run(["curl", "-s", "-o", str(tmp_path / "got.bin"), "-w", "%{size_download}",
                              "--limit-rate", "12M", "http://127.0.0.1:%d/big.bin" % port],
                             capture_output=True, text=True, timeout=30)
        elapsed = time.monotonic() - t0
        assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
        assert int(out.stdout) == size
        assert (tmp_path / "got.bin").read_bytes() == (tmp_path / "big.bin").read_bytes()
        assert elapsed > 1.0  # slower than keepalive_timeout: it really was a slow download
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def run_cli(*args, timeout=15):
    """``python -m powpow ARGS`` expected to exit on its own: (exit code, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "powpow"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError("python -m powpow %s did not exit within %ds: %r"
                             % (" ".join(args), timeout, out)) from None
    return proc.returncode, out, err


def busy_port():
    """A listening socket on 127.0.0.1 (port 0: the kernel's pick) and its port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


def test_serve_and_demo_cannot_start_say_why_in_one_line():
    busy, port = busy_port()
    try:
        cases = [
            (["serve", "--port", str(port)], "Address already in use"),
            (["serve", "--port", str(port), "--workers", "2"], "Address already in use"),
            (["serve", "--port", "0", "--host", "no.such.host.invalid"], "no.such.host.invalid"),
            (["demo", "--port", str(port), "--seconds", "1"], "Address already in use"),
        ]
        for args, reason in cases:
            code, out, err = run_cli(*args)
            assert code == 1, (args, code, out, err)
            assert "Traceback" not in err, (args, err)
            assert err.startswith("powpow %s: cannot start: " % args[0]) and reason in err, (args, err)
            assert err.count("\n") == 1 and "serving" not in out, (args, out, err)
    finally:
        busy.close()


def test_bad_numbers_are_usage_errors():
    cases = [
        (["serve", "--port", "99999"], "--port"),  # would have been bound as 34463
        (["serve", "--port", "65536"], "--port"),
        (["serve", "--port", "-1"], "--port"),
        (["serve", "-p", "99999"], "-p"),  # http.server's spelling, named as typed
        (["serve", "--workers", "0"], "--workers"),
        (["serve", "--workers", "-3"], "--workers"),
        (["serve", "--keepalive-timeout", "-1"], "--keepalive-timeout"),
        (["serve", "--header-timeout", "nan"], "--header-timeout"),
        (["serve", "--write-timeout", "inf"], "--write-timeout"),
        (["serve", "--grace-period", "-0.5"], "--grace-period"),
        (["serve", "--max-connections", "0"], "--max-connections"),
        (["serve", "--min-body-rate", "-1"], "--min-body-rate"),
        (["demo", "--port", "70000"], "--port"),
        (["demo", "--seconds", "-1"], "--seconds"),
        (["asgi", "main:app", "--port", "70000"], "--port"),
        (["wsgi", "main:app", "--port", "-5"], "--port"),
        (["asgi", "main:app", "--workers", "0"], "--workers"),
        (["asgi", "main:app", "--timeout-keep-alive", "-1"], "--timeout-keep-alive"),
        (["wsgi", "main:app", "--timeout-graceful-shutdown", "inf"], "--timeout-graceful-shutdown"),
        (["wsgi", "main:app", "--threads", "0"], "--threads"),
        (["asgi", "main:app", "--limit-concurrency", "0"], "--limit-concurrency"),
    ]
    for args, flag in cases:
        code, out, err = run_cli(*args)
        assert code == 2, (args, code, out, err)
        assert "error: argument %s: " % flag in err and "Traceback" not in err, (args, err)
        assert "usage:" in err and out == "", (args, out)
