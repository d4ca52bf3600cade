"""Real WSGI frameworks on powpow.wsgi: Flask and Django, with httpx and curl as clients.

Needs the ``apps`` extra (``pip install -e '.[test,apps]'``): Flask, Django
(4.2 LTS on PyPy 3.9, newer on CPython) and httpx.
"""
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import httpx
import pytest

from ._wsgi import wsgi_server

# ------------------------------------------------------------------------------ Flask


def make_flask_app():
    from flask import Flask, Response, jsonify, request, stream_with_context

    app = Flask("powpow_wsgi_test")

    @app.route("/")
    def index():
        return "hello from flask"

    @app.route("/items/<int:item_id>", methods=["GET", "PUT"])
    def item(item_id):
        if request.method == "PUT":
            return jsonify(id=item_id, got=request.get_json()), 201
        return jsonify(id=item_id, q=request.args.get("q"), scheme=request.scheme, remote=request.remote_addr)

    @app.route("/upload", methods=["POST"])
    def upload():
        f = request.files["file"]
        data = f.read()
        return jsonify(name=f.filename, size=len(data), md5=hashlib.md5(data).hexdigest(),
                       field=request.form.get("note"))

    @app.route("/stream")
    def stream():
        who = request.args.get("who", "nobody")

        def gen():
            for i in range(5):
                # request is still usable here thanks to stream_with_context
                yield "%s:%d\n" % (request.args.get("who", who), i)
        return Response(stream_with_context(gen()), mimetype="text/plain")

    @app.route("/fail")
    def fail():
        raise RuntimeError("flask view failed")

    return app


def test_flask_routes_json_and_errors():
    app = make_flask_app()
    with wsgi_server(app) as srv:
        base = "http://127.0.0.1:%d" % srv.port
        with httpx.Client(base_url=base, timeout=10) as c:
            r = c.get("/")
            assert r.status_code == 200 and r.text == "hello from flask"
            r = c.get("/items/7", params={"q": "x y"})
            assert r.json() == {"id": 7, "q": "x y", "scheme": "http", "remote": "127.0.0.1"}
            r = c.put("/items/3", json={"a": [1, 2]})
            assert r.status_code == 201 and r.json() == {"id": 3, "got": {"a": [1, 2]}}
            assert c.get("/missing").status_code == 404
            assert c.get("/fail").status_code == 500  # Flask's own 500 page
            assert c.get("/").text == "hello from flask"  # the connection is still fine


def test_flask_upload_with_request_files():
    app = make_flask_app()
    data = os.urandom(3 << 20)
    with wsgi_server(app) as srv:
        r = httpx.post("http://127.0.0.1:%d/upload" % srv.port, timeout=20,
                       files={"file": ("photo.bin", data, "application/octet-stream")}, data={"note": "hi"})
    assert r.status_code == 200
    assert r.json() == {"name": "photo.bin", "size": len(data), "md5": hashlib.md5(data).hexdigest(),
                        "field": "hi"}


def test_flask_streaming_with_stream_with_context():
    app = make_flask_app()
    with wsgi_server(app) as srv:
        with httpx.stream("GET", "http://127.0.0.1:%d/stream?who=ann" % srv.port, timeout=10) as r:
            assert r.status_code == 200
            assert r.headers.get("transfer-encoding") == "chunked"
            lines = list(r.iter_lines())
    assert lines == ["ann:%d" % i for i in range(5)]


# ------------------------------------------------------------------------------ Django

_DJANGO_STATIC = tempfile.mkdtemp(prefix="powpow-django-static-")


def _django_app():
    import django
    from django.conf import settings

    if not settings.configured:
        with open(os.path.join(_DJANGO_STATIC, "app.css"), "wb") as f:
            f.write(b"body { color: red }\n" * 5000)
        settings.configure(
            DEBUG=False, SECRET_KEY="powpow-test", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
            INSTALLED_APPS=["django.contrib.staticfiles"], MIDDLEWARE=[], STATIC_URL="/static/",
            STATICFILES_DIRS=[_DJANGO_STATIC], USE_TZ=True, DATABASES={})
        django.setup()
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.wsgi import get_wsgi_application
    return StaticFilesHandler(get_wsgi_application())


def django_view(request, name):
    from django.http import JsonResponse
    return JsonResponse({"hello": name, "method": request.method, "path": request.path,
                         "q": request.GET.get("q"), "body": request.body.decode()})


def _urls():
    from django.urls import path
    return [path("hello/<str:name>", django_view)]


def __getattr__(attr):  # ROOT_URLCONF = this module: urlpatterns built when Django asks
    if attr == "urlpatterns":
        return _urls()
    raise AttributeError(attr)


def test_django_view_and_static_file():
    app = _django_app()
    css = open(os.path.join(_DJANGO_STATIC, "app.css"), "rb").read()
    with wsgi_server(app, root_path="") as srv:
        base = "http://127.0.0.1:%d" % srv.port
        with httpx.Client(base_url=base, timeout=10) as c:
            r = c.get("/hello/world", params={"q": "1"})
            assert r.status_code == 200
            assert r.json() == {"hello": "world", "method": "GET", "path": "/hello/world", "q": "1", "body": ""}
            r = c.post("/hello/p", content=b"posted body", headers={"Content-Type": "text/plain"})
            assert r.json()["body"] == "posted body"
            r = c.get("/static/app.css")
            assert r.status_code == 200 and r.content == css
            assert r.headers["content-length"] == str(len(css))
            assert c.get("/nope").status_code == 404
        if shutil.which("curl"):
            out = subprocess.run(["curl", "-s", "-f", base + "/static/app.css"], capture_output=True, timeout=20)
            assert out.returncode == 0 and out.stdout == css


def test_curl_against_flask_upload_and_expect_continue(tmp_path):
    if not shutil.which("curl"):
        pytest.fail("curl is needed (CI installs it)")
    p = tmp_path / "up.bin"
    data = os.urandom(2 << 20)
    p.write_bytes(data)
    app = make_flask_app()
    with wsgi_server(app) as srv:
        # curl sends Expect: 100-continue for big bodies: the 100 comes when Flask reads
        out = subprocess.run(["curl", "-s", "-f", "-v", "-F", "file=@%s" % p, "-F", "note=c",
                              "http://127.0.0.1:%d/upload" % srv.port], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr[-500:]
    assert b"100 Continue" in out.stderr
    import json
    assert json.loads(out.stdout)["md5"] == hashlib.md5(data).hexdigest()


def test_many_concurrent_flask_clients():
    app = make_flask_app()
    errors = []
    with wsgi_server(app, threads=4) as srv:
        def worker():
            try:
                with httpx.Client(base_url="http://127.0.0.1:%d" % srv.port, timeout=20) as c:
                    for i in range(20):
                        r = c.get("/items/%d" % i)
                        assert r.json()["id"] == i
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
        ts = [threading.Thread(target=worker) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
    assert not errors, errors
