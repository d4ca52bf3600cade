"""Queued ``send_file`` chunks in the transport's backpressure accounting, plain TCP and TLS.

Each queued file chunk holds an open descriptor until it is sent.  The water
marks counted only bytes in memory: on plain TCP ``on_drain`` fired as soon as
the small header bytes between the chunks were out, with ~63 chunks still
queued, so a producer that queues a batch per ``on_drain`` stacked batch on
batch of open fds (up to ``FILES_MAX``, then the connection was refused); over
TLS file chunks were counted nowhere, ``writable`` stayed True and every batch
was queued at once.  Real loopback sockets with small kernel buffers, so that
the queue really fills; the number of open descriptors is read from /proc.
"""
import contextlib
import os
import socket
import threading
import time

import pytest

import powpow
from powpow.net._writing import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, FILES_HIGH
from ._net import in_thread

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")

FILE = os.urandom(16 << 10)  # a typical small static file: one chunk, one descriptor
BATCH = FILES_HIGH  # what one HTTP batch may pin (the server counts each file part as high_water // FILES_HIGH)
# chunks still queued when on_drain may fire: the default low mark in file-chunk weights
LOW_FILES = FILES_HIGH * DEFAULT_LOW_WATER // DEFAULT_HIGH_WATER
SLACK = 2  # a chunk being sent (TLS: being read) is still open


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _header(n: int) -> bytes:
    return b"<part %05d>" % n  # bytes between the chunks, as the heads of pipelined answers


def _expected(count: int) -> bytes:
    return b"".join(_header(n) + FILE for n in range(count))


