"""``wsgi.input``: the request body, streamed from the loop thread to the app's thread.

The loop thread ``feed()``s chunks as the parser delivers them; the worker
thread reads them.  Between the two sits a deque of chunks (each kept as the
``bytes`` object that arrived: never concatenated, so a 100 MiB upload costs
linear time) with a high-water mark: above ``HIGH_WATER`` buffered bytes the
loop stops reading this connection (``req.pause_body()``, the kernel's window
then pushes back on the client); once the app has read it below
``LOW_WATER`` the worker posts the resume back to the loop.  Memory per
upload is therefore bounded by HIGH_WATER plus one read, whatever its size.

``100 Continue`` goes out only when the app first reads (PEP 3333 and RFC
9110 §10.1.1: a client that asked waits for it before sending the body).

Reads follow PEP 3333 and ``io.RawIOBase`` habits: ``read(n)`` returns at
most ``n`` bytes and blocks until some arrive (``b""`` only at the end),
``read()`` / ``read(-1)`` everything up to the end, ``readline(limit)``,
``readlines(hint)``, iteration by lines.  A body that ends early while the app
reads raises ``ClientDisconnected`` (an ``OSError``) from the read: the client
went away, or the server cut the body -- past ``max_body`` (413), bad chunked
framing (400), a body deadline (408) -- and the message (and ``status``) say
which.
"""
import threading
from collections import deque
from typing import List, Optional

HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10
# Until the app first reads -- while the request waits for a worker thread -- its body is
# read only this far: requests queued behind busy threads (up to limit_concurrency of
# them) hold 64 KiB each, not HIGH_WATER (100 queued uploads held ~100 MiB).
WAITING_HIGH_WATER = 64 << 10
# What a queued piece costs besides its bytes (the bytes object, its deque slot): charged
# against the marks, so 1-byte chunks pause reading as soon as their memory, not their
# payload, reaches HIGH_WATER (they pinned ~40 MiB a request for 1 MiB of payload).
PIECE_COST = 64
# A worker never waits forever on a body: the loop's own deadlines (body_timeout,
# min_body_rate) cut a stalled client, which wakes the read; this is only a backstop.
READ_BACKSTOP_S = 300.0


class ClientDisconnected(OSError):
    """The request body ended early: the client went away, or the server cut it.

    ``status``: the HTTP status the server answered when it cut the body (413 past
    ``max_body``, 400 bad framing, 408 a body deadline); None when the client left."""

    status: Optional[int] = None


def _lost_message(why) -> str:
    """What a read raises about a body that ended early: ``why`` is the ``ParseError``
    the server answered (it cut the body), or None (the client went away)."""
    status = getattr(why, "status", None)
    if status is None:
        return "the client went away before the request body was read"
    message = getattr(why, "message", None) or str(why)
    return "the server cut the request body (answered %d: %s) before it was read" % (status, message)


