/* How fast one core reads memory when its loads walk several sequential streams at once, against
 * one stream (a plain read of the same bytes). Each form reads every byte of a 1 GiB buffer once
 * with 64-byte loads, 2 MiB pages, one thread:
 *
 *   1 stream                 the buffer front to back
 *   2 far streams, 64 B      the two halves of the buffer in lockstep, a line from each in turn
 *   2 far streams, 4 KiB     the same, 4 KiB from each in turn
 *   2 streams 5 KiB apart    two adjacent f16 head rows of 2560 values in lockstep (row pairs)
 *   4 streams 640 B apart    the four rows of a ternary GEMV group (2560 columns) in lockstep
 *   4 far streams            the four quarters of the buffer in lockstep
 *
 * On this project's VM (AMD EPYC Zen 4, KVM) two streams read at about half the speed of one and
 * four at ~40%, however far apart: so the f16 head reads one row after another (two rows at once,
 * bit-identical sums, ran at half speed: head_forms.c), and the ternary GEMV, which reads the four
 * rows of a group together, relies on its linear software prefetch. Build and run (x86-64 with
 * AVX-512, Linux):
 *
 *   gcc -O3 -mavx512f benchmarks/micro/streams.c -o /tmp/streams && /tmp/streams [ROUNDS]     */
#define _DEFAULT_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "micro.h"

#define TOTAL ((size_t)1 << 30)

/* k streams; with gap == 0 stream s is the s-th of k equal parts of the buffer, else the buffer is
 * blocks of k * gap bytes, stream s owning bytes [s * gap, (s + 1) * gap) of each block. Each step
 * reads `chunk` bytes from every stream in turn. */
static uint64_t walk(const char *base, int k, size_t gap, size_t chunk) {
    __m512i acc = _mm512_setzero_si512();
    if (gap == 0) {
        const size_t per = TOTAL / k;
        for (size_t off = 0; off < per; off += chunk)
            for (int s = 0; s < k; s++)
                for (size_t c = 0; c < chunk; c += 64)
                    acc = _mm512_add_epi64(acc, _mm512_load_si512(base + s * per + off + c));
    } else {
        for (size_t blk = 0; blk + gap * k <= TOTAL; blk += gap * k)
            for (size_t off = 0; off < gap; off += chunk)
                for (int s = 0; s < k; s++)
                    for (size_t c = 0; c < chunk; c += 64)
                        acc = _mm512_add_epi64(acc, _mm512_load_si512(base + blk + s * gap + off + c));
    }
    return (uint64_t)_mm512_reduce_add_epi64(acc);
}

int main(int argc, char **argv) {
    const int rounds = argc > 1 ? atoi(argv[1]) : 3;
    char *b = aligned_alloc((size_t)2 << 20, TOTAL);
    if (!b) return 1;
    madvise(b, TOTAL, MADV_HUGEPAGE);
    for (size_t i = 0; i < TOTAL; i += 8) *(uint64_t *)(b + i) = i;
    static const struct {
        int k;
        size_t gap, chunk;
        const char *name;
    } form[] = {
        {1, 0, 64, "1 stream"},
        {2, 0, 64, "2 far streams, 64 B"},
        {2, 0, 4096, "2 far streams, 4 KiB"},
        {2, 5120, 64, "2 streams 5 KiB apart"},
        {4, 640, 64, "4 streams 640 B apart"},
        {4, 0, 64, "4 far streams"},
    };
    enum { FORMS = sizeof form / sizeof form[0] };
    double gbs[FORMS] = {0};
    volatile uint64_t sink = 0;
    for (int r = 0; r < rounds; r++)
        for (int f = 0; f < FORMS; f++) {
            const double t = micro_now();
            sink += walk(b, form[f].k, form[f].gap, form[f].chunk);
            gbs[f] += TOTAL / (micro_now() - t) / 1e9;
        }
    printf("one thread, 1 GiB, means of %d rounds\n", rounds);
    for (int f = 0; f < FORMS; f++)
        printf("%-24s %5.1f GB/s (%3.0f%% of one stream)\n", form[f].name, gbs[f] / rounds, 100 * gbs[f] / gbs[0]);
    return (int)(sink & 1);
}
