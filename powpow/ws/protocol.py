"""The WebSocket protocol state machine (RFC 6455), sans-I/O, for both roles.

Bytes in (``receive_data``) -> events out; frames to send come back from the
``send_*`` methods as lists of buffers, and frames the protocol answers on
its own (pongs, the close echo, the close that fails a connection) come from
``data_to_send()``: call it after handling each receive's events.  The pongs
alone come from ``take_pongs()``, so that an I/O layer can send them ahead
of its replies to messages that followed the pings.

Events are tuples: ``(MESSAGE, data, is_text)`` (str for text, bytes for
binary), ``(PING, payload)``, ``(PONG, payload)``, ``(CLOSE, code, reason)``.

Invariants
----------
* Every header is validated before its payload is buffered; each violation
  maps to one close code (the table in ``_check``/``_handle``): 1002
  protocol, 1007 bad UTF-8 or bad compressed data, 1009 too big, 1008 too
  many fragments.  Bad input never raises out of ``receive_data``: the
  connection is failed with a close frame and a CLOSE event.
* A fragmented message is one growing bytearray and a fragment counter:
  a million one-byte fragments cost no Python object each.
* Text is UTF-8-checked fragment by fragment (incremental decoder), so an
  invalid byte fails the connection when it arrives, not at the end.
* After a close frame is received, or after the connection failed, input is
  ignored; after our close frame is sent, nothing else is sent.
* ``close_code`` is the code of the CLOSE event (the peer's, or ours when we
  failed the connection); the frames themselves are kept apart, as the
  websockets library does: ``close_code_sent``/``close_reason_sent`` say what
  our close frame carried, ``close_code_received``/``close_reason_received``
  what the peer's did (1005 for a frame without a code, RFC 6455 7.1.5); None
  while no such frame has gone or come -- the RFC's "connection close code"
  is then 1006.
* Pings are answered when the pongs are taken, not one write each: until
  then at most ``MAX_PONGS_OWED`` pings are owed a pong of their own, and a
  burst of more is answered by one pong, the latest ping's (RFC 6455 5.5.3
  allows answering only the most recent ping).  A flood of pings thus costs
  one small frame per read, not one per ping.
"""
import codecs
import os
from typing import Any, List, Optional

from .deflate import PerMessageDeflate
from .errors import WsProtocolError
from .frames import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, KNOWN_OPCODES, FrameParser,
                     checked_close_payload, close_payload, frame_header, valid_close_code)
from .._ffi import ws_mask

OPEN, CLOSING, CLOSED = 1, 2, 3
MESSAGE, PING, PONG, CLOSE = 1, 2, 3, 4

MAX_MESSAGE_SIZE = 1 << 20  # 1 MiB, as websockets
MAX_FRAGMENTS = 16384  # more is a slow-drip attack, not a real sender (1008)
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def _holds_a_surrogate(dec) -> bool:
    """CPython's incremental decoder holds back ED A0..BF (a UTF-16 surrogate, never valid
    UTF-8) as if it could still complete; every other impossible prefix fails at once.
    True when the bytes held back start so (PyPy fails them itself)."""
    held = dec.getstate()[0]
    return len(held) >= 2 and held[0] == 0xED and held[1] >= 0xA0
_KEY_BATCH = 4096  # os.urandom once per 1024 client frames
# Pings answered one for one before we write: Autobahn 2.10 sends 10 back to back (one read) and
# expects 10 pongs; a peer with more unanswered pings than this is flooding, not keeping alive.
MAX_PONGS_OWED = 16


