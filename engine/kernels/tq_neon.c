/* AArch64 NEON kernels: two tables, "neon-dotprod" (SDOT, ARMv8.2 FEAT_DotProd) and "neon".
 *
 * NEON is baseline on AArch64, so the file needs no flags; only the dotprod functions carry a
 * target attribute (TQ_DOTPROD), and tq_kernels_neon() hands out their table only when cpu.c saw
 * TQ_CPU_NEON_DOTPROD, so a Cortex-A53/A72 never executes SDOT.
 *
 * Ternary blocks (tq.h): byte j of a 32-byte block holds values j, j+32, j+64, j+96 in bits 7-6,
 * 5-4, 3-2, 1-0 as code = w + 1. NEON has byte shifts, so the 16-byte half holding bytes j0..j0+15
 * gives codes (q >> 6), (q >> 4) & 3, (q >> 2) & 3, q & 3 that line up with a[j0..], a[32 + j0..],
 * a[64 + j0..], a[96 + j0..]. Codes are 0..2, valid as signed bytes for SDOT / SMULL, so the int32
 * result is bit-identical to the scalar spec: sum(w * a) = sum(code * a) - sum(a).
 * On any other architecture this file compiles to a table that reports the path as absent. */
#include "tq.h"
#include "tq_attn.h"
#include "tq_gemm.h"

#if defined(__aarch64__) || defined(_M_ARM64)

#include <arm_neon.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define TQ_INLINE static __forceinline
#define TQ_NOINLINE static __declspec(noinline)
#define TQ_DOTPROD
#elif defined(__clang__)
#define TQ_INLINE static inline __attribute__((always_inline))
#define TQ_NOINLINE static __attribute__((noinline))
#define TQ_DOTPROD __attribute__((target("dotprod")))
#else
/* GCC's arm_neon.h declares SDOT under "arch=armv8.2-a+dotprod"; a plain "+dotprod" caller is not
 * a superset of that and the intrinsic would not inline. */
#define TQ_INLINE static inline __attribute__((always_inline))
#define TQ_NOINLINE static __attribute__((noinline))
#define TQ_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

#if defined(__clang__) && !defined(__ARM_FEATURE_DOTPROD) && __clang_major__ < 16
/* clang < 16 declares vdotq_s32 only when the whole file is built with dotprod; the builtin behind
 * it (34 = int32x4 type code) honours the function's target attribute. */
#define tq_vdotq_s32(acc, a, b) ((int32x4_t)__builtin_neon_vdotq_v((int8x16_t)(acc), (a), (b), 34))
#else
#define tq_vdotq_s32 vdotq_s32
#endif

#define TQ_NEON_GEMV_ROWS 4
#define TQ_NEON_GEMM_ROWS 4
#define TQ_NEON_GEMM_TOKS TQ_GEMM_TOKS

/* The 8 code vectors of one block, in activation order: c[k] pairs with a[16 k .. 16 k + 15]. */
TQ_INLINE void tq_decode_block_neon(const uint8_t *p, int8x16_t c[8]) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    const uint8x16_t lo = vld1q_u8(p), hi = vld1q_u8(p + 16);
    c[0] = vreinterpretq_s8_u8(vshrq_n_u8(lo, 6));
    c[1] = vreinterpretq_s8_u8(vshrq_n_u8(hi, 6));
    c[2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(lo, 4), m3));
    c[3] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(hi, 4), m3));
    c[4] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(lo, 2), m3));
    c[5] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(hi, 2), m3));
    c[6] = vreinterpretq_s8_u8(vandq_u8(lo, m3));
    c[7] = vreinterpretq_s8_u8(vandq_u8(hi, m3));
}

TQ_INLINE void tq_load_act_neon(const int8_t *ab, int8x16_t x[8]) {
    for (int k = 0; k < 8; k++) x[k] = vld1q_s8(ab + 16 * k);
}

/* ---------------------------------------------------------------------------------------------- */
/* dotprod */

