"""powpow behind a real nginx reverse proxy (keep-alive upstream), as in production."""
import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import time

from ._http import serving

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
