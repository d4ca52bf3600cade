"""TCP client: errors with clear messages, timeouts, resolution off the loop, Happy Eyeballs."""
import errno
import socket
import threading
import time

import pytest

from powpow import ConnectError, TcpServer, connect

from ._net import full_backlog_listener, run_until, settle


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    return port


def test_connect_refused_names_address_and_errno(loop):
    port = _closed_port()
    errors = []
    connect(loop, "127.0.0.1", port, pytest.fail, None, on_error=errors.append)
    run_until(loop, lambda: errors)
    e = errors[0]
    assert isinstance(e, ConnectError) and isinstance(e, OSError)
    assert e.errno == errno.ECONNREFUSED
    assert str(e) == "connect to 127.0.0.1:%d failed: 127.0.0.1:%d: [Errno %d] Connection refused" % (
        port, port, errno.ECONNREFUSED)
    assert e.attempts == [("127.0.0.1:%d" % port, errno.ECONNREFUSED)]
    settle(loop)
    assert loop.timer_count == 0 and loop.watcher_count == 0


def test_connect_timeout_against_full_backlog(loop):
    lst, fillers = full_backlog_listener()
    port = lst.getsockname()[1]
    errors = []
    t0 = time.monotonic()
    connect(loop, "127.0.0.1", port, pytest.fail, None, on_error=errors.append, timeout_ms=300)
    run_until(loop, lambda: errors)
    elapsed = time.monotonic() - t0
    e = errors[0]
    assert e.errno == errno.ETIMEDOUT
    assert "connect to 127.0.0.1:%d timed out after 300 ms" % port in str(e)
    assert "pending: 127.0.0.1:%d" % port in str(e)
    assert 0.3 <= elapsed < 2.0
    assert loop.timer_count == 0 and loop.watcher_count == 0
    for c in fillers:
        c.close()
    lst.close()


def test_resolution_runs_off_the_loop_thread(loop):
    srv = TcpServer(loop, on_data=lambda c, d: c.send(d)).listen(0, "127.0.0.1")
    threads = []
    release = threading.Event()

    def slow_resolver(host, port):
        threads.append(threading.current_thread())
        release.wait(5)
        return socket.getaddrinfo("127.0.0.1", port, socket.AF_INET, socket.SOCK_STREAM)

    ticks = []
    tick = loop.add_interval(10, lambda: ticks.append(1))
    got = []
    connect(loop, "my-service.internal", srv.port, lambda c: c.send(b"hi"),
            lambda c, d: (got.append(bytes(d)), c.close()), resolver=slow_resolver, on_error=pytest.fail)
    run_until(loop, lambda: len(ticks) >= 5)  # the loop keeps running while the resolver blocks
    assert not got
    release.set()
    run_until(loop, lambda: got)
    assert got == [b"hi"] and threads[0] is not threading.main_thread()
    loop.cancel_timer(tick)
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