/* sum(code * a) over one block into two int32x4 accumulators (two chains hide SDOT latency). */
TQ_INLINE TQ_DOTPROD void tq_block_sdot(const int8x16_t c[8], const int8x16_t x[8], int32x4_t *s0, int32x4_t *s1) {
    int32x4_t u = *s0, v = *s1;
    u = tq_vdotq_s32(u, c[0], x[0]);
    v = tq_vdotq_s32(v, c[1], x[1]);
    u = tq_vdotq_s32(u, c[2], x[2]);
    v = tq_vdotq_s32(v, c[3], x[3]);
    u = tq_vdotq_s32(u, c[4], x[4]);
    v = tq_vdotq_s32(v, c[5], x[5]);
    u = tq_vdotq_s32(u, c[6], x[6]);
    v = tq_vdotq_s32(v, c[7], x[7]);
    *s0 = u;
    *s1 = v;
}

TQ_INLINE TQ_DOTPROD void tq_gemv_rows_dot(const uint8_t *w, size_t stride, int nb, const int8_t *a, int32_t asum,
                                           int32_t *out, const int R) {
    int32x4_t s0[TQ_NEON_GEMV_ROWS], s1[TQ_NEON_GEMV_ROWS];
    for (int r = 0; r < R; r++) s0[r] = s1[r] = vdupq_n_s32(0);
    for (int b = 0; b < nb; b++) {
        int8x16_t x[8];
        tq_load_act_neon(a + (size_t)b * TQ_QK, x);
        for (int r = 0; r < R; r++) {
            int8x16_t c[8];
            tq_decode_block_neon(w + r * stride + (size_t)b * TQ_QK_BYTES, c);
            tq_block_sdot(c, x, &s0[r], &s1[r]);
        }
    }
    for (int r = 0; r < R; r++) out[r] = vaddvq_s32(vaddq_s32(s0[r], s1[r])) - asum;
}

TQ_GEMV_BY_ROWS(tq_gemv_neon_dotprod, TQ_DOTPROD, tq_gemv_rows_dot, TQ_NEON_GEMV_ROWS)

/* R rows x T tokens; a row's codes are decoded once per block and used for all T tokens. */
TQ_INLINE TQ_DOTPROD void tq_gemm_tile_dot(const uint8_t *w, size_t stride, int nb, const int8_t *a,
                                           size_t a_stride, const int32_t *asum, int32_t *out, size_t out_stride,
                                           const int R, const int T) {
    int32x4_t acc[TQ_NEON_GEMM_ROWS][TQ_NEON_GEMM_TOKS];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = vdupq_n_s32(0);
    for (int b = 0; b < nb; b++) {
        for (int r = 0; r < R; r++) {
            int8x16_t c[8];
            tq_decode_block_neon(w + r * stride + (size_t)b * TQ_QK_BYTES, c);
            for (int t = 0; t < T; t++) {
                const int8_t *ab = a + t * a_stride + (size_t)b * TQ_QK;
                int32x4_t u = acc[r][t];
                for (int k = 0; k < 8; k++) u = tq_vdotq_s32(u, c[k], vld1q_s8(ab + 16 * k));
                acc[r][t] = u;
            }
        }
    }
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) out[t * out_stride + r] = vaddvq_s32(acc[r][t]) - asum[t];
}

/* The full 4 x 4 tile, written out: per block, the four rows' 32 code bytes stay in 8 registers,
 * and each 16-activation slice k of each token is loaded once and meets slice k's codes of all
 * four rows (decoded from those registers as they are needed): 16 accumulators + 8 + 4 code + 1
 * activation + the mask = 30 of the 32 vector registers, 32 activation loads and 128 SDOT per block.
 * gcc (12, -O3) compiled the generic tile's 4 x 4 case (an accumulator array, one row's decoded
 * block at a time, every (R, T) inlined into one function) with 100 stack loads and stores and 52
 * register moves per block. This one, with gcc's first scheduling pass off (it hoists loads until
 * the registers run out), has no stack access in its loop (233 instructions); clang 14: 218, 10
 * stack accesses. Same int32 sums. Not timed: no AArch64 hardware here (qemu runs it for
 * correctness only). */
