"""What a handler's answer puts on the wire: its status, its Content-Type, its header values."""
import http.client
import socket
from http import HTTPStatus

import pytest

from powpow.http import response as response_mod
from ._http import raw, serving, split_responses


def _head_lines(head: bytes):
    return head.split(b"\r\n")


# -- the status must be a final one --------------------------------------------------


BAD_STATUSES = [99, 1000, 100, 101, 103, 199, -200, True]
CASES = ([(s, how) for s in BAD_STATUSES for how in ("send", "set_status", "write", "assigned")]
         + [(s, how) for s in ("201", 201.5) for how in ("send", "write", "assigned")])  # (set_status: int())


@pytest.mark.parametrize("status,how", CASES)
def test_a_status_that_is_not_final_is_a_handler_error_answered_500(status, how):
    """RFC 9110 §15: a final status has three digits, 200 to 999; a 1xx is interim.
    send(status=103) went out as the final answer (the client then waits for the real
    one: a hung connection); 99 or 1000 raised after the head was marked sent, so the
    client got no 500, just a dropped connection."""
    def handler(req, res):
        if how == "send":
            res.send(b"x", status=status)
        elif how == "set_status":
            res.set_status(status)
            res.send(b"x")
        elif how == "write":
            res.status = status
            res.write(b"x")
            res.end()
        else:
            res.status = status
            res.send(b"x")

    with serving(handler) as srv:
        data = raw(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
    answers = split_responses(data)
    assert len(answers) == 1, data
    head, body = answers[0]
    assert head.startswith(b"HTTP/1.1 500 ") and b"Connection: close" in head
    assert body == b"500 Internal Server Error\n"


@pytest.mark.parametrize("status", [100, 101, 103, 99, 1000])
def test_set_status_and_send_refuse_an_interim_status_at_the_call(status):
    """The ValueError comes at the call, before anything changed: the handler can
    still answer."""
    seen = []

    def handler(req, res):
        for call in (lambda: res.set_status(status), lambda: res.send(b"x", status=status)):
            try:
                call()
            except ValueError as exc:
                seen.append(str(exc))
        res.send(b"fine", status=202)

    with serving(handler) as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=3)
        c.request("GET", "/")
        r = c.getresponse()
        assert r.status == 202 and r.read() == b"fine"
        c.close()
    assert len(seen) == 2
    if 100 <= status < 200:
        assert all("send_early_hints()" in m and "upgrade()" in m for m in seen)


def test_valid_statuses_still_go_out():
    def handler(req, res):
        code = int(req.path[1:])
        if code == 299:
            res.set_status(HTTPStatus.CREATED)  # an IntEnum is an int
            res.status = code
        res.send(b"", status=HTTPStatus(code) if code in (204, 404) else code)

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as s:
            for code in (200, 204, 299, 404, 599, 999):
                s.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % code)
                got = b""
                while b"\r\n\r\n" not in got:
                    got += s.recv(4096)
                assert got.startswith(b"HTTP/1.1 %d " % code)


# -- json(): one Content-Type ------------------------------------------------------------


@pytest.mark.parametrize("how", ["mapping", "pairs", "set_header", "lowercase"])
def test_json_keeps_the_callers_content_type_and_writes_one(how):
    """res.json() wrote its own Content-Type and the caller's: two of them."""
    def handler(req, res):
        if how == "mapping":
            res.json({"error": "bad"}, status=400, headers={"Content-Type": "application/problem+json"})
        elif how == "pairs":
            res.json({"error": "bad"}, status=400, headers=[("Content-Type", "application/problem+json"),
                                                             ("X-A", "1")])
        elif how == "set_header":
            res.set_header("Content-Type", "application/problem+json")
            res.json({"error": "bad"}, status=400)
        else:
            res.json({"error": "bad"}, status=400, headers={"content-type": "application/problem+json"})

    with serving(handler) as srv:
        data = raw(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, body = split_responses(data)[0]
    types = [line for line in _head_lines(head) if line.lower().startswith(b"content-type:")]
    assert types == [types[0]] and types[0].split(b":", 1)[1].strip() == b"application/problem+json"
    assert body == b'{"error":"bad"}'


def test_json_without_a_content_type_still_says_application_json():
    def handler(req, res):
        res.json([1], headers={"X-A": "1"} if req.path == "/h" else None)

    with serving(handler) as srv:
        for path in (b"/", b"/h"):
            data = raw(srv.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
            head, body = split_responses(data)[0]
            assert head.count(b"Content-Type") == 1 and b"Content-Type: application/json\r\n" in head
            assert body == b"[1]"


# -- the header-block cache tells equal values of different types apart ---------------------


@pytest.mark.parametrize("status", [200, 201])  # the plain-head fast path, and the general one
def test_header_values_that_compare_equal_are_written_as_given(status):
    """("X-Flag", True) then ("X-Flag", 1): equal tuples, one cache entry, and the
    second answer said "True"; 2.0 then 2 said "2.0" twice."""
    values = [True, 1, 2.0, 2, 1.0, False, 0]

    def handler(req, res):
        v = values[int(req.path[1:])]
        res.send(b"x", status=status, headers=[("X-Value", v)])

    with serving(handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as s:
            s.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(len(values)))
                      + b"GET /0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
    got = [next(line for line in _head_lines(h) if line.startswith(b"X-Value:")) for h, _ in split_responses(data)]
    assert got == [b"X-Value: %s" % str(v).encode() for v in values + [values[0]]]
    # str pairs are still remembered (the common case costs no more); the others never
    assert not any(v is not None and not isinstance(v, str)
                   for key in response_mod._header_blocks for _, v in key)


def test_str_header_lists_are_still_cached():
    def handler(req, res):
        res.send(b"x", headers=[("X-Cached-Test", "yes")])

    with serving(handler) as srv:
        raw(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (("X-Cached-Test", "yes"),) in response_mod._header_blocks
