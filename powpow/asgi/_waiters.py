"""``Waiters``: the tasks of one ASGI cycle parked until something happens.

An app may call ``receive`` in one task while another task's ``send`` waits
for a slow client (Starlette's ``StreamingResponse`` listens for
``http.disconnect`` that way; WebSocket apps read and write concurrently).
Each cycle therefore keeps one ``Waiters`` per kind of event ("a message is
queued", "the transport drained"), and ``wake()`` resolves *every* future
parked there: a single future slot would let the second waiter overwrite the
first, which then sleeps forever.  Woken tasks re-check their own condition,
so waking one too many is harmless; close and disconnect wake both kinds.

``HttpCycle`` builds its two only when a task must wait (a request answered
without waiting never does); a ``WsCycle`` builds them with the connection.
"""
from typing import List


class Waiters:
    __slots__ = ("_loop", "_futs")

    def __init__(self, loop) -> None:
        self._loop = loop
        self._futs: List = []

    async def wait(self) -> None:
        """Park until the next ``wake()``."""
        fut = self._loop.create_future()
        self._futs.append(fut)
        try:
            await fut
        except BaseException:
            # cancelled (an app's wait_for timeout): forget it now, or an app that
            # polls an idle connection would grow this list until the next wake
            futs = self._futs
            if fut in futs:
                futs.remove(fut)
            raise

    def wake(self) -> None:
        """Resume every task parked in ``wait()``."""
        futs = self._futs
        if futs:
            self._futs = []
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)
