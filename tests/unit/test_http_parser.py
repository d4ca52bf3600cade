"""Behaviour of powpow.http.RequestParser beyond the case table: limits at and one
past each boundary, pipelining, bodies (buffered, spooled, streamed), upgrade
hand-over, keep-alive, the Headers API, linear time and the fuzz invariant."""
import os
import stat

import pytest

import powpow.http.parser as parser_mod
from powpow.http import (
    MAX_HEADER_SIZE,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    ParseError,
    RequestParser,
)
try:  # tests/unit is a package in this repo; also work if it stops being one
    from .test_http_parser_cases import CASES, run, splits, summary
except ImportError:
    from test_http_parser_cases import CASES, run, splits, summary

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - the seeded fuzzer in tests/fuzz still runs
    given = None


def feed_all(data, mode="whole", **kw):
    p = RequestParser(**kw)
    out = []
    for piece in splits(data, mode):
        out.extend(p.feed(piece))
    out.extend(p.feed(b""))
    return p, out


def status_of(data, **kw):
    statuses = set()
    for mode in ("whole", "bytes", "random"):
        _, outcome = run(data, mode, **kw)
        statuses.add(outcome if isinstance(outcome, int) else "ok")
    assert len(statuses) == 1, statuses
    return statuses.pop()


# --- limits: exactly at and one past each boundary --------------------------

def request_line_of(length):
    return b"GET /" + b"a" * (length - len(b"GET / HTTP/1.1") ) + b" HTTP/1.1"


@pytest.mark.parametrize("limit", [MAX_REQUEST_LINE, 64])
def test_request_line_limit(limit):
    line = request_line_of(limit)
    assert len(line) == limit
    assert status_of(line + b"\r\nHost: a\r\n\r\n", max_request_line=limit) == "ok"
    line = request_line_of(limit + 1)
    assert status_of(line + b"\r\nHost: a\r\n\r\n", max_request_line=limit) == 414
    # detected before the line ends: no CRLF ever arrives
    assert run(line + b"a" * 10, "bytes", max_request_line=limit)[1] == 414


def header_section_of(size):
    """Field lines (with CRLFs) totalling exactly ``size`` bytes."""
    host = b"Host: a\r\n"
    pad = size - len(host) - len(b"X: \r\n")
    return host + b"X: " + b"v" * pad + b"\r\n"


@pytest.mark.parametrize("limit", [MAX_HEADER_SIZE, 100])
def test_header_section_limit(limit):
    head = b"GET / HTTP/1.1\r\n"
    assert len(header_section_of(limit)) == limit
    assert status_of(head + header_section_of(limit) + b"\r\n", max_header_size=limit) == "ok"
    assert status_of(head + header_section_of(limit + 1) + b"\r\n", max_header_size=limit) == 431
    # never completed: still 431 once the limit is passed
    assert run(head + header_section_of(limit + 1) + b"X", "bytes", max_header_size=limit)[1] == 431


@pytest.mark.parametrize("limit", [MAX_HEADERS, 3])
def test_header_count_limit(limit):
    fields = b"Host: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(limit - 1))
    assert status_of(b"GET / HTTP/1.1\r\n" + fields + b"\r\n", max_headers=limit) == "ok"
    fields += b"X-Last: v\r\n"
    assert status_of(b"GET / HTTP/1.1\r\n" + fields + b"\r\n", max_headers=limit) == 431


def test_limit_error_is_decided_by_position_not_by_split():
    # a NUL past the header limit: whole and bytewise must both say 431
    head = b"GET / HTTP/1.1\r\n" + header_section_of(200) + b"\x00\r\n\r\n"
    assert status_of(head, max_header_size=100) == 431
    # a NUL before the limit wins
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00" + b"v" * 300 + b"\r\n\r\n"
    assert status_of(head, max_header_size=100) == 400


