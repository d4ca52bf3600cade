"""powpow.wsgi: PEP 3333 on the powpow HTTP server, checked with real clients.

Every app here that does not deliberately break the PEP runs under
``wsgiref.validate.validator``, which asserts the environ, start_response and
iterable rules on each call.
"""
import http.client
import json
import logging
import socket
import sys
import threading
import time
from wsgiref.validate import validator

import pytest

from ._wsgi import raw, read_response, read_until_close, wsgi_server

ENV_KEYS = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
            "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "HTTP_HOST",
            "HTTP_X_DUP", "HTTP_COOKIE", "HTTP_X_UNDER_SCORE", "wsgi.url_scheme", "wsgi.multithread",
            "wsgi.multiprocess", "wsgi.run_once", "wsgi.version", "wsgi.input_terminated")


def env_app(environ, start_response):
    info = {k: environ.get(k) for k in ENV_KEYS}
    info["errors_write"] = hasattr(environ["wsgi.errors"], "write")
    body = json.dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def get(port, path, method="GET", body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        c.close()


def test_environ_follows_pep3333():
    with wsgi_server(validator(env_app)) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        c.putrequest("POST", "/caf%C3%A9/a%2Fb?x=1&y=%20", skip_accept_encoding=True)
        c.putheader("Content-Type", "text/plain")
        c.putheader("Content-Length", "0")
        c.putheader("X-Dup", "one")
        c.putheader("X-Dup", "two")
        c.putheader("Cookie", "a=1")
        c.putheader("Cookie", "b=2")
        c.putheader("X_Under_Score", "spoof")
        c.endheaders()
        r = c.getresponse()
        assert r.status == 200
        env = json.loads(r.read())
        port = srv.port
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    # the decoded path's UTF-8 bytes as latin-1 characters; %2F decoded too
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9/a/b"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "0"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and int(env["REMOTE_PORT"]) > 0
    assert env["HTTP_HOST"] == "127.0.0.1:%d" % port
    assert env["HTTP_X_DUP"] == "one,two"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_UNDER_SCORE"] is None  # underscores never pose as dashes
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False and env["wsgi.version"] == [1, 0]
    assert env["errors_write"]


ABSOLUTE_FORM = [
    # (target, Host field or None, HTTP_HOST the app sees, PATH_INFO, QUERY_STRING) -- RFC 9112 3.2.2
    ("http://victim.example/admin", "attacker.example", "victim.example", "/admin", ""),
    ("http://victim.example:8080/a?x=1", "attacker.example", "victim.example:8080", "/a", "x=1"),
    ("http://victim.example?x=1", "attacker.example", "victim.example", "/", "x=1"),
    ("https://[::1]:8443/v6", "attacker.example", "[::1]:8443", "/v6", ""),
    ("http://victim.example/10", None, "victim.example", "/10", ""),  # HTTP/1.0: no Host needed
]


@pytest.mark.parametrize("target,host,http_host,path,query", ABSOLUTE_FORM, ids=[a[0] for a in ABSOLUTE_FORM])
def test_absolute_form_target_names_the_host_not_the_host_field(target, host, http_host, path, query):
    with wsgi_server(validator(env_app)) as srv:
        if host is None:
            head = "GET %s HTTP/1.0\r\nConnection: keep-alive\r\n" % target
        else:
            head = "GET %s HTTP/1.1\r\nHost: %s\r\n" % (target, host)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(head.encode() + b"\r\n")
            status, body = read_response(s)
        port = srv.port
    env = json.loads(body)
    assert status.startswith(b"HTTP/1.1 200"), status
    assert env["HTTP_HOST"] == http_host
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == (path, query)
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(port)  # the socket's, as always


@pytest.mark.parametrize("target", ["http://user:pw@victim.example/u", "http://bad<host>/x"])
def test_absolute_form_target_without_a_valid_host_is_answered_400(target):
    """RFC 9110 4.2.4 (userinfo) / RFC 9112 3.2 (an invalid host): the HTTP layer
    answers 400 and closes; the app never runs."""
    with wsgi_server(validator(env_app)) as srv:
        data = raw(srv.port, ("GET %s HTTP/1.1\r\nHost: attacker.example\r\n\r\n" % target).encode())
    assert data.startswith(b"HTTP/1.1 400 ") and b"HTTP_HOST" not in data


def test_root_path_becomes_script_name():
    with wsgi_server(validator(env_app), root_path="/api") as srv:
        env = json.loads(get(srv.port, "/api/items?q=1")[2])
        assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/api", "/items", "q=1")
        env = json.loads(get(srv.port, "/other")[2])
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/api", "/other")


def test_proxy_headers_from_trusted_peer_only():
    hdrs = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    with wsgi_server(validator(env_app)) as srv:  # default: trust 127.0.0.1
        env = json.loads(get(srv.port, "/", headers=hdrs)[2])
        assert env["REMOTE_ADDR"] == "203.0.113.7" and env["wsgi.url_scheme"] == "https"
    with wsgi_server(validator(env_app), forwarded_allow_ips="10.0.0.1") as srv:
        env = json.loads(get(srv.port, "/", headers=hdrs)[2])
        assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    with wsgi_server(validator(env_app), proxy_headers=False) as srv:
        env = json.loads(get(srv.port, "/", headers=hdrs)[2])
        assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"


def echo_app(environ, start_response):
    """Reads the body in the way the query asks: read(n), readline, iteration, read()."""
    inp = environ["wsgi.input"]
    how = environ["QUERY_STRING"]
    if how == "read64":
        parts = []
        while True:
            b = inp.read(64)
            assert len(b) <= 64
            if not b:
                break
            parts.append(b)
        data = b"".join(parts)
    elif how == "lines":
        data = b"".join(list(inp))  # iteration yields lines
    elif how == "readline":
        parts = []
        while True:
            line = inp.readline(5)
            assert len(line) <= 5
            if not line:
                break
            parts.append(line)
        data = b"|".join(parts)
    elif how == "readlines":
        data = b"".join(inp.readlines())
    else:
        data = inp.read()
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))])
    return [data]


