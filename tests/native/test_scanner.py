"""The CRLF scanner: compiled SSE2 code, compiled scalar code and both pure twins agree.

Every run compares real C against the pure twins, whatever the mode:

* ``sse`` / ``nosse``: test-only modules built here from ``src/pp_scan.c``
  (see ``_testlib``): the SSE2 build with its static scalar functions
  exposed, and the build a platform without SSE2 would ship;
* ``shipped``: the installed ``powpow._ffi._native`` (loaded directly, even
  under POWPOW_PURE=1).  Missing, it is left out of the comparison -- unless
  ``POWPOW_REQUIRE_NATIVE=1``, where ``test_shipped_module_present`` fails;
* ``find`` / ``numpy``: the pure twins in ``powpow._ffi._scan``;
* ``public``: ``powpow._ffi.scan_lines`` as the package uses it (native or pure).
"""
import array
import atexit
import importlib
import os
import platform
import random
import shutil
import tempfile

import pytest

from powpow import _ffi
from powpow._ffi import _scan

from . import _testlib

REQUIRE_NATIVE = os.environ.get("POWPOW_REQUIRE_NATIVE", "") not in ("", "0")

try:
    shipped = importlib.import_module("powpow._ffi._native")
except ImportError as exc:  # no build: compared without it (test_shipped_module_present says if that is wrong)
    shipped = None
    SHIPPED_ERROR = exc
else:
    SHIPPED_ERROR = None

_BUILD_DIR = tempfile.mkdtemp(prefix="powpow-native-test-")
atexit.register(shutil.rmtree, _BUILD_DIR, True)
sse = _testlib.build(_BUILD_DIR, "_pp_scan_test_sse_%d" % os.getpid())
nosse = _testlib.build(_BUILD_DIR, "_pp_scan_test_nosse_%d" % os.getpid(), no_sse2=True)
tffi, tlib = sse.ffi, sse.lib

X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386", "x86")

ALPHABET = b"ab:\r\n\t \x00\x7f\x80\x1f"


def c_scan(fn, buf, start, end, cap, line_begin=None):
    out = tffi.new("uint32_t[]", max(cap, 1))
    lb = start if line_begin is None else line_begin
    r = fn(tffi.from_buffer(buf), start, end, lb, out, cap)
    n = r & 0xFFFFFFFF
    return n, (r >> 32) - 1, list(out[0:n])


def py_scan(fn, buf, start, end, cap, line_begin=None):
    out = array.array("I", bytes(4 * cap))
    lb = start if line_begin is None else line_begin
    n, bad = fn(buf, start, end, out, lb)
    return n, bad, list(out[:n])


def all_scans(buf, start, end, cap=64, line_begin=None):
    results = {
        "sse2": c_scan(tlib.pp_scan_lines, buf, start, end, cap, line_begin),
        "scalar": c_scan(tlib.pp_scan_lines_scalar, buf, start, end, cap, line_begin),
        "nosse_build": c_scan(nosse.lib.pp_scan_lines, buf, start, end, cap, line_begin),
        "find": py_scan(_scan.scan_lines_find, buf, start, end, cap, line_begin),
    }
    if shipped is not None:
        results["shipped"] = c_scan(shipped.lib.pp_scan_lines, buf, start, end, cap, line_begin)
    if _scan.HAVE_NUMPY:
        results["numpy"] = py_scan(_scan.scan_lines_numpy, buf, start, end, cap, line_begin)
    out = _ffi.new_line_offsets(cap)
    n, bad = _ffi.scan_lines(buf, start, end, out, -1 if line_begin is None else line_begin)
    results["public"] = (n, bad, [out[i] for i in range(n)])
    return results


def assert_same(buf, start, end, cap=64, line_begin=None):
    res = all_scans(buf, start, end, cap, line_begin)
    first = res["scalar"]
    for name, r in res.items():
        assert r == first, (name, r, first, buf[start:end])
    return first