def test_resolution_failure_message(loop):
    def failing(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    errors = []
    connect(loop, "no-such-host.invalid", 80, pytest.fail, None, on_error=errors.append, resolver=failing)
    run_until(loop, lambda: errors)
    assert "cannot resolve no-such-host.invalid:80" in str(errors[0])
    assert "Name or service not known" in str(errors[0])
    # errno is an errno (was the EAI code, -2, which errno.errorcode does not know and which
    # reads as ENOENT negated); the resolver's error is the cause
    assert errors[0].errno == errno.EHOSTUNREACH and errno.errorcode[errors[0].errno]
    assert isinstance(errors[0].__cause__, socket.gaierror)


def test_every_address_is_tried_localhost(loop):
    """'localhost' through the real resolver thread; a refused address is followed by the next."""
    srv = TcpServer(loop, on_data=lambda c, d: c.send(d)).listen(0, "127.0.0.1")  # IPv4 only
    infos = socket.getaddrinfo("localhost", srv.port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    got = []
    connect(loop, "localhost", srv.port, lambda c: c.send(b"x"), lambda c, d: (got.append(c.peer_address), c.close()),
            on_error=pytest.fail)
    run_until(loop, lambda: got)
    assert got[0][0] == "127.0.0.1"
    assert any(i[0] == socket.AF_INET for i in infos)
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


def test_happy_eyeballs_starts_next_address_after_stagger(loop):
    stuck, fillers = full_backlog_listener()
    srv = TcpServer(loop).listen(0, "127.0.0.1")
    addrs = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", stuck.getsockname()),
             (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", srv.port))]
    connected = []
    t0 = time.monotonic()
    connect(loop, "dual.example", 1, lambda c: (connected.append((time.monotonic() - t0, c.peer_address)), c.close()),
            None, on_error=pytest.fail, resolver=lambda h, p: addrs, stagger_ms=100)
    run_until(loop, lambda: connected)
    elapsed, peer = connected[0]
    assert peer[1] == srv.port
    assert 0.1 <= elapsed < 1.0  # did not wait for the stuck attempt's own timeout

    # without Happy Eyeballs the stuck address holds everything up until the deadline
    errors = []
    connect(loop, "dual.example", 1, pytest.fail, None, on_error=errors.append, resolver=lambda h, p: addrs,
            happy_eyeballs=False, timeout_ms=300)
    run_until(loop, lambda: errors)
    assert errors[0].errno == errno.ETIMEDOUT
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)
    for c in fillers:
        c.close()
    stuck.close()


def test_cancel_releases_everything(loop):
    lst, fillers = full_backlog_listener()
    c = connect(loop, "127.0.0.1", lst.getsockname()[1], pytest.fail, None, on_error=pytest.fail)
    run_until(loop, lambda: loop.watcher_count == 1)
    c.cancel()
    assert loop.watcher_count == 0 and loop.timer_count == 0
    for f in fillers:
        f.close()
    lst.close()


def test_resolver_thread_never_posts_to_a_closed_loop():
    """The loop is closed while getaddrinfo still runs: the late result is
    dropped (no exception in the thread, no byte into the fd that now has
    the old wake fd's number)."""
    import select

    from powpow import Loop

    lp = Loop()
    release = threading.Event()
    finished = threading.Event()
    thread_errors = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: thread_errors.append(args.exc_value)

    def slow_resolver(host, port):
        try:
            release.wait(5)
            return socket.getaddrinfo("127.0.0.1", port, socket.AF_INET, socket.SOCK_STREAM)
        finally:
            threading.Timer(0.2, finished.set).start()

    pairs = []
    try:
        connect(lp, "my-service.internal", 9, pytest.fail, None, on_error=pytest.fail, resolver=slow_resolver)
        lp.run_once(0)
        lp.close()
        pairs = [socket.socketpair() for _ in range(12)]  # take the freed fd numbers
        release.set()
        assert finished.wait(5)
        socks = [s for pair in pairs for s in pair]
        assert select.select(socks, [], [], 0.05)[0] == []
        assert thread_errors == []
    finally:
        threading.excepthook = old_hook
        for a, b in pairs:
            a.close()
            b.close()


def test_host_failing_idna_encoding_is_reported_at_once(loop):
    host = "a" * 64 + ".com"  # a label over 63 characters cannot be IDNA-encoded
    errors = []
    start = time.monotonic()
    connect(loop, host, 80, pytest.fail, None, on_error=errors.append, timeout_ms=3000)
    run_until(loop, lambda: errors)
    assert time.monotonic() - start < 1.0, "reported as a timeout, not at once"
    e = errors[0]
    assert isinstance(e, ConnectError)
    assert "cannot resolve %s:80" % host in str(e)
    assert "label" in str(e) and "timed out" not in str(e)
    assert e.host == host and e.errno == errno.EINVAL
    settle(loop)


def test_an_address_whose_socket_cannot_be_made_is_skipped(loop):
    """socket() failing for one address (EAFNOSUPPORT: ::1 first on a host with IPv6 off;
    EMFILE) fails that address only: the next one is tried at once.  The OSError used to
    escape into the loop's exception handler, and on_error came at the deadline."""
    bad_family = getattr(socket, "AF_APPLETALK", 5)  # socket(bad_family, SOCK_STREAM) raises
    with pytest.raises(OSError):
        socket.socket(bad_family, socket.SOCK_STREAM)
    srv = TcpServer(loop).listen(0, "127.0.0.1")
    addrs = [(bad_family, socket.SOCK_STREAM, 0, "", ("::1", srv.port)),
             (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", srv.port))]
    connected = []
    t0 = time.monotonic()
    connect(loop, "dual.example", 1, lambda c: (connected.append(time.monotonic() - t0), c.close()),
            None, on_error=pytest.fail, resolver=lambda h, p: addrs, timeout_ms=5000)
    run_until(loop, lambda: connected)
    assert connected[0] < 1.0

    errors = []  # every address unusable: one ConnectError that lists them, at once
    connect(loop, "dual.example", 1, pytest.fail, None, on_error=errors.append,
            resolver=lambda h, p: addrs[:1], timeout_ms=5000)
    run_until(loop, lambda: errors, timeout=2)
    assert isinstance(errors[0], ConnectError)
    run_until(loop, lambda: srv.connection_count == 0)
    srv.close()
    settle(loop)


@pytest.mark.parametrize("port", [65536, 70000, -1])
def test_connect_rejects_a_port_out_of_range(loop, port):
    # getaddrinfo takes a port modulo 65536: connect(..., 70000) used to reach port 4464
    from powpow.net import connect_udp

    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(ValueError, match="port must be 0-65535, got %d" % port):
            connect(loop, host, port, pytest.fail, None, on_error=pytest.fail)
    with pytest.raises(ValueError, match=str(port)):
        connect_udp(loop, "127.0.0.1", port, None)
    settle(loop)


def _slow_tls_server(certs, delay: float):
    """A TLS server that accepts at once and starts its handshake ``delay`` s later; reports
    how the handshake (and a read after it) went, in ``info``."""
    import ssl
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    info = {}

    def run():
        c, _ = lst.accept()
        time.sleep(delay)
        c.settimeout(3)
        try:
            s = certs.server_ctx().wrap_socket(c, server_side=True)
            info["handshake"] = "done"
            info["read"] = s.recv(100)
            s.close()
        except (OSError, ssl.SSLError) as exc:
            info["handshake"] = "failed: %s" % exc
            c.close()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return lst, th, info


def test_cancel_during_the_tls_handshake_runs_no_callback_and_closes(loop, certs):
    """Regression: ``Connector.cancel()`` did nothing once the TCP connect had won and the
    TLS handshake was running (the attempt counted as done): ``on_connect`` ran after it,
    and a WebSocket opening that had timed out went on to send its request over a
    connection nobody owned.  Now no callback runs and the connection is closed."""
    lst, th, info = _slow_tls_server(certs, 0.5)
    events = []
    try:
        h = connect(loop, "127.0.0.1", lst.getsockname()[1], lambda c: events.append("connect"),
                    lambda c, d: events.append("data"), on_close=lambda c, e: events.append("close"),
                    on_error=lambda e: events.append(("error", e)), ssl=certs.client_ctx(),
                    server_hostname="localhost")
        run_until(loop, lambda: h.done)  # TCP is up: the handshake runs (the server waits)
        h.cancel()
        th.join(5)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            loop.run_once(20)
        assert events == [], events
        assert info.get("handshake", "").startswith("failed"), info  # the client had closed
        settle(loop)
        assert loop.watcher_count == 0 and loop.timer_count == 0
    finally:
        lst.close()


def test_a_tls_setup_error_goes_to_on_error_alone(loop, certs):
    """Regression: a server_hostname that TLS refuses at setup (an empty IDNA label) called
    the user's on_close with the raw TCP connection, besides on_error."""
    srv = TcpServer(loop, on_accept=lambda c: None).listen(0, "127.0.0.1")
    events = []
    try:
        connect(loop, "127.0.0.1", srv.port, lambda c: events.append("connect"), None,
                on_close=lambda c, e: events.append(("close", type(c).__name__)),
                on_error=lambda e: events.append(("error", type(e).__name__)), ssl=certs.client_ctx(),
                server_hostname=".example.com")
        run_until(loop, lambda: events)
        for _ in range(5):
            loop.run_once(10)
        assert events == [("error", "ConnectError")], events
    finally:
        srv.close()
        settle(loop)
