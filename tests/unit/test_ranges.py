"""Range requests (RFC 9110 §14): the parser's case table, and 206 / 416 /
multipart/byteranges plans whose assembled bytes equal the expected slices."""
import email.parser
import os

import pytest

from powpow.http._ranges import MAX_RANGES, multipart_byteranges, parse_range
from powpow.http.static import FilePart, StaticOptions, plan_static

DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
SIZE = len(DATA)

RANGE_CASES = [
    # (Range value, size, expected, why)
    ("bytes=0-499", SIZE, [(0, 499)], "first 500"),
    ("bytes=500-999", SIZE, [(500, 999)], "second 500"),
    ("bytes=-500", SIZE, [(SIZE - 500, SIZE - 1)], "suffix"),
    ("bytes=9500-", SIZE, [(9500, SIZE - 1)], "open"),
    ("bytes=0-0", SIZE, [(0, 0)], "first byte"),
    ("bytes=-1", SIZE, [(SIZE - 1, SIZE - 1)], "last byte"),
    ("bytes=0-99999", SIZE, [(0, SIZE - 1)], "last-pos clamped"),
    ("bytes=-99999", SIZE, [(0, SIZE - 1)], "suffix longer than file"),
    ("bytes=0-", SIZE, [(0, SIZE - 1)], "whole file as a range"),
    ("BYTES = 1-2", SIZE, [(1, 2)], "unit case-insensitive, OWS"),
    ("bytes=1-2, 5-6", SIZE, [(1, 2), (5, 6)], "two"),
    ("bytes=5-6,1-2", SIZE, [(1, 2), (5, 6)], "sorted"),
    ("bytes=0-10,5-20", SIZE, [(0, 20)], "overlap coalesced"),
    ("bytes=0-9,10-19", SIZE, [(0, 19)], "adjacent coalesced"),
    ("bytes=0-1,,4-5, ", SIZE, [(0, 1), (4, 5)], "empty list elements"),
    ("bytes=0-1,99999-", SIZE, [(0, 1)], "unsatisfiable member dropped"),
    ("bytes=%d-" % SIZE, SIZE, [], "first-pos == size"),
    ("bytes=99999-100000", SIZE, [], "beyond end"),
    ("bytes=-0", SIZE, [], "zero suffix"),
    ("bytes=99999-,-0", SIZE, [], "all unsatisfiable"),
    ("bytes=5-1", SIZE, None, "last < first: invalid"),
    ("bytes=0-1,5-1", SIZE, None, "one invalid spec spoils the field"),
    ("bytes=-", SIZE, None, "no numbers"),
    ("bytes=", SIZE, None, "no specs"),
    ("bytes=,", SIZE, None, "only empty elements"),
    ("bytes=a-b", SIZE, None, "not digits"),
    ("bytes=1-2-3", SIZE, None, "extra dash"),
    ("bytes=+1-2", SIZE, None, "sign"),
    ("bytes 0-1", SIZE, None, "no '='"),
    ("items=0-1", SIZE, None, "other unit"),
    ("bytes=0x10-20", SIZE, None, "hex"),
    ("bytes=1" + "0" * 5000 + "-", SIZE, [], "huge first-pos, no int() DoS"),
    ("bytes=0-" + "9" * 5000, SIZE, [(0, SIZE - 1)], "huge last-pos"),
    (",".join(["bytes=0-0"] + ["%d-%d" % (i * 10, i * 10) for i in range(1, MAX_RANGES)]),
     SIZE, [(i * 10, i * 10) for i in range(MAX_RANGES)], "exactly MAX_RANGES"),
    (",".join(["bytes=0-0"] + ["%d-%d" % (i * 10, i * 10) for i in range(1, MAX_RANGES + 1)]),
     SIZE, None, "too many ranges: ignored"),
    ("bytes=0-,0-,0-", SIZE, None, "more than 2x the file: ignored"),
    ("bytes=0-,0-", SIZE, [(0, SIZE - 1)], "exactly 2x: coalesced"),
    ("bytes=0-", 0, [], "empty file: 0- unsatisfiable"),
    ("bytes=-5", 0, None, "empty file: suffix ignored (200)"),
    ("bytes=0-0", 1, [(0, 0)], "one-byte file"),
]


@pytest.mark.parametrize("value,size,expected,why", RANGE_CASES, ids=[c[3] for c in RANGE_CASES])
def test_parse_range(value, size, expected, why):
    assert parse_range(value, size) == expected


def assemble(plan):
    out = bytearray()
    for part in plan.parts:
        if isinstance(part, FilePart):
            out += os.pread(part.fd, part.count, part.offset)  # the plan's own descriptor
        else:
            out += part
    assert len(out) == plan.content_length
    return bytes(out)


@pytest.fixture
def root(tmp_path):
    (tmp_path / "data.bin").write_bytes(DATA)
    (tmp_path / "page.html").write_bytes(b"<p>0123456789</p>")
    (tmp_path / "empty.txt").write_bytes(b"")
    return tmp_path


def get(root, path, method="GET", **headers):
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    return plan_static(method, path, h.get, StaticOptions(str(root)))


@pytest.mark.parametrize("value,first,last", [
    ("bytes=0-499", 0, 499), ("bytes=-500", SIZE - 500, SIZE - 1),
    ("bytes=9500-", 9500, SIZE - 1), ("bytes=100-100", 100, 100),
    ("bytes=0-10,5-20", 0, 20),
])
def test_single_range_206(root, value, first, last):
    plan = get(root, "/data.bin", range=value)
    assert plan.status == 206
    assert plan.header("Content-Range") == "bytes %d-%d/%d" % (first, last, SIZE)
    assert plan.header("Content-Type") == "application/octet-stream"
    assert plan.header("Accept-Ranges") == "bytes"
    assert plan.parts == [FilePart(None, os.path.realpath(str(root / "data.bin")), first, last - first + 1)]
    assert assemble(plan) == DATA[first:last + 1]


