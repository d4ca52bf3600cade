"""Nim's ``std/asynchttpserver`` API in Python, on ``powpow.aio`` and powpow's strict HTTP parser.

    from powpow.asynchttpserver import AsyncHttpServer, Request
    server = AsyncHttpServer(reuse_addr=True, reuse_port=False, max_body=8 * 1024 * 1024)
    async def cb(req: Request):
        await req.respond(200, "Hello World", {"Content-Type": "text/plain; charset=utf-8"})
    await server.serve(8080, cb, address="", assumed_descriptors_per_request=-1)

As in the original, ``accept_request(cb)`` accepts ONE connection and serves
it in the background (a task); a loop around it is the user's server loop, and
``serve`` is that loop with ``should_accept_request`` throttling on fds.

Per connection: requests are parsed by ``powpow.http.parser.RequestParser``
(bodies read completely before ``cb`` runs, up to ``max_body``) and answered
strictly in order (pipelining); keep-alive by version and Connection header;
``Expect: 100-continue`` is answered when the body is about to be read: once
every request before it has been answered, so a pipelined request's interim
100 never overtakes an earlier final response; a body over ``max_body`` gets
413, a POST with neither Content-Length nor chunked 411.  A callback that
raises is logged; if it had sent nothing the client gets a 500, and the
connection is closed either way (a half-sent response cannot be framed).

Protocol switches (Nim leaves them to the callback too): after ``respond(101,
...)`` or a 2xx to CONNECT the connection is the callback's -- nothing more is
read from ``client``, ``req.take_remaining()`` gives the bytes that arrived
behind the request, and ``client`` is closed when the callback returns.  An
Upgrade/CONNECT answered any other way is declined: the connection stays HTTP.

Timeouts (``header_timeout`` seconds each): the idle wait for a request's first
byte (on expiry: 408 and close); the whole head, from its first byte -- a
deadline, not a per-read timeout, so a head dripped a byte at a time cannot
hold the connection (on expiry: closed without an answer, as ``HttpServer``
does: no answer is owed for half a head); each wait between reads of a body
(408 and close).

Differences from the Nim original (where it is not RFC-correct):
* malformed requests get their 4xx and the connection is CLOSED (Nim answers
  400 and keeps reading a stream it can no longer frame);
* duplicate headers are kept, all values (``headers.get_all``), not last-wins;
* Content-Length together with Transfer-Encoding: chunked is rejected (400),
  as are other smuggling shapes the strict parser refuses;
* limits and timeouts apply (request line, header size and count,
  ``header_timeout`` as above); Nim has none;
* ``respond`` honours a caller's Content-Length but refuses (``ValueError``,
  nothing sent) a body whose size differs from it: the connection is never
  desynchronised;
* ``respond`` with 1xx, 204 or 304 sends no Content-Length and no content
  (RFC 9110 6.4.1, 8.6); content given for one raises ``ValueError``, nothing
  sent, as does a Content-Length or Transfer-Encoding header on 1xx or 204
  (a 304's Content-Length, the 200's length, is passed as given); to HEAD the
  head goes alone, Content-Length included -- with empty content any valid
  Content-Length is sent as given (the GET's length, RFC 9110 9.3.2, 8.6);
* header names must be tokens and values free of control characters but HTAB
  (RFC 9110 5.1, 5.5): anything else raises ``HeaderValueError`` (a
  ``ValueError``) before a byte is sent, as ``HttpServer`` does;
* every final response, the server's own 4xx/5xx included, carries ``Date``
  (RFC 9110 6.6.1) unless the callback gave one;
* a callback's ``Connection: close`` ends the connection after that answer:
  nothing pipelined behind it runs (RFC 9112 9.6).  Closing after an answer is
  a half-close and a short drain (the "lingering close" of RFC 9112 9.6), so
  bytes the client sent meanwhile do not turn the close into a reset that
  could destroy the answer before the client reads it;
* ``protocol`` is ``(orig, major, minor)`` with ``orig`` like ``"HTTP/1.1"``;
  ``url`` is ``urllib.parse.urlsplit`` of the target (``path``, ``query``...);
  ``hostname`` is the peer address as text; ``client`` is the socket.
"""
import asyncio
import errno
import logging
import os
import socket
from typing import Any, Awaitable, Callable, Optional, Tuple
from urllib.parse import SplitResult, urlsplit

