"""``Connection.data_as_bytes``: on_data receives bytes of its own (real loopback sockets, every backend).

The same contracts as the memoryview mode -- order, edge-triggered reads to the
end, pause/resume, half-close -- plus: what on_data got stays intact after
later reads (a view of the shared receive buffer would not), and a pooled
connection forgets the flag.
"""
import hashlib
import socket
import threading

import powpow
from powpow import TcpServer

from ._net import in_thread, pattern, run_until, settle


def bytes_server(loop, on_data, on_accept=None, **kw):
    def accept(c):
        c.data_as_bytes = True
        if on_accept is not None:
            on_accept(c)

    return TcpServer(loop, on_accept=accept, on_data=on_data, **kw).listen(0, "127.0.0.1")


def test_bytes_echo_large_in_order(loop):
    """8 MiB each way through an echo that sends back what it got, with backpressure."""
    kinds = set()

    def on_data(c, d):
        kinds.add(type(d))
        if not c.send(d):
            c.pause_reading()

    srv = bytes_server(loop, on_data, on_accept=lambda c: setattr(c, "on_drain", lambda c: c.resume_reading()))
    payload = pattern(8 << 20)
    cli = socket.create_connection(("127.0.0.1", srv.port))
    h = hashlib.sha256()
    got = [0]

    def pump():
        cli.sendall(payload)
        cli.shutdown(socket.SHUT_WR)

    def drain():
        while True:
            d = cli.recv(1 << 20)
            if not d:
                break
            h.update(d)
            got[0] += len(d)

    ts = [threading.Thread(target=pump, daemon=True), threading.Thread(target=drain, daemon=True)]
    for t in ts:
        t.start()
    run_until(loop, lambda: not ts[1].is_alive(), timeout=30)
    cli.close()
    srv.close()
    settle(loop)
    assert kinds == {bytes}
    assert got[0] == len(payload) and h.digest() == hashlib.sha256(payload).digest()


def test_bytes_outlive_the_callback(loop):
    """Kept without a copy, every chunk is still what arrived after later reads reused the buffer."""
    kept = []

    def on_data(c, d):
        kept.append(d)

    srv = bytes_server(loop, on_data)
    cli = socket.create_connection(("127.0.0.1", srv.port))
    msgs = [bytes([65 + i]) * (1000 + i) for i in range(20)]
    for m in msgs:
        cli.sendall(m)
        want = sum(map(len, kept)) + len(m)
        run_until(loop, lambda want=want: sum(map(len, kept)) >= want)
    assert b"".join(kept) == b"".join(msgs)
    assert all(type(k) is bytes for k in kept)
    cli.close()
    srv.close()
    settle(loop)


def test_bytes_pause_resume_and_half_close(loop):
    """Paused reading keeps data in the kernel; resume delivers it; on_eof after the last byte."""
    got = []
    eofs = []
    conns = []

    def on_data(c, d):
        got.append(d)
        c.pause_reading()

    def on_accept(c):
        conns.append(c)

        def on_eof(c):
            eofs.append(b"".join(got))
            c.send(b"bye")
            c.close_after_drain()

        c.on_eof = on_eof

    srv = bytes_server(loop, on_data, on_accept=on_accept)
    cli = socket.create_connection(("127.0.0.1", srv.port))
    cli.sendall(b"first")
    run_until(loop, lambda: got)
    cli.sendall(b"second")
    cli.shutdown(socket.SHUT_WR)
    for _ in range(10):
        loop.run_once(5)
    assert got == [b"first"] and not eofs  # paused: nothing more delivered
    while not eofs:
        conns[0].resume_reading()
        run_until(loop, lambda: eofs or conns[0].reading_paused)
    assert b"".join(got) == b"firstsecond" and eofs == [b"firstsecond"]
    cli.settimeout(5)
    assert cli.recv(100) == b"bye" and cli.recv(100) == b""
    cli.close()
    srv.close()
    settle(loop)


def test_pooled_connection_forgets_data_as_bytes(loop):
    seen = []
    accepted = []

    def on_accept(c):
        accepted.append(c)
        if len(accepted) == 1:
            c.data_as_bytes = True  # only the first connection opts in

    def on_data(c, d):
        seen.append(type(d))
        c.close()

    srv = TcpServer(loop, on_accept=on_accept, on_data=on_data).listen(0, "127.0.0.1")
    for i in range(2):
        cli = socket.create_connection(("127.0.0.1", srv.port))
        cli.sendall(b"x")
        run_until(loop, lambda i=i: len(seen) == i + 1)
        cli.close()
        settle(loop)
    assert accepted[0] is accepted[1]  # the same pooled object, reset in between
    assert seen == [bytes, memoryview]
    srv.close()
    settle(loop)


