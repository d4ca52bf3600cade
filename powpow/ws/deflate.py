"""permessage-deflate (RFC 7692): negotiation in both roles and the codec.

Memory (the reason for the defaults).  zlib's deflate state costs about
``(1 << (wbits + 2)) + (1 << (mem_level + 9))`` bytes plus ~6 KiB, inflate
``(1 << wbits)`` plus ~7 KiB.  Our compressor defaults to window bits 12 and
memLevel 5 (websockets' choice): 16 KiB + 16 KiB.  Both zlib objects are made
lazily on the first compressed message and dropped after each message when
context takeover is off, so an idle connection costs nothing for
compression; a busy one with context takeover costs ~32 KiB (deflate) +
~39 KiB (inflate at the peer's default 15 bits; a server that answers
``client_max_window_bits=N`` through ``peer_max_window_bits`` pays
``2**N`` + 7 KiB instead).  See README "WebSocket" for measured figures.

Window bits 8: zlib silently turns a raw deflate window of 8 into 9, which a
peer limited to 8 could not inflate.  A server declines an offer that would
make its compressor use 8; a client whose server answers
``client_max_window_bits=8`` (our offer names the parameter without a value,
which allows 8) sends its messages uncompressed, as RFC 7692 6.1 allows: a
Node ``ws`` server configured with ``clientMaxWindowBits: 8`` answers that.
Inflating always uses at least 9, which reads any 8-bit stream.

Shared compressor (``shared_compressor=True``, broadcast-heavy servers):
one raw-deflate stream per loop and per (window bits, memLevel, level)
compresses the messages of every connection on that loop.  Each message
ends with ``Z_FULL_FLUSH``, which byte-aligns the output and forgets the
history, so each message is a self-contained deflate stream: valid for any
peer, which is why such connections negotiate
``server_no_context_takeover`` (RFC 7692 7.1.1.1 lets a server add it
unasked).  Cost: one zlib state per loop instead of none-or-one per
connection, and no zlib allocation per message.  ``broadcast`` uses the
same object to compress a message once for every recipient.

Inflate bombs: ``inflate`` never produces more than ``cap + 1`` bytes
(``max_length``), so a tiny frame that would expand to gigabytes costs at
most the message limit before it is refused with 1009.
"""
import weakref
import zlib
from typing import Any, Dict, List, Optional, Tuple

from .errors import WsHandshakeError, WsProtocolError

EXTENSION = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"
_END_BLOCK = b"\x03\x00"  # an empty final block (BFINAL, fixed Huffman, end-of-block): ends a stream
NEVER = 1 << 62  # a ``threshold`` no message reaches: this side sends uncompressed
_PARAMS = ("server_no_context_takeover", "client_no_context_takeover",
           "server_max_window_bits", "client_max_window_bits")

Offer = Tuple[str, Dict[str, Optional[str]]]


class DeflateOptions:
    """Tuning for permessage-deflate (``compression=DeflateOptions(...)``; ``"deflate"`` = defaults).

    ``window_bits`` / ``mem_level``: our compressor.  ``threshold``: messages
    shorter than this are sent uncompressed.  ``no_context_takeover``: reset
    our compressor after each message (less memory, worse ratio).
    ``peer_max_window_bits``: ask the peer to compress with at most this
    window (server: ``client_max_window_bits``, client: ``server_max_window_bits``),
    which bounds our inflate memory.  ``level``: zlib level.
    ``shared``: compress with one shared compressor per loop (implies
    ``no_context_takeover``; see the module docstring).
    """

    def __init__(self, window_bits: int = 12, mem_level: int = 5, threshold: int = 128,
                 no_context_takeover: bool = False, peer_max_window_bits: Optional[int] = None,
                 level: int = 6, shared: bool = False) -> None:
        if not 9 <= window_bits <= 15:
            raise ValueError("window_bits must be 9..15")
        if peer_max_window_bits is not None and not 8 <= peer_max_window_bits <= 15:
            raise ValueError("peer_max_window_bits must be 8..15")
        self.window_bits = window_bits
        self.mem_level = mem_level
        self.threshold = threshold
        self.no_context_takeover = no_context_takeover
        self.peer_max_window_bits = peer_max_window_bits
        self.level = level
        self.shared = shared
        if shared:
            self.no_context_takeover = True


