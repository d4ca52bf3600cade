"""powpow.aio against stock asyncio: what must still happen when the loop no longer runs,
and loop.sendfile's argument checks.

Each test runs on powpow.aio AND on stock asyncio (``lp``: test_aio.py's fixture, except
that a test may close the loop itself):
* a write made while the loop is not running (sync code between ``run_until_complete``
  calls) reaches the peer, and a ``close()`` made then closes the socket;
* ``loop.close()`` flushes writes still collected for the end of an iteration and closes
  the sockets of its stream transports (asyncio: when the collector gets to them), also
  those of ``close()``s still waiting for output;
* a child still running when its loop closes is reaped later, and its pidfd is closed;
* ``loop.sendfile`` refuses what asyncio refuses, with asyncio's errors, and the
  transport still works afterwards.
Real sockets on 127.0.0.1 port 0, bounded waits.
"""
import asyncio
import contextlib
import gc
import os
import socket
import sys
import tempfile
import threading
import time

import pytest

from .test_aio import _Loop

TIMEOUT = 3.0


@pytest.fixture(params=["powpow", "asyncio"])
def lp(request):
    w = _Loop(request.param)
    yield w
    loop = w.loop
    try:
        if not loop.is_closed():
            loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    assert not w.calls, "unexpected exception-handler calls: %r" % (w.calls,)


def _listener() -> socket.socket:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    return ls


