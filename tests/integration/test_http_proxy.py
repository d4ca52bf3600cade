"""powpow behind a real nginx reverse proxy (keep-alive upstream), as in production."""
import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from powpow import Loop
from powpow.http import HttpServer

from ._http import raw, serving

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONF = """
worker_processes 1;
daemon off;
master_process off;
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream powpow {{ server 127.0.0.1:{upstream}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://powpow;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def test_nginx_reverse_proxy_keepalive_upstream_and_forwarded_for():
    upstream_conns = set()

    def handler(req, res):
        upstream_conns.add(id(res._proto))
        res.send(("%s %s" % (req.client_ip, req.path)).encode(), headers=[("Content-Type", "text/plain")])

    with serving(handler, trusted_proxies=("127.0.0.1",)) as srv, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(tmp=tmp, port=port, upstream=srv.port))
        proc = subprocess.Popen([NGINX, "-c", conf, "-p", tmp], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert proc.poll() is None, proc.stderr.read()
                    assert time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.05)
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for i in range(30):
                c.request("GET", "/p%d" % i, headers={"X-Forwarded-For": "203.0.113.7"})
                r = c.getresponse()
                assert r.status == 200
                assert r.read() == b"203.0.113.7 /p%d" % i
            c.close()
            assert len(upstream_conns) <= 4  # nginx reused its upstream keep-alive connections
        finally:
            proc.terminate()
            proc.wait(10)


def _start_nginx(tmp, upstream_port):
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(tmp=tmp, port=port, upstream=upstream_port))
    proc = subprocess.Popen([NGINX, "-c", conf, "-p", tmp], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("nginx did not start: %r" % proc.stderr.read()) from None
            time.sleep(0.05)


def _get(port, xff_lines, source="127.0.0.1"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        c.putrequest("GET", "/ip")
        for line in xff_lines:
            c.putheader("X-Forwarded-For", line)
        c.endheaders()
        r = c.getresponse()
        assert r.status == 200
        return r.read().decode()
    finally:
        c.close()


def test_forged_x_forwarded_for_behind_nginx():
    """Issue 8 item 17 through a real proxy: nginx appends the address it saw to
    whatever the client sent.  A client that is not trusted (127.0.0.2) cannot
    name another address with forged lines; one that is (127.0.0.1, e.g. a
    co-located proxy) never gets garbage or a port taken for an address."""
    def handler(req, res):
        res.send(str(req.client_ip).encode(), headers=[("Content-Type", "text/plain")])

    with serving(handler, trusted_proxies=("127.0.0.1",)) as srv, tempfile.TemporaryDirectory() as tmp:
        proc, port = _start_nginx(tmp, srv.port)
        try:
            assert _get(port, ["6.6.6.6", "7.7.7.7, 8.8.8.8"], source="127.0.0.2") == "127.0.0.2"
            assert _get(port, ["<script>alert(1)</script>"], source="127.0.0.2") == "127.0.0.2"
            assert _get(port, ["<script>"]) == "127.0.0.1"
            assert _get(port, ["203.0.113.7:5555"]) == "203.0.113.7"
            assert _get(port, ["[2001:db8::7]:443"]) == "2001:db8::7"
            assert _get(port, ["203.0.113.7"]) == "203.0.113.7"
        finally:
            proc.terminate()
            proc.wait(10)


def test_forged_first_x_forwarded_for_line_does_not_win():
    """A proxy that appends its own X-Forwarded-For *line* (HAProxy's
    ``option forwardfor``, AWS ELB) after the client's forged one: the rightmost
    untrusted hop across all lines is the client; CIDR networks are trusted."""
    def handler(req, res):
        res.send(str(req.client_ip).encode())

    with serving(handler, trusted_proxies=("127.0.0.0/8",)) as srv:
        data = raw(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\n198.51.100.7"), data


def test_unix_socket_peer_trusted_only_when_configured(tmp_path):
    """A proxy on the same host talking over a unix socket: its X-Forwarded-For is
    believed with trusted_proxies=("unix",), and only then."""
    def handler(req, res):
        res.send(str(req.client_ip).encode())

    for trusted, expected in ((("unix",), b"198.51.100.7"), (("127.0.0.1",), b"None")):
        path = str(tmp_path / ("s%d.sock" % len(expected)))
        loop = Loop()
        server = HttpServer(handler, loop=loop, trusted_proxies=trusted)
        server.listen_unix(path)
        th = threading.Thread(target=loop.run, daemon=True)
        th.start()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(path)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\n" + expected), data
        finally:
            loop.post(loop.stop)
            th.join(10)
            server.close()
            loop.close()


@pytest.mark.parametrize("mode,expected", [("x-forwarded-for", b"198.51.100.7"), ("forwarded", b"203.0.113.9")])
def test_forwarded_header_is_read_only_when_chosen(mode, expected):
    """RFC 7239 ``Forwarded`` is opt-in: proxies that append X-Forwarded-For
    pass a client's own Forwarded header through, so by default it is ignored."""
    def handler(req, res):
        res.send(str(req.client_ip).encode())

    with serving(handler, trusted_proxies=("127.0.0.1",), forwarded_header=mode) as srv:
        data = raw(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Forwarded: for=203.0.113.9\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\n" + expected), data
