/* AArch64 NEON gemv for the llama.cpp weight types (qk.h), in two variants: SDOT (FEAT_DotProd,
 * functions carrying a target attribute; handed out only when cpu.c saw TQ_CPU_NEON_DOTPROD) and
 * plain NEON (SMULL + SADALP). The integer bodies are written once in qk_neon_body.h and included
 * for each variant. Dequantization uses the scalar functions.
 *
 * NEON multiplies signed by signed bytes, so the code offsets (Q4_0: 8, Q5_0: 16, Q6_K: 32) are
 * removed from the codes before the dot (no activation-sum correction as in qk_avx2.c). Products
 * stay within int16 for SMULL (|w| <= 128 for Q8_0 weights, |a| <= 127), and the int32 block sums
 * are exact, equal to qk_scalar.c's; the float part is one FMA per block into 4 lanes.
 * On any other architecture this file compiles to an empty lookup. */
#include "qk.h"

#if defined(__aarch64__) || defined(_M_ARM64)

#include <arm_neon.h>
#include <stdlib.h>
#include <string.h>

#include "tq.h"

#if defined(_MSC_VER) && !defined(__clang__)
#define TQ_INLINE static __forceinline
#define TQ_QK_DOTPROD
#elif defined(__clang__)
#define TQ_INLINE static inline __attribute__((always_inline))
#define TQ_QK_DOTPROD __attribute__((target("dotprod")))
#else
/* GCC declares SDOT under "arch=armv8.2-a+dotprod"; a "+dotprod" caller would not inline it. */
#define TQ_INLINE static inline __attribute__((always_inline))
#define TQ_QK_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

#if defined(__clang__) && !defined(__ARM_FEATURE_DOTPROD) && __clang_major__ < 16
/* clang < 16 declares vdotq_s32 only for whole-file dotprod builds; its builtin (type code 34 =
 * int32x4) honours the function's target attribute. */
#define tq_qk_vdot(acc, a, b) ((int32x4_t)__builtin_neon_vdotq_v((int8x16_t)(acc), (a), (b), 34))
#else
#define tq_qk_vdot vdotq_s32
#endif

#include "qk_simd.h"

/* Rows per pass: they share the activation loads and per-block constants. */
#define TQ_QK_NEON_ROWS 4
/* Tokens per pass of the prompt GEMMs (float types here, K-quants in qk_neon_body.h) */
#define TQ_QK_NEON_GEMM_TOKS 4

/* ---------------------------------------------------------------- float types */

enum { TQ_F_F32, TQ_F_F16, TQ_F_BF16 };

TQ_INLINE float32x4_t tq_load4(int T, const uint8_t *row, int i) {
    if (T == TQ_F_F32) return vld1q_f32((const float *)row + i);
    const uint16x4_t h = vld1_u16((const uint16_t *)row + i);
    if (T == TQ_F_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

TQ_INLINE float tq_load1(int T, const uint8_t *row, int i) {
    if (T == TQ_F_F32) return ((const float *)row)[i];
    uint16_t h;
    memcpy(&h, row + 2 * (size_t)i, 2);
    return T == TQ_F_F16 ? tq_h2f(&h) : tq_bf16_to_f32(h);
}

TQ_INLINE void tq_float_rows(int T, int R, const uint8_t *w, size_t rb, int n, const float *x, float *out) {
    float32x4_t acc[TQ_QK_NEON_ROWS][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const float32x4_t x0 = vld1q_f32(x + i), x1 = vld1q_f32(x + i + 4);
        for (int r = 0; r < R; r++) {
            acc[r][0] = vfmaq_f32(acc[r][0], tq_load4(T, w + r * rb, i), x0);
            acc[r][1] = vfmaq_f32(acc[r][1], tq_load4(T, w + r * rb, i + 4), x1);
        }
    }
    for (int r = 0; r < R; r++) {
        float s = vaddvq_f32(vaddq_f32(acc[r][0], acc[r][1]));
        for (int j = i; j < n; j++) s += tq_load1(T, w + r * rb, j) * x[j];
        out[r] = s;
    }
}

#define TQ_FLOAT_GEMV(name, T)                                                                      \
    static void tq_qk_gemv_##name##_neon(const void *w, size_t rb, int rows, int n, const void *act, \
                                         float *out) {                                              \
        const uint8_t *wb = (const uint8_t *)w;                                                     \
        int r = 0;                                                                                  \
        for (; r + TQ_QK_NEON_ROWS <= rows; r += TQ_QK_NEON_ROWS)                                   \
            tq_float_rows(T, TQ_QK_NEON_ROWS, wb + r * rb, rb, n, (const float *)act, out + r);    \
        for (; r < rows; r++) tq_float_rows(T, 1, wb + r * rb, rb, n, (const float *)act, out + r); \
    }
TQ_FLOAT_GEMV(f32, TQ_F_F32)
TQ_FLOAT_GEMV(f16, TQ_F_F16)
TQ_FLOAT_GEMV(bf16, TQ_F_BF16)
#undef TQ_FLOAT_GEMV

/* Float prompt GEMM (tq_qk_ops.gemm): R rows x NT tokens, each weight vector widened once for the
 * tokens, every (row, token) sum formed as tq_float_rows forms it (two FMA chains over 4-lane
 * steps, their sum, the tail in order): bit-identical to the gemv. */
TQ_INLINE void tq_float_gemm_tile(int T, int R, int NT, const uint8_t *w, size_t rb, int n, const float *x,
                                  size_t ldx, float *out, size_t ldo) {
    float32x4_t acc[2][TQ_QK_NEON_GEMM_TOKS][2];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < NT; t++) acc[r][t][0] = acc[r][t][1] = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t w0[2], w1[2];
        for (int r = 0; r < R; r++) {
            w0[r] = tq_load4(T, w + r * rb, i);
            w1[r] = tq_load4(T, w + r * rb, i + 4);
        }
        for (int t = 0; t < NT; t++) {
            const float32x4_t x0 = vld1q_f32(x + (size_t)t * ldx + i), x1 = vld1q_f32(x + (size_t)t * ldx + i + 4);
            for (int r = 0; r < R; r++) {
                acc[r][t][0] = vfmaq_f32(acc[r][t][0], w0[r], x0);
                acc[r][t][1] = vfmaq_f32(acc[r][t][1], w1[r], x1);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < NT; t++) {
            const float *xt = x + (size_t)t * ldx;
            float s = vaddvq_f32(vaddq_f32(acc[r][t][0], acc[r][t][1]));
            for (int j = i; j < n; j++) s += tq_load1(T, w + r * rb, j) * xt[j];
            out[(size_t)t * ldo + r] = s;
        }
}

#define TQ_FLOAT_TILE(R, NT, r, a, o) tq_float_gemm_tile(T, R, NT, wb + (r) * rb, rb, n, (const float *)(a), ldx, o, ldo)
#define TQ_FLOAT_GEMM(name, T_)                                                                     \
    static void tq_qk_gemm_##name##_neon(const void *w, size_t rb, int rows, int n, const void *act, \
                                         size_t as, int ntok, float *out, size_t ldo) {             \
        const int T = T_;                                                                           \
        const uint8_t *wb = (const uint8_t *)w;                                                     \
        const size_t ldx = as / sizeof(float);                                                      \
        TQ_GEMM_LOOP(ntok, rows, act, as, out, ldo, 2, TQ_QK_NEON_GEMM_TOKS, TQ_GEMM_NO_GROUP, TQ_FLOAT_TILE) \
    }
