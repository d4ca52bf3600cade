"""RateLimiter on a fake clock: a true sliding window, bounded memory, thread safety."""
import threading

import pytest

from powpow import RateLimiter


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_limit_within_window_and_release_exactly_after():
    c = Clock()
    rl = RateLimiter(3, 1000, clock=c)
    assert [rl.allow("a") for _ in range(4)] == [True, True, True, False]
    assert rl.allow("b")  # keys are independent
    c.t = 999.0
    assert not rl.allow("a")
    c.t = 1000.0  # the first stamps (t=0) leave the window now
    assert rl.allow("a")


def test_true_sliding_window_no_boundary_burst():
    """A fixed window admits 2x the limit around its boundary; this must not."""
    c = Clock()
    rl = RateLimiter(10, 1000, clock=c)
    c.t = 900.0
    assert sum(rl.allow("k") for _ in range(10)) == 10
    c.t = 1100.0  # a new fixed window would have started at 1000
    assert sum(rl.allow("k") for _ in range(10)) == 0
    assert rl.retry_after_ms("k") == pytest.approx(800.0)
    c.t = 1900.0
    assert sum(rl.allow("k") for _ in range(10)) == 10


def test_spread_events_count_only_inside_window():
    c = Clock()
    rl = RateLimiter(5, 100, clock=c)
    allowed = []
    for step in range(50):  # one attempt every 10 ms: 10 per window, 5 allowed
        c.t = step * 10.0
        allowed.append(rl.allow("x"))
    # in every span of 100 ms at most 5 were admitted
    times = [i * 10 for i, ok in enumerate(allowed) if ok]
    for t in times:
        assert sum(1 for u in times if t <= u < t + 100) <= 5
    assert sum(allowed) == 25


def test_idle_keys_are_evicted_and_key_count_bounded():
    c = Clock()
    rl = RateLimiter(2, 100, max_keys=50, clock=c)
    for i in range(1000):
        rl.allow(i)
    assert len(rl) == 50  # hard bound
    c.t = 1000.0  # everything idle now
    for i in range(30):
        rl.allow("new%d" % i)
    assert len(rl) < 50  # idle keys were evicted on the way, not only by the hard bound


def test_thread_safe_exact_count():
    c = Clock()
    rl = RateLimiter(1000, 1000, clock=c)
    results = []

    def worker():
        results.append(sum(rl.allow("shared") for _ in range(500)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 1000  # 4000 attempts, exactly the limit admitted


def test_bad_arguments():
    with pytest.raises(ValueError):
        RateLimiter(0, 10)
    with pytest.raises(ValueError):
        RateLimiter(1, 0)


@pytest.mark.parametrize("args", [(1, float("nan")), (float("nan"), 10), (2.5, 10), (True, 10), (1, float("inf")),
                                  (1, 10, float("nan")), (1, "10")])
def test_nan_and_non_integer_limits_are_refused(args):
    """NaN slipped past the ``<= 0`` checks: a NaN window admitted every event (the cutoff
    compared false and each call dropped its key's log), a NaN limit none, and 2.5 events
    admitted 3."""
    with pytest.raises(ValueError):
        RateLimiter(*args)
