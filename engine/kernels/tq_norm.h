/* RMSNorm's sum of squares, shared by forward.c, the Python kernel tests (_kernels.pyx) and the
 * AArch64 harness (tests/kernels/isa_harness.c), so every build's path is tested.
 *
 * The spec (the scalar loop at the end): eight double sums, p[j] adding x[i]^2 for i = j mod 8 in
 * increasing i over the multiples of 8, the n % 8 leftovers added to p[0], then
 * ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)). A float's square is exact in double, so the
 * vector paths (128-bit, which every x86-64 and AArch64 CPU has; gcc left the scalar loop scalar)
 * and a fused multiply-add give these sums bit for bit.
 * prefetch: an array of n floats the caller reads next, fetched into L1 alongside on x86; may be
 * NULL. The norm weights are cold after a token's weight stream, and waiting for them was most of
 * RMSNorm's time in a 2B4T decode token (perf: 0.78% -> 0.47% of it with the prefetch). */
#ifndef TQ_NORM_H
#define TQ_NORM_H

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#include <xmmintrin.h>
#elif defined(__aarch64__) || defined(_M_ARM64)
#include <arm_neon.h>
#endif

static inline double tq_sum_squares(const float *x, int n, const float *prefetch) {
    double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
#if defined(__SSE2__) || defined(_M_X64)
    __m128d a[4] = {_mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd()};
    for (; i + 8 <= n; i += 8) {
        if (prefetch && !(i & 15)) _mm_prefetch((const char *)(prefetch + i), _MM_HINT_T0);
        for (int k = 0; k < 2; k++) {
            const __m128 v = _mm_loadu_ps(x + i + 4 * k);
            const __m128d lo = _mm_cvtps_pd(v), hi = _mm_cvtps_pd(_mm_movehl_ps(v, v));
            a[2 * k] = _mm_add_pd(a[2 * k], _mm_mul_pd(lo, lo));
            a[2 * k + 1] = _mm_add_pd(a[2 * k + 1], _mm_mul_pd(hi, hi));
        }
    }
    for (int k = 0; k < 4; k++) _mm_storeu_pd(p + 2 * k, a[k]);
#elif defined(__aarch64__) || defined(_M_ARM64)
    (void)prefetch;
    float64x2_t a[4] = {vdupq_n_f64(0), vdupq_n_f64(0), vdupq_n_f64(0), vdupq_n_f64(0)};
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 2; k++) {
            const float32x4_t v = vld1q_f32(x + i + 4 * k);
            const float64x2_t lo = vcvt_f64_f32(vget_low_f32(v)), hi = vcvt_high_f64_f32(v);
            a[2 * k] = vaddq_f64(a[2 * k], vmulq_f64(lo, lo));
            a[2 * k + 1] = vaddq_f64(a[2 * k + 1], vmulq_f64(hi, hi));
        }
    for (int k = 0; k < 4; k++) vst1q_f64(p + 2 * k, a[k]);
#else
    (void)prefetch;
#endif
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) p[j] += (double)x[i + j] * x[i + j];
    for (; i < n; i++) p[0] += (double)x[i] * x[i];
    return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

#endif
