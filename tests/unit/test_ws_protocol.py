"""The WebSocket state machine: every validation with its close code, the close handshake, fragments, UTF-8."""
import os
import struct
import zlib

import pytest

from powpow.ws.deflate import DeflateOptions, PerMessageDeflate
from powpow.ws.frames import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, FrameParser,
                              build_frame, close_payload, frame_header)
from powpow.ws.protocol import CLOSE, CLOSED, CLOSING, MAX_PONGS_OWED, MESSAGE, OPEN, PING, PONG, Protocol

M = b"\x11\x22\x33\x44"

try:
    import tracemalloc
except ImportError:  # PyPy: no allocation tracing; the structural checks below still run
    tracemalloc = None


def peak_bytes(fn):
    """Run ``fn``; its peak traced allocation in bytes (None where tracemalloc is missing)."""
    if tracemalloc is None:
        fn()
        return None
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def cf(op, payload=b"", fin=True, rsv1=False):
    """A client frame (masked)."""
    return build_frame(op, payload, fin, rsv1, mask=M)


def sent_frames(proto, client=False):
    """Parse what the protocol queued to send (as the peer would)."""
    p = FrameParser(lambda *a: None)
    return [(o, bytes(pl)) for f, r, o, pl in p.feed_all(b"".join(bytes(b) for b in proto.data_to_send()))]


def feed(proto, data, split=False):
    if not split:
        return proto.receive_data(memoryview(data))
    out = []
    for i in range(len(data)):
        out += proto.receive_data(data[i:i + 1])
    return out


CASES = [
    # (name, server_side, wire, expected close code)
    ("unmasked client frame", True, build_frame(OP_TEXT, b"hi"), 1002),
    ("masked server frame", False, cf(OP_TEXT, b"hi"), 1002),
    ("rsv1 without extension", True, cf(OP_TEXT, b"hi", rsv1=True), 1002),
    ("rsv2", True, bytes([0xA1, 0x80]) + M, 1002),
    ("rsv3", True, bytes([0x91, 0x80]) + M, 1002),
    ("unknown data opcode 3", True, bytes([0x83, 0x80]) + M, 1002),
    ("unknown control opcode 11", True, bytes([0x8B, 0x80]) + M, 1002),
    ("control over 125 bytes", True, cf(OP_PING, b"x" * 126), 1002),
    ("fragmented control", True, cf(OP_PING, b"x", fin=False), 1002),
    ("continuation with nothing to continue", True, cf(OP_CONT, b"x"), 1002),
    ("new data frame inside a fragmented message", True, cf(OP_TEXT, b"a", fin=False) + cf(OP_TEXT, b"b"), 1002),
    ("close payload of 1 byte", True, cf(OP_CLOSE, b"\x03"), 1002),
    ("close code 1005 on the wire", True, cf(OP_CLOSE, struct.pack("!H", 1005)), 1002),
    ("close code 999", True, cf(OP_CLOSE, struct.pack("!H", 999)), 1002),
    ("close code 2000", True, cf(OP_CLOSE, struct.pack("!H", 2000)), 1002),
    ("close code 5000", True, cf(OP_CLOSE, struct.pack("!H", 5000)), 1002),
    ("invalid UTF-8 text", True, cf(OP_TEXT, b"\xff\xfe"), 1007),
    ("invalid UTF-8 in a fragment", True, cf(OP_TEXT, b"ok", fin=False) + cf(OP_CONT, b"\xc0\xaf"), 1007),
    ("truncated UTF-8 at the end", True, cf(OP_TEXT, b"ok\xe2\x82"), 1007),
    ("invalid UTF-8 in a close reason", True, cf(OP_CLOSE, b"\x03\xe8\xff"), 1007),
    ("frame over max_frame_size", True, cf(OP_BINARY, b"x" * 2000), 1009),
    ("message over max_message_size", True,
     cf(OP_BINARY, b"x" * 3000, fin=False) + cf(OP_CONT, b"x" * 1500), 1009),
    ("too many fragments", True, cf(OP_BINARY, b"x", fin=False) + cf(OP_CONT, b"x", fin=False) * 20, 1008),
]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name,server,wire,code", CASES, ids=[c[0] for c in CASES])
def test_violation_closes_with_the_right_code(name, server, wire, code, split):
    proto = Protocol(client=not server, max_message_size=4000, max_frame_size=1024 * 3, max_fragments=10)
    if name == "frame over max_frame_size":
        proto.max_frame_size = 1024
    events = feed(proto, wire, split)
    assert events[-1][:2] == (CLOSE, code), events
    assert proto.state == CLOSED
    frames = sent_frames(proto)
    assert frames[-1][0] == OP_CLOSE and struct.unpack("!H", frames[-1][1][:2])[0] == code
    # frames after the close are ignored
    assert proto.receive_data(cf(OP_TEXT, b"late") if server else build_frame(OP_TEXT, b"late")) == []
    assert proto.data_to_send() == []


