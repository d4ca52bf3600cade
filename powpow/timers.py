"""Hierarchical timer wheel: 4 levels x 256 slots at 1 ms, pure Python, integer time.

Why a wheel: a binary heap costs O(log n) per insert and per pop, and in Python
each of those steps is an interpreted comparison; with a million pending timers
(one keep-alive deadline per connection) that is the whole budget.  Here insert,
cancel and expiry are O(1): a handful of integer operations and one dict write.

Layout and invariants
---------------------
* Time is an integer tick (1 ms).  ``now`` is the next tick to be processed:
  every timer with ``deadline < now`` has been handed out by ``expire``.
* A timer with deadline ``d`` lives at level ``L`` = index of the highest byte in
  which ``d`` and ``now`` differ, in slot ``(d >> 8L) & 255``.  So a level-0 slot
  holds timers of *one exact tick*, and level-L slots are always ahead of the
  level's current index: there is no wrap-around to disambiguate.  When ``now``
  reaches the first tick covered by a level-L slot, that slot is *cascaded*:
  each timer is re-inserted and lands on a lower level.
* Deadlines 2**32 ms (~49.7 days) or more ahead go to an overflow dict that is
  re-inserted when ``now`` enters the next 2**32 epoch (clamp and re-cascade).
* Each slot is a plain list; a timer knows its index in it (``pos``), so
  cancel is O(1): the entry becomes ``None`` (a hole).  A slot whose entries
  are all holes is emptied at once (so the occupancy bitmap stays exact), and
  one that is more than half holes is compacted (amortised O(1)), so memory
  stays bounded under cancel churn.  Lists beat dicts here: appends and scans
  are cheaper and a million pending timers cost 8 bytes of slot each.
  (Measured: cancel at 1M pending went from ~380 ns with dict slots to ~60 ns.)
* A timer inserted earlier never sits on a lower level than a later one with
  the same deadline (levels only shrink as ``now`` approaches ``d``), and
  cascades keep slot order, so ties fire in insertion order without a
  sequence number.
* One occupancy bitmap (a 256-bit int) per level.  ``next_deadline`` takes the
  lowest occupied slot at or after the current index of level 0, else of level
  1, 2, 3 -- across all levels, never "the lowest non-empty level".  For a level
  >= 1 the answer is the tick at which the slot cascades, which is never later
  than any deadline in it; waking there costs one cascade, not a late timer.
  (The original library looked only at the lowest non-empty level: a 300 ms
  timer next to a 450 ms one could fire late.)

Cost at scale (issue 13; ``perf/bench_timers.py --phases``): the wheel's own
work per timer does not grow with the number pending.  What grows is the
memory system.  On CPython that was the cyclic GC (hence ``GC_FREE``).  On PyPy
it is the nursery: a timer that outlives a minor collection is copied to the
old generation -- two GC objects, the instance and its unboxed-int storage --
and the old generation's new pages are faulted in; a benchmark with 10k timers
created and dropped between two minor collections never pays that, one with a
million does.  Layouts that keep Timer references out of the slots (integer
handles in int lists, linked lists on int arrays, int refs into one table kept
in insertion order) or shrink the Timer (shared int boxes, one object instead
of two), slot lists that grow by doubling instead of list.append's ~1/8, and
a lazier compaction (three quarters holes: faster on CPython, slower on PyPy)
were measured and none was faster on both: the Timer object handed out per
timer is the floor.
"""
from typing import Any, Callable, Iterator, List, Optional

__all__ = ["Timer", "TimerWheel", "WHEEL_SPAN_MS"]

LEVELS = 4
SLOT_BITS = 8
SLOTS = 1 << SLOT_BITS
WHEEL_SPAN_MS = 1 << (LEVELS * SLOT_BITS)  # 2**32 ms

# Timer.slot values besides a flat slot index (level * 256 + slot)
INACTIVE = -1  # fired (one-shot) or cancelled
OVERFLOW = -2  # in the overflow dict (beyond the wheel's span)
PAUSED = -3  # taken out by pause(); ``remaining`` holds the time left
FIRING = -4  # an interval whose callback is running now (set by the loop)
DUE = -5  # handed out by expire() and not run yet: cancelling it must still win


class Timer:
    """A pending callback.  Opaque to users: it is the ``TimerId`` the loop hands out."""

    __slots__ = ("deadline", "callback", "interval", "slot", "pos", "remaining")
    slot: int
    pos: int
    remaining: int
    callback: Any  # the callable; None once spent or cancelled (see GC_FREE)

    def __init__(self, deadline: int, callback: Callable[[], object], interval: int = 0) -> None:
        # `slot`/`pos` are set by TimerWheel.insert and `remaining` only by a
        # pause: fewer stores on the hottest constructor in the loop.
        self.deadline = deadline
        self.callback = callback
        self.interval = interval

    @property
    def active(self) -> bool:
        """True while the timer is scheduled (in the wheel or the overflow)."""
        return self.slot >= 0 or self.slot == OVERFLOW

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "<Timer deadline=%d interval=%d slot=%d>" % (self.deadline, self.interval, self.slot)


