"""The timer wheel on integer time: no sockets, no clock."""
import random

import pytest

from powpow.timers import INACTIVE, WHEEL_SPAN_MS, Timer, TimerWheel


def fire_all(wheel, until):
    return [t.callback for t in wheel.expire(until)]


def drive(wheel, limit=10**12):
    """Jump from deadline to deadline as an idle loop would; return [(tick, name)] fired.

    Asserts the loop-level contract on the way: never past a deadline, and
    never more than a few wake-ups per timer (cascades), i.e. no busy loop.
    """
    fired = []
    wakeups = 0
    while len(wheel):
        nd = wheel.next_deadline()
        assert nd is not None and nd >= wheel.now
        assert nd <= limit
        wakeups += 1
        for t in wheel.expire(nd):
            assert t.deadline <= nd
            fired.append((nd, t.callback))
    return fired, wakeups


def test_single_timer_levels_fire_exactly():
    for delay in (0, 1, 255, 256, 257, 1000, 65535, 65536, 65537, 70000, 2**24 - 1, 2**24, 2**24 + 5, 2**31):
        w = TimerWheel(0)
        w.add(delay, "t")
        fired, wakeups = drive(w)
        assert fired == [(delay, "t")], delay
        assert wakeups <= 4, (delay, wakeups)  # level 3 -> 2 -> 1 -> 0 at most


def test_seventy_second_timer_without_io_fires_at_70s():
    w = TimerWheel(123)
    w.add(123 + 70000, "70s")
    fired, wakeups = drive(w)
    assert fired == [(123 + 70000, "70s")]
    assert wakeups <= 3


def test_300ms_before_450ms_fires_at_300():
    # The original looked at the lowest non-empty level only.
    w = TimerWheel(0)
    w.add(300, "a")
    w.add(450, "b")
    fired, _ = drive(w)
    assert fired == [(300, "a"), (450, "b")]
    w = TimerWheel(0)
    w.add(450, "b")
    w.add(300, "a")
    w.add(10, "c")
    assert drive(w)[0] == [(10, "c"), (300, "a"), (450, "b")]


@pytest.mark.parametrize("boundary", [256, 65536, 2**24, 2**32])
def test_cascade_at_boundaries(boundary):
    w = TimerWheel(boundary - 3)
    names = []
    for off in (-2, -1, 0, 1, 2, 255, 256, 300):
        name = "at%+d" % off
        w.add(boundary + off, name)
        names.append((boundary + off, name))
    fired, _ = drive(w)
    assert fired == sorted(names)


def test_next_deadline_across_levels():
    w = TimerWheel(0)
    assert w.next_deadline() is None
    w.add(70000, "x")
    # level 2: wake at the cascade point (65536), never later than 70000
    assert w.next_deadline() == 65536
    w.add(1000, "y")
    assert w.next_deadline() == 768  # level-1 slot of 1000 starts at 3 * 256
    w.add(5, "z")
    assert w.next_deadline() == 5


def test_ties_fire_in_insertion_order_across_cascades():
    w = TimerWheel(0)
    w.add(70000, 0)
    w.expire(69000)  # cascaded down to level 1 meanwhile
    w.add(70000, 1)
    w.expire(69990)
    w.add(70000, 2)
    w.add(70000, 3)
    assert fire_all(w, 70000) == [0, 1, 2, 3]


def test_past_deadline_fires_on_next_expire():
    w = TimerWheel(1000)
    w.add(10, "late")
    assert fire_all(w, 1000) == ["late"]


def test_expire_before_deadline_fires_nothing():
    w = TimerWheel(0)
    w.add(100, "t")
    assert w.expire(99) == []
    assert len(w) == 1
    assert fire_all(w, 100) == ["t"]
    assert len(w) == 0


def test_cancel():
    w = TimerWheel(0)
    a = w.add(10, "a")
    b = w.add(70000, "b")
    c = w.add(2**33, "c")  # overflow: beyond the wheel's span
    assert len(w) == 3
    assert w.cancel(a) and w.cancel(b) and w.cancel(c)
    assert not w.cancel(a)
    assert len(w) == 0 and w.next_deadline() is None
    assert w.expire(2**34) == []
    assert a.slot == INACTIVE


def test_cancel_keeps_bitmap_right():
    w = TimerWheel(0)
    a = w.add(10, "a")
    w.add(10, "b")
    w.cancel(a)
    assert w.next_deadline() == 10
    assert fire_all(w, 10) == ["b"]


def test_beyond_span_clamps_and_recascades():
    w = TimerWheel(5)
    far = 5 + WHEEL_SPAN_MS * 2 + 12345
    w.add(far, "far")
    w.add(100, "near")
    fired, wakeups = drive(w)
    assert fired == [(100, "near"), (far, "far")]
    assert wakeups < 20


def test_fired_timer_is_inactive_and_reinsertable():
    w = TimerWheel(0)
    t = w.add(5, "t")
    assert fire_all(w, 5) == ["t"]
    assert not t.active
    t.deadline = 20
    w.insert(t)
    assert t.active
    assert fire_all(w, 30) == ["t"]


