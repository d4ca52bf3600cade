"""socketify.py HTTPS hello world (uWebSockets' own TLS) for perf/bench_tls.py: PORT CERT KEY."""
import sys

from socketify import App, AppOptions

app = App(AppOptions(key_file_name=sys.argv[3], cert_file_name=sys.argv[2]))
app.get("/", lambda res, req: res.end("Hello, World!"))
app.listen(int(sys.argv[1]), lambda config: print("ready", flush=True))
app.run()
