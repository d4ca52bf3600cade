"""TLS on the transport seam: ``TlsTransport`` runs ``ssl.SSLObject`` over two ``MemoryBIO``s.

Why: OpenSSL does the cryptography (``ssl`` with ``MemoryBIO`` exists on
CPython and PyPy alike); powpow moves the bytes.  A ``TlsTransport`` sits on
a TCP ``Connection`` (the *raw* transport, whose callbacks it owns) and
implements the same ``net.transport.Transport`` contract, so HTTP, WebSocket
and everything else above the seam work over TLS unchanged.

Invariants:

* Ciphertext from the socket goes into the incoming BIO; plaintext is
  decrypted into a per-thread buffer (one per thread, not one per
  connection: an idle TLS connection costs OpenSSL's state and no buffer of
  ours) and handed to ``on_data`` as a memoryview valid during the call
  (``data_as_bytes = True``: as bytes of its own, as on ``Connection``).
* Writes queue plaintext by reference and encrypt it as the socket drains:
  at most ``_CHUNK`` plaintext per step, the ciphertext of one step leaving
  in one ``raw.write`` (one syscall), and no more encryption while the raw
  queue is above ``_CIPHER_HIGH``.  ``send_file`` cannot use ``sendfile``:
  the file is read ``_CHUNK`` at a time as the socket drains, never whole.
* Backpressure counts both queues: ``queued_bytes`` = plaintext not yet
  encrypted + ciphertext not yet in the kernel; the water marks also count
  each queued file chunk as ``file_weight`` (the open descriptor it holds,
  as on plain TCP: ``FILES_HIGH`` chunks alone reach high water, and
  ``send_file`` is refused while ``FILES_MAX`` are queued).
* ``bytes_sent`` is the raw transport's (ciphertext the kernel accepted):
  monotonic, the honest measure of write progress.
* Closing sends ``close_notify`` (best effort on ``close()``, after the queue
  on ``close_after_drain()``/``write_eof()``).  A peer that closes TCP without
  ``close_notify`` is an end of input like any other (``on_eof``); the
  protocol's framing decides whether the message was complete
  (``close_notify_received`` says which it was).  What a peer sends after its
  ``close_notify`` is never buffered (RFC 8446 6.1: it MUST be ignored): it is
  counted and dropped, and past ``_AFTER_CLOSE_NOTIFY_MAX`` the connection is cut
  (a peer that half-closes TLS and keeps streaming bytes cost memory without
  bound while an answer was pending).
* A fatal error after the handshake (a record that does not decrypt) sends the
  alert OpenSSL wrote for it (RFC 8446 5.2) -- best effort, one non-blocking
  write -- before the connection is torn down.
* The handshake has its own deadline (``handshake_timeout``); the owner
  (``on_ready``) hears of the transport only once the handshake succeeded,
  a failure goes to ``on_fail`` and never raises out of the loop.
  Renegotiation is refused (``OP_NO_RENEGOTIATION`` on server contexts).
* ALPN (server side): the ClientHello's bytes are kept until our first flight
  (at most ``_HELLO_MAX``); a client whose ALPN offer has nothing in common
  with the context's list (``prepare_server_context(ctx, alpn)``) gets a
  ``no_application_protocol`` alert instead of our flight, and the close.
"""
import collections
import errno
import logging
import os
import ssl
import sys
import threading
from typing import Any, Callable, Optional

from ._filesend import FileChunk, open_chunk
from ._tlsconf import (_INCOMPLETE, ALERT_NO_APPLICATION_PROTOCOL, OP_NO_RENEGOTIATION, TlsError, TlsInfo,
                       client_hello_alpn, prepare_server_context, server_context)
from ._writing import FILES_MAX, file_weight
from .errors import ConnectionLost, WriteQueueFull

# PyPy's ssl module (_cffi_ssl) copies a bytes or memoryview argument of MemoryBIO.write
# and SSLObject.write into memory that only a major collection frees, and the TLS path
# makes too little garbage to start one: a server's RSS grew by what it received
# (~1 MB per MB; eight 200 MB uploads took it to 1.7 GB).  A bytearray is lent to C as
# it is.  CPython passes either without a copy: nothing changes there.
_LEND = bytearray if sys.implementation.name == "pypy" else None


