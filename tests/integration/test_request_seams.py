"""Request-side seams: req.loop, req.on_disconnect (long polling), req.pause_body/resume_body."""
import socket
import time

from ._http import serving


def test_long_poll_learns_the_client_left_through_req_on_disconnect():
    events = []

    def handler(req, res):
        assert req.loop is res.loop and req.loop is not None
        req.on_disconnect(lambda: events.append("gone"))
        # a long poll: no answer until something happens (here: never)

    # After the client's FIN an answer still being made gets keepalive_timeout to
    # arrive (a half-closed client may still read it); then the handler is told.
    with serving(handler, keepalive_timeout=0.5) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
            deadline = time.monotonic() + 5
            while srv.connection_count == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events == ["gone"]


def test_req_pause_body_stops_reading_a_streaming_body():
    got = []
    state = {}

    def handler(req, res):
        state["req"] = req

        def on_body(chunk):
            got.append(len(chunk))
            if sum(got) >= 1000 and "paused" not in state:
                state["paused"] = sum(got)
                req.pause_body()
                req.loop.add_timer(300, resume)

        def resume():
            state["before_resume"] = sum(got)
            req.resume_body()

        req.on_body(on_body)
        req.on_end(lambda: res.send(b"%d" % sum(got)))

    body = b"x" * 200000
    with serving(handler, streaming=True) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
            s.sendall(body)
            s.settimeout(5)
            data = b""
            while not data.endswith(b"200000"):
                chunk = s.recv(65536)
                assert chunk
                data += chunk
    # nothing arrived between the pause and the resume
    assert state["before_resume"] == state["paused"]
    assert sum(got) == len(body)
