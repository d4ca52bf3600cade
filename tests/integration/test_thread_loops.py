"""Several loops in several threads of one process (``worker_mode="thread"``).

cffi releases the GIL around every native call, so anything the native layer
shares between loops (scratch arrays filled in Python, read by the kernel in
C) can be overwritten by another thread between the fill and the syscall.
These tests run one ``TcpServer`` per thread, each answering with bytes that
only it sends, and check on the wire that every client receives only its own
server's bytes.
"""
import socket
import threading
import time

import powpow
from powpow._ffi import _sock

THREADS = 6
CLIENTS_PER_THREAD = 3
REQUESTS = 150
PIECES = 64  # buffers per writev
PIECE = 97  # bytes per buffer


def _serve(tag: int, ready, stop, ports, errors) -> None:
    try:
        loop = powpow.Loop()
        # a distinct bytes object per buffer: the iovecs then point at many places
        pieces = [bytes([tag]) * PIECE for _ in range(PIECES)]

        def on_data(conn, data) -> None:
            for _ in range(len(data)):
                conn.sendv(pieces)

        srv = powpow.TcpServer(loop, on_data=on_data).listen(0, "127.0.0.1")
        ports[tag] = srv.port
        loop.add_interval(20, lambda: stop.is_set() and loop.stop())
        ready.release()
        loop.run()
        srv.close()
        loop.run_once(0)
        loop.close()
    except BaseException as exc:  # pragma: no cover - reported below
        errors.append(exc)
        ready.release()


def _client(tag: int, port: int, bad, errors) -> None:
    want = PIECES * PIECE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for i in range(REQUESTS):
                n = 1 + (i % 3)  # pipelined requests: several writev in one loop callback
                s.sendall(b"r" * n)
                left = want * n
                while left:
                    chunk = s.recv(min(left, 65536))
                    assert chunk, "server closed early"
                    left -= len(chunk)
                    if chunk.count(tag) != len(chunk):
                        bad.append((tag, sorted(set(chunk) - {tag})))
                        return
    except BaseException as exc:  # pragma: no cover - reported below
        errors.append(exc)


def test_concurrent_writev_in_thread_loops_never_mixes_clients_bytes():
    ready = threading.Semaphore(0)
    stop = threading.Event()
    ports = {}
    errors = []
    servers = [threading.Thread(target=_serve, args=(tag, ready, stop, ports, errors)) for tag in range(1, THREADS + 1)]
    for t in servers:
        t.start()
    for _ in servers:
        assert ready.acquire(timeout=10)
    assert not errors, errors
    bad = []
    clients = [threading.Thread(target=_client, args=(tag, ports[tag], bad, errors))
               for tag in ports for _ in range(CLIENTS_PER_THREAD)]
    start = time.monotonic()
    for t in clients:
        t.start()
    for t in clients:
        t.join(30)
    stop.set()
    for t in servers:
        t.join(10)
    assert not any(t.is_alive() for t in servers + clients)
    assert not bad, "a client received another server's bytes: %r" % (bad[:3],)
    assert not errors, errors
    assert time.monotonic() - start < 30


def test_writev_scratch_is_per_thread_and_sends_what_each_thread_gave():
    """Direct use of the shim from several threads at once, each on its own socketpair."""
    results = {}
    barrier = threading.Barrier(4)

    def worker(tag: int) -> None:
        a, b = socket.socketpair()
        try:
            b.settimeout(5)
            bufs = [bytes([tag]) * 31 for _ in range(50)]
            total = 0
            barrier.wait(5)
            for _ in range(200):
                n = _sock.writev(a, a.fileno(), bufs)
                assert n == 31 * 50
                got = b""
                while len(got) < n:
                    got += b.recv(n - len(got))
                total += got.count(tag)
                if got.count(tag) != n:
                    results[tag] = ("foreign bytes", sorted(set(got) - {tag}))
                    return
            results[tag] = total
        finally:
            a.close()
            b.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == {t: 200 * 31 * 50 for t in range(1, 5)}


def test_a_thread_attached_from_c_is_not_held_up_by_a_waiting_loop():
    """A thread that C code creates and attaches to Python (a ctypes/cffi callback, a C
    library's worker: PyGILState_Ensure) while the loop sleeps in its poll must get the GIL
    at once.  The CPython fast poll kept the GIL for the whole wait when the loop looked
    alone, so such a thread's ``post`` waited for the loop's timeout (or forever)."""
    import ctypes

    loop = powpow.Loop()
    seen = []
    t0 = time.monotonic()

    def from_c(_arg):
        loop.post(lambda: seen.append(time.monotonic() - t0))
        loop.post(loop.stop)
        return None

    proto = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
    cb = proto(from_c)
    libc = ctypes.CDLL(None)
    libc.pthread_create.argtypes = [ctypes.POINTER(ctypes.c_ulong), ctypes.c_void_p, proto, ctypes.c_void_p]
    libc.pthread_join.argtypes = [ctypes.c_ulong, ctypes.c_void_p]
    tid = ctypes.c_ulong()

    def start():  # from inside the loop, so that it is about to wait when the thread runs
        assert libc.pthread_create(ctypes.byref(tid), None, cb, None) == 0

    try:
        loop.add_timer(10000, loop.stop)  # the loop's only timer: a 10 s wait
        loop.defer_call(start)
        loop.run()
    finally:
        if tid.value:
            libc.pthread_join(tid.value, None)
        loop.close()
    assert seen and seen[0] < 2.0, seen
