"""One WSGI request/response exchange, between the loop thread and a worker thread.

Threads and ownership
---------------------
The loop thread owns the ``Request``/``Response`` (powpow.http) and the
connection; the worker thread owns the application call.  They meet in three
places only:

* ``wsgi.input`` (``_input.WsgiInput``): body chunks loop -> worker;
* ``post()``: everything the worker wants done to the response goes to the
  loop as a callback (``Loop.post`` is thread-safe and wakes the loop);
* the stream credit (``_cond``): a streamed body's worker waits while the
  connection's queue is above high water (``res.write()`` returned False) or
  more than ``STREAM_HIGH`` bytes are posted but not yet written, and wakes on
  the loop's ``on_drain`` or on the client's disconnect.  A slow client thus
  pauses the application's iterator instead of buffering without bound.

Fast path: a response whose body is known at once (a list, or a first chunk
that fills the declared Content-Length) is handed to the loop in ONE post that
builds the head and the body together (one write), and the worker does not
wait for it.  Everything else streams.

Framing rules (PEP 3333 and RFC 9112): the application's Content-Length is
respected -- more bytes than declared are cut at the declared length and the
connection is closed; fewer bytes close the connection after them (the
client sees a short body, never a desynchronised stream); both are logged.
Hop-by-hop headers from the application are refused (``start_response``
raises), as wsgiref does.  An exception before the head is sent gives a 500;
after it, the connection is closed without completing the body: chunked, the
last chunk is missing; close-delimited (HTTP/1.0), the connection ends with a
reset, not a FIN that would say the body is complete (``Session.cut_answer``).
"""
import logging
import os
import stat
import threading
from collections import deque
from typing import Any, Optional

from ..errors import LoopError
from ._input import EMPTY_INPUT, HIGH_WATER, PIECE_COST, ClientDisconnected, WsgiInput
from ._rules import _LENGTH, FileWrapper, _check_headers, _FilePart, _FilePlan, _header_kind, _status_code

UNLIMITED_BODY = 1 << 62

log = logging.getLogger("powpow.wsgi")

# A streamed body's worker waits while more than this is posted to the loop but
# not yet handed to the connection (the connection's own queue has its high water).
STREAM_HIGH = 256 << 10
WAIT_BACKSTOP_S = 60.0  # the loop's write_timeout closes a stalled client long before

_HEAD, _DATA, _END, _FILE, _FAIL, _ABORT, _CLOSE_AFTER = range(7)


