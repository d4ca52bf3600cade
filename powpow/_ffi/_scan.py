"""Pure-Python twins of the native CRLF scanner (see build_ffi.py for the contract).

Two implementations with results identical to the C code on every input:

* ``*_find``: ``bytes.find`` for CRLFs plus one compiled regex for the first
  forbidden byte between them -- both run in C inside the interpreter, so a
  typical 400-byte request head costs a handful of calls.
* ``scan_lines_numpy``: vectorised classification of every byte, then a walk
  over the (few) control bytes only.  It pays ~µs of numpy overhead per call,
  so ``scan_lines`` uses it only for spans of at least ``NUMPY_MIN_SPAN`` bytes.

``buf`` is anything with ``.find`` and the buffer protocol: bytes, bytearray, mmap.
numpy is optional, and imported only when the vectorised twin is first chosen
(a span of ``NUMPY_MIN_SPAN`` bytes or more): importing it costs ~100 ms, more
than the rest of ``import powpow``, and the native scanner never needs it.
"""
import re

_np = None
# Whether numpy is installed: looked for (without importing it) the first time
# a span is large enough to want it, or ``HAVE_NUMPY`` is read (PEP 562
# ``__getattr__`` below) -- not at import: ``importlib.util`` and the search
# along ``sys.path`` are work that the native scanner never needs.
_have_numpy = None
NUMPY_MIN_SPAN = 4096


def _look_for_numpy() -> bool:
    global _have_numpy
    from importlib.util import find_spec

    _have_numpy = find_spec("numpy") is not None
    return _have_numpy


def __getattr__(name: str):
    if name == "HAVE_NUMPY":
        return _have_numpy if _have_numpy is not None else _look_for_numpy()
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def _load_numpy():
    global _np
    import numpy

    _np = numpy
    return numpy

# Control bytes other than HTAB, and DEL.  CR and LF are included: between two
# CRLFs found with bytes.find, any CR or LF is a bare one.
_FORBIDDEN = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_search_forbidden = _FORBIDDEN.search


def find_crlf(buf, start: int, end: int) -> int:
    return buf.find(b"\r\n", start, end)


def find_double_crlf(buf, start: int, end: int) -> int:
    return buf.find(b"\r\n\r\n", start, end)


def scan_lines_find(buf, start: int, end: int, out, line_begin: int):
    """Return ``(n, bad)``; offsets of CRLFs in ``out[:n]``; ``bad`` is -1 or the first forbidden byte."""
    cap = len(out)
    n = 0
    i = start
    find = buf.find
    while n < cap:
        j = find(b"\r\n", i, end)
        if j < 0:
            stop = end - 1 if end > i and buf[end - 1] == 13 else end  # pending CR
            m = _search_forbidden(buf, i, stop)
            return n, (m.start() if m is not None else -1)
        if j > i:
            m = _search_forbidden(buf, i, j)
            if m is not None:
                return n, m.start()
        out[n] = j
        n += 1
        if j == line_begin:
            return n, -1
        i = line_begin = j + 2
    return n, -1


def scan_lines_numpy(buf, start: int, end: int, out, line_begin: int):
    """Vectorised twin of ``scan_lines_find`` (identical results)."""
    cap = len(out)
    if cap <= 0 or end <= start:
        return 0, -1
    np = _np if _np is not None else _load_numpy()
    a = np.frombuffer(buf, dtype=np.uint8, count=end - start, offset=start)
    special = ((a < 0x20) & (a != 0x09)) | (a == 0x7F)
    n = 0
    skip_to = -1
    for k in np.flatnonzero(special).tolist():
        if k < skip_to:
            continue
        i = start + k
        if a[k] == 13:
            if i + 1 >= end:
                return n, -1  # pending CR
            if a[k + 1] != 10:
                return n, i
            out[n] = i
            n += 1
            if i == line_begin or n >= cap:
                return n, -1
            line_begin = i + 2
            skip_to = k + 2
            continue
        return n, i
    return n, -1


def scan_lines(buf, start: int, end: int, out, line_begin: int):
    if end - start >= NUMPY_MIN_SPAN and (_have_numpy if _have_numpy is not None else _look_for_numpy()):
        if _np is not None or _try_numpy():
            return scan_lines_numpy(buf, start, end, out, line_begin)
    return scan_lines_find(buf, start, end, out, line_begin)


def _try_numpy() -> bool:
    """Import numpy for the vectorised scan.  When it cannot be imported now (no
    descriptor left to read its files: EMFILE; the first big head then arrived on
    a server out of descriptors) this scan takes ``scan_lines_find`` -- the same
    verdicts -- and the import is tried again next time; numpy that is broken
    (ImportError) is given up for good."""
    global _have_numpy
    try:
        _load_numpy()
    except ImportError:
        _have_numpy = False
        return False
    except OSError:
        return False
    return True



HEAD_SIG = 1 << 28
HEAD_SAME = 1 << 29
HEAD_MAX_OUT = (1 << 28) - 1


def scan_head(buf, start: int, end: int, out, colons, mem, sig_cap: int, last) -> int:
    """Pure twin of ``pp_scan_head`` (src/pp_scan.c): same return value, same writes.

    ``mem`` is a bytearray of at least ``sig_cap`` bytes that receives the
    signature; ``last`` (bytes or None) is the signature validated last.
    """
    if len(out) > HEAD_MAX_OUT:
        out = memoryview(out)[:HEAD_MAX_OUT]  # pragma: no cover - 2**28 lines
    n, bad = scan_lines(buf, start, end, out, start)
    r = n | ((bad + 1) << 32)
    if bad >= 0 or n < 2 or out[n - 1] != out[n - 2] + 2:
        return r
    parts = []
    find = buf.find
    size = 0
    s = out[0] + 2
    for i in range(1, n - 1):
        e = out[i]
        c = find(b":", s, e)
        if c < 0:
            return r
        size += c - s + 1
        if size > sig_cap:
            return r
        parts.append(buf[s:c])
        colons[i] = c
        s = e + 2
    sig = b":".join(parts) + b":" if parts else b""
    mem[:size] = sig
    colons[0] = size
    colons[n - 1] = request_line(buf, start, out[0])
    r |= HEAD_SIG
    if last is not None and last == sig:
        r |= HEAD_SAME
    return r


REQUEST_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH")
_METHOD_CODES = {m: k + 1 for k, m in enumerate(REQUEST_METHODS)}
_NOT_TARGET = re.compile(rb"[^\x21-\x7e]|#")


def request_line(buf, start: int, c0: int) -> int:
    """Pure twin of ``pp_request_line`` (src/pp_scan.c): method code (1-9, the order
    of ``REQUEST_METHODS``) | 16 (" HTTP/1.1") or 32 (" HTTP/1.0") | 64 (clean
    origin-form target) | 128 (and no '?' in it), each only when the ones before it hold."""
    sp = buf.find(b" ", start, c0)
    if sp < 0:
        return 0
    code = _METHOD_CODES.get(bytes(buf[start:sp]), 0)
    if code == 0:
        return 0
    ts = sp + 1
    te = c0 - 9
    if te <= ts:
        return code
    v = buf[te:c0]
    if v == b" HTTP/1.1":
        code |= 16
    elif v == b" HTTP/1.0":
        code |= 32
    else:
        return code
    if buf[ts] != 47 or _NOT_TARGET.search(buf, ts, te) is not None:
        return code
    return code | (64 if buf.find(b"?", ts, te) >= 0 else 192)