def test_pause_resume_on_the_wheel():
    # what Loop.pause_timer / resume_timer do: cancel, keep the remainder, re-insert
    w = TimerWheel(0)
    t = w.add(1000, "t")
    w.expire(400)
    assert w.cancel(t)
    remaining = t.deadline - w.now
    w.expire(5000)  # time passes while paused: nothing fires
    t.deadline = w.now + remaining
    w.insert(t)
    fired, _ = drive(w)
    assert fired == [(5001 + remaining, "t")]


@pytest.mark.parametrize("seed", range(40))
def test_random_model(seed):
    """Compare against a brute-force model: same set, deadline order, FIFO ties."""
    r = random.Random(seed)
    w = TimerWheel(r.randrange(0, 2**33))
    now = w.now
    live = {}
    order = {}
    seq = 0
    for _ in range(1500):
        op = r.random()
        if op < 0.5:
            d = now + r.choice([0, 1, 2, 255, 256, 257, 65535, 65536, 65537,
                                r.randrange(1 << 20), r.randrange(1 << 34)])
            t = w.add(d, seq)
            live[t] = d
            order[t] = seq
            seq += 1
        elif op < 0.62 and live:
            t = r.choice(list(live))
            assert w.cancel(t)
            del live[t]
        else:
            nd = w.next_deadline()
            step = r.choice([0, 1, 10, 300, 70000, r.randrange(1 << 25),
                             (nd - now) if nd is not None else 1])
            until = now + step
            got = w.expire(until)
            expected = sorted((t for t, d in live.items() if d <= until), key=lambda t: (live[t], order[t]))
            assert got == expected
            for t in got:
                del live[t]
            now = until + 1
            assert w.now == now
        assert len(w) == len(live)
        nd = w.next_deadline()
        if live:
            assert now <= nd <= min(live.values())
        else:
            assert nd is None


def test_timer_repr_free_of_side_effects():
    t = Timer(5, "cb")
    assert t.deadline == 5 and t.callback == "cb" and t.interval == 0


def test_cancel_churn_keeps_memory_bounded_and_order_intact():
    """Cancel most timers of one slot: holes are compacted, survivors keep FIFO order."""
    w = TimerWheel(0)
    ts = [w.add(1000, i) for i in range(10000)]
    for t in ts:
        if t.callback % 10:
            assert w.cancel(t)
    slot = w._slots[ts[0].slot]
    assert len(slot) <= 2 * 1000 + 64  # compacted: at most ~half holes
    assert len(w) == 1000
    assert fire_all(w, 1000) == list(range(0, 10000, 10))


def test_slot_churn_stays_within_four_times_live():
    """add/cancel churn in one slot with 100 live timers: the slot never exceeds 2 x live + 64."""
    w = TimerWheel(0)
    live = [w.add(1000, i) for i in range(100)]
    worst = 0
    for i in range(100, 20100):
        assert w.cancel(live.pop(0))
        live.append(w.add(1000, i))
        worst = max(worst, len(w._slots[live[0].slot]))
    assert worst <= 2 * 100 + 64
    assert len(w) == 100
    assert fire_all(w, 1000) == list(range(20000, 20100))


def test_slot_of_only_cancelled_timers_does_not_wake_the_loop():
    w = TimerWheel(0)
    a = w.add(5, "a")
    b = w.add(5, "b")
    w.add(900, "c")
    w.cancel(a)
    w.cancel(b)
    assert w.next_deadline() == 768  # not 5: slot 5 holds nothing live


def test_reinserted_timer_fires_once():
    w = TimerWheel(0)
    t = w.add(10, "t")
    assert w.cancel(t)
    t.deadline = 10
    w.insert(t)  # same slot again: the old entry is a hole, not a second copy
    assert fire_all(w, 20) == ["t"]
    assert sorted(x.callback for x in w.timers()) == []


def test_gc_free_timers_on_cpython_native():
    """CPython + native: Timers are invisible to the cyclic GC (issue 13), and still free their slots."""
    import gc
    import sys

    from powpow import timers
    from powpow._ffi import NATIVE

    expected = NATIVE and sys.implementation.name == "cpython"
    assert timers.GC_FREE == expected
    if not expected:
        return
    assert not gc.is_tracked(Timer(1, None))

    class Payload:
        pass

    p = Payload()
    base = sys.getrefcount(p)
    ts = [Timer(i, p) for i in range(100)]
    assert sys.getrefcount(p) == base + 100
    del ts
    assert sys.getrefcount(p) == base  # the C deallocator released every slot
    with pytest.raises(TypeError):
        type("Sub", (Timer,), {})


def test_spent_timers_do_not_keep_their_owner_alive():
    """Owner -> timer -> owner's method: collectable after the timer fired, was cancelled, or the loop closed."""
    import gc
    import weakref

    from powpow import Loop

    class Owner:
        def __init__(self, loop, ms):
            self.timer = loop.add_timer(ms, self.fire)

        def fire(self):
            pass

    loop = Loop()
    try:
        fired = Owner(loop, 0)
        cancelled = Owner(loop, 60000)
        pending = Owner(loop, 60000)
        refs = [weakref.ref(fired), weakref.ref(cancelled), weakref.ref(pending)]
        loop.add_timer(5, loop.stop)
        loop.run()
        assert loop.cancel_timer(cancelled.timer)
        del fired, cancelled
        gc.collect()
        assert refs[0]() is None and refs[1]() is None
    finally:
        loop.close()
    del pending
    gc.collect()
    assert refs[2]() is None