from .errors import ParseError
from .http._message import Headers
from .http.parser import RequestParser
from .http.response import DateCache, HeaderValueError, check_header, reason

__all__ = ["AsyncHttpServer", "Request"]

log = logging.getLogger("powpow.asynchttpserver")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_FRAMING = ("content-length", "transfer-encoding")
_READ_SIZE = 65536
# Lingering close (RFC 9112 9.6): after the last answer the write side is shut and
# what the client still sends is read and dropped, for at most this long / this
# much, before the socket closes -- closing with unread input sends a RST, which
# can discard the answer from the client's receive buffer before it is read.
_LINGER_S = 2.0
_LINGER_BYTES = 1 << 20
# ``Date: ...\r\n``, rebuilt at most once a second (the one HttpServer uses).
_date = DateCache()


def _header_pairs(headers):
    """``headers`` as ``(str, str)`` pairs, checked as HttpServer checks a handler's:
    names are tokens, values have no CTL but HTAB (RFC 9110 5.1, 5.5) and fit ISO-8859-1."""
    if headers is None:
        return []
    if hasattr(headers, "items"):
        items = headers.items()
    else:
        items = headers
    out = []
    for k, v in items:
        k, v = str(k), str(v)
        check_header(k, v)  # HeaderValueError (a ValueError): nothing is sent
        out.append((k, v))
    return out


def _encode_headers(pairs) -> bytes:
    try:
        return "".join(["%s: %s\r\n" % (k, v) for k, v in pairs]).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise HeaderValueError("header value not encodable as ISO-8859-1: %s" % exc) from None


def _has_close(pairs) -> bool:
    """Does a ``Connection`` header among ``pairs`` carry the ``close`` option (RFC 9112 9.6)?"""
    for k, v in pairs:
        if k.lower() == "connection" and any(t.strip().lower() == "close" for t in v.split(",")):
            return True
    return False


def _content_length(value: str) -> int:
    digits = value.strip(" \t")
    if not digits or not digits.isascii() or not digits.isdigit():
        raise HeaderValueError("Content-Length %r is not a decimal length: nothing sent" % (value,))
    return int(digits)