__all__ = ["TlsTransport", "TlsInfo", "TlsError", "prepare_server_context", "server_context",
           "OP_NO_RENEGOTIATION"]

log = logging.getLogger("powpow.net")

OPEN, CLOSING, CLOSED = 0, 1, 2
_CHUNK = 128 << 10          # plaintext encrypted per step (and file bytes read per step)

# PyPy: OpenSSL's memory for a connection (its SSL object, the two memory BIOs, whose buffers
# grow to the largest flight written: ~190 KiB after a 4 MiB download) is freed by finalizers
# only, and PyPy's collector does not count it, so a busy server's closed connections piled up
# until a rare major collection (+600 MB over 4,000 connections, measured; CPython: flat).
# Every _GC_NUDGE_EVERY closed connections run one incremental step of the major collection
# (gc.collect_step: bounded work, not a full collection), so finalizers keep pace.
_GC_STEP = getattr(__import__("gc"), "collect_step", None) if sys.implementation.name == "pypy" else None
_GC_NUDGE_EVERY = 16
_closed_since_nudge = [0]
_SOURCE_EMPTY = b"(source empty)"  # _read_file: a send_file pipe has nothing to read yet
_CIPHER_HIGH = 256 << 10    # stop encrypting while the raw queue holds this much
_CIPHER_LOW = 64 << 10
_DECRYPT_SIZE = 64 << 10    # one SSL_read yields at most one 16 KiB record; room for a few
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
_HELLO_MAX = 32 << 10       # ClientHello bytes kept for the ALPN check (a bigger one: OpenSSL decides)
_AFTER_CLOSE_NOTIFY_MAX = 64 << 10  # bytes ignored after the peer's close_notify before we cut it off

_local = threading.local()
_PLAIN_HTTP = (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI ")
_PLAIN_HTTP_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                      b"Content-Length: 47\r\nConnection: close\r\n\r\n"
                      b"This port speaks HTTPS: plain HTTP was refused.\n")


def _decrypt_buffer():
    b = getattr(_local, "buf", None)
    if b is None:
        b = _local.buf = bytearray(_DECRYPT_SIZE)
        _local.view = memoryview(b)
    return b, _local.view