def test_body_limit_content_length():
    ok = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n" + b"x" * 10
    assert status_of(ok, max_body=10) == "ok"
    # 413 from the head alone: decided before any body byte is buffered
    assert status_of(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", max_body=10) == 413


def test_body_limit_chunked_running_total():
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    ok = head + b"5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n"
    assert status_of(ok, max_body=10) == "ok"
    over = head + b"5\r\n12345\r\n6\r\n"  # the size line alone trips it
    assert status_of(over, max_body=10) == 413


def test_chunk_line_limit():
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    ext = b";" + b"e" * 20
    assert status_of(head + b"1" + ext + b"\r\nx\r\n0\r\n\r\n", max_chunk_line=22) == "ok"
    assert status_of(head + b"1" + ext + b"e\r\nx\r\n0\r\n\r\n", max_chunk_line=22) == 400


def test_chunk_size_sixteen_hex_digits_ok_seventeen_rejected():
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert status_of(head + b"0" * 15 + b"1\r\nx\r\n0\r\n\r\n") == "ok"
    assert status_of(head + b"0" * 16 + b"1\r\nx\r\n0\r\n\r\n") == 400


def test_content_length_digit_limit():
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n"
    assert status_of(head % (b"9" * 18), max_body=10 ** 19) == "ok"
    assert status_of(head % (b"9" * 19), max_body=10 ** 20) == 400


# --- pipelining -------------------------------------------------------------

def test_fifty_pipelined_requests_in_one_feed_in_order():
    data = b"".join(
        (b"GET /r%d?i=%d HTTP/1.1\r\nHost: a\r\nX-N: %d\r\n\r\n" % (i, i, i)) if i % 3
        else (b"POST /r%d?i=%d HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (i, i, len(str(i)))
              + str(i).encode())
        for i in range(50))
    for mode in ("whole", "bytes", "random"):
        _, reqs = feed_all(data, mode)
        assert [r.path for r in reqs] == ["/r%d" % i for i in range(50)]
        assert [r.query for r in reqs] == ["i=%d" % i for i in range(50)]
        assert [r.body for r in reqs if r.method == "POST"] == [str(i).encode() for i in range(0, 50, 3)]


def test_max_pipeline_holds_back_the_rest():
    data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 5
    p = RequestParser(max_pipeline=2)
    assert len(p.feed(data)) == 2
    assert p.pending > 0
    assert len(p.feed(b"")) == 2
    assert len(p.feed(b"")) == 1
    assert p.pending == 0


def test_error_after_good_requests_is_raised_by_next_feed():
    p = RequestParser()
    reqs = p.feed(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nBAD LINE\r\n\r\n")
    assert [r.path for r in reqs] == ["/ok"]
    with pytest.raises(ParseError) as e:
        p.feed(b"")
    assert e.value.status == 400
    with pytest.raises(ParseError):
        p.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # dead for good


# --- bodies ----------------------------------------------------------------

CHUNKED = (b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4;name=val\r\nWiki\r\n5;a;b=\"q;d\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n"
           b"0\r\nExpires: never\r\nX-Sum: abc\r\n\r\n")


def test_chunked_with_extensions_and_trailers():
    for mode in ("whole", "bytes", "random"):
        _, (r,) = feed_all(CHUNKED, mode)
        assert r.chunked and r.content_length is None
        assert r.body == b"Wikipedia in\r\n\r\nchunks."
        assert r.trailers.get("expires") == "never"
        assert r.trailers["X-SUM"] == "abc"
        assert r.trailers.raw == [(b"Expires", b"never"), (b"X-Sum", b"abc")]
        assert "expires" not in r.headers


def test_streaming_callbacks_receive_every_body_byte_in_order():
    events = []
    p = RequestParser(
        on_headers=lambda r: events.append(("head", r.path)),
        on_body=lambda r, chunk: events.append(("body", chunk)),
        on_message_complete=lambda r: events.append(("end", r.path)),
    )
    data = CHUNKED + b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabcdef"
    for piece in splits(data, "bytes"):
        p.feed(piece)
    assert events[0] == ("head", "/up")
    bodies = b"".join(c for k, c in events[: events.index(("end", "/up"))] if k == "body")
    assert bodies == b"Wikipedia in\r\n\r\nchunks."
    assert events[-1] == ("end", "/cl")
    assert all(type(c) is bytes for k, c in events if k == "body")


def test_large_body_spools_to_private_temp_file(tmp_path):
    body = os.urandom(5000)
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n" + body
    p = RequestParser(spool_threshold=1024, spool_dir=str(tmp_path))
    reqs = []
    for i in range(0, len(data), 700):
        reqs += p.feed(data[i:i + 700])
    (r,) = reqs
    assert r.body_file is not None and r.body_size == 5000
    # an unnamed file (item 18): nothing in the spool dir, private, gone on close
    assert os.listdir(str(tmp_path)) == []
    assert stat.S_IMODE(os.fstat(r.body_file.fileno()).st_mode) & 0o077 == 0
    assert r.body == body
    f = r.body_file
    r.close()
    assert f.closed and r.body_file is None


def test_chunked_body_spools_past_threshold(tmp_path):
    chunks = b"".join(b"%x\r\n%s\r\n" % (500, b"z" * 500) for _ in range(6))
    data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    _, (r,) = feed_all(data, "random", spool_threshold=1024, spool_dir=str(tmp_path))
    assert r.body_file is not None and r.body == b"z" * 3000


def test_zero_copy_body_when_it_arrives_with_the_head():
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    _, (r,) = feed_all(data)
    assert r._body_buf is r._buf  # a slice of the receive buffer, not a copy
    assert r.body == b"abc"


# --- upgrade, CONNECT, keep-alive -------------------------------------------

def test_upgrade_hands_over_remaining_bytes_intact():
    data = (b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            b"\x81\x05hello GET / HTTP/1.1\r\n\r\n")
    for mode in ("whole", "bytes", "random"):
        p, (r,) = feed_all(data, mode)
        assert r.upgrade == "websocket" and p.upgraded
        assert p.take_remaining() == b"\x81\x05hello GET / HTTP/1.1\r\n\r\n"
    p.feed(b"more")
    assert p.take_remaining() == b"more"


def test_connect_stops_after_head():
    p = RequestParser()
    (r,) = p.feed(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n\x00\x01tls")
    assert r.method == "CONNECT" and r.target == "db.example:5432" and r.path == ""
    assert p.upgraded and p.take_remaining() == b"\x00\x01tls"


@pytest.mark.parametrize("version,connection,keep", [
    (b"1.1", None, True), (b"1.1", b"close", False), (b"1.1", b"Keep-Alive", True),
    (b"1.1", b"foo, CLOSE", False), (b"1.0", None, False), (b"1.0", b"keep-alive", True),
    (b"1.0", b"Keep-Alive, foo", True), (b"1.0", b"close", False),
])
def test_keep_alive_per_version(version, connection, keep):
    head = b"GET / HTTP/" + version + b"\r\nHost: a\r\n"
    if connection is not None:
        head += b"Connection: " + connection + b"\r\n"
    p, (r,) = feed_all(head + b"\r\n")
    assert r.keep_alive is keep
    assert p.closed is (not keep)


def test_expect_continue_only_for_http11():
    _, (r,) = feed_all(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
    assert r.expect_continue
    _, (r,) = feed_all(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
    assert not r.expect_continue


def test_on_headers_sees_request_before_its_body():
    seen = []
    p = RequestParser(on_headers=lambda r: seen.append((r.expect_continue, p.current is r)))
    assert p.feed(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n") == []
    assert seen == [(True, True)]
    (r,) = p.feed(b"ok")
    assert r.body == b"ok" and p.current is None


# --- request and headers API ------------------------------------------------

def test_request_and_headers_api():
    data = (b"GET /p/a%20th?x=1&y=%2F HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\n"
            b"X-Multi: a\r\nx-multi:  b \r\nCookie: c=1\r\n\r\n")
    _, (r,) = feed_all(data)
    assert (r.method, r.target, r.path, r.raw_path, r.query, r.version) == (
        "GET", "/p/a%20th?x=1&y=%2F", "/p/a th", "/p/a%20th", "x=1&y=%2F", "1.1")
    assert r.args.items() == [("x", "1"), ("y", "/")] and r.cookies == {"c": "1"}
    h = r.headers
    assert h["host"] == h.get("HOST") == "example.com:8080"
    assert h.get("x-multi") == "a" and h.get_all("X-MULTI") == ["a", "b"]
    assert h.get("missing") is None and h.get("missing", "d") == "d"
    assert "cookie" in h and "nope" not in h and len(h) == 5
    assert list(h) == ["host", "accept", "x-multi", "x-multi", "cookie"]
    assert h.raw[3] == (b"x-multi", b"b")
    with pytest.raises(KeyError):
        h["missing"]


@pytest.mark.parametrize("target,path,query", [
    (b"http://a.example:81/x/y?q=1", "/x/y", "q=1"),
    (b"http://a.example/p?q=1", "/p", "q=1"),
    (b"http://a.example?q=1", "/", "q=1"),            # item 25: the query was lost
    (b"http://a.example:80?x=1&y", "/", "x=1&y"),
    (b"http://a.example?next=/x/y", "/", "next=/x/y"),  # was: path "/x/y"
    (b"HTTPS://u@a.example/p/?a=/b?c", "/p/", "a=/b?c"),
    (b"http://a.example", "/", ""),
    (b"http://a.example/a%20b?q", "/a b", "q"),
])
def test_absolute_form_path_and_query(target, path, query):
    _, (r,) = feed_all(b"GET " + target + b" HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert (r.path, r.query) == (path, query)


def test_asterisk_form_path_and_query():
    _, (r,) = feed_all(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (r.path, r.query) == ("*", "")


def test_identical_header_sections_share_validated_headers():
    data = b"GET /a HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n"
    p = RequestParser()
    (r1,) = p.feed(data)
    (r2,) = p.feed(data.replace(b"/a", b"/b"))
    (r3,) = p.feed(data.replace(b"/a", b"/c"))
    # repeats share one Headers (over the memo's own copy of the block)
    assert r2.headers is r3.headers and r3.path == "/c"
    assert r1.headers.items() == r2.headers.items() == [("host", "a"), ("x", "1")]
    assert r2.headers.raw == r1.headers.raw
    (r4,) = p.feed(data.replace(b"X: 1", b"X: 2"))
    assert r4.headers is not r2.headers and r4.headers["x"] == "2"


def reachable_buffers(root):
    """Sizes of every bytes-like object reachable from root's attributes."""
    seen = set()
    sizes = []
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (bytes, bytearray, memoryview)):
            sizes.append(len(obj))
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__"):
            if callable(obj) or isinstance(obj, type):
                continue
            if hasattr(obj, "__dict__"):
                stack.extend(vars(obj).values())
            for cls in type(obj).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if hasattr(obj, slot):
                        stack.append(getattr(obj, slot))
    return sizes


@pytest.mark.parametrize("repeat", [1, 2, 3])
def test_header_memo_does_not_pin_the_last_read(repeat):
    """Item 25: an idle keep-alive connection must not keep its last 64 KiB read."""
    body = b"x" * 60000
    data = b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 60000\r\n\r\n" + body
    p = RequestParser()
    for _ in range(repeat):
        (r,) = p.feed(bytes(data))  # the body is a zero-copy slice of this read
        assert r.body == body
        del r
    assert max(reachable_buffers(p), default=0) < 1000


def test_bytearray_and_memoryview_input():
    data = b"GET /m HTTP/1.1\r\nHost: a\r\n\r\n"
    p = RequestParser()
    assert p.feed(bytearray(data))[0].path == "/m"
    assert p.feed(memoryview(data))[0].path == "/m"


# --- linear time -------------------------------------------------------------

from powpow._ffi import new_line_offsets, scan_lines as _ffi_scan_lines  # noqa: E402


def patch_scanner(monkeypatch, counting):
    """Count every scan_lines call, in each parser module that scans (and scan_head's, in the parser)."""
    import importlib
    for name in ("powpow.http._headblock", "powpow.http._chunked"):
        mod = importlib.import_module(name)
        monkeypatch.setattr(mod, "scan_lines", counting)
    real_head = parser_mod.head_lines
    spare = new_line_offsets(4096)

    def counting_head(buf, start, end, parts, last):
        counting(buf, start, end, spare, start)  # the scan_lines part of head_lines, counted once
        return real_head(buf, start, end, parts, last)

    monkeypatch.setattr(parser_mod, "head_lines", counting_head)


def test_dripping_input_is_scanned_linearly(monkeypatch):
    scanned = [0]
    real = _ffi_scan_lines

    def counting(buf, start, end, out, line_begin=-1):
        scanned[0] += end - start
        return real(buf, start, end, out, line_begin)

    patch_scanner(monkeypatch, counting)
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 60) for i in range(90)) + b"Host: a\r\n\r\n"
    p = RequestParser()
    got = []
    for i in range(len(head)):
        got += p.feed(head[i:i + 1])
    assert len(got) == 1
    assert len(head) <= scanned[0] <= 2 * len(head)


def test_dripping_chunked_body_is_linear(monkeypatch):
    scanned = [0]
    real = _ffi_scan_lines

    def counting(buf, start, end, out, line_begin=-1):
        scanned[0] += end - start
        return real(buf, start, end, out, line_begin)

    patch_scanner(monkeypatch, counting)
    data = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"10;ext=%s\r\n%s\r\n" % (b"e" * 100, b"d" * 16) for _ in range(20)) + b"0\r\n\r\n")
    p = RequestParser()
    got = []
    for i in range(len(data)):
        got += p.feed(data[i:i + 1])
    assert got[0].body == b"d" * 320
    assert len(data) // 2 <= scanned[0] <= 2 * len(data)  # (wired: the chunk lines were counted)


# --- fuzz invariant ---------------------------------------------------------

VALID = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    CHUNKED,
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nxyz",
]


def check_invariant(data, cut):
    """Only ParseError escapes; whole and split feeding agree."""
    whole = run(data, "whole", max_headers=8, max_header_size=256, max_request_line=64, max_body=64)
    pieces = run(data[:cut], "whole", max_headers=8, max_header_size=256, max_request_line=64, max_body=64)
    assert isinstance(whole[1], (int, tuple))
    split = RequestParser(max_headers=8, max_header_size=256, max_request_line=64, max_body=64)
    got = []
    try:
        got += split.feed(data[:cut])
        got += split.feed(data[cut:])
        got += split.feed(b"")
        outcome = "ok"
    except ParseError as exc:
        outcome = exc.status
    assert pieces is not None
    assert [summary(r) for r in got] == whole[0]
    assert outcome == (whole[1] if isinstance(whole[1], int) else "ok")


if given is not None:
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
    def test_fuzz_random_bytes_only_parse_error(data, cut):
        check_invariant(data, cut)

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=0, max_size=3)),
                                            max_size=4), st.integers(0, 400))
    def test_fuzz_mutated_requests_only_parse_error(base, edits, cut):
        data = bytearray(base)
        for at, repl in edits:
            at = at % (len(data) + 1)
            data[at:at + 1] = repl
        check_invariant(bytes(data), cut)


