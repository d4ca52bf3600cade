"""One stream connection (TCP or unix): reading, the write path, backpressure, closing.

``Connection`` is the implementation of ``net.transport.Transport``; servers
(``net.listener``) and clients (``net.client``) create it.  Its write path
(queue, cork, backpressure, the cap rule) is the ``_Writer`` base class in
``net._writing``; file chunks are ``net._filesend``.

The ``on_data`` contract: ``on_data(conn, data)`` receives a **memoryview** into
a receive buffer that is shared by every connection of the server (one 64 KiB
pooled buffer, not one per connection: 10 000 idle connections must cost
kilobytes, not 640 MiB).  It is valid only until ``on_data`` returns; keep
``bytes(data)`` (or copy into your own bytearray) to retain anything.  Passing
it straight to ``conn.send()`` is fine: what the kernel does not take at once
is copied.  Reads are never started from inside user calls (``resume_reading``
defers its read to the next iteration), so the shared buffer is never reused
while a callback still holds a view of it.

``conn.data_as_bytes = True`` (opt-in, per connection, reset when it is
pooled) makes ``on_data`` receive ``bytes`` instead: a copy of its own, valid
forever, made in the same native call as the ``recv``.  Use it when the
consumer would copy anyway (a parser that keeps the data: ``bytes(data)`` of
a bytes object is the same object, no second copy) or sends the data back
(bytes go to ``send`` without a buffer export).  On CPython this is the
cheaper mode (one call, no memoryview slice); on PyPy the view is free.

Why the read loop lives in one method (``_event``): it is the watcher callback,
and on CPython each Python frame on the per-event path costs; internal reads
(``_read``: deferred, or a level-triggered hang-up while paused) enter it with
``_NO_PRELUDE`` set.  On CPython the socket calls are FASTCALL builtins
(``_sock.FAST_IO``, ``src/pp_cpyio.c``), and the watcher callback is
``_on_event``: the common event (data, nothing else to do) in fewer steps, the
rest handed to ``_event``.  ``perf/cg_tcp.py`` measures the instructions per
echo round trip.

Readiness is edge-triggered on epoll/kqueue (READ|WRITE registered once, no
``epoll_ctl`` per queue transition); on the level-triggered ``poll`` backend
the interest set is updated instead.  A read shorter than the buffer means
the socket was drained: with EPOLLET every later arrival raises a new edge,
so the extra ``recv`` that would only return EAGAIN is skipped.

End of input: when the peer's FIN is read and ``on_eof`` is None, the
connection closes once its queue is delivered.  With ``on_eof`` set,
``on_eof(conn)`` runs once (after all data before the FIN was delivered) and
the write side stays open: the owner answers, then calls ``close()`` or
``close_after_drain()`` (which then closes as soon as the queue is empty).
If our FIN went out first (``write_eof()``), both directions are finished at
the peer's FIN and the connection closes.  After ``close_after_drain()`` the
input is being discarded and ``on_eof`` is not called.  ``peer_closed``
becomes True when the FIN is seen -- also while reading is paused, from
EPOLLRDHUP / POLLRDHUP / kqueue EV_EOF, so a paused connection notices a
hang-up although the data before it is still unread in the kernel (the owner
decides: resume to read it, or close).  A reset (RST) while paused closes the
connection at once with ``ConnectionLost``: nothing can be read or sent then.

Closing: ``close()`` is immediate (``reset=True`` / ``abort()``: SO_LINGER
{1,0} -> RST); ``shutdown()`` / ``write_eof()`` flushes then sends FIN and
keeps reading; ``close_after_drain()`` flushes, sends FIN, then reads and
discards until the peer's FIN (or ``linger_ms``) before closing -- closing
with unread input would make the kernel send an RST that can destroy the
tail of the response at the peer.

Connections of a server are pooled: every close path (``close``, peer EOF,
reset, error, queue overflow, timeout) goes through ``_teardown``, which
releases the fd, watcher, queue and timer, calls ``on_close(conn, exc)``
(``exc`` None for an orderly close), then resets the object for reuse.  Do not
use a ``Connection`` after its ``on_close`` has returned.
"""
import errno
import os
import socket
from typing import Any, Callable, Optional, Union

