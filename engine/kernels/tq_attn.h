/* The plain-C ends of the attention kernels (f32_dots / f32_wsum) that the SIMD files share: the
 * columns past the last full vector. Included by tq_avx2.c and tq_neon.c (AVX-512 masks its tails
 * instead). */
#ifndef TQ_ATTN_H
#define TQ_ATTN_H

#include <stddef.h>

/* Four keys' partial sums s[0..3] (rows r, r + stride, ...) completed over columns body..n-1 and
 * stored to out[0..3]. */
static inline void tq_dots4_finish(const float *r, size_t stride, const float *x, int body, int n, float s[4],
                                   float *out) {
    for (int i = body; i < n; i++)
        for (int k = 0; k < 4; k++) s[k] += r[(size_t)k * stride + i] * x[i];
    for (int k = 0; k < 4; k++) out[k] = s[k];
}

/* out[c] = sum_j w[j] * rows[j * stride + c] for columns c0..n-1, one column at a time. */
static inline void tq_wsum_columns(const float *rows, size_t stride, int len, const float *w, int c0, int n,
                                   float *out) {
    for (int c = c0; c < n; c++) {
        float a = 0.0f;
        for (int j = 0; j < len; j++) a += w[j] * rows[(size_t)j * stride + c];
        out[c] = a;
    }
}

#endif
