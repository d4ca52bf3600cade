"""The ASGI ``lifespan`` scope: startup before serving, shutdown after draining.

``mode``: "auto" (an app that raises before answering the startup message
does not speak lifespan: serve without it, as uvicorn does), "on" (that is
an error: the server does not start) or "off".  ``lifespan.startup.failed``
(or an exception during startup with "on") stops the server with a non-zero
exit code.  ``state`` is the dict the app fills in; each request scope gets
a shallow copy of it.
"""
import asyncio
import logging

log = logging.getLogger("powpow.asgi")


class Lifespan:
    def __init__(self, app, mode: str, state: dict, aio) -> None:
        self.app = app
        self.mode = mode
        self.state = state
        self.aio = aio
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.startup_done = aio.create_future()
        self.shutdown_done = aio.create_future()
        self.task = None
        self.supported = True
        self.error = ""

    async def receive(self):
        return await self.inbox.get()

    async def send(self, message) -> None:
        t = message["type"]
        if t == "lifespan.startup.complete":
            _settle(self.startup_done, True)
        elif t == "lifespan.startup.failed":
            self.error = message.get("message", "") or "lifespan.startup.failed"
            _settle(self.startup_done, False)
        elif t == "lifespan.shutdown.complete":
            _settle(self.shutdown_done, True)
        elif t == "lifespan.shutdown.failed":
            self.error = message.get("message", "") or "lifespan.shutdown.failed"
            _settle(self.shutdown_done, False)
        else:
            raise RuntimeError("ASGI: unexpected message type %r for a lifespan scope" % (t,))

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.5"}, "state": self.state}
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as exc:
            if not self.startup_done.done():
                if self.mode == "auto":
                    self.supported = False
                    log.info("ASGI 'lifespan' protocol appears unsupported (%s: %s)", type(exc).__name__, exc)
                    _settle(self.startup_done, True)
                else:
                    self.error = "%s: %s" % (type(exc).__name__, exc)
                    log.error("Exception in 'lifespan' startup", exc_info=exc)
                    _settle(self.startup_done, False)
            else:
                if not isinstance(exc, asyncio.CancelledError):
                    log.error("Exception in 'lifespan' protocol", exc_info=exc)
                    self.error = self.error or "%s: %s" % (type(exc).__name__, exc)
                _settle(self.shutdown_done, False)
            if not isinstance(exc, Exception):
                raise
        finally:
            if not self.startup_done.done():
                if self.mode == "auto":
                    self.supported = False
                    _settle(self.startup_done, True)
                else:
                    self.error = "the app returned without answering lifespan.startup"
                    _settle(self.startup_done, False)
            _settle(self.shutdown_done, self.supported and not self.error)

    async def startup(self) -> bool:
        """True when serving may start."""
        self.task = self.aio.create_task(self._run())
        self.inbox.put_nowait({"type": "lifespan.startup"})
        ok = await self.startup_done
        if not ok:
            log.error("Application startup failed: %s", self.error)
        return ok

    async def shutdown(self, timeout: float) -> bool:
        if not self.supported or self.task is None or self.task.done():
            return not self.error
        self.inbox.put_nowait({"type": "lifespan.shutdown"})
        try:
            ok = await asyncio.wait_for(asyncio.shield(self.shutdown_done), timeout)
        except asyncio.TimeoutError:
            log.error("lifespan shutdown did not complete in %.1f s", timeout)
            self.task.cancel()
            return False
        if not ok:
            log.error("Application shutdown failed: %s", self.error)
        return ok


def _settle(fut, value) -> None:
    if not fut.done():
        fut.set_result(value)
