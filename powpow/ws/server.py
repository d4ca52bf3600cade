"""WebSocket servers: ``upgrade(req, res, ...)`` from an HTTP handler, and ``WsServer``.

``upgrade`` validates the handshake (see ``handshake.check_request``),
negotiates the subprotocol and permessage-deflate, writes the 101 through
``res.upgrade(headers)`` -- the HTTP server's handover seam: the 101 leaves
after any earlier pipelined answer, then HTTP forgets the connection -- and
feeds the bytes that arrived behind the request to the new protocol.  A
handler refuses a WebSocket by answering normally (any status and body)
instead of calling ``upgrade``.

``WsServer`` is an ``HttpServer`` whose handler upgrades every request
(``handshake_timeout`` is its header timeout), plus graceful shutdown:
close 1001 to every open WebSocket, wait at most ``grace`` seconds, stop.

Broadcast and topics frame a message once per group of recipients and
queue that same object on every member: one uncompressed frame for the
sockets without permessage-deflate (or a message under their threshold),
one compressed frame per window size for the others (compressed once, on
the loop's shared compressor: see ``deflate``); a recipient over
``max_buffered`` is skipped (or closed, ``slow_consumer="close"``) and
reported as failed.
"""
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from ..http import HttpServer
from ..net.errors import ConnectionLost
from . import deflate as _deflate
from .connection import Handlers, SendStatus, WebSocket, WsOptions
from .frames import OP_BINARY, OP_TEXT, frame_header
from .handshake import accept_key, check_request, header_tokens
from .protocol import Protocol

log = logging.getLogger("powpow.ws")


def encode_frame(message) -> bytes:
    """A whole unmasked, uncompressed server frame for ``message`` (str -> text, bytes -> binary)."""
    if isinstance(message, str):
        payload = message.encode("utf-8")
        return frame_header(OP_TEXT, len(payload)) + payload
    return frame_header(OP_BINARY, len(message)) + bytes(message)


class _Frames:
    """The frames of one broadcast message: made on first need, one per compression group, then shared."""

    __slots__ = ("message", "opcode", "payload", "plain", "compressed", "compressions")

    def __init__(self, message) -> None:
        self.message = message
        if isinstance(message, str):
            self.opcode, self.payload = OP_TEXT, message.encode("utf-8")
        else:
            self.opcode, self.payload = OP_BINARY, bytes(message)
        self.plain: Optional[bytes] = None
        self.compressed: Dict[tuple, bytes] = {}
        self.compressions = 0

    def for_socket(self, ws: WebSocket) -> Optional[bytes]:
        """The shared frame this socket can take; None for a client-role socket (it masks: no sharing)."""
        proto = ws.protocol
        if proto.client:
            return None
        d = proto.deflate
        payload = self.payload
        if d is None or len(payload) < d.threshold:
            frame = self.plain
            if frame is None:
                frame = self.plain = frame_header(self.opcode, len(payload)) + payload
            return frame
        # Every socket that negotiated permessage-deflate with the same window (the
        # peer may have limited it) takes the same compressed bytes: the shared
        # compressor's output is a self-contained deflate stream.
        key = (d.compress_bits, d.mem_level, d.level)
        frame = self.compressed.get(key)
        if frame is None:
            comp = _deflate.shared_compressor(ws.loop, *key).compress(payload)
            self.compressions += 1
            frame = self.compressed[key] = frame_header(self.opcode, len(comp), True, True) + comp
        if d.shared is None:
            # A socket with its own compressor and context takeover: the peer's window now
            # holds this message, which our compressor did not see; it restarts empty.
            d._c = None
        return frame


