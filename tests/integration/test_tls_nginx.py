"""nginx and TLS: nginx terminating TLS in front of a plaintext powpow, and nginx talking to an
HTTPS powpow upstream (proxy_pass https://, certificate verified, keep-alive upstream)."""
import hashlib
import http.client
import os
import socket
import subprocess
import tempfile
import time

from ._http import serving
from .test_http_proxy import NGINX, free_port

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
    upstream plain {{ server 127.0.0.1:{plain}; keepalive 4; }}
    upstream secure {{ server 127.0.0.1:{secure}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://plain;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen 127.0.0.1:{plain_port};
        location / {{
            proxy_pass https://secure;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
            proxy_buffering off;
        }}
    }}
}}
"""


def test_nginx_terminates_tls_and_proxies_to_https_upstream(certs):
    blob = os.urandom(4 << 20)
    seen = {"tls": set(), "plain": 0}

    def handler(req, res):
        if req.tls is not None:
            seen["tls"].add(req.tls.version)
        else:
            seen["plain"] += 1
        if req.path == "/blob":
            res.send(blob)
        else:
            res.send(b"tls=%s path=%s" % (str(req.tls is not None).encode(), req.path.encode()))

    with serving(handler) as plain, serving(handler, ssl=certs.server_ctx()) as secure, \
            tempfile.TemporaryDirectory() as tmp:
        tls_port, plain_port = free_port(), free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(tmp=tmp, plain=plain.port, secure=secure.port, tls_port=tls_port,
                                plain_port=plain_port, cert=certs.cert, key=certs.key, ca=certs.ca))
        proc = subprocess.Popen([NGINX, "-c", conf, "-p", tmp], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            for port in (tls_port, plain_port):
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        assert proc.poll() is None, proc.stderr.read()
                        assert time.monotonic() < deadline, "nginx did not start"
                        time.sleep(0.05)
            # client --TLS--> nginx --plain--> powpow
            c = http.client.HTTPSConnection("localhost", tls_port, timeout=10, context=certs.client_ctx())
            for i in range(5):
                c.request("GET", "/t%d" % i)
                assert c.getresponse().read() == b"tls=False path=/t%d" % i
            c.close()
            # client --plain--> nginx --TLS (verified)--> powpow, keep-alive upstream
            c = http.client.HTTPConnection("127.0.0.1", plain_port, timeout=10)
            for i in range(20):
                c.request("GET", "/u%d" % i)
                r = c.getresponse()
                assert r.status == 200, (r.status, open(os.path.join(tmp, "error.log")).read())
                assert r.read() == b"tls=True path=/u%d" % i
            c.request("GET", "/blob")
            assert hashlib.sha256(c.getresponse().read()).digest() == hashlib.sha256(blob).digest()
            c.close()
            assert secure.connection_count <= 4  # nginx kept its upstream TLS connections alive
            # nginx's proxy_ssl_protocols default stops at TLS 1.2 on older builds: either is fine
            assert seen["tls"] and seen["tls"] <= {"TLSv1.2", "TLSv1.3"} and seen["plain"] == 5
        finally:
            proc.terminate()
            proc.wait(10)
