"""Addresses: literal detection, passive resolution for bind, Happy Eyeballs ordering, unix paths.

Invariants:
* Nothing here resolves a name on the loop thread except ``resolve_passive``,
  used by ``listen()``/``bind_udp()`` at setup time (a bind address is local;
  a numeric host never touches the resolver: ``AI_NUMERICHOST`` is tried first).
* ``interleave`` orders addresses as RFC 8305 section 4 says: first family
  first (IPv6 when the resolver gave it first), then alternating, so one
  broken family costs at most one stagger delay.
* Ports are checked before the resolver sees them (``check_port``): glibc's
  ``getaddrinfo`` reduces a numeric service modulo 65536, so port 70000 would
  quietly become 4464 where ``socket.bind`` alone raises OverflowError.
* ``prepare_unix_path`` removes a *stale* socket file only -- one nobody is
  listening on (connect gets ECONNREFUSED) -- never a live socket or a regular
  file, and rejects paths longer than ``sun_path`` with a message saying so.
"""
import errno
import os
import socket
import stat
from typing import List, Optional, Tuple, Union

MAX_PORT = 65535

# sun_path is 108 bytes on Linux (104 on BSD/macOS), including the NUL.
UNIX_PATH_MAX = 107 if os.uname().sysname == "Linux" else 103


def literal_family(host: str) -> Optional[int]:
    """AF_INET / AF_INET6 if ``host`` is a numeric address, else None."""
    h = host
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, h.split("%", 1)[0])
            return fam
        except (OSError, ValueError):
            pass
    return None


def strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def check_port(port: Union[int, str, bytes, None]) -> None:
    """ValueError naming ``port`` unless it is 0-65535 (or None: the resolver's port 0).

    A decimal string is checked too (getaddrinfo wraps it the same way); any
    other string is a service name ("http"), left to the resolver."""
    value = port
    if isinstance(port, (str, bytes)):
        try:
            value = int(port)
        except ValueError:
            return
    if isinstance(value, int) and not 0 <= value <= MAX_PORT:
        raise ValueError("port must be 0-%d, got %r" % (MAX_PORT, port))


def resolve_passive(host: Optional[str], port: int, socktype: int) -> Tuple[int, tuple]:
    """(family, sockaddr) to bind to.  ``host`` None or "" means dual-stack any ("::")."""
    if host is not None and not isinstance(host, str):
        swapped = isinstance(port, str) and isinstance(host, int)
        raise TypeError("host must be a str, got %s %r%s" % (
            type(host).__name__, host,
            " (the port comes first: listen(port, host))" if swapped else ""))
    check_port(port)
    if host is None or host == "":
        host = "::" if socket.has_ipv6 else "0.0.0.0"
    host = strip_brackets(host)
    flags = socket.AI_PASSIVE
    query: Union[str, bytes] = host
    if literal_family(host) is not None:
        flags |= socket.AI_NUMERICHOST
        # a str host goes through the "idna" codec, whose first use imports encodings.idna,
        # stringprep and unicodedata (~10 ms of a server's start); a numeric one is plain ASCII
        query = host.encode("ascii")
    try:
        infos = socket.getaddrinfo(query, port, socket.AF_UNSPEC, socktype, 0, flags)
    except socket.gaierror as exc:  # the bare "Name or service not known" does not say which name
        raise socket.gaierror(exc.errno, "cannot resolve %r to bind to: %s" % (host, exc.strerror)) from None
    fam, _, _, _, sa = infos[0]
    return fam, sa


def interleave(infos: List[tuple]) -> List[tuple]:
    """RFC 8305 ordering of getaddrinfo results: alternate families, the first one first."""
    seen = set()
    uniq = []
    for info in infos:
        key = (info[0], info[4][:2])
        if key not in seen:
            seen.add(key)
            uniq.append(info)
    if not uniq:
        return uniq
    first_fam = socket.AF_INET6 if any(i[0] == socket.AF_INET6 for i in uniq) else uniq[0][0]
    a = [i for i in uniq if i[0] == first_fam]
    b = [i for i in uniq if i[0] != first_fam]
    out = []
    for i in range(max(len(a), len(b))):
        if i < len(a):
            out.append(a[i])
        if i < len(b):
            out.append(b[i])
    return out


def format_addr(family: int, sa) -> str:
    if family == socket.AF_INET6:
        return "[%s]:%d" % (sa[0], sa[1])
    if family == socket.AF_INET:
        return "%s:%d" % (sa[0], sa[1])
    if isinstance(sa, bytes):
        sa = sa.decode("utf-8", "replace")
    return "unix:%s" % (sa or "<unnamed>",)


def client_ip(family: int, sa) -> Optional[str]:
    """The peer's IP as a string; IPv4-mapped IPv6 (dual-stack) unmapped to dotted IPv4."""
    if family == socket.AF_INET:
        return sa[0]
    if family == socket.AF_INET6:
        ip = sa[0]
        if ip.startswith("::ffff:") and "." in ip:
            return ip[7:]
        return ip
    return None


def check_unix_path(path) -> str:
    p = os.fspath(path)
    n = len(os.fsencode(p))
    # An abstract name (leading NUL) needs no terminating NUL: it may fill all of sun_path.
    limit = UNIX_PATH_MAX + 1 if is_abstract(p) else UNIX_PATH_MAX
    if n > limit:
        raise ValueError("unix socket path is too long: %d bytes (the limit is %d): %r" % (n, limit, p))
    if n == 0:
        raise ValueError("unix socket path is empty")
    return p


def is_abstract(p) -> bool:
    """A Linux abstract-namespace name (a leading NUL): no file, nothing to stat, chmod or unlink."""
    return p[:1] in ("\0", b"\0")


def prepare_unix_path(path) -> str:
    """Check ``path`` and remove a stale socket file there; raise if a live server owns it."""
    p = check_unix_path(path)
    if is_abstract(p):
        return p  # the kernel refuses a name in use (EADDRINUSE); there is no stale file
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return p
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "%r exists and is not a socket; refusing to remove it" % p)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(p)
    except ConnectionRefusedError:
        os.unlink(p)  # stale: nobody accepts there any more
        return p
    except FileNotFoundError:
        return p
    except OSError as exc:
        raise OSError(exc.errno, "cannot tell whether unix socket %r is live: %s" % (p, exc.strerror)) from None
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "unix socket %r is in use by a live server" % p)