def finds(buf, start, end):
    p = tffi.from_buffer(buf)
    res = {
        "crlf_sse2": tlib.pp_find_crlf(p, start, end),
        "crlf_scalar": tlib.pp_find_crlf_scalar(p, start, end),
        "crlf_nosse_build": nosse.lib.pp_find_crlf(p, start, end),
        "crlf_py": _scan.find_crlf(buf, start, end),
        "crlf_public": _ffi.find_crlf(buf, start, end),
    }
    res2 = {
        "dbl_sse2": tlib.pp_find_double_crlf(p, start, end),
        "dbl_scalar": tlib.pp_find_double_crlf_scalar(p, start, end),
        "dbl_nosse_build": nosse.lib.pp_find_double_crlf(p, start, end),
        "dbl_py": _scan.find_double_crlf(buf, start, end),
        "dbl_public": _ffi.find_double_crlf(buf, start, end),
    }
    if shipped is not None:
        res["crlf_shipped"] = shipped.lib.pp_find_crlf(p, start, end)
        res2["dbl_shipped"] = shipped.lib.pp_find_double_crlf(p, start, end)
    assert len(set(res.values())) == 1, res
    assert len(set(res2.values())) == 1, res2
    return res["crlf_py"], res2["dbl_py"]


# ---------------------------------------------------------------- what is compared

def test_shipped_module_present():
    """POWPOW_REQUIRE_NATIVE=1 (the native CI runs): the shipped module must load."""
    if REQUIRE_NATIVE:
        assert shipped is not None, "powpow._ffi._native missing: %s" % (SHIPPED_ERROR,)
    if shipped is not None:
        assert shipped.lib.PP_HAVE_SSE2 == tlib.PP_HAVE_SSE2  # the same code as compared here


def test_the_compared_builds_really_differ():
    """The comparison is SSE2 vs scalar on x86, never a build against itself."""
    assert nosse.lib.PP_HAVE_SSE2 == 0
    assert tlib.PP_HAVE_SSE2 == (1 if X86 else 0)


def test_test_only_entry_points_are_not_shipped():
    if shipped is None:
        assert REQUIRE_NATIVE is False
        return
    for name in ("pp_scan_lines_scalar", "pp_find_crlf_scalar", "pp_find_double_crlf_scalar",
                 "pp_guarded_alloc", "pp_guarded_free", "pp_signalfd"):
        assert not hasattr(shipped.lib, name), name


# ---------------------------------------------------------------- exact cases

def test_typical_request_head():
    head = (b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n"
            b"Connection: keep-alive\r\n\r\nBODY")
    n, bad, offs = assert_same(head, 0, len(head))
    assert bad == -1
    assert [head[o:o + 2] for o in offs] == [b"\r\n"] * 5
    assert offs[-1] == offs[-2] + 2  # blank line ends the block
    assert head[offs[-1] + 2:] == b"BODY"


@pytest.mark.parametrize("bad_byte", [0x00, 0x01, 0x08, 0x0B, 0x0C, 0x0E, 0x1F, 0x7F])
def test_forbidden_control_bytes(bad_byte):
    buf = b"GET / HTTP/1.1\r\nX: a" + bytes([bad_byte]) + b"b\r\n\r\n"
    n, bad, offs = assert_same(buf, 0, len(buf))
    assert bad == 20 and n == 1


def test_htab_and_obs_text_allowed():
    buf = b"X: a\tb\x80\xff\r\n\r\n"
    n, bad, _ = assert_same(buf, 0, len(buf))
    assert bad == -1 and n == 2


def test_bare_cr_and_bare_lf_are_forbidden():
    for buf, pos in ((b"X: a\rb\r\n\r\n", 4), (b"X: a\nb\r\n\r\n", 4), (b"X: a\r\r\n", 4),
                     (b"X: a\n\r\n", 4), (b"\n", 0)):
        n, bad, _ = assert_same(buf, 0, len(buf))
        assert bad == pos, buf


def test_pending_cr_at_end_is_not_forbidden():
    buf = b"Host: x\r"
    assert assert_same(buf, 0, len(buf)) == (0, -1, [])
    buf = b"Host: x\r\n\r"
    assert assert_same(buf, 0, len(buf)) == (1, -1, [7])


def test_resume_with_line_begin():
    buf = b"Host: x\r\n\r\n"
    # resuming mid-line at the pending CR: a CRLF there is not a blank line
    assert assert_same(buf, 7, len(buf), line_begin=0) == (2, -1, [7, 9])
    # resuming at a line start: CRLF there is the blank line
    assert assert_same(buf, 9, len(buf)) == (1, -1, [9])


