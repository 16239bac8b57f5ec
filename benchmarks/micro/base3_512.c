/* Base-3 packing (five ternary weights per byte, 1.6 bits per weight) on AVX-512 VBMI + VNNI: does
 * its decoding stay under the memory time where the 2-bit layout's arithmetic already costs the
 * stream a tenth of its speed? (base3_gemv.c answered no for AVX2: its decode by compares was the
 * limit.) Here a byte is decoded by table lookups (vpermi2b: 128 entries from two registers):
 *
 *   the engine's B3 layout (tq.h): a block of 320 weights is 64 bytes; byte j holds weights j + 64 k
 *   (k = 0..4) as the base-3 number v = sum_k t_k 3^k of their codes t = w + 1 (0..242), stored as v
 *   when v <= 121 and as 0x80 | (242 - v) above (negated weights). A lookup of the low 7 bits gives
 *   A = t_0 | t_1 << 2 | t_2 << 4 | t_3 << 6, another B = t_4, each taken back to 0xaa - A / 2 - B
 *   by one masked byte subtraction where the top bit is set (vpmovb2m); four AND split A into its
 *   fields, five vpdpbusd against a[64 k .. 64 k + 63] sum them (fields k scaled by 4^k, shifted
 *   back out exactly at the end). Per 64 bytes: 5 decode + 4 AND + 5 vpdpbusd = 14 instructions
 *   (and a register copy: vpermi2b overwrites an operand) for 320 weights, against the engine's
 *   2-bit GEMV's 4 AND + 4 vpdpbusd for 256.
 *
 * Timed, weights per second, 2560 columns (the 2B4T q/k/v/o/gate/up inputs; -DCOLS=6912: the down
 * projection's, its B3 rows padded to 7040), one thread and two (each a continuous half),
 * alternating in every round:
 *
 *   probe   trit.bench's bandwidth probe (micro_probe_read, with and without its 4 KiB lead, the
 *           faster) over the 2-bit matrix's bytes: those weights at a plain read's speed
 *   tq2     the engine's AVX-512 VNNI GEMV (tq_kernels_avx512(), the prefetch form it picks for this
 *           CPU) over the 2-bit matrix from DRAM
 *   b3.R    this file's B3 GEMV, R rows at a time sharing the activation loads, a prefetch into L2
 *           4 KiB ahead (the engine's far form)
 *   e.b3    the engine's B3 GEMV (tq_kernels.b3_gemv: two rows at a time)
 * and each GEMV over a 128 KiB slice read again and again (held in L2: its arithmetic alone; the
 * best round). Before timing, every B3 GEMV's sums are checked against the TQ GEMV's.
 *
 * Build and run (x86-64 Linux; runs on CPUs with AVX-512 VBMI and VNNI):
 *
 *   gcc -O3 -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c -Iengine/kernels \
 *       benchmarks/micro/base3_512.c engine/kernels/tq_avx512.c engine/kernels/tq_scalar.c \
 *       engine/kernels/cpu.c -lm -lpthread -o /tmp/base3_512 && /tmp/base3_512 [ROUNDS]          */
#define _DEFAULT_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "micro.h"
#include "tq.h"

#define B3_TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vnni"), always_inline)) static inline
#define B3_FN __attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vnni"))) static

#ifndef COLS /* -DCOLS=6912: the down projection's inputs */
#define COLS 2560
#endif
#define NB2 (COLS / TQ_QK)     /* 20 blocks of 32 bytes */
#define B3 320                 /* weights per base-3 block (64 bytes) */
#define NB3 ((COLS + B3 - 1) / B3) /* 8 (22 for 6912: the rows padded with zero weights to 7040) */
#define ROW2 (NB2 * TQ_QK_BYTES) /* 640 bytes */
#define ROW3 (NB3 * 64)        /* 512 bytes */
#define ROWS (262144000 / ROW2 / 4 * 4) /* 262 MB as TQ, 210 MB as base 3 */
#define LEAD 4096
#define L2_BYTES (128 * 1024)
#define L2_REPS 400

enum { PROBE, TQ2, B3R1, B3R2, B3R4, EB3, NFORMS };
static const char *NAMES[NFORMS] = {"probe", "tq2", "b3.1", "b3.2", "b3.4", "e.b3"};

static const tq_kernels *K;
static uint8_t *W2, *W3;
static int8_t *A;
static int32_t ASUM, *OUT;
static uint8_t TA[128], TB[128]; /* the lookup tables: A and B of a byte's low 7 bits */
static volatile uint64_t SINK;

