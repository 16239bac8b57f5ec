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
/* Prompt GEMM tiles (tq_qk_ops.gemm), rows x tokens, sized to the register file: 16 YMM with AVX2,
 * 32 where AVX-512 VL lets the same 256-bit code use them (Q4_1 SmolLM2-135M pp128, one thread,
 * Zen 4: AVX2 tiles 1x4, 2x2, 2x4 all ~200 tok/s; with 32 registers 2x3, 2x4, 2x6, 1x8 ~250). */
#define TQ_GEMM_TOKS 4
#define TQ_GEMM_MAX_ROWS 2
/* K-quant GEMM: the sub-block sums of x for a token group are kept on the stack for rows of up
 * to this many super-blocks (32768 values); longer rows run the gemv per token. */
#define TQ_GEMM_K_MAX_NB 128

typedef void (*tq_f32act_gemv_fn)(const void *w, size_t rb, int rows, int n, const void *act, float *out);

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

/* A block's 32 values of x summed to 8 lanes, the term its minimum multiplies (Q4_1, Q5_1): one
 * order for the gemv and the GEMM, which must agree bit for bit. */
TQ_INLINE __m256 tq_q32_xsum(__m256 x0, __m256 x1, __m256 x2, __m256 x3) {
    return _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
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
        const __m256 xs = has_min ? tq_q32_xsum(x0, x1, x2, x3) : x0;
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
/* Prompt GEMM (tq_qk_ops.gemm): R rows x NT tokens per pass. Each block's codes are widened to
 * floats once and dotted with every token's x, and each (row, token) sum is formed with exactly
 * the operations of tq_q32_rows in its order, so every output is bit-identical to the gemv's.
 * xsum (types with a block minimum, rows of up to TQ_GEMM_Q32_MAX_NB blocks; else NULL): the token
 * group's block sums of x, [NT][nb] (tq_q32_xsum, as tq_q32_rows forms them), made once
 * per token group instead of once per row and token (3 of a block's 9 float operations per row and
 * token: SmolLM2 Q4_1 on a Zen 3 VM, AVX2, alternating builds, see benchmarks/RESULTS.md). */
#define TQ_GEMM_Q32_MAX_NB 256
TQ_INLINE void tq_q32_gemm_tile(int T, int R, int NT, const uint8_t *w, size_t rb, int nb, const float *x,
                                size_t ldx, const __m256 *xsum, float *out, size_t ldo) {
    const int bb = tq_q32_block_bytes(T);
    const int has_min = tq_q32_has_min(T);
    __m256 acc[TQ_GEMM_MAX_ROWS][TQ_GEMM_TOKS], accm[TQ_GEMM_MAX_ROWS][TQ_GEMM_TOKS];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < NT; t++) acc[r][t] = accm[r][t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256 c[TQ_GEMM_MAX_ROWS][4], d[TQ_GEMM_MAX_ROWS], m[TQ_GEMM_MAX_ROWS];
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * rb + (size_t)b * bb;
            tq_codes32(T, blk, c[r]);
            if (has_min) {
                const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)tq_ld32(blk)));
                d[r] = _mm256_broadcastss_ps(dm);
                m[r] = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
            } else {
                d[r] = _mm256_set1_ps(tq_h2f(blk));
                m[r] = d[r];
            }
        }
        for (int t = 0; t < NT; t++) {
            const float *xb = x + (size_t)t * ldx + (size_t)32 * b;
            const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
            const __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
            const __m256 xs = !has_min ? x0 : xsum ? xsum[(size_t)t * nb + b] : tq_q32_xsum(x0, x1, x2, x3);
            for (int r = 0; r < R; r++) {
                __m256 s = _mm256_mul_ps(c[r][0], x0);
                s = _mm256_fmadd_ps(c[r][1], x1, s);
                s = _mm256_fmadd_ps(c[r][2], x2, s);
                s = _mm256_fmadd_ps(c[r][3], x3, s);
                acc[r][t] = _mm256_fmadd_ps(d[r], s, acc[r][t]);
                if (has_min) accm[r][t] = _mm256_fmadd_ps(m[r], xs, accm[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < NT; t++)
            out[(size_t)t * ldo + r] = tq_hsum(has_min ? _mm256_add_ps(acc[r][t], accm[r][t]) : acc[r][t]);
}

/* Rows in tiles of RT (the rest one by one), tokens in groups of TQ_GEMM_TOKS (the rest one at a
 * time): constant tile sizes in every call, so the loops unroll. */
#define TQ_Q32_TILE(R, NT, r, a, o) tq_q32_gemm_tile(T, R, NT, wb + (r) * rb, rb, nb, (const float *)(a), ldx, xs_, o, ldo)
TQ_INLINE void tq_q32_gemm(int T, int RT, const void *w, size_t rb, int rows, int n, const void *act, size_t as,
                           int ntok, float *out, size_t ldo) {
    const int nb = n / TQ_QK32;
    const size_t ldx = as / sizeof(float);
    const uint8_t *wb = (const uint8_t *)w;
    __m256 xsum[TQ_GEMM_TOKS * TQ_GEMM_Q32_MAX_NB];
    const __m256 *xs_ = tq_q32_has_min(T) && nb <= TQ_GEMM_Q32_MAX_NB ? xsum : NULL;
#define TQ_Q32_XSUMS(nt, a)                                                                              \
    if (xs_)                                                                                             \
        for (int j = 0; j < (nt); j++)                                                                   \
            for (int b = 0; b < nb; b++) {                                                               \
                const float *xb = (const float *)(a) + (size_t)j * ldx + (size_t)32 * b;                 \
                xsum[(size_t)j * nb + b] = tq_q32_xsum(_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8),     \
                                                       _mm256_loadu_ps(xb + 16), _mm256_loadu_ps(xb + 24)); \
            }
    TQ_GEMM_LOOP(ntok, rows, act, as, out, ldo, RT, TQ_GEMM_TOKS, TQ_Q32_XSUMS, TQ_Q32_TILE)
#undef TQ_Q32_XSUMS
}
#undef TQ_Q32_TILE

/* The GEMMs of every type, once per register file: _avx2 (16 YMM) and _avx512 (the same
 * instructions, EVEX-encoded with 32 YMM; only handed out where cpu.c saw AVX-512 F/VL). Both
 * compute every output with the gemv's operations in its order. */
#if defined(_MSC_VER) && !defined(__clang__)
#define TQ_TARGET_VL /* MSVC: no per-function targets; the avx512 GEMMs are built as AVX2 */
#else
#define TQ_TARGET_VL __attribute__((target("avx512f,avx512vl")))
#endif
#define TQ_GEMM_FN(name, isa, target, body)                                                        \
    target static void tq_qk_gemm_f32act_##name##_##isa(const void *w, size_t rb, int rows, int n, \
                                                        const void *act, size_t as, int ntok,     \
                                                        float *out, size_t ldo) {                 \
        body;                                                                                      \
    }
