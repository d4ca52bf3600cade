"""TCP server, connections and the write path, over real loopback sockets (port 0).

The heavy tests (100 x 1000 echoes, 64 MiB each way, 100 MiB sendfile) use one
loop on the default backend (``net_loop``); the behaviour tests run on every
poller backend (``loop``), so the level-triggered poll path is covered too.
"""
import errno
import gc
import hashlib
import os
import socket
import threading
import time

import pytest

import powpow
from powpow import TcpServer, WriteQueueFull, connect

from ._net import pattern, rss_bytes, run_until, settle


def echo_server(loop, host="127.0.0.1", **kw):
    def on_data(c, data):
        if not c.send(data):
            c.pause_reading()  # backpressure: resumed by on_drain

    def on_accept(c):
        c.on_drain = lambda c: c.resume_reading()

    return TcpServer(loop, on_accept=on_accept, on_data=on_data, **kw).listen(0, host)


class Reader(threading.Thread):
    """A blocking client in a thread: optionally sends ``send_first``, then reads to EOF."""

    def __init__(self, port, send_first=b"", host="127.0.0.1", family=socket.AF_INET):
        super().__init__(daemon=True)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.connect((host, port))
        self.send_first = send_first
        self.h = hashlib.sha256()
        self.n = 0
        self.error = None
        self.eof = False

    def run(self):
        try:
            if self.send_first:
                self.sock.sendall(self.send_first)
            while True:
                d = self.sock.recv(1 << 20)
                if not d:
                    self.eof = True
                    break
                self.h.update(d)
                self.n += len(d)
        except OSError as exc:
            self.error = exc
        finally:
            self.sock.close()


def test_echo_small(loop):
    srv = echo_server(loop)
    got = []
    closed = []

    def on_connect(c):
        c.send(b"hello")
        c.sendv([b" ", bytearray(b"wor"), memoryview(b"ld")])

    def on_data(c, d):
        assert isinstance(d, memoryview)
        got.append(bytes(d))
        if b"".join(got) == b"hello world":
            c.close()

    connect(loop, "127.0.0.1", srv.port, on_connect, on_data, lambda c, e: closed.append(e))
    run_until(loop, lambda: closed)
    assert b"".join(got) == b"hello world" and closed == [None]
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


def test_100_clients_x_1000_echoes(net_loop):
    loop = net_loop
    srv = echo_server(loop)
    n_clients, rounds = 100, 1000
    totals = {"sent": 0, "recv": 0, "done": 0, "bad": 0}

    def message(i, k):
        return bytes(((i + k) % 256,)) * (1 + (i * 7 + k) % 200)

    def on_connect(c):
        c.context = [c.context, 0, bytearray()]  # client index, round, pending bytes
        m = message(c.context[0], 0)
        totals["sent"] += len(m)
        c.send(m)

    def on_data(c, d):
        st = c.context
        st[2] += d
        m = message(st[0], st[1])
        if len(st[2]) < len(m):
            return
        if bytes(st[2]) != m:
            totals["bad"] += 1
        totals["recv"] += len(st[2])
        st[2] = bytearray()
        st[1] += 1
        if st[1] == rounds:
            totals["done"] += 1
            c.close()
            return
        m = message(st[0], st[1])
        totals["sent"] += len(m)
        c.send(m)

    for i in range(n_clients):
        def on_connect_i(c, i=i):
            c.context = i
            on_connect(c)
        connect(loop, "127.0.0.1", srv.port, on_connect_i, on_data, on_error=pytest.fail)
    run_until(loop, lambda: totals["done"] == n_clients, timeout=120)
    expected = sum(len(message(i, k)) for i in range(n_clients) for k in range(rounds))
    assert totals["bad"] == 0
    assert totals["sent"] == totals["recv"] == expected
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