/* The byte's codes as the lookups give them: the table entry of m = the byte's low 7 bits, taken
 * back to 2 - t for every code when the byte's top bit says its weights were negated */
B3_TARGET void b3_decode(__m512i v, __m512i ta0, __m512i ta1, __m512i tb0, __m512i tb1, __m512i *fa, __m512i *fb) {
    const __mmask64 neg = _mm512_movepi8_mask(v);
    *fa = _mm512_mask_sub_epi8(_mm512_permutex2var_epi8(ta0, v, ta1), neg, _mm512_set1_epi8((char)0xaa),
                               _mm512_permutex2var_epi8(ta0, v, ta1));
    *fb = _mm512_mask_sub_epi8(_mm512_permutex2var_epi8(tb0, v, tb1), neg, _mm512_set1_epi8(2),
                               _mm512_permutex2var_epi8(tb0, v, tb1));
}

/* R rows of the base-3 GEMV (rows `stride` bytes apart): out[r] = sum_i t_i a_i - asum */
B3_TARGET void b3_rows(const uint8_t *w, size_t stride, const int8_t *a, int32_t asum, int32_t *out, const int R) {
    const __m512i ta0 = _mm512_loadu_si512(TA), ta1 = _mm512_loadu_si512(TA + 64);
    const __m512i tb0 = _mm512_loadu_si512(TB), tb1 = _mm512_loadu_si512(TB + 64);
    const __m512i m0 = _mm512_set1_epi8(0x03), m1 = _mm512_set1_epi8(0x0c);
    const __m512i m2 = _mm512_set1_epi8(0x30), m3 = _mm512_set1_epi8((char)0xc0);
    __m512i s[4][5];
    for (int r = 0; r < R; r++)
        for (int k = 0; k < 5; k++) s[r][k] = _mm512_setzero_si512();
    for (int b = 0; b < NB3; b++) {
        const char *pf = (const char *)w + R * stride + LEAD + (size_t)b * R * 64;
        for (int r = 0; r < R; r++) _mm_prefetch(pf + 64 * r, _MM_HINT_T1);
        const int8_t *ab = a + b * B3;
        for (int r = 0; r < R; r++) {
            __m512i fa, fb;
            b3_decode(_mm512_loadu_si512(w + r * stride + b * 64), ta0, ta1, tb0, tb1, &fa, &fb);
            s[r][0] = _mm512_dpbusd_epi32(s[r][0], _mm512_and_si512(fa, m0), _mm512_loadu_si512(ab));
            s[r][1] = _mm512_dpbusd_epi32(s[r][1], _mm512_and_si512(fa, m1), _mm512_loadu_si512(ab + 64));
            s[r][2] = _mm512_dpbusd_epi32(s[r][2], _mm512_and_si512(fa, m2), _mm512_loadu_si512(ab + 128));
            s[r][3] = _mm512_dpbusd_epi32(s[r][3], _mm512_and_si512(fa, m3), _mm512_loadu_si512(ab + 192));
            s[r][4] = _mm512_dpbusd_epi32(s[r][4], fb, _mm512_loadu_si512(ab + 256));
        }
    }
    for (int r = 0; r < R; r++) {
        /* field k's sums are exactly 4^k times the codes' sums: an arithmetic shift takes it back */
        const __m512i t = _mm512_add_epi32(
            _mm512_add_epi32(_mm512_add_epi32(s[r][0], _mm512_srai_epi32(s[r][1], 2)),
                             _mm512_add_epi32(_mm512_srai_epi32(s[r][2], 4), _mm512_srai_epi32(s[r][3], 6))),
            s[r][4]);
        out[r] = _mm512_reduce_add_epi32(t) - asum;
    }
}

B3_FN void b3_gemv1(const uint8_t *w, size_t rows, const int8_t *a, int32_t asum, int32_t *out) {
    for (size_t r = 0; r < rows; r++) b3_rows(w + r * ROW3, ROW3, a, asum, out + r, 1);
}
B3_FN void b3_gemv2(const uint8_t *w, size_t rows, const int8_t *a, int32_t asum, int32_t *out) {
    for (size_t r = 0; r < rows; r += 2) b3_rows(w + r * ROW3, ROW3, a, asum, out + r, 2);
}
B3_FN void b3_gemv4(const uint8_t *w, size_t rows, const int8_t *a, int32_t asum, int32_t *out) {
    for (size_t r = 0; r < rows; r += 4) b3_rows(w + r * ROW3, ROW3, a, asum, out + r, 4);
}
typedef void (*b3_fn)(const uint8_t *, size_t, const int8_t *, int32_t, int32_t *);
static const b3_fn B3FNS[3] = {b3_gemv1, b3_gemv2, b3_gemv4};