#define TQ_Q32_GEMMS(name, T)                                                                      \
    TQ_GEMM_FN(name, avx2, , tq_q32_gemm(T, 1, w, rb, rows, n, act, as, ntok, out, ldo))           \
    TQ_GEMM_FN(name, avx512, TQ_TARGET_VL, tq_q32_gemm(T, 2, w, rb, rows, n, act, as, ntok, out, ldo))
TQ_Q32_GEMMS(q8_0, TQ_B_Q8_0)
TQ_Q32_GEMMS(q4_0, TQ_B_Q4_0)
TQ_Q32_GEMMS(q4_1, TQ_B_Q4_1)
TQ_Q32_GEMMS(q5_0, TQ_B_Q5_0)
TQ_Q32_GEMMS(q5_1, TQ_B_Q5_1)
#undef TQ_Q32_GEMMS

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

/* Q4_K / Q5_K super-block scales: dl[j] = d * sc_j (exact: 11-bit times 6-bit significands), and
 * the minima dmin * m_j as one vector. */
TQ_INLINE __m256 tq_q4k_scales(const uint8_t *blk, float dl[8]) {
    uint8_t sc[8], m[8];
    tq_k4_scales(blk + 4, sc, m);
    const __m256 d = _mm256_set1_ps(tq_h2f(blk)), dmin = _mm256_set1_ps(tq_h2f(blk + 2));
    _mm256_storeu_ps(dl, _mm256_mul_ps(d, _mm256_cvtepi32_ps(tq_u8x8(sc))));
    return _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(tq_u8x8(m)));
}

/* Q5_K: qh[8k .. 8k+7] << 4, so bit j of qh[l] shifted right by j is bit 4 */
TQ_INLINE void tq_q5k_high(const uint8_t *blk, __m256i h4[4]) {
    for (int k = 0; k < 4; k++) h4[k] = _mm256_slli_epi32(tq_u8x8(blk + 16 + 8 * k), 4);
}

