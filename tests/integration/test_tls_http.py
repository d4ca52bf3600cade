"""HTTPS with real clients: http.client/ssl, curl --cacert, openssl s_client, the CLI.

Certificates are made by the tests with the openssl command (fixture ``certs``)."""
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time

from powpow.http.server import serve_static
from powpow.net.tls import server_context

from ._http import serving


def tls_handler(req, res):
    t = req.tls
    if req.method == "POST":
        res.send(json.dumps({"size": len(req.body), "sha256": hashlib.sha256(req.body).hexdigest()}).encode())
        return
    if t is None:
        res.send(json.dumps({"tls": None, "path": req.path}).encode())
        return
    res.send(json.dumps({"version": t.version, "cipher": t.cipher, "alpn": t.alpn,
                         "peer": t.peer_cert and dict(x[0] for x in t.peer_cert["subject"]).get("commonName"),
                         "path": req.path}).encode(), headers=[("Content-Type", "application/json")])


def https(certs, port, with_cert=False):
    return http.client.HTTPSConnection("localhost", port, timeout=10, context=certs.client_ctx(with_cert))


def test_http_client_keep_alive_post_and_req_tls(certs):
    with serving(tls_handler, ssl=certs.server_ctx(), max_body=8 << 20) as server:
        c = https(certs, server.port)
        for i in range(3):
            c.request("GET", "/n%d" % i)
            r = c.getresponse()
            doc = json.loads(r.read())
            assert r.status == 200 and doc["path"] == "/n%d" % i
        assert doc["version"] == "TLSv1.3" and doc["alpn"] == "http/1.1" and doc["peer"] is None
        body = os.urandom(3 << 20)
        c.request("POST", "/up", body=body)
        assert json.loads(c.getresponse().read()) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        assert server.connection_count == 1  # one keep-alive connection all along
        c.close()


def test_mtls_peer_certificate_reaches_the_handler(certs):
    ctx = server_context(certs.cert, certs.key, ca_certs=certs.ca)
    with serving(tls_handler, ssl=ctx) as server:
        c = https(certs, server.port, with_cert=True)
        c.request("GET", "/me")
        doc = json.loads(c.getresponse().read())
        assert doc["peer"] == "powpow test client"
        c.close()
        # no client certificate: refused (TLS 1.3 reports it on the first read)
        c = https(certs, server.port)
        try:
            c.request("GET", "/me")
            c.getresponse()
            raise AssertionError("a client without a certificate was served")
        except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
            pass
        c.close()


def test_plain_http_and_tls_listeners_side_by_side(certs):
    """One server: a plaintext listener and, with listen(..., ssl=ctx), an HTTPS one."""
    with serving(tls_handler) as server:
        loop = server.loop
        done = []
        loop.post(lambda: done.append(server.listen(0, "127.0.0.1", ssl=certs.server_ctx())))
        end = time.monotonic() + 5
        while not done and time.monotonic() < end:
            time.sleep(0.01)
        tls_port = server._tcp.addresses[1][1]
        c = https(certs, tls_port)
        c.request("GET", "/s")
        assert json.loads(c.getresponse().read())["alpn"] == "http/1.1"
        c.close()
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        c.request("GET", "/p")
        assert json.loads(c.getresponse().read()) == {"tls": None, "path": "/p"}  # req.tls: None over TCP
        c.close()


def _curl(*args, timeout=60):
    return subprocess.run(["curl", "-sS"] + list(args), capture_output=True, timeout=timeout)