class Request:
    """One request, with its body read completely.  Answer with ``await respond(...)``."""

    __slots__ = ("client", "req_method", "headers", "protocol", "url", "hostname", "body", "_conn", "_parser")

    client: socket.socket
    req_method: str
    headers: Headers
    protocol: Tuple[str, int, int]
    url: SplitResult
    hostname: str
    body: bytes

    def __init__(self, conn: "_Conn", preq, parser: RequestParser) -> None:
        self._conn = conn
        self._parser = parser
        self.client = conn.sock
        self.req_method = preq.method
        self.headers = preq.headers
        major, minor = (int(x) for x in preq.version.split("."))
        self.protocol = ("HTTP/" + preq.version, major, minor)
        self.url = urlsplit(preq.target)
        self.hostname = conn.hostname
        self.body = preq.body

    async def respond(self, code: int, content, headers=None) -> None:
        """Send one response in one write; Content-Length added unless ``headers`` has one.

        1xx, 204 and 304 have no content (RFC 9110 6.4.1): no Content-Length is
        added, and content for them raises ``ValueError`` before anything is sent
        (dropping it would hide a bug); so does content for a 205 (15.3.6), which
        is sent with ``Content-Length: 0``.  RFC 9110 8.6 and RFC 9112 6.1 forbid
        Content-Length and Transfer-Encoding on 1xx and 204: given, they raise
        too.  A 304 may carry the 200's Content-Length: sent as given, as is the
        Content-Length of a HEAD answered with empty content (the GET's length).
        ``Date`` is added to final responses unless ``headers`` has one; a
        ``Connection: close`` in ``headers`` closes the connection after this
        answer (requests pipelined behind it are not run).
        """
        body = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        pairs = _header_pairs(headers)
        head_only = self.req_method == "HEAD"
        if code == 205:  # RFC 9110 15.3.6: no content; its Content-Length: 0 is added below
            if body or any(k.lower() in _FRAMING and str(v).strip() != "0" for k, v in pairs):
                raise ValueError("a 205 response has no content (RFC 9110 15.3.6): %s given, nothing "
                                 "sent" % ("%d bytes" % len(body) if body else "a framing header"))
        if code < 200 or code == 204 or code == 304:
            if body:
                raise ValueError("a %d response has no content, %d bytes given: nothing sent "
                                 "(RFC 9110 6.4.1)" % (code, len(body)))
            if code != 304 and any(k.lower() in _FRAMING for k, _ in pairs):
                raise ValueError("a %d response must not carry Content-Length or Transfer-Encoding: "
                                 "nothing sent (RFC 9110 8.6, RFC 9112 6.1)" % code)
        else:
            declared = [v for k, v in pairs if k.lower() == "content-length"]
            if declared:
                lengths = {_content_length(v) for v in declared}
                if len(lengths) != 1:
                    raise HeaderValueError("Content-Length given twice, %s: nothing sent" % " and ".join(declared))
                # HEAD with empty content: the length a GET would have (RFC 9110 9.3.2, 8.6)
                if lengths.pop() != len(body) and not (head_only and not body):
                    raise ValueError("Content-Length %s given but the content is %d bytes: nothing sent "
                                     "(the connection would be desynchronised)" % (declared[-1], len(body)))
            else:
                pairs.append(("Content-Length", str(len(body))))
        status = ("HTTP/1.1 %d %s\r\n" % (code, reason(code))).encode("latin-1")
        if code >= 200 and not any(k.lower() == "date" for k, _ in pairs):
            status += _date.refresh()  # RFC 9110 6.6.1
        head = status + _encode_headers(pairs) + b"\r\n"
        if head_only:
            body = b""
        if code == 101 or (self.req_method == "CONNECT" and 200 <= code < 300):
            self._conn.switched = True  # the connection is the callback's from now on
        elif code >= 200 and _has_close(pairs):
            self._conn.close_after = True  # RFC 9112 9.6: nothing more is read or run
        # an interim answer (1xx but 101) leaves the final one still owed: a 500 can follow it
        await self._conn.send(head + body, interim=code < 200 and code != 101)

    def take_remaining(self) -> bytes:
        """After this request's switch (``respond(101, ...)``, or a 2xx to CONNECT): the bytes
        that arrived behind the request and were already read from ``client``; they belong
        to the new protocol (read the rest from ``client``).  ``b""`` for any other request."""
        return self._parser.take_remaining() if self._conn.switched else b""

    async def send_headers(self, headers) -> None:
        """Send header lines only (``Name: value\\r\\n`` each), as the original's ``sendHeaders``."""
        await self._conn.send(_encode_headers(_header_pairs(headers)))


