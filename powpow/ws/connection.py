"""``WebSocket``: one open connection -- the sans-I/O ``Protocol`` on a ``Transport``.

Both roles use this class (the server after ``upgrade``, the client after
its 101).  It owns the transport's callbacks, the keep-alive timers and the
backpressure accounting; the protocol owns every byte-level decision.

Lifetimes and guarantees
------------------------
* ``on_message(ws, data, is_text)``: ``data`` is a ``str`` for text and a
  ``bytes`` for binary, owned by the callee (keep it as long as you like).
* ``on_close(ws, code, reason)`` runs exactly once: with the peer's code
  after a close handshake, with our code when we failed the connection,
  1006 when TCP went away without a close frame, 1011 after a handler raised
  (whether or not the peer answered our close: a silent peer does not turn
  the handler's error into a 1006).  ``ws.close_code``/``close_reason`` then
  hold the same.  The frames themselves, as RFC 6455 7.1.5/7.1.6 define
  them: ``close_code_sent``/``close_reason_sent`` (what our close frame said),
  ``close_code_received``/``close_reason_received`` (the peer's; None when
  none came, the RFC's 1006).  A close timeout is logged with what we sent.
* A closing handshake never hangs: after our close frame, ``close_timeout``
  bounds the wait for the peer; TCP is closed only after our frame has left
  (``close_after_drain``: FIN after the data, no RST eating it).
* ``send`` returns a ``SendStatus``: SENT, BUFFERED (queued over
  ``high_water``: stop producing until ``on_drain``), DROPPED (the queue is
  over ``max_buffered``: the message is not queued; with
  ``slow_consumer="close"`` the connection is also closed with 1008).
* Pings are answered for you, in one write with our other output: a pong
  owed leaves with our next write (ahead of the reply to a message that
  followed the ping) or at the end of the read.  Past ``MAX_PONGS_OWED``
  unanswered pings only the latest is answered (RFC 6455 5.5.3), and over
  ``high_water`` one pong at most is held, for ``on_drain``.
* Fairness: one connection handles at most ``FRAMES_PER_TURN`` frames (and
  about ``BYTES_PER_TURN`` bytes of messages, inflated) per loop iteration;
  the rest of its read waits (reading paused) for the next.
* ``pause_reading()`` / ``resume_reading()``: the owner's backpressure (ASGI's
  receive queue).  Paused, no more input is decoded -- neither new reads nor
  frames left over from the last one -- until ``resume_reading()``.
* ``idle_timeout``: any message sent or received (``send``, ``broadcast``,
  ``publish``) keeps the connection open; control frames do not.
* ``subscribe`` on a closed or closing socket is a no-op returning False
  (the close has already made it leave every topic).
* Thread safety: like every powpow object, a WebSocket belongs to its loop's
  thread.  From another thread use ``loop.post(lambda: ws.send(data))``.
"""
import enum
import logging
from typing import Any, Callable, Dict, Optional

from .frames import checked_close_payload
from .protocol import CLOSE, MESSAGE, PING, PONG, Protocol

log = logging.getLogger("powpow.ws")

# Fairness between connections.  The transport's read budget counts bytes (16 reads of 64 KiB
# per wake-up), but a WebSocket costs per frame: 1 MiB of 125-byte frames is ~8000 frames, and
# 50 peers flooding them held a new connection off for 5-10 s (7-byte frames: past 20 s).  A
# connection handles at most this many frames per loop iteration (see _yield_turn).
FRAMES_PER_TURN = 256
# ... and at most about this many bytes of messages: permessage-deflate makes a few KiB of
# input many MiB of messages, and a turn decodes its frames before it hands them out, so
# a pause by the socket's owner (ASGI backpressure) could only come after all of them.
BYTES_PER_TURN = 1 << 20


class SendStatus(enum.IntEnum):
    """Result of ``ws.send`` (uWebSockets' order: BUFFERED is falsy)."""
    BUFFERED = 0
    SENT = 1
    DROPPED = 2