@pytest.mark.parametrize("how", ["read", "read64", "lines", "readline", "readlines"])
def test_request_body_reads(how):
    body = b"line one\nline two\n" + b"x" * 3000 + b"\nend"
    with wsgi_server(echo_app) as srv:
        status, _, got = get(srv.port, "/?" + how, "POST", body=body)
        assert status == 200
        if how == "readline":
            assert got.replace(b"|", b"") == body
            assert got.startswith(b"line |one\n|line |two\n|")
        else:
            assert got == body


def test_chunked_request_body():
    def chunks():
        for i in range(50):
            yield b"%04d," % i
    with wsgi_server(validator(lambda e, s: echo_app(e, s))) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        c.request("POST", "/?read64", body=chunks(), encode_chunked=True)
        r = c.getresponse()
        assert r.status == 200
        assert r.read() == b"".join(b"%04d," % i for i in range(50))


def test_100_continue_only_when_the_app_reads():
    def app(environ, start_response):
        data = environ["wsgi.input"].read() if environ["PATH_INFO"] == "/read" else b"not read"
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]
    head = "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    with wsgi_server(app) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall((head % "/noread").encode())
            h, body = read_response(s)
            assert h.startswith(b"HTTP/1.1 200") and body == b"not read"
            assert b"100 Continue" not in h
            assert b"connection: close" in h.lower()  # the unsent body is never read
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall((head % "/read").encode())
            s.settimeout(10)
            interim = s.recv(100)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            s.sendall(b"hello")
            h, body = read_response(s)
            assert h.startswith(b"HTTP/1.1 200") and body == b"hello"


def test_streamed_iterable_and_write_callable():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/write":
            write(b"written ")
            return [b"then returned"]

        def gen():
            for i in range(5):
                yield b"part%d " % i
            yield b""  # empty strings are allowed and send nothing
        return gen()
    with wsgi_server(validator(app)) as srv:
        status, headers, body = get(srv.port, "/gen")
        assert status == 200 and body == b"part0 part1 part2 part3 part4 "
        assert ("Transfer-Encoding", "chunked") in headers
        assert get(srv.port, "/write")[2] == b"written then returned"


