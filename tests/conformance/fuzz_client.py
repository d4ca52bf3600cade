"""The powpow client under Autobahn's fuzzingserver: ``python fuzz_client.py ws://127.0.0.1:PORT [agent]``.

Fetches the case count, runs every case echoing each message, then asks the
server to write its reports.  One loop, one case at a time.
"""
import sys

import powpow
from powpow.ws import connect


def main() -> None:
    base = sys.argv[1]
    agent = sys.argv[2] if len(sys.argv) > 2 else "powpow"
    loop = powpow.Loop()
    state = {"count": 0, "case": 0}
    opts = dict(max_message_size=32 << 20, max_fragments=None, ping_interval=None, max_buffered=64 << 20,
                high_water=16 << 20, open_timeout=10)

    def next_case(*_):
        state["case"] += 1
        if state["case"] > state["count"]:
            connect(loop, "%s/updateReports?agent=%s" % (base, agent), on_close=lambda *a: loop.stop(),
                    on_error=lambda e: loop.stop(), **opts)
            return
        connect(loop, "%s/runCase?case=%d&agent=%s" % (base, state["case"], agent),
                on_message=lambda ws, d, t: ws.send(d), on_close=lambda *a: loop.defer_call(next_case),
                on_error=lambda e: (print("case", state["case"], e), loop.defer_call(next_case)), **opts)

    def got_count(ws, data, is_text):
        state["count"] = int(data)
        print("cases:", state["count"], flush=True)

    connect(loop, base + "/getCaseCount", on_message=got_count, on_close=next_case,
            on_error=lambda e: (print(e), loop.stop()), **opts)
    loop.run()
    loop.close()


if __name__ == "__main__":
    main()
