"""powpow.http.forwarded.ProxyTrust: which address is the client's (issue 8 item 17).

Case tables: the trusted set, the peer, the header lines -> the client address."""
import pytest

from powpow.http.parser import RequestParser
from powpow.http.forwarded import ProxyTrust, forwarded_for_values, parse_node


class H:
    """headers with get_all, as Request.headers has them"""

    def __init__(self, *pairs):
        self.pairs = pairs

    def get_all(self, name):
        return [v for k, v in self.pairs if k.lower() == name]

    def get(self, name, default=None):
        vs = self.get_all(name)
        return vs[0] if vs else default


XFF = "X-Forwarded-For"
FWD = "Forwarded"
PROXY = ("127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8")

CASES = [
    # (trusted, peer, is_unix, header pairs, expected, why)
    (PROXY, "203.0.113.9", False, [(XFF, "1.2.3.4")], "203.0.113.9", "untrusted peer: its headers are ignored"),
    (PROXY, "127.0.0.1", False, [], "127.0.0.1", "trusted peer without headers is the client"),
    (PROXY, "127.0.0.1", False, [(XFF, "198.51.100.7")], "198.51.100.7", "one hop"),
    (PROXY, "127.0.0.1", False, [(XFF, "6.6.6.6"), (XFF, "198.51.100.7")], "198.51.100.7",
     "a client's forged first line does not win over the line the proxy appended"),
    (PROXY, "127.0.0.1", False, [(XFF, "6.6.6.6, 198.51.100.7")], "198.51.100.7",
     "forged hop in the same line: the rightmost untrusted hop wins"),
    (PROXY, "127.0.0.1", False, [(XFF, "198.51.100.7, 10.1.2.3, 127.0.0.1")], "198.51.100.7",
     "trusted hops (networks too) are skipped"),
    (PROXY, "127.0.0.1", False, [(XFF, "10.0.0.2, 10.0.0.1")], "10.0.0.2",
     "every hop trusted: the leftmost one"),
    (PROXY, "127.0.0.1", False, [(XFF, "<script>")], "127.0.0.1", "garbage never becomes the client ip"),
    (PROXY, "127.0.0.1", False, [(XFF, "198.51.100.7, <script>, 10.0.0.1")], "10.0.0.1",
     "garbage stops the walk: the last valid address seen"),
    (PROXY, "127.0.0.1", False, [(XFF, "unknown")], "127.0.0.1", "unknown stops the walk"),
    (PROXY, "127.0.0.1", False, [(XFF, "1.2.3.4:80")], "1.2.3.4", "IPv4 with a port"),
    (PROXY, "127.0.0.1", False, [(XFF, "[2001:db8::1]:123")], "2001:db8::1", "bracketed IPv6 with a port"),
    (PROXY, "127.0.0.1", False, [(XFF, "[2001:db8::1]")], "2001:db8::1", "bracketed IPv6"),
    (PROXY, "127.0.0.1", False, [(XFF, "2001:DB8:0::1")], "2001:db8::1", "bare IPv6, normalised"),
    (PROXY, "127.0.0.1", False, [(XFF, "::ffff:198.51.100.7")], "198.51.100.7", "IPv4-mapped IPv6"),
    (PROXY, "127.0.0.1", False, [(XFF, "fe80::1%eth0")], "fe80::1", "zone dropped"),
    (PROXY, "127.0.0.1", False, [(XFF, "1.2.3.4:99999999")], "127.0.0.1", "bad port: not an address"),
    (PROXY, "127.0.0.1", False, [(XFF, "1.2.3")], "127.0.0.1", "not an IPv4 address"),
    (PROXY, "127.0.0.1", False, [(XFF, "[1.2.3.4]")], "127.0.0.1", "brackets hold IPv6 only"),
    (PROXY, "127.0.0.1", False, [(XFF, " 198.51.100.7 ,, ")], "198.51.100.7", "empty elements skipped"),
    (PROXY, "::1", False, [(XFF, "198.51.100.7")], "198.51.100.7", "trusted IPv6 peer"),
    (PROXY, "::ffff:127.0.0.1", False, [(XFF, "198.51.100.7")], "198.51.100.7", "IPv4-mapped peer"),
    (PROXY, "fd12::5", False, [(XFF, "198.51.100.7")], "198.51.100.7", "IPv6 network"),
    (PROXY, "11.0.0.1", False, [(XFF, "198.51.100.7")], "11.0.0.1", "outside the network"),
    # unix sockets
    (PROXY, None, True, [(XFF, "198.51.100.7")], None, "unix peer, unix not trusted"),
    (PROXY + ("unix",), None, True, [(XFF, "198.51.100.7")], "198.51.100.7", "unix trusted"),
    (PROXY + ("unix",), None, True, [], None, "unix trusted, no header"),
    (("unix",), "127.0.0.1", False, [(XFF, "198.51.100.7")], "127.0.0.1", "only unix trusted: TCP peer is not"),
    # RFC 7239 Forwarded
    (PROXY, "127.0.0.1", False, [(FWD, "for=198.51.100.7")], "198.51.100.7", "Forwarded for="),
    (PROXY, "127.0.0.1", False, [(FWD, 'for="[2001:db8:cafe::17]:4711"')], "2001:db8:cafe::17",
     "quoted IPv6 with port (RFC 7239 example)"),
    (PROXY, "127.0.0.1", False, [(FWD, "For=192.0.2.43, for=198.51.100.17;proto=https;by=10.0.0.1")],
     "198.51.100.17", "several elements, parameters, case-insensitive name"),
    (PROXY, "127.0.0.1", False, [(FWD, "for=6.6.6.6"), (FWD, "for=198.51.100.7")], "198.51.100.7",
     "Forwarded: every line, rightmost wins"),
    (PROXY, "127.0.0.1", False, [(FWD, "for=198.51.100.7, for=10.0.0.3")], "198.51.100.7",
     "Forwarded: trusted hops skipped"),
    (PROXY, "127.0.0.1", False, [(FWD, "for=198.51.100.7, for=unknown")], "127.0.0.1", "unknown stops the walk"),
    (PROXY, "127.0.0.1", False, [(FWD, "for=198.51.100.7, for=_hidden, for=10.0.0.1")], "10.0.0.1",
     "obfuscated identifier stops the walk"),
    (PROXY, "127.0.0.1", False, [(FWD, "for=198.51.100.7, proto=https")], "127.0.0.1",
     "element without for= stops the walk"),
    (PROXY, "127.0.0.1", False, [(FWD, 'for="198.51.100.7, 6.6.6.6"')], "127.0.0.1",
     "comma inside a quoted string is not a separator (and not an address)"),
    (PROXY, "127.0.0.1", False, [(FWD, 'for="198.51.100.7')], "127.0.0.1", "unterminated quote"),
    (PROXY, "127.0.0.1", False, [(FWD, "for=<script>")], "127.0.0.1", "garbage token"),
    (PROXY, "127.0.0.1", False, [(FWD, "for=198.51.100.7;for=6.6.6.6")], "127.0.0.1", "for twice in one element"),
    (PROXY, "127.0.0.1", False, [(FWD, "for=198.51.100.7"), (XFF, "6.6.6.6")], "198.51.100.7",
     "auto: Forwarded preferred when present"),
    (PROXY, "127.0.0.1", False, [(FWD, ""), (XFF, "198.51.100.7")], "198.51.100.7",
     "auto: an empty Forwarded counts as absent"),
]


