"""``Connection.data_as_bytes``: on_data receives bytes of its own (real loopback sockets, every backend).

The same contracts as the memoryview mode -- order, edge-triggered reads to the
end, pause/resume, half-close -- plus: what on_data got stays intact after
later reads (a view of the shared receive buffer would not), and a pooled
connection forgets the flag.
"""
import hashlib
import socket
import threading

from powpow import TcpServer

from ._net import pattern, run_until, settle


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