def test_head_request_keeps_content_length():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "11"), ("Content-Type", "text/plain")])
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else b"hello world"]
    with wsgi_server(validator(app)) as srv:
        status, headers, body = get(srv.port, "/", "HEAD")
        assert status == 200 and body == b"" and dict(headers)["Content-Length"] == "11"
        assert get(srv.port, "/")[2] == b"hello world"


def test_error_before_start_response_is_500_and_logged(caplog):
    def app(environ, start_response):
        raise RuntimeError("boom before the head")
    with caplog.at_level(logging.ERROR, logger="powpow.wsgi"):
        with wsgi_server(app) as srv:
            status, _, body = get(srv.port, "/")
    assert status == 500 and body.startswith(b"500")
    assert any("boom before the head" in (r.exc_text or "") or
               (r.exc_info and "boom before the head" in str(r.exc_info[1])) for r in caplog.records)


def test_exc_info_before_headers_replaces_the_response():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("app failed")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("X-Err", "1")],
                           sys.exc_info())
        return [b"sorry"]
    with wsgi_server(validator(app)) as srv:
        status, headers, body = get(srv.port, "/")
        assert status == 503 and dict(headers)["X-Err"] == "1" and body == b"sorry"


def test_exc_info_after_headers_reraises_and_closes():
    reraised = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"first part, "
            try:
                raise ValueError("mid-body failure")
            except ValueError:
                try:
                    start_response("500 Internal Server Error", [], sys.exc_info())
                except ValueError:
                    reraised.append(True)
                    raise
            yield b"never"
        return gen()
    with wsgi_server(app) as srv:
        data = raw(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reraised == [True]
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"first part, " in data
    assert not data.endswith(b"0\r\n\r\n")  # no terminating chunk: the client sees a cut body


def test_start_response_twice_without_exc_info_is_an_error():
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b"x"]
    with wsgi_server(app) as srv:
        assert get(srv.port, "/")[0] == 500


@pytest.mark.parametrize("status", ["100 Continue", "101 Switching Protocols", "102 Processing", "150 Whatever",
                                    "600 Beyond"])
def test_non_final_status_is_refused_by_start_response(status):
    """RFC 9110 §15.2: a 1xx is interim, never the answer (a client would keep waiting)."""
    seen = []

    def app(environ, start_response):
        try:
            start_response(status, [("Content-Type", "text/plain")])
        except ValueError as exc:
            seen.append(str(exc))
            raise
        return [b"final body"]
    with wsgi_server(app) as srv:
        data = raw(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 500 ") and b"final body" not in data
    assert len(seen) == 1 and "200..599" in seen[0] and status in seen[0]


@pytest.mark.parametrize("header", [("Connection", "close"), ("Transfer-Encoding", "chunked"),
                                    ("Keep-Alive", "timeout=5"), ("Upgrade", "h2c"), ("X-Bad", "a\r\nb: c")])
def test_hop_by_hop_and_split_headers_refused(header):
    seen = []

    def app(environ, start_response):
        try:
            start_response("200 OK", [header])
        except (AssertionError, ValueError) as exc:
            seen.append(exc)
            raise
        return [b"x"]
    with wsgi_server(app) as srv:
        status, headers, _ = get(srv.port, "/")
    assert status == 500 and len(seen) == 1
    assert "X-Bad" not in dict(headers)


def test_error_after_headers_closes_connection():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])

        def gen():
            yield b"a" * 10
            raise RuntimeError("mid-body")
        return gen()
    with wsgi_server(app) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        c.request("GET", "/")
        r = c.getresponse()
        assert r.status == 200
        with pytest.raises(http.client.IncompleteRead):
            r.read()