def _read_to_end(c: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Everything the peer sends until its FIN (or RST, marked b'<reset>'); raises on a timeout."""
    c.settimeout(timeout)
    got = b""
    while True:
        try:
            d = c.recv(65536)
        except ConnectionResetError:
            return got + b"<reset>"
        if not d:
            return got
        got += d


def _collect_until_closed(tsock) -> None:
    """Collect garbage until ``tsock`` is closed (asyncio closes a dropped transport's socket in its
    ``__del__``; PyPy runs such finalizers a collection or two later), at most 10 times."""
    for _ in range(10):
        if tsock.fileno() == -1:
            return
        gc.collect()


def _open_client(lp, ls):
    r, w = lp.run(asyncio.open_connection("127.0.0.1", ls.getsockname()[1]))
    c, _ = ls.accept()
    return r, w, c


# ------------------------------------------------------------ writes and closes outside the loop

def test_write_and_close_while_the_loop_is_not_running_reach_the_peer(lp):
    """run_until_complete(...) for the setup, then a last write + close() + loop.close():
    asyncio's write() tries the socket at once, so the peer gets the bytes.  powpow.aio
    collected them for an end-of-iteration flush that never came: the peer got nothing
    and the socket stayed open as long as the loop object lived."""
    ls = _listener()
    try:
        r, w, c = _open_client(lp, ls)
        try:
            w.write(b"hello; ")
            lp.run(w.drain())
            w.write(b"QUIT\r\n")  # the loop is not running
            w.close()
            tsock = w.get_extra_info("socket")
            lp.loop.close()
            if lp.kind == "powpow":
                # beats asyncio (whose socket waits for the garbage collector): closed by close() itself
                assert tsock.fileno() == -1
            del r, w
            _collect_until_closed(tsock)
            assert tsock.fileno() == -1
            assert _read_to_end(c) == b"hello; QUIT\r\n"
        finally:
            c.close()
    finally:
        ls.close()


def test_writes_left_by_an_interrupted_iteration_leave_at_loop_close(lp):
    """A callback writes, then SystemExit leaves run_forever before the end-of-iteration flush;
    the program then closes the transport and the loop.  asyncio had sent the bytes in write();
    powpow.aio kept them (and the close() waiting for them) for an iteration that never came."""
    ls = _listener()
    try:
        r, w, c = _open_client(lp, ls)
        try:
            tr = w.transport

            def last_words(t):
                t.write(b"last words")
                raise SystemExit

            lp.loop.call_soon(last_words, tr)
            with pytest.raises(SystemExit):
                lp.loop.run_forever()
            tr.close()
            tsock = w.get_extra_info("socket")
            lp.loop.close()
            del r, w, tr
            _collect_until_closed(tsock)
            assert tsock.fileno() == -1
            assert _read_to_end(c) == b"last words"
        finally:
            c.close()
    finally:
        ls.close()


def test_close_still_waiting_for_output_at_loop_close_closes_the_socket(lp):
    """close() with more output queued than the kernel took (the peer does not read), then
    loop.close(): the output can never leave.  asyncio's socket is closed when the transport is
    collected; powpow.aio's stayed open (the Connection held it, registered with a closed loop),
    so the peer never saw the end.  Now it is closed with an RST: the stream was cut."""
    ls = _listener()
    try:
        r, w, c = _open_client(lp, ls)
        try:
            big = b"x" * (32 << 20)  # more than loopback's socket buffers hold
            w.write(big)  # the kernel takes a few hundred KiB; the rest waits in the transport
            lp.run(asyncio.sleep(0.01))
            assert w.transport.get_write_buffer_size() > 0
            w.close()
            tsock = w.get_extra_info("socket")
            lp.loop.close()
            if lp.kind == "powpow":
                assert tsock.fileno() == -1
            del r, w
            _collect_until_closed(tsock)
            assert tsock.fileno() == -1
            got = _read_to_end(c)  # the end arrives (FIN or RST) instead of a timeout
            assert len(got.replace(b"<reset>", b"")) < len(big)
        finally:
            c.close()
    finally:
        ls.close()


def test_transport_left_open_at_loop_close_does_not_keep_its_socket_open(lp):
    """A stream never closed (main() returned with it open) while the program keeps its socket
    object (get_extra_info("socket"), e.g. for logging): asyncio's transport closes that socket
    when it is collected.  powpow.aio's had no such finalizer: the fd stayed open as long as the
    socket object lived.  Now loop.close() closes it, without waiting for the collector."""
    ls = _listener()
    try:
        r, w, c = _open_client(lp, ls)
        try:
            w.write(b"still open")
            lp.run(w.drain())
            tsock = w.get_extra_info("socket")
            lp.loop.close()
            if lp.kind == "powpow":
                assert tsock.fileno() == -1
            del r, w
            _collect_until_closed(tsock)
            assert tsock.fileno() == -1
            assert _read_to_end(c) == b"still open"
        finally:
            c.close()
    finally:
        ls.close()


def test_writes_in_a_running_loop_still_leave_together(lp):
    """The immediate write is only for a loop that is not running: inside it, writes of one
    iteration still leave in one writev (the peer reads them in one recv)."""
    ls = _listener()
    try:
        r, w, c = _open_client(lp, ls)
        try:
            async def burst():
                for i in range(20):
                    w.write(b"%02d" % i)
                await asyncio.sleep(0.05)

            lp.run(burst())
            c.settimeout(TIMEOUT)
            data = c.recv(1000)
            if lp.kind == "powpow":
                assert data == b"".join(b"%02d" % i for i in range(20))
            w.close()
            lp.run(w.wait_closed())
        finally:
            c.close()
    finally:
        ls.close()


# ------------------------------------------------------------ children outliving their loop

def _pidfds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd) == "anon_inode:[pidfd]":
                n += 1
        except OSError:
            pass
    return n


def _state(pid: int) -> str:
    """The child's state letter ('Z': a zombie), '' once it is reaped."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


# a dropped Process's transport, collected after loop.close(), complains from its __del__
# (asyncio's own code, on both loops: its pipe's close() calls call_soon on the closed loop)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("keep", [True, False], ids=["process-kept", "process-dropped"])
def test_child_still_running_at_loop_close_is_reaped_and_its_pidfd_closed(lp, keep):
    """The loop closes before its child exits (fire-and-forget, or a task cancelled at
    shutdown).  asyncio's child watcher reaps it whenever it exits; powpow.aio left the
    pidfd open (one per child) and, while the Process was referenced, a zombie."""
    kept = []

    async def main():
        p = await asyncio.create_subprocess_exec(sys.executable, "-c", "import sys; sys.stdin.read()",
                                                 stdin=asyncio.subprocess.PIPE)
        if keep:
            kept.append(p)
        return p.pid, p.stdin.get_extra_info("pipe")

    before = _pidfds()
    pid, stdin = lp.run(main())
    lp.loop.close()
    assert _pidfds() == before
    if keep:
        assert _state(pid) not in ("", "Z")  # still running: it waits for its stdin's end
    stdin.close()  # the child exits now, with its loop closed
    gc.collect()
    deadline = time.monotonic() + TIMEOUT
    while _state(pid) != "" and time.monotonic() < deadline:
        time.sleep(0.01)  # nothing to await: the reaping thread tells nobody
    assert _state(pid) == "", "child %d not reaped (state %r)" % (pid, _state(pid))
    assert _pidfds() == before
    # the reaping threads (powpow's and asyncio's have "waitpid" in their names) drop the transport
    # when done: collect it here, not at a random later point of the session
    for th in threading.enumerate():
        if "waitpid" in th.name:
            th.join(TIMEOUT)
    del kept[:]
    gc.collect()


# ------------------------------------------------------------ loop.sendfile's argument checks

SENDFILE_CASES = [
    ("count-float", (0, 1.5), "rb", TypeError, "count must be a positive integer (got 1.5)"),
    ("count-zero", (0, 0), "rb", ValueError, "count must be a positive integer (got 0)"),
    ("count-negative", (0, -5), "rb", ValueError, "count must be a positive integer (got -5)"),
    ("offset-negative", (-1, None), "rb", ValueError, "offset must be a non-negative integer (got -1)"),
    ("offset-float", (0.5, None), "rb", TypeError, "offset must be a non-negative integer (got 0.5)"),
    ("text-mode", (0, None), "r", ValueError, "file should be opened in binary mode"),
]


@pytest.mark.parametrize("args,mode,exc,msg", [c[1:] for c in SENDFILE_CASES], ids=[c[0] for c in SENDFILE_CASES])
def test_sendfile_refuses_bad_arguments_as_asyncio_and_the_transport_still_works(lp, args, mode, exc, msg):
    """asyncio checks loop.sendfile's arguments before sending anything.  powpow.aio did not:
    count=1.5 raised a TypeError after queueing the chunk, and that transport never sent later
    writes nor closed; count=0 returned 0, count=-5 raised OSError(EINVAL), a text-mode file
    was sent anyway."""
    data = os.urandom(100000)

    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()

        async def handle(r, w):
            got.set_result(await r.read())
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
        try:
            with tempfile.TemporaryFile() as f:
                f.write(data)
                f.seek(0)
                with open(f.fileno(), mode, closefd=False) as ff:
                    try:
                        await loop.sendfile(w.transport, ff, *args)
                        raised = None
                    except Exception as e:
                        raised = e
            # the transport still works: a write, then the close (it hung here after count=1.5)
            w.write(b"after")
            w.close()
            await asyncio.wait_for(w.wait_closed(), 2.0)
            return raised, await asyncio.wait_for(got, 2.0)
        finally:
            w.transport.abort()
            srv.close()
            await srv.wait_closed()

    raised, got = lp.run(main())
    assert (type(raised), str(raised)) == (exc, msg)
    assert got == b"after"


def test_sendfile_with_good_arguments_still_sends_the_slice(lp):
    """The checks refuse nothing asyncio takes: an offset and a count, then a write after."""
    data = os.urandom(300000)

    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()

        async def handle(r, w):
            got.set_result(await r.read())
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
        try:
            with tempfile.TemporaryFile() as f:
                f.write(data)
                f.seek(0)
                sent = await loop.sendfile(w.transport, f, 1000, 200000)
                pos = f.tell()
            w.write(b"after")
            w.close()
            await w.wait_closed()
            return sent, pos, await got
        finally:
            w.close()
            srv.close()
            await srv.wait_closed()

    assert lp.run(main()) == (200000, 201000, data[1000:201000] + b"after")


# ------------------------------------------------------------ sendfile cut short, sock_sendfile

@contextlib.asynccontextmanager
async def _stalled_peer():
    """A transport to a plain socket peer that reads nothing until ``read_all()`` (a thread
    reading to EOF; awaitable).  (A protocol that pauses reading in connection_made is not
    honoured by asyncio on 3.9.)  Yields ``(transport, read_all)``; all closed after."""
    loop = asyncio.get_running_loop()
    ls = _listener()
    tr = c = None
    try:
        tr, _ = await loop.create_connection(asyncio.Protocol, *ls.getsockname())
        c, _ = ls.accept()
        yield tr, lambda: loop.run_in_executor(None, _read_to_end, c, 10.0)
    finally:
        if tr is not None:
            tr.abort()
        if c is not None:
            c.close()
        ls.close()


def test_a_cancelled_sendfile_stops_the_file_and_the_next_write_follows_what_was_sent(lp):
    """loop.sendfile cancelled while the peer is not reading (asyncio.wait_for timing out):
    asyncio sends no more of the file, and a write after it follows the bytes already sent.
    powpow.aio left the file queued: the whole 32 MiB went out after the cancel, and the
    next write behind it (a trailer here), so the peer read the rest of the file as data."""
    data = os.urandom(32 << 20)

    async def main():
        loop = asyncio.get_running_loop()
        async with _stalled_peer() as (tr, read_all):
            with tempfile.TemporaryFile() as f:
                f.write(data)
                f.seek(0)
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(loop.sendfile(tr, f, 0, None), 0.3)
            tr.write(b"TRAILER")
            tr.write_eof()
            return await read_all()

    got = lp.run(main(), timeout=20)
    at = len(got) - 7
    assert got.endswith(b"TRAILER") and 0 < at < len(data), (len(got), got.find(b"TRAILER"))
    assert got[:at] == data[:at]


def test_sendfile_of_a_file_that_shrinks_sends_what_it_has_and_the_transport_goes_on(lp):
    """The file is truncated while loop.sendfile waits for the peer: asyncio returns the bytes
    sent and the transport stays open.  powpow.aio closed the connection (EIO: right for an
    HTTP body with a promised length, not here) and raised ConnectionError."""
    data = os.urandom(32 << 20)
    keep = 4 << 20

    async def main():
        loop = asyncio.get_running_loop()
        async with _stalled_peer() as (tr, read_all):
            with tempfile.TemporaryFile() as f:
                f.write(data)
                f.flush()
                f.seek(0)
                task = asyncio.ensure_future(loop.sendfile(tr, f, 0, None))
                await asyncio.sleep(0.2)  # stuck part-way (the kernel took a few MiB at most)
                assert not task.done()
                os.truncate(f.fileno(), keep)
                got = read_all()
                sent = await asyncio.wait_for(task, 10)
                pos = f.tell()
            tr.write(b"after")
            tr.write_eof()
            return sent, pos, await got

    sent, pos, got = lp.run(main(), timeout=20)
    assert sent == pos == keep
    assert got == data[:keep] + b"after"


@pytest.mark.parametrize("count", [None, 700000])
def test_sock_sendfile_sends_without_the_fallback(lp, count):
    """loop.sock_sendfile(..., fallback=False) uses os.sendfile, as asyncio's selector loop does;
    powpow.aio had no native path, so it always raised SendfileNotAvailableError (and with the
    default fallback copied the file through read+send).  The file position ends after the
    bytes sent."""
    data = os.urandom(1 << 20)

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        got = bytearray()

        async def reader():
            while True:
                d = await loop.sock_recv(b, 1 << 16)
                if not d:
                    return
                got.extend(d)

        rt = asyncio.ensure_future(reader())
        try:
            with tempfile.TemporaryFile() as f:
                f.write(data)
                f.seek(0)
                sent = await loop.sock_sendfile(a, f, 1000, count, fallback=False)
                pos = f.tell()
            a.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(rt, 5)
            return sent, pos, bytes(got)
        finally:
            rt.cancel()
            a.close()
            b.close()

    want = data[1000:] if count is None else data[1000:1000 + count]
    sent, pos, got = lp.run(main())
    assert (sent, pos) == (len(want), 1000 + len(want))
    assert got == want
