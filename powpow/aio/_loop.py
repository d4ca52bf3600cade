"""``EventLoop``: an asyncio event loop driven by powpow's poller and timer wheel.

Choice: a subclass of ``asyncio.BaseEventLoop``, not of ``AbstractEventLoop``.
BaseEventLoop brings the parts that are pure asyncio bookkeeping and must
match the reference exactly (tasks, futures, the exception-handler API, debug
mode, task factories, executors, async generators, ``create_connection``'s
Happy Eyeballs and address handling, ``create_server``'s ``Server`` object,
``create_datagram_endpoint``'s socket setup, ``connect_accepted_socket``).
Everything that touches the kernel is powpow's own: ``_run_once`` is replaced
by an iteration over powpow's poller (native epoll) and timer wheel, timers are
wheel entries (O(1) insert and cancel), readers/writers are poller watchers,
and stream transports are ``powpow.net.Connection`` (native send/writev,
TCP_CORK, the buffer pool) -- see ``_transport.py``.  No selector exists.

One iteration (``_run_once``):
1. powpow's deferred and cross-thread callbacks (connection reads resumed...);
2. timers due -> collected, sorted by ``when`` (wheel ticks are 1 ms);
3. poll (timeout 0 if anything is ready) and dispatch: stream transports call
   their protocols directly, ``add_reader``/``add_writer`` handles are queued;
4. timers again; then the ready handles present at this point run (asyncio's
   rule: callbacks scheduled meanwhile wait for the next iteration);
5. the write flush: every transport written to during this iteration sends
   its buffers now, in one ``writev``.

Debug mode (``set_debug``) warns about slow callbacks as asyncio does, protocol
callbacks run outside handles included (``_debug.py``); it costs nothing when
off: step 3's dispatch is the same, only a transport's callback differs.

Timers read ``self.time()`` (``time.monotonic()``, asyncio's clock); the wheel
is on the same clock and rounds up, so a timer never fires before ``when``.
``call_later``/``call_at`` only append the new handle to a batch that the next
iteration inserts into the wheel before anything reads it (step 2): a timer
cancelled in the iteration that made it never touches the wheel; a delay <= 0
goes straight to the due list (next iteration, as asyncio).  What a stream
transport's inline protocol callback schedules with ``call_soon`` waits for the
next iteration, as after asyncio's ``_read_ready`` handles (two ready deques).
"""
import asyncio
import collections
import contextvars
import errno
import logging
import math
import operator
import os
import signal
import threading
import time
from asyncio import base_events, events, sslproto, unix_events
from typing import Any, Dict, List, Optional

from ..errors import LoopError
from ..loop import Loop, _undispatched
from ..poller import MAX_CAPACITY as _MAX_CAPACITY
from ..timers import DUE, INACTIVE
from ..net.connection import Connection
from ._debug import describe as _describe_callback
from ._sockops import SockOps
from ._transport import StreamTransport

__all__ = ["EventLoop"]

logger = logging.getLogger("asyncio")

_READ, _WRITE, _ERROR, _HUP = 0x001, 0x004, 0x008, 0x010
_NS_PER_MS = 1000000
_MAX_FULL_REPOLLS = 4
_monotonic_ns = time.monotonic_ns
_Handle = events.Handle
_when_key = operator.attrgetter("_when")
_PENDING = -100  # _Timer.slot: made, not yet inserted into the wheel (see _insert_pending)
_SSL_SHUTDOWN_TIMEOUT = "ssl_shutdown_timeout" in sslproto.SSLProtocol.__init__.__code__.co_varnames


class _Timer(events.TimerHandle):
    """A TimerHandle that is itself the wheel entry (one object per timer, no callback cycle).

    ``cancel`` takes it out of the wheel at once (O(1)): no cancelled-count bookkeeping, no heap to
    rebuild.  Everything else (``when``, ``cancelled``, repr, ordering, ``_run``) is asyncio's.
    """

    __slots__ = ("deadline", "callback", "interval", "slot", "pos")

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            loop = self._loop
            if self._scheduled:
                self._scheduled = False
                if self.slot != _PENDING:  # a pending one is dropped when the iteration inserts the batch
                    loop._wheel.cancel(self)
            if loop._debug:
                self._repr = repr(self)  # as Handle.cancel: keep the callback in the repr
            self._callback = None
            self._args = None


