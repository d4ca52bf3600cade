"""WebSocket clients: ``connect`` on the loop, ``connect_sync`` for scripts and tests.

``connect(loop, "ws://host:port/path", on_open=..., on_message=..., on_close=...,
on_error=..., headers=None, subprotocols=(), compression="deflate", open_timeout=10.0,
**options)`` opens TCP with ``powpow.connect``, sends the handshake, reads the
101 with ``handshake.parse_response`` (strict), checks the accept key, the
subprotocol and the extensions against what we offered (a redirect is
refused with a clear error), then runs the same ``WebSocket`` as the server
in the client role: every frame masked with a fresh key taken from one
``os.urandom`` batch.  Failures before the 101 go to ``on_error(exc)``
(a ``WsHandshakeError`` or ``ConnectError``), never to ``on_close``.

``connect_sync(url)`` is a blocking client on a plain socket and the same
sans-I/O ``Protocol``: ``send``, ``recv(timeout)``, ``ping``, ``close``.
"""
import base64
import logging
import socket
import time
from typing import Callable, Optional, Tuple
from urllib.parse import quote, unquote, urlsplit

from .. import net
from . import deflate as _deflate
from .connection import Handlers, WebSocket, WsOptions
from .errors import WsClosed, WsHandshakeError
from .handshake import check_response, client_request, new_key, parse_response
from .protocol import CLOSE, MESSAGE, PING, Protocol

log = logging.getLogger("powpow.ws")


# kept as they are in the resource: RFC 3986's reserved characters and '%' (an escape
# already made); anything else outside unreserved ASCII is percent-encoded from UTF-8
_URL_SAFE = "!$%&'()*+,/:;=?@[]~"


def parse_url(url: str) -> Tuple[str, int, str, str, Optional[str]]:
    """``ws[s]://[user:password@]host:port/path?q`` -> (host, port, resource, Host header,
    Authorization or None).

    The resource is sent percent-encoded (``/päth`` as ``/p%C3%A4th``; escapes already
    in the URL are kept), an international host name goes into Host as IDNA, and
    credentials in the URL become ``Authorization: Basic`` (RFC 7617), as browsers and
    the ``websockets`` client do."""
    u = urlsplit(url)
    if u.scheme not in ("ws", "wss") or not u.hostname:
        raise ValueError("not a ws:// or wss:// URL: %r" % url)
    port = u.port or (443 if u.scheme == "wss" else 80)
    path = quote(u.path or "/", safe=_URL_SAFE) + ("?" + quote(u.query, safe=_URL_SAFE) if u.query else "")
    host_header = u.netloc.rpartition("@")[2]
    if not host_header.isascii():
        try:
            name = u.hostname.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError("host name %r cannot be encoded (IDNA): %s" % (u.hostname, exc)) from None
        host_header = name if u.port is None else "%s:%d" % (name, u.port)
    auth = None
    if u.username is not None:
        cred = "%s:%s" % (unquote(u.username), unquote(u.password or ""))
        auth = "Basic " + base64.b64encode(cred.encode("utf-8")).decode("ascii")
    return u.hostname, port, path, host_header, auth


def _tls_context(url: str, ssl_ctx):
    """The client TLS context for ``url``: None for ws://; for wss:// the caller's
    context, or ``ssl.create_default_context()`` (certificate and host name verified)."""
    if urlsplit(url).scheme != "wss":
        if ssl_ctx not in (None, False):
            raise ValueError("ssl= given for a ws:// URL (use wss://): %r" % url)
        return None
    if ssl_ctx is False:
        raise ValueError("wss:// needs TLS: ssl=False contradicts the URL %r" % url)
    if ssl_ctx is None or ssl_ctx is True:
        import ssl as _ssl
        return _ssl.create_default_context()
    return ssl_ctx