TQ_FLOAT_GEMM(f32, TQ_F_F32)
TQ_FLOAT_GEMM(f16, TQ_F_F16)
TQ_FLOAT_GEMM(bf16, TQ_F_BF16)
#undef TQ_FLOAT_GEMM
#undef TQ_FLOAT_TILE

/* ---------------------------------------------------------------- integer types, two variants */

/* plain NEON: s8 x s8 -> int16 (|product| <= 128 * 127) -> pairwise into int32 */
TQ_INLINE int32x4_t tq_mdot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
}

/* The K-quant helpers without integer dot products (one copy for both variants) */
TQ_INLINE int32x4_t tq_k4_mins(const uint8_t m[8], const tq_block_q8_k *y) {
    const int16x8_t bs = vpaddq_s16(vld1q_s16(y->bsums), vld1q_s16(y->bsums + 8));
    const int16x8_t m16 = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m)));
    return vmlal_high_s16(vmull_s16(vget_low_s16(bs), vget_low_s16(m16)), bs, m16);
}

/* acc + d * sumi - dmin * mins: a Q4_K / Q5_K block x's float terms against activation block y */
TQ_INLINE float32x4_t tq_q4k_float(const uint8_t *x, const tq_block_q8_k *y, int32x4_t sumi, int32x4_t mins,
                                   float32x4_t acc) {
    acc = vfmaq_n_f32(acc, vcvtq_f32_s32(sumi), y->d * tq_h2f(x));
    return vfmsq_n_f32(acc, vcvtq_f32_s32(mins), y->d * tq_h2f(x + 2));
}

/* prompt GEMMs: the K-quants (the 32-value types and the float types as in qk_avx2.c) */
#define TQ_K_GEMM_OF_q8_0 0
#define TQ_K_GEMM_OF_q4_0 0
#define TQ_K_GEMM_OF_q4_1 0
#define TQ_K_GEMM_OF_q5_0 0
#define TQ_K_GEMM_OF_q5_1 0
#define TQ_K_GEMM_OF_q4_k TQ_FN(tq_qk_gemm_q4_k)
#define TQ_K_GEMM_OF_q5_k TQ_FN(tq_qk_gemm_q5_k)
#define TQ_K_GEMM_OF_q6_k TQ_FN(tq_qk_gemm_q6_k)

#define TQ_ATTR TQ_QK_DOTPROD
#define TQ_FN(name) name##_dot
#define TQ_DOT16(acc, a, b) tq_qk_vdot((acc), (a), (b))
#include "qk_neon_body.h"
#undef TQ_ATTR
#undef TQ_FN
#undef TQ_DOT16

#define TQ_ATTR
#define TQ_FN(name) name##_nodot
#define TQ_DOT16(acc, a, b) tq_mdot16((acc), (a), (b))
#include "qk_neon_body.h"
#undef TQ_ATTR
#undef TQ_FN
#undef TQ_DOT16

/* TRIT_NO_DOTPROD=1 hands out the plain NEON ops on a dotprod CPU (as tq_kernels_neon() does), so
 * that the fallback is tested on such machines too. */
const tq_qk_ops *tq_qk_ops_neon(int type) {
    const int dot = (tq_cpu_features() & TQ_CPU_NEON_DOTPROD) && !tq_env_flag("TRIT_NO_DOTPROD");
    const size_t count = sizeof(tq_qk_neon_ops_dot) / sizeof(tq_qk_neon_ops_dot[0]);
    return tq_qk_find(dot ? tq_qk_neon_ops_dot : tq_qk_neon_ops_nodot, count, type);
}

#else

const tq_qk_ops *tq_qk_ops_neon(int type) {
    (void)type;
    return 0;
}

#endif