def test_oversized_frame_is_refused_from_its_header():
    proto = Protocol(max_message_size=1000)
    events = proto.receive_data(frame_header(OP_BINARY, 1 << 30, mask=M))  # no payload sent at all
    assert events == [(CLOSE, 1009, events[0][2])]
    assert proto.buffered == 0


def test_messages_fragmented_and_interleaved_control():
    proto = Protocol()
    wire = (cf(OP_TEXT, "hé".encode()[:2], fin=False) + cf(OP_PING, b"p1") + cf(OP_CONT, "hé".encode()[2:], fin=False)
            + cf(OP_PONG, b"q") + cf(OP_CONT, b"!") + cf(OP_BINARY, b"\x00\x01"))
    for split in (False, True):
        events = feed(proto, wire, split)
        assert events == [(PING, b"p1"), (PONG, b"q"), (MESSAGE, "hé!", True), (MESSAGE, b"\x00\x01", False)]
        assert sent_frames(proto) == [(OP_PONG, b"p1")]


PINGS = [
    # (pings in one read, the pongs that answer them)
    (1, [b"0"]),
    (10, [b"%d" % i for i in range(10)]),  # Autobahn 2.10: ten back to back, ten pongs expected
    (MAX_PONGS_OWED, [b"%d" % i for i in range(MAX_PONGS_OWED)]),
    (MAX_PONGS_OWED + 1, [b"%d" % MAX_PONGS_OWED]),  # a flood: one pong, for the latest ping
    (1000, [b"999"]),
]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("n,pongs", PINGS, ids=[str(c[0]) for c in PINGS])
def test_pings_not_yet_answered_are_answered_by_one_pong_past_the_limit(n, pongs, split):
    proto = Protocol()
    wire = b"".join(cf(OP_PING, b"%d" % i) for i in range(n)) + cf(OP_TEXT, b"after")
    events = feed(proto, wire, split)
    assert events == [(PING, b"%d" % i) for i in range(n)] + [(MESSAGE, "after", True)]  # each ping reported
    assert sent_frames(proto) == [(OP_PONG, p) for p in pongs]
    assert proto.pongs_owed == [] and sent_frames(proto) == []
    # taken: the next pings are owed one for one again
    proto.receive_data(cf(OP_PING, b"a") + cf(OP_PING, b"b"))
    assert sent_frames(proto) == [(OP_PONG, b"a"), (OP_PONG, b"b")]


def test_pongs_owed_leave_before_the_close_and_never_after_ours():
    proto = Protocol()
    events = proto.receive_data(cf(OP_PING, b"p") + cf(OP_CLOSE, close_payload(1000)))
    assert events == [(PING, b"p"), (CLOSE, 1000, "")]
    assert sent_frames(proto) == [(OP_PONG, b"p"), (OP_CLOSE, b"\x03\xe8")]
    proto = Protocol()
    proto.receive_data(cf(OP_PING, b"p"))
    assert proto.close(1000)  # ours went out first (its own write): the pong owed is dropped
    assert proto.take_pongs() == [] and proto.pongs_owed == []


def test_keep_latest_pong_owes_one_for_the_latest_ping():
    proto = Protocol()
    proto.receive_data(cf(OP_PING, b"1") + cf(OP_PING, b"2"))
    proto.keep_latest_pong()  # the writer is over its high water mark
    proto.receive_data(cf(OP_PING, b"3") + cf(OP_PING, b"4"))
    assert proto.pongs_owed == [b"4"]
    assert sent_frames(proto) == [(OP_PONG, b"4")]


