"""Shared helpers for the HTTP parser tests: feed a case three ways, summarise results.

Also runnable as a script (``python tests/unit/http_cases.py``): prints the
summary of every case, so a test can compare the pure and native scanners
across processes.
"""
import random
import sys

from powpow.http import ParseError, RequestParser


def summary(req):
    return (
        req.method, req.target, req.path, req.query, req.version,
        tuple(req.headers.raw), req.keep_alive, req.expect_continue,
        req.content_length, req.chunked, req.upgrade, req.body, tuple(req.trailers.raw),
    )


def splits(data, mode, seed=0):
    if mode == "whole":
        return [data]
    if mode == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    rnd = random.Random(seed)
    out = []
    i = 0
    while i < len(data):
        j = i + rnd.randint(1, 17)
        out.append(data[i:j])
        i = j
    return out


def run(data, mode="whole", seed=0, **kw):
    """Feed data split by mode; return (summaries, outcome) where outcome is
    an int status for a ParseError, or a tuple describing the final parser state."""
    parser = RequestParser(**kw)
    got = []
    try:
        for piece in splits(data, mode, seed):
            got.extend(summary(r) for r in parser.feed(piece))
        got.extend(summary(r) for r in parser.feed(b""))  # raises a deferred error
    except ParseError as exc:
        return got, exc.status
    return got, ("ok", parser.upgraded, parser.closed, parser.take_remaining(), parser.pending > 0)


def req(head, body=b""):
    return head.replace(b"\n", b"\r\n") + body


