"""The ASGI ``websocket`` cycle on ``powpow.ws`` (one ``WsCycle`` per connection).

The handshake request reaches the app as ``websocket.connect``; the app
answers ``websocket.accept`` (subprotocol and extra headers: the 101 goes out
through ``powpow.ws.upgrade``), ``websocket.close`` (a 403 before accepting,
as the spec asks) or a denial response (``websocket.http.response.start`` /
``.body``, the ``websocket.http.response`` extension).  Messages arrive in a
queue; above ``QUEUE_HIGH_WATER`` queued messages the connection stops reading
until the app catches up (the kernel's window then pushes back on the peer).
``send`` waits while the transport is over its high-water mark.  Tasks
waiting in ``receive`` and in ``send`` park on separate ``Waiters`` (an app
may read in one task while another writes); a close wakes them all.  The app
hears ``websocket.disconnect`` with the close code and reason; ``send`` after
that raises ``ClientDisconnected``.
"""
import collections
import logging
from typing import Any, Deque

from ..ws.connection import SendStatus
from ..ws.server import upgrade
from ._http import ClientDisconnected, _bad_status, _str_headers
from ._waiters import Waiters

log = logging.getLogger("powpow.asgi")

QUEUE_HIGH_WATER = 64  # messages queued for the app before reading pauses ...
QUEUE_HIGH_BYTES = 1 << 20  # ... or bytes (a message itself is capped by ws_max_size)

CONNECTING, OPEN, CLOSED, RESPONSE = range(4)


