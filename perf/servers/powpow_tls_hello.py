"""powpow HTTPS hello world (13-byte body) for perf/bench_tls.py: PORT CERT KEY [static DIR]."""
import sys

import powpow
from powpow.net.tls import server_context

HEADERS = [("Content-Type", "text/plain")]


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    root = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "static" else None

    def handler(req, res):
        if req.path == "/":
            res.send(b"Hello, World!", headers=HEADERS)
        elif root is None or not powpow.serve_static(req, res, root):
            res.send_error(404)
    ctx = server_context(cert, key)
    server = powpow.HttpServer(handler, max_connections=20000, keepalive_timeout=60, ssl=ctx)
    server.listen(port, "127.0.0.1")
    print("ready %d" % server.port, flush=True)
    server.run()


if __name__ == "__main__":
    main()