def options_from(compression, shared: bool = False) -> Optional[DeflateOptions]:
    """``"deflate"`` -> defaults, None -> off, a ``DeflateOptions`` as is (``shared``: a copy with shared=True)."""
    if compression is None:
        return None
    if isinstance(compression, DeflateOptions):
        if shared and not compression.shared:
            o = DeflateOptions(compression.window_bits, compression.mem_level, compression.threshold, True,
                               compression.peer_max_window_bits, compression.level, True)
            return o
        return compression
    if compression == "deflate":
        return DeflateOptions(shared=shared)
    raise ValueError("compression must be 'deflate', None or a DeflateOptions, got %r" % (compression,))


class SharedCompressor:
    """One deflate stream whose messages are independent (``Z_FULL_FLUSH``); see the module docstring."""

    __slots__ = ("bits", "mem_level", "level", "messages", "_c", "__weakref__")

    def __init__(self, bits: int, mem_level: int, level: int) -> None:
        self.bits = bits
        self.mem_level = mem_level
        self.level = level
        self.messages = 0  # messages compressed (tests and stats)
        self._c = zlib.compressobj(level, zlib.DEFLATED, -bits, mem_level)

    def compress(self, data) -> bytes:
        c = self._c
        out = c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)
        self.messages += 1
        if out.endswith(_TAIL):
            out = out[:-4]
        return out or b"\x00"


_shared: "weakref.WeakKeyDictionary[Any, Dict[Tuple[int, int, int], SharedCompressor]]" = \
    weakref.WeakKeyDictionary()


def shared_compressor(loop, bits: int, mem_level: int, level: int) -> SharedCompressor:
    """The loop's compressor for these parameters (made on first use, gone with the loop)."""
    per_loop = _shared.get(loop)
    if per_loop is None:
        per_loop = _shared[loop] = {}
    key = (bits, mem_level, level)
    c = per_loop.get(key)
    if c is None:
        c = per_loop[key] = SharedCompressor(bits, mem_level, level)
    return c


