"""powpow.http.multipart: streaming form-data parsing, limits, safe filenames."""
import os
import stat

import pytest

from powpow.http import ParseError, RequestParser
from powpow.http.multipart import (
    MultipartParser,
    boundary_from_content_type,
    parse_options_header,
    safe_filename,
)

B = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"


def part(headers, data):
    return b"--" + B + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n"


BODY = (
    b"preamble to ignore\r\n"
    + part(b'Content-Disposition: form-data; name="title"', b"hello")
    + part(b'Content-Disposition: form-data; name="f1"; filename="a.txt"\r\nContent-Type: text/plain',
           b"first file\r\nwith CRLF and --" + B[:-1])
    + part(b'Content-Disposition: form-data; name="f2"; filename="../../etc/passwd"\r\n'
           b"Content-Type: application/octet-stream", bytes(range(256)) * 4)
    + part(b'Content-Disposition: form-data; name="f3"; filename*=UTF-8\'\'caf%C3%A9.png',
           b"\x89PNG")
    + b"--" + B + b"--\r\nepilogue"
)


def parse(body, step=None, **kw):
    m = MultipartParser(B, **kw)
    parts = []
    step = step or len(body)
    for i in range(0, len(body), step):
        parts += m.feed(body[i:i + step])
    m.close()
    return parts


def describe(parts):
    return [(p.name, p.filename, p.raw_filename, p.content_type, p.size,
             p.value if p.file is None else p.file.read()) for p in parts]


def test_several_files_and_fields_any_split():
    expected = describe(parse(BODY))
    assert [d[0] for d in expected] == ["title", "f1", "f2", "f3"]
    assert expected[0][5] == b"hello" and expected[0][1] is None
    assert expected[1][5] == b"first file\r\nwith CRLF and --" + B[:-1]
    assert expected[2][1] == "passwd" and expected[2][5] == bytes(range(256)) * 4
    assert expected[3][1] == "café.png"
    for step in (1, 2, 3, 7, 64, 1000):
        assert describe(parse(BODY, step)) == expected


def test_large_file_spools_to_private_unnamed_temp_file(tmp_path):
    m = MultipartParser(B, spool_threshold=512, spool_dir=str(tmp_path))
    parts = []
    for i in range(0, len(BODY), 100):
        parts += m.feed(BODY[i:i + 100])
        assert os.listdir(str(tmp_path)) == []  # never a name in the spool directory
    m.close()
    f2 = parts[2]
    assert f2.file is not None
    fd = f2.file.fileno()
    assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    assert os.fstat(fd).st_nlink == 0  # unnamed: nothing survives the process
    assert os.readlink("/proc/self/fd/%d" % fd).startswith(str(tmp_path))  # in spool_dir
    assert f2.file.read() == bytes(range(256)) * 4
    before = len(os.listdir("/proc/self/fd"))
    f2.close()
    f2.close()  # idempotent
    assert f2.file is None and len(os.listdir("/proc/self/fd")) == before - 1
    for p in parts:
        p.close()


def _file_parts(n, size):
    body = b"".join(part(b'Content-Disposition: form-data; name="f%d"; filename="f%d.bin"' % (i, i),
                         b"x" * size) for i in range(n))
    return body + b"--" + B + b"--\r\n"


def test_open_part_files_are_capped_per_body(tmp_path):
    fds = len(os.listdir("/proc/self/fd"))
    # small files stay in memory and do not count
    parts = parse(_file_parts(40, 10), spool_threshold=512, spool_dir=str(tmp_path), max_files=2)
    assert len(parts) == 40 and all(p.file is None for p in parts)
    # 16 files on disk by default are fine ...
    parts = parse(_file_parts(16, 600), spool_threshold=512, spool_dir=str(tmp_path))
    assert len(parts) == 16 and all(p.file is not None for p in parts)
    for p in parts:
        p.close()
    assert len(os.listdir("/proc/self/fd")) == fds
    # ... the 17th is a 413, and the part being filled is closed by the parser
    m = MultipartParser(B, spool_threshold=512, spool_dir=str(tmp_path))
    got = []
    with pytest.raises(ParseError) as ei:
        body = _file_parts(17, 600)
        for i in range(0, len(body), 300):
            got += m.feed(body[i:i + 300])
    assert ei.value.status == 413 and "16" in str(ei.value)
    assert len(got) == 16
    for p in got:
        p.close()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert os.listdir(str(tmp_path)) == []


