/* AVX2 + FMA + F16C gemv for the llama.cpp weight types (qk.h). Built with -mavx2 -mfma -mf16c
 * only (setup.py); tq_qk_get() hands these out only after cpu.c saw AVX2, FMA, F16C and OS support
 * for the YMM state. Dequantization (embedding rows, one per token) uses the scalar functions.
 *
 * Integer parts are exact, as in qk_scalar.c. The byte products go through
 * _mm256_maddubs_epi16(u8, s8), which saturates a pair sum beyond int16; it never does here:
 *   - codes are unsigned (Q4: 0..15, Q5: 0..31, Q6_K: 0..63) against |a| <= 127 (the activation
 *     quantizers never produce -128): a pair is at most 2 * 63 * 127 = 16002;
 *   - Q8_0 x Q8_0 uses |w| * sign(a, w): |w| <= 128 (a file may hold -128), pair <= 32512.
 * The code offsets (Q4_0: 8, Q5_0: 16, Q6_K: 32) are removed afterwards with the activation sums:
 * sum((q - o) * a) = sum(q * a) - o * sum(a), in int32 lanes.
 * Float parts: per block (or super-block) the 8 int32 lanes are converted and FMA'd into 8 float
 * lanes with the block scale, then summed at the end of the row: the same terms as the scalar
 * path, added in another order (the tests bound the difference).
 * On any other architecture, or without AVX2 flags, this file compiles to an empty lookup. */
#include "qk.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__AVX2__)

#include <immintrin.h>
#include <string.h>

#include "qk_simd.h"
#include "tq.h"

/* Rows per pass: they share the activation block loads and its per-block constants. */
#define TQ_QK_AVX2_ROWS 4
/* Tokens per pass of the K-quant prompt GEMM (tq_k_gemm_tile) */
#define TQ_QK_GEMM_TOKS 4

/* 16 bytes of nibbles -> 32 codes in value order (low nibbles = values 0..15, high = 16..31) */
TQ_INLINE __m256i tq_nib32(const uint8_t *qs) {
    const __m128i x = _mm_loadu_si128((const __m128i *)qs);
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(x), _mm_srli_epi16(x, 4), 1);
    return _mm256_and_si256(v, _mm256_set1_epi8(15));
}

/* u8 codes x s8 activations -> 8 int32 lanes (each the sum of 4 adjacent products) */
TQ_INLINE __m256i tq_dot_u8s8(__m256i q, __m256i a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), _mm256_set1_epi16(1));
}

/* ---------------------------------------------------------------- float types */

enum { TQ_F_F32, TQ_F_F16, TQ_F_BF16 };