@contextlib.contextmanager
def _serving(on_accept, backend, tls_ctx=None):
    """A TcpServer (TLS with ``tls_ctx``) on its own loop thread (every poller backend: the
    conftest's ``backend``); its accepted sockets get a small send buffer (inherited from
    the listener) so a client that does not read stalls it."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 << 10)
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    loop = powpow.Loop(backend=backend, debug=True)
    srv = powpow.TcpServer(loop, on_accept=on_accept).adopt(ls, ssl=tls_ctx)
    th, errors = in_thread(loop.run)
    try:
        yield srv
    finally:
        loop.post(loop.stop)
        th.join(10)
        assert not th.is_alive()
        srv.close()
        loop.close()
        assert not errors, errors


def _client(port, certs=None):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)  # before connect: a small window
    s.settimeout(3.0)
    s.connect(("127.0.0.1", port))
    if certs is not None:
        s = certs.client_ctx().wrap_socket(s, server_hostname="localhost")
    return s


def _read_all(s, limit: int, timeout: float = 10.0) -> bytes:
    """Read until the server closes (at most ``limit`` + 1 bytes, ``timeout`` seconds)."""
    buf = bytearray()
    end = time.monotonic() + timeout
    try:
        while len(buf) <= limit and time.monotonic() < end:
            b = s.recv(1 << 20)
            if not b:
                break
            buf += b
    except socket.timeout:
        pass  # the server stalled: what did arrive is compared by the caller
    return bytes(buf)


def _assert_arrived(data: bytes, expected: bytes) -> None:
    assert len(data) == len(expected), "%d bytes arrived, %d expected" % (len(data), len(expected))
    assert data == expected, "the bytes differ first at offset %d" % next(
        i for i, (a, b) in enumerate(zip(data, expected)) if a != b)


@pytest.fixture(params=["tcp", "tls"])
def tls(request, certs):
    """None for plain TCP, else the test certificates (the server speaks TLS)."""
    return None if request.param == "tcp" else certs


def test_a_producer_paced_by_on_drain_holds_about_one_batch_of_files(tmp_path, tls, backend):
    """The server writes 2 MiB (over high water), then on each on_drain queues a batch of
    64 file chunks (a header before each; another batch at once while still writable).  The
    client reads nothing until the server is pushed back, then everything: the descriptors
    held never pass one batch plus what the low mark allows (on TCP one more batch stacked
    up per on_drain, ~500 of them by the end; on TLS every batch was queued at once), and
    the bytes arrive whole and in order."""
    path = str(tmp_path / "part.bin")
    with open(path, "wb") as f:
        f.write(FILE)
    prefix = os.urandom(2 << 20)
    batches = 8
    total = batches * BATCH
    expected = prefix + _expected(total)
    st = {"queued": 0, "max_held": 0, "held_at_drain": [], "closed": None}
    pushed_back = threading.Event()

    def produce(conn):
        while st["queued"] < total and not conn.closed:
            for _ in range(BATCH):
                conn.send_file(path, header=_header(st["queued"]))
                st["queued"] += 1
            st["max_held"] = max(st["max_held"], _open_fds() - st["base"])
            if not conn.writable:
                return  # on_drain brings us back
        conn.close_after_drain()

    def on_drain(conn):
        st["held_at_drain"].append(_open_fds() - st["base"])
        produce(conn)

    def on_accept(conn):
        st["base"] = _open_fds()
        conn.on_drain = on_drain
        conn.on_close = lambda c, exc: st.update(closed=exc)
        if conn.write(prefix):
            produce(conn)  # (not expected: 2 MiB is over high water)
        pushed_back.set()

    with _serving(on_accept, backend, tls.server_ctx() if tls else None) as srv:
        with contextlib.closing(_client(srv.port, tls)) as s:
            assert pushed_back.wait(5.0)
            data = _read_all(s, len(expected))
    assert st["closed"] is None, st["closed"]
    assert st["queued"] == total
    assert len(st["held_at_drain"]) > batches, "the producer was not paced by on_drain: %r" % st
    assert max(st["held_at_drain"]) <= LOW_FILES + SLACK, st["held_at_drain"]
    assert st["max_held"] <= BATCH + LOW_FILES + SLACK, st
    _assert_arrived(data, expected)


def test_many_queued_files_are_not_writable_and_on_drain_waits_for_them(tmp_path, tls, backend):
    """128 chunks (a header before each) to a client that does not read: send_file says
    False and writable is False; on_drain fires once, when at most the low mark's share of
    chunks is left (it fired with ~120 left on TCP, and never said False on TLS)."""
    path = str(tmp_path / "part.bin")
    with open(path, "wb") as f:
        f.write(FILE)
    count = 2 * BATCH
    st = {"drains": [], "closed": None}
    queued = threading.Event()

    def on_drain(conn):
        st["drains"].append((_open_fds() - st["base"], conn.writable))
        conn.close_after_drain()

    def on_accept(conn):
        st["base"] = _open_fds()
        conn.on_drain = on_drain
        conn.on_close = lambda c, exc: st.update(closed=exc)
        oks = [conn.send_file(path, header=_header(n)) for n in range(count)]
        st["ok_last"] = oks[-1]
        st["writable"] = conn.writable
        st["held"] = _open_fds() - st["base"]
        queued.set()

    with _serving(on_accept, backend, tls.server_ctx() if tls else None) as srv:
        with contextlib.closing(_client(srv.port, tls)) as s:
            assert queued.wait(5.0)
            data = _read_all(s, len(_expected(count)))
    assert st["closed"] is None, st["closed"]
    assert st["held"] > BATCH  # most chunks are still queued: the client did not read
    assert st["ok_last"] is False and st["writable"] is False, st
    assert len(st["drains"]) == 1, st["drains"]
    held, writable = st["drains"][0]
    assert held <= LOW_FILES + SLACK and writable, st["drains"]
    _assert_arrived(data, _expected(count))


def test_file_chunks_and_bytes_count_together_against_high_water(tmp_path, tls, backend):
    """40 queued chunks (under FILES_HIGH) and then 600 KiB of bytes (under high water):
    together they are over it, so the write says False; on_drain follows once they are out."""
    path = str(tmp_path / "part.bin")
    with open(path, "wb") as f:
        f.write(FILE)
    tail = os.urandom(600 << 10)
    st = {"drained": 0, "closed": None}
    queued = threading.Event()

    def on_drain(conn):
        st["drained"] += 1
        conn.close_after_drain()

    def on_accept(conn):
        conn.on_drain = on_drain
        conn.on_close = lambda c, exc: st.update(closed=exc)
        st["files_ok"] = all([conn.send_file(path, header=_header(n)) for n in range(40)])
        st["write_ok"] = conn.write(tail)
        st["writable"] = conn.writable
        queued.set()

    with _serving(on_accept, backend, tls.server_ctx() if tls else None) as srv:
        with contextlib.closing(_client(srv.port, tls)) as s:
            assert queued.wait(5.0)
            data = _read_all(s, len(_expected(40)) + len(tail))
    assert st["closed"] is None, st["closed"]
    assert st["files_ok"] is True  # 40 chunks alone stay under the mark
    assert st["write_ok"] is False and st["writable"] is False, st
    assert st["drained"] == 1
    _assert_arrived(data, _expected(40) + tail)


def test_queued_files_counts_the_chunks_and_want_drain_brings_an_on_drain(tmp_path, tls, backend):
    """The public seam for bounding open files (the HTTP server's ``max_queued_files``):
    ``queued_files`` counts the chunks not sent yet, and ``want_drain()`` with a few of them
    queued (far under high water) makes ``writable`` False and brings one ``on_drain``, once
    the queue has moved and is at the low mark."""
    path = str(tmp_path / "part.bin")
    with open(path, "wb") as f:
        f.write(FILE)
    prefix = os.urandom(400 << 10)  # under high water, more than the small socket buffers take
    count = 4
    st = {"drains": [], "closed": None}
    queued = threading.Event()

    def on_drain(conn):
        st["drains"].append((conn.queued_files, conn.writable))
        conn.close_after_drain()

    def on_accept(conn):
        conn.on_drain = on_drain
        conn.on_close = lambda c, exc: st.update(closed=exc)
        st["before"] = conn.queued_files
        st["write_ok"] = conn.write(prefix)
        st["files_ok"] = all([conn.send_file(path, header=_header(n)) for n in range(count)])
        st["queued"] = conn.queued_files
        st["writable_before"] = conn.writable
        conn.want_drain()
        st["writable_after"] = conn.writable
        queued.set()

    with _serving(on_accept, backend, tls.server_ctx() if tls else None) as srv:
        with contextlib.closing(_client(srv.port, tls)) as s:
            assert queued.wait(5.0)
            time.sleep(0.2)  # the server has sent what the buffers take: no drain yet
            st["drains_while_stalled"] = len(st["drains"])
            data = _read_all(s, len(prefix) + len(_expected(count)))
    assert st["closed"] is None, st["closed"]
    assert st["before"] == 0 and st["queued"] == count, st
    assert st["write_ok"] and st["files_ok"] and st["writable_before"], st
    assert st["writable_after"] is False, st
    assert st["drains_while_stalled"] == 0, st
    assert len(st["drains"]) == 1, st["drains"]
    files_left, writable = st["drains"][0]
    assert files_left <= count and writable, st["drains"]
    _assert_arrived(data, prefix + _expected(count))


def test_a_large_write_from_on_drain_over_tls_is_sent(certs, backend):
    """Regression: TLS ran on_drain from inside its write pump; a write there of more than
    one encryption step (128 KiB) was queued as plaintext for the pump, which was busy, and
    nothing woke it again: the rest of the answer never left."""
    first = os.urandom(4 << 20)
    second = os.urandom(300 << 10)
    st = {"drains": 0, "closed": None}
    queued = threading.Event()

    def on_drain(conn):
        st["drains"] += 1
        conn.write(second)
        conn.close_after_drain()

    def on_accept(conn):
        conn.on_drain = on_drain
        conn.on_close = lambda c, exc: st.update(closed=exc)
        st["ok"] = conn.write(first)
        queued.set()

    with _serving(on_accept, backend, certs.server_ctx()) as srv:
        with contextlib.closing(_client(srv.port, certs)) as s:
            assert queued.wait(5.0)
            data = _read_all(s, len(first) + len(second))
    assert st["ok"] is False and st["drains"] == 1 and st["closed"] is None, st
    _assert_arrived(data, first + second)


@pytest.mark.parametrize("offset,count,exc", [
    (0, 1.5, TypeError), (0.0, None, TypeError), (-1, None, ValueError), (0, -5, ValueError)])
def test_send_file_with_a_bad_range_raises_and_queues_nothing(tmp_path, tls, backend, offset, count, exc):
    """A bad offset/count raises before anything is queued (header included), and the
    connection goes on: a chunk with a float count made every later flush raise, so the
    queue, and a close waiting behind it, never moved again."""
    path = str(tmp_path / "part.bin")
    with open(path, "wb") as f:
        f.write(FILE)
    st = {}
    done = threading.Event()

    def on_accept(conn):
        st["fds_before"] = _open_fds()
        try:
            conn.send_file(path, offset, count, header=b"never sent")
        except exc as e:
            st["raised"] = e
        st["fds_after"] = _open_fds()
        conn.write(b"after:")
        conn.send_file(path, header=b"")
        conn.close_after_drain()
        done.set()

    with _serving(on_accept, backend, tls.server_ctx() if tls else None) as srv:
        with contextlib.closing(_client(srv.port, tls)) as s:
            assert done.wait(5.0)
            data = _read_all(s, len(FILE) + 6)
    assert isinstance(st.get("raised"), exc), st
    assert st["fds_after"] == st["fds_before"]  # nothing of the refused file kept open
    _assert_arrived(data, b"after:" + FILE)