def test_64mib_each_way_sha256_with_backpressure(net_loop):
    loop = net_loop
    size = 64 << 20
    srv = echo_server(loop)
    peak = {"q": 0}

    def watch_queue():
        for c in srv.connections:
            peak["q"] = max(peak["q"], c.queued_bytes)
    tick = loop.add_interval(5, watch_queue)
    data = pattern(size)
    sent_hash = hashlib.sha256(data).hexdigest()
    st = {"off": 0, "h": hashlib.sha256(), "n": 0, "closed": None}
    chunk = 256 << 10

    def pump(c):
        while st["off"] < size:
            piece = memoryview(data)[st["off"]:st["off"] + chunk]
            st["off"] += len(piece)
            if not c.send(piece):
                return  # on_drain calls pump again
        c.shutdown()  # FIN after the last byte; the echo keeps coming

    def on_data(c, d):
        st["h"].update(d)
        st["n"] += len(d)
        if st["n"] == size:
            c.close()

    def on_connect(c):
        c.on_drain = pump
        pump(c)

    connect(loop, "127.0.0.1", srv.port, on_connect, on_data, lambda c, e: st.update(closed=e or "ok"),
            on_error=pytest.fail)
    run_until(loop, lambda: st["closed"], timeout=120)
    assert st["closed"] == "ok"
    assert st["n"] == size
    assert st["h"].hexdigest() == sent_hash
    # The server never queued far beyond its high-water mark (1 MiB + one read).
    assert peak["q"] <= (1 << 20) + (64 << 10), peak
    loop.cancel_timer(tick)
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


def test_slow_reader_keeps_queue_and_rss_bounded(net_loop):
    loop = net_loop
    total = 64 << 20
    piece = 256 << 10  # above glibc's mmap threshold: freed chunks leave RSS at once
    src = hashlib.sha256()
    gc.collect()
    st = {"made": 0, "peak": 0, "rss0": rss_bytes(), "rss_peak": 0, "h": hashlib.sha256(), "n": 0, "closed": None}

    def produce(c):
        while st["made"] < total:
            chunk = os.urandom(piece)  # fresh memory each time: an unbounded queue would show in RSS
            src.update(chunk)
            st["made"] += piece
            ok = c.send(chunk)
            st["peak"] = max(st["peak"], c.queued_bytes)
            if not ok:
                return
        c.close_after_drain()

    def on_accept(c):
        c.on_drain = produce
        produce(c)

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")

    def resume(c):
        if not c.closed:
            c.resume_reading()

    def on_data(c, d):
        st["h"].update(d)
        st["n"] += len(d)
        if st["n"] % (4 << 20) < len(d):
            gc.collect()  # PyPy frees big strings only at a major collection: measure live memory
            st["rss_peak"] = max(st["rss_peak"], rss_bytes())
        c.pause_reading()  # slow: at most one read per millisecond
        loop.add_timer(1, lambda: resume(c))

    connect(loop, "127.0.0.1", srv.port, None, on_data, lambda c, e: st.update(closed=e or "ok"),
            on_error=pytest.fail)
    run_until(loop, lambda: st["closed"], timeout=120)
    settle(loop)
    run_until(loop, lambda: loop.timer_count == 0)
    assert st["closed"] == "ok" and st["n"] == total
    assert st["h"].hexdigest() == src.hexdigest()
    assert st["peak"] <= (1 << 20) + piece, st["peak"]  # high water + one send
    assert st["rss_peak"] - st["rss0"] < 40 << 20, (st["rss_peak"] - st["rss0"]) >> 20
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


def test_close_after_drain_16mib_delivers_everything_then_fin(net_loop):
    loop = net_loop
    payload = pattern(16 << 20)
    closes = []

    def on_accept(c):
        c.pause_reading()  # the client's request stays unread: a plain close() would RST
        c.send(payload)
        c.close_after_drain()

    srv = TcpServer(loop, on_accept=on_accept, on_close=lambda c, e: closes.append(e)).listen(0, "127.0.0.1")
    r = Reader(srv.port, send_first=b"GET / junk the server never reads\r\n" * 100)
    r.start()
    run_until(loop, lambda: not r.is_alive() and closes, timeout=60)
    r.join()
    assert r.error is None, r.error
    assert r.eof and r.n == len(payload)
    assert r.h.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert closes == [None]
    srv.close()
    settle(loop)