def _gc_free_timers() -> bool:
    """CPython with the native module: make ``Timer`` instances invisible to the cyclic GC.

    A million pending timers are a million tracked objects; every full
    collection walks them all, and while they are being created CPython runs
    several, so the cost per timer grew with the number pending (1.7x from 10k
    to 1M, issue 13).  With the GC flag cleared (``src/pp_cpy.c``) a Timer
    costs the collector nothing.  The price: a reference cycle through a Timer
    is never collected, so the loop breaks the usual one (an object holding
    its timer whose callback is a method of that object) by dropping the
    callback when a one-shot timer fires, when a timer is cancelled and when
    the loop closes.  A *paused* timer dropped by its owner while still
    referring to it is the one case left to refcounting alone.
    Off on PyPy (its GC does not walk old objects that way), in pure mode, and
    on CPython versions the type surgery was not checked against.
    """
    import sys

    if sys.implementation.name != "cpython" or not (3, 9) <= sys.version_info[:2] <= (3, 13):
        return False
    from powpow._ffi import lib

    if lib is None or lib.pp_gc_untrack_type(id(Timer)) != 0:
        return False
    import gc

    return not gc.is_tracked(Timer(0, _gc_free_timers))


# True when Timer instances are not tracked by CPython's cyclic GC (see above).
GC_FREE = _gc_free_timers()

if GC_FREE:
    def _no_subclass(cls, **kwargs):
        # the C deallocator of a GC-free Timer releases Timer's own slots only
        raise TypeError("powpow.timers.Timer cannot be subclassed")

    Timer.__init_subclass__ = classmethod(_no_subclass)  # type: ignore[assignment]
    del _no_subclass

_COMPACT_MIN_HOLES = 64


