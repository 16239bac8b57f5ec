/* AArch64 NEON f32-activation gemv for the llama.cpp weight types (qk.h, tq_qk_get_f32act). Only
 * baseline AArch64 instructions (FMA and f16 conversion are part of it), so there is one variant,
 * handed out for both "neon" and "neon-dotprod".
 *
 * As in qk_f32act_avx2.c: the codes of a block are built as bytes with the offset removed (the
 * same byte code as qk_neon_body.h), widened to int32 lanes (SXTL twice), converted (SCVTF) and
 * FMA'd with x into a block sum; the block scale multiplies that sum once and the block minimum
 * multiplies the block sum of x, which the rows of a pass share:
 *   sum_i (d q_i + m) x_i = d * sum_i q_i x_i + m * sum_i x_i.
 * The tests bound the difference to the scalar reference by the terms' magnitudes.
 * On any other architecture this file compiles to an empty lookup. */
#include "qk.h"

#if defined(__aarch64__) || defined(_M_ARM64)

#include <arm_neon.h>
#include <string.h>

#include "qk_simd.h"
#include "tq.h"

/* Rows per pass: they share the x loads and the x block sums. */
#define TQ_F32ACT_ROWS 4
/* Tokens per pass of the prompt GEMMs; the K-quant GEMM keeps the token group's sub-block sums of
 * x on the stack for rows of up to TQ_GEMM_K_MAX_NB super-blocks (longer rows: gemv per token). */
#define TQ_GEMM_TOKS 4
#define TQ_GEMM_K_MAX_NB 64

/* int8 codes c (16 values) as floats, 4 per vector in value order */
TQ_INLINE void tq_cvt16(int8x16_t c, float32x4_t f[4]) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(c)), hi = vmovl_high_s8(c);
    f[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
    f[1] = vcvtq_f32_s32(vmovl_high_s16(lo));
    f[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
    f[3] = vcvtq_f32_s32(vmovl_high_s16(hi));
}

/* t + sum of 16 products: codes f (tq_cvt16) times x[0..16), one FMA chain */
TQ_INLINE float32x4_t tq_fma16f(float32x4_t t, const float32x4_t f[4], const float *x) {
    t = vfmaq_f32(t, f[0], vld1q_f32(x));
    t = vfmaq_f32(t, f[1], vld1q_f32(x + 4));
    t = vfmaq_f32(t, f[2], vld1q_f32(x + 8));
    return vfmaq_f32(t, f[3], vld1q_f32(x + 12));
}

/* sum of 16 products: int8 codes c (values i .. i+15) times x[0..16) */
TQ_INLINE float32x4_t tq_fma16(float32x4_t t, int8x16_t c, const float *x) {
    float32x4_t f[4];
    tq_cvt16(c, f);
    return tq_fma16f(t, f, x);
}

/* lane-wise sum of x[0..32): 4 lanes whose total is the block sum */
TQ_INLINE float32x4_t tq_xsum32(const float *x) {
    const float32x4_t a = vaddq_f32(vaddq_f32(vld1q_f32(x), vld1q_f32(x + 4)), vaddq_f32(vld1q_f32(x + 8), vld1q_f32(x + 12)));
    const float32x4_t b = vaddq_f32(vaddq_f32(vld1q_f32(x + 16), vld1q_f32(x + 20)), vaddq_f32(vld1q_f32(x + 24), vld1q_f32(x + 28)));
    return vaddq_f32(a, b);
}

/* ---------------------------------------------------------------- 32-value block types */

TQ_INLINE void tq_q32_rows(const int T, const int R, const uint8_t *w, size_t rb, int nb, const float *x,
                           float *out) {
    const int bb = tq_q32_block_bytes(T);
    const int has_min = tq_q32_has_min(T);
    float32x4_t acc[TQ_F32ACT_ROWS], accm[TQ_F32ACT_ROWS]; /* scale terms, minimum terms */
    for (int r = 0; r < R; r++) acc[r] = accm[r] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (size_t)32 * b;
        const float32x4_t xs = has_min ? tq_xsum32(xb) : vdupq_n_f32(0.0f);
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * rb + (size_t)b * bb;
            int8x16_t c0, c1; /* values 0..15, 16..31, offset removed */
            tq_q32_codes(T, blk, &c0, &c1);
            const float32x4_t t = tq_fma16(tq_fma16(vdupq_n_f32(0.0f), c0, xb), c1, xb + 16);
            acc[r] = vfmaq_n_f32(acc[r], t, tq_h2f(blk));
            if (has_min) accm[r] = vfmaq_n_f32(accm[r], xs, tq_h2f(blk + 2));
        }
    }
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(has_min ? vaddq_f32(acc[r], accm[r]) : acc[r]);
}