TQ_INLINE __m256 tq_load8(int T, const uint8_t *row, int i) {
    if (T == TQ_F_F32) return _mm256_loadu_ps((const float *)row + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
    if (T == TQ_F_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

TQ_INLINE float tq_load1(int T, const uint8_t *row, int i) {
    if (T == TQ_F_F32) return ((const float *)row)[i];
    uint16_t h;
    memcpy(&h, row + 2 * (size_t)i, 2);
    return T == TQ_F_F16 ? tq_f16_to_f32(h) : tq_bf16_to_f32(h);
}

TQ_INLINE void tq_float_rows(int T, int R, const uint8_t *w, size_t rb, int n, const float *x,
                             float *out) {
    const int es = T == TQ_F_F32 ? 4 : 2;
    __m256 acc[TQ_QK_AVX2_ROWS];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        if ((i & 31) == 0) tq_prefetch_next(w, rb, R, (size_t)i * es, (size_t)32 * es * R);
        const __m256 xv = _mm256_loadu_ps(x + i);
        for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(tq_load8(T, w + r * rb, i), xv, acc[r]);
    }
    for (int r = 0; r < R; r++) {
        float s = tq_hsum(acc[r]);
        for (int j = i; j < n; j++) s += tq_load1(T, w + r * rb, j) * x[j];
        out[r] = s;
    }
}

#define TQ_FLOAT_GEMV(name, T)                                                                     \
    static void tq_qk_gemv_##name##_avx2(const void *w, size_t rb, int rows, int n, const void *act, \
                                         float *out) {                                             \
        const uint8_t *wb = (const uint8_t *)w;                                                    \
        int r = 0;                                                                                 \
        for (; r + TQ_QK_AVX2_ROWS <= rows; r += TQ_QK_AVX2_ROWS)                                  \
            tq_float_rows(T, TQ_QK_AVX2_ROWS, wb + r * rb, rb, n, (const float *)act, out + r);   \
        for (; r < rows; r++) tq_float_rows(T, 1, wb + r * rb, rb, n, (const float *)act, out + r); \
    }
TQ_FLOAT_GEMV(f32, TQ_F_F32)
TQ_FLOAT_GEMV(f16, TQ_F_F16)
TQ_FLOAT_GEMV(bf16, TQ_F_BF16)

/* Float prompt GEMM (tq_qk_ops.gemm): R rows x NT tokens, each weight vector widened once for NT
 * tokens and every (row, token) sum formed as tq_float_rows forms it (one FMA chain over 8-lane
 * steps, the horizontal sum, then the tail in order): bit-identical to the gemv. R x NT chains
 * instead of R also lift the gemv's FMA-latency bound. */
TQ_INLINE void tq_float_gemm_tile(int T, int R, int NT, const uint8_t *w, size_t rb, int n, const float *x,
                                  size_t ldx, float *out, size_t ldo) {
    __m256 acc[2][TQ_QK_GEMM_TOKS];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wv[2];
        for (int r = 0; r < R; r++) wv[r] = tq_load8(T, w + r * rb, i);
        for (int t = 0; t < NT; t++) {
            const __m256 xv = _mm256_loadu_ps(x + (size_t)t * ldx + i);
            for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < NT; t++) {
            const float *xt = x + (size_t)t * ldx;
            float s = tq_hsum(acc[r][t]);
            for (int j = i; j < n; j++) s += tq_load1(T, w + r * rb, j) * xt[j];
            out[(size_t)t * ldo + r] = s;
        }
}

#define TQ_FLOAT_TILE(R, NT, r, a, o) tq_float_gemm_tile(T, R, NT, wb + (r) * rb, rb, n, (const float *)(a), ldx, o, ldo)
#define TQ_FLOAT_GEMM(name, T_)                                                                    \
    static void tq_qk_gemm_##name##_avx2(const void *w, size_t rb, int rows, int n, const void *act, \
                                         size_t as, int ntok, float *out, size_t ldo) {            \
        const int T = T_;                                                                          \
        const uint8_t *wb = (const uint8_t *)w;                                                    \
        const size_t ldx = as / sizeof(float);                                                     \
        TQ_GEMM_LOOP(ntok, rows, act, as, out, ldo, 2, TQ_QK_GEMM_TOKS, TQ_GEMM_NO_GROUP, TQ_FLOAT_TILE) \
    }
TQ_FLOAT_GEMM(f32, TQ_F_F32)
TQ_FLOAT_GEMM(f16, TQ_F_F16)
TQ_FLOAT_GEMM(bf16, TQ_F_BF16)
#undef TQ_FLOAT_GEMM
#undef TQ_FLOAT_TILE

/* ---------------------------------------------------------------- 32-value block types */