#if defined(__GNUC__) && !defined(__clang__)
#define TQ_NO_SCHED __attribute__((optimize("no-schedule-insns")))
#else
#define TQ_NO_SCHED
#endif
#define TQ_S6(v) vreinterpretq_s8_u8(vshrq_n_u8(v, 6))
#define TQ_S4(v) vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), m3))
#define TQ_S2(v) vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), m3))
#define TQ_S0(v) vreinterpretq_s8_u8(vandq_u8(v, m3))
#define TQ_SLICE_TOKEN(t, k)                                                                        \
    do {                                                                                           \
        const int8x16_t x = vld1q_s8(ab + (t) * a_stride + 16 * (k));                               \
        a0##t = tq_vdotq_s32(a0##t, c0, x);                                                        \
        a1##t = tq_vdotq_s32(a1##t, c1, x);                                                        \
        a2##t = tq_vdotq_s32(a2##t, c2, x);                                                        \
        a3##t = tq_vdotq_s32(a3##t, c3, x);                                                        \
    } while (0)
#define TQ_SLICE(k, F, v0, v1, v2, v3)                                                              \
    do {                                                                                           \
        const int8x16_t c0 = F(v0), c1 = F(v1), c2 = F(v2), c3 = F(v3);                             \
        TQ_SLICE_TOKEN(0, k);                                                                      \
        TQ_SLICE_TOKEN(1, k);                                                                      \
        TQ_SLICE_TOKEN(2, k);                                                                      \
        TQ_SLICE_TOKEN(3, k);                                                                      \
    } while (0)

TQ_NOINLINE TQ_DOTPROD TQ_NO_SCHED void tq_gemm_tile44_dot(const uint8_t *w, size_t stride, int nb, const int8_t *a,
                                               size_t a_stride, const int32_t *asum, int32_t *out, size_t out_stride) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    int32x4_t a00 = vdupq_n_s32(0), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00;
    int32x4_t a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    for (int b = 0; b < nb; b++) {
        const uint8_t *p = w + (size_t)b * TQ_QK_BYTES;
        const int8_t *ab = a + (size_t)b * TQ_QK;
        const uint8x16_t l0 = vld1q_u8(p), h0 = vld1q_u8(p + 16), l1 = vld1q_u8(p + stride);
        const uint8x16_t h1 = vld1q_u8(p + stride + 16), l2 = vld1q_u8(p + 2 * stride);
        const uint8x16_t h2 = vld1q_u8(p + 2 * stride + 16), l3 = vld1q_u8(p + 3 * stride);
        const uint8x16_t h3 = vld1q_u8(p + 3 * stride + 16);
        TQ_SLICE(0, TQ_S6, l0, l1, l2, l3); /* slice k pairs with a[16 k .. 16 k + 15], as c[k] */
        TQ_SLICE(1, TQ_S6, h0, h1, h2, h3);
        TQ_SLICE(2, TQ_S4, l0, l1, l2, l3);
        TQ_SLICE(3, TQ_S4, h0, h1, h2, h3);
        TQ_SLICE(4, TQ_S2, l0, l1, l2, l3);
        TQ_SLICE(5, TQ_S2, h0, h1, h2, h3);
        TQ_SLICE(6, TQ_S0, l0, l1, l2, l3);
        TQ_SLICE(7, TQ_S0, h0, h1, h2, h3);
    }
    const int32x4_t acc[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}, {a30, a31, a32, a33}};
    for (int t = 0; t < 4; t++)
        for (int r = 0; r < 4; r++) out[t * out_stride + r] = vaddvq_s32(acc[r][t]) - asum[t];
}
#undef TQ_SLICE
#undef TQ_SLICE_TOKEN
#undef TQ_S0
#undef TQ_S2
#undef TQ_S4
#undef TQ_S6

