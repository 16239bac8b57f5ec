/* Would a denser lossless ternary packing make decode faster? Base 3 stores five weights per byte
 * (1.6 bits per weight against the TQ layout's 2: 20% fewer bytes per token for the ternary
 * matrices), but only pays if decoding it keeps up with memory. This times, on AVX2, one thread and
 * two (each one continuous half), weights per second:
 *
 *   probe      trit.bench's plain read (a sum of 64-bit words) of the 2-bit matrix's bytes
 *   tq2        the engine's AVX2 GEMV (tq_kernels_avx2()->gemv) over a 2-bit (TQ) matrix from DRAM
 *   base3      a base-3 GEMV over the same weights packed five per byte, from DRAM
 * and each GEMV over a 128 KiB slice read again and again (held in L2: its arithmetic alone; the best
 * round, as this VM's neighbours slow some rounds).
 *
 * The base-3 layout (this file's own; no model uses it): a block of 160 weights is 32 bytes; byte j
 * holds weights j + 32 k (k = 0..4) as v = sum_k t_k 3^(4-k), t = w + 1 (the TQ codes), stored as
 * x = ceil(v * 256 / 243) ^ 0x80. Decoding digit k (llama.cpp's TQ1_0 idea, with its bytes kept in
 * the signed domain): m_k = 3^k ceil(v * 256 / 243) mod 256 and t_k = floor(3 m_k / 256), i.e.
 * t_k = [m_k > 85] + [m_k > 170]; with x_k = m_k ^ 0x80, two signed byte compares, an add and an
 * abs give t_k, and x_{k+1} = 3 x_k mod 256 two byte adds. Per 160 weights: 4 x 5 + 2 x 4 = 28
 * decode instructions, 5 vpmaddubsw and 5 adds (the TQ GEMV: 5 decode instructions, 4 vpmaddubsw
 * and 4 adds per 128 weights). Before timing, every packed value is checked to decode to its
 * digits, and the base-3 GEMV's sums against the engine's over the same weights.
 *
 * Build and run (x86-64 with AVX2, Linux):
 *
 *   gcc -O3 -mavx2 -mfma -mf16c -Iengine/kernels benchmarks/micro/base3_gemv.c \
 *       engine/kernels/tq_avx2.c engine/kernels/tq_scalar.c engine/kernels/cpu.c -lm -lpthread \
 *       -o /tmp/base3_gemv && /tmp/base3_gemv [ROUNDS]                                            */
#define _DEFAULT_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "micro.h"
#include "tq.h"
#include "tq_gemm.h"

#define COLS 2560                    /* the 2B4T hidden size: 20 TQ blocks, 16 base-3 blocks */
#define NB2 (COLS / TQ_QK)
#define B3 160                       /* weights per base-3 block */
#define NB3 (COLS / B3)
#define ROWS (400 * 1024)            /* 256 MB as TQ, 205 MB as base 3 */
#define L2_BYTES (128 * 1024)
#define L2_REPS 400

enum { PROBE, TQ2, BASE3, NFORMS };
static const char *NAMES[NFORMS] = {"probe", "tq2", "base3"};

static const tq_kernels *K;
static uint8_t *W2, *W3;
static int8_t *A;
static int32_t ASUM, *OUT;
static volatile uint64_t SINK;

/* One row of the base-3 GEMV: sum_i t_i a_i (codes, not weights: the caller subtracts sum(a)). */
static inline int32_t base3_row(const uint8_t *w, const int8_t *a) {
    const __m256i lo = _mm256_set1_epi8(85 - 128), hi = _mm256_set1_epi8(170 - 128), ones = _mm256_set1_epi16(1);
    __m256i s16 = _mm256_setzero_si256();
    for (int b = 0; b < NB3; b++) {
        if ((b & 1) == 0) _mm_prefetch((const char *)w + TQ_GEMV_PREFETCH_LEAD + b * 32, _MM_HINT_T0);
        __m256i x = _mm256_loadu_si256((const __m256i *)(w + b * 32));
        const int8_t *ab = a + b * B3;
        for (int k = 0; k < 5; k++) {
            const __m256i t = _mm256_abs_epi8(_mm256_add_epi8(_mm256_cmpgt_epi8(x, lo), _mm256_cmpgt_epi8(x, hi)));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(t, _mm256_loadu_si256((const __m256i *)(ab + 32 * k))));
            if (k < 4) x = _mm256_add_epi8(x, _mm256_add_epi8(x, x));
        }
    }
    /* a lane gains at most 5 pair sums of 2 x 2 x 128 per block: 16 blocks, 20480 < 32768 */
    const __m256i s = _mm256_madd_epi16(s16, ones);
    __m128i r = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0x4e));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0xb1));
    return _mm_cvtsi128_si32(r);
}

