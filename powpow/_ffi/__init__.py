"""The only door to the compiled module ``powpow._ffi._native``.

Everything else in powpow goes through the names exported here, so each native
fast path has exactly one pure twin beside it:

* ``NATIVE`` is True only when the compiled module is loaded and in use.
  ``POWPOW_PURE=1`` forces the twins; ``POWPOW_REQUIRE_NATIVE=1`` turns a
  missing or broken build into an ImportError (CI uses it so a silent fallback
  can never pass for the native run).
* ``ffi`` / ``lib`` are the cffi objects (``None`` in pure mode) for the backend
  modules (``powpow.poller.epoll`` ...) that wrap syscalls; they follow the shim
  contract: negative return = ``-errno``.
* The scanner: ``find_crlf``, ``find_double_crlf``, ``scan_lines``,
  ``new_line_offsets``, ``scan_head`` (with ``head_scratch`` and ``unpack_lines``),
  ``head_lines`` (the parser's one call per head) -- same signatures and
  results in both modes; ``memcmp_at`` (PyPy native only, else None).
* WebSocket masking: ``ws_mask(data, key, phase=0) -> bytearray`` (SSE2 C, or
  the ``bytes.translate`` twin in ``_wsmask``).
"""
import os
from _thread import get_ident as _get_ident
import struct as _struct
import sys
import threading
from typing import Any, Optional

ffi: Any = None
lib: Any = None
_IMPORT_ERROR: Optional[ImportError] = None

PURE_REQUESTED = os.environ.get("POWPOW_PURE", "") not in ("", "0")

if not PURE_REQUESTED:
    try:
        from . import _native  # type: ignore[attr-defined]  # compiled at install time
    except ImportError as exc:  # not built (source checkout) or unsupported platform
        _IMPORT_ERROR = exc
        if os.environ.get("POWPOW_REQUIRE_NATIVE", "") not in ("", "0"):
            raise ImportError(
                "POWPOW_REQUIRE_NATIVE is set but powpow._ffi._native could not be imported: %s" % exc
            ) from exc
    else:
        ffi, lib = _native.ffi, _native.lib

NATIVE = lib is not None

from . import _scan  # noqa: E402
from . import _wsmask  # noqa: E402

# Longest names signature scan_head builds (the names of a typical browser
# request take ~150 bytes); a longer one is simply not made.
HEAD_SIG_CAP = 480