/* base 3 of five codes, v = sum_k t_k 3^k (0..242); negating the weights (t -> 2 - t) takes v to
 * 242 - v, so a byte stores the smaller of the two (m <= 121) and, in its top bit, which it was */
static uint8_t b3_byte(int v) { return (uint8_t)(v <= 121 ? v : 0x80 | (242 - v)); }

static void make_tables(void) { /* A and B of m, m = 0..121 (and zeros up to 127) */
    memset(TA, 0, sizeof TA);
    memset(TB, 0, sizeof TB);
    for (int v = 0; v <= 121; v++) {
        int d[5];
        for (int k = 0, x = v; k < 5; k++, x /= 3) d[k] = x % 3;
        TA[v] = (uint8_t)(d[0] | d[1] << 2 | d[2] << 4 | d[3] << 6);
        TB[v] = (uint8_t)d[4];
    }
}

/* random ternary codes for one row, packed both ways */
static void pack_row(uint8_t *w2, uint8_t *w3, unsigned *seed) {
    uint8_t t[NB3 * B3];
    for (int i = 0; i < NB3 * B3; i++) t[i] = i < COLS ? (uint8_t)(rand_r(seed) % 3) : 1; /* padding: w = 0 */
    memset(w2, 0, ROW2);
    for (int b = 0; b < NB2; b++) /* tq.h: byte j holds values j, j+32, j+64, j+96 in bits 7-6 .. 1-0 */
        for (int j = 0; j < 32; j++)
            for (int f = 0; f < 4; f++) w2[b * 32 + j] |= (uint8_t)(t[b * TQ_QK + 32 * f + j] << (6 - 2 * f));
    for (int b = 0; b < NB3; b++)
        for (int j = 0; j < 64; j++) {
            int v = 0;
            for (int k = 4; k >= 0; k--) v = v * 3 + t[b * B3 + 64 * k + j];
            w3[b * 64 + j] = b3_byte(v);
        }
}

static void run_form(int form, size_t r0, size_t r1, int l2, size_t lead) {
    if (l2) { /* one slice of L2_BYTES, L2_REPS times */
        const size_t rows2 = L2_BYTES / ROW2 / 4 * 4, rows3 = L2_BYTES / ROW3 / 4 * 4;
        for (int i = 0; i < L2_REPS; i++) {
            if (form == TQ2)
                K->gemv(W2 + r0 * ROW2, (int)rows2, NB2, A, ASUM, OUT + r0);
            else if (form == EB3)
                K->b3_gemv(W3 + r0 * ROW3, (int)rows3, NB3, A, ASUM, OUT + r0);
            else
                B3FNS[form - B3R1](W3 + r0 * ROW3, rows3, A, ASUM, OUT + r0);
        }
        return;
    }
    if (form == PROBE) {
        const uint64_t *p = (const uint64_t *)(W2 + r0 * ROW2);
        const size_t n = (r1 - r0) * ROW2 / 8;
        SINK += micro_probe_read(p, n, lead);
    } else if (form == TQ2) {
        K->gemv(W2 + r0 * ROW2, (int)(r1 - r0), NB2, A, ASUM, OUT + r0);
    } else if (form == EB3) {
        K->b3_gemv(W3 + r0 * ROW3, (int)(r1 - r0), NB3, A, ASUM, OUT + r0);
    } else {
        B3FNS[form - B3R1](W3 + r0 * ROW3, r1 - r0, A, ASUM, OUT + r0);
    }
}

typedef struct {
    int form;
    size_t r0, r1;
    int l2;
    size_t lead;
} job;

static void *thread_main(void *p) {
    const job *j = p;
    run_form(j->form, j->r0, j->r1, j->l2, j->lead);
    return NULL;
}

/* seconds for one form over all rows (l2: over one slice per thread, repeated) on nth threads;
 * lead: the probe's prefetch distance */
static double timed(int form, int nth, int l2, size_t lead) {
    pthread_t th;
    job j0 = {form, 0, nth == 2 ? ROWS / 2 : ROWS, l2, lead}, j1 = {form, ROWS / 2, ROWS, l2, lead};
    const double t0 = micro_now();
    if (nth == 2) pthread_create(&th, NULL, thread_main, &j1);
    run_form(j0.form, j0.r0, j0.r1, j0.l2, j0.lead);
    if (nth == 2) pthread_join(th, NULL);
    return micro_now() - t0;
}

