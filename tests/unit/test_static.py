"""powpow.http.static: path safety, MIME, validators and conditional requests,
HEAD, directories (index, listing, redirect), precompressed siblings, downloads.

Real files in tmp_path; bodies are assembled from the plan's parts exactly as
the server will send them (bytes as-is, FilePart read from the file)."""
import os
import shutil
import time

import pytest

from powpow.errors import PowpowError
from powpow.http._conditional import http_date, parse_http_date
from powpow.http._mime import content_type_for
from powpow.http.static import (
    FilePart,
    StaticError,
    StaticOptions,
    StaticResponse,
    accepts_gzip,
    content_disposition,
    plan_file,
    plan_static,
)

HELLO = b"hello, static world\n"


def assemble(plan: StaticResponse) -> bytes:
    out = bytearray()
    for part in plan.parts:
        if isinstance(part, FilePart):
            data = os.pread(part.fd, part.count, part.offset)  # the plan's own descriptor
            assert len(data) == part.count
            out += data
        else:
            assert isinstance(part, bytes)
            out += part
    assert len(out) == plan.content_length
    return bytes(out)


def hdrs(**kw):
    d = {k.replace("_", "-"): v for k, v in kw.items()}
    return d.get


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_bytes(HELLO)
    (root / "index.html").write_bytes(b"<h1>home</h1>")
    (root / "app.js").write_bytes(b"console.log(1)")
    (root / ".env").write_bytes(b"SECRET=1")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"[core]")
    (root / "sub").mkdir()
    (root / "sub" / "a b.txt").write_bytes(b"space")
    (root / "sub" / "caf\u00e9.txt").write_bytes(b"accent")
    (root / "empty").mkdir()
    (root / "noindex").mkdir()
    (root / "noindex" / "x.bin").write_bytes(b"\x00\x01")
    (root / "zero.txt").write_bytes(b"")
    (tmp_path / "outside.txt").write_bytes(b"TOP SECRET")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "f.txt").write_bytes(b"TOP SECRET")
    os.symlink(str(tmp_path / "outside.txt"), str(root / "escape.txt"))
    os.symlink(str(tmp_path / "outdir"), str(root / "escapedir"))
    os.symlink("hello.txt", str(root / "alias.txt"))
    os.symlink("sub", str(root / "subalias"))
    os.symlink(".env", str(root / "envlink"))
    os.symlink("missing", str(root / "dangling"))
    os.symlink("loop", str(root / "loop"))
    os.mkfifo(str(root / "fifo"))
    return root


def get(root, path, method="GET", headers=None, **kw):
    return plan_static(method, path, (headers or {}).get, StaticOptions(str(root), **kw))


# -- path safety -------------------------------------------------------------------

PATH_CASES = [
    # (raw target path, status, body or None, why)
    ("/hello.txt", 200, HELLO, "plain file"),
    ("/h%65llo.txt", 200, HELLO, "percent-decoded once"),
    ("/sub/a%20b.txt", 200, b"space", "encoded space"),
    ("/sub/caf%C3%A9.txt", 200, b"accent", "UTF-8 name"),
    ("/alias.txt", 200, HELLO, "symlink inside the root"),
    ("/subalias/a%20b.txt", 200, b"space", "symlinked directory inside the root"),
    ("/../outside.txt", 403, None, "dot-dot segment"),
    ("/sub/../hello.txt", 403, None, "dot-dot even when it stays inside"),
    ("/./hello.txt", 403, None, "dot segment"),
    ("/%2e%2e/outside.txt", 403, None, "encoded dot-dot"),
    ("/%2E%2E/outside.txt", 403, None, "encoded dot-dot, upper case"),
    ("/.%2e/outside.txt", 403, None, "half-encoded dot-dot"),
    ("/%2e/hello.txt", 403, None, "encoded dot"),
    ("/sub%2f..%2f..%2foutside.txt", 403, None, "encoded slash"),
    ("/sub%2Fa%20b.txt", 403, None, "encoded slash, upper case"),
    ("/..%5coutside.txt", 403, None, "encoded backslash"),
    ("/..\\outside.txt", 403, None, "raw backslash"),
    ("/hello.txt%00.png", 403, None, "encoded NUL"),
    ("/hello.txt\x00", 403, None, "raw NUL"),
    ("/hello%0a.txt", 403, None, "encoded LF"),
    ("/%252e%252e/outside.txt", 404, None, "double-encoded: decoded once -> literal %2e%2e"),
    ("/hello%zz.txt", 404, None, "malformed escape"),
    ("/hello%2.txt", 404, None, "truncated escape"),
    ("/sub//a%20b.txt", 404, None, "empty segment"),
    ("/escape.txt", 403, None, "symlink to a file outside the root"),
    ("/escapedir/f.txt", 403, None, "symlink to a directory outside the root"),
    ("/escapedir/", 403, None, "listing an outside directory"),
    ("/.env", 404, None, "dotfile hidden"),
    ("/%2eenv", 404, None, "encoded dotfile hidden"),
    ("/.git/config", 404, None, "dot directory hidden"),
    ("/envlink", 404, None, "symlink to a dotfile"),
    ("/dangling", 404, None, "dangling symlink"),
    ("/loop", 404, None, "symlink loop"),
    ("/fifo", 404, None, "not a regular file"),
    ("/nope.txt", 404, None, "missing"),
    ("/hello.txt/", 404, None, "file with trailing slash"),
    ("/hello.txt/x", 404, None, "file used as a directory"),
    ("/noindex/", 404, None, "directory without index, listing off"),
    ("/" + "a" * 5000, 404, None, "name too long"),
]


