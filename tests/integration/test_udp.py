"""UDP: bind/connect, IPv4 and IPv6, 60 KiB datagrams, truncation reported, ICMP errors."""
import errno
import os
import socket

import pytest

from powpow import DatagramTruncated, bind_udp, connect_udp

from ._net import run_until


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_udp_echo_60kib_datagrams(loop, host):
    server = bind_udp(loop, host, 0, lambda ep, data, addr: ep.send_to(data, addr))
    got = []
    client = connect_udp(loop, host, server.port, lambda ep, data, addr: got.append(data))
    sizes = [1, 1000, 60 * 1024, 65000 if host == "127.0.0.1" else 65000]
    msgs = [os.urandom(n) for n in sizes]
    for m in msgs:
        assert client.send(m)
    run_until(loop, lambda: len(got) == len(msgs))
    assert sorted(got, key=len) == sorted(msgs, key=len)  # whole, never cut
    client.close()
    server.close()


def test_truncated_datagram_is_reported_not_delivered(loop):
    got, errors = [], []
    server = bind_udp(loop, "127.0.0.1", 0, lambda ep, d, a: got.append(d),
                      on_error=lambda ep, exc: errors.append(exc), max_datagram_size=1024)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x" * 2000, ("127.0.0.1", server.port))
    s.sendto(b"small", ("127.0.0.1", server.port))
    run_until(loop, lambda: got and errors)
    assert got == [b"small"]
    e = errors[0]
    assert isinstance(e, DatagramTruncated) and e.limit == 1024
    assert e.size == 2000  # Linux reports the real length (MSG_TRUNC)
    assert e.addr == ("127.0.0.1", s.getsockname()[1]) and server.truncated == 1
    s.close()
    server.close()


def test_send_to_from_bound_endpoint(loop):
    got = []
    a = bind_udp(loop, "127.0.0.1", 0, lambda ep, d, addr: got.append((d, addr)))
    b = bind_udp(loop, "127.0.0.1", 0, None)
    assert b.send_to(b"hello", ("127.0.0.1", a.port))
    run_until(loop, lambda: got)
    assert got == [(b"hello", ("127.0.0.1", b.port))]
    a.close()
    b.close()


def test_connected_udp_reports_icmp_refused(loop):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody there: the kernel answers ICMP port unreachable
    errors = []
    ep = connect_udp(loop, "127.0.0.1", port, None, on_error=lambda ep, exc: errors.append(exc))
    ep.send(b"anyone?")
    run_until(loop, lambda: errors or not ep.send(b"again"))
    if not errors:
        run_until(loop, lambda: errors)
    assert errors[0].errno == errno.ECONNREFUSED
    ep.close()
