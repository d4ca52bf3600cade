"""Multi-process serving: ``HttpServer(..., workers=N)``.

Listening before the fork: the TCP listeners are bound *and listening* in the
parent before any worker exists (``WorkerListeners``, made by ``listen()``):
one SO_REUSEPORT socket per worker slot, all on one port (port 0 resolves to
one number for everybody).  A client that connects the moment ``listen()``
returns (or the CLI prints its banner) waits in a backlog until its worker
accepts, instead of being refused while the workers start (it was: each
worker bound its own listener after the fork, and clients were refused for
the first ~30-60 ms).  The kernel spreads new connections over the slots'
accept queues: no shared accept lock, no thundering herd.  Each worker
accepts on its own slot's socket and closes its copies of the others.  The
parent never accepts.  It keeps every slot's socket open while it runs, so a
worker's replacement takes over the connections queued for the dead one
(they wait for it, where they were reset).  When told to stop it closes
them at once: a socket nobody will accept on must not take connections
while the workers drain.  Where SO_REUSEPORT is missing, the slots share one
socket.

The parent only supervises: a worker that dies while the server is running
(crash, OOM kill, ``os._exit`` in a handler) is replaced.  A slot whose
workers keep dying young waits before each replacement, 1 s then twice as
long each time up to 16 s, so a broken handler does not fork-bomb the
machine.  The wait is measured from that worker's death and kept in a list of
pending replacements: the parent never sleeps on one slot while others die
(it did: the workers reaped after a 1 s sleep looked old and were replaced at
once, 3.4 forks a second with 4 workers crashing at start-up).

Stopping: SIGTERM/SIGINT to the parent is sent on to every worker as one
SIGTERM, and the worker shuts down gracefully (stop accepting, finish
in-flight requests within the grace period).  A worker ignores SIGINT and
listens to its parent alone: a terminal's Ctrl-C reaches every process of the
foreground group, and a worker that heard both took the parent's SIGTERM for
a second signal (an ASGI worker then exited at once, dropping its requests).
The second stop signal is the parent's to handle: it kills the workers at
once.  Workers still alive after the grace period are killed too.
``run_workers`` returns 0 after a clean shutdown, 1 when a worker had to be
killed or ended badly while stopping (each one logged); it never returns
while a child it forked is alive.  On Linux a worker is also sent SIGTERM
when the parent dies without stopping it (SIGKILL, the OOM killer:
``PR_SET_PDEATHSIG``), so no worker goes on serving unsupervised.

Signals and fork(): SIGINT/SIGTERM are blocked from just before each fork()
until the new pid is recorded.  A stop signal that arrives then is handled
once the parent knows the child, so the child is told too (it was not: a
SIGTERM 8-25 ms after the banner with 8 workers missed the workers forked
after it, and the parent waited grace_period + 2 s to kill them).  The child
must not run the parent's handler (it would signal its siblings and go on
serving): it sets the defaults back and only then unblocks, so a signal
already sent to it ends it there.  No worker is forked once stopping; every
child that was is sent SIGTERM by the supervising loop, whatever the timing.

Each worker builds its own loop after the fork, whatever the parent made
(a ``loop=`` argument included): a loop's epoll instance and wake fd must
not be shared.  Unix sockets are bound once in the parent and accepted on by
every worker.

``worker_mode="thread"`` runs the N loops as threads of one process instead,
each on its own slot's listener: for free-threaded interpreters (PEP 703),
where threads run Python in parallel.  Under a GIL it only adds overhead,
which is why processes are the default.  The main thread's loop takes
SIGINT/SIGTERM and shuts every loop down gracefully.  A handler stuck in a
worker thread cannot be interrupted: that thread is waited for until the
grace period is over (plus a margin), logged and left running (a daemon), and
its loop is not closed under it (it was: ``LoopError`` out of ``run()``, and
the servers after it were never closed).
"""
import heapq
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from .._ffi import _sock
from .._log import get_logger
from ..net import addr as _addr
from ..net.listener import open_listener

log = get_logger("powpow.http")

