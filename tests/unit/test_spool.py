"""powpow.http._body.SpooledBody: bodies past the threshold go to an unnamed
temporary file, which its owner closes (issue 8 item 18)."""
import os
import stat

from powpow.http import RequestParser
from powpow.http._body import SpooledBody, open_spool_file


def nfds():
    return len(os.listdir("/proc/self/fd"))


def test_spool_file_is_unnamed_private_and_closed(tmp_path):
    before = nfds()
    body = SpooledBody(1000, str(tmp_path))
    body.write(b"a" * 600)
    assert body.file is None and nfds() == before  # still in memory
    body.write(b"b" * 600)
    assert body.file is not None and nfds() == before + 1
    assert os.listdir(str(tmp_path)) == []  # no name in the directory, ever
    st = os.fstat(body.file.fileno())
    assert st.st_nlink == 0 and stat.S_IMODE(st.st_mode) == 0o600
    body.write(b"c" * 5000)
    data, f = body.finish()
    assert data == b"" and body.file is None  # the file is now the caller's
    assert f.read() == b"a" * 600 + b"b" * 600 + b"c" * 5000
    body.close()
    assert nfds() == before + 1
    f.close()
    assert nfds() == before
    assert os.listdir(str(tmp_path)) == []


def test_close_is_idempotent_and_drops_everything(tmp_path):
    before = nfds()
    with SpooledBody(10, str(tmp_path)) as body:
        body.write(b"x" * 100)
        assert nfds() == before + 1
    assert nfds() == before and body.file is None
    body.close()
    body.discard()
    small = SpooledBody(1000, str(tmp_path))
    small.write(b"abc")
    small.close()
    assert small.finish() == (b"", None)


def test_open_spool_file_has_no_name(tmp_path):
    f = open_spool_file(str(tmp_path))
    try:
        assert os.listdir(str(tmp_path)) == []
        assert os.fstat(f.fileno()).st_nlink == 0
    finally:
        f.close()


def test_request_body_spooled_by_the_parser_is_unnamed_and_closed_by_request_close(tmp_path):
    before = nfds()
    p = RequestParser(spool_threshold=1024, spool_dir=str(tmp_path))
    body = b"z" * 100_000
    head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    done = p.feed(head + body[:50_000])
    assert done == [] and os.listdir(str(tmp_path)) == []
    [req] = p.feed(body[50_000:])
    assert os.listdir(str(tmp_path)) == []
    assert req.body_file is not None and os.fstat(req.body_file.fileno()).st_nlink == 0
    assert req.body == body
    req.close()
    assert nfds() == before
