"""Static files over real sockets, review 7: a refused index is not replaced by a listing,
Last-Modified is never in the future, .html goes without a charset, and a list field
sent on several lines (If-None-Match...) counts whole -- for serve_static and send_file."""
import calendar
import email.utils
import os
import re
import time

import powpow

from ._http import raw, serving


def static_handler(root, **opts):
    def handler(req, res):
        if req.path == "/sent/page.txt":
            res.send_file(os.path.join(root, "page.txt"))
        elif not powpow.serve_static(req, res, root, **opts):
            res.send_error(404)
    return handler


def get(port, path, *fields, method="GET"):
    """One request (``fields``: ``(name, value)`` pairs, repeats allowed) -> (status, headers, body)."""
    head = "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" % (method, path)
    head += "".join("%s: %s\r\n" % f for f in fields)
    data = raw(port, (head + "\r\n").encode("latin-1"))
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
    return int(lines[0].split()[1]), headers, body


def field(headers, name):
    values = [v for k, v in headers if k.lower() == name.lower()]
    assert len(values) <= 1, (name, headers)
    return values[0] if values else None


def seconds(http_date):
    return calendar.timegm(email.utils.parsedate(http_date))


# -- an index that is there but cannot be served is the answer (nginx: 403) ------------

def test_listing_never_replaces_an_index_that_is_refused(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    outside = tmp_path / "outside.html"
    outside.write_text("<p>outside the root</p>")
    (root / "linked").mkdir()
    os.symlink(str(outside), str(root / "linked" / "index.html"))  # leaves the root
    (root / "linked" / "draft-salaries.txt").write_text("x")
    (root / "plain").mkdir()
    (root / "plain" / "a.txt").write_text("a")
    (root / "dirindex").mkdir()
    (root / "dirindex" / "index.html").mkdir()  # not a file: as if there were no index
    (root / "dirindex" / "b.txt").write_text("b")
    (root / "second").mkdir()
    (root / "second" / "home.htm").write_text("<p>second index</p>")
    with serving(static_handler(str(root), listing=True, index=("index.html", "home.htm"))) as srv:
        status, headers, body = get(srv.port, "/linked/")
        assert status == 403, (status, body)
        assert b"draft-salaries" not in body and b"outside the root" not in body
        status, _, body = get(srv.port, "/linked/", method="HEAD")
        assert status == 403 and body == b""
        # an index that is not there still lets the next name, then the listing, answer
        status, headers, body = get(srv.port, "/second/")
        assert status == 200 and body == b"<p>second index</p>"
        for d, name in (("plain", b"a.txt"), ("dirindex", b"b.txt")):
            status, headers, body = get(srv.port, "/%s/" % d)
            assert status == 200 and b'<a href="%s">' % name in body, (d, status, body)
    # (an index the server may not read: test_serve_cli_options, where the server can be
    # made to obey file modes even when the tests run as root)


# -- Last-Modified is never later than now (nor than Date) ------------------------------

def test_future_mtime_is_not_advertised_and_an_edit_is_seen(tmp_path):
    f = tmp_path / "f.txt"
    f.write_bytes(b"OLD!\n")
    ahead = time.time() + 86400  # unpacked from a host whose clock was a day ahead
    os.utime(str(f), (ahead, ahead))
    with serving(static_handler(str(tmp_path))) as srv:
        status, headers, body = get(srv.port, "/f.txt")
        after = time.time()
        assert status == 200 and body == b"OLD!\n"
        lm = field(headers, "Last-Modified")
        assert seconds(lm) <= after and seconds(lm) <= seconds(field(headers, "Date")), headers
        # edited now: what curl -z, wget -N and caches without ETag send next must not get a 304
        f.write_bytes(b"NEW!\n")
        now_ns = time.time_ns()
        os.utime(str(f), ns=(now_ns, now_ns))
        status, headers, body = get(srv.port, "/f.txt", ("If-Modified-Since", lm))
        assert status == 200 and body == b"NEW!\n"
        # a file from the past keeps its own date, and 304s as before
        st = os.stat(str(f))
        assert seconds(field(headers, "Last-Modified")) == st.st_mtime_ns // 10**9
        assert get(srv.port, "/f.txt", ("If-Modified-Since", field(headers, "Last-Modified")))[0] == 304


# -- HTML declares its own charset ----------------------------------------------------------

def test_html_has_no_charset_text_keeps_utf8(tmp_path):
    page = '<!DOCTYPE html><meta charset="iso-8859-1"><p>Cr\xe8me br\xfbl\xe9e</p>'.encode("latin-1")
    (tmp_path / "legacy.html").write_bytes(page)
    (tmp_path / "old.htm").write_bytes(page)
    (tmp_path / "notes.txt").write_text("caf\u00e9", encoding="utf-8")
    (tmp_path / "style.css").write_text("p{}")
    (tmp_path / "d").mkdir()
    with serving(static_handler(str(tmp_path), listing=True)) as srv:
        for path in ("/legacy.html", "/old.htm"):
            status, headers, body = get(srv.port, path)
            assert status == 200 and body == page
            assert field(headers, "Content-Type") == "text/html", headers
        status, headers, body = get(srv.port, "/legacy.html", ("Range", "bytes=0-1,3-4"))
        assert status == 206 and b"Content-Type: text/html\r\n" in body  # the parts' type too
        assert field(get(srv.port, "/notes.txt")[1], "Content-Type") == "text/plain; charset=utf-8"
        assert field(get(srv.port, "/style.css")[1], "Content-Type") == "text/css; charset=utf-8"
        # the listing is HTML powpow writes, in UTF-8: it says so
        assert field(get(srv.port, "/d/")[1], "Content-Type") == "text/html; charset=utf-8"


def test_builtin_demo_site_declares_its_charset():
    from powpow.__main__ import SITE_DIR
    for name in os.listdir(SITE_DIR):
        if name.endswith((".html", ".htm")):
            with open(os.path.join(SITE_DIR, name), "rb") as f:
                assert re.search(rb'<meta charset="?utf-8"?>', f.read(1024), re.I), name


# -- a list field on several lines is one list (RFC 9110 5.3) -------------------------------

def test_repeated_if_none_match_if_match_and_accept_encoding_lines(tmp_path):
    (tmp_path / "page.txt").write_bytes(b"0123456789")
    (tmp_path / "gz.txt").write_bytes(b"plain text")
    (tmp_path / "gz.txt.gz").write_bytes(b"gzipped!")
    with serving(static_handler(str(tmp_path))) as srv:
        for path in ("/page.txt", "/sent/page.txt"):  # serve_static and res.send_file
            etag = field(get(srv.port, path)[1], "ETag")
            assert get(srv.port, path, ("If-None-Match", '"old", ' + etag))[0] == 304
            status, _, body = get(srv.port, path, ("If-None-Match", '"old"'), ("If-None-Match", etag))
            assert (status, body) == (304, b""), path
            status, _, body = get(srv.port, path, ("If-None-Match", '"old"'), ("If-None-Match", '"older"'))
            assert (status, body) == (200, b"0123456789"), path
            assert get(srv.port, path, ("If-Match", '"old"'), ("If-Match", etag))[0] == 200, path
            assert get(srv.port, path, ("If-Match", '"old"'), ("If-Match", '"older"'))[0] == 412, path
        status, headers, body = get(srv.port, "/gz.txt", ("Accept-Encoding", "br"), ("Accept-Encoding", "gzip"))
        assert (status, body, field(headers, "Content-Encoding")) == (200, b"gzipped!", "gzip")
        status, headers, body = get(srv.port, "/gz.txt", ("Accept-Encoding", "br"), ("Accept-Encoding", "gzip;q=0"))
        assert (status, body, field(headers, "Content-Encoding")) == (200, b"plain text", None)


def test_listing_shows_no_name_that_its_link_would_refuse(tmp_path):
    """A file named with a backslash, a control character or DEL can never be served (the
    path rules refuse such a URL: 403), so the listing leaves it out; every link it shows
    answers.  Was: listed with a correct link that answered 403 (``wget -r``, a browser)."""
    for name in ("back\\slash.txt", "tab\there.txt", "new\nline.txt", "del\x7f.txt", "plain name.txt",
                 "caf\u00e9 %41.txt"):
        (tmp_path / name).write_bytes(b"x")
    os.mkdir(str(tmp_path / "dir\x01"))
    with serving(static_handler(str(tmp_path), listing=True)) as srv:
        status, _, body = get(srv.port, "/")
        assert status == 200
        hrefs = re.findall(rb'<a href="([^"]+)">', body)
        assert sorted(hrefs) == sorted([b"caf%C3%A9%20%2541.txt", b"plain%20name.txt"]), hrefs
        for href in hrefs:
            assert get(srv.port, "/" + href.decode())[0] == 200, href
