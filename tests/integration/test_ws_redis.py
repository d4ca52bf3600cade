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


def _start_redis(*extra):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port, proc
        except OSError:
            assert time.monotonic() < end, "redis-server did not start"
            time.sleep(0.05)


def _fanout(port, retry_ms=1000):
    import powpow
    from powpow.ws.server import Hub
    from powpow.ws.redis import RedisFanout
    loop = powpow.Loop()
    hub = Hub()
    return loop, RedisFanout(loop, hub, "127.0.0.1", port, retry_ms=retry_ms)


def test_publishes_while_redis_is_away_are_bounded_in_bytes_and_logged_once(caplog):
    """Regression: with Redis unreachable, each dropped publish logged a warning (4000
    lines in 2 s), and the queue was capped by count only (1000 x 64 KiB = 62 MiB).
    Now at most 4 MiB waits, and the drops are logged once, then counted."""
    from powpow.ws.redis import MAX_PENDING_BYTES
    import logging
    loop, fan = _fanout(free_port())  # nobody listens there
    try:
        with caplog.at_level(logging.WARNING, logger="powpow.ws"):
            for _ in range(5):
                loop.run_once(10)
            for _ in range(2000):
                fan.publish("t", b"x" * (64 << 10))
            for _ in range(5):
                loop.run_once(10)
        assert fan.pending_bytes <= MAX_PENDING_BYTES and len(fan.pending) < 70, fan.pending_bytes
        dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(dropped) == 1, [r.getMessage() for r in dropped][:3]
        unreachable = [r for r in caplog.records if "cannot connect" in r.getMessage()]
        assert len(unreachable) == 1, [r.getMessage() for r in unreachable]
    finally:
        fan.close()
        loop.close()


def test_a_redis_that_never_reads_holds_at_most_4_mib_and_keeps_its_connection(caplog):
    """Regression: with Redis connected but not reading (stalled), every PUBLISH was written
    to its connection: the queue grew to the transport's 32 MiB cap, which then closed it,
    and the fan-out reconnected about every second, with warnings each time.  Now the
    documented 4 MiB bound holds there too: the rest is dropped and counted, one warning."""
    from powpow.ws.redis import MAX_PENDING_BYTES
    import logging
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted side
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)  # accepted by the kernel, never read
    loop, fan = _fanout(lsock.getsockname()[1])
    try:
        with caplog.at_level(logging.WARNING, logger="powpow.ws"):
            end = time.monotonic() + 5
            while fan.pub is None:
                assert time.monotonic() < end, "never connected"
                loop.run_once(10)
            pub = fan.pub
            for _ in range(3):
                for _ in range(400):
                    fan.publish("t", b"x" * (16 << 10))  # 6.4 MiB a round
                for _ in range(5):
                    loop.run_once(10)
            assert fan.pub is pub and not pub.closed, "the stalled connection was dropped"
            assert pub.queued_bytes <= MAX_PENDING_BYTES, pub.queued_bytes
        stalled = [r.getMessage() for r in caplog.records if "not reading" in r.getMessage()]
        assert len(stalled) == 1, stalled[:3]
        assert not [r for r in caplog.records if "cannot connect" in r.getMessage()]
    finally:
        fan.close()
        for _ in range(3):
            loop.run_once(10)
        loop.close()
        lsock.close()


def test_a_refused_psubscribe_is_logged_and_retried(caplog):
    """Regression: a PSUBSCRIBE refused (here NOAUTH: the server wants a password) was
    skipped silently: no message from other processes ever came, and nothing said so.
    Now it is logged (once) and the connection retried."""
    import logging
    port, proc = _start_redis("--requirepass", "s3cret")
    loop, fan = _fanout(port, retry_ms=100)
    try:
        with caplog.at_level(logging.WARNING, logger="powpow.ws"):
            end = time.monotonic() + 2
            while time.monotonic() < end:
                loop.run_once(20)
        failed = [r.getMessage() for r in caplog.records if "PSUBSCRIBE failed" in r.getMessage()]
        assert len(failed) == 1 and "NOAUTH" in failed[0], failed
        assert not fan.subscribed
    finally:
        fan.close()
        for _ in range(3):
            loop.run_once(10)
        loop.close()
        proc.terminate()
        proc.wait(5)
