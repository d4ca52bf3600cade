"""Live reload: a file watcher, a WebSocket endpoint and a script injected into HTML pages.

``python -m powpow serve DIR --livereload`` uses it; any HTTP handler can too::

    lr = LiveReload(loop, root)                   # watches root, recursively
    def handler(req, res):
        if lr.handle(req, res):                   # the WebSocket endpoint
            return
        serve_static(req, res, root, inject_html=lr.snippet)

Every text/html page served that way carries ``snippet``: a ~400-byte script
that opens a WebSocket to ``path`` (``/_powpow/livereload``) and reloads the
page when the server says ``reload``; if the server goes away it retries each
second and reloads once it is back (the files may have changed meanwhile).
The socket is ``window.__powpow_livereload`` (tests wait for it to be open).
A change under ``root`` (write, create, delete, rename) is debounced
(``debounce_ms``, editors write in bursts) and then broadcast once to every
open page.  Hidden paths (a segment starting with ``.``, e.g. ``.git``) and
editor swap/backup files (``~``, ``.swp``, ``.swx``, ``4913``) are ignored.
"""
import logging
import os
from typing import Optional, Set

from .connection import WebSocket
from .server import broadcast, upgrade

log = logging.getLogger("powpow.ws")

PATH = "/_powpow/livereload"

_SCRIPT = """<script>/* powpow live reload */(function(){var d=false;function c(){
var w=window.__powpow_livereload=new WebSocket((location.protocol==="https:"?"wss://":"ws://")+location.host+"%s");
w.onopen=function(){if(d)location.reload();};
w.onmessage=function(e){if(e.data==="reload")location.reload();};
w.onclose=function(){d=true;setTimeout(c,1000);};}c();})();</script>
"""


def _ignored(rel: str) -> bool:
    parts = rel.split(os.sep)
    if any(p.startswith(".") for p in parts if p):
        return True
    name = parts[-1]
    return name.endswith(("~", ".swp", ".swx")) or name == "4913"


class LiveReload:
    """See the module docstring.  ``close()`` stops the watcher and closes the pages' sockets."""

    def __init__(self, loop, root: str, path: str = PATH, debounce_ms: int = 100,
                 backend: Optional[str] = None) -> None:
        from ..extras.filewatch import FileWatcher
        self.loop = loop
        self.root = os.path.abspath(root)
        self.path = path
        self.debounce_ms = debounce_ms
        self.snippet = (_SCRIPT % path).encode()
        self.clients: Set[WebSocket] = set()
        self.reloads = 0  # broadcasts sent
        self._timer = None
        self.watcher = FileWatcher(loop, self.root, self._on_change, recursive=True, backend=backend)

    def handle(self, req, res) -> bool:
        """Take ``req`` if it is for the endpoint (upgrade, or a 400/426 for a bad handshake)."""
        if req.path != self.path:
            return False
        ws = upgrade(req, res, on_close=self._gone, compression=None, ping_interval=20.0, max_message_size=1024)
        if ws is not None and not ws.closed:
            self.clients.add(ws)
        return True

    def _gone(self, ws, code, reason) -> None:
        self.clients.discard(ws)

    def _on_change(self, event) -> None:
        paths = [event.path] + ([event.dest] if event.dest else [])
        if all(_ignored(os.path.relpath(p, self.root)) for p in paths):
            return
        if self._timer is None:
            self._timer = self.loop.add_timer(self.debounce_ms, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.reloads += 1
        log.info("live reload: %d page(s)", len(self.clients))
        broadcast(list(self.clients), "reload")

    def close(self) -> None:
        if self._timer is not None:
            self.loop.cancel_timer(self._timer)
            self._timer = None
        self.watcher.close()
        for ws in list(self.clients):
            ws.close(1001, "server shutting down")
