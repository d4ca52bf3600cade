"""``StreamTransport``: asyncio's stream transport on a powpow ``Connection``.

The socket is a ``powpow.net.Connection`` (edge-triggered epoll, native
``send``/``writev``, TCP_CORK while behind, the loop's pooled read buffer);
this class only translates between its callbacks and asyncio's protocol API.

Invariants:
* ``connection_made`` runs (via ``call_soon``) before any other protocol
  callback: the connection is opened with reading paused and resumed after it.
* Writes of one loop iteration are collected in ``_wbuf`` and leave together,
  in one ``writev``, when the loop flushes at the end of the iteration
  (``EventLoop._flush_writes``); ``get_write_buffer_size`` counts both the
  collected buffers and what the kernel has not taken yet.  A write made while
  the loop is not running tries the socket at once, as asyncio's, and
  ``EventLoop.close()`` flushes what is still collected, then closes the
  sockets of its transports (``_close_for_loop_close``): nothing waits for an
  iteration that will never come, and no fd outlives the loop.
* Flow control is asyncio's: ``pause_writing`` when what the kernel did not
  take is above the high mark (64 KiB; checked when the buffers are written,
  at the flush or at once when a write crosses the mark), ``resume_writing``
  at the low mark (16 KiB), from the Connection's ``on_drain``.  Like asyncio
  there is no hard cap: a protocol that ignores
  ``pause_writing`` buffers without bound.
* ``connection_lost`` runs exactly once, via ``call_soon``, after the socket
  is closed (the Connection's ``on_close``).
* As asyncio's selector transport: ``close()`` with output still queued keeps
  taking ``write()`` until that output is out (TLS sends close_notify from
  ``resume_writing``), then FIN; ``eof_received`` comes one iteration after
  the data that arrived with the EOF; protocol callbacks run in a copy of the
  context the transport was created in; protocols see builtin ``OSError``s
  (``ConnectionResetError``...), never powpow's own error classes.
* Debug mode: protocol callbacks that no Handle runs (``data_received`` /
  ``buffer_updated`` from the Connection, ``pause_writing`` /
  ``resume_writing`` from the flush) are timed against
  ``slow_callback_duration`` as asyncio times handles -- see ``_debug.py``;
  with debug off the Connection calls ``_on_data`` itself (no test per read).
* TLS (``ssl=``, ``start_tls``) is asyncio's ``sslproto.SSLProtocol`` stacked
  on this transport (``EventLoop._make_ssl_transport``): records take the
  same write path.
"""
import asyncio
import contextvars
import os
import socket
import sys
from typing import Any, List, Optional

from ..net.connection import Connection

try:
    from asyncio.trsock import TransportSocket as _TSock
except ImportError:  # pragma: no cover - Python < 3.8
    _TSock = None  # type: ignore

from asyncio.constants import _SendfileMode
from asyncio.transports import _FlowControlMixin

from ._debug import call_timed, protocol_callback

__all__ = ["StreamTransport"]

_HIGH = 64 * 1024


def _server_attach(server, transport, attach: bool) -> None:
    fn = server._attach if attach else server._detach
    try:
        fn(transport)  # 3.13+: the server tracks its transports
    except TypeError:
        fn()


