"""The command line shared by ``python -m powpow asgi`` and ``python -m powpow wsgi``.

``add_arguments(parser, kind)`` declares the flags (uvicorn's names where the
meaning is the same; each maps 1:1 to a keyword of ``powpow.asgi.serve`` /
``powpow.wsgi.serve``), ``main(kind, args)`` runs them:

* ``module:app`` is imported with the current directory (or ``--app-dir``)
  first on ``sys.path``; ``module:factory`` with ``--factory`` (or written
  ``module:factory()``) is called to make the app.  An import that fails
  names the module and the attribute and exits 1.
* One line on start: ``powpow asgi serving module:app at http://HOST:PORT/ (...)``
  (``https`` with TLS, ``unix:PATH`` with ``--uds``).
* ``--reload``: this process becomes a supervisor that runs the server as a
  child process and restarts it whenever a ``.py`` file under the current
  directory (or ``--reload-dir``) changes (``powpow.extras.FileWatcher``);
  SIGINT/SIGTERM stop the child gracefully and exit with its code.
* Exit code: the server's (0 after a clean shutdown, 3 when lifespan startup
  failed), 1 when the app cannot be imported, 2 for bad flags.
"""
import argparse
import importlib
import os
import platform
import signal
import sys
import time
from typing import Any, Dict, List, Optional

__all__ = ["add_arguments", "import_app", "AppImportError", "main", "server_kwargs"]

_RELOAD_CHILD = "POWPOW_RELOAD_CHILD"


class AppImportError(Exception):
    """``module:app`` could not be imported or found (the message says which part).

    ``in_app``: the error came from running the app's own code (its import or its factory);
    the CLI then prints that traceback too, as uvicorn does, since the line alone does not
    say where."""

    def __init__(self, message: str, in_app: bool = False) -> None:
        super().__init__(message)
        self.in_app = in_app


# ------------------------------------------------------------ flag types (serve and demo use them too)
# A bad number is a usage error (exit 2, argparse's message) before anything starts:
# --workers 0 would serve nothing, a negative timeout cuts every client at once,
# "inf" overflows the millisecond conversion, and port 99999 would be bound as 34463.

def cert_error_words(exc: OSError) -> str:
    """An OSError from loading a certificate, key or CA file, for a message. PyPy's ssl
    words errno errors its own way (FileNotFoundError(2, '') for a missing CA file,
    '[Errno 2] Error' for a missing certificate): the errno's own words stand in."""
    import ssl

    if exc.errno and not isinstance(exc, ssl.SSLError):
        return "[Errno %d] %s" % (exc.errno, os.strerror(exc.errno))
    return str(exc)


def port_number(text: str) -> int:
    from .net.addr import check_port

    try:
        port = int(text)
        check_port(port)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid port %r (0-65535; 0 picks a free one)" % text) from None
    return port


def whole_number(minimum: int):
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = minimum - 1
        if n < minimum:
            raise argparse.ArgumentTypeError("%r is not a whole number >= %d" % (text, minimum))
        return n
    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):  # also false for nan
        raise argparse.ArgumentTypeError("%r is not a number of seconds >= 0" % text)
    return value


def add_head_limit_arguments(p: argparse.ArgumentParser) -> None:
    """``--max-header-size``, ``--max-headers``, ``--max-request-line`` (asgi, wsgi and serve)."""
    p.add_argument("--max-header-size", type=whole_number(1), default=None, metavar="BYTES",
                   help="largest request head, its fields together (default 8192; past it 431; "
                        "raise it for large cookies)")
    p.add_argument("--max-headers", type=whole_number(1), default=None, metavar="N",
                   help="most fields in a request head (default 100; past it 431)")
    p.add_argument("--max-request-line", type=whole_number(1), default=None, metavar="BYTES",
                   help="longest request line (default 8192; past it 414)")


def head_limits(args: argparse.Namespace) -> Dict[str, Any]:
    """The HttpServer keywords of the head-limit flags that were given."""
    return {name: getattr(args, name) for name in ("max_header_size", "max_headers", "max_request_line")
            if getattr(args, name) is not None}


