"""WebSocket frames (RFC 6455 section 5): an incremental parser and the builders.

Parser invariants
-----------------
* Any split of the input yields the same frames as the whole input: state is
  the unparsed tail (``_buf``) plus nothing else; a header is re-read from the
  tail until its payload is complete (headers are at most 14 bytes).
* ``check(fin, rsv, opcode, length, masked)`` runs as soon as a header is
  complete, *before* any of its payload is buffered, so a frame over the
  limit (1009) or a bad header (1002) is refused without reading its body.
* When nothing is buffered, frames are parsed straight from the caller's
  memoryview; only an incomplete tail is copied (``done``).
* A caller that stops early (``done(more=True)``: the protocol's per-turn
  frame budget) leaves complete frames behind: they are kept once as bytes
  and parsed from an offset on later feeds, never compacted turn by turn
  (and on PyPy, parsing from a bytearray is ~40% slower than from bytes).
* One frame per ``next_frame()`` call, so the protocol's state (a message in
  progress, its size so far) is current when the next header is checked.
* Payloads come back unmasked as bytes-like objects the caller owns.

Builders return the header and the payload separately so that large
payloads go to ``writev`` without a concatenation copy.
"""
import struct
from typing import Any, Callable, List, Optional, Tuple

from .._ffi import ws_mask
from .errors import WsProtocolError

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
DATA_OPCODES = (OP_CONT, OP_TEXT, OP_BINARY)
CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
KNOWN_OPCODES = DATA_OPCODES + CONTROL_OPCODES

_pack_h = struct.Struct("!H").pack
_pack_q = struct.Struct("!Q").pack
_unpack_h = struct.Struct("!H").unpack_from
_unpack_q = struct.Struct("!Q").unpack_from

# (fin, rsv bits 0..7 as 0bRSV1RSV2RSV3, opcode, payload)
Frame = Tuple[bool, int, int, Any]  # payload: bytes or bytearray
Check = Callable[[bool, int, int, int, bool], None]


class FrameParser:
    """Feed bytes, get complete frames.  ``check`` validates each header (raise ``WsProtocolError``)."""

    __slots__ = ("_buf", "_check", "_src", "_pos", "_checked_at", "_rest", "_rest_pos")

    def __init__(self, check: Check) -> None:
        self._buf = bytearray()
        self._check = check
        self._src: Any = None
        self._pos = 0
        self._checked_at = -1
        self._rest: Optional[bytes] = None  # input left by done(more=True), parsed from _rest_pos
        self._rest_pos = 0

    @property
    def buffered(self) -> int:
        """Bytes held: an incomplete frame, or the input left by an early stop."""
        rest = self._rest
        return len(self._buf) + (len(rest) - self._rest_pos if rest is not None else 0)

    def feed(self, data) -> None:
        """Take ``data`` (any bytes-like; a memoryview is used in place until ``done``)."""
        buf = self._buf
        rest = self._rest
        self._checked_at = -1
        if rest is not None:
            if not len(data):
                self._src = rest
                self._pos = self._rest_pos
                return
            self._rest = None  # (buf is empty while rest is held)
            buf += memoryview(rest)[self._rest_pos:]
        if buf:
            buf += data
            self._src = buf
        else:
            self._src = data
        self._pos = 0

    def done(self, keep: bool = True, more: bool = False) -> None:
        """End of this input: keep the rest (copied) or drop everything.

        ``more``: the caller stopped before the input ran out, and will feed
        again (``b""`` will do) for the frames left.
        """
        src, pos = self._src, self._pos
        self._src = None
        buf = self._buf
        if not keep:
            del buf[:]
            self._rest = None
        elif self._rest is not None and src is self._rest:
            if pos < len(self._rest):
                self._rest_pos = pos
            else:
                self._rest = None
        elif more and src is not None and pos < len(src):
            self._rest = bytes(src[pos:])
            self._rest_pos = 0
            if src is buf:
                del buf[:]
        elif src is buf:
            del buf[:pos]
        elif src is not None and pos < len(src):
            buf += src[pos:]

    def next_frame(self) -> Optional[Frame]:
        """The next complete frame of the input being fed, or None (header checked first)."""
        src = self._src
        pos = self._pos
        n = len(src)
        if n - pos < 2:
            return None
        b0 = src[pos]
        b1 = src[pos + 1]
        masked = b1 & 0x80
        length = b1 & 0x7F
        hl = 2
        if length == 126:
            if n - pos < 4:
                return None
            length = _unpack_h(src, pos + 2)[0]
            hl = 4
        elif length == 127:
            if n - pos < 10:
                return None
            length = _unpack_q(src, pos + 2)[0]
            hl = 10
            if length >> 63:
                raise WsProtocolError(1002, "64-bit payload length with the most significant bit set")
        if masked:
            hl += 4
            if n - pos < hl:
                return None
        if self._checked_at != pos:
            # checked once per feed; a frame split across feeds is checked
            # again on the next feed, with the same state and the same answer
            self._check(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, length, bool(masked))
            self._checked_at = pos
        end = pos + hl + length
        if end > n:
            return None
        payload: Any
        if masked:
            payload = ws_mask(src[pos + hl : end], bytes(src[pos + hl - 4 : pos + hl]))
        else:
            payload = bytes(src[pos + hl : end])
        self._pos = end
        return (bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload)

    def pending_payload(self):
        """The incomplete frame at the head of the input: ``(opcode, rsv1, key, payload_so_far)`` or None.

        Only for a frame whose header has been checked; ``payload_so_far`` is
        still masked (``key`` None when unmasked) and valid until ``done``.
        """
        src, pos = self._src, self._pos
        if src is None or self._checked_at != pos:
            return None
        b1 = src[pos + 1]
        n = b1 & 0x7F
        hl = 2 + (2 if n == 126 else 8 if n == 127 else 0) + (4 if b1 & 0x80 else 0)
        key = bytes(src[pos + hl - 4 : pos + hl]) if b1 & 0x80 else None
        return src[pos] & 0x0F, bool(src[pos] & 0x40), key, memoryview(src)[pos + hl :]

    def feed_all(self, data) -> List[Frame]:
        """All complete frames of ``data`` (tests and simple callers)."""
        self.feed(data)
        out: List[Frame] = []
        try:
            while True:
                f = self.next_frame()
                if f is None:
                    return out
                out.append(f)
        finally:
            self.done()


