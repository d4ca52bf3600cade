"""Command line.

``python -m powpow serve [DIR]`` -- the main job: a faster, safer, more capable
``python -m http.server`` (sendfile, ranges, conditional requests, keep-alive,
pipelining, deadlines, workers).  Without DIR it serves a built-in demo site.

``python -m powpow asgi module:app`` / ``python -m powpow wsgi module:app`` -- serve
an ASGI or WSGI application (flags in ``powpow/_appcli.py``, uvicorn's names).

``python -m powpow demo`` -- the loop on its own: a TCP echo server on
127.0.0.1 plus in-process clients that ping-pong through it, a 1-second
interval printing throughput, SIGINT/SIGTERM handled on the loop thread.
"""
import argparse
import errno
import os
import platform
import signal
import socket
import sys
from typing import Optional

from . import _ffi
from ._appcli import add_head_limit_arguments, cert_error_words, head_limits, port_number, seconds, whole_number
from ._log import get_logger
from .loop import Events, Loop

_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)
_log = get_logger("powpow.serve")


class EchoDemo:
    def __init__(self, loop: Loop, host: str, port: int, clients: int, size: int) -> None:
        self.loop = loop
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            self.listener.listen(512)
            self.listener.setblocking(False)
        except BaseException:
            self.listener.close()
            raise
        self.port = self.listener.getsockname()[1]
        self.conns = {}
        self.echoes = 0
        self.message = b"x" * size
        loop.register(self.listener, Events.READ, self.on_accept)
        self.clients = [self.open_client(host) for _ in range(clients)]
        self.client_by_fd = {c.fileno(): c for c in self.clients}

    # server side: echo whatever arrives
    def on_accept(self, fd: int, events: int) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns[conn.fileno()] = conn
            self.loop.register(conn, Events.READ, self.on_server_data)

    def on_server_data(self, fd: int, events: int) -> None:
        conn = self.conns[fd]
        try:
            data = conn.recv(65536)
        except OSError as exc:
            if exc.errno in _AGAIN:
                return
            data = b""
        if not data:
            self.drop(fd)
            return
        conn.sendall(data)  # small messages on loopback: the kernel takes them whole

    def drop(self, fd: int) -> None:
        self.loop.unregister(fd)
        self.conns.pop(fd).close()

    # client side: send, wait for the echo, send again
    def open_client(self, host: str) -> socket.socket:
        c = socket.create_connection((host, self.port))
        c.setblocking(False)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.loop.register(c, Events.READ, self.on_client_data)
        c.send(self.message)
        return c

    def on_client_data(self, fd: int, events: int) -> None:
        c = self.client_by_fd[fd]
        try:
            data = c.recv(65536)
        except BlockingIOError:
            return
        if data:
            self.echoes += 1
            c.send(self.message)

    def close(self) -> None:
        for c in self.clients:
            self.loop.unregister(c)
            c.close()
        for fd in list(self.conns):
            self.drop(fd)
        self.loop.unregister(self.listener)
        self.listener.close()


def demo(args: argparse.Namespace) -> int:
    loop = Loop(debug=True)
    try:
        app = EchoDemo(loop, args.host, args.port, args.clients, args.size)
    except OSError as exc:  # a port in use, a host that does not resolve or is not ours
        loop.close()
        print("powpow demo: cannot start: cannot listen on %s:%d: %s" % (args.host, args.port, exc), file=sys.stderr)
        return 1
    print("powpow %s loop (native=%s): TCP echo on %s:%d with %d in-process clients; Ctrl-C to stop"
          % (loop.backend, _ffi.NATIVE, args.host, app.port, args.clients), flush=True)
    state = {"last": 0, "ticks": 0}

    def report() -> None:
        state["ticks"] += 1
        n = app.echoes - state["last"]
        state["last"] = app.echoes
        print("  t=%2ds  %8d echoes/s  (timers=%d, watchers=%d)"
              % (state["ticks"], n, loop.timer_count, loop.watcher_count), flush=True)
        if args.seconds and state["ticks"] >= args.seconds:
            loop.stop()

    tick = loop.add_interval(1000, report)

    def on_signal(signum: int) -> None:
        print("  signal %d: stopping" % signum, flush=True)
        loop.stop()

    loop.add_signal(signal.SIGINT, on_signal)
    loop.add_signal(signal.SIGTERM, on_signal)
    try:
        loop.run()
    finally:
        loop.cancel_timer(tick)
        loop.remove_signal(signal.SIGINT)
        loop.remove_signal(signal.SIGTERM)
        app.close()
        loop.close()  # debug mode: raises if anything leaked
    print("done: %d echoes" % app.echoes)
    return 0


SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site")