@pytest.mark.parametrize("max_frames", [1, 3, 256])
@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_receive_data_stops_after_max_frames_and_goes_on_from_the_rest(max_frames, split):
    wire = b"".join(cf(OP_BINARY, b"%d" % i) + cf(OP_TEXT, b"a", fin=False) + cf(OP_CONT, b"b") for i in range(300))
    wire += cf(OP_TEXT, "é".encode()[:1], fin=False)  # an incomplete message at the end
    expected = []
    for i in range(300):
        expected += [(MESSAGE, b"%d" % i, False), (MESSAGE, "ab", True)]
    proto = Protocol()
    events = []
    chunks = [wire[i:i + 1] for i in range(len(wire))] if split else [memoryview(wire)]
    for chunk in chunks:
        got = proto.receive_data(chunk, max_frames)
        assert len(got) <= max_frames
        events += got
        while proto.input_pending:  # what an I/O layer does on its next turn
            got = proto.receive_data(b"", max_frames)
            assert len(got) <= max_frames
            events += got
    assert events == expected
    assert proto.buffered == 1  # the message in progress: the first byte of "é", nothing else held
    # input that arrives while frames are still left is parsed after them
    proto = Protocol()
    events = proto.receive_data(wire, max_frames)
    events += proto.receive_data(cf(OP_CONT, "é".encode()[1:]), max_frames)
    while proto.input_pending:
        events += proto.receive_data(b"", max_frames)
    assert events == expected + [(MESSAGE, "é", True)]


def test_frames_left_by_max_frames_still_fail_the_connection():
    proto = Protocol()
    events = proto.receive_data(cf(OP_TEXT, b"ok") * 3 + cf(OP_TEXT, b"\xff"), 2)
    assert events == [(MESSAGE, "ok", True)] * 2 and proto.input_pending
    events = proto.receive_data(b"", 2)
    assert events == [(MESSAGE, "ok", True), (CLOSE, 1007, "invalid UTF-8 in a text message")]
    assert not proto.input_pending and proto.buffered == 0


def test_close_handshake_echoes_the_code():
    proto = Protocol()
    events = proto.receive_data(cf(OP_CLOSE, close_payload(1001, "going")))
    assert events == [(CLOSE, 1001, "going")]
    assert sent_frames(proto) == [(OP_CLOSE, b"\x03\xe9")]
    assert proto.state == CLOSED
    # empty close: answered with an empty close, reported as 1005
    proto = Protocol()
    assert proto.receive_data(cf(OP_CLOSE)) == [(CLOSE, 1005, "")]
    assert sent_frames(proto) == [(OP_CLOSE, b"")]


def test_we_close_first_then_peer_answers():
    proto = Protocol(client=True)
    out = proto.close(1000, "bye")
    assert proto.state == CLOSING and out
    assert proto.close() == [] and proto.send_text("x") == []  # nothing after our close
    events = proto.receive_data(build_frame(OP_TEXT, b"in flight") + build_frame(OP_CLOSE, b"\x03\xe8"))
    assert events == [(MESSAGE, "in flight", True), (CLOSE, 1000, "")]
    assert proto.state == CLOSED and proto.data_to_send() == []


BAD_CLOSE = [
    # (name, code, reason, exception) -- RFC 6455 7.4.1: 1005/1006/1015 are never sent; 5.5: 125-byte payload
    ("1006 is for reporting only", 1006, "", ValueError),
    ("1015 is for reporting only", 1015, "", ValueError),
    ("1005 is for reporting only", 1005, "", ValueError),
    ("1004 is reserved", 1004, "", ValueError),
    ("below 1000", 999, "", ValueError),
    ("unassigned 2000", 2000, "", ValueError),
    ("over 4999", 5000, "", ValueError),
    ("over 16 bits", 70000, "r", ValueError),
    ("negative", -1, "", ValueError),
    ("reason over 123 bytes", 1000, "é" * 62, ValueError),
    ("reason without a code", None, "bye", ValueError),
    ("reason as bytes", 1000, b"bye", TypeError),
    ("code as str", "1000", "", TypeError),
]


@pytest.mark.parametrize("name,code,reason,exc", BAD_CLOSE, ids=[c[0] for c in BAD_CLOSE])
def test_bad_close_arguments_raise_before_anything_changes(name, code, reason, exc):
    proto = Protocol()
    with pytest.raises(exc):
        proto.close(code, reason)
    assert proto.state == OPEN and not proto.close_sent
    # nothing was spent: the connection can still close properly (the 1011 of a failed handler)
    proto.outgoing.extend(proto.close(1011, "internal error"))
    assert sent_frames(proto) == [(OP_CLOSE, b"\x03\xf3internal error")]
    assert proto.state == CLOSING


@pytest.mark.parametrize("code,reason,payload", [
    (None, "", b""), (1000, "", b"\x03\xe8"), (1014, "x", b"\x03\xf6x"), (3000, "", b"\x0b\xb8"),
    (4999, "é" * 61 + "x", b"\x13\x87" + ("é" * 61 + "x").encode()),  # exactly 123 bytes of reason
])
def test_valid_close_arguments_go_on_the_wire(code, reason, payload):
    proto = Protocol()
    proto.outgoing.extend(proto.close(code, reason))
    assert sent_frames(proto) == [(OP_CLOSE, payload)]