#define TQ_Q32_GEMV(name, T)                                                                        \
    static void tq_qk_gemv_f32act_##name##_neon(const void *w, size_t rb, int rows, int n,          \
                                                const void *act, float *out) {                      \
        const uint8_t *wb = (const uint8_t *)w;                                                     \
        const float *x = (const float *)act;                                                        \
        const int nb = n / TQ_QK32;                                                                 \
        int r = 0;                                                                                  \
        for (; r + TQ_F32ACT_ROWS <= rows; r += TQ_F32ACT_ROWS)                                     \
            tq_q32_rows(T, TQ_F32ACT_ROWS, wb + r * rb, rb, nb, x, out + r);                        \
        for (; r < rows; r++) tq_q32_rows(T, 1, wb + r * rb, rb, nb, x, out + r);                   \
    }
TQ_Q32_GEMV(q8_0, TQ_B_Q8_0)
TQ_Q32_GEMV(q4_0, TQ_B_Q4_0)
TQ_Q32_GEMV(q4_1, TQ_B_Q4_1)
TQ_Q32_GEMV(q5_0, TQ_B_Q5_0)
TQ_Q32_GEMV(q5_1, TQ_B_Q5_1)
#undef TQ_Q32_GEMV

/* Prompt GEMM (tq_qk_ops.gemm), one row x NT tokens per pass: a block's codes are converted to
 * floats once for the NT tokens, and every (row, token) sum takes tq_q32_rows's operations in its
 * order, so each output is bit-identical to the gemv's. xsum (types with a block minimum, rows of
 * up to TQ_GEMM_Q32_MAX_NB blocks; else NULL): the token group's tq_xsum32 per block, [NT][nb],
 * made once per token group instead of once per row (as in qk_f32act_avx2.c). */
#define TQ_GEMM_Q32_MAX_NB 256
TQ_INLINE void tq_q32_gemm_tile(const int T, const int NT, const uint8_t *row, int nb, const float *x, size_t ldx,
                                const float32x4_t *xsum, float *out, size_t ldo) {
    const int bb = tq_q32_block_bytes(T);
    const int has_min = tq_q32_has_min(T);
    float32x4_t acc[TQ_GEMM_TOKS], accm[TQ_GEMM_TOKS];
    for (int t = 0; t < NT; t++) acc[t] = accm[t] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * bb;
        int8x16_t c0, c1;
        tq_q32_codes(T, blk, &c0, &c1);
        float32x4_t f0[4], f1[4];
        tq_cvt16(c0, f0);
        tq_cvt16(c1, f1);
        const float d = tq_h2f(blk), m = has_min ? tq_h2f(blk + 2) : 0.0f;
        for (int t = 0; t < NT; t++) {
            const float *xb = x + (size_t)t * ldx + (size_t)32 * b;
            acc[t] = vfmaq_n_f32(acc[t], tq_fma16f(tq_fma16f(vdupq_n_f32(0.0f), f0, xb), f1, xb + 16), d);
            if (has_min) accm[t] = vfmaq_n_f32(accm[t], xsum ? xsum[(size_t)t * nb + b] : tq_xsum32(xb), m);
        }
    }
    for (int t = 0; t < NT; t++) out[(size_t)t * ldo] = vaddvq_f32(has_min ? vaddq_f32(acc[t], accm[t]) : acc[t]);
}

