"""Which address is the client's, behind reverse proxies we trust.

``ProxyTrust(trusted)`` holds the proxies whose forwarding headers are believed:
IP addresses (``"127.0.0.1"``, ``"::1"``), CIDR networks (``"10.0.0.0/8"``,
``"fd00::/8"``) and the word ``"unix"`` (peers on a unix socket: a proxy on the
same host).  An invalid entry raises ``ValueError`` at construction.

``client_ip(peer_ip, is_unix, headers)``:

* A peer we do not trust: its own address, whatever it sends.
* A trusted peer: the hops its headers list, walked **from the right** (the hop
  the nearest proxy appended comes last): trusted hops are skipped, the first
  untrusted valid address is the client.  Everything left of it was written by
  the client or by proxies we do not know, so it is never read.
* Which header (``header=`` argument): ``"auto"`` (the default) reads RFC 7239
  ``Forwarded`` when the request has one and ``X-Forwarded-For`` otherwise;
  ``"forwarded"`` or ``"x-forwarded-for"`` read only that one.  Every field line
  of the header counts, in order, each a comma list (a client's forged line
  comes *before* the one its proxy appends, so it is never the rightmost).
  Caution: "auto" believes a ``Forwarded`` header that a proxy passes through
  untouched.  Behind a proxy that only appends ``X-Forwarded-For`` (nginx's
  ``$proxy_add_x_forwarded_for``, most load balancers), pin
  ``header="x-forwarded-for"`` -- or make the proxy drop ``Forwarded``.
* Hops are validated: a node must be an IPv4 address, an IPv6 address (bare,
  or in brackets as RFC 7239 writes it), optionally with a ``:port``
  (``"1.2.3.4:80"``, ``"[::1]:123"``).  IPv4-mapped IPv6 addresses count as
  their IPv4 address; a zone (``%eth0``) is dropped.  A hop that is not an
  address (``unknown``, an RFC 7239 obfuscated identifier ``_hidden``,
  ``<script>``, a ``Forwarded`` element without ``for=``, a syntax error) ends
  the walk: the answer is then the last valid address seen (the nearest
  trusted hop, or the peer itself), never the garbage.  Empty list elements
  are skipped.

Addresses come back normalised by ``ipaddress`` (``str(ip_address(x))``).
"""
import os
from typing import Dict, Iterable, List, Optional, Tuple, Union

# ipaddress is imported where it is used: the server imports this module, and
# most servers trust no proxy (then no address is ever parsed here).
TYPE_CHECKING = False  # mypy treats this name as True
if TYPE_CHECKING:
    import ipaddress

__all__ = ["ProxyTrust", "parse_node", "forwarded_for_values"]

_Address = Union["ipaddress.IPv4Address", "ipaddress.IPv6Address"]
_Network = Union["ipaddress.IPv4Network", "ipaddress.IPv6Network"]

_HEADER_MODES = ("auto", "forwarded", "x-forwarded-for")
_CACHE_MAX = 1024
_MAX_HOPS = 64  # a hostile header with thousands of hops costs at most this many parses
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _address(text: str) -> Optional[_Address]:
    """An IP address from ``text`` (no port, no brackets), or None."""
    if not text or len(text) > 64:
        return None
    if "%" in text:  # IPv6 zone: not part of the address we compare or report
        text = text.split("%", 1)[0]
        if ":" not in text:
            return None
    import ipaddress

    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _port_ok(port: str) -> bool:
    # RFC 7239 node-port = port / obfport; obfport = "_" 1*(ALPHA / DIGIT / "." / "_" / "-")
    if port.isascii() and port.isdigit():
        return len(port) <= 5
    return len(port) > 1 and port[0] == "_" and all(c.isalnum() or c in "._-" for c in port[1:])


