"""Static files and load correctness over real sockets: curl, http.client, wrk."""
import email.parser
import hashlib
import http.client
import os
import re
import subprocess

import powpow

from ._http import serving


def static_handler(root, **opts):
    def handler(req, res):
        if req.path == "/download":
            res.send_file(os.path.join(root, "big.bin"), download=True)
        elif not powpow.serve_static(req, res, root, **opts):
            res.send_error(404)
    return handler


def make_tree(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "index.html").write_text("<h1>home</h1>")
    (tmp_path / ".secret").write_text("hidden")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("A")
    outside = tmp_path.parent / ("outside-" + tmp_path.name)
    outside.mkdir(exist_ok=True)
    (outside / "x.txt").write_text("outside")
    os.symlink(str(outside / "x.txt"), str(tmp_path / "escape.txt"))
    return data


def curl(*args):
    out = subprocess.run(["curl", "-s", "-S"] + list(args), capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_curl_full_file_range_and_multirange(tmp_path):
    data = make_tree(tmp_path)
    with serving(static_handler(str(tmp_path))) as srv:
        base = "http://127.0.0.1:%d" % srv.port
        assert hashlib.sha256(curl(base + "/big.bin")).digest() == hashlib.sha256(data).digest()
        assert curl("-r", "100-199", base + "/big.bin") == data[100:200]
        assert curl("-r", "-10", base + "/big.bin") == data[-10:]
        head = curl("-i", "-r", "0-1,1000-1001", base + "/big.bin")
        hdr, _, body = head.partition(b"\r\n\r\n")
        assert hdr.startswith(b"HTTP/1.1 206 ")
        ctype = re.search(rb"Content-Type: (multipart/byteranges; boundary=\S+)", hdr).group(1).decode()
        msg = email.parser.BytesParser().parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        parts = [p.get_payload(decode=True) for p in msg.get_payload()]
        assert parts == [data[0:2], data[1000:1002]]
        head = curl("-i", "-r", "2000000-", base + "/big.bin")
        assert head.startswith(b"HTTP/1.1 416 ") and b"Content-Range: bytes */1048576" in head


def test_conditional_requests_with_curl(tmp_path):
    make_tree(tmp_path)
    with serving(static_handler(str(tmp_path))) as srv:
        url = "http://127.0.0.1:%d/index.html" % srv.port
        head = curl("-i", url).decode()
        etag = re.search(r"ETag: (\S+)", head).group(1)
        lm = re.search(r"Last-Modified: (.+?)\r\n", head).group(1)
        assert curl("-i", "-H", "If-None-Match: " + etag, url).startswith(b"HTTP/1.1 304 ")
        assert curl("-i", "-H", 'If-None-Match: "nope", W/' + etag, url).startswith(b"HTTP/1.1 304 ")
        assert curl("-i", "-H", "If-Modified-Since: " + lm, url).startswith(b"HTTP/1.1 304 ")
        assert curl("-i", "-H", "If-None-Match: \"other\"", url).startswith(b"HTTP/1.1 200 ")
        # If-Range with a stale validator: the whole file, not a range
        assert curl("-i", "-r", "0-1", "-H", 'If-Range: "stale"', url).startswith(b"HTTP/1.1 200 ")


def test_traversal_and_hidden_files_refused(tmp_path):
    make_tree(tmp_path)
    with serving(static_handler(str(tmp_path))) as srv:
        base = "http://127.0.0.1:%d" % srv.port
        for path in ("/../../etc/passwd", "/sub/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                     "/sub%2f..%2f..%2fetc/passwd", "/escape.txt", "/.secret", "/sub/a.txt%00.html",
                     "/sub\\..\\..\\etc\\passwd"):
            out = curl("-i", "--path-as-is", base + path)
            status = int(out.split(b" ", 2)[1])
            assert status in (403, 404), (path, out[:80])
            assert b"root:" not in out and b"outside" not in out and b"hidden" not in out
        assert curl("--path-as-is", base + "/sub/a.txt") == b"A"


def test_head_redirect_listing_download(tmp_path):
    data = make_tree(tmp_path)
    with serving(static_handler(str(tmp_path), listing=True)) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        c.request("HEAD", "/big.bin")
        r = c.getresponse()
        assert r.status == 200 and r.getheader("Content-Length") == str(len(data)) and r.read() == b""
        c.request("GET", "/sub?x=1")
        r = c.getresponse()
        r.read()
        assert r.status == 301 and r.getheader("Location") == "/sub/?x=1"
        c.request("GET", "/sub/")
        r = c.getresponse()
        assert r.status == 200 and b'href="a.txt"' in r.read()
        c.request("GET", "/download")
        r = c.getresponse()
        assert r.getheader("Content-Disposition").startswith("attachment")
        assert r.read() == data
        c.close()


def test_load_100k_pipelined_requests_all_well_formed():
    """100 000 requests, 16-deep pipelined over 4 connections; every response byte-checked."""
    import socket

    def handler(req, res):
        res.send(b"ok:" + req.path.encode(), headers=[("Content-Type", "text/plain")])

    with serving(handler) as srv:
        total = 0
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                buf = b""
                left = 25000
                while left:
                    n = min(16, left)
                    left -= n
                    s.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % j for j in range(n)))
                    for j in range(n):
                        while True:
                            head_end = buf.find(b"\r\n\r\n")
                            if head_end >= 0 and len(buf) >= head_end + 4 + len(b"ok:/%d" % j):
                                break
                            data = s.recv(1 << 16)
                            assert data, "server closed mid-stream"
                            buf += data
                        head = buf[:head_end]
                        body = b"ok:/%d" % j
                        assert head.startswith(b"HTTP/1.1 200 OK\r\nDate: "), head
                        assert head.endswith(b"\r\nContent-Length: %d" % len(body)), head
                        assert buf[head_end + 4:head_end + 4 + len(body)] == body
                        buf = buf[head_end + 4 + len(body):]
                        total += 1
                assert buf == b""
        assert total == 100000


def test_wrk_pipelined_load_has_no_errors():
    def handler(req, res):
        res.send(b"Hello, World!", headers=[("Content-Type", "text/plain")])

    script = os.path.join(os.path.dirname(__file__), "..", "..", "perf", "pipeline.lua")
    with serving(handler) as srv:
        out = subprocess.run(["wrk", "-t1", "-c16", "-d1s", "-s", script, "http://127.0.0.1:%d/" % srv.port],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "Non-2xx" not in out.stdout and "Socket errors" not in out.stdout, out.stdout
        requests = int(re.search(r"(\d+) requests in", out.stdout).group(1))
        assert requests > 1000, out.stdout