def make_handler(root: str, listing: bool, cors, show_hidden: bool, builtin: bool, livereload=None):
    from .http import cors_headers, serve_static
    from .poller import available

    info = {
        "server": "powpow",
        "implementation": platform.python_implementation(),
        "python": platform.python_version(),
        "native": _ffi.NATIVE,
        "poller": available()[0],
        "pid": os.getpid(),
    }

    def info_body() -> bytes:
        import json  # on the first /_powpow/info request, not at start-up
        import threading
        doc = dict(info)
        doc["threads"] = threading.active_count()
        return json.dumps(doc).encode()

    def handler(req, res) -> None:
        if cors is not None:
            preflight, status, headers = cors_headers(req.method, req.headers.get, cors)
            for name, value in headers:
                res.add_header(name, value)
            if preflight:
                res.send(b"", status=status or 204)
                return
        if builtin and req.path == "/_powpow/info":
            res.send(info_body(), headers=[("Content-Type", "application/json")])
            return
        if livereload is not None:  # --livereload: the WebSocket endpoint, and the script in HTML pages
            if livereload.handle(req, res):
                return
            # no-cache: every answer is revalidated (a cheap 304 when unchanged), so the
            # reload shows the edit; without it a browser may reuse a stylesheet, script
            # or image by heuristic freshness (RFC 9111 §4.2.2: a tenth of its age)
            if not serve_static(req, res, root, listing=listing, show_hidden=show_hidden,
                                inject_html=livereload.snippet, cache_control="no-cache"):
                res.send_error(404)
            return
        if not serve_static(req, res, root, listing=listing, show_hidden=show_hidden):
            res.send_error(404)

    return handler


