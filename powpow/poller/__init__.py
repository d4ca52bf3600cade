"""I/O pollers: one small interface, one module per OS mechanism, chosen once.

Every backend has the same methods::

    register(fd, events, token, edge=False)   modify(fd, events, token, edge=False)
    unregister(fd)                            poll(timeout_ms, capacity) -> flat list
    close()

``poll`` returns ``[token, events, token, events, ...]`` -- a flat list, so the
loop dispatches with one dict lookup per event and no per-event tuples.  The
token is the loop's 64-bit watcher tag (a registration counter): the native
epoll/kqueue backends hand it to the kernel, the pure ones translate fd ->
token *before* returning, so a watcher replaced during dispatch never receives
an event that was meant for its predecessor.

``events`` use the epoll bit values on every backend (``Events`` below).

The peer's half-close (its FIN) is reported as ``HUP`` on every backend
(EPOLLRDHUP, POLLRDHUP, kqueue EV_EOF), alongside ``READ`` when READ is
watched.  ``RDHUP`` as an *interest* bit asks for that report without READ:
a connection whose reading is paused must still notice a hang-up.  The
level-triggered backends (``poll``, pure ``epoll``) honour it; with the native
epoll shim READ already carries EPOLLRDHUP, and the edge-triggered users
(the TCP layer) keep READ registered while paused, so the report comes anyway.
"""
import enum
import select
import sys

from .. import _ffi


class Events(enum.IntFlag):
    """Readiness bits passed to watcher callbacks (as plain ints: compare with ``&``)."""

    NONE = 0
    READ = 0x001
    WRITE = 0x004
    ERROR = 0x008
    HUP = 0x010
    RDHUP = 0x2000


READ = 0x001
WRITE = 0x004
ERROR = 0x008
HUP = 0x010
RDHUP = 0x2000  # interest only: report the peer's FIN (as HUP) even without READ

MIN_CAPACITY = 64
MAX_CAPACITY = 4096


def flatten(results, tokens, in_bits, out_bits, err_bits, hup_bits):
    """[(fd, raw_mask), ...] -> [token, events, ...] for the ``select``-based twins.

    Runs right after the poll returns, before any callback: a watcher that is
    replaced during dispatch keeps the token it had, so stale events miss it.
    """
    out = []
    append = out.append
    for fd, e in results:
        tok = tokens.get(fd)
        if tok is None:
            continue
        m = READ if e & in_bits else 0
        if e & out_bits:
            m |= WRITE
        if e & err_bits:
            m |= ERROR
        if e & hup_bits:
            m |= HUP
        append(tok)
        append(m)
    return out


def available():
    """Backend names usable here, best first."""
    names = []
    if sys.platform.startswith("linux") and (_ffi.NATIVE or hasattr(select, "epoll")):
        names.append("epoll")
    if (_ffi.NATIVE and _ffi.lib.PP_HAVE_KQUEUE) or hasattr(select, "kqueue"):
        names.append("kqueue")
    if hasattr(select, "poll"):
        names.append("poll")
    return names


def create(name=None):
    """A new poller; ``name`` is one of ``available()`` (default: the best)."""
    names = available()
    if name is None:
        if not names:  # pragma: no cover - no supported platform lacks poll()
            raise RuntimeError("no I/O poller available on this platform")
        name = names[0]
    if name not in names:
        raise ValueError("poller %r is not available here (available: %s)" % (name, ", ".join(names)))
    if name == "epoll":
        from . import epoll

        return epoll.NativeEpoll() if _ffi.NATIVE else epoll.SelectEpoll()
    if name == "kqueue":
        from . import kqueue

        return kqueue.NativeKqueue() if _ffi.NATIVE and _ffi.lib.PP_HAVE_KQUEUE else kqueue.SelectKqueue()
    from . import poll

    return poll.PollPoller()
