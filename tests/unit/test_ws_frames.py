"""WebSocket frames: lengths 7/16/64-bit, masking, and any split of the input gives the same frames."""
import os
import random

import pytest

from powpow.ws.errors import WsProtocolError
from powpow.ws.frames import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, FrameParser, build_frame,
                              close_payload, frame_header, valid_close_code)


def no_check(*args):
    pass


def parse(chunks, complete=True):
    p = FrameParser(no_check)
    out = []
    for c in chunks:
        out.extend(p.feed_all(memoryview(c)))
    assert (p.buffered == 0) == complete
    return [(f, r, o, bytes(pl)) for f, r, o, pl in out]


def splits(data, rnd):
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    for _ in range(20):
        cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randrange(1, 8))))
        yield [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


@pytest.mark.parametrize("n,hlen", [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (70000, 10)])
def test_header_length_encodings(n, hlen):
    assert len(frame_header(OP_BINARY, n)) == hlen
    assert len(frame_header(OP_BINARY, n, mask=b"abcd")) == hlen + 4
    payload = os.urandom(n)
    for mask in (None, b"\x01\x02\x03\x04"):
        frames = parse([build_frame(OP_BINARY, payload, mask=mask)])
        assert frames == [(True, 0, OP_BINARY, payload)]


def test_any_split_gives_the_same_frames():
    rnd = random.Random(1)
    wire = b"".join([
        build_frame(OP_TEXT, "héllo".encode(), fin=False, mask=b"abcd"),
        build_frame(OP_PING, b"p", mask=b"\x00\xff\x00\xff"),
        build_frame(OP_CONT, b" world", mask=b"wxyz"),
        build_frame(OP_BINARY, os.urandom(300), mask=b"1234"),
        build_frame(OP_BINARY, os.urandom(70000), rsv1=True, mask=b"5678"),
        build_frame(OP_CLOSE, close_payload(1000, "bye"), mask=b"abcd"),
    ])
    whole = parse([wire])
    assert [f[2] for f in whole] == [OP_TEXT, OP_PING, OP_CONT, OP_BINARY, OP_BINARY, OP_CLOSE]
    assert whole[4][1] == 4  # RSV1
    small = wire[:400]  # byte by byte on the first frames (the 70000-byte one would be slow)
    ref = parse([small], False)
    assert len(ref) == 4
    assert parse([small[i:i + 1] for i in range(len(small))], False) == ref
    for chunks in splits(wire, rnd):
        if len(chunks) < 1000:
            assert parse(chunks) == whole


def test_header_checked_before_payload_arrives():
    seen = []

    def check(fin, rsv, op, length, masked):
        seen.append(length)
        if length > 1000:
            raise WsProtocolError(1009, "too big")

    p = FrameParser(check)
    head = frame_header(OP_BINARY, 1 << 40)
    with pytest.raises(WsProtocolError) as e:
        p.feed_all(head)  # no payload byte yet: refused from the header
    assert e.value.code == 1009 and seen == [1 << 40]


def test_64bit_length_with_top_bit_is_an_error():
    p = FrameParser(no_check)
    with pytest.raises(WsProtocolError) as e:
        p.feed_all(bytes([0x82, 127]) + (1 << 63).to_bytes(8, "big"))
    assert e.value.code == 1002


def test_close_payload_and_codes():
    assert close_payload(None) == b""
    assert close_payload(1000, "") == b"\x03\xe8"
    long = close_payload(1000, "é" * 100)  # 200 bytes of UTF-8, cut without splitting a character
    assert len(long) <= 125
    long[2:].decode("utf-8")
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999):
        assert valid_close_code(code)
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535):
        assert not valid_close_code(code)