def test_failing_with_a_long_internal_reason_still_closes():
    # our own reasons (an inflate error's text) are cut to fit, never refused
    proto = Protocol()
    proto._fail(1007, "invalid compressed data: " + "z" * 200, [])
    [(op, payload)] = sent_frames(proto)
    assert op == OP_CLOSE and payload[:2] == b"\x03\xef" and len(payload) == 125


def test_client_masks_every_frame_with_fresh_keys():
    proto = Protocol(client=True)
    keys = set()
    for _ in range(2000):
        head, body = proto.send_binary(b"abcd")
        assert head[1] & 0x80
        keys.add(bytes(head[2:6]))
    assert len(keys) > 1900  # 2000 random 32-bit keys: collisions are rare
    server = Protocol()
    assert server.receive_data(b"".join(bytes(b) for b in proto.send_text("é"))) == [(MESSAGE, "é", True)]


def test_one_byte_fragments_cost_no_object_each():
    n = 30_000
    frag = cf(OP_CONT, b"x", fin=False)
    wire = cf(OP_BINARY, b"x", fin=False) + frag * (n - 2) + cf(OP_CONT, b"x")
    proto = Protocol(max_fragments=None, max_message_size=None)
    events = []

    def run():
        for i in range(0, len(wire) - 7, 4096):
            events.extend(proto.receive_data(wire[i:min(i + 4096, len(wire) - 7)]))
        # all but the last fragment in: the message so far is one bytearray
        assert type(proto._msg) is bytearray and len(proto._msg) == n - 1
        events.extend(proto.receive_data(wire[len(wire) - 7:]))

    peak = peak_bytes(run)
    assert events == [(MESSAGE, b"x" * n, False)]
    # one Python object per fragment would be >= 33 bytes each (1 MB); this is the
    # input chunk, the growing message and the final bytes
    assert peak is None or peak < 400_000, peak
    proto = Protocol(max_fragments=1000)
    events = proto.receive_data(wire)
    assert events[-1][:2] == (CLOSE, 1008)


def test_deflate_round_trip_threshold_and_bomb():
    opts = DeflateOptions(threshold=50)
    client = Protocol(client=True, deflate=PerMessageDeflate(False, 12, False, 15, opts))
    server = Protocol(deflate=PerMessageDeflate(False, 12, False, 15, opts), max_message_size=100_000)
    small = client.send_text("tiny")
    assert not small[0][0] & 0x40  # under the threshold: uncompressed
    big = client.send_text("abc" * 1000)
    assert big[0][0] & 0x40 and len(big[1]) < 200
    got = server.receive_data(b"".join(bytes(b) for b in small + big))
    assert got == [(MESSAGE, "tiny", True), (MESSAGE, "abc" * 1000, True)]
    # context takeover: the second identical message is smaller still
    again = client.send_text("abc" * 1000)
    assert len(again[1]) < len(big[1])
    assert server.receive_data(b"".join(bytes(b) for b in again)) == [(MESSAGE, "abc" * 1000, True)]
    # a 1 GB bomb in a few KB: refused with 1009 without inflating it
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = c.compress(b"\x00" * (64 << 20)) + c.flush(zlib.Z_SYNC_FLUSH)
    events = []
    peak = peak_bytes(lambda: events.extend(server.receive_data(cf(OP_BINARY, bomb[:-4], rsv1=True))))
    assert events[-1][:2] == (CLOSE, 1009)
    assert peak is None or peak < 4 * 100_000 + len(bomb) * 4, peak


def test_invalid_compressed_data_is_1007():
    server = Protocol(deflate=PerMessageDeflate(False, 12, False, 15, DeflateOptions()))
    events = server.receive_data(cf(OP_BINARY, b"\xff\xff\xff\xff\xff", rsv1=True))
    assert events[-1][:2] == (CLOSE, 1007)


def test_binary_64bit_length_message():
    payload = os.urandom(70000)
    proto = Protocol()
    assert proto.receive_data(cf(OP_BINARY, payload)) == [(MESSAGE, payload, False)]


