"""Debug mode's slow-callback warnings for protocol callbacks.

In debug mode asyncio logs ``Executing <Handle ...> took X seconds`` (logger
"asyncio") for every callback that runs longer than
``loop.slow_callback_duration``.  Its transports call protocols from handles,
so that covers them.  powpow.aio calls a stream protocol's ``data_received`` /
``buffer_updated`` straight from the poller or a deferred read (no Handle) and
``pause_writing`` / ``resume_writing`` from the end-of-iteration write flush:
without this module a slow one would never be reported.

* Zero cost when debug is off: a stream transport hands its Connection a timed
  ``on_data`` only while the loop is in debug mode (``EventLoop.set_debug``
  swaps it on live transports), and the flow-control calls test ``_debug``
  only on a pause/resume transition, never per read.
* The warning names the protocol callback and the transport
  (``Executing Echo.data_received() of <powpow StreamTransport fd=9 open> took
  0.105 seconds``), not a transport-internal method.  Handles whose callback is
  a transport method marked with ``protocol_callback`` (``connection_made``,
  ``eof_received``, ``connection_lost``, a datagram transport's reads) are
  named the same way by ``EventLoop._run_ready_debug``.
* One slow callback gives one warning: a protocol callback timed here inside a
  handle (``pause_writing`` from ``write()``) marks ``loop._slow_reported`` and
  the handle's own warning is left out.
"""
import logging
from typing import Any, Callable, TypeVar

__all__ = ["call_timed", "describe", "protocol_callback"]

logger = logging.getLogger("asyncio")  # where asyncio's own debug warnings go

_F = TypeVar("_F", bound=Callable[..., Any])


def protocol_callback(name: str) -> Callable[[_F], _F]:
    """Mark a transport method that a handle runs as (mostly) protocol callback ``name``."""
    def mark(fn: _F) -> _F:
        fn._protocol_callback = name  # type: ignore[attr-defined]
        return fn
    return mark


def describe(protocol, name: str, transport) -> str:
    return "%s.%s() of %r" % (type(protocol).__qualname__, name, transport)


def call_timed(loop, transport, protocol, name: str, fn, *args):
    """``fn(*args)``, warning if it ran ``loop.slow_callback_duration`` or longer (debug mode only)."""
    t0 = loop.time()
    try:
        return fn(*args)
    finally:
        dt = loop.time() - t0
        if dt >= loop.slow_callback_duration:
            loop._slow_reported = True
            logger.warning("Executing %s took %.3f seconds", describe(protocol, name, transport), dt)
