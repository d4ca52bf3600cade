"""The stream hot path's socket calls: FASTCALL builtins (CPython, src/pp_cpyio.c) vs their twins.

``_sock.fast_send`` / ``fast_recv_into`` / ``fast_recv_bytes`` must give what
``_sock.send`` / ``recv_into`` / ``recv_bytes`` give (the cffi shims natively,
the socket methods in pure mode): the same byte counts, bytes and ``-errno``
values, on random sizes and buffer types, with and without another thread
alive (the builtins keep the GIL only when no other thread exists).  In the
modes without the builtins the twins are checked against the socket module.
"""
import errno
import os
import random
import socket
import sys
import threading

import pytest

import powpow
from powpow.buffers import RecvBuffer
from powpow._ffi import _sock


def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _twin_send(sock, data):
    return _sock.send(sock, sock.fileno(), data)


def _twin_recv_bytes(sock, rbuf):
    return _sock.recv_bytes(sock, sock.fileno(), rbuf)


def _twin_recv_into(sock, rbuf):
    return _sock.recv_into(sock, sock.fileno(), rbuf)


def _paths():
    paths = [("twin", _twin_send, _twin_recv_bytes, _twin_recv_into)]
    if _sock.FAST_IO:
        paths.append(("fast",
                      lambda s, d: _sock.fast_send(s.fileno(), d),
                      lambda s, rb: _sock.fast_recv_bytes(s.fileno(), rb.data),
                      lambda s, rb: _sock.fast_recv_into(s.fileno(), rb.data)))
        # any writable buffer, not only the bytearray (which, with no other thread,
        # takes a path without a buffer export)
        paths.append(("fast, a view",
                      lambda s, d: _sock.fast_send(s.fileno(), d),
                      lambda s, rb: _sock.fast_recv_bytes(s.fileno(), memoryview(rb.data)),
                      lambda s, rb: _sock.fast_recv_into(s.fileno(), memoryview(rb.data))))
    return paths


