"""Multi-process serving: ``HttpServer(..., workers=N)``.

The parent binds the port once (SO_REUSEPORT, not listening) so that port 0
resolves to one number for everybody, then forks N workers.  Each worker makes
its own loop and its own SO_REUSEPORT listener on that port: the kernel
spreads new connections over the workers' accept queues, with no shared accept
lock and no thundering herd.

The parent only supervises: a worker that dies while the server is running
(crash, OOM kill, ``os._exit`` in a handler) is replaced, with a back-off
when workers keep dying young so a broken handler does not fork-bomb the
machine.  SIGTERM/SIGINT to the parent are forwarded to every worker, which
shuts down gracefully (stop accepting, finish in-flight requests within the
grace period); workers still alive after the grace period are killed.  The
parent exits 0 after a clean shutdown.

Each worker builds its own loop after the fork, whatever the parent made
(a ``loop=`` argument included): a loop's epoll instance and wake fd must
not be shared.  Unix sockets are bound once in the parent and accepted on by
every worker.

``worker_mode="thread"`` runs the N loops as threads of one process instead,
each with its own SO_REUSEPORT listener: for free-threaded interpreters
(PEP 703), where threads run Python in parallel.  Under a GIL it only adds
overhead, which is why processes are the default.  The main thread's loop
takes SIGINT/SIGTERM and shuts every loop down gracefully.
"""
import logging
import os
import signal
import threading
import time

log = logging.getLogger("powpow.http")

_RESTART_BACKOFF_S = 1.0  # a worker that died within this long of starting delays its replacement


def _worker_main(server) -> int:
    # A fresh process image as far as powpow is concerned: new loop, new listeners.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    server.workers = 1
    # Whatever the parent made (a loop= argument included) is not ours: its
    # epoll instance and wake fd are shared with every sibling after fork().
    server.loop = None
    server._own_loop = True
    server._tcp = None
    server._timers = []
    if server._reserve is not None:
        server._reserve.close()
        server._reserve = None
    tcp = server._ensure_tcp()
    for port, host, backlog, ctx in server._listen_args:
        tcp.listen(port, host, backlog, reuse_port=True, ssl=ctx)
    server._adopt_unix(tcp)
    server.run()
    return 0


def _spawn(server) -> int:
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            code = _worker_main(server)
        except BaseException:  # pragma: no cover - reported, then the worker dies
            log.exception("worker %d failed", os.getpid())
        finally:
            os._exit(code)
    return pid


def run_workers(server) -> int:
    """Fork ``server.workers`` workers and supervise them until told to stop."""
    stopping = {"flag": False, "since": 0.0}
    children: dict = {}  # pid -> start time

    def on_signal(signum, frame) -> None:
        if not stopping["flag"]:
            stopping["flag"] = True
            stopping["since"] = time.monotonic()
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    prev = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(server.workers):
            children[_spawn(server)] = time.monotonic()
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if stopping["flag"] and time.monotonic() - stopping["since"] > server.grace_period + 2:
                    for p in list(children):
                        try:
                            os.kill(p, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                time.sleep(0.05)
                continue
            started = children.pop(pid, None)
            if started is None:
                continue
            if stopping["flag"]:
                continue
            log.error("worker %d exited (%s); starting a replacement", pid, _describe(status))
            if time.monotonic() - started < _RESTART_BACKOFF_S:
                time.sleep(_RESTART_BACKOFF_S)
            children[_spawn(server)] = time.monotonic()
    finally:
        for s, h in prev.items():
            signal.signal(s, h)
        if server._reserve is not None:
            server._reserve.close()
            server._reserve = None
        for sock, path in server._unix_socks:
            sock.close()
            try:
                os.unlink(path)
            except OSError:
                pass
        server._unix_socks = []
    return 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit code %d" % os.WEXITSTATUS(status)


def run_threads(server) -> int:
    """Run ``server.workers`` loops as threads of this process (free-threaded Pythons)."""
    from .server import HttpServer

    options = dict(server._options, workers=1, worker_mode="process")
    servers = []
    for _ in range(server.workers):
        s = HttpServer(server.handler, **options)
        tcp = s._ensure_tcp()
        for port, host, backlog, ctx in server._listen_args:
            tcp.listen(port, host, backlog, reuse_port=True, ssl=ctx)
        s._unix_socks = server._unix_socks
        s._adopt_unix(tcp)
        s._unix_socks = []
        servers.append(s)
    if server._reserve is not None:  # the listeners hold the port now
        server._reserve.close()
        server._reserve = None
    main = servers[0]

    def stop_all(signum: int) -> None:
        for s in servers:
            s.loop.post(s.shutdown)

    threads = [threading.Thread(target=s.loop.run, name="powpow-worker-%d" % i, daemon=True)
               for i, s in enumerate(servers[1:], 1)]
    for t in threads:
        t.start()
    loop = main.loop
    loop.add_signal(signal.SIGINT, stop_all)
    loop.add_signal(signal.SIGTERM, stop_all)
    try:
        loop.run()
    finally:
        loop.remove_signal(signal.SIGINT)
        loop.remove_signal(signal.SIGTERM)
        for s in servers[1:]:
            s.loop.post(s.shutdown)
        for t in threads:
            t.join(server.grace_period + 5)
        for s in servers:
            s.close()
    return 0