@pytest.mark.parametrize("trusted,peer,is_unix,pairs,expected,why", CASES, ids=[c[5] for c in CASES])
def test_client_ip(trusted, peer, is_unix, pairs, expected, why):
    assert ProxyTrust(trusted).client_ip(peer, is_unix, H(*pairs)) == expected


def test_header_mode_pins_one_header():
    h = H((FWD, "for=6.6.6.6"), (XFF, "198.51.100.7"))
    assert ProxyTrust(PROXY, header="x-forwarded-for").client_ip("127.0.0.1", False, h) == "198.51.100.7"
    assert ProxyTrust(PROXY, header="forwarded").client_ip("127.0.0.1", False, h) == "6.6.6.6"
    assert ProxyTrust(PROXY, header="forwarded").client_ip("127.0.0.1", False, H((XFF, "1.2.3.4"))) == "127.0.0.1"
    with pytest.raises(ValueError):
        ProxyTrust(PROXY, header="x-real-ip")


def test_real_headers_object_and_plain_mapping():
    [req] = RequestParser().feed(b"GET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\nHost: x\r\n"
                                 b"x-forwarded-for: 198.51.100.7\r\n\r\n")
    assert ProxyTrust(PROXY).client_ip("127.0.0.1", False, req.headers) == "198.51.100.7"
    # a mapping without get_all: its one value
    assert ProxyTrust(PROXY).client_ip("127.0.0.1", False, {"x-forwarded-for": "198.51.100.7"}) == "198.51.100.7"