#define TQ_Q32_TILE(R, NT, r, a, o) \
    tq_q32_gemm_tile(T, NT, (const uint8_t *)w + (size_t)(r) * rb, nb, (const float *)(a), ldx, xs_, o, ldo)
#define TQ_Q32_XSUMS(nt, a)                                                                        \
    if (xs_)                                                                                       \
        for (int j = 0; j < (nt); j++)                                                             \
            for (int b = 0; b < nb; b++) xsum[(size_t)j * nb + b] = tq_xsum32((const float *)(a) + (size_t)j * ldx + (size_t)32 * b);
#define TQ_Q32_GEMM(name, T_)                                                                       \
    static void tq_qk_gemm_f32act_##name##_neon(const void *w, size_t rb, int rows, int n,          \
                                                const void *act, size_t as, int ntok, float *out,   \
                                                size_t ldo) {                                       \
        const int T = T_, nb = n / TQ_QK32;                                                         \
        const size_t ldx = as / sizeof(float);                                                      \
        float32x4_t xsum[TQ_GEMM_TOKS * TQ_GEMM_Q32_MAX_NB];                                        \
        const float32x4_t *xs_ = tq_q32_has_min(T) && nb <= TQ_GEMM_Q32_MAX_NB ? xsum : NULL;       \
        TQ_GEMM_LOOP(ntok, rows, act, as, out, ldo, 1, TQ_GEMM_TOKS, TQ_Q32_XSUMS, TQ_Q32_TILE)     \
    }
TQ_Q32_GEMM(q8_0, TQ_B_Q8_0)
TQ_Q32_GEMM(q4_0, TQ_B_Q4_0)
TQ_Q32_GEMM(q4_1, TQ_B_Q4_1)
TQ_Q32_GEMM(q5_0, TQ_B_Q5_0)
TQ_Q32_GEMM(q5_1, TQ_B_Q5_1)
#undef TQ_Q32_GEMM
#undef TQ_Q32_TILE
#undef TQ_Q32_XSUMS

/* ---------------------------------------------------------------- K-quants */

/* One Q4_K / Q5_K super-block of a row against NT tokens, its codes widened once for all of them:
 * token t's values at x + t * ldx, its lane-wise sums of x over sub-block j at xs[t * xs_stride + j];
 * acc[t] += d sc_j * sum(q x) per sub-block, accm[t] -= dmin m_j * xsum_j. The gemv passes NT = 1,
 * the prompt GEMM its token group, so both take the same operations in the same order. */
TQ_INLINE void tq_q4k_block(const int five, const uint8_t *blk, const int NT, const float *x, size_t ldx,
                            const float32x4_t *xs, size_t xs_stride, float32x4_t *acc, float32x4_t *accm) {
    uint8_t sc[8], m[8];
    tq_k4_scales(blk + 4, sc, m);
    const float d = tq_h2f(blk), dmin = tq_h2f(blk + 2);
    for (int t = 0; t < NT; t++)
        for (int j = 0; j < 8; j++) accm[t] = vfmsq_n_f32(accm[t], xs[(size_t)t * xs_stride + j], dmin * (float)m[j]);
    uint8x16_t h0, h1;
    tq_q5k_high(five, blk, &h0, &h1);
    for (int p = 0; p < 4; p++) {
        int8x16_t c[4];
        tq_q4k_codes(five, blk, h0, h1, p, c);
        float32x4_t f[4][4];
        for (int k = 0; k < 4; k++) tq_cvt16(c[k], f[k]);
        for (int t = 0; t < NT; t++) {
            const float *xl = x + (size_t)t * ldx + 64 * p, *xh = xl + 32;
            const float32x4_t tl = tq_fma16f(tq_fma16f(vdupq_n_f32(0.0f), f[0], xl), f[1], xl + 16);
            const float32x4_t th = tq_fma16f(tq_fma16f(vdupq_n_f32(0.0f), f[2], xh), f[3], xh + 16);
            /* d * sc_j: exact (11-bit times 6-bit significands) */
            acc[t] = vfmaq_n_f32(acc[t], tl, d * (float)sc[2 * p]);
            acc[t] = vfmaq_n_f32(acc[t], th, d * (float)sc[2 * p + 1]);
        }
    }
}