/* ---------------------------------------------------------------------------------------------- */
/* plain NEON: SMULL / SMLAL into int16, then SADALP into int32. A product is within [-256, 254];
 * one int16 lane takes 8 of them per block (two lanes of the 16-byte pair), well inside int16. */

TQ_INLINE int16x8_t tq_block_i16_half(const int8x16_t c[8], const int8x16_t x[8], int k0) {
    int16x8_t p = vmull_s8(vget_low_s8(c[k0]), vget_low_s8(x[k0]));
    p = vmlal_high_s8(p, c[k0], x[k0]);
    p = vmlal_s8(p, vget_low_s8(c[k0 + 2]), vget_low_s8(x[k0 + 2]));
    p = vmlal_high_s8(p, c[k0 + 2], x[k0 + 2]);
    p = vmlal_s8(p, vget_low_s8(c[k0 + 4]), vget_low_s8(x[k0 + 4]));
    p = vmlal_high_s8(p, c[k0 + 4], x[k0 + 4]);
    p = vmlal_s8(p, vget_low_s8(c[k0 + 6]), vget_low_s8(x[k0 + 6]));
    return vmlal_high_s8(p, c[k0 + 6], x[k0 + 6]);
}

TQ_INLINE void tq_block_mull(const int8x16_t c[8], const int8x16_t x[8], int32x4_t *s0, int32x4_t *s1) {
    *s0 = vpadalq_s16(*s0, tq_block_i16_half(c, x, 0));
    *s1 = vpadalq_s16(*s1, tq_block_i16_half(c, x, 1));
}

TQ_INLINE void tq_gemv_rows_mull(const uint8_t *w, size_t stride, int nb, const int8_t *a, int32_t asum,
                                 int32_t *out, const int R) {
    int32x4_t s0[TQ_NEON_GEMV_ROWS], s1[TQ_NEON_GEMV_ROWS];
    for (int r = 0; r < R; r++) s0[r] = s1[r] = vdupq_n_s32(0);
    for (int b = 0; b < nb; b++) {
        int8x16_t x[8];
        tq_load_act_neon(a + (size_t)b * TQ_QK, x);
        for (int r = 0; r < R; r++) {
            int8x16_t c[8];
            tq_decode_block_neon(w + r * stride + (size_t)b * TQ_QK_BYTES, c);
            tq_block_mull(c, x, &s0[r], &s1[r]);
        }
    }
    for (int r = 0; r < R; r++) out[r] = vaddvq_s32(vaddq_s32(s0[r], s1[r])) - asum;
}

TQ_GEMV_BY_ROWS(tq_gemv_neon, , tq_gemv_rows_mull, TQ_NEON_GEMV_ROWS)

TQ_INLINE void tq_gemm_tile_mull(const uint8_t *w, size_t stride, int nb, const int8_t *a, size_t a_stride,
                                 const int32_t *asum, int32_t *out, size_t out_stride, const int R, const int T) {
    int32x4_t acc[TQ_NEON_GEMM_ROWS][TQ_NEON_GEMM_TOKS];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = vdupq_n_s32(0);
    for (int b = 0; b < nb; b++) {
        for (int r = 0; r < R; r++) {
            int8x16_t c[8];
            tq_decode_block_neon(w + r * stride + (size_t)b * TQ_QK_BYTES, c);
            for (int t = 0; t < T; t++) {
                int8x16_t x[8];
                tq_load_act_neon(a + t * a_stride + (size_t)b * TQ_QK, x);
                /* 16 products per int16 lane per block: within [-4096, 4064] */
                int16x8_t p = vmull_s8(vget_low_s8(c[0]), vget_low_s8(x[0]));
                p = vmlal_high_s8(p, c[0], x[0]);
                for (int k = 1; k < 8; k++) {
                    p = vmlal_s8(p, vget_low_s8(c[k]), vget_low_s8(x[k]));
                    p = vmlal_high_s8(p, c[k], x[k]);
                }
                acc[r][t] = vpadalq_s16(acc[r][t], p);
            }
        }
    }
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) out[t * out_stride + r] = vaddvq_s32(acc[r][t]) - asum[t];
}

