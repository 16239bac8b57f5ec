/* AVX2 + FMA + F16C f32-activation gemv for the llama.cpp weight types (qk.h, tq_qk_get_f32act).
 * Built with -mavx2 -mfma -mf16c only (setup.py); tq_qk_get_f32act() hands these out only where
 * tq_qk_get() hands out the AVX2 ops (cpu.c saw AVX2, FMA, F16C and OS support for YMM).
 *
 * The activation x stays f32. Each weight's integer code is widened to an int32 lane (vpmovzx /
 * vpmovsx straight from the block), its offset removed in int32 (Q4_0: 8, Q5_0: 16, Q6_K: 32, so
 * the float terms are exactly the dequantized weights' scale parts), converted to float and FMA'd
 * with x into a per-(sub-)block sum; the block scale multiplies that sum once (one FMA per block),
 * and the block minimum (Q4_1, Q5_1, Q4_K, Q5_K) multiplies the block sum of x, which every row
 * of a pass shares:
 *   sum_i (d q_i + m) x_i = d * sum_i q_i x_i + m * sum_i x_i.
 * Scale products d * sc are exact in f32 (11-bit times 6/7-bit significands) as in dequant.
 * These are the scalar reference's terms, grouped and rounded differently: the tests bound the
 * difference by the terms' magnitudes (tests/kernels/test_qk_f32act.py).
 *
 * Several rows per pass share the x loads and the x block sums; the weights stream from memory
 * and the next pass's rows are prefetched linearly, as in qk_avx2.c.
 * On any other architecture, or without AVX2 flags, this file compiles to an empty lookup. */
#include "qk.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__AVX2__)

#include <immintrin.h>
#include <string.h>

#include "qk_simd.h"
#include "tq.h"

/* Rows per pass, then passes of 4 and of 1 for the rest. 8 measured faster than 4 (Q4_1 1536x576
 * single thread on Zen 4: 10.1 vs 9.2 GB/s; Q4_K 9.1 vs 8.1) although the accumulators then spill:
 * more independent FMA chains per shared x load. */
#define TQ_F32ACT_ROWS 8

/* 8 bytes at p, zero- / sign-extended to 8 int32 lanes */
TQ_INLINE __m256i tq_u8x8(const uint8_t *p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}
TQ_INLINE __m256i tq_s8x8(const void *p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
}

/* ---------------------------------------------------------------- 32-value block types */

