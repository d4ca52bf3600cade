"""What ``from powpow import HttpServer`` loads, and the lazy pieces that keep it small.

A server process pays for every module the HTTP layer imports at start-up.
The stdlib modules listed in ``HEAVY`` are needed only on cold paths (JSON
bodies, spooled uploads, Set-Cookie with dates, static files, error logging,
TLS, asyncio...), so importing the server must not load them.  A module
imported again at the top of a file fails here, by name -- no timing involved.

The subprocess runs with ``-S`` (no ``site``): an editable install's path
finder, ``.pth`` files and ``sitecustomize`` import ``pathlib``, ``urllib``...
at interpreter start, which would hide such a regression.
"""
import email.utils
import logging
import os
import random
import subprocess
import sys

import pytest

from powpow import _ffi, _log
from powpow.http import _dates

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# stdlib modules (and powpow's own cold modules) that the server imports only when used
HEAVY = [
    "asyncio", "calendar", "datetime", "email", "email.utils", "hashlib", "html", "http.cookies",
    "importlib.util", "ipaddress", "json", "logging", "mimetypes", "numpy", "pathlib", "random",
    "secrets", "shutil", "ssl", "subprocess", "tempfile", "urllib.parse",
    "powpow.http.cors", "powpow.http.multipart", "powpow.http.static", "powpow.net.tls",
    "powpow.ws", "powpow.aio",
]