class WsgiInput:
    """The body stream of one request (see the module docstring)."""

    def __init__(self, exchange, high_water: int = HIGH_WATER) -> None:
        self._ex = exchange
        # inline mode: the whole body is read before the app runs; otherwise the
        # mark is WAITING_HIGH_WATER until the app's first read, then high_water
        self._high_after = high_water
        self._high = high_water if high_water > HIGH_WATER else min(high_water, WAITING_HIGH_WATER)
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque = deque()
        self._buffered = 0       # bytes in _chunks, + PIECE_COST each (guarded by _cond)
        self._eof = False        # the whole body has arrived
        self._broken = False     # the client went away first (or the server cut the body)
        self._why = None         # the server cut it: the ParseError it answered (see lost())
        self._paused = False     # the loop paused reading for us
        self._waiting = False    # the worker sleeps on _cond
        self._cur = b""          # worker side: the chunk being read, from _pos
        self._pos = 0
        self._asked = False      # the app has read once (100 Continue sent if wanted)
        self.bytes_read = 0

    # -- loop thread ----------------------------------------------------------

    def feed(self, chunk) -> None:
        if self._broken:
            return  # discarded, or the client is gone
        if chunk.__class__ is not bytes:
            chunk = bytes(chunk)
        with self._cond:
            self._chunks.append(chunk)
            self._buffered += len(chunk) + PIECE_COST
            over = self._buffered > self._high and not self._paused
            if over:
                self._paused = True
            if self._waiting:
                self._cond.notify()
        if over:
            self._ex.req.pause_body()

    def end(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def lost(self, why=None) -> None:
        """The body will not arrive whole.  ``why``: the ``ParseError`` the server answered
        when it cut the body; by default the one its response recorded (the session sets
        ``_cut_reason`` before telling), None if the client went away."""
        if why is None:
            why = getattr(getattr(self._ex, "res", None), "_cut_reason", None)
        with self._cond:
            self._broken = True
            if why is not None:
                self._why = why
            self._cond.notify_all()

    def discard(self) -> None:
        """The app is done with the body: drop what is buffered and what still comes."""
        with self._cond:
            self._chunks.clear()
            self._buffered = 0
            self._broken = True
            paused = self._paused
            self._paused = False
        if paused:
            self._ex.req.resume_body()

    @property
    def complete(self) -> bool:
        return self._eof

    # -- worker thread ----------------------------------------------------------

    def _next(self) -> Optional[bytes]:
        """The next chunk, blocking until one arrives; None at the end of the body."""
        cond = self._cond
        if not self._asked:
            self._asked = True
            with cond:
                self._high = self._high_after  # (a pause at the waiting mark resumes below)
            self._ex.first_read()
        with cond:
            chunks = self._chunks
            while not chunks:
                if self._eof:
                    return None
                if self._broken:
                    why = self._why
                    exc = ClientDisconnected(_lost_message(why))
                    exc.status = getattr(why, "status", None)
                    raise exc
                self._waiting = True
                try:
                    if not cond.wait(READ_BACKSTOP_S):
                        raise ClientDisconnected("no request body data for %d s" % READ_BACKSTOP_S)
                finally:
                    self._waiting = False
            chunk = chunks.popleft()
            self._buffered -= len(chunk) + PIECE_COST
            resume = self._paused and self._buffered < LOW_WATER
            if resume:
                self._paused = False
        if resume:
            self._ex.post(self._ex.req.resume_body)
        return chunk

    def read(self, size: Optional[int] = -1) -> bytes:
        if size is None or size < 0:
            out = [self._cur[self._pos:]] if self._pos < len(self._cur) else []
            self._cur, self._pos = b"", 0
            while True:
                c = self._next()
                if c is None:
                    break
                out.append(c)
            data = b"".join(out)
            self.bytes_read += len(data)
            return data
        if size == 0:
            return b""
        cur, pos = self._cur, self._pos
        if pos >= len(cur):
            c = self._next()
            if c is None:
                return b""
            cur, pos = c, 0
        # like a file: ``size`` bytes unless the body ends first
        parts: List[bytes] = []
        need = size
        while True:
            avail = len(cur) - pos
            if avail >= need:
                parts.append(cur if (pos == 0 and avail == need) else cur[pos:pos + need])
                pos += need
                need = 0
                break
            parts.append(cur[pos:] if pos else cur)
            need -= avail
            c = self._next()
            if c is None:
                cur, pos = b"", 0
                break
            cur, pos = c, 0
        self._cur, self._pos = cur, pos
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.bytes_read += len(data)
        return data

    def readline(self, size: Optional[int] = -1) -> bytes:
        limit = -1 if size is None else size
        if limit == 0:
            return b""
        parts: List[bytes] = []
        got = 0
        cur, pos = self._cur, self._pos
        while True:
            if pos >= len(cur):
                c = self._next()
                if c is None:
                    cur, pos = b"", 0
                    break
                cur, pos = c, 0
            end = cur.find(b"\n", pos)
            stop = len(cur) if end < 0 else end + 1
            if limit >= 0 and got + stop - pos > limit:
                stop = pos + limit - got
            parts.append(cur[pos:stop])
            got += stop - pos
            pos = stop
            if (end >= 0 and stop == end + 1) or (limit >= 0 and got >= limit):
                break
        self._cur, self._pos = cur, pos
        data = b"".join(parts)
        self.bytes_read += len(data)
        return data

    def readlines(self, hint: Optional[int] = -1) -> List[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        pass  # PEP 3333: the server owns the stream; apps must not need to close it


class EmptyInput:
    """``wsgi.input`` of a request without a body: shared, stateless."""

    bytes_read = 0

    def read(self, size: Optional[int] = -1) -> bytes:
        return b""

    def readline(self, size: Optional[int] = -1) -> bytes:
        return b""

    def readlines(self, hint: Optional[int] = -1) -> List[bytes]:
        return []

    def __iter__(self):
        return iter(())

    def close(self) -> None:
        pass


EMPTY_INPUT = EmptyInput()
