"""Static files, sans-I/O: decide the whole response, let the server send it.

What: ``plan_static(method, raw_target_path, get_header, opts)`` maps a request
onto a file under ``opts.root`` and returns a ``StaticResponse`` -- status,
headers, and a body as a list of ``bytes`` and ``FilePart`` pieces that the
server writes in order (``FilePart`` with sendfile).  The file is opened once,
here, while planning (``O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK``), the
plan is made from ``fstat`` of that descriptor, and the descriptor travels in
the plan: nothing re-opens the path when the bytes are sent, however much later
that is.  It never touches a socket or a loop: the server stays in charge of
sending, and every rule here is testable with a ``tmp_path``.  ``plan_file``
does the same for one trusted path (``res.send_file``).

Descriptors (the contract with the server):
* Each ``FilePart`` owns its own fd (multi-range plans: one ``os.dup`` per
  part).  The server takes it with ``part.take_fd()`` (the part forgets it)
  and closes it once sent; ``StaticResponse.close()`` closes every fd not
  taken (idempotent; also ``with plan:``).  Plans without file parts -- HEAD,
  304, 412, 416, errors, listings, empty files -- hold no descriptor at all.
* Opening failures are answers, not exceptions: ``EMFILE``/``ENFILE``/``ENOMEM``
  -> 503 with ``Retry-After: 1`` (logged as a warning); ``EACCES``/``EPERM`` ->
  403; ``ENOENT``/``ELOOP``/``ENOTDIR`` and the like -> 404; anything else 500.

Path safety (the invariants; each is a row of the test table):
* The target is matched against ``prefix`` *before* decoding (give the prefix in
  the form it has on the wire), then split on ``/`` *before* decoding, so
  ``%2f`` can never create a segment boundary; each segment is
  percent-decoded exactly once (the result is never decoded again).
* Refused with 403: ``.`` / ``..`` segments (raw or ``%2e``-encoded), encoded
  ``/`` ``\\`` NUL (``%2f %5c %00``), raw backslashes, control characters, and
  any path whose ``realpath`` (symlinks followed) leaves the root.
* Refused with 404: malformed ``%`` escapes, empty segments (``a//b``: not
  repaired, like the parser), dotfiles (a segment starting with ``.``, also
  after symlink resolution) unless ``show_hidden``, anything that is not a
  regular file or directory, a file named with a trailing slash, a directory
  with neither index nor listing (404 rather than 403: the answer does not
  reveal that the directory exists).
* An index that is there but refused (403: unreadable, a symlink out of the
  root) or that cannot be opened (503) is the directory's answer; only one
  that is not there (404) lets the next index name, then the listing, answer
  -- as nginx does: a listing would show what the index was put there to hide.
* The root is followed to the directory it names *now* (one ``stat`` a request;
  ``realpath`` again only when that is another directory than last time), as
  nginx and ``http.server`` do: a root symlink repointed by an atomic deploy
  (``current -> releases/v2``) serves the new release at once.  Each request
  resolves it once and confines everything to that one realpath.
* Only a path joined from checked segments and then ``realpath``-ed is ever
  stat-ed or opened.  The open uses ``O_NOFOLLOW`` (a symlink swapped in for the
  file after ``realpath`` -> 404) and is then checked to be that very path: on
  Linux ``/proc/self/fd/N`` must read back as the real path; otherwise (or if
  it does not match) the path is walked again from the root with ``openat`` and
  ``O_NOFOLLOW`` on every component, and the file found must be the one opened
  (``st_dev``/``st_ino``).  A directory swapped for a symlink in between is thus
  refused (404) rather than followed out of the root.  ``FilePart.path`` is that
  real path, for logs.  A file that shrinks after planning gives a short
  sendfile.

HTTP (RFC 9110): validators and conditionals in ``_conditional`` (§8.8, §13),
ranges and multipart/byteranges in ``_ranges`` (§14), content types in
``_mime``.  Last-Modified is never in the future (``_last_modified``); list
fields sent on several lines count whole (``_field_reader``, §5.3).  Range
is honoured for GET only (§14.2: GET is the only method that defines range
handling; HEAD answers like a full GET).  Methods other than
GET/HEAD get 405 ``Allow: GET, HEAD``: OPTIONS/CORS preflight belongs to
``powpow.http.cors``, answered by the server before it calls us.

Errors: ``StaticError(status, reason)`` is raised inside and converted once, in
``plan_static``/``plan_file``, into a small ``text/plain`` response whose
``reason`` is for the access log (never sent).  Peer input never makes these
functions raise.
"""
import errno
import os
import re
import stat as _stat
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from powpow._log import get_logger
from powpow.errors import PowpowError

from ._conditional import evaluate_preconditions, http_date, if_range_allows
from ._mime import content_type_for
from ._ranges import FilePart, FileRange, content_range, multipart_byteranges, parse_range