from .._log import get_logger
from .. import _ffi
from .._ffi import _sock
from ..loop import Loop
from . import addr as _addr
from ._filesend import FileChunk
from ._writing import (CLOSED, CLOSING, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, DEFAULT_MAX_QUEUED, EAGAIN,
                       ERROR, HUP, OPEN, RDHUP, READ, WRITE, _Writer)
from .errors import ConnectionLost

__all__ = ["Connection", "DEFAULT_HIGH_WATER", "DEFAULT_LOW_WATER", "DEFAULT_MAX_QUEUED", "DEFAULT_LINGER_MS",
           "edge_capable", "report"]

log = get_logger("powpow.net")

_MAX_READS_PER_EVENT = 16  # 1 MiB per wake-up, then let other fds have a turn
_READS_PER_EVENT = range(_MAX_READS_PER_EVENT)
_NO_PRELUDE = 1 << 20  # above every poller bit (a one-digit int: compared fast): _read's call into _on_event
_WRITE_ERROR = WRITE | ERROR
_READ_HUP_ERROR = READ | HUP | ERROR
# events -> "data to read, no hang-up, no error" for every combination of the four
# poller bits (all a poller reports): the fast path's test without int bit operations
_PLAIN_LIMIT = 32
_PLAIN_READ = [e & _READ_HUP_ERROR == READ for e in range(_PLAIN_LIMIT)]
DEFAULT_LINGER_MS = 5000

# Native mode: the hottest call goes straight to the shim (no wrapper frame);
# on CPython to a FASTCALL builtin (``_sock.FAST_IO``: cffi's per-call overhead
# was a quarter of an echo round trip).
_FAST_IO = _sock.FAST_IO
_NATIVE_IO = _ffi.NATIVE
if _NATIVE_IO:
    _pp_recv = _ffi.lib.pp_recv
_recv_into = _sock.recv_into
_recv_bytes = _sock.recv_bytes
_fast_recv_into = _sock.fast_recv_into
_fast_recv_bytes = _sock.fast_recv_bytes


def edge_capable(loop: Loop) -> bool:
    """The poll backend ignores ``edge=True``; epoll and kqueue honour it."""
    return loop.backend != "poll"


