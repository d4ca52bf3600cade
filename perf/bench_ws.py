"""WebSocket benchmark, powpow and its peers side by side in one run (issue 10).

    python perf/bench_ws.py [--seconds 2] [--repeats 3] [--only powpow-cpython,picows] [--skip-memory]

Servers (each a child process pinned to core 0 with taskset; what a peer lacks is skipped):
  powpow-cpython, powpow-pypy  this checkout (.venv / .venv-pypy, native module)
  websockets-cpython (uvloop), websockets-pypy (asyncio)   the `websockets` library
  picows-cpython (uvloop)      picows (Cython, CPython only)
  socketify-cpython, socketify-pypy   socketify (uWebSockets through cffi)
  node-ws                      Node `ws` (perf/ws_load_server.js)
Peers come from /work/main/perf/.venv-peers and .venv-peers-pypy (override: POWPOW_PEERS, POWPOW_PEERS_PYPY).

Scenarios, load from Node `ws` (perf/ws_load.js) pinned to core 1, no compression on the wire:
  echo-100     64 connections, one 100-byte binary message in flight each: echoes/s
  echo-8k      the same with 8 KiB messages
  bcast-100    1000 connections; one publishes 100-byte messages (4 in flight) and the server relays
               each to all 1000: delivered messages/s
  rtt-1m       one connection, a 1 MiB message echoed: round trips/s (ms per round trip)
  memory       2000 idle connections opened in bulk (raw sockets), server RSS growth per connection,
               without and with permessage-deflate offered (the server's compression on)
Repeats are interleaved (every server once per repeat); medians are printed, then ratios.
"""
import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.environ.get("POWPOW_PEERS", "/work/main/perf/.venv-peers")
PEERS_PYPY = os.environ.get("POWPOW_PEERS_PYPY", "/work/main/perf/.venv-peers-pypy")

POWPOW = r"""
import sys, powpow
mode, comp = sys.argv[1], sys.argv[2] == "1"
def relay(ws, d, t):
    srv.broadcast(d)
srv = powpow.WsServer(on_message=(lambda ws, d, t: ws.send(d)) if mode == "echo" else relay,
                      compression="deflate" if comp else None, ping_interval=None, max_message_size=2 << 20,
                      max_connections=50000, max_handshakes=None, max_buffered=64 << 20)
srv.listen(0, "127.0.0.1")
print("PORT", srv.port, flush=True)
srv.run()
"""

WEBSOCKETS = r"""
import asyncio, sys
try:
    import uvloop
except ImportError:
    uvloop = None
from websockets.asyncio.server import serve, broadcast
mode, comp = sys.argv[1], sys.argv[2] == "1"
conns = set()
async def handler(ws):
    if mode == "echo":
        async for m in ws:
            await ws.send(m)
        return
    conns.add(ws)
    try:
        async for m in ws:
            broadcast(conns, m)
    finally:
        conns.discard(ws)
async def main():
    async with serve(handler, "127.0.0.1", 0, compression="deflate" if comp else None, max_size=2 << 20,
                     ping_interval=None, max_queue=None, backlog=2048) as s:
        print("PORT", s.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
if uvloop is not None:
    uvloop.install()
asyncio.run(main())
"""

PICOWS = r"""
import asyncio, sys
import uvloop
from picows import ws_create_server, WSListener, WSMsgType
mode = sys.argv[1]
conns = set()
class L(WSListener):
    def on_ws_connected(self, t):
        conns.add(t)
    def on_ws_disconnected(self, t):
        conns.discard(t)
    def on_ws_frame(self, t, f):
        mt = f.msg_type
        if mt == WSMsgType.CLOSE:
            t.send_close(f.get_close_code())
            t.disconnect()
        elif mt == WSMsgType.PING:
            t.send_pong(f.get_payload_as_bytes())
        elif mode == "echo":
            t.send(mt, f.get_payload_as_memoryview())
        else:
            p = f.get_payload_as_bytes()
            for c in conns:
                c.send(mt, p)
async def main():
    srv = await ws_create_server(lambda r: L(), "127.0.0.1", 0, max_frame_size=4 << 20, backlog=2048)
    print("PORT", srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()
uvloop.install()
asyncio.run(main())
"""

SOCKETIFY = r"""
import socket, sys
from socketify import App, CompressOptions
mode, comp = sys.argv[1], sys.argv[2] == "1"
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
app = App()
def on_open(ws):
    ws.subscribe("all")
def on_message(ws, m, op):
    if mode == "echo":
        ws.send(m, op)
    else:
        app.publish("all", m, op)
app.ws("/*", {"compression": CompressOptions.SHARED_COMPRESSOR if comp else CompressOptions.DISABLED,
              "max_payload_length": 2 << 20, "idle_timeout": 0, "max_backpressure": 64 << 20,
              "open": on_open, "message": on_message})
app.listen(port, lambda cfg: print("PORT", port, flush=True))
app.run()
"""


def servers():
    py = os.path.join(ROOT, ".venv", "bin", "python")
    pypy = os.path.join(ROOT, ".venv-pypy", "bin", "python")
    peers = os.path.join(PEERS, "bin", "python")
    peers_pypy = os.path.join(PEERS_PYPY, "bin", "python")
    node = ["node", os.path.join(HERE, "ws_load_server.js")]
    return {
        "powpow-cpython": ([py, "-c", POWPOW], {"POWPOW_REQUIRE_NATIVE": "1"}),
        "powpow-pypy": ([pypy, "-c", POWPOW], {"POWPOW_REQUIRE_NATIVE": "1"}),
        "websockets-cpython": ([peers, "-c", WEBSOCKETS], {}),
        "websockets-pypy": ([peers_pypy, "-c", WEBSOCKETS], {}),
        "picows-cpython": ([peers, "-c", PICOWS], {}),
        "socketify-cpython": ([peers, "-c", SOCKETIFY], {}),
        "socketify-pypy": ([peers_pypy, "-c", SOCKETIFY], {}),
        "node-ws": (node, {}),
    }