@pytest.mark.parametrize("ip,is_unix,expected", [
    ("127.0.0.1", False, True), ("127.0.0.2", False, False), ("10.255.0.1", False, True),
    ("::1", False, True), ("fdff::1", False, True), ("fe80::1", False, False),
    ("::ffff:10.0.0.1", False, True), (None, False, False), ("", False, False),
    ("not-an-ip", False, False), (None, True, False), ("/tmp/sock", True, False),
])
def test_trusts(ip, is_unix, expected):
    assert ProxyTrust(PROXY).trusts(ip, is_unix) is expected
    assert ProxyTrust(PROXY + ("unix",)).trusts(ip, is_unix) is (True if is_unix else expected)


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.0/33", "1.2.3.4.5", "", "unix-socket", 5])
def test_bad_configuration_raises(entry):
    with pytest.raises(ValueError):
        ProxyTrust([entry])


def test_configuration_forms():
    t = ProxyTrust(["10.0.0.1/8", " 192.168.1.1 ", "UNIX", "::ffff:172.16.0.0/108"])
    assert t.trust_unix and bool(t)
    assert t.trusts("10.9.9.9") and t.trusts("192.168.1.1") and t.trusts("172.16.5.5")
    assert not t.trusts("192.168.1.2")
    assert not ProxyTrust(()) and ProxyTrust(()).client_ip("1.2.3.4", False, H((XFF, "5.6.7.8"))) == "1.2.3.4"
    assert ProxyTrust("127.0.0.1").trusts("127.0.0.1")  # one string is one entry
    assert "unix" in repr(t)


@pytest.mark.parametrize("node,expected", [
    ("192.0.2.43", "192.0.2.43"), ("192.0.2.43:47011", "192.0.2.43"), ("192.0.2.43:_abc", "192.0.2.43"),
    ("[2001:db8:cafe::17]", "2001:db8:cafe::17"), ("[2001:db8:cafe::17]:4711", "2001:db8:cafe::17"),
    ("unknown", None), ("_hidden", None), ("[::1", None), ("[::1]x", None), ("[::1]:", None),
    ("192.0.2.43:", None), ("192.0.2.43:_", None), ("", None), ("a" * 100, None),
    ("[::ffff:1.2.3.4]", "1.2.3.4"),
])
def test_parse_node(node, expected):
    ip = parse_node(node)
    assert (None if ip is None else str(ip)) == expected


def test_forwarded_for_values():
    assert forwarded_for_values(['for=a;proto=http, for="[::1]:8"', "by=x", 'for="\\"q"']) == [
        "a", "[::1]:8", None, '"q']


def test_a_huge_header_costs_bounded_work():
    hops = ", ".join(["10.0.0.1"] * 5000)
    assert ProxyTrust(PROXY).client_ip("127.0.0.1", False, H((XFF, "198.51.100.7, " + hops))) == "10.0.0.1"
