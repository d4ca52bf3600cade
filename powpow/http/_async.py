"""``async def`` handlers for ``HttpServer``: each request runs as a task on ``powpow.aio``.

Imported only when a server is given a coroutine function (``import powpow``
never imports asyncio).  The callback path is untouched: a plain function
handler gets no task, no future, no wrapper.

Per request: ``AsyncHandler.__call__(req, res)`` creates one task running
``handler(req, res)``; ``res.on_close`` cancels it if the client goes away
before the response ended (the handler sees ``asyncio.CancelledError``).  In
the task, ``await res.write(chunk)`` streams a chunk and waits while the
client is behind (backpressure through the transport's drain), ``await
res.drain()`` only waits, ``await req.read()`` returns the body (complete:
the server buffers it up to ``max_body`` before the handler runs).  A handler
that returns without ending its response gets ``res.end()``; one that raises
is answered like a failing callback handler (500 if nothing was sent yet).
"""
import asyncio
import logging

__all__ = ["AsyncHandler", "aio_loops"]

log = logging.getLogger("powpow.http")


def aio_loops(loop):
    """(asyncio loop, powpow Loop) for an async handler's server, from ``loop=`` or the running loop."""
    from ..aio import EventLoop
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
    if not isinstance(loop, EventLoop):
        raise TypeError("an async def handler runs on powpow.aio: create the HttpServer inside powpow.aio.run(...) "
                        "or pass loop=powpow.aio.new_event_loop(), got loop=%r" % (loop,))
    return loop, loop._pl


async def _drain(res) -> None:
    if res._gone:
        raise ConnectionResetError("the client has gone")
    if res._session.writable:
        return
    fut = asyncio.get_running_loop().create_future()
    prev = res.on_drain

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    res.on_drain = ready
    try:
        await fut
    finally:
        res.on_drain = prev


class AsyncHandler:
    __slots__ = ("fn", "aio")

    def __init__(self, fn, aio) -> None:
        self.fn = fn
        self.aio = aio

    def __call__(self, req, res) -> None:
        task = self.aio.create_task(self._run(req, res))
        res.on_close = task.cancel
        sync_write = res.write

        async def write(chunk) -> bool:
            ok = sync_write(chunk)
            if not ok:
                await _drain(res)
            return not res._gone

        async def drain() -> None:
            await _drain(res)

        res.write = write
        res.drain = drain

    async def _run(self, req, res) -> None:
        try:
            await self.fn(req, res)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if res._gone:
                return
            res._session._handler_failed(req, exc)
            return
        if not res.ended and not res._gone:
            res.end()
