"""powpow.aio, uvloop-style: every behaviour runs on powpow.aio AND on stock asyncio.

The stock loop keeps the tests honest (a test that fails there tests the wrong
thing).  Every loop gets an exception handler that records its calls; teardown
fails if any was unexpected (a test that expects one pops it from ``calls``).
Real sockets on 127.0.0.1 port 0 and real unix sockets; bounded waits.
"""
import asyncio
import contextvars
import math
import os
import signal
import socket
import sys
import threading
import time

import pytest

import powpow.aio

TIMEOUT = 5.0


class _Loop:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = powpow.aio.new_event_loop() if kind == "powpow" else asyncio.new_event_loop()
        self.calls = []
        self.loop.set_exception_handler(lambda lp, ctx: self.calls.append(ctx))

    def run(self, coro, timeout: float = TIMEOUT):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))


@pytest.fixture(params=["powpow", "asyncio"])
def lp(request):
    w = _Loop(request.param)
    yield w
    loop = w.loop
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    assert not w.calls, "unexpected exception-handler calls: %r" % (w.calls,)


def test_loop_type(lp):
    if lp.kind == "powpow":
        assert isinstance(lp.loop, powpow.aio.EventLoop)
        assert isinstance(lp.loop, asyncio.AbstractEventLoop)


def test_call_soon_order_and_context(lp):
    var = contextvars.ContextVar("v", default="none")
    seen = []

    def cb(tag):
        seen.append((tag, var.get()))

    ctx = contextvars.copy_context()
    ctx.run(var.set, "inside")
    lp.loop.call_soon(cb, 1)
    lp.loop.call_soon(cb, 2, context=ctx)
    h = lp.loop.call_soon(cb, 3)
    h.cancel()
    lp.loop.call_soon(lp.loop.stop)
    lp.loop.run_forever()
    assert seen == [(1, "none"), (2, "inside")]


def test_call_later_order_cancel_when(lp):
    loop = lp.loop
    seen = []
    t0 = loop.time()
    h1 = loop.call_later(0.03, seen.append, "b")
    loop.call_later(0.01, seen.append, "a")
    # "c" is due after "b" by construction: a deadline taken from t0 could
    # fall before h1's when() if the interpreter stalled (GC) between the two
    loop.call_at(h1.when() + 0.005, seen.append, "c")
    h4 = loop.call_later(0.02, seen.append, "never")
    assert abs(h1.when() - (t0 + 0.03)) < 0.01
    h4.cancel()
    assert h4.cancelled()
    loop.call_later(0.06, loop.stop)
    loop.run_forever()
    assert seen == ["a", "b", "c"]
    assert loop.time() - t0 >= 0.06


@pytest.mark.parametrize("debug", [False, True])
def test_infinite_and_huge_delays_never_fire_and_break_nothing(lp, debug):
    """call_later(math.inf), asyncio.sleep(math.inf), wait_for(..., math.inf), a 1e300 s
    deadline: they never fire, cancel cleanly, and the other timers keep their order.
    powpow.aio raised OverflowError out of run_until_complete (float inf to int) and lost
    the timers made after the bad one."""
    lp.loop.set_debug(debug)

    async def main():
        loop = asyncio.get_running_loop()
        out = []
        loop.call_later(0.01, out.append, "a")
        h1 = loop.call_later(math.inf, out.append, "inf")
        h2 = loop.call_at(loop.time() + 1e300, out.append, "huge")
        h3 = loop.call_later(1e300, out.append, "huge delay")
        loop.call_later(0.02, out.append, "b")
        sleeper = asyncio.ensure_future(asyncio.sleep(math.inf))
        await asyncio.sleep(0.05)
        assert not sleeper.done()
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        for h in (h1, h2, h3):
            h.cancel()
        f = loop.create_future()
        loop.call_later(0.01, f.set_result, 1)
        assert await asyncio.wait_for(f, math.inf) == 1
        return out

    assert lp.run(main()) == ["a", "b"]


def test_timer_never_early(lp):
    async def main():
        loop = asyncio.get_running_loop()
        for delay in (0.001, 0.0105, 0.02):
            fut = loop.create_future()
            when = loop.time() + delay
            loop.call_at(when, lambda f=fut: f.set_result(loop.time()))
            fired = await fut
            assert fired >= when
    lp.run(main())


def test_many_timers_cancelled(lp):
    loop = lp.loop
    handles = [loop.call_later(10 + i * 1e-4, lambda: None) for i in range(5000)]
    for h in handles:
        h.cancel()
    fired = []
    loop.call_later(0.001, fired.append, 1)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert fired == [1]