static void base3_gemv(const uint8_t *w, size_t rows, const int8_t *a, int32_t asum, int32_t *out) {
    for (size_t r = 0; r < rows; r++) out[r] = base3_row(w + r * NB3 * 32, a) - asum;
}

/* random ternary codes for one row, packed both ways */
static void pack_row(uint8_t *w2, uint8_t *w3, unsigned *seed) {
    uint8_t t[COLS];
    for (int i = 0; i < COLS; i++) t[i] = (uint8_t)(rand_r(seed) % 3);
    memset(w2, 0, NB2 * TQ_QK_BYTES);
    for (int b = 0; b < NB2; b++)
        for (int j = 0; j < 32; j++)
            for (int f = 0; f < 4; f++) w2[b * 32 + j] |= (uint8_t)(t[b * TQ_QK + 32 * f + j] << (6 - 2 * f));
    for (int b = 0; b < NB3; b++)
        for (int j = 0; j < 32; j++) {
            int v = 0;
            for (int k = 0; k < 5; k++) v = v * 3 + t[b * B3 + 32 * k + j];
            w3[b * 32 + j] = (uint8_t)(((v * 256 + 242) / 243) ^ 0x80);
        }
}

/* every base-3 byte decodes to its five digits */
static int check_digits(void) {
    for (int v = 0; v < 243; v++) {
        const int q = (v * 256 + 242) / 243;
        for (int k = 0, m = q, p = 81; k < 5; k++, m = (3 * m) & 255, p /= 3)
            if ((3 * m) >> 8 != (v / p) % 3) return 0;
    }
    return 1;
}

typedef struct {
    int form;
    size_t r0, r1;
    int l2;
} job;

static void run_form(int form, size_t r0, size_t r1, int l2) {
    if (l2) { /* one slice of L2_BYTES, L2_REPS times */
        const size_t rows2 = L2_BYTES / (NB2 * TQ_QK_BYTES), rows3 = L2_BYTES / (NB3 * 32);
        for (int i = 0; i < L2_REPS; i++) {
            if (form == TQ2)
                K->gemv(W2 + r0 * NB2 * TQ_QK_BYTES, (int)rows2, NB2, A, ASUM, OUT + r0);
            else
                base3_gemv(W3 + r0 * NB3 * 32, rows3, A, ASUM, OUT + r0);
        }
        return;
    }
    if (form == PROBE)
        SINK += micro_sum_words((const uint64_t *)(W2 + r0 * NB2 * TQ_QK_BYTES), (r1 - r0) * NB2 * TQ_QK_BYTES / 8);
    else if (form == TQ2)
        K->gemv(W2 + r0 * NB2 * TQ_QK_BYTES, (int)(r1 - r0), NB2, A, ASUM, OUT + r0);
    else
        base3_gemv(W3 + r0 * NB3 * 32, r1 - r0, A, ASUM, OUT + r0);
}

static void *thread_main(void *p) {
    const job *j = p;
    run_form(j->form, j->r0, j->r1, j->l2);
    return NULL;
}

/* seconds for one form over all rows (l2: over one slice per thread, repeated) on nth threads */
static double timed(int form, int nth, int l2) {
    pthread_t th;
    job j0 = {form, 0, nth == 2 ? ROWS / 2 : ROWS, l2}, j1 = {form, ROWS / 2, ROWS, l2};
    const double t0 = micro_now();
    if (nth == 2) pthread_create(&th, NULL, thread_main, &j1);
    run_form(j0.form, j0.r0, j0.r1, j0.l2);
    if (nth == 2) pthread_join(th, NULL);
    return micro_now() - t0;
}