def parse_node(node: str) -> Optional[_Address]:
    """RFC 7239 node (or an X-Forwarded-For hop) -> its IP address, or None.

    ``1.2.3.4``, ``1.2.3.4:80``, ``[2001:db8::1]``, ``[2001:db8::1]:443`` and the
    bare ``2001:db8::1`` of X-Forwarded-For are addresses; ``unknown``,
    obfuscated identifiers and anything else are not."""
    node = node.strip(" \t")
    if node[:1] == "[":
        end = node.find("]")
        if end < 0:
            return None
        rest = node[end + 1:]
        if rest and not (rest[0] == ":" and _port_ok(rest[1:])):
            return None
        inner = node[1:end]
        return _address(inner) if ":" in inner else None  # brackets hold IPv6 only
    colons = node.count(":")
    if colons == 1:  # IPv4 with a port
        host, _, port = node.partition(":")
        if not _port_ok(port):
            return None
        ip = _address(host)
        return ip if ip is not None and ip.version == 4 else None
    return _address(node)


def _split_quoted(value: str, sep: str) -> Optional[List[str]]:
    """Split on ``sep`` outside quoted strings; None on an unterminated quote."""
    out = []
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == '"':
            i += 1
            while i < n and value[i] != '"':
                i += 2 if value[i] == "\\" else 1
            if i >= n:
                return None
        elif c == sep:
            out.append(value[start:i])
            start = i + 1
        i += 1
    out.append(value[start:])
    return out


def _unquote(value: str) -> Optional[str]:
    """RFC 9110 token or quoted-string -> its text; None if it is neither."""
    if value[:1] == '"':
        if len(value) < 2 or value[-1] != '"':
            return None
        body = value[1:-1]
        out = []
        i = 0
        while i < len(body):
            c = body[i]
            if c == "\\":
                i += 1
                if i >= len(body):
                    return None
                c = body[i]
            elif c == '"':
                return None
            out.append(c)
            i += 1
        return "".join(out)
    if not value or any(c not in _TCHAR for c in value):
        return None
    return value


def forwarded_for_values(lines: Iterable[str]) -> List[Optional[str]]:
    """The ``for=`` value of each element of RFC 7239 ``Forwarded`` field lines, in
    order; None for an element without ``for=`` or that does not parse.  Empty
    elements are skipped.  A line that does not split (an open quote) is one
    None."""
    out: List[Optional[str]] = []
    for line in lines:
        elements = _split_quoted(line, ",")
        if elements is None:
            out.append(None)
            continue
        for element in elements:
            if not element.strip(" \t"):
                continue
            pairs = _split_quoted(element, ";")
            found: Optional[str] = None
            bad = pairs is None
            for pair in pairs or ():
                pair = pair.strip(" \t")
                if not pair:
                    continue
                name, eq, value = pair.partition("=")
                if not eq or not name or any(c not in _TCHAR for c in name):
                    bad = True
                    break
                text = _unquote(value)
                if text is None:
                    bad = True
                    break
                if name.lower() == "for":
                    if found is not None:  # "for" twice in one element: ambiguous
                        bad = True
                        break
                    found = text
            out.append(None if bad else found)
    return out


def _all(headers, name: str) -> List[str]:
    get_all = getattr(headers, "get_all", None)
    if get_all is not None:
        return list(get_all(name))
    value = headers.get(name)
    return [] if value is None else [value]