@pytest.mark.parametrize("path,status,body,why", PATH_CASES, ids=[c[3] for c in PATH_CASES])
def test_path_safety(site, path, status, body, why):
    plan = get(site, path)
    assert plan.status == status, (why, plan.reason)
    if body is not None:
        assert assemble(plan) == body
    else:
        assert plan.reason
        assert b"SECRET" not in assemble(plan)
        assert all(not isinstance(p, FilePart) for p in plan.parts)


def test_show_hidden_serves_dotfiles_but_never_traversal(site):
    assert assemble(get(site, "/.env", show_hidden=True)) == b"SECRET=1"
    assert assemble(get(site, "/envlink", show_hidden=True)) == b"SECRET=1"
    assert get(site, "/..", show_hidden=True).status == 403
    assert get(site, "/%2e%2e/outside.txt", show_hidden=True).status == 403


def test_root_itself_may_be_a_symlink(site, tmp_path):
    link = tmp_path / "rootlink"
    os.symlink(str(site), str(link))
    assert assemble(get(link, "/hello.txt")) == HELLO
    assert get(link, "/escape.txt").status == 403



def _release(tmp_path, version, extra=()):
    d = tmp_path / "releases" / version / "public"
    d.mkdir(parents=True)
    (d / "page.txt").write_bytes(b"release " + version.encode())
    (d / "index.html").write_bytes(b"<h1>" + version.encode() + b"</h1>")
    (d / ("only-" + version + ".txt")).write_bytes(version.encode())
    for name, target in extra:
        os.symlink(target, str(d / name))
    return d


def _point(link, target):
    """Repoint ``link`` atomically, as deploy tools do (a new link renamed over the old)."""
    tmp = str(link) + ".new"
    os.symlink(target, tmp)
    os.replace(tmp, str(link))


def _body(opts, path):
    with plan_static("GET", path, {}.get, opts) as plan:
        return plan.status, assemble(plan) if plan.status == 200 else None


@pytest.mark.parametrize("below_link", [False, True], ids=["root-is-the-link", "root-below-the-link"])
def test_root_symlink_repointed_by_a_deploy_is_followed(tmp_path, below_link):
    """``current -> releases/v1`` repointed to v2: the same options (the server
    keeps one object per mount) serve v2 at once, and still do once v1 is gone."""
    v1 = _release(tmp_path, "v1")
    _release(tmp_path, "v2")
    link = tmp_path / "current"
    _point(link, "releases/v1" if below_link else "releases/v1/public")
    opts = StaticOptions(str(link / "public") if below_link else str(link))
    assert _body(opts, "/page.txt") == (200, b"release v1")
    _point(link, "releases/v2" if below_link else "releases/v2/public")
    assert _body(opts, "/page.txt") == (200, b"release v2")
    assert _body(opts, "/") == (200, b"<h1>v2</h1>")  # index of the new root
    assert _body(opts, "/only-v1.txt")[0] == 404
    shutil.rmtree(str(v1.parent))
    assert _body(opts, "/page.txt") == (200, b"release v2")
    assert _body(opts, "/only-v2.txt") == (200, b"v2")


