/* What the C microbenchmarks share: a monotonic clock and the plain read loop they compare against
 * (the same sum of 64-bit words, 8 accumulators, as trit.bench's bandwidth probe). */
#ifndef TRIT_MICRO_H
#define TRIT_MICRO_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

static inline double micro_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static inline uint64_t micro_sum_words(const uint64_t *p, size_t n) {
    uint64_t s[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += p[i + k];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

#endif