int main(int argc, char **argv) {
    const int rounds = argc > 1 ? atoi(argv[1]) : 10;
    K = tq_kernels_avx2();
    if (!K || rounds < 1) {
        fprintf(stderr, "needs AVX2 (and ROUNDS >= 1)\n");
        return 2;
    }
    if (!check_digits()) {
        fprintf(stderr, "base-3 digit decoding is wrong\n");
        return 1;
    }
    W2 = micro_huge_alloc((size_t)ROWS * NB2 * TQ_QK_BYTES);
    W3 = micro_huge_alloc((size_t)ROWS * NB3 * 32);
    A = aligned_alloc(64, COLS);
    OUT = aligned_alloc(64, ROWS * sizeof(int32_t));
    int32_t *ref = malloc(4096 * sizeof(int32_t));
    if (!W2 || !W3 || !A || !OUT || !ref) return 1;
    unsigned seed = 1;
    ASUM = 0;
    for (int i = 0; i < COLS; i++) ASUM += A[i] = (int8_t)(rand_r(&seed) % 256 - 128);
    for (size_t r = 0; r < ROWS; r++) pack_row(W2 + r * NB2 * TQ_QK_BYTES, W3 + r * NB3 * 32, &seed);
    K->gemv(W2, 4096, NB2, A, ASUM, ref);
    base3_gemv(W3, 4096, A, ASUM, OUT);
    if (memcmp(ref, OUT, 4096 * sizeof(int32_t))) {
        fprintf(stderr, "the base-3 GEMV's sums differ from the engine's\n");
        return 1;
    }
    double *gw[2][NFORMS], *pct[2][NFORMS], l2gw[2][NFORMS] = {{0}};
    for (int t = 0; t < 2; t++)
        for (int f = 0; f < NFORMS; f++) {
            gw[t][f] = malloc(sizeof(double) * rounds);
            pct[t][f] = malloc(sizeof(double) * rounds);
        }
    printf("%d rounds, %d x %d ternary weights (%.0f MB as TQ, %.0f MB as base 3), AVX2\n", rounds, ROWS, COLS,
           ROWS * NB2 * 32.0 / 1e6, ROWS * NB3 * 32.0 / 1e6);
    for (int r = 0; r < rounds; r++) {
        for (int t = 0; t < 2; t++) {
            double s[NFORMS];
            for (int f = TQ2; f < NFORMS; f++) { /* compute-bound speed: the best over the rounds */
                const double w = (double)(t + 1) * L2_REPS * L2_BYTES * (f == TQ2 ? 4.0 : 5.0) / timed(f, t + 1, 1) * 1e-9;
                if (w > l2gw[t][f]) l2gw[t][f] = w;
            }
            for (int f = 0; f < NFORMS; f++) s[f] = timed(f, t + 1, 0);
            for (int f = 0; f < NFORMS; f++) {
                gw[t][f][r] = (double)ROWS * COLS / s[f] * 1e-9; /* the probe: the TQ bytes' weights */
                pct[t][f][r] = 100.0 * s[PROBE] / s[f];
            }
            printf("%s%d thread(s): probe %5.1f GB/s  tq2 %5.1f  base3 %5.1f G weights/s", t ? "  " : "", t + 1,
                   ROWS * NB2 * 32.0 / s[PROBE] * 1e-9, gw[t][TQ2][r], gw[t][BASE3][r]);
        }
        printf("\n");
    }
    for (int t = 0; t < 2; t++) {
        printf("median, %d thread(s), G weights/s (%% of the probe's time for the TQ bytes):", t + 1);
        for (int f = 0; f < NFORMS; f++) {
            qsort(gw[t][f], rounds, sizeof(double), micro_cmp_double);
            qsort(pct[t][f], rounds, sizeof(double), micro_cmp_double);
            printf("  %s %.1f (%.0f%%)", NAMES[f], gw[t][f][rounds / 2], pct[t][f][rounds / 2]);
        }
        printf("\n  in L2, best round: tq2 %.1f, base3 %.1f G weights/s\n", l2gw[t][TQ2], l2gw[t][BASE3]);
    }
    printf("(%llu)\n", (unsigned long long)SINK);
    return 0;
}