class Server:
    def __init__(self, name, cmd, env, mode, comp):
        self.name = name
        e = dict(os.environ, **env)
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + cmd + [mode, "1" if comp else "0"], env=e,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT"):
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError("%s did not start: %r %s" % (name, line, err[-500:]))
        self.port = int(line.split()[1])

    def rss_kib(self) -> int:
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def load(args, timeout):
    out = subprocess.run(["taskset", "-c", "1", "node", os.path.join(HERE, "ws_load.js")] + [str(a) for a in args],
                         capture_output=True, text=True, timeout=timeout)
    parts = out.stdout.split()
    if len(parts) < 4 or parts[0] != "msgs":
        raise RuntimeError("load failed: %s %s" % (out.stdout[-300:], out.stderr[-300:]))
    return int(parts[1]) / float(parts[3])


def scenario(name, srv, seconds):
    url = "ws://127.0.0.1:%d/" % srv.port
    if name == "echo-100":
        return load(["echo", url, 64, 100, seconds], seconds + 60)
    if name == "echo-8k":
        return load(["echo", url, 64, 8192, seconds], seconds + 60)
    if name == "bcast-100":
        return load(["bcast", url, 1000, 100, seconds, 4], seconds + 45)
    if name == "rtt-1m":
        return load(["echo", url, 1, 1 << 20, seconds], seconds + 60)
    raise ValueError(name)


def idle_memory(srv, n, deflate):
    ext = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else b""
    time.sleep(0.5)
    before = srv.rss_kib()
    socks = []
    try:
        for _ in range(n // 250):
            batch = []
            for _ in range(250):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) +
                          b"\r\nSec-WebSocket-Version: 13\r\n" + ext + b"\r\n")
                batch.append(s)
            for s in batch:
                head = b""
                while b"\r\n\r\n" not in head:
                    b = s.recv(4096)
                    if not b:
                        raise RuntimeError("%s closed a handshake" % srv.name)
                    head += b
                if not head.startswith(b"HTTP/1.1 101"):
                    raise RuntimeError("%s: %r" % (srv.name, head[:80]))
                if deflate and b"permessage-deflate" not in head.lower():
                    raise RuntimeError("%s: no permessage-deflate" % srv.name)
            socks.extend(batch)
        time.sleep(1.0)
        return (srv.rss_kib() - before) * 1024 / n
    finally:
        for s in socks:
            s.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", help="comma-separated server names")
    ap.add_argument("--scenarios", default="echo-100,echo-8k,bcast-100,rtt-1m")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-conns", type=int, default=2000)
    ap.add_argument("--json", help="write all samples here")
    a = ap.parse_args()
    table = servers()
    names = a.only.split(",") if a.only else list(table)
    results = {}
    for rep in range(a.repeats):
        for sc in a.scenarios.split(","):
            for name in names:
                cmd, env = table[name]
                try:
                    srv = Server(name, cmd, env, "echo" if sc != "bcast-100" else "bcast", False)
                except (RuntimeError, OSError) as exc:
                    results.setdefault(sc, {}).setdefault(name, []).append(None)
                    print("  %s %s: %s" % (sc, name, exc), flush=True)
                    continue
                try:
                    scenario(sc, srv, min(a.seconds, 1.0))  # warm-up (PyPy's JIT)
                    v = scenario(sc, srv, a.seconds)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    v = None
                    print("  %s %s: %s" % (sc, name, exc), flush=True)
                finally:
                    srv.stop()
                results.setdefault(sc, {}).setdefault(name, []).append(v)
                print("  rep %d %-9s %-20s %s" % (rep, sc, name, "%.0f/s" % v if v else "-"), flush=True)
    if not a.skip_memory:
        for comp in (False, True):
            sc = "memory-deflate" if comp else "memory-plain"
            for name in names:
                if comp and name.startswith("picows"):
                    results.setdefault(sc, {})[name] = [None]  # picows has no permessage-deflate
                    continue
                cmd, env = table[name]
                try:
                    srv = Server(name, cmd, env, "echo", comp)
                    try:
                        v = idle_memory(srv, a.memory_conns, comp)
                    finally:
                        srv.stop()
                except (RuntimeError, OSError) as exc:
                    v = None
                    print("  %s %s: %s" % (sc, name, exc), flush=True)
                results.setdefault(sc, {})[name] = [v]
                print("  %-14s %-20s %s" % (sc, name, "%.0f B/conn" % v if v is not None else "-"), flush=True)
    print("\nmedians (%s, %d repeats, %.0f s each):" % (time.strftime("%Y-%m-%d"), a.repeats, a.seconds))
    for sc, per in results.items():
        print(sc)
        for name, vals in per.items():
            ok = [v for v in vals if v is not None]
            med = statistics.median(ok) if ok else None
            extra = ""
            if sc == "rtt-1m" and med:
                extra = "  (%.2f ms per round trip)" % (1000.0 / med)
            print("  %-20s %12s%s   samples %s" % (name, "%.0f" % med if med is not None else "-", extra,
                                                  ["%.0f" % v if v is not None else "-" for v in vals]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
