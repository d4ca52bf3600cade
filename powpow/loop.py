"""The event loop: phase-ordered iterations over a poller and a timer wheel.

One iteration (``run_once``), always in this order:

1. run the deferred callbacks queued *before* this iteration (new ones wait);
2. run the callbacks posted from other threads (``post``);
3. expire timers: collect everything due, then fire, ties in insertion order;
4. compute the poll timeout: 0 if anything is pending (deferred, posted, idle
   handlers, a poll that came back full), else the wheel's next deadline
   across all levels (capped at a day: a C int of ms overflows at 24.8 days),
   else infinite (or the caller's ``timeout_ms``);
5. poll once into the preallocated event array and dispatch; an event reaches a
   watcher only if its token -- a registration counter, never reused -- is still
   a live one (fds are reused by the OS, even between two events of the same
   poll); the counter stays a one-digit int for 2**30 registrations, which
   CPython hashes and compares in a few instructions (``gen << 32 | fd`` cost
   ~350 instructions an event in the dict lookup, issue 13); a BaseException
   (KeyboardInterrupt, SystemExit) from a callback leaves ``run()`` but keeps
   the poll's later events: the next iteration dispatches them before step 1
   (an edge-triggered fd reports a readiness once: dropped, its connection
   would stall for good), as steps 1 and 3 keep the rest of their batches;
6. refresh the cached ``now``, expire timers again; idle handlers run only if
   no I/O happened in this iteration.

Time: ``now_ms()`` is integer milliseconds since the loop was created, cached
once per iteration.  ``add_timer`` reads the clock afresh and rounds *up*, and
a timer fires only once the clock has reached its deadline, so no timer fires
early, even by a fraction of a millisecond.  Intervals are re-armed on their
own grid (deadline + k * interval), so they do not drift.

Threads: only ``post`` and ``stop`` may be called from another thread.  They
wake a loop blocked in the poller through an eventfd (a pipe without the
native module), which is drained completely by an internal watcher and never
reaches user callbacks.

Signals (the self-pipe way, as libuv and uvloop do): ``add_signal`` installs
a Python-level handler and points ``signal.set_wakeup_fd`` at a pipe the loop
watches; CPython's C-level handler writes the signal number there from
whichever thread the kernel picked, which wakes the loop at once, and the
loop reads the number back and runs the user callback on the loop thread,
between other callbacks.  No signal is ever blocked.  A signalfd would need
the signal blocked, and a blocked mask is inherited by every thread started
later and by every child process (``subprocess`` does not reset it on Python
3.9): ``terminate()`` and Ctrl-C would no longer reach them.  Like asyncio's
``add_signal_handler``, this needs the main thread.
"""
import collections
import math
import numbers
import os
import signal
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ._log import get_logger
from . import _ffi
from . import poller as _poller
from .buffers import BufferPool
from .errors import LoopError, ResourceLeakError
from .poller import Events
from .timers import DUE, FIRING, INACTIVE, PAUSED, Timer, TimerWheel

__all__ = ["Loop", "Events", "TimerId", "Watcher"]

log = get_logger("powpow")

TimerId = Timer
Callback = Callable[[], object]

_monotonic_ns = time.monotonic_ns
_NS_PER_MS = 1000000
_MAX_FULL_REPOLLS = 4  # bounded extra zero-timeout polls after a full event array
# The longest single wait: epoll_wait/poll take a C int of ms (2**31-1 is 24.8 days) and
# raise OverflowError past it; a timer 30 days ahead must not kill the loop.  Waking
# once a day to find nothing due costs nothing.
_MAX_POLL_MS = 86400 * 1000


class Watcher:
    """A registered fd.  ``callback(fd, events)`` gets the ready bits as a plain int."""

    __slots__ = ("fd", "events", "callback", "token", "edge", "internal")

    def __init__(self, fd: int, events: int, callback, token: int, edge: bool, internal: bool) -> None:
        self.fd = fd
        self.events = events
        self.callback = callback
        self.token = token
        self.edge = edge
        self.internal = internal