def test_content_length_mismatch_closes_connection():
    def app(environ, start_response):
        n = int(environ["QUERY_STRING"])
        start_response("200 OK", [("Content-Length", "10")])
        if environ["PATH_INFO"] == "/list":
            return [b"x" * n]

        def gen():
            for _ in range(n):
                yield b"x"
        return gen()
    with wsgi_server(app) as srv:
        for path in ("/list", "/gen"):
            # more than declared: exactly the declared bytes, then the connection closes
            data = raw(srv.port, ("GET %s?15 HTTP/1.1\r\nHost: x\r\n\r\nGET %s?10 HTTP/1.1\r\nHost: x\r\n\r\n"
                                  % (path, path)).encode())
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and body == b"x" * 10, (path, data)
            # fewer than declared: the body is short and the connection closes
            data = raw(srv.port, ("GET %s?4 HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
            head, _, body = data.partition(b"\r\n\r\n")
            assert b"Content-Length: 10" in head and body == b"xxxx", (path, data)


def test_close_called_on_success_error_and_disconnect():
    closed = []
    started = threading.Event()
    closed_ev = threading.Event()

    class Body:
        def __init__(self, kind):
            self.kind = kind

        def __iter__(self):
            if self.kind == "/ok":
                yield b"fine"
            elif self.kind == "/err":
                yield b"partial"
                raise RuntimeError("fails mid-body")
            else:
                started.set()
                while True:  # an endless stream: ends only when the client leaves
                    yield b"tick\n" * 100
                    time.sleep(0.005)

        def close(self):
            closed.append(self.kind)
            if self.kind == "/forever":
                closed_ev.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body(environ["PATH_INFO"])
    with wsgi_server(app) as srv:
        assert get(srv.port, "/ok")[2] == b"fine"
        raw(srv.port, b"GET /err HTTP/1.1\r\nHost: x\r\n\r\n")
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        assert started.wait(10)
        s.recv(1000)
        s.close()  # the client goes away mid-stream
        assert closed_ev.wait(10), "close() not called after the client left"
    assert sorted(closed) == ["/err", "/forever", "/ok"]


def test_limit_concurrency_answers_503():
    release = threading.Event()
    entered = threading.Event()

    def app(environ, start_response):
        entered.set()
        release.wait(10)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    with wsgi_server(app, limit_concurrency=1) as srv:
        results = []
        t = threading.Thread(target=lambda: results.append(get(srv.port, "/slow")))
        t.start()
        assert entered.wait(10)
        status, headers, _ = get(srv.port, "/second")
        assert status == 503 and dict(headers).get("Retry-After") == "1"
        release.set()
        t.join(10)
        assert results[0][0] == 200
        assert get(srv.port, "/third")[0] == 200  # the slot is free again


def test_thread_pool_saturation_queues_and_loop_stays_free():
    release = threading.Event()
    inside = []
    lock = threading.Lock()
    two_in = threading.Event()

    def app(environ, start_response):
        with lock:
            inside.append(environ["PATH_INFO"])
            if len(inside) == 2:
                two_in.set()
        if environ["PATH_INFO"].startswith("/block"):
            release.wait(10)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    with wsgi_server(app, threads=2) as srv:
        results = {}

        def fetch(path):
            results[path] = get(srv.port, path)[0]
        blockers = [threading.Thread(target=fetch, args=("/block%d" % i,)) for i in range(2)]
        for t in blockers:
            t.start()
        assert two_in.wait(10)
        queued = threading.Thread(target=fetch, args=("/queued",))
        queued.start()
        # both threads are busy: the third request waits its turn (queued, not refused) ...
        queued.join(0.5)
        assert queued.is_alive() and "/queued" not in inside
        # ... while the loop still answers what needs no thread, at once
        t0 = time.monotonic()
        assert raw(srv.port, b"BAD\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert time.monotonic() - t0 < 2
        release.set()
        for t in blockers + [queued]:
            t.join(10)
        assert results == {"/block0": 200, "/block1": 200, "/queued": 200}


def test_pipelined_requests_answered_in_order():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            time.sleep(0.2)
        body = environ["PATH_INFO"].encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    with wsgi_server(app, threads=4) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_until_close(s)
    bodies = [part.split(b"\r\n\r\n", 1)[1][:5] for part in data.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"/slow", b"/fast", b"/last"]


def test_graceful_shutdown_finishes_request_in_flight():
    entered = threading.Event()

    def app(environ, start_response):
        entered.set()
        time.sleep(0.5)
        start_response("200 OK", [("Content-Length", "4")])
        return [b"done"]
    with wsgi_server(app, timeout_graceful_shutdown=5) as srv:
        out = []
        t = threading.Thread(target=lambda: out.append(get(srv.port, "/")))
        t.start()
        assert entered.wait(10)
        t0 = time.monotonic()
        srv.shutdown()
        t.join(10)
        assert out and out[0][0] == 200 and out[0][2] == b"done"
        assert time.monotonic() - t0 < 5
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


def test_graceful_shutdown_is_bounded():
    def app(environ, start_response):
        time.sleep(30)  # never finishes in time
        start_response("200 OK", [])
        return [b""]
    srv_box = []
    t0 = time.monotonic()
    with wsgi_server(app, check_released=False, timeout_graceful_shutdown=0.5) as srv:
        srv_box.append(srv)
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
    assert time.monotonic() - t0 < 8
    assert read_until_close(s, 5) == b""  # closed without an answer
    s.close()


def test_inline_mode_serves_and_reads_bodies():
    def app(environ, start_response):
        assert environ["wsgi.multithread"] is False
        data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data) + 3))])
        return [b"in:", data]
    with wsgi_server(validator(app), inline=True) as srv:
        assert get(srv.port, "/", "POST", body=b"abc" * 1000)[2] == b"in:" + b"abc" * 1000
        assert get(srv.port, "/")[2] == b"in:"