class _Opening:
    """The client side before the 101: buffer the response head, then hand over to a WebSocket."""

    def __init__(self, loop, url, handlers: Handlers, on_error, headers, subprotocols, options: WsOptions,
                 open_timeout: float, ssl_ctx=None) -> None:
        self.loop = loop
        self.handlers = handlers
        self.on_error = on_error
        self.subprotocols = list(subprotocols or ())
        self.options = options
        self.dopts = _deflate.options_from(options.compression, options.shared_compressor)
        host, port, path, host_header, auth = parse_url(url)
        self.key = new_key()
        # built now: a bad header raises at connect(), not inside a loop callback
        self.request = client_request(host_header, path, self.key, headers, self.subprotocols,
                                      _deflate.client_offer(self.dopts) if self.dopts is not None else None, auth)
        self.buf = b""
        self.conn = None
        self.ws: Optional[WebSocket] = None
        self.failed = False
        self.open_timeout = open_timeout
        self.timer = loop.add_timer(int(open_timeout * 1000), self._timeout)
        tls = _tls_context(url, ssl_ctx)
        extra = {} if tls is None else {"ssl": tls, "server_hostname": host,
                                        "handshake_timeout": open_timeout}
        self.connector = net.connect(loop, host, port, on_connect=self._on_connect, on_data=self._on_data,
                                     on_close=self._on_close, on_error=self._on_connect_error,
                                     timeout_ms=int(open_timeout * 1000), **extra)

    def _fail(self, exc: BaseException) -> None:
        if self.failed or self.ws is not None:
            return
        self.failed = True
        self.loop.cancel_timer(self.timer)
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        else:
            self.connector.cancel()
        if self.on_error is not None:
            self.on_error(exc)
        else:
            log.warning("WebSocket connection failed: %s", exc)

    def _timeout(self) -> None:
        self._fail(WsHandshakeError("opening handshake timed out after %g s" % self.open_timeout))

    def _on_connect_error(self, exc) -> None:
        self._fail(exc)

    def _on_connect(self, conn) -> None:
        if self.failed:  # (the connector is cancelled on failure: not expected, but never leak)
            conn.close()
            return
        self.conn = conn
        conn.write(self.request)

    def _on_close(self, conn, exc) -> None:
        if self.ws is None:
            self._fail(WsHandshakeError("connection closed before the 101 (%s)" % (exc or "EOF")))

    def _on_data(self, conn, data) -> None:
        if self.failed:
            return
        self.buf += bytes(data)
        try:
            got = parse_response(self.buf)
            if got is None:
                return
            resp, n = got
            chosen = check_response(resp, self.key, self.subprotocols)
            codec = _deflate.client_accept(resp.headers.get("sec-websocket-extensions", []), self.dopts)
        except WsHandshakeError as exc:
            self._fail(exc)
            return
        self.loop.cancel_timer(self.timer)
        o = self.options
        if codec is not None and self.dopts is not None and self.dopts.shared:
            codec.use_shared(self.loop)
        proto = Protocol(True, o.max_message_size, o.max_frame_size, o.max_fragments, codec)
        ws = self.ws = WebSocket(conn, proto, self.handlers, o, request=resp, subprotocol=chosen)
        ws._call(self.handlers.on_open)
        rest = self.buf[n:]
        self.buf = b""
        if rest and not ws.closed:
            ws._on_data(conn, memoryview(rest))


def connect(loop, url: str, on_open: Optional[Callable] = None, on_message: Optional[Callable] = None,
            on_close: Optional[Callable] = None, on_error: Optional[Callable] = None,
            on_ping: Optional[Callable] = None, on_pong: Optional[Callable] = None,
            on_drain: Optional[Callable] = None, headers=None, subprotocols=(), open_timeout: float = 10.0,
            ssl=None, **options) -> _Opening:
    """Open a WebSocket on ``loop`` (see the module docstring); returns a handle whose ``.ws`` is set once open.

    ``wss://`` URLs use TLS: ``ssl`` is an ``ssl.SSLContext`` (default:
    ``ssl.create_default_context()``, which verifies the certificate and host name)."""
    opts = WsOptions.pick(options)
    if options:
        raise TypeError("unknown connect option(s): %s" % ", ".join(sorted(options)))
    return _Opening(loop, url, Handlers(on_open, on_message, on_close, on_ping, on_pong, on_drain), on_error,
                    headers, subprotocols, opts, open_timeout, ssl)


def _connect_within(host: str, port: int, left: Callable[[], float]) -> socket.socket:
    """``socket.create_connection``, each address given only what is left of the handshake's
    time (``left()``, which raises past it), not the whole limit each."""
    err: Optional[OSError] = None
    for family, kind, proto, _, addr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(left())
            sock.connect(addr)
            return sock
        except socket.timeout:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            err = exc
        except BaseException:
            sock.close()
            raise
    raise err if err is not None else OSError("getaddrinfo returned no address for %r" % (host,))