/* ---------------------------------------------------------------------------------------------- */
/* GEMM entry points: tq_gemm.h's loops around this file's tiles. */

TQ_GEMM_TILE_ANY_FULL(tq_gemm_tile_any_dot, TQ_DOTPROD, tq_gemm_tile_dot, TQ_NEON_GEMM_ROWS, tq_gemm_tile44_dot)
TQ_GEMM_TILE_ANY(tq_gemm_tile_any_mull, , tq_gemm_tile_mull, TQ_NEON_GEMM_ROWS)

static void tq_gemm_neon_dotprod(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride,
                                 const int32_t *asum, int ntok, int32_t *out, size_t out_stride) {
    tq_gemm_drive(tq_gemv_neon_dotprod, tq_gemm_tile_any_dot, TQ_NEON_GEMM_ROWS, w, rows, nb, a, a_stride,
                  asum, ntok, out, out_stride);
}

static void tq_gemm_neon(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride,
                         const int32_t *asum, int ntok, int32_t *out, size_t out_stride) {
    tq_gemm_drive(tq_gemv_neon, tq_gemm_tile_any_mull, TQ_NEON_GEMM_ROWS, w, rows, nb, a, a_stride, asum, ntok,
                  out, out_stride);
}

/* ---------------------------------------------------------------------------------------------- */
/* Float kernels (shared by both tables) */

/* Bit-identical to tq_quant_act_scalar: exact max|x| (NaN-free), the same scalar s, one IEEE
 * multiply, and FCVTNS rounds half to even whatever FPCR says, as nearbyintf does in the default
 * mode. Clamping before rounding equals clamping after, the bounds being integers. */
TQ_INLINE int32x4_t tq_quant4_neon(const float *x, float32x4_t s, float32x4_t lo, float32x4_t hi) {
    return vcvtnq_s32_f32(vminq_f32(vmaxq_f32(vmulq_f32(vld1q_f32(x), s), lo), hi));
}

static float tq_quant_act_neon(const float *x, int n, int npad, int8_t *q, int32_t *sum) {
    float32x4_t m = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + i)));
    float amax = vmaxvq_f32(m);
    for (; i < n; i++) {
        const float v = fabsf(x[i]);
        if (v > amax) amax = v;
    }
    const float s = 127.0f * (1.0f / (amax > 1e-5f ? amax : 1e-5f)); /* torch: 127 / t is t.reciprocal() * 127 */
    const float32x4_t sv = vdupq_n_f32(s), lo = vdupq_n_f32(-128.0f), hi = vdupq_n_f32(127.0f);
    int32x4_t acc = vdupq_n_s32(0);
    i = 0;
    for (; i + 16 <= n; i += 16) {
        const int32x4_t r0 = tq_quant4_neon(x + i, sv, lo, hi), r1 = tq_quant4_neon(x + i + 4, sv, lo, hi);
        const int32x4_t r2 = tq_quant4_neon(x + i + 8, sv, lo, hi), r3 = tq_quant4_neon(x + i + 12, sv, lo, hi);
        acc = vaddq_s32(acc, vaddq_s32(vaddq_s32(r0, r1), vaddq_s32(r2, r3)));
        const int16x8_t p01 = vcombine_s16(vqmovn_s32(r0), vqmovn_s32(r1));
        const int16x8_t p23 = vcombine_s16(vqmovn_s32(r2), vqmovn_s32(r3));
        vst1q_s8(q + i, vcombine_s8(vqmovn_s16(p01), vqmovn_s16(p23)));
    }
    for (; i + 4 <= n; i += 4) {
        const int32x4_t r = tq_quant4_neon(x + i, sv, lo, hi);
        acc = vaddq_s32(acc, r);
        const int16x4_t p = vqmovn_s32(r);
        int8_t t[8];
        vst1_s8(t, vqmovn_s16(vcombine_s16(p, p)));
        memcpy(q + i, t, 4);
    }
    int32_t total = vaddvq_s32(acc);
    for (; i < n; i++) { /* the spec's own code for the tail */
        float v = nearbyintf(x[i] * s);
        if (v > 127.0f) v = 127.0f;
        if (v < -128.0f) v = -128.0f;
        q[i] = (int8_t)v;
        total += q[i];
    }
    if (npad > n) memset(q + n, 0, (size_t)(npad - n));
    *sum = total;
    return s;
}