class TimerWheel:
    """The wheel.  Driven by integer ticks: ``add``/``insert``, ``cancel``, ``expire(now)``."""

    __slots__ = ("now", "_slots", "_holes", "_bitmaps", "_overflow", "_count")

    def __init__(self, now: int = 0) -> None:
        self.now = now
        self._slots: List[list] = [[] for _ in range(LEVELS * SLOTS)]
        self._holes = [0] * (LEVELS * SLOTS)
        self._bitmaps = [0] * LEVELS
        self._overflow: dict = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def timers(self) -> Iterator[Timer]:
        """Every scheduled timer (debugging and teardown; not in deadline order)."""
        for s in self._slots:
            for t in s:
                if t is not None:
                    yield t
        yield from list(self._overflow)

    # -- insert / cancel -------------------------------------------------

    def add(self, deadline: int, callback: Callable[[], object], interval: int = 0) -> Timer:
        """Create and schedule a timer (``insert`` inlined: this is the hot path)."""
        timer = Timer(deadline, callback, interval)
        now = self.now
        if deadline < now:
            deadline = now
        if deadline ^ now < SLOTS:
            idx = deadline & 255
            s = self._slots[idx]
            if not s:  # first timer in the slot: mark it occupied (rare; big-int op)
                self._bitmaps[0] |= 1 << idx
            timer.pos = len(s)
            s.append(timer)
            timer.slot = idx
            self._count += 1
            return timer
        return self.insert(timer)

    def insert(self, timer: Timer) -> Timer:
        """Schedule ``timer`` at ``timer.deadline`` (a past deadline fires on the next expire)."""
        d = timer.deadline
        now = self.now
        if d < now:
            d = now
        x = d ^ now
        if x < WHEEL_SPAN_MS:
            if x < SLOTS:
                level = 0
                i = idx = d & 255
            else:
                level = (x.bit_length() - 1) >> 3
                i = (d >> (level << 3)) & 255
                idx = (level << 8) | i
            s = self._slots[idx]
            if not s:
                self._bitmaps[level] |= 1 << i
            timer.pos = len(s)
            s.append(timer)
            timer.slot = idx
        else:
            self._overflow[timer] = None
            timer.slot = OVERFLOW
        self._count += 1
        return timer

    def cancel(self, timer: Timer) -> bool:
        """Remove a scheduled timer.  False if it was not in the wheel."""
        idx = timer.slot
        if idx >= 0:
            s = self._slots[idx]
            s[timer.pos] = None
            holes = self._holes[idx] + 1
            if holes == len(s):  # nothing live left: empty it, keep the bitmap exact
                s.clear()
                self._holes[idx] = 0
                self._bitmaps[idx >> 8] &= ~(1 << (idx & 255))
            elif holes >= _COMPACT_MIN_HOLES and holes * 2 > len(s):
                live = [t for t in s if t is not None]
                for pos, t in enumerate(live):
                    t.pos = pos
                s[:] = live
                self._holes[idx] = 0
            else:
                self._holes[idx] = holes
        elif idx == OVERFLOW:
            del self._overflow[timer]
        else:
            return False
        timer.slot = INACTIVE
        self._count -= 1
        return True

    def _take(self, idx: int) -> list:
        """Empty slot ``idx``; return its live timers in order (bitmap bit left to the caller)."""
        s = self._slots[idx]
        if self._holes[idx]:
            live = [t for t in s if t is not None]
            self._holes[idx] = 0
        else:
            live = s[:]
        s.clear()
        self._count -= len(live)
        return live

    # -- queries ---------------------------------------------------------

    def next_deadline(self) -> Optional[int]:
        """The earliest tick at which ``expire`` has work (a deadline or a cascade); None if empty."""
        if not self._count:
            return None
        now = self.now
        bitmaps = self._bitmaps
        cur = now & 255
        m = bitmaps[0] >> cur
        if m:
            return now + (m & -m).bit_length() - 1
        for level in (1, 2, 3):
            shift = level << 3
            cur = (now >> shift) & 255
            m = bitmaps[level] >> cur
            if m:
                i = cur + (m & -m).bit_length() - 1
                top = shift + 8
                tick = ((now >> top) << top) | (i << shift)
                return tick if tick > now else now
        if self._overflow:
            return ((now >> 32) + 1) << 32
        return None  # pragma: no cover - _count says otherwise

    # -- expiry ----------------------------------------------------------

    def expire(self, until: int) -> List[Timer]:
        """Advance to ``until`` (inclusive); return due timers in (deadline, insertion) order.

        Returned timers are marked ``DUE``; the caller runs those still DUE when their
        turn comes (an earlier callback of the batch may cancel a later one).
        """
        due: List[Timer] = []
        now = self.now
        if until < now:
            return due
        slots = self._slots
        bitmaps = self._bitmaps
        append = due.append
        while True:
            # 1. level 0: every occupied tick of the current 256-block up to `until`
            lo = now & 255
            block_end = now | 255
            hi = until if until < block_end else block_end
            m = (bitmaps[0] >> lo) & ((2 << (hi - now)) - 1)
            if m:
                bitmaps[0] &= ~(m << lo)
                holes = self._holes
                while m:
                    low = m & -m
                    idx = lo + low.bit_length() - 1
                    m ^= low
                    s = slots[idx]
                    if holes[idx]:
                        for t in s:
                            if t is not None:
                                t.slot = DUE
                                append(t)
                        self._count -= len(s) - holes[idx]
                        holes[idx] = 0
                    else:
                        for t in s:
                            t.slot = DUE
                        due += s
                        self._count -= len(s)
                    s.clear()
            if hi == until:
                self._advance(until + 1)
                return due
            # 2. level 0 is empty up to the block end: on to the next block, cascading
            # there (at a 2**32 boundary that is where the overflow comes back), then
            # jump to the next deadline or cascade
            self._advance(block_end + 1)
            nxt = self.next_deadline()
            if nxt is None or nxt > until:
                self._advance(until + 1)
                return due
            self._advance(nxt)
            now = nxt

    def _advance(self, now: int) -> None:
        # Cascade as soon as `now` reaches a slot start, before anything else
        # can be inserted at this tick: that keeps same-deadline timers FIFO.
        self.now = now
        if not now & 255:
            self._cascade(now)

    def _cascade(self, now: int) -> None:
        """``now`` is a slot start: move every timer whose slot begins here one level down."""
        if not now & 0xFFFFFFFF and self._overflow:
            moved = list(self._overflow)
            self._overflow.clear()
            self._count -= len(moved)
            for t in moved:
                self.insert(t)
        for level in (3, 2, 1):
            shift = level << 3
            if now & ((1 << shift) - 1):
                continue
            i = (now >> shift) & 255
            idx = (level << 8) | i
            if not self._slots[idx]:
                continue
            self._bitmaps[level] &= ~(1 << i)
            moved = self._take(idx)
            if level == 1:
                # Every deadline here lies in [now, now + 256): straight to level 0.
                slots = self._slots
                bm = self._bitmaps[0]
                for t in moved:
                    j = t.deadline & 255
                    s0 = slots[j]
                    if not s0:
                        bm |= 1 << j
                    t.pos = len(s0)
                    s0.append(t)
                    t.slot = j
                self._bitmaps[0] = bm
                self._count += len(moved)
                continue
            for t in moved:
                self.insert(t)
