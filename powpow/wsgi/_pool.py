"""A bounded pool of worker threads for blocking WSGI applications.

Why not ``concurrent.futures.ThreadPoolExecutor``: it builds a ``Future`` and a
work item per call and wakes threads through a lock-protected queue; a WSGI
request needs none of that (its result goes back to the loop with
``loop.post``).  Here a job is any object with a ``run()`` method, handed over
through one ``queue.SimpleQueue`` (C-implemented on CPython: one put and one
get per request).  The threads start with the first job (after a fork, in the
process that serves), all ``size`` at once; they are daemon threads so that an application stuck in a
system call can never keep the process alive past a bounded shutdown.

The queue in front of the threads is bounded by the caller (``Server`` counts
requests in flight and answers 503 above its limit): ``submit`` itself never
refuses.
"""
import logging
import queue
import threading
from collections import deque
from typing import Any, List

try:
    import _queue  # noqa: F401  (CPython: SimpleQueue in C)
    _C_QUEUE = True
except ImportError:  # PyPy: queue.SimpleQueue is Python on a Condition-based Semaphore
    _C_QUEUE = False

log = logging.getLogger("powpow.wsgi")

_STOP = None


class LockQueue:
    """A job queue for interpreters without a C ``SimpleQueue`` (PyPy): a deque and
    one plain lock per idle worker, released by ``put`` -- a lock acquire/release
    pair per hand-off instead of a ``threading.Semaphore`` (a Condition, a new
    waiter lock per wait)."""

    def __init__(self) -> None:
        self._jobs: deque = deque()
        self._idle: List[threading.Lock] = []
        self._mutex = threading.Lock()
        self._local = threading.local()

    def put(self, job) -> None:
        with self._mutex:
            self._jobs.append(job)
            waiter = self._idle.pop() if self._idle else None
        if waiter is not None:
            waiter.release()

    def get(self):
        lock = getattr(self._local, "lock", None)
        if lock is None:
            lock = self._local.lock = threading.Lock()
            lock.acquire()
        while True:
            with self._mutex:
                if self._jobs:
                    return self._jobs.popleft()
                self._idle.append(lock)
            lock.acquire()  # until put() hands this worker a job


class ThreadPool:
    """``size`` threads running ``job.run()`` for each submitted job, in order."""

    def __init__(self, size: int, name: str = "powpow-wsgi") -> None:
        if size < 1:
            raise ValueError("a thread pool needs at least one thread, got %r" % (size,))
        self.size = size
        self.name = name
        self._jobs: Any = queue.SimpleQueue() if _C_QUEUE else LockQueue()
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, job) -> None:
        if not self._threads:
            self._start()
        self._jobs.put(job)

    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("submit() on a closed thread pool")
            while len(self._threads) < self.size:
                th = threading.Thread(target=self._work, name="%s-%d" % (self.name, len(self._threads)),
                                      daemon=True)
                self._threads.append(th)
                th.start()

    def _work(self) -> None:
        get = self._jobs.get
        while True:
            job = get()
            if job is _STOP:
                break
            try:
                job.run()
            except BaseException:  # pragma: no cover - jobs report their own errors
                log.exception("WSGI worker job failed")
            job = None  # drop the reference while waiting for the next one

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Stop the threads once the queued jobs are done; wait up to ``timeout`` seconds.

        Returns True if every thread ended in time (the others are daemons:
        they cannot keep the process alive)."""
        import time
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(_STOP)
        end = time.monotonic() + timeout
        ok = True
        for th in threads:
            if th is threading.current_thread():
                continue
            th.join(max(0.0, end - time.monotonic()))
            ok = ok and not th.is_alive()
        return ok