class ProxyTrust:
    """The proxies whose forwarding headers are believed (see the module docstring)."""

    __slots__ = ("trust_unix", "networks", "_exact", "_nets", "header", "_cache")

    def __init__(self, trusted: Iterable[str] = (), header: str = "auto") -> None:
        if isinstance(trusted, str):
            trusted = (trusted,)
        if header not in _HEADER_MODES:
            raise ValueError("header must be one of %s, not %r" % (", ".join(_HEADER_MODES), header))
        self.header = header
        self.trust_unix = False
        import ipaddress

        networks: List[_Network] = []
        for entry in trusted:
            if not isinstance(entry, str):
                raise ValueError("trusted proxies are strings, not %r" % (entry,))
            text = entry.strip()
            if text.lower() == "unix":
                self.trust_unix = True
                continue
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError("not an IP address, network or 'unix': %r" % (entry,)) from None
            mapped = net.network_address.ipv4_mapped if isinstance(net, ipaddress.IPv6Network) else None
            if mapped is not None and net.prefixlen >= 96:
                # ::ffff:a.b.c.d/n is the IPv4 network a.b.c.d/(n-96): peers are normalised
                net = ipaddress.ip_network("%s/%d" % (mapped, net.prefixlen - 96), strict=False)
            networks.append(net)
        self.networks: Tuple[_Network, ...] = tuple(networks)
        self._exact = frozenset(n.network_address for n in networks
                                if n.prefixlen == n.max_prefixlen)
        self._nets = tuple(n for n in networks if n.prefixlen != n.max_prefixlen)
        self._cache: Dict[str, bool] = {}

    def __bool__(self) -> bool:
        return self.trust_unix or bool(self.networks)

    def _trusted_address(self, ip: _Address) -> bool:
        if ip in self._exact:
            return True
        for net in self._nets:
            if ip.version == net.version and ip in net:
                return True
        return False

    def trusts(self, ip: Optional[str], is_unix: bool = False) -> bool:
        """Is a peer at ``ip`` (or on a unix socket) one of our proxies?"""
        if is_unix:
            return self.trust_unix
        if not ip or not self.networks:
            return False
        cache = self._cache
        hit = cache.get(ip)
        if hit is None:
            addr = _address(ip)
            hit = addr is not None and self._trusted_address(addr)
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[ip] = hit
        return hit

    def client_ip(self, peer_ip: Optional[str], is_unix: bool, headers) -> Optional[str]:
        """The client's address: ``peer_ip`` unless the peer is trusted and its
        headers name another (``headers.get_all(name)``, or ``.get``)."""
        if not self.trusts(peer_ip, is_unix):
            return peer_ip
        hops: List[Optional[str]]
        mode = self.header
        hops = []
        if mode != "x-forwarded-for":
            hops = forwarded_for_values(_all(headers, "forwarded"))
        if not hops and mode != "forwarded":
            for line in _all(headers, "x-forwarded-for"):
                hops.extend(h for h in (x.strip(" \t") for x in line.split(",")) if h)
        last = peer_ip
        for n, hop in enumerate(reversed(hops)):
            if hop is None or n >= _MAX_HOPS:
                break
            addr = parse_node(hop)
            if addr is None:
                break
            if not self._trusted_address(addr):
                return str(addr)
            last = str(addr)
        return last

    def __repr__(self) -> str:
        items = [str(n) for n in self.networks] + (["unix"] if self.trust_unix else [])
        return "ProxyTrust(%r%s)" % (items, "" if self.header == "auto" else ", header=%r" % self.header)


def app_server_trust(proxy_headers: bool, forwarded_allow_ips, uds) -> Optional["ProxyTrust"]:
    """The ASGI and WSGI servers' trust, uvicorn's options: ``proxy_headers`` on, the peers
    in ``forwarded_allow_ips`` (a comma list or a sequence; None: the environment's
    ``FORWARDED_ALLOW_IPS``, else ``127.0.0.1``; ``*``: everyone, unix peers included)
    send ``X-Forwarded-For``/``-Proto`` we believe.  Serving on a unix socket (``uds``)
    trusts its peers too: a proxy in front of a unix socket is on this host."""
    if not proxy_headers:
        return None
    if forwarded_allow_ips is None:
        forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
    if isinstance(forwarded_allow_ips, str):
        items = [x.strip() for x in forwarded_allow_ips.split(",") if x.strip()]
    else:
        items = [str(x).strip() for x in forwarded_allow_ips]
    if "*" in items:
        items = ["0.0.0.0/0", "::/0", "unix"]
    elif uds is not None:
        items.append("unix")
    return ProxyTrust(items, header="x-forwarded-for") if items else None
