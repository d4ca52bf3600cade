"""TLS configuration for ``net.tls``: server contexts, what a handshake negotiated, its errors.

Kept apart from the transport so that ``net.tls`` holds only the byte-moving state machine.
``prepare_server_context`` hardens a context in place (no renegotiation, TLS 1.2 at least
unless a minimum was chosen, ALPN when asked); ``server_context`` builds one from PEM files
and fails (``ssl.SSLError``) on a certificate and key that do not match, before anything listens.
"""
import ssl

from .errors import NetError

__all__ = ["OP_NO_RENEGOTIATION", "TlsError", "TlsInfo", "prepare_server_context", "server_context"]

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
    None), ``peer_cert_der`` (the peer's certificate, DER bytes, or None)."""

    __slots__ = ("version", "cipher", "alpn", "peer_cert", "peer_cert_der")

    def __init__(self, sslobj) -> None:
        self.version = sslobj.version()
        c = sslobj.cipher()
        self.cipher = c[0] if c else None
        self.alpn = sslobj.selected_alpn_protocol()
        self.peer_cert = sslobj.getpeercert() or None
        self.peer_cert_der = sslobj.getpeercert(True)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}

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
    return ctx


def server_context(certfile, keyfile=None, ca_certs=None, require_client_cert: bool = True,
                   alpn=("http/1.1",)) -> ssl.SSLContext:
    """A server context from PEM files; ``ca_certs`` turns on client certificates (mTLS:
    required unless ``require_client_cert=False``).  A certificate and key that do not
    match raise ``ssl.SSLError`` here, before anything listens."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    if ca_certs:
        ctx.load_verify_locations(ca_certs)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return prepare_server_context(ctx, alpn)
