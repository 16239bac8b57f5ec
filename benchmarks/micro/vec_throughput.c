/* How many vector instructions one core retires per cycle: the bound on the AVX2 ternary GEMM,
 * whose work is vpmaddubsw (32 byte products each) and the vpaddw that accumulates them. Each loop
 * runs 8 independent chains of one kind (or 6 + 6 of a mix) for 2e8 iterations; the clock comes
 * from a chain of dependent scalar adds (one per cycle). Build and run on any x86-64 with AVX2:
 *
 *   gcc -O2 -mavx2 benchmarks/micro/vec_throughput.c -o /tmp/vec_throughput && /tmp/vec_throughput
 */
#include <immintrin.h>
#include <stdio.h>

#include "micro.h"

#define N 200000000L

#define OPS8(op, b)                                                                                      \
    __asm__ volatile(op " %8, %0, %0\n\t" op " %8, %1, %1\n\t" op " %8, %2, %2\n\t" op " %8, %3, %3\n\t" \
                     op " %8, %4, %4\n\t" op " %8, %5, %5\n\t" op " %8, %6, %6\n\t" op " %8, %7, %7\n\t"  \
                     : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3), "+x"(x4), "+x"(x5), "+x"(x6), "+x"(x7)    \
                     : "x"(b))

int main(void) {
    long c = 0;
    double t = micro_now();
    for (long i = 0; i < N; i++)
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                         "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
                         : "+r"(c));
    const double ghz = 8.0 * N / (micro_now() - t) / 1e9;
    printf("clock (dependent adds): %.2f GHz\n", ghz);

    __m256i b = _mm256_set1_epi8(5), x0 = _mm256_set1_epi8(3), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0,
            x6 = x0, x7 = x0;
    t = micro_now();
    for (long i = 0; i < N; i++) OPS8("vpmaddubsw", b);
    printf("vpmaddubsw ymm:            %.2f per cycle\n", 8.0 * N / (micro_now() - t) / 1e9 / ghz);
    t = micro_now();
    for (long i = 0; i < N; i++) OPS8("vpaddw", b);
    printf("vpaddw ymm:                %.2f per cycle\n", 8.0 * N / (micro_now() - t) / 1e9 / ghz);
    t = micro_now();
    for (long i = 0; i < N; i++) OPS8("vpand", b);
    printf("vpand ymm:                 %.2f per cycle\n", 8.0 * N / (micro_now() - t) / 1e9 / ghz);
    /* the mix: 6 vpmaddubsw chains (latency 3, so 6 can issue 2 per cycle) and 6 vpaddw chains */
    __m256i y0 = x0, y1 = x1, y2 = x2, y3 = x3, y4 = x4, y5 = x5;
    t = micro_now();
    for (long i = 0; i < N; i++)
        __asm__ volatile("vpmaddubsw %12, %0, %0\n\tvpaddw %12, %6, %6\n\tvpmaddubsw %12, %1, %1\n\tvpaddw %12, %7, %7\n\t"
                         "vpmaddubsw %12, %2, %2\n\tvpaddw %12, %8, %8\n\tvpmaddubsw %12, %3, %3\n\tvpaddw %12, %9, %9\n\t"
                         "vpmaddubsw %12, %4, %4\n\tvpaddw %12, %10, %10\n\tvpmaddubsw %12, %5, %5\n\tvpaddw %12, %11, %11\n\t"
                         : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3), "+x"(x4), "+x"(x5), "+x"(y0), "+x"(y1), "+x"(y2),
                           "+x"(y3), "+x"(y4), "+x"(y5)
                         : "x"(b));
    printf("6 vpmaddubsw + 6 vpaddw:   %.2f per cycle (the GEMM's inner mix)\n", 12.0 * N / (micro_now() - t) / 1e9 / ghz);
    /* the tile's own pattern: 8 vpmaddubsw of fixed inputs (no chain through them) whose results 8
     * vpaddw chains accumulate; best of 5 loops. The mix above runs each vpmaddubsw on its own
     * previous result, a chain the tile does not have. */
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        t = micro_now();
        for (long i = 0; i < N / 2; i++)
            __asm__ volatile("vpmaddubsw %%ymm8, %%ymm12, %%ymm14\n\tvpaddw %%ymm14, %%ymm0, %%ymm0\n\t"
                             "vpmaddubsw %%ymm9, %%ymm12, %%ymm15\n\tvpaddw %%ymm15, %%ymm1, %%ymm1\n\t"
                             "vpmaddubsw %%ymm10, %%ymm12, %%ymm14\n\tvpaddw %%ymm14, %%ymm2, %%ymm2\n\t"
                             "vpmaddubsw %%ymm11, %%ymm12, %%ymm15\n\tvpaddw %%ymm15, %%ymm3, %%ymm3\n\t"
                             "vpmaddubsw %%ymm8, %%ymm13, %%ymm14\n\tvpaddw %%ymm14, %%ymm4, %%ymm4\n\t"
                             "vpmaddubsw %%ymm9, %%ymm13, %%ymm15\n\tvpaddw %%ymm15, %%ymm5, %%ymm5\n\t"
                             "vpmaddubsw %%ymm10, %%ymm13, %%ymm14\n\tvpaddw %%ymm14, %%ymm6, %%ymm6\n\t"
                             "vpmaddubsw %%ymm11, %%ymm13, %%ymm15\n\tvpaddw %%ymm15, %%ymm7, %%ymm7\n\t"
                             ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm14", "xmm15");
        const double dt = micro_now() - t;
        best = dt < best ? dt : best;
    }
    printf("8 vpmaddubsw -> 8 vpaddw:  %.2f per cycle (the tile's pattern: %.1f cycles per 32 + 32)\n",
           16.0 * (N / 2) / best / 1e9 / ghz, 64.0 / (16.0 * (N / 2) / best / 1e9 / ghz));
    x6 = _mm256_add_epi16(_mm256_add_epi16(y0, y1), _mm256_add_epi16(y2, y3));
    x7 = _mm256_add_epi16(x7, _mm256_add_epi16(y4, y5));

    int r[8];
    _mm256_storeu_si256((__m256i *)r, _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(x0, x1), _mm256_add_epi32(x2, x3)),
                                                       _mm256_add_epi32(_mm256_add_epi32(x4, x5), _mm256_add_epi32(x6, x7))));
    return (int)((r[0] + c) & 1) * 0;
}