def parse_multipart(plan):
    ctype = plan.header("Content-Type")
    assert ctype.startswith("multipart/byteranges; boundary=")
    raw = b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + assemble(plan)
    msg = email.parser.BytesParser().parsebytes(raw)
    assert msg.is_multipart()
    return [(p["Content-Type"], p["Content-Range"], p.get_payload(decode=True))
            for p in msg.get_payload()]


def test_multi_range(root):
    plan = get(root, "/data.bin", range="bytes=-10, 0-4, 100-199")
    assert plan.status == 206
    assert plan.header("Content-Range") is None
    # bytes parts (delimiters, part headers) interleave with FileParts
    kinds = [type(p).__name__ for p in plan.parts]
    assert kinds == ["bytes", "FilePart", "bytes", "FilePart", "bytes", "FilePart", "bytes"]
    parts = parse_multipart(plan)
    assert parts == [
        ("application/octet-stream", "bytes 0-4/%d" % SIZE, DATA[0:5]),
        ("application/octet-stream", "bytes 100-199/%d" % SIZE, DATA[100:200]),
        ("application/octet-stream", "bytes %d-%d/%d" % (SIZE - 10, SIZE - 1, SIZE), DATA[-10:]),
    ]
    body = assemble(plan)
    boundary = plan.header("Content-Type").split("boundary=")[1].encode()
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    assert body.count(b"--" + boundary) == 4
    head = get(root, "/data.bin", range="bytes=0-4,100-199", method="HEAD")
    assert head.status == 200 and head.content_length == SIZE


def test_multi_range_parts_keep_the_content_type(root):
    plan = get(root, "/page.html", range="bytes=0-2,5-6")
    parts = parse_multipart(plan)
    assert [p[0] for p in parts] == ["text/html"] * 2
    assert [p[2] for p in parts] == [b"<p>", b"23"]


def test_multipart_builder_exact_bytes(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"0123456789")
    fd = os.open(str(f), os.O_RDONLY)
    try:
        ctype, parts, length = multipart_byteranges(fd, "/f", [(0, 1), (5, 5)], 10, "text/plain", "B")
    finally:
        os.close(fd)
    assert ctype == "multipart/byteranges; boundary=B"
    assert parts == [
        b"--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n",
        FilePart(None, "/f", 0, 2),
        b"\r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-5/10\r\n\r\n",
        FilePart(None, "/f", 5, 1),
        b"\r\n--B--\r\n",
    ]
    assert length == sum(len(p) if isinstance(p, bytes) else p.count for p in parts)
    # each file part has a descriptor of its own, still readable after the original closed
    fds = [p.fd for p in parts if isinstance(p, FilePart)]
    assert len(set(fds)) == 2 and fd not in fds
    assert [os.pread(p.fd, p.count, p.offset) for p in parts if isinstance(p, FilePart)] == [b"01", b"5"]
    for p in parts:
        if isinstance(p, FilePart):
            p.close()
            p.close()


def test_unsatisfiable_416(root):
    plan = get(root, "/data.bin", range="bytes=%d-" % SIZE)
    assert plan.status == 416
    assert plan.header("Content-Range") == "bytes */%d" % SIZE
    assert all(not isinstance(p, FilePart) for p in plan.parts)
    plan = get(root, "/empty.txt", range="bytes=0-")
    assert plan.status == 416 and plan.header("Content-Range") == "bytes */0"


@pytest.mark.parametrize("value", ["bytes=5-1", "bytes=abc", "pages=1-2", "bytes=-",
                                   "bytes=0-,0-,0-"])
def test_invalid_or_refused_range_ignored(root, value):
    plan = get(root, "/data.bin", range=value)
    assert plan.status == 200 and plan.header("Content-Range") is None
    assert assemble(plan) == DATA


def test_empty_file_suffix_range_is_200(root):
    plan = get(root, "/empty.txt", range="bytes=-5")
    assert plan.status == 200 and plan.content_length == 0 and plan.parts == []


def test_if_range(root):
    full = get(root, "/data.bin")
    etag, lm = full.header("ETag"), full.header("Last-Modified")
    cases = [
        (etag, 206, "matching strong etag"),
        ('"stale"', 200, "other etag"),
        ("W/" + etag, 200, "weak etag never matches"),
        (lm, 206, "exact date"),
        ("Mon, 01 Jan 2001 00:00:00 GMT", 200, "other date"),
        ("garbage", 200, "unparseable"),
    ]
    for if_range, status, why in cases:
        plan = get(root, "/data.bin", range="bytes=0-9", if_range=if_range)
        assert plan.status == status, why
        assert assemble(plan) == (DATA[:10] if status == 206 else DATA), why
    # If-Range also guards an unsatisfiable Range: mismatch -> 200, not 416
    plan = get(root, "/data.bin", range="bytes=%d-" % SIZE, if_range='"stale"')
    assert plan.status == 200


def test_conditionals_before_range(root):
    etag = get(root, "/data.bin").header("ETag")
    assert get(root, "/data.bin", range="bytes=0-1", if_none_match=etag).status == 304
    assert get(root, "/data.bin", range="bytes=0-1", if_match='"x"').status == 412
    assert get(root, "/data.bin", range="bytes=0-1", if_match=etag).status == 206