def test_call_soon_threadsafe_wakes(lp):
    loop = lp.loop
    got = []

    def worker():
        time.sleep(0.05)
        loop.call_soon_threadsafe(got.append, threading.get_ident())
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    t.start()
    t0 = time.monotonic()
    loop.run_forever()
    t.join()
    assert got and got[0] != threading.get_ident()
    assert time.monotonic() - t0 < 2


def test_tasks_executor_and_task_factory(lp):
    loop = lp.loop
    made = []

    def factory(loop, coro, **kw):
        t = asyncio.Task(coro, loop=loop, **kw)
        made.append(t)
        return t

    loop.set_task_factory(factory)

    async def child(x):
        await asyncio.sleep(0.001)
        return x * 2

    async def main():
        r = await asyncio.gather(child(1), child(2))
        s = await loop.run_in_executor(None, sum, [1, 2, 3])
        return r, s

    assert lp.run(main()) == ([2, 4], 6)
    assert len(made) >= 3
    loop.set_task_factory(None)
    loop.run_until_complete(loop.shutdown_default_executor())


def test_exception_handler_gets_callback_error(lp):
    loop = lp.loop

    def bad():
        raise ValueError("boom")

    loop.call_soon(bad)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(lp.calls) == 1 and isinstance(lp.calls[0]["exception"], ValueError)
    lp.calls.clear()


def test_slow_callback_warning(lp, caplog):
    loop = lp.loop
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.03)
    loop.call_soon(loop.stop)
    with caplog.at_level("WARNING", logger="asyncio"):
        loop.run_forever()
    assert any("took" in r.getMessage() for r in caplog.records)


SLOW = 0.05  # a protocol callback this long is past the 0.02 s slow_callback_duration of the tests below


def _took(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "asyncio" and " took " in r.getMessage()]


class _SlowEcho(asyncio.Protocol):
    """Every callback sleeps past slow_callback_duration (the echo still works)."""

    def __init__(self):
        self.made = False
        self.lost = asyncio.get_event_loop().create_future()

    def connection_made(self, t):
        self.t = t
        time.sleep(SLOW)
        self.made = True

    def data_received(self, data):
        time.sleep(SLOW)
        self.t.write(data)

    def eof_received(self):
        time.sleep(SLOW)
        return False

    def connection_lost(self, exc):
        time.sleep(SLOW)
        self.lost.set_result(exc)


class _SlowBufEcho(_SlowEcho, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint):
        self.buf = bytearray(max(sizehint, 16))
        return self.buf

    def buffer_updated(self, n):
        self.data_received(bytes(self.buf[:n]))


@pytest.mark.parametrize("proto,debug_from", [(_SlowEcho, "start"), (_SlowBufEcho, "start"),
                                              (_SlowEcho, "after_connect")])
def test_slow_protocol_callbacks_warn_in_debug_mode(lp, caplog, proto, debug_from):
    """Debug mode warns about every slow protocol callback, not only about call_soon handles.

    powpow.aio calls data_received/buffer_updated straight from the poller (no Handle): it used to
    say nothing.  Its warnings name the protocol callback and the transport; asyncio's name the
    transport method that ran it (_read_ready), so the stock loop is checked for the count only.
    ``after_connect``: set_debug(True) on a loop whose connection already exists still applies to it.
    """
    loop = lp.loop
    loop.slow_callback_duration = 0.02
    if debug_from == "start":
        loop.set_debug(True)
    protos = []

    def factory():
        protos.append(proto())
        return protos[-1]

    async def main():
        srv = await loop.create_server(factory, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
        while not protos or not protos[0].made:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.01)
        if debug_from != "start":
            loop.set_debug(True)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.write_eof()
        assert await protos[0].lost is None
        writer.close()
        srv.close()
        await srv.wait_closed()

    with caplog.at_level("WARNING", logger="asyncio"):
        lp.run(main())
    names = ["data_received" if proto is _SlowEcho else "buffer_updated", "eof_received", "connection_lost"]
    if debug_from == "start":
        names.append("connection_made")
    took = _took(caplog)
    assert len(took) >= len(names), took
    if lp.kind == "powpow":
        for name in names:
            mine = [m for m in took if "%s.%s() of <powpow StreamTransport fd=" % (proto.__name__, name) in m]
            assert len(mine) == 1, (name, took)  # named once: not again as the handle that ran it


