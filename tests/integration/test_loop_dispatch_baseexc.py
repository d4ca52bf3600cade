"""A BaseException from an I/O callback leaves the loop, but not the rest of its poll behind.

KeyboardInterrupt or SystemExit raised by one watcher's callback propagates out
of ``run_once()``/``run()`` (that is intended: Ctrl-C must stop the program).  The
other fds reported ready by the same poll must still be dispatched when the loop
runs again: with edge-triggered registrations (the TCP layer on epoll) the kernel
reports a readiness once, so an event dropped there stalls its connection for good.

Real TCP sockets on 127.0.0.1 port 0, every poller backend (``backend`` fixture:
epoll and poll here; ``POWPOW_PURE=1`` runs the ``select``-based twins).
"""
import os
import select
import socket
import time

import pytest

from powpow import Events, Loop, TcpServer

from ._net import run_until, settle

N = 6


@pytest.fixture
def tcp_pairs(loop):
    """make(n): n connected (server side, client side) TCP socket pairs on 127.0.0.1,
    the server sides non-blocking; all unregistered and closed at teardown."""
    made = []

    def make(n):
        with socket.socket() as lst:
            lst.bind(("127.0.0.1", 0))
            lst.listen(n)
            clients = [socket.create_connection(lst.getsockname(), timeout=3) for _ in range(n)]
            servers = [lst.accept()[0] for _ in range(n)]
        by_port = {c.getsockname()[1]: c for c in clients}
        pairs = []
        for s in servers:
            s.setblocking(False)
            pairs.append((s, by_port[s.getpeername()[1]]))
        made.extend(pairs)
        return pairs

    yield make
    for s, c in made:
        if s.fileno() >= 0:
            loop.unregister(s)
        s.close()
        c.close()


def wait_readable(fds, timeout=3.0):
    """Block until every fd in ``fds`` is readable: then one poll reports them all."""
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    end = time.monotonic() + timeout
    ready = set()
    while len(ready) < len(fds):
        assert time.monotonic() < end, "data did not arrive on every socket"
        ready.update(fd for fd, _ in p.poll(50))


def edge_for(loop):
    return loop.backend != "poll"  # poll(2) is level-triggered only


def test_base_exception_from_an_io_callback_keeps_the_rest_of_the_poll(loop, tcp_pairs):
    pairs = tcp_pairs(N)
    got = []

    def on_readable(fd, ev):
        got.append(fd)
        pairs_by_fd[fd].recv(100)
        if len(got) == 1:
            raise KeyboardInterrupt

    pairs_by_fd = {s.fileno(): s for s, _ in pairs}
    for s, _ in pairs:
        loop.register(s, Events.READ, on_readable, edge=edge_for(loop))
    for _, c in pairs:
        c.sendall(b"x")
    wait_readable(list(pairs_by_fd))
    with pytest.raises(KeyboardInterrupt):
        loop.run_once(1000)
    assert len(got) == 1
    # Anything queued meanwhile runs after the rest of the interrupted batch, as it
    # would have without the interrupt.
    loop.defer_call(lambda: got.append("deferred"))
    loop.run_once(0)
    assert sorted(got[:N]) == sorted(pairs_by_fd) and got[N:] == ["deferred"]
    loop.run_once(0)  # no readiness left over twice: each fd exactly once
    assert len(got) == N + 1


def test_a_second_base_exception_keeps_what_is_still_left(loop, tcp_pairs):
    pairs = tcp_pairs(N)
    got = []
    interrupts = {1: SystemExit, 3: KeyboardInterrupt}

    def on_readable(fd, ev):
        got.append(fd)
        pairs_by_fd[fd].recv(100)
        exc = interrupts.get(len(got))
        if exc is not None:
            raise exc

    pairs_by_fd = {s.fileno(): s for s, _ in pairs}
    for s, _ in pairs:
        loop.register(s, Events.READ, on_readable, edge=edge_for(loop))
    for _, c in pairs:
        c.sendall(b"x")
    wait_readable(list(pairs_by_fd))
    with pytest.raises(SystemExit):
        loop.run_once(1000)
    with pytest.raises(KeyboardInterrupt):
        loop.run_once(0)  # the rest of the batch, cut again by its second callback
    assert len(got) == 3
    loop.run_once(0)
    loop.run_once(0)
    assert sorted(got) == sorted(pairs_by_fd)  # each one exactly once


def test_a_watcher_gone_after_the_interrupt_gets_none_of_the_old_events(loop, tcp_pairs):
    """The saved events go through the same token check as a fresh poll's: a watcher
    unregistered (its fd closed, the number reused) before the loop runs again gets nothing."""
    pairs = tcp_pairs(2)
    by_fd = {s.fileno(): s for s, _ in pairs}
    got = []

    def on_readable(fd, ev):
        got.append(fd)
        by_fd[fd].recv(100)
        raise KeyboardInterrupt

    for s, _ in pairs:
        loop.register(s, Events.READ, on_readable, edge=edge_for(loop))
    for _, c in pairs:
        c.sendall(b"x")
    wait_readable([s.fileno() for s, _ in pairs])
    with pytest.raises(KeyboardInterrupt):
        loop.run_once(1000)
    assert len(got) == 1
    # the app handles Ctrl-C by closing the connection whose event is still pending,
    # and a new socket takes its fd number
    i = 0 if pairs[1][0].fileno() == got[0] else 1
    pending, peer = pairs.pop(i)
    fd = pending.fileno()
    loop.unregister(pending)
    pending.close()
    peer.close()
    x, b = socket.socketpair()
    os.dup2(x.fileno(), fd)
    x.close()
    a = socket.socket(fileno=fd)
    newcomer = []
    loop.register(a, Events.READ, lambda fd, ev: newcomer.append(ev), edge=edge_for(loop))
    loop.run_once(0)
    loop.run_once(0)
    assert newcomer == [] and len(got) == 1  # neither watcher got the old event
    loop.unregister(a)
    a.close()
    b.close()


def test_ctrl_c_in_one_connections_on_data_does_not_stall_the_others(backend):
    """The TCP layer (edge-triggered on epoll): Ctrl-C raised while serving one connection;
    the app catches it and runs the loop again; every other connection is still served."""
    lp = Loop(backend=backend, debug=True)
    raised = []
    echoed = []

    def on_data(conn, data):
        if not raised:
            raised.append(conn.peer_address[1])
            raise KeyboardInterrupt
        echoed.append(conn.peer_address[1])
        conn.send(bytes(data))

    srv = TcpServer(lp, on_data=on_data).listen(0, "127.0.0.1")
    clients = [socket.create_connection(("127.0.0.1", srv.port), timeout=3) for _ in range(N)]
    try:
        run_until(lp, lambda: srv.connection_count == N, timeout=3)
        settle(lp)  # the accepts' first events are behind us: the next poll has only the data
        for i, c in enumerate(clients):
            c.sendall(b"ping %d" % i)
        wait_readable([conn.fd for conn in srv.connections])
        with pytest.raises(KeyboardInterrupt):
            lp.run_once(1000)
        assert len(raised) == 1 and echoed == []
        run_until(lp, lambda: len(echoed) == N - 1, timeout=2)  # no new data comes: the saved events do it
        for i, c in enumerate(clients):
            if c.getsockname()[1] != raised[0]:
                assert c.recv(100) == b"ping %d" % i
    finally:
        for c in clients:
            c.close()
        srv.close()
        settle(lp)
        lp.close()