@pytest.mark.parametrize("fragmented", [False, True])
def test_invalid_utf8_fails_before_the_frame_is_complete(fragmented):
    """Autobahn 6.4.x: the bad byte arrives first; the rest of the frame never needs to."""
    proto = Protocol()
    prefix = cf(OP_TEXT, "κόσμε".encode(), fin=False) if fragmented else b""
    op = OP_CONT if fragmented else OP_TEXT
    bad = "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"x" * 5000
    wire = prefix + cf(op, bad)
    # header (16-bit length) + key + the good text + 0xF4 (a valid lead byte) + 0x90 (invalid after it)
    cut = len(prefix) + 4 + 4 + len("κόσμε".encode()) + 2
    events = proto.receive_data(wire[:cut - 1])
    assert events == []  # all good so far
    events = proto.receive_data(wire[cut - 1:cut])  # the byte that makes it invalid
    assert events and events[-1][:2] == (CLOSE, 1007)


@pytest.mark.parametrize("how", ["partial frame", "non-final fragment"])
def test_a_surrogate_fails_as_soon_as_its_second_byte_arrives(how):
    """ED A0..BF starts a UTF-16 surrogate, never valid UTF-8.  CPython's incremental decoder
    held those two bytes back as possibly incomplete, so the 1007 came one read late (when
    the next byte arrived); PyPy's failed at once.  Both now fail on the second byte."""
    proto = Protocol()
    if how == "partial frame":
        wire = cf(OP_TEXT, b"ab\xed\xa0\x80" + b"x" * 500)
        cut = 4 + 4 + 2 + 2  # header (16-bit length) + key + "ab" + ED A0
    else:
        wire = cf(OP_TEXT, b"ab\xed\xa0", fin=False)
        cut = len(wire)
    assert proto.receive_data(wire[:cut - 1]) == []
    events = proto.receive_data(wire[cut - 1:cut])
    assert events and events[-1][:2] == (CLOSE, 1007)


def test_partial_checks_do_not_reject_valid_text_split_anywhere():
    text = ("héllo wörld €𝄞 " * 200).encode()
    wire = cf(OP_TEXT, text[:1000], fin=False) + cf(OP_CONT, text[1000:])
    for step in (1, 3, 7, 100):
        proto = Protocol()
        events = []
        for i in range(0, len(wire), step):
            events += proto.receive_data(wire[i:i + step])
        assert events == [(MESSAGE, text.decode(), True)]
    # compressed text frames are not UTF-8-checked before inflating
    opts = DeflateOptions(threshold=0)
    client = Protocol(client=True, deflate=PerMessageDeflate(False, 12, False, 15, opts))
    server = Protocol(deflate=PerMessageDeflate(False, 12, False, 15, opts))
    w = b"".join(bytes(b) for b in client.send_text(text.decode()))
    events = []
    for i in range(0, len(w), 5):
        events += server.receive_data(w[i:i + 5])
    assert events == [(MESSAGE, text.decode(), True)]


def test_max_bytes_stops_a_turn_once_its_messages_hold_that_many_bytes():
    """``receive_data(data, max_frames, max_bytes)``: parsing stops once the messages
    returned hold ``max_bytes`` (the input left waits for ``receive_data(b"")``), so a
    turn of compressed frames cannot inflate to many MiB before its owner may pause."""
    proto = Protocol()
    body = os.urandom(300 << 10)
    wire = b"".join(cf(OP_BINARY, body) for _ in range(10))
    events = proto.receive_data(wire, 256, 1 << 20)
    assert len(events) == 4 and proto.input_pending  # 4 x 300 KiB passes 1 MiB
    rest = []
    while proto.input_pending:
        rest += proto.receive_data(b"", 256, 1 << 20)
    assert len(rest) == 6 and all(e == (MESSAGE, body, False) for e in events + rest)


def test_max_bytes_counts_inflated_bytes():
    """Twenty compressed messages (a few KiB on the wire, 1 MiB each inflated): one turn
    with a 1 MiB budget inflates one of them, not all twenty."""
    client = Protocol(client=True, deflate=PerMessageDeflate(False, 12, False, 15, DeflateOptions()),
                      max_message_size=2 << 20)
    server = Protocol(deflate=PerMessageDeflate(False, 12, False, 15, DeflateOptions()), max_message_size=2 << 20)
    wire = b"".join(bytes(b) for _ in range(20) for b in client.send_message(b"\0" * (1 << 20), False))
    assert len(wire) < 100 << 10
    events = server.receive_data(wire, 256, 1 << 20)
    assert len(events) == 1 and server.input_pending
    while server.input_pending:
        events += server.receive_data(b"", 256, 1 << 20)
    assert len(events) == 20 and all(e == (MESSAGE, b"\0" * (1 << 20), False) for e in events)