def test_send_file_100mib_ordered_with_send(net_loop, tmp_path):
    loop = net_loop
    body = pattern(100 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(body)
    fd = os.open(str(path), os.O_RDONLY)

    def on_accept(c):
        c.send(b"HEAD\r\n")
        c.send_file(str(path))
        c.send(b"MID")
        c.send_file(fd, offset=10, count=1000)
        c.send_file(str(path), 0, 5, header=b"H2")
        c.send(b"TAIL")
        c.close_after_drain()

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    expected = hashlib.sha256(b"HEAD\r\n" + body + b"MID" + body[10:1010] + b"H2" + body[:5] + b"TAIL")
    r = Reader(srv.port)
    r.start()
    run_until(loop, lambda: not r.is_alive(), timeout=60)
    r.join()
    os.close(fd)  # send_file used its own duplicate
    assert r.error is None and r.eof
    assert r.n == len(body) + 6 + 3 + 1000 + 2 + 5 + 4
    assert r.h.hexdigest() == expected.hexdigest()
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


def test_send_file_falls_back_to_read_send_for_a_pipe(loop):
    data = os.urandom(50000)
    rp, wp = os.pipe()
    os.write(wp, data)
    os.close(wp)

    def on_accept(c):
        c.send(b"<")
        c.send_file(rp, count=len(data))
        c.send(b">")
        c.close_after_drain()

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    r = Reader(srv.port)
    r.start()
    run_until(loop, lambda: not r.is_alive())
    r.join()
    os.close(rp)
    assert r.error is None and r.eof
    assert r.h.hexdigest() == hashlib.sha256(b"<" + data + b">").hexdigest()
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


class PipeFeeder:
    """An empty pipe that the loop itself fills later (timers), plus a watchdog thread that
    unblocks a loop stuck in a blocking read of it (it writes b"STUCK"s and closes the pipe)
    so that a regression fails instead of hanging.  ``rp`` is the read end for send_file."""

    def __init__(self, loop, parts, step_ms=30):
        self.rp, self.wp = os.pipe()
        self.stuck = False
        self._done = threading.Event()
        self._dog = threading.Thread(target=self._watch, daemon=True)
        self._dog.start()
        for i, part in enumerate(parts):
            loop.add_timer(step_ms * (i + 1), lambda p=part: self.stuck or os.write(self.wp, p))
        loop.add_timer(step_ms * (len(parts) + 1), self._close_writer)

    def _watch(self):
        if not self._done.wait(3.0):
            self.stuck = True
            os.write(self.wp, b"STUCK" * 100)
            os.close(self.wp)
            self._done.set()

    def _close_writer(self):
        if not self.stuck:
            os.close(self.wp)
            self._done.set()

    def finished(self):
        return self._done.is_set()

    def close(self):
        self._done.wait(5)
        self._dog.join(5)
        os.close(self.rp)


@pytest.mark.parametrize("counted", [True, False], ids=["count", "to-eof"])
def test_send_file_from_an_empty_pipe_does_not_block_the_loop(loop, counted):
    """Regression: send_file from a pipe read it blocking on the loop thread -- the loop
    stalled until the pipe's writer wrote (here the writer is the loop itself: a deadlock).
    count=None sent nothing (a pipe's st_size is 0); it now sends up to the pipe's EOF."""
    parts = [b"part-one;", b"part-two;", b"part-three."]
    feeder = PipeFeeder(loop, parts)
    echoes = []

    def on_accept(c):
        c.send(b"<")
        c.send_file(feeder.rp, count=len(b"".join(parts)) if counted else None)
        c.send(b">")
        c.close_after_drain()

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    r = Reader(srv.port)
    r.start()
    # meanwhile the loop serves another connection: an echo that must not wait for the pipe
    got_echo = []
    srv2 = echo_server(loop)
    e = socket.create_connection(("127.0.0.1", srv2.port))
    e.setblocking(False)
    e.send(b"ping")

    def poll_echo():
        try:
            got_echo.append(e.recv(10))
        except BlockingIOError:
            pass
        return got_echo
    run_until(loop, poll_echo, timeout=5)
    echoes.append(r.is_alive())  # the echo came back while the pipe was still being fed
    run_until(loop, lambda: not r.is_alive(), timeout=10)
    r.join()
    run_until(loop, feeder.finished, timeout=5)
    feeder.close()
    assert got_echo == [b"ping"] and echoes == [True]
    assert r.error is None and r.eof
    assert r.h.hexdigest() == hashlib.sha256(b"<" + b"".join(parts) + b">").hexdigest()
    e.close()
    run_until(loop, lambda: srv.connection_count == 0 and srv2.connection_count == 0)
    srv.close()
    srv2.close()
    settle(loop)


def test_write_queue_hard_cap_closes_with_reason(loop):
    closes = []
    chunk = os.urandom(64 << 10)

    def on_accept(c):
        for _ in range(1024):  # 64 MiB, ignoring backpressure on purpose
            c.send(chunk)
            if c.closed:
                break

    srv = TcpServer(loop, on_accept=on_accept, on_close=lambda c, e: closes.append(e),
                    max_queued=2 << 20).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))  # never reads
    run_until(loop, lambda: closes)
    assert isinstance(closes[0], WriteQueueFull)
    assert "cap" in str(closes[0]) and "not reading" in str(closes[0])
    s.close()
    srv.close()
    settle(loop)


