"""HttpServer: open files per connection are bounded, and an answer cut short never
looks complete.

1. A client that pipelines GETs of static files and reads nothing pinned one open
   descriptor per queued answer (~63 a connection: 16 such clients used up a
   1024-descriptor limit, then every client got 503 or nothing).  Now the next
   request waits while ``max_queued_files`` files are queued; everything still
   arrives, intact and in order, once the client reads.
2. An answer whose handler failed after its head went out ended with an orderly
   close (FIN, TLS close_notify): with a close-delimited body (an HTTP/1.0
   client) the client could not tell it was cut (RFC 9112 §9.8; nginx with
   ``proxy_http_version 1.0`` cached it as complete).  Now it ends with a reset,
   after the complete answers before it were delivered.  (Chunked, the last chunk
   is missing; a Content-Length is not reached: those tell, and close as before.)
3. A WSGI app reading ``wsgi.input`` whose body the server cut (413, 400, 408) is
   told why, not "the client went away".
"""
import errno
import os
import socket
import ssl
import threading
import time

import pytest

from powpow.http import serve_static
from powpow.http._session import MAX_QUEUED_FILES
from ._http import on_loop, read_answers, serving, wait_quiet
from ._wsgi import read_until_close, wsgi_server

FILE_SIZE = 128 << 10  # more than a stalled client's socket buffers take at once
FILES = 8
CONNS = 8
GETS = 64  # a connection's pipeline (max_pipeline_depth)


