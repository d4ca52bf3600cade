"""Headless Chromium as a WebSocket peer and for ``python -m powpow serve DIR --livereload``."""
import os
import queue
import re
import subprocess
import sys
import time

from powpow.ws import upgrade

from ._chromium import chromium
from ._ws import http_serving

ECHO_PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>echo</title></head><body><script>
const N = 1000, sizes = [0, 1, 125, 126, 127, 1000, 4096, 65535, 65536, 70000];
const chars = ['a', '\\u00e9', '\\u20ac', '\\ud83d\\ude00'];
function payload(i) {
  const n = sizes[i % sizes.length] + (i % 7);
  if (i % 2) { const b = new Uint8Array(n); for (let k = 0; k < n; k++) b[k] = (k * 31 + i) & 255; return b; }
  const parts = []; for (let k = 0; k < n / 2; k++) parts.push(chars[(k + i) % 4]); return parts.join('');
}
function same(a, b) {
  if (typeof a === 'string') return a === b;
  if (!(b instanceof ArrayBuffer)) return false;
  const v = new Uint8Array(b); if (v.length !== a.length) return false;
  for (let k = 0; k < v.length; k++) if (v[k] !== a[k]) return false;
  return true;
}
const ws = new WebSocket('ws://' + location.host + '/echo');
ws.binaryType = 'arraybuffer';
let i = 0, ok = 0, bad = 0, sent = payload(0);
ws.onopen = () => ws.send(sent);
ws.onmessage = (e) => {
  if (same(sent, e.data)) ok++; else bad++;
  i++;
  if (i === N) { ws.send('DONE ' + ok + ' ' + bad + ' ' + (ws.extensions || '-')); return; }
  sent = payload(i); ws.send(sent);
};
ws.onerror = () => { document.title = 'error'; };
</script></body></html>"""


def test_chromium_echoes_1000_mixed_messages_through_our_server():
    results = queue.Queue()

    def on_message(ws, data, is_text):
        if is_text and data.startswith("DONE "):
            results.put(data)
        else:
            ws.send(data)

    def handler(req, res):
        if req.path == "/echo":
            upgrade(req, res, on_message=on_message, max_message_size=1 << 20)
        else:
            res.send(ECHO_PAGE, headers=[("Content-Type", "text/html; charset=utf-8")])

    with http_serving(handler) as srv:
        with chromium("http://127.0.0.1:%d/" % srv.port):
            done = results.get(timeout=90)
    _, ok, bad, ext = done.split(" ", 3)
    assert (ok, bad) == ("1000", "0"), done
    assert "permessage-deflate" in ext  # Chromium offers it and we accept: compressed both ways


def serve_livereload(root):
    proc = subprocess.Popen([sys.executable, "-m", "powpow", "serve", str(root), "--livereload", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert m, line + (proc.stdout.read() if proc.poll() is not None else "")
    return proc, int(m.group(1))


def test_livereload_in_chromium_reloads_the_page_on_edits(tmp_path):
    page = tmp_path / "index.html"
    page.write_text('<!doctype html><html><head><link rel="stylesheet" href="style.css"></head>'
                    '<body><p id="v">one</p></body></html>')
    (tmp_path / "style.css").write_text("p { color: red }")
    proc, port = serve_livereload(tmp_path)
    try:
        with chromium("http://127.0.0.1:%d/" % port) as page_tools:
            open_expr = "!!window.__powpow_livereload && window.__powpow_livereload.readyState === 1"
            page_tools.wait(open_expr)
            assert page_tools.evaluate("document.getElementById('v').textContent") == "one"
            page_tools.evaluate("window.__marker = 1")
            # edit the page: the browser reloads it (a fresh window: the marker is gone) and shows the new text
            page.write_text(page.read_text().replace("one", "two"))
            page_tools.wait("document.getElementById('v') !== null && document.getElementById('v').textContent",
                            want="two")
            assert page_tools.evaluate("typeof window.__marker") == "undefined"
            page_tools.wait(open_expr)
            # a stylesheet edit reloads too
            page_tools.evaluate("window.__marker = 2")
            (tmp_path / "style.css").write_text("p { color: rgb(0, 128, 0) }")
            page_tools.wait("typeof window.__marker === 'undefined' && document.readyState === 'complete' && "
                            "getComputedStyle(document.getElementById('v')).color", want="rgb(0, 128, 0)")
            # the snippet is in the page exactly once, before </body>
            html = page_tools.evaluate("document.documentElement.outerHTML")
            assert html.count("powpow live reload") == 1
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "shut down cleanly" in out


def test_livereload_http_details(tmp_path):
    """Content-Length and ETag of injected pages; other types untouched; HEAD agrees with GET."""
    import http.client
    (tmp_path / "a.html").write_bytes(b"<html><BODY>x</body ></html>")
    (tmp_path / "b.txt").write_bytes(b"plain </body>")
    (tmp_path / "c.htm").write_bytes(b"no body tag")
    proc, port = serve_livereload(tmp_path)
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

        def get(path, method="GET", headers=None):
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            return r, r.read()

        r, body = get("/a.html")
        assert r.status == 200 and body.startswith(b"<html><BODY>x<script>") and body.endswith(b"</body ></html>")
        assert int(r.getheader("Content-Length")) == len(body) and r.getheader("Accept-Ranges") == "none"
        etag = r.getheader("ETag")
        h, hbody = get("/a.html", "HEAD")
        assert hbody == b"" and h.getheader("Content-Length") == str(len(body)) and h.getheader("ETag") == etag
        r304, b304 = get("/a.html", headers={"If-None-Match": etag})
        assert r304.status == 304 and b304 == b""
        rr, rbody = get("/a.html", headers={"Range": "bytes=0-3"})
        assert rr.status == 200 and rbody == body  # no ranges over a rewritten page
        r, body = get("/b.txt")
        assert body == b"plain </body>" and r.getheader("Accept-Ranges") == "bytes"
        r, body = get("/c.htm")
        assert body.startswith(b"no body tag<script>") and int(r.getheader("Content-Length")) == len(body)
        # the page changes: a new ETag, the old one no longer matches
        (tmp_path / "a.html").write_bytes(b"<html><body>y</body></html>")
        os.utime(tmp_path / "a.html", ns=(time.time_ns(), time.time_ns() + 10**9))
        r, body = get("/a.html", headers={"If-None-Match": etag})
        assert r.status == 200 and b">y<script>" in body and r.getheader("ETag") != etag
        c.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