/* The codes of sub-blocks 2p (low nibbles: lo) and 2p + 1 (high nibbles: hi) as floats, 8 values
 * per vector in value order; Q5_K adds bit 4 from h4 (tq_q5k_high). */
TQ_INLINE void tq_q4k_codes(int five, const uint8_t *blk, const __m256i h4[4], int p, __m256 lo[4], __m256 hi[4]) {
    const uint8_t *qs = blk + (five ? 48 : 16);
    const __m256i m4 = _mm256_set1_epi32(15), b4 = _mm256_set1_epi32(0x10);
    for (int k = 0; k < 4; k++) {
        const __m256i v = tq_u8x8(qs + 32 * p + 8 * k);
        __m256i l = _mm256_and_si256(v, m4), h = _mm256_srli_epi32(v, 4);
        if (five) {
            l = _mm256_or_si256(l, _mm256_and_si256(_mm256_srl_epi32(h4[k], _mm_cvtsi32_si128(2 * p)), b4));
            h = _mm256_or_si256(h, _mm256_and_si256(_mm256_srl_epi32(h4[k], _mm_cvtsi32_si128(2 * p + 1)), b4));
        }
        lo[k] = _mm256_cvtepi32_ps(l);
        hi[k] = _mm256_cvtepi32_ps(h);
    }
}

/* acc += dl[2p] * (lo . xl) + dl[2p + 1] * (hi . xl[32..]), each dot one FMA chain */
TQ_INLINE __m256 tq_q4k_pair(const __m256 lo[4], const __m256 hi[4], const float *xl, const float dl[8], int p,
                             __m256 acc) {
    __m256 tl = _mm256_setzero_ps(), th = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        tl = _mm256_fmadd_ps(lo[k], _mm256_loadu_ps(xl + 8 * k), tl);
        th = _mm256_fmadd_ps(hi[k], _mm256_loadu_ps(xl + 32 + 8 * k), th);
    }
    acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&dl[2 * p]), tl, acc);
    return _mm256_fmadd_ps(_mm256_broadcast_ss(&dl[2 * p + 1]), th, acc);
}

/* One Q4_K / Q5_K super-block of a row against NT tokens, its codes widened once for all of them:
 * token t's values at x + t * ldx, its tq_subblock_sums at xsum[t * xs_stride]; acc[t] += d sc_j *
 * sum(q x) per sub-block, accm[t] -= dmin m_j * xsum_j for all 8 sub-blocks at once. The gemv
 * passes NT = 1, the prompt GEMM its token group, so both take the same operations in the same
 * order. */
TQ_INLINE void tq_q4k_block(int five, const uint8_t *blk, int NT, const float *x, size_t ldx, const __m256 *xsum,
                            size_t xs_stride, __m256 *acc, __m256 *accm) {
    float dl[8];
    const __m256 ml = tq_q4k_scales(blk, dl);
    for (int t = 0; t < NT; t++) accm[t] = _mm256_fnmadd_ps(ml, xsum[(size_t)t * xs_stride], accm[t]);
    __m256i h4[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    if (five) tq_q5k_high(blk, h4);
    for (int p = 0; p < 4; p++) {
        __m256 lo[4], hi[4];
        tq_q4k_codes(five, blk, h4, p, lo, hi);
        for (int t = 0; t < NT; t++) acc[t] = tq_q4k_pair(lo, hi, x + (size_t)t * ldx + 64 * p, dl, p, acc[t]);
    }
}

/* Q6_K: dsc[g] = d * sc_g (exact: 11-bit times 7-bit significands) */
TQ_INLINE void tq_q6k_scales(const tq_block_q6_k *blk, float dsc[16]) {
    const __m256 d = _mm256_set1_ps(tq_h2f(&blk->d));
    _mm256_storeu_ps(dsc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(tq_s8x8(blk->scales))));
    _mm256_storeu_ps(dsc + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(tq_s8x8(blk->scales + 8))));
}

/* Q6_K codes (offset removed) as floats for half h, l in 16 half .. 16 half + 15: c[e][k] holds
 * values 128h + 32k + 16 half + 8e .. +7. Low 4 bits from ql (k >= 2: high nibble), high 2 bits
 * (qh >> 2k) & 3 moved to bits 4..5. */
