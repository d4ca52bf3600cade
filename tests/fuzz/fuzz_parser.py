"""Fuzz the HTTP request and multipart parsers.  Invariant: on any input, only
``ParseError`` escapes, and feeding whole or split gives the same results --
also in streaming mode (callbacks), with ``max_pipeline`` holding requests back,
and after declining a protocol switch; the unparsed bytes a parser holds stay
within the documented bound (``RequestParser.buffered``).

    python tests/fuzz/fuzz_parser.py --seconds 10 [--seed 1]   # seeded mutation fuzzer (any interpreter)
    python tests/fuzz/fuzz_parser.py --atheris [libFuzzer args] # coverage-guided, CPython + atheris

The seeded fuzzer mutates a corpus of valid requests (byte flips, inserts of
interesting tokens, splices, truncation) and feeds each result whole and at
random split points, with small limits so the limit paths are hit too.
"""
import argparse
import os
import random
import sys
import time

from powpow.errors import ParseError
from powpow.http import RequestParser
from powpow.http.multipart import MultipartParser

LIMITS = dict(max_request_line=128, max_header_size=256, max_headers=12, max_body=512,
              spool_threshold=64, max_chunk_line=32)

CORPUS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /p?q=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: b\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nxx",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
]
TOKENS = [b"\r\n", b"\r", b"\n", b"\x00", b" ", b"\t", b":", b";", b",", b"0", b"f", b"-1",
          b"Content-Length: ", b"Transfer-Encoding: chunked", b"Host: ", b"HTTP/1.1", b"\r\n\r\n",
          b"99999999999999999999", b"Connection: close", b"%", b"#", b"*", b"\xff"]
BOUNDARY = b"xYz"
MP_CORPUS = [
    b"--xYz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n"
    b"--xYz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"../x\"\r\n\r\ndata\r\n--xYz--\r\n",
]


def mutate(rnd, data):
    data = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.random()
        at = rnd.randint(0, len(data))
        if op < 0.3 and data:
            data[min(at, len(data) - 1)] = rnd.randint(0, 255)
        elif op < 0.6:
            data[at:at] = rnd.choice(TOKENS)
        elif op < 0.75 and data:
            del data[at:at + rnd.randint(1, 8)]
        elif op < 0.9:
            other = rnd.choice(CORPUS)
            s = rnd.randint(0, len(other))
            data[at:at] = other[s:s + rnd.randint(1, 40)]
        else:
            del data[at:]
    return bytes(data)


HEAD_BOUND = LIMITS["max_request_line"] + LIMITS["max_header_size"] + 4


def check_buffered(p):
    if isinstance(p, RequestParser) and not p.held and not p.upgraded:
        assert p.buffered <= HEAD_BOUND, (p.buffered, HEAD_BOUND)


def drain(p, summarise, got):
    """feed(b"") until nothing is held back; decline a switch to parse what follows."""
    for _ in range(10000):
        got += [summarise(x) for x in p.feed(b"")]
        check_buffered(p)
        if p.upgraded:
            p.decline_upgrade()
        elif not p.held and not p.failed:  # (failed: the next feed raises the deferred error)
            return
    raise AssertionError("parser never drained")


def outcome_of(parser_factory, pieces, summarise):
    p = parser_factory()
    got = []
    try:
        for piece in pieces:
            got += [summarise(x) for x in p.feed(piece)]
            check_buffered(p)
        if isinstance(p, RequestParser):
            drain(p, summarise, got)
        if isinstance(p, MultipartParser):
            p.close()
        return got, "ok"
    except ParseError as exc:
        assert isinstance(exc.status, int) and 400 <= exc.status < 600
        return got, exc.status


def streaming_outcome(pieces, **kw):
    """Same as outcome_of for a RequestParser, through the streaming callbacks."""
    got = []
    bodies = {}

    def on_headers(r):
        bodies[id(r)] = []

    def on_body(r, chunk):
        assert chunk.__class__ is bytes and chunk
        bodies[id(r)].append(chunk)

    def on_complete(r):
        got.append(summarise_request(r, b"".join(bodies.pop(id(r)))))

    p = RequestParser(on_headers, on_body, on_complete, **kw)
    try:
        for piece in pieces:
            p.feed(piece)
            check_buffered(p)
        drain(p, lambda r: None, [])
        return got, "ok"
    except ParseError as exc:
        return got, exc.status


def summarise_request(r, body=None):
    return (r.method, r.target, r.path, r.raw_path, r.query, tuple(r.args.items()),
            tuple(sorted(r.cookies.items())), r.version, tuple(r.headers.raw), r.keep_alive,
            r.content_length, r.chunked, r.upgrade, r.body if body is None else body,
            tuple(r.trailers.raw))


def summarise_part(p):
    return (p.name, p.filename, p.size, p.value if p.file is None else p.file.read())


def random_pieces(rnd, data):
    cuts = sorted(rnd.randint(0, len(data)) for _ in range(rnd.randint(1, 5)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def check_one(data, rnd):
    """Run one input through both parsers whole and split; raise AssertionError on a violation."""
    factory = lambda: RequestParser(**LIMITS)  # noqa: E731
    whole = outcome_of(factory, [data], summarise_request)
    pieces = random_pieces(rnd, data)
    split = outcome_of(factory, pieces, summarise_request)
    assert whole == split, (data, whole, split)
    held = outcome_of(lambda: RequestParser(max_pipeline=1, **LIMITS), pieces, summarise_request)
    assert held == whole, (data, whole, held)
    # streaming mode: same requests, same bodies, same status
    assert streaming_outcome(pieces, **LIMITS) == whole, (data, whole)
    mp = lambda: MultipartParser(BOUNDARY, max_part_header_size=64, max_field_size=32,  # noqa: E731
                                 max_file_size=64, spool_threshold=16)
    whole = outcome_of(mp, [data], summarise_part)
    split = outcome_of(mp, random_pieces(rnd, data), summarise_part)
    assert whole == split, (data, whole, split)


def run_seeded(seconds, seed, max_cases=None):
    rnd = random.Random(seed)
    deadline = time.monotonic() + seconds
    n = 0
    corpus = CORPUS + MP_CORPUS
    while time.monotonic() < deadline and (max_cases is None or n < max_cases):
        data = mutate(rnd, rnd.choice(corpus))
        try:
            check_one(data, rnd)
        except AssertionError:
            raise
        except Exception as exc:  # the invariant: nothing but ParseError escapes
            raise AssertionError("%s escaped on input %r" % (type(exc).__name__, data)) from exc
        n += 1
    return n


def run_atheris(argv):
    import atheris  # CPython only; optional

    def test_one(data):
        check_one(data, random.Random(len(data)))

    atheris.Setup(argv, test_one)
    atheris.Fuzz()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "1")))
    ap.add_argument("--atheris", action="store_true")
    args, rest = ap.parse_known_args(argv)
    if args.atheris:
        run_atheris([sys.argv[0]] + rest)
        return
    n = run_seeded(args.seconds, args.seed)
    print("fuzz_parser: %d inputs, seed %d, no invariant violated" % (n, args.seed))


if __name__ == "__main__":
    main()