def test_readme_wsgi_example_runs():
    import pathlib
    import re
    import subprocess
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme.read_text(), re.S) if "powpow.wsgi.Server(" in b]
    assert blocks, "README lost its WSGI example"
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["Hello, WSGI!"]


def test_https_sets_url_scheme(certs):
    import ssl
    with wsgi_server(validator(env_app), ssl_certfile=certs.cert, ssl_keyfile=certs.key) as srv:
        ctx = ssl.create_default_context(cafile=certs.ca)
        c = http.client.HTTPSConnection("localhost", srv.port, context=ctx, timeout=10)
        c.request("GET", "/tls")
        r = c.getresponse()
        env = json.loads(r.read())
        c.close()
    assert r.status == 200 and env["wsgi.url_scheme"] == "https" and env["PATH_INFO"] == "/tls"


def test_unix_socket(tmp_path):
    path = str(tmp_path / "wsgi.sock")
    with wsgi_server(validator(env_app), uds=path) as srv:
        assert srv.port is None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(b"GET /unix HTTP/1.1\r\nHost: example.test:8080\r\n\r\n")
            head, body = read_response(s)
    env = json.loads(body)
    assert head.startswith(b"HTTP/1.1 200") and env["PATH_INFO"] == "/unix"
    assert env["SERVER_NAME"] == "example.test" and env["REMOTE_ADDR"] is None


