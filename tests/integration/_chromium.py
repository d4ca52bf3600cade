"""Headless Chromium (Debian ``chromium``) as a test peer, driven through the DevTools protocol.

The DevTools WebSocket is spoken with powpow's own client (``connect_sync``).
Each browser gets a fresh profile directory and is killed with its process
group at the end.  tests/run_all.sh installs ``chromium``; without it these
tests fail (they are never skipped).
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from powpow.ws import connect_sync

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-port=0"]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("chromium is not installed (tests/run_all.sh installs the Debian package 'chromium')")


class DevToolsError(AssertionError):
    """DevTools answered a call with an error."""

    def __init__(self, msg: dict) -> None:
        super().__init__(msg)
        # asked while the page navigated (a live-reload, say): once in CI, a wait() for the
        # reloaded page failed on it instead of asking again
        self.mid_navigation = "navigated or closed" in str(msg.get("error", {}).get("message", ""))


class DevTools:
    """One page target: ``call(method, **params)`` and ``evaluate(expression)``."""

    def __init__(self, ws_url: str) -> None:
        self.ws = connect_sync(ws_url, timeout=10)
        self.next_id = 0

    def call(self, method: str, timeout: float = 10.0, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            assert left > 0, "DevTools: no answer to %s" % method
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == my_id:  # events (no id) are not ours
                if "error" in msg:
                    raise DevToolsError(msg)
                return msg["result"]

    def evaluate(self, expression: str):
        try:
            r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        except DevToolsError as exc:
            if not exc.mid_navigation:
                raise
            return None  # the page was reloading when asked: as an exception thrown in it
        if "exceptionDetails" in r:
            return None  # e.g. mid-navigation
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 15.0, want=True):
        end = time.monotonic() + timeout
        value = None
        while time.monotonic() < end:
            value = self.evaluate(expression)
            if value == want:
                return value
            time.sleep(0.05)  # polling the page: there is no event to wait on for an arbitrary expression
        raise AssertionError("%s is %r after %.0f s, wanted %r" % (expression, value, timeout, want))

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def chromium(url: str = "about:blank"):
    """Start headless Chromium on ``url``; yields a ``DevTools`` for its page."""
    binary = chromium_binary()
    profile = tempfile.mkdtemp(prefix="powpow-chromium-")
    proc = subprocess.Popen([binary] + FLAGS + ["--user-data-dir=" + profile, url], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    tools = None
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        end = time.monotonic() + 30
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            assert proc.poll() is None, "chromium exited: %s" % proc.stderr.read().decode(errors="replace")[-2000:]
            assert time.monotonic() < end, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port = int(open(port_file).read().split()[0])
        targets = []
        while not targets:
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=10) as r:
                targets = [t for t in json.load(r) if t.get("type") == "page"]
            assert time.monotonic() < end, "chromium has no page target"
        tools = DevTools(targets[0]["webSocketDebuggerUrl"])
        yield tools
    finally:
        if tools is not None:
            tools.close()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)
