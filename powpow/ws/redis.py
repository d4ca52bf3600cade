"""Pub/sub across processes and machines through Redis (optional): ``RedisFanout``.

``server.publish(topic, msg)`` delivers to the local subscribers at once and
PUBLISHes once to Redis on channel ``prefix + topic``; every process holds one
PSUBSCRIBE ``prefix*`` connection and relays what arrives to its own local
subscribers -- except its own messages (each payload starts with the
publishing process's 8-byte origin id), which were delivered locally already.

Why a small RESP client on powpow's own TCP client rather than a library:
redis-py and friends are blocking or asyncio-based; this needs two commands
(PUBLISH, PSUBSCRIBE) and the push-message reply shape, about 100 lines on
the loop, with the same backpressure and close semantics as everything else.

Payload: origin (8 bytes) + kind (b"t" text / b"b" binary) + message bytes.
Before the connections are up, publishes wait in a bounded queue (1000
commands and 4 MiB, whichever comes first); past it they are dropped, and
counted: one warning when the drops start, one with their count when Redis
is back (or every 10 s while it is away), never one line per message.  An
error reply (e.g. ``NOAUTH``) is logged the same way; on the subscribing
connection it also closes that connection, so the retry brings it back once
Redis accepts it.  A lost Redis connection is retried every ``retry_ms``;
local delivery never depends on Redis.  A Redis that is connected but does
not read (stalled, or slower than the publishes) gets the same bound: past
4 MiB unsent on its connection, publishes are dropped and counted the same
way until it catches up, and the connection is kept.
"""
import logging
import os
from typing import Any, List, Optional

from .. import net

log = logging.getLogger("powpow.ws")
MAX_PENDING = 1000  # PUBLISH commands queued while Redis is away ...
MAX_PENDING_BYTES = 4 << 20  # ... and their bytes (a message may be large)
LOG_EVERY_MS = 10000  # a repeated failure is logged once, then counted, and summed this often


