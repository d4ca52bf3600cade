"""``HttpServer(workers=N)`` keeps working with WebSocket routes, and SIGTERM never hangs on open sockets."""
import signal
import subprocess
import sys
import textwrap
import time

from powpow.ws import WsClosed, connect_sync

SCRIPT = """
    import os
    from powpow import Loop, ws
    from powpow.http import HttpServer

    def handler(req, res):
        if req.path == "/ws":
            ws.upgrade(req, res, on_message=lambda s, d, t: s.send("%s %d" % (d, os.getpid())))
        else:
            res.send(b"plain")

    server = HttpServer(handler, loop=Loop(), workers=2, grace_period=1)
    server.listen(0, "127.0.0.1")
    print(server.port, flush=True)
    server.run()
"""


def test_websocket_routes_with_two_workers_and_sigterm():
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCRIPT)], stdout=subprocess.PIPE, text=True)
    clients = []
    try:
        port = int(p.stdout.readline())
        end = time.monotonic() + 5
        while True:  # the workers start after the port is printed
            try:
                connect_sync("ws://127.0.0.1:%d/ws" % port, timeout=5).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < end
                time.sleep(0.05)
        pids = set()
        for i in range(20):
            c = connect_sync("ws://127.0.0.1:%d/ws" % port, timeout=5)
            c.send("m%d" % i)
            text, pid = c.recv().split()
            assert text == "m%d" % i
            pids.add(pid)
            clients.append(c)
        assert pids  # served by the worker processes (not the parent)
        assert str(p.pid) not in pids
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0  # 20 open WebSockets do not hold the shutdown
        for c in clients:
            try:
                c.recv(timeout=2)
            except (WsClosed, OSError):
                pass
    finally:
        for c in clients:
            c.close()
        if p.poll() is None:
            p.kill()
            p.wait(5)