TQ_INLINE void tq_q32_rows(int T, int R, const uint8_t *w, size_t rb, int nb, const uint8_t *act,
                           float *out) {
    const int bb = tq_q32_block_bytes(T);
    const int has_min = tq_q32_has_min(T);
    const int ab = has_min ? (int)sizeof(tq_block_q8_1) : (int)sizeof(tq_block_q8_0);
    const int offset = T == TQ_B_Q4_0 ? 8 : T == TQ_B_Q5_0 ? 16 : 0;
    __m256 acc[TQ_QK_AVX2_ROWS];
    __m128 accm[TQ_QK_AVX2_ROWS]; /* lane 1: sum of the minimum terms */
    for (int r = 0; r < R; r++) {
        acc[r] = _mm256_setzero_ps();
        accm[r] = _mm_setzero_ps();
    }
    for (int b = 0; b < nb; b++) {
        const uint8_t *ablk = act + (size_t)b * ab;
        const __m256i a = _mm256_loadu_si256((const __m256i *)(ablk + ab - 32));
        const float da = tq_h2f(ablk);
        /* offset * (sums of 4 adjacent activations), the lanes tq_dot_u8s8 produces */
        const __m256i corr = offset ? tq_dot_u8s8(_mm256_set1_epi8((char)offset), a) : _mm256_setzero_si256();
        float das = 0.0f;
        if (has_min) {
            int16_t s;
            memcpy(&s, ablk + 2, 2);
            das = da * (float)s;
        }
        const __m128 dscale = _mm_setr_ps(da, das, 0.0f, 0.0f);
        tq_prefetch_next(w, rb, R, (size_t)b * bb, (size_t)bb * R);
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * rb + (size_t)b * bb;
            __m256i p;
            if (T == TQ_B_Q8_0) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 2));
                p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(a, q)),
                                      _mm256_set1_epi16(1));
            } else if (T == TQ_B_Q4_0) {
                p = _mm256_sub_epi32(tq_dot_u8s8(tq_nib32(blk + 2), a), corr);
            } else if (T == TQ_B_Q4_1) {
                p = tq_dot_u8s8(tq_nib32(blk + 4), a);
            } else if (T == TQ_B_Q5_0) {
                const __m256i q = _mm256_or_si256(tq_nib32(blk + 6), tq_hbit32(blk + 2));
                p = _mm256_sub_epi32(tq_dot_u8s8(q, a), corr);
            } else {
                const __m256i q = _mm256_or_si256(tq_nib32(blk + 8), tq_hbit32(blk + 4));
                p = tq_dot_u8s8(q, a);
            }
            /* d and m are adjacent f16s: one conversion gives (d * da, m * da * sum(qa)) */
            const __m128 dm = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)(has_min ? tq_ld32(blk) : tq_ld16(blk)))), dscale);
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), _mm256_cvtepi32_ps(p), acc[r]);
            if (has_min) accm[r] = _mm_add_ps(accm[r], dm);
        }
    }
    for (int r = 0; r < R; r++) out[r] = tq_hsum(acc[r]) + (has_min ? _mm_cvtss_f32(_mm_shuffle_ps(accm[r], accm[r], 1)) : 0.0f);
}

#define TQ_Q32_GEMV(name, T)                                                                       \
    static void tq_qk_gemv_##name##_avx2(const void *w, size_t rb, int rows, int n, const void *act, \
                                         float *out) {                                             \
        const uint8_t *wb = (const uint8_t *)w;                                                    \
        const int nb = n / TQ_QK32;                                                                \
        int r = 0;                                                                                 \
        for (; r + TQ_QK_AVX2_ROWS <= rows; r += TQ_QK_AVX2_ROWS)                                  \
            tq_q32_rows(T, TQ_QK_AVX2_ROWS, wb + r * rb, rb, nb, (const uint8_t *)act, out + r);  \
        for (; r < rows; r++) tq_q32_rows(T, 1, wb + r * rb, rb, nb, (const uint8_t *)act, out + r); \
    }
TQ_Q32_GEMV(q8_0, TQ_B_Q8_0)
TQ_Q32_GEMV(q4_0, TQ_B_Q4_0)
TQ_Q32_GEMV(q4_1, TQ_B_Q4_1)
TQ_Q32_GEMV(q5_0, TQ_B_Q5_0)
TQ_Q32_GEMV(q5_1, TQ_B_Q5_1)

/* ---------------------------------------------------------------- K-quants */

/* sum_j m_j * (bsums[2j] + bsums[2j+1]) as 8 int32 lanes (lane j) */
TQ_INLINE __m256i tq_k4_mins(const uint8_t m[8], const int16_t *bsums) {
    __m128i mb;
    uint64_t m64;
    memcpy(&m64, m, 8);
    mb = _mm_cvtsi64_si128((long long)m64);
    const __m256i m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mb, mb)); /* m0 m0 m1 m1 ... */
    return _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bsums), m16);
}

/* The codes of sub-blocks 2p (lo) and 2p + 1 (hi) of a Q4_K / Q5_K block x as bytes in value
 * order; hb: Q5_K's qh (tq_q5k_hb), else unused. */