def test_curl_static_keep_alive_ranges_big_download_and_upload(certs, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    big = os.urandom(1 << 20) * 64  # 64 MiB
    (root / "big.bin").write_bytes(big)
    (root / "small.txt").write_bytes(b"0123456789" * 100)

    def handler(req, res):
        if req.method == "POST":
            tls_handler(req, res)
        elif not serve_static(req, res, str(root)):
            res.send_error(404)

    with serving(handler, ssl=certs.server_ctx(), max_body=64 << 20) as server:
        base = "https://localhost:%d" % server.port
        # keep-alive: two requests, one connection
        out = _curl("-v", "--cacert", certs.ca, base + "/small.txt", base + "/small.txt")
        assert out.returncode == 0, out.stderr
        assert out.stdout == b"0123456789" * 200
        assert b"Re-using existing connection" in out.stderr or b"Reusing existing" in out.stderr
        assert b"ALPN: server accepted http/1.1" in out.stderr or b"ALPN, server accepted" in out.stderr
        # a range, and a conditional request answered 304
        out = _curl("--cacert", certs.ca, "-r", "100-119", "-i", base + "/small.txt")
        assert b"206 Partial Content" in out.stdout and out.stdout.endswith(b"0123456789" * 2)
        etag = re.search(rb"(?i)etag: (\S+)", out.stdout).group(1)
        out = _curl("--cacert", certs.ca, "-i", "-H", b"If-None-Match: " + etag, base + "/small.txt")
        assert out.stdout.startswith(b"HTTP/1.1 304")
        # 64 MiB download, byte-checked (file sent in chunks, encrypted as the socket drains)
        t0 = time.monotonic()
        out = _curl("--cacert", certs.ca, base + "/big.bin")
        assert out.returncode == 0, out.stderr
        assert len(out.stdout) == len(big) and hashlib.sha256(out.stdout).digest() == hashlib.sha256(big).digest()
        assert time.monotonic() - t0 < 20
        # upload
        up = tmp_path / "up.bin"
        up.write_bytes(big[: 8 << 20])
        out = _curl("--cacert", certs.ca, "--data-binary", "@" + str(up), base + "/up")
        assert json.loads(out.stdout) == {"size": 8 << 20, "sha256": hashlib.sha256(big[: 8 << 20]).hexdigest()}
        # no --cacert: curl refuses the unknown CA (exit 60)
        assert _curl(base + "/small.txt").returncode == 60


def _s_client(port, *args, data=b"", timeout=10):
    return subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", _CA[0]] + list(args),
                          input=data, capture_output=True, timeout=timeout)


_CA = [""]


def test_openssl_s_client_alpn_sni_and_versions(certs):
    _CA[0] = certs.ca
    ctx = certs.server_ctx()
    other = server_context(certs.other_cert, certs.other_key)

    def sni(sslobj, name, _ctx):
        if name == "other.test":
            sslobj.context = other  # choose the certificate by server name
    ctx.sni_callback = sni
    with serving(tls_handler, ssl=ctx) as server:
        p = server.port
        req = b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        out = _s_client(p, "-alpn", "http/1.1", "-servername", "localhost", "-ign_eof", data=req)
        text = out.stdout.decode("latin-1")
        assert "ALPN protocol: http/1.1" in text and "Verify return code: 0 (ok)" in text, text[-2000:]
        assert "HTTP/1.1 200 OK" in text and '"path": "/x"' in text
        # SNI picks the other certificate
        out = _s_client(p, "-servername", "other.test", data=b"")
        assert re.search(r"subject=\s*CN\s*=\s*other.test", out.stdout.decode("latin-1"))
        out = _s_client(p, "-servername", "localhost", data=b"")
        assert re.search(r"subject=\s*CN\s*=\s*localhost", out.stdout.decode("latin-1"))
        # TLS 1.0 and 1.1 are refused by default (SECLEVEL=0: the refusal is the server's)
        for flag in ("-tls1", "-tls1_1"):
            out = _s_client(p, flag, "-cipher", "DEFAULT@SECLEVEL=0", data=b"")
            assert out.returncode != 0 and b"alert protocol version" in out.stderr, (flag, out.stderr)
        out = _s_client(p, "-tls1_2", data=req)
        assert b"Protocol  : TLSv1.2" in out.stdout or b"TLSv1.2" in out.stdout
        # a client offering only h2 gets the no_application_protocol alert at once (no hang:
        # -ign_eof would wait forever on an open connection)
        t0 = time.monotonic()
        out = _s_client(p, "-alpn", "h2", "-ign_eof", data=b"")
        assert out.returncode != 0 and b"alert no application protocol" in out.stderr, out.stderr
        assert time.monotonic() - t0 < 5
        out = _s_client(p, "-alpn", "h2,http/1.1", "-ign_eof", data=req)
        assert b"ALPN protocol: http/1.1" in out.stdout and b"HTTP/1.1 200 OK" in out.stdout


def test_plaintext_http_to_https_server_gets_400_and_others_carry_on(certs):
    with serving(tls_handler, ssl=certs.server_ctx()) as server:
        c = https(certs, server.port)
        c.request("GET", "/a")
        assert c.getresponse().read()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = s.recv(4096)
        assert data.startswith(b"HTTP/1.1 400") and b"HTTPS" in data
        c.request("GET", "/b")
        assert json.loads(c.getresponse().read())["path"] == "/b"
        c.close()