class WsOptions:
    """Every limit and timeout of a WebSocket, shared by the server, ``upgrade`` and the client."""

    def __init__(self, max_message_size: Optional[int] = 1 << 20, max_frame_size: Optional[int] = None,
                 max_fragments: Optional[int] = 16384, handshake_timeout: float = 10.0,
                 close_timeout: float = 5.0, ping_interval: Optional[float] = 20.0,
                 ping_timeout: Optional[float] = 20.0, idle_timeout: Optional[float] = None,
                 high_water: int = 256 << 10, low_water: int = 64 << 10, max_buffered: int = 4 << 20,
                 compression: Any = "deflate", slow_consumer: str = "drop",
                 shared_compressor: bool = False) -> None:
        if slow_consumer not in ("drop", "close"):
            raise ValueError("slow_consumer must be 'drop' or 'close'")
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.max_fragments = max_fragments
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.idle_timeout = idle_timeout
        self.high_water = high_water
        self.low_water = low_water
        self.max_buffered = max_buffered
        self.compression = compression
        self.slow_consumer = slow_consumer
        # one compressor per loop for every connection (no context takeover on our side); see deflate.py
        self.shared_compressor = shared_compressor

    NAMES = ("max_message_size", "max_frame_size", "max_fragments", "handshake_timeout", "close_timeout",
             "ping_interval", "ping_timeout", "idle_timeout", "high_water", "low_water", "max_buffered",
             "compression", "slow_consumer", "shared_compressor")

    @classmethod
    def pick(cls, kwargs: Dict[str, Any]) -> "WsOptions":
        """Take the option names out of ``kwargs`` (what remains is not ours)."""
        return cls(**{k: kwargs.pop(k) for k in list(kwargs) if k in cls.NAMES})


class Handlers:
    __slots__ = ("on_open", "on_message", "on_close", "on_ping", "on_pong", "on_drain")

    def __init__(self, on_open=None, on_message=None, on_close=None, on_ping=None, on_pong=None,
                 on_drain=None) -> None:
        self.on_open = on_open
        self.on_message = on_message
        self.on_close = on_close
        self.on_ping = on_ping
        self.on_pong = on_pong
        self.on_drain = on_drain


