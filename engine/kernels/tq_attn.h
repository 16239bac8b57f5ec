/* What the attention kernels of every path share: the polynomial exp constants of the SIMD
 * softmax, and the plain-C pieces: the column tails of f32/f16_dots and _wsum past the last full
 * vector (AVX2 and NEON; AVX-512 masks its tails instead) and the softmax's scalar loops, which
 * are the whole scalar softmax and the tails of the SIMD ones. */
#ifndef TQ_ATTN_H
#define TQ_ATTN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "tq.h"

/* Element idx of a KV row block: f32 (h = 0), f16 (h = 1, widened exactly) or an int8 code (h = 2,
 * exact as a float). h is a constant at every call, so each kernel compiles to plain loops. */
static inline float tq_kv_elem(const void *rows, size_t idx, int h) {
    return h == 2 ? (float)((const int8_t *)rows)[idx]
           : h    ? tq_f16_to_f32(((const uint16_t *)rows)[idx])
                  : ((const float *)rows)[idx];
}

/* exp(x) for the softmax's x <= 0 (after the max is subtracted): x = n ln2 + r with n = round(x
 * log2 e), ln2 in two parts (Cody-Waite), exp(r) by Cephes' expf polynomial, times 2^n. Inputs are
 * clamped at TQ_EXP_LO, where exp is ~1e-38 and 2^n still a normal float. */
#define TQ_EXP_LO (-87.33654f)
#define TQ_LOG2E 1.44269504088896341f
#define TQ_LN2_HI 0.693359375f
#define TQ_LN2_LO (-2.12194440e-4f)
#define TQ_EXP_P0 1.9875691500e-4f
#define TQ_EXP_P1 1.3981999507e-3f
#define TQ_EXP_P2 8.3334519073e-3f
#define TQ_EXP_P3 4.1665795894e-2f
#define TQ_EXP_P4 1.6666665459e-1f
#define TQ_EXP_P5 5.0000001201e-1f

/* Four keys' partial sums s[0..3] (the rows starting at element r0, r0 + stride, ...) completed
 * over columns body..n-1 and stored to out[0..3]. */
static inline void tq_dots4_finish(const void *rows, size_t r0, size_t stride, const float *x, int body, int n,
                                   float s[4], float *out, int h) {
    for (int i = body; i < n; i++)
        for (int k = 0; k < 4; k++) s[k] += tq_kv_elem(rows, r0 + (size_t)k * stride + i, h) * x[i];
    for (int k = 0; k < 4; k++) out[k] = s[k];
}

/* out[c] = sum_j w[j] * rows[j * stride + c] for columns c0..n-1, one column at a time. */
static inline void tq_wsum_columns(const void *rows, size_t stride, int len, const float *w, int c0, int n,
                                   float *out, int h) {
    for (int c = c0; c < n; c++) {
        float a = 0.0f;
        for (int j = 0; j < len; j++) a += w[j] * tq_kv_elem(rows, (size_t)j * stride + c, h);
        out[c] = a;
    }
}

/* A path's six attention kernels (tq_kernels' f32_, f16_ and q8_dots and _wsum) from its two
 * generic bodies tq_dots_<isa> and tq_wsum_<isa>, whose last argument is the element type (0 f32,
 * 1 f16, 2 int8) as a compile-time constant: one TQ_KV_PAIR per element type. */
#define TQ_KV_PAIR(isa, tag, T, h)                                                                         \
    static void tq_##tag##_dots_##isa(const T *rows, size_t stride, int len, const float *x, int n,        \
                                      float *out) {                                                        \
        tq_dots_##isa(rows, stride, len, x, n, out, h);                                                    \
    }                                                                                                      \
    static void tq_##tag##_wsum_##isa(const T *rows, size_t stride, int len, const float *w, int n,        \
                                      float *out) {                                                        \
        tq_wsum_##isa(rows, stride, len, w, n, out, h);                                                    \
    }
#define TQ_KV_KERNELS(isa)                                                                                 \
    TQ_KV_PAIR(isa, f32, float, 0)                                                                         \
    TQ_KV_PAIR(isa, f16, uint16_t, 1)                                                                      \
    TQ_KV_PAIR(isa, q8, int8_t, 2)

/* The softmax's three loops over [j0, n): x[j] *= scale with the running max, then expf and the
 * sum, then the normalization. */
static inline float tq_softmax_scale_max(float *x, int j0, int n, float scale, float mx) {
    for (int j = j0; j < n; j++) {
        x[j] *= scale;
        if (x[j] > mx) mx = x[j];
    }
    return mx;
}
static inline float tq_softmax_exp_sum(float *x, int j0, int n, float mx, float sum) {
    for (int j = j0; j < n; j++) {
        x[j] = expf(x[j] - mx);
        sum += x[j];
    }
    return sum;
}
static inline void tq_softmax_normalize(float *x, int j0, int n, float inv) {
    for (int j = j0; j < n; j++) x[j] *= inv;
}

#endif