def test_stops_when_out_is_full():
    buf = b"a\r\nb\r\nc\r\nd\r\n\r\n"
    assert assert_same(buf, 0, len(buf), cap=2) == (2, -1, [1, 4])
    assert assert_same(buf, 0, len(buf), cap=0)[0] == 0


@pytest.mark.parametrize("boundary", [16, 32, 48])
def test_crlf_straddling_a_16_byte_block(boundary):
    # the original library missed a CRLF whose CR ends one SSE block and LF starts the next
    for shift in range(0, 3):
        buf = bytearray(b"x" * 80)
        cr = boundary - 1 - shift
        buf[cr:cr + 2] = b"\r\n"
        buf = bytes(buf)
        assert finds(buf, 0, len(buf))[0] == cr
        n, bad, offs = assert_same(buf, 0, len(buf))
        assert (n, bad, offs) == (1, -1, [cr])
    buf = bytearray(b"y" * 80)
    buf[boundary - 2:boundary + 2] = b"\r\n\r\n"
    assert finds(bytes(buf), 0, 80)[1] == boundary - 2


def test_find_respects_end():
    buf = b"abc\r\ndef"
    assert finds(buf, 0, 4) == (-1, -1)  # LF outside the range
    assert finds(buf, 0, 5)[0] == 3
    assert finds(buf, 4, 8)[0] == -1


# ---------------------------------------------------------------- exhaustive-ish

def test_every_length_0_to_64_at_every_alignment():
    r = random.Random(1234)
    for length in range(0, 65):
        for align in range(0, 17):
            for _ in range(3):
                body = bytes(r.choice(ALPHABET) for _ in range(length))
                buf = b"\xaa" * align + body + b"\r\n\xaa"
                assert_same(buf, align, align + length)
                finds(buf, align, align + length)
                # mostly-clean text with CRLFs: exercises the SSE skip path
                text = bytearray(r.choice(b"abcdef: ") for _ in range(length))
                for _ in range(r.randrange(0, 4)):
                    if length >= 2:
                        p = r.randrange(0, length - 1)
                        text[p:p + 2] = b"\r\n"
                buf = b"\x00" * align + bytes(text) + b"\x00"
                assert_same(buf, align, align + length)
                finds(buf, align, align + length)


def test_random_buffers_seeded():
    r = random.Random(99)
    for _ in range(2000):
        n = r.randrange(0, 300)
        buf = bytes(r.choice(b"ab\r\n\r\n: \t\x00") for _ in range(n))
        s = r.randrange(0, n + 1)
        e = r.randrange(s, n + 1)
        assert_same(buf, s, e, cap=r.choice([1, 2, 5, 64]))
        finds(buf, s, e)


def test_large_clean_header_block_uses_numpy_twin_identically():
    lines = b"".join(b"X-Header-%d: %s\r\n" % (i, b"v" * (i % 50)) for i in range(300))
    buf = b"GET / HTTP/1.1\r\n" + lines + b"\r\n"
    assert len(buf) > _scan.NUMPY_MIN_SPAN
    n, bad, offs = assert_same(buf, 0, len(buf), cap=400)
    assert n == 302 and bad == -1


def test_bytearray_input():
    buf = bytearray(b"A: b\r\n\r\n")
    assert assert_same(buf, 0, len(buf)) == (2, -1, [4, 6])


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    given = None

if given is not None:
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200), st.integers(0, 200), st.integers(0, 200), st.integers(1, 70))
    def test_hypothesis_identical(buf, a, b, cap):
        s, e = sorted((min(a, len(buf)), min(b, len(buf))))
        assert_same(buf, s, e, cap=cap)
        finds(buf, s, e)


# ---------------------------------------------------------------- memory safety