# --- streaming mode: a malformed chunked body is a 400 from feed() (item 9) ---

BAD_CHUNKED = [
    (name, data) for name, data, expected in CASES
    if expected == 400 and b"Transfer-Encoding: chunked\r\n\r\n" in data and not name.startswith("te ")
    and not data.endswith(b"chunked\r\n\r\n")
] + [("bad size after good chunks",
      b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\nzz\r\n")]


def streaming_outcome(data, pieces):
    """Feed a streaming parser; return (status, message, body bytes delivered)."""
    body = []
    p = RequestParser(on_headers=lambda r: None, on_body=lambda r, c: body.append(c),
                      on_message_complete=lambda r: None)
    try:
        for piece in pieces:
            p.feed(piece)
        p.feed(b"")
    except ParseError as exc:
        assert p.failed
        with pytest.raises(ParseError):
            p.feed(b"")  # and stays failed
        return exc.status, exc.message, b"".join(body)
    return None, None, b"".join(body)


@pytest.mark.parametrize("name,data", BAD_CHUNKED, ids=[c[0] for c in BAD_CHUNKED])
def test_streaming_malformed_chunked_body_raises_400_from_feed(name, data):
    assert len(BAD_CHUNKED) >= 8
    head_end = data.index(b"\r\n\r\n") + 4
    buffered = run(data)[1]
    with_head = streaming_outcome(data, [data])                              # same read as the head
    later = streaming_outcome(data, [data[:head_end], data[head_end:]])     # a later read
    drip = streaming_outcome(data, [data[i:i + 1] for i in range(len(data))])  # byte by byte
    assert with_head[0] == later[0] == drip[0] == buffered == 400
    assert with_head == later == drip  # same message, same body bytes delivered before it


def test_parsers_in_threads_and_reentrant_feeds():
    """Scan memory is per thread (issue 13): parsers fed from several threads, and a
    parser fed from inside another parser's callback, all see their own heads."""
    import threading

    def head(i, extra=b""):
        return (b"GET /t%d HTTP/1.1\r\nHost: h%d\r\nX-A: %d\r\n%sCookie: c=%d\r\n\r\n"
                % (i, i, i, extra, i))

    errors = []

    def worker(k):
        p = RequestParser()
        try:
            for i in range(300):
                extra = b"X-K: %d\r\n" % k if i % 3 else b""
                (r,) = p.feed(head(i, extra))
                assert r.path == "/t%d" % i and r.headers["host"] == "h%d" % i
                assert r.headers["cookie"] == "c=%d" % i and r.headers["x-a"] == str(i)
                assert r.headers.get("x-k") == (str(k) if i % 3 else None)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors

    inner = RequestParser()
    seen = []

    def on_headers(req):
        (r,) = inner.feed(head(7, b"Y-Inner: 1\r\n"))
        seen.append((r.path, r.headers["y-inner"]))

    outer = RequestParser(on_headers=on_headers)
    got = outer.feed(head(1) + head(2, b"Z: z\r\n"))
    assert [r.path for r in got] == ["/t1", "/t2"]
    assert got[1].headers["z"] == "z" and got[1].headers["cookie"] == "c=2"
    assert seen == [("/t7", "1"), ("/t7", "1")]
