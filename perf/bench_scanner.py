"""Scanner: native scan_lines / find_crlf vs what Python code would do with bytes.find.

* scan_lines on a typical 400-byte browser request head vs a Python loop of
  ``bytes.find(b"\\r\\n")`` collecting the same line offsets (without even
  checking for forbidden bytes, which the scanner also does).
* find_crlf on 64 KiB with the CRLF at the very end vs ``bytes.find``.
"""
import pyperf

from powpow import _ffi

HEAD = (
    b"GET /static/app.js?v=1234 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\n"
    b"Referer: https://www.example.com/\r\n"
    b"Cookie: session=4f2a9c0e1b7d8e3f; theme=dark; _ga=GA1.2.12345\r\n"
    b"\r\n"
)
BIG = b"a" * (64 * 1024 - 2) + b"\r\n"


def scan_native(loops):
    out = _ffi.new_line_offsets(128)
    scan = _ffi.scan_lines
    head, n = HEAD, len(HEAD)
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        scan(head, 0, n, out)
    return pyperf.perf_counter() - t0


def scan_find_loop(loops):
    head, n = HEAD, len(HEAD)
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        offs = []
        find = head.find
        i = 0
        while True:
            j = find(b"\r\n", i, n)
            if j < 0:
                break
            offs.append(j)
            if j == i:
                break
            i = j + 2
    return pyperf.perf_counter() - t0


def find_native(loops):
    f = _ffi.find_crlf
    big, n = BIG, len(BIG)
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        f(big, 0, n)
    return pyperf.perf_counter() - t0


def find_bytes(loops):
    big, n = BIG, len(BIG)
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        big.find(b"\r\n", 0, n)
    return pyperf.perf_counter() - t0


def main():
    runner = pyperf.Runner()
    assert len(HEAD) in range(380, 440), len(HEAD)
    runner.metadata["powpow_native"] = str(_ffi.NATIVE)
    runner.bench_time_func("scan_lines-400B-powpow", scan_native)
    runner.bench_time_func("scan_lines-400B-find-loop", scan_find_loop)
    runner.bench_time_func("find_crlf-64KiB-powpow", find_native)
    runner.bench_time_func("find_crlf-64KiB-bytes.find", find_bytes)


if __name__ == "__main__":
    main()
