"""powpow hello world (13-byte body) for perf/bench_http.py: PORT [static DIR]."""
import os
import sys

import powpow

HEADERS = [("Content-Type", "text/plain")]


def hello(req, res):
    res.send(b"Hello, World!", headers=HEADERS)


def main():
    port = int(sys.argv[1])
    handler = hello
    if len(sys.argv) > 3 and sys.argv[2] == "static":
        root = sys.argv[3]

        def handler(req, res):
            if req.path == "/":
                res.send(b"Hello, World!", headers=HEADERS)
            elif not powpow.serve_static(req, res, root):
                res.send_error(404)
    # POWPOW_BENCH_WORKERS: worker processes (perf/bench_http.py --workers)
    workers = int(os.environ.get("POWPOW_BENCH_WORKERS", "1"))
    server = powpow.HttpServer(handler, max_connections=20000, keepalive_timeout=60, workers=workers)
    server.listen(port, "127.0.0.1")
    print("ready %d" % server.port, flush=True)
    server.run()


if __name__ == "__main__":
    main()