def broadcast(clients: Iterable[WebSocket], message, deadline: Optional[float] = None,
              on_late: Optional[Callable[[List[WebSocket]], object]] = None) -> List[WebSocket]:
    """Send ``message`` to every client, framing (and compressing) it once per group; the clients that failed now.

    Recipients without permessage-deflate (or for a message under their
    compression threshold) share one uncompressed frame; those with it share
    one compressed frame per window size (compressed once, on the loop's
    shared compressor).  With ``deadline`` (seconds): a client that has not
    taken the whole frame by then (its transport's ``bytes_sent`` has not
    passed the frame's end) is closed with 1013 (try again later) and
    reported to ``on_late(list)``.
    """
    frames = _Frames(message)
    failed = []
    waiting = []
    for ws in clients:
        frame = frames.for_socket(ws)
        status = ws.send(message) if frame is None else ws.send_frame_bytes(frame)
        if status == SendStatus.DROPPED:
            failed.append(ws)
        elif deadline is not None:
            t = ws.transport
            waiting.append((ws, t.bytes_sent + t.queued_bytes))
    if waiting:
        loop = waiting[0][0].loop

        def check() -> None:
            late = [ws for ws, end in waiting if not ws.closed and ws.transport.bytes_sent < end]
            for ws in late:
                ws.close(1013, "broadcast deadline")
            if late and on_late is not None:
                on_late(late)

        loop.add_timer(int(deadline * 1000), check)  # type: ignore[operator]
    return failed


class Hub:
    """Local pub/sub: topic -> set of WebSockets; a socket leaves every topic when it closes."""

    def __init__(self) -> None:
        self.topics: Dict[str, Set[WebSocket]] = {}
        self.fanout: Any = None  # a redis.RedisFanout relaying publishes across processes, or None

    def subscribe(self, ws: WebSocket, topic: str) -> bool:
        """Add ``ws`` to ``topic``; False (nothing added) when ``ws`` is closed or closing.

        The close made the socket leave every topic once (``forget``): one
        added after that would stay here for good, failing every publish.
        """
        if ws.closed or ws.protocol.close_sent:
            return False
        self.topics.setdefault(topic, set()).add(ws)
        if ws.topics is None:
            ws.topics = set()
        ws.topics.add(topic)
        return True

    def unsubscribe(self, ws: WebSocket, topic: str) -> None:
        subs = self.topics.get(topic)
        if subs is not None:
            subs.discard(ws)
            if not subs:
                del self.topics[topic]
        if ws.topics:
            ws.topics.discard(topic)

    def forget(self, ws: WebSocket) -> None:
        for topic in list(ws.topics or ()):
            self.unsubscribe(ws, topic)

    def publish(self, topic: str, message) -> List[WebSocket]:
        """Deliver to the local subscribers now, and through Redis to other processes (once)."""
        if self.fanout is not None:
            self.fanout.publish(topic, message)
        return self.publish_local(topic, message)

    def publish_local(self, topic: str, message) -> List[WebSocket]:
        subs = self.topics.get(topic)
        if not subs:
            return []
        failed = broadcast(list(subs), message)
        for ws in failed:
            if ws.closed:
                # a member whose close did not reach this hub (subscribed here with another
                # or no ws.hub): reported failed this once, then gone
                self.unsubscribe(ws, topic)
                self.forget(ws)
        return failed

    def subscribers(self, topic: str) -> int:
        return len(self.topics.get(topic, ()))


def _refuse(res, status: int, reason: str) -> None:
    headers = [("Sec-WebSocket-Version", "13")]
    if status == 426:
        headers.append(("Upgrade", "websocket"))
    res.send((reason + "\n").encode(), status=status, headers=headers)