def test_bytes_close_inside_on_data_stops_a_full_burst(loop):
    """on_data closing its connection in the middle of a burst that fills the buffer:
    nothing more is delivered to it, and the server keeps serving the next client."""
    calls = []
    closed = []

    def on_data(c, d):
        calls.append(len(d))
        if len(calls) == 1:
            c.close()
        else:
            c.send(d)

    srv = bytes_server(loop, on_data, on_close=lambda c, exc: closed.append(exc))
    a = socket.create_connection(("127.0.0.1", srv.port))
    a.sendall(b"x" * (1 << 20))  # more than one 64 KiB read is waiting when the event comes
    run_until(loop, lambda: closed)
    settle(loop)
    assert len(calls) == 1 and closed == [None]
    b = socket.create_connection(("127.0.0.1", srv.port))
    b.sendall(b"ping")
    b.settimeout(5)
    run_until(loop, lambda: len(calls) == 2)
    assert b.recv(100) == b"ping"
    a.close()
    b.close()
    srv.close()
    settle(loop)


def test_bytes_pause_inside_on_data_stops_a_full_burst(loop):
    """Pausing in on_data while more than a buffer is waiting: nothing more arrives
    until resume, then all of it, in order."""
    got = []
    conns = []

    def on_data(c, d):
        got.append(d)
        c.pause_reading()

    srv = bytes_server(loop, on_data, on_accept=conns.append)
    payload = pattern(3 << 16)
    cli = socket.create_connection(("127.0.0.1", srv.port))
    th, errors = in_thread(lambda: cli.sendall(payload))
    th.join(2)  # in the kernel before the first read: that read fills the whole buffer
    run_until(loop, lambda: got)
    settle(loop, 10)
    assert len(got) == 1 and len(got[0]) > 0
    while sum(map(len, got)) < len(payload):
        n = len(got)
        conns[0].resume_reading()
        run_until(loop, lambda n=n: len(got) > n)
        settle(loop, 2)
        assert len(got) == n + 1  # one delivery per resume: paused again at once
    th.join(5)
    assert b"".join(got) == payload and not errors
    cli.close()
    srv.close()
    settle(loop)


def test_bytes_on_data_error_closes_only_that_connection(backend):
    """An exception from on_data tears down its own connection (on_close gets it, the
    loop's handler reports it); a second connection on the same server is untouched."""
    reported = []
    loop = powpow.Loop(backend=backend, debug=True, exception_handler=lambda exc, cb: reported.append(exc))
    closed = []

    def on_data(c, d):
        if d.startswith(b"boom"):
            raise ValueError("bad record")
        c.send(d)

    srv = bytes_server(loop, on_data, on_close=lambda c, exc: closed.append(exc))
    good = socket.create_connection(("127.0.0.1", srv.port))
    bad = socket.create_connection(("127.0.0.1", srv.port))
    good.settimeout(5)
    bad.settimeout(5)
    good.sendall(b"one")
    bad.sendall(b"boom")
    run_until(loop, lambda: closed)
    assert len(closed) == 1 and isinstance(closed[0], ValueError)
    assert [str(e) for e in reported] == ["bad record"]
    assert bad.recv(100) == b""  # closed by the server (the close is done: no loop turn needed)
    good.sendall(b"two")
    echoed = []

    def read_echo():
        data = b""
        while len(data) < 6:
            chunk = good.recv(100)
            if not chunk:
                break
            data += chunk
        echoed.append(data)

    th, errors = in_thread(read_echo)
    run_until(loop, lambda: echoed)
    th.join(5)
    assert echoed == [b"onetwo"] and not errors
    good.close()
    bad.close()
    srv.close()
    settle(loop)
    loop.close()


def test_bytes_eof_as_a_plain_read_closes_once(monkeypatch):
    """The peer's FIN reported as a plain READ, with no hang-up bit (``poll()`` without
    POLLRDHUP, as on macOS/BSD, or a poller that does not report it): on_data never
    gets b"" and the connection closes once.  The CPython fast read took the empty read
    for data: on_data(b"") on every iteration, and the connection never closed."""
    import powpow.poller.poll as poll_backend

    monkeypatch.setattr(poll_backend, "_POLLRDHUP", 0)
    loop = powpow.Loop(backend="poll", debug=True)
    got = []
    closed = []
    try:
        srv = TcpServer(loop, on_accept=lambda c: setattr(c, "data_as_bytes", True),
                        on_data=lambda c, d: got.append(d),
                        on_close=lambda c, e: closed.append(e)).listen(0, "127.0.0.1")
        cli = socket.create_connection(("127.0.0.1", srv.port))
        cli.sendall(b"hello")
        run_until(loop, lambda: got, timeout=5)
        cli.close()  # FIN
        run_until(loop, lambda: closed, timeout=5)
        for _ in range(20):
            loop.run_once(5)
        assert got == [b"hello"]
        assert closed == [None]
        srv.close()
        settle(loop)
    finally:
        loop.close()
