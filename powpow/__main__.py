"""Command line: ``python -m powpow demo``.

Until the HTTP server lands (then: ``python -m powpow serve DIR``) the main
job is a demo of the loop: a TCP echo server on 127.0.0.1, plus in-process
clients that ping-pong through it, a 1-second interval printing throughput,
and SIGINT/SIGTERM handled on the loop thread for a clean exit.
"""
import argparse
import errno
import signal
import socket
import sys

from . import _ffi
from .loop import Events, Loop

_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)


class EchoDemo:
    def __init__(self, loop: Loop, host: str, port: int, clients: int, size: int) -> None:
        self.loop = loop
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(512)
        self.listener.setblocking(False)
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
    app = EchoDemo(loop, args.host, args.port, args.clients, args.size)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m powpow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    d = sub.add_parser("demo", help="TCP echo server + in-process clients on the powpow loop")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    d.add_argument("--clients", type=int, default=16)
    d.add_argument("--size", type=int, default=100, help="message size in bytes")
    d.add_argument("--seconds", type=int, default=5, help="stop after N seconds (0 = until Ctrl-C)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("demo", "-h", "--help"):
        argv.insert(0, "demo")  # the main job is the default
    args = parser.parse_args(argv)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