_RESTART_BACKOFF_S = 1.0  # a worker that died within this long of starting delays its replacement
_RESTART_BACKOFF_MAX_S = 16.0  # the delay doubles per young death of a slot, up to this
_KILL_AFTER_GRACE_S = 2.0  # past the grace period, workers still alive are killed
_THREAD_JOIN_MARGIN_S = 1.0  # thread workers: past the grace period, a loop still running is stuck
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class WorkerListeners:
    """The TCP listeners of ``HttpServer(workers=N)``: for each worker slot, the
    ``(socket, ssl context)`` pairs of every ``listen()`` call, bound and listening
    in the parent before the fork (see the module docstring)."""

    def __init__(self, workers: int) -> None:
        self._slots: List[List[Tuple[socket.socket, Any]]] = [[] for _ in range(workers)]

    def listen(self, host: str, port: int, backlog: int, ctx: Any) -> int:
        """Bind and listen on ``host:port`` for every slot; returns the port (port 0 picks one)."""
        family, sa = _addr.resolve_passive(host, port, socket.SOCK_STREAM)
        reuse = _sock.have_reuseport()
        if reuse and sa[1]:
            # SO_REUSEPORT lets any process of this user join a port whose sockets all set
            # it: a second server on a port another multi-worker server holds started and
            # took a share of its connections.  A plain bind first says "in use", as
            # without workers (the socket is closed at once).
            open_listener(family, sa, backlog, False).close()
        socks: List[socket.socket] = []
        try:
            first = open_listener(family, sa, backlog, reuse)
            socks.append(first)
            sa = (sa[0], first.getsockname()[1]) + tuple(sa[2:])  # port 0: the one the first got
            for _ in range(1, len(self._slots)):
                socks.append(open_listener(family, sa, backlog, True) if reuse else first.dup())
        except BaseException:
            for s in socks:
                s.close()
            raise
        for slot, s in zip(self._slots, socks):
            slot.append((s, ctx))
        return sa[1]

    @property
    def addresses(self) -> list:
        """The bound address of each ``listen()`` call (as ``TcpServer.addresses``)."""
        return [s.getsockname() for s, _ctx in self._slots[0]] if self._slots else []

    def pop(self, slot: int) -> List[Tuple[socket.socket, Any]]:
        """Slot ``slot``'s listeners, which become the caller's (a thread worker's server)."""
        mine = self._slots[slot]
        self._slots[slot] = []
        return mine

    def take(self, slot: int) -> List[Tuple[socket.socket, Any]]:
        """In a forked worker: its slot's listeners; this process's copies of the others are closed."""
        mine = self.pop(slot)
        self.close()
        return mine

    def close(self) -> None:
        for slot in self._slots:
            for s, _ctx in slot:
                s.close()
            slot.clear()


def _listeners_of(server) -> Optional[WorkerListeners]:
    """The server's pre-bound listeners (None: it listens on unix sockets only).

    A server whose ``listen()`` only reserved the port (bound, not listening:
    ``_reserve``) gets them here, before any fork."""
    listeners = getattr(server, "_worker_listeners", None)
    reserve = getattr(server, "_reserve", None)
    if listeners is None and reserve is not None:
        listeners = WorkerListeners(server.workers)
        try:
            for port, host, backlog, ctx in server._listen_args:
                listeners.listen(host, port, backlog, ctx)
        except BaseException:
            listeners.close()
            raise
        reserve.close()
        server._reserve = None
        server._worker_listeners = listeners
    return listeners


def _close_listeners(server) -> None:
    listeners = getattr(server, "_worker_listeners", None)
    if listeners is not None:
        listeners.close()
        server._worker_listeners = None


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM to this worker when the parent dies, however it dies (SIGKILL, the
    OOM killer): a worker left behind would go on accepting on the port, unsupervised."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except Exception:  # (no ctypes in this build) the parent still stops and reaps its workers
        return
    if os.getppid() != parent:  # it died before the prctl: the same SIGTERM, pending until unblocked
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(server, slot: int, parent: int) -> int:
    # The parent's handler is not ours: the defaults back first, then the stop signals
    # that _spawn blocked let through (a SIGTERM sent already ends this worker here,
    # before it accepted anything).  HttpServer.run installs the graceful handlers.
    # SIGINT is ignored: Ctrl-C reaches the parent too, which sends SIGTERM.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    # A fresh process image as far as powpow is concerned: new loop, new listeners.
    server.workers = 1
    # Whatever the parent made (a loop= argument included) is not ours: its
    # epoll instance and wake fd are shared with every sibling after fork().
    server.loop = None
    server._own_loop = True
    server._tcp = None
    server._timers = []
    listeners = getattr(server, "_worker_listeners", None)
    server._worker_listeners = None
    tcp = server._ensure_tcp()
    if listeners is not None:
        for sock, ctx in listeners.take(slot):
            tcp.adopt(sock, ssl=ctx)
    server._adopt_unix(tcp)
    server.run()
    return 0


