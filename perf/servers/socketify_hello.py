"""socketify.py hello world (perf/bench_http.py): PORT."""
import sys

from socketify import App

app = App()
app.get("/", lambda res, req: res.end("Hello, World!"))
app.listen(int(sys.argv[1]), lambda config: print("ready", flush=True))
app.run()