class WebSocket:
    """An open WebSocket (see the module docstring)."""

    def __init__(self, transport, protocol: Protocol, handlers: Handlers, options: WsOptions,
                 request=None, subprotocol: Optional[str] = None, hub=None) -> None:
        self.transport = transport
        self.protocol = protocol
        self.loop = transport.loop
        self.handlers = handlers
        self.options = options
        self.request = request
        self.subprotocol = subprotocol
        self.context: Any = None
        self.hub = hub
        self.topics: Optional[set] = None
        self.closed = False
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self._timers: Dict[str, Any] = {}
        self._last_active = self.loop.now_ms()
        self._yielding = False  # input left over by receive_data waits for _next_turn
        self._paused_turn = False  # _yield_turn paused reading (and _next_turn resumes it)
        self._owner_paused = False  # pause_reading(): nothing more is decoded until resume_reading()
        # transport.context stays None: HttpServer still walks its (handed-over)
        # connections and takes a non-None context for its own session
        transport.on_data = self._on_data
        transport.on_close = self._on_transport_close
        transport.on_drain = self._on_transport_drain
        transport.on_eof = self._on_eof
        transport.set_write_buffer_limits(options.high_water, options.low_water)
        if options.ping_interval:
            self._timers["ping"] = self.loop.add_interval(int(options.ping_interval * 1000), self._keepalive)
        if options.idle_timeout:
            self._timers["idle"] = self.loop.add_timer(int(options.idle_timeout * 1000), self._idle_check)

    # -- public API ----------------------------------------------------------

    @property
    def buffered_amount(self) -> int:
        """Bytes queued on the transport and not yet accepted by the kernel."""
        return 0 if self.transport.closed else self.transport.queued_bytes

    @property
    def client_ip(self) -> Optional[str]:
        return self.transport.get_client_ip()

    @property
    def close_code_sent(self) -> Optional[int]:
        """The code our close frame carried (1005: none); None while we have sent no close frame."""
        return self.protocol.close_code_sent

    @property
    def close_reason_sent(self) -> str:
        return self.protocol.close_reason_sent

    @property
    def close_code_received(self) -> Optional[int]:
        """The code of the peer's close frame (1005: none); None while none came (RFC 6455: 1006)."""
        return self.protocol.close_code_received

    @property
    def close_reason_received(self) -> str:
        return self.protocol.close_reason_received

    def send(self, data) -> SendStatus:
        """str -> a text message, bytes-like -> binary."""
        return self._send_message(data, isinstance(data, str))

    def send_text(self, text: str) -> SendStatus:
        return self._send_message(text, True)

    def send_binary(self, data) -> SendStatus:
        return self._send_message(data, False)

    def _send_message(self, data, is_text: bool) -> SendStatus:
        if self.closed or self.protocol.close_sent:
            return SendStatus.DROPPED
        if self.transport.queued_bytes > self.options.max_buffered:
            return self._overflow()
        self._last_active = self.loop.now_ms()
        return self._write(self.protocol.send_message(data, is_text))

    def send_frame_bytes(self, frame: bytes) -> SendStatus:
        """Write an already-framed message (``broadcast``: one frame shared by many sockets)."""
        if self.closed or self.protocol.close_sent:
            return SendStatus.DROPPED
        if self.transport.queued_bytes > self.options.max_buffered:
            return self._overflow()
        # a message sent keeps idle_timeout away, as in _send_message; the loop's cached
        # clock (now_ms() without the call: broadcast runs this once per subscriber)
        self._last_active = self.loop._now
        if self.protocol.pongs_owed:
            return self._write([frame])
        return SendStatus.SENT if self.transport.write(frame) else SendStatus.BUFFERED

    def _overflow(self) -> SendStatus:
        if self.options.slow_consumer == "close":
            self.close(1008, "slow consumer")
        return SendStatus.DROPPED

    def _write(self, buffers) -> SendStatus:
        if not buffers:
            return SendStatus.DROPPED
        if self.protocol.pongs_owed:
            buffers = self._owed_pongs() + buffers  # pings answered before later messages, in one write
        t = self.transport
        ok = t.write(buffers[0]) if len(buffers) == 1 else t.writev(buffers)
        return SendStatus.SENT if ok else SendStatus.BUFFERED

    def _owed_pongs(self) -> list:
        """The pongs owed (taken from the protocol), or none while the queue is over ``high_water``.

        A peer that pings and never reads would grow our queue a pong at a
        time: over high water only the latest ping stays owed (RFC 6455
        5.5.3), and its pong leaves on drain.
        """
        if self.transport.queued_bytes > self.options.high_water:
            self.protocol.keep_latest_pong()
            return []
        return self.protocol.take_pongs()

    def ping(self, payload=b"") -> SendStatus:
        if self.closed:
            return SendStatus.DROPPED
        return self._write(self.protocol.ping(payload))

    def pong(self, payload=b"") -> SendStatus:
        if self.closed:
            return SendStatus.DROPPED
        return self._write(self.protocol.pong(payload))

    def close(self, code: Optional[int] = 1000, reason: str = "") -> None:
        """Start the close handshake (idempotent); TCP closes when the peer answers or after close_timeout.

        A code or reason that may not be sent raises ValueError (TypeError for
        a wrong type) before anything changes, even on a closed connection.
        """
        checked_close_payload(code, reason)
        if self.closed or self.protocol.close_sent:
            return
        self._write(self.protocol.close(code, reason))
        if self.protocol.close_received:
            self._finish_close()
        else:
            self._timers["close"] = self.loop.add_timer(int(self.options.close_timeout * 1000),
                                                        self._close_timed_out)

    def subscribe(self, topic: str) -> bool:
        """Join ``topic`` of the hub; False (and nothing joined) once the socket is closed or closing.

        A subscribe that lands after the close (``loop.post`` from a worker
        thread) is a no-op: the socket has already left every topic, and
        nothing published could reach it any more.
        """
        if self.hub is None:
            raise RuntimeError("no pub/sub hub: use WsServer or upgrade(..., hub=Hub())")
        return self.hub.subscribe(self, topic)

    def unsubscribe(self, topic: str) -> None:
        if self.hub is not None:
            self.hub.unsubscribe(self, topic)

    def __repr__(self) -> str:
        return "<WebSocket %s %s>" % (self.transport.peer_address, "closed" if self.closed else "open")

    # -- transport callbacks --------------------------------------------------

    def pause_reading(self) -> None:
        """Stop taking input (backpressure): no read, and no frame left over from the last
        read is decoded, until ``resume_reading()``."""
        self._owner_paused = True
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._owner_paused:
            return
        self._owner_paused = False
        if self.protocol.input_pending and not self.closed:
            # the frames left over go first, on the next turn, which resumes the transport
            self._paused_turn = True
            if not self._yielding:
                self._yielding = True
                self.loop.defer_call(self._next_turn)
        else:
            self.transport.resume_reading()

    def _on_data(self, conn, data) -> None:
        proto = self.protocol
        events = proto.receive_data(data, FRAMES_PER_TURN, BYTES_PER_TURN)
        close_event = None
        for ev in events:
            if self.closed:
                return
            kind = ev[0]
            if kind == MESSAGE:
                self._last_active = self.loop.now_ms()
                cb = self.handlers.on_message
                if cb is not None:
                    try:
                        cb(self, ev[1], ev[2])
                    except Exception:
                        log.exception("WebSocket on_message raised: closing with 1011")
                        self._internal_error()
                        break
            elif kind == PING:
                # Its pong is owed (protocol.pongs_owed): it leaves with our next write, ahead
                # of a reply to a later message, or below with the other pongs of this read.
                self._call(self.handlers.on_ping, ev[1])
            elif kind == PONG:
                t = self._timers.pop("pong", None)
                if t is not None:
                    self.loop.cancel_timer(t)
                self._call(self.handlers.on_pong, ev[1])
            elif kind == CLOSE:
                close_event = ev
        # What this read still owes, in one write: the pongs (one for a burst), then the
        # close echo -- after the replies the callbacks above made.
        if proto.close_pending:
            out = proto.data_to_send()
        elif proto.pongs_owed:
            out = self._owed_pongs()
        else:
            out = None
        if out and not conn.closed:
            conn.writev(out)
        if close_event is not None and not self.closed:
            self._finish_close(close_event[1], close_event[2])
        elif proto.input_pending:
            self._yield_turn(conn)

    def _yield_turn(self, conn) -> None:
        """End this connection's turn: the frames left over wait for the next loop iteration.

        Reading is paused while they wait, so at most one read's worth of
        input is held here; the other ready connections and the listener go
        first.  A pause made by the transport's owner (ASGI backpressure) is
        left to that owner to lift.
        """
        if not conn.reading_paused:
            conn.pause_reading()
            self._paused_turn = True
        if not self._yielding:
            self._yielding = True
            self.loop.defer_call(self._next_turn)

    def _next_turn(self) -> None:
        self._yielding = False
        conn = self.transport
        if self.closed or conn.closed:
            return
        if self._owner_paused:
            return  # the input left waits: resume_reading() brings the next turn
        if self._paused_turn:
            # first, so that a pause made by the callbacks below (or the next yield) holds:
            # the read itself is deferred to the next iteration
            self._paused_turn = False
            conn.resume_reading()
        self._on_data(conn, b"")

    def _call(self, cb: Optional[Callable], *args) -> None:
        if cb is None:
            return
        try:
            cb(self, *args)
        except Exception:
            log.exception("WebSocket callback %r raised: closing with 1011", cb)
            self._internal_error()

    def _internal_error(self) -> None:
        self.close(1011, "internal error")
        if not self.closed and self.close_code is None:
            self.close_code, self.close_reason = 1011, "internal error"

    def _on_transport_drain(self, conn) -> None:
        if self.protocol.pongs_owed:
            owed = self.protocol.take_pongs()  # the latest ping's, held while over high water
            if owed and not conn.closed:
                conn.writev(owed)
        self._call(self.handlers.on_drain)

    def _on_eof(self, conn) -> None:
        # the peer's FIN: no close frame can follow
        self.transport.close_after_drain()

    def _on_transport_close(self, conn, exc) -> None:
        self._cancel_timers()
        d = self.protocol.deflate
        if d is not None:
            d.release()  # (PyPy: see PerMessageDeflate.release)
        if self.closed:
            return
        code, reason = (self.close_code, self.close_reason) if self.close_code is not None else (1006, "")
        if self.protocol.close_received and self.protocol.close_code is not None and self.close_code is None:
            code, reason = self.protocol.close_code, self.protocol.close_reason
        self._closed(code, reason)

    # -- closing -------------------------------------------------------------

    def _finish_close(self, code: Optional[int] = None, reason: str = "") -> None:
        """The close handshake is complete (or the connection failed): report, then close TCP after our frame."""
        proto = self.protocol
        if code is None:
            code, reason = proto.close_code or 1005, proto.close_reason
        if self.close_code is not None:  # a handler error decided the code
            code, reason = self.close_code, self.close_reason
        self.transport.close_after_drain()
        t = self._timers.pop("close", None)
        if t is not None:
            self.loop.cancel_timer(t)
        # the frame is on its way; do not wait forever for the peer to read it
        self._timers["close"] = self.loop.add_timer(int(self.options.close_timeout * 1000), self.transport.close)
        self._closed(code, reason)

    def _close_timed_out(self) -> None:
        self._timers.pop("close", None)
        proto = self.protocol
        log.info("WebSocket %s: no close frame from the peer within %g s of ours (%s %r): closing TCP",
                 self.transport.peer_address, self.options.close_timeout, proto.close_code_sent,
                 proto.close_reason_sent)
        if not self.closed and self.close_code is None:  # (a handler error has decided on 1011)
            self.close_code, self.close_reason = 1006, "close timeout"
        self.transport.close()

    def _closed(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_reason = code, reason
        if self.hub is not None:
            self.hub.forget(self)
        cb = self.handlers.on_close
        if cb is not None:
            try:
                cb(self, code, reason)
            except Exception:
                log.exception("WebSocket on_close raised")
        if self.transport.closed:
            self._cancel_timers()

    def _cancel_timers(self) -> None:
        for t in self._timers.values():
            self.loop.cancel_timer(t)
        self._timers.clear()

    # -- keep-alive ------------------------------------------------------------

    def _keepalive(self) -> None:
        if self.closed or self.protocol.close_sent:
            return
        if self.options.ping_timeout and "pong" not in self._timers:
            self._timers["pong"] = self.loop.add_timer(int(self.options.ping_timeout * 1000), self._pong_timeout)
        self._write(self.protocol.ping(b""))

    def _pong_timeout(self) -> None:
        self._timers.pop("pong", None)
        if not self.closed:
            # the peer is presumed gone: our close frame, then TCP, no handshake wait
            self._write(self.protocol.close(1011, "keepalive ping timeout"))
            self.close_code, self.close_reason = 1011, "keepalive ping timeout"
            self._finish_close()

    def _idle_check(self) -> None:
        self._timers.pop("idle", None)
        if self.closed:
            return
        idle_ms = int(self.options.idle_timeout * 1000)  # type: ignore[operator]
        left = self._last_active + idle_ms - self.loop.now_ms()
        if left > 0:
            self._timers["idle"] = self.loop.add_timer(left, self._idle_check)
        else:
            self.close(1001, "idle timeout")