int main(int argc, char **argv) {
    const int rounds = argc > 1 ? atoi(argv[1]) : 10;
    K = tq_kernels_avx512();
    if (!K || strcmp(K->isa, "avx512vnni") != 0 || !__builtin_cpu_supports("avx512vbmi") || rounds < 1) {
        fprintf(stderr, "needs AVX-512 VNNI and VBMI (and ROUNDS >= 1)\n");
        return 2;
    }
    make_tables();
    W2 = micro_huge_alloc((size_t)ROWS * ROW2);
    W3 = micro_huge_alloc((size_t)ROWS * ROW3);
    A = aligned_alloc(64, NB3 * B3);
    OUT = aligned_alloc(64, ROWS * sizeof(int32_t));
    int32_t *ref = malloc(4096 * sizeof(int32_t));
    if (!W2 || !W3 || !A || !OUT || !ref) return 1;
    unsigned seed = 1;
    ASUM = 0;
    memset(A, 0, NB3 * B3);
    for (int i = 0; i < COLS; i++) ASUM += A[i] = (int8_t)(rand_r(&seed) % 256 - 128);
    for (size_t r = 0; r < ROWS; r++) pack_row(W2 + r * ROW2, W3 + r * ROW3, &seed);
    K->gemv(W2, 4096, NB2, A, ASUM, ref);
    for (int f = 0; f < 4; f++) {
        memset(OUT, 0, 4096 * sizeof(int32_t));
        if (f < 3)
            B3FNS[f](W3, 4096, A, ASUM, OUT);
        else
            K->b3_gemv(W3, 4096, NB3, A, ASUM, OUT);
        if (memcmp(ref, OUT, 4096 * sizeof(int32_t))) {
            fprintf(stderr, "the base-3 GEMV's sums (%s) differ from the engine's\n", NAMES[B3R1 + f]);
            return 1;
        }
    }
    double *gw[2][NFORMS], l2gw[2][NFORMS] = {{0}};
    for (int t = 0; t < 2; t++)
        for (int f = 0; f < NFORMS; f++) gw[t][f] = malloc(sizeof(double) * rounds);
    printf("%d rounds, %d x %d ternary weights (%.0f MB as TQ, %.0f MB as base 3), AVX-512 VNNI + VBMI\n", rounds,
           ROWS, COLS, ROWS * (double)ROW2 / 1e6, ROWS * (double)ROW3 / 1e6);
    for (int r = 0; r < rounds; r++) {
        for (int t = 0; t < 2; t++) {
            for (int f = TQ2; f < NFORMS; f++) { /* compute-bound speed: the best over the rounds */
                const double wps = (double)(t + 1) * L2_REPS * (f == TQ2 ? L2_BYTES / ROW2 / 4 * 4 : L2_BYTES / ROW3 / 4 * 4) *
                                   COLS / timed(f, t + 1, 1, 0) * 1e-9;
                if (wps > l2gw[t][f]) l2gw[t][f] = wps;
            }
            double s[NFORMS];
            const double p0 = timed(PROBE, t + 1, 0, 0), p1 = timed(PROBE, t + 1, 0, LEAD);
            s[PROBE] = p0 < p1 ? p0 : p1;
            for (int f = TQ2; f < NFORMS; f++) s[f] = timed(f, t + 1, 0, 0);
            printf("%s%dt: probe %5.1f GB/s", t ? "  " : "", t + 1, ROWS * (double)ROW2 / s[PROBE] * 1e-9);
            for (int f = 0; f < NFORMS; f++) {
                gw[t][f][r] = (double)ROWS * COLS / s[f] * 1e-9;
                if (f) printf(" %s %4.1f", NAMES[f], gw[t][f][r]);
            }
        }
        printf("  (G weights/s)\n");
        fflush(stdout);
    }
    for (int t = 0; t < 2; t++) {
        printf("median, %d thread(s), G weights/s (x the probe's):", t + 1);
        for (int f = 0; f < NFORMS; f++) {
            qsort(gw[t][f], rounds, sizeof(double), micro_cmp_double);
            printf("  %s %.1f (%.2f)", NAMES[f], gw[t][f][rounds / 2], gw[t][f][rounds / 2] / gw[t][PROBE][rounds / 2]);
        }
        printf("\n  in L2, best round, G weights/s:");
        for (int f = TQ2; f < NFORMS; f++) printf("  %s %.1f", NAMES[f], l2gw[t][f]);
        printf("\n");
    }
    printf("(%llu)\n", (unsigned long long)SINK);
    return 0;
}
