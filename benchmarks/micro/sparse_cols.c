/* Would a down projection that skips the zero activations read faster? ReLU^2 zeroes the FFN
 * intermediate wherever the gate is negative, and the int8 rounding zeroes most of the small rest:
 * on the random-weight 2B4T model about two thirds of the 6912 inputs of every down_proj are 0
 * (numpy: g, u ~ N(0, 1), q = round(127 * relu(g)^2 u / max|.|) is 0 for 66-68% of 6912). A kernel
 * that skips them must store the matrix by column, and then reads only the nonzero columns.
 *
 * This times the memory side of that from DRAM, one thread, over the 30 layers' 2560 x 6912
 * ternary matrices (133 MB at 2 bits), against streaming every byte of them (what the dense GEMV
 * reads). Columns are picked at random with the given density, in increasing order:
 *   cols      each column's 2560 rows contiguous (640 bytes, 10 lines per nonzero column)
 *   cols+pf2  the same with software prefetches two nonzero columns ahead
 *   slabs     256-row slabs, each column one 64-byte line per slab (the layout a row-split across
 *             threads would want)
 * A 512 MB read between samples pushes the matrices out of the caches.
 * Build and run (x86-64 with AVX-512, Linux):
 *
 *   gcc -O2 -mavx512f -mavx512bw benchmarks/micro/sparse_cols.c -o /tmp/sparse_cols && \
 *       /tmp/sparse_cols [DENSITY ...]                                                         */
#define _DEFAULT_SOURCE
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "micro.h"

#define LAYERS 30
#define COLS 6912
#define COL_BYTES 640 /* 2560 rows x 2 bits */
#define SLABS (COL_BYTES / 64)
#define ROUNDS 6

static void *big(size_t n) {
    const size_t huge = (size_t)2 << 20;
    n = (n + huge - 1) / huge * huge;
    void *p = aligned_alloc(huge, n);
    if (p == NULL) {
        perror("aligned_alloc");
        exit(1);
    }
    madvise(p, n, MADV_HUGEPAGE);
    memset(p, 1, n);
    return p;
}

/* xor of every 64-byte line at p + idx[i] * step + off for off < bytes (lines in increasing order) */
static __m512i read_cols(const uint8_t *p, const int *idx, int n, size_t step, int bytes, int lead) {
    __m512i acc = _mm512_setzero_si512();
    for (int i = 0; i < n; i++) {
        const uint8_t *q = p + (size_t)idx[i] * step;
        if (lead > 0 && i + lead < n)
            for (int o = 0; o < bytes; o += 64)
                _mm_prefetch((const char *)(p + (size_t)idx[i + lead] * step + o), _MM_HINT_T0);
        for (int o = 0; o < bytes; o += 64) acc = _mm512_xor_si512(acc, _mm512_load_si512(q + o));
    }
    return acc;
}

int main(int argc, char **argv) {
    const size_t layer_bytes = (size_t)COLS * COL_BYTES, flush_bytes = (size_t)512 << 20;
    uint8_t *w = big(layer_bytes * LAYERS), *flush = big(flush_bytes);
    static int idx[LAYERS][COLS];
    int nnz[LAYERS];
    uint64_t sink = 0;
    printf("%-8s %9s %9s %9s %9s   (ms per token's 30 down_projs, best of %d; x = dense / form)\n",
           "density", "dense", "cols", "cols+pf2", "slabs", ROUNDS);
    for (int a = 1; a < (argc > 1 ? argc : 5); a++) {
        const double density = argc > 1 ? atof(argv[a]) : (double[]){0, 0.1, 0.2, 0.33, 0.5}[a];
        srand(1);
        for (int l = 0; l < LAYERS; l++) {
            nnz[l] = 0;
            for (int j = 0; j < COLS; j++)
                if (rand() < density * RAND_MAX) idx[l][nnz[l]++] = j;
        }
        double best[4] = {1e9, 1e9, 1e9, 1e9};
        for (int r = 0; r < ROUNDS; r++)
            for (int form = 0; form < 4; form++) {
                sink += micro_sum_words((const uint64_t *)flush, flush_bytes / 8);
                __m512i acc = _mm512_setzero_si512();
                const double t0 = micro_now();
                for (int l = 0; l < LAYERS; l++) {
                    const uint8_t *p = w + layer_bytes * l;
                    if (form == 0)
                        sink += micro_sum_words((const uint64_t *)p, layer_bytes / 8);
                    else if (form == 1 || form == 2)
                        acc = _mm512_xor_si512(acc, read_cols(p, idx[l], nnz[l], COL_BYTES, COL_BYTES,
                                                              form == 2 ? 2 : 0));
                    else
                        for (int s = 0; s < SLABS; s++)
                            acc = _mm512_xor_si512(
                                acc, read_cols(p + (size_t)s * COLS * 64, idx[l], nnz[l], 64, 64, 0));
                }
                const double t = micro_now() - t0;
                sink += (uint64_t)_mm512_reduce_add_epi64(acc);
                if (t < best[form]) best[form] = t;
            }
        printf("%-8.2f %9.2f", density, best[0] * 1e3);
        for (int form = 1; form < 4; form++) printf(" %5.2f (%.2fx)", best[form] * 1e3, best[0] / best[form]);
        printf("   dense %.1f GB/s\n", layer_bytes * LAYERS / best[0] / 1e9);
    }
    return sink == 42; /* keeps the reads */
}