def test_buffer_ending_at_a_page_boundary_is_never_over_read():
    """Data placed right before a PROT_NONE page: any over-read would segfault."""
    r = random.Random(7)
    scanners = [tlib.pp_scan_lines, tlib.pp_scan_lines_scalar, nosse.lib.pp_scan_lines]
    finders = [(tlib.pp_find_crlf, _scan.find_crlf), (tlib.pp_find_crlf_scalar, _scan.find_crlf),
               (tlib.pp_find_double_crlf, _scan.find_double_crlf),
               (tlib.pp_find_double_crlf_scalar, _scan.find_double_crlf)]
    if shipped is not None:
        scanners.append(shipped.lib.pp_scan_lines)
        finders += [(shipped.lib.pp_find_crlf, _scan.find_crlf),
                    (shipped.lib.pp_find_double_crlf, _scan.find_double_crlf)]
    for length in list(range(0, 40)) + [63, 64, 65, 4095, 4096]:
        p = tlib.pp_guarded_alloc(length)
        assert p != tffi.NULL
        try:
            body = bytes(r.choice(b"ab\r\n:") for _ in range(length))
            if length >= 1:
                body = body[:-1] + b"\r"  # ends on a CR: the scanner must not peek past it
            tffi.memmove(p, body, length)
            out = tffi.new("uint32_t[]", 4096)
            expect = py_scan(_scan.scan_lines_find, body, 0, length, 4096)
            for fn in scanners:
                r1 = fn(p, 0, length, 0, out, 4096)
                n = r1 & 0xFFFFFFFF
                assert (n, (r1 >> 32) - 1, list(out[0:n])) == expect
            for fn, twin in finders:
                assert fn(p, 0, length) == twin(body, 0, length)
        finally:
            tlib.pp_guarded_free(p, length)


def test_native_flag_matches_mode():
    pure = os.environ.get("POWPOW_PURE", "") not in ("", "0")
    assert _ffi.NATIVE is (not pure and shipped is not None)
    if _ffi.NATIVE:
        assert _ffi.HAVE_SSE2 == bool(shipped.lib.PP_HAVE_SSE2)


# --- scan_head: scan_lines + colons + names signature (issue 13) -------------

def c_scan_head(mod, buf, start, end, cap, sig_cap, last):
    f, lib = mod.ffi, mod.lib
    out = f.new("uint32_t[]", cap)
    colons = f.new("uint32_t[]", cap)
    sig = f.new("char[]", sig_cap + 1)
    r = lib.pp_scan_head(f.from_buffer(buf), start, end, out, cap, colons, sig, sig_cap,
                         f.NULL if last is None else last, -1 if last is None else len(last))
    n = r & 0xFFFFFFF
    got = [r, list(out[0:n])]
    if r >> 28 & 1:
        k = colons[0]
        got += [f.buffer(sig, k)[:], list(colons[1 : n - 1]), colons[n - 1]]
    return got


def py_scan_head(buf, start, end, cap, sig_cap, last):
    out = array.array("I", bytes(4 * cap))
    colons = array.array("I", bytes(4 * cap))
    mem = bytearray(sig_cap + 1)
    r = _scan.scan_head(buf, start, end, out, colons, mem, sig_cap, last)
    n = r & 0xFFFFFFF
    got = [r, list(out[:n])]
    if r >> 28 & 1:
        got += [bytes(mem[: colons[0]]), list(colons[1 : n - 1]), colons[n - 1]]
    return got


def assert_same_head(buf, start, end, cap=16, sig_cap=64, last=None):
    want = py_scan_head(buf, start, end, cap, sig_cap, last)
    for mod in (sse, nosse):
        assert c_scan_head(mod, buf, start, end, cap, sig_cap, last) == want, (buf, start, end, cap, sig_cap)
    # and scan_lines' part is exactly scan_lines
    n, bad, offs = py_scan(_scan.scan_lines_find, buf, start, end, cap, start)
    assert want[0] & ~(3 << 28) == n | ((bad + 1) << 32) and want[1] == offs
    return want


