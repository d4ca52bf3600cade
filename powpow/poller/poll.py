"""``poll(2)`` backend: the portable fallback (level-triggered only; ``edge`` is ignored).

It costs O(registered fds) per call in the kernel, which is why it is last in
``powpow.poller.available()``; it exists so powpow runs wherever Python does.
"""
import select
import sys

from . import RDHUP, flatten

_EMPTY = ()
# Linux (and a few others): the peer's FIN as its own bit, like EPOLLRDHUP.  Without it
# a paused connection learns of a hang-up only from POLLHUP (both directions closed).
_POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000 if sys.platform.startswith("linux") else 0)  # PyPy lacks the name


def _mask(events: int) -> int:
    m = 0
    if events & 0x001:
        m |= select.POLLIN | select.POLLPRI | _POLLRDHUP
    elif events & RDHUP:
        m |= _POLLRDHUP
    if events & 0x004:
        m |= select.POLLOUT
    return m


class PollPoller:
    name = "poll"
    native = False

    def __init__(self) -> None:
        self._p = select.poll()
        self._tokens = {}
        self.fd = -1

    def register(self, fd: int, events: int, token: int, edge: bool = False) -> None:
        if fd in self._tokens:
            raise FileExistsError(17, "fd %d is already registered" % fd)
        self._p.register(fd, _mask(events))
        self._tokens[fd] = token

    def modify(self, fd: int, events: int, token: int, edge: bool = False) -> None:
        self._p.modify(fd, _mask(events))
        self._tokens[fd] = token

    def unregister(self, fd: int) -> None:
        if self._tokens.pop(fd, None) is not None:
            self._p.unregister(fd)

    def poll(self, timeout_ms: int, capacity: int):
        res = self._p.poll(timeout_ms if timeout_ms >= 0 else None)
        if not res:
            return _EMPTY
        return flatten(res, self._tokens, select.POLLIN | select.POLLPRI, select.POLLOUT,
                       select.POLLERR | select.POLLNVAL, select.POLLHUP | _POLLRDHUP)

    def close(self) -> None:
        self._tokens.clear()