if NATIVE:
    HAVE_SSE2 = bool(lib.PP_HAVE_SSE2)
    _from_buffer = ffi.from_buffer
    _find_crlf = lib.pp_find_crlf
    _find_double_crlf = lib.pp_find_double_crlf
    _scan_lines = lib.pp_scan_lines

    # cffi passes a bytes object to a `const char *` without a copy; anything
    # else (bytearray, memoryview, mmap) goes through from_buffer (~150 ns on
    # CPython: half the cost of a short scan).  On PyPy the difference is
    # larger: from_buffer(bytes) copies the bytes into memory of its own
    # (0.3-0.6 us for a 460-byte head, and a 64 KiB read is copied whole),
    # while the direct pass pins the object (0.1 us, any size; issue 13).
    # So every call below passes bytes as they are, on both interpreters.
    _CPYTHON = sys.implementation.name == "cpython"

    def find_crlf(buf, start: int = 0, end: int = -1) -> int:
        """Offset of the CR of the first ``\\r\\n`` wholly inside ``buf[start:end]``, or -1."""
        if end < 0:
            end = len(buf)
        return _find_crlf(buf if type(buf) is bytes else _from_buffer(buf), start, end)

    def find_double_crlf(buf, start: int = 0, end: int = -1) -> int:
        """Offset of the first ``\\r\\n\\r\\n`` wholly inside ``buf[start:end]``, or -1."""
        if end < 0:
            end = len(buf)
        return _find_double_crlf(buf if type(buf) is bytes else _from_buffer(buf), start, end)

    def scan_lines(buf, start: int, end: int, out, line_begin: int = -1):
        """Record every CRLF of a header block in one call; see ``scan_lines`` below."""
        if line_begin < 0:
            line_begin = start
        r = _scan_lines(buf if type(buf) is bytes else _from_buffer(buf), start, end, line_begin, out, len(out))
        return r & 0xFFFFFFFF, (r >> 32) - 1

    def new_line_offsets(capacity: int):
        """A reusable offsets array for ``scan_lines`` (allocate once per parser)."""
        return ffi.new("uint32_t[]", capacity)

    _scan_head = lib.pp_scan_head

    class HeadScratch:
        """Per-parser memory for ``scan_head``: offsets, colons, names signatures."""

        __slots__ = ("cap", "mem", "linebuf", "cols", "out", "_colons", "_sig", "_cols", "parts")

        def __init__(self, capacity: int) -> None:
            self.cap = capacity
            # C writes through cdata views of these bytes; Python reads them with
            # struct (the cheapest way to get n ints out on CPython).  Three small
            # arrays rather than one: none is a "large buffer" pinned by the parser.
            lines = bytearray(4 * capacity)
            cols = bytearray(4 * capacity)
            self.mem = bytearray(HEAD_SIG_CAP)  # the names signature
            # unpack_lines(n, linebuf): out[:n] as a sequence of ints (struct on
            # CPython; on PyPy ffi.unpack of a plain cdata array, which its JIT
            # indexes faster than a from_buffer view)
            if _CPYTHON:
                self.out = ffi.from_buffer("uint32_t[]", lines)
                self.linebuf = lines
            else:
                self.out = self.linebuf = ffi.new("uint32_t[]", capacity)
            # Python reads the colons back: a memoryview on CPython, the cdata on
            # PyPy (whose JIT reads a cdata array ~40x faster than a memoryview)
            self.cols = memoryview(cols).cast("I") if _CPYTHON else ffi.from_buffer("uint32_t[]", cols)
            self._colons = ffi.from_buffer("uint32_t[]", cols)
            self._sig = ffi.from_buffer("char[]", self.mem)
            self._cols = cols
            # what head_lines takes: the C builtin's three bytearrays, or the scratch itself
            self.parts = (lines, cols, self.mem) if _CPYTHON else self

    # The names signature is made on both interpreters.  (The first pass of
    # issue 13 left it off on PyPy, where it measured slower: that was the
    # from_buffer copy of every head and the memoryview reads of the colons,
    # both gone; with them gone it is 1.9x faster there on varying heads.)
    _sig_cap = HEAD_SIG_CAP

    _NULL = ffi.NULL

    def scan_head(buf, start: int, end: int, sc, last) -> int:
        """``scan_lines`` of a request head plus its field names, in one C call; see below."""
        return _scan_head(buf if type(buf) is bytes else _from_buffer(buf), start, end, sc.out, sc.cap,
                          sc._colons, sc._sig, _sig_cap, _NULL if last is None else last,
                          -1 if last is None else len(last))

    # memcmp_at(buf, pos, block, n) -> 1 if buf[pos:pos + n] == block[:n], else 0:
    # the raw C call (bytes in, bounds checked by the caller: the parser's memo).
    # Only on PyPy, whose bytes == compares a byte at a time (~40x slower than
    # memcmp on a head); on CPython slicing and == are memcpy and memcmp already.
    memcmp_at = None if _CPYTHON else lib.pp_same_at

    _pp_ws_mask = lib.pp_ws_mask

    def ws_mask(data, key: bytes, phase: int = 0) -> bytearray:
        """A new bytearray: ``data[i] ^ key[(i + phase) % 4]`` (RFC 6455 5.3)."""
        n = len(data)
        out = bytearray(n)
        if n:
            _pp_ws_mask(data if type(data) is bytes else _from_buffer(data), _from_buffer(out), n, key, phase)
        return out

