"""permessage-deflate negotiation (RFC 7692) in both roles, and the memory of the codec."""
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
    (["permessage-deflate; client_max_window_bits=8"], DeflateOptions()),
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
