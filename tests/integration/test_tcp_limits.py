"""Resource limits in a subprocess: EMFILE shedding with back-off, SIGPIPE never kills."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SERVER = textwrap.dedent("""
    import logging, os, resource, signal, sys
    import powpow
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(relativeCreated)d %(levelname)s %(message)s")
    in_use = len(os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 24, hard))
    loop = powpow.Loop()
    srv = powpow.TcpServer(loop, on_data=lambda c, d: c.send(d), backoff_ms=50).listen(0, "127.0.0.1", backlog=16)
    print(srv.port, flush=True)
    loop.add_signal(signal.SIGTERM, lambda s: loop.stop())
    loop.run()
    loop.remove_signal(signal.SIGTERM)
    srv.close()
    loop.close()
    print("shed=%d" % srv.shed, flush=True)
""")


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _echo(sock, msg=b"ping"):
    sock.sendall(msg)
    got = b""
    while len(got) < len(msg):
        d = sock.recv(100)
        assert d, "server closed a live connection"
        got += d
    return got


def test_emfile_sheds_load_keeps_serving_and_recovers():
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    flood = []
    live = []
    try:
        port = int(p.stdout.readline())
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            assert _echo(s) == b"ping"
            live.append(s)
        for _ in range(200):  # far beyond the ~14 fds the server has left
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            flood.append(s)
        time.sleep(0.5)  # the server hits EMFILE and starts shedding
        cpu0 = _cpu_seconds(p.pid)
        time.sleep(1.0)
        cpu = _cpu_seconds(p.pid) - cpu0
        assert cpu < 0.3, "server burned %.2fs of CPU in 1s while out of fds" % cpu
        for s in live:  # established connections keep being served
            s.settimeout(5)
            assert _echo(s, b"still here") == b"still here"
        for s in flood:
            s.close()
        flood = []
        deadline = time.monotonic() + 10
        while True:  # recovery: once fds are free, new connections are served again
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.settimeout(2)
                ok = _echo(s, b"back") == b"back"
                s.close()
                if ok:
                    break
            except (OSError, AssertionError):
                pass
            assert time.monotonic() < deadline, "server did not recover"
            time.sleep(0.1)
    finally:
        for s in flood + live:
            s.close()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    err = err.decode()
    assert p.returncode == 0, err
    assert "shed=" in out.decode() and int(out.decode().split("shed=")[1]) > 0
    # logged once per episode, not once per attempt
    assert err.count("shedding new connections") == 1, err
    assert err.count("available again") == 1, err


SIGPIPE_SCRIPT = textwrap.dedent("""
    import os, signal, socket, sys, tempfile, time
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as in a process embedding Python
    import powpow
    loop = powpow.Loop()
    conns, closes = [], []
    srv = powpow.TcpServer(loop, on_accept=conns.append, on_close=lambda c, e: closes.append(e)).listen(0, "127.0.0.1")
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    f = tempfile.NamedTemporaryFile()
    f.write(os.urandom(1 << 20)); f.flush()
    cl = socket.create_connection(("127.0.0.1", srv.port))
    while not conns:
        loop.run_once(10)
    cl.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\0\\0\\0\\0\\0\\0\\0")
    cl.close()  # RST: every later write hits a reset connection
    c = conns[0]
    time.sleep(0.05)
    for _ in range(3):
        c.send(b"x" * 100000)
        c.send_file(f.name)
        loop.run_once(10)
    while not closes:
        loop.run_once(10)
    srv.close(); loop.close()
    print("alive", type(closes[0]).__name__)
""")


def test_sigpipe_never_kills_the_process():
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", SIGPIPE_SCRIPT], capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr.decode())
    assert r.stdout.decode().startswith("alive ConnectionLost")
