"""Static files over real sockets, issue 8 items 16 and 24: the bytes sent are those
of the file opened while planning (a symlink swapped in before the flush is not
followed), and running out of descriptors answers 503 and keeps serving."""
import os
import socket
import subprocess
import sys
import textwrap
import time

import powpow

from ._http import serving, split_responses

ORIGINAL = b"original file inside the root\n"
SECRET = b"SECRET file outside the root\n"


def recv_responses(sock, n, timeout=5.0):
    """Read until ``n`` Content-Length framed responses arrived; return them."""
    data = b""
    end = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < end:
        try:
            got = split_responses(data)
            if len(got) >= n and all(len(b) == _length(h) for h, b in got):
                return got
        except AssertionError:
            pass
        try:
            b = sock.recv(65536)
        except socket.timeout:
            continue
        if not b:
            break
        data += b
    return split_responses(data)


def _length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_symlink_swapped_in_behind_a_pipelined_answer_is_not_followed(tmp_path):
    """Request 1 is planned, request 2's handler (same batch, before the flush)
    replaces the file by a symlink out of the root: request 1 still gets the
    original bytes, request 2 is answered too, and a new request is refused."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "f.txt").write_bytes(ORIGINAL)
    (tmp_path / "secret.txt").write_bytes(SECRET)

    def handler(req, res):
        if req.path == "/swap":
            os.unlink(str(root / "f.txt"))
            os.symlink(str(tmp_path / "secret.txt"), str(root / "f.txt"))
            res.send(b"swapped")
        elif not powpow.serve_static(req, res, str(root)):
            res.send_error(404)

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /f.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /swap HTTP/1.1\r\nHost: x\r\n\r\n")
            got = recv_responses(s, 2)
        assert len(got) == 2, got
        assert got[0][0].startswith(b"HTTP/1.1 200 ") and got[0][1] == ORIGINAL
        assert got[1][1] == b"swapped"
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /f.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            [(head, body)] = recv_responses(s, 1)
        assert head.startswith(b"HTTP/1.1 403 ") and SECRET not in body


SERVER = textwrap.dedent("""
    import os, resource, sys
    import powpow
    from powpow.http import HttpServer

    root = sys.argv[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    hog = []

    def handler(req, res):
        if req.path == "/hog":          # take every descriptor left
            try:
                while True:
                    hog.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            res.send(b"%d" % len(hog))
        elif req.path == "/free":
            while hog:
                os.close(hog.pop())
            res.send(b"freed")
        elif not powpow.serve_static(req, res, root):
            res.send_error(404)

    server = HttpServer(handler, header_timeout=5, keepalive_timeout=5)
    server.listen(0, "127.0.0.1")
    print(server.port, flush=True)
    server.run()
""")


def test_out_of_descriptors_answers_503_and_keeps_serving(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(200_000)
    (root / "f.bin").write_bytes(data)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read() if proc.poll() is not None else line
        port = int(line)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /hog HTTP/1.1\r\nHost: x\r\n\r\n")
            [(head, body)] = recv_responses(s, 1)
            assert head.startswith(b"HTTP/1.1 200 ") and int(body) > 0
            s.sendall(b"GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            [(head, body)] = recv_responses(s, 1)
            assert head.startswith(b"HTTP/1.1 503 "), head
            assert b"\r\nRetry-After: 1\r\n" in head
            s.sendall(b"GET /free HTTP/1.1\r\nHost: x\r\n\r\n")
            [(head, body)] = recv_responses(s, 1)
            assert body == b"freed"
            s.sendall(b"GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            [(head, body)] = recv_responses(s, 1)
            assert head.startswith(b"HTTP/1.1 200 ") and body == data
        # and new connections are served
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /f.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n")
            [(head, body)] = recv_responses(s, 1)
            assert head.startswith(b"HTTP/1.1 206 ") and body == data[:10]
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert b"503" in err  # the log line
    assert b"Traceback" not in err, err.decode(errors="replace")