def add_arguments(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("app", metavar="MODULE:APP",
                   help="the %s application, e.g. main:app (imported with the current directory on sys.path)"
                   % kind.upper())
    p.add_argument("--host", default="127.0.0.1", help="bind to this address (default 127.0.0.1; :: for all)")
    p.add_argument("--port", type=port_number, default=8000,
                   help="bind to this port (default 8000; 0 picks a free one)")
    p.add_argument("--uds", metavar="PATH", help="bind to this unix domain socket instead")
    p.add_argument("--workers", type=whole_number(1), default=1, help="worker processes sharing the port (default 1)")
    p.add_argument("--root-path", default="", help="the path prefix the app is mounted at behind a proxy")
    p.add_argument("--proxy-headers", action=argparse.BooleanOptionalAction, default=True,
                   help="take the client address and scheme from X-Forwarded-For/-Proto of trusted proxies "
                   "(default on)")
    p.add_argument("--forwarded-allow-ips", default=None, metavar="IPS",
                   help="comma-separated addresses/networks of trusted proxies, or '*' "
                   "(default: $FORWARDED_ALLOW_IPS or 127.0.0.1)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug", "trace"], help="default info")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                   help="log each request (default on; --no-access-log turns it off)")
    p.add_argument("--timeout-keep-alive", type=seconds, default=5.0,
                   help="close idle keep-alive connections after this many seconds (default 5)")
    p.add_argument("--timeout-graceful-shutdown", type=seconds, default=None,
                   help="seconds in-flight requests get at shutdown (default 10)")
    p.add_argument("--limit-concurrency", type=whole_number(1), default=None,
                   help="answer 503 beyond this many connections / requests in flight")
    p.add_argument("--certfile", "--ssl-certfile", dest="certfile", metavar="CERT",
                   help="serve HTTPS with this PEM certificate (chain)")
    p.add_argument("--keyfile", "--ssl-keyfile", dest="keyfile", metavar="KEY",
                   help="the certificate's private key (default: in CERT)")
    add_head_limit_arguments(p)
    p.add_argument("--reload", action="store_true", help="restart when a .py file changes (development)")
    p.add_argument("--reload-dir", action="append", metavar="DIR",
                   help="watch this directory for --reload (repeatable; default: the current directory)")
    p.add_argument("--factory", action="store_true", help="APP is a factory: call it to make the application")
    p.add_argument("--app-dir", default="", help="look for MODULE in this directory (default: current)")
    if kind == "asgi":
        p.add_argument("--lifespan", choices=["auto", "on", "off"], default="auto",
                       help="run the lifespan protocol (default auto: if the app speaks it)")
        p.add_argument("--ws", choices=["auto", "none", "powpow", "websockets", "wsproto"], default="auto",
                       help="WebSocket support (default auto: powpow.ws; none: upgrades are plain HTTP "
                       "requests; uvicorn's websockets/wsproto are accepted and mean powpow.ws)")
    else:
        p.add_argument("--threads", type=whole_number(1), default=10, help="threads running the WSGI app (default 10)")