def test_cli_serves_https_and_refuses_a_mismatched_key(certs, tmp_path):
    (tmp_path / "hello.txt").write_bytes(b"hello over tls\n")
    proc = subprocess.Popen([sys.executable, "-m", "powpow", "serve", str(tmp_path), "--port", "0",
                             "--certfile", certs.cert, "--keyfile", certs.key],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"https://127\.0\.0\.1:(\d+)/", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        out = _curl("--cacert", certs.ca, "--resolve", "localhost:%s:127.0.0.1" % m.group(1),
                    "https://localhost:%s/hello.txt" % m.group(1))
        assert out.stdout == b"hello over tls\n", out.stderr
    finally:
        proc.terminate()
        proc.wait(10)
    bad = subprocess.run([sys.executable, "-m", "powpow", "serve", str(tmp_path), "--port", "0",
                          "--certfile", certs.cert, "--keyfile", certs.other_key],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
    assert "cannot use certificate" in bad.stderr and "KEY_VALUES_MISMATCH" in bad.stderr.upper().replace(" ", "_"), \
        bad.stderr
    assert "serving" not in bad.stdout
    # a bad --ca-certs names the CA file, not the (good) certificate and key: was
    # "cannot use certificate server.pem with key server.key: [Errno 2] No such file..."
    empty = tmp_path / "empty-ca.pem"
    empty.write_text("no certificate here\n")
    for ca, words in ((str(tmp_path / "missing-ca.pem"), "No such file"), (str(empty), "")):
        bad = subprocess.run([sys.executable, "-m", "powpow", "serve", str(tmp_path), "--port", "0",
                              "--certfile", certs.cert, "--keyfile", certs.key, "--ca-certs", ca],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode == 2, bad.stderr
        assert "cannot use the CA file %s (--ca-certs): " % ca in bad.stderr and words in bad.stderr, bad.stderr
        assert "cannot use certificate" not in bad.stderr
    # a missing certificate says so in the errno's words on both interpreters (PyPy's ssl
    # said "[Errno 2] Error", and "[Errno 2] " with nothing after it for a missing CA file)
    missing = str(tmp_path / "missing-cert.pem")
    bad = subprocess.run([sys.executable, "-m", "powpow", "serve", str(tmp_path), "--port", "0",
                          "--certfile", missing], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2, bad.stderr
    assert "cannot use certificate %s with key %s: [Errno 2] No such file" % (missing, missing) in bad.stderr, \
        bad.stderr


def test_upgrade_handover_over_tls_and_overload_503(certs):
    """res.upgrade() hands the TLS transport over (WSS stands on this); beyond
    max_connections a TLS client gets its 503 encrypted, then the close."""
    def handler(req, res):
        if req.upgrade:
            conn, rest = res.upgrade([("Upgrade", "echo")])
            assert conn.tls is not None and conn.tls.version == "TLSv1.3"
            conn.on_data = lambda c, d: c.write(bytes(d).upper())
            if rest:
                conn.write(bytes(rest).upper())
            return
        tls_handler(req, res)

    with serving(handler, ssl=certs.server_ctx(), max_connections=1) as server:
        s = certs.client_ctx().wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=5),
                                          server_hostname="localhost")
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nearly")
        buf = b""
        while b"EARLY" not in buf:
            b = s.recv(4096)
            assert b, buf
            buf += b
        assert buf.startswith(b"HTTP/1.1 101 ")
        s.sendall(b"more")
        assert s.recv(100) == b"MORE"
        # the one allowed connection is taken: the next TLS client is told 503, encrypted
        c = https(certs, server.port)
        c.request("GET", "/")
        r = c.getresponse()
        assert r.status == 503 and r.getheader("Retry-After") == "1"
        c.close()
        s.close()


NODE_CLIENT = r"""
const https = require('https'), fs = require('fs');
const ca = fs.readFileSync(process.argv[2]);
const agent = new https.Agent({keepAlive: true, maxSockets: 1});
const port = +process.argv[3];
let sockets = new Set(), out = [];
function get(i) {
  if (i === 3) { agent.destroy(); console.log(JSON.stringify({out, sockets: sockets.size})); return; }
  const req = https.request({host: '127.0.0.1', servername: 'localhost', port, path: '/node' + i, ca, agent,
                             ALPNProtocols: ['http/1.1'], method: i === 2 ? 'POST' : 'GET'}, (res) => {
    sockets.add(res.socket);
    let body = '';
    res.on('data', (d) => body += d);
    res.on('end', () => { out.push([res.statusCode, JSON.parse(body)]); get(i + 1); });
  });
  req.on('error', (e) => { console.error('node error: ' + e.message); process.exit(3); });
  if (i === 2) req.write('x'.repeat(100000));
  req.end();
}
get(0);
https.get({host: '127.0.0.1', port, path: '/', ca: fs.readFileSync(process.argv[4])}, () => process.exit(4))
  .on('error', (e) => console.error('expected: ' + e.code));
"""


def test_node_https_client_keep_alive_and_verification(certs, tmp_path):
    script = tmp_path / "client.js"
    script.write_text(NODE_CLIENT)
    with serving(tls_handler, ssl=certs.server_ctx()) as server:
        # the last argument is a CA that did not sign the server's certificate: refused
        out = subprocess.run(["node", str(script), certs.ca, str(server.port), certs.other_cert],
                             capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["sockets"] == 1  # one keep-alive TLS connection for the three requests
    assert [s for s, _ in doc["out"]] == [200, 200, 200]
    assert doc["out"][0][1]["alpn"] == "http/1.1" and doc["out"][0][1]["version"] == "TLSv1.3"
    assert doc["out"][2][1]["size"] == 100000
    assert "expected: " in out.stderr and ("UNABLE_TO_VERIFY" in out.stderr or "SELF_SIGNED" in out.stderr
                                          or "UNABLE_TO_GET_ISSUER" in out.stderr), out.stderr


def test_tls12_renegotiation_is_refused(certs):
    """openssl s_client's R command asks for a TLS 1.2 renegotiation: the server answers
    with the no_renegotiation alert and the connection ends; the server serves on."""
    with serving(tls_handler, ssl=certs.server_ctx()) as server:
        p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % server.port, "-tls1_2",
                              "-CAfile", certs.ca], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            p.stdin.write(b"R\n")
            p.stdin.flush()
            out, err = p.communicate(timeout=10)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert b"RENEGOTIATING" in err and b"no renegotiation" in err, err
        c = https(certs, server.port)
        c.request("GET", "/after")
        assert json.loads(c.getresponse().read())["path"] == "/after"
        c.close()


def test_thread_workers_serve_https_in_parallel(certs, tmp_path):
    """`serve --workers 2 --worker-threads` over TLS: two loops in two threads (one decrypt
    buffer per thread) under concurrent keep-alive clients, every body byte-checked."""
    import threading
    files = {}
    for k in range(6):
        files[k] = os.urandom(200000 + k)
        (tmp_path / ("f%d.bin" % k)).write_bytes(files[k])
    proc = subprocess.Popen([sys.executable, "-m", "powpow", "serve", str(tmp_path), "--port", "0", "--workers", "2",
                             "--worker-threads", "--certfile", certs.cert, "--keyfile", certs.key],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results, errors = [], []
    try:
        m = re.search(r"https://127\.0\.0\.1:(\d+)/", proc.stdout.readline())
        assert m, proc.stderr.read() if proc.poll() is not None else ""
        port = int(m.group(1))

        def client(k):
            try:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        c = https(certs, port)
                        c.connect()
                        break
                    except ConnectionRefusedError:
                        assert time.monotonic() < deadline
                        time.sleep(0.05)
                for _ in range(5):
                    c.request("GET", "/f%d.bin" % k)
                    results.append(c.getresponse().read() == files[k])
                c.close()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
        clients = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(30)
    finally:
        proc.terminate()
        proc.wait(15)
    assert not errors, errors
    assert results == [True] * 30


def test_peer_closing_without_close_notify_over_http(certs):
    """TCP FIN without close_notify: a request whose framing is complete is still answered; a
    body cut short by it never reaches the handler (the framing says it is incomplete)."""
    calls = []

    def handler(req, res):
        calls.append((req.path, bytes(req.body)))
        res.send(b"got %d" % len(req.body))

    def fin_without_notify(t):
        dup = socket.socket(fileno=os.dup(t.fileno()))
        dup.shutdown(socket.SHUT_WR)
        dup.close()

    def read_all(t):
        data = b""
        try:
            while True:
                b = t.recv(65536)
                if not b:
                    break
                data += b
        except (ssl.SSLError, ConnectionError):
            pass  # the server's close_notify or reset after our truncated stream
        return data

    with serving(handler, ssl=certs.server_ctx()) as server:
        ctx = certs.client_ctx()
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=5),
                             server_hostname="localhost") as t:
            t.sendall(b"POST /whole HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            fin_without_notify(t)
            assert read_all(t).startswith(b"HTTP/1.1 200 OK")
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=5),
                             server_hostname="localhost") as t:
            t.sendall(b"POST /cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
            fin_without_notify(t)
            assert b"200 OK" not in read_all(t)
        c = https(certs, server.port)  # the server serves on
        c.request("GET", "/after")
        assert c.getresponse().read() == b"got 0"
        c.close()
    assert calls == [("/whole", b"hello"), ("/after", b"")]