def _fileno(fd) -> int:
    if isinstance(fd, int):
        return fd
    try:
        return fd.fileno()
    except AttributeError:
        raise TypeError("expected an int fd or an object with fileno(), got %r" % (fd,)) from None


def _default_exception_handler(exc: BaseException, callback) -> None:
    log.error("exception in callback %r", callback, exc_info=(type(exc), exc, exc.__traceback__))


class Loop:
    """An event loop.  Not thread-safe except ``post`` and ``stop``.

    ``backend``: poller name (``powpow.poller.available()``), default the best.
    ``debug``: count live timers, watchers and pooled buffers; ``close()`` then
    raises ``ResourceLeakError`` naming what is still alive.
    ``exception_handler(exc, callback)``: where exceptions from user callbacks
    go (default: ``logging`` at ERROR on the ``powpow`` logger).
    ``poller``: a ready-made poller object (``powpow.poller.create(...)`` or a
    backend class instance) instead of ``backend`` -- benchmarks compare the
    native and ``select``-based epoll this way in one process.
    """

    def __init__(self, backend: Optional[str] = None, debug: bool = False,
                 exception_handler: Optional[Callable[[BaseException, object], None]] = None,
                 buffer_pool: Optional[BufferPool] = None, poller=None) -> None:
        self._poller = poller if poller is not None else _poller.create(backend)
        self.backend = self._poller.name
        self.native = self._poller.native
        self.debug = debug
        self._exception_handler = exception_handler or _default_exception_handler
        self.buffers = buffer_pool or BufferPool()
        self._t0 = _monotonic_ns()
        self._now = 0
        self._wheel = TimerWheel(0)
        self._paused = 0
        self._firing = 0  # intervals whose callback is running (out of the wheel meanwhile)
        self._deferred: List[Callback] = []
        self._posted: Deque[Callback] = collections.deque()
        self._idle: Dict[int, Callback] = {}
        self._idle_seq = 0
        self._by_fd: Dict[int, Watcher] = {}
        self._by_token: Dict[int, Watcher] = {}
        self._gen = 0
        self._user_watchers = 0
        self._capacity = _poller.MIN_CAPACITY
        self._full_repolls = 0
        # [token, events, ...] of a poll whose dispatch a BaseException cut short (step 5)
        self._io_rest: List[int] = []
        self._running = False
        self._stopping = False
        self._closed = False
        self._thread_id: Optional[int] = None
        self._wake_pending = False
        # Orders post()/stop() from other threads against close(): the wake fd is
        # written only while still open.  Re-entrant because a signal.signal handler
        # runs on the thread it interrupts: one calling stop() (the usual Ctrl-C
        # handler) while that thread is inside stop()/post() would otherwise wait
        # for itself forever.  Nested wakes are harmless (one more byte or count).
        self._wake_lock = threading.RLock()
        self._signal_cbs: Dict[int, Callable[[int], object]] = {}
        # (r, w): signal.set_wakeup_fd(w) while signals are watched
        self._signal_pipe: Optional[Tuple[int, int]] = None
        self._signal_prev_handlers: Dict[int, Any] = {}
        self._prev_wakeup_fd: Optional[int] = None
        self._init_wake()

    # ------------------------------------------------------------ time

    def now_ms(self) -> int:
        """Milliseconds since the loop was created, cached once per iteration."""
        return self._now

    def _update_now(self) -> int:
        self._now = now = (_monotonic_ns() - self._t0) // _NS_PER_MS
        return now

    # ------------------------------------------------------------ timers

    def add_timer(self, ms: int, callback: Callback) -> TimerId:
        """Run ``callback()`` once, no earlier than ``ms`` milliseconds from now.

        ``ms`` is a whole number of milliseconds; a float is rounded up (never
        early).  A negative, NaN or infinite delay is a ``ValueError``, and a
        closed loop raises ``LoopError``.
        """
        if ms.__class__ is not int or ms < 0 or self._closed:
            ms = self._delay_ms(ms, "add_timer", "timer delay", 0)
        # ceil(now) + ms: never early, even by the fraction of the current ms.
        return self._wheel.add(-((self._t0 - _monotonic_ns()) // _NS_PER_MS) + ms, callback)

    def add_interval(self, ms: int, callback: Callback) -> TimerId:
        """Run ``callback()`` every ``ms`` milliseconds (on a fixed grid: no drift)."""
        if ms.__class__ is not int or ms <= 0 or self._closed:
            ms = self._delay_ms(ms, "add_interval", "interval", 1)
        return self._wheel.add(-((self._t0 - _monotonic_ns()) // _NS_PER_MS) + ms, callback, ms)

    def _delay_ms(self, ms, call: str, what: str, least: int) -> int:
        """The slow path of add_timer/add_interval: ``ms`` as whole milliseconds
        (a float rounded up), or the error that names what is wrong with it."""
        if self._closed:
            raise LoopError("%s() on a closed loop" % call)
        if isinstance(ms, bool) or not isinstance(ms, numbers.Real):
            raise TypeError("%s must be a number of milliseconds, got %s %r" % (what, type(ms).__name__, ms))
        if isinstance(ms, numbers.Integral):  # int subclasses, numpy integers
            whole = int(ms)
        else:
            f = float(ms)
            if not math.isfinite(f):
                raise ValueError("%s must be a finite number of milliseconds, got %r" % (what, ms))
            whole = math.ceil(f) if f > 0 else (0 if f == 0 else -1)
        if whole < least:
            raise ValueError("%s must be %s ms, got %r" % (what, ">= 0" if least == 0 else "> 0", ms))
        return whole

    def cancel_timer(self, tid: TimerId) -> bool:
        """Cancel a pending (or paused) timer; False if it already fired or was cancelled."""
        if self._wheel.cancel(tid):
            tid.callback = None  # a spent timer keeps nothing alive (timers.GC_FREE)
            return True
        if tid.slot == PAUSED:
            self._paused -= 1
        elif tid.slot != FIRING and tid.slot != DUE:
            return False
        tid.slot = INACTIVE
        tid.callback = None
        return True

    def pause_timer(self, tid: TimerId) -> bool:
        """Stop the clock of a pending timer, keeping the time it has left."""
        if tid.slot == FIRING:  # an interval pausing itself: a full period remains
            tid.remaining = tid.interval
        elif tid.slot == DUE:  # due in this very batch: it will fire on resume
            tid.remaining = 0
        elif self._wheel.cancel(tid):
            left = tid.deadline * _NS_PER_MS - (_monotonic_ns() - self._t0)
            tid.remaining = -(-left // _NS_PER_MS) if left > 0 else 0
        else:
            return False
        tid.slot = PAUSED
        self._paused += 1
        return True

    def resume_timer(self, tid: TimerId) -> bool:
        """Restart a paused timer with the time it had left."""
        if tid.slot != PAUSED:
            return False
        self._paused -= 1
        tid.deadline = -((self._t0 - _monotonic_ns()) // _NS_PER_MS) + tid.remaining
        self._wheel.insert(tid)
        return True

    @property
    def timer_count(self) -> int:
        """Live timers: scheduled, paused, and intervals whose callback is running."""
        return len(self._wheel) + self._paused + self._firing

    def _run_timers(self, now: int) -> None:
        due = self._wheel.expire(now)
        if due:
            self._fire_timers(due, now)

    def _fire_timers(self, due: List[Timer], now: int) -> None:
        """Run the callbacks of ``due`` (from ``expire``); intervals go back on their grid.

        A BaseException (KeyboardInterrupt, SystemExit) from a callback leaves
        the batch, but not its timers behind: those not run yet go back in the
        wheel, due at once, so a ``run()`` after the interrupt fires them.  One
        try around the batch, not one per callback, so the hot path pays nothing.
        """
        wheel = self._wheel
        rest = iter(due)
        t = None
        try:
            for t in rest:
                if t.slot != DUE:
                    continue  # cancelled or paused by an earlier callback of this batch
                if t.interval:
                    t.slot = FIRING
                    self._firing += 1
                    cb = t.callback
                    try:
                        cb()
                    except Exception as exc:
                        self._exception_handler(exc, cb)
                    self._firing -= 1
                    if t.slot == FIRING:
                        # next tick on the grid strictly after now: no drift, no burst
                        iv = t.interval
                        t.deadline += ((now - t.deadline) // iv + 1) * iv
                        wheel.insert(t)
                else:
                    t.slot = INACTIVE
                    cb = t.callback
                    t.callback = None  # a spent timer keeps nothing alive (timers.GC_FREE)
                    try:
                        cb()
                    except Exception as exc:
                        self._exception_handler(exc, cb)
        except BaseException:
            self._requeue_timers(t, rest, now)
            raise

    def _requeue_timers(self, current: Optional[Timer], rest, now: int) -> None:
        """After a BaseException left ``_fire_timers``: nothing of the batch is lost.

        ``current`` is the timer whose turn it was: an interval goes back on its
        grid (its callback ran, or began to), a timer still DUE had not started.
        Re-inserted timers keep their deadline, already past: due at the next tick.
        """
        self._firing = 0  # only one callback of a batch runs at a time, and none runs now
        wheel = self._wheel
        if current is not None:
            if current.slot == FIRING:
                iv = current.interval
                if current.deadline <= now:  # (unless the interrupt landed after the update)
                    current.deadline += ((now - current.deadline) // iv + 1) * iv
                wheel.insert(current)
            elif current.slot == DUE:
                wheel.insert(current)
        for t in rest:
            if t.slot == DUE:
                wheel.insert(t)

    # ------------------------------------------------------------ callbacks

    def defer_call(self, callback: Callback) -> None:
        """Run ``callback()`` at the start of the next iteration (never blocks the poll)."""
        if self._closed:
            raise LoopError("defer_call() on a closed loop")
        self._deferred.append(callback)

    def post(self, callback: Callback) -> None:
        """Thread-safe: run ``callback()`` on the loop thread, waking the loop if it sleeps.

        Raises ``LoopError`` once the loop is closed: its wake fd is gone, and
        the number may already belong to another file.
        """
        if self._closed:
            raise LoopError("post() on a closed loop")
        self._posted.append(callback)
        if not self._wake_pending:
            self._wake_pending = True
            # The lock orders this write against close(): either the wake fd is
            # still open here, or close() has run and we raise instead.
            with self._wake_lock:
                if self._closed:
                    raise LoopError("post() on a closed loop")
                self._wake()

    def _posted_if_elsewhere(self, callback: Callback) -> bool:
        """For servers' thread-safe ``shutdown()``: called off the thread the loop runs
        on, post ``callback`` (dropped if the loop closed meanwhile) and say True."""
        if not self._running or self._thread_id == threading.get_ident():
            return False
        try:
            self.post(callback)
        except LoopError:
            pass  # closed meanwhile: nothing left to stop
        return True

    def _add_stop_signals(self, callback: Callable[[int], object]) -> List[int]:
        """For servers' ``run()``: SIGINT and SIGTERM run ``callback``; in a thread other
        than the main one (no signal handlers there) none is installed.  The signals
        installed, for ``remove_signal`` afterwards."""
        if threading.current_thread() is not threading.main_thread():
            return []
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.add_signal(sig, callback)
        return [signal.SIGINT, signal.SIGTERM]

    def add_idle(self, callback: Callback) -> int:
        """Run ``callback()`` in every iteration that saw no I/O.  Returns a handle."""
        if self._closed:
            raise LoopError("add_idle() on a closed loop")
        self._idle_seq += 1
        self._idle[self._idle_seq] = callback
        return self._idle_seq

    def remove_idle(self, handle: int) -> bool:
        return self._idle.pop(handle, None) is not None

    # ------------------------------------------------------------ fds

    def register(self, fd, events: int, callback, edge: bool = False) -> Watcher:
        """Watch ``fd`` for ``events`` (``Events.READ | Events.WRITE``); ``callback(fd, events)``.

        Level-triggered, ``events`` 0 parks the fd: nothing at all is reported for it,
        not even a hang-up or an error (which the kernel would otherwise report on every
        wait), until ``modify()`` asks for events again.
        """
        return self._register(_fileno(fd), int(events), callback, edge, False)

    def _register(self, fd: int, events: int, callback, edge: bool, internal: bool) -> Watcher:
        if self._closed:
            raise LoopError("register() on a closed loop")
        if fd in self._by_fd:
            raise LoopError("fd %d is already registered with this loop; use modify()" % fd)
        self._gen += 1
        token = self._gen  # unique per registration (see the module docstring)
        if events or edge:
            self._poller.register(fd, events, token, edge)
        w = Watcher(fd, events, callback, token, edge, internal)
        self._by_fd[fd] = w
        self._by_token[token] = w
        if not internal:
            self._user_watchers += 1
        if len(self._by_fd) > self._capacity and self._capacity < _poller.MAX_CAPACITY:
            self._capacity = min(self._capacity * 2, _poller.MAX_CAPACITY)
        return w

    def modify(self, fd, events: int, callback=None) -> None:
        """Change the events (and optionally the callback) of a registered fd.

        Level-triggered, an event of the current poll for an interest dropped here
        (parked, or READ taken off) is not delivered; it is reported again if it
        still holds once asked for.  Edge-triggered, the batch's event is delivered
        as it came (its edge would not come again): the callback judges it.
        """
        fd = _fileno(fd)
        w = self._by_fd.get(fd)
        if w is None:
            raise LoopError("modify(): fd %d is not registered with this loop" % fd)
        events = int(events)
        if events != w.events:
            if not w.edge and w.events & ~events:
                # Level-triggered, events dropped (parked, or READ taken off): a new token,
                # so that an event for the old interest still in this poll's batch is not
                # delivered.  Safe only level-triggered: what still holds is reported again
                # (an edge-triggered watcher keeps its token: its edge would be lost).
                del self._by_token[w.token]
                self._gen += 1
                w.token = self._gen
                self._by_token[w.token] = w
            if w.edge or (events and w.events):
                self._poller.modify(fd, events, w.token, w.edge)
            elif events:
                self._poller.register(fd, events, w.token, False)  # parked until now
            else:
                self._poller.unregister(fd)  # park: see register()
            w.events = events
        if callback is not None:
            w.callback = callback

    def unregister(self, fd) -> bool:
        """Stop watching ``fd`` (call before closing it).  False if it was not registered."""
        fd = _fileno(fd)
        w = self._by_fd.pop(fd, None)
        if w is None:
            return False
        del self._by_token[w.token]
        if not w.internal:
            self._user_watchers -= 1
        if not self._closed and (w.events or w.edge):
            self._poller.unregister(fd)
        return True

    @property
    def watcher_count(self) -> int:
        return self._user_watchers

    # ------------------------------------------------------------ wake-up

    def _init_wake(self) -> None:
        lib = _ffi.lib
        if _ffi.NATIVE and lib.PP_HAVE_EVENTFD:
            fd = lib.pp_eventfd(0)
            if fd < 0:
                raise OSError(-fd, "eventfd: " + os.strerror(-fd))
            self._wake_r = self._wake_w = fd
            signal_fd = lib.pp_eventfd_signal
            drain = lib.pp_drain
            self._wake = lambda: signal_fd(fd)
            self._drain_fd = drain
        else:
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            self._wake_r, self._wake_w = r, w

            def wake() -> None:
                try:
                    os.write(w, b"\0")
                except BlockingIOError:
                    pass  # pipe full: the loop is awake anyway
                except OSError:
                    pass  # closed during close(): nothing left to wake

            self._wake = wake
            self._drain_fd = _drain_py
        self._register(self._wake_r, Events.READ, self._on_wake, False, True)

    def _on_wake(self, fd: int, events: int) -> None:
        # Drain first, then clear the flag.  The other order loses wake-ups: a
        # post() between the two would see the flag clear, write, and have its
        # byte drained here, leaving the flag set with nothing in the fd -- the
        # next post() would then not write and the loop would sleep with work.
        # This way a post() racing with us either writes after the drain or
        # appended before step 2 of the next iteration, which runs it.
        self._drain_fd(fd)
        self._wake_pending = False

    # ------------------------------------------------------------ signals

    def add_signal(self, signum: int, callback: Callable[[int], object]) -> None:
        """Run ``callback(signum)`` on the loop thread when ``signum`` arrives."""
        signum = int(signum)
        if signum in self._signal_cbs:
            self._signal_cbs[signum] = callback
            return
        self._signal_cbs[signum] = callback
        try:
            self._setup_signals(signum)
        except BaseException:
            del self._signal_cbs[signum]
            if not self._signal_cbs and self._signal_pipe is not None:
                self._teardown_signals()  # the wakeup fd goes back to what it was
            raise

    def remove_signal(self, signum: int) -> bool:
        signum = int(signum)
        if self._signal_cbs.pop(signum, None) is None:
            return False
        prev = self._signal_prev_handlers.pop(signum, None)
        if prev is not None:
            signal.signal(signum, prev)
        if not self._signal_cbs:
            self._teardown_signals()
        return True

    def _in_main_thread(self) -> bool:
        return threading.current_thread() is threading.main_thread()

    def _setup_signals(self, signum: int) -> None:
        if not self._in_main_thread():
            raise LoopError("add_signal() must be called from the main thread (signal handlers live there)")
        if self._closed:
            raise LoopError("add_signal() on a closed loop")
        if self._signal_pipe is None:
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            try:
                self._register(r, Events.READ, self._on_signal_pipe, False, True)
                self._prev_wakeup_fd = signal.set_wakeup_fd(w)
            except BaseException:
                self.unregister(r)
                os.close(r)
                os.close(w)
                raise
            self._signal_pipe = (r, w)
        # The Python-level handler does nothing: the C-level handler has already
        # written the number to the wakeup pipe, where the loop reads it.
        self._signal_prev_handlers[signum] = signal.signal(signum, _noop_signal_handler)

    def _on_signal_pipe(self, fd: int, events: int) -> None:
        while True:
            try:
                data = os.read(fd, 256)
            except BlockingIOError:
                return
            if not data:
                return
            for signum in data:
                self._dispatch_signal(signum)

    def _dispatch_signal(self, signum: int) -> None:
        cb = self._signal_cbs.get(signum)
        if cb is None:
            return
        try:
            cb(signum)
        except Exception as exc:
            self._exception_handler(exc, cb)

    def _teardown_signals(self) -> None:
        for signum in list(self._signal_cbs):
            self.remove_signal(signum)
        if self._signal_pipe is not None:
            r, w = self._signal_pipe
            self.unregister(r)
            try:
                signal.set_wakeup_fd(self._prev_wakeup_fd if self._prev_wakeup_fd is not None else -1)
            except ValueError:
                pass  # not the main thread any more: nothing we can restore
            os.close(r)
            os.close(w)
            self._signal_pipe = None

    # ------------------------------------------------------------ running

    @property
    def is_running(self) -> bool:
        return self._running

    def stop(self) -> None:
        """Thread-safe: make ``run()`` return after the current iteration."""
        self._stopping = True
        with self._wake_lock:
            if not self._closed:
                self._wake()

    def run(self) -> None:
        """Iterate until ``stop()``."""
        if self._running:
            raise LoopError("run() called while the loop is already running")
        if self._closed:
            raise LoopError("run() on a closed loop")
        self._running = True
        self._thread_id = threading.get_ident()
        try:
            while True:
                self._iterate(-1)
                if self._stopping:
                    # What another thread posted before its stop() runs before run() returns
                    # (asyncio's call_soon_threadsafe(cb) then (stop) runs cb too): it was
                    # left queued when the stop woke the poll, and close() dropped it.
                    if self._posted:
                        self._run_posted()
                    break
        finally:
            self._running = False
            self._stopping = False

    def run_once(self, timeout_ms: Optional[int] = None) -> None:
        """One iteration.  Polls at most ``timeout_ms`` (None: until the next timer or event).

        A single poll lasts at most a day (``_MAX_POLL_MS``), whatever the timeout.
        """
        if self._running:
            raise LoopError("run_once() called while the loop is running")
        if self._closed:
            raise LoopError("run_once() on a closed loop")
        self._running = True
        try:
            self._iterate(-1 if timeout_ms is None else min(max(0, int(timeout_ms)), _MAX_POLL_MS))
        finally:
            self._running = False
            # a stop() is spent by the iteration it cut short (as asyncio's): kept,
            # it made every later run_once() poll with timeout 0 (a busy loop)
            self._stopping = False

    def _run_posted(self) -> None:
        """Run the callbacks posted from other threads that are queued now (not later ones)."""
        posted = self._posted
        handler = self._exception_handler
        for _ in range(len(posted)):
            cb = posted.popleft()
            try:
                cb()
            except Exception as exc:
                handler(exc, cb)

    def _iterate(self, max_timeout: int) -> None:
        handler = self._exception_handler
        if self._io_rest:
            self._dispatch_io_rest()  # the events of the last poll that a BaseException cut off
        # 1. deferred callbacks queued before this iteration
        if self._deferred:
            batch = self._deferred
            self._deferred = []
            rest = iter(batch)
            try:
                for cb in rest:
                    try:
                        cb()
                    except Exception as exc:
                        handler(exc, cb)
            except BaseException:
                # KeyboardInterrupt/SystemExit from one callback: the rest of the
                # batch runs first in the next iteration, ahead of newer ones
                self._deferred[:0] = rest
                raise
        # 2. callbacks posted from other threads (only those already here)
        if self._posted:
            self._run_posted()
        # 3. timers
        now = self._update_now()
        if self._wheel._count:
            self._run_timers(now)
        # 4. poll timeout
        if self._deferred or self._posted or self._idle or self._stopping or self._full_repolls:
            timeout = 0
        else:
            nd = self._wheel.next_deadline()
            if nd is None:
                timeout = max_timeout
            else:
                # ceil to the ms: waking before the deadline tick would fire nothing
                left = nd * _NS_PER_MS - (_monotonic_ns() - self._t0)
                timeout = -(-left // _NS_PER_MS) if left > 0 else 0
                if 0 <= max_timeout < timeout:
                    timeout = max_timeout
                elif timeout > _MAX_POLL_MS:
                    timeout = _MAX_POLL_MS
        # 5. poll and dispatch
        cap = self._capacity
        events = self._poller.poll(timeout, cap)
        n = len(events)
        if n:
            get = self._by_token.get
            pairs = iter(events)
            # The hottest loop (_dispatch_io_rest is its rare-path twin).  One try around
            # it, none more per event: what a BaseException leaves waits for the next turn.
            try:
                for token, ev in zip(pairs, pairs):  # (token, events) pairs without index arithmetic
                    w = get(token)
                    if w is None:
                        continue  # unregistered (or fd reused) since the poll returned
                    cb = w.callback  # (an attribute, not a method: a plain load specialises, a method load cannot)
                    try:
                        cb(w.fd, ev)
                    except Exception as exc:
                        handler(exc, cb)
            except BaseException:
                self._io_rest = _undispatched(events, pairs)
                raise
            if n >= 2 * cap:
                # Full array: more fds may be ready.  Grow, and poll again
                # without sleeping (bounded), instead of making them wait.
                if cap < _poller.MAX_CAPACITY:
                    self._capacity = min(cap * 2, _poller.MAX_CAPACITY)
                self._full_repolls = self._full_repolls + 1 if self._full_repolls < _MAX_FULL_REPOLLS else 0
            else:
                self._full_repolls = 0
        else:
            self._full_repolls = 0
        # 6. refresh time, timers again; idle handlers only without I/O
        now = self._update_now()
        if self._wheel._count:
            self._run_timers(now)
        if not n and self._idle:
            idle = self._idle
            for h, cb in list(idle.items()):
                if idle.get(h) is not cb:
                    continue  # removed by an idle handler before it in this pass
                try:
                    cb()
                except Exception as exc:
                    handler(exc, cb)

    def _dispatch_io_rest(self) -> None:
        """Dispatch the events that a BaseException left undispatched in the last poll.

        The same loop as step 5, on the rare path: a token is looked up now,
        so a watcher unregistered or replaced since then gets nothing, and a
        second BaseException keeps what is still left, for the next turn.
        """
        events = self._io_rest
        self._io_rest = []
        handler = self._exception_handler
        get = self._by_token.get
        pairs = iter(events)
        try:
            for token, ev in zip(pairs, pairs):
                w = get(token)
                if w is None:
                    continue
                cb = w.callback
                try:
                    cb(w.fd, ev)
                except Exception as exc:
                    handler(exc, cb)
        except BaseException:
            self._io_rest = _undispatched(events, pairs)
            raise

    # ------------------------------------------------------------ teardown

    def leaks(self) -> Dict[str, int]:
        """Live resources: user timers, user watchers, pooled buffers handed out."""
        found = {}
        if self.timer_count:
            found["timers"] = self.timer_count
        if self._user_watchers:
            found["watchers"] = self._user_watchers
        if self.buffers.outstanding:
            found["buffers"] = self.buffers.outstanding
        return found

    def close(self) -> None:
        """Release the poller and internal fds.  Idempotent.

        In debug mode, raises ``ResourceLeakError`` if user timers, watchers
        or pooled buffers are still alive (after releasing everything).
        """
        if self._closed:
            return
        if self._running:
            raise LoopError("close() called while the loop is running; stop() it first")
        leaked = self.leaks() if self.debug else {}
        if self._signal_cbs or self._signal_pipe is not None:
            self._teardown_signals()
        with self._wake_lock:
            self._closed = True
        self._poller.close()
        if self._wake_r == self._wake_w:
            os.close(self._wake_r)
        else:
            os.close(self._wake_r)
            os.close(self._wake_w)
        self._by_fd.clear()
        self._by_token.clear()
        for t in self._wheel.timers():
            if t.__class__ is Timer:
                t.callback = None  # break timer <-> owner cycles (timers.GC_FREE)
        self._deferred = []
        self._io_rest = []
        self._posted.clear()
        self._idle.clear()
        if leaked:
            raise ResourceLeakError(
                "loop closed with live resources: "
                + ", ".join("%d %s" % (v, k) for k, v in sorted(leaked.items()))
            )

    @property
    def is_closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Loop":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _undispatched(events, pairs) -> List[int]:
    """The (token, events) pairs that ``pairs``, an iterator over ``events``, has not handed out.

    Odd only if the interrupt landed between the two halves of a pair (a signal
    handler runs between any two bytecodes): that pair's token is put back.
    """
    rest = list(pairs)
    if len(rest) & 1:
        rest.insert(0, events[len(events) - len(rest) - 1])
    return rest


def _drain_py(fd: int) -> int:
    total = 0
    while True:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return total
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        if not data:
            return total
        total += len(data)


def _noop_signal_handler(signum: int, frame) -> None:
    # The C-level handler has already written signum to the wakeup fd: the loop reads it there.
    pass

