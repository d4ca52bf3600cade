"""WebSocket echo throughput: powpow's WsServer under Node `ws` clients (a first slice of issue 10's bench).

Usage: python perf/bench_ws.py [--conns 64] [--size 100] [--seconds 3]
Runs the echo server (this interpreter, one process) and the Node load
generator (perf/ws_load.js; needs `npm install` in tests/node), prints
messages/s.  Peers (websockets, picows, socketify) are not in this slice.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = ("import powpow, sys\n"
          "srv = powpow.WsServer(on_message=lambda ws, d, t: ws.send(d), compression=None, ping_interval=None)\n"
          "srv.listen(0, '127.0.0.1'); print(srv.port, flush=True); srv.run()\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    srv = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True,
                           cwd=os.path.dirname(HERE))
    try:
        port = int(srv.stdout.readline())
        out = subprocess.run(["node", os.path.join(HERE, "ws_load.js"), "ws://127.0.0.1:%d/" % port, str(a.conns),
                              str(a.size), str(a.seconds)], capture_output=True, text=True, timeout=a.seconds + 30)
        parts = out.stdout.split()
        msgs, secs = int(parts[1]), float(parts[3])
        print("%s %s: %d conns, %d-byte messages: %.0f echoes/s" % (
            sys.implementation.name, "native" if not os.environ.get("POWPOW_PURE") else "pure", a.conns, a.size,
            msgs / secs))
    finally:
        srv.terminate()
        srv.wait(5)


if __name__ == "__main__":
    main()
