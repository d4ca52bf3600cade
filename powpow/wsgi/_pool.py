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
from typing import List

log = logging.getLogger("powpow.wsgi")

_STOP = None


class ThreadPool:
    """``size`` threads running ``job.run()`` for each submitted job, in order."""

    def __init__(self, size: int, name: str = "powpow-wsgi") -> None:
        if size < 1:
            raise ValueError("a thread pool needs at least one thread, got %r" % (size,))
        self.size = size
        self.name = name
        self._jobs: "queue.SimpleQueue" = queue.SimpleQueue()
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
