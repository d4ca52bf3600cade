"""The Transport contract (powpow.net.transport) on real loopback sockets, every poller backend.

Half-close (``on_eof``), ``peer_closed`` while paused, ``bytes_sent`` /
``output_pending`` as the measures of write progress, the cap rule for large
writes, the per-event accept cap, and the names of the contract itself.
"""
import errno
import hashlib
import logging
import os
import socket
import threading
import time

import pytest

from powpow import ConnectionLost, TcpServer, WriteQueueFull, connect
from powpow.net import Transport

from ._net import pattern, run_until, settle


def _read_all(s, timeout=10.0, pace=None):
    """Blocking read to EOF; ``pace`` seconds of sleep between reads makes a slow reader."""
    s.settimeout(timeout)
    h = hashlib.sha256()
    n = 0
    while True:
        d = s.recv(64 << 10)
        if not d:
            s.close()  # our FIN: a close_after_drain() on the other side can finish at once
            return n, h.hexdigest()
        h.update(d)
        n += len(d)
        if pace:
            time.sleep(pace)


class Reader(threading.Thread):
    def __init__(self, sock, pace=None):
        super().__init__(daemon=True)
        self.sock = sock
        self.pace = pace
        self.result = None
        self.error = None

    def run(self):
        try:
            self.result = _read_all(self.sock, pace=self.pace)
        except OSError as exc:
            self.error = exc


def _drain_client(loop, s, until_eof=True, timeout=5.0):
    """Read from a non-blocking-polled client socket while the loop runs; returns bytes to EOF."""
    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        loop.run_once(5)
        try:
            d = s.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        if not d:
            s.close()
            return buf
        buf += d
    raise AssertionError("no EOF within %.1fs (got %r)" % (timeout, buf[:100]))


def test_connection_is_a_transport(loop):
    seen = []
    srv = TcpServer(loop, on_accept=seen.append).listen(0, "127.0.0.1")
    client = []
    connect(loop, "127.0.0.1", srv.port, client.append, None, on_error=pytest.fail)
    run_until(loop, lambda: seen and client)
    for c in (seen[0], client[0]):  # server side and client side
        assert isinstance(c, Transport)
        assert not c.is_unix and c.sock_address[0] == "127.0.0.1"
    assert seen[0].sock_address[1] == srv.port and client[0].peer_address[1] == srv.port
    client[0].close()
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


def test_unix_transport_names(loop, tmp_path):
    seen = []
    path = str(tmp_path / "s.sock")
    srv = TcpServer(loop, on_accept=seen.append).listen_unix(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    run_until(loop, lambda: seen)
    c = seen[0]
    assert isinstance(c, Transport) and c.is_unix and c.sock_address == path and c.get_client_ip() is None
    s.close()
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


@pytest.mark.parametrize("how", ["timer", "close_after_drain_at_once"])
def test_eof_with_on_eof_keeps_the_write_side(loop, how):
    """Item 10: a client that half-closes after its request still gets an answer made later."""
    got, eofs, closes = [], [], []

    def answer(c):
        c.write(b"answer to " + b"".join(got))
        c.close_after_drain()  # after EOF: closes as soon as the queue is empty

    def on_eof(c):
        eofs.append(b"".join(got))
        assert c.peer_closed and not c.closed
        if how == "timer":
            loop.add_timer(30, lambda: answer(c))  # asynchronous: the answer comes after the EOF
        else:
            answer(c)

    def on_accept(c):
        c.on_eof = on_eof

    srv = TcpServer(loop, on_accept=on_accept, on_data=lambda c, d: got.append(bytes(d)),
                    on_close=lambda c, e: closes.append(e)).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"request")
    s.shutdown(socket.SHUT_WR)
    assert _drain_client(loop, s) == b"answer to request"
    run_until(loop, lambda: closes)
    assert eofs == [b"request"] and closes == [None]  # on_eof once, after the data
    s.close()
    srv.close()
    settle(loop)


def test_eof_with_on_eof_then_write_eof_closes_both_ways(loop):
    closes = []

    def on_eof(c):
        c.write(b"bye")
        c.write_eof()

    srv = TcpServer(loop, on_accept=lambda c: setattr(c, "on_eof", on_eof),
                    on_close=lambda c, e: closes.append(e)).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.shutdown(socket.SHUT_WR)
    assert _drain_client(loop, s) == b"bye"
    run_until(loop, lambda: closes)  # both directions finished: the transport closed itself
    assert closes == [None]
    s.close()
    srv.close()
    settle(loop)


def test_without_on_eof_eof_still_closes(loop):
    closes = []
    srv = TcpServer(loop, on_close=lambda c, e: closes.append(e)).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: closes)
    assert closes == [None]
    s.close()
    srv.close()
    settle(loop)