class PerMessageDeflate:
    """The negotiated codec of one connection (lazy zlib objects, see the module docstring)."""

    __slots__ = ("compress_no_context", "compress_bits", "inflate_no_context", "inflate_bits",
                 "mem_level", "level", "threshold", "shared", "_c", "_d", "_fed")

    def __init__(self, compress_no_context: bool, compress_bits: int, inflate_no_context: bool,
                 inflate_bits: int, options: DeflateOptions) -> None:
        self.compress_no_context = compress_no_context
        self.compress_bits = compress_bits
        self.inflate_no_context = inflate_no_context
        self.inflate_bits = max(inflate_bits, 9)
        self.mem_level = options.mem_level
        self.level = options.level
        self.threshold = options.threshold
        self.shared: Optional[SharedCompressor] = None  # set by the I/O layer (it knows the loop)
        self._c: Any = None
        self._d: Any = None
        self._fed = False  # the inflater ``_d`` has had payload bytes (see ``finish``)

    def use_shared(self, loop) -> None:
        """Compress with the loop's shared compressor (needs ``compress_no_context``)."""
        if not self.compress_no_context:
            raise ValueError("a shared compressor needs no context takeover on our side")
        self.shared = shared_compressor(loop, self.compress_bits, self.mem_level, self.level)

    def compress(self, data) -> bytes:
        if self.shared is not None:
            return self.shared.compress(data)
        c = self._c
        if c is None:
            c = zlib.compressobj(self.level, zlib.DEFLATED, -self.compress_bits, self.mem_level)
        out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        self._c = None if self.compress_no_context else c
        if out.endswith(_TAIL):
            out = out[:-4]
        return out or b"\x00"

    def inflate(self, payload, cap: int) -> bytes:
        """Inflate one frame's payload; more than ``cap`` bytes out -> 1009."""
        d = self._d
        if d is None:
            d = self._d = zlib.decompressobj(-self.inflate_bits)
        if payload:
            self._fed = True
        try:
            out = d.decompress(payload, cap + 1)
            while d.eof:
                out = self._next_stream(d, out, cap)
                d = self._d
        except zlib.error as exc:
            raise WsProtocolError(1007, "invalid compressed data: %s" % exc) from None
        if len(out) > cap or d.unconsumed_tail:
            self._d = None
            self._fed = False
            raise WsProtocolError(1009, "message too big once inflated")
        return out

    def _next_stream(self, d, out: bytes, cap: int) -> bytes:
        """``d`` met a block with BFINAL set: the peer's deflate stream ended there.

        RFC 7692 7.2.3.4 lets a sender flush that way; its message then goes on
        with a new stream (in the RFC's example a ``00`` that, with the
        ``00 00 ff ff`` tail, makes an empty stored block), and so does its next
        message.  zlib hands every byte after the end of a stream to
        ``unused_data`` and inflates nothing more, so without this each later
        message came out empty and its bytes piled up there without bound.  The
        bytes after the end go to a new inflater, given what this call inflated
        as its dictionary, so a peer that carries its window over to the new
        stream is still read (a stream that does not refer back is unaffected).
        A message whose stream ended exactly at its end (a sender that did not
        add the ``00``) leaves the new inflater unfed: ``finish`` then skips the
        tail, which alone is no valid block."""
        rest = d.unused_data
        bits = self.inflate_bits
        self._d = n = zlib.decompressobj(-bits, zdict=out[-(1 << bits):]) if out else zlib.decompressobj(-bits)
        self._fed = bool(rest)
        if not rest or len(out) > cap:
            return out
        return out + n.decompress(rest, cap + 1 - len(out))

    def finish(self, cap: int) -> bytes:
        """End of a compressed message: the implicit 00 00 ff ff tail (none for an inflater
        that has had no byte: the tail alone is no valid block)."""
        out = self.inflate(_TAIL, cap) if self._fed else b""
        if self.inflate_no_context:
            self._d = None
            self._fed = False
        return out

    def release(self) -> None:
        """The connection is gone: end both zlib streams now, which frees their state.

        On CPython dropping them would do; PyPy's collector does not count zlib's own
        memory, so the state of closed connections waited for a major collection that a
        busy server's Python heap seldom triggers (53 KiB a connection, measured: +416 MB
        over 10,000 connections with deflate).  Ending a stream is what frees it there:
        ``flush(Z_FINISH)`` for the compressor, an empty final block and ``flush()`` for
        the inflater (a stream cut mid-block just fails: dropped all the same)."""
        c, self._c = self._c, None
        if c is not None:
            try:
                c.flush(zlib.Z_FINISH)
            except zlib.error:
                pass
        d, self._d = self._d, None
        self._fed = False
        if d is not None:
            try:
                d.decompress(_END_BLOCK, 1024)
                d.flush()
            except zlib.error:
                pass

    @property
    def memory_estimate(self) -> int:
        """zlib bytes held now (formula above)."""
        n = 0
        if self._c is not None:
            n += (1 << (self.compress_bits + 2)) + (1 << (self.mem_level + 9)) + 6144
        if self._d is not None:
            n += (1 << self.inflate_bits) + 7168
        return n


# -- header syntax --------------------------------------------------------------

def parse_extensions(values: List[str]) -> List[Offer]:
    """``Sec-WebSocket-Extensions`` values -> [(name, {param: value or None})] in order."""
    out: List[Offer] = []
    for value in values:
        for item in value.split(","):
            parts = [p.strip() for p in item.split(";")]
            if not parts[0]:
                continue
            params: Dict[str, Optional[str]] = {}
            for p in parts[1:]:
                if not p:
                    continue
                k, eq, v = p.partition("=")
                k = k.strip().lower()
                v = v.strip()
                if len(v) >= 2 and v[0] == v[-1] == '"':
                    v = v[1:-1]
                if k in params:
                    params["\x00dup"] = k  # duplicate parameter: the offer is invalid
                params[k] = v if eq else None
            out.append((parts[0].lower(), params))
    return out


