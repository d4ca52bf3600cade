"""A request body the server cannot spool (no descriptor left: EMFILE) is answered 503
with ``Retry-After`` and ``Connection: close``, logged as one warning, and the server
serves the same request once descriptors are free again.  It used to reset the
connection with no answer and log an "exception in callback" traceback.

The server is a real process with RLIMIT_NOFILE 64, exhausted by idle connections."""
import os
import socket
import subprocess
import sys
import time

from ._procs import stop_and_read_log

SERVER = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
import powpow

def handler(req, res):
    n = len(req.body) if req.body_file is None else req.body_file.seek(0, 2)
    res.send(b"got %d" % n)

srv = powpow.HttpServer(handler)
srv.listen(0, host="127.0.0.1")
print(srv.port, flush=True)
srv.run()
"""

BODY = b"z" * (200 << 10)  # past the 64 KiB spool threshold
POST = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY


def _fds(pid: int) -> int:
    return len(os.listdir("/proc/%d/fd" % pid))


def _answer(s: socket.socket) -> bytes:
    s.settimeout(5)
    data = b""
    while True:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            return data + b"<reset>"
        if not b:
            return data
        data += b
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep and b"content-length: " in head.lower():
            n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) >= n:
                return data


def test_a_body_that_cannot_be_spooled_gets_503_and_the_server_recovers():
    p = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    idle = []
    try:
        port = int(p.stdout.readline())
        deadline = time.monotonic() + 10
        while _fds(p.pid) < 64 and time.monotonic() < deadline:
            idle.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.02)
        time.sleep(0.3)
        assert _fds(p.pid) == 64
        s = idle[0]  # (accepted: the first ones hold the descriptors)
        s.sendall(POST)
        answer = _answer(s)
        head = answer.split(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"\r\nRetry-After: 1" in head and b"\r\nConnection: close" in head
        for c in idle:
            c.close()
        idle = []
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(POST)
            again = _answer(c)
        assert again.startswith(b"HTTP/1.1 200 ") and again.endswith(b"got %d" % len(BODY)), again[:200]
        assert p.poll() is None
    finally:
        for c in idle:
            c.close()
        log = stop_and_read_log(p)
    assert "answered 503" in log, log
    assert "Traceback" not in log and "exception in callback" not in log, log