/* The 32 codes of a block (offset removed) as floats: c[k] = values 8k .. 8k+7. */
TQ_INLINE void tq_codes32(int T, const uint8_t *blk, __m256 c[4]) {
    if (T == TQ_B_Q8_0) {
        for (int k = 0; k < 4; k++) c[k] = _mm256_cvtepi32_ps(tq_s8x8(blk + 2 + 8 * k));
    } else if (T == TQ_B_Q4_0 || T == TQ_B_Q4_1) {
        /* byte j holds value j (low nibble) and j + 16 (high nibble) */
        const uint8_t *qs = blk + (T == TQ_B_Q4_0 ? 2 : 4);
        const __m256i m4 = _mm256_set1_epi32(15), o = _mm256_set1_epi32(T == TQ_B_Q4_0 ? 8 : 0);
        for (int k = 0; k < 2; k++) {
            const __m256i v = tq_u8x8(qs + 8 * k);
            c[k] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(v, m4), o));
            c[k + 2] = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(v, 4), o));
        }
    } else {
        /* Q5: the 5-bit codes as bytes in value order, offset removed, then sign-extended */
        const uint8_t *qh = blk + (T == TQ_B_Q5_0 ? 2 : 4);
        const __m128i x = _mm_loadu_si128((const __m128i *)(qh + 4));
        __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(x), _mm_srli_epi16(x, 4), 1);
        q = _mm256_or_si256(_mm256_and_si256(q, _mm256_set1_epi8(15)), tq_hbit32(qh));
        if (T == TQ_B_Q5_0) q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
        const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        c[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
        c[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
        c[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
        c[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
    }
}

TQ_INLINE void tq_q32_rows(int T, int R, const uint8_t *w, size_t rb, int nb, const float *x,
                           float *out) {
    const int bb = tq_q32_block_bytes(T);
    const int has_min = tq_q32_has_min(T);
    __m256 acc[TQ_F32ACT_ROWS], accm[TQ_F32ACT_ROWS]; /* scale terms, minimum terms */
    for (int r = 0; r < R; r++) acc[r] = accm[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (size_t)32 * b;
        const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
        const __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
        const __m256 xs = has_min ? _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)) : x0;
        tq_prefetch_next(w, rb, R, (size_t)b * bb, (size_t)bb * R);
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * rb + (size_t)b * bb;
            __m256 c[4];
            tq_codes32(T, blk, c);
            __m256 t = _mm256_mul_ps(c[0], x0);
            t = _mm256_fmadd_ps(c[1], x1, t);
            t = _mm256_fmadd_ps(c[2], x2, t);
            t = _mm256_fmadd_ps(c[3], x3, t);
            if (has_min) { /* d and m are adjacent f16s */
                const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)tq_ld32(blk)));
                acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), t, acc[r]);
                accm[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dm)), xs, accm[r]);
            } else {
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(tq_h2f(blk)), t, acc[r]);
            }
        }
    }
    for (int r = 0; r < R; r++) out[r] = tq_hsum(has_min ? _mm256_add_ps(acc[r], accm[r]) : acc[r]);
}

#define TQ_Q32_GEMV(name, T)                                                                       \
    static void tq_qk_gemv_f32act_##name##_avx2(const void *w, size_t rb, int rows, int n,         \
                                                const void *act, float *out) {                     \
        const uint8_t *wb = (const uint8_t *)w;                                                    \
        const float *x = (const float *)act;                                                       \
        const int nb = n / TQ_QK32;                                                                \
        int r = 0;                                                                                 \
        for (; r + TQ_F32ACT_ROWS <= rows; r += TQ_F32ACT_ROWS)                                    \
            tq_q32_rows(T, TQ_F32ACT_ROWS, wb + r * rb, rb, nb, x, out + r);                       \
        for (; r + 4 <= rows; r += 4) tq_q32_rows(T, 4, wb + r * rb, rb, nb, x, out + r);          \
        for (; r < rows; r++) tq_q32_rows(T, 1, wb + r * rb, rb, nb, x, out + r);                  \
    }
TQ_Q32_GEMV(q8_0, TQ_B_Q8_0)
TQ_Q32_GEMV(q4_0, TQ_B_Q4_0)
TQ_Q32_GEMV(q4_1, TQ_B_Q4_1)
TQ_Q32_GEMV(q5_0, TQ_B_Q5_0)
TQ_Q32_GEMV(q5_1, TQ_B_Q5_1)
#undef TQ_Q32_GEMV

/* ---------------------------------------------------------------- K-quants */

