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

/* sum of 16 products: int8 codes c (values i .. i+15) times x[0..16) */
TQ_INLINE float32x4_t tq_fma16(float32x4_t t, int8x16_t c, const float *x) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(c)), hi = vmovl_high_s8(c);
    t = vfmaq_f32(t, vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), vld1q_f32(x));
    t = vfmaq_f32(t, vcvtq_f32_s32(vmovl_high_s16(lo)), vld1q_f32(x + 4));
    t = vfmaq_f32(t, vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), vld1q_f32(x + 8));
    return vfmaq_f32(t, vcvtq_f32_s32(vmovl_high_s16(hi)), vld1q_f32(x + 12));
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

/* ---------------------------------------------------------------- K-quants */

/* One Q4_K / Q5_K super-block of a row; xs[j]: lane-wise sums of x over sub-block j. */
TQ_INLINE void tq_q4k_block(const int five, const uint8_t *blk, const float *x, const float32x4_t xs[8],
                            float32x4_t *acc, float32x4_t *accm) {
    uint8_t sc[8], m[8];
    tq_k4_scales(blk + 4, sc, m);
    const float d = tq_h2f(blk), dmin = tq_h2f(blk + 2);
    for (int j = 0; j < 8; j++) *accm = vfmsq_n_f32(*accm, xs[j], dmin * (float)m[j]);
    const uint8_t *qs = blk + (five ? 48 : 16);
    const uint8x16_t m4 = vdupq_n_u8(15), b4 = vdupq_n_u8(0x10);
    uint8x16_t h0 = vdupq_n_u8(0), h1 = vdupq_n_u8(0);
    if (five) {
        h0 = vld1q_u8(blk + 16);
        h1 = vld1q_u8(blk + 32);
    }
    for (int p = 0; p < 4; p++) {
        const uint8x16_t q0 = vld1q_u8(qs + 32 * p), q1 = vld1q_u8(qs + 32 * p + 16);
        uint8x16_t l0 = vandq_u8(q0, m4), l1 = vandq_u8(q1, m4);
        uint8x16_t u0 = vshrq_n_u8(q0, 4), u1 = vshrq_n_u8(q1, 4);
        if (five) { /* bit j of qh[l] -> bit 4 of code l of sub-block j */
            l0 = vorrq_u8(l0, vandq_u8(vshlq_u8(h0, vdupq_n_s8((int8_t)(4 - 2 * p))), b4));
            l1 = vorrq_u8(l1, vandq_u8(vshlq_u8(h1, vdupq_n_s8((int8_t)(4 - 2 * p))), b4));
            u0 = vorrq_u8(u0, vandq_u8(vshlq_u8(h0, vdupq_n_s8((int8_t)(3 - 2 * p))), b4));
            u1 = vorrq_u8(u1, vandq_u8(vshlq_u8(h1, vdupq_n_s8((int8_t)(3 - 2 * p))), b4));
        }
        const float *xl = x + 64 * p, *xh = xl + 32;
        const float32x4_t tl = tq_fma16(tq_fma16(vdupq_n_f32(0.0f), vreinterpretq_s8_u8(l0), xl), vreinterpretq_s8_u8(l1), xl + 16);
        const float32x4_t th = tq_fma16(tq_fma16(vdupq_n_f32(0.0f), vreinterpretq_s8_u8(u0), xh), vreinterpretq_s8_u8(u1), xh + 16);
        /* d * sc_j: exact (11-bit times 6-bit significands) */
        *acc = vfmaq_n_f32(*acc, tl, d * (float)sc[2 * p]);
        *acc = vfmaq_n_f32(*acc, th, d * (float)sc[2 * p + 1]);
    }
}

/* One Q6_K super-block of a row: acc += d sc_g * sum((q - 32) x) per group g of 16 values. */
TQ_INLINE void tq_q6k_block(const tq_block_q6_k *blk, const float *x, float32x4_t *acc) {
    const float d = tq_h2f(&blk->d);
    const uint8x16_t m4 = vdupq_n_u8(15), m30 = vdupq_n_u8(0x30);
    const int8x16_t o32 = vdupq_n_s8(32);
    for (int h = 0; h < 2; h++) {
        for (int half = 0; half < 2; half++) { /* l in 0..15, then 16..31 */
            const int o = 16 * half;
            const uint8x16_t qh = vld1q_u8(blk->qh + 32 * h + o);
            const uint8x16_t l0 = vld1q_u8(blk->ql + 64 * h + o), l1 = vld1q_u8(blk->ql + 64 * h + 32 + o);
            const uint8x16_t c[4] = {
                vorrq_u8(vandq_u8(l0, m4), vandq_u8(vshlq_n_u8(qh, 4), m30)),
                vorrq_u8(vandq_u8(l1, m4), vandq_u8(vshlq_n_u8(qh, 2), m30)),
                vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(qh, m30)),
                vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(qh, 2), m30)),
            };
            for (int k = 0; k < 4; k++) { /* values 128h + 32k + o .. +15, scale group g */
                const int g = 8 * h + 2 * k + half;
                const int8x16_t cs = vsubq_s8(vreinterpretq_s8_u8(c[k]), o32);
                const float32x4_t t = tq_fma16(vdupq_n_f32(0.0f), cs, x + 128 * h + 32 * k + o);
                *acc = vfmaq_n_f32(*acc, t, d * (float)blk->scales[g]); /* d * sc exact */
            }
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
                tq_q6k_block((const tq_block_q6_k *)blk, xb, &acc[r]);
            else
                tq_q4k_block(T == TQ_K_Q5, blk, xb, xs, &acc[r], &accm[r]);
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

#define TQ_QK_OPS(T, name, block, bytes, act, fn) \
    {T, name, block, bytes, TQ_ACTF_F32, tq_qk_gemv_f32act_##fn##_neon, tq_qk_dequant_##fn##_scalar},

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