/* R rows (constant after inlining) of the f16 GEMV, sharing the x loads; FCVTL converts f16
 * exactly (subnormals included). The column tail goes through zero-padded copies. */
TQ_INLINE void tq_f16_rows_neon(const uint16_t *w, int cols, const float *x, float *out, const int R) {
    float32x4_t acc0[4], acc1[4];
    for (int r = 0; r < R; r++) acc0[r] = acc1[r] = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= cols; i += 8) {
        const float32x4_t x0 = vld1q_f32(x + i), x1 = vld1q_f32(x + i + 4);
        for (int r = 0; r < R; r++) {
            const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(w + (size_t)r * cols + i));
            acc0[r] = vfmaq_f32(acc0[r], vcvt_f32_f16(vget_low_f16(h)), x0);
            acc1[r] = vfmaq_f32(acc1[r], vcvt_high_f32_f16(h), x1);
        }
    }
    if (i < cols) {
        uint16_t wt[8] = {0};
        float xt[8] = {0};
        memcpy(xt, x + i, (size_t)(cols - i) * sizeof(float));
        const float32x4_t x0 = vld1q_f32(xt), x1 = vld1q_f32(xt + 4);
        for (int r = 0; r < R; r++) {
            memcpy(wt, w + (size_t)r * cols + i, (size_t)(cols - i) * sizeof(uint16_t));
            const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(wt));
            acc0[r] = vfmaq_f32(acc0[r], vcvt_f32_f16(vget_low_f16(h)), x0);
            acc1[r] = vfmaq_f32(acc1[r], vcvt_high_f32_f16(h), x1);
        }
    }
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(vaddq_f32(acc0[r], acc1[r]));
}

static void tq_f16_gemv_neon(const uint16_t *w, int rows, int cols, const float *x, float *out) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) tq_f16_rows_neon(w + (size_t)r * cols, cols, x, out + r, 4);
    for (; r < rows; r++) tq_f16_rows_neon(w + (size_t)r * cols, cols, x, out + r, 1);
}

/* Four KV elements from element idx: f32 (h = 0), f16 widened (h = 1; the halves are loaded as
 * integers and reinterpreted, so no fp16 arithmetic extension is needed) or int8 codes widened
 * (h = 2). */
TQ_INLINE float32x4_t tq_kv4(const void *rows, size_t idx, const int h) {
    if (h == 2) { /* four int8 codes, widened (a 32-bit load: rows may be unaligned) */
        int32_t v;
        memcpy(&v, (const int8_t *)rows + idx, sizeof v);
        const int16x8_t w = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(v)));
        return vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
    }
    return h ? vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)rows + idx)))
             : vld1q_f32((const float *)rows + idx);
}

/* Four keys at a time (four FMA chains, the query loaded once for the four); columns past the last
 * multiple of 4 in scalar. h: f32, f16 or int8 rows (tq_kv4). */