def _spawn(server, slot: int, children: Dict[int, Tuple[int, float]], stopping: List[float]) -> None:
    """Fork the worker of ``slot`` unless stopping; its pid is in ``children`` before a
    stop signal can be handled here (see the module docstring)."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        if stopping[0]:
            return
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                code = _worker_main(server, slot, parent)
            except BaseException:  # pragma: no cover - reported, then the worker dies
                log.exception("worker %d failed", os.getpid())
            finally:
                os._exit(code)
        children[pid] = (slot, time.monotonic())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def run_workers(server) -> int:
    """Fork ``server.workers`` workers and supervise them until told to stop.

    Returns 0 after a clean stop, 1 when a worker was killed (the grace period
    was over, or a second stop signal came) or ended badly while stopping."""
    parent = os.getpid()
    stopping = [0.0]  # when the stop began (monotonic); 0.0 while running
    signals = [0]  # stop signals received
    children: Dict[int, Tuple[int, float]] = {}  # pid -> (slot, start time)
    told: Set[int] = set()  # children sent SIGTERM
    killed: Set[int] = set()  # children sent SIGKILL
    pending: List[Tuple[float, int]] = []  # heap of (due time, slot): replacements waiting out a back-off
    delays = [0.0] * server.workers  # each slot's current back-off (0.0: its last worker lived long)
    hurried = False  # the second stop signal was handled
    code = 0

    def tell(pid: int) -> None:
        told.add(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def on_signal(signum, frame) -> None:
        if os.getpid() != parent:
            return  # a child that has not reset its handlers yet: the parent tells it
        signals[0] += 1  # a second one: the supervising loop kills the workers
        if not stopping[0]:
            stopping[0] = time.monotonic()
        for pid in list(children):
            if pid not in told:
                tell(pid)

    prev = {s: signal.signal(s, on_signal) for s in _STOP_SIGNALS}
    server._workers_stopping = stopping  # (stop_workers)
    try:
        _listeners_of(server)
        for slot in range(server.workers):
            _spawn(server, slot, children, stopping)
        while children or pending:
            if stopping[0]:
                del pending[:]
                _close_listeners(server)
                if signals[0] > 1 and not hurried:
                    log.warning("second signal: stopping the workers now")
                    hurried = True
                    code = 1
                    killed.update(children)
                    _kill_all(children, signal.SIGKILL)
                for pid in list(children):
                    if pid not in told:
                        tell(pid)  # forked while the stop signal was being handled
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                _spawn(server, heapq.heappop(pending)[1], children, stopping)
            pid = status = 0
            if children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
            if pid == 0:
                if stopping[0] and now - stopping[0] > server.grace_period + _KILL_AFTER_GRACE_S:
                    for child in list(children):
                        if child not in killed:
                            log.warning("worker %d killed after the grace period", child)
                            code = 1
                            killed.add(child)
                            _kill(child, signal.SIGKILL)
                time.sleep(0.05)
                continue
            gone = children.pop(pid, None)
            if gone is None:
                continue
            if stopping[0]:
                if pid not in killed and not _stopped_cleanly(status):
                    log.error("worker %d exited (%s) while stopping", pid, _describe(status))
                    code = 1
                continue
            slot, started = gone
            if now - started < _RESTART_BACKOFF_S:
                delays[slot] = min(delays[slot] * 2 or _RESTART_BACKOFF_S, _RESTART_BACKOFF_MAX_S)
                log.error("worker %d exited (%s); starting a replacement in %.0f s",
                          pid, _describe(status), delays[slot])
            else:
                delays[slot] = 0.0
                log.error("worker %d exited (%s); starting a replacement", pid, _describe(status))
            heapq.heappush(pending, (now + delays[slot], slot))
    finally:
        # still under on_signal: a stop signal now must not kill the parent before its children
        if children:  # left early (an error): stop them, then reap them
            _stop_and_reap(children, server.grace_period + _KILL_AFTER_GRACE_S)
        server._workers_stopping = None
        for s, h in prev.items():
            signal.signal(s, h)
        _close_listeners(server)
        for sock, path in server._unix_socks:
            sock.close()
            try:
                os.unlink(path)
            except OSError:
                pass
        server._unix_socks = []
    return code


def stop_workers(server) -> None:
    """Stop ``run_workers(server)`` gracefully, as a first stop signal does, from any
    thread: for a worker that asks its parent to stop (ASGI lifespan startup failed)
    without sending it a signal, which would count as a second one."""
    stopping = getattr(server, "_workers_stopping", None)
    if stopping is not None and not stopping[0]:
        stopping[0] = time.monotonic()  # the supervising loop tells the workers


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _kill_all(children: Dict[int, Tuple[int, float]], signum: int) -> None:
    for pid in list(children):
        _kill(pid, signum)


def _stop_and_reap(children: Dict[int, Tuple[int, float]], timeout: float) -> None:
    """SIGTERM every child, wait up to ``timeout``, SIGKILL the rest; reap them all."""
    _kill_all(children, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while children:
        for pid in list(children):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # reaped elsewhere
            if done:
                children.pop(pid, None)
        if not children:
            break
        if time.monotonic() > deadline:
            _kill_all(children, signal.SIGKILL)
            for pid in list(children):
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            children.clear()
            break
        time.sleep(0.02)


def _stopped_cleanly(status: int) -> bool:
    """Exit 0, or ended by the SIGTERM it was sent (before its handlers were in place)."""
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status) in _STOP_SIGNALS
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit code %d" % os.WEXITSTATUS(status)


def run_threads(server) -> int:
    """Run ``server.workers`` loops as threads of this process (free-threaded Pythons)."""
    from .server import HttpServer

    options = dict(server._options, workers=1, worker_mode="process")
    servers: List[Any] = []
    try:
        listeners = _listeners_of(server)
        for i in range(server.workers):
            s = HttpServer(server.handler, **options)
            servers.append(s)
            tcp = s._ensure_tcp()
            if listeners is not None:
                for sock, ctx in listeners.pop(i):
                    tcp.adopt(sock, ssl=ctx)
            s._unix_socks = server._unix_socks
            s._adopt_unix(tcp)
            s._unix_socks = []
    except BaseException:
        for s in servers:
            s.close()
        raise
    _close_listeners(server)  # (every slot's are the servers' now)
    main = servers[0]

    stopped = [0.0]  # when the grace period began (monotonic)

    def stop_all(signum: int) -> None:
        if not stopped[0]:
            stopped[0] = time.monotonic()
        for s in servers:
            s.loop.post(s.shutdown)

    # The stop handlers first: once a worker thread runs it answers clients, and a
    # client that was answered may send SIGTERM before this thread got further.
    loop = main.loop
    loop.add_signal(signal.SIGINT, stop_all)
    loop.add_signal(signal.SIGTERM, stop_all)
    threads = [threading.Thread(target=s.loop.run, name="powpow-worker-%d" % i, daemon=True)
               for i, s in enumerate(servers[1:], 1)]
    try:
        for t in threads:
            t.start()
        loop.run()
    finally:
        loop.remove_signal(signal.SIGINT)
        loop.remove_signal(signal.SIGTERM)
        for s in servers[1:]:
            s.loop.post(s.shutdown)
        # each loop stops by the end of the grace period; one still running is stuck
        # in a handler, and closing a running loop raises: it is left to its thread
        deadline = (stopped[0] or time.monotonic()) + server.grace_period + _THREAD_JOIN_MARGIN_S
        for t, s in zip(threads, servers[1:]):
            if t.ident is not None:  # (started)
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    log.warning("worker thread %s still running after the grace period (a handler is stuck);"
                                " leaving it", t.name)
                    continue
            s.close()
        main.close()
    return 0