def test_scan_head_typical_request():
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Y:  z:w\r\n\r\nbody"
    r, lines, sig, colons, rl = assert_same_head(head, 0, len(head))
    assert r >> 28 == 1 and lines == [14, 23, 34, 36]
    assert sig == b"Host:X-Y:" and colons == [20, 28] and rl == 1 | 16 | 64 | 128
    # the same names as the signature validated last: HEAD_SAME
    assert assert_same_head(head, 0, len(head), last=b"Host:X-Y:")[0] >> 28 == 3
    assert assert_same_head(head, 0, len(head), last=b"Host:X-Z:")[0] >> 28 == 1
    assert assert_same_head(head, 0, len(head), last=b"Host:")[0] >> 28 == 1


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nHost: a\r\n",                 # incomplete
    b"GET / HTTP/1.1\r\nHost a\r\n\r\n",              # a line without colon
    b"GET / HTTP/1.1\r\nHo\x01st: a\r\n\r\n",         # forbidden byte
    b"GET / HTTP/1.1\r\nHost: a\r\nX\rY: b\r\n\r\n",   # bare CR
])
def test_scan_head_no_signature(head):
    assert assert_same_head(head, 0, len(head))[0] >> 28 & 3 == 0


def test_scan_head_signature_cap():
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%02d: v\r\n" % i for i in range(20)) + b"\r\n"
    assert assert_same_head(head, 0, len(head), cap=32, sig_cap=100)[0] >> 28 == 1  # 20 * 5 bytes
    assert assert_same_head(head, 0, len(head), cap=32, sig_cap=99)[0] >> 28 == 0
    assert assert_same_head(head, 0, len(head), cap=8)[0] >> 28 == 0  # out full before the end