class _Raise:
    """Hands an exception to the loop's exception handler from the next iteration."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __call__(self) -> None:
        raise self.exc


def report(loop: Loop, exc: BaseException) -> None:
    loop.defer_call(_Raise(exc))


class Connection(_Writer):
    """One stream connection (TCP or unix).  See the module docstring for the contracts."""

    __slots__ = ("loop", "fd", "_sock", "family", "_owner", "_gen", "_state", "_edge",
                 "on_data", "on_close", "on_drain", "on_eof", "context",
                 "_rbuf", "_own_rbuf", "_queue", "_queued", "_files", "_corked", "_cork_ok", "_interest",
                 "_paused", "_read_deferred", "_shut_pending", "_wr_shut", "_eof", "_linger_timer",
                 "_above_high", "high_water", "low_water", "max_queued", "linger_ms",
                 "_peer", "_sockname", "_ip", "_overflow", "peer_closed", "bytes_sent", "data_as_bytes")

    loop: Loop  # None only while the object is pooled (after on_close)
    fd: int
    family: int
    on_data: Optional[Callable[["Connection", Union[memoryview, bytes]], None]]  # bytes: data_as_bytes
    on_close: Optional[Callable[["Connection", Optional[BaseException]], None]]
    on_drain: Optional[Callable[["Connection"], None]]
    on_eof: Optional[Callable[["Connection"], None]]
    context: Any
    high_water: int
    low_water: int
    max_queued: int
    linger_ms: int
    peer_closed: bool
    bytes_sent: int
    data_as_bytes: bool
    _rbuf: Any
    _linger_timer: Any
    _ip: Optional[str]

    def __init__(self) -> None:
        self._gen = 0
        self._reset()

    def _reset(self) -> None:
        self.loop = None  # type: ignore[assignment]
        self.fd = -1
        self._sock = None
        self.family = 0
        self._owner = None
        self._gen += 1
        self._state = CLOSED
        self._edge = True
        self.on_data = None
        self.on_close = None
        self.on_drain = None
        self.on_eof = None
        self.context = None
        self._rbuf = None
        self._own_rbuf = False
        self._queue = None
        self._queued = 0
        self._files = 0  # FileChunks in _queue (O(1) for the water marks and the FILES_MAX cap)
        self._corked = False
        self._cork_ok = False
        self._interest = 0
        self._paused = False
        self._read_deferred = False
        self._shut_pending = False
        self._wr_shut = False
        self._eof = False
        self._linger_timer = None
        self._above_high = False
        self.high_water = DEFAULT_HIGH_WATER
        self.low_water = DEFAULT_LOW_WATER
        self.max_queued = DEFAULT_MAX_QUEUED
        self.linger_ms = DEFAULT_LINGER_MS
        self._peer = None
        self._sockname = None
        self._ip = None
        self._overflow = False
        self.peer_closed = False
        self.bytes_sent = 0
        self.data_as_bytes = False

    def _open(self, loop: Loop, fd: int, sock, family: int, owner, rbuf, own_rbuf: bool,
              on_data, on_close, cork: bool, high_water: int, low_water: int, max_queued: int,
              linger_ms: int) -> None:
        self.loop = loop
        self.fd = fd
        self._sock = sock
        self.family = family
        self._owner = owner
        self._state = OPEN
        self._rbuf = rbuf
        self._own_rbuf = own_rbuf
        self.on_data = on_data
        self.on_close = on_close
        self._cork_ok = cork and family != socket.AF_UNIX
        self.high_water = high_water
        self.low_water = low_water
        self.max_queued = max_queued
        self.linger_ms = linger_ms
        edge = self._edge = edge_capable(loop)
        self._interest = (READ | WRITE) if edge else READ
        loop.register(fd, self._interest, self._on_event if _FAST_IO else self._event, edge)

    # ------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        return self._state == CLOSED

    @property
    def is_unix(self) -> bool:
        return self.family == socket.AF_UNIX

    def pause_reading(self) -> None:
        """Stop delivering ``on_data`` until ``resume_reading()`` (data waits in the kernel).

        A hang-up is still noticed meanwhile: ``peer_closed`` becomes True.
        """
        if self._paused or self._state == CLOSED:
            return
        self._paused = True
        if not self._edge:
            self._update_interest()

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self._state == CLOSED:
            return
        if self._edge:
            self._schedule_read()  # no new edge will come for data that arrived meanwhile
        else:
            self._update_interest()

    @property
    def reading_paused(self) -> bool:
        return self._paused

    def read_now(self) -> None:
        """Read what the kernel holds for this connection now, until EAGAIN, and hand it
        to ``on_data`` (then ``on_eof``/``on_close`` if it says so), as the next poll
        would.  Nothing while reading is paused, after EOF or once closing.  For an owner
        that decides about the connection before that poll: a server closing its idle
        connections reads first, as a request may be waiting unread (closing a socket
        with unread input sends a reset; the request would be lost unanswered)."""
        if self._state == OPEN and not self._paused and not self._eof:
            self._read(HUP)

    def close(self, reset: bool = False) -> None:
        """Close now, dropping anything queued; ``reset=True`` sends an RST (SO_LINGER {1,0})."""
        if self._state == CLOSED:
            return
        if reset:
            _sock.set_linger(self._sock, self.fd, True, 0)
        self._teardown(None)

    def abort(self) -> None:
        """Close now with an RST, dropping anything queued (``close(reset=True)``)."""
        self.close(True)

    def shutdown(self) -> None:
        """Flush the queue, then send FIN (SHUT_WR); reading goes on until the peer closes.

        If the peer's FIN was already read (``on_eof`` set), the connection
        closes once its FIN is sent: both directions are then finished.
        """
        if self._state == CLOSED or self._shut_pending or self._wr_shut:
            return
        self._shut_pending = True
        if not self._queue:
            self._do_shutdown()

    write_eof = shutdown

    def close_after_drain(self) -> None:
        """Deliver everything queued, send FIN, discard input until the peer's FIN, then close."""
        if self._state != OPEN:
            return
        self._state = CLOSING
        if self._paused:
            self._paused = False
            if self._edge and not self._eof:
                self._schedule_read()
        if not self._edge:
            self._update_interest()
        if self._wr_shut:
            self._after_fin()
        else:
            self._shut_pending = True
            if not self._queue:
                self._do_shutdown()

    @property
    def peer_address(self):
        """The peer's socket address (``(host, port)``, 4-tuple for IPv6, path for unix)."""
        if self._peer is None and self._state != CLOSED:
            try:
                self._peer = self._socket().getpeername()
            except OSError:
                return None
        return self._peer

    @property
    def sock_address(self):
        """This end's socket address (``getsockname()``), cached; None once closed."""
        if self._sockname is None and self._state != CLOSED:
            try:
                self._sockname = self._socket().getsockname()
            except OSError:
                return None
        return self._sockname

    def get_client_ip(self) -> Optional[str]:
        """The peer's IP as text (IPv4-mapped IPv6 unmapped); None for unix sockets.  Cached."""
        if self._ip is None:
            pa = self.peer_address
            if pa is not None:
                self._ip = _addr.client_ip(self.family, pa)
        return self._ip

    def set_nodelay(self, on: bool = True) -> None:
        if self._state != CLOSED and self.family != socket.AF_UNIX:
            _sock.set_nodelay(self._sock, self.fd, on)

    def __repr__(self) -> str:
        st = ("open", "closing", "closed")[self._state]
        return "<Connection fd=%d %s queued=%d>" % (self.fd, st, self._queued)

    # ------------------------------------------------------------ events

    def _on_event(self, fd: int, events: int) -> None:
        """The watcher callback on CPython with the FASTCALL socket calls: the common event
        -- new data, no hang-up or error, nothing queued, reading on, bytes mode --
        in as few steps as CPython 3.11 allows; every other event goes to ``_event``.

        One read; a short one (the socket is drained: the usual case) ends the event
        whatever on_data did.  The bit test is a table lookup (int ``&`` is not
        specialised on 3.11), and the guard is negated so that every jump in it is
        short (a compare followed by an EXTENDED_ARG jump is never specialised).
        """
        if not (events < _PLAIN_LIMIT and _PLAIN_READ[events] and not self._queue and not self._eof
                and not self._paused and self.data_as_bytes):
            self._event(fd, events)
            return
        rbuf = self._rbuf
        data = _fast_recv_bytes(fd, rbuf.data)
        if type(data) is not bytes or not data:
            # b"": end of input reported as a plain READ (no HUP bit: poll() without
            # POLLRDHUP, a custom poller); else -errno
            if not data:
                self._on_eof()
            elif data != -EAGAIN:
                self._fail(data, "recv from")
            return
        cb = self.on_data
        if cb is None or self._state != OPEN:
            if len(data) == rbuf.size:
                self._event(fd, events | _NO_PRELUDE)  # (dropped, as the read loop does) read on
            return
        gen = self._gen
        try:
            cb(self, data)
        except Exception as exc:
            if self._gen == gen:
                self._teardown(exc)
            raise
        if len(data) < rbuf.size:
            return
        if self._gen != gen or self._state == CLOSED or (self._paused and self._state == OPEN):
            return
        self._event(fd, events | _NO_PRELUDE)  # a full buffer: more may be waiting

    def _event(self, fd: int, events: int) -> None:
        """Every event (the watcher callback itself on PyPy and in pure mode), and the read loop.

        ``events`` with ``_NO_PRELUDE`` set is an internal call that reads at once
        (``_read``): a deferred read, a level-triggered hang-up while paused, or the
        fast path's full buffer.
        """
        if events < _NO_PRELUDE:
            if events & _WRITE_ERROR and self._queue:  # ERROR: the write fails and closes us
                self._flush()
                if self._state == CLOSED:
                    return
            if not events & _READ_HUP_ERROR or (self._eof and not events & ERROR):
                return
            if self._eof:
                # An error after the peer's FIN: the reset its kernel sends when our data
                # reaches a socket it closed.  A read would say EOF again (the FIN comes
                # first), and the error would stay unseen until a later send failed.
                self._teardown(ConnectionLost(self._so_error() or errno.ECONNRESET, "connection with",
                                              self._peer_str()))
                return
            if self._paused:
                self._on_paused_event(events)
                return
            if events & HUP:
                # The FIN is in (the data before it is read now).  Set here, not only at
                # EOF: on_data may pause reading before the EOF is reached, and the
                # edge of this FIN will not come again.
                self.peer_closed = True
        rbuf = self._rbuf
        size = rbuf.size
        gen = self._gen
        fd = self.fd
        hup = events & HUP
        as_bytes = self.data_as_bytes
        for _ in _READS_PER_EVENT:
            if as_bytes:
                # on_data gets bytes of its own: one copy, made in the same call as the recv
                if _FAST_IO:
                    data = _fast_recv_bytes(fd, rbuf.data)
                else:
                    data = _recv_bytes(self._sock, fd, rbuf)
                n = len(data) if type(data) is bytes else data
            else:
                if _FAST_IO:
                    n = _fast_recv_into(fd, rbuf.data)
                elif _NATIVE_IO:
                    n = _pp_recv(fd, rbuf.ptr, size)
                else:
                    n = _recv_into(self._sock, fd, rbuf)
                if n > 0:
                    data = rbuf.view[:n]
            if n > 0:
                if self._state == OPEN:
                    cb = self.on_data
                    if cb is not None:
                        try:
                            cb(self, data)
                        except Exception as exc:
                            if self._gen == gen:
                                self._teardown(exc)
                            raise
                        if self._gen != gen or self._state == CLOSED:
                            return
                        if self._paused and self._state == OPEN:
                            return
                if n < size and not hup:
                    return
                continue
            if n == 0:
                self._on_eof()
                return
            if n == -EAGAIN:
                return
            self._fail(n, "recv from")
            return
        if self._edge:
            self._schedule_read()

    def _read(self, events: int) -> None:
        """Read now (until a short read; with ``HUP`` in ``events``, until EAGAIN)."""
        self._event(self.fd, events | _NO_PRELUDE)

    def _on_paused_event(self, events: int) -> None:
        if events & ERROR:
            # Paused and reset by the peer: nothing can be sent or read any more.
            self.peer_closed = True
            self._teardown(ConnectionLost(self._so_error() or errno.ECONNRESET, "connection with",
                                          self._peer_str()))
        elif events & HUP:
            # Paused: the data before the FIN stays unread, but the owner can see
            # the hang-up (an HTTP server must not hold a CLOSE-WAIT socket forever).
            self.peer_closed = True
            if not self._edge:
                # Level-triggered, a hang-up is reported on every wait while the fd is
                # watched: drop POLLRDHUP; with nothing queued the fd is parked (events 0,
                # see Loop.register), so POLLHUP -- both directions shut -- cannot spin.
                self._update_interest()

    def _schedule_read(self) -> None:
        if not self._read_deferred:
            self._read_deferred = True
            self.loop.defer_call(self._deferred_read)

    def _deferred_read(self) -> None:
        if self._read_deferred:
            self._read_deferred = False
            if self._state != CLOSED and not self._paused and not self._eof:
                # Read until EAGAIN, not just until a short read: the edge of a FIN
                # that arrived while paused was consumed then, and will not come again.
                self._read(HUP)

    def _on_eof(self) -> None:
        if self._eof:
            return  # a read after the FIN (e.g. on a later ERROR event) says it again
        self._eof = True
        self.peer_closed = True
        cb = self.on_eof
        if cb is not None and self._state == OPEN:
            # Half-close: the peer is done sending, the write side stays open for the owner.
            if not self._edge:
                self._update_interest()
            if self._owner_call(cb) and self._state == OPEN and self._wr_shut:
                self._teardown(None)  # our FIN went out earlier: both directions are finished
            return
        if self._queue or self._shut_pending:
            # The peer is done sending but may still read: deliver what is queued first.
            self._state = CLOSING
            if not self._edge:
                self._update_interest()
        else:
            self._teardown(None)

    # ------------------------------------------------------------ shutdown

    def _update_interest(self) -> None:
        if self._state == CLOSED:
            return
        ev = 0
        if not self._eof:
            if not self._paused or self._state == CLOSING:
                ev |= READ
            elif not self.peer_closed:
                ev |= RDHUP  # paused: still learn of a hang-up (POLLRDHUP), without the data
        q = self._queue
        if q and not (type(q[0]) is FileChunk and q[0].waiting):  # (an empty send_file pipe: not yet)
            ev |= WRITE
        if ev != self._interest:
            self.loop.modify(self.fd, ev)
            self._interest = ev

    def _do_shutdown(self) -> None:
        self._shut_pending = False
        self._wr_shut = True
        if self._corked:
            self._corked = False
            _sock.set_cork(self._sock, self.fd, False)
        try:
            self._socket().shutdown(socket.SHUT_WR)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                self._teardown(ConnectionLost(exc.errno or errno.EIO, "shutdown of", self._peer_str()))
                return
        if self._state == CLOSING or self._eof:
            self._after_fin()

    def _after_fin(self) -> None:
        if self._eof:
            self._teardown(None)
        elif self._linger_timer is None:
            self._linger_timer = self.loop.add_timer(self.linger_ms, self._linger_expired)

    def _linger_expired(self) -> None:
        self._linger_timer = None
        self._teardown(None)

    # ------------------------------------------------------------ teardown

    def _socket(self) -> socket.socket:
        s = self._sock
        if s is None:
            s = self._sock = socket.socket(self.family, socket.SOCK_STREAM, 0, self.fd)
            s.setblocking(False)  # PyPy's constructor makes the fd blocking again
        return s

    def _peer_str(self) -> str:
        pa = self.peer_address
        return "peer" if pa is None else _addr.format_addr(self.family, pa)

    def _so_error(self) -> int:
        try:
            return self._socket().getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as exc:
            return exc.errno or 0

    def _fail(self, neg_errno: int, what: str) -> None:
        self._teardown(ConnectionLost(-neg_errno, what, self._peer_str()))

    def _teardown(self, exc: Optional[BaseException]) -> None:
        if self._state == CLOSED:
            return
        self._state = CLOSED
        loop = self.loop
        loop.unregister(self.fd)
        if self._linger_timer is not None:
            loop.cancel_timer(self._linger_timer)
            self._linger_timer = None
        q = self._queue
        if q:
            for item in q:
                if type(item) is FileChunk:
                    item.close()
        self._queue = None
        self._queued = 0
        self._files = 0
        if self._sock is not None:
            self._sock.close()
        else:
            try:
                os.close(self.fd)
            except OSError:
                pass
        if self._own_rbuf:
            loop.buffers.release(self._rbuf)
        self._rbuf = None
        owner = self._owner
        cb = self.on_close
        try:
            if cb is not None:
                cb(self, exc)
        finally:
            if owner is not None:
                owner._release(self)
