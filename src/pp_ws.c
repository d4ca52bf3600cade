/* WebSocket payload masking (RFC 6455 section 5.3) for powpow's native layer.

   dst[i] = src[i] ^ key[(i + phase) & 3] for i in [0, n).  `phase` lets a
   payload be unmasked in pieces (the offset of the piece inside the frame
   payload).  src == dst is allowed (in place).  SSE2: 16 bytes per step with
   the key repeated four times in one register; then 8 bytes through a
   uint64_t, then bytes.  Every 16/8-byte step keeps i a multiple of 4, so
   the byte tail indexes the same rotated key.  The pure twin is ws_mask in
   powpow/_ffi/_wsmask.py (four strided bytes.translate calls). */
#include "powpow.h"

#if PP_HAVE_SSE2
#  include <emmintrin.h>
#endif

void pp_ws_mask(const char *src, char *dst, int64_t n, const unsigned char *key, int64_t phase) {
    unsigned char k[8];
    for (int j = 0; j < 8; j++) k[j] = key[(j + phase) & 3];
    int64_t i = 0;
#if PP_HAVE_SSE2
    uint32_t k32;
    memcpy(&k32, k, 4);
    const __m128i km = _mm_set1_epi32((int)k32);
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(src + i));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(v, km));
    }
#endif
    uint64_t k64;
    memcpy(&k64, k, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k64;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++) dst[i] = (char)(src[i] ^ k[i & 3]);
}
