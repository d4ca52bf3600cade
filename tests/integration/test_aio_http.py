"""``async def`` handlers on HttpServer (powpow.aio): body, streaming with backpressure,
a disconnect cancelling the handler, errors answered 500; callback handlers unchanged."""
import asyncio
import contextvars
import hashlib
import http.client
import os
import socket
import time

import pytest

import powpow.aio
from powpow import HttpServer
from powpow.http._async import AsyncHandler


def _get(port, method="GET", path="/", body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def _serve(handler, client, **kw):
    """Run an HttpServer with ``handler`` on powpow.aio; ``client(port)`` runs in a thread."""
    async def main():
        srv = HttpServer(handler, asyncio.get_running_loop(), **kw).listen(0, "127.0.0.1")
        try:
            port = srv.port
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, client, port), 8)
        finally:
            srv.close()
    return powpow.aio.run(main())


def test_async_handler_body_and_await():
    async def handler(req, res):
        body = await req.read()
        await asyncio.sleep(0.01)
        res.send(b"got " + body)

    assert _serve(handler, lambda p: _get(p, "POST", "/", b"abc")) == (200, b"got abc")


def test_async_streaming_write_and_drain():
    async def handler(req, res):
        for i in range(200):
            assert await res.write(b"%05d" % i + b"x" * 20000)
        await res.drain()
        res.end()

    status, body = _serve(handler, _get)
    assert status == 200 and len(body) == 200 * 20005 and body.startswith(b"00000")


def test_async_handler_returning_without_end():
    async def handler(req, res):
        res.set_header("X-A", "1")

    assert _serve(handler, _get)[0] == 200


def test_async_handler_error_is_500(caplog):
    async def handler(req, res):
        await asyncio.sleep(0)
        raise ValueError("oops")

    assert _serve(handler, _get)[0] == 500


def test_disconnect_cancels_task():
    state = {}

    async def handler(req, res):
        if req.path == "/done":
            res.send(repr(state.get("cancelled")).encode())
            return
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    def client(port):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        import time
        time.sleep(0.1)
        import struct
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST: the client is gone (a FIN alone is a half-close the server waits out)
        for _ in range(50):
            st, body = _get(port, path="/done")
            if body == b"True":
                return body
            time.sleep(0.05)
        return body

    assert _serve(handler, client) == b"True"


@pytest.mark.parametrize("writes_per_tick", [1, 3])
def test_a_client_that_closes_cancels_a_streaming_handler_at_its_next_write(writes_per_tick):
    """A client that closes (a FIN, as a browser leaving an event stream) while the handler
    streams: the chunk sent after the FIN brings back the peer's reset, and the handler's task
    is cancelled -- ``CancelledError``, as documented, one tick later at most.  It was: the
    reset after the FIN went unseen (the read said EOF again), the loss showed only when a
    later send failed, and the handler got ``ConnectionResetError`` from ``write``."""
    seen = []
    started = []
    tick = 0.3

    async def handler(req, res):
        res.set_header("Content-Type", "text/event-stream")
        try:
            for i in range(50):
                for _ in range(writes_per_tick):
                    await res.write("data: tick %d\n\n" % i)
                await asyncio.sleep(tick)
            res.end()
        except BaseException as exc:
            seen.append((type(exc).__name__, time.monotonic() - started[0]))
            raise

    def client(port):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
        started.append(time.monotonic())
        s.close()  # FIN (nothing unread: no reset from the close itself)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)

    _serve(handler, client)
    assert len(seen) == 1, seen
    name, after = seen[0]
    assert name == "CancelledError", seen
    assert after < 2 * tick + 0.4, seen  # the first write after the FIN, not one after it


def test_callback_handler_has_no_task():
    def handler(req, res):
        res.send(b"plain")

    srv = HttpServer(handler)
    assert srv.handler is handler and not isinstance(srv.handler, AsyncHandler)
    assert _serve(handler, _get) == (200, b"plain")


def test_async_handler_needs_powpow_loop():
    async def handler(req, res):
        pass

    with pytest.raises(TypeError, match="powpow.aio"):
        HttpServer(handler)


def test_server_sent_events_stream():
    async def events(req, res):
        res.set_header("Content-Type", "text/event-stream")
        for i in range(3):
            await res.write("data: tick %d\n\n" % i)
            await asyncio.sleep(0.01)
        res.end()

    status, body = _serve(events, _get)
    assert status == 200 and body == b"data: tick 0\n\ndata: tick 1\n\ndata: tick 2\n\n"


def test_powpow_aio_lazy_attribute():
    import powpow
    assert powpow.aio.new_event_loop is powpow.aio.new_event_loop
    with pytest.raises(AttributeError):
        powpow.__getattr__("no_such_name")