TQ_INLINE void tq_dots_neon(const void *rows, size_t stride, int len, const float *x, int n, float *out,
                            const int h) {
    const int body = n & ~3;
    int j = 0;
    for (; j + 4 <= len; j += 4) {
        const size_t r = (size_t)j * stride;
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < body; i += 4) {
            const float32x4_t xv = vld1q_f32(x + i);
            a0 = vfmaq_f32(a0, tq_kv4(rows, r + i, h), xv);
            a1 = vfmaq_f32(a1, tq_kv4(rows, r + stride + i, h), xv);
            a2 = vfmaq_f32(a2, tq_kv4(rows, r + 2 * stride + i, h), xv);
            a3 = vfmaq_f32(a3, tq_kv4(rows, r + 3 * stride + i, h), xv);
        }
        float s[4] = {vaddvq_f32(a0), vaddvq_f32(a1), vaddvq_f32(a2), vaddvq_f32(a3)};
        tq_dots4_finish(rows, r, stride, x, body, n, s, out + j, h);
    }
    for (; j < len; j++) {
        const size_t r = (size_t)j * stride;
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
        int i = 0;
        for (; i + 8 <= body; i += 8) {
            a0 = vfmaq_f32(a0, tq_kv4(rows, r + i, h), vld1q_f32(x + i));
            a1 = vfmaq_f32(a1, tq_kv4(rows, r + i + 4, h), vld1q_f32(x + i + 4));
        }
        if (i < body) a0 = vfmaq_f32(a0, tq_kv4(rows, r + i, h), vld1q_f32(x + i));
        float s0 = vaddvq_f32(vaddq_f32(a0, a1));
        for (i = body; i < n; i++) s0 += tq_kv_elem(rows, r + i, h) * x[i];
        out[j] = s0;
    }
}

/* 16 output columns at a time in four registers (four FMA chains), then 4 at a time, then scalar. */
TQ_INLINE void tq_wsum_neon(const void *rows, size_t stride, int len, const float *w, int n, float *out,
                            const int h) {
    int c = 0;
    for (; c + 16 <= n; c += 16) {
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
        for (int j = 0; j < len; j++) {
            const size_t r = (size_t)j * stride + c;
            a0 = vfmaq_n_f32(a0, tq_kv4(rows, r, h), w[j]);
            a1 = vfmaq_n_f32(a1, tq_kv4(rows, r + 4, h), w[j]);
            a2 = vfmaq_n_f32(a2, tq_kv4(rows, r + 8, h), w[j]);
            a3 = vfmaq_n_f32(a3, tq_kv4(rows, r + 12, h), w[j]);
        }
        vst1q_f32(out + c, a0);
        vst1q_f32(out + c + 4, a1);
        vst1q_f32(out + c + 8, a2);
        vst1q_f32(out + c + 12, a3);
    }
    for (; c + 4 <= n; c += 4) {
        float32x4_t a0 = vdupq_n_f32(0.0f);
        for (int j = 0; j < len; j++) a0 = vfmaq_n_f32(a0, tq_kv4(rows, (size_t)j * stride + c, h), w[j]);
        vst1q_f32(out + c, a0);
    }
    tq_wsum_columns(rows, stride, len, w, c, n, out, h);
}

TQ_KV_KERNELS(neon)

static void tq_scale_out_neon(const int32_t *acc, int n, float sa, const float *scale, float *out) {
    const float32x4_t s = vdupq_n_f32(sa);
    int r = 0;
    for (; r + 4 <= n; r += 4)
        vst1q_f32(out + r, vmulq_f32(vdivq_f32(vcvtq_f32_s32(vld1q_s32(acc + r)), s), vld1q_f32(scale + r)));
    for (; r < n; r++) out[r] = ((float)acc[r] / sa) * scale[r];
}

