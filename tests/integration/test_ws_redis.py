"""Pub/sub across processes through a real redis-server: two server processes, one topic."""
import os
import socket
import subprocess
import sys
import time

import pytest

from powpow.ws import connect_sync
from powpow.ws.redis import RespParser, resp_command

WORKER = r"""
import sys, powpow
def on_message(ws, data, is_text):
    cmd, _, rest = data.partition(":")
    if cmd == "sub":
        ws.subscribe(rest)
        ws.send("subscribed " + rest)
    elif cmd == "pub":
        topic, _, msg = rest.partition(":")
        srv.publish(topic, msg)
srv = powpow.WsServer(on_message=on_message, redis="127.0.0.1:%s" % sys.argv[1], ping_interval=None)
srv.listen(0, "127.0.0.1")
print("port", srv.port, flush=True)
def check():
    if srv.hub.fanout.subscribed:
        print("subscribed", flush=True)
        srv.loop.cancel_timer(t)
t = srv.loop.add_interval(10, check)
srv.run()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_port():
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < end, "redis-server did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def test_resp_parser_any_split():
    wire = (b"*4\r\n$8\r\npmessage\r\n$3\r\np:*\r\n$3\r\np:x\r\n$5\r\nhe\r\no\r\n" + b":3\r\n+OK\r\n-ERR bad\r\n"
            + b"$-1\r\n")
    whole = RespParser().feed(wire)
    p = RespParser()
    bytewise = []
    for i in range(len(wire)):
        bytewise += p.feed(wire[i:i + 1])
    assert [repr(x) for x in whole] == [repr(x) for x in bytewise]
    assert whole[:3] == [[b"pmessage", b"p:*", b"p:x", b"he\r\no"], 3, b"OK"]
    assert isinstance(whole[3], RuntimeError) and whole[4] is None
    assert resp_command("PUBLISH", "c", b"\x00") == b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$1\r\n\x00\r\n"


def test_publish_reaches_subscribers_in_every_process_once(redis_port):
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(redis_port)], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    clients = []
    try:
        ports = []
        for p in procs:
            line = p.stdout.readline().split()
            assert line[0] == "port", line
            ports.append(int(line[1]))
            assert p.stdout.readline().strip() == "subscribed"
        a = connect_sync("ws://127.0.0.1:%d/" % ports[0])
        b = connect_sync("ws://127.0.0.1:%d/" % ports[1])
        b2 = connect_sync("ws://127.0.0.1:%d/" % ports[1])
        clients = [a, b, b2]
        for c in (a, b):
            c.send("sub:room")
            assert c.recv() == "subscribed room"
        b2.send("pub:room:hello from b")   # publisher in process B, not subscribed itself
        assert a.recv(timeout=3) == "hello from b"  # through Redis
        assert b.recv(timeout=3) == "hello from b"  # local, at once
        a.send("pub:room:from a")
        assert b.recv(timeout=3) == "from a" and a.recv(timeout=3) == "from a"
        with pytest.raises(socket.timeout):
            b.recv(timeout=0.3)  # exactly once: no echo back through Redis
        with pytest.raises(socket.timeout):
            a.recv(timeout=0.3)
    finally:
        for c in clients:
            c.close()
        for p in procs:
            p.terminate()
            p.wait(5)