def _bits(v: Optional[str]) -> Optional[int]:
    if v is None or not (v.isascii() and v.isdigit()) or len(v) > 2:  # (str.isdigit: "²" too)
        return None
    n = int(v)
    return n if 8 <= n <= 15 else None


def _valid(params: Dict[str, Optional[str]], server_side: bool) -> bool:
    for k, v in params.items():
        if k not in _PARAMS:
            return False
        if k.endswith("no_context_takeover") and v is not None:
            return False
        if k == "server_max_window_bits" and _bits(v) is None:
            return False
        if k == "client_max_window_bits" and (v is not None or not server_side) and _bits(v) is None:
            return False
    return True


# -- server -----------------------------------------------------------------------

def server_negotiate(offers: List[Offer], options: DeflateOptions) -> Optional[Tuple[str, PerMessageDeflate]]:
    """The first acceptable permessage-deflate offer -> (response header value, codec), or None."""
    for name, params in offers:
        if name != EXTENSION or not _valid(params, True):
            continue
        resp = [EXTENSION]
        smwb = _bits(params.get("server_max_window_bits"))
        if smwb == 8:
            continue  # see "Window bits 8" above
        compress_bits = min(smwb or 15, options.window_bits)
        compress_nc = "server_no_context_takeover" in params or options.no_context_takeover
        if compress_nc:
            resp.append("server_no_context_takeover")
        inflate_nc = "client_no_context_takeover" in params
        if inflate_nc:
            resp.append("client_no_context_takeover")
        if smwb is not None:
            resp.append("server_max_window_bits=%d" % smwb)
        inflate_bits = 15
        if "client_max_window_bits" in params:
            want = _bits(params["client_max_window_bits"]) or 15
            if options.peer_max_window_bits is not None:
                want = min(want, options.peer_max_window_bits)
            if want < 15 or params["client_max_window_bits"] is not None:
                resp.append("client_max_window_bits=%d" % want)
            inflate_bits = want
        codec = PerMessageDeflate(compress_nc, compress_bits, inflate_nc, inflate_bits, options)
        return "; ".join(resp), codec
    return None


# -- client -----------------------------------------------------------------------

def client_offer(options: DeflateOptions) -> str:
    parts = [EXTENSION, "client_max_window_bits"]
    if options.no_context_takeover:
        parts.append("client_no_context_takeover")
    if options.peer_max_window_bits is not None:
        parts.append("server_max_window_bits=%d" % options.peer_max_window_bits)
    return "; ".join(parts)


def client_accept(values: List[str], options: Optional[DeflateOptions]) -> Optional[PerMessageDeflate]:
    """Check the server's ``Sec-WebSocket-Extensions`` against our offer; the codec or None."""
    accepted = parse_extensions(values)
    if not accepted:
        return None
    if options is None:
        raise WsHandshakeError("server accepted extension %r that was not offered" % accepted[0][0])
    if len(accepted) > 1 or accepted[0][0] != EXTENSION:
        raise WsHandshakeError("server accepted extensions that were not offered: %r" % values)
    params = accepted[0][1]
    if not _valid(params, False):
        raise WsHandshakeError("invalid permessage-deflate parameters from the server: %r" % values)
    smwb = _bits(params.get("server_max_window_bits"))
    if options.peer_max_window_bits is not None and smwb is not None and smwb > options.peer_max_window_bits:
        raise WsHandshakeError("server_max_window_bits=%d above our offer" % smwb)
    cmwb = _bits(params.get("client_max_window_bits"))
    compress_bits = min(cmwb or 15, options.window_bits)
    compress_nc = "client_no_context_takeover" in params or options.no_context_takeover
    inflate_nc = "server_no_context_takeover" in params
    codec = PerMessageDeflate(compress_nc, max(compress_bits, 9), inflate_nc, smwb or 15, options)
    if cmwb == 8:
        # Our bare offer allows any 8..15, and 8 is the one zlib cannot keep to (see
        # "Window bits 8" above): keep the agreement by sending every message uncompressed
        # (RFC 7692 6.1 lets an endpoint do so); the server's messages still inflate.
        codec.threshold = NEVER
    return codec