def test_unix_socket_absolute_form_server_name_from_the_target(tmp_path):
    path = str(tmp_path / "wsgi.sock")
    with wsgi_server(validator(env_app), uds=path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(b"GET http://victim.example/unix HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
            head, body = read_response(s)
    env = json.loads(body)
    assert head.startswith(b"HTTP/1.1 200") and env["PATH_INFO"] == "/unix"
    assert env["HTTP_HOST"] == "victim.example" and env["SERVER_NAME"] == "victim.example"


@pytest.mark.parametrize("bad", ["none", "str", "bytes", "str-list", "no-start"])
def test_bad_return_values_are_500_and_the_server_lives_on(bad):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/ok":
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]
        if bad != "no-start":
            start_response("200 OK", [("Content-Type", "text/plain")])
        return {"none": None, "str": "text", "bytes": b"bytes", "str-list": ["a", "b"], "no-start": [b"x"]}[bad]
    with wsgi_server(app) as srv:
        assert get(srv.port, "/bad")[0] == 500
        assert get(srv.port, "/ok")[2] == b"ok"


def test_idle_keep_alive_connection_closes_after_timeout():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    with wsgi_server(app, timeout_keep_alive=0.3) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = read_response(s)
            assert body == b"ok"
            t0 = time.monotonic()
            assert read_until_close(s, 5) == b""  # closed by the server, not by our timeout
            assert 0.2 < time.monotonic() - t0 < 3


def test_custom_options_reach_the_http_server():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    with wsgi_server(app, max_body=10) as srv:
        assert get(srv.port, "/", "POST", body=b"x" * 11)[0] == 413
        assert get(srv.port, "/", "POST", body=b"x" * 10)[0] == 200


SERVE_SCRIPT = r'''
import os, sys
import powpow.wsgi

def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

powpow.wsgi.serve(app, "127.0.0.1", int(sys.argv[1]), workers=int(sys.argv[2]), threads=2)
print("served", flush=True)
'''


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_blocks_until_sigterm_and_exits_cleanly(workers, tmp_path):
    import signal
    import subprocess
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    script = tmp_path / "serve_app.py"
    script.write_text(SERVE_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(port), str(workers)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        pids = set()
        end = time.monotonic() + 20
        while time.monotonic() < end and not pids:
            try:
                pids.add(get(port, "/")[2])
            except OSError:
                time.sleep(0.1)
        assert pids, "server never answered"
        for _ in range(20):
            pids.add(get(port, "/")[2])
        assert all(p.isdigit() for p in pids)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "served"


def test_pipelined_requests_run_one_at_a_time_per_connection():
    events = []

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        events.append("start " + path)
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            if path == "/first":
                time.sleep(0.3)
            for _ in range(64):
                yield path.encode() * 1000
            events.append("end " + path)
        return gen()
    with wsgi_server(app, threads=4) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_until_close(s)
    # the second app starts only once the first answer is out: its body never piles up behind it
    assert events == ["start /first", "end /first", "start /second", "end /second"]
    assert data.index(b"/first") < data.index(b"/second") and data.count(b"HTTP/1.1 200") == 2


def test_inline_stream_pauses_for_a_slow_client_and_shares_the_loop():
    produced = [0]
    closed = threading.Event()
    chunk = b"i" * (64 << 10)

    class Stream:
        def __iter__(self):
            for _ in range(512):  # 32 MiB
                produced[0] += len(chunk)
                yield chunk

        def close(self):
            closed.set()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/ping":
            start_response("200 OK", [("Content-Length", "4")])
            return [b"pong"]
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Stream()
    with wsgi_server(app, inline=True) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            time.sleep(0.5)
            # the loop is free for others while this stream waits for its client
            assert get(srv.port, "/ping")[2] == b"pong"
            assert produced[0] < 16 * (1 << 20), produced[0]
            got = len(read_until_close(s, 20))
        assert got > 32 * (1 << 20)  # the whole stream (plus head and chunk framing)
        assert closed.wait(5)
    with wsgi_server(app, inline=True) as srv:  # a client that leaves mid-stream: close() still runs
        closed.clear()
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1000)
        s.close()
        assert closed.wait(10)


def test_unix_socket_trusts_its_proxy_headers(tmp_path):
    """Behind a proxy on the unix socket (nginx ``proxy_pass http://unix:...``), X-Forwarded-For
    and -Proto are believed, as the ASGI server does with ``--uds``: the proxy is on this host.
    Was: ignored (no REMOTE_ADDR, ``wsgi.url_scheme`` http) unless ``forwarded_allow_ips='*'``."""
    path = str(tmp_path / "wsgi.sock")
    with wsgi_server(validator(env_app), uds=path, proxy_headers=True):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(b"GET /p HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: 203.0.113.7\r\n"
                      b"X-Forwarded-Proto: https\r\n\r\n")
            head, body = read_response(s)
    env = json.loads(body)
    assert head.startswith(b"HTTP/1.1 200")
    assert env["REMOTE_ADDR"] == "203.0.113.7" and env["wsgi.url_scheme"] == "https"