def test_root_symlink_repointed_confines_to_the_new_target(tmp_path):
    """After the flip, the old release is outside the root: a symlink into it is
    refused like any other way out, and traversal stays refused."""
    _release(tmp_path, "v1")
    _release(tmp_path, "v2", extra=[("old.txt", "../../v1/public/page.txt"),
                                    ("olddir", "../../v1/public")])
    link = tmp_path / "current"
    _point(link, "releases/v1/public")
    opts = StaticOptions(str(link))
    assert _body(opts, "/page.txt") == (200, b"release v1")  # v1 resolved and remembered
    _point(link, "releases/v2/public")
    assert _body(opts, "/old.txt")[0] == 403
    assert _body(opts, "/olddir/page.txt")[0] == 403
    assert _body(opts, "/../v1/public/page.txt")[0] == 403
    assert _body(opts, "/%2e%2e/page.txt")[0] == 403


def test_root_that_stops_being_a_directory_is_404_until_it_is_one_again(tmp_path):
    _release(tmp_path, "v1")
    link = tmp_path / "current"
    _point(link, "releases/v1/public")
    opts = StaticOptions(str(link))
    _point(link, "releases/missing")
    assert _body(opts, "/page.txt")[0] == 404
    _point(link, "releases/v1/public/page.txt")  # a file, not a directory
    assert _body(opts, "/page.txt")[0] == 404
    _point(link, "releases/v1/public")
    assert _body(opts, "/page.txt") == (200, b"release v1")

def test_fileranges_name_the_resolved_path(site):
    plan = get(site, "/alias.txt")
    assert plan.parts == [FilePart(None, os.path.realpath(str(site / "hello.txt")), 0, len(HELLO))]
    assert plan.file_path == os.path.realpath(str(site / "hello.txt"))


def test_prefix_fallthrough_and_mount_redirect(site):
    assert get(site, "/api/users", prefix="/static") is None
    assert get(site, "/staticx/hello.txt", prefix="/static") is None
    assert assemble(get(site, "/static/hello.txt", prefix="/static")) == HELLO
    plan = get(site, "/static", prefix="/static/")
    assert plan.status == 301 and plan.header("Location") == "/static/"
    assert get(site, "/static/", prefix="/static").status == 200  # index.html
    assert get(site, "/static/../hello.txt", prefix="/static").status == 403


def test_options_validated(tmp_path):
    with pytest.raises(StaticError) as e:
        StaticOptions(str(tmp_path / "missing"))
    assert e.value.status == 500 and isinstance(e.value, PowpowError)
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(StaticError):
        StaticOptions(str(tmp_path / "f"))
    with pytest.raises(StaticError):
        StaticOptions(str(tmp_path), prefix="static")
    with pytest.raises(StaticError):
        StaticOptions(str(tmp_path), index=("../x.html",))
    with pytest.raises(StaticError):
        StaticOptions(str(tmp_path), cache_control="max-age=1\r\nX-Evil: 1")
    assert StaticOptions(str(tmp_path), prefix="/s").prefix == "/s/"


# -- methods, HEAD ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get"])
def test_other_methods_405(site, method):
    plan = get(site, "/hello.txt", method=method)
    assert plan.status == 405
    assert plan.header("Allow") == "GET, HEAD"
    assert get(site, "/nope", method=method).status == 405  # method first: no probing


def test_head_has_get_length_and_headers_without_body(site):
    g = get(site, "/hello.txt")
    h = get(site, "/hello.txt", method="HEAD")
    assert h.status == 200 and h.parts == []
    assert h.content_length == g.content_length == len(HELLO)
    assert h.headers == g.headers
    # HEAD ignores Range (RFC 9110 §14.2: range handling is defined for GET only)
    hr = get(site, "/hello.txt", method="HEAD", headers={"range": "bytes=0-1"})
    assert hr.status == 200 and hr.content_length == len(HELLO) and hr.parts == []
    # error bodies too
    e = get(site, "/nope", method="HEAD")
    assert e.status == 404 and e.parts == [] and e.content_length == len(b"404 Not Found\n")
    listing = get(site, "/sub/", method="HEAD", listing=True)
    assert listing.parts == [] and listing.content_length == len(assemble(get(site, "/sub/", listing=True)))


def test_zero_length_file(site):
    plan = get(site, "/zero.txt")
    assert plan.status == 200 and plan.parts == [] and plan.content_length == 0
    assert plan.header("ETag")