def _new_modules(code: str, pre: str = ""):
    """Modules that ``code`` adds to ``sys.modules`` in a fresh interpreter without ``site``
    (after ``pre``, whose imports do not count)."""
    paths = [ROOT]
    import _cffi_backend  # where it lives (not on PyPy, where it is built in)
    backend = getattr(_cffi_backend, "__file__", None)
    if backend:
        paths.append(os.path.dirname(backend))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    prog = (pre + "\nimport sys\nbefore = set(sys.modules)\n%s\n"
            "import powpow._ffi\nprint(powpow._ffi.NATIVE)\n"
            "print(' '.join(sorted(set(sys.modules) - before)))\n" % code)
    r = subprocess.run([sys.executable, "-S", "-c", prog], capture_output=True, text=True,
                       timeout=60, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    native, mods = r.stdout.strip().split("\n")
    # the child runs the configuration this test run is in (without site, the native build must still load)
    assert native == str(_ffi.NATIVE)
    return set(mods.split())


@pytest.mark.parametrize("code", [
    "from powpow import HttpServer",
    "import powpow; powpow.HttpServer; powpow.serve_static; powpow.Response; powpow.Request",
    "from powpow.http import HttpServer, Response, Request, Headers, RequestParser",
])
def test_server_import_leaves_cold_modules_unloaded(code):
    loaded = _new_modules(code)
    assert "powpow.http.server" in loaded
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_command_line_import_leaves_cold_modules_unloaded():
    """``python -m powpow``: only what argparse and platform bring themselves (PyPy's platform
    imports subprocess, say) is allowed beyond the list."""
    loaded = _new_modules("import powpow.__main__", pre="import argparse, platform")
    assert "powpow.__main__" in loaded
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_cold_paths_still_load_what_they_need():
    """The lazy imports are real imports: using the feature loads the module."""
    loaded = _new_modules(
        "from powpow.http._message import QueryArgs\n"
        "from powpow.http.cookies import format_set_cookie\n"
        "from powpow.http._body import open_spool_file\n"
        "assert QueryArgs.parse('a=1&b=%41').get('b') == 'A'\n"
        "assert 'Expires=' in format_set_cookie('a', 'b', expires=0)\n"
        "open_spool_file().close()\n")
    assert {"urllib.parse", "email.utils", "datetime", "tempfile"} <= loaded


def test_lazy_stdlib_functions_give_the_stdlib_results():
    """``powpow._lazy``: each stub imports the real function on its first call; same results throughout."""
    import json
    from urllib.parse import parse_qsl, unquote

    from powpow import _lazy

    rng = random.Random(5)
    objs = [{"message": "Hello, World!"}, [1, 2.5, None, True, "é\u2028", {"a": [float("nan"), 1e300]}],
            "x" * 3, {str(i): i for i in range(20)}, [], {}]
    for _ in range(200):
        objs.append({"k%d" % rng.randrange(9): [rng.random(), rng.randrange(-9, 9), chr(rng.randrange(32, 0x3000))]})
    for _ in range(2):  # the stub, then the function it put in its place
        for o in objs:
            assert _lazy.json_dumps_compact(o) == json.dumps(o, ensure_ascii=False, separators=(",", ":"))
            text = json.dumps(o)
            assert repr(_lazy.json_loads(text)) == repr(json.loads(text))
        for q in ["a=1&b=2", "a&b=&=c", "x=%41%zz+y", "", "é=ü&a=1;b=2"]:
            assert _lazy.parse_qsl(q, keep_blank_values=True) == parse_qsl(q, keep_blank_values=True)
        for raw in ["/a%20b", "/%e9%zz", "/%C3%A9", "/%"]:
            assert (_lazy.unquote(raw, encoding="utf-8", errors="replace")
                    == unquote(raw, encoding="utf-8", errors="replace"))
    assert _lazy.parse_qsl is parse_qsl and _lazy.unquote is unquote and _lazy.json_loads is json.loads


def test_date_header_text_matches_email_utils():
    """The Date header is written by ``_dates.http_date`` instead of ``email.utils.formatdate``."""
    rng = random.Random(13)
    stamps = [0, 784111777, 951782400, 2**31 - 1, 4102444800] + [rng.randrange(0, 2**33) for _ in range(2000)]
    for t in stamps:
        assert _dates.http_date(t) == email.utils.formatdate(t, usegmt=True), t


def test_lazy_logger_is_the_named_logger(caplog):
    lazy = _log.LazyLogger("powpow.lazytest")
    with caplog.at_level(logging.INFO, logger="powpow.lazytest"):
        lazy.info("hello %s", "there")
        line = sys._getframe().f_lineno - 1
    assert lazy.isEnabledFor(logging.INFO) == logging.getLogger("powpow.lazytest").isEnabledFor(logging.INFO)
    recs = [r for r in caplog.records if r.name == "powpow.lazytest"]
    assert [r.getMessage() for r in recs] == ["hello there"]
    # the record points at the caller, not at powpow/_log.py
    assert recs[0].pathname == __file__ and recs[0].lineno == line
    assert recs[0].funcName == "test_lazy_logger_is_the_named_logger"
    assert lazy.name == "powpow.lazytest"


def test_get_logger_gives_the_real_logger_once_logging_is_loaded():
    assert "logging" in sys.modules
    assert _log.get_logger("powpow.x") is logging.getLogger("powpow.x")


def test_lazy_logger_imports_logging_on_first_use():
    code = ("import sys\nfrom powpow._log import get_logger\n"
            "log = get_logger('powpow.t')\n"
            "assert 'logging' not in sys.modules\n"
            "log.error('boom %d', 7)\n"
            "assert 'logging' in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "boom 7" in r.stderr  # logging's last-resort handler prints errors without configuration


def test_lazy_logger_without_descriptors_prints_like_unconfigured_logging():
    """EMFILE: ``logging`` cannot be read from disk; WARNING and above still reach stderr, nothing raises."""
    code = ("import os, resource, sys\n"
            "from powpow._log import get_logger\n"
            "log = get_logger('powpow.t')\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, hard), hard))\n"
            "hog = []\n"
            "try:\n"
            "    while True:\n"
            "        hog.append(os.open(os.devnull, os.O_RDONLY))\n"
            "except OSError:\n"
            "    pass\n"
            "log.info('quiet %d', 1)\n"
            "log.warning('cannot open %r: answering %d', 'f', 503)\n"
            "try:\n"
            "    raise ValueError('boom')\n"
            "except ValueError:\n"
            "    log.exception('handler raised')\n"
            "assert not log.isEnabledFor(20) and log.isEnabledFor(40)\n"
            "assert 'logging' not in sys.modules\n"
            "for fd in hog:\n"
            "    os.close(fd)\n"
            "log.error('now %s', 'imported')\n"
            "assert 'logging' in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == ["cannot open 'f': answering 503", "handler raised", "ValueError: boom",
                                     "now imported"]


@pytest.mark.parametrize("argv", [["serve", "--bogus"], ["demo", "--bogus"], ["wsgi", "--bogus", "m:app"]])
def test_command_line_top_level_errors_list_every_command(argv):
    """``python -m powpow CMD`` builds only CMD's parser; a top-level error still shows the full usage."""
    r = subprocess.run([sys.executable, "-m", "powpow"] + argv, capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["usage: python -m powpow [-h] {serve,demo,asgi,wsgi} ...",
                                     "python -m powpow: error: unrecognized arguments: --bogus"]


@pytest.mark.parametrize("path", ["_ffi.NATIVE", "wsgi.Server", "asgi.serve", "http.HttpServer", "net.connect",
                                  "extras.FileWatcher", "loop.Loop", "timers.TimerWheel", "errors.PowpowError",
                                  "buffers", "ws.connect_sync", "aio.run"])
def test_subpackages_are_attributes_after_a_plain_import_powpow(path):
    """`import powpow` then `powpow.wsgi.Server(...)`, `powpow._ffi.NATIVE` (the README's
    spelling): each submodule loads on first use (it was an AttributeError unless the
    submodule had been imported by name), and `import powpow` alone still loads none."""
    code = "import powpow\nobj = powpow\nfor part in %r.split('.'):\n    obj = getattr(obj, part)\n" % path
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert not {"powpow.wsgi", "powpow.asgi", "powpow.aio", "powpow.http"} & _new_modules("import powpow")