TQ_INLINE void tq_q4k_codes(int five, const uint8_t *x, __m256i hb, int p, __m256i *lo, __m256i *hi) {
    const uint8_t *qs = x + (five ? 48 : 16);
    const __m256i m4 = _mm256_set1_epi8(15), b4 = _mm256_set1_epi8(0x10);
    const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * p));
    *lo = _mm256_and_si256(q, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    if (five) {
        /* bit j of qh[l] -> bit 4 of byte l: shift by 4 - j inside 16-bit lanes (a byte's
         * bit moves to bit 4 of the same byte; what crosses bytes is masked off) */
        const int j = 2 * p;
        const __m256i hl = j <= 4 ? _mm256_sll_epi16(hb, _mm_cvtsi32_si128(4 - j))
                                  : _mm256_srl_epi16(hb, _mm_cvtsi32_si128(j - 4));
        const __m256i hh = j + 1 <= 4 ? _mm256_sll_epi16(hb, _mm_cvtsi32_si128(3 - j))
                                      : _mm256_srl_epi16(hb, _mm_cvtsi32_si128(j - 3));
        *lo = _mm256_or_si256(*lo, _mm256_and_si256(hl, b4));
        *hi = _mm256_or_si256(*hi, _mm256_and_si256(hh, b4));
    }
}

TQ_INLINE __m256i tq_q5k_hb(int five, const uint8_t *x) {
    return five ? _mm256_loadu_si256((const __m256i *)(x + 16)) : _mm256_setzero_si256();
}

/* sumi + sc_lo * (lo . a[0..32)) + sc_hi * (hi . a[32..64)), in int32 lanes */
TQ_INLINE __m256i tq_q4k_pair(__m256i sumi, __m256i lo, __m256i hi, const int8_t *a, __m256i sl, __m256i sh) {
    const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)a));
    const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(a + 32)));
    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, sl));
    return _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, sh));
}

/* acc + d * sumi - dmin * mins, the block's float terms (x: the weight block, y: the activation's) */
TQ_INLINE __m256 tq_q4k_float(const uint8_t *x, const tq_block_q8_k *y, __m256i sumi, __m256i mins, __m256 acc) {
    const float d = y->d * tq_h2f(x), dmin = y->d * tq_h2f(x + 2);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    return _mm256_fnmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(mins), acc);
}

/* One Q4_K / Q5_K block of a row (x; the same header: d, dmin, scales) against the Q8_K blocks y[t]
 * of NT tokens: its codes and scale vectors are built once for all of them, and acc[t] gets the
 * same integer and float operations in the same order whatever NT is (the gemv passes NT = 1, the
 * prompt GEMM its token group). */
TQ_INLINE void tq_q4k_block(int five, const uint8_t *x, int NT, const tq_block_q8_k *const *y, __m256 *acc) {
    uint8_t sc[8], m[8];
    tq_k4_scales(x + 4, sc, m);
    const __m256i hb = tq_q5k_hb(five, x);
    __m256i sumi[TQ_QK_GEMM_TOKS];
    for (int t = 0; t < NT; t++) sumi[t] = _mm256_setzero_si256();
    for (int p = 0; p < 4; p++) {
        __m256i lo, hi;
        tq_q4k_codes(five, x, hb, p, &lo, &hi);
        const __m256i sl = _mm256_set1_epi16(sc[2 * p]), sh = _mm256_set1_epi16(sc[2 * p + 1]);
        for (int t = 0; t < NT; t++) sumi[t] = tq_q4k_pair(sumi[t], lo, hi, y[t]->qs + 64 * p, sl, sh);
    }
    for (int t = 0; t < NT; t++) acc[t] = tq_q4k_float(x, y[t], sumi[t], tq_k4_mins(m, y[t]->bsums), acc[t]);
}

/* pshufb masks: bytes 0..7 = scale g, bytes 8..15 = scale g + 1, for g = 0, 2, .., 14 (the 16
 * int16 lanes of a maddubs over 32 values cover scales g and g + 1, eight lanes each) */
static const uint8_t tq_q6k_shuf[8][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
    {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},
    {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9},
    {10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13},
    {14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15},
};

