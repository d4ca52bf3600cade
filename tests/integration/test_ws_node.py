"""Node's `ws` library as a peer: its client against our server, its server for our client, deflate on and off.

Needs `node` and `npm` (tests/run_all.sh installs nodejs/npm and runs `npm install` in tests/node);
when tests/node/node_modules is missing the first test runs `npm install` itself.
"""
import os
import subprocess

import pytest

from ._ws import ws_serving
from .test_ws_client import run_client

NODE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "node")
PEER = os.path.join(NODE_DIR, "ws_peer.js")


def ensure_ws():
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True,
                       timeout=120, capture_output=True)


@pytest.mark.parametrize("compression", ["deflate", None])
@pytest.mark.parametrize("node_deflate", [True, False])
def test_node_ws_client_against_our_server(compression, node_deflate):
    ensure_ws()
    with ws_serving(on_message=lambda ws, d, t: ws.send(d), compression=compression) as srv:
        proc = subprocess.run(["node", PEER, "client", "ws://127.0.0.1:%d/x" % srv.port,
                               "1" if node_deflate else "0", "40"], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        ok, n, ext, code = proc.stdout.split()
        assert (ok, n, code) == ("ok", "40", "1000")
        assert ("permessage-deflate" in ext) == (compression is not None and node_deflate)


@pytest.mark.parametrize("node_deflate", [True, False, "w8"])
def test_our_client_against_node_ws_server(node_deflate):
    """"w8": the server answers our bare ``client_max_window_bits`` with 8, which zlib cannot
    compress within: our client keeps deflate (the server's messages are compressed) and sends
    its own uncompressed.  Was: the handshake failed, so this server could not be reached."""
    ensure_ws()
    mode = node_deflate if node_deflate == "w8" else "1" if node_deflate else "0"
    proc = subprocess.Popen(["node", PEER, "server", mode], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line[0] == "port"
        msgs = ["", "x", "é" * 5000, b"\x00" * 65536, b"\x01" * 200000, "y" * 125, b"z" * 126]
        got, closed, errors, opened = run_client("ws://127.0.0.1:%s/" % line[1], msgs)
        assert not errors and got == msgs and closed[0][0] == 1000
        assert (opened[0].protocol.deflate is not None) == bool(node_deflate)
        if node_deflate == "w8":
            assert opened[0].protocol.deflate.memory_estimate < 1 << 16  # an inflater, no deflater
    finally:
        proc.kill()
        proc.wait(5)