static inline float32x4_t tq_exp_neon(float32x4_t x) {
    x = vmaxq_f32(x, vdupq_n_f32(TQ_EXP_LO));
    const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, TQ_LOG2E));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(TQ_LN2_HI));
    r = vfmsq_f32(r, n, vdupq_n_f32(TQ_LN2_LO));
    float32x4_t y = vdupq_n_f32(TQ_EXP_P0);
    y = vfmaq_f32(vdupq_n_f32(TQ_EXP_P1), y, r);
    y = vfmaq_f32(vdupq_n_f32(TQ_EXP_P2), y, r);
    y = vfmaq_f32(vdupq_n_f32(TQ_EXP_P3), y, r);
    y = vfmaq_f32(vdupq_n_f32(TQ_EXP_P4), y, r);
    y = vfmaq_f32(vdupq_n_f32(TQ_EXP_P5), y, r);
    y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), y, vmulq_f32(r, r));
    /* 2^n from the exponent bits: n is in [-126, 0] for x in [TQ_EXP_LO, 0] */
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(y, vreinterpretq_f32_s32(e));
}

static void tq_softmax_neon(float *x, int n, float scale) {
    const int body = n & ~3;
    float32x4_t m = vdupq_n_f32(-INFINITY);
    for (int j = 0; j < body; j += 4) {
        const float32x4_t v = vmulq_n_f32(vld1q_f32(x + j), scale);
        vst1q_f32(x + j, v);
        m = vmaxq_f32(m, v);
    }
    const float mx = tq_softmax_scale_max(x, body, n, scale, vmaxvq_f32(m));
    const float32x4_t mv = vdupq_n_f32(mx);
    float32x4_t s = vdupq_n_f32(0.0f);
    for (int j = 0; j < body; j += 4) {
        const float32x4_t e = tq_exp_neon(vsubq_f32(vld1q_f32(x + j), mv));
        vst1q_f32(x + j, e);
        s = vaddq_f32(s, e);
    }
    const float inv = 1.0f / tq_softmax_exp_sum(x, body, n, mx, vaddvq_f32(s));
    for (int j = 0; j < body; j += 4) vst1q_f32(x + j, vmulq_n_f32(vld1q_f32(x + j), inv));
    tq_softmax_normalize(x, body, n, inv);
}

static const tq_kernels tq_neon_dotprod_table = {
    "neon-dotprod",
    tq_gemv_neon_dotprod,
    tq_gemm_neon_dotprod,
    tq_quant_act_neon,
    tq_f16_gemv_neon,
    tq_f32_dots_neon,
    tq_f32_wsum_neon,
    tq_scale_out_neon,
    tq_softmax_neon,
    tq_f16_dots_neon,
    tq_f16_wsum_neon,
    tq_q8_dots_neon,
    tq_q8_wsum_neon,
    0,
    tq_b3_gemv_scalar, /* B3: never loaded here (no NEON form measured) */
    tq_b3_gemm_scalar,
    0,
};

static const tq_kernels tq_neon_table = {
    "neon",
    tq_gemv_neon,
    tq_gemm_neon,
    tq_quant_act_neon,
    tq_f16_gemv_neon,
    tq_f32_dots_neon,
    tq_f32_wsum_neon,
    tq_scale_out_neon,
    tq_softmax_neon,
    tq_f16_dots_neon,
    tq_f16_wsum_neon,
    tq_q8_dots_neon,
    tq_q8_wsum_neon,
    0,
    tq_b3_gemv_scalar, /* B3: never loaded here (no NEON form measured) */
    tq_b3_gemm_scalar,
    0,
};

/* TRIT_NO_DOTPROD=1 hands out the plain NEON table on a dotprod CPU, so that the fallback is tested
 * on the machines we have. Read on every call (not cached) for the tests' sake; callers cache. */
const tq_kernels *tq_kernels_neon(void) {
    if ((tq_cpu_features() & TQ_CPU_NEON_DOTPROD) && !tq_env_flag("TRIT_NO_DOTPROD"))
        return &tq_neon_dotprod_table;
    return &tq_neon_table;
}

#else /* not AArch64 */

const tq_kernels *tq_kernels_neon(void) { return 0; }

#endif