/* Q6_K codes of half h as bytes (offset not removed): c[k] = values 128h + 32k .. +31 */
TQ_INLINE void tq_q6k_codes(const tq_block_q6_k *x, int h, __m256i c[4]) {
    const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
    const __m256i l0 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h));
    const __m256i l1 = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32));
    /* qh bits 2k..2k+1 -> bits 4..5 of the same byte (16-bit shifts, crossings masked) */
    c[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
    c[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
    c[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m30));
    c[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
}

/* The int16 scales of the 32 values of (h, k): 8 lanes of scale g, 8 of g + 1 (tq_q6k_shuf) */
TQ_INLINE __m256i tq_q6k_scale16(__m128i sc8, int h, int k) {
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, _mm_loadu_si128((const __m128i *)tq_q6k_shuf[4 * h + k])));
}

/* acc + d * (sumi - 32 * sum_g sc_g * bsums_g): the code offset removed in int32, then the float term */
TQ_INLINE __m256 tq_q6k_float(const tq_block_q6_k *x, const tq_block_q8_k *y, __m128i sc8, __m256i sumi, __m256 acc) {
    const __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), _mm256_cvtepi8_epi16(sc8));
    sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(corr, 5));
    return _mm256_fmadd_ps(_mm256_set1_ps(y->d * tq_h2f(&x->d)), _mm256_cvtepi32_ps(sumi), acc);
}

/* One Q6_K block of a row against NT tokens' Q8_K blocks (as tq_q4k_block) */
TQ_INLINE void tq_q6k_block(const tq_block_q6_k *x, int NT, const tq_block_q8_k *const *y, __m256 *acc) {
    const __m128i sc8 = _mm_loadu_si128((const __m128i *)x->scales);
    __m256i sumi[TQ_QK_GEMM_TOKS];
    for (int t = 0; t < NT; t++) sumi[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        __m256i c[4];
        tq_q6k_codes(x, h, c);
        for (int k = 0; k < 4; k++) {
            const __m256i s16 = tq_q6k_scale16(sc8, h, k);
            for (int t = 0; t < NT; t++) {
                const __m256i a = _mm256_loadu_si256((const __m256i *)(y[t]->qs + 128 * h + 32 * k));
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(c[k], a), s16));
            }
        }
    }
    for (int t = 0; t < NT; t++) acc[t] = tq_q6k_float(x, y[t], sc8, sumi[t], acc[t]);
}

TQ_INLINE void tq_k_rows(int T, int R, const uint8_t *w, size_t rb, int nb, const tq_block_q8_k *a,
                         float *out) {
    const int bb = T == TQ_K_Q4 ? 144 : T == TQ_K_Q5 ? 176 : 210;
    __m256 acc[TQ_QK_AVX2_ROWS];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        tq_prefetch_next(w, rb, R, (size_t)b * bb, (size_t)bb * R);
        for (int r = 0; r < R; r++) {
            const uint8_t *x = w + r * rb + (size_t)b * bb;
            const tq_block_q8_k *y = a + b;
            if (T == TQ_K_Q6)
                tq_q6k_block((const tq_block_q6_k *)x, 1, &y, &acc[r]);
            else
                tq_q4k_block(T == TQ_K_Q5, x, 1, &y, &acc[r]);
        }
    }
    for (int r = 0; r < R; r++) out[r] = tq_hsum(acc[r]);
}

#define TQ_K_GEMV(name, T)                                                                         \
    static void tq_qk_gemv_##name##_avx2(const void *w, size_t rb, int rows, int n, const void *act, \
                                         float *out) {                                             \
        const uint8_t *wb = (const uint8_t *)w;                                                    \
        const tq_block_q8_k *a = (const tq_block_q8_k *)act;                                       \
        const int nb = n / TQ_QKK;                                                                 \
        int r = 0;                                                                                 \
        for (; r + TQ_QK_AVX2_ROWS <= rows; r += TQ_QK_AVX2_ROWS)                                  \
            tq_k_rows(T, TQ_QK_AVX2_ROWS, wb + r * rb, rb, nb, a, out + r);                       \
        for (; r < rows; r++) tq_k_rows(T, 1, wb + r * rb, rb, nb, a, out + r);                    \
    }
TQ_K_GEMV(q4_k, TQ_K_Q4)
TQ_K_GEMV(q5_k, TQ_K_Q5)
TQ_K_GEMV(q6_k, TQ_K_Q6)

/* K-quant prompt GEMM (tq_qk_ops.gemm), one row x NT Q8_K activations per pass: a block's codes
 * and scale vectors are built once for the NT tokens, and every (row, token) term takes
 * tq_k_rows's integer and float operations in its order: bit-identical to the gemv per token. */