_new = object.__new__
_copy_context = contextvars.copy_context
_ceil = math.ceil


# A deadline this far out (in wheel ticks, 1 ms: ~146 million years) stands for "never":
# call_later(math.inf), asyncio.sleep(math.inf), a huge finite delay.  The wheel keeps
# it in its overflow (re-examined every 2**32 ms); it fires only if the loop lives that long.
_FAR_TICK = 1 << 62
_FAR_S = _FAR_TICK / 1000.0


def _ms_until(delay: float) -> int:
    if delay <= 0:
        return 0
    if delay < _FAR_S:
        return int(math.ceil(delay * 1000.0))
    return _FAR_TICK if delay > 0 else 0  # +inf / huge: never; NaN: now, as asyncio (NaN compares false)


def _fd_of(fileobj) -> int:
    """asyncio's rule for add_reader and friends (``selectors``): an int or an object with
    ``fileno()``; anything else, or a negative descriptor, is a ValueError (was: TypeError,
    or an OSError from the poller, and ``remove_reader(-1)`` returned False)."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError("Invalid file object: %r" % (fileobj,)) from None
    if fd < 0:
        raise ValueError("Invalid file descriptor: %d" % fd)
    return fd


class EventLoop(SockOps, base_events.BaseEventLoop):
    """An asyncio event loop on powpow's ``Loop`` (see the module docstring)."""

    def __init__(self, backend: Optional[str] = None) -> None:
        super().__init__()
        self._pl = Loop(backend=backend, exception_handler=self._pl_exception)
        self._wheel = self._pl._wheel
        self._t0 = self._pl._t0
        self._tpending: List[_Timer] = []  # timers made since the iteration began, not in the wheel yet
        self._due: List[_Timer] = []
        self._due_next: List[_Timer] = []  # call_later(<= 0) from I/O callbacks: _due of the next iteration
        self._flushq: List[StreamTransport] = []
        self._fdh: Dict[int, List[Any]] = {}  # fd -> [reader handle, writer handle]
        self._child_pidfds: Dict[int, int] = {}  # pid -> pidfd of a child still watched (_subprocess.py)
        self._signal_handlers: Dict[int, events.Handle] = {}
        self._full_repolls = 0
        self._unix_server_sockets: Dict[Any, int] = {}
        self._spare: Any = collections.deque()  # the ready deque of the next iteration while I/O dispatches
        self._cur: Any = self._ready  # where I/O handles go: the ready deque of the running iteration
        self._slow_reported = False  # debug: a protocol callback inside the running handle was reported (_debug.py)

    def _pl_exception(self, exc: BaseException, callback) -> None:
        self.call_exception_handler({"message": "Exception in callback %r" % (callback,), "exception": exc})

    # ------------------------------------------------------------ timers

    def call_soon(self, callback, *args, context=None):
        if self._debug or self._closed:  # asyncio's own checks and source traceback
            return super().call_soon(callback, *args, context=context)
        # the fast path: asyncio's Handle, its fields set here (no __init__ frame, no get_debug() call)
        h = _new(_Handle)
        h._callback = callback
        h._args = args
        h._cancelled = False
        h._loop = self
        h._repr = None
        h._source_traceback = None
        h._context = _copy_context() if context is None else context
        self._ready.append(h)
        return h

    def call_later(self, delay, callback, *args, context=None):
        if delay is None:
            raise TypeError("delay must not be None")
        if self._debug or self._closed:
            now_ns = _monotonic_ns()
            return self._schedule(now_ns * 1e-9 + delay, _ms_until(delay), now_ns, callback, args, context)
        # the fast path (the hot one of servers: timeouts set and cancelled): one object, one wheel insert
        now_ns = _monotonic_ns()
        t = _new(_Timer)
        t._callback = callback
        t._args = args
        t._cancelled = False
        t._loop = self
        t._repr = None
        t._source_traceback = None
        t._context = _copy_context() if context is None else context
        t._when = now_ns * 1e-9 + delay
        t._scheduled = True
        if delay <= 0:  # due now: runs in the next iteration, as asyncio's (never waits for a wheel tick)
            t.slot = DUE
            if self._cur is not self._ready:
                # made by a protocol callback while I/O dispatches: due in the next iteration, after
                # that callback's call_soon handles (asyncio moves due timers to _ready after the I/O
                # handles of its iteration, in `when` order)
                self._due_next.append(t)
                return t
            self._due.append(t)
            return t
        t.slot = _PENDING
        self._tpending.append(t)  # into the wheel at the next iteration's start: see _insert_pending
        return t

    def call_at(self, when, callback, *args, context=None):
        if when is None:
            raise TypeError("when cannot be None")
        if self._debug or self._closed:
            now_ns = _monotonic_ns()
            return self._schedule(when, _ms_until(when - now_ns * 1e-9), now_ns, callback, args, context)
        t = _new(_Timer)  # the fast path, as call_later's (no clock read needed)
        t._callback = callback
        t._args = args
        t._cancelled = False
        t._loop = self
        t._repr = None
        t._source_traceback = None
        t._context = _copy_context() if context is None else context
        t._when = when
        t._scheduled = True
        t.slot = _PENDING
        self._tpending.append(t)
        return t

    def _schedule(self, when, ms: int, now_ns: int, callback, args, context) -> _Timer:
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        timer = _Timer(when, callback, args, self, context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        # the wheel's tick: ceil(now) + ms, as Loop.add_timer (never early)
        timer.deadline = -((self._pl._t0 - now_ns) // _NS_PER_MS) + ms
        timer.interval = 0
        timer.callback = None
        self._wheel.insert(timer)
        timer._scheduled = True
        return timer

    def _timer_handle_cancelled(self, handle) -> None:
        if handle._scheduled:
            handle._scheduled = False
            if handle.slot != _PENDING:
                self._wheel.cancel(handle)

    def _insert_pending(self) -> None:
        """Put the timers made since the last iteration into the wheel (those cancelled meanwhile never go)."""
        pend = self._tpending
        self._tpending = []
        t0 = self._t0
        insert = self._wheel.insert
        for t in pend:
            if t._scheduled:
                # the wheel's tick: the first 1 ms tick at or after `when` (never early)
                ms = (t._when * 1e9 - t0) * 1e-6
                if -_FAR_TICK < ms < _FAR_TICK:
                    t.deadline = _ceil(ms)
                else:  # +inf / huge: never; -inf / NaN: at once (asyncio runs a NaN `when` at once)
                    t.deadline = _FAR_TICK if ms > 0 else 0
                t.interval = 0
                t.callback = None
                insert(t)

    def _expire(self, now: int) -> None:
        due = self._wheel.expire(now)
        if not due:
            return
        mine = self._due
        others = None
        for t in due:
            if t.__class__ is _Timer:
                if t.slot == DUE:
                    t.slot = INACTIVE
                    t._scheduled = False
                    if not t._cancelled:
                        mine.append(t)
            elif others is None:
                others = [t]
            else:
                others.append(t)
        if others is not None:
            self._pl._fire_timers(others, now)

    # ------------------------------------------------------------ the iteration

    def _write_to_self(self) -> None:
        pl = self._pl
        if not pl._wake_pending:
            pl._wake_pending = True
            with pl._wake_lock:
                if not pl._closed:
                    pl._wake()

    def run_forever(self) -> None:
        pl = self._pl
        pl._running = True
        pl._thread_id = threading.get_ident()
        try:
            super().run_forever()
        finally:
            pl._running = False

    def _run_once(self) -> None:
        pl = self._pl
        if pl._io_rest:
            pl._dispatch_io_rest()  # the events of the last poll that a BaseException cut off
        ready = self._ready
        if self._due_next:
            self._due.extend(self._due_next)
            self._due_next = []
        if pl._deferred:
            batch = pl._deferred
            pl._deferred = []
            i = 0
            try:
                for cb in batch:
                    i += 1
                    try:
                        cb()
                    except Exception as exc:
                        self._pl_exception(exc, cb)
            except BaseException:  # SystemExit, KeyboardInterrupt: the rest runs when the loop runs again
                pl._deferred[:0] = batch[i:]
                raise
        posted = pl._posted
        if posted:
            for _ in range(len(posted)):
                cb = posted.popleft()
                try:
                    cb()
                except Exception as exc:
                    self._pl_exception(exc, cb)
        if self._tpending:
            self._insert_pending()
        wheel = self._wheel
        if wheel._count:
            self._expire(pl._update_now())
        if self._flushq:  # written by the deferred reads above: out before we may sleep
            self._flush_writes()
        if ready or self._due or pl._deferred or pl._posted or self._stopping or self._full_repolls:
            timeout = 0
        else:
            nd = wheel.next_deadline()
            if nd is None:
                timeout = -1
            else:
                left = nd * _NS_PER_MS - (_monotonic_ns() - pl._t0)
                timeout = -(-left // _NS_PER_MS) if left > 0 else 0
        cap = pl._capacity
        evs = pl._poller.poll(timeout, cap)
        n = len(evs)
        if n:
            # Stream transports call their protocols right here; what those callbacks call_soon() waits
            # for the next iteration (as after asyncio's _read_ready handles), so it goes to a second deque
            # while add_reader/add_writer handles and signals join this iteration's (self._cur).
            self._cur = ready
            nxt = self._ready = self._spare
            get = pl._by_token.get
            pairs = iter(evs)
            try:
                for token, ev in zip(pairs, pairs):  # as Loop._iterate dispatches
                    w = get(token)
                    if w is None:
                        continue
                    cb = w.callback  # (an attribute load specialises on 3.11; a method load of it does not)
                    try:
                        cb(w.fd, ev)
                    except Exception as exc:
                        self._pl_exception(exc, cb)
            except BaseException:
                # SystemExit / KeyboardInterrupt from a protocol callback leaves run_forever: keep
                # the poll's undispatched events (an edge-triggered fd reports a readiness once)
                # and every handle queued so far (this iteration's first), as asyncio's _ready does
                pl._io_rest = _undispatched(evs, pairs)
                ready.extend(nxt)
                nxt.clear()
                self._ready = ready
                self._spare = nxt
                raise
            finally:
                self._cur = nxt
            if n >= 2 * cap:
                if cap < _MAX_CAPACITY:  # (the poller's event array holds that many)
                    pl._capacity = min(cap * 2, _MAX_CAPACITY)
                self._full_repolls = self._full_repolls + 1 if self._full_repolls < _MAX_FULL_REPOLLS else 0
            else:
                self._full_repolls = 0
        else:
            self._full_repolls = 0
        if wheel._count:
            self._expire(pl._update_now())
        due = self._due
        if due:
            if len(due) > 1:
                due.sort(key=_when_key)
            ready.extend(due)
            due.clear()
        if ready is not self._ready:  # I/O was dispatched: run all of `ready`, new handles are in the other deque
            self._spare = ready
            ntodo = -1
        else:
            ntodo = len(ready)
        if self._debug:
            self._run_ready_debug(ready, ntodo)
        elif ntodo < 0:
            popleft = ready.popleft
            try:
                while ready:
                    h = popleft()
                    if not h._cancelled:
                        h._run()
            except BaseException:  # (as above) the rest of this iteration's handles run first next time
                self._ready.extendleft(reversed(ready))
                ready.clear()
                raise
        else:
            popleft = ready.popleft
            for _ in range(ntodo):
                h = popleft()
                if not h._cancelled:
                    h._run()
        if self._flushq:
            self._flush_writes()

    def _run_ready_debug(self, ready, ntodo: int) -> None:
        while ntodo and ready:
            ntodo -= 1
            h = ready.popleft()
            if h._cancelled:
                continue
            # a transport method that calls a protocol callback is named as that callback (see _debug.py);
            # its protocol is read now: connection_lost leaves the transport without one
            name = getattr(h._callback, "_protocol_callback", None)
            owner = getattr(h._callback, "__self__", None) if name is not None else None
            proto = getattr(owner, "_protocol", None)
            try:
                self._current_handle = h
                self._slow_reported = False
                t0 = self.time()
                h._run()
                dt = self.time() - t0
                if dt >= self.slow_callback_duration and not self._slow_reported:
                    if name is not None and proto is not None:
                        what = _describe_callback(proto, name, owner)
                    else:
                        what = base_events._format_handle(h)
                    logger.warning("Executing %s took %.3f seconds", what, dt)
            finally:
                self._current_handle = None

    def set_debug(self, enabled: bool) -> None:
        super().set_debug(enabled)
        pl = self.__dict__.get("_pl")  # (None: called by BaseEventLoop.__init__, before any transport)
        if pl is None or pl._closed:
            return
        # stream transports call their protocols from the Connection's on_data, chosen for the debug
        # mode at their creation (so that a normal read tests nothing): switch the live ones
        for transport in self._stream_transports():
            transport._set_debug(bool(enabled))

    def _stream_transports(self) -> List[StreamTransport]:
        """The stream transports whose sockets are still watched, found through the poller's watchers
        (no registry to keep on the hot path: only set_debug and close need them)."""
        found = []
        for w in list(self._pl._by_token.values()):
            conn = getattr(w.callback, "__self__", None)
            if isinstance(conn, Connection):
                transport = getattr(conn.on_data, "__self__", None)
                if isinstance(transport, StreamTransport):
                    found.append(transport)
        return found

    def _flush_writes(self) -> None:
        q = self._flushq
        self._flushq = []
        for t in q:
            t._flush()

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        # No iteration follows: what waits for one is done now.  Writes collected for the end-of-iteration
        # flush (made before a stop, or a BaseException that cut the iteration short) leave, then the stream
        # transports' sockets close (StreamTransport._close_for_loop_close) -- else a close() waiting for its
        # output, or a socket object someone holds, kept its fd open as long as those objects lived.  Before
        # super().close(): their connection_lost handles are dropped with the ready queue, as asyncio drops
        # those of transports closed at this point.
        if self._flushq:
            self._flush_writes()
        for transport in self._stream_transports():
            transport._close_for_loop_close()
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
        super().close()
        for fd in list(self._fdh):
            self._pl.unregister(fd)
        self._fdh.clear()
        if self._child_pidfds:
            from ._subprocess import release_child_watchers
            release_child_watchers(self)
        self._due.clear()
        self._tpending.clear()
        self._pl.close()

    # ------------------------------------------------------------ readers and writers

    def _fd_event(self, fd: int, ev: int) -> None:
        pair = self._fdh.get(fd)
        if pair is None:
            return
        r, w = pair
        if r is not None and ev & (_READ | _ERROR | _HUP):
            if r._cancelled:
                pair[0] = None
                self._update_fd(fd, pair)
            else:
                self._cur.append(r)
        if w is not None and ev & (_WRITE | _ERROR | _HUP):
            if w._cancelled:
                pair[1] = None
                self._update_fd(fd, pair)
            else:
                self._cur.append(w)

    def _update_fd(self, fd: int, pair) -> None:
        mask = (_READ if pair[0] is not None else 0) | (_WRITE if pair[1] is not None else 0)
        if mask:
            self._pl.modify(fd, mask)
        else:
            del self._fdh[fd]
            self._pl.unregister(fd)

    def _add_io(self, fd, idx: int, callback, args):
        self._check_closed()
        fd = _fd_of(fd)
        handle = events.Handle(callback, args, self, None)
        pair = self._fdh.get(fd)
        if pair is None:
            pair = [None, None]
            pair[idx] = handle
            try:
                self._pl.register(fd, _READ if idx == 0 else _WRITE, self._fd_event)
            except LoopError:
                raise RuntimeError("File descriptor %r is used by a transport of this loop" % (fd,)) from None
            self._fdh[fd] = pair
        else:
            old = pair[idx]
            pair[idx] = handle
            if old is not None:
                old.cancel()
            self._update_fd(fd, pair)
        return handle

    def _remove_io(self, fd, idx: int) -> bool:
        if self.is_closed():
            return False
        fd = _fd_of(fd)
        pair = self._fdh.get(fd)
        if pair is None or pair[idx] is None:
            return False
        pair[idx].cancel()
        pair[idx] = None
        self._update_fd(fd, pair)
        return True

    def _add_reader(self, fd, callback, *args):
        return self._add_io(fd, 0, callback, args)

    def _add_writer(self, fd, callback, *args):
        return self._add_io(fd, 1, callback, args)

    def _remove_reader(self, fd) -> bool:
        return self._remove_io(fd, 0)

    def _remove_writer(self, fd) -> bool:
        return self._remove_io(fd, 1)

    def add_reader(self, fd, callback, *args) -> None:
        self._add_io(fd, 0, callback, args)

    def add_writer(self, fd, callback, *args) -> None:
        self._add_io(fd, 1, callback, args)

    def remove_reader(self, fd) -> bool:
        return self._remove_io(fd, 0)

    def remove_writer(self, fd) -> bool:
        return self._remove_io(fd, 1)

    # ------------------------------------------------------------ transports

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        return StreamTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *, server_side=False,
                            server_hostname=None, extra=None, server=None, ssl_handshake_timeout=None,
                            ssl_shutdown_timeout=None):
        """TLS: asyncio's ``sslproto.SSLProtocol`` (ssl.MemoryBIO) stacked on powpow's StreamTransport.

        The record layer's output goes through ``StreamTransport.write``, so TLS records of one loop
        iteration still leave in one ``writev`` (powpow's write path, not asyncio's selector transport).
        """
        kw = {}
        if _SSL_SHUTDOWN_TIMEOUT:
            kw["ssl_shutdown_timeout"] = ssl_shutdown_timeout
        ssl_protocol = sslproto.SSLProtocol(self, protocol, sslcontext, waiter, server_side, server_hostname,
                                            ssl_handshake_timeout=ssl_handshake_timeout, **kw)
        StreamTransport(self, rawsock, ssl_protocol, None, extra, server)
        return ssl_protocol._app_transport

    async def _sendfile_native(self, transp, file, offset, count):
        # asyncio's own checks first (binary file, SOCK_STREAM, int offset >= 0, int count > 0 or None),
        # with its messages, as its selector loop's sock_sendfile makes them: nothing is queued for
        # arguments it refuses, and the transport stays usable
        self._check_sendfile_params(transp._sock, file, offset, count)
        return await transp._sendfile(file, offset, count)

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        from ._dgram import DatagramTransport
        return DatagramTransport(self, sock, protocol, address, waiter, extra)

    def _start_serving(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100,
                       ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        self._add_io(sock.fileno(), 0, self._accept_ready,
                     (protocol_factory, sock, sslcontext, server, backlog, ssl_handshake_timeout,
                      ssl_shutdown_timeout))

    def _stop_serving(self, sock) -> None:
        self._remove_io(sock.fileno(), 0)
        ino = self._unix_server_sockets.pop(sock, None)  # 3.13+: create_unix_server(cleanup_socket=True)
        if ino is not None:
            try:
                path = sock.getsockname()
                if os.stat(path).st_ino == ino:
                    os.unlink(path)
            except (OSError, TypeError):
                pass
        sock.close()

    def _accept_ready(self, protocol_factory, sock, sslcontext, server, backlog, hs_timeout, sd_timeout) -> None:
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.call_exception_handler({"message": "socket.accept() out of system resource",
                                                 "exception": exc, "socket": sock})
                    self._remove_io(sock.fileno(), 0)
                    self.call_later(1.0, self._start_serving, protocol_factory, sock, sslcontext, server, backlog,
                                    hs_timeout, sd_timeout)
                    return
                raise
            conn.setblocking(False)
            if sslcontext:
                self.create_task(self._accept_tls(protocol_factory, conn, addr, sslcontext, server, hs_timeout,
                                                  sd_timeout))
                continue
            try:
                protocol = protocol_factory()
                StreamTransport(self, conn, protocol, None, {"peername": addr}, server)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                conn.close()
                self.call_exception_handler({"message": "Error on transport creation for incoming connection",
                                             "exception": exc})

    async def _accept_tls(self, protocol_factory, conn, addr, sslcontext, server, hs_timeout, sd_timeout):
        """A TLS connection accepted by a server: the handshake runs before the protocol sees it."""
        protocol = transport = None
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            transport = self._make_ssl_transport(conn, protocol, sslcontext, waiter, server_side=True,
                                                 extra={"peername": addr}, server=server,
                                                 ssl_handshake_timeout=hs_timeout, ssl_shutdown_timeout=sd_timeout)
            try:
                await waiter
            except BaseException:
                transport.close()
                raise
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if transport is None:
                conn.close()
            if self._debug:  # as asyncio: a failed handshake is the client's problem, logged in debug only
                ctx = {"message": "Error on transport creation for incoming connection", "exception": exc}
                if protocol is not None:
                    ctx["protocol"] = protocol
                if transport is not None:
                    ctx["transport"] = transport
                self.call_exception_handler(ctx)

    # the unix-socket entry points are asyncio's own (path/abstract-socket handling, ssl= checks); they
    # only call sock_connect, _create_connection_transport and Server -> _start_serving, all powpow's
    create_unix_connection = unix_events._UnixSelectorEventLoop.create_unix_connection
    create_unix_server = unix_events._UnixSelectorEventLoop.create_unix_server

    # ------------------------------------------------------------ signals

    def add_signal_handler(self, sig, callback, *args) -> None:
        if asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        if not isinstance(sig, int):
            raise TypeError("sig must be an int, not %r" % (sig,))
        if sig not in signal.valid_signals():
            raise ValueError("invalid signal number %s" % (sig,))
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise RuntimeError("sig %d cannot be caught" % sig)
        self._check_closed()
        handle = events.Handle(callback, args, self, None)
        self._signal_handlers[sig] = handle
        try:
            self._pl.add_signal(sig, self._on_signal)
        except LoopError as exc:
            del self._signal_handlers[sig]
            raise RuntimeError(str(exc)) from None
        except OSError as exc:
            del self._signal_handlers[sig]
            if exc.errno == errno.EINVAL:
                raise RuntimeError("sig %d cannot be caught" % sig) from None
            raise

    def _on_signal(self, sig: int) -> None:
        h = self._signal_handlers.get(sig)
        if h is not None and not h._cancelled:
            self._cur.append(h)

    def remove_signal_handler(self, sig) -> bool:
        if not isinstance(sig, int):
            raise TypeError("sig must be an int, not %r" % (sig,))
        if sig not in signal.valid_signals():
            raise ValueError("invalid signal number %s" % (sig,))
        if self._signal_handlers.pop(sig, None) is None:
            return False
        self._pl.remove_signal(sig)
        if sig == signal.SIGINT:
            signal.signal(sig, signal.default_int_handler)
        return True

    # ------------------------------------------------------------ pipes and subprocesses

    async def connect_read_pipe(self, protocol_factory, pipe):
        from asyncio import unix_events
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = unix_events._UnixReadPipeTransport(self, pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def connect_write_pipe(self, protocol_factory, pipe):
        from asyncio import unix_events
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = unix_events._UnixWritePipeTransport(self, pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def _make_subprocess_transport(self, protocol, args, shell, stdin, stdout, stderr, bufsize,
                                         extra=None, **kwargs):
        from ._subprocess import make_subprocess_transport
        return await make_subprocess_transport(self, protocol, args, shell, stdin, stdout, stderr, bufsize,
                                               extra, **kwargs)
