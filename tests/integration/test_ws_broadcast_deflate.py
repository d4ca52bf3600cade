"""Compressed broadcast and the shared compressor, decoded by real peers (websockets, Node ws, raw zlib).

``broadcast``/``publish`` compress a message once per window size and queue
the same bytes on every socket that negotiated permessage-deflate; sockets
without it share one plain frame.  ``shared_compressor=True`` makes every
connection of a loop compress on one zlib stream whose messages are
self-contained (``server_no_context_takeover`` is negotiated).
"""
import hashlib
import os
import socket
import subprocess
import zlib

import pytest

from powpow.ws import deflate as _deflate
from powpow.ws.frames import OP_BINARY, OP_TEXT, FrameParser

from ._ws import PyPeer, handshake, read_head, wait_for, ws_serving
from .test_ws_broadcast import on_loop
from .test_ws_node import PEER, ensure_ws


TAIL = b"\x00\x00\xff\xff"
MESSAGES = ["short", "hello world " * 300, bytes(range(256)) * 40, "é" * 5000]


class RawClient:
    """A socket that negotiates (or not) permessage-deflate and returns frames as they came: (rsv, op, payload)."""

    def __init__(self, port, ext=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(handshake(extra=b"Sec-WebSocket-Extensions: " + ext + b"\r\n" if ext else b""))
        head, self.buf = read_head(self.sock)
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.head = head.decode()
        self.parser = FrameParser(lambda *a: None)

    def frames(self, n):
        out = []
        while True:
            out.extend((r, o, bytes(p)) for f, r, o, p in self.parser.feed_all(self.buf))
            self.buf = b""
            if len(out) >= n:
                return out
            data = self.sock.recv(1 << 20)
            assert data, "closed"
            self.buf = data

    def close(self):
        self.sock.close()


def decode(frames, inflater=None):
    """Frames -> messages; compressed ones through ``inflater`` (kept across messages) or a fresh one each."""
    out = []
    for rsv, op, payload in frames:
        if rsv & 4:
            d = inflater or zlib.decompressobj(-15)
            payload = d.decompress(payload + TAIL)
        out.append(payload.decode() if op == OP_TEXT else payload)
    return out


def node_listen(url, n):
    ensure_ws()
    proc = subprocess.Popen(["node", PEER, "listen", url, "1", str(n)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline().split()
    assert line[0] == "open", line
    return proc, " ".join(line[1:])


def node_result(proc):
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    return [tuple(line.split()[1:]) for line in out.splitlines() if line.startswith("msg ")]


def digest(m):
    b = m.encode() if isinstance(m, str) else m
    return ("t" if isinstance(m, str) else "b", str(len(b)), hashlib.sha1(b).hexdigest())


@pytest.mark.parametrize("shared", [True, False], ids=["shared_compressor", "own_compressors"])
def test_broadcast_compresses_once_per_window_for_real_peers(shared):
    with ws_serving(on_message=lambda ws, d, t: ws.send(d), shared_compressor=shared, ping_interval=None) as srv, \
            PyPeer() as peer:
        url = "ws://127.0.0.1:%d/" % srv.port
        raw12 = [RawClient(srv.port, b"permessage-deflate; client_max_window_bits") for _ in range(3)]
        raw10 = RawClient(srv.port, b"permessage-deflate; server_max_window_bits=10")
        plain = RawClient(srv.port)
        assert ("server_no_context_takeover" in raw12[0].head) == shared
        assert "server_max_window_bits=10" in raw10.head and "permessage-deflate" not in plain.head
        py = peer.connect(url)
        node, node_ext = node_listen(url, len(MESSAGES) + 1)
        assert "permessage-deflate" in node_ext
        assert wait_for(lambda: srv.connection_count == 7)
        counters = lambda: tuple(_deflate.shared_compressor(srv.loop, b, 5, 6).messages for b in (12, 10))  # noqa
        before = on_loop(srv, counters)
        for m in MESSAGES:
            assert on_loop(srv, lambda m=m: srv.broadcast(m)) == []
        after = on_loop(srv, counters)
        # 3 messages over the threshold, each compressed once for window 12 and once for window 10
        assert (after[0] - before[0], after[1] - before[1]) == (3, 3)
        # a direct send after the broadcasts: with context takeover the socket's compressor restarted
        on_loop(srv, lambda: [ws.send("after " * 100) for ws in srv.clients])
        want = MESSAGES + ["after " * 100]

        got12 = [c.frames(len(want)) for c in raw12]
        assert got12[0][:4] == got12[1][:4] == got12[2][:4]  # the very same bytes for each
        assert [f[0] & 4 for f in got12[0][:4]] == [0, 4, 4, 4]  # "short" is under the threshold
        assert [f[1] for f in got12[0][:4]] == [OP_TEXT, OP_TEXT, OP_BINARY, OP_TEXT]
        for frames in got12:
            assert decode(frames, zlib.decompressobj(-15)) == want  # one inflater for the whole stream
        assert decode(got12[0][:4]) == MESSAGES  # and each broadcast frame alone (self-contained)
        f10 = raw10.frames(len(want))
        assert decode(f10, zlib.decompressobj(-10)) == want
        fp = plain.frames(len(want))
        assert [f[0] for f in fp] == [0] * len(want) and decode(fp) == want
        assert [peer.recv(py) for _ in want] == want
        assert node_result(node) == [digest(m) for m in want]
        for c in raw12 + [raw10, plain]:
            c.close()


def test_publish_shares_compressed_frames_too():
    def on_open(ws):
        ws.subscribe("t")

    with ws_serving(on_open=on_open, shared_compressor=True, ping_interval=None) as srv, \
            PyPeer() as peer:
        url = "ws://127.0.0.1:%d/" % srv.port
        clients = [peer.connect(url) for _ in range(20)]
        assert wait_for(lambda: srv.hub.subscribers("t") == 20)
        before = on_loop(srv, lambda: _deflate.shared_compressor(srv.loop, 12, 5, 6).messages)
        msg = os.urandom(64).hex() * 50
        assert on_loop(srv, lambda: srv.publish("t", msg)) == []
        assert on_loop(srv, lambda: _deflate.shared_compressor(srv.loop, 12, 5, 6).messages) == before + 1
        assert all(peer.recv(c) == msg for c in clients)


def test_shared_compressor_for_direct_sends_and_memory():
    """Every socket's messages go through the loop's one compressor; no per-socket deflate state stays."""
    with ws_serving(on_message=lambda ws, d, t: ws.send(d), shared_compressor=True, ping_interval=None) as srv, \
            PyPeer() as peer:
        url = "ws://127.0.0.1:%d/" % srv.port
        clients = [peer.connect(url) for _ in range(5)]
        msgs = ["m%d " % i * (50 + i * 37) for i in range(30)] + [os.urandom(3000), b"a" * 100_000]
        for c in clients:
            for m in msgs:
                peer.send(c, m)
                assert peer.recv(c) == m
        codecs = on_loop(srv, lambda: [ws.protocol.deflate for ws in srv.clients])
        assert len(codecs) == 5 and len({id(d.shared) for d in codecs}) == 1
        assert all(d._c is None for d in codecs)
    # Node ws echoes through our shared compressor
    ensure_ws()
    with ws_serving(on_message=lambda ws, d, t: ws.send(d), shared_compressor=True) as srv:
        proc = subprocess.run(["node", PEER, "client", "ws://127.0.0.1:%d/x" % srv.port, "1", "40"],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.split()[:3] == ["ok", "40", "permessage-deflate"]