class TlsTransport:
    """A ``Transport`` over TLS on top of a raw TCP ``Connection`` (see the module docstring).

    ``on_ready(tls)`` runs once the handshake succeeded; ``on_fail(tls, exc)``
    once it failed or timed out (``exc`` a ``TlsError``/``ConnectionLost``);
    ``on_close`` runs only for a transport that became ready.
    """

    __slots__ = ("_raw", "_ssl", "_in", "_out", "loop", "family", "server_side", "on_data", "on_close",
                 "on_drain", "on_eof", "context", "high_water", "low_water", "max_queued", "_plain",
                 "_plain_bytes", "_plain_files", "_above_high", "_state", "_hs_done", "_announced", "_paused",
                 "_read_deferred", "_eof", "_shut_pending", "_wr_shut", "_hs_timer", "_on_ready", "_on_fail", "tls",
                 "close_notify_received", "_first", "_first_bytes", "_sent", "_pumping", "_hello", "_ignored",
                 "data_as_bytes", "__weakref__")

    def __init__(self, raw, ctx: ssl.SSLContext, server_side: bool, server_hostname: Optional[str] = None,
                 handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
                 on_ready: Optional[Callable] = None, on_fail: Optional[Callable] = None) -> None:
        self._raw = raw
        self.loop = raw.loop
        self.family = raw.family
        self.server_side = server_side
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = ctx.wrap_bio(self._in, self._out, server_side=server_side,
                                 server_hostname=None if server_side else server_hostname)
        self.on_data: Optional[Callable] = None
        self.on_close: Optional[Callable] = None
        self.on_drain: Optional[Callable] = None
        self.on_eof: Optional[Callable] = None
        self.context: Any = None
        self.high_water = raw.high_water
        self.low_water = raw.low_water
        self.max_queued = raw.max_queued
        self._plain: collections.deque = collections.deque()
        self._plain_bytes = 0
        self._plain_files = 0  # FileChunks in _plain
        self._above_high = False
        self._state = OPEN
        self._hs_done = False
        self._announced = False
        self._paused = False
        self._read_deferred = False
        self._eof = False
        self._shut_pending = False
        self._wr_shut = False
        self._on_ready = on_ready
        self._on_fail = on_fail
        self.tls: Optional[TlsInfo] = None
        self.close_notify_received = False
        self._ignored = 0  # bytes dropped after the peer's close_notify
        self.data_as_bytes = False  # on_data gets bytes (a copy of its own) instead of a memoryview
        self._first = True
        self._first_bytes = b""  # the peer's first bytes: plain HTTP to a TLS port is answered in words
        self._sent = 0  # bytes_sent of raw connections already closed (kept monotonic)
        self._pumping = False
        # server side: the ClientHello's bytes until our first flight, for the ALPN check
        self._hello: Optional[bytes] = b"" if server_side else None
        raw.set_write_buffer_limits(_CIPHER_HIGH, min(_CIPHER_LOW, self.low_water))
        raw.context = self
        raw.on_data = self._raw_data
        raw.on_eof = self._raw_eof
        raw.on_close = self._raw_close
        raw.on_drain = self._raw_drain
        self._hs_timer = None
        if handshake_timeout:
            self._hs_timer = self.loop.add_timer(max(1, int(handshake_timeout * 1000)), self._hs_expired)
        if not server_side:
            self._handshake()  # the ClientHello

    # ------------------------------------------------------------ identity

    @property
    def raw(self):
        """The TCP ``Connection`` underneath (None once closed)."""
        return self._raw

    @property
    def closed(self) -> bool:
        return self._state == CLOSED

    @property
    def is_unix(self) -> bool:
        return self._raw is not None and self._raw.is_unix

    @property
    def peer_address(self):
        return self._raw.peer_address if self._raw is not None else None

    @property
    def sock_address(self):
        return self._raw.sock_address if self._raw is not None else None

    def get_client_ip(self) -> Optional[str]:
        return self._raw.get_client_ip() if self._raw is not None else None

    def set_nodelay(self, on: bool = True) -> None:
        """``TCP_NODELAY`` on the socket underneath (as ``Connection.set_nodelay``)."""
        raw = self._raw
        if raw is not None:
            raw.set_nodelay(on)

    @property
    def peer_closed(self) -> bool:
        raw = self._raw
        return self._eof or raw is None or raw.peer_closed

    @property
    def bytes_sent(self) -> int:
        raw = self._raw
        return self._sent if raw is None else raw.bytes_sent

    @property
    def queued_bytes(self) -> int:
        raw = self._raw
        return self._plain_bytes + (raw.queued_bytes if raw is not None else 0)

    @property
    def output_pending(self) -> bool:
        raw = self._raw
        return bool(self._plain) or self._shut_pending or (raw is not None and raw.output_pending)

    @property
    def queued_files(self) -> int:
        """File chunks (``send_file`` parts not encrypted yet) in the queue, each holding its descriptor."""
        return self._plain_files

    def want_drain(self) -> None:
        """As ``Connection.want_drain``: ``on_drain`` once the queue makes progress and is at ``low_water``."""
        self._above_high = True

    def _backlog(self) -> int:
        """The queues as the water marks see them: ``queued_bytes`` plus ``file_weight`` per file chunk."""
        files = self._plain_files
        q = self.queued_bytes
        return q + files * file_weight(self.high_water) if files else q

    @property
    def writable(self) -> bool:
        return self._state == OPEN and not self._shut_pending and not self._wr_shut and not self._above_high

    @property
    def reading_paused(self) -> bool:
        return self._paused

    def __repr__(self) -> str:
        return "<TlsTransport %s %s queued=%d>" % (self._raw, ("open", "closing", "closed")[self._state],
                                                   self.queued_bytes)

    # ------------------------------------------------------------ handshake

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            if self._hello is not None and self._out.pending and self._alpn_refused():
                return
            self._flush_out()
            return
        except (ssl.SSLError, OSError, ValueError) as exc:
            self._handshake_failed(exc)
            return
        self._hello = None
        self._hs_done = True
        self._cancel_hs_timer()
        self.tls = TlsInfo(self._ssl)
        self._flush_out()
        if self._state == CLOSED:
            return
        self._announced = True
        ready = self._on_ready
        self._on_ready = None
        self._on_fail = None
        if ready is not None:
            ready(self)
        if self._state == CLOSED:
            return
        if self._plain:
            self._pump()  # written before the handshake finished (a client's first request)
        if self._in.pending and self._state != CLOSED:
            self._decrypt()  # application data that came with the handshake's last flight

    def _alpn_refused(self) -> bool:
        """Our first flight is ready: the ClientHello is complete.  A client whose ALPN offer
        has nothing in common with ours is refused with a ``no_application_protocol`` alert
        (RFC 7301) -- Python's ssl would carry on without ALPN, and an h2-only client would
        then wait for an HTTP/2 answer that never comes."""
        hello = self._hello
        self._hello = None
        if not hello or b"\x00\x10" not in hello:
            return False  # no ALPN extension (type 16) can be in there: the common case, cheaply
        ours = getattr(self._ssl.context, "_powpow_alpn", None)
        if not ours:
            return False
        offered = client_hello_alpn(hello)
        if not offered or offered is _INCOMPLETE or any(p in ours for p in offered):
            return False
        self._handshake_failed(TlsError(
            "NO_APPLICATION_PROTOCOL: the client offers ALPN %s only, this server speaks %s"
            % (", ".join(p.decode("ascii", "replace") for p in offered),
               ", ".join(p.decode("ascii", "replace") for p in ours)),
            "NO_APPLICATION_PROTOCOL"), "NO_APPLICATION_PROTOCOL")
        return True

    def _handshake_failed(self, exc: BaseException, reason: str = "") -> None:
        raw = self._raw
        if not reason:
            reason = getattr(exc, "reason", None) or type(exc).__name__
        verify = getattr(exc, "verify_message", None)
        detail = "%s: %s" % (reason, verify) if verify else str(exc)
        err = TlsError("TLS handshake with %s failed: %s" % (raw._peer_str() if raw is not None else "peer", detail),
                       str(reason))
        err.__cause__ = exc if isinstance(exc, BaseException) and exc is not err else None
        self._state = CLOSED
        self._hello = None
        self._cancel_hs_timer()
        self._drop_plain()
        fail = self._on_fail
        self._on_ready = self._on_fail = None
        if raw is not None:
            if reason == "HTTP_REQUEST" or (self.server_side and self._first_plain_http()):
                self._out.read()
                raw.write(_PLAIN_HTTP_ANSWER)  # what nginx does: say why, in words the client reads
            elif reason == "NO_APPLICATION_PROTOCOL":
                self._out.read()  # our ServerHello flight: replaced by the alert
                raw.write(ALERT_NO_APPLICATION_PROTOCOL)
            else:
                self._flush_out()  # the alert, so the peer learns why
            if reason == "timeout":
                raw.close()
            else:
                raw.close_after_drain()
        if self.server_side:
            log.info("%s", err)
        if fail is not None:
            fail(self, err)

    def _first_plain_http(self) -> bool:
        return bool(self._first_bytes) and self._first_bytes[:4] in _PLAIN_HTTP

    def _hs_expired(self) -> None:
        self._hs_timer = None
        if not self._hs_done and self._state != CLOSED:
            self._handshake_failed(TlsError("no handshake within the time allowed", "timeout"), "timeout")

    def _cancel_hs_timer(self) -> None:
        if self._hs_timer is not None:
            if self.loop is not None and not self.loop.is_closed:
                self.loop.cancel_timer(self._hs_timer)
            self._hs_timer = None

    # ------------------------------------------------------------ raw callbacks

    def _raw_data(self, raw, view) -> None:
        if self._state != OPEN and (self._state == CLOSED or self._wr_shut):
            return  # closing, our close_notify is out: nobody reads what comes now (the FIN ends it)
        self._in.write(view if _LEND is None else _LEND(view))
        if not self._hs_done:
            hello = self._hello
            if hello is not None:
                self._hello = hello + view if len(hello) + len(view) <= _HELLO_MAX else None
            if self._first:
                self._first = False
                if self.server_side:
                    self._first_bytes = bytes(view[:4])
            self._handshake()
            return
        if not self._paused:
            self._decrypt()

    def _raw_eof(self, raw) -> None:
        if self._state == CLOSED:
            return
        if not self._hs_done:
            # An orderly FIN, not a reset (an RST arrives through _raw_close as ECONNRESET).
            self._handshake_failed(TlsError("peer closed the connection during the TLS handshake",
                                            "UNEXPECTED_EOF_WHILE_READING"), "UNEXPECTED_EOF_WHILE_READING")
            return
        if not self._eof:
            self._decrypt()
            if self._state == CLOSED or self._paused:
                return  # resume_reading delivers the rest, then the end
            if not self._eof:
                self._tls_eof()  # TCP FIN without close_notify: tolerated, the framing above decides

    def _raw_close(self, raw, exc) -> None:
        self._sent = raw.bytes_sent
        self._raw = None
        if _GC_STEP is not None:
            n = _closed_since_nudge[0] + 1
            if n >= _GC_NUDGE_EVERY:
                n = 0
                _GC_STEP()
            _closed_since_nudge[0] = n
        was = self._state
        self._state = CLOSED
        self._cancel_hs_timer()
        self._drop_plain()
        if not self._announced:
            if was != CLOSED:  # closed before the handshake finished, and not by _handshake_failed
                fail = self._on_fail
                self._on_ready = self._on_fail = None
                err = TlsError("TLS handshake with %s failed: %s" % (raw._peer_str() if raw.fd >= 0 else "peer",
                                                                      exc or "connection closed"), "closed")
                if fail is not None:
                    fail(self, err)
            return
        self._announced = False
        cb = self.on_close
        if cb is not None:
            cb(self, exc)

    def _raw_drain(self, raw) -> None:
        self._pump()

    # ------------------------------------------------------------ reading

    def _decrypt(self) -> None:
        buf, view = _decrypt_buffer()
        sslobj = self._ssl
        read: Any = sslobj.read  # read(len, buffer) -> int
        inbio = self._in
        size = len(buf)
        n: int
        while self._state != CLOSED and not self._paused and not self._eof:
            if not inbio.pending and not sslobj.pending():
                break  # nothing left to decrypt: skip the SSLWantReadError (~10 us) a read would raise
            try:
                n = read(size, buf)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                n = 0
            except (ssl.SSLError, OSError) as exc:
                self._fail_exc(exc, "TLS record from")
                return
            if n <= 0:  # the peer's close_notify (CPython's read returns 0 for it)
                self.close_notify_received = True
                self._ignore_after_close_notify()
                self._flush_out()
                self._tls_eof()
                return
            if self._state == OPEN:
                cb = self.on_data
                if cb is not None:
                    cb(self, bytes(view[:n]) if self.data_as_bytes else view[:n])
        if self._out.pending and self._state != CLOSED:
            self._flush_out()  # e.g. a KeyUpdate answer

    def _ignore_after_close_notify(self) -> None:
        """The peer's close_notify is in: from now on its bytes are dropped, never decrypted or
        kept (RFC 8446 6.1).  The raw reads go to ``_raw_data_after_close_notify`` (the usual
        path pays nothing for this), and what already followed the alert leaves the BIO."""
        raw = self._raw
        if raw is not None:
            raw.on_data = self._raw_data_after_close_notify
        if self._in.pending:
            self._raw_data_after_close_notify(raw, self._in.read())

    def _raw_data_after_close_notify(self, raw, view) -> None:
        if self._state == CLOSED:
            return
        self._ignored += len(view)
        if self._ignored > _AFTER_CLOSE_NOTIFY_MAX:
            # Ignoring costs no memory, but a peer that half-closed TLS and keeps streaming
            # bytes is broken or hostile: cut it off (its answer, if any, is lost with it).
            err = ConnectionLost(errno.EPROTO, "%d bytes after its close_notify (data after a closure alert, "
                                 "RFC 8446 6.1) from" % self._ignored,
                                 raw._peer_str() if raw is not None else "peer")
            log.info("%s", err)
            self._teardown(err)

    def _tls_eof(self) -> None:
        if self._eof:
            return
        self._eof = True
        cb = self.on_eof
        if cb is not None and self._state == OPEN:
            cb(self)
            if self._state == OPEN and self._wr_shut:
                self.close()  # our close_notify went out earlier: both directions are finished
            return
        if self._state == OPEN:
            self.close_after_drain()

    def pause_reading(self) -> None:
        if self._paused or self._state == CLOSED:
            return
        self._paused = True
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self._state == CLOSED:
            return
        self._raw.resume_reading()
        if not self._read_deferred:
            self._read_deferred = True
            self.loop.defer_call(self._deferred_read)

    def read_now(self) -> None:
        """As ``Connection.read_now``: the records waiting are read and decrypted now."""
        if self._state != CLOSED and not self._paused and self._raw is not None:
            self._raw.read_now()

    def _deferred_read(self) -> None:
        self._read_deferred = False
        if self._state == CLOSED or self._paused or not self._hs_done:
            return
        self._decrypt()
        raw = self._raw
        if raw is not None and raw._eof and not self._eof and not self._paused and self._state != CLOSED:
            self._tls_eof()  # the FIN was read while we were paused

    # ------------------------------------------------------------ writing

    def write(self, data) -> bool:
        if self._state != OPEN or self._shut_pending or self._wr_shut:
            return False
        if type(data) is not bytes:
            data = bytes(data)
        if not data:
            return not self._above_high
        if self._plain or not self._hs_done:
            if self.queued_bytes > self.max_queued:
                self._refuse(len(data))
                return False
            self._plain.append(data)
            self._plain_bytes += len(data)
            if self._hs_done:
                self._pump()
        elif len(data) <= _CHUNK and self._raw.queued_bytes < _CIPHER_HIGH:
            try:
                self._ssl.write(data if _LEND is None else _LEND(data))
            except (ssl.SSLError, OSError) as exc:
                self._fail_exc(exc, "TLS write to")
                return False
            self._flush_out()
        else:
            self._plain.append(data)
            self._plain_bytes += len(data)
            self._pump()
        return self._check_high()

    send = write

    def writev(self, buffers) -> bool:
        # (empty buffers dropped, as write() drops empty data: queued, one reached
        # SSL_write, which PyPy's ssl takes for an EOF and failed the connection)
        bufs = [b for b in (b if type(b) is bytes else bytes(b) for b in buffers) if b]
        if not bufs:
            return self._state == OPEN and not self._above_high
        if len(bufs) == 1:
            return self.write(bufs[0])
        total = sum(len(b) for b in bufs)
        if total <= _CHUNK:
            return self.write(b"".join(bufs))  # one encryption, one send
        if self._state != OPEN or self._shut_pending or self._wr_shut:
            return False
        if self._plain and self.queued_bytes > self.max_queued:
            self._refuse(total)
            return False
        self._plain.extend(bufs)
        self._plain_bytes += total
        if self._hs_done:
            self._pump()
        return self._check_high()

    sendv = writev

    def send_file(self, path_or_fd, offset: int = 0, count: Optional[int] = None, header=None,
                  own_fd: bool = False) -> bool:
        """Send a file range: read and encrypted ``_CHUNK`` at a time as the socket drains."""
        take = own_fd and isinstance(path_or_fd, int)
        if self._state != OPEN or self._shut_pending or self._wr_shut:
            if take:
                os.close(path_or_fd)
            return False
        if self._plain and (self.queued_bytes > self.max_queued or self._plain_files >= FILES_MAX):
            if take:
                os.close(path_or_fd)
            if self._plain_files >= FILES_MAX:
                exc = WriteQueueFull(
                    "send_file refused: %d file chunks already queued (the cap is %d; peer %s is not "
                    "reading); connection closed"
                    % (self._plain_files, FILES_MAX, self._raw._peer_str() if self._raw else "peer"))
                log.warning("%s", exc)
                self._teardown(exc)
            else:
                self._refuse(len(header) if header else 0)
            return False
        chunk = open_chunk(path_or_fd, offset, count, take)
        if header:
            h = bytes(header)
            self._plain.append(h)
            self._plain_bytes += len(h)
        self._plain.append(chunk)
        self._plain_files += 1
        if self._hs_done:
            self._pump()
        return self._state == OPEN and self._check_high()

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        if high is None:
            high = (1 << 20) if low is None else 4 * low
        if low is None:
            low = high // 4
        if not 0 <= low <= high:
            raise ValueError("need 0 <= low (%r) <= high (%r)" % (low, high))
        self.high_water = high
        self.low_water = low
        if self._raw is not None:
            self._raw.set_write_buffer_limits(_CIPHER_HIGH, min(_CIPHER_LOW, low))
        backlog = self._backlog()
        if backlog >= high:
            self._above_high = True
        elif self._above_high and backlog <= low and self._state != CLOSED:
            self.loop.defer_call(self._maybe_drain)

    def _check_high(self) -> bool:
        if self._state != OPEN:
            return False
        if (self._backlog() if self._plain_files else self.queued_bytes) >= self.high_water:
            self._above_high = True
            self._watch_raw_drain()
            return False
        return not self._above_high

    def _watch_raw_drain(self) -> None:
        """Above our high mark with the ciphertext queue under the raw one's: have the raw
        transport call ``on_drain`` at its low mark anyway, or nothing would wake us."""
        raw = self._raw
        if raw is not None and raw.queued_bytes > raw.low_water:
            raw._above_high = True

    def _maybe_drain(self) -> None:
        if self._above_high and self._state != CLOSED and self._backlog() <= self.low_water:
            self._above_high = False
            cb = self.on_drain
            if cb is not None:
                cb(self)

    def _refuse(self, size: int) -> None:
        exc = WriteQueueFull(
            "write of %d bytes refused: the TLS write queue already holds %d bytes, past the %d-byte cap "
            "(peer %s is not reading); connection closed"
            % (size, self.queued_bytes, self.max_queued, self._raw._peer_str() if self._raw else "peer"))
        log.warning("%s", exc)
        self._teardown(exc)

    def _flush_out(self) -> bool:
        raw = self._raw
        if raw is None:
            return False
        data = self._out.read()
        if data:
            return raw.write(data)
        return True

    def _pump(self) -> None:
        """Encrypt queued plaintext while the raw queue has room; one raw write per step.

        ``on_drain`` runs after the pump, not inside it: what it writes or sends from a
        file is pumped by that very call (inside, the pump was busy: the data waited for
        a raw drain that nothing had asked for)."""
        if self._pumping or not self._hs_done:
            return
        drained = False
        self._pumping = True
        try:
            q = self._plain
            sslwrite = self._ssl.write
            while q and self._state != CLOSED:
                raw = self._raw
                if raw.queued_bytes >= _CIPHER_HIGH:
                    break  # raw's on_drain brings us back
                budget = _CHUNK
                source_empty = False
                while q and budget > 0:
                    item = q[0]
                    if type(item) is FileChunk:
                        data = self._read_file(item, budget)
                        if data is None:
                            return
                        if data is _SOURCE_EMPTY:
                            source_empty = True
                            break
                        if item.remaining == 0:
                            q.popleft()
                            item.close()
                            self._plain_files -= 1
                        if not data:
                            continue
                    else:
                        if len(item) > budget:
                            mv = memoryview(item)
                            data, q[0] = mv[:budget], mv[budget:]
                        else:
                            data = item
                            q.popleft()
                        self._plain_bytes -= len(data)
                    budget -= len(data)
                    sslwrite(data if _LEND is None else _LEND(data))
                if not self._flush_out() or source_empty:
                    break
            if self._state == CLOSED:
                return
            if not q and self._shut_pending:
                self._do_shutdown()
            if self._above_high:
                if self._backlog() <= self.low_water:
                    drained = True
                else:
                    self._watch_raw_drain()
        except (ssl.SSLError, OSError) as exc:
            self._fail_exc(exc, "TLS write to")
        finally:
            self._pumping = False
        if drained:
            self._maybe_drain()

    def _read_file(self, chunk: FileChunk, want: int):
        """The next bytes of ``chunk``; None: torn down (why is reported); ``_SOURCE_EMPTY``:
        a stream source has nothing yet (``_pump`` runs again once it is readable)."""
        n = min(chunk.remaining, want)
        if n <= 0:
            return b""  # an empty file or count=0: nothing to read (a read of 0 is no early EOF)
        try:
            if chunk.stream:  # a pipe or socket: never a blocking read on the loop thread
                if not chunk.readable(self._raw.loop, self._pump):
                    return _SOURCE_EMPTY
                data = os.read(chunk.fd, n)
                if not data and chunk.to_eof:
                    chunk.remaining = 0
                    return data
            else:
                data = os.pread(chunk.fd, n, chunk.offset)
        except OSError as exc:
            self._teardown(exc)
            return None
        if not data:
            self._teardown(ConnectionLost(errno.EIO, "file ended %d bytes early while sending to" % chunk.remaining,
                                          self._raw._peer_str()))
            return None
        chunk.offset += len(data)
        chunk.remaining -= len(data)
        return data

    # ------------------------------------------------------------ closing

    def _send_close_notify(self) -> None:
        if self._wr_shut or not self._hs_done:
            return
        self._wr_shut = True
        try:
            self._ssl.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass  # SSLWantReadError: our close_notify is written, the peer's is not in yet
        self._flush_out()

    def _do_shutdown(self) -> None:
        self._shut_pending = False
        self._send_close_notify()
        raw = self._raw
        if raw is None:
            return
        if self._state == CLOSING:
            raw.close_after_drain()
        elif self._eof:
            raw.close_after_drain()  # both directions are finished
        else:
            raw.write_eof()

    def close(self, reset: bool = False) -> None:
        """Close now (a best-effort ``close_notify`` first), dropping anything queued;
        ``reset=True`` is ``abort()`` (an RST, no ``close_notify``), as on ``Connection``."""
        if self._state == CLOSED:
            return
        if reset:
            self.abort()
            return
        raw = self._raw
        if self._hs_done and not self._wr_shut and raw is not None and not raw.output_pending:
            self._send_close_notify()
        self._teardown(None)

    def abort(self) -> None:
        """Close now with an RST, no ``close_notify``."""
        if self._state == CLOSED:
            return
        raw = self._raw
        if raw is not None:
            raw.abort()
        else:
            self._state = CLOSED

    def close_after_drain(self) -> None:
        """Deliver everything queued, send ``close_notify`` and FIN, then close."""
        if self._state != OPEN:
            return
        self._state = CLOSING
        if self._paused:
            self._paused = False
            if self._raw is not None:
                self._raw.resume_reading()
        if not self._hs_done:
            self._teardown(None)
            return
        if self._wr_shut:
            if self._raw is not None:
                self._raw.close_after_drain()
            return
        self._shut_pending = True
        if not self._plain:
            self._do_shutdown()

    def write_eof(self) -> None:
        """``close_notify`` (then FIN) once the queue is delivered; reading goes on."""
        if self._state == CLOSED or self._shut_pending or self._wr_shut:
            return
        self._shut_pending = True
        if not self._plain and self._hs_done:
            self._do_shutdown()

    shutdown = write_eof

    def _drop_plain(self) -> None:
        for item in self._plain:
            if type(item) is FileChunk:
                item.close()
        self._plain.clear()
        self._plain_bytes = 0
        self._plain_files = 0

    def _fail_exc(self, exc: BaseException, what: str) -> None:
        reason = getattr(exc, "reason", None) or str(exc)
        raw = self._raw
        err = ConnectionLost(errno.EPROTO, "%s (%s)" % (what, reason), raw._peer_str() if raw is not None else "peer")
        err.__cause__ = exc
        if raw is not None and self._out.pending:
            # The fatal alert OpenSSL wrote for this (e.g. bad_record_mac): RFC 8446 5.2 says the
            # connection MUST end with it, so the peer learns why instead of seeing a bare EOF.
            # Best effort: one non-blocking send, nothing waits for it (what the kernel does not
            # take now is dropped with the connection).
            raw.write(self._out.read())
            if self._raw is None:
                return  # that send failed: the raw connection closed and reported why
        self._teardown(err)

    def _teardown(self, exc: Optional[BaseException]) -> None:
        if self._state == CLOSED and self._raw is None:
            return
        raw = self._raw
        if raw is None:
            self._state = CLOSED
            return
        if not self._hs_done:
            self._state = CLOSED
            self._on_ready = self._on_fail = None
        if exc is None:
            raw.close()
        else:
            raw._teardown(exc)