def frame_header(opcode: int, length: int, fin: bool = True, rsv1: bool = False,
                 mask: Optional[bytes] = None) -> bytes:
    """The header of a frame carrying ``length`` payload bytes (``mask``: the 4-byte key, client side)."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mbit = 0x80 if mask is not None else 0
    if length < 126:
        head = bytes((b0, mbit | length))
    elif length < 65536:
        head = bytes((b0, mbit | 126)) + _pack_h(length)
    else:
        head = bytes((b0, mbit | 127)) + _pack_q(length)
    return head + mask if mask is not None else head


def build_frame(opcode: int, payload=b"", fin: bool = True, rsv1: bool = False,
                mask: Optional[bytes] = None) -> bytes:
    """One whole frame as bytes (masked with ``mask`` when given)."""
    head = frame_header(opcode, len(payload), fin, rsv1, mask)
    if mask is not None:
        return head + bytes(ws_mask(payload, mask))
    return head + bytes(payload)


def close_payload(code: Optional[int], reason: str = "") -> bytes:
    """The body of a close frame: empty for no code (1005), else code + UTF-8 reason (<= 123 bytes)."""
    if code is None or code == 1005:
        return b""
    r = reason.encode("utf-8")
    if len(r) > 123:  # cut at 123 bytes without splitting a UTF-8 sequence
        r = r[:123].decode("utf-8", "ignore").encode("utf-8")
    return _pack_h(code) + r


def checked_close_payload(code: Optional[int], reason: str = "") -> bytes:
    """The body of a close frame we are asked to send, refusing what may not go on the wire.

    Unlike ``close_payload`` (our own codes and reasons, cut to fit), a caller's
    arguments are checked, before anything changes, so that a bad one raises
    here rather than half-way through closing: ``code`` is None (no code) or
    one ``valid_close_code`` accepts (RFC 6455 7.4.1: 1005, 1006 and 1015 are
    for reporting only), ``reason`` a str of at most 123 bytes in UTF-8 (a
    control frame carries 125 bytes, 5.5) and empty without a code (5.5.1).
    """
    if not isinstance(reason, str):
        raise TypeError("close reason must be a str, got %s" % type(reason).__name__)
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if not isinstance(code, int):
        raise TypeError("close code must be an int or None, got %s" % type(code).__name__)
    if not valid_close_code(code):
        raise ValueError("close code %d may not be sent (1000-1003, 1007-1014 or 3000-4999)" % code)
    r = reason.encode("utf-8")
    if len(r) > 123:
        raise ValueError("close reason is %d bytes in UTF-8; at most 123 fit in a close frame" % len(r))
    return _pack_h(code) + r


def valid_close_code(code: int) -> bool:
    """Codes a peer may send (RFC 6455 7.4.1, 7.4.2; IANA registry 1012-1014)."""
    if 1000 <= code <= 1014:
        return code not in (1004, 1005, 1006)
    return 3000 <= code <= 4999