def test_a_failing_body_closes_the_part_being_spooled(tmp_path):
    fds = len(os.listdir("/proc/self/fd"))
    m = MultipartParser(B, spool_threshold=512, spool_dir=str(tmp_path), max_file_size=4096)
    body = _file_parts(1, 5000)
    with pytest.raises(ParseError):
        for i in range(0, len(body), 1000):
            m.feed(body[i:i + 1000])
    assert len(os.listdir("/proc/self/fd")) == fds
    m = MultipartParser(B, spool_threshold=512, spool_dir=str(tmp_path))
    m.feed(_file_parts(1, 3000)[:-200])  # no closing delimiter
    with pytest.raises(ParseError):
        m.close()
    assert len(os.listdir("/proc/self/fd")) == fds


def test_streaming_on_data():
    seen = {}
    m = MultipartParser(B, on_part=lambda p: seen.setdefault(p.name, b""),
                        on_data=lambda p, d: seen.__setitem__(p.name, seen[p.name] + d))
    for i in range(0, len(BODY), 5):
        m.feed(BODY[i:i + 5])
    m.close()
    assert seen["f2"] == bytes(range(256)) * 4 and seen["title"] == b"hello"


def test_field_size_limit_at_and_past():
    body = part(b'Content-Disposition: form-data; name="x"', b"a" * 10) + b"--" + B + b"--"
    assert parse(body, max_field_size=10)[0].value == b"a" * 10
    with pytest.raises(ParseError) as e:
        parse(body, max_field_size=9)
    assert e.value.status == 413


def test_file_size_limit():
    with pytest.raises(ParseError) as e:
        parse(BODY, 13, max_file_size=1000)
    assert e.value.status == 413
    assert len(parse(BODY, max_file_size=1024)) == 4


def test_part_count_limit():
    assert len(parse(BODY, max_parts=4)) == 4
    with pytest.raises(ParseError) as e:
        parse(BODY, max_parts=3)
    assert e.value.status == 413


def test_part_header_limits():
    with pytest.raises(ParseError) as e:
        parse(BODY, max_part_header_size=40)
    assert e.value.status == 400
    many = part(b"Content-Disposition: form-data; name=\"x\"\r\n" + b"X-A: 1\r\n" * 5 + b"X-B: 2", b"v")
    assert len(parse(many + b"--" + B + b"--", max_part_headers=7)) == 1
    with pytest.raises(ParseError):
        parse(many + b"--" + B + b"--", max_part_headers=6)


@pytest.mark.parametrize("body", [
    part(b"Content-Type: text/plain", b"no disposition") + b"--" + B + b"--",
    part(b'Content-Disposition: attachment; name="x"', b"v") + b"--" + B + b"--",
    part(b"Content-Disposition: form-data", b"no name") + b"--" + B + b"--",
    part(b'Content-Disposition: form-data; name="x"\nBare: lf', b"v") + b"--" + B + b"--",
    part(b'Content-Disposition : form-data; name="x"', b"v") + b"--" + B + b"--",
    b"--" + B + b"junk\r\n",
    b"--" + B + b"\r\n\x00",
])
def test_malformed_parts_rejected(body):
    with pytest.raises(ParseError) as e:
        parse(body)
    assert e.value.status == 400


def test_missing_close_delimiter():
    with pytest.raises(ParseError) as e:
        parse(BODY[: BODY.index(b"--" + B + b"--")])
    assert e.value.status == 400


def test_boundary_validation():
    assert boundary_from_content_type('multipart/form-data; boundary="a b"') == b"a b"
    assert boundary_from_content_type("Multipart/Form-Data; charset=x; boundary=abc") == b"abc"
    for bad in ("multipart/form-data", "multipart/form-data; boundary=", "text/plain; boundary=a",
                "multipart/form-data; boundary=" + "a" * 71, 'multipart/form-data; boundary="ends "'):
        with pytest.raises(ParseError):
            boundary_from_content_type(bad)
    with pytest.raises(ParseError):
        MultipartParser(b"bad\x00boundary")


def test_options_header():
    assert parse_options_header('form-data; name="a\\"b"; filename="C:\\dir\\f.txt"') == (
        "form-data", {"name": 'a"b', "filename": "C:\\dir\\f.txt"})


@pytest.mark.parametrize("raw,safe", [
    ("../../etc/passwd", "passwd"), ("C:\\Users\\me\\x.png", "x.png"), ("..", "upload"),
    (".bashrc", "bashrc"), ("a\x00b\x1f.txt", "a_b_.txt"), ("con.txt", "_con.txt"),
    ("what?<>|*.txt", "what_____.txt"), ("", "upload"), ("name. . ", "name"),
    ("é" * 200 + ".jpg", "é" * 125 + ".jpg"),
])
def test_safe_filename(raw, safe):
    assert safe_filename(raw) == safe
    assert "/" not in safe and "\\" not in safe and len(safe.encode()) <= 255


