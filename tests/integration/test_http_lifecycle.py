"""Server lifecycle in real processes: graceful shutdown, workers with unix sockets / loop= (issue 8 items 11, 23)."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from ._http import read_until_close
from ._net import in_thread

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the tree under test


def start(script: str, *args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)] + list(args),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    return p


def stop(p, timeout=15):
    if p.poll() is None:
        p.kill()
    p.wait(timeout)
    p.stdout.close()
    p.stderr.close()


SLOW_SERVER = """
    import sys
    from powpow.http import HttpServer

    server = HttpServer(None, grace_period=10)

    def handler(req, res):
        server.loop.add_timer(300, lambda: res.send(b"answer " + req.path.encode()))

    server.handler = handler
    server.listen(0, "127.0.0.1")
    print(server.port, flush=True)
    server.run()
"""


def test_sigterm_answers_pipelined_requests_in_flight_and_exits_at_once():
    p = start(SLOW_SERVER)
    try:
        port = int(p.stdout.readline())
        socks = []
        for i in range(10):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /a%d HTTP/1.1\r\nHost: x\r\n\r\nGET /b%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i, i))
            socks.append(s)
        time.sleep(0.1)  # both requests of each connection are being handled
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        answers = []
        for s in socks:
            with s:
                answers.append(read_until_close(s))
        assert p.wait(10) == 0
        elapsed = time.monotonic() - t0
        for i, data in enumerate(answers):
            # was: the second answer lost (0 of the second answers went out)
            assert b"answer /a%d" % i in data and b"answer /b%d" % i in data, data
            assert data.count(b"Connection: close") == 1
        assert elapsed < 2.0, elapsed  # was: the whole grace period (10 s)
    finally:
        stop(p)


UNIX_WORKERS = """
    import sys
    from powpow import Loop
    from powpow.http import HttpServer

    def handler(req, res):
        res.send(b"ok")

    mode = sys.argv[1]
    if mode in ("unix", "unix-threads"):
        server = HttpServer(handler, workers=2, grace_period=2,
                            worker_mode="thread" if mode == "unix-threads" else "process")
        server.listen_unix(sys.argv[2])
        print("ready", flush=True)
    else:
        server = HttpServer(handler, loop=Loop(), workers=2, grace_period=2)
        server.listen(0, "127.0.0.1")
        print(server.port, flush=True)
    server.run()
"""


@pytest.mark.parametrize("mode", ["unix", "loop", "unix-threads"])
def test_workers_each_build_their_own_loop(tmp_path, mode):
    path = str(tmp_path / "http.sock")
    p = start(UNIX_WORKERS, mode, path)
    try:
        line = p.stdout.readline().strip()
        if mode != "loop":
            deadline = time.monotonic() + 5
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.02)
        time.sleep(0.3)  # the workers are up
        answered = 0
        for _ in range(300):
            if mode != "loop":
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
            else:
                s = socket.create_connection(("127.0.0.1", int(line)))
            with s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                try:
                    data = read_until_close(s, 3)
                except socket.timeout:
                    data = b""
            answered += data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"ok")
        assert answered == 300  # was: 218 of 300 (one epoll instance shared by the workers)
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        stop(p)


@pytest.mark.parametrize("port", [65536, 70000, -1])
def test_listen_with_workers_rejects_a_port_out_of_range(port):
    """Regression: with workers > 1 the parent reserves the port with a plain bind, which
    raised OverflowError (and a host name took the IPv4/IPv6 guess); it resolves like a
    worker's listen now: a ValueError naming the port."""
    from powpow.http import HttpServer

    server = HttpServer(lambda req, res: res.send(b"ok"), workers=2)
    with pytest.raises(ValueError, match="port must be 0-65535, got %d" % port):
        server.listen(port, "127.0.0.1")


def test_listen_with_workers_reserves_a_named_host():
    from powpow.http import HttpServer

    server = HttpServer(lambda req, res: res.send(b"ok"), workers=2)
    server.listen(0, "localhost")
    try:
        assert server._worker_listeners.addresses[0][0] in ("127.0.0.1", "::1") and server.port > 0
    finally:
        server.close()


def test_run_in_a_thread_serves_and_shutdown_from_another_thread_drains():
    """run() off the main thread (a test fixture, an app embedding the server) serves
    without signal handlers, and shutdown() from the main thread is posted to the loop:
    the request in flight is answered, then run() returns. It raised LoopError
    ("add_signal() must be called from the main thread") before serving anything."""
    import http.client

    import powpow

    pending = []

    def handler(req, res):
        if req.path == "/slow":
            pending.append(res)  # answered later, from a timer on the loop
            req.loop.add_timer(300, lambda: res.send(b"late"))
        else:
            res.send(b"hello")

    server = powpow.HttpServer(handler, grace_period=5)
    server.listen(0, "127.0.0.1")
    port = server.port
    t, errors = in_thread(server.run)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/")
    assert c.getresponse().read() == b"hello", errors
    c.request("GET", "/slow")
    deadline = time.monotonic() + 5
    while not pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pending, errors
    server.shutdown()  # from the main thread, while /slow is in flight
    r = c.getresponse()
    assert (r.status, r.read(), r.getheader("Connection")) == (200, b"late", "close")
    t.join(10)
    assert not t.is_alive() and not errors
    c.close()
