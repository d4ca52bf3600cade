"""Real applications on powpow.asgi: FastAPI, Starlette and Django (tests/apps/), with httpx,
http.client, curl and the powpow WebSocket client.  The frameworks come from the ``apps``
extra (``pip install -e '.[test,apps]'``; tests/run_all.sh installs it on both interpreters)."""
import importlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from powpow.ws import WsClosed, connect_sync

from ._asgi import asgi_server

APPS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps")


def load(name):
    if APPS not in sys.path:
        sys.path.insert(0, APPS)
    return importlib.import_module(name)


# ---------------------------------------------------------------- FastAPI

@pytest.fixture(scope="module")
def fastapi_server():
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    mod = load("fastapi_app")
    with asgi_server(mod.app, lifespan="on") as srv:
        yield srv, mod
    assert mod.LIFESPAN == ["startup", "shutdown"]


def test_fastapi_routes_and_json(fastapi_server):
    httpx = pytest.importorskip("httpx")
    srv, mod = fastapi_server
    base = "http://127.0.0.1:%d" % srv.port
    with httpx.Client(base_url=base, timeout=5) as c:
        r = c.get("/items/42", params={"q": "x y"})
        assert r.status_code == 200 and r.json() == {"item_id": 42, "q": "x y"}
        r = c.post("/items", json={"name": "pen", "price": 1.5, "tags": ["a"]})
        assert r.status_code == 200 and r.json() == {"name": "pen", "total": 3.0, "tags": ["a"]}
        r = c.post("/items", json={"name": "pen"})  # validation error from pydantic
        assert r.status_code == 422
        r = c.get("/items/notanint")
        assert r.status_code == 422
        assert c.get("/missing").status_code == 404
        r = c.get("/greeting")  # lifespan state reaches the request
        assert r.json() == {"greeting": "hello from lifespan"}


def test_fastapi_streaming_response(fastapi_server):
    httpx = pytest.importorskip("httpx")
    srv, _ = fastapi_server
    with httpx.Client(timeout=5) as c:
        with c.stream("GET", "http://127.0.0.1:%d/stream" % srv.port) as r:
            assert r.headers["transfer-encoding"] == "chunked"
            body = b"".join(r.iter_bytes())
    assert body == b"".join(b"chunk %03d\n" % i for i in range(100))


def test_fastapi_file_response_uses_pathsend(fastapi_server):
    srv, mod = fastapi_server
    before = len(mod.SENT_TYPES)
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    out = subprocess.run(["curl", "-sS", "-D", "-", "--max-time", "5", "http://127.0.0.1:%d/file" % srv.port],
                         capture_output=True, check=True).stdout
    with open(os.path.join(APPS, "static", "site.css"), "rb") as f:
        expected = f.read()
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == expected
    assert b"content-type: text/css" in head.lower()
    assert b"etag" in head.lower() and b"content-length: %d" % len(expected) in head.lower()
    if "http.response.pathsend" not in mod.SENT_TYPES[before:]:
        import starlette
        pytest.fail("Starlette %s did not use http.response.pathsend" % starlette.__version__)


def test_fastapi_form_upload(fastapi_server, tmp_path):
    httpx = pytest.importorskip("httpx")
    srv, _ = fastapi_server
    payload = b"PDF-1.4..." + os.urandom(200000)
    with httpx.Client(timeout=10) as c:
        r = c.post("http://127.0.0.1:%d/upload" % srv.port, data={"title": "report"},
                   files={"doc": ("report.pdf", payload, "application/pdf")})
    assert r.status_code == 200, r.text
    assert r.json() == {"title": "report", "filename": "report.pdf", "size": len(payload), "head": "PDF-1.4..."}


def test_fastapi_websocket(fastapi_server):
    srv, _ = fastapi_server
    c = connect_sync("ws://127.0.0.1:%d/ws" % srv.port)
    for word in ("a", "bb", "ccc"):
        c.send(word)
        assert json.loads(c.recv()) == {"echo": word}
    assert c.close(1000, "bye") == 1000


# ---------------------------------------------------------------- Starlette

def test_starlette_routes_body_websocket_and_lifespan_state():
    pytest.importorskip("starlette")
    httpx = pytest.importorskip("httpx")
    mod = load("starlette_app")
    with asgi_server(mod.app) as srv:
        with httpx.Client(base_url="http://127.0.0.1:%d" % srv.port, timeout=5) as c:
            assert c.get("/").text == "home 1"
            assert c.get("/").text == "home 2"  # the state dict is shared (shallow copy per request)
            r = c.post("/echo", content=b"x" * 100000, headers={"content-type": "application/x-test"})
            assert r.json() == {"len": 100000, "ct": "application/x-test"}
        ws = connect_sync("ws://127.0.0.1:%d/ws" % srv.port, subprotocols=["v1"])
        assert ws.subprotocol == "v1"
        ws.send(b"\x01\x02\x03")
        assert ws.recv() == b"\x03\x02\x01"
        with pytest.raises(WsClosed) as ei:
            ws.recv()
        assert (ei.value.code, ei.value.reason) == (4000, "done")
        ws.close()


# ---------------------------------------------------------------- Django

def test_django_view_and_static_file():
    """Served by ``python -m powpow asgi django_app:app`` in a subprocess: Django's settings are
    process-wide, and the WSGI tests configure their own."""
    pytest.importorskip("django")
    httpx = pytest.importorskip("httpx")
    import re
    import signal
    proc = subprocess.Popen([sys.executable, "-m", "powpow", "asgi", "django_app:app", "--app-dir", APPS,
                             "--port", "0", "--lifespan", "off", "--no-access-log"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = None
        for _ in range(20):
            m = re.search(r"serving \S+ at (http://\S+)/ ", proc.stdout.readline())
            if m:
                base = m.group(1)
                break
        assert base, proc.stderr.read() if proc.poll() is not None else "no banner"
        with httpx.Client(base_url=base, timeout=10) as c:
            r = c.get("/hello/world", params={"q": "1"})
            assert r.status_code == 200
            assert r.json() == {"hello": "world", "method": "GET", "q": "1", "secure": False}
            r = c.get("/hello/proxy", headers={"X-Forwarded-Proto": "https"})  # trusted: 127.0.0.1
            assert r.json()["secure"] is True
            r = c.get("/static/site.css")
            assert r.status_code == 200 and r.text == "body { color: red; }\n"
            assert r.headers["content-type"].startswith("text/css")
            r = c.post("/upload", content=b"u" * 300000)
            assert r.text == "got 300000 bytes"
            assert c.get("/nope").status_code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