def test_slow_resume_writing_warns_in_debug_mode(lp, caplog):
    """resume_writing runs from the socket's drain (powpow: the Connection's on_drain, no Handle)."""
    loop = lp.loop
    loop.set_debug(True)
    loop.slow_callback_duration = 0.02
    size = 2 << 20

    class Flood(asyncio.Protocol):
        def __init__(self):
            self.paused = loop.create_future()
            self.resumed = loop.create_future()

        def connection_made(self, t):
            t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            t.set_write_buffer_limits(high=16384)
            t.write(b"z" * size)

        def pause_writing(self):
            self.paused.set_result(None)

        def resume_writing(self):
            time.sleep(SLOW)
            self.resumed.set_result(None)

    protos = []

    async def main():
        srv = await loop.create_server(lambda: protos.append(Flood()) or protos[-1], "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
        while not protos:
            await asyncio.sleep(0.005)
        await protos[0].paused
        assert len(await reader.readexactly(size)) == size
        await protos[0].resumed
        writer.close()
        srv.close()
        await srv.wait_closed()

    with caplog.at_level("WARNING", logger="asyncio"):
        lp.run(main())
    took = _took(caplog)
    assert took, took
    if lp.kind == "powpow":
        assert [m for m in took if "Flood.resume_writing() of <powpow StreamTransport fd=" in m], took


def test_slow_datagram_received_warns_in_debug_mode(lp, caplog):
    loop = lp.loop
    loop.set_debug(True)
    loop.slow_callback_duration = 0.02

    class SlowDgram(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = loop.create_future()

        def datagram_received(self, data, addr):
            time.sleep(SLOW)
            self.got.set_result(data)

    async def main():
        t, p = await loop.create_datagram_endpoint(SlowDgram, local_addr=("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"hi", t.get_extra_info("sockname"))
            assert await p.got == b"hi"
        t.close()
        await asyncio.sleep(0.01)

    with caplog.at_level("WARNING", logger="asyncio"):
        lp.run(main())
    took = _took(caplog)
    assert took, took
    if lp.kind == "powpow":
        assert [m for m in took if "SlowDgram.datagram_received() of <powpow DatagramTransport fd=" in m], took


def test_getaddrinfo_numeric_and_nameinfo(lp):
    async def main():
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        assert infos[0][4] == ("127.0.0.1", 80)
        infos6 = await loop.getaddrinfo("::1", 443, type=socket.SOCK_STREAM)
        assert infos6[0][4][:2] == ("::1", 443)
        ni = await loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
        assert ni == ("127.0.0.1", "80")
    lp.run(main())


def test_add_reader_writer_separate(lp):
    loop = lp.loop
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    events = []
    try:
        def on_write():
            events.append("w")
            loop.remove_writer(a)
            b.send(b"x")

        def on_read():
            events.append(("r", a.recv(10)))
            assert loop.remove_reader(a)
            loop.stop()

        loop.add_reader(a, on_read)
        loop.add_writer(a, on_write)
        loop.run_forever()
        assert events == ["w", ("r", b"x")]
        assert not loop.remove_reader(a)
        assert not loop.remove_writer(a)
    finally:
        a.close()
        b.close()


def test_sock_ops(lp):
    async def main():
        loop = asyncio.get_running_loop()
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        srv.setblocking(False)
        cli = socket.socket()
        cli.setblocking(False)
        try:
            acc = loop.create_task(loop.sock_accept(srv))
            await loop.sock_connect(cli, srv.getsockname())
            conn, addr = await acc
            with conn:
                assert addr == cli.getsockname()
                big = os.urandom(3 * 1024 * 1024)
                send = loop.create_task(loop.sock_sendall(cli, big))
                got = bytearray()
                buf = bytearray(65536)
                while len(got) < len(big):
                    n = await loop.sock_recv_into(conn, buf)
                    got += buf[:n]
                await send
                assert bytes(got) == big
                await loop.sock_sendall(conn, b"pong")
                assert await loop.sock_recv(cli, 10) == b"pong"
        finally:
            cli.close()
            srv.close()
    lp.run(main())


class Echo(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t

    def data_received(self, data):
        self.t.write(data)

    def eof_received(self):
        self.t.close()


def test_streams_echo_server(lp):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo, "127.0.0.1", 0, reuse_port=True)
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        assert w.get_extra_info("peername") == ("127.0.0.1", port)
        assert w.get_extra_info("sockname")[0] == "127.0.0.1"
        assert w.get_extra_info("socket") is not None
        w.writelines([b"a", b"b", b"c"])
        w.write(b"x" * 100000)
        await w.drain()
        assert await r.readexactly(100003) == b"abc" + b"x" * 100000
        assert w.can_write_eof()
        w.write_eof()
        assert await r.read() == b""
        w.close()
        await w.wait_closed()
        srv.close()
        await srv.wait_closed()
    lp.run(main())


def test_one_writev_per_iteration(lp):
    """Several writes in one iteration leave together: the peer reads them in one recv."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        b.setblocking(False)
        try:
            t, p = await loop.connect_accepted_socket(asyncio.Protocol, a)
            for i in range(20):
                t.write(b"%02d" % i)
            await asyncio.sleep(0.05)
            data = b.recv(1000)
            if lp.kind == "powpow":
                assert data == b"".join(b"%02d" % i for i in range(20))
            t.close()
            await asyncio.sleep(0)
        finally:
            b.close()
    lp.run(main())


class Collect(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.eof = False
        self.lost = None
        self.made = False
        self.paused = 0
        self.resumed = 0
        self.done = asyncio.get_event_loop().create_future()

    def connection_made(self, t):
        assert not self.made
        self.made = True
        self.t = t

    def data_received(self, data):
        assert self.made and not self.eof
        self.data += data

    def eof_received(self):
        self.eof = True
        return True

    def pause_writing(self):
        self.paused += 1

    def resume_writing(self):
        self.resumed += 1

    def connection_lost(self, exc):
        self.lost = exc
        if not self.done.done():
            self.done.set_result(None)


def test_protocol_callbacks_flow_control(lp):
    async def main():
        loop = asyncio.get_running_loop()
        protos = []

        def factory():
            p = Collect()
            protos.append(p)
            return p

        srv = await loop.create_server(factory, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        t, p = await loop.create_connection(Collect, "127.0.0.1", port)
        while not protos:
            await asyncio.sleep(0.001)
        sp = protos[0]
        sp.t.pause_reading()
        assert not sp.t.is_reading()
        t.set_write_buffer_limits(high=1024)
        assert t.get_write_buffer_limits() == (256, 1024)
        chunk = b"y" * 65536
        for _ in range(200):
            t.write(chunk)
        assert p.paused == 1
        assert t.get_write_buffer_size() > 0
        sp.t.resume_reading()
        while p.resumed == 0:
            await asyncio.sleep(0.005)
        t.write_eof()
        while not sp.eof:
            await asyncio.sleep(0.005)
        assert len(sp.data) == 200 * 65536
        sp.t.write(b"bye")
        sp.t.close()
        while not p.eof:
            await asyncio.sleep(0.005)
        t.close()  # after write_eof + the peer's FIN: powpow has closed already (both directions done)
        await p.done
        assert bytes(p.data) == b"bye" and p.eof and p.lost is None
        await sp.done
        srv.close()
        await srv.wait_closed()
    lp.run(main())


class BufProto(asyncio.BufferedProtocol):
    def __init__(self):
        self.buf = bytearray(100)
        self.got = bytearray()
        self.done = asyncio.get_event_loop().create_future()

    def connection_made(self, t):
        self.t = t

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, n):
        self.got += self.buf[:n]

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.done.set_result(exc)


def test_buffered_protocol(lp):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        try:
            t, p = await loop.connect_accepted_socket(BufProto, a)
            payload = os.urandom(10000)
            b.sendall(payload)
            b.shutdown(socket.SHUT_WR)
            assert await p.done is None
            assert bytes(p.got) == payload
        finally:
            b.close()
    lp.run(main())


def test_abort_and_reset(lp):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        try:
            t, p = await loop.connect_accepted_socket(Collect, a)
            t.write(b"dropped?")
            t.abort()
            assert t.is_closing()
            await p.done
            assert p.lost is None
        finally:
            b.close()
    lp.run(main())


def test_data_received_error_reported(lp):
    class Bad(Collect):
        def data_received(self, data):
            raise RuntimeError("bad protocol")

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        try:
            t, p = await loop.connect_accepted_socket(Bad, a)
            b.send(b"x")
            await p.done
            assert isinstance(p.lost, RuntimeError)
        finally:
            b.close()
    lp.run(main())
    assert len(lp.calls) == 1 and "data_received" in lp.calls[0]["message"]
    lp.calls.clear()


def test_unix_server_and_connection(lp, tmp_path):
    path = str(tmp_path / "s.sock")

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_unix_server(Echo, path)
        r, w = await asyncio.open_unix_connection(path)
        w.write(b"unix!")
        assert await r.readexactly(5) == b"unix!"
        w.close()
        await w.wait_closed()
        srv.close()
        await srv.wait_closed()
    lp.run(main())


def test_serve_forever_and_start_serving(lp):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo, "127.0.0.1", 0, start_serving=False)
        assert not srv.is_serving()
        task = loop.create_task(srv.serve_forever())
        await asyncio.sleep(0)
        assert srv.is_serving()
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"ok")
        assert await r.readexactly(2) == b"ok"
        w.close()
        await w.wait_closed()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await srv.wait_closed()
    lp.run(main())


def test_connection_refused(lp):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
    lp.run(main())


def test_datagram_endpoint(lp):
    class D(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = asyncio.get_event_loop().create_future()

        def connection_made(self, t):
            self.t = t

        def datagram_received(self, data, addr):
            if not self.got.done():
                self.got.set_result((data, addr))

    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(D, local_addr=("127.0.0.1", 0))
        addr = st.get_extra_info("sockname")
        ct, cp = await loop.create_datagram_endpoint(D, remote_addr=addr)
        ct.sendto(b"ping")
        data, frm = await sp.got
        assert data == b"ping"
        st.sendto(b"pong", frm)
        assert (await cp.got)[0] == b"pong"
        ct.close()
        st.close()
        await asyncio.sleep(0.01)
    lp.run(main())


def test_datagram_abort_after_close_leaves_the_fds_new_owner_alone(lp):
    """Regression: ``abort()`` on a datagram transport already closed (cleanup code in a
    ``finally`` often does it) removed the reader of whatever held its old fd number by
    then -- a socketpair here; its reader never ran again.  asyncio: a no-op."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        fd = tr.get_extra_info("socket").fileno()
        tr.close()
        await asyncio.sleep(0.01)  # connection_lost ran: the socket is closed, its fd number free
        a, b = socket.socketpair()
        try:
            a.setblocking(False)
            assert a.fileno() == fd  # (the lowest free number: the case this test is about)
            got = loop.create_future()
            loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(10)))
            tr.abort()
            tr.abort()
            b.send(b"ping")
            assert await asyncio.wait_for(got, 2) == b"ping"
            loop.remove_reader(a)
        finally:
            a.close()
            b.close()
    lp.run(main())


def _unix_dgram_pair(tmp_path):
    """A unix datagram socket connected to one that reads nothing: its sends hit EAGAIN after a few
    datagrams (the peer's max_dgram_qlen), unlike UDP on loopback, which drops at the receiver."""
    a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.bind(str(tmp_path / "a"))
    b.bind(str(tmp_path / "b"))
    a.connect(str(tmp_path / "b"))
    a.setblocking(False)
    b.setblocking(False)
    return a, b


class _FlowDgram(asyncio.DatagramProtocol):
    def __init__(self):
        self.events = []
        self.errors = []

    def connection_made(self, t):
        self.t = t

    def pause_writing(self):
        self.events.append(("pause", self.t.get_write_buffer_size()))

    def resume_writing(self):
        self.events.append(("resume", self.t.get_write_buffer_size()))

    def error_received(self, exc):
        self.errors.append(exc)


async def _drain_dgrams(loop, b, count):
    got = 0
    while got < count:
        await loop.sock_recv(b, 65536)
        got += 1


def test_datagram_write_buffer_flow_control(lp, tmp_path):
    """sendto past what the kernel takes queues: pause_writing above high water, resume at low."""
    a, b = _unix_dgram_pair(tmp_path)
    loop = lp.loop

    async def main():
        t, p = await loop.create_datagram_endpoint(_FlowDgram, sock=a)
        t.set_write_buffer_limits(high=4096, low=1024)
        assert t.get_write_buffer_limits() == (1024, 4096)
        dgram = b"d" * 512
        sent = 0
        while t.get_write_buffer_size() == 0:  # until the kernel says EAGAIN (the peer's queue is full)
            assert sent < 10000
            t.sendto(dgram)
            sent += 1
        queued = 1
        while queued * 512 <= 4096:
            assert p.events == []
            t.sendto(dgram)
            sent += 1
            queued += 1
        size = t.get_write_buffer_size()
        assert size >= queued * 512  # (3.12+ asyncio also counts an 8-byte header per datagram)
        if lp.kind == "powpow":
            assert size == queued * 512
        assert p.events == [("pause", size)]
        await _drain_dgrams(loop, b, sent)  # the peer reads: everything queued goes out, in order
        while t.get_write_buffer_size():
            await asyncio.sleep(0.001)
        assert [e[0] for e in p.events] == ["pause", "resume"]
        assert p.events[1][1] <= 1024
        assert p.errors == []
        t.close()
        await asyncio.sleep(0.01)

    try:
        lp.run(main())
    finally:
        b.close()


@pytest.mark.parametrize("lp", ["powpow"], indirect=True)  # stock asyncio has no cap: it queues without bound
def test_datagram_write_buffer_cap_fails_loudly(lp, tmp_path, caplog):
    """A protocol that ignores pause_writing: past the cap its datagrams are dropped, reported and logged."""
    a, b = _unix_dgram_pair(tmp_path)
    loop = lp.loop

    async def main():
        t, p = await loop.create_datagram_endpoint(_FlowDgram, sock=a)
        t.set_write_buffer_limits(high=4096)
        cap = 1 << 20  # max(32 * high, 1 MiB)
        dgram = b"c" * 4096
        sent = 0
        while t.get_write_buffer_size() <= cap:
            assert sent < 10000 and p.errors == []
            t.sendto(dgram)
            sent += 1
        size = t.get_write_buffer_size()
        with caplog.at_level("WARNING", logger="asyncio"):
            t.sendto(dgram)
            t.sendto(dgram)
        assert t.get_write_buffer_size() == size  # refused: the queue did not grow
        assert len(p.errors) == 2
        for exc in p.errors:
            assert isinstance(exc, powpow.aio.DatagramQueueFull) and isinstance(exc, OSError)
            assert "cap" in str(exc) and "pause_writing" in str(exc)
        warnings = [r for r in caplog.records if r.name == "asyncio" and "cap" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelname == "WARNING"  # once per overflow, not per datagram
        await _drain_dgrams(loop, b, sent)  # what was queued still arrives; the refused two never do
        while t.get_write_buffer_size():
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        with pytest.raises(BlockingIOError):
            b.recv(65536)
        t.close()
        await asyncio.sleep(0.01)

    try:
        lp.run(main())
    finally:
        b.close()


def test_signal_handler(lp):
    loop = lp.loop
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "usr1")
    try:
        loop.call_later(0.01, os.kill, os.getpid(), signal.SIGUSR1)
        loop.call_later(0.3, loop.stop)
        loop.run_forever()
        assert got == ["usr1"]
    finally:
        assert loop.remove_signal_handler(signal.SIGUSR1)
    assert not loop.remove_signal_handler(signal.SIGUSR1)
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGKILL, got.append, 1)


def test_subprocess_and_pipes(lp):
    async def main():
        p = await asyncio.create_subprocess_exec(sys.executable, "-c", "import sys; print(sys.stdin.read()[::-1])",
                                                 stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate(b"abc")
        assert out.strip() == b"cba" and p.returncode == 0
        p = await asyncio.create_subprocess_shell("exit 3")
        assert await p.wait() == 3
    lp.run(main())


def test_run_and_policy():
    async def main():
        return type(asyncio.get_running_loop())

    assert powpow.aio.run(main()) is powpow.aio.EventLoop
    assert powpow.aio.run(main(), debug=True) is powpow.aio.EventLoop
    pol = powpow.aio.EventLoopPolicy()
    loop = pol.new_event_loop()
    try:
        assert isinstance(loop, powpow.aio.EventLoop)
    finally:
        loop.close()


def test_import_powpow_does_not_import_asyncio():
    import subprocess
    code = "import sys, powpow; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "False", out.stderr


def test_echo_to_sock_client_nothing_else_pending(lp):
    """A reply written from the first data_received (a deferred read) leaves before the loop sleeps."""
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        s = socket.socket()
        s.setblocking(False)
        try:
            await loop.sock_connect(s, ("127.0.0.1", port))
            for i in range(3):
                await loop.sock_sendall(s, b"m%d" % i)
                assert await asyncio.wait_for(loop.sock_recv(s, 100), 2) == b"m%d" % i
        finally:
            s.close()
        srv.close()
        await srv.wait_closed()
    lp.run(main())


def test_protocol_callbacks_see_the_server_creators_context(lp):
    """As asyncio (uvicorn's test_contextvars_preserved_by_default relies on it): a server's protocol
    callbacks, and tasks they create, run in a copy of the context create_server was called in."""
    var = contextvars.ContextVar("where", default="missing")
    seen = []

    class P(asyncio.Protocol):
        def connection_made(self, t):
            seen.append(("made", var.get()))
            self.t = t

        def data_received(self, data):
            seen.append(("data", var.get()))
            asyncio.get_running_loop().create_task(self.reply())

        async def reply(self):
            self.t.write(var.get().encode())
            self.t.close()

    async def main():
        loop = asyncio.get_running_loop()
        var.set("server-creator")
        srv = await loop.create_server(P, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        var.set("client")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        assert await reader.read() == b"server-creator"
        writer.close()
        srv.close()
        await srv.wait_closed()
    lp.run(main())
    assert seen == [("made", "server-creator"), ("data", "server-creator")]


def test_call_later_zero_runs_in_the_first_iteration(lp):
    """call_later(0) is due at once: it runs in the loop's next iteration, not after a 1 ms wheel tick
    (uvicorn's zero-delay websocket close timer relies on it)."""
    loop = lp.loop
    fired = []
    loop.call_later(0, fired.append, 1)
    loop.call_later(-1, fired.append, 2)
    h = loop.call_later(0, fired.append, 3)
    h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert fired == [2, 1]


def test_full_polls_never_grow_past_the_pollers_array(monkeypatch):
    """A poll that comes back full doubles the batch, but never past ``poller.MAX_CAPACITY``
    (the size of the native poller's event array).  The asyncio loop doubled it up to 65536:
    on CPython the next poll raised ValueError out of run_until_complete, and on the cffi
    path the kernel could write past the array.  (MAX_CAPACITY is lowered to 64 so that a
    few hundred ready sockets fill it.)"""
    import powpow.aio._loop as aio_loop
    import powpow.poller as poller_pkg
    import powpow.poller.epoll as epoll_mod

    small = 64
    monkeypatch.setattr(poller_pkg, "MAX_CAPACITY", small)
    monkeypatch.setattr(epoll_mod, "MAX_CAPACITY", small)
    monkeypatch.setattr(aio_loop, "_MAX_CAPACITY", small)
    loop = powpow.aio.new_event_loop()
    pairs = [socket.socketpair() for _ in range(300)]
    hits = []

    def ready(s):
        s.recv(1)
        hits.append(s)

    async def main():
        for _ in range(50):
            await asyncio.sleep(0)
            if len(hits) == len(pairs):
                return

    try:
        for a, b in pairs:
            a.setblocking(False)
            loop.add_reader(a.fileno(), ready, a)
            b.send(b"x")
        loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
        assert len(set(hits)) == len(pairs)
        assert loop._pl._capacity <= small
    finally:
        for a, b in pairs:
            loop.remove_reader(a.fileno())
            a.close()
            b.close()
        loop.close()


def test_write_then_abort_in_one_callback_still_sends_the_write(lp):
    """The "answer 400, then abort" pattern: asyncio's write() hands the bytes to the kernel
    at once, so they leave before the abort.  powpow.aio buffered them for the end of the
    iteration and abort() dropped them: the peer got nothing."""
    class Refuser(asyncio.Protocol):
        def connection_made(self, tr):
            self.tr = tr

        def data_received(self, data):
            self.tr.write(b"HTTP/1.1 400 Bad Request\r\n")
            self.tr.write(b"Content-Length: 0\r\n\r\n")
            self.tr.abort()

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Refuser, "127.0.0.1", 0)
        r, w = await asyncio.open_connection(*srv.sockets[0].getsockname()[:2])
        w.write(b"garbage\r\n\r\n")
        try:
            return await asyncio.wait_for(r.read(), 3)
        finally:
            w.close()
            srv.close()
            await srv.wait_closed()

    assert lp.run(main()) == b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


def test_sendfile_of_a_character_device_falls_back_and_sends(lp):
    """loop.sendfile() of a file that is not a regular one (no size: a device, a pipe,
    /proc): powpow.aio took st_size (0) as the count and sent nothing, even with the
    fallback allowed."""
    async def main():
        loop = asyncio.get_running_loop()
        got = bytearray()
        done = loop.create_future()

        class Sink(asyncio.Protocol):
            def data_received(self, data):
                got.extend(data)
                if len(got) >= 10 and not done.done():
                    done.set_result(None)

        srv = await loop.create_server(Sink, "127.0.0.1", 0)
        tr, _ = await loop.create_connection(asyncio.Protocol, *srv.sockets[0].getsockname()[:2])
        try:
            with open("/dev/zero", "rb") as f:
                sent = await loop.sendfile(tr, f, 0, 10)
            await asyncio.wait_for(done, 3)
            return sent, bytes(got)
        finally:
            tr.close()
            srv.close()
            await srv.wait_closed()

    assert lp.run(main()) == (10, b"\0" * 10)


def test_system_exit_in_a_protocol_callback_loses_no_queued_callback(lp):
    """SystemExit / KeyboardInterrupt raised by data_received leaves run_forever, as in
    asyncio, and every handle queued so far still runs when the loop runs again.  powpow.aio
    dropped the iteration's ready queue: a task whose step was in it never ran again, so
    cancelling it (what asyncio.run / Runner do on the way out) waited forever."""
    loop = lp.loop
    a, b = socket.socketpair()
    spins = [0]
    transports = []

    class Exiting(asyncio.Protocol):
        def connection_made(self, tr):
            transports.append(tr)

        def data_received(self, data):
            raise SystemExit(2)

    async def spin():
        while True:
            spins[0] += 1
            await asyncio.sleep(0)

    async def main():
        await loop.connect_accepted_socket(Exiting, a)
        asyncio.ensure_future(spin())
        await asyncio.sleep(0.01)
        b.send(b"x")
        await asyncio.sleep(5)

    try:
        with pytest.raises(SystemExit):
            loop.run_until_complete(main())
        tasks = list(asyncio.all_tasks(loop))
        assert len(tasks) == 2
        before = spins[0]
        for t in tasks:
            t.cancel()
        loop.run_until_complete(asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), TIMEOUT))
        assert all(t.cancelled() for t in tasks)
        assert spins[0] > before or before > 0
    finally:
        for tr in transports:
            tr.abort()
        loop.run_until_complete(asyncio.sleep(0.01))
        b.close()