def test_scan_head_random_seeded():
    r = random.Random(13)
    names = [b"Host", b"a", b"X-Y", b"", b" b", b"c "]
    for _ in range(1500):
        lines = [b"GET / HTTP/1.1"] + [r.choice(names) + r.choice([b":", b": v", b":v:w", b""])
                                         for _ in range(r.randrange(0, 6))]
        buf = b"\r\n".join(lines) + b"\r\n\r\n" + r.choice([b"", b"x", b"\r"])
        if r.random() < 0.3:
            i = r.randrange(len(buf))
            buf = buf[:i] + bytes([r.choice(ALPHABET)]) + buf[i + 1 :]
        end = r.randrange(len(buf) // 2, len(buf) + 1)
        last = r.choice([None, b"", b"Host:", b"Host:a:"])
        assert_same_head(buf, 0, end, cap=r.choice([2, 4, 16]), sig_cap=r.choice([0, 5, 64]), last=last)


@pytest.mark.parametrize("line, want", [
    (b"GET /a?b=c%20 HTTP/1.1", 1 | 16 | 64),
    (b"GET /a/b%20 HTTP/1.1", 1 | 16 | 64 | 128),
    (b"HEAD / HTTP/1.0", 2 | 32 | 64 | 128),
    (b"PATCH /x? HTTP/1.1", 9 | 16 | 64),
    (b"CONNECT a:1 HTTP/1.1", 6 | 16),          # not origin-form: the parser decides
    (b"OPTIONS * HTTP/1.1", 7 | 16),
    (b"GET http://a/ HTTP/1.1", 1 | 16),
    (b"GET /a#b HTTP/1.1", 1 | 16),             # '#' is not allowed in a target
    (b"GET /a\x80 HTTP/1.1", 1 | 16),           # nor obs-text
    (b"GET /a b HTTP/1.1", 1 | 16),              # nor SP
    (b"GET  HTTP/1.1", 1),                       # empty target
    (b"GET / HTTP/1.2", 1),
    (b"GET / http/1.1", 1),
    (b"get / HTTP/1.1", 0),                      # methods are case-sensitive
    (b"GETX / HTTP/1.1", 0),
    (b"FOO / HTTP/1.1", 0),
    (b" GET / HTTP/1.1", 0),
    (b"GET", 0),
])
def test_scan_head_request_line(line, want):
    head = line + b"\r\nHost: a\r\n\r\n"
    got = assert_same_head(head, 0, len(head))
    assert got[0] >> 28 == 1 and got[4] == want
    # the same from an offset (pipelined requests)
    head = b"xyz" + head
    assert assert_same_head(head, 3, len(head))[4] == want


def test_scan_head_request_line_random_seeded():
    r = random.Random(1313)
    parts = [b"GET", b"PUT", b"CONNECT", b"X", b" ", b"/", b"/a?b", b"#", b"\x80", b"*",
             b" HTTP/1.1", b" HTTP/1.0", b"HTTP/1.1", b"%", b"\t"]
    for _ in range(3000):
        line = b"".join(r.choice(parts) for _ in range(r.randrange(0, 7)))
        head = line + b"\r\nHost: a\r\n\r\n"
        assert_same_head(head, 0, len(head))


def test_scan_head_public_twins_agree():
    """powpow._ffi.scan_head as the parser uses it, in either mode."""
    head = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: c=1\r\n\r\n"
    sc = _ffi.head_scratch(8)
    assert _ffi.head_scratch(8) is sc and _ffi.head_scratch(9) is not sc
    r = _ffi.scan_head(head, 0, len(head), sc, None)
    n = r & 0xFFFFFFF
    assert list(_ffi.unpack_lines(n, sc.linebuf)) == [14, 23, 36, 38]
    assert r >> 28 & 1  # the signature is made in every mode (issue 13)
    assert bytes(sc.mem[: sc.cols[0]]) == b"Host:Cookie:" and sc.cols[1] == 20


def _shipped_head_lines():
    """The CPython builtin ``head_lines`` of the shipped module (also under POWPOW_PURE=1), or None."""
    if shipped is None or platform.python_implementation() != "CPython":
        return None
    d: dict = {}
    assert shipped.lib.pp_cpy_io_install(id(d)) == 0
    return d["head_lines"]


_NO_BUILTIN = "the head_lines builtin exists on CPython with the native build only (PyPy calls the twin)"


@pytest.mark.skipif(_shipped_head_lines() is None, reason=_NO_BUILTIN)
def test_head_lines_builtin_matches_pure_scan_head():
    """head_lines (the parser's hot call on CPython: a FASTCALL builtin, issue 13)
    returns exactly pp_scan_head's value and offsets, and fills cols/sig the same."""
    builtin = _shipped_head_lines()
    rnd = random.Random(1414)
    names = [b"Host", b"a", b"X-Y", b"", b" b", b"Cookie"]
    for i in range(2000):
        lines = [rnd.choice([b"GET / HTTP/1.1", b"POST /a?b HTTP/1.0", b"X"])]
        lines += [rnd.choice(names) + rnd.choice([b":", b": v", b":v:w", b""]) for _ in range(rnd.randrange(0, 7))]
        buf = b"\r\n".join(lines) + b"\r\n\r\n" + rnd.choice([b"", b"x", b"\r"])
        if rnd.random() < 0.3:
            k = rnd.randrange(len(buf))
            buf = buf[:k] + bytes([rnd.choice(ALPHABET)]) + buf[k + 1 :]
        pre = rnd.choice([b"", b"abc"])
        buf = pre + buf
        start = len(pre)
        end = rnd.randrange(start + (len(buf) - start) // 2, len(buf) + 1)
        cap = rnd.choice([2, 4, 16])
        sig_cap = rnd.choice([1, 5, 64])
        last = rnd.choice([None, b"", b"Host:", b"Host:a:"])
        want = py_scan_head(buf, start, end, cap, sig_cap, last)
        parts = (bytearray(4 * cap), bytearray(4 * cap), bytearray(sig_cap))
        arg = buf if i % 2 else bytearray(buf)  # bytes, or any buffer
        r, offs = builtin(arg, start, end, parts, last)
        assert r == want[0], (buf, start, end)
        n = r & 0xFFFFFFF
        cols = array.array("I", bytes(parts[1]))
        if r >> 28 & 1:
            assert type(offs) is tuple and list(offs) == want[1]
            assert [bytes(parts[2][: cols[0]]), list(cols[1 : n - 1]), cols[n - 1]] == want[2:]
        else:
            assert offs is None
            assert list(array.array("I", bytes(parts[0]))[:n]) == want[1]


@pytest.mark.skipif(_shipped_head_lines() is None, reason=_NO_BUILTIN)
def test_head_lines_builtin_rejects_bad_arguments():
    builtin = _shipped_head_lines()
    parts = (bytearray(64), bytearray(64), bytearray(64))
    head = b"GET / HTTP/1.1\r\n\r\n"
    with pytest.raises(ValueError, match="out of range"):
        builtin(head, 0, len(head) + 1, parts, None)
    with pytest.raises(ValueError, match="out of range"):
        builtin(head, 5, 4, parts, None)
    with pytest.raises(TypeError, match="parts"):
        builtin(head, 0, len(head), (bytearray(64), bytearray(8), bytearray(64)), None)  # cols too short
    with pytest.raises(TypeError, match="parts"):
        builtin(head, 0, len(head), [bytearray(64)] * 3, None)
    with pytest.raises(TypeError, match="last"):
        builtin(head, 0, len(head), parts, "Host:")
    with pytest.raises(TypeError, match="5 arguments"):
        builtin(head, 0, len(head), parts)


def test_head_lines_public():
    """powpow._ffi.head_lines as the parser uses it (builtin or twin), in every mode."""
    head = b"xGET / HTTP/1.1\r\nHost: a\r\nCookie: c=1\r\n\r\n"
    sc = _ffi.head_scratch(8)
    r, lines = _ffi.head_lines(head, 1, len(head), sc.parts, None)
    want = [15, 24, 37, 39]
    assert r >> 28 == 1 and list(lines) == want
    assert bytes(sc.mem[: sc.cols[0]]) == b"Host:Cookie:" and sc.cols[1] == 21
    assert _ffi.head_lines(head, 1, len(head), sc.parts, b"Host:Cookie:")[0] >> 28 == 3
    r, lines = _ffi.head_lines(head, 1, len(head) - 2, sc.parts, None)  # incomplete: offsets in sc.out
    assert lines is None and r >> 28 == 0 and r & 0xFFFFFFF == 3
    assert [sc.out[i] for i in range(3)] == want[:3]


def test_memcmp_at_agrees_with_slicing():
    """``pp_same_at`` (the parser's memo compare on PyPy: ``_ffi.memcmp_at`` there) is
    exactly ``buf[pos:pos + n] == block[:n]`` for every in-bounds range."""
    if platform.python_implementation() == "CPython" or not _ffi.NATIVE:
        assert _ffi.memcmp_at is None  # CPython slices and compares (memcpy + memcmp); pure has no C
    else:
        assert _ffi.memcmp_at is not None
    impls = [f for f in (_ffi.memcmp_at, shipped.lib.pp_same_at if shipped is not None else None)
             if f is not None]
    assert impls or not REQUIRE_NATIVE
    rnd = random.Random(77)
    for _ in range(3000):
        buf = bytes(rnd.choice(b"ab\r\n:") for _ in range(rnd.randrange(0, 40)))
        pos = rnd.randrange(0, len(buf) + 1)
        n = rnd.randrange(0, len(buf) - pos + 1)
        block = buf[pos : pos + n] if rnd.random() < 0.5 else bytes(rnd.choice(b"ab\r\n:") for _ in range(n))
        want = buf[pos : pos + n] == block
        for f in impls:
            assert f(buf, pos, block, n) == want, (buf, pos, block)


def test_blank_and_same_thread_agree_with_their_twins():
    """``_ffi.blank`` / ``_ffi.same_thread`` (builtins on CPython with the native module,
    the twins elsewhere) are ``object.__new__`` and ``ident == get_ident()``."""
    import _thread
    import threading

    from powpow.http._message import Request
    from powpow.http.response import Response

    if platform.python_implementation() == "CPython" and _ffi.NATIVE:
        assert type(_ffi.blank).__name__ == "builtin_function_or_method"
        assert type(_ffi.same_thread).__name__ == "builtin_function_or_method"
    for cls in (Request, Response):
        obj = _ffi.blank(cls)
        assert type(obj) is cls and not vars(obj)  # no __init__ ran: no attribute set
        obj.extra = 1  # an ordinary instance: it has its __dict__
        assert obj.extra == 1
    with pytest.raises(TypeError):
        _ffi.blank(dict)  # a class with its own __new__
    with pytest.raises(TypeError):
        _ffi.blank(3)
    me = _thread.get_ident()
    assert _ffi.same_thread(me) is True
    assert _ffi.same_thread(me + 1) is False and _ffi.same_thread(None) is False
    other = []
    t = threading.Thread(target=lambda: other.append((_ffi.same_thread(me), _ffi.same_thread(_thread.get_ident()))))
    t.start()
    t.join()
    assert other == [(False, True)]