def test_headers_of_a_file(site):
    plan = get(site, "/hello.txt")
    names = [k for k, _ in plan.headers]
    for forbidden in ("Date", "Server", "Connection", "Content-Length"):
        assert forbidden not in names
    assert plan.header("Content-Type") == "text/plain; charset=utf-8"
    assert plan.header("Accept-Ranges") == "bytes"
    assert plan.header("X-Content-Type-Options") == "nosniff"
    assert plan.header("Vary") is None and plan.header("Cache-Control") is None
    st = os.stat(str(site / "hello.txt"))
    assert plan.header("Last-Modified") == http_date(st.st_mtime)
    etag = plan.header("ETag")
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    plan2 = get(site, "/hello.txt", cache_control="public, max-age=60")
    assert plan2.header("Cache-Control") == "public, max-age=60"


def test_etag_changes_with_content_and_replacement(site):
    p = site / "hello.txt"
    e1 = get(site, "/hello.txt").header("ETag")
    assert get(site, "/hello.txt").header("ETag") == e1
    os.utime(str(p), ns=(0, os.stat(str(p)).st_mtime_ns + 1))
    e2 = get(site, "/hello.txt").header("ETag")
    assert e2 != e1
    tmp = site / "hello.new"
    tmp.write_bytes(HELLO)
    st = os.stat(str(p))
    os.utime(str(tmp), ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(str(tmp), str(p))  # same size and mtime, new inode
    assert get(site, "/hello.txt").header("ETag") != e2


# -- MIME -----------------------------------------------------------------------------

MIME_CASES = [
    ("index.html", "text/html"),
    ("STYLE.CSS", "text/css; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("mod.mjs", "text/javascript; charset=utf-8"),
    ("data.json", "application/json; charset=utf-8"),
    ("feed.xml", "application/xml; charset=utf-8"),
    ("logo.svg", "image/svg+xml; charset=utf-8"),
    ("site.webmanifest", "application/manifest+json; charset=utf-8"),
    ("notes.txt", "text/plain; charset=utf-8"),
    ("pic.png", "image/png"),
    ("photo.JPG", "image/jpeg"),
    ("font.woff2", "font/woff2"),
    ("clip.mp4", "video/mp4"),
    ("doc.pdf", "application/pdf"),
    ("mod.wasm", "application/wasm"),
    ("archive.tar.gz", "application/gzip"),
    ("README", "application/octet-stream"),
    (".profile", "application/octet-stream"),
    ("weird.qqqzzz", "application/octet-stream"),
    ("trailingdot.", "application/octet-stream"),
    ("dir.d/noext", "application/octet-stream"),
]


@pytest.mark.parametrize("name,expected", MIME_CASES)
def test_content_type_for(name, expected):
    assert content_type_for(name) == expected


def test_mime_served(site):
    assert get(site, "/app.js").header("Content-Type") == "text/javascript; charset=utf-8"
    assert get(site, "/noindex/x.bin").header("Content-Type") == "application/octet-stream"
    assert get(site, "/").header("Content-Type") == "text/html"


# -- conditional requests ---------------------------------------------------------------

def _validators(site):
    plan = get(site, "/hello.txt")
    return plan.header("ETag"), plan.header("Last-Modified")


def test_http_date_roundtrip_and_obsolete_forms():
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    for form in ("Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                 "Sun Nov  6 08:49:37 1994"):
        assert parse_http_date(form) == 784111777
    for bad in ("", "yesterday", "Sun, 06 Nov 1994 08:49:37 CET", "Sun, 32 Nov 1994 08:49:37 GMT",
                "Sun, 06 Foo 1994 08:49:37 GMT", "784111777"):
        assert parse_http_date(bad) is None


def cond_cases(etag, lm):
    later = http_date(parse_http_date(lm) + 3600)
    earlier = http_date(parse_http_date(lm) - 3600)
    weak = "W/" + etag
    return [
        # (headers, expected status, why)
        ({}, 200, "unconditional"),
        ({"if-none-match": etag}, 304, "INM match"),
        ({"if-none-match": weak}, 304, "INM weak comparison"),
        ({"if-none-match": '"other", ' + etag}, 304, "INM list"),
        ({"if-none-match": '"a,b", ' + etag}, 304, "INM list with comma inside a tag"),
        ({"if-none-match": "*"}, 304, "INM star"),
        ({"if-none-match": '"other"'}, 200, "INM mismatch"),
        ({"if-none-match": "garbage"}, 200, "INM unparseable"),
        ({"if-modified-since": lm}, 304, "IMS equal"),
        ({"if-modified-since": later}, 304, "IMS later"),
        ({"if-modified-since": earlier}, 200, "IMS earlier"),
        ({"if-modified-since": "not a date"}, 200, "IMS invalid ignored"),
        ({"if-none-match": '"other"', "if-modified-since": later}, 200,
         "INM takes precedence over IMS (mismatch wins)"),
        ({"if-none-match": etag, "if-modified-since": earlier}, 304,
         "INM takes precedence over IMS (match wins)"),
        ({"if-match": etag}, 200, "IM match"),
        ({"if-match": "*"}, 200, "IM star"),
        ({"if-match": '"other"'}, 412, "IM mismatch"),
        ({"if-match": weak}, 412, "IM uses strong comparison"),
        ({"if-unmodified-since": lm}, 200, "IUS equal"),
        ({"if-unmodified-since": earlier}, 412, "IUS earlier"),
        ({"if-unmodified-since": "bogus"}, 200, "IUS invalid ignored"),
        ({"if-match": etag, "if-unmodified-since": earlier}, 200, "IM present: IUS ignored"),
        ({"if-match": '"other"', "if-none-match": etag}, 412, "412 before 304"),
        ({"if-unmodified-since": earlier, "if-modified-since": later}, 412, "IUS before IMS"),
    ]


def test_conditional_requests(site):
    etag, lm = _validators(site)
    for headers, status, why in cond_cases(etag, lm):
        for method in ("GET", "HEAD"):
            plan = get(site, "/hello.txt", method=method, headers=headers)
            assert plan.status == status, (why, method, headers)
            if status == 304:
                assert plan.parts == [] and plan.content_length == 0
                assert plan.header("ETag") == etag and plan.header("Last-Modified") == lm
                assert plan.header("Content-Type") is None
            elif status == 200:
                assert method == "HEAD" or assemble(plan) == HELLO


def test_304_carries_cache_control_and_vary(site):
    (site / "hello.txt.gz").write_bytes(b"gz")
    etag = get(site, "/hello.txt", cache_control="max-age=5").header("ETag")
    plan = get(site, "/hello.txt", headers={"if-none-match": etag}, cache_control="max-age=5")
    assert plan.status == 304
    assert plan.header("Cache-Control") == "max-age=5"
    assert plan.header("Vary") == "Accept-Encoding"


# -- directories ---------------------------------------------------------------------------

def test_index_and_redirects(site):
    plan = get(site, "/")
    assert plan.status == 200 and assemble(plan) == b"<h1>home</h1>"
    assert plan.header("ETag")
    (site / "sub" / "index.htm").write_bytes(b"htm")
    plan = get(site, "/sub/", index=("index.html", "index.htm"))
    assert assemble(plan) == b"htm"
    for path, location in (("/sub", "/sub/"), ("/subalias", "/subalias/"),
                           ("/s%75b", "/s%75b/")):
        plan = get(site, path)
        assert plan.status == 301 and plan.header("Location") == location


def test_no_open_redirect(site):
    # "//evil.example" would become a protocol-relative Location.
    for path in ("//evil.example", "//evil.example/", "///evil"):
        plan = get(site, path, listing=True)
        assert plan.status in (403, 404)
        assert plan.header("Location") is None
    # nor through a mount point whose prefix starts with "//"
    plan = get(site, "//evil", prefix="//evil/")
    assert plan.status == 404 and plan.header("Location") is None


def test_listing(site):
    for name in ('<script>&"\'.txt', "b.txt", "A.txt", ".hidden"):
        (site / "sub" / name).write_bytes(b"x" * 7)
    (site / "sub" / "zdir").mkdir()
    os.symlink(str(site.parent / "outside.txt"), str(site / "sub" / "out.txt"))
    plan = get(site, "/sub/", listing=True)
    assert plan.status == 200
    assert plan.header("Content-Type") == "text/html; charset=utf-8"  # (a listing is HTML powpow writes: UTF-8)
    assert "default-src 'none'" in plan.header("Content-Security-Policy")
    page = assemble(plan).decode("utf-8")
    assert "<script>" not in page
    assert ('<a href="%3Cscript%3E%26%22%27.txt">&lt;script&gt;&amp;&quot;&#x27;.txt</a>'
            in page)
    assert ".hidden" not in page
    assert "out.txt" not in page  # would be refused
    assert '<a href="a%20b.txt">a b.txt</a>' in page
    assert '<a href="caf%C3%A9.txt">caf\u00e9.txt</a>' in page
    assert '<a href="../">../</a>' in page
    # directories first, then files by name
    order = [page.index(s) for s in ('href="zdir/"', 'href="%3Cscript', 'href="A.txt"',
                                      'href="a%20b.txt"', 'href="b.txt"')]
    assert order == sorted(order)
    # size and modification time
    mtime = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(os.stat(str(site / "sub" / "b.txt")).st_mtime))
    assert '<a href="b.txt">b.txt</a></td><td>7</td><td>%s</td>' % mtime in page
    # the listed links lead to the files
    assert assemble(get(site, "/sub/%3Cscript%3E%26%22%27.txt")) == b"x" * 7
    root_page = assemble(get(site, "/noindex/", listing=True)).decode()
    assert "x.bin" in root_page
    assert '<a href="../">' not in assemble(get(site, "/", listing=True, index=())).decode()


def test_listing_title_escaped_and_show_hidden(site):
    d = site / "<b>"
    d.mkdir()
    (d / ".dot").write_bytes(b"")
    page = assemble(get(site, "/%3Cb%3E/", listing=True)).decode()
    assert "<b>" not in page and "&lt;b&gt;" in page
    assert ".dot" not in page
    assert ".dot" in assemble(get(site, "/%3Cb%3E/", listing=True, show_hidden=True)).decode()


def test_listing_undecodable_name(site):
    raw = os.path.join(os.fsencode(str(site / "sub")), b"bad\xff.txt")
    with open(raw, "wb") as f:
        f.write(b"ff")
    page = assemble(get(site, "/sub/", listing=True)).decode("utf-8")
    assert 'href="bad%FF.txt"' in page and "bad\ufffd.txt" in page
    assert assemble(get(site, "/sub/bad%FF.txt")) == b"ff"


# -- precompressed siblings ----------------------------------------------------------------

GZ_CASES = [
    # (Accept-Encoding, serves gzip)
    (None, False),
    ("", False),
    ("gzip", True),
    ("GZIP", True),
    ("x-gzip", True),
    ("deflate, gzip;q=0.5", True),
    ("br, gzip;q=0", False),
    ("gzip;q=0.000", False),
    ("gzip; q=0.001", True),
    ("*", True),
    ("*;q=0", False),
    ("gzip;q=0, *", False),
    ("gzip;q=1.0, *;q=0", True),
    ("identity", False),
    ("gzip;q=bogus", False),
    ("gzip;q=2", False),
]


@pytest.mark.parametrize("accept,use_gz", GZ_CASES)
def test_accepts_gzip(accept, use_gz):
    assert accepts_gzip(accept) is use_gz


def test_precompressed_selection(site):
    (site / "app.js.gz").write_bytes(b"GZDATA")
    plain = get(site, "/app.js")
    assert assemble(plain) == b"console.log(1)"
    assert plain.header("Vary") == "Accept-Encoding"
    assert plain.header("Content-Encoding") is None
    gz = get(site, "/app.js", headers={"accept-encoding": "gzip, deflate"})
    assert assemble(gz) == b"GZDATA"
    assert gz.header("Content-Encoding") == "gzip"
    assert gz.header("Content-Type") == "text/javascript; charset=utf-8"
    assert gz.header("Vary") == "Accept-Encoding"
    assert gz.header("ETag") != plain.header("ETag")
    assert get(site, "/app.js", headers={"accept-encoding": "gzip;q=0"}).header("Content-Encoding") is None
    # ranges and validators apply to the representation sent
    r = get(site, "/app.js", headers={"accept-encoding": "gzip", "range": "bytes=2-3"})
    assert r.status == 206 and assemble(r) == b"DA"
    assert r.header("Content-Range") == "bytes 2-3/6"
    inm = get(site, "/app.js", headers={"accept-encoding": "gzip", "if-none-match": gz.header("ETag")})
    assert inm.status == 304
    assert get(site, "/app.js", headers={"if-none-match": gz.header("ETag")}).status == 200
    # off switch; the .gz itself is still a normal file
    off = get(site, "/app.js", headers={"accept-encoding": "gzip"}, precompressed=False)
    assert assemble(off) == b"console.log(1)" and off.header("Vary") is None
    direct = get(site, "/app.js.gz", headers={"accept-encoding": "gzip"})
    assert direct.header("Content-Encoding") is None
    assert direct.header("Content-Type") == "application/gzip"


def test_precompressed_sibling_must_be_safe(site, tmp_path):
    (tmp_path / "evil.gz").write_bytes(b"OUTSIDE")
    os.symlink(str(tmp_path / "evil.gz"), str(site / "hello.txt.gz"))
    (site / "app.js.gz").mkdir()
    for path in ("/hello.txt", "/app.js"):
        plan = get(site, path, headers={"accept-encoding": "gzip"})
        assert plan.header("Content-Encoding") is None and plan.header("Vary") is None
        assert b"OUTSIDE" not in assemble(plan)


def test_index_is_precompressed_too(site):
    (site / "index.html.gz").write_bytes(b"gz-home")
    plan = get(site, "/", headers={"accept-encoding": "gzip"})
    assert assemble(plan) == b"gz-home"
    assert plan.header("Content-Type") == "text/html"


# -- downloads ---------------------------------------------------------------------------

def test_content_disposition_quoting():
    assert content_disposition("report.pdf") == \
        "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    v = content_disposition('caf\u00e9 "x"\\%.txt')
    assert v == "attachment; filename=\"caf_ _x___.txt\"; filename*=UTF-8''caf%C3%A9%20%22x%22%5C%25.txt"
    v = content_disposition("a\r\nb.txt")
    assert "\r" not in v and "\n" not in v


def test_download_option(site):
    plan = get(site, "/sub/caf%C3%A9.txt", download=True)
    assert plan.header("Content-Disposition") == \
        "attachment; filename=\"caf_.txt\"; filename*=UTF-8''caf%C3%A9.txt"
    assert get(site, "/hello.txt").header("Content-Disposition") is None
    (site / "app.js.gz").write_bytes(b"GZ")
    gz = get(site, "/app.js", headers={"accept-encoding": "gzip"}, download=True)
    assert 'filename="app.js"' in gz.header("Content-Disposition")


# -- plan_file (res.send_file) ---------------------------------------------------------------

def test_plan_file(site, tmp_path):
    p = tmp_path / "outside.txt"
    plan = plan_file("GET", str(p), {}.get)
    assert plan.status == 200 and assemble(plan) == b"TOP SECRET"
    plan = plan_file("GET", p, {"range": "bytes=-6"}.get, download=True, filename="r\u00e9sum\u00e9.pdf")
    assert plan.status == 206 and assemble(plan) == b"SECRET"
    assert plan.header("Content-Type") == "application/pdf"
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.pdf" in plan.header("Content-Disposition")
    assert plan_file("GET", str(tmp_path / "nope"), {}.get).status == 404
    assert plan_file("GET", str(tmp_path), {}.get).status == 404
    assert plan_file("POST", str(p), {}.get).status == 405
    plan = plan_file("HEAD", str(p), {}.get, content_type="text/x-custom", cache_control="no-store")
    assert plan.parts == [] and plan.content_length == 10
    assert plan.header("Content-Type") == "text/x-custom"
    assert plan.header("Cache-Control") == "no-store"
    with pytest.raises(StaticError):
        plan_file("GET", str(p), {}.get, cache_control="a\nb")


def test_permission_denied_is_403(site, monkeypatch):
    d = site / "locked"
    d.mkdir()
    (d / "f.txt").write_bytes(b"x")
    if os.geteuid() == 0:
        # root reads everything: make the OS say EACCES for this directory instead
        locked = os.path.realpath(str(d))
        real_stat, real_scandir = os.stat, os.scandir

        def stat(path, *args, **kwargs):
            if os.fspath(path).startswith(locked + os.sep):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_stat(path, *args, **kwargs)

        def scandir(path="."):
            if os.fspath(path) == locked:
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "stat", stat)
        monkeypatch.setattr(os, "scandir", scandir)
    else:
        os.chmod(str(d), 0)
    try:
        assert get(site, "/locked/f.txt").status in (403, 404)
        assert get(site, "/locked/", listing=True).status == 403
    finally:
        os.chmod(str(d), 0o755)