class WsCycle:
    __slots__ = ("srv", "req", "res", "state", "queue", "queued", "drained", "ws", "connect_sent", "paused",
                 "resp_status", "resp_headers", "close_sent", "disconnected", "qbytes", "disconnect_msg")

    def __init__(self, srv, req, res) -> None:
        self.srv = srv
        self.req = req
        self.res = res
        self.state = CONNECTING
        self.queue: Deque[dict] = collections.deque()
        self.queued = Waiters(srv.aio)  # receive(): a message is in the queue
        self.drained = Waiters(srv.aio)  # send(): the transport went below its low-water mark
        self.ws: Any = None
        self.connect_sent = False
        self.paused = False
        self.resp_status = 0
        self.resp_headers = None
        self.close_sent = False
        self.disconnected = False
        self.disconnect_msg: Any = None  # (every receive() after it gets it again)
        self.qbytes = 0
        res.on_close = self._on_http_close
        res.on_eof = self._on_http_close  # (a client that ends its side cannot do WebSocket: it left)

    # -- events -------------------------------------------------------------------

    def _on_http_close(self) -> None:
        # the client left before the handshake was answered
        if self.state in (CONNECTING, RESPONSE):
            self._push({"type": "websocket.disconnect", "code": 1006, "reason": ""})
            self.state = CLOSED

    def _on_message(self, ws, data, is_text) -> None:
        self.queue.append({"type": "websocket.receive", "text": data} if is_text
                          else {"type": "websocket.receive", "bytes": data})
        self.qbytes += len(data)
        if (len(self.queue) >= QUEUE_HIGH_WATER or self.qbytes >= QUEUE_HIGH_BYTES) and not self.paused:
            self.paused = True
            ws.pause_reading()
        self.queued.wake()

    def _on_close(self, ws, code, reason) -> None:
        self.state = CLOSED
        self.srv.websockets.discard(ws)
        self._push({"type": "websocket.disconnect", "code": code, "reason": reason})

    def _on_drain(self, ws) -> None:
        self.drained.wake()

    def _push(self, msg) -> None:
        if self.disconnected:
            return
        if msg["type"] == "websocket.disconnect":
            self.disconnected = True
            self.disconnect_msg = msg
            self.drained.wake()  # a send() waiting for a drain that will never come
        self.queue.append(msg)
        self.queued.wake()

    # -- receive / send -----------------------------------------------------------

    async def receive(self):
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        q = self.queue
        while not q:
            if self.disconnected:
                # the disconnect was taken (by this task or another receiving one): it
                # stays the answer, as for http.disconnect -- never a wait nothing ends
                return dict(self.disconnect_msg)
            await self.queued.wait()
        msg = q.popleft()
        data = msg.get("text") or msg.get("bytes")
        if data:
            self.qbytes -= len(data)
        if self.paused and len(q) < QUEUE_HIGH_WATER // 2 and self.qbytes < QUEUE_HIGH_BYTES // 2:
            self.paused = False
            ws = self.ws
            if ws is not None and not ws.transport.closed:
                ws.resume_reading()
        return msg

    async def send(self, message):
        t = message["type"]
        state = self.state
        if t == "websocket.send":
            if state != OPEN:
                if state == CLOSED or self.close_sent:
                    raise ClientDisconnected("the WebSocket is closed")
                raise RuntimeError("ASGI: 'websocket.send' before 'websocket.accept'")
            if self.close_sent:
                raise ClientDisconnected("the WebSocket is closing")
            ws = self.ws
            # Behind a slow client, wait before writing, not only after: several tasks
            # sending at once would otherwise all write past high water, up to the
            # connection's cap, where a message is dropped.
            while not ws.closed and ws.transport.queued_bytes > ws.options.high_water:
                await self.drained.wait()
                if self.state != OPEN or self.close_sent:
                    raise ClientDisconnected("the WebSocket is closed")
            text = message.get("text")
            if text is not None:
                st = self.ws.send_text(text)
            else:
                data = message.get("bytes")
                if data is None:
                    raise RuntimeError("ASGI: 'websocket.send' needs 'text' or 'bytes'")
                st = self.ws.send_binary(data)
            if st != SendStatus.SENT:
                if st == SendStatus.DROPPED:
                    raise ClientDisconnected("the WebSocket is closed (or its peer reads nothing)")
                while not ws.closed and ws.transport.queued_bytes > ws.options.low_water:
                    await self.drained.wait()
            return
        if t == "websocket.accept":
            if state == CLOSED and self.disconnected and not self.close_sent:
                raise ClientDisconnected("the client left before the handshake was answered")
            if state != CONNECTING:
                raise RuntimeError("ASGI: 'websocket.accept' %s" % (
                    "twice" if state == OPEN else "after the connection closed or was denied"))
            sp = message.get("subprotocol")
            hs = message.get("headers")
            res = self.res
            res.on_close = None
            ws = upgrade(self.req, res, on_message=self._on_message, on_close=self._on_close,
                         on_drain=self._on_drain, subprotocols=(sp,) if sp else (),
                         headers=_str_headers(hs) if hs else None, _options=self.srv.ws_options)
            if ws is None or ws.closed:
                self.state = CLOSED
                self._push({"type": "websocket.disconnect", "code": 1006, "reason": ""})
                return
            self.ws = ws
            self.state = OPEN
            self.srv.websockets.add(ws)
            if self.srv.stopping:
                ws.close(1001, "server shutting down")
            return
        if t == "websocket.close":
            if state == OPEN:
                self.close_sent = True
                self.ws.close(message.get("code", 1000) or 1000, message.get("reason") or "")
                return
            if state == CONNECTING:
                self.state = CLOSED
                self.close_sent = True
                if not self.res._gone and not self.res.ended:
                    self.res._close = True
                    self.res.send(b"", status=403)
                return
            if state == CLOSED:
                return  # already closed: nothing to do (uvicorn's behaviour)
            raise RuntimeError("ASGI: 'websocket.close' during a denial response")
        if t == "websocket.http.response.start":
            if state != CONNECTING:
                raise RuntimeError("ASGI: 'websocket.http.response.start' after the handshake was answered")
            status = int(message["status"])
            if not 200 <= status <= 599:
                raise RuntimeError(_bad_status(status))
            self.state = RESPONSE
            self.res._close = True  # the handshake is refused: no keep-alive after a denial (as uvicorn)
            self.resp_status = status
            h = message.get("headers")
            self.resp_headers = _str_headers(h) if h else None
            return
        if t == "websocket.http.response.body":
            if state != RESPONSE:
                raise RuntimeError("ASGI: 'websocket.http.response.body' without "
                                   "'websocket.http.response.start'")
            res = self.res
            if res._gone:
                raise ClientDisconnected("the client has disconnected")
            body = message.get("body", b"")
            if message.get("more_body", False):
                if not res._sent_head:
                    res.status = self.resp_status
                    if self.resp_headers:
                        res._headers = self.resp_headers
                res.write(body)
                return
            if not res._sent_head:
                res.send(body, self.resp_status, self.resp_headers)
            else:
                res.end(body)
            self.state = CLOSED
            self._push({"type": "websocket.disconnect", "code": 1000, "reason": ""})
            return
        raise RuntimeError("ASGI: unexpected message type %r for a websocket scope" % (t,))

    # -- the task -----------------------------------------------------------------

    async def run(self, app, scope) -> None:
        try:
            await app(scope, self.receive, self.send)
        except BaseException as exc:
            self._finish(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._finish(None)
        finally:
            self.srv.inflight -= 1

    def _finish(self, exc) -> None:
        state = self.state
        if exc is not None and not isinstance(exc, ClientDisconnected):
            log.error("Exception in ASGI application (websocket %s)", self.req.target, exc_info=exc)
        if state == OPEN:
            ws = self.ws
            if not ws.closed:
                if exc is None:
                    ws.close(1000, "")
                else:
                    ws.close(1011, "internal error")
        elif state in (CONNECTING, RESPONSE):
            res = self.res
            if not res._gone and not res.ended:
                if not res._sent_head:
                    if exc is None:
                        log.error("ASGI callable returned without accepting or denying the WebSocket (%s)",
                                  self.req.target)
                    res._reset()
                    res._close = True
                    res.send_error(500)
                else:
                    res._session._handler_failed(self.req, RuntimeError("denial response not completed"))