TQ_INLINE void tq_k_gemm_tile(int T, int NT, const uint8_t *row, int nb, const uint8_t *act, size_t as,
                              float *out, size_t ldo) {
    const int bb = T == TQ_K_Q4 ? 144 : T == TQ_K_Q5 ? 176 : 210;
    __m256 acc[TQ_QK_GEMM_TOKS];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *x = row + (size_t)b * bb;
        const tq_block_q8_k *y[TQ_QK_GEMM_TOKS];
        for (int t = 0; t < NT; t++) y[t] = (const tq_block_q8_k *)(act + (size_t)t * as) + b;
        if (T == TQ_K_Q6)
            tq_q6k_block((const tq_block_q6_k *)x, NT, y, acc);
        else
            tq_q4k_block(T == TQ_K_Q5, x, NT, y, acc);
    }
    for (int t = 0; t < NT; t++) out[(size_t)t * ldo] = tq_hsum(acc[t]);
}

#define TQ_K_TILE(R, NT, r, a, o) tq_k_gemm_tile(T, NT, (const uint8_t *)w + (size_t)(r) * rb, nb, a, as, o, ldo)
TQ_INLINE void tq_k_gemm(int T, const void *w, size_t rb, int rows, int n, const void *act, size_t as, int ntok,
                         float *out, size_t ldo) {
    const int nb = n / TQ_QKK;
    TQ_GEMM_LOOP(ntok, rows, act, as, out, ldo, 1, TQ_QK_GEMM_TOKS, TQ_GEMM_NO_GROUP, TQ_K_TILE)
}
#undef TQ_K_TILE

#define TQ_K_GEMM(name, T)                                                                         \
    static void tq_qk_gemm_##name##_avx2(const void *w, size_t rb, int rows, int n, const void *act, \
                                         size_t as, int ntok, float *out, size_t ldo) {            \
        tq_k_gemm(T, w, rb, rows, n, act, as, ntok, out, ldo);                                     \
    }
TQ_K_GEMM(q4_k, TQ_K_Q4)
TQ_K_GEMM(q5_k, TQ_K_Q5)
TQ_K_GEMM(q6_k, TQ_K_Q6)
#undef TQ_K_GEMM

#define TQ_QK_OPS(T, name, block, bytes, act, fn) \
    {T, name, block, bytes, act, tq_qk_gemv_##fn##_avx2, tq_qk_dequant_##fn##_scalar, TQ_QK_GEMM_OF_##fn},
/* prompt GEMMs: the float types and the K-quants, whose gemv decodes the most per block (the
 * 32-value types run the gemv per token with 8-bit activations; a GEMM for them is not built) */
#define TQ_QK_GEMM_OF_q4_k tq_qk_gemm_q4_k_avx2
#define TQ_QK_GEMM_OF_q5_k tq_qk_gemm_q5_k_avx2
#define TQ_QK_GEMM_OF_q6_k tq_qk_gemm_q6_k_avx2
#define TQ_QK_GEMM_OF_f32 tq_qk_gemm_f32_avx2
#define TQ_QK_GEMM_OF_f16 tq_qk_gemm_f16_avx2
#define TQ_QK_GEMM_OF_bf16 tq_qk_gemm_bf16_avx2
#define TQ_QK_GEMM_OF_q8_0 0
#define TQ_QK_GEMM_OF_q4_0 0
#define TQ_QK_GEMM_OF_q4_1 0
#define TQ_QK_GEMM_OF_q5_0 0
#define TQ_QK_GEMM_OF_q5_1 0

static const tq_qk_ops tq_qk_avx2_ops[] = {
    TQ_QK_FLOAT_TYPES(TQ_QK_OPS)
    TQ_QK_QUANT_TYPES(TQ_QK_OPS)
};

const tq_qk_ops *tq_qk_ops_avx2(int type) {
    return tq_qk_find(tq_qk_avx2_ops, sizeof(tq_qk_avx2_ops) / sizeof(tq_qk_avx2_ops[0]), type);
}

#else

const tq_qk_ops *tq_qk_ops_avx2(int type) {
    (void)type;
    return 0;
}

#endif
