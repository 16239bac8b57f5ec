/* The ternary GEMV of the engine (engine/kernels) alone from DRAM, against a plain read loop, for
 * one prefetch lead (TQ_GEMV_PREFETCH_LEAD, set with -D). One thread, 2 MiB pages, 512 MiB of
 * packed weights, means of 6 passes. Build and run from the repository root, e.g.:
 *
 *   for L in 0 4096; do gcc -O3 -DTQ_GEMV_PREFETCH_LEAD=$L -Iengine/kernels -mavx2 -mfma -mf16c \
 *       -mavx512f -mavx512bw -mavx512vl benchmarks/micro/gemv_lead.c engine/kernels/tq_avx2.c \
 *       engine/kernels/tq_avx512.c engine/kernels/tq_scalar.c engine/kernels/cpu.c -o /tmp/gemv_lead_$L -lm; done
 *   /tmp/gemv_lead_0 2560 avx512; /tmp/gemv_lead_4096 2560 avx512    # columns, avx512 | avx2
 *
 * On a CPU without AVX-512 the line above builds a program that dies on an illegal instruction
 * (gcc uses AVX-512 in main); compile tq_avx512.c alone with the AVX-512 flags instead:
 *
 *   gcc -O3 -Iengine/kernels -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -c \
 *       engine/kernels/tq_avx512.c -o /tmp/tq_avx512.o
 *   gcc -O3 -DTQ_GEMV_PREFETCH_LEAD=4096 -Iengine/kernels -mavx2 -mfma -mf16c benchmarks/micro/gemv_lead.c \
 *       engine/kernels/tq_avx2.c /tmp/tq_avx512.o engine/kernels/tq_scalar.c engine/kernels/cpu.c -o /tmp/gemv_lead -lm
 *   /tmp/gemv_lead 2560 avx2
 *
 * It also prints the same kernel over 128 KiB of rows repeated (held in L2): the speed of its
 * arithmetic, the rate memory would have to beat for the kernel to be compute-bound. Linux only
 * (madvise). */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "micro.h"

#include "tq.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s COLUMNS avx512|avx2\n", argv[0]);
        return 2;
    }
    const tq_kernels *k = strcmp(argv[2], "avx2") == 0 ? tq_kernels_avx2() : tq_kernels_avx512();
    const int cols = atoi(argv[1]), nb = cols / TQ_QK;
    if (!k || nb < 1) {
        fprintf(stderr, "kernels not available here, or COLUMNS < %d\n", TQ_QK);
        return 2;
    }
    const size_t bytes = (size_t)512 << 20;
    uint8_t *w = aligned_alloc((size_t)2 << 20, bytes);
    int8_t *a = aligned_alloc(64, (size_t)nb * TQ_QK);
    const int rows = (int)(bytes / ((size_t)nb * TQ_QK_BYTES)) - 64;
    int32_t *out = aligned_alloc(64, (size_t)rows * 4 + 64);
    if (!w || !a || !out) return 1;
    madvise(w, bytes, MADV_HUGEPAGE);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)((i * 2654435761u >> 13) & 0xAA); /* codes 0 and 2 */
    for (int i = 0; i < nb * TQ_QK; i++) a[i] = (int8_t)(i * 7);
    volatile uint64_t sink = 0;
    double g = 0, p = 0, c = 0, q = 0;
    const int crows = (int)(((size_t)128 << 10) / ((size_t)nb * TQ_QK_BYTES)), creps = (int)(bytes >> 17);
    for (int rep = 0; rep < 6; rep++) {
        double t = micro_now();
        sink += micro_sum_words((const uint64_t *)w, bytes / 8);
        p += bytes / (micro_now() - t) / 1e9;
        double best = 0;
        for (size_t lead = 0; lead <= 4096; lead += 4096) { /* the probe's passes: the faster */
            t = micro_now();
            sink += micro_probe_read((const uint64_t *)w, bytes / 8, lead);
            const double gb = bytes / (micro_now() - t) / 1e9;
            best = gb > best ? gb : best;
        }
        q += best;
        t = micro_now();
        k->gemv(w, rows, nb, a, 0, out);
        g += (double)rows * nb * TQ_QK_BYTES / (micro_now() - t) / 1e9;
        t = micro_now();
        for (int r = 0; r < creps; r++) k->gemv(w, crows, nb, a, 0, out);
        c += (double)creps * crows * nb * TQ_QK_BYTES / (micro_now() - t) / 1e9;
    }
    printf("%s, %d columns, lead %d: read loop %.1f GB/s, probe %.1f GB/s, gemv %.1f GB/s from DRAM (%.0f%% of the "
           "probe), %.1f GB/s in L2\n",
           k->isa, cols, TQ_GEMV_PREFETCH_LEAD, p / 6, q / 6, g / 6, 100 * g / q, c / 6);
    return (int)(sink & 1);
}
