"""`python -m powpow serve` as real processes, review 7: CORS answers that shared caches
can keep, preflights for ranges and conditional requests, a bad --cors-origin is a usage
error, --livereload and --listing in a tree with a directory/file the server may not read."""
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from .test_static_semantics import field, get


def bound_by_permissions():
    """argv prefix that makes the server obey file modes as the tests' own user: as root
    (which reads a mode-0 file anyway) it keeps uid 0 but loses CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH, so a root-owned mode-0 path is refused to it (EACCES)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_*")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def start_serve(*args, prefix=()):
    proc = subprocess.Popen(list(prefix) + [sys.executable, "-m", "powpow", "serve", "--port", "0"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not m:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError("serve did not start: %r %r" % (line + out, err))
    return proc, int(m.group(1))


def stop(proc):
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return out, err


class mode_zero:
    """``chmod 0`` the paths for the block; their modes back afterwards (so tmp_path goes)."""

    def __init__(self, *paths):
        self.paths = [str(p) for p in paths]

    def __enter__(self):
        self.modes = [os.stat(p).st_mode & 0o7777 for p in self.paths]
        for p in self.paths:
            os.chmod(p, 0)

    def __exit__(self, *exc):
        for p, mode in zip(self.paths, self.modes):
            os.chmod(p, mode)


# -- --livereload in a tree with a directory it cannot read --------------------------

def ws_connect(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(4096)
        assert b, head
        head += b
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s, head.partition(b"\r\n\r\n")[2]


def test_livereload_starts_with_an_unreadable_subdirectory_and_watches_the_rest(tmp_path):
    prefix = bound_by_permissions()
    (tmp_path / "index.html").write_text("<body>home</body>")
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "page.txt").write_text("one")
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    with mode_zero(locked):
        proc, port = start_serve(str(tmp_path), "--livereload", prefix=prefix)  # was: cannot start, EACCES
        try:
            status, _, body = get(port, "/index.html")
            assert status == 200 and b"powpow live reload" in body
            ws, data = ws_connect(port, "/_powpow/livereload")
            with ws:
                (tmp_path / "ok" / "page.txt").write_text("two")  # beside the unreadable one: still watched
                deadline = time.monotonic() + 5
                while b"reload" not in data and time.monotonic() < deadline:
                    b = ws.recv(4096)
                    if not b:
                        break
                    data += b
                assert data.startswith(b"\x81\x06reload"), data
        finally:
            out, err = stop(proc)
    assert err.count("not watching %s for changes" % locked) == 1, err
    assert "Traceback" not in err


def test_livereload_answers_are_revalidated_so_a_reload_shows_edited_assets(tmp_path):
    """With --livereload every file is answered ``Cache-Control: no-cache``: the reload
    after an edit revalidates the stylesheet instead of reusing a copy the browser
    judged fresh by its age (RFC 9111 §4.2.2).  Was: no Cache-Control, so a CSS file
    last modified 10 days ago was fresh for a day in Chromium's cache, and the
    reload showed the old style."""
    (tmp_path / "index.html").write_text('<link rel="stylesheet" href="s.css"><body>x</body>')
    css = tmp_path / "s.css"
    css.write_text("body { color: red }")
    old = time.time() - 10 * 86400
    os.utime(css, (old, old))
    proc, port = start_serve(str(tmp_path), "--livereload")
    try:
        for path in ("/index.html", "/s.css"):
            status, headers, _ = get(port, path)
            assert status == 200 and field(headers, "Cache-Control") == "no-cache", (path, headers)
        status, headers, _ = get(port, "/s.css")
        etag = field(headers, "ETag")
        status, headers, _ = get(port, "/s.css", ("If-None-Match", etag))
        assert status == 304 and field(headers, "Cache-Control") == "no-cache", headers
    finally:
        stop(proc)
    proc, port = start_serve(str(tmp_path))  # without --livereload nothing is added
    try:
        status, headers, _ = get(port, "/s.css")
        assert status == 200 and field(headers, "Cache-Control") is None, headers
    finally:
        stop(proc)


# -- an index the server may not read (see test_static_semantics for the symlink case) -----------------

def test_listing_never_replaces_an_index_the_server_may_not_read(tmp_path):
    prefix = bound_by_permissions()
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "index.html").write_text("<p>members only</p>")
    (tmp_path / "private" / "backup.sql").write_text("x")
    with mode_zero(tmp_path / "private" / "index.html"):
        proc, port = start_serve(str(tmp_path), "--listing", prefix=prefix)
        try:
            status, _, body = get(port, "/private/")
        finally:
            stop(proc)
    assert status == 403 and b"backup.sql" not in body, (status, body)


# -- items 3 and 7: CORS for static files ------------------------------------------------------------

APP = "https://app.example"


def test_cors_origin_answers_say_vary_origin_even_without_origin(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello")
    # the value copied from the address bar (trailing slash) is accepted
    proc, port = start_serve(str(tmp_path), "--cors-origin", APP + "/")
    try:
        cases = [((), None), ((("Origin", "https://evil.example"),), None), ((("Origin", APP),), APP)]
        for fields, allowed in cases:
            status, headers, body = get(port, "/a.txt", *fields)
            assert status == 200 and body == b"hello"
            # a shared cache keeps the answer to a plain <img>/link GET apart from a fetch()'s
            assert field(headers, "Vary") == "Origin", (fields, headers)
            assert field(headers, "Access-Control-Allow-Origin") == allowed, (fields, headers)
    finally:
        stop(proc)


def test_cors_any_origin_answers_allow_star_even_without_origin_and_suit_ranges(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"0123456789")
    proc, port = start_serve(str(tmp_path), "--cors")
    try:
        status, headers, _ = get(port, "/a.txt")
        assert status == 200 and field(headers, "Access-Control-Allow-Origin") == "*", headers
        assert field(headers, "Vary") is None
        # what a script reading a file in pieces or revalidating it asks for: no 403 preflight
        asked = "range, if-none-match, if-modified-since, if-range"
        status, headers, _ = get(port, "/a.txt", ("Origin", APP), ("Access-Control-Request-Method", "GET"),
                                 ("Access-Control-Request-Headers", asked), method="OPTIONS")
        assert status == 204, headers
        assert field(headers, "Access-Control-Allow-Headers") == asked
        # and what it reads back
        status, headers, body = get(port, "/a.txt", ("Origin", APP), ("Range", "bytes=2-4"))
        assert status == 206 and body == b"234"
        exposed = {h.strip().lower() for h in field(headers, "Access-Control-Expose-Headers").split(",")}
        assert {"content-range", "accept-ranges", "etag"} <= exposed, headers
        assert field(headers, "Access-Control-Allow-Origin") == "*"
    finally:
        stop(proc)


# -- a bad --cors-origin is a usage error -----------------------------------------------------

def test_bad_cors_origin_is_a_usage_error():
    for value in ("https://app.example/path", "app.example", "https://", "https://app.example//"):
        proc = subprocess.run([sys.executable, "-m", "powpow", "serve", "--port", "0", "--cors-origin", value],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (value, proc.returncode, proc.stderr)
        assert "error: argument --cors-origin: %r" % value in proc.stderr, (value, proc.stderr)
        assert "usage:" in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""


# -- http.server's spellings ----------------------------------------------------------

def test_http_server_spellings_directory_bind_and_p_work(tmp_path):
    """Users come from `python -m http.server -d DIR -b HOST`: the same flags serve the
    same way (they were 'unrecognized arguments'), and http.server's positional port
    is refused with a hint instead of 'not a directory' alone."""
    (tmp_path / "hello.txt").write_bytes(b"from -d\n")
    proc = subprocess.Popen([sys.executable, "-m", "powpow", "serve", "-d", str(tmp_path), "-b", "127.0.0.1",
                             "-p", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"serving (\S+) at http://127\.0\.0\.1:(\d+)/", line)
        assert m and m.group(1) == str(tmp_path), (line, proc.stderr.read() if proc.poll() is not None else "")
        status, _, body = get(int(m.group(2)), "/hello.txt")
        assert (status, body) == (200, b"from -d\n")
    finally:
        stop(proc)
    bad = subprocess.run([sys.executable, "-m", "powpow", "serve", "8080"], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2
    assert "is not a directory (the port is given as --port 8080)" in bad.stderr, bad.stderr
    two = subprocess.run([sys.executable, "-m", "powpow", "serve", str(tmp_path), "-d", "/"],
                         capture_output=True, text=True, timeout=30)
    assert two.returncode == 2 and "two directories given" in two.stderr, two.stderr


def test_serve_head_limits_can_be_raised_for_large_cookies(tmp_path):
    """Browsers send every localhost cookie to every port: a few dev apps make a head over
    the default 8 KiB, and each file gets 431.  ``serve --max-header-size`` raises the limit,
    as the asgi and wsgi commands' flag does.  Was: serve had no way to."""
    from .test_asgi_cli import _status_with_cookie

    (tmp_path / "a.txt").write_text("a")
    for extra, want in (((), 431), (("--max-header-size", "32768"), 200)):
        proc, port = start_serve(str(tmp_path), *extra)
        try:
            assert _status_with_cookie("http://127.0.0.1:%d/a.txt" % port, 12000) == want, extra
        finally:
            stop(proc)