else:
    import array as _array

    HAVE_SSE2 = False
    _find = _scan.find_crlf
    _find2 = _scan.find_double_crlf
    _scan_pure = _scan.scan_lines

    def find_crlf(buf, start: int = 0, end: int = -1) -> int:
        """Offset of the CR of the first ``\\r\\n`` wholly inside ``buf[start:end]``, or -1."""
        if end < 0:
            end = len(buf)
        return _find(buf, start, end)

    def find_double_crlf(buf, start: int = 0, end: int = -1) -> int:
        """Offset of the first ``\\r\\n\\r\\n`` wholly inside ``buf[start:end]``, or -1."""
        if end < 0:
            end = len(buf)
        return _find2(buf, start, end)

    def scan_lines(buf, start: int, end: int, out, line_begin: int = -1):
        if line_begin < 0:
            line_begin = start
        return _scan_pure(buf, start, end, out, line_begin)

    def new_line_offsets(capacity: int):
        """A reusable offsets array for ``scan_lines`` (allocate once per parser)."""
        return _array.array("I", bytes(4 * capacity))

    _scan_head_pure = _scan.scan_head

    class HeadScratch:  # type: ignore[no-redef]
        """Per-parser memory for ``scan_head``: offsets, colons, names signatures."""

        __slots__ = ("cap", "mem", "linebuf", "cols", "out", "parts")

        def __init__(self, capacity: int) -> None:
            self.cap = capacity
            self.mem = bytearray(HEAD_SIG_CAP)
            self.linebuf = self.out = _array.array("I", bytes(4 * capacity))
            self.cols = _array.array("I", bytes(4 * capacity))
            self.parts = self  # what head_lines takes

    def scan_head(buf, start: int, end: int, sc, last) -> int:
        return _scan_head_pure(buf, start, end, sc.out, sc.cols, sc.mem, HEAD_SIG_CAP, last)

    memcmp_at = None

    ws_mask = _wsmask.ws_mask


scan_lines.__doc__ = """Scan ``buf[start:end]`` for the lines of a header block.

Returns ``(n, bad)``.  ``out[:n]`` holds the offset of the CR of each CRLF, in
order.  The scan stops after a CRLF that starts a line (at ``line_begin`` --
default ``start`` -- or right after the previous CRLF: the blank line ending a
header block), when ``out`` is full, or at the first forbidden byte, whose
offset is ``bad`` (-1 if none).  Forbidden: NUL and every control byte except
HTAB, DEL, a CR not followed by LF, an LF not preceded by CR.  A CR in the last
byte is left pending (not forbidden) since its LF may still arrive.  To resume
an incomplete scan, call again from where it stopped (the pending CR, if any)
with ``line_begin`` set to the start of the unfinished line.
"""


HEAD_SIG = _scan.HEAD_SIG
HEAD_SAME = _scan.HEAD_SAME

_local = threading.local()


def head_scratch(capacity: int):
    """This thread's ``HeadScratch`` of ``capacity`` lines.

    Scratch memory is per thread, not per parser: a parser holds no scan
    memory between reads (an idle keep-alive connection costs nothing here),
    and two threads never share one (cffi calls run without the GIL).  Only
    use its contents before anything else on the thread may scan a head.
    """
    try:
        return _local.scratch[capacity]
    except AttributeError:
        _local.scratch = {}
    except KeyError:
        pass
    sc = _local.scratch[capacity] = HeadScratch(capacity)
    return sc


_unpackers: dict = {}


def unpack_lines(n: int, linebuf):
    """The first ``n`` offsets of a ``HeadScratch`` (``sc.linebuf``): a tuple or list of ints."""
    u = _unpackers.get(n)
    if u is None:
        u = _unpackers[n] = _struct.Struct("=%dI" % n).unpack_from
    return u(linebuf)