def test_keyboard_interrupt_in_one_protocol_loses_no_other_connections_data(lp):
    """KeyboardInterrupt raised by one connection's data_received leaves the loop; the
    other connections reported ready by the same poll are still served when the loop
    runs again.  powpow.aio dropped the rest of that poll's events, and its transports
    are edge-triggered on epoll: those connections never heard of their data again."""
    loop = lp.loop
    n = 6
    socks = [socket.socketpair() for _ in range(n)]
    got = {}
    raised = []
    transports = []

    class Proto(asyncio.Protocol):
        def __init__(self, i):
            self.i = i

        def connection_made(self, tr):
            transports.append(tr)

        def data_received(self, data):
            if not raised:
                raised.append(self.i)
                raise KeyboardInterrupt
            got[self.i] = data

    async def main():
        for i, (a, _) in enumerate(socks):
            await loop.connect_accepted_socket(lambda i=i: Proto(i), a)
        await asyncio.sleep(0.01)
        for i, (_, b) in enumerate(socks):
            b.send(b"to %d" % i)  # all of them readable before the next poll
        await asyncio.sleep(5)

    async def served():
        while len(got) < n - 1:
            await asyncio.sleep(0.005)

    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(main())
        assert len(raised) == 1
        lp.run(served())  # no new data arrives: only the poll's kept events can do it
        assert got == {i: b"to %d" % i for i in range(n) if i != raised[0]}
        for t in asyncio.all_tasks(loop):
            t.cancel()
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        for tr in transports:
            tr.abort()
        loop.run_until_complete(asyncio.sleep(0.01))
        for a, b in socks:
            a.close()
            b.close()