/* One Q6_K super-block of a row against NT tokens (as tq_q4k_block): acc[t] += d sc_g *
 * sum((q - 32) x) per group g of 16 values. */
TQ_INLINE void tq_q6k_block(const tq_block_q6_k *blk, const int NT, const float *x, size_t ldx, float32x4_t *acc) {
    const float d = tq_h2f(&blk->d);
    for (int h = 0; h < 2; h++)
        for (int half = 0; half < 2; half++) { /* l in 0..15, then 16..31 */
            int8x16_t c[4];
            tq_q6k_codes(blk, h, half, c);
            float32x4_t f[4][4];
            for (int k = 0; k < 4; k++) tq_cvt16(c[k], f[k]);
            for (int t = 0; t < NT; t++)
                for (int k = 0; k < 4; k++) { /* values 128h + 32k + 16 half .. +15, scale group g */
                    const float *xk = x + (size_t)t * ldx + 128 * h + 32 * k + 16 * half;
                    acc[t] = vfmaq_n_f32(acc[t], tq_fma16f(vdupq_n_f32(0.0f), f[k], xk),
                                         d * (float)blk->scales[8 * h + 2 * k + half]); /* d * sc exact */
                }
        }
}

TQ_INLINE void tq_k_rows(const int T, const int R, const uint8_t *w, size_t rb, int nb, const float *x,
                         float *out) {
    const int bb = T == TQ_K_Q4 ? 144 : T == TQ_K_Q5 ? 176 : 210;
    float32x4_t acc[TQ_F32ACT_ROWS], accm[TQ_F32ACT_ROWS];
    for (int r = 0; r < R; r++) acc[r] = accm[r] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (size_t)TQ_QKK * b;
        float32x4_t xs[8];
        if (T != TQ_K_Q6)
            for (int j = 0; j < 8; j++) xs[j] = tq_xsum32(xb + 32 * j);
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * rb + (size_t)b * bb;
            if (T == TQ_K_Q6)
                tq_q6k_block((const tq_block_q6_k *)blk, 1, xb, 0, &acc[r]);
            else
                tq_q4k_block(T == TQ_K_Q5, blk, 1, xb, 0, xs, 0, &acc[r], &accm[r]);
        }
    }
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(T == TQ_K_Q6 ? acc[r] : vaddq_f32(acc[r], accm[r]));
}

#define TQ_K_GEMV(name, T)                                                                          \
    static void tq_qk_gemv_f32act_##name##_neon(const void *w, size_t rb, int rows, int n,          \
                                                const void *act, float *out) {                      \
        const uint8_t *wb = (const uint8_t *)w;                                                     \
        const float *x = (const float *)act;                                                        \
        const int nb = n / TQ_QKK;                                                                  \
        int r = 0;                                                                                  \
        for (; r + TQ_F32ACT_ROWS <= rows; r += TQ_F32ACT_ROWS)                                     \
            tq_k_rows(T, TQ_F32ACT_ROWS, wb + r * rb, rb, nb, x, out + r);                          \
        for (; r < rows; r++) tq_k_rows(T, 1, wb + r * rb, rb, nb, x, out + r);                     \
    }
TQ_K_GEMV(q4_k, TQ_K_Q4)
TQ_K_GEMV(q5_k, TQ_K_Q5)
TQ_K_GEMV(q6_k, TQ_K_Q6)
#undef TQ_K_GEMV

/* K-quant prompt GEMM, one row x NT tokens per pass (as tq_q32_gemm_tile; each output
 * bit-identical to tq_k_rows's). xs: the token group's sub-block sums of x, [NT][nb][8]. */
