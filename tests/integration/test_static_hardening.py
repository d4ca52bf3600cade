"""Static files over real sockets, issue 8 items 16 and 24: the bytes sent are those
of the file opened while planning (a symlink swapped in before the flush is not
followed), and running out of descriptors answers 503 and keeps serving."""
import os
import shutil
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



def test_root_symlink_repointed_by_a_deploy_serves_the_new_release(tmp_path):
    """``serve_static(req, res, "current")`` with ``current -> releases/v1`` flipped
    atomically to v2 (Capistrano-style): the running server answers from v2 at once,
    on a connection kept alive across the flip too, and keeps doing so once v1 is
    deleted; a link from v2 back into v1 is outside the root now."""
    for v in ("v1", "v2"):
        (tmp_path / "releases" / v).mkdir(parents=True)
        (tmp_path / "releases" / v / "index.html").write_bytes(b"release " + v.encode())
    os.symlink("../v1/index.html", str(tmp_path / "releases" / "v2" / "old.html"))
    current = tmp_path / "current"
    os.symlink("releases/v1", str(current))

    def handler(req, res):
        if not powpow.serve_static(req, res, str(current)):
            res.send_error(404)

    def get(sock, path):
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        [(head, body)] = recv_responses(sock, 1)
        return int(head.split(b" ", 2)[1]), body

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            assert get(s, b"/") == (200, b"release v1")
            os.symlink("releases/v2", str(tmp_path / "current.new"))
            os.replace(str(tmp_path / "current.new"), str(current))
            assert get(s, b"/") == (200, b"release v2")
        shutil.rmtree(str(tmp_path / "releases" / "v1"))
        (tmp_path / "releases" / "v1").mkdir()  # back, as a place the old root pointed into
        (tmp_path / "releases" / "v1" / "index.html").write_bytes(SECRET)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            assert get(s, b"/index.html") == (200, b"release v2")
            status, body = get(s, b"/old.html")
            assert status == 403 and SECRET not in body

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


def _nfds():
    return len(os.listdir("/proc/self/fd"))


def test_static_descriptors_are_released_after_every_kind_of_answer(tmp_path):
    """Every plan's descriptors end up closed: sent (full, range, multi-range),
    never sent (HEAD, 304, errors), or dropped with a client that left mid-file."""
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(4 << 20)
    (root / "big.bin").write_bytes(data)
    (root / "small.txt").write_bytes(ORIGINAL)

    def handler(req, res):
        if req.path == "/send_file":
            res.send_file(str(root / "small.txt"))
        elif not powpow.serve_static(req, res, str(root)):
            res.send_error(404)

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            [(head, body)] = recv_responses(s, 1)
            etag = [v for k, _, v in (ln.partition(b": ") for ln in head.split(b"\r\n")) if k == b"ETag"][0]
            baseline = _nfds()
            requests = [
                b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /send_file HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /small.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + b"\r\n\r\n",
                b"GET /small.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,4-5,9-10\r\n\r\n",
                b"GET /small.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=2-5\r\n\r\n",
                b"GET /small.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=999-\r\n\r\n",
                b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
            ]
            for _ in range(5):
                s.sendall(b"".join(requests))  # pipelined
                got = recv_responses(s, len(requests))
                assert [h.split(b" ")[1] for h, _ in got] == [
                    b"200", b"200", b"304", b"206", b"206", b"416", b"404"]
                assert got[0][1] == ORIGINAL and got[1][1] == ORIGINAL and got[4][1] == ORIGINAL[2:6]
                s.sendall(b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")  # no body follows
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    head += s.recv(1)
                assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: %d" % len(data) in head
            assert _nfds() <= baseline  # (PyPy's GC may close an older fd meanwhile)
        # a client that asks for a big file and leaves without reading it
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            c.recv(100)
            c.close()
        deadline = time.monotonic() + 5
        while _nfds() > baseline - 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _nfds() <= baseline - 2  # the keep-alive connection above (both ends) is gone too