def test_due_timers_from_a_protocol_callback_run_after_its_call_soon(lp):
    """call_later(<= 0) made inside data_received runs after the call_soon handles that
    callback made, as in asyncio (its due timers join _ready after the I/O handles);
    powpow.aio ran them first."""
    loop = lp.loop
    order = []
    a, b = socket.socketpair()
    transports = []

    class P(asyncio.Protocol):
        def connection_made(self, tr):
            transports.append(tr)

        def data_received(self, data):
            loop.call_soon(order.append, "call_soon")
            loop.call_later(0, order.append, "call_later(0)")
            loop.call_later(-1, order.append, "call_later(-1)")  # earlier `when`: runs first

    async def main():
        await loop.connect_accepted_socket(P, a)
        await asyncio.sleep(0.02)
        loop.call_later(0.01, b.send, b"x")  # arrives while the loop waits: dispatched inline
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(order) == 3:
                break

    try:
        lp.run(main())
        assert order == ["call_soon", "call_later(-1)", "call_later(0)"]
    finally:
        for tr in transports:
            tr.abort()
        lp.run(asyncio.sleep(0.01))
        b.close()


@pytest.mark.parametrize("mode", ["close", "pause", "swap"])
def test_buffered_protocol_stops_where_buffer_updated_says(lp, mode):
    """asyncio reads once per get_buffer/buffer_updated, so a close(), pause_reading() or
    set_protocol() there takes effect for the rest of the data.  powpow.aio kept feeding the
    rest of its (larger) read to the old protocol."""
    loop = lp.loop
    got = []

    class Plain(asyncio.Protocol):
        def data_received(self, data):
            got.append(("new", data))

    class BP(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(4)
            self.tr = None

        def connection_made(self, tr):
            self.tr = tr

        def get_buffer(self, n):
            return self.buf

        def buffer_updated(self, n):
            got.append(("bu", bytes(self.buf[:n])))
            if mode == "close":
                self.tr.close()
            elif mode == "pause" and len(got) == 1:
                self.tr.pause_reading()
            elif mode == "swap":
                self.tr.set_protocol(Plain())

    a, b = socket.socketpair()

    async def main():
        tr, _ = await loop.connect_accepted_socket(BP, a)
        b.send(b"0123456789AB")
        await asyncio.sleep(0.05)
        first = list(got)
        if mode == "pause":
            tr.resume_reading()
            await asyncio.sleep(0.05)
        tr.abort()
        await asyncio.sleep(0.01)
        return first

    try:
        first = lp.run(main())
    finally:
        b.close()
    assert first[0] == ("bu", b"0123")
    if mode == "close":
        assert got == [("bu", b"0123")]
    elif mode == "pause":
        assert first == [("bu", b"0123")]
        assert b"".join(d for _, d in got) == b"0123456789AB"
    else:
        assert got == [("bu", b"0123"), ("new", b"456789AB")]


@pytest.mark.parametrize("bad", [object(), "x", -1])
def test_add_and_remove_reader_refuse_a_bad_file_object_with_value_error(lp, bad):
    """asyncio (selectors) refuses a file object without a usable fileno(), or a negative fd,
    with ValueError.  powpow.aio raised TypeError, or an OSError from the poller for -1, and
    remove_reader(-1) returned False."""
    for call in (lambda: lp.loop.add_reader(bad, print), lambda: lp.loop.add_writer(bad, print),
                 lambda: lp.loop.remove_reader(bad), lambda: lp.loop.remove_writer(bad)):
        with pytest.raises(ValueError):
            call()
