"""powpow.aio: an asyncio event loop on powpow's poller, timer wheel and transports.

    import powpow.aio
    powpow.aio.run(main())                    # like asyncio.run, on powpow's loop
    loop = powpow.aio.new_event_loop()        # an asyncio.AbstractEventLoop

``run`` goes through ``asyncio.run(loop_factory=...)`` on 3.12+, through
``asyncio.Runner(loop_factory=...)`` on 3.11, and through an equivalent runner
on 3.9/3.10 (PyPy).  ``EventLoopPolicy`` is for older code that installs a
policy (``asyncio.set_event_loop_policy(powpow.aio.EventLoopPolicy())``);
asyncio deprecates policies from 3.12 on, so prefer ``run``/``new_event_loop``.

This subpackage imports asyncio; ``import powpow`` does not import it.
"""
import asyncio
import sys

from ._dgram import DatagramQueueFull
from ._loop import EventLoop
from ._transport import StreamTransport

__all__ = ["DatagramQueueFull", "EventLoop", "EventLoopPolicy", "StreamTransport", "new_event_loop", "run"]


def new_event_loop() -> EventLoop:
    """A new ``powpow.aio.EventLoop`` (not set as the current loop)."""
    return EventLoop()


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose loops are ``powpow.aio.EventLoop``."""

    _loop_factory = EventLoop

    def new_event_loop(self) -> EventLoop:
        return EventLoop()


def run(main, *, debug=None):
    """Run coroutine ``main`` on a new powpow loop and return its result (``asyncio.run`` semantics)."""
    if sys.version_info >= (3, 12):
        return asyncio.run(main, debug=debug, loop_factory=new_event_loop)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_compat(main, debug)


def _run_compat(main, debug):
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError("powpow.aio.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(main):
        raise ValueError("a coroutine was expected, got {!r}".format(main))
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop) -> None:
    to_cancel = asyncio.all_tasks(loop)
    if not to_cancel:
        return
    for task in to_cancel:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
    for task in to_cancel:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler({"message": "unhandled exception during powpow.aio.run() shutdown",
                                         "exception": task.exception(), "task": task})
