"""TLS configuration for ``net.tls``: server contexts, what a handshake negotiated, its errors.

Kept apart from the transport so that ``net.tls`` holds only the byte-moving state machine.
``prepare_server_context`` hardens a context in place (no renegotiation, TLS 1.2 at least
unless a minimum was chosen, ALPN when asked); ``server_context`` builds one from PEM files
and fails (``ssl.SSLError``) on a certificate and key that do not match, before anything listens.
"""
import ssl

from .errors import NetError

__all__ = ["OP_NO_RENEGOTIATION", "TlsError", "TlsInfo", "prepare_server_context", "server_context",
           "client_hello_alpn", "ALERT_NO_APPLICATION_PROTOCOL"]

# A fatal no_application_protocol alert (RFC 7301 section 3.2) as a plaintext TLS record: sent
# before the ServerHello, so it needs no keys; TLS 1.2 and 1.3 clients both read it.
ALERT_NO_APPLICATION_PROTOCOL = b"\x15\x03\x03\x00\x02\x02\x78"
_INCOMPLETE = object()

# PyPy's ssl module lacks the name; the bit is OpenSSL's (1.1.0h and later)
OP_NO_RENEGOTIATION = getattr(ssl, "OP_NO_RENEGOTIATION", 0x40000000)


class TlsError(NetError):
    """A TLS handshake failed or timed out (``reason``: OpenSSL's words, or "timeout")."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class TlsInfo:
    """What was negotiated: ``version`` ("TLSv1.3"), ``cipher`` (name), ``alpn`` (or None),
    ``peer_cert`` (``getpeercert()`` dict when the peer's certificate was verified, else
    None), ``peer_cert_der`` (the peer's certificate, DER bytes, or None).

    Read from the ``SSLObject`` on first access (most requests never ask, and a new
    connection should not pay for five calls into OpenSSL it does not need)."""

    __slots__ = ("_sslobj", "_cache")
    _FIELDS = ("version", "cipher", "alpn", "peer_cert", "peer_cert_der")

    def __init__(self, sslobj) -> None:
        self._sslobj = sslobj
        self._cache: dict = {}

    def _get(self, name: str):
        cache = self._cache
        if name not in cache:
            o = self._sslobj
            if name == "version":
                cache[name] = o.version()
            elif name == "cipher":
                c = o.cipher()
                cache[name] = c[0] if c else None
            elif name == "alpn":
                cache[name] = o.selected_alpn_protocol()
            elif name == "peer_cert":
                cache[name] = o.getpeercert() or None
            else:
                cache[name] = o.getpeercert(True)
        return cache[name]

    version = property(lambda self: self._get("version"))
    cipher = property(lambda self: self._get("cipher"))
    alpn = property(lambda self: self._get("alpn"))
    peer_cert = property(lambda self: self._get("peer_cert"))
    peer_cert_der = property(lambda self: self._get("peer_cert_der"))

    def as_dict(self) -> dict:
        return {k: self._get(k) for k in self._FIELDS}

    def __repr__(self) -> str:
        return "<TlsInfo %s %s alpn=%s peer_cert=%s>" % (self.version, self.cipher, self.alpn,
                                                         "yes" if self.peer_cert_der else "no")


def prepare_server_context(ctx: ssl.SSLContext, alpn=None) -> ssl.SSLContext:
    """Harden a server context in place: no renegotiation, TLS 1.2 at least unless a
    minimum was chosen, and ``alpn`` (e.g. ``["http/1.1"]``) when given."""
    ctx.options |= OP_NO_RENEGOTIATION
    if ctx.minimum_version == ssl.TLSVersion.MINIMUM_SUPPORTED:  # not chosen (Python 3.9's default)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
        # remembered so that TlsTransport can refuse a client whose ALPN offer has nothing in
        # common (Python's ssl would go on without ALPN instead of failing the handshake)
        # (a tuple in preference order: the refusal's message lists them so)
        ctx._powpow_alpn = tuple(  # type: ignore[attr-defined]
            a.encode("ascii") if isinstance(a, str) else bytes(a) for a in alpn)
    return ctx


def client_hello_alpn(data: bytes):
    """The ALPN protocols a ClientHello offers: a list of bytes, ``None`` when it offers
    none (or is not a ClientHello we can read: OpenSSL decides then), or ``_INCOMPLETE``
    when ``data`` holds only part of it.  ``data``: the connection's first bytes (TLS
    records, the handshake message possibly split over several)."""
    msg = b""
    i = 0
    n = len(data)
    while True:  # gather the handshake message from its records
        if n - i < 5:
            return _INCOMPLETE
        if data[i] != 0x16:
            return None
        rlen = (data[i + 3] << 8) | data[i + 4]
        if n - i - 5 < rlen:
            msg += data[i + 5:n]
            if len(msg) >= 4 and msg[0] != 1:
                return None
            return _INCOMPLETE
        msg += data[i + 5:i + 5 + rlen]
        i += 5 + rlen
        if len(msg) >= 4:
            if msg[0] != 1:
                return None
            if len(msg) >= 4 + ((msg[1] << 16) | (msg[2] << 8) | msg[3]):
                break
    end = 4 + ((msg[1] << 16) | (msg[2] << 8) | msg[3])
    try:
        p = 4 + 2 + 32
        p += 1 + msg[p]                                # session id
        p += 2 + ((msg[p] << 8) | msg[p + 1])          # cipher suites
        p += 1 + msg[p]                                # compression methods
        if p + 2 > end:
            return None                                # no extensions at all
        ext_end = min(end, p + 2 + ((msg[p] << 8) | msg[p + 1]))
        p += 2
        while p + 4 <= ext_end:
            etype = (msg[p] << 8) | msg[p + 1]
            elen = (msg[p + 2] << 8) | msg[p + 3]
            p += 4
            if etype == 16:                            # application_layer_protocol_negotiation
                q = p + 2
                stop = min(p + elen, p + 2 + ((msg[p] << 8) | msg[p + 1]))
                out = []
                while q < stop:
                    ln = msg[q]
                    out.append(bytes(msg[q + 1:q + 1 + ln]))
                    q += 1 + ln
                return out
            p += elen
    except IndexError:
        return None
    return None


HTTP_ALPN = ("http/1.1", "http/1.0")  # HTTP/1.0 is served too: `curl --http1.0` offers only it


def server_context(certfile, keyfile=None, ca_certs=None, require_client_cert: bool = True,
                   alpn=HTTP_ALPN) -> ssl.SSLContext:
    """A server context from PEM files; ``ca_certs`` turns on client certificates (mTLS:
    required unless ``require_client_cert=False``).  A certificate and key that do not
    match raise ``ssl.SSLError`` here, before anything listens."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    if ca_certs:
        ctx.load_verify_locations(ca_certs)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return prepare_server_context(ctx, alpn)