class _Repeated:
    """A failure that may repeat per message: logged at its first occurrence, then only
    counted, with the count logged every ``LOG_EVERY_MS`` and at ``settle()``."""

    __slots__ = ("what", "count", "last_ms")

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.last_ms = 0

    def hit(self, now_ms: int, detail: str) -> None:
        self.count += 1
        if self.count == 1:
            log.warning("redis fan-out: %s: %s (further ones are counted)", self.what, detail)
            self.last_ms = now_ms
        elif now_ms - self.last_ms >= LOG_EVERY_MS:
            log.warning("redis fan-out: %s: %d times in the last %d s (latest: %s)", self.what,
                        self.count - 1, (now_ms - self.last_ms) // 1000, detail)
            self.count = 1
            self.last_ms = now_ms

    def settle(self) -> None:
        if self.count > 1:
            log.warning("redis fan-out: %s: %d more times before it stopped", self.what, self.count - 1)
        self.count = 0


def resp_command(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else bytes(a)
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RespParser:
    """Incremental RESP2 reader: ``feed(data)`` -> list of complete replies (bytes, int, list, or Exception)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data) -> List[Any]:
        self.buf += data
        out = []
        while True:
            got = self._parse(0)
            if got is None:
                break
            value, end = got
            del self.buf[:end]
            out.append(value)
        return out

    def _parse(self, pos: int):
        buf = self.buf
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        kind, line = buf[pos:pos + 1], bytes(buf[pos + 1:eol])
        nxt = eol + 2
        if kind == b"+":
            return line, nxt
        if kind == b"-":
            return RuntimeError(line.decode("latin-1")), nxt
        if kind == b":":
            return int(line), nxt
        if kind == b"$":
            n = int(line)
            if n < 0:
                return None, nxt
            if len(buf) < nxt + n + 2:
                return None
            return bytes(buf[nxt:nxt + n]), nxt + n + 2
        if kind == b"*":
            n = int(line)
            items = []
            for _ in range(max(n, 0)):
                got = self._parse(nxt)
                if got is None:
                    return None
                items.append(got[0])
                nxt = got[1]
            return items, nxt
        raise ValueError("bad RESP type byte %r" % kind)


class RedisFanout:
    """Relay a ``Hub``'s publishes through Redis (see the module docstring)."""

    def __init__(self, loop, hub, host: str = "127.0.0.1", port: int = 6379, prefix: str = "powpow:",
                 retry_ms: int = 1000) -> None:
        self.loop = loop
        self.hub = hub
        self.host, self.port, self.prefix = host, port, prefix
        self.retry_ms = retry_ms
        self.origin = os.urandom(8)
        self.pub: Optional[Any] = None
        self.sub: Optional[Any] = None
        self.subscribed = False
        self.pending: List[bytes] = []
        self.pending_bytes = 0
        self._dropped = _Repeated("not connected, publishes dropped (queue full)")
        self._stalled = _Repeated("Redis is not reading, publishes dropped (%d MiB unsent)"
                                  % (MAX_PENDING_BYTES >> 20))
        self._pub_failed = _Repeated("PUBLISH failed")
        self._sub_failed = _Repeated("PSUBSCRIBE failed")
        self._unreachable = _Repeated("cannot connect")
        self.closed = False
        self._timer = None
        self._sub_parser = RespParser()
        self._pub_parser = RespParser()
        self._connect()

    def _connect(self) -> None:
        self._timer = None
        if self.closed:
            return
        if self.pub is None:
            net.connect(self.loop, self.host, self.port, on_connect=self._pub_up, on_data=self._pub_data,
                        on_close=self._pub_down, on_error=self._error)
        if self.sub is None:
            net.connect(self.loop, self.host, self.port, on_connect=self._sub_up, on_data=self._sub_data,
                        on_close=self._sub_down, on_error=self._error)

    def _retry(self) -> None:
        if not self.closed and self._timer is None:
            self._timer = self.loop.add_timer(self.retry_ms, self._connect)

    def _error(self, exc) -> None:
        self._unreachable.hit(self.loop.now_ms(), "%s (retrying every %d ms)" % (exc, self.retry_ms))
        self._retry()

    def _pub_up(self, conn) -> None:
        if self.closed:
            conn.close()
            return
        self.pub = conn
        self._pub_parser = RespParser()
        self._unreachable.settle()
        self._dropped.settle()
        if self.pending:
            conn.write(b"".join(self.pending))
            self.pending = []
            self.pending_bytes = 0

    def _pub_data(self, conn, data) -> None:
        for reply in self._pub_parser.feed(data):  # integer replies (receiver counts); log errors
            if isinstance(reply, Exception):
                self._pub_failed.hit(self.loop.now_ms(), str(reply))
            elif self._pub_failed.count:
                self._pub_failed.settle()

    def _pub_down(self, conn, exc) -> None:
        self.pub = None
        self._retry()

    def _sub_up(self, conn) -> None:
        if self.closed:
            conn.close()
            return
        self.sub = conn
        self._sub_parser = RespParser()
        conn.write(resp_command("PSUBSCRIBE", self.prefix + "*"))

    def _sub_down(self, conn, exc) -> None:
        self.sub = None
        self.subscribed = False
        self._retry()

    def _sub_data(self, conn, data) -> None:
        for reply in self._sub_parser.feed(data):
            if isinstance(reply, Exception):
                # e.g. NOAUTH: no message would ever come; close, and the retry tries again
                self._sub_failed.hit(self.loop.now_ms(), "%s (reconnecting in %d ms)" % (reply, self.retry_ms))
                conn.close()
                return
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind == b"psubscribe":
                self.subscribed = True
                self._sub_failed.settle()
            elif kind == b"pmessage" and len(reply) == 4:
                self._relay(reply[2], reply[3])

    def _relay(self, channel: bytes, payload: bytes) -> None:
        if len(payload) < 9 or payload[:8] == self.origin:
            return  # ours: delivered locally already
        topic = channel[len(self.prefix):].decode("utf-8", "replace")
        body = payload[9:]
        message: Any = body.decode("utf-8", "replace") if payload[8:9] == b"t" else body
        self.hub.publish_local(topic, message)

    def publish(self, topic: str, message) -> None:
        """PUBLISH once (queued, bounded, while the connection is not up)."""
        if isinstance(message, str):
            body = self.origin + b"t" + message.encode("utf-8")
        else:
            body = self.origin + b"b" + bytes(message)
        cmd = resp_command("PUBLISH", self.prefix + topic, body)
        pub = self.pub
        if pub is not None and not pub.closed:
            if pub.queued_bytes + len(cmd) <= MAX_PENDING_BYTES or not pub.queued_bytes:
                if self._stalled.count:
                    self._stalled.settle()
                pub.write(cmd)
            else:
                self._stalled.hit(self.loop.now_ms(), "to %r" % (topic,))
        elif len(self.pending) < MAX_PENDING and self.pending_bytes + len(cmd) <= MAX_PENDING_BYTES:
            self.pending.append(cmd)
            self.pending_bytes += len(cmd)
        else:
            self._dropped.hit(self.loop.now_ms(), "to %r" % (topic,))

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self.loop.cancel_timer(self._timer)
            self._timer = None
        for c in (self.pub, self.sub):
            if c is not None:
                c.close()
        self.pub = self.sub = None