class StreamTransport(_FlowControlMixin):
    # _FlowControlMixin: asyncio's sendfile fallback requires it (its own fields are overridden here)
    _sendfile_compatible = _SendfileMode.TRY_NATIVE
    _start_tls_compatible = True  # loop.start_tls stacks asyncio's SSLProtocol on this transport

    def __init__(self, loop, sock, protocol, waiter, extra, server) -> None:
        super().__init__(extra, loop)
        self._sendfile_fut: Any = None
        self._loop = loop
        self._sock = sock
        self._server = server
        self._closing = False
        self._lost = False
        self._eof_pending = False
        self._eof_sent = False
        self._eof_held = False
        self._eof_due = False
        self._drain_close = False  # closing: waiting for the Connection's queue to empty (_finish_close)
        self._queued_flush = False
        self._protocol_paused = False
        self._wbuf: List[bytes] = []
        self._wsize = 0
        self._high = _HIGH
        self._low = _HIGH // 4
        self._conn_lost_writes = 0
        # as asyncio, whose transports run their I/O callbacks in handles made when the transport was:
        # protocol callbacks see the context of whoever created the server or the connection
        self._ctx = contextvars.copy_context()
        self._set_proto(protocol)
        self._extra.setdefault("socket", _TSock(sock) if _TSock is not None else sock)
        try:
            self._extra.setdefault("sockname", sock.getsockname())
        except OSError:
            self._extra.setdefault("sockname", None)
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        pl = loop._pl
        conn = self._conn = Connection()
        rbuf = pl.buffers.acquire()
        try:
            on_data = self._on_data_debug if loop._debug else self._on_data  # see _debug.py
            conn._open(pl, sock.fileno(), sock, sock.family, None, rbuf, True, on_data, self._on_close,
                       True, self._high, self._low, sys.maxsize, 0)
        except BaseException:
            pl.buffers.release(rbuf)
            raise
        conn.on_eof = self._on_eof
        conn.on_drain = self._on_drain_top
        conn.pause_reading()
        self._reading = True
        self._held: Optional[bytes] = None  # see resume_reading
        if sock.family != socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if server is not None:
            _server_attach(server, self, True)
        loop.call_soon(self._connection_made, waiter, context=self._ctx)

    def _set_proto(self, protocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    @protocol_callback("connection_made")
    def _connection_made(self, waiter) -> None:
        try:
            self._protocol.connection_made(self)
        except BaseException as exc:
            if waiter is not None and not waiter.cancelled():
                waiter.set_exception(exc)
            self._fatal(exc, "Fatal error: protocol.connection_made() call failed.")
            return
        if waiter is not None and not waiter.cancelled():
            waiter.set_result(None)
        # as asyncio: the task awaiting the waiter runs before the first data_received
        self._loop.call_soon(self._start_reading)

    def _start_reading(self) -> None:
        if self._reading and not self._closing:
            self._conn.resume_reading()

    def __repr__(self) -> str:
        st = "closed" if self._lost else ("closing" if self._closing else "open")
        return "<powpow StreamTransport fd=%s %s>" % (self._conn.fd, st)

    # ------------------------------------------------------------ connection callbacks

    def _on_data(self, conn, view) -> None:
        if self._closing:
            return
        proto = self._protocol
        run = self._ctx.run
        try:
            if not self._buffered:
                run(proto.data_received, bytes(view))
                return
            pos, total = 0, len(view)
            while pos < total:
                buf = run(proto.get_buffer, total - pos)
                n = len(buf)
                if not n:
                    raise RuntimeError("get_buffer() returned an empty buffer")
                n = min(n, total - pos)
                memoryview(buf)[:n] = view[pos:pos + n]
                run(proto.buffer_updated, n)
                pos += n
                if pos < total:
                    # asyncio reads once per get_buffer/buffer_updated: what the callback did
                    # decides where the rest of this read goes
                    if self._closing:
                        return  # closed or aborted: nothing more is delivered
                    if self._protocol is not proto:  # set_protocol(): the rest is the new one's
                        self._on_data(conn, view[pos:])
                        return
                    if not self._reading:  # paused: the rest waits for resume_reading
                        self._held = bytes(view[pos:])
                        return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "Fatal error: protocol.data_received() call failed.")

    def _on_data_debug(self, conn, view) -> None:
        """Debug mode's on_data: ``_on_data`` timed against ``slow_callback_duration`` (_debug.py)."""
        proto = self._protocol
        call_timed(self._loop, self, proto, "buffer_updated" if self._buffered else "data_received",
                   self._on_data, conn, view)

    def _set_debug(self, enabled: bool) -> None:
        conn = self._conn
        if not conn.closed:
            conn.on_data = self._on_data_debug if enabled else self._on_data

    def _on_eof(self, conn) -> None:
        # as a selector transport, whose next recv() sees the EOF: eof_received comes one iteration after
        # the data that arrived with it (protocols and tests rely on the transport staying open till then)
        if not self._closing:
            self._eof_due = True
            self._loop.call_soon(self._deliver_eof, context=self._ctx)

    @protocol_callback("eof_received")
    def _deliver_eof(self) -> None:
        # not after close()/abort(); but yes when the Connection closed itself (EOF after our write_eof)
        if not self._eof_due or self._protocol is None:
            return
        if not self._reading and not self._lost:  # paused: the EOF waits for resume_reading, as data would
            self._eof_held = True
            return
        self._eof_due = False
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open and not self._closing:
            self.close()

    def _on_drain_top(self, conn) -> None:
        """The Connection's on_drain (from the loop, never nested): run in the transport's context."""
        self._ctx.run(self._on_drain, conn)

    def _on_drain(self, conn) -> None:
        self._on_drain_inner(conn)
        if self._drain_close and not self._lost and not self._queued_flush and not conn.closed:
            if conn.output_pending:
                conn.want_drain()  # written meanwhile (resume_writing): tell us again when out
            else:
                self._drain_close = False
                conn.close_after_drain()  # FIN now, then read-and-discard until the peer's FIN (no RST)

    def _on_drain_inner(self, conn) -> None:
        fut = self._sendfile_fut
        if fut is not None:
            if conn.output_pending:
                conn.want_drain()  # tell us again when the file chunk is out
            elif not fut.done():
                fut.set_result(None)
        if self._protocol_paused and self.get_write_buffer_size() <= self._low:
            self._protocol_paused = False
            try:
                proto = self._protocol
                if self._loop._debug:  # (from the end-of-iteration flush: no handle times it)
                    call_timed(self._loop, self, proto, "resume_writing", proto.resume_writing)
                else:
                    proto.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler({"message": "protocol.resume_writing() failed",
                                                   "exception": exc, "transport": self,
                                                   "protocol": self._protocol})

    def _on_close(self, conn, exc) -> None:
        if isinstance(exc, OSError) and exc.errno and type(exc).__module__.startswith("powpow"):
            # asyncio's protocols see the builtin error (ConnectionResetError, BrokenPipeError...), as from
            # a selector transport: code catches ConnectionError, not powpow's ConnectionLost
            err = OSError(exc.errno, os.strerror(exc.errno))
            err.__cause__ = exc
            exc = err
        fut = self._sendfile_fut
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionError("Connection closed by peer" if exc is None else str(exc)))
        self._closing = True
        self._lost = True
        self._wbuf = []
        self._wsize = 0
        self._loop.call_soon(self._connection_lost, exc, context=self._ctx)

    @protocol_callback("connection_lost")
    def _connection_lost(self, exc) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock = None
            self._protocol = None
            server = self._server
            if server is not None:
                self._server = None
                _server_attach(server, self, False)

    def _fatal(self, exc, message) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler({"message": message, "exception": exc, "transport": self,
                                               "protocol": self._protocol})
        self._force_close(exc)

    def _force_close(self, exc) -> None:
        self._eof_due = False
        self._closing = True
        self._wbuf = []
        self._wsize = 0
        conn = self._conn
        if conn.closed:
            return
        conn.on_close = None
        conn.close()
        self._on_close(conn, exc)

    # ------------------------------------------------------------ writing

    def write(self, data) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data argument must be a bytes-like object, not %r" % type(data).__name__)
        if self._eof_pending or self._eof_sent:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._sendfile_fut is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if not data:
            return
        if self._closing and (self._lost or not (self._queued_flush or self._drain_close)):
            # as asyncio: after close() a write is still taken while earlier output is being sent (TLS
            # writes its close_notify from resume_writing then); once the buffer was empty it is dropped
            self._conn_lost_writes += 1
            if self._conn_lost_writes >= 5:
                asyncio.log.logger.warning("socket.send() raised exception.")
            return
        if type(data) is not bytes:
            data = bytes(data)
        self._wbuf.append(data)
        self._wsize += len(data)
        if not self._queued_flush:
            if self._loop._thread_id is None:
                # the loop is not running (sync code between run_until_complete calls): no flush would come
                # unless it runs again, so try the socket now, as asyncio's write() does
                self._flush()
                return
            self._queued_flush = True
            self._loop._flushq.append(self)
        if self._wsize + self._conn.queued_bytes > self._high:
            # past the high mark: write now (asyncio's rule: pause_writing only for what the kernel did not
            # take), the rest of this iteration's writes still leave together at the flush
            self._flush()

    def writelines(self, list_of_data) -> None:
        for d in list_of_data:
            self.write(d)

    def _flush(self) -> None:
        self._queued_flush = False
        bufs = self._wbuf
        conn = self._conn
        if bufs:
            self._wbuf = []
            self._wsize = 0
            if conn.closed:
                return
            if len(bufs) == 1:
                conn.write(bufs[0])
            else:
                conn.writev(bufs)
            if conn.closed:
                return
            if self._protocol_paused:
                if conn.queued_bytes <= self._low:
                    self._on_drain(conn)
                else:
                    conn.want_drain()  # make the Connection report its drain at the low mark
            elif conn.queued_bytes > self._high:
                conn.want_drain()
                self._pause_protocol()
        if self._eof_pending and not conn.closed:
            self._eof_pending = False
            self._eof_sent = True
            conn.write_eof()
        if self._closing and not self._lost:
            self._finish_close()

    def _pause_protocol(self) -> None:
        self._protocol_paused = True
        try:
            proto = self._protocol
            if self._loop._debug:  # (from the end-of-iteration flush: no handle times it)
                call_timed(self._loop, self, proto, "pause_writing", proto.pause_writing)
            else:
                proto.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({"message": "protocol.pause_writing() failed", "exception": exc,
                                               "transport": self, "protocol": self._protocol})

    async def _sendfile(self, file, offset, count):
        """loop.sendfile's native path: the Connection's sendfile queue, ordered after pending writes."""
        import os
        import stat
        fd = file.fileno()
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a pipe, a device, /proc: no size to send by; asyncio's fallback
            raise asyncio.exceptions.SendfileNotAvailableError("not a regular file")
        # (EventLoop._sendfile_native ran asyncio's argument checks; these keep a float or a negative
        # number from ever reaching the Connection's queue, where it would stop all later output)
        if not isinstance(offset, int) or (count is not None and not isinstance(count, int)):
            raise TypeError("offset and count must be integers (got %r, %r)" % (offset, count))
        if offset < 0 or (count is not None and count <= 0):
            raise ValueError("offset must be >= 0 and count > 0 (got %r, %r)" % (offset, count))
        size = st.st_size
        if count is None or offset + count > size:
            count = max(0, size - offset)
        if count == 0:
            return 0
        if self._closing:
            raise ConnectionError("Connection is closed")
        self._flush()
        conn = self._conn
        base = conn.bytes_sent + conn.queued_bytes  # the file's first byte is counted from here
        fut = self._sendfile_fut = self._loop.create_future()
        chunk = None
        sent = -1
        try:
            # short_ok: a file that shrank meanwhile sends what it has and the transport stays
            # open, as asyncio's; the result says how much went
            chunk = conn.queue_file(fd, offset, count, short_ok=True)
            if chunk is None:
                raise ConnectionError("Connection is closed")
            if conn.output_pending:
                conn.want_drain()
                await fut
            sent = count - chunk.short
            return sent
        finally:
            self._sendfile_fut = None
            if sent < 0:
                # Cancelled (a timeout) or failed: no more of the file goes out, so what the
                # protocol writes next follows the bytes already sent, as with asyncio's loop.
                # (The file stayed queued and went out whole, then the next write after it.)
                if chunk is not None:
                    conn.drop_file(chunk)
                sent = max(0, min(count, conn.bytes_sent - base))
            file.seek(offset + sent)  # as asyncio: the file position tells how much was sent

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof_pending or self._eof_sent:
            return
        self._eof_pending = True
        if not self._queued_flush:
            self._flush()

    def get_write_buffer_size(self) -> int:
        return self._wsize + (0 if self._conn.closed else self._conn.queued_bytes)

    def get_write_buffer_limits(self):
        return (self._low, self._high)

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError("high (%r) must be >= low (%r) must be >= 0" % (high, low))
        self._high, self._low = high, low
        if not self._conn.closed:
            self._conn.set_write_buffer_limits(high, low)
        if not self._protocol_paused and self.get_write_buffer_size() > high:
            self._pause_protocol()
        elif self._protocol_paused and self.get_write_buffer_size() <= low:
            self._on_drain(self._conn)

    # ------------------------------------------------------------ reading, closing

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self._closing or not self._reading:
            return
        self._reading = False
        self._conn.pause_reading()

    def resume_reading(self) -> None:
        if self._closing or self._reading:
            return
        self._reading = True
        held = self._held
        if held is not None:  # the rest of a read a BufferedProtocol paused in the middle of
            self._held = None
            self._on_data(self._conn, memoryview(held))
            if self._closing or not self._reading:
                return
        self._conn.resume_reading()
        if self._eof_held:
            self._eof_held = False
            self._loop.call_soon(self._deliver_eof, context=self._ctx)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._eof_due = False
        self._closing = True
        conn = self._conn
        if not conn.closed:
            conn.pause_reading()
        if not self._queued_flush:
            self._finish_close()

    def _finish_close(self) -> None:
        conn = self._conn
        if conn.closed:
            return
        if conn.output_pending:
            # keep the Connection open (write() still allowed, as asyncio) until its queue is empty: the
            # Connection reports that drain (low mark 0) and _on_drain comes back here
            self._drain_close = True
            conn.set_write_buffer_limits(max(conn.high_water, 1), 0)
            conn.want_drain()
        else:
            conn.close()

    def _close_for_loop_close(self) -> None:
        """``EventLoop.close()``: the socket is closed now, whether a ``close()`` still waits for its
        output or the transport was left open -- the loop never runs again to serve it.  (asyncio leaves
        both to its transports' ``__del__``, which closes the socket when the garbage collector gets to
        it; here the fd does not outlive the loop, even while someone holds the socket object.)  Output
        the kernel never took is lost: the peer gets an RST, not a FIN that would make the cut stream
        look complete.  ``connection_lost`` is not called: its handle would run in no iteration.
        """
        conn = self._conn
        if self._lost or conn.closed:
            return
        self._drain_close = False
        conn.close(reset=conn.output_pending)

    def abort(self) -> None:
        bufs = self._wbuf
        conn = self._conn
        if bufs and not conn.closed and not conn.queued_bytes:
            # asyncio's write() hands its bytes to the kernel at once when nothing is queued,
            # so they leave even if abort() follows in the same callback ("400, then abort"):
            # one non-blocking write of what this iteration buffered; the rest is dropped
            self._wbuf = []
            self._wsize = 0
            conn.write(bufs[0] if len(bufs) == 1 else b"".join(bufs))
        self._force_close(None)

    def set_protocol(self, protocol) -> None:
        self._set_proto(protocol)

    def get_protocol(self):
        return self._protocol

    def _get_conn(self) -> Optional[Connection]:
        return self._conn