# (name, input, expected): expected is an int status, or the number of requests.
CASES = [
    ("simple get", req(b"GET / HTTP/1.1\nHost: a\n\n"), 1),
    ("http/1.0 no host", req(b"GET /x HTTP/1.0\n\n"), 1),
    ("query", req(b"GET /a/b?c=d&e HTTP/1.1\nHost: a\n\n"), 1),
    ("absolute form", req(b"GET http://a.example/p?q HTTP/1.1\nHost: a.example\n\n"), 1),
    ("asterisk options", req(b"OPTIONS * HTTP/1.1\nHost: a\n\n"), 1),
    ("connect", req(b"CONNECT a.example:443 HTTP/1.1\nHost: a.example:443\n\n"), 1),
    ("leading crlf", b"\r\n\r\n" + req(b"GET / HTTP/1.1\nHost: a\n\n"), 1),
    ("unknown method", req(b"PROPFIND /d HTTP/1.1\nHost: a\n\n"), 1),
    ("put patch", req(b"PUT /a HTTP/1.1\nHost: a\nContent-Length: 3\n\n", b"abc")
        + req(b"PATCH /a HTTP/1.1\nHost: a\nContent-Length: 0\n\n"), 2),
    ("ows and htab in value", req(b"GET / HTTP/1.1\nHost: a\nX:  \tv a l\t \n\n"), 1),
    ("empty value", req(b"GET / HTTP/1.1\nHost: a\nX:\n\n"), 1),
    ("obs-text value", req(b"GET / HTTP/1.1\nHost: a\nX: caf\xc3\xa9\n\n"), 1),
    ("repeated headers", req(b"GET / HTTP/1.1\nHost: a\nX-A: 1\nx-a: 2\nX-A: 3\n\n"), 1),
    ("content-length body", req(b"POST /p HTTP/1.1\nHost: a\nContent-Length: 11\n\n", b"hello world"), 1),
    ("content-length dup equal", req(b"POST /p HTTP/1.1\nHost: a\nContent-Length: 2\nContent-Length: 2\n\n", b"ok"), 1),
    ("content-length leading zeros", req(b"POST /p HTTP/1.1\nHost: a\nContent-Length: 0002\n\n", b"ok"), 1),
    ("chunked ext trailers", req(b"POST /c HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n",
                                 b"5;a=b;c=\"d e\"\r\nhello\r\n6 ; x\r\n world\r\nA\r\n0123456789\r\n"
                                 b"0;last\r\nX-Trailer: t1\r\nX-Other: t2\r\n\r\n"), 1),
    ("chunked no trailers", req(b"POST /c HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n", b"0\r\n\r\n"), 1),
    ("chunked uppercase", req(b"POST /c HTTP/1.1\nHost: a\nTransfer-Encoding: Chunked\n\n", b"1\r\nz\r\n0\r\n\r\n"), 1),
    ("connection close", req(b"GET / HTTP/1.1\nHost: a\nConnection: close\n\n") + b"GET / HTTP/1.1\r\n", 1),
    ("http/1.0 keep-alive", req(b"GET / HTTP/1.0\nConnection: keep-alive\n\n") * 2, 2),
    ("http/1.0 closes", req(b"GET / HTTP/1.0\n\n") * 2, 1),
    ("expect continue", req(b"POST / HTTP/1.1\nHost: a\nExpect: 100-Continue\nContent-Length: 1\n\n", b"x"), 1),
    ("upgrade", req(b"GET /ws HTTP/1.1\nHost: a\nConnection: keep-alive, Upgrade\nUpgrade: websocket\n\n",
                    b"\x81\x85rest\r\n\x00"), 1),
    ("upgrade ignored without connection token", req(b"GET / HTTP/1.1\nHost: a\nUpgrade: websocket\n\n"), 1),
    ("host with port and ipv6", req(b"GET / HTTP/1.1\nHost: [::1]:8080\n\n"), 1),
    ("pipelined three", req(b"GET /1 HTTP/1.1\nHost: a\n\n") + req(b"GET /2 HTTP/1.1\nHost: a\n\n")
        + req(b"POST /3 HTTP/1.1\nHost: a\nContent-Length: 1\n\n", b"!"), 3),
    ("partial trailing head", req(b"GET / HTTP/1.1\nHost: a\n\n") + b"GET /next HTTP/1.1\r\nHo", 1),
    # --- strictness: each rule of issue 4 ---
    ("space before colon", req(b"GET / HTTP/1.1\nHost: a\nX-A : 1\n\n"), 400),
    ("obs-fold", req(b"GET / HTTP/1.1\nHost: a\nX-A: 1\n  continued\n\n"), 400),
    ("whitespace before first header", req(b"GET / HTTP/1.1\n Host: a\n\n"), 400),
    ("bare lf in header", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
    ("bare lf line end", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare cr in header", b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400),
    ("bare cr in request line", b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("bare cr before request", b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("nul in value", req(b"GET / HTTP/1.1\nHost: a\nX: a\x00b\n\n"), 400),
    ("control char in value", req(b"GET / HTTP/1.1\nHost: a\nX: a\x01b\n\n"), 400),
    ("del in value", req(b"GET / HTTP/1.1\nHost: a\nX: a\x7fb\n\n"), 400),
    ("control char in name", req(b"GET / HTTP/1.1\nHost: a\nX\x01: b\n\n"), 400),
    ("htab in name", req(b"GET / HTTP/1.1\nHost: a\nX\t: b\n\n"), 400),
    ("non-token name", req(b"GET / HTTP/1.1\nHost: a\nX(y): b\n\n"), 400),
    ("empty name", req(b"GET / HTTP/1.1\nHost: a\n: b\n\n"), 400),
    ("no colon", req(b"GET / HTTP/1.1\nHost: a\nnocolon\n\n"), 400),
    ("missing host", req(b"GET / HTTP/1.1\nX: a\n\n"), 400),
    ("two hosts", req(b"GET / HTTP/1.1\nHost: a\nHost: b\n\n"), 400),
    ("two hosts 1.0", req(b"GET / HTTP/1.0\nHost: a\nhost: a\n\n"), 400),
    ("invalid host", req(b"GET / HTTP/1.1\nHost: a b\n\n"), 400),
    ("invalid host chars", req(b"GET / HTTP/1.1\nHost: a/b\n\n"), 400),
    ("te and cl", req(b"POST / HTTP/1.1\nHost: a\nContent-Length: 3\nTransfer-Encoding: chunked\n\n"), 400),
    ("cl and te", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nContent-Length: 3\n\n"), 400),
    ("te last not chunked", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, gzip\n\n"), 400),
    ("te chunked twice", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n"
                             b"Transfer-Encoding: chunked\n\n"), 400),
    ("te chunked twice one field", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, chunked\n\n"), 400),
    ("te unknown coding", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n"), 501),
    ("te identity", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: identity\n\n"), 400),
    ("te in http/1.0", req(b"POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n"), 400),
    ("te empty", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: \n\n"), 400),
    # item 25: an empty list element in Transfer-Encoding (every peer server refuses it)
    ("te trailing comma", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked,\n\n", b"0\r\n\r\n"), 400),
    ("te leading comma", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: , chunked\n\n", b"0\r\n\r\n"), 400),
    ("te inner empty", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, ,chunked\n\n", b"0\r\n\r\n"), 400),
    ("te empty line beside chunked", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding:\n"
                                         b"Transfer-Encoding: chunked\n\n", b"0\r\n\r\n"), 400),
    ("te chunked then empty line", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nTransfer-Encoding: \n\n",
                                       b"0\r\n\r\n"), 400),
    ("te garbage", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: ch(unked\n\n"), 400),
    ("cl sign", req(b"POST / HTTP/1.1\nHost: a\nContent-Length: +3\n\n"), 400),
    ("cl negative", req(b"POST / HTTP/1.1\nHost: a\nContent-Length: -3\n\n"), 400),
    ("cl inner space", req(b"POST / HTTP/1.1\nHost: a\nContent-Length: 1 2\n\n"), 400),
    ("cl hex", req(b"POST / HTTP/1.1\nHost: a\nContent-Length: 0x10\n\n"), 400),
    ("cl list", req(b"POST / HTTP/1.1\nHost: a\nContent-Length: 3, 3\n\n"), 400),
    ("cl empty", req(b"POST / HTTP/1.1\nHost: a\nContent-Length:\n\n"), 400),
    ("cl non-ascii digit", req(b"POST / HTTP/1.1\nHost: a\nContent-Length: \xd9\xa3\n\n"), 400),
    ("cl overflow", req(b"POST / HTTP/1.1\nHost: a\nContent-Length: 99999999999999999999999\n\n"), 400),
    ("cl conflict", req(b"POST / HTTP/1.1\nHost: a\nContent-Length: 3\nContent-Length: 4\n\n"), 400),
    ("chunk size not hex", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n", b"xyz\r\n"), 400),
    ("chunk size 0x", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n", b"0x5\r\nhello\r\n"), 400),
    ("chunk size sign", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n", b"+5\r\nhello\r\n"), 400),
    ("chunk size leading space", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n",
        b" 5\r\nhello\r\n"), 400),
    ("chunk size empty", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n", b"\r\n"), 400),
    ("chunk size absurd", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n",
        b"0" * 17 + b"5\r\nhello\r\n"), 400),
    ("chunk size bare lf", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n",
        b"5\nhello\r\n0\r\n\r\n"), 400),
    ("chunk size bare cr", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n",
        b"5\rhello\r\n0\r\n\r\n"), 400),
    ("chunk missing crlf", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n",
        b"5\r\nhelloX\r\n0\r\n\r\n"), 400),
    ("chunk data bare lf", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n",
        b"5\r\nhello\n0\r\n\r\n"), 400),
    ("chunk bad extension", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n",
        b"5;=x\r\nhello\r\n"), 400),
    ("trailer bad name", req(b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n", b"0\r\nX Y: z\r\n\r\n"), 400),
    ("double space request line", req(b"GET  / HTTP/1.1\nHost: a\n\n"), 400),
    ("double space before version", req(b"GET /  HTTP/1.1\nHost: a\n\n"), 400),
    ("space in target", req(b"GET /a b HTTP/1.1\nHost: a\n\n"), 400),
    ("tab separator", req(b"GET\t/ HTTP/1.1\nHost: a\n\n"), 400),
    ("leading space", req(b" GET / HTTP/1.1\nHost: a\n\n"), 400),
    ("trailing space after version", req(b"GET / HTTP/1.1 \nHost: a\n\n"), 400),
    ("missing target", req(b"GET HTTP/1.1\nHost: a\n\n"), 400),
    ("only method", req(b"GET\nHost: a\n\n"), 400),
    ("lowercase version", req(b"GET / http/1.1\nHost: a\n\n"), 400),
    ("fragment in target", req(b"GET /a#b HTTP/1.1\nHost: a\n\n"), 400),
    ("non-ascii target", req(b"GET /caf\xc3\xa9 HTTP/1.1\nHost: a\n\n"), 400),
    ("relative target", req(b"GET a/b HTTP/1.1\nHost: a\n\n"), 400),
    ("asterisk with get", req(b"GET * HTTP/1.1\nHost: a\n\n"), 400),
    ("authority form with get", req(b"GET a.example:443 HTTP/1.1\nHost: a\n\n"), 400),
    ("connect origin form", req(b"CONNECT / HTTP/1.1\nHost: a\n\n"), 400),
    ("connect without port", req(b"CONNECT a.example HTTP/1.1\nHost: a\n\n"), 400),
    ("connect with body", req(b"CONNECT a.example:443 HTTP/1.1\nHost: a\nContent-Length: 3\n\n"), 400),
    ("invalid method char", req(b"G(T / HTTP/1.1\nHost: a\n\n"), 400),
    ("http/2.0", req(b"GET / HTTP/2.0\nHost: a\n\n"), 505),
    ("http/1.2", req(b"GET / HTTP/1.2\nHost: a\n\n"), 505),
    ("http/0.9 style", req(b"GET /\n\n"), 400),
    ("garbage version", req(b"GET / HTTP/1.x\nHost: a\n\n"), 400),
    ("empty upgrade", req(b"GET / HTTP/1.1\nHost: a\nConnection: upgrade\nUpgrade:\n\n"), 400),
    ("binary garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
]


def all_summaries():
    out = []
    for name, data, _ in CASES:
        for mode in ("whole", "bytes", "random"):
            out.append((name, mode, run(data, mode)))
    return out


if __name__ == "__main__":
    for item in all_summaries():
        sys.stdout.write(repr(item) + "\n")


# --- the tests -------------------------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402


@pytest.mark.parametrize("name,data,expected", CASES, ids=[c[0] for c in CASES])
def test_case_whole_bytewise_random_identical(name, data, expected):
    whole = run(data, "whole")
    assert run(data, "bytes") == whole
    for seed in range(5):
        assert run(data, "random", seed) == whole
    got, outcome = whole
    if isinstance(expected, int) and expected >= 100:
        assert outcome == expected, (name, got, outcome)
    else:
        assert outcome[0] == "ok", outcome
        assert len(got) == expected, got


@pytest.mark.parametrize("name,data,expected", CASES, ids=[c[0] for c in CASES])
def test_case_with_trailing_garbage_changes_nothing_before_it(name, data, expected):
    """Bytes after a complete message never change the messages before it."""
    base, base_outcome = run(data)
    for mode in ("whole", "bytes", "random"):
        got, outcome = run(data + b"\x00garbage", mode)
        if isinstance(base_outcome, int):
            assert (got, outcome) == (base, base_outcome)
        else:
            assert got == base
            if base_outcome[1] or base_outcome[2]:  # upgraded/closed: the rest is not HTTP
                assert outcome[0] == "ok"
            else:
                assert outcome == 400


def test_pure_and_native_scanners_give_identical_results():
    here = os.path.dirname(os.path.abspath(__file__))
    script = os.path.join(here, "test_http_parser_cases.py")
    outs = []
    for pure in ("1", "0"):
        env = dict(os.environ, POWPOW_PURE=pure)
        env.pop("POWPOW_REQUIRE_NATIVE", None)
        r = subprocess.run([sys.executable, script], env=env, capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr.decode()
        outs.append(r.stdout)
    assert outs[0] == outs[1]
    assert outs[0].count(b"\n") == 3 * len(CASES)