def upgrade(req, res, on_message: Optional[Callable] = None, on_open: Optional[Callable] = None,
            on_close: Optional[Callable] = None, on_ping: Optional[Callable] = None,
            on_pong: Optional[Callable] = None, on_drain: Optional[Callable] = None,
            subprotocols=(), hub: Optional[Hub] = None, headers=None, context=None,
            **options) -> Optional[WebSocket]:
    """Answer ``req`` with a 101 and return the open ``WebSocket``; on a bad handshake answer 400/426, return None.

    ``subprotocols``: ours, in preference order (the first the client also
    offers wins).  ``headers``: extra pairs for the 101.  ``options``: the
    ``WsOptions`` names (max_message_size, ping_interval, compression, ...).
    """
    opts = options.pop("_options", None) or WsOptions.pick(options)
    if options:
        raise TypeError("unknown upgrade option(s): %s" % ", ".join(sorted(options)))
    bad = check_request(req)
    if bad is not None:
        _refuse(res, *bad)
        return None
    key = req.headers.get("sec-websocket-key").strip()
    out = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(key))]
    chosen = None
    # every Sec-WebSocket-Protocol line counts (RFC 7230 3.2.2: repeated list headers join with ",")
    offered_raw = ", ".join(req.headers.get_all("sec-websocket-protocol"))
    offered = header_tokens(offered_raw)
    for p in subprotocols:
        if p.lower() in offered:
            chosen = p
            # echo the client's own spelling (RFC 6455 4.2.2: derived from its handshake;
            # clients compare it exactly)
            theirs = [t.strip() for t in offered_raw.split(",")][offered.index(p.lower())]
            out.append(("Sec-WebSocket-Protocol", theirs))
            break
    codec = None
    dopts = _deflate.options_from(opts.compression, opts.shared_compressor)
    if dopts is not None:
        ext_values = req.headers.get_all("sec-websocket-extensions")
        if ext_values:
            got = _deflate.server_negotiate(_deflate.parse_extensions(ext_values), dopts)
            if got is not None:
                out.append(("Sec-WebSocket-Extensions", got[0]))
                codec = got[1]
    if headers:
        out.extend(headers.items() if hasattr(headers, "items") else headers)
    try:
        conn, rest = res.upgrade(out)
    except ConnectionLost:
        return None
    if codec is not None and dopts is not None and dopts.shared:
        codec.use_shared(conn.loop)
    proto = Protocol(False, opts.max_message_size, opts.max_frame_size, opts.max_fragments, codec)
    ws = WebSocket(conn, proto, Handlers(on_open, on_message, on_close, on_ping, on_pong, on_drain), opts,
                   request=req, subprotocol=chosen, hub=hub)
    ws.context = context
    if on_open is not None:
        ws._call(on_open)
    if rest and not ws.closed:
        ws._on_data(conn, memoryview(rest))
    return ws


class _HandshakeGate(HttpServer):
    """The HTTP side of a ``WsServer``: counts connections that have not upgraded yet.

    A connection is "in flight" from its accept (after TLS, for wss) until it
    upgrades or closes.  Beyond ``max_handshakes`` a new one is answered
    ``503 Service Unavailable`` with ``Retry-After: 1`` and closed after that
    answer has left; it never reaches the handler.
    """

    ws_server: "WsServer"

    def _on_accept(self, conn) -> None:
        ws = self.ws_server
        if ws.max_handshakes is not None and len(ws.handshaking) >= ws.max_handshakes:
            ws.refused_handshakes += 1
            self._on_overload(conn)
            conn.close_after_drain()
            return
        ws.handshaking.add(conn)
        HttpServer._on_accept(self, conn)

    def _on_close(self, conn, exc) -> None:
        self.ws_server.handshaking.discard(conn)
        HttpServer._on_close(self, conn, exc)