@pytest.mark.parametrize("hangup", ["fin", "rst"])
def test_peer_closed_is_seen_while_paused(loop, hangup):
    """Item 22: a paused connection notices its peer's hang-up; the owner then closes it."""
    conns, got, closes = [], [], []

    def on_accept(c):
        c.pause_reading()
        conns.append(c)

    srv = TcpServer(loop, on_accept=on_accept, on_data=lambda c, d: got.append(bytes(d)),
                    on_close=lambda c, e: closes.append(e)).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    run_until(loop, lambda: conns)
    c = conns[0]
    assert not c.peer_closed
    s.sendall(b"unread request")
    for _ in range(5):
        loop.run_once(5)
    assert not c.peer_closed
    if hangup == "rst":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    run_until(loop, lambda: c.peer_closed or closes, timeout=5)
    assert not got  # paused: nothing delivered
    if hangup == "rst":  # a reset connection is dead: closed at once, with the reason
        assert isinstance(closes[0], ConnectionLost) and closes[0].errno == errno.ECONNRESET
        srv.close()
        settle(loop)
        return
    assert not closes and c.reading_paused and not c.closed  # a FIN: still the owner's call
    # The hang-up is reported once, not on every poll (a level-triggered busy loop).
    t0 = time.monotonic()
    for _ in range(5):
        loop.run_once(20)
    assert time.monotonic() - t0 >= 0.08
    c.close()
    assert len(closes) == 1
    srv.close()
    settle(loop)


def test_peer_closed_when_reading_pauses_before_the_fin(loop):
    """Data and FIN arrive together; on_data pauses after the first request: the FIN is still seen."""
    conns, got, closes = [], [], []

    def on_data(c, d):
        got.append(bytes(d))
        c.pause_reading()  # e.g. an HTTP server at its pipeline depth

    srv = TcpServer(loop, on_accept=conns.append, on_data=on_data,
                    on_close=lambda c, e: closes.append(e)).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    run_until(loop, lambda: conns)
    settle(loop)
    s.sendall(b"GET /1 HTTP/1.1\r\n\r\n" * 4)
    s.close()  # FIN right behind the data: one readiness event for both
    run_until(loop, lambda: got)
    c = conns[0]
    run_until(loop, lambda: c.peer_closed, timeout=5)
    assert c.reading_paused and not closes
    c.close()
    assert closes == [None]
    srv.close()
    settle(loop)


def test_bytes_sent_counts_send_writev_and_sendfile(loop, tmp_path):
    body = pattern(3 << 20)
    path = tmp_path / "f.bin"
    path.write_bytes(body)
    conns = []
    expected = b"head" + b"ab" + b"cd" + body + body[10:1010] + b"tail"

    def on_accept(c):
        assert c.bytes_sent == 0
        c.write(b"head")
        c.writev([b"ab", bytearray(b"cd")])
        c.send_file(str(path))
        c.send_file(str(path), 10, 1000)
        c.write(b"tail")
        conns.append(c)

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    r = Reader(s)
    r.start()
    samples = []
    run_until(loop, lambda: conns and (samples.append(conns[0].bytes_sent) or not conns[0].output_pending),
              timeout=10)
    c = conns[0]
    assert c.bytes_sent == len(expected)
    assert samples == sorted(samples)  # monotonic
    c.close_after_drain()
    run_until(loop, lambda: not r.is_alive() and srv.connection_count == 0)
    r.join()
    assert r.error is None and r.result == (len(expected), hashlib.sha256(expected).hexdigest())
    srv.close()
    settle(loop)


def test_output_pending_while_only_a_file_chunk_is_queued(loop, tmp_path):
    """Item 1: queued_bytes leaves file chunks out; output_pending does not."""
    body = pattern(24 << 20)  # more than loopback's socket buffers hold (about 10 MB at most)
    path = tmp_path / "f.bin"
    path.write_bytes(body)
    conns = []

    def on_accept(c):
        c.send_file(str(path))
        conns.append(c)

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    run_until(loop, lambda: conns)
    for _ in range(10):
        loop.run_once(5)
    c = conns[0]
    sent = c.bytes_sent
    assert 0 < sent < len(body)  # the client is not reading: the rest waits
    assert c.queued_bytes == 0 and c.output_pending
    r = Reader(s)
    r.start()
    run_until(loop, lambda: not c.output_pending, timeout=10)
    assert c.bytes_sent == len(body)
    c.close_after_drain()
    run_until(loop, lambda: not r.is_alive() and srv.connection_count == 0)
    r.join()
    assert r.result == (len(body), hashlib.sha256(body).hexdigest())
    srv.close()
    settle(loop)