class _Conn:
    __slots__ = ("loop", "sock", "hostname", "server", "answering", "switched", "close_after")

    def __init__(self, loop, sock, addr, server) -> None:
        self.loop = loop
        self.sock = sock
        self.server = server
        self.hostname = addr[0] if isinstance(addr, tuple) else str(addr or "")
        self.answering = False  # bytes of the current request's final response were sent
        self.switched = False  # a 101 (or a 2xx to CONNECT) went out: the callback owns the connection
        self.close_after = False  # the callback answered with Connection: close

    async def send(self, data: bytes, interim: bool = False) -> None:
        if not interim:
            self.answering = True
        await self.loop.sock_sendall(self.sock, data)

    async def error(self, status: int, message: str, head_only: bool = False) -> None:
        body = ("%d %s: %s\n" % (status, reason(status), message)).encode("utf-8", "replace")
        head = "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" \
               "Connection: close\r\n\r\n" % (status, reason(status), _date.refresh().decode("ascii"), len(body))
        try:
            await self.send(head.encode("latin-1") + (b"" if head_only else body))
        except OSError:
            return
        await self.linger()

    async def linger(self) -> None:
        """Lingering close (RFC 9112 9.6): FIN after the answer, then drop what the client
        still sends until its FIN, ``_LINGER_S`` or ``_LINGER_BYTES``; ``serve`` closes."""
        loop = self.loop
        sock = self.sock
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = loop.time() + _LINGER_S
        dropped = 0
        while dropped < _LINGER_BYTES:
            wait = deadline - loop.time()
            if wait <= 0:
                return
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, _READ_SIZE), wait)
            except (asyncio.TimeoutError, OSError):
                return
            if not data:
                return
            dropped += len(data)

    async def serve(self, cb) -> None:
        loop = self.loop
        sock = self.sock
        srv = self.server
        timeout = srv.header_timeout
        # The head that asked for 100 Continue, until its body is about to be read.
        expecting: Optional[Any] = None
        # When the head being read must be complete: set at its first byte (a CRLF
        # before the request line counts, or a drip of them would never expire).
        head_deadline: Optional[float] = None

        def on_headers(req) -> None:
            nonlocal expecting, head_deadline
            head_deadline = None
            expecting = req if req.expect_continue else None

        parser = RequestParser(on_headers=on_headers, max_body=srv.max_body)
        try:
            while True:
                in_body = parser.current is not None
                if not in_body and head_deadline is None and parser.pending:
                    head_deadline = loop.time() + timeout  # a partial head left behind the last request
                wait = timeout if head_deadline is None else head_deadline - loop.time()
                try:
                    if wait <= 0:
                        raise asyncio.TimeoutError
                    data = await asyncio.wait_for(loop.sock_recv(sock, _READ_SIZE), wait)
                except asyncio.TimeoutError:
                    if head_deadline is not None:
                        # slowloris: no answer is owed for half a head (as powpow.http's HttpServer)
                        log.info("closing %s: request head not complete in %g s", self.hostname, timeout)
                    else:
                        await self.error(408, "request timed out")
                    return
                except OSError:
                    return
                if data and not in_body and head_deadline is None:
                    head_deadline = loop.time() + timeout
                try:
                    reqs = parser.feed(data)
                except ParseError as exc:
                    await self.error(exc.status, exc.message)
                    return
                while reqs:
                    for preq in reqs:
                        if preq.method == "POST" and preq.content_length is None and not preq.chunked:
                            await self.error(411, "a POST needs Content-Length or chunked")
                            return
                        self.answering = False
                        try:
                            await cb(Request(self, preq, parser))
                        except Exception:
                            log.error("request callback raised (%s %s from %s)", preq.method, preq.target,
                                      self.hostname, exc_info=True)
                            if not self.answering:
                                await self.error(500, "the request handler failed", preq.method == "HEAD")
                            return
                        if self.switched:
                            return  # a 101 / 2xx to CONNECT: the connection was the callback's
                        if self.close_after or not preq.keep_alive:
                            # RFC 9112 9.6: nothing behind a close is processed; the answer
                            # went out whole (sock_sendall), now FIN and a short drain
                            await self.linger()
                            return
                    reqs = []
                    if parser.upgraded:
                        # an Upgrade/CONNECT answered as plain HTTP: what follows it is HTTP again
                        parser.decline_upgrade()
                        try:
                            reqs = parser.feed(b"")
                        except ParseError as exc:
                            await self.error(exc.status, exc.message)
                            return
                if parser.failed:
                    try:
                        parser.feed(b"")
                    except ParseError as exc:
                        await self.error(exc.status, exc.message)
                    return
                if expecting is not None:
                    # Every earlier request is answered now; if the one that asked is
                    # still waiting for its body, it is next on the wire (RFC 9110 10.1.1).
                    if parser.current is expecting:
                        try:
                            await self.send(_CONTINUE, interim=True)
                        except OSError:
                            return
                    expecting = None
                if not data or parser.closed:
                    return
        finally:
            parser.close()
            sock.close()