/* Lane j: sum of x over sub-block j (values 32j .. 32j+31) of a super-block. */
TQ_INLINE __m256 tq_subblock_sums(const float *x) {
    __m256 s[8];
    for (int j = 0; j < 8; j++) {
        const float *p = x + 32 * j;
        s[j] = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)),
                             _mm256_add_ps(_mm256_loadu_ps(p + 16), _mm256_loadu_ps(p + 24)));
    }
    /* hadd works within 128-bit halves: after two rounds, half h of lane j holds sub-block j's
     * sum over the half h of each of its 4 vectors, for j in 0..3 / 4..7 */
    const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
    const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(s[4], s[5]), _mm256_hadd_ps(s[6], s[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

/* One Q4_K / Q5_K super-block of a row: acc += d sc_j * sum(q x) per sub-block, accm -= dmin m_j *
 * xsum_j for all 8 sub-blocks at once (xsum: tq_subblock_sums). */
TQ_INLINE void tq_q4k_block(int five, const uint8_t *blk, const float *x, __m256 xsum, __m256 *acc,
                            __m256 *accm) {
    uint8_t sc[8], m[8];
    tq_k4_scales(blk + 4, sc, m);
    const __m256 d = _mm256_set1_ps(tq_h2f(blk)), dmin = _mm256_set1_ps(tq_h2f(blk + 2));
    float dl[8]; /* d * sc_j: exact (11-bit times 6-bit significands) */
    _mm256_storeu_ps(dl, _mm256_mul_ps(d, _mm256_cvtepi32_ps(tq_u8x8(sc))));
    const __m256 ml = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(tq_u8x8(m)));
    *accm = _mm256_fnmadd_ps(ml, xsum, *accm);
    const uint8_t *qs = blk + (five ? 48 : 16);
    const __m256i m4 = _mm256_set1_epi32(15), b4 = _mm256_set1_epi32(0x10);
    __m256i h4[4]; /* Q5_K: qh[8k .. 8k+7] << 4, so bit j of qh[l] shifted right by j is bit 4 */
    if (five)
        for (int k = 0; k < 4; k++) h4[k] = _mm256_slli_epi32(tq_u8x8(blk + 16 + 8 * k), 4);
    for (int p = 0; p < 4; p++) { /* sub-blocks 2p (low nibbles) and 2p + 1 (high nibbles) */
        const float *xl = x + 64 * p, *xh = xl + 32;
        __m256 tl = _mm256_setzero_ps(), th = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            const __m256i v = tq_u8x8(qs + 32 * p + 8 * k);
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_srli_epi32(v, 4);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_srl_epi32(h4[k], _mm_cvtsi32_si128(2 * p)), b4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_srl_epi32(h4[k], _mm_cvtsi32_si128(2 * p + 1)), b4));
            }
            tl = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_loadu_ps(xl + 8 * k), tl);
            th = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_loadu_ps(xh + 8 * k), th);
        }
        *acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&dl[2 * p]), tl, *acc);
        *acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&dl[2 * p + 1]), th, *acc);
    }
}

/* One Q6_K super-block of a row: acc += d sc_g * sum((q - 32) x) per group g of 16 values. */
TQ_INLINE void tq_q6k_block(const tq_block_q6_k *blk, const float *x, __m256 *acc) {
    const __m256 d = _mm256_set1_ps(tq_h2f(&blk->d));
    float dsc[16]; /* d * sc_g: exact (11-bit times 7-bit significands) */
    _mm256_storeu_ps(dsc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(tq_s8x8(blk->scales))));
    _mm256_storeu_ps(dsc + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(tq_s8x8(blk->scales + 8))));
    const __m256i m4 = _mm256_set1_epi32(15), m30 = _mm256_set1_epi32(0x30), o = _mm256_set1_epi32(32);
    for (int h = 0; h < 2; h++) {
        for (int half = 0; half < 2; half++) { /* l in 0..15, then 16..31: one scale per k */
            __m256 t[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int e = 0; e < 2; e++) {
                const int l = 16 * half + 8 * e;
                const __m256i q0 = tq_u8x8(blk->ql + 64 * h + l), q1 = tq_u8x8(blk->ql + 64 * h + 32 + l);
                const __m256i qh = tq_u8x8(blk->qh + 32 * h + l);
                /* value 128h + 32k + l: low 4 bits from q0 / q1 (k >= 2: high nibble), high 2
                 * bits (qh >> 2k) & 3 moved to bits 4..5 */
                const __m256i c[4] = {
                    _mm256_or_si256(_mm256_and_si256(q0, m4), _mm256_and_si256(_mm256_slli_epi32(qh, 4), m30)),
                    _mm256_or_si256(_mm256_and_si256(q1, m4), _mm256_and_si256(_mm256_slli_epi32(qh, 2), m30)),
                    _mm256_or_si256(_mm256_srli_epi32(q0, 4), _mm256_and_si256(qh, m30)),
                    _mm256_or_si256(_mm256_srli_epi32(q1, 4), _mm256_and_si256(_mm256_srli_epi32(qh, 2), m30)),
                };
                for (int k = 0; k < 4; k++)
                    t[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c[k], o)),
                                           _mm256_loadu_ps(x + 128 * h + 32 * k + l), t[k]);
            }
            for (int k = 0; k < 4; k++)
                *acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&dsc[8 * h + 2 * k + half]), t[k], *acc);
        }
    }
}