def test_async_handler_raising_after_its_answer_went_out_closes_the_connection():
    """Issue 13 dropped an answered request's link to its Response: a handler that
    fails after its answer went out still closes the connection.  It is closed at once
    (FIN after what is queued), not left open until a next request that may never come:
    that connection used to be exempt from keepalive_timeout, held forever."""
    answered = []

    async def handler(req, res):
        res.send(b"ok")
        await asyncio.sleep(0.05)  # the answer is flushed meanwhile
        if req.path == "/fail":
            answered.append(req.response)
            raise RuntimeError("late failure")

    def client(port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /fail HTTP/1.1\r\nHost: a\r\n\r\n")
            data = b""
            t0 = time.monotonic()
            while True:
                got = s.recv(65536)
                if not got:
                    return data, time.monotonic() - t0  # closed by the server
                data += got

    out, took = _serve(handler, client)
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"ok") and out.count(b"HTTP/1.1") == 1
    assert took < 3, took
    assert answered == [None]


def _raw(port, data, pause_after=None, rest=b"", timeout=5):
    """Send ``data`` (then, after ``pause_after`` s, ``rest``) and read until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if pause_after is not None:
            time.sleep(pause_after)
            s.sendall(rest)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b
    finally:
        s.close()


@pytest.mark.parametrize("size", [5, 300000])
@pytest.mark.parametrize("how", ["on_body", "stream_to_file"])
def test_streaming_async_handler_gets_the_body_that_came_with_the_head(tmp_path, how, size):
    """Regression: streaming mode, an ``async def`` handler: its task runs after the head,
    and the body bytes that came with it (or before its first step) were dropped by
    ``on_body``/``stream_to_file``, and ``on_end`` never ran when the body was complete
    by then (a 20 MiB upload reached the handler short, answered 200)."""
    body = os.urandom(size)
    path = str(tmp_path / "upload")

    async def handler(req, res):
        got = []
        ended = asyncio.get_running_loop().create_future()
        if how == "on_body":
            req.on_body(got.append)
        else:
            req.stream_to_file(path)
        req.on_end(lambda: ended.set_result(None))
        await asyncio.wait_for(ended, 4)
        data = b"".join(got) if how == "on_body" else open(path, "rb").read()
        res.send(b"%d %s" % (len(data), hashlib.sha1(data).hexdigest().encode()))

    head = b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % size
    out = _serve(handler, lambda p: _raw(p, head + body), streaming=True)
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]
    assert out.endswith(b"%d %s" % (size, hashlib.sha1(body).hexdigest().encode())), out[-120:]


def test_streaming_async_read_waits_for_the_whole_body():
    """Regression: ``await req.read()`` in streaming mode returned the body as it stood
    (here: nothing yet), answered 200 on a truncated upload."""
    body = os.urandom(100000)

    async def handler(req, res):
        data = await req.read()
        res.send(b"%d %s" % (len(data), hashlib.sha1(data).hexdigest().encode()))

    head = b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    out = _serve(handler, lambda p: _raw(p, head + body[:1000], 0.3, body[1000:]), streaming=True)
    assert out.endswith(b"100000 " + hashlib.sha1(body).hexdigest().encode()), out[-120:]


def test_a_handler_cancelled_by_someone_else_is_answered_500_not_left_hanging():
    """Regression: a handler that ended with a ``CancelledError`` it did not cause (a
    shared task it awaited was cancelled; its client still connected) left the request
    unanswered for good: no log, no 500, no close."""
    async def handler(req, res):
        if req.path == "/ok":
            res.send(b"ok")
            return
        other = asyncio.ensure_future(asyncio.sleep(30))
        asyncio.get_running_loop().call_later(0.05, other.cancel)
        await other  # raises CancelledError: not the client's doing

    def client(port):
        return _raw(port, b"GET /cancel HTTP/1.1\r\nHost: x\r\n\r\n"), _get(port, path="/ok")

    (answer, ok) = _serve(handler, client)
    assert answer.startswith(b"HTTP/1.1 500 "), answer[:200]
    assert ok == (200, b"ok")


def test_async_handler_tasks_run_in_the_context_the_server_was_made_in():
    """Like asyncio's start_server callbacks: a ContextVar set before the server was made
    is seen by the handlers (it was unset: the poller's dispatch has no context), and a
    value a handler sets does not leak into the next request's handler."""
    var = contextvars.ContextVar("var", default="unset")

    async def handler(req, res):
        seen = var.get()
        var.set("set by " + req.path)
        res.send(seen.encode())

    async def main():
        var.set("main")
        srv = HttpServer(handler, asyncio.get_running_loop()).listen(0, "127.0.0.1")
        try:
            loop = asyncio.get_running_loop()
            return [await loop.run_in_executor(None, _get, srv.port, "GET", p) for p in ("/a", "/b")]
        finally:
            srv.close()

    assert powpow.aio.run(main()) == [(200, b"main"), (200, b"main")]


def test_a_plain_handler_server_made_inside_powpow_aio_serves_on_that_loop():
    """Regression: a plain-function handler's HttpServer made inside ``powpow.aio.run()``
    without ``loop=`` built a Loop of its own that never ran there: every client hung,
    silently (async handlers already took the running loop)."""
    def handler(req, res):
        res.send(b"plain " + req.path.encode())

    async def main():
        srv = HttpServer(handler).listen(0, "127.0.0.1")
        try:
            assert srv.loop is asyncio.get_running_loop()._pl
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, _get, srv.port), 5)
        finally:
            srv.close()

    assert powpow.aio.run(main()) == (200, b"plain /")