class AsyncHttpServer:
    """Nim's ``AsyncHttpServer``: ``listen``, ``accept_request``, ``serve``, ``close``."""

    def __init__(self, reuse_addr: bool = True, reuse_port: bool = False, max_body: int = 8388608,
                 header_timeout: float = 30.0) -> None:
        self.reuse_addr = reuse_addr
        self.reuse_port = reuse_port
        self.max_body = max_body
        self.header_timeout = header_timeout
        self.socket: Optional[socket.socket] = None
        self.max_fds = _max_fds()
        self._tasks: set = set()

    def listen(self, port: int, address: str = "", domain: int = socket.AF_INET) -> None:
        sock = socket.socket(domain, socket.SOCK_STREAM)
        try:
            if self.reuse_addr:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if not address:
                address = "::" if domain == socket.AF_INET6 else "0.0.0.0"
            sock.bind((address, port))
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.socket = sock

    def get_port(self) -> int:
        if self.socket is None:
            raise RuntimeError("get_port(): the server is not listening (call listen() first)")
        return self.socket.getsockname()[1]

    def should_accept_request(self, assumed_descriptors_per_request: int = 5) -> bool:
        """True while the open fds plus ``assumed_descriptors_per_request`` stay under the fd limit."""
        if assumed_descriptors_per_request < 0:
            return True
        return _active_descriptors() + assumed_descriptors_per_request < self.max_fds

    async def accept_request(self, cb: Callable[[Request], Awaitable[Any]]) -> None:
        """Accept ONE connection and serve its requests with ``cb`` in the background."""
        if self.socket is None:
            raise RuntimeError("accept_request(): the server is not listening (call listen() first)")
        loop = asyncio.get_running_loop()
        client, addr = await loop.sock_accept(self.socket)
        if client.family != socket.AF_UNIX:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(_Conn(loop, client, addr, self).serve(cb))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("serving a connection failed", exc_info=task.exception())

    async def serve(self, port: int, cb: Callable[[Request], Awaitable[Any]], address: str = "",
                    assumed_descriptors_per_request: int = -1, domain: int = socket.AF_INET) -> None:
        """``listen`` then accept forever (waiting 0.5 s while ``should_accept_request`` is False).

        Out of descriptors (``accept`` fails with EMFILE/ENFILE, or ENOBUFS/ENOMEM) it
        logs one warning, waits 0.5 s and accepts again, as asyncio's own servers do:
        a passing lack of descriptors does not end the server (with the default
        ``assumed_descriptors_per_request=-1`` it used to raise out of ``serve``)."""
        self.listen(port, address, domain)
        starved = 0
        while True:
            if self.should_accept_request(assumed_descriptors_per_request):
                try:
                    await self.accept_request(cb)
                except OSError as exc:
                    if exc.errno not in _ACCEPT_RESOURCE_ERRORS or self.socket is None:
                        raise
                    if not starved:
                        log.warning("accept(): %s; retrying every 0.5 s", exc.strerror or exc)
                    starved += 1
                    await asyncio.sleep(0.5)
                    continue
                if starved:
                    log.warning("accepting again (accept() failed %d times for want of descriptors)", starved)
                    starved = 0
            else:
                await asyncio.sleep(0.5)

    def close(self) -> None:
        """Close the listener (connections being served finish on their own)."""
        if self.socket is not None:
            self.socket.close()
            self.socket = None


def _max_fds() -> int:
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft > 0 and soft != resource.RLIM_INFINITY:
            return soft
    except (ImportError, OSError, ValueError):
        pass
    return 16000


_ACCEPT_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _active_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return 1 << 30  # no descriptor left even to look: certainly too many
        if exc.errno in (errno.ENOENT, errno.EACCES):
            try:
                return len(os.listdir("/dev/fd"))
            except OSError:
                return 0
        return 0