__all__ = [
    "plan_static", "plan_file", "StaticOptions", "StaticResponse", "FilePart", "FileRange",
    "StaticError", "content_disposition", "accepts_gzip", "MAX_LISTING_ENTRIES",
]

log = get_logger("powpow.http")

GetHeader = Callable[[str], Optional[str]]
# what plan_static/plan_file take: a GetHeader, or a headers object (see _field_reader)
Headerish = Union[GetHeader, Any]
Part = Union[bytes, FilePart]

# A listing of a directory with a million entries would be a 100 MB page built
# in memory per request; past this many we stop reading and say so.
MAX_LISTING_ENTRIES = 10_000

_REASONS = {
    200: "OK", 206: "Partial Content", 304: "Not Modified",
    301: "Moved Permanently", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 412: "Precondition Failed",
    416: "Range Not Satisfiable", 500: "Internal Server Error", 503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"
_NOSNIFF = ("X-Content-Type-Options", "nosniff")
# The listing is the only HTML we generate from file names: no script may run
# in it even if escaping had a hole.
_LISTING_CSP = ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")


class StaticError(PowpowError):
    """A refused static request (``status`` 403/404/...) with a log ``reason``.

    Raised inside this module and converted once into a ``StaticResponse``; it
    escapes only from ``StaticOptions`` for an unusable configuration (status 500)."""

    def __init__(self, status: int, reason: str,
                 headers: Optional[List[Tuple[str, str]]] = None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers

    def __str__(self) -> str:
        return "%d %s" % (self.status, self.reason)


def _check_value(what: str, value: str) -> None:
    if any(c in value for c in "\r\n\x00"):
        raise StaticError(500, "%s contains CR, LF or NUL: %r" % (what, value))


class _Root:
    """One resolution of a static root: its realpath (with a trailing separator
    too, for the prefix check) and the directory's identity, which tells the next
    request whether the root still names that directory."""

    __slots__ = ("real", "slash", "dev", "ino")

    def __init__(self, real: str, st: os.stat_result) -> None:
        self.real = real
        self.slash = real if real.endswith(os.sep) else real + os.sep
        self.dev = st.st_dev
        self.ino = st.st_ino


def _resolve_root(path: str) -> Optional[_Root]:
    """``path``'s realpath now, or None if it is not a directory."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)  # of the realpath: the identity always belongs to the path kept with it
    except OSError:
        return None
    return _Root(real, st) if _stat.S_ISDIR(st.st_mode) else None


class StaticOptions:
    """Configuration of one static mount; checked once, here, not per request.

    ``root`` must be an existing directory; it is kept as given (made absolute)
    and each request follows it to the directory it names then (the root, or a
    directory above it, may be a symlink that a deploy repoints).  ``prefix`` is
    the URL path it is mounted at, normalised to start and end with ``/``.
    ``index`` names are plain file names."""

    __slots__ = ("root", "prefix", "index", "listing", "show_hidden", "precompressed",
                 "download", "cache_control", "inject_html", "_resolved")

    def __init__(
        self,
        root: Union[str, "os.PathLike[str]"],
        prefix: str = "/",
        index: Sequence[str] = ("index.html",),
        listing: bool = False,
        show_hidden: bool = False,
        precompressed: bool = True,
        download: bool = False,
        cache_control: Optional[str] = None,
        inject_html: Optional[bytes] = None,
    ) -> None:
        path = os.path.abspath(os.fspath(root))
        resolved = _resolve_root(path)
        if resolved is None:
            raise StaticError(500, "static root is not a directory: %r" % (os.fspath(root),))
        if not prefix.startswith("/"):
            raise StaticError(500, "prefix must start with '/': %r" % (prefix,))
        _check_value("prefix", prefix)
        if isinstance(index, str):
            index = (index,)
        for name in index:
            if not name or "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
                raise StaticError(500, "index must be plain file names: %r" % (name,))
        if cache_control is not None:
            _check_value("cache_control", cache_control)
        self.root = path
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.index = tuple(index)
        self.listing = listing
        self.show_hidden = show_hidden
        self.precompressed = precompressed
        self.download = download
        self.cache_control = cache_control
        # live reload: bytes put into every text/html page (see _plan_injected)
        self.inject_html = inject_html
        # the last resolution (replaced whole: threads sharing these options read one or the other)
        self._resolved = resolved

    def __repr__(self) -> str:
        return "StaticOptions(%r, prefix=%r, index=%r, listing=%r, show_hidden=%r)" % (
            self.root, self.prefix, self.index, self.listing, self.show_hidden)


class StaticResponse:
    """What to answer.  The server adds Date, Server, Connection and Content-Length.

    ``parts`` is empty for HEAD and 304; ``content_length`` is the length a GET
    body has (0 for 304: send no Content-Length there).  ``reason`` says why a
    request was refused (for the log); ``file_path`` is the real path of the
    file served, if any.  ``FilePart`` entries of ``parts`` own open descriptors:
    take them (``part.take_fd()``) or ``close()`` the plan."""

    __slots__ = ("status", "headers", "parts", "content_length", "reason", "file_path")

    def __init__(self, status: int, headers: List[Tuple[str, str]], parts: List[Part],
                 content_length: int, reason: str = "", file_path: Optional[str] = None) -> None:
        self.status = status
        self.headers = headers
        self.parts = parts
        self.content_length = content_length
        self.reason = reason
        self.file_path = file_path

    def close(self) -> None:
        """Close every descriptor no one took; idempotent."""
        for part in self.parts:
            if isinstance(part, FilePart):
                part.close()

    def __enter__(self) -> "StaticResponse":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def header(self, name: str) -> Optional[str]:
        """First value of header ``name`` (case-insensitive), for callers and tests."""
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def __repr__(self) -> str:
        return "<StaticResponse %d %s len=%d%s>" % (
            self.status, _REASONS.get(self.status, ""), self.content_length,
            " (%s)" % self.reason if self.reason else "")


def _small(method: str, status: int, reason: str,
           headers: Optional[List[Tuple[str, str]]] = None) -> StaticResponse:
    body = ("%d %s\n" % (status, _REASONS.get(status, ""))).encode("ascii")
    hs = [("Content-Type", _TEXT), _NOSNIFF]
    if headers:
        hs.extend(headers)
    return StaticResponse(status, hs, [] if method == "HEAD" else [body], len(body), reason)


def _not_allowed(method: str) -> StaticResponse:
    return _small(method, 405, "method %s not allowed" % method, [("Allow", "GET, HEAD")])


# -- path safety ---------------------------------------------------------------

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_FORBIDDEN_ESCAPES = frozenset((0x2F, 0x5C, 0x00))  # '/', '\\', NUL
# A file name no URL can reach (see _decode_segment): a backslash, a control character or
# DEL.  The listing leaves such names out instead of linking to a 403.
_UNSERVABLE = re.compile(r"[\\\x00-\x1f\x7f]")


def _decode_segment(raw: str, show_hidden: bool) -> str:
    """One raw path segment -> its file-system name, or StaticError."""
    if "\\" in raw:
        raise StaticError(403, "backslash in path")
    for c in raw:
        if not "\x20" < c < "\x7f":
            raise StaticError(403, "control or non-ASCII character in path")
    if "%" in raw:
        if raw.count("%") != len(_ESCAPE.findall(raw)):
            raise StaticError(404, "malformed percent-encoding")
        out = bytearray()
        pos = 0
        for m in _ESCAPE.finditer(raw):
            out += raw[pos:m.start()].encode("ascii")
            byte = int(m.group(1), 16)
            if byte in _FORBIDDEN_ESCAPES:
                raise StaticError(403, "encoded '/', '\\' or NUL in path")
            if byte < 0x20 or byte == 0x7F:
                raise StaticError(403, "encoded control character in path")
            out.append(byte)
            pos = m.end()
        out += raw[pos:].encode("ascii")
        # The file system's own decoding (surrogateescape): byte-exact names.
        name = os.fsdecode(bytes(out))
    else:
        name = raw
    if name == "." or name == "..":
        raise StaticError(403, "dot segment in path")
    if name[0] == "." and not show_hidden:
        raise StaticError(404, "hidden path segment")
    return name


def _split_target(rest: str, show_hidden: bool) -> Tuple[List[str], bool]:
    """Raw path after the prefix -> (decoded segments, trailing slash)."""
    if not rest:
        return [], True
    raws = rest.split("/")
    trailing = raws[-1] == ""
    if trailing:
        raws.pop()
    names = []
    for raw in raws:
        if not raw:
            raise StaticError(404, "empty path segment")
        names.append(_decode_segment(raw, show_hidden))
    return names, trailing


def _current_root(opts: StaticOptions) -> _Root:
    """The directory ``opts.root`` names now.  One ``stat`` a request; the
    ``realpath`` walk (an ``lstat`` per component) only when that directory is
    not the one resolved last time."""
    try:
        st = os.stat(opts.root)
    except OSError:
        raise StaticError(404, "static root is gone") from None
    cur = opts._resolved
    if st.st_ino == cur.ino and st.st_dev == cur.dev:
        return cur
    new = _resolve_root(opts.root)
    if new is None:
        raise StaticError(404, "static root is no longer a directory")
    opts._resolved = new
    return new


def _confine(path: str, opts: StaticOptions, root: _Root) -> str:
    """realpath of ``path``, refused unless it stays under ``root`` (and visible)."""
    real = os.path.realpath(path)
    if real != root.real:
        if not real.startswith(root.slash):
            raise StaticError(403, "symlink resolves outside the root")
        if not opts.show_hidden:
            rel = real[len(root.slash):]
            if rel.startswith(".") or (os.sep + ".") in rel:
                raise StaticError(404, "resolves to a hidden path")
    return real


def _stat_or_refuse(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except PermissionError:
        raise StaticError(403, "permission denied") from None
    except OSError:  # ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG ...
        raise StaticError(404, "no such file") from None


_O_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
_O_DIR_FLAGS = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
                | getattr(os, "O_CLOEXEC", 0))
# Linux: an open descriptor's path reads back from here (checked once).
_PROC_FD = "/proc/self/fd/" if os.path.isdir("/proc/self/fd") else None
_NOT_FOUND_ERRNOS = frozenset(
    getattr(errno, n) for n in ("ENOENT", "ELOOP", "ENOTDIR", "ENAMETOOLONG", "ENXIO", "ENODEV",
                                "EISDIR", "EMLINK", "EOPNOTSUPP", "ESTALE") if hasattr(errno, n))
_BUSY_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOMEM))
_RETRY_AFTER = [("Retry-After", "1")]


def _open_error(exc: OSError, path: str) -> StaticError:
    """The answer for an ``OSError`` met while opening (or dup-ing) ``path``."""
    code = exc.errno or 0
    if code in _BUSY_ERRNOS:
        log.warning("static: cannot open %r (%s): answering 503", path, os.strerror(code))
        return StaticError(503, "cannot open file: %s" % os.strerror(code), list(_RETRY_AFTER))
    if code == errno.EACCES or code == errno.EPERM:
        return StaticError(403, "permission denied")
    if code in _NOT_FOUND_ERRNOS:
        return StaticError(404, "cannot open: %s" % os.strerror(code))
    log.error("static: cannot open %r: %s", path, exc)
    return StaticError(500, "cannot open file: %s" % (exc,))


def _walk_matches(real: str, root: str, st: os.stat_result) -> bool:
    """Walk ``real`` from ``root`` with openat + O_NOFOLLOW on every component: is
    the file there (now) the one whose ``fstat`` is ``st``?  ``real`` is a
    realpath, so a symlink met on the way means something was swapped."""
    rel = real[len(root):].lstrip(os.sep) if root != os.sep else real.lstrip(os.sep)
    names = rel.split(os.sep)
    dfd = os.open(root, _O_DIR_FLAGS & ~getattr(os, "O_NOFOLLOW", 0))
    try:
        for name in names[:-1]:
            nfd = os.open(name, _O_DIR_FLAGS, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
        found = os.stat(names[-1], dir_fd=dfd, follow_symlinks=False)
    finally:
        os.close(dfd)
    return found.st_dev == st.st_dev and found.st_ino == st.st_ino


def _open_regular(real: str, root: Optional[str]) -> Tuple[int, os.stat_result]:
    """Open the regular file at the realpath ``real`` once; return ``(fd, fstat)``.

    With a ``root``, the descriptor must be the file at ``real`` under it (see the
    module docstring); ``StaticError`` otherwise, or for any opening error."""
    try:
        fd = os.open(real, _O_FLAGS)
    except OSError as e:
        raise _open_error(e, real) from None
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode):
            raise StaticError(404, "not a regular file (when opened)")
        if root is not None:
            ok = False
            if _PROC_FD is not None:
                try:
                    ok = os.readlink(_PROC_FD + str(fd)) == real
                except OSError:
                    ok = False
            if not ok:
                try:
                    ok = _walk_matches(real, root, st)
                except OSError as e:
                    if e.errno in _BUSY_ERRNOS:
                        raise _open_error(e, real) from None
                    ok = False
                if not ok:
                    raise StaticError(404, "file changed while opening (symlink swapped in?)")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


# -- negotiation and headers ------------------------------------------------------

_QVALUE = re.compile(r"[ \t]*(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)[ \t]*\Z")


def _qvalue(params: str) -> float:
    for param in params.split(";"):
        name, eq, value = param.partition("=")
        if eq and name.strip(" \t").lower() == "q":
            # An unparseable weight counts as 0: never send what was not clearly accepted.
            return float(value) if _QVALUE.match(value) else 0.0
    return 1.0


def accepts_gzip(accept_encoding: Optional[str]) -> bool:
    """Does ``Accept-Encoding`` allow gzip (RFC 9110 §12.5.3)?

    An explicit ``gzip``/``x-gzip`` entry decides by its q-value; otherwise ``*``
    does; otherwise no.  ``q=0`` means "not acceptable"."""
    if not accept_encoding:
        return False
    explicit = None
    star = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip(" \t").lower()
        if coding == "gzip" or coding == "x-gzip":
            q = _qvalue(params)
            explicit = q if explicit is None else max(explicit, q)
        elif coding == "*":
            star = _qvalue(params)
    if explicit is not None:
        return explicit > 0
    return star is not None and star > 0


_ATTR_CHAR = "!#$&+-.^_`|~"  # RFC 8187 §3.2.1 attr-char besides ALPHA / DIGIT


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """``attachment; filename="..."; filename*=UTF-8''...`` (RFC 6266, RFC 8187).

    The quoted form is an ASCII fallback: anything outside printable ASCII, and
    ``"`` ``\\`` ``%`` (some browsers percent-decode it), becomes ``_``; the
    ``filename*`` form carries the exact name percent-encoded."""
    fallback = "".join(c if " " <= c < "\x7f" and c not in '"\\%' else "_" for c in filename)
    from urllib.parse import quote  # (and ipaddress): for downloads and listings only

    exact = quote(filename.encode("utf-8", "surrogateescape"), safe=_ATTR_CHAR)
    return "%s; filename=\"%s\"; filename*=UTF-8''%s" % (disposition, fallback, exact)


def _last_modified(st: os.stat_result) -> int:
    """Last-Modified in whole seconds: the mtime, but never one in the future.

    RFC 9110 §8.8.2.1: an origin MUST NOT send a Last-Modified later than its
    Date.  A file whose mtime is ahead of the clock (unpacked from a host whose
    clock was ahead) would otherwise advertise a date that every later edit is
    "before", and If-Modified-Since would answer 304 after a real change.  Such
    a file gets the last second that is already over (now - 1), so the date
    moves with the clock until it passes the mtime, and
    * an edit made even within the current second gets an mtime after it (the
      next If-Modified-Since is then answered 200, not 304);
    * it is not after the Date header either, which the server refreshes once
      a second (and so may be up to a second old).
    The conditionals are evaluated against this same value.  (The ETag is made
    of size, mtime in ns and inode, not of this date.)"""
    mtime = st.st_mtime_ns // 1_000_000_000
    now = int(time.time())
    return mtime if mtime <= now else now - 1


def _etag(st: os.stat_result, suffix: str = "") -> str:
    # Strong: a new inode (atomic rename deploy) or any write (mtime_ns, size) changes it.
    return '"%x-%x-%x%s"' % (st.st_size, st.st_mtime_ns, st.st_ino, suffix)


# -- the plans -------------------------------------------------------------------


def _plan_regular(
    method: str, get_header: GetHeader, real: str, name: str,
    gz: Optional[str], download: bool,
    cache_control: Optional[str], content_type: Optional[str] = None,
    root: Optional[str] = None, inject: Optional[bytes] = None,
) -> StaticResponse:
    """A regular file ``real`` (already confined to ``root``, if any) whose URL name
    is ``name``.  Opens it (``_open_regular``) and plans from its ``fstat``.

    ``gz``: the real path of the precompressed sibling, if one exists; chosen
    here by Accept-Encoding (if it cannot be opened, the plain file is served)."""
    fd = None
    coding = None
    if inject is not None and _injectable(content_type or content_type_for(name)):
        gz = None  # the page is rewritten: a precompressed sibling cannot be
    else:
        inject = None
    if gz is not None and accepts_gzip(get_header("accept-encoding")):
        try:
            fd, st = _open_regular(gz, root)
            real = gz
            coding = "gzip"
        except StaticError as e:
            if e.status == 503:
                raise
    if fd is None:
        fd, st = _open_regular(real, root)
    plan = None
    try:
        if inject is not None and st.st_size <= MAX_INJECT_SIZE:
            plan = _plan_injected(method, get_header, fd, real, st, name, inject, download, cache_control,
                                  content_type)
            return plan
        plan = _plan_open(method, get_header, fd, real, st, name, gz is not None, coding,
                          download, cache_control, content_type)
        return plan
    finally:
        # a single file part keeps the descriptor itself; otherwise the plan holds dups
        if plan is None or len(plan.parts) != 1 or plan.parts[0].__class__ is not FilePart:
            os.close(fd)


def _plan_open(
    method: str, get_header: GetHeader, fd: int, real: str, st: os.stat_result, name: str,
    has_gz: bool, coding: Optional[str], download: bool,
    cache_control: Optional[str], content_type: Optional[str],
) -> StaticResponse:
    mime = content_type or content_type_for(name)
    size = st.st_size
    etag = _etag(st, "-gz" if coding else "")
    last_modified = _last_modified(st)
    validators = [("ETag", etag), ("Last-Modified", http_date(last_modified))]
    if cache_control is not None:
        validators.append(("Cache-Control", cache_control))
    if has_gz:
        validators.append(("Vary", "Accept-Encoding"))

    verdict = evaluate_preconditions(method, get_header, etag, last_modified)
    if verdict == 304:
        return StaticResponse(304, validators, [], 0, "not modified", real)
    if verdict == 412:
        return _small(method, 412, "precondition failed", validators)

    headers = [("Content-Type", mime)]
    if coding:
        headers.append(("Content-Encoding", coding))
    headers.append(("Accept-Ranges", "bytes"))
    headers.extend(validators)
    if download:
        headers.append(("Content-Disposition", content_disposition(name)))
    headers.append(_NOSNIFF)

    if method != "GET":
        return StaticResponse(200, headers, [], size, "", real)
    try:
        range_value = get_header("range")
        if range_value is not None:
            if_range = get_header("if-range")
            if if_range is None or if_range_allows(if_range, etag, last_modified):
                ranges = parse_range(range_value, size)
                if ranges is not None:
                    if not ranges:
                        extra = [("Content-Range", "bytes */%d" % size), ("Accept-Ranges", "bytes")]
                        if has_gz:
                            extra.append(("Vary", "Accept-Encoding"))
                        return _small(method, 416, "range not satisfiable", extra)
                    if len(ranges) == 1:
                        first, last = ranges[0]
                        headers.append(("Content-Range", content_range(first, last, size)))
                        count = last - first + 1
                        return StaticResponse(206, headers, [FilePart(fd, real, first, count)],
                                              count, "", real)
                    ctype, parts, length = multipart_byteranges(fd, real, ranges, size, mime)
                    headers[0] = ("Content-Type", ctype)
                    return StaticResponse(206, headers, parts, length, "", real)
        return StaticResponse(200, headers, [FilePart(fd, real, 0, size)] if size else [],
                              size, "", real)
    except OSError as e:  # dup (multi-range): out of descriptors
        raise _open_error(e, real) from None


# -- HTML injection (live reload) --------------------------------------------------
#
# ``StaticOptions(inject_html=b"<script>...</script>")``: every text/html page
# (by content type, so index files and .htm too) is served with those bytes
# inserted before its last ``</body>`` (anywhere in the case), or appended when
# there is none.  The answer stays exact HTTP:
# * Content-Length is the file's size plus the snippet's (HEAD says the same
#   number without reading the file; a file that changes between the stat
#   and the read gets the length of what was read);
# * the ETag carries a suffix derived from the snippet ("-i" + 8 hex digits of
#   its CRC-32), so a cache never mixes injected and plain copies, and the
#   conditional requests (If-None-Match, If-Modified-Since, If-Match...) are
#   evaluated against that tag;
# * ranges are not offered (``Accept-Ranges: none``; a Range header gets the
#   whole page, as RFC 9110 14.2 allows), and a precompressed .gz sibling is
#   not used;
# * pages over MAX_INJECT_SIZE are sent as they are (no copy in memory).
# Other content types are untouched.

MAX_INJECT_SIZE = 8 << 20
_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)


def _injectable(mime: str) -> bool:
    return mime.split(";", 1)[0].strip().lower() == "text/html"


def inject_into_html(page: bytes, snippet: bytes) -> bytes:
    """``page`` with ``snippet`` before its last ``</body>`` (or at its end)."""
    ends = [m.start() for m in _BODY_END.finditer(page)]
    if not ends:
        return page + snippet
    return page[:ends[-1]] + snippet + page[ends[-1]:]


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    pos = 0
    while pos < size:
        b = os.pread(fd, min(size - pos, 1 << 20), pos)
        if not b:
            break
        chunks.append(b)
        pos += len(b)
    return b"".join(chunks)


def _plan_injected(
    method: str, get_header: GetHeader, fd: int, real: str, st: os.stat_result, name: str,
    inject: bytes, download: bool, cache_control: Optional[str], content_type: Optional[str],
) -> StaticResponse:
    import zlib
    mime = content_type or content_type_for(name)
    etag = _etag(st, "-i%08x" % (zlib.crc32(inject) & 0xFFFFFFFF))
    last_modified = _last_modified(st)
    validators = [("ETag", etag), ("Last-Modified", http_date(last_modified))]
    if cache_control is not None:
        validators.append(("Cache-Control", cache_control))
    verdict = evaluate_preconditions(method, get_header, etag, last_modified)
    if verdict == 304:
        return StaticResponse(304, validators, [], 0, "not modified", real)
    if verdict == 412:
        return _small(method, 412, "precondition failed", validators)
    headers = [("Content-Type", mime), ("Accept-Ranges", "none")]
    headers.extend(validators)
    if download:
        headers.append(("Content-Disposition", content_disposition(name)))
    headers.append(_NOSNIFF)
    if method != "GET":
        return StaticResponse(200, headers, [], st.st_size + len(inject), "", real)
    try:
        body = inject_into_html(_read_all(fd, st.st_size), inject)
    except OSError as e:
        raise _open_error(e, real) from None
    return StaticResponse(200, headers, [body], len(body), "", real)


def _find_gz(requested: str, opts: StaticOptions, root: _Root) -> Optional[str]:
    """The real path of the ``.gz`` sibling of the requested path: a regular file
    inside the root."""
    if not opts.precompressed or requested.endswith(".gz"):
        return None
    try:
        real = _confine(requested + ".gz", opts, root)
        st = os.stat(real)
    except (StaticError, OSError):
        return None
    return real if _stat.S_ISREG(st.st_mode) else None


def _serve_path(method: str, get_header: GetHeader, requested: str, name: str,
                opts: StaticOptions, root: _Root) -> StaticResponse:
    real = _confine(requested, opts, root)
    st = _stat_or_refuse(real)
    if not _stat.S_ISREG(st.st_mode):
        raise StaticError(404, "not a regular file")
    return _plan_regular(method, get_header, real, name, _find_gz(requested, opts, root),
                         opts.download, opts.cache_control, None, root.real, opts.inject_html)


# -- request fields ---------------------------------------------------------------
#
# RFC 9110 §5.3: a field sent on several lines means the same as one line with
# the values joined by commas.  Of the fields read here, these are lists (the
# others -- Range, If-Range, the dates -- are single values, first line wins).
_LIST_FIELDS = frozenset(("if-match", "if-none-match", "accept-encoding"))


class _JoinedFields:
    """``get_header`` that joins the lines of a repeated list field (see above)."""

    __slots__ = ("_get", "_get_all")

    def __init__(self, get: GetHeader, get_all: Callable[[str], List[str]]) -> None:
        self._get = get
        self._get_all = get_all

    def __call__(self, name: str) -> Optional[str]:
        value = self._get(name)
        if value is not None and name in _LIST_FIELDS:
            values = self._get_all(name)
            if len(values) > 1:
                value = ", ".join(values)
        return value


def _field_reader(headers: Headerish) -> GetHeader:
    """The ``get_header`` the planners use, from what the caller gave: a
    callable ``name -> value``, or a headers object with ``get`` and ``get_all``
    (powpow's ``Headers``).  A bound ``get`` of such an object (``req.headers.get``)
    counts as the object, so repeated list fields are joined either way; with
    any other callable the caller's value is all there is."""
    owner = getattr(headers, "__self__", None) if getattr(headers, "__name__", None) == "get" else None
    if owner is None:
        owner = headers
    get_all = getattr(owner, "get_all", None)
    if get_all is None:
        return headers if callable(headers) else headers.get
    return _JoinedFields(owner.get, get_all)  # type: ignore[union-attr]


def plan_static(method: str, raw_target_path: str, get_header: Headerish,
                opts: StaticOptions) -> Optional[StaticResponse]:
    """Plan the answer to ``method raw_target_path`` from the files under ``opts.root``.

    ``raw_target_path``: the path as received (percent-encoded, no query).
    ``get_header``: the request's fields -- ``req.headers`` (or its bound
    ``get``), or any ``get_header(lowercase_name) -> value or None``; with the
    former, a list field sent on several lines (If-None-Match...) counts whole.
    Returns None when the path is not under ``opts.prefix`` (the caller's own
    handler takes over); otherwise a ``StaticResponse``, never an exception."""
    prefix = opts.prefix
    if raw_target_path.startswith(prefix):
        rest = raw_target_path[len(prefix):]
    elif raw_target_path == prefix[:-1]:
        rest = None  # the mount point itself without its slash: "/static"
    else:
        return None
    if method != "GET" and method != "HEAD":
        return _not_allowed(method)
    if rest is None:
        return _redirect(method, raw_target_path)
    get_header = _field_reader(get_header)
    try:
        names, trailing = _split_target(rest, opts.show_hidden)
        root = _current_root(opts)  # once: the whole answer is planned against this resolution
        requested = os.path.join(root.real, *names) if names else root.real
        real = _confine(requested, opts, root)
        st = _stat_or_refuse(real)
        if _stat.S_ISDIR(st.st_mode):
            if not trailing:
                return _redirect(method, raw_target_path)
            for index in opts.index:
                try:
                    return _serve_path(method, get_header, os.path.join(requested, index),
                                       index, opts, root)
                except StaticError as e:
                    # Only an index that is not there lets the next name or the listing
                    # answer; one that is there but refused (unreadable, a symlink out of
                    # the root: 403) or unopenable (503) is the answer, as with nginx --
                    # a listing would show what the index was put there to hide.
                    if e.status != 404:
                        raise
            if opts.listing:
                return _plan_listing(method, real, prefix + "/".join(names) + ("/" if names else ""),
                                     bool(names), opts, root)
            raise StaticError(404, "directory without index (listing off)")
        if trailing:
            raise StaticError(404, "not a directory")
        if not _stat.S_ISREG(st.st_mode):
            raise StaticError(404, "not a regular file")
        return _plan_regular(method, get_header, real, names[-1], _find_gz(requested, opts, root),
                             opts.download, opts.cache_control, None, root.real, opts.inject_html)
    except StaticError as e:
        return _small(method, e.status, e.reason, e.headers)


def plan_file(method: str, path: Union[str, "os.PathLike[str]"], get_header: Headerish, *,
              download: bool = False, filename: Optional[str] = None,
              content_type: Optional[str] = None,
              cache_control: Optional[str] = None) -> StaticResponse:
    """Plan the answer for one file the application chose (``res.send_file``).

    The path is trusted (no root, no dotfile rule, no .gz sibling); everything
    else -- validators, conditionals, ranges, HEAD, 405 -- is as in plan_static.
    ``filename`` names the download (default: the file's base name) and picks
    the MIME type unless ``content_type`` is given."""
    if method != "GET" and method != "HEAD":
        return _not_allowed(method)
    path = os.fspath(path)
    if cache_control is not None:
        _check_value("cache_control", cache_control)
    name = filename or os.path.basename(path)
    get_header = _field_reader(get_header)
    try:
        real = os.path.realpath(path)
        return _plan_regular(method, get_header, real, name, None, download, cache_control,
                             content_type)
    except StaticError as e:
        return _small(method, e.status, e.reason, e.headers)


def _redirect(method: str, raw_target_path: str) -> StaticResponse:
    # The raw path is reused as received (still percent-encoded, so no CR/LF can
    # be in it).  A Location starting with "//" would be another host: never.
    location = raw_target_path + "/"
    if location.startswith("//"):
        return _small(method, 404, "empty path segment")
    return _small(method, 301, "directory without trailing slash", [("Location", location)])


# -- directory listing ---------------------------------------------------------------


def _display(name: str) -> str:
    """A file name as text: undecodable bytes become U+FFFD, then HTML-escaped."""
    import html  # (with html.entities): listings only

    return html.escape(os.fsencode(name).decode("utf-8", "replace"), quote=True)


def _plan_listing(method: str, real_dir: str, url_path: str, has_parent: bool,
                  opts: StaticOptions, root: _Root) -> StaticResponse:
    from urllib.parse import quote

    rows: List[Tuple[bool, str, int, float]] = []
    truncated = False
    try:
        with os.scandir(real_dir) as it:
            for entry in it:
                if len(rows) >= MAX_LISTING_ENTRIES:
                    truncated = True
                    break
                name = entry.name
                if name.startswith(".") and not opts.show_hidden:
                    continue
                if _UNSERVABLE.search(name):
                    continue  # _decode_segment refuses such a name: a link to it would be a 403
                try:
                    if entry.is_symlink():
                        _confine(entry.path, opts, root)  # would be refused: do not list it
                    st = entry.stat()
                except (StaticError, OSError):
                    continue
                is_dir = _stat.S_ISDIR(st.st_mode)
                if not is_dir and not _stat.S_ISREG(st.st_mode):
                    continue
                rows.append((not is_dir, name, st.st_size, st.st_mtime))
    except OSError as e:
        raise _open_error(e, real_dir) from None
    rows.sort()

    title = _display(url_path)
    out = [
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width\">"
        "<title>Index of %s</title>\n<style>body{font-family:sans-serif}"
        "td{padding:0 1em}td:nth-child(2){text-align:right}</style></head>\n"
        "<body><h1>Index of %s</h1>\n<table>\n"
        "<tr><th>Name</th><th>Size</th><th>Last modified (UTC)</th></tr>\n" % (title, title)
    ]
    if has_parent:
        out.append('<tr><td><a href="../">../</a></td><td>-</td><td></td></tr>\n')
    for is_file, name, size, mtime in rows:
        href = quote(os.fsencode(name), safe="") + ("" if is_file else "/")
        label = _display(name) + ("" if is_file else "/")
        out.append('<tr><td><a href="%s">%s</a></td><td>%s</td><td>%s</td></tr>\n' % (
            href, label, size if is_file else "-",
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(mtime))))
    out.append("</table>\n")
    if truncated:
        out.append("<p>Listing truncated after %d entries.</p>\n" % MAX_LISTING_ENTRIES)
    out.append("</body></html>\n")
    body = "".join(out).encode("utf-8")
    headers = [("Content-Type", "text/html; charset=utf-8"),
               ("Cache-Control", opts.cache_control or "no-cache"),
               _NOSNIFF, _LISTING_CSP]
    return StaticResponse(200, headers, [] if method == "HEAD" else [body], len(body), "", real_dir)
