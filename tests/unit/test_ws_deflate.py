"""permessage-deflate negotiation (RFC 7692) in both roles, and the memory of the codec."""
import os
import zlib

import pytest

from powpow.ws.deflate import (DeflateOptions, client_accept, client_offer, parse_extensions,
                               server_negotiate)
from powpow.ws.errors import WsHandshakeError


def neg(offer, **opts):
    got = server_negotiate(parse_extensions([offer]), DeflateOptions(**opts))
    return None if got is None else (got[0], got[1])


@pytest.mark.parametrize("offer,response,c_bits,c_nc,i_bits,i_nc", [
    ("permessage-deflate", "permessage-deflate", 12, False, 15, False),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate", 12, False, 15, False),
    ("permessage-deflate; client_max_window_bits=10", "permessage-deflate; client_max_window_bits=10",
     12, False, 10, False),
    ("permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10",
     10, False, 15, False),
    ("permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover",
     12, True, 15, False),
    ("permessage-deflate; client_no_context_takeover", "permessage-deflate; client_no_context_takeover",
     12, False, 15, True),
    ('permessage-deflate; server_max_window_bits="9"; client_no_context_takeover',
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=9", 9, False, 15, True),
])
def test_server_accepts(offer, response, c_bits, c_nc, i_bits, i_nc):
    resp, codec = neg(offer)
    assert resp == response
    assert (codec.compress_bits, codec.compress_no_context, codec.inflate_bits, codec.inflate_no_context) == \
        (c_bits, c_nc, i_bits, i_nc)


@pytest.mark.parametrize("offer", [
    "x-webkit-deflate-frame",
    "permessage-deflate; unknown_param",
    "permessage-deflate; server_max_window_bits",          # value required
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=8",        # zlib cannot honour 8
    "permessage-deflate; client_max_window_bits=abc",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    # non-ASCII digits (str.isdigit says yes, int() refuses): a 500 with a traceback, was
    "permessage-deflate; server_max_window_bits=\xb2",
    "permessage-deflate; client_max_window_bits=1\xb9",
    "permessage-deflate; server_max_window_bits=\u0661\u0660",
])
def test_server_declines_invalid_offers(offer):
    assert neg(offer) is None


def test_a_non_ascii_digit_offer_is_declined_and_the_next_one_taken():
    resp, _ = neg("permessage-deflate; server_max_window_bits=\xb2, permessage-deflate")
    assert resp == "permessage-deflate"


def test_server_takes_the_first_acceptable_of_several_offers():
    resp, _ = neg("permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits")
    assert resp == "permessage-deflate"


def test_server_asks_client_for_a_small_window():
    resp, codec = neg("permessage-deflate; client_max_window_bits", peer_max_window_bits=9)
    assert resp == "permessage-deflate; client_max_window_bits=9" and codec.inflate_bits == 9


def test_client_offer_and_accept():
    opts = DeflateOptions(peer_max_window_bits=10, no_context_takeover=True)
    assert client_offer(opts) == ("permessage-deflate; client_max_window_bits; client_no_context_takeover; "
                                  "server_max_window_bits=10")
    codec = client_accept(["permessage-deflate; server_max_window_bits=10; client_max_window_bits=11; "
                           "server_no_context_takeover"], opts)
    assert (codec.compress_bits, codec.compress_no_context, codec.inflate_bits, codec.inflate_no_context) == \
        (11, True, 10, True)
    assert client_accept([], opts) is None


@pytest.mark.parametrize("values,opts", [
    (["permessage-deflate"], None),                                      # not offered at all
    (["x-other"], DeflateOptions()),
    (["permessage-deflate, permessage-deflate"], DeflateOptions()),
    (["permessage-deflate; server_max_window_bits=12"], DeflateOptions(peer_max_window_bits=10)),
    (["permessage-deflate; bogus"], DeflateOptions()),
    (["permessage-deflate; server_max_window_bits=1\xb9"], DeflateOptions(peer_max_window_bits=12)),
])
def test_client_fails_on_what_it_did_not_offer(values, opts):
    with pytest.raises(WsHandshakeError):
        client_accept(values, opts)


def test_memory_is_lazy_and_released_without_context_takeover():
    _, codec = neg("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    assert codec.memory_estimate == 0  # idle: no zlib state at all
    data = codec.compress(b"hello " * 100)
    assert codec.memory_estimate == 0  # no context takeover: dropped after the message
    out = codec.inflate(data, 10000) + codec.finish(10000)
    assert out == b"hello " * 100 and codec.memory_estimate == 0
    _, keep = neg("permessage-deflate")
    keep.compress(b"x" * 1000)
    # window bits 12, memLevel 5: 16 KiB + 16 KiB + 6 KiB
    assert keep.memory_estimate == (1 << 14) + (1 << 14) + 6144


def test_client_told_window_8_sends_uncompressed_and_still_inflates():
    """Our offer names ``client_max_window_bits`` without a value (any 8..15), so a server may
    answer 8 (Node ``ws`` with ``clientMaxWindowBits: 8`` does); zlib cannot compress within 8,
    so every message goes out uncompressed (RFC 7692 6.1) and the server's still inflate.
    Was: the handshake failed with ``client_max_window_bits=8 cannot be honoured by zlib``."""
    from powpow.ws.protocol import Protocol

    codec = client_accept(["permessage-deflate; client_max_window_bits=8"], DeflateOptions())
    p = Protocol(True, deflate=codec)
    frames = b"".join(bytes(b) for b in p.send_message(b"a" * 100000, False))
    assert frames[0] & 0x40 == 0  # RSV1 clear: not compressed
    assert len(frames) > 100000 and codec.memory_estimate == 0
    c = zlib.compressobj(6, zlib.DEFLATED, -9)
    data = (c.compress(b"b" * 5000) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert codec.inflate(data, 10000) + codec.finish(10000) == b"b" * 5000


def _bfinal(msg: bytes) -> bytes:
    """``msg`` as a deflate stream that ends with a BFINAL block (Z_FINISH)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(msg) + c.flush(zlib.Z_FINISH)


@pytest.mark.parametrize("takeover", [True, False])
def test_a_message_flushed_with_bfinal_does_not_break_the_next_ones(takeover):
    """RFC 7692 7.2.3.4 lets a sender flush with a BFINAL block; its next message is a new
    deflate stream.  zlib stops at the end of a stream and keeps what follows in
    ``unused_data``: every later message came out empty (``b""``) and their bytes piled up
    there, past the message limit, without bound."""
    offer = "permessage-deflate" + ("" if takeover else "; client_no_context_takeover")
    _, codec = neg(offer)
    # the RFC's own example: "Hello" in a BFINAL block, then 00 (an empty stored block's start)
    rfc = bytes([0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00])
    assert codec.inflate(rfc, 1000) + codec.finish(1000) == b"Hello"
    # a sender that ends its stream with the message and adds no 00: the tail alone is skipped
    assert codec.inflate(_bfinal(b"World"), 1000) + codec.finish(1000) == b"World"
    assert codec.inflate(_bfinal(b"again"), 1000) + codec.finish(1000) == b"again"
    # then ordinary sync-flushed messages on one stream (context takeover on the sender's side)
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    for _ in range(20):
        msg = os.urandom(20000)
        data = (c.compress(msg) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
        assert codec.inflate(data, 1 << 20) + codec.finish(1 << 20) == msg
        held = codec._d.unused_data if codec._d is not None else b""
        assert len(held) < 16, len(held)
    # a stream that ended in the middle of a message goes on with the next stream's bytes
    two = _bfinal(b"one ") + (lambda d: d.compress(b"two") + d.flush(zlib.Z_SYNC_FLUSH))(
        zlib.compressobj(6, zlib.DEFLATED, -15))[:-4]
    assert codec.inflate(two, 1000) + codec.finish(1000) == b"one two"


def test_the_cap_holds_across_bfinal_streams():
    """Several BFINAL streams in one message still count against one cap (1009 past it)."""
    from powpow.ws.errors import WsProtocolError

    _, codec = neg("permessage-deflate")
    with pytest.raises(WsProtocolError) as e:
        codec.inflate(_bfinal(b"x" * 600) + _bfinal(b"y" * 600), 1000)
    assert e.value.code == 1009