class Exchange:
    """One request in flight (created on the loop thread; ``run()`` on a worker)."""

    # Class-level defaults: creating an exchange costs only the stores that differ
    # (this runs on the loop thread once per request).
    gone = False
    released = False
    queued = False  # waiting behind an earlier pipelined request of its connection
    started = False  # run() began on a worker (or inline)
    # worker side
    status: Optional[str] = None
    code = 200
    headers: Any = []             # replaced, never mutated
    length: Optional[int] = None  # the app's Content-Length
    plain_headers: Optional[list] = None  # headers without it (when the body matches it)
    headers_sent = False
    written = 0
    complete_sent = False  # the declared length went out in one piece
    close_conn = False     # close the connection after this response (framing mismatch)
    body = b""
    # loop <-> worker
    _ops: Optional[deque] = None
    _scheduled = False
    _cond: Optional[threading.Condition] = None
    _queued = 0
    _blocked = False
    _waiting = False
    want_continue = False
    input: Any = EMPTY_INPUT

    def __init__(self, server, req, res, conn) -> None:
        self.server = server
        self.req = req
        self.res = res
        self.loop = res.loop
        self.conn_info = server._conn_info(conn)
        if req.content_length or req.chunked:
            # inline: the app may not wait for the body on the loop thread, so it
            # runs once the body is in (never paused: it is read whole first)
            inp = self.input = WsgiInput(self, UNLIMITED_BODY if server.inline else HIGH_WATER)
            req.on_body(inp.feed)
            req.on_end(inp.end)
            if req.expect_continue and not server.inline:
                # 100 Continue only once the app reads (see first_read)
                req.expect_continue = False
                self.want_continue = True
        res.on_close = self._loop_gone  # req.on_disconnect(), without its checks

    # -- plumbing ----------------------------------------------------------------

    def post(self, callback) -> None:
        if self.server.inline:
            callback()
            return
        try:
            self.loop.post(callback)
        except LoopError:  # the server stopped and closed its loop under us
            self.gone = True

    def first_read(self) -> None:
        if self.want_continue:
            self.want_continue = False
            self.post(self._loop_continue)

    def _loop_continue(self) -> None:
        if not self.gone and not self.res.ended and not self.res.headers_sent:
            self.res._session._continue(self.req)

    def _loop_gone(self) -> None:
        """The client went away before the response ended (loop thread)."""
        self.gone = True
        if self.input is not EMPTY_INPUT:
            if self.started:
                self.input.lost()
            else:
                self.input.discard()  # it will never run (run() sees gone): free its body now
        cond = self._cond
        if cond is not None:
            with cond:
                cond.notify_all()
        if self._iter is not None:  # inline stream waiting for on_drain: end it (close())
            self.loop.defer_call(self._inline_pump)
        self.server._release(self)

    def start_when_writable(self) -> None:
        """Start this pipelined request once the connection takes more output (loop
        thread).  While the answers before it sit above the transport's high water
        it waits for the drain: started at once, each pipelined answer would join
        the write queue, and 64 answers of 1 MiB pass its 32 MiB cap -- a slow but
        honest client would be cut off."""
        if self.gone:
            return  # its client left while it waited (released then)
        res = self.res
        if not res._session.writable:
            # the session tells the first answer in line: this one, now that the
            # one before it is handed over
            res.on_drain = self.start_when_writable
            return
        if res.on_drain is not None:
            res.on_drain = None  # (started once)
        self.server._start(self)

    # -- the application call (worker thread) ----------------------------------------

    def run(self) -> None:
        self.started = True  # (before reading gone: _loop_gone reads them the other way round)
        if self.gone:  # the client left while the request waited for a thread
            self.post(self._loop_release)
            return
        result = None
        try:
            environ = self.server._environ(self)
            result = self.server.app(environ, self.start_response)
            if self.server.inline and result.__class__ is not list and result.__class__ is not tuple \
                    and result.__class__ is not FileWrapper:
                # a stream on the loop thread: pulled while the client keeps up (_inline_pump)
                self._iter = iter(result)
                self._result, result = result, None
                self._inline_pump()
                return
            self._consume(result)
        except BaseException as exc:  # noqa: B036 - anything the app raises ends this exchange only
            self._failed(exc)
        finally:
            if result is not None:
                close = getattr(result, "close", None)
                if close is not None:
                    try:
                        close()
                    except BaseException as exc:  # noqa: B036
                        log.error("WSGI iterable close() raised for %s %s", self.req.method, self.req.target,
                                  exc_info=exc)

    # -- inline mode (loop thread) ------------------------------------------------------

    _iter: Any = None
    _result: Any = None
    INLINE_BURST = 16  # chunks per turn before other connections get theirs

    def start_inline(self) -> None:
        inp = self.input
        if inp is not EMPTY_INPUT and not inp.complete:
            self.req.on_end(self._inline_body_done)
        else:
            self.run()

    def _inline_body_done(self) -> None:
        self.input.end()
        self.run()

    def _inline_pump(self) -> None:
        """Pull the iterable on the loop thread while the connection takes it: a
        slow client pauses it (until on_drain), a fast one shares the loop
        (a burst per turn, then the rest in a deferred call)."""
        res = self.res
        it = self._iter
        if it is None:
            return  # finished (a late on_drain)
        try:
            for _ in range(self.INLINE_BURST):
                if self.gone:
                    break
                try:
                    chunk = next(it)
                except StopIteration:
                    self._end()
                    break
                if chunk.__class__ is not bytes:
                    raise TypeError("WSGI application yielded %s, not bytes" % type(chunk).__name__)
                if chunk:
                    self._send(chunk)
                    if self.req.method == "HEAD":
                        self._end()  # the head is out and no body follows (see _consume)
                        break
                if not self.gone and not res.ended and not res._session.writable:
                    res.on_drain = self._inline_pump
                    return
            else:
                self.loop.defer_call(self._inline_pump)
                return
        except BaseException as exc:  # noqa: B036 - as in run()
            self._failed(exc)
        self._iter = None
        result, self._result = self._result, None
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except BaseException as exc:  # noqa: B036
                log.error("WSGI iterable close() raised for %s %s", self.req.method, self.req.target, exc_info=exc)

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])  # PEP 3333: too late to change
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info (PEP 3333)")
        code = _status_code(status)
        length, plain = _check_headers(headers)
        self.status = status
        self.code = code
        self.headers = headers
        self.length = length
        self.plain_headers = plain
        return self.write

    def write(self, data) -> None:
        """The legacy ``write()`` callable returned by ``start_response``."""
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if data.__class__ is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError("write() takes bytes, not %s" % type(data).__name__)
            data = bytes(data)
        if data:
            self._send(data)

    def _consume(self, result) -> None:
        if self.gone:
            return
        if result.__class__ is list or result.__class__ is tuple:
            if not self.headers_sent:
                if len(result) == 1:
                    body = result[0]
                    if body.__class__ is not bytes:
                        raise TypeError("WSGI application returned %s in its iterable, not bytes"
                                        % type(body).__name__)
                else:
                    for b in result:
                        if b.__class__ is not bytes:
                            raise TypeError("WSGI application returned %s in its iterable, not bytes"
                                            % type(b).__name__)
                    body = b"".join(result)
                self._whole(body)
                return
        elif result.__class__ is FileWrapper and not self.headers_sent and self._sendfile(result):
            return
        for chunk in result:
            if chunk.__class__ is not bytes:
                raise TypeError("WSGI application yielded %s, not bytes" % type(chunk).__name__)
            if self.gone:
                return  # the client left: stop pulling (close() follows)
            if chunk:
                self._send(chunk)
                if self.req.method == "HEAD":
                    break  # the head is out and no body follows: pulling on would only spin this
                    # thread (for ever, on an endless stream); close() follows
        self._end()

    def _whole(self, body: bytes) -> None:
        if self.status is None:
            raise AssertionError("the WSGI application returned without calling start_response()")
        length = self.length
        if length is not None and len(body) != length and self.req.method != "HEAD" \
                and self.code not in (204, 304) and self.code >= 200:
            if len(body) > length:
                log.error("WSGI application sent %d bytes but declared Content-Length %d: cut, closing "
                          "the connection (%s %s)", len(body), length, self.req.method, self.req.target)
                self.body = body[:length]
                self.headers_sent = True
                self.close_conn = True
                self.post(self._loop_whole)
                return
            self._send(body)  # fewer: stream it; the response closes after the short body
            self._end()
            return
        self.body = body
        self.headers_sent = True
        if length is not None and len(body) == length:
            self.headers = self.plain_headers  # powpow writes the same Content-Length
        self.post(self._loop_whole)

    def _send(self, chunk: bytes) -> None:
        if self.status is None:
            raise AssertionError("the WSGI application sent a body before calling start_response()")
        if self.complete_sent:
            log.error("WSGI application sent more bytes than its Content-Length %d: closing the "
                      "connection (%s %s)", self.length, self.req.method, self.req.target)
            self._push(_CLOSE_AFTER, None)
            raise _Overrun()
        length = self.length
        if not self.headers_sent:
            self.headers_sent = True
            if length is not None and len(chunk) >= length and self.req.method != "HEAD":
                self.complete_sent = True  # one piece holds the whole declared body
                if len(chunk) > length:
                    log.error("WSGI application sent more bytes than its Content-Length %d: cut, closing "
                              "the connection (%s %s)", length, self.req.method, self.req.target)
                    self.body = chunk[:length]
                    self.close_conn = True
                    self.post(self._loop_whole)
                    raise _Overrun()
                self.body = chunk
                self.headers = self.plain_headers
                self.post(self._loop_whole)
                return
            self._push(_HEAD, None)
        if length is not None and self.written + len(chunk) > length and self.req.method != "HEAD":
            keep = length - self.written
            log.error("WSGI application sent more bytes than its Content-Length %d: cut, closing the "
                      "connection (%s %s)", length, self.req.method, self.req.target)
            if keep > 0:
                self._stream(chunk[:keep])
            self.written = length
            self.close_conn = True
            self._push(_END, None)
            self.complete_sent = True
            raise _Overrun()
        self._stream(chunk)

    def _stream(self, chunk: bytes) -> None:
        """Hand a body chunk to the loop, waiting while the client is behind."""
        n = len(chunk)
        self.written += n
        n += PIECE_COST  # (against STREAM_HIGH: 10-byte chunks are not 26 000 per loop turn)
        if self.server.inline:
            if self.gone:  # (inline, nothing can wait: a client gone, or past the cap, ends it)
                raise _Gone()
            self._push(_DATA, chunk)
            return
        cond = self._cond
        if cond is None:
            cond = self._cond = threading.Condition(threading.Lock())
        with cond:
            while (self._blocked or self._queued > STREAM_HIGH) and not self.gone:
                self._waiting = True
                try:
                    cond.wait(WAIT_BACKSTOP_S)
                finally:
                    self._waiting = False
            if self.gone:
                raise _Gone()
            self._queued += n
        self._push(_DATA, chunk)

    def _end(self) -> None:
        if self.status is None:
            raise AssertionError("the WSGI application returned without calling start_response()")
        if not self.headers_sent:
            self._whole(b"")
            return
        if self.complete_sent:
            return
        self._push(_END, None)

    def _sendfile(self, wrapper: FileWrapper) -> bool:
        """Send a ``wsgi.file_wrapper`` file with sendfile; False to iterate it instead."""
        if self.status is None:
            return False
        try:
            fd = wrapper.filelike.fileno()
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return False
            offset = wrapper.filelike.tell() if hasattr(wrapper.filelike, "tell") else os.lseek(fd, 0, os.SEEK_CUR)
        except (AttributeError, OSError, ValueError):
            return False
        count = max(0, st.st_size - offset)
        length = self.length
        if length is not None:
            if count < length:
                return False  # fewer bytes than declared: iterate, the response closes short
            count = length
        headers = [h for h in self.headers if _header_kind.get(h[0]) is not _LENGTH]
        dup = os.dup(fd)
        self.headers_sent = True
        self.complete_sent = True
        self._push(_FILE, _FilePlan(self.code, headers, _FilePart(dup, offset, count)))
        return True

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, _Gone):
            return
        if isinstance(exc, _Overrun):
            return  # logged; the connection closes after the declared bytes
        if isinstance(exc, OSError) and self.gone:
            log.info("WSGI application stopped: the client went away (%s %s): %s",
                     self.req.method, self.req.target, exc)
            return
        if not self.headers_sent:
            log.error("WSGI application raised for %s %s; answering 500", self.req.method, self.req.target,
                      exc_info=exc)
            self.headers_sent = True
            self._push(_FAIL, None)
        else:
            log.error("WSGI application raised after the response started (%s %s); closing the connection",
                      self.req.method, self.req.target, exc_info=exc)
            self._push(_ABORT, None)

    def _push(self, kind: int, arg) -> None:
        ops = self._ops
        if ops is None:
            ops = self._ops = deque()  # only the worker creates it, before posting
        ops.append((kind, arg))
        if not self._scheduled:
            self._scheduled = True
            self.post(self._loop_ops)

    # -- loop thread -------------------------------------------------------------------

    def _loop_release(self) -> None:
        self.server._release(self)

    def _closing_headers(self, headers):
        """Add ``Connection: close`` when the request body will not be read to its end."""
        inp = self.input
        if (inp is EMPTY_INPUT or inp.complete) and not self.close_conn:
            return headers
        return list(headers) + [("Connection", "close")]

    def _after(self) -> None:
        """The response is handed over: release the slot, forget the rest of the body."""
        self.server._release(self)
        inp = self.input
        if inp is not EMPTY_INPUT and not inp.complete:
            inp.discard()

    def _loop_whole(self) -> None:
        if self.gone:
            return
        res = self.res
        try:
            if not self.body and self.length is None and self.req.method == "HEAD":
                # no length from the app and no body (Flask's HEAD): what a GET sends is not
                # known here -- a stream, as a rule.  Framed as one (chunked), not a
                # Content-Length: 0 that a client would take for the size (RFC 9110 §8.6)
                res.status = self.code
                for name, value in self._closing_headers(self.headers):
                    res.add_header(name, value)
                res.write(b"")
                res.end()
            else:
                res.send(self.body, self.code, self._closing_headers(self.headers))
        except Exception as exc:
            log.error("WSGI response could not be sent (%s %s)", self.req.method, self.req.target, exc_info=exc)
            self._loop_fail()
        self.body = b""
        self._after()

    def _loop_ops(self) -> None:
        self._scheduled = False
        ops = self._ops
        if ops is None:
            return
        res = self.res
        wrote = 0
        # Everything the worker queued since the last run leaves in one write
        # (a chatty generator's small chunks too): the session collects while
        # in_batch, as it does for one read's answers, and flushes below.
        session = res._session
        was = session.in_batch
        session.in_batch = True
        try:
            wrote = self._run_ops(ops, res)
        finally:
            session.in_batch = was
        if not was:
            session.flush()
        cond = self._cond
        if cond is not None:
            blocked = not self.gone and not res.ended and not session.writable
            if blocked:
                res.on_drain = self._loop_drained
            with cond:
                self._queued -= wrote
                self._blocked = blocked
                if self._waiting:
                    cond.notify()

    def _run_ops(self, ops, res) -> int:
        wrote = 0
        while ops:
            kind, arg = ops.popleft()
            if kind is _DATA:
                wrote += len(arg) + PIECE_COST
                if ops and ops[0][0] is _DATA:
                    # a generator's small chunks, queued while the loop was busy: one
                    # write (one chunk frame) for the run of them, not one each
                    parts = [arg]
                    while ops and ops[0][0] is _DATA:
                        part = ops.popleft()[1]
                        wrote += len(part) + PIECE_COST
                        parts.append(part)
                    arg = b"".join(parts)
                if not self.gone and not res.ended:
                    try:
                        res.write(arg)
                    except Exception as exc:
                        log.error("WSGI response body could not be written (%s %s)", self.req.method,
                                  self.req.target, exc_info=exc)
                        self._loop_abort()
                continue
            if self.gone:
                if kind is not _DATA and kind is not _HEAD:
                    if kind is _FILE:
                        arg.close()
                    self.server._release(self)
                continue
            if kind is _HEAD:
                try:
                    res.status = self.code
                    for name, value in self._closing_headers(self.headers):
                        res.add_header(name, value)
                except Exception as exc:
                    log.error("WSGI response head rejected (%s %s)", self.req.method, self.req.target,
                              exc_info=exc)
                    self._loop_fail()
            elif kind is _END:
                if not res.ended:
                    if self.close_conn:
                        res._close = True
                    res.end()
                self._after()
            elif kind is _FILE:
                try:
                    res.status = self.code
                    arg.headers = self._closing_headers(arg.headers)
                    res.send_plan(arg)
                except Exception as exc:
                    log.error("WSGI file response failed (%s %s)", self.req.method, self.req.target, exc_info=exc)
                    self._loop_fail()
                self._after()
            elif kind is _FAIL:
                self._loop_fail()
                self._after()
            elif kind is _ABORT:
                self._loop_abort()
                self._after()
            elif kind is _CLOSE_AFTER:
                self._loop_abort()
                self._after()
        return wrote

    def _loop_drained(self) -> None:
        cond = self._cond
        if cond is not None:
            with cond:
                self._blocked = False
                if self._waiting:
                    cond.notify()

    def _loop_fail(self) -> None:
        """500 if nothing was sent yet, else close the connection mid-body."""
        res = self.res
        if self.gone or res.ended:
            return
        if res.headers_sent:
            self._loop_abort()
            return
        res._reset()
        res._close = True
        try:
            res.send_error(500)
        except Exception:  # pragma: no cover - our own error path
            self._loop_abort()

    def _loop_abort(self) -> None:
        """Close the connection after what was sent: a body that never looks complete."""
        res = self.res
        if self.gone:
            return
        session = res._session
        res._close = True
        if not res.ended:
            if res._sent_head:
                # part of the body went out: close-delimited (HTTP/1.0), a FIN would
                # say it is complete -- cut_answer ends it with a reset instead
                session.cut_answer(res)
            else:
                res.ended = True
            session._to_closing()
            session.flush()
        else:
            session._to_closing()
            if not session.pending:
                session.conn.close_after_drain()
        self.gone = True  # nothing more goes out: the worker stops pulling the iterable
        cond = self._cond
        if cond is not None:
            with cond:
                cond.notify_all()


class _Gone(ClientDisconnected):
    """The client went away while the worker waited to write (or wrote): what the app's
    ``write()`` raises -- a ``ClientDisconnected``, so an ``OSError``, as wsgiref's
    ``ConnectionResetError`` is."""

    def __init__(self) -> None:
        super().__init__("the client went away: the response cannot be written")


class _Overrun(Exception):
    """The application produced more than its declared Content-Length (logged, connection closed)."""