def _files(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    bodies = []
    for i in range(FILES):
        body = (b"file %d " % i).ljust(FILE_SIZE, b"abcdefgh"[i:i + 1])
        (root / ("f%d.bin" % i)).write_bytes(body)
        bodies.append(body)
    return str(root), bodies


def _open_files_under(root: str) -> int:
    """Descriptors of this process (the server runs in it) open on files under ``root``."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd).startswith(root):
                n += 1
        except OSError:
            pass  # closed meanwhile
    return n


def _static(root):
    def handler(req, res):
        if not serve_static(req, res, root):
            res.send_error(404)
    return handler


# -- 1. open files per connection ---------------------------------------------------------

MODES = {
    "buffered": lambda certs: {},
    "streaming": lambda certs: {"streaming": True},
    "tls": lambda certs: {"ssl": certs.server_ctx()},
}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_non_reading_pipelining_clients_hold_a_few_open_files_each(tmp_path, certs, mode):
    """8 connections pipeline 64 GETs of static files each and read nothing: the
    server holds at most ``max_queued_files`` of those files open per connection
    (it held ~63: with a 1024-descriptor limit 16 such clients starved everyone);
    then each client reads all its answers, intact and in request order."""
    root, bodies = _files(tmp_path)
    tls = mode == "tls"
    with serving(_static(root), **MODES[mode](certs)) as srv:
        clients = []
        try:
            for _ in range(CONNS):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect(("127.0.0.1", srv.port))
                if tls:
                    s = certs.client_ctx().wrap_socket(s, server_hostname="localhost")
                s.sendall(b"".join(b"GET /f%d.bin HTTP/1.1\r\nHost: x\r\n\r\n" % (i % FILES)
                                   for i in range(GETS)))
                clients.append(s)
            held = wait_quiet(lambda: _open_files_under(root))
            assert 0 < held <= CONNS * MAX_QUEUED_FILES, \
                "%d files open for %d clients that read nothing" % (held, CONNS)
            assert on_loop(srv, lambda: srv.connection_count) == CONNS  # nobody was cut off
            for s in clients:
                got = read_answers(s, GETS)
                for i, (head, body) in enumerate(got):
                    assert head.startswith(b"HTTP/1.1 200 "), head
                    assert body == bodies[i % FILES], i
        finally:
            for s in clients:
                s.close()
        assert wait_quiet(lambda: _open_files_under(root), quiet=0.1) == 0


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
@pytest.mark.parametrize("streaming", [False, True], ids=["buffered", "streaming"])
def test_file_answers_behind_an_unfinished_one_hold_a_few_open_files(tmp_path, streaming):
    """GETs of static files pipelined behind an answer still being made (a slow
    handler): their answers wait for it with their files open -- at most
    ``max_queued_files`` of them, the requests after wait unread.  Once the slow
    answer ends, every answer arrives in order."""
    root, bodies = _files(tmp_path)
    slow = []
    static = _static(root)

    def handler(req, res):
        if req.path == "/slow":
            slow.append(res)  # ended later, from the test
        else:
            static(req, res)

    with serving(handler, streaming=streaming) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + b"".join(
                b"GET /f%d.bin HTTP/1.1\r\nHost: x\r\n\r\n" % (i % FILES) for i in range(GETS - 1)))
            held = wait_quiet(lambda: _open_files_under(root))
            assert 0 < held <= MAX_QUEUED_FILES, "%d files open behind one unfinished answer" % held
            on_loop(srv, lambda: slow[0].send(b"slow"))
            got = read_answers(s, GETS)
    assert got[0][1] == b"slow"
    for i, (head, body) in enumerate(got[1:]):
        assert head.startswith(b"HTTP/1.1 200 ") and body == bodies[i % FILES], i


def test_a_multi_range_answer_with_more_parts_than_the_bound_goes_out_whole(tmp_path):
    """One answer with more file parts than ``max_queued_files`` (a multipart/byteranges
    of 6 ranges) is not held back by the bound -- it holds the *next* request only --
    and the GET pipelined behind it is answered too."""
    root, bodies = _files(tmp_path)
    ranges = [(i * 1000, i * 1000 + 9) for i in range(MAX_QUEUED_FILES + 2)]
    with serving(_static(root)) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /f1.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=%s\r\n\r\n"
                      % ",".join("%d-%d" % r for r in ranges).encode()
                      + b"GET /f2.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            (head1, body1), (head2, body2) = read_answers(s, 2)
    assert head1.startswith(b"HTTP/1.1 206 ") and b"multipart/byteranges" in head1, head1
    for a, b in ranges:
        assert b"Content-Range: bytes %d-%d/%d\r\n\r\n" % (a, b, FILE_SIZE) + bodies[1][a:b + 1] in body1
    assert head2.startswith(b"HTTP/1.1 200 ") and body2 == bodies[2]


def test_max_queued_files_is_checked():
    from powpow.http import HttpServer
    with pytest.raises(ValueError, match="max_queued_files"):
        HttpServer(lambda req, res: None, max_queued_files=0)


# -- 2. an answer cut short ends with a reset -----------------------------------------------

BIG = 2 << 20  # a complete answer before the cut one: still in the buffers when it is cut


def _cutting_handler(req, res):
    if req.path == "/big":
        res.send(b"B" * BIG)
    elif req.path == "/close-delimited":  # HTTP/1.0: no chunked, the close ends the body
        res.write(b"first half of the report ")
        raise RuntimeError("database went away")
    elif req.path == "/short":
        res.set_length(1000)
        res.write(b"first half of the report ")
        raise RuntimeError("database went away")
    elif req.path == "/chunked":
        res.write(b"first half of the report ")
        raise RuntimeError("database went away")
    else:
        res.send_error(404)


def _slow_connect(port, tls_ctx=None):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # /big waits in the server's buffers
    s.connect(("127.0.0.1", port))
    if tls_ctx is not None:
        s = tls_ctx.wrap_socket(s, server_hostname="localhost", suppress_ragged_eofs=False)
    return s


def _read_to_the_end(s, timeout=5.0):
    """Everything until the connection ends; (bytes, how it ended)."""
    s.settimeout(timeout)
    data = bytearray()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            b = s.recv(1 << 20)
        except ConnectionResetError:
            return bytes(data), "reset"
        except ssl.SSLEOFError:
            return bytes(data), "eof without close_notify"
        except socket.timeout:
            break
        if not b:
            return bytes(data), "clean close"  # FIN; over TLS: close_notify
        data += b
    return bytes(data), "timeout"


CUTS = {
    # path, request version, what the client reads of the cut answer's framing, how it may end
    "close-delimited": ("/close-delimited", b"1.0", b"Connection: close\r\n",
                        ("reset", "eof without close_notify")),
    # the length tells the client: an orderly close, as before (a reset would do too)
    "short-content-length": ("/short", b"1.1", b"Content-Length: 1000\r\n",
                             ("clean close", "reset", "eof without close_notify")),
}


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("case", sorted(CUTS))
def test_an_answer_cut_by_a_handler_error_never_looks_complete(certs, case, tls):
    """A complete 2 MiB answer, then one whose handler raises after writing part of
    its body: the client reads the first whole, then the cut one's head and part.
    Close-delimited, the end is a reset (TCP RST; over TLS no close_notify) -- not a
    FIN / close_notify, which says the body is complete."""
    path, version, framing, endings = CUTS[case]
    with serving(_cutting_handler, ssl=certs.server_ctx() if tls else None) as srv:
        s = _slow_connect(srv.port, certs.client_ctx() if tls else None)
        try:
            s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET %s HTTP/%s\r\nHost: x\r\n\r\n" % (path.encode(),
                                                                                                 version))
            time.sleep(0.3)  # the client reads late: /big waits in the server's buffers when the cut comes
            data, how = _read_to_the_end(s)
        finally:
            s.close()
    head1, _, rest = data.partition(b"\r\n\r\n")
    assert head1.startswith(b"HTTP/1.1 200 ") and b"Content-Length: %d\r\n" % BIG in head1 + b"\r\n", head1
    assert rest[:BIG] == b"B" * BIG  # the answer before the cut one arrived whole
    head2, _, body2 = rest[BIG:].partition(b"\r\n\r\n")
    assert head2.startswith(b"HTTP/1.1 200 ") and framing in head2 + b"\r\n", head2
    assert body2 == b"first half of the report "
    assert how in (endings if tls else [e for e in endings if e != "eof without close_notify"]), how


def test_a_cut_answer_to_a_half_closing_http10_client_ends_with_a_reset():
    """An HTTP/1.0 client that half-closes after its request (reads until EOF): the
    cut close-delimited answer still ends with a reset, never the FIN it waits for."""
    with serving(_cutting_handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /close-delimited HTTP/1.0\r\n\r\n")
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError as exc:
                # the answer and its reset came before the half-close (a fast server):
                # the socket is closed already, what it received still readable
                assert exc.errno == errno.ENOTCONN, exc
            data, how = _read_to_the_end(s)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nfirst half of the report "), data
    assert how == "reset", how


def test_a_cut_chunked_answer_lacks_its_last_chunk_and_closes():
    """Chunked, the missing last chunk tells the client the body is cut."""
    with serving(_cutting_handler) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            data, how = _read_to_the_end(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked\r\n" in head + b"\r\n", head
    assert body == b"19\r\nfirst half of the report \r\n"  # no 0\r\n\r\n, and /big never ran
    assert how in ("clean close", "reset"), how


def test_a_body_that_fails_under_a_close_delimited_answer_ends_with_a_reset():
    """Streaming mode: the handler answers an HTTP/1.0 POST (close-delimited) while
    its body arrives; the body then stalls past body_timeout.  The answer's head went
    out, so the 408 cannot be sent: the cut answer ends with a reset, not a FIN."""
    started = threading.Event()

    def handler(req, res):
        res.write(b"started ")
        started.set()

    with serving(handler, streaming=True, body_timeout=0.3) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"POST /up HTTP/1.0\r\nContent-Length: 100\r\n\r\nhello")
            assert started.wait(2)
            data, how = _read_to_the_end(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"started ", data
    assert how == "reset", how


# -- 3. wsgi.input says why the body ended ---------------------------------------------

WSGI_CUTS = {
    # what the client sends after the first chunk, server options, the status
    "past-max-body": (b"10000\r\n" + b"c" * 0x10000 + b"\r\n", {"max_body": 1 << 16}, 413),
    "bad-chunk": (b"ZZZ\r\n", {}, 400),
    "body-deadline": (b"", {"body_timeout": 0.3}, 408),
}


@pytest.mark.parametrize("case", sorted(WSGI_CUTS))
def test_wsgi_input_names_why_the_server_cut_the_body(case):
    rest, options, status = WSGI_CUTS[case]
    errors = []
    reading = threading.Event()
    done = threading.Event()

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        try:
            inp.read(5)
            reading.set()
            inp.read()
        except OSError as exc:
            errors.append(exc)
            raise
        finally:
            done.set()
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    with wsgi_server(app, **options) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            assert reading.wait(2)
            if rest:
                s.sendall(rest)
            answer = read_until_close(s, 5)
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
        assert done.wait(2)
    assert len(errors) == 1, errors
    message = str(errors[0])
    assert "went away" not in message and str(status) in message, message
    assert errors[0].status == status


# -- serve raises the soft open-file limit ------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/proc/self/limits"), reason="reads /proc/<pid>/limits")
def test_serve_raises_the_soft_open_file_limit_to_the_hard_one(tmp_path):
    """``python -m powpow serve`` starts with the soft RLIMIT_NOFILE raised to the hard
    limit (nginx's worker_rlimit_nofile): the common soft 1024 is a few hundred busy
    connections of a file server."""
    import resource
    import subprocess
    import sys

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 64:
        pytest.skip("hard limit %r: nothing to raise to" % (hard,))
    low = min(soft, hard, 256) - 1

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    proc = subprocess.Popen([sys.executable, "-m", "powpow", "serve", str(tmp_path), "--port", "0",
                             "--host", "127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lower)
    try:
        line = proc.stdout.readline()
        assert "powpow serving" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        with open("/proc/%d/limits" % proc.pid) as f:
            limits = [ln for ln in f if ln.startswith("Max open files")][0].split()
        assert (int(limits[3]), int(limits[4])) == (hard, hard), limits
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