def _exchange(send, recv_bytes, recv_into, seed):
    """A fixed random script of sends and receives; returns everything observed."""
    rnd = random.Random(seed)
    a, b = _pair()
    rbuf = RecvBuffer(rnd.choice([1, 7, 100, 4096, 65536]))
    log = []
    try:
        for _ in range(60):
            size = rnd.choice([0, 1, 5, 100, 1000, 70000])
            data = bytes(rnd.getrandbits(8) for _ in range(min(size, 300))) * (size // 300 + 1)
            data = data[:size]
            kind = rnd.choice(["bytes", "bytearray", "memoryview", "slice"])
            if kind == "bytearray":
                data = bytearray(data)
            elif kind == "memoryview":
                data = memoryview(data)
            elif kind == "slice":
                data = memoryview(b"??" + bytes(data))[2:]
            log.append(("send", send(a, data)))
            for _ in range(rnd.randint(0, 3)):
                if rnd.random() < 0.5:
                    r = recv_bytes(b, rbuf)
                    assert type(r) in (bytes, int)
                    log.append(("bytes", r))
                else:
                    n = recv_into(b, rbuf)
                    log.append(("into", n, bytes(rbuf.data[:n]) if n > 0 else b""))
        a.close()
        for _ in range(200):  # drain to EOF
            r = recv_bytes(b, rbuf)
            log.append(("bytes", r))
            if r == b"" or r == -errno.EAGAIN:
                break
        log.append(("send after close", send(b, b"x") in (-errno.EPIPE, -errno.ECONNRESET)))
    finally:
        a.close()
        b.close()
    return log


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("other_thread", [False, True])
def test_fast_calls_match_their_twins(seed, other_thread):
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    if other_thread:
        t.start()
    try:
        logs = {name: _exchange(s, rb, ri, seed) for name, s, rb, ri in _paths()}
    finally:
        stop.set()
    base = logs.pop("twin")
    assert any(e[0] == "bytes" and type(e[1]) is bytes and e[1] for e in base)  # the script did move data
    for name, log in logs.items():
        assert log == base, name


def test_twins_match_the_socket_module():
    a, b = _pair()
    rbuf = RecvBuffer(64)
    try:
        assert _twin_recv_bytes(b, rbuf) == -errno.EAGAIN
        assert _twin_recv_into(b, rbuf) == -errno.EAGAIN
        assert _twin_send(a, b"x" * 100) == 100
        assert _twin_recv_bytes(b, rbuf) == b"x" * 64  # at most the buffer's size
        assert _twin_recv_into(b, rbuf) == 36 and bytes(rbuf.data[:36]) == b"x" * 36
        a.close()
        assert _twin_recv_bytes(b, rbuf) == b""
    finally:
        a.close()
        b.close()


def test_fast_calls_exist_on_cpython_native_and_check_arguments():
    assert _sock.FAST_IO == (powpow.NATIVE and sys.implementation.name == "cpython")
    if not _sock.FAST_IO:
        return  # PyPy and pure mode: the twins above are the path (compared with the socket module)
    a, b = _pair()
    try:
        with pytest.raises(TypeError):
            _sock.fast_send(a.fileno(), "text")
        with pytest.raises((TypeError, BufferError)):
            _sock.fast_recv_into(b.fileno(), b"read-only")
        with pytest.raises(TypeError):
            _sock.fast_send(a.fileno())
        with pytest.raises(OverflowError):
            _sock.fast_send(1 << 40, b"x")
        assert _sock.fast_send(-1, b"x") == -errno.EBADF
        assert _sock.fast_recv_bytes(-1, bytearray(8)) == -errno.EBADF
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("other_thread", [False, True])
def test_fast_epoll_wait_matches_the_cffi_call(other_thread):
    """``FAST_WAIT`` (the native epoll poller's call on CPython) returns what the cffi
    ``pp_epoll_wait`` + ``ffi.unpack`` path returns: the same flat [token, events] list.
    Elsewhere (PyPy, pure mode) it does not exist and the poller keeps its other path."""
    from powpow.poller import epoll

    if not _sock.FAST_IO:
        assert _sock.FAST_WAIT is None and epoll._FAST_WAIT is None
        return
    assert epoll._FAST_WAIT is _sock.FAST_WAIT
    from powpow._ffi import ffi, lib

    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    if other_thread:
        t.start()
    ep = lib.pp_epoll_create()
    pairs = [_pair() for _ in range(5)]
    try:
        for i, (a, b) in enumerate(pairs):
            token = (i + 1) * 1000 + (1 << 40 if i == 4 else 0)  # one token beyond 32 bits
            assert lib.pp_epoll_ctl(ep, 1, b.fileno(), 0x001 | 0x004, token) == 0
            if i % 2 == 0:
                a.send(b"x")
        a, b = pairs[3]
        a.close()  # a hang-up
        buf = bytearray(16 * 64)
        out = ffi.new("int64_t[]", 2 * 64)
        fast = _sock.FAST_WAIT(ep, buf, 64, 100)
        n = lib.pp_epoll_wait(ep, out, 64, 100)
        slow = ffi.unpack(out, 2 * n)
        assert sorted(zip(fast[::2], fast[1::2])) == sorted(zip(slow[::2], slow[1::2]))
        assert len(fast) == 10 and (1 << 40) + 5000 in fast[::2]
        assert _sock.FAST_WAIT(ep, buf, 1, 0)[0] in fast[::2]  # maxevents caps the batch
        again = _sock.FAST_WAIT(ep, buf, 64, 0)  # level-triggered: the same readiness again
        assert sorted(zip(again[::2], again[1::2])) == sorted(zip(fast[::2], fast[1::2]))
        for _a, b in pairs:
            lib.pp_epoll_ctl(ep, 2, b.fileno(), 0, 0)
        assert _sock.FAST_WAIT(ep, buf, 64, 0) == []
        assert _sock.FAST_WAIT(ep, buf, 64, 1) == []  # a timeout, not an error
        # bad input: a clear error, never a write past the buffer
        with pytest.raises(ValueError, match="smaller"):
            _sock.FAST_WAIT(ep, bytearray(16 * 4), 5, 0)
        with pytest.raises(ValueError, match="maxevents"):
            _sock.FAST_WAIT(ep, buf, 0, 0)
        with pytest.raises(BufferError):
            _sock.FAST_WAIT(ep, b"read-only" * 200, 4, 0)
        with pytest.raises(TypeError, match="4 arguments"):
            _sock.FAST_WAIT(ep, buf, 4)
    finally:
        stop.set()
        os.close(ep)
        for a, b in pairs:
            a.close()
            b.close()
    assert _sock.FAST_WAIT(ep, buf, 64, 0) == -errno.EBADF