@pytest.mark.parametrize("seed", range(30))
def test_random_model_with_reinsertion_and_due_batches(seed):
    """The ordering rules under pause/resume-style re-insertion (issue 13 check).

    Against a brute-force model: a batch is every live timer with deadline <= until, in
    (deadline, order of its *latest* insertion) order, whatever levels it went through;
    a cancelled-then-reinserted timer (also into the slot it left) fires once, at its
    new place among ties; a handed-out timer is DUE and can no longer be cancelled by
    the wheel (two-phase expiry: the caller decides); next_deadline is never past the
    earliest live deadline and never before ``now``.
    """
    from powpow.timers import DUE

    r = random.Random(1000 + seed)
    w = TimerWheel(r.choice([0, 255, 65530, 2**24 - 7, r.randrange(0, 2**33)]))
    live = {}  # timer -> deadline
    order = {}  # timer -> sequence number of its latest insertion
    parked = []  # cancelled or fired timers, candidates for re-insertion
    seq = 0
    for _ in range(1200):
        now = w.now
        op = r.random()
        if op < 0.4:
            d = now + r.choice([0, 1, 5, 255, 256, 300, 65536, r.randrange(1 << 18), r.randrange(1 << 33), -3])
            t = w.add(d, seq)
            live[t] = max(d, now) if d < now else d
            order[t] = seq
            seq += 1
        elif op < 0.55 and live:
            t = r.choice(list(live))
            assert w.cancel(t)
            assert not w.cancel(t)
            del live[t]
            parked.append(t)
        elif op < 0.7 and parked:
            t = parked.pop(r.randrange(len(parked)))
            # often the very slot it left: same deadline, or one tying with another live timer
            if live and r.random() < 0.5:
                t.deadline = r.choice(list(live.values()))
            elif r.random() < 0.5:
                t.deadline = max(t.deadline, now)
            else:
                t.deadline = now + r.randrange(1 << 17)
            w.insert(t)
            live[t] = t.deadline
            order[t] = seq
            seq += 1
        else:
            nd = w.next_deadline()
            if live:
                assert now <= nd <= min(live.values())
            else:
                assert nd is None
            until = now + r.choice([0, 1, 7, 256, 5000, 70000, (nd - now) if nd is not None else 3])
            got = w.expire(until)
            expected = sorted((t for t, d in live.items() if d <= until), key=lambda t: (live[t], order[t]))
            assert got == expected
            for t in got:
                assert t.slot == DUE
                assert not w.cancel(t)  # handed out: the caller's to run or drop
                del live[t]
                t.slot = INACTIVE  # what the loop does once it ran the callback
                parked.append(t)
            assert w.now == until + 1
        assert len(w) == len(live)
        assert set(w.timers()) == set(live)


@pytest.mark.parametrize("start_before,due_after", [(100, 41), (10, 290), (600, 900), (256, 0), (1, 1)])
def test_timers_that_cross_the_2_pow_32_mark_fire_when_due(start_before, due_after):
    """Regression: at 2**32 ms of loop time (49.7 days up) the overflow (deadlines past the
    mark) was never brought back: the block jump set ``now`` without cascading, and
    ``next_deadline`` there pointed at the next mark.  A timer due just past it fired
    49.7 days late, every pending one with it."""
    mark = 2**32
    w = TimerWheel(mark - start_before)
    w.add(mark + due_after, "late")
    w.add(mark - start_before + 1, "early")
    nd = w.next_deadline()
    assert nd == mark - start_before + 1
    assert fire_all(w, nd) == ["early"]
    fired, wakeups = drive(w, limit=mark + due_after)
    assert fired == [(mark + due_after, "late")], fired
    assert wakeups <= 4
    # the same, expired in one step far past it (the loop waking up late)
    w = TimerWheel(mark - start_before)
    w.add(mark + due_after, "late")
    assert fire_all(w, mark + due_after + 1000) == ["late"]
    assert len(w) == 0


@pytest.mark.parametrize("seed", range(60))
def test_random_model_around_the_2_pow_32_mark(seed):
    """Deadlines around the mark against a sorted reference, expired in random steps."""
    r = random.Random(seed)
    mark = 2**32
    w = TimerWheel(mark - r.randrange(1, 3000))
    live = []
    for i in range(r.randrange(1, 30)):
        d = mark + r.randrange(-2000, 3000)
        if d >= w.now:
            live.append((d, i))
            w.add(d, i)
    until = w.now
    while live:
        until += r.choice([1, 7, 100, 255, 256, 1000])
        got = fire_all(w, until)
        expected = [i for d, i in sorted(live) if d <= until]
        assert got == expected, (until - mark, got, expected)
        live = [(d, i) for d, i in live if d > until]
        nd = w.next_deadline()
        if live:
            assert w.now <= nd <= min(live)[0]