def test_large_bytes_send_arrives_whole_past_the_cap(loop):
    """Item 21: one send() of a body far above max_queued streams whole to a slow reader."""
    body = pattern(12 << 20)
    conns, closes = [], []

    def on_accept(c):
        conns.append(c.send(body))  # False: above high water, but queued
        c.close_after_drain()

    srv = TcpServer(loop, on_accept=on_accept, on_close=lambda c, e: closes.append(e),
                    max_queued=1 << 20).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    r = Reader(s, pace=0.0005)
    r.start()
    run_until(loop, lambda: not r.is_alive() and closes, timeout=30)
    r.join()
    assert conns == [False] and closes == [None]
    assert r.error is None and r.result == (len(body), hashlib.sha256(body).hexdigest())
    srv.close()
    settle(loop)


def test_write_into_a_queue_past_the_cap_is_refused_loudly(loop, caplog):
    body = pattern(8 << 20)
    results, closes = [], []

    def on_accept(c):
        results.append(c.send(body))
        results.append(c.closed)
        results.append(c.send(b"one more"))  # the queue already holds more than max_queued
        results.append(c.closed)

    srv = TcpServer(loop, on_accept=on_accept, on_close=lambda c, e: closes.append(e),
                    max_queued=1 << 20).listen(0, "127.0.0.1")
    with caplog.at_level(logging.WARNING, logger="powpow.net"):
        s = socket.create_connection(("127.0.0.1", srv.port))  # never reads
        run_until(loop, lambda: closes)
    assert results == [False, False, False, True]
    assert isinstance(closes[0], WriteQueueFull) and "refused" in str(closes[0])
    assert any(rec.levelno == logging.WARNING and "refused" in rec.getMessage() for rec in caplog.records)
    s.close()
    srv.close()
    settle(loop)


def test_send_file_own_fd_is_taken_over(loop, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    fds = []

    def on_accept(c):
        fd = os.open(str(path), os.O_RDONLY)
        fds.append(fd)
        c.send_file(fd, 2, 5, header=b"<", own_fd=True)
        c.write(b">")
        c.close_after_drain()

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    assert _drain_client(loop, s) == b"<23456>"
    run_until(loop, lambda: srv.connection_count == 0)
    with pytest.raises(OSError):
        os.fstat(fds[0])  # closed by the transport (no dup was made)
    s.close()
    srv.close()
    settle(loop)


def test_abort_sends_rst(loop):
    closes = []
    srv = TcpServer(loop, on_accept=lambda c: c.abort(), on_close=lambda c, e: closes.append(e)).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    run_until(loop, lambda: closes)
    s.settimeout(5)
    with pytest.raises(ConnectionResetError):
        s.recv(10)
    s.close()
    srv.close()
    settle(loop)


def test_set_write_buffer_limits(loop):
    conns, drains = [], []

    def on_accept(c):
        c.set_write_buffer_limits(high=64 << 10)
        assert (c.high_water, c.low_water) == (64 << 10, 16 << 10)
        ok = True
        while ok:
            ok = c.write(b"x" * (16 << 10))
        c.on_drain = lambda c: drains.append(c.queued_bytes)
        conns.append(c)

    srv = TcpServer(loop, on_accept=on_accept).listen(0, "127.0.0.1")
    s = socket.create_connection(("127.0.0.1", srv.port))
    run_until(loop, lambda: conns)
    c = conns[0]
    assert 64 << 10 <= c.queued_bytes < 80 << 10  # False came at the new high mark, not at 1 MiB
    with pytest.raises(ValueError):
        c.set_write_buffer_limits(high=10, low=20)
    r = Reader(s)
    r.start()
    run_until(loop, lambda: drains)
    assert drains[0] <= 16 << 10
    c.close_after_drain()
    run_until(loop, lambda: not r.is_alive() and srv.connection_count == 0)
    r.join()
    srv.close()
    settle(loop)


def test_accepts_are_capped_per_event_and_the_backlog_is_all_served(loop):
    """Item 25: a backlog of 300 is accepted in turns; a ready connection is served in between."""
    n = 300
    accepted, seen_at_data = [], []
    first = []

    def on_accept(c):
        accepted.append(c)
        if first:
            c.send(b"hi")
        else:
            first.append(c)

    def on_data(c, d):
        seen_at_data.append(len(accepted))

    srv = TcpServer(loop, on_accept=on_accept, on_data=on_data).listen(0, "127.0.0.1")
    a = socket.create_connection(("127.0.0.1", srv.port))
    run_until(loop, lambda: first)
    settle(loop)  # consume the new connection's first (writable) event: ordering below is then by arrival
    clients = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(n)]  # in the backlog
    a.sendall(b"ping")  # ready after the listener
    run_until(loop, lambda: seen_at_data)
    assert 1 < seen_at_data[0] < n + 1  # served after the first turn of accepts, before the whole backlog
    run_until(loop, lambda: len(accepted) == n + 1)
    for s in clients:
        s.settimeout(5)
        assert s.recv(2) == b"hi"
        s.close()
    a.close()
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)