class SyncClient:
    """A blocking WebSocket client (``connect_sync``): one socket, the sans-I/O protocol, no loop.

    ``open_timeout`` (default: ``timeout``) bounds the whole opening
    handshake -- TCP connect, TLS, our request and the 101 head -- not each
    read: a server that drips its answer a byte at a time still fails with
    ``WsHandshakeError("opening handshake timed out after N s")`` once it has
    passed.  ``timeout`` is then the default of ``recv`` and ``close``.
    """

    def __init__(self, url: str, timeout: float = 5.0, headers=None, subprotocols=(), compression=None,
                 max_message_size: Optional[int] = 1 << 20, ssl=None,
                 open_timeout: Optional[float] = None) -> None:
        host, port, path, host_header, auth = parse_url(url)
        tls = _tls_context(url, ssl)
        dopts = _deflate.options_from(compression)
        key = new_key()
        request = client_request(host_header, path, key, headers, list(subprotocols or ()),
                                 _deflate.client_offer(dopts) if dopts else None, auth)  # (raises before connecting)
        limit = timeout if open_timeout is None else open_timeout
        deadline = time.monotonic() + limit

        def left() -> float:
            t = deadline - time.monotonic()
            if t <= 0:
                raise WsHandshakeError("opening handshake timed out after %g s" % limit)
            return t

        try:
            self.sock = _connect_within(host, port, left)
        except socket.timeout:
            raise WsHandshakeError("opening handshake timed out after %g s" % limit) from None
        self.timeout = timeout
        try:
            if tls is not None:
                self.sock.settimeout(left())
                self.sock = tls.wrap_socket(self.sock, server_hostname=host)
            self.sock.settimeout(left())
            self.sock.sendall(request)
            buf = b""
            while True:
                got = parse_response(buf)
                if got is not None:
                    break
                self.sock.settimeout(left())  # the deadline is the handshake's, not each read's
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise WsHandshakeError("connection closed before the 101")
                buf += chunk
            resp, n = got
            self.response = resp
            self.subprotocol = check_response(resp, key, list(subprotocols or ()))
            codec = _deflate.client_accept(resp.headers.get("sec-websocket-extensions", []), dopts)
            self.sock.settimeout(timeout)
        except socket.timeout:
            self.sock.close()
            raise WsHandshakeError("opening handshake timed out after %g s" % limit) from None
        except BaseException:
            self.sock.close()
            raise
        self.protocol = Protocol(True, max_message_size, None, None, codec)
        self.pending: list = []
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self._cause: Optional[OSError] = None  # the socket error that lost the connection
        if buf[n:]:
            self._absorb(buf[n:])

    def _absorb(self, data) -> None:
        for ev in self.protocol.receive_data(data):
            if ev[0] == MESSAGE:
                self.pending.append(ev[1])
            elif ev[0] == CLOSE:
                self.close_code, self.close_reason = ev[1], ev[2]
            elif ev[0] == PING:
                pass  # the pong is in outgoing
        out = self.protocol.data_to_send()
        if out:
            try:
                self.sock.sendall(b"".join(bytes(b) for b in out))
            except OSError:
                pass

    def send(self, data) -> None:
        self._sendall(self.protocol.send_message(data, isinstance(data, str)))

    def ping(self, payload=b"") -> None:
        self._sendall(self.protocol.ping(payload))

    def send_raw(self, data: bytes) -> None:
        """Bytes straight to the socket (tests: hand-made frames)."""
        self.sock.sendall(data)

    def _sendall(self, bufs) -> None:
        if self.protocol.close_sent or self.close_code is not None:
            raise WsClosed(self.close_code or 1006, self.close_reason) from self._cause
        try:
            self.sock.sendall(b"".join(bytes(b) for b in bufs))
        except socket.timeout:
            raise
        except OSError as exc:  # reset, broken pipe: the connection is lost (1006, RFC 6455 7.1.5)
            raise WsClosed(self._lost(exc), self.close_reason) from self._cause

    def _lost(self, exc: OSError) -> int:
        """The socket failed (a reset, a broken pipe): closed without a close frame (1006,
        no reason: a reason is what a close frame carries); ``WsClosed.__cause__`` is ``exc``."""
        if self.close_code is None:
            self.close_code = 1006
            self._cause = exc
        return self.close_code

    def recv(self, timeout: Optional[float] = None):
        """The next message (str or bytes); WsClosed once the connection is closed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            if self.close_code is not None:
                raise WsClosed(self.close_code, self.close_reason) from self._cause
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no message within the timeout")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise
            except OSError as exc:  # a reset: what arrived before it is still handed out
                self._lost(exc)
                continue
            if not chunk:
                self.close_code = self.close_code or 1006
                continue
            self._absorb(chunk)
        return self.pending.pop(0)

    def close(self, code: int = 1000, reason: str = "") -> Optional[int]:
        """Close handshake; returns the peer's close code (None if it never answered)."""
        try:
            if not self.protocol.close_sent:
                self.sock.sendall(b"".join(bytes(b) for b in self.protocol.close(code, reason)))
            deadline = time.monotonic() + self.timeout
            while self.close_code is None and time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self._absorb(chunk)
        except OSError:
            pass
        finally:
            self.sock.close()
            if self.protocol.deflate is not None:
                self.protocol.deflate.release()
        return self.close_code

    def __enter__(self) -> "SyncClient":
        return self

    def __exit__(self, *exc) -> None:
        if self.sock.fileno() >= 0:
            self.close()


def connect_sync(url: str, **kwargs) -> SyncClient:
    return SyncClient(url, **kwargs)
