"""pyperf benchmark of powpow's HTTP request parser against httptools and h11.

    taskset -c 1 python perf/bench_parser.py -o /tmp/parser.json --fast
    python -m pyperf stats /tmp/parser.json      # medians

Workloads (issue 4): the typical ~460-byte browser request (Host, User-Agent,
Accept, Connection, Cookie), parsed and then ``method``, ``path`` and two
headers read; and the same request 16 times in one feed (pipelining).  Each
parser is measured on the interpreter running this script; httptools (llhttp,
CPython only) and h11 are measured in the same run when importable (they are not
powpow dependencies: ``pip install httptools h11``).  Parsers are kept across
requests, as on a keep-alive connection, except h11, whose server role refuses a
second request before a response was sent: it gets a fresh Connection per
request, which is how it runs a keep-alive cycle anyway.

Numbers are time per request; ``perf/README.md`` turns them into requests/s.
"""
import sys

import pyperf

from powpow._ffi import NATIVE
from powpow.http import RequestParser

REQ = (
    b"GET /wp-content/uploads/2010/03/hello-kitty-darth-vader-pink.jpg HTTP/1.1\r\n"
    b"Host: www.kittyhell.com\r\n"
    b"User-Agent: Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10_6_6; ja-JP-mac; rv:1.9.2.3) "
    b"Gecko/20100401 Firefox/3.6.3 Pathtraq/0.9\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: wp_ozh_wsa_visits=2; wp_ozh_wsa_visit_lasttime=xxxxxxxxxx; "
    b"__utma=xxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.x\r\n"
    b"\r\n"
)
DEPTH = 16
PIPELINED = REQ * DEPTH
# The parser reuses the Headers of the previous request when the header section
# is byte-identical (keep-alive clients repeat themselves).  These 64 variants
# differ in the Cookie value, so every request takes the full path.
VARIANTS = [REQ.replace(b"visits=2;", b"visits=%02d;" % i) for i in range(64)]
assert all(len(v) == len(REQ) + 1 for v in VARIANTS)


def bench_powpow(loops):
    feed = RequestParser().feed
    data = REQ
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        req = feed(data)[0]
        req.method
        req.path
        h = req.headers
        h.get("host")
        h.get("cookie")
    return pyperf.perf_counter() - t0


def bench_powpow_varying(loops):
    feed = RequestParser().feed
    variants = VARIANTS
    t0 = pyperf.perf_counter()
    for i in range(loops):
        req = feed(variants[i & 63])[0]
        req.method
        req.path
        h = req.headers
        h.get("host")
        h.get("cookie")
    return pyperf.perf_counter() - t0


def bench_powpow_pipelined(loops):
    feed = RequestParser().feed
    data = PIPELINED
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        for req in feed(data):
            req.method
            req.path
            h = req.headers
            h.get("host")
            h.get("cookie")
    return (pyperf.perf_counter() - t0) / DEPTH


def _import_httptools():
    """httptools from this interpreter, else from perf/.venv-peers (the peers venv of
    perf/bench_http.py) when it was made by the same Python version."""
    try:
        import httptools
    except ImportError:
        import glob
        import os

        here = os.path.dirname(os.path.abspath(__file__))
        tag = "python%d.%d" % sys.version_info[:2]
        site = glob.glob(os.path.join(here, ".venv-peers", "lib", tag, "site-packages"))
        if not site or sys.implementation.name != "cpython":
            raise
        sys.path.append(site[0])
        import httptools
    return httptools


def make_httptools():
    httptools = _import_httptools()

    class Proto:
        __slots__ = ("url", "headers", "done")

        def __init__(self):
            self.headers = {}
            self.done = []

        def on_message_begin(self):
            self.headers = {}

        def on_url(self, url):
            self.url = url

        def on_header(self, name, value):
            self.headers[name] = value

        def on_message_complete(self):
            self.done.append((self.url, self.headers))

    parse_url = httptools.parse_url

    def run(loops, data, depth):
        proto = Proto()
        parser = httptools.HttpRequestParser(proto)
        feed = parser.feed_data
        done = proto.done
        t0 = pyperf.perf_counter()
        for _ in range(loops):
            feed(data)
            for url, headers in done:
                parser.get_method()
                parse_url(url).path
                headers[b"Host"]
                headers[b"Cookie"]
            done.clear()
        return (pyperf.perf_counter() - t0) / depth

    def run_varying(loops):
        proto = Proto()
        parser = httptools.HttpRequestParser(proto)
        feed = parser.feed_data
        done = proto.done
        variants = VARIANTS
        t0 = pyperf.perf_counter()
        for i in range(loops):
            feed(variants[i & 63])
            for url, headers in done:
                parser.get_method()
                parse_url(url).path
                headers[b"Host"]
                headers[b"Cookie"]
            done.clear()
        return pyperf.perf_counter() - t0

    return run, run_varying


def make_h11():
    import h11

    def run(loops, data, depth):
        Connection = h11.Connection
        SERVER = h11.SERVER
        NEED_DATA = h11.NEED_DATA
        t0 = pyperf.perf_counter()
        for _ in range(loops):
            conn = Connection(SERVER)
            conn.receive_data(data)
            ev = conn.next_event()
            while ev is not NEED_DATA and ev.__class__ is not h11.EndOfMessage:
                if ev.__class__ is h11.Request:
                    ev.method
                    ev.target.split(b"?", 1)[0]
                    hd = dict(ev.headers)
                    hd[b"host"]
                    hd[b"cookie"]
                ev = conn.next_event()
        return (pyperf.perf_counter() - t0) / depth

    return run


def main():
    runner = pyperf.Runner()
    impl = "%s-%s" % (sys.implementation.name, "native" if NATIVE else "pure")
    runner.metadata["powpow_scanner"] = impl
    runner.bench_time_func("powpow browser request", bench_powpow)
    runner.bench_time_func("powpow browser request, varying Cookie", bench_powpow_varying)
    runner.bench_time_func("powpow 16-deep pipelined (per request)", bench_powpow_pipelined)
    try:
        run, run_varying = make_httptools()
    except ImportError:
        pass
    else:
        runner.bench_time_func("httptools browser request", run, REQ, 1)
        runner.bench_time_func("httptools browser request, varying Cookie", run_varying)
        runner.bench_time_func("httptools 16-deep pipelined (per request)", run, PIPELINED, DEPTH)
    try:
        run = make_h11()
    except ImportError:
        pass
    else:
        runner.bench_time_func("h11 browser request", run, REQ, 1)


if __name__ == "__main__":
    main()