TQ_INLINE void tq_k_gemm_tile(const int T, const int NT, const uint8_t *row, int nb, const float *x, size_t ldx,
                              const float32x4_t *xs, float *out, size_t ldo) {
    const int bb = T == TQ_K_Q4 ? 144 : T == TQ_K_Q5 ? 176 : 210;
    float32x4_t acc[TQ_GEMM_TOKS], accm[TQ_GEMM_TOKS];
    for (int t = 0; t < NT; t++) acc[t] = accm[t] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * bb;
        const float *xb = x + (size_t)TQ_QKK * b;
        if (T == TQ_K_Q6)
            tq_q6k_block((const tq_block_q6_k *)blk, NT, xb, ldx, acc);
        else
            tq_q4k_block(T == TQ_K_Q5, blk, NT, xb, ldx, xs + (size_t)b * 8, (size_t)nb * 8, acc, accm);
    }
    for (int t = 0; t < NT; t++) out[(size_t)t * ldo] = vaddvq_f32(T == TQ_K_Q6 ? acc[t] : vaddq_f32(acc[t], accm[t]));
}

/* the token group's sub-block sums of x (xs[((t * nb + b) * 8 + j]: sub-block j of block b) */
#define TQ_K_XSUMS(nt, a)                                                                           \
    if (T != TQ_K_Q6)                                                                               \
        for (int j = 0; j < (nt) * nb * 8; j++)                                                     \
            xs[j] = tq_xsum32((const float *)(a) + (size_t)(j / (nb * 8)) * ldx + (size_t)32 * (j % (nb * 8)));
#define TQ_K_TILE(R, NT, r, a, o) tq_k_gemm_tile(T, NT, (const uint8_t *)w + (size_t)(r) * rb, nb, (const float *)(a), ldx, xs, o, ldo)
#define TQ_K_GEMM(name, T_)                                                                         \
    static void tq_qk_gemm_f32act_##name##_neon(const void *w, size_t rb, int rows, int n,          \
                                                const void *act, size_t as, int ntok, float *out,   \
                                                size_t ldo) {                                       \
        const int T = T_, nb = n / TQ_QKK;                                                          \
        const size_t ldx = as / sizeof(float);                                                      \
        if (nb > TQ_GEMM_K_MAX_NB) { /* longer rows than the stack buffer: the gemv per token */   \
            for (int t = 0; t < ntok; t++)                                                          \
                tq_qk_gemv_f32act_##name##_neon(w, rb, rows, n, (const float *)act + (size_t)t * ldx, \
                                                out + (size_t)t * ldo);                             \
            return;                                                                                 \
        }                                                                                           \
        float32x4_t xs[TQ_GEMM_TOKS * TQ_GEMM_K_MAX_NB * 8];                                        \
        TQ_GEMM_LOOP(ntok, rows, act, as, out, ldo, 1, TQ_GEMM_TOKS, TQ_K_XSUMS, TQ_K_TILE)          \
    }
TQ_K_GEMM(q4_k, TQ_K_Q4)
TQ_K_GEMM(q5_k, TQ_K_Q5)
TQ_K_GEMM(q6_k, TQ_K_Q6)
#undef TQ_K_GEMM
#undef TQ_K_XSUMS
#undef TQ_K_TILE

#define TQ_QK_OPS(T, name, block, bytes, act, fn) \
    {T, name, block, bytes, TQ_ACTF_F32, tq_qk_gemv_f32act_##fn##_neon, tq_qk_dequant_##fn##_scalar, tq_qk_gemm_f32act_##fn##_neon},

static const tq_qk_ops tq_qk_f32act_neon_ops[] = {
    TQ_QK_QUANT_TYPES(TQ_QK_OPS)
};
#undef TQ_QK_OPS

const tq_qk_ops *tq_qk_ops_f32act_neon(int type) {
    return tq_qk_find(tq_qk_f32act_neon_ops, sizeof(tq_qk_f32act_neon_ops) / sizeof(tq_qk_f32act_neon_ops[0]), type);
}

#else

const tq_qk_ops *tq_qk_ops_f32act_neon(int type) {
    (void)type;
    return 0;
}

#endif
