"""``async def`` handlers for ``HttpServer``: each request runs as a task on ``powpow.aio``.

Imported only when a server is given a coroutine function (``import powpow``
never imports asyncio).  The callback path is untouched: a plain function
handler gets no task, no future, no wrapper.

Per request: ``AsyncHandler.__call__(req, res)`` creates one task running
``handler(req, res)`` and turns ``res`` into an ``AsyncResponse``.  If the
client goes away before the response ended, the task is cancelled (the
handler sees ``asyncio.CancelledError``).  In the task, ``await
res.write(chunk)`` streams a chunk and waits while the client is behind
(backpressure through the transport's drain), ``await res.drain()`` only
waits, ``await req.read()`` returns the body (complete: the server buffers it
up to ``max_body`` before the handler runs).  A handler that returns without
ending its response gets ``res.end()``; one that raises is answered like a
failing callback handler (500 if nothing was sent yet).

Loss is seen through ``Response._lost`` (which the session calls), not
through ``res.on_close``: that slot belongs to the handler (``res.on_close =
cb``, ``req.on_disconnect(cb)``), and a hook kept there was overwritten by
the first callback the handler set -- its task then waited forever on a drain
that a lost connection never brings.  A drain being awaited is also failed on
loss (``ConnectionResetError``), so no await outlives the connection; the
handler sees the task's cancellation first, also when the loss shows in the
send of its own ``write`` (a client that closed: the reset comes back to the
first chunk sent after its FIN).
"""
import asyncio
import contextvars
import logging
from typing import Optional

from .response import Response

__all__ = ["AsyncHandler", "AsyncResponse", "aio_loops"]

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
        # Lost inside this write (the send failed): ``_lost`` has cancelled the task, and
        # the cancellation is what the handler sees, as when the loss comes while it waits
        # (a task whose cancel was swallowed, or an ended answer, gets the error below).
        await asyncio.sleep(0)
        raise ConnectionResetError("the client has gone")
    if res._session.writable and not res._wants_drain:
        return  # (_wants_drain: behind an earlier answer, its own queue is full)
    fut = asyncio.get_running_loop().create_future()
    prev = res.on_drain

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    res.on_drain = ready
    res._drain_waiter = fut  # AsyncResponse._lost fails it
    try:
        await fut
    finally:
        res.on_drain = prev
        res._drain_waiter = None


class AsyncResponse(Response):
    """The ``Response`` an ``async def`` handler gets: awaitable ``write`` and
    ``drain``; losing the client cancels the handler's task.

    The session builds every answer as a plain ``Response`` (its hot path,
    shared with callback handlers, makes no choice); ``AsyncHandler`` re-classes
    it (same layout: neither class has ``__slots__``), which costs one store
    where per-request closures cost an allocation each."""

    _task: "Optional[asyncio.Task]" = None
    _drain_waiter: "Optional[asyncio.Future]" = None

    async def write(self, chunk) -> bool:  # type: ignore[override]
        if not Response.write(self, chunk):
            await _drain(self)
        return not self._gone

    async def drain(self) -> None:
        await _drain(self)

    def _lost(self) -> None:
        if self._gone:
            return
        ended = self.ended
        Response._lost(self)  # the handler's on_close / on_disconnect callback first
        fut = self._drain_waiter
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionResetError("the client has gone"))
        task = self._task
        if task is not None and not ended:
            task.cancel()


class AsyncHandler:
    """Runs each request's ``handler(req, res)`` as a task.  The tasks run in a copy of
    the context the server was made in (as asyncio's ``start_server`` callbacks do: the
    poller that dispatches requests has no context of its own), one copy per request."""

    __slots__ = ("fn", "aio", "ctx")

    def __init__(self, fn, aio) -> None:
        self.fn = fn
        self.aio = aio
        self.ctx = contextvars.copy_context()

    def __call__(self, req, res) -> None:
        res.__class__ = AsyncResponse
        # (ctx.run: create_task(context=) is 3.11+; the task copies the running context)
        res._task = self.ctx.copy().run(self.aio.create_task, self._run(req, res))

    async def _run(self, req, res) -> None:
        try:
            await self.fn(req, res)
        except asyncio.CancelledError:
            if not res._gone and not res.ended:
                # Not the client's loss (that marks res gone first): a task the handler
                # awaited was cancelled by someone else, or the handler cancelled itself.
                # Its client still waits: answer it as a failed handler (500, or the
                # answer cut), never leave it hanging.
                res._session._handler_failed(req, RuntimeError(
                    "the handler's task was cancelled before it ended its response"))
            raise
        except Exception as exc:
            if res._gone:
                return
            res._session._handler_failed(req, exc)
            return
        if not res.ended and not res._gone:
            res.end()