def test_max_connections_refusal_can_answer_503(loop):
    def on_overload(c):
        c.send(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")

    srv = echo_server(loop, max_connections=2, on_overload=on_overload)
    keep = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(2)]
    run_until(loop, lambda: srv.connection_count == 2)
    extra = Reader(srv.port)
    extra.start()
    run_until(loop, lambda: not extra.is_alive())
    extra.join()
    assert extra.eof and extra.h.hexdigest() == hashlib.sha256(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").hexdigest()
    assert srv.refused == 1
    for s in keep:  # the two live connections still work
        s.sendall(b"ping")
    replies = []
    for s in keep:
        s.settimeout(5)
        run_until(loop, lambda: True)
        for _ in range(100):
            loop.run_once(10)
            try:
                replies.append(s.recv(10, socket.MSG_DONTWAIT))
                break
            except BlockingIOError:
                pass
    assert replies == [b"ping", b"ping"]
    for s in keep:
        s.close()
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


def test_shutdown_sends_fin_and_keeps_reading(loop):
    got = []
    srv_conn = []

    def on_accept(c):
        srv_conn.append(c)
        c.send(b"bye")
        c.shutdown()

    srv = TcpServer(loop, on_accept=on_accept, on_data=lambda c, d: got.append(bytes(d))).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.settimeout(5)
    buf = b""
    while True:
        run_until(loop, lambda: srv_conn)
        loop.run_once(10)
        try:
            d = s.recv(100, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        if not d:
            break
        buf += d
    assert buf == b"bye"  # then EOF: the server's FIN
    s.sendall(b"still listening?")
    run_until(loop, lambda: b"".join(got) == b"still listening?")
    assert not srv_conn[0].send(b"x")  # sending after shutdown is refused
    s.close()
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


def test_close_reset_and_peer_reset(loop):
    closes = []
    srv = TcpServer(loop, on_accept=lambda c: c.close(reset=True)).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    run_until(loop, lambda: srv.connection_count == 0 and srv._pool)
    s.settimeout(5)
    with pytest.raises(ConnectionResetError):
        s.recv(10)
    s.close()
    srv.close()

    # the peer resets: the server sees a ConnectionLost naming the errno
    def on_accept(c):
        assert c.get_client_ip() == "127.0.0.1"  # cached: error messages can name the peer after a reset
        c.send(b"x" * 100000)

    srv = TcpServer(loop, on_close=lambda c, e: closes.append(e), on_accept=on_accept).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    run_until(loop, lambda: srv.connection_count == 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    run_until(loop, lambda: closes)
    assert closes[0] is None or isinstance(closes[0], powpow.ConnectionLost)
    if closes[0] is not None:
        assert closes[0].errno in (errno.ECONNRESET, errno.EPIPE) and "127.0.0.1" in str(closes[0])
    srv.close()
    settle(loop)


def test_exception_in_on_data_closes_only_that_connection(loop):
    seen = []
    loop._exception_handler = lambda exc, cb: seen.append(exc)  # capture what the loop reports

    def on_data(c, d):
        if bytes(d) == b"boom":
            raise ValueError("handler bug")
        c.send(d)

    closes = []
    srv = TcpServer(loop, on_data=on_data, on_close=lambda c, e: closes.append(e)).listen(0, "127.0.0.1")
    a = socket.create_connection(("127.0.0.1", srv.port))
    b = socket.create_connection(("127.0.0.1", srv.port))
    a.sendall(b"boom")
    run_until(loop, lambda: seen and closes)
    assert isinstance(seen[0], ValueError) and isinstance(closes[0], ValueError)
    b.sendall(b"ok")
    b.settimeout(5)
    for _ in range(200):
        loop.run_once(10)
        try:
            assert b.recv(10, socket.MSG_DONTWAIT) == b"ok"
            break
        except BlockingIOError:
            pass
    else:
        pytest.fail("the other connection stopped working")
    a.close()
    b.close()
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


@pytest.mark.parametrize("listen_host, connect_host, family, ip", [
    ("127.0.0.1", "127.0.0.1", socket.AF_INET, "127.0.0.1"),
    ("::1", "::1", socket.AF_INET6, "::1"),
    ("::", "127.0.0.1", socket.AF_INET, "127.0.0.1"),  # dual-stack: IPv4-mapped, unmapped
    ("::", "::1", socket.AF_INET6, "::1"),
])
def test_peer_address_and_client_ip(loop, listen_host, connect_host, family, ip):
    if not socket.has_ipv6:
        pytest.fail("IPv6 is required on the test machine")
    seen = []
    srv = TcpServer(loop, on_accept=lambda c: seen.append((c.get_client_ip(), c.peer_address))).listen(0, listen_host)
    s = socket.socket(family, socket.SOCK_STREAM)
    s.connect((connect_host, srv.port))
    run_until(loop, lambda: seen)
    assert seen[0][0] == ip
    assert seen[0][1][1] == s.getsockname()[1]
    s.close()
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


def test_connections_are_pooled_and_reset(loop):
    accepted = []

    def on_accept(c):
        assert c.context is None and c.on_drain is None and c.queued_bytes == 0 and not c.reading_paused
        c.context = "dirty"
        c.on_drain = lambda c: None
        c.pause_reading()
        accepted.append(c)

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", srv.port))
        run_until(loop, lambda: srv.connection_count == 1)
        s.close()
        accepted[-1].close()
        assert accepted[-1].closed
    assert accepted[0] is accepted[1] is accepted[2]  # one object, reused
    srv.close()
    settle(loop)


def test_reuse_port_two_servers(loop):
    a = TcpServer(loop).listen(0, "127.0.0.1", reuse_port=True)
    b = TcpServer(loop).listen(a.port, "127.0.0.1", reuse_port=True)
    assert a.port == b.port
    with pytest.raises(OSError) as ei:
        TcpServer(loop).listen(a.port, "127.0.0.1")
    assert "cannot listen on 127.0.0.1:%d" % a.port in str(ei.value)
    a.close()
    b.close()


def test_fin_that_arrives_while_paused_is_seen_after_resume(loop):
    """Edge-triggered: the FIN's edge is consumed while paused; resume must still find the EOF."""
    got, closes, conns = [], [], []

    def on_accept(c):
        c.pause_reading()
        conns.append(c)

    srv = TcpServer(loop, on_accept=on_accept, on_data=lambda c, d: got.append(bytes(d)),
                    on_close=lambda c, e: closes.append(e)).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    run_until(loop, lambda: conns)
    s.sendall(b"last words")
    s.shutdown(socket.SHUT_WR)
    for _ in range(10):
        loop.run_once(10)
    assert not got and not closes
    conns[0].resume_reading()
    run_until(loop, lambda: closes, timeout=5)
    assert b"".join(got) == b"last words" and closes == [None]
    s.close()
    srv.close()
    settle(loop)


def test_paused_after_both_directions_shut_reads_nothing_until_resumed(loop):
    """Regression (poll backend): once the peer's FIN and ours were both through, the
    level-triggered POLLHUP woke a paused connection on every wait, and each wake-up
    read and delivered data although reading was paused."""
    got, closes, conns = [], [], []

    def on_accept(c):
        c.pause_reading()
        conns.append(c)

    srv = TcpServer(loop, on_accept=on_accept, on_data=lambda c, d: got.append(bytes(d)),
                    on_close=lambda c, e: closes.append(e)).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    run_until(loop, lambda: conns)
    s.sendall(b"last words")
    s.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: conns[0].peer_closed, timeout=5)
    conns[0].shutdown()
    assert s.recv(10) == b""  # our FIN is through: both directions are shut
    cpu0 = time.process_time()
    for _ in range(20):
        loop.run_once(10)
    assert not got and not closes
    assert time.process_time() - cpu0 < 0.15  # slept in the waits, not woken on each
    conns[0].resume_reading()
    run_until(loop, lambda: closes, timeout=5)
    assert b"".join(got) == b"last words" and closes == [None]
    s.close()
    srv.close()
    settle(loop)


def test_adopt_a_listening_socket(loop, tmp_path):
    """A socket bound elsewhere (a parent before fork) is served as is; its unix file stays."""
    path = str(tmp_path / "pre.sock")
    pre = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pre.bind(path)
    pre.listen(16)
    srv = echo_server(loop).adopt(pre)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    c.sendall(b"adopted")
    got = b""
    for _ in range(200):
        loop.run_once(10)
        try:
            got += c.recv(100, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        if got == b"adopted":
            break
    assert got == b"adopted"
    c.close()
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)
    assert os.path.exists(path) and pre.fileno() == -1  # closed with the server, file left to its owner
    os.unlink(path)


def _drain_client(cli, want, timeout=10.0):
    cli.settimeout(timeout)
    got = bytearray()
    while len(got) < want:
        d = cli.recv(1 << 20)
        if not d:
            break
        got += d
    return bytes(got)


def test_empty_write_while_queued_does_not_wedge_the_loop(loop):
    """send(b"") / sendv([b""]) while data is queued: the empty item never left the queue
    (the flush pops what the kernel took), and the flush looped forever at 100 % CPU."""
    conns = []

    def on_accept(c):
        c.set_write_buffer_limits(1 << 30)
        c.send(b"x" * (8 << 20))  # the kernel takes part; the rest queues
        assert c.queued_bytes > 0
        c.send(b"")
        c.sendv([b"", b"tail"])
        conns.append(c)

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    cli = socket.create_connection(("127.0.0.1", srv.port))
    want = (8 << 20) + 4
    t = threading.Thread(target=lambda: conns.append(_drain_client(cli, want)), daemon=True)
    t.start()
    run_until(loop, lambda: len(conns) == 2 and conns[0].queued_bytes == 0, timeout=20)
    got = conns[1]
    assert len(got) == want and got.endswith(b"xtail")
    cli.close()
    srv.close()
    settle(loop)


def test_typed_buffers_are_sent_by_bytes_not_items(loop):
    """array('i') / memoryview.cast('I'): len() counts items, and the queue and the
    partial-write offsets were computed from it (data lost, or the loop wedged)."""
    import array

    payload = array.array("i", range(300000))  # 1.2 MB: more than one kernel buffer
    raw = payload.tobytes()
    small = memoryview(bytes(range(256)) * 4).cast("I")

    def on_accept(c):
        c.set_write_buffer_limits(1 << 30)
        c.send(small)
        c.send(payload)
        c.sendv([small, memoryview(b"end")])
        c.close_after_drain()

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    cli = socket.create_connection(("127.0.0.1", srv.port))
    out = []
    want = 1024 + len(raw) + 1024 + 3
    t = threading.Thread(target=lambda: out.append(_drain_client(cli, want)), daemon=True)
    t.start()
    run_until(loop, lambda: out, timeout=20)
    assert out[0] == small.tobytes() + raw + small.tobytes() + b"end"
    cli.close()
    srv.close()
    settle(loop)


def test_exception_in_on_drain_closes_that_connection(loop):
    """An on_drain that raises: the connection goes down with the error (on_close gets it,
    the peer sees the end), as for on_data; it was left half-flushed, its FIN never sent."""
    closed = []
    errors = []
    loop._exception_handler = lambda exc, cb: errors.append(exc)  # the loop's report of it

    def on_drain(c):
        raise RuntimeError("bug in on_drain")

    def on_accept(c):
        c.on_drain = on_drain
        while c.send(b"y" * (1 << 20)):
            pass  # above high water now: on_drain will follow
        c.close_after_drain()

    srv = TcpServer(loop, on_accept=on_accept, on_close=lambda c, e: closed.append(e)).listen(0, "127.0.0.1")
    cli = socket.create_connection(("127.0.0.1", srv.port))
    out = []

    def read_to_the_end():
        try:
            out.append(_drain_client(cli, 1 << 40))
        except OSError as exc:  # recorded, so that a failure says what the client saw
            out.append(exc)

    t = threading.Thread(target=read_to_the_end, daemon=True)
    t.start()
    # The client's read ends within its 10 s timeout whatever happens; what it saw is
    # recorded.  (Once in CI, cpython native, the client thread died without a result
    # while the server had no connection left, and the test could not say why.)
    run_until(loop, lambda: out, timeout=20)
    assert isinstance(out[0], bytes), "the client read %r; the server closed %r" % (out[0], closed)
    run_until(loop, lambda: closed, timeout=5)
    assert isinstance(closed[0], RuntimeError) and "on_drain" in str(closed[0])
    assert any(isinstance(e, RuntimeError) for e in errors)
    cli.close()
    srv.close()
    settle(loop)


def test_zero_high_water_with_an_empty_queue_stays_writable(loop):
    """set_write_buffer_limits(0) with nothing queued: writable stays True (nothing is
    above a zero mark), so a producer waiting on writable/on_drain does not stall."""
    seen = []

    def on_accept(c):
        c.set_write_buffer_limits(0)
        seen.append((c.writable, c.queued_bytes))
        seen.append(c.send(b"hello"))
        c.close_after_drain()

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    cli = socket.create_connection(("127.0.0.1", srv.port))
    out = []
    t = threading.Thread(target=lambda: out.append(_drain_client(cli, 5)), daemon=True)
    t.start()
    run_until(loop, lambda: out, timeout=10)
    assert seen == [(True, 0), True] and out[0] == b"hello"
    cli.close()
    srv.close()
    settle(loop)


def test_send_file_pushes_back_and_caps_queued_chunks(loop, tmp_path):
    """Each queued send_file chunk holds an open fd and was counted nowhere: against a peer
    that never reads, send_file never returned False and the fds grew without limit.  Past
    FILES_HIGH chunks it returns False (wait for on_drain); a producer that ignores that is
    refused at FILES_MAX like a write past the cap (WriteQueueFull, connection closed, every
    chunk's fd released)."""
    from powpow.net import _writing

    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(64 << 10))
    fd_dir = "/proc/self/fd"
    out = {}
    closed = []

    def on_accept(c):
        before = len(os.listdir(fd_dir))
        queued_at_false = None
        calls = 0
        while not c.closed and calls < 5000:  # a producer that ignores send_file's False
            calls += 1
            ok = c.send_file(str(path))
            if not ok and queued_at_false is None and not c.closed:
                queued_at_false = len(c._queue)
        out.update(queued_at_false=queued_at_false, calls=calls, fds=len(os.listdir(fd_dir)) - before)

    srv = TcpServer(loop, on_accept=on_accept, on_close=lambda c, e: closed.append(e)).listen(0, "127.0.0.1")
    cli = socket.create_connection(("127.0.0.1", srv.port))  # never reads
    run_until(loop, lambda: closed, timeout=20)
    assert out["queued_at_false"] is not None and out["queued_at_false"] <= _writing.FILES_HIGH
    assert out["calls"] < 5000
    assert isinstance(closed[0], WriteQueueFull) and "file chunks" in str(closed[0])
    assert out["fds"] <= 1  # the refused connection released its chunks' fds
    cli.close()
    srv.close()
    settle(loop)


def test_unexpected_accept_error_backs_off_instead_of_spinning(loop, caplog):
    """accept() failing with an errno outside the handled sets (EINVAL: a pre-fork parent
    shut down its copy of the shared listener) returned at once, and a level-triggered
    backend reported the listener again on every iteration: a busy loop logging each time.
    Now: one log line, and the listener rests for backoff_ms between tries."""
    import logging
    import time

    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    other = socket.socket(fileno=os.dup(ls.fileno()))  # the parent's copy of the same listener
    srv = TcpServer(loop).adopt(ls)
    settle(loop)
    other.shutdown(socket.SHUT_RDWR)
    caplog.set_level(logging.ERROR, logger="powpow")
    t0 = time.monotonic()
    iterations = 0
    while time.monotonic() - t0 < 0.5:
        loop.run_once(100)
        iterations += 1
    errors = [r for r in caplog.records if "accept()" in r.getMessage()]
    assert len(errors) == 1, len(errors)
    assert iterations < 200, iterations  # (tens of thousands before, on poll)
    srv.close()
    other.close()
    settle(loop)


@pytest.mark.parametrize("port", [65536, 70000, 99999, -1])
def test_listen_rejects_a_port_out_of_range(loop, port):
    # getaddrinfo takes a port modulo 65536: 70000 used to bind 4464, silently
    from powpow.http import HttpServer
    from powpow.net import bind_udp

    srv = TcpServer(loop)
    try:
        with pytest.raises(ValueError, match="port must be 0-65535, got %d" % port):
            srv.listen(port, "127.0.0.1")
        assert srv.port is None  # nothing was bound
    finally:
        srv.close()
    http = HttpServer(lambda req, res: res.send(b""), loop=loop)
    try:
        with pytest.raises(ValueError, match=str(port)):
            http.listen(port, "127.0.0.1")
    finally:
        http.close()
    with pytest.raises(ValueError, match=str(port)):
        bind_udp(loop, "127.0.0.1", port, None)
    settle(loop)


def test_listen_with_host_and_port_swapped_names_the_order(loop):
    """``listen(port, host)``: the stdlib's (host, port) order by habit gets a TypeError
    that says so, on every server.  Was: ``AttributeError: 'int' object has no attribute
    'startswith'`` from deep in the address code."""
    from powpow.http import HttpServer

    srv = TcpServer(loop)
    http = HttpServer(lambda req, res: res.send(b""), loop=loop)
    try:
        with pytest.raises(TypeError, match=r"host must be a str, got int 8741 \(the port comes first"):
            srv.listen("127.0.0.1", 8741)
        with pytest.raises(TypeError, match=r"the port comes first: listen\(port, host\)"):
            http.listen("127.0.0.1", 8741)
        with pytest.raises(TypeError, match=r"host must be a str, got bytes b'127.0.0.1'$"):
            srv.listen(0, b"127.0.0.1")
        assert srv.port is None and http.port is None  # nothing was bound
    finally:
        srv.close()
        http.close()
    settle(loop)


def test_a_reset_after_the_peers_fin_closes_the_connection_at_once(loop, backend):
    """A peer that closed (FIN) and is then sent data answers with a reset: the server,
    which kept its side open with ``on_eof``, hears it at once (``on_close`` with a
    ``ConnectionLost``) on the edge-triggered pollers.  It did not: the read on that error
    event said EOF again (the FIN comes first), and the loss stayed unseen until a later
    send failed -- an HTTP stream to a closed browser tab kept its handler running one
    chunk longer.  Level-triggered (poll), a connection past its EOF with nothing queued is
    parked (``Loop.register``), so there the next send tells, as before."""
    closed = []
    conns = []

    def on_eof(c):
        c.send(b"to a closed peer")  # its kernel answers with RST

    def on_accept(c):
        conns.append(c)
        c.on_eof = on_eof
        c.on_close = lambda c, exc: closed.append(exc)

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"x")
    s.close()
    if backend in ("epoll", "kqueue"):
        run_until(loop, lambda: closed, timeout=3.0)
    else:
        run_until(loop, lambda: conns and conns[0].peer_closed and not conns[0].output_pending, timeout=3.0)
        for _ in range(3):
            time.sleep(0.05)
            settle(loop)
            if closed:
                break
            conns[0].send(b"again")
        run_until(loop, lambda: closed, timeout=3.0)
    assert isinstance(closed[0], powpow.ConnectionLost), closed
    assert closed[0].errno in (errno.ECONNRESET, errno.EPIPE), closed
    srv.close()
    settle(loop)
