"""Uploads over real sockets (issue 8 item 18): spooled request bodies and
multipart files never have a name in the temporary directory, and their
descriptors are released when the response ends."""
import os
import socket
import tempfile
import threading
import time

from ._http import split_responses, serving

B = b"b0undary"


def nfds():
    return len(os.listdir("/proc/self/fd"))


def multipart(files):
    out = b""
    for i, data in enumerate(files):
        out += (b"--" + B + b"\r\nContent-Disposition: form-data; name=\"f%d\"; filename=\"f%d.bin\"\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n" % (i, i)) + data + b"\r\n"
    return out + b"--" + B + b"--\r\n"


def exchange(sock, request, timeout=10.0):
    sock.sendall(request)
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if b"\r\n\r\n" in data:
            try:
                got = split_responses(data)
            except AssertionError:
                got = []
            if got and len(got[0][1]) >= _length(got[0][0]):
                return got[0]
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    raise AssertionError("no complete response: %r" % data[:300])


def _length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_uploads_leave_no_named_files_and_release_descriptors(tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    seen = []
    stop = threading.Event()

    def watch():  # the spool directory, all the time the uploads run
        while not stop.is_set():
            names = os.listdir(str(spool))
            if names:
                seen.append(names)
            time.sleep(0.001)

    files = [os.urandom(300_000), os.urandom(200_000)]
    raw_body = os.urandom(1_000_000)

    def handler(req, res):
        if req.path == "/form":
            parts = req.form()
            res.send(b",".join(b"%d" % p.size for p in parts))
        elif req.path == "/raw":
            res.send(b"%d %d" % (req.body_size, int(req.body_file is not None)))
        else:
            res.send(b"ok")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with serving(handler) as srv:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                head, body = exchange(s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert body == b"ok"
                baseline = nfds()
                form = multipart(files)
                head, body = exchange(s, b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                                      b"boundary=" + B + b"\r\nContent-Length: %d\r\n\r\n" % len(form) + form)
                assert head.startswith(b"HTTP/1.1 200 ") and body == b"300000,200000"
                head, body = exchange(s, b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                                      % len(raw_body) + raw_body)
                assert body == b"1000000 1"
                # the spool files are closed once the responses are out, not when collected
                deadline = time.monotonic() + 2
                while nfds() > baseline and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert nfds() <= baseline, os.listdir("/proc/self/fd")
    finally:
        stop.set()
        watcher.join(5)
    assert seen == []