class WsServer:
    """A standalone WebSocket server: every request is a handshake (see the module docstring).

    ``WsServer(on_message=..., on_open=..., on_close=..., subprotocols=(), loop=None,
    max_connections=10000, max_handshakes=1024, **ws options)``; ``listen(port, host)``,
    ``listen_unix(path)``, ``run()`` (SIGINT/SIGTERM: graceful), ``shutdown(grace=5.0)``,
    ``publish(topic, message)``, ``clients`` (the open WebSockets), ``port``, ``close()``.

    ``max_handshakes``: connections accepted but not yet upgraded (reading or
    answering their HTTP request, each bounded by ``handshake_timeout``) at
    most; one more is answered 503 and closed (``refused_handshakes`` counts
    them).  None: no cap beyond ``max_connections``.  ``handshaking`` is the
    set of those connections.
    """

    def __init__(self, on_message: Optional[Callable] = None, on_open: Optional[Callable] = None,
                 on_close: Optional[Callable] = None, on_ping: Optional[Callable] = None,
                 on_pong: Optional[Callable] = None, on_drain: Optional[Callable] = None,
                 subprotocols=(), loop=None, max_connections: int = 10000,
                 max_handshakes: Optional[int] = 1024, redis=None, redis_prefix: str = "powpow:", ssl=None,
                 **options) -> None:
        if max_handshakes is not None and max_handshakes < 1:
            raise ValueError("max_handshakes must be >= 1 or None")
        self.max_handshakes = max_handshakes
        self.handshaking: Set[Any] = set()
        self.refused_handshakes = 0
        self.redis = redis  # None, "host:port", or (host, port): publish across processes
        self.redis_prefix = redis_prefix
        self.options = WsOptions.pick(options)
        if options:
            raise TypeError("unknown WsServer option(s): %s" % ", ".join(sorted(options)))
        self.handlers = dict(on_message=on_message, on_open=on_open, on_close=self._on_close, on_ping=on_ping,
                             on_pong=on_pong, on_drain=on_drain)
        self._user_on_close = on_close
        self.subprotocols = tuple(subprotocols)
        self.hub = Hub()
        self.clients: Set[WebSocket] = set()
        self._draining = False
        self._timers: list = []
        # ssl: an ssl.SSLContext for wss:// (the TLS handshake has the same timeout)
        self.http = _HandshakeGate(self._handle, loop=loop, max_connections=max_connections, max_body=0,
                               header_timeout=self.options.handshake_timeout,
                               keepalive_timeout=self.options.handshake_timeout, ssl=ssl,
                               handshake_timeout=self.options.handshake_timeout)
        self.http.ws_server = self

    @property
    def loop(self):
        return self.http.loop

    @property
    def port(self) -> Optional[int]:
        return self.http.port

    @property
    def connection_count(self) -> int:
        return len(self.clients)

    def listen(self, port: int = 0, host: str = "0.0.0.0") -> "WsServer":
        self.http.listen(port, host)
        self._start_fanout()
        return self

    def listen_unix(self, path: str, mode: int = 0o660) -> "WsServer":
        self.http.listen_unix(path, mode)
        self._start_fanout()
        return self

    def _start_fanout(self) -> None:
        if self.redis is None or self.hub.fanout is not None:
            return
        from .redis import RedisFanout
        if isinstance(self.redis, str):
            host, _, port = self.redis.rpartition(":")
            addr = (host or "127.0.0.1", int(port))
        else:
            addr = tuple(self.redis)
        self.hub.fanout = RedisFanout(self.loop, self.hub, addr[0], int(addr[1]), self.redis_prefix)

    def _handle(self, req, res) -> None:
        if self._draining:
            res.send(b"shutting down\n", status=503)
            return
        ws = upgrade(req, res, subprotocols=self.subprotocols, hub=self.hub, _options=self.options,
                     **self.handlers)
        if ws is not None:
            self.handshaking.discard(ws.transport)  # upgraded: no longer a handshake in flight
            if not ws.closed:
                self.clients.add(ws)

    def _on_close(self, ws, code, reason) -> None:
        self.clients.discard(ws)
        if self._user_on_close is not None:
            self._user_on_close(ws, code, reason)

    def publish(self, topic: str, message) -> List[WebSocket]:
        return self.hub.publish(topic, message)

    def broadcast(self, message) -> List[WebSocket]:
        return broadcast(list(self.clients), message)

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM or ``shutdown()``; in a thread other than the main
        one (no signal handlers there) until ``shutdown()``."""
        loop = self.http._ensure_loop()
        signals = loop._add_stop_signals(lambda s: self.shutdown())
        try:
            loop.run()
        finally:
            for sig in signals:
                loop.remove_signal(sig)
            self.close()

    def shutdown(self, grace: float = 5.0) -> None:
        """Close 1001 to every WebSocket, wait for them at most ``grace`` s, then stop the
        HTTP side and loop. From any thread: off the running loop's thread it is posted."""
        if self._draining:
            return
        loop = self.loop
        if loop is not None and loop._posted_if_elsewhere(lambda: self.shutdown(grace)):
            return
        self._draining = True
        for ws in list(self.clients):
            ws.close(1001, "server shutting down")
        self._timers.append(loop.add_timer(int(grace * 1000), self._force_stop))
        self._timers.append(loop.add_interval(20, self._check_closed))
        self._check_closed()

    def _check_closed(self) -> None:
        if not any(not ws.transport.closed for ws in self.clients):
            self._force_stop()

    def _force_stop(self) -> None:
        loop = self.loop
        for t in self._timers:
            loop.cancel_timer(t)
        self._timers = []
        for ws in list(self.clients):
            ws.transport.close()
        self.http.shutdown(0.5)

    def close(self) -> None:
        if self.hub.fanout is not None:
            self.hub.fanout.close()
            self.hub.fanout = None
        loop = self.loop
        if loop is not None:
            for t in self._timers:
                loop.cancel_timer(t)
        self._timers = []
        for ws in list(self.clients):
            ws.transport.close()
        self.http.close()