class Protocol:
    """One WebSocket connection's protocol state (``client=True`` for the client role)."""

    # The close frames each way (see the module docstring).  Class defaults, set on the
    # instance only when a frame goes or comes: an open connection pays nothing for them.
    close_code_sent: Optional[int] = None
    close_reason_sent = ""
    close_code_received: Optional[int] = None
    close_reason_received = ""

    def __init__(self, client: bool = False, max_message_size: Optional[int] = MAX_MESSAGE_SIZE,
                 max_frame_size: Optional[int] = None, max_fragments: Optional[int] = MAX_FRAGMENTS,
                 deflate: Optional[PerMessageDeflate] = None) -> None:
        self.client = client
        self.max_message_size = max_message_size or (1 << 62)
        self.max_frame_size = max_frame_size or (1 << 62)
        self.max_fragments = max_fragments or (1 << 62)
        self.deflate = deflate
        self.state = OPEN
        self.close_sent = False
        self.close_received = False
        self.close_code: Optional[int] = None  # the code reported in the CLOSE event
        self.close_reason = ""
        self.outgoing: List[bytes] = []  # frames for the next data_to_send(), after the pongs
        self.pongs_owed: List[bytes] = []  # payloads of the pings not answered yet (see take_pongs)
        self._pongs_coalesced = False  # pongs_owed holds only the latest of a burst
        self.input_pending = False  # receive_data stopped at max_frames: more input is kept
        self._parser = FrameParser(self._check)
        self._msg_op = 0  # opcode of the message in progress, 0 = none
        self._msg = bytearray()
        self._raw_len = 0  # wire bytes of the message in progress
        self._fragments = 0
        self._compressed = False
        self._utf8: Any = None
        self._keys = b""
        self._key_pos = 0
        self._pending_close: Any = None  # (code, reason) to send at the next data_to_send()
        self._partial: Any = None  # [decoder, bytes checked] for a text frame still arriving

    # -- receiving ----------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes held for incomplete input (frame tail + message so far)."""
        return self._parser.buffered + len(self._msg)

    def receive_data(self, data, max_frames: int = 0, max_bytes: int = 0) -> list:
        """The events of ``data`` (and of input kept from before).

        With ``max_frames``, parsing stops after that many frames: the rest of
        the input is kept (copied), ``input_pending`` is True, and a later
        ``receive_data(b"")`` goes on from there.  Frames, not bytes, are what
        input costs; an I/O layer uses this to bound one connection's turn.
        With ``max_bytes``, parsing also stops once the messages returned hold
        that many bytes: compressed, a few KiB of input can inflate to many
        MiB of messages, which a turn must not make all at once.
        """
        self.input_pending = False
        if self.close_received or self.state == CLOSED:
            return []
        parser = self._parser
        events: list = []
        parser.feed(data)
        ok = False
        left = max_frames or -1
        room = max_bytes
        try:
            while not self.close_received:
                if not left:
                    self.input_pending = True
                    break
                frame = parser.next_frame()
                if frame is None:
                    break
                left -= 1
                if room:
                    n = len(events)
                    self._handle(frame, events)
                    if len(events) > n and events[-1][0] == MESSAGE:
                        room -= len(events[-1][1])
                        if room <= 0:
                            left = 0  # (input_pending at the top: the rest waits)
                            room = -1
                    continue
                self._handle(frame, events)
            ok = not self.close_received
            if ok and not self.input_pending:
                self._check_partial_text(parser)
        except WsProtocolError as exc:
            self._fail(exc.code, exc.reason, events)
        finally:
            parser.done(ok, self.input_pending)
        return events

    def _check_partial_text(self, parser: FrameParser) -> None:
        """Fail fast inside a text frame still arriving: UTF-8-check the payload seen so far.

        A copy of the message's decoder state advances over the new bytes of
        the incomplete frame only (``_partial_seen`` remembers how far), so a
        large frame in many reads is checked in linear time; the frame is
        checked again as a whole when it completes.
        """
        pending = parser.pending_payload()
        if pending is None:
            self._partial = None
            return
        opcode, rsv1, key, view = pending
        if opcode == OP_TEXT and not self._msg_op and not rsv1:
            base = None
        elif opcode == OP_CONT and self._utf8 is not None and not self._compressed:
            base = self._utf8
        else:
            self._partial = None
            return
        if self._partial is None:
            dec = _utf8_decoder()
            if base is not None:
                dec.setstate(base.getstate())
            self._partial = [dec, 0]
        dec, seen = self._partial
        if len(view) <= seen:
            return
        chunk = view[seen:]
        data = ws_mask(chunk, key, seen & 3) if key is not None else bytes(chunk)
        self._partial[1] = len(view)
        try:
            dec.decode(data, False)
        except UnicodeDecodeError:
            raise WsProtocolError(1007, "invalid UTF-8 in a text message") from None
        if _holds_a_surrogate(dec):
            raise WsProtocolError(1007, "invalid UTF-8 in a text message")

    def data_to_send(self) -> List[bytes]:
        """Frames the protocol sends on its own: the pongs owed, then the close that answers or fails.

        The close frame is made here, not when the close arrived or the input
        went bad, so that messages received before it in the same read can
        still be answered first (their replies leave before our close).
        """
        out = self.take_pongs()
        if self.outgoing:
            out += self.outgoing
            self.outgoing = []
        pending = self._pending_close
        if pending is not None:
            self._pending_close = None
            out += self._close_frame(close_payload(*pending))
        return out

    @property
    def close_pending(self) -> bool:
        """A close frame (the echo, or the one failing the connection) waits for ``data_to_send()``."""
        return self._pending_close is not None

    def take_pongs(self) -> List[bytes]:
        """The pongs owed (one per ping, or only the latest of a burst), without the close."""
        owed = self.pongs_owed
        if not owed:
            return []
        self.pongs_owed = []
        self._pongs_coalesced = False
        out: List[bytes] = []
        if not self.close_sent:
            for payload in owed:
                out += self._frame(OP_PONG, payload)
        return out

    def keep_latest_pong(self) -> None:
        """Owe a pong to the latest ping only (a writer that must not queue more now)."""
        owed = self.pongs_owed
        if owed:
            del owed[:-1]
            self._pongs_coalesced = True

    def _check(self, fin: bool, rsv: int, opcode: int, length: int, masked: bool) -> None:
        if masked == self.client:
            raise WsProtocolError(1002, "masked frame from the server" if self.client
                                  else "unmasked frame from the client")
        if opcode not in KNOWN_OPCODES:
            raise WsProtocolError(1002, "unknown opcode %d" % opcode)
        if opcode >= 8:
            if rsv:
                raise WsProtocolError(1002, "reserved bits set on a control frame")
            if length > 125:
                raise WsProtocolError(1002, "control frame payload over 125 bytes")
            if not fin:
                raise WsProtocolError(1002, "fragmented control frame")
            return
        if rsv & 3 or (rsv & 4 and (self.deflate is None or opcode == OP_CONT)):
            raise WsProtocolError(1002, "reserved bits set without a negotiated extension")
        if opcode == OP_CONT:
            if not self._msg_op:
                raise WsProtocolError(1002, "continuation frame with no message to continue")
            if self._fragments >= self.max_fragments:
                raise WsProtocolError(1008, "more than %d fragments in a message" % self.max_fragments)
        elif self._msg_op:
            raise WsProtocolError(1002, "new data frame inside a fragmented message")
        if length > self.max_frame_size:
            raise WsProtocolError(1009, "frame of %d bytes over max_frame_size" % length)
        if (self._raw_len if opcode == OP_CONT else 0) + length > self.max_message_size:
            raise WsProtocolError(1009, "message over max_message_size (%d bytes)" % self.max_message_size)

    def _handle(self, frame, events: list) -> None:
        fin, rsv, opcode, payload = frame
        self._partial = None
        if opcode >= 8:
            self._control(opcode, payload, events)
            return
        if opcode != OP_CONT:
            self._msg_op = opcode
            self._compressed = bool(rsv & 4)
            self._fragments = 1
            self._raw_len = 0
            if fin and not self._compressed:  # the common case: one frame, one message
                self._msg_op = 0
                if opcode == OP_TEXT:
                    try:
                        events.append((MESSAGE, payload.decode("utf-8"), True))
                    except UnicodeDecodeError:
                        raise WsProtocolError(1007, "invalid UTF-8 in a text message") from None
                else:
                    events.append((MESSAGE, bytes(payload), False))
                return
            if opcode == OP_TEXT:
                self._utf8 = _utf8_decoder()
        else:
            self._fragments += 1
        self._raw_len += len(payload)
        msg = self._msg
        if self._compressed:
            payload = self.deflate.inflate(payload, self.max_message_size - len(msg))  # type: ignore[union-attr]
            if fin:
                payload += self.deflate.finish(self.max_message_size - len(msg) - len(payload))  # type: ignore
        utf8 = self._utf8
        if utf8 is not None:
            try:
                utf8.decode(payload, fin)  # fail fast: the first invalid byte, in this fragment
            except UnicodeDecodeError:
                raise WsProtocolError(1007, "invalid UTF-8 in a text message") from None
            if not fin and _holds_a_surrogate(utf8):
                raise WsProtocolError(1007, "invalid UTF-8 in a text message")
        msg += payload
        if not fin:
            return
        op = self._msg_op
        self._msg_op = 0
        self._utf8 = None
        data = bytes(msg)
        del msg[:]
        if op == OP_TEXT:
            events.append((MESSAGE, data.decode("utf-8"), True))
        else:
            events.append((MESSAGE, data, False))

    def _control(self, opcode: int, payload, events: list) -> None:
        if opcode == OP_PING:
            payload = bytes(payload)
            if not self.close_sent:
                owed = self.pongs_owed
                if self._pongs_coalesced:
                    owed[0] = payload
                elif len(owed) < MAX_PONGS_OWED:
                    owed.append(payload)
                else:  # a flood: from now on one pong answers the latest ping (RFC 6455 5.5.3)
                    owed[:] = [payload]
                    self._pongs_coalesced = True
            events.append((PING, payload))
        elif opcode == OP_PONG:
            events.append((PONG, bytes(payload)))
        else:
            n = len(payload)
            if n == 1:
                raise WsProtocolError(1002, "close frame with a 1-byte payload")
            code, reason = 1005, ""
            if n >= 2:
                code = (payload[0] << 8) | payload[1]
                if not valid_close_code(code):
                    raise WsProtocolError(1002, "invalid close code %d" % code)
                try:
                    reason = bytes(payload[2:]).decode("utf-8")
                except UnicodeDecodeError:
                    raise WsProtocolError(1007, "invalid UTF-8 in the close reason") from None
            self.close_received = True
            self.close_code_received, self.close_reason_received = code, reason
            if not self.close_sent:
                self._pending_close = (code if code != 1005 else None, "")
            self.state = CLOSED
            if self.close_code is None:
                self.close_code, self.close_reason = code, reason
            events.append((CLOSE, code, reason))

    def _fail(self, code: int, reason: str, events: list) -> None:
        """Fail the connection (RFC 6455 7.1.7): our close frame, then no more input."""
        if not self.close_sent:
            self._pending_close = (code, reason)
        self.close_received = True  # input is ignored from now on
        self.state = CLOSED
        self._msg_op = 0
        del self._msg[:]
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        events.append((CLOSE, code, reason))

    # -- sending ------------------------------------------------------------

    def _mask_key(self) -> bytes:
        pos = self._key_pos
        if pos + 4 > len(self._keys):
            self._keys = os.urandom(_KEY_BATCH)
            pos = 0
        self._key_pos = pos + 4
        return self._keys[pos : pos + 4]

    def _frame(self, opcode: int, payload, fin: bool = True, rsv1: bool = False) -> List[bytes]:
        if self.client:
            key = self._mask_key()
            return [frame_header(opcode, len(payload), fin, rsv1, key), ws_mask(payload, key)]  # type: ignore
        head = frame_header(opcode, len(payload), fin, rsv1)
        return [head, payload] if payload else [head]

    def send_message(self, data, is_text: bool) -> List[bytes]:
        """Frames for one message (compressed when negotiated and over the threshold)."""
        if self.close_sent:
            return []
        payload = data.encode("utf-8") if is_text else data
        rsv1 = False
        d = self.deflate
        if d is not None and len(payload) >= d.threshold:
            payload = d.compress(payload)
            rsv1 = True
        return self._frame(OP_TEXT if is_text else OP_BINARY, payload, True, rsv1)

    def send_text(self, text: str) -> List[bytes]:
        return self.send_message(text, True)

    def send_binary(self, data) -> List[bytes]:
        return self.send_message(data, False)

    def send_fragment(self, opcode: int, data, fin: bool) -> List[bytes]:
        """One uncompressed fragment (``opcode`` OP_TEXT/OP_BINARY first, then OP_CONT)."""
        if self.close_sent:
            return []
        return self._frame(opcode, data, fin)

    def ping(self, payload=b"") -> List[bytes]:
        if len(payload) > 125:
            raise ValueError("ping payload over 125 bytes")
        return [] if self.close_sent else self._frame(OP_PING, payload)

    def pong(self, payload=b"") -> List[bytes]:
        if len(payload) > 125:
            raise ValueError("pong payload over 125 bytes")
        return [] if self.close_sent else self._frame(OP_PONG, payload)

    def close(self, code: Optional[int] = 1000, reason: str = "") -> List[bytes]:
        """Our close frame (once); state CLOSING until the peer's arrives.

        A code or reason that may not be sent (``frames.checked_close_payload``)
        raises ValueError (TypeError for a wrong type) and changes nothing: a
        caller that handles it, or the 1011 of a failed handler, can still close.
        """
        payload = checked_close_payload(code, reason)
        return self._close_frame(payload)

    def _close_frame(self, payload: bytes) -> List[bytes]:
        if self.close_sent:
            return []
        self.close_sent = True
        # read back from the payload: what the peer will read, a reason cut to fit included
        if len(payload) >= 2:
            self.close_code_sent = payload[0] << 8 | payload[1]
            self.close_reason_sent = payload[2:].decode("utf-8")
        else:
            self.close_code_sent = 1005
        if self.state == OPEN:
            self.state = CLOSING
        return self._frame(OP_CLOSE, payload)
