/* Which loop order around the AVX2 prompt GEMM tile (tq_gemm_tile24_avx2) is fastest? The engine
 * hands the GEMM work items of 64 rows x all prompt tokens (forward.c), so this times 128 tokens
 * over the 2B4T matrix shapes in 64-row calls, one thread, three ways, alternating within each
 * round:
 *
 *   panels   tq_gemm_avx2 as built: row panels of <= 128 KB of weights, then token tiles, then row
 *            tiles (tq_gemm.h), so a token tile's activations stay in L1 and the weights come
 *            from L2
 *   chunks   the order it replaced: token chunks of 256 KB of activations, then row tiles, then
 *            token tiles, so a row tile's weights stay in L1 and the activations come from L2
 *   inL1     the tile alone on one 2 x 4 tile whose data stays in L1 (the ceiling of both)
 *
 * Both orders compute the same sums (checked here). Build and run (x86-64 with AVX2, Linux):
 *
 *   gcc -O3 -mavx2 -mfma -mf16c -Iengine/kernels -Ibenchmarks/micro benchmarks/micro/gemm_order.c \
 *       engine/kernels/tq_scalar.c engine/kernels/cpu.c -lm -lpthread -o /tmp/gemm_order \
 *       && /tmp/gemm_order [ROUNDS]
 */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "micro.h"
#include "tq_avx2.c"

#define NTOK 128
#define ITEM_ROWS 64
#define CHUNK_BYTES (256 * 1024)

/* The replaced order: token chunks outer, then row tiles, then token tiles. */
static void gemm_chunks(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride, const int32_t *asum,
                        int ntok, int32_t *out, size_t out_stride) {
    const size_t stride = (size_t)nb * TQ_QK_BYTES;
    int chunk = (int)(CHUNK_BYTES / ((size_t)nb * TQ_QK));
    chunk = chunk < TQ_GEMM_TOKS ? TQ_GEMM_TOKS : chunk - chunk % TQ_GEMM_TOKS;
    for (int t0 = 0; t0 < ntok; t0 += chunk) {
        const int t1 = ntok - t0 > chunk ? t0 + chunk : ntok;
        for (int r = 0; r < rows;) {
            const int R = rows - r >= TQ_AVX2_GEMM_ROWS ? TQ_AVX2_GEMM_ROWS : 1;
            for (int t = t0; t < t1; t += TQ_GEMM_TOKS) {
                const int T = t1 - t >= TQ_GEMM_TOKS ? TQ_GEMM_TOKS : t1 - t;
                tq_gemm_tile_any_avx2(w + (size_t)r * stride, stride, nb, a + (size_t)t * a_stride, a_stride,
                                      asum + t, out + (size_t)t * out_stride + r, out_stride, R, T);
            }
            r += R;
        }
    }
}

/* Seconds for the whole matrix in ITEM_ROWS-row calls of one order. */
static double run(int order, const uint8_t *w, int rows, int nb, const int8_t *a, const int32_t *asum, int32_t *out) {
    const size_t stride = (size_t)nb * TQ_QK_BYTES, cols = (size_t)nb * TQ_QK;
    const double t0 = micro_now();
    for (int r = 0; r < rows; r += ITEM_ROWS) {
        const int n = rows - r < ITEM_ROWS ? rows - r : ITEM_ROWS;
        if (order == 0)
            tq_gemm_avx2(w + r * stride, n, nb, a, cols, asum, NTOK, out + r, (size_t)rows);
        else
            gemm_chunks(w + r * stride, n, nb, a, cols, asum, NTOK, out + r, (size_t)rows);
    }
    return micro_now() - t0;
}

int main(int argc, char **argv) {
    const int rounds = argc > 1 ? atoi(argv[1]) : 9;
    static const int shapes[3][2] = {{2560, 2560}, {6912, 2560}, {2560, 6912}}; /* rows, cols */
    printf("GMAC/s, one thread, %d tokens in %d-row calls: best / median of %d rounds\n", NTOK, ITEM_ROWS, rounds);
    for (int s = 0; s < 3; s++) {
        const int rows = shapes[s][0], cols = shapes[s][1], nb = cols / TQ_QK;
        const size_t stride = (size_t)nb * TQ_QK_BYTES;
        uint8_t *w = aligned_alloc(64, (size_t)rows * stride);
        int8_t *a = aligned_alloc(64, (size_t)NTOK * cols);
        int32_t *asum = calloc(NTOK, sizeof(int32_t));
        int32_t *out[2] = {aligned_alloc(64, (size_t)NTOK * rows * 4), aligned_alloc(64, (size_t)NTOK * rows * 4)};
        for (size_t i = 0; i < (size_t)rows * stride; i++) w[i] = (uint8_t)((i * 2654435761u) >> 13);
        for (size_t i = 0; i < (size_t)NTOK * cols; i++) a[i] = (int8_t)((i * 11) % 255 - 127);
        double *sec[2] = {calloc(rounds, sizeof(double)), calloc(rounds, sizeof(double))};
        for (int rd = 0; rd < rounds; rd++)
            for (int o = 0; o < 2; o++) sec[o][rd] = run(o, w, rows, nb, a, asum, out[o]);
        if (memcmp(out[0], out[1], (size_t)NTOK * rows * 4) != 0) {
            fprintf(stderr, "the two orders disagree\n");
            return 1;
        }
        const double macs = (double)rows * cols * NTOK;
        printf("%4d x %4d ", rows, cols);
        for (int o = 0; o < 2; o++) {
            qsort(sec[o], rounds, sizeof(double), micro_cmp_double);
            printf("  %s %6.1f / %6.1f", o ? "chunks" : "panels", macs / sec[o][0] / 1e9, macs / sec[o][rounds / 2] / 1e9);
        }
        /* the same tile in L1: one 2-row x 4-token tile of this shape's row length, repeated */
        int32_t o8[2 * TQ_GEMM_TOKS];
        const long reps = 20000000L / nb;
        double best = 1e9;
        for (int rd = 0; rd < 3; rd++) {
            const double t0 = micro_now();
            for (long i = 0; i < reps; i++) tq_gemm_tile24_avx2(w, stride, nb, a, cols, asum, o8, 2);
            const double t = micro_now() - t0;
            best = t < best ? t : best;
        }
        printf("  inL1 %6.1f\n", (double)reps * nb * 2 * TQ_GEMM_TOKS * TQ_QK / best / 1e9);
        free(w), free(a), free(asum), free(out[0]), free(out[1]), free(sec[0]), free(sec[1]);
    }
    return 0;
}