def import_app(spec: str, factory: bool = False, app_dir: str = "") -> Any:
    """``"module:attr"`` (dotted attribute paths allowed) -> the object; ``attr()`` or
    ``factory=True`` calls it.  Raises ``AppImportError`` with a clear message."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppImportError("expected MODULE:APP (for example main:app), got %r" % (spec,))
    if attr.endswith("()"):
        attr = attr[:-2]
        factory = True
    path = os.path.abspath(app_dir) if app_dir else os.getcwd()
    if path not in sys.path[:1]:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # the module itself or a package on its path is missing -- not a module the app
        # imports (``import redis`` in redis_app.py: a prefix of the name, but the app's
        # dependency, whose name the user must see)
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise AppImportError("cannot import module %r (looked in %s and sys.path)"
                                 % (module_name, path)) from exc
        raise AppImportError("importing module %r failed: %s: %s"
                             % (module_name, type(exc).__name__, exc), in_app=True) from exc
    except Exception as exc:
        raise AppImportError("importing module %r failed: %s: %s" % (module_name, type(exc).__name__, exc),
                             in_app=True) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppImportError("module %r has no attribute %r" % (module_name, attr)) from None
    if factory:
        try:
            obj = obj()
        except Exception as exc:
            raise AppImportError("calling the factory %s:%s() failed: %s: %s"
                                 % (module_name, attr, type(exc).__name__, exc), in_app=True) from exc
    if not callable(obj):
        raise AppImportError("%s:%s is not callable (got %s)" % (module_name, attr, type(obj).__name__))
    return obj


def server_kwargs(kind: str, args: argparse.Namespace) -> Dict[str, Any]:
    """The ``serve()`` keywords of the parsed flags (the common set + asgi's or wsgi's own)."""
    kw: Dict[str, Any] = dict(
        uds=args.uds, workers=args.workers, root_path=args.root_path, proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips, log_level=args.log_level, access_log=args.access_log,
        timeout_keep_alive=args.timeout_keep_alive, timeout_graceful_shutdown=args.timeout_graceful_shutdown,
        limit_concurrency=args.limit_concurrency, ssl_certfile=args.certfile, ssl_keyfile=args.keyfile)
    kw.update(head_limits(args))
    if kind == "asgi":
        kw.update(lifespan=args.lifespan, ws="none" if args.ws == "none" else "auto")
    else:
        kw.update(threads=args.threads)
    return kw


def _banner(kind: str, args: argparse.Namespace, server: Any) -> str:
    from . import _ffi
    if args.uds:
        where = "unix:%s" % args.uds
    else:
        host = args.host if ":" not in args.host else "[%s]" % args.host
        port = getattr(server, "port", None) or args.port
        scheme = "https" if (args.certfile or getattr(server, "ssl", None) is not None) else "http"
        where = "%s://%s:%d/" % (scheme, host, port)
    return ("powpow %s serving %s at %s (%s %s, native=%s, workers=%d, pid %d); Ctrl-C to stop"
            % (kind, args.app, where, platform.python_implementation(), platform.python_version(),
               _ffi.NATIVE, args.workers, os.getpid()))


def main(kind: str, args: argparse.Namespace, argv: Optional[List[str]] = None) -> int:
    if args.reload and not os.environ.get(_RELOAD_CHILD):
        return _supervise(kind, argv if argv is not None else sys.argv[1:], args)
    if args.keyfile and not args.certfile:
        print("powpow %s: --keyfile needs --certfile" % kind, file=sys.stderr)
        return 2
    try:
        app = import_app(args.app, args.factory, args.app_dir)
    except AppImportError as exc:
        if exc.in_app and exc.__cause__ is not None:
            import traceback
            traceback.print_exception(type(exc.__cause__), exc.__cause__, exc.__cause__.__traceback__)
        print("powpow %s: error loading %s: %s" % (kind, args.app, exc), file=sys.stderr)
        return 1
    mod = importlib.import_module("powpow.%s" % kind)
    kw = server_kwargs(kind, args)
    cls = getattr(mod, "Server", None)
    if cls is None:  # only serve(): no port to report before it blocks
        print(_banner(kind, args, None), flush=True)
        try:
            mod.serve(app, args.host, args.port, **kw)
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0
    if args.certfile:
        # checked here to name the files (as serve does): ssl's own error names none
        from .net.tls import server_context
        try:
            server_context(args.certfile, args.keyfile)
        except OSError as exc:  # (ssl.SSLError too)
            print("powpow %s: cannot use certificate %s with key %s: %s"
                  % (kind, args.certfile, args.keyfile or args.certfile, cert_error_words(exc)), file=sys.stderr)
            return 2
    try:
        if kind == "asgi":
            kw["on_ready"] = lambda s: print(_banner(kind, args, s), flush=True)
        server = cls(app, args.host, args.port, **kw)
        server.listen()
    except (OSError, ValueError) as exc:  # a port in use, a bad certificate, a bad proxy list...
        where = " on unix:%s" % args.uds if args.uds and isinstance(exc, OSError) and args.uds not in str(exc) else ""
        print("powpow %s: cannot start%s: %s" % (kind, where, exc), file=sys.stderr)
        return 1
    if "on_ready" not in kw:
        print(_banner(kind, args, server), flush=True)
    code = server.run()
    code = int(code or getattr(server, "exit_code", 0) or 0)
    if code == 0:
        print("powpow %s: shut down cleanly" % kind, flush=True)
    return code


# ---------------------------------------------------------------- --reload

def _strip_reload(argv: List[str]) -> List[str]:
    return [a for a in argv if a != "--reload"]


def _free_port(host: str) -> int:
    import socket
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _supervise(kind: str, argv: List[str], args: argparse.Namespace) -> int:
    """Run the server as a child; restart it when a .py file changes."""
    import subprocess  # only --reload needs it: not on every ``python -m powpow`` start

    from .extras.filewatch import FileWatcher
    from .loop import Loop

    child_argv = [sys.executable, "-m", "powpow"] + _strip_reload(argv)
    if not args.uds and args.port == 0:
        # each child binds anew: port 0 would be a different port after every restart,
        # so the supervisor picks one free port now and every child is given it
        child_argv += ["--port", str(_free_port(args.host))]
    env = dict(os.environ)
    env[_RELOAD_CHILD] = "1"
    dirs = [os.path.abspath(d) for d in (args.reload_dir or [os.getcwd()])]
    loop = Loop()
    state: Dict[str, Any] = {"child": None, "stopping": False, "code": 0, "pending": None}

    def start() -> None:
        # its own session: a terminal's Ctrl-C reaches the supervisor only, which stops the child once
        state["child"] = subprocess.Popen(child_argv, env=env, start_new_session=True)

    def stop_child(timeout: float) -> int:
        child = state["child"]
        if child is None:
            return 0
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return child.returncode

    def restart() -> None:
        state["pending"] = None
        if state["stopping"]:
            return
        print("powpow %s: change detected, restarting" % kind, file=sys.stderr, flush=True)
        stop_child((args.timeout_graceful_shutdown or 10.0) + 2)
        start()

    def on_change(ev) -> None:
        # (an editor's atomic save writes a temporary file and renames it over the source:
        # the .py name is the event's destination then)
        if not (ev.path.endswith(".py") or (ev.dest or "").endswith(".py")) or state["stopping"]:
            return
        # an editor writes a file in several steps: restart once they settle
        if state["pending"] is not None:
            loop.cancel_timer(state["pending"])
        state["pending"] = loop.add_timer(200, restart)

    def on_signal(signum: int) -> None:
        if state["stopping"]:
            child = state["child"]
            if child is not None and child.poll() is None:
                child.kill()
            loop.stop()
            return
        state["stopping"] = True
        loop.stop()

    watchers = []
    try:
        for d in dirs:
            watchers.append(FileWatcher(loop, d, on_change, recursive=True))
    except OSError as exc:
        for w in watchers:
            w.close()
        loop.close()
        print("powpow %s: cannot watch for --reload: %s" % (kind, exc), file=sys.stderr, flush=True)
        return 2
    loop.add_signal(signal.SIGINT, on_signal)
    loop.add_signal(signal.SIGTERM, on_signal)
    print("powpow %s: watching %s for changes (--reload)" % (kind, ", ".join(dirs)), file=sys.stderr, flush=True)
    start()
    try:
        loop.run()
    finally:
        for w in watchers:
            w.close()
        if state["pending"] is not None:
            loop.cancel_timer(state["pending"])
        loop.remove_signal(signal.SIGINT)
        loop.remove_signal(signal.SIGTERM)
        code = stop_child((args.timeout_graceful_shutdown or 10.0) + 2)
        loop.close()
    time.sleep(0)
    return code if code and code > 0 else 0