def test_with_request_parser_streaming_body():
    body = BODY
    head = (b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; boundary=" + B
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
    state = {}
    parts = []

    def on_headers(req):
        state["mp"] = MultipartParser(boundary_from_content_type(req.headers["content-type"]))

    def on_body(req, chunk):
        parts.extend(state["mp"].feed(chunk))

    p = RequestParser(on_headers=on_headers, on_body=on_body, on_message_complete=lambda r: state["mp"].close())
    data = head + body
    for i in range(0, len(data), 33):
        p.feed(data[i:i + 33])
    assert [x.name for x in parts] == ["title", "f1", "f2", "f3"]


@pytest.mark.parametrize("param", [b"filename*=idna''xn--a%00", b"filename*=punycode''%FF",
                                   b"filename*=utf-16''%00", b"filename*=utf-8''%FF"])
def test_an_extended_parameter_in_a_charset_or_value_it_cannot_be_is_ignored(param):
    """Regression: ``filename*=idna''...`` raised a plain UnicodeError out of form() (a 500:
    the client picked the codec).  RFC 8187 allows UTF-8 and ISO-8859-1; anything else, or
    a value that does not decode, is ignored like any bad parameter."""
    body = part(b'Content-Disposition: form-data; name="f"; filename="plain.txt"; ' + param, b"x") \
        + b"--" + B + b"--\r\n"
    (p,) = parse(body)
    assert p.name == "f" and p.raw_filename == "plain.txt"


def test_utf8_names_and_filenames_as_browsers_send_them():
    """Regression: browsers and curl send a part's name and filename as raw UTF-8; they
    came out decoded as ISO-8859-1 ('prÃ©nom', 'rÃ©sumÃ©.pdf')."""
    body = part('Content-Disposition: form-data; name="prénom"'.encode("utf-8"), b"v") \
        + part('Content-Disposition: form-data; name="f"; filename="résumé.pdf"'.encode("utf-8"), b"pdf") \
        + part(b'Content-Disposition: form-data; name="g"; filename="caf\xe9.txt"', b"latin-1, not UTF-8") \
        + b"--" + B + b"--\r\n"
    a, b, c = parse(body)
    assert a.name == "prénom"
    assert b.raw_filename == "résumé.pdf" and b.filename == "résumé.pdf"
    assert c.raw_filename == "café.txt"  # not valid UTF-8: kept as ISO-8859-1


def test_fields_and_small_files_in_memory_have_a_total_cap():
    """Regression: each field was capped (1 MiB) but not their sum: 100 fields of 1 MiB
    were held in memory, ~1 GiB per request with the default 1000 parts.  Past
    ``max_memory_size`` (8 MiB by default) in all: 413.  Files that spool to disk do
    not count."""
    field = b"v" * (1 << 20)
    body = b"".join(part(b'Content-Disposition: form-data; name="f%d"' % i, field) for i in range(9)) \
        + b"--" + B + b"--\r\n"
    with pytest.raises(ParseError) as e:
        parse(body)
    assert e.value.status == 413 and "8388608 bytes in all" in e.value.message
    assert len(parse(body, max_memory_size=16 << 20)) == 9
    big_files = b"".join(part(b'Content-Disposition: form-data; name="u%d"; filename="u%d.bin"' % (i, i),
                              b"u" * (3 << 20)) for i in range(4)) + b"--" + B + b"--\r\n"
    parts = parse(big_files)  # 12 MiB of files, all spooled: not in memory
    assert [p.size for p in parts] == [3 << 20] * 4 and all(p.file is not None for p in parts)
    for p in parts:
        p.close()


def test_form_twice_returns_the_same_parts():
    """Regression: a second ``req.form()`` (middleware, then the handler) parsed the body
    again and dropped the first call's parts from the request: their spooled files were
    never closed (PyPy: an fd per file until the GC)."""
    body = part(b'Content-Disposition: form-data; name="u"; filename="u.bin"', b"u" * (200 << 10)) \
        + b"--" + B + b"--\r\n"
    p = RequestParser()
    (req,) = p.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=" + B
                    + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    first = req.form()
    assert req.form() is first
    f = first[0].file
    req.close()
    assert f.closed