TQ_INLINE void tq_q6k_codes(const tq_block_q6_k *blk, int h, int half, __m256 c[2][4]) {
    const __m256i m4 = _mm256_set1_epi32(15), m30 = _mm256_set1_epi32(0x30), o = _mm256_set1_epi32(32);
    for (int e = 0; e < 2; e++) {
        const int l = 16 * half + 8 * e;
        const __m256i q0 = tq_u8x8(blk->ql + 64 * h + l), q1 = tq_u8x8(blk->ql + 64 * h + 32 + l);
        const __m256i qh = tq_u8x8(blk->qh + 32 * h + l);
        const __m256i ci[4] = {
            _mm256_or_si256(_mm256_and_si256(q0, m4), _mm256_and_si256(_mm256_slli_epi32(qh, 4), m30)),
            _mm256_or_si256(_mm256_and_si256(q1, m4), _mm256_and_si256(_mm256_slli_epi32(qh, 2), m30)),
            _mm256_or_si256(_mm256_srli_epi32(q0, 4), _mm256_and_si256(qh, m30)),
            _mm256_or_si256(_mm256_srli_epi32(q1, 4), _mm256_and_si256(_mm256_srli_epi32(qh, 2), m30)),
        };
        for (int k = 0; k < 4; k++) c[e][k] = _mm256_cvtepi32_ps(_mm256_sub_epi32(ci[k], o));
    }
}

/* acc += dsc[g] * (codes . x) for the four groups g of (h, half); xb = x + 128h + 16 half */
TQ_INLINE __m256 tq_q6k_quarter(__m256 c[2][4], const float *xb, const float dsc[16], int h, int half,
                                __m256 acc) {
    __m256 t[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int e = 0; e < 2; e++)
        for (int k = 0; k < 4; k++) t[k] = _mm256_fmadd_ps(c[e][k], _mm256_loadu_ps(xb + 32 * k + 8 * e), t[k]);
    for (int k = 0; k < 4; k++) acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&dsc[8 * h + 2 * k + half]), t[k], acc);
    return acc;
}

/* One Q6_K super-block of a row against NT tokens (as tq_q4k_block): acc[t] += d sc_g *
 * sum((q - 32) x) per group g of 16 values. */
TQ_INLINE void tq_q6k_block(const tq_block_q6_k *blk, int NT, const float *x, size_t ldx, __m256 *acc) {
    float dsc[16];
    tq_q6k_scales(blk, dsc);
    for (int h = 0; h < 2; h++)
        for (int half = 0; half < 2; half++) {
            __m256 c[2][4];
            tq_q6k_codes(blk, h, half, c);
            for (int t = 0; t < NT; t++)
                acc[t] = tq_q6k_quarter(c, x + (size_t)t * ldx + 128 * h + 16 * half, dsc, h, half, acc[t]);
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
                tq_q6k_block((const tq_block_q6_k *)blk, 1, xb, 0, &acc[r]);
            else
                tq_q4k_block(T == TQ_K_Q5, blk, 1, xb, 0, &xsum, 0, &acc[r], &accm[r]);
        }
    }
    for (int r = 0; r < R; r++) out[r] = tq_hsum(T == TQ_K_Q6 ? acc[r] : _mm256_add_ps(acc[r], accm[r]));
}

/* K-quant prompt GEMM, one row x NT tokens per pass: each (sub-)block's codes are widened to
 * floats once for the NT tokens, and each (row, token) sum takes tq_k_rows's operations in its
 * order (bit-identical to the gemv). xsum: the token group's tq_subblock_sums, [NT][nb]. */
TQ_INLINE void tq_k_gemm_tile(int T, int NT, const uint8_t *row, int nb, const float *x, size_t ldx,
                              const __m256 *xsum, float *out, size_t ldo) {
    const int bb = T == TQ_K_Q4 ? 144 : T == TQ_K_Q5 ? 176 : 210;
    __m256 acc[TQ_GEMM_TOKS], accm[TQ_GEMM_TOKS];
    for (int t = 0; t < NT; t++) acc[t] = accm[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * bb;
        const float *xb = x + (size_t)TQ_QKK * b;
        if (T == TQ_K_Q6)
            tq_q6k_block((const tq_block_q6_k *)blk, NT, xb, ldx, acc);
        else
            tq_q4k_block(T == TQ_K_Q5, blk, NT, xb, ldx, xsum + b, (size_t)nb, acc, accm);
    }
    for (int t = 0; t < NT; t++) out[(size_t)t * ldo] = tq_hsum(T == TQ_K_Q6 ? acc[t] : _mm256_add_ps(acc[t], accm[t]));
}

