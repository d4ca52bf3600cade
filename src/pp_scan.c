/* The CRLF scanner of powpow's native layer.

   Semantics shared with the pure twins in powpow/_ffi/_scan.py:
   find_crlf: offset of the CR of the first "\r\n" wholly inside [start, end), or -1.
   find_double_crlf: offset of the first "\r\n\r\n" wholly inside [start, end), or -1.
   scan_lines: walk [start, end); record the offset of the CR of every CRLF in
   out[]; stop after a CRLF that begins a line (offset == line_begin, or == end
   of the previous CRLF: the blank line that ends a header block), when out is
   full, or at the first forbidden byte (a control byte other than HTAB, i.e.
   0x00-0x08, 0x0A-0x1F, 0x7F, where CR and LF are allowed only as a CRLF pair).
   A CR in the last byte is pending (its LF may still arrive) and not forbidden.
   Returns n | ((bad + 1) << 32), bad = -1 if none.

   The scalar functions are static: the shipped module uses them for the
   tails of the SSE2 loops (and alone without SSE2); tests/native compiles
   this file into a test-only module that exposes them beside the SSE2 ones. */
#include "powpow.h"

#if PP_HAVE_SSE2
#  include <emmintrin.h>
#endif

static inline int pp_is_special(unsigned char c) {
    return (c < 0x20 && c != 0x09) || c == 0x7f;
}

static int64_t pp_find_crlf_scalar(const char *b, int64_t start, int64_t end) {
    const unsigned char *buf = (const unsigned char *)b;
    for (int64_t i = start; i + 1 < end; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n') return i;
    return -1;
}

int64_t pp_find_crlf(const char *b, int64_t start, int64_t end) {
    int64_t i = start;
#if PP_HAVE_SSE2
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    /* Compare block i against CR and block i+1 against LF: a pair that
       straddles two 16-byte blocks is found like any other. */
    while (i + 17 <= end) {
        __m128i a = _mm_loadu_si128((const __m128i *)(b + i));
        __m128i c = _mm_loadu_si128((const __m128i *)(b + i + 1));
        int m = _mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, cr), _mm_cmpeq_epi8(c, lf)));
        if (m) return i + __builtin_ctz((unsigned)m);
        i += 16;
    }
#endif
    return pp_find_crlf_scalar(b, i, end);
}

static int64_t pp_find_double_crlf_scalar(const char *b, int64_t start, int64_t end) {
    const unsigned char *buf = (const unsigned char *)b;
    for (int64_t i = start; i + 3 < end; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
            return i;
    return -1;
}

int64_t pp_find_double_crlf(const char *b, int64_t start, int64_t end) {
    int64_t i = start;
#if PP_HAVE_SSE2
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    while (i + 19 <= end) {
        __m128i m0 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(b + i)), cr);
        __m128i m1 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(b + i + 1)), lf);
        __m128i m2 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(b + i + 2)), cr);
        __m128i m3 = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(b + i + 3)), lf);
        int m = _mm_movemask_epi8(_mm_and_si128(_mm_and_si128(m0, m1), _mm_and_si128(m2, m3)));
        if (m) return i + __builtin_ctz((unsigned)m);
        i += 16;
    }
#endif
    return pp_find_double_crlf_scalar(b, i, end);
}

/* Handle the special byte at i.  Returns 1 to stop, 0 to go on (with *pi advanced). */
static inline int pp_scan_special(const unsigned char *buf, int64_t *pi, int64_t end,
                                  int64_t *line_begin, uint32_t *out, int *n, int max_out,
                                  int64_t *bad) {
    int64_t i = *pi;
    if (buf[i] == '\r') {
        if (i + 1 >= end) return 1;                 /* pending CR */
        if (buf[i + 1] != '\n') { *bad = i; return 1; }
        out[(*n)++] = (uint32_t)i;
        if (i == *line_begin) return 1;             /* blank line: block ends */
        *line_begin = i + 2;
        *pi = i + 2;
        return *n >= max_out;
    }
    *bad = i;
    return 1;
}

/* static inline: with SSE2 only the tests call it (they #include this file) */
static inline int64_t pp_scan_lines_scalar(const char *b, int64_t start, int64_t end,
                                           int64_t line_begin, uint32_t *out, int max_out) {
    const unsigned char *buf = (const unsigned char *)b;
    int64_t i = start, bad = -1;
    int n = 0;
    if (max_out <= 0) return 0;
    while (i < end) {
        if (!pp_is_special(buf[i])) { i++; continue; }
        if (pp_scan_special(buf, &i, end, &line_begin, out, &n, max_out, &bad)) break;
    }
    return (int64_t)n | ((bad + 1) << 32);
}

int64_t pp_scan_lines(const char *b, int64_t start, int64_t end,
                      int64_t line_begin, uint32_t *out, int max_out) {
#if PP_HAVE_SSE2
    const unsigned char *buf = (const unsigned char *)b;
    const __m128i c1f = _mm_set1_epi8(0x1f), c7f = _mm_set1_epi8(0x7f), tab = _mm_set1_epi8(0x09);
    int64_t i = start, bad = -1;
    int n = 0;
    if (max_out <= 0) return 0;
    while (i < end) {
        if (i + 16 <= end) {
            /* special = (v <= 0x1f unsigned, except HTAB) or v == 0x7f */
            __m128i v = _mm_loadu_si128((const __m128i *)(buf + i));
            __m128i low = _mm_cmpeq_epi8(_mm_max_epu8(v, c1f), c1f);
            __m128i sp = _mm_andnot_si128(_mm_cmpeq_epi8(v, tab), _mm_or_si128(low, _mm_cmpeq_epi8(v, c7f)));
            int m = _mm_movemask_epi8(sp);
            if (!m) { i += 16; continue; }
            i += __builtin_ctz((unsigned)m);
        } else if (!pp_is_special(buf[i])) {
            i++;
            continue;
        }
        if (pp_scan_special(buf, &i, end, &line_begin, out, &n, max_out, &bad)) break;
    }
    return (int64_t)n | ((bad + 1) << 32);
#else
    return pp_scan_lines_scalar(b, start, end, line_begin, out, max_out);
#endif
}

