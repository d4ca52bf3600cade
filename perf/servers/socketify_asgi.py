"""socketify.py's ASGI server (perf/bench_asgi.py): PORT MODULE:APP (looked up in this directory)."""
import importlib
import os
import sys

from socketify import ASGI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
module, _, attr = sys.argv[2].partition(":")
app = getattr(importlib.import_module(module), attr)
server = ASGI(app, lifespan=False)
server.listen(int(sys.argv[1]), lambda config: print("ready", flush=True))
server.run()
