"""The README's Python examples are real code: run each one and check what it prints."""
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def run_block(marker: str, what: str):
    """Run the README's first Python block containing ``marker``; return its stdout lines."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if marker in b]
    assert blocks, "README lost its %s" % what
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_readme_tour_runs():
    out = run_block("loop = powpow.Loop()", "loop tour")
    assert out[0] == "next iteration, before timers and I/O"
    assert out.count("every 100 ms, no drift") in (9, 10)
    assert "300 ms later, never earlier" in out
    assert out[-1] == "read b'hello'"


def test_readme_networking_example_runs():
    assert run_block("powpow.TcpServer(", "networking example") == ["echoed b'hello'"]


def test_readme_tls_example_runs(certs, tmp_path):
    """The TLS block, in a directory holding the certificate files it names; server.run()
    is replaced by a client that fetches over HTTPS (SNI picks the other certificate too)."""
    import shutil
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "sni_callback" in b]
    assert blocks, "README lost its TLS example"
    for src, dst in ((certs.cert, "cert.pem"), (certs.key, "key.pem"), (certs.other_cert, "other-cert.pem"),
                     (certs.other_key, "other-key.pem"), (certs.ca, "ca.pem")):
        shutil.copy(src, str(tmp_path / dst))
    code = blocks[0].replace("server.listen(8443,", "server.listen(0,").replace("server.run()", (
        "import http.client, ssl, threading\n"
        "def fetch():\n"
        "    c = ssl.create_default_context(cafile='ca.pem')\n"
        "    c.set_alpn_protocols(['http/1.1'])\n"
        "    h = http.client.HTTPSConnection('localhost', server.port, context=c, timeout=10)\n"
        "    h.request('GET', '/')\n"
        "    print(h.getresponse().read().decode().strip())\n"
        "    import socket\n"
        "    s = c.wrap_socket(socket.create_connection(('127.0.0.1', server.port)), server_hostname='other.test')\n"
        "    print(dict(x[0] for x in s.getpeercert()['subject'])['commonName'])\n"
        "    s.close()\n"
        "    server.loop.post(server.shutdown)\n"
        "threading.Thread(target=fetch).start()\n"
        "server.run()\n"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["hello over TLSv1.3 (http/1.1)", "other.test"]


def test_readme_websocket_example_runs():
    assert run_block("ws.connect(loop", "WebSocket example") == ["echoed hello", "closed 1000"]
