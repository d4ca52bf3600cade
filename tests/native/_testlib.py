"""Builds the test-only native modules from ``src/pp_scan.c`` (never shipped).

The shipped ``powpow._ffi._native`` exposes only what powpow uses.  The tests
also need the scalar scanner (to compare it with the SSE2 one and with the
pure twins) and a guard-page allocator (to prove that no path reads past the
end of a buffer).  This module compiles ``pp_scan.c`` twice with cffi into a
temporary directory -- as is (SSE2 where the CPU has it) and with
``-DPP_NO_SSE2`` (the scalar build a non-SSE2 platform would ship) -- plus
``pp_guard.c``.  ``#include "pp_scan.c"`` puts its static scalar functions in
the same translation unit as cffi's wrappers, so they can be called from here.
"""
import importlib.machinery
import importlib.util
import os

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SRC = os.path.join(ROOT, "src")

CDEF = """
static const int PP_HAVE_SSE2;
int64_t pp_find_crlf(const char *buf, int64_t start, int64_t end);
int64_t pp_find_double_crlf(const char *buf, int64_t start, int64_t end);
int64_t pp_scan_lines(const char *buf, int64_t start, int64_t end,
                      int64_t line_begin, uint32_t *out, int max_out);
int64_t pp_find_crlf_scalar(const char *buf, int64_t start, int64_t end);
int64_t pp_find_double_crlf_scalar(const char *buf, int64_t start, int64_t end);
int64_t pp_scan_lines_scalar(const char *buf, int64_t start, int64_t end,
                             int64_t line_begin, uint32_t *out, int max_out);
int64_t pp_scan_head(const char *b, int64_t start, int64_t end, uint32_t *out, int max_out,
                     uint32_t *colons, char *sig, int64_t sig_cap, const char *last, int64_t last_len);
char *pp_guarded_alloc(size_t n);
void pp_guarded_free(char *p, size_t n);
"""


def build(tmpdir: str, name: str, no_sse2: bool = False):
    """Compile and import one test module; returns the cffi module (``.ffi``, ``.lib``)."""
    ffib = cffi.FFI()
    ffib.cdef(CDEF)
    ffib.set_source(
        name,
        '#include "pp_scan.c"\n'
        "char *pp_guarded_alloc(size_t n);\n"
        "void pp_guarded_free(char *p, size_t n);\n",
        sources=[os.path.join(HERE, "pp_guard.c")],
        include_dirs=[SRC],
        extra_compile_args=["-O2", "-std=gnu99"]
        + (["-DPP_NO_SSE2"] if no_sse2 else []),
    )
    path = ffib.compile(tmpdir=tmpdir)
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod
