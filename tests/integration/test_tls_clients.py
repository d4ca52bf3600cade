"""Real clients from other TLS stacks over wss://: Node's ``ws`` (Node's OpenSSL build, the test
CA trusted through NODE_EXTRA_CA_CERTS) and headless Chromium (BoringSSL), which loads an https
page from powpow that opens a wss:// WebSocket back to it and checks the echoes.

Chromium trusts exactly our server key (``--ignore-certificate-errors-spki-list`` with the
SHA-256 of its public key): installing the test CA in an NSS database would need certutil.
Needs ``node``/``npm`` and ``chromium`` (tests/run_all.sh installs them)."""
import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from powpow.ws import upgrade

from ._http import serving
from ._ws import ws_serving
from .test_ws_node import PEER, ensure_ws


def test_node_ws_client_over_wss(certs):
    ensure_ws()
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=certs.ca)
    for deflate in ("deflate", None):
        with ws_serving(on_message=lambda ws, d, t: ws.send(d), compression=deflate, ssl=certs.server_ctx()) as srv:
            proc = subprocess.run(["node", PEER, "client", "wss://localhost:%d/x" % srv.port,
                                   "1" if deflate else "0", "24"], capture_output=True, text=True, timeout=60, env=env)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            ok, n, ext, code = proc.stdout.split()
            assert (ok, n, code) == ("ok", "24", "1000")
            assert ("permessage-deflate" in ext) == (deflate is not None)
    # without the CA, Node refuses our certificate (its own verification, not ours)
    with ws_serving(on_message=lambda ws, d, t: ws.send(d), ssl=certs.server_ctx()) as srv:
        env_no_ca = {k: v for k, v in env.items() if k != "NODE_EXTRA_CA_CERTS"}
        proc = subprocess.run(["node", PEER, "client", "wss://localhost:%d/x" % srv.port, "0", "2"],
                              capture_output=True, text=True, timeout=60, env=env_no_ca)
        assert proc.returncode != 0 and "certificate" in proc.stdout.lower(), proc.stdout + proc.stderr


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>wss test</title></head><body><div id="result">pending</div>
<script>
const out = document.getElementById('result');
function report(obj) {
  out.textContent = JSON.stringify(obj);
  fetch('/done', {method: 'POST', body: JSON.stringify(obj)});
}
const big = new Uint8Array(300000);
for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 255;
const msgs = ['hello over wss', '\\u00e9t\\u00e9 \\u2603', big, 'x'.repeat(70000)];
const ws = new WebSocket('wss://' + location.host + '/echo');
ws.binaryType = 'arraybuffer';
let i = 0, ok = 0;
ws.onopen = () => ws.send(msgs[0]);
ws.onmessage = (ev) => {
  const want = msgs[i];
  let same;
  if (typeof want === 'string') same = ev.data === want;
  else { const got = new Uint8Array(ev.data); same = got.length === want.length && got.every((v, k) => v === want[k]); }
  if (same) ok++;
  i++;
  if (i < msgs.length) ws.send(msgs[i]); else ws.close(1000, 'done');
};
ws.onclose = (ev) => report({ok, n: msgs.length, code: ev.code, page: location.protocol, ws: ws.url.split(':')[0],
                             ext: ws.extensions});
ws.onerror = () => report({error: 'websocket error'});
</script></body></html>
"""


def _spki_sha256(cert_path: str) -> str:
    pub = subprocess.run(["openssl", "x509", "-in", cert_path, "-noout", "-pubkey"], capture_output=True,
                         check=True, timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True,
                         check=True, timeout=30).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("chromium is not installed (tests/run_all.sh installs the Debian package)")


def test_headless_chromium_https_page_and_wss_echo(certs):
    done = threading.Event()
    result = {}
    seen_tls = []

    def handler(req, res):
        if req.upgrade:
            seen_tls.append((req.tls.version, req.tls.alpn))
            upgrade(req, res, on_message=lambda ws, d, t: ws.send(d))
        elif req.path == "/":
            res.send(PAGE.encode(), headers=[("Content-Type", "text/html; charset=utf-8")])
        elif req.path == "/done" and req.method == "POST":
            result.update(json.loads(req.body))
            res.send(b"thanks")
            done.set()
        else:
            res.send_error(404)

    profile = tempfile.mkdtemp(prefix="powpow-chromium-")
    with serving(handler, ssl=certs.server_ctx()) as server:
        url = "https://localhost:%d/" % server.port
        argv = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--user-data-dir=" + profile,
                "--ignore-certificate-errors-spki-list=" + _spki_sha256(certs.cert),
                "--remote-debugging-port=0", url]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            finished = done.wait(60)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            err = proc.communicate(timeout=30)[1]
            shutil.rmtree(profile, ignore_errors=True)
        assert finished, "Chromium did not report back: %s" % err.decode("utf-8", "replace")[-2000:]
        deadline = time.monotonic() + 5
        while server.connection_count and time.monotonic() < deadline:
            time.sleep(0.05)  # Chromium's connections were cut by the kill: let the server see it
    ext = result.pop("ext", "")
    assert result == {"ok": 4, "n": 4, "code": 1000, "page": "https:", "ws": "wss"}, result
    assert ext.startswith("permessage-deflate")  # Chromium offers it and upgrade() accepts it
    assert seen_tls == [("TLSv1.3", "http/1.1")]