/* pp_scan_head: pp_scan_lines over a request head, plus what the parser needs
   from each field line, in the same call (issue 13: one C call per head).
   out[] and every stopping rule are exactly pp_scan_lines' (line_begin = start;
   max_out is clamped below 2**28); the return value is pp_scan_lines'
   (n | (bad + 1) << 32) plus two flags in bits 28 and 29, so that a clean head
   returns a value below 2**30 (one digit of a Python int: cheap to test):
   PP_HEAD_SIG (bit 28): the scan found a complete head (no forbidden byte, the
     last two CRs adjacent) and every field line has a colon; then for every
     field line i (1 <= i < n-1, the line ending at out[i]) colons[i] is the
     offset of its first ':', sig[0..len) holds the raw bytes of every field
     name each followed by ':' (a name never contains ':', so equal signatures
     mean equal name sequences) and colons[0] = len.  Not set when the
     signature would not fit in sig_cap bytes.
   PP_HEAD_SAME (bit 29): PP_HEAD_SIG, and the signature equals last[0..last_len)
     (the signature the caller validated last; last_len < 0: none).
   With PP_HEAD_SIG, colons[n-1] (the blank line's slot) holds pp_request_line's
   verdict on the request line [start, out[0]).
   sig must have room for sig_cap bytes, colons[] for max_out entries. */
/* The request line's common case, checked in the same call (issue 13): returns
   the method's code (1-9: GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH)
   when the line starts with one of them and a SP, else 0; plus 16 when it ends
   with " HTTP/1.1" or 32 with " HTTP/1.0" (after a non-empty target), plus 64
   when that target is origin-form made only of VCHAR other than '#', plus 128
   when it also has no '?' (no query: the path is the whole target).  Anything
   else is left to the parser's slow path, which decides as before. */
static uint32_t pp_request_line(const char *b, int64_t start, int64_t c0) {
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT",
                                          "OPTIONS", "TRACE", "PATCH"};
    const char *sp = memchr(b + start, ' ', (size_t)(c0 - start));
    if (sp == NULL) return 0;
    size_t ml = (size_t)(sp - (b + start));
    uint32_t code = 0;
    for (uint32_t k = 0; k < 9; k++)
        if (strlen(methods[k]) == ml && memcmp(methods[k], b + start, ml) == 0) { code = k + 1; break; }
    if (code == 0) return 0;
    int64_t ts = start + (int64_t)ml + 1, te = c0 - 9;
    if (te <= ts) return code;
    if (memcmp(b + te, " HTTP/1.1", 9) == 0) code |= 16;
    else if (memcmp(b + te, " HTTP/1.0", 9) == 0) code |= 32;
    else return code;
    if (b[ts] != '/') return code;
    uint32_t noquery = 128;
    for (int64_t i = ts; i < te; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c < 0x21 || c > 0x7e || c == '#') return code;
        if (c == '?') noquery = 0;
    }
    return code | 64 | noquery;
}

int64_t pp_scan_head(const char *b, int64_t start, int64_t end, uint32_t *out, int max_out,
                     uint32_t *colons, char *sig, int64_t sig_cap, const char *last, int64_t last_len) {
    if (max_out > PP_HEAD_MAX_OUT) max_out = PP_HEAD_MAX_OUT;
    int64_t r = pp_scan_lines(b, start, end, start, out, max_out);
    int n = (int)(r & 0xFFFFFFFF);
    if ((r >> 32) != 0 || n < 2 || out[n - 1] != out[n - 2] + 2) return r;
    int64_t len = 0;
    for (int i = 1; i < n - 1; i++) {
        int64_t s = (int64_t)out[i - 1] + 2, e = out[i];
        const char *c = memchr(b + s, ':', (size_t)(e - s));
        if (c == NULL) return r;
        int64_t nl = c - (b + s);
        if (len + nl + 1 > sig_cap) return r;
        memcpy(sig + len, b + s, (size_t)nl);
        len += nl;
        sig[len++] = ':';
        colons[i] = (uint32_t)(c - b);
    }
    colons[0] = (uint32_t)len;
    colons[n - 1] = pp_request_line(b, start, out[0]);
    r |= PP_HEAD_SIG;
    if (len == last_len && memcmp(sig, last, (size_t)len) == 0) r |= PP_HEAD_SAME;
    return r;
}

/* pp_same_at: buf[pos:pos+n] == block[:n], for the parser's memo of the last
   header section (issue 13): on PyPy comparing two bytes objects runs a
   byte loop (~0.2 us for a 400-byte section); memcmp is a few ns.  The
   caller has checked that both ranges exist. */
int pp_same_at(const char *buf, int64_t pos, const char *block, int64_t n) {
    return n <= 0 || memcmp(buf + pos, block, (size_t)n) == 0;
}
