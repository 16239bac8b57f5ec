/* What the C microbenchmarks share: a monotonic clock and the plain read loops they compare against
 * (trit.bench's bandwidth probe, micro_probe_read; the sum of 64-bit words, 8 accumulators, that
 * it used before; 32-byte loads). */
#ifndef TRIT_MICRO_H
#define TRIT_MICRO_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static inline double micro_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* qsort order of doubles, ascending */
static inline int micro_cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* n bytes on 2 MiB boundaries, rounded up to whole 2 MiB pages and asked for as transparent huge
 * pages (the hint may be refused), or NULL */
static inline void *micro_huge_alloc(size_t n) {
    const size_t huge = (size_t)2 << 20, alloc = (n + huge - 1) / huge * huge;
    void *p = aligned_alloc(huge, alloc);
    if (p) madvise(p, alloc, MADV_HUGEPAGE);
    return p;
}

static inline uint64_t micro_sum_words(const uint64_t *p, size_t n) {
    uint64_t s[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += p[i + k];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

/* The benchmark's bandwidth probe (trit/bench.py _BW_SOURCE) on one thread: 64-byte vectors, four
 * lines a step into four sums, a prefetch lead bytes ahead into L2 (0: none). micro_sum_words read
 * 0.75-0.85x as fast as this on the Intel VM. */
typedef uint64_t micro_lane8 __attribute__((vector_size(64)));
/* s += the 64 bytes at p (no function returning the vector: without AVX-512 that is an ABI warning) */
#define MICRO_ADD64(s, p)                                                                              \
    do {                                                                                               \
        micro_lane8 v_;                                                                                \
        memcpy(&v_, (p), sizeof v_);                                                                   \
        (s) += v_;                                                                                     \
    } while (0)
static inline uint64_t micro_probe_read(const uint64_t *p, size_t n, size_t lead) {
    micro_lane8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (size_t i = 0; i + 32 <= n; i += 32) {
        if (lead) __builtin_prefetch((const char *)(p + i) + lead, 0, 2);
        MICRO_ADD64(s0, p + i);
        MICRO_ADD64(s1, p + i + 8);
        MICRO_ADD64(s2, p + i + 16);
        MICRO_ADD64(s3, p + i + 24);
    }
    const micro_lane8 s = s0 + s1 + s2 + s3;
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

#ifdef __AVX2__
#include <immintrin.h>

/* A linear read with 32-byte loads (the fastest plain read loop found on this VM at one thread:
 * a few percent above micro_sum_words in means); n a multiple of 128, w 32-byte aligned. */
static inline uint64_t micro_read_lines(const uint8_t *w, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a0 = _mm256_xor_si256(a0, _mm256_xor_si256(_mm256_load_si256((const __m256i *)(w + i)),
                                                   _mm256_load_si256((const __m256i *)(w + i + 32))));
        a1 = _mm256_xor_si256(a1, _mm256_xor_si256(_mm256_load_si256((const __m256i *)(w + i + 64)),
                                                   _mm256_load_si256((const __m256i *)(w + i + 96))));
    }
    uint64_t t[4];
    _mm256_storeu_si256((__m256i *)t, _mm256_xor_si256(a0, a1));
    return t[0];
}
#endif

#endif