TQ_INLINE void tq_k_rows(int T, int R, const uint8_t *w, size_t rb, int nb, const float *x, float *out) {
    const int bb = T == TQ_K_Q4 ? 144 : T == TQ_K_Q5 ? 176 : 210;
    __m256 acc[TQ_F32ACT_ROWS], accm[TQ_F32ACT_ROWS];
    for (int r = 0; r < R; r++) acc[r] = accm[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (size_t)TQ_QKK * b;
        const __m256 xsum = T == TQ_K_Q6 ? _mm256_setzero_ps() : tq_subblock_sums(xb);
        tq_prefetch_next(w, rb, R, (size_t)b * bb, (size_t)bb * R);
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * rb + (size_t)b * bb;
            if (T == TQ_K_Q6)
                tq_q6k_block((const tq_block_q6_k *)blk, xb, &acc[r]);
            else
                tq_q4k_block(T == TQ_K_Q5, blk, xb, xsum, &acc[r], &accm[r]);
        }
    }
    for (int r = 0; r < R; r++) out[r] = tq_hsum(T == TQ_K_Q6 ? acc[r] : _mm256_add_ps(acc[r], accm[r]));
}

#define TQ_K_GEMV(name, T)                                                                         \
    static void tq_qk_gemv_f32act_##name##_avx2(const void *w, size_t rb, int rows, int n,         \
                                                const void *act, float *out) {                     \
        const uint8_t *wb = (const uint8_t *)w;                                                    \
        const float *x = (const float *)act;                                                       \
        const int nb = n / TQ_QKK;                                                                 \
        int r = 0;                                                                                 \
        for (; r + TQ_F32ACT_ROWS <= rows; r += TQ_F32ACT_ROWS)                                    \
            tq_k_rows(T, TQ_F32ACT_ROWS, wb + r * rb, rb, nb, x, out + r);                         \
        for (; r + 4 <= rows; r += 4) tq_k_rows(T, 4, wb + r * rb, rb, nb, x, out + r);            \
        for (; r < rows; r++) tq_k_rows(T, 1, wb + r * rb, rb, nb, x, out + r);                    \
    }
TQ_K_GEMV(q4_k, TQ_K_Q4)
TQ_K_GEMV(q5_k, TQ_K_Q5)
TQ_K_GEMV(q6_k, TQ_K_Q6)
#undef TQ_K_GEMV

#define TQ_QK_OPS(T, name, block, bytes, act, fn) \
    {T, name, block, bytes, TQ_ACTF_F32, tq_qk_gemv_f32act_##fn##_avx2, tq_qk_dequant_##fn##_scalar},

static const tq_qk_ops tq_qk_f32act_avx2_ops[] = {
    TQ_QK_QUANT_TYPES(TQ_QK_OPS)
};
#undef TQ_QK_OPS

const tq_qk_ops *tq_qk_ops_f32act_avx2(int type) {
    return tq_qk_find(tq_qk_f32act_avx2_ops, sizeof(tq_qk_f32act_avx2_ops) / sizeof(tq_qk_f32act_avx2_ops[0]), type);
}

#else

const tq_qk_ops *tq_qk_ops_f32act_avx2(int type) {
    (void)type;
    return 0;
}

#endif