TQ_INLINE void tq_k_gemm(int T, int NT, const void *w, size_t rb, int rows, int n, const void *act, size_t as,
                         int ntok, float *out, size_t ldo, tq_f32act_gemv_fn gemv) {
    const int nb = n / TQ_QKK;
    const size_t ldx = as / sizeof(float);
    const uint8_t *wb = (const uint8_t *)w;
    if (nb > TQ_GEMM_K_MAX_NB) {
        for (int t = 0; t < ntok; t++) gemv(w, rb, rows, n, (const float *)act + (size_t)t * ldx, out + (size_t)t * ldo);
        return;
    }
    __m256 xsum[TQ_GEMM_TOKS * TQ_GEMM_K_MAX_NB];
#define TQ_K_XSUMS(nt, a)                                                                                \
    if (T != TQ_K_Q6)                                                                                    \
        for (int j = 0; j < (nt); j++)                                                                   \
            for (int b = 0; b < nb; b++)                                                                 \
                xsum[(size_t)j * nb + b] = tq_subblock_sums((const float *)(a) + (size_t)j * ldx + (size_t)TQ_QKK * b);
#define TQ_K_TILE(R, NT, r, a, o) tq_k_gemm_tile(T, NT, wb + (r) * rb, nb, (const float *)(a), ldx, xsum, o, ldo)
    TQ_GEMM_LOOP(ntok, rows, act, as, out, ldo, 1, NT, TQ_K_XSUMS, TQ_K_TILE)
#undef TQ_K_XSUMS
#undef TQ_K_TILE
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

#define TQ_K_GEMMS(name, T)                                                                        \
    TQ_GEMM_FN(name, avx2, , tq_k_gemm(T, 4, w, rb, rows, n, act, as, ntok, out, ldo, tq_qk_gemv_f32act_##name##_avx2)) \
    TQ_GEMM_FN(name, avx512, TQ_TARGET_VL,                                                         \
               tq_k_gemm(T, 4, w, rb, rows, n, act, as, ntok, out, ldo, tq_qk_gemv_f32act_##name##_avx2))
TQ_K_GEMMS(q4_k, TQ_K_Q4)
TQ_K_GEMMS(q5_k, TQ_K_Q5)
TQ_K_GEMMS(q6_k, TQ_K_Q6)
#undef TQ_K_GEMMS

#define TQ_QK_OPS(T, name, block, bytes, act, fn) \
    {T, name, block, bytes, TQ_ACTF_F32, tq_qk_gemv_f32act_##fn##_avx2, tq_qk_dequant_##fn##_scalar, tq_qk_gemm_f32act_##fn##_avx2},
static const tq_qk_ops tq_qk_f32act_avx2_ops[] = {
    TQ_QK_QUANT_TYPES(TQ_QK_OPS)
};
#undef TQ_QK_OPS
#define TQ_QK_OPS(T, name, block, bytes, act, fn) \
    {T, name, block, bytes, TQ_ACTF_F32, tq_qk_gemv_f32act_##fn##_avx2, tq_qk_dequant_##fn##_scalar, tq_qk_gemm_f32act_##fn##_avx512},
static const tq_qk_ops tq_qk_f32act_avx512_ops[] = {
    TQ_QK_QUANT_TYPES(TQ_QK_OPS)
};
#undef TQ_QK_OPS

const tq_qk_ops *tq_qk_ops_f32act_avx2(int type) {
    return tq_qk_find(tq_qk_f32act_avx2_ops, sizeof(tq_qk_f32act_avx2_ops) / sizeof(tq_qk_f32act_avx2_ops[0]), type);
}

const tq_qk_ops *tq_qk_ops_f32act_avx512(int type) {
    return tq_qk_find(tq_qk_f32act_avx512_ops, sizeof(tq_qk_f32act_avx512_ops) / sizeof(tq_qk_f32act_avx512_ops[0]), type);
}

#else

const tq_qk_ops *tq_qk_ops_f32act_avx2(int type) {
    (void)type;
    return 0;
}

const tq_qk_ops *tq_qk_ops_f32act_avx512(int type) {
    (void)type;
    return 0;
}

#endif