if NATIVE and sys.implementation.name != "cpython":
    def unpack_lines(n: int, linebuf):  # noqa: F811  (PyPy: linebuf is the cdata array)
        """The first ``n`` offsets of a ``HeadScratch`` (``sc.linebuf``): a tuple or list of ints."""
        u = _unpackers.get(n)
        if u is None:
            u = _unpackers[n] = _list_unpacker(n)
        return u(linebuf)

    _ffi_unpack = ffi.unpack

    def _list_unpacker(n: int):
        def unpack(linebuf):
            return _ffi_unpack(linebuf, n)
        return unpack

# ``line_unpackers[n](sc.linebuf)`` is ``unpack_lines(n, sc.linebuf)`` once that
# has run for this ``n``: the parser indexes it inline (a Python call less per head).
line_unpackers = _unpackers


def head_lines(buf, start: int, end: int, parts, last):
    """``scan_head`` plus the offsets: ``(r, lines)``, ``lines`` the first ``n``
    offsets (``unpack_lines``) when ``r`` has ``HEAD_SIG``, else None (read
    ``sc.out``).  ``parts`` is ``sc.parts`` of a ``HeadScratch``."""
    r = scan_head(buf, start, end, parts, last)
    if r >> 28 & 1:
        n = r & 0xFFFFFFF
        u = _unpackers.get(n)
        return r, (u(parts.linebuf) if u is not None else unpack_lines(n, parts.linebuf))
    return r, None


# ``blank(cls)``: an instance of ``cls`` without running its ``__init__`` (``cls``
# must inherit object's ``__new__``); ``same_thread(ident)``: ``ident ==
# _thread.get_ident()``.  The HTTP server runs both once per request; on CPython
# they are specialised builtin calls (src/pp_cpyio.c), ~200 and ~150 instructions
# less than object.__new__ and the compare of two big ints.
blank = object.__new__


def same_thread(ident) -> bool:
    return ident == _get_ident()


if NATIVE and sys.implementation.name == "cpython":
    # The parser's hot path on CPython: one METH_FASTCALL builtin (src/pp_cpyio.c)
    # instead of a cffi call, a Python wrapper and a struct unpack (issue 13).
    _cpy: dict = {}
    if lib.pp_cpy_io_install(id(_cpy)) == 0:
        head_lines = _cpy["head_lines"]  # noqa: F811
        blank = _cpy["blank"]
        same_thread = _cpy["same_thread"]  # noqa: F811

scan_head.__doc__ = """One call per request head: ``scan_lines`` plus the field names.

``scan_head(buf, start, end, sc, last) -> r`` with ``sc`` a
``HeadScratch(capacity)`` (``head_scratch(capacity)``: this thread's).
``r & 0xFFFFFFF`` is ``n`` and ``(r >> 32) - 1`` is ``bad``, exactly as ``scan_lines(buf,
start, end, sc.out)`` (offsets in ``sc.out``; ``unpack_lines(n, sc.linebuf)``
reads them as a tuple).  Flags (bits 28 and 29: ``r >> 28`` is 1 or 3 with a
signature, 0 for a scan without a forbidden byte and without a signature):

* ``HEAD_SIG``: the head is complete (no forbidden byte, ends with an empty
  line) and every field line has a colon.  Then ``sc.cols[i]`` is the offset
  of the first colon of field line ``i`` (``1 <= i < n - 1``), and the names
  signature -- every field name's raw bytes followed by ``:`` -- is
  ``sc.mem[:sc.cols[0]]`` (no name contains a colon: equal signatures mean
  equal name sequences).  Not set if the signature exceeds ``HEAD_SIG_CAP``.
* ``HEAD_SAME``: ``HEAD_SIG`` and the signature equals ``last`` (bytes: the
  signature the caller validated last, or None).

Nothing is validated beyond what ``scan_lines`` checks: the parser validates
the names once per new signature.  Native (C) and pure results are identical.
"""


def __getattr__(name: str):
    # HAVE_NUMPY: looked for on first read (see _scan), not at import
    if name == "HAVE_NUMPY":
        return _scan.HAVE_NUMPY
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
