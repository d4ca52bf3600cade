"""The powpow echo server Autobahn's fuzzingclient tests: ``python echo_server.py PORT``.

Limits raised as the suite expects (32 MiB messages for cases 9.*, fragments
unbounded); compression on with the defaults.
"""
import sys

import powpow


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9001
    srv = powpow.WsServer(on_message=lambda ws, data, is_text: ws.send(data), max_message_size=32 << 20,
                          max_fragments=None, ping_interval=None, max_buffered=64 << 20, high_water=16 << 20)
    srv.listen(port, "127.0.0.1")
    print("listening", srv.port, flush=True)
    srv.run()


if __name__ == "__main__":
    main()
