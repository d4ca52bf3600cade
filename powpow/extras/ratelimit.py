"""A true sliding-window rate limiter: at most ``max_events`` per key in ANY ``window_ms`` span.

Why a log and not counters: a fixed window (what the original library called
"sliding") lets 2x the limit through around a window boundary; the weighted
two-window approximation still over- or under-admits.  Keeping the timestamps
of the admitted events (at most ``max_events`` per key) is exact, and each
``allow`` costs amortised O(1): expired stamps leave from the left of a deque.

Memory is bounded: keys live in an ``OrderedDict`` in least-recently-used
order; each call evicts up to two idle keys from the old end (a key whose
newest stamp left the window holds no information), and beyond ``max_keys``
the least recently used key is evicted even if not idle (it then starts
afresh -- the documented price of the bound).

Thread-safe: one lock around each call (the HTTP server may consult it from
worker threads).  ``clock`` returns milliseconds; tests pass a fake one.
"""
import collections
import threading
import time
from typing import Callable, Hashable, Optional

__all__ = ["RateLimiter"]


def _monotonic_ms() -> float:
    return time.monotonic() * 1000.0


class RateLimiter:
    def __init__(self, max_events: int, window_ms: int, max_keys: int = 100000,
                 clock: Optional[Callable[[], float]] = None) -> None:
        # (checked so that NaN fails too: NaN <= 0 is False, and a NaN window admitted everything)
        if isinstance(max_events, bool) or not isinstance(max_events, int) or not max_events > 0:
            raise ValueError("max_events must be an int > 0, got %r" % (max_events,))
        if isinstance(window_ms, bool) or not isinstance(window_ms, (int, float)) or not 0 < window_ms < float("inf"):
            raise ValueError("window_ms must be a finite number > 0, got %r" % (window_ms,))
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or not max_keys > 0:
            raise ValueError("max_keys must be an int > 0, got %r" % (max_keys,))
        self.max_events = max_events
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._clock = clock or _monotonic_ms
        self._logs = collections.OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: Hashable) -> bool:
        """Record an event for ``key`` and return True, or return False if over the limit."""
        with self._lock:
            now = self._clock()
            cutoff = now - self.window_ms
            logs = self._logs
            dq = logs.get(key)
            if dq is None:
                dq = collections.deque()
                logs[key] = dq
            else:
                logs.move_to_end(key)
                while dq and dq[0] <= cutoff:
                    dq.popleft()
            ok = len(dq) < self.max_events
            if ok:
                dq.append(now)
            elif not dq:  # pragma: no cover - max_events > 0 makes this unreachable
                del logs[key]
            self._evict(cutoff)
            return ok

    def retry_after_ms(self, key: Hashable) -> float:
        """Milliseconds until ``allow(key)`` would succeed (0 if it would now)."""
        with self._lock:
            dq = self._logs.get(key)
            now = self._clock()
            if dq is None:
                return 0
            live = [t for t in dq if t > now - self.window_ms]
            if len(live) < self.max_events:
                return 0
            return live[len(live) - self.max_events] + self.window_ms - now

    def reset(self, key: Optional[Hashable] = None) -> None:
        with self._lock:
            if key is None:
                self._logs.clear()
            else:
                self._logs.pop(key, None)

    def __len__(self) -> int:
        """Keys currently tracked (bounded by ``max_keys``)."""
        return len(self._logs)

    def _evict(self, cutoff: float) -> None:
        logs = self._logs
        for _ in range(2):
            if not logs:
                return
            k = next(iter(logs))
            dq = logs[k]
            if dq and dq[-1] > cutoff:
                break
            del logs[k]
        while len(logs) > self.max_keys:
            logs.popitem(last=False)
