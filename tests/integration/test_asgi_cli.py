"""``python -m powpow asgi module:app`` (and ``wsgi``) as a user runs it: a subprocess, a temp module."""
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from ._http import read_until_close

APP = textwrap.dedent('''
    import asyncio, os, sys

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                if m["type"] == "lifespan.startup":
                    if os.environ.get("FAIL_STARTUP"):
                        await send({"type": "lifespan.startup.failed", "message": "no db"})
                        return
                    await send({"type": "lifespan.startup.complete"})
                else:
                    print("lifespan shutdown done", flush=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/slow":
            await asyncio.sleep(30)
        body = ("%s %s %s %d" % (VERSION, scope["root_path"], scope["path"], os.getpid())).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    def make():
        return app

    VERSION = "v1"
''')

BANNER = re.compile(r"powpow (asgi|wsgi) serving (\S+) at (\S+) ")


def start(tmp_path, *args, env=None):
    (tmp_path / "cliapp.py").write_text(APP)
    e = dict(os.environ)
    e.pop("POWPOW_RELOAD_CHILD", None)
    if env:
        e.update(env)
    return subprocess.Popen([sys.executable, "-m", "powpow", "asgi", *args], cwd=str(tmp_path), env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def banner(proc, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        m = BANNER.search(line)
        if m:
            return m.group(3)
    proc.kill()
    raise AssertionError("no banner; stderr: %s" % proc.stderr.read())


def fetch(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def stop(proc, sig=signal.SIGINT, timeout=15):
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out, err


def test_serve_request_and_clean_shutdown(tmp_path):
    p = start(tmp_path, "cliapp:app", "--port", "0", "--root-path", "/api", "--no-access-log")
    url = banner(p)
    assert url.startswith("http://127.0.0.1:")
    text = fetch(url + "x")
    assert text.startswith("v1 /api /api/x ")
    code, out, err = stop(p)
    assert code == 0, err
    assert "lifespan shutdown done" in out and "shut down cleanly" in out


def test_factory_and_module_colon_call(tmp_path):
    p = start(tmp_path, "cliapp:make", "--factory", "--port", "0", "--lifespan", "off")
    assert fetch(banner(p)).startswith("v1 ")
    assert stop(p, signal.SIGTERM)[0] == 0
    p = start(tmp_path, "cliapp:make()", "--port", "0")
    assert fetch(banner(p)).startswith("v1 ")
    assert stop(p)[0] == 0


@pytest.mark.parametrize("spec,words", [("nosuchmod:app", ["nosuchmod"]), ("cliapp:nothere", ["cliapp", "nothere"]),
                                        ("cliapp", ["MODULE:APP"])])
def test_import_errors_are_clear_and_exit_1(tmp_path, spec, words):
    p = start(tmp_path, spec, "--port", "0")
    out, err = p.communicate(timeout=15)
    assert p.returncode == 1 if ":" in spec else p.returncode in (1, 2)
    for w in words:
        assert w in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_lifespan_startup_failure_exits_nonzero(tmp_path, workers):
    p = start(tmp_path, "cliapp:app", "--port", "0", "--workers", workers, env={"FAIL_STARTUP": "1"})
    out, err = p.communicate(timeout=15)
    assert p.returncode == 3
    assert "no db" in err and "serving" not in out


def test_second_ctrl_c_exits_at_once(tmp_path):
    p = start(tmp_path, "cliapp:app", "--port", "0", "--timeout-graceful-shutdown", "30")
    url = banner(p)
    import threading

    def slow():
        try:
            fetch(url + "slow", 20)
        except OSError:
            pass  # the server goes away mid-request: that is the point

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    time.sleep(0.5)  # the slow request is in flight
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert p.poll() is None  # the first one waits for the request (grace 30 s)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=5)
    assert time.monotonic() - t0 < 3
    assert p.returncode != 0


def test_workers_share_the_port(tmp_path):
    p = start(tmp_path, "cliapp:app", "--port", "0", "--workers", "2", "--no-access-log")
    url = banner(p)
    pids = set()
    end = time.monotonic() + 10
    while len(pids) < 2 and time.monotonic() < end:
        pids.add(fetch(url).split()[-1])
    assert len(pids) == 2
    code, out, err = stop(p, signal.SIGTERM)
    assert code == 0, err
    assert out.count("lifespan shutdown done") == 2


def test_reload_restarts_on_change(tmp_path):
    p = start(tmp_path, "cliapp:app", "--port", "0", "--reload", "--no-access-log")
    try:
        url = banner(p)
        assert fetch(url).startswith("v1 ")
        time.sleep(0.3)
        (tmp_path / "cliapp.py").write_text(APP.replace('VERSION = "v1"', 'VERSION = "v2"'))
        # a fresh child prints a fresh banner (port 0 again: a new port).  On a loaded machine an
        # editor's truncate and write may land far enough apart to restart twice: take the last.
        end = time.monotonic() + 20
        text = ""
        while not text.startswith("v2 ") and time.monotonic() < end:
            try:
                text = fetch(banner(p, end - time.monotonic()))
            except OSError:
                continue
        assert text.startswith("v2 ")
    finally:
        code, out, err = stop(p)
    assert code == 0, err


def test_uds_flag(tmp_path):
    sock = str(tmp_path / "s.sock")
    p = start(tmp_path, "cliapp:app", "--uds", sock)
    assert banner(p) == "unix:%s" % sock
    out = subprocess.run(["curl", "-sS", "--max-time", "5", "--unix-socket", sock, "http://x/u"],
                         capture_output=True, text=True).stdout
    assert out.startswith("v1  /u ")
    assert stop(p)[0] == 0


def test_wsgi_subcommand_flags():
    out = subprocess.run([sys.executable, "-m", "powpow", "wsgi", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--threads", "--workers", "--timeout-keep-alive", "--forwarded-allow-ips", "--reload"):
        assert flag in out.stdout
    out = subprocess.run([sys.executable, "-m", "powpow", "asgi", "--help"], capture_output=True, text=True)
    for flag in ("--lifespan", "--ws", "--limit-concurrency", "--timeout-graceful-shutdown", "--certfile",
                 "--keyfile", "--uds", "--root-path", "--proxy-headers", "--log-level", "--access-log"):
        assert flag in out.stdout


def test_wsgi_subcommand_serves(tmp_path):
    pytest.importorskip("powpow.wsgi")
    (tmp_path / "wapp.py").write_text(textwrap.dedent('''
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"wsgi " + environ["PATH_INFO"].encode()]
    '''))
    p = subprocess.Popen([sys.executable, "-m", "powpow", "wsgi", "wapp:app", "--port", "0", "--threads", "2"],
                         cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = banner(p)
    assert fetch(url + "p") == "wsgi /p"
    assert stop(p)[0] == 0


def _status_with_cookie(url, size):
    import urllib.error
    req = urllib.request.Request(url, headers={"Cookie": "s=" + "c" * size})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_head_limits_can_be_raised_for_large_cookies(tmp_path, kind):
    """A 12 KB Cookie (SSO/JWT sites send them) gets 431 under the default 8 KiB head;
    ``--max-header-size`` raises it (and ``Server(max_header_size=)``).  Was: the ASGI
    server took no such option at all, and neither CLI had the flags."""
    (tmp_path / "wapp.py").write_text(textwrap.dedent('''
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
    '''))
    spec = "cliapp:app" if kind == "asgi" else "wapp:app"
    for extra, want in (((), 431), (("--max-header-size", "32768"), 200)):
        if kind == "asgi":
            p = start(tmp_path, spec, "--port", "0", "--no-access-log", *extra)
        else:
            p = subprocess.Popen([sys.executable, "-m", "powpow", "wsgi", spec, "--port", "0", "--no-access-log",
                                  *extra], cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        try:
            url = banner(p)
            assert _status_with_cookie(url, 12000) == want, extra
        finally:
            assert stop(p)[0] == 0


def test_asgi_server_takes_the_head_limits():
    import socket
    import threading
    from powpow.asgi import Server

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(scope["headers"])).encode()})

    srv = Server(app, "127.0.0.1", 0, lifespan="off", access_log=False, log_level="warning",
                 max_headers=300, max_request_line=100).listen()
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        def ask(line_path, n_fields):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                fields = "".join("X-F%d: v\r\n" % i for i in range(n_fields))
                s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n" % (line_path, fields)).encode())
                return read_until_close(s)
        assert ask("/", 250).endswith(b"252")  # 250 fields + Host + Connection: past the default 100
        assert ask("/" + "p" * 200, 0).startswith(b"HTTP/1.1 414 ")  # past max_request_line=100
    finally:
        srv.shutdown()
        th.join(10)


def test_readme_asgi_example_runs():
    import pathlib
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme.read_text(), re.S) if "powpow.asgi.Server(" in b]
    assert blocks, "README lost its ASGI example"
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["hello /hi (4 bytes)"]


def test_reload_keeps_its_port_and_sees_an_atomic_save(tmp_path):
    """Regression: (1) an editor's atomic save (a temporary file renamed over cliapp.py,
    as ``sed -i``, JetBrains' safe write or git checkout do) was not seen: the .py name
    was the rename's destination; (2) with ``--port 0`` each restarted child bound a new
    port, and clients of the announced URL were refused."""
    p = start(tmp_path, "cliapp:app", "--port", "0", "--reload", "--no-access-log")
    try:
        url = banner(p)
        assert fetch(url).startswith("v1 ")
        time.sleep(0.3)
        tmp = tmp_path / "cliapp.py.tmp"
        tmp.write_text(APP.replace('VERSION = "v1"', 'VERSION = "v2"'))
        os.replace(str(tmp), str(tmp_path / "cliapp.py"))
        end = time.monotonic() + 20
        text = ""
        while not text.startswith("v2 ") and time.monotonic() < end:
            try:
                text = fetch(url)  # the same URL: the same port after the restart
            except OSError:
                time.sleep(0.1)
        assert text.startswith("v2 "), text
    finally:
        code, out, err = stop(p)
    assert code == 0, err


def test_reload_dir_that_does_not_exist_is_a_usage_error(tmp_path):
    """Regression: a traceback (FileNotFoundError) instead of one line."""
    out = subprocess.run([sys.executable, "-m", "powpow", "asgi", "cliapp:app", "--reload", "--reload-dir",
                          str(tmp_path / "nope")], capture_output=True, text=True, cwd=str(tmp_path), timeout=30)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and "cannot watch" in out.stderr, out.stderr


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_missing_certificate_or_uds_directory_is_named(tmp_path, kind):
    """Regression: both said only 'cannot start: [Errno 2] No such file or directory'."""
    (tmp_path / "cliapp.py").write_text(APP)
    cert = str(tmp_path / "nope.pem")
    out = subprocess.run([sys.executable, "-m", "powpow", kind, "cliapp:app", "--port", "0", "--certfile", cert],
                         capture_output=True, text=True, cwd=str(tmp_path), timeout=30)
    assert out.returncode == 2 and cert in out.stderr and "Traceback" not in out.stderr, out
    uds = str(tmp_path / "no-such-dir" / "s.sock")
    out = subprocess.run([sys.executable, "-m", "powpow", kind, "cliapp:app", "--uds", uds],
                         capture_output=True, text=True, cwd=str(tmp_path), timeout=30)
    assert out.returncode == 1 and uds in out.stderr and "Traceback" not in out.stderr, out


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_access_log_is_on_by_default_and_log_level_filters_it(tmp_path, kind):
    """``--access-log`` is the default for both CLIs: one line per answer on stderr, and
    ``--log-level warning`` silences them.  Was: ``python -m powpow wsgi`` made its Server
    without configuring logging, so it logged nothing whatever the flags said."""
    (tmp_path / "wapp.py").write_text(textwrap.dedent('''
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
    '''))
    spec = "cliapp:app" if kind == "asgi" else "wapp:app"
    (tmp_path / "cliapp.py").write_text(APP)
    for extra, lines in (((), 3), (("--log-level", "warning"), 0)):
        p = subprocess.Popen([sys.executable, "-m", "powpow", kind, spec, "--port", "0", *extra],
                             cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = banner(p)
            for i in range(3):
                fetch(url + "logged-%d" % i)
        finally:
            code, out, err = stop(p)
        assert code == 0, err
        got = [ln for ln in (out + err).splitlines() if "GET /logged-" in ln]
        assert len(got) == lines, (extra, out, err)
        if lines:
            assert all(" 200 " in ln for ln in got), got


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_an_app_that_fails_to_import_is_shown_with_its_traceback(tmp_path, kind):
    """The app module imports a missing dependency whose name is a prefix of the module's
    (``import depmissing`` in ``depmissing_app.py``): the message names the dependency, not
    "cannot import module 'depmissing_app'"; an error raised deeper in the app's import comes
    with its traceback (file and line), as uvicorn prints it.  Was: the user's own file was
    blamed, and a KeyError in a submodule was one line with no place."""
    (tmp_path / "depmissing_app.py").write_text("import depmissing\napp = None\n")
    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text("import os\nURL = os.environ['POWPOW_TEST_NO_SUCH_VAR']\n")
    (tmp_path / "deep_app.py").write_text("import pkgx.models\napp = None\n")
    env = dict(os.environ)
    env.pop("POWPOW_TEST_NO_SUCH_VAR", None)
    runs = {}
    for spec in ("depmissing_app:app", "deep_app:app", "not_there_at_all:app"):
        p = subprocess.run([sys.executable, "-m", "powpow", kind, spec, "--port", "0"], cwd=str(tmp_path),
                           env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 1, p
        runs[spec] = p.stderr
    err = runs["depmissing_app:app"]
    assert "No module named 'depmissing'" in err and "cannot import module" not in err, err
    err = runs["deep_app:app"]
    assert "Traceback" in err and "models.py\", line 2" in err and "POWPOW_TEST_NO_SUCH_VAR" in err, err
    err = runs["not_there_at_all:app"]  # the app's own module missing: one line, no traceback
    assert "cannot import module 'not_there_at_all'" in err and "Traceback" not in err, err
