"""pytest plugin: run uvicorn's own test suite with powpow.aio as the event loop underneath.

Used by tests/conformance/uvicorn_suite.sh (``-p uvicorn_powpow_plugin``).  It swaps the loop in the
three places uvicorn's suite gets one from:
* anyio's pytest plugin (``anyio_backend = "asyncio"``) makes its loop through ``asyncio.Runner`` with
  no factory, i.e. from the event loop policy -> ``powpow.aio.EventLoopPolicy``;
* ``uvicorn.run`` / ``Server.run`` with ``loop="auto"`` or ``loop="asyncio"`` -> the loop factories
  in ``uvicorn.loops`` are patched to return ``powpow.aio.new_event_loop``;
* anything calling ``asyncio.new_event_loop()`` -> the policy again.
At the end it prints how many powpow.aio loops were made (a run that made none swapped nothing).
"""
import asyncio

import powpow.aio

_made = [0]
_orig_init = powpow.aio.EventLoop.__init__


def _counting_init(self, *a, **kw):
    _made[0] += 1
    _orig_init(self, *a, **kw)


powpow.aio.EventLoop.__init__ = _counting_init  # type: ignore[method-assign]
asyncio.set_event_loop_policy(powpow.aio.EventLoopPolicy())


def _powpow_factory(use_subprocess: bool = False):
    return powpow.aio.new_event_loop


def pytest_configure(config):
    import uvicorn.loops.asyncio
    import uvicorn.loops.auto
    uvicorn.loops.asyncio.asyncio_loop_factory = _powpow_factory
    uvicorn.loops.auto.auto_loop_factory = _powpow_factory


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line("powpow.aio loops created in this run: %d" % _made[0])