def raise_open_file_limit() -> None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (nginx's ``worker_rlimit_nofile``):
    the common soft default of 1024 descriptors is a few hundred busy connections of a
    file server.  Best effort: where it cannot be raised the server runs with what it has."""
    try:
        import resource
    except ImportError:  # not a Unix
        return
    # (debug lines: only where logging is loaded already -- nothing could show them
    # otherwise, and importing it costs the start-up time the lazy loggers save)
    debug = _log.debug if "logging" in sys.modules else None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard
        if want == resource.RLIM_INFINITY or (sys.platform == "darwin" and want > 10240):
            # macOS refuses more than OPEN_MAX (10240) for the soft limit, whatever the hard one
            want = 10240 if sys.platform == "darwin" else soft
        if soft != resource.RLIM_INFINITY and want > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            if debug is not None:
                debug("open file limit raised from %d to %d", soft, want)
    except (OSError, ValueError) as exc:
        if debug is not None:
            debug("open file limit left as it is: %s", exc)


def serve(args: argparse.Namespace) -> int:
    from .http import CorsOptions, HttpServer
    from .http.cors import CorsConfigError

    raise_open_file_limit()
    if args.directory is not None:
        if args.dir is not None and args.dir != args.directory:
            print("powpow serve: two directories given (%s and --directory %s)" % (args.dir, args.directory),
                  file=sys.stderr)
            return 2
        args.dir = args.directory
    builtin = args.dir is None
    root = os.path.abspath(SITE_DIR if builtin else args.dir)
    if not os.path.isdir(root):
        hint = ""
        if args.dir is not None and args.dir.isdigit() and args.directory is None:
            # http.server takes the port there: python -m http.server 8080
            hint = " (the port is given as --port %s)" % args.dir
        print("powpow serve: %s is not a directory%s" % (root, hint), file=sys.stderr)
        return 2
    cors = None
    if args.cors or args.cors_origin:
        try:
            cors = CorsOptions(allow_origins=tuple(args.cors_origin or ["*"]),
                               allow_methods=("GET", "HEAD", "OPTIONS"),
                               allow_headers=STATIC_REQUEST_HEADERS, expose_headers=STATIC_RESPONSE_HEADERS)
        except CorsConfigError as exc:  # (cors_origin checked each value already: a safety net)
            print("powpow serve: error: argument --cors-origin: %s" % (exc,), file=sys.stderr)
            return 2
    if args.access_log:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    ctx = None
    if args.certfile or args.keyfile or args.ca_certs:
        if not args.certfile:
            print("powpow serve: --keyfile/--ca-certs need --certfile", file=sys.stderr)
            return 2
        import ssl

        from .net.tls import server_context
        try:
            ctx = server_context(args.certfile, args.keyfile)
        except (ssl.SSLError, OSError) as exc:
            # before listening: a certificate and key that do not match, a missing file...
            print("powpow serve: cannot use certificate %s with key %s: %s"
                  % (args.certfile, args.keyfile or args.certfile, cert_error_words(exc)), file=sys.stderr)
            return 2
        if args.ca_certs:
            try:  # (the certificate and key are known good now: what fails is the CA file)
                ctx = server_context(args.certfile, args.keyfile, ca_certs=args.ca_certs)
            except (ssl.SSLError, OSError) as exc:
                print("powpow serve: cannot use the CA file %s (--ca-certs): %s"
                      % (args.ca_certs, cert_error_words(exc)), file=sys.stderr)
                return 2
    if args.livereload and args.workers != 1:
        print("powpow serve: --livereload needs --workers 1 (one watcher, one set of pages)", file=sys.stderr)
        return 2
    loop = livereload = server = None
    try:
        if args.livereload:
            from .ws.livereload import LiveReload
            loop = Loop()
            livereload = LiveReload(loop, root)
        handler = make_handler(root, args.listing or builtin, cors, args.show_hidden, builtin, livereload)
        server = HttpServer(handler, loop=loop, workers=args.workers, access_log=args.access_log,
                            worker_mode="thread" if args.worker_threads else "process",
                            keepalive_timeout=args.keepalive_timeout, header_timeout=args.header_timeout,
                            write_timeout=args.write_timeout, min_body_rate=args.min_body_rate,
                            max_connections=args.max_connections, grace_period=args.grace_period,
                            trusted_proxies=tuple(args.trusted_proxy or ()), ssl=ctx, **head_limits(args))
        server.listen(args.port, args.host)
    except (OSError, ValueError, OverflowError) as exc:
        # a port in use, a host that does not resolve, a bad --trusted-proxy, no inotify watch left...:
        # one line, like the asgi/wsgi commands, not a traceback
        if server is not None:
            server.close()
        if livereload is not None:
            livereload.close()
        if loop is not None:
            loop.close()
        print("powpow serve: cannot start: %s" % (exc,), file=sys.stderr)
        return 1
    host = args.host if ":" not in args.host else "[%s]" % args.host
    print("powpow serving %s at %s://%s:%d/ (%s %s, native=%s, workers=%d); Ctrl-C to stop"
          % ("the built-in demo site" if builtin else root, "https" if ctx is not None else "http", host, server.port,
             platform.python_implementation(), platform.python_version(), _ffi.NATIVE, args.workers),
          flush=True)
    try:
        server.run()
    finally:
        if livereload is not None:
            livereload.close()
            loop.run_once(0)  # type: ignore[union-attr]
            loop.close()  # type: ignore[union-attr]
    if server.exit_code:  # a worker was killed, or ended badly, while stopping (logged)
        return server.exit_code
    print("powpow: shut down cleanly", flush=True)
    return 0


# --cors / --cors-origin: what a cross-origin script reading static files sends and reads.
# The request headers the static planner honours (ranges, conditional requests; a page
# setting one makes the browser ask a preflight first); the response headers a client of
# ranges and validators reads beyond the CORS-safelisted ones (Content-Length, Content-Type,
# Last-Modified... are readable anyway; Last-Modified is listed for older browsers).
STATIC_REQUEST_HEADERS = ("range", "if-range", "if-none-match", "if-modified-since",
                          "if-match", "if-unmodified-since")
STATIC_RESPONSE_HEADERS = ("Content-Range", "Accept-Ranges", "ETag", "Last-Modified")


def cors_origin(text: str) -> str:
    """``--cors-origin`` value: an origin as CorsOptions takes it (a bad one is a usage error)."""
    from .http.cors import CorsConfigError, CorsOptions

    try:
        return CorsOptions(allow_origins=(text,)).allow_origins[0]
    except CorsConfigError:
        raise argparse.ArgumentTypeError(
            "%r is not an origin: scheme://host[:port] (e.g. https://app.example), '*' or 'null'" % text) from None


def _add_serve_arguments(sub) -> None:
    s = sub.add_parser("serve", help="serve a directory over HTTP (default command)",
                       description="Serve DIR (default: a built-in demo site) over HTTP/1.1.")
    s.add_argument("dir", nargs="?", default=None, help="directory to serve (default: built-in demo site)")
    # -d/--directory and -b/--bind as python -m http.server spells them
    s.add_argument("-d", "--directory", dest="directory", metavar="DIR", default=None,
                   help="the directory to serve, as http.server spells it (same as DIR)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; :: for all, dual-stack)")
    s.add_argument("--port", type=port_number, default=8000, help="port (default 8000; 0 picks a free one)")
    # The aliases are separate options so that an error names the spelling the user typed
    # ("argument --port: invalid port", not "argument --port/-p").
    s.add_argument("-b", "--bind", dest="host", metavar="HOST", default=argparse.SUPPRESS,
                   help="same as --host, as http.server spells it")
    s.add_argument("-p", dest="port", metavar="PORT", type=port_number, default=argparse.SUPPRESS,
                   help="same as --port")
    s.add_argument("--workers", type=whole_number(1), default=1,
                   help="worker processes sharing the port (SO_REUSEPORT)")
    s.add_argument("--worker-threads", action="store_true",
                   help="run the workers as threads of one process (for free-threaded Python builds)")
    s.add_argument("--listing", action="store_true", help="HTML listings for directories without index.html")
    s.add_argument("--show-hidden", action="store_true", help="serve dotfiles (hidden by default)")
    s.add_argument("--cors", action="store_true", help="allow cross-origin GET/HEAD from any origin")
    s.add_argument("--cors-origin", action="append", type=cors_origin, metavar="ORIGIN",
                   help="allow this origin (repeatable), e.g. https://app.example")
    s.add_argument("--access-log", action="store_true", help="log each request (common log format) to stderr")
    s.add_argument("--keepalive-timeout", type=seconds, default=5.0, help="idle keep-alive seconds (default 5)")
    s.add_argument("--header-timeout", type=seconds, default=10.0,
                   help="seconds to receive a request head (default 10)")
    s.add_argument("--write-timeout", type=seconds, default=30.0,
                   help="drop a client that takes no bytes for this many seconds (default 30)")
    s.add_argument("--min-body-rate", type=whole_number(0), default=500,
                   help="bytes/s a request body must average after 10 s (default 500; 0 = off)")
    s.add_argument("--max-connections", type=whole_number(1), default=10000,
                   help="beyond this, answer 503 (default 10000)")
    s.add_argument("--grace-period", type=seconds, default=10.0, help="seconds in-flight requests get at shutdown")
    add_head_limit_arguments(s)
    s.add_argument("--certfile", metavar="CERT", help="serve HTTPS with this PEM certificate (chain)")
    s.add_argument("--keyfile", metavar="KEY", help="the certificate's private key (PEM; default: in CERT)")
    s.add_argument("--ca-certs", metavar="CA", help="require client certificates signed by these CAs (mTLS)")
    s.add_argument("--trusted-proxy", action="append", metavar="IP",
                   help="honour X-Forwarded-For from this proxy address (repeatable)")
    s.add_argument("--livereload", action="store_true",
                   help="reload open HTML pages when a file under DIR changes (a script is injected into "
                        "text/html pages; WebSocket endpoint /_powpow/livereload)")


def _add_demo_arguments(sub) -> None:
    d = sub.add_parser("demo", help="TCP echo server + in-process clients on the powpow loop")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=port_number, default=0, help="0 = any free port (default)")
    d.add_argument("--clients", type=whole_number(1), default=16)
    d.add_argument("--size", type=whole_number(1), default=100, help="message size in bytes")
    d.add_argument("--seconds", type=whole_number(0), default=5, help="stop after N seconds (0 = until Ctrl-C)")


def _parser(command: Optional[str]) -> argparse.ArgumentParser:
    """The command line parser, with only ``command``'s sub-parser (all of them for None)."""
    parser = argparse.ArgumentParser(prog="python -m powpow", description="powpow: fast network servers.")
    sub = parser.add_subparsers(dest="command")
    if command in (None, "serve"):
        _add_serve_arguments(sub)
    if command in (None, "demo"):
        _add_demo_arguments(sub)
    if command in (None, "asgi", "wsgi"):
        from . import _appcli
        for kind, what in (("asgi", "an ASGI 3 application (FastAPI, Starlette, Django...)"),
                           ("wsgi", "a WSGI application (Flask, Django...)")):
            if command in (None, kind):
                a = sub.add_parser(kind, help="serve %s" % what,
                                   description="Serve %s, e.g. python -m powpow %s main:app" % (what, kind))
                _appcli.add_arguments(a, kind)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("serve", "demo", "asgi", "wsgi", "-h", "--help"):
        argv.insert(0, "serve")  # the main job is the default
    # Only the sub-command asked for gets its parser (all of them for the top-level --help):
    # argparse spends ~1 ms per option building help formatters and looking up translations,
    # the better part of a `serve` start-up.  The messages and help of a sub-command are the same.
    command = argv[0] if argv[0] in ("serve", "demo", "asgi", "wsgi") else None
    parser = _parser(command)
    if command is not None:
        # an error of the top-level parser ("unrecognized arguments") shows its usage, with
        # every sub-command: let the full parser say it
        def full_error(message):
            _parser(None).parse_args(argv)  # exits with this very message
            raise SystemExit(2)

        parser.error = full_error  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    if args.command in ("asgi", "wsgi"):
        from . import _appcli
        return _appcli.main(args.command, args, argv)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
