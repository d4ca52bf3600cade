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


def test_dual_stack_endpoint_sends_to_plain_ipv4_and_ipv6(loop):
    got = []
    ep = bind_udp(loop, None, 0, lambda e, d, addr: got.append((d, addr)))  # "::" with V6ONLY off
    if ep.family != socket.AF_INET6:
        ep.close()
        pytest.skip("no IPv6: bind_udp(None) is not dual-stack here")
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        v4.settimeout(2)
        v6.settimeout(2)
        v4.bind(("127.0.0.1", 0))
        v6.bind(("::1", 0))
        assert ep.send_to(b"to v4", ("127.0.0.1", v4.getsockname()[1]))  # used to raise gaierror
        assert v4.recvfrom(100) == (b"to v4", ("127.0.0.1", ep.port))
        assert ep.send_to(b"to v6", ("::1", v6.getsockname()[1]))
        assert v6.recvfrom(100)[0] == b"to v6"
        v4.sendto(b"from v4", ("127.0.0.1", ep.port))
        run_until(loop, lambda: got)
        [(data, peer)] = got
        assert data == b"from v4" and peer[0] == "::ffff:127.0.0.1"
        assert ep.send_to(b"reply", peer)  # the address as received, mapped already
        assert v4.recvfrom(100)[0] == b"reply"
    finally:
        v4.close()
        v6.close()
        ep.close()


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
