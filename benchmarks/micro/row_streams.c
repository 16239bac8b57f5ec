/* Does the ternary GEMV lose bandwidth to its arithmetic or to the way it walks memory? The decode
 * GEMV (tq_avx512.c) reads four rows at once, 32 bytes from each in turn, with a linear software
 * prefetch ahead of the next four rows. This times, against a plain read loop (the probe), from
 * DRAM, 2 MiB pages:
 *
 * one matrix (2 threads, each one continuous half of a 537 MB, 6912-column matrix)
 *   engine    the engine's VNNI GEMV
 *   readpat   the same loads and prefetches with no arithmetic (xor of the 32-byte loads)
 *   readlin   the same bytes read linearly, 32-byte loads
 *   ilv       the engine's arithmetic on a layout with the four rows of a group interleaved per
 *             128-weight block: one linear stream, no software prefetch (the bytes are random, so
 *             only the speed means anything)
 *   one       the engine's layout and arithmetic with its rows read one after another (one linear
 *             stream, a software prefetch TQ_GEMV_PREFETCH_LEAD ahead, two sets of sums), the order
 *             the AVX2 GEMV took on the Zen 3 VM; checked against the engine's sums before timing
 *             (with -DRS_AVX2 it is the engine's GEMV itself, which reads that way: a noise gauge)
 * model (the 210 matrices of the 2B4T shape in layer order, 521 MB; each thread its half of each
 *        matrix in 64-row units, a spin barrier after each matrix as the engine's jobs have)
 *   engine, ilv, one  as above
 *   cont      each thread's halves stored one after another (one run of ~260 MB per thread)
 *   contilv   both
 *   readlin   each thread's half of each matrix read linearly with no arithmetic, the barriers kept:
 *             what a kernel that cost nothing would reach with the engine's structure
 * and at one thread: engine, ilv, readlin and one over the model.
 *
 * This VM's memory runs in two states at two threads (probe ~30-35 or ~50-60 GB/s); each sample
 * is tagged by its probe and the medians are printed per state. Build and run (x86-64 with
 * AVX-512 VNNI, Linux):
 *
 *   gcc -O3 -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c -Iengine/kernels \
 *       benchmarks/micro/row_streams.c engine/kernels/tq_avx512.c engine/kernels/tq_scalar.c \
 *       engine/kernels/cpu.c -lm -lpthread -o /tmp/row_streams && /tmp/row_streams [ROUNDS]
 *
 * With -DRS_AVX2 the same forms use the AVX2 table and an AVX2 interleaved GEMV (x86-64 with AVX2):
 *
 *   gcc -O3 -DRS_AVX2 -mavx2 -mfma -mf16c -Iengine/kernels benchmarks/micro/row_streams.c \
 *       engine/kernels/tq_avx2.c engine/kernels/tq_scalar.c engine/kernels/cpu.c -lm -lpthread \
 *       -o /tmp/row_streams_avx2 && /tmp/row_streams_avx2 [ROUNDS]                               */
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

#define NB 54 /* 128-weight blocks per row of the one-matrix forms (6912 columns) */
#define FAST_GBS 45.0
#if !defined(RS_AVX2)
#define VNNI __attribute__((target("avx512vnni,avx512f,avx512bw")))
#endif

enum { PROBE, ENGINE, READPAT, READLIN, ILV, ONE, M_ENGINE, M_ILV, M_CONT, M_CONTILV, M_READLIN, M_ONE, NFORMS };
static const char *NAMES[NFORMS] = {"probe",    "engine", "readpat", "readlin",   "ilv",       "one",
                                    "m.engine", "m.ilv",  "m.cont",  "m.contilv", "m.readlin", "m.one"};

static const tq_kernels *K;
static uint8_t *W;
static int8_t *A;
static int32_t *OUT;
static size_t BYTES, ROWS;
static volatile uint64_t SINK;
static int FORM, NTH;
static int NMAT, MR[210], MNB[210];
static size_t MOFF[210], MOFF_T[210][2];
static long BAR;

static void read_pattern(const uint8_t *w, size_t rows) {
    const size_t stride = NB * TQ_QK_BYTES;
    __m256i acc = _mm256_setzero_si256();
    for (size_t r = 0; r + 4 <= rows; r += 4, w += 4 * stride)
        for (int b = 0; b < NB; b++) {
            const char *pf = (const char *)w + 4 * stride + TQ_GEMV_PREFETCH_LEAD + (size_t)b * 128;
            _mm_prefetch(pf, _MM_HINT_T0);
            _mm_prefetch(pf + 64, _MM_HINT_T0);
            for (int i = 0; i < 4; i++)
                acc = _mm256_xor_si256(acc, _mm256_loadu_si256((const __m256i *)(w + i * stride + b * 32)));
        }
    uint64_t t[4];
    _mm256_storeu_si256((__m256i *)t, acc);
    SINK += t[0];
}

static void read_linear(const uint8_t *w, size_t n) { SINK += micro_read_lines(w, n); }

#if defined(RS_AVX2)
/* The engine's AVX2 arithmetic (one shift per block, tq_avx2.c) on the interleaved layout: block b
 * of the group's rows 0..3 at w + b * 128 + i * 32. Unlike the VNNI form it keeps a linear software
 * prefetch TQ_GEMV_PREFETCH_LEAD ahead (on the Zen 3 VM, without it: 72-77% of the probe). */
static void gemv_interleaved(const uint8_t *w, size_t rows, int nb, const int8_t *a, int32_t *out) {
    const __m256i m3 = _mm256_set1_epi8(3), m12 = _mm256_set1_epi8(12), ones = _mm256_set1_epi16(1);
    for (size_t r = 0; r + 4 <= rows; r += 4) {
        const uint8_t *p = w + r * (size_t)nb * TQ_QK_BYTES;
        __m256i acc[4];
        for (int i = 0; i < 4; i++) acc[i] = _mm256_setzero_si256();
        for (int b0 = 0; b0 < nb; b0 += 8) { /* 4 x codes in int16: 8 blocks, as tq_avx2.c */
            const int b1 = nb - b0 > 8 ? b0 + 8 : nb;
            __m256i lo[4], hi[4];
            for (int i = 0; i < 4; i++) lo[i] = hi[i] = _mm256_setzero_si256();
            for (int b = b0; b < b1; b++) {
                const int8_t *ab = a + (size_t)b * TQ_QK;
                const char *pf = (const char *)p + (size_t)b * 128 + TQ_GEMV_PREFETCH_LEAD;
                _mm_prefetch(pf, _MM_HINT_T0);
                _mm_prefetch(pf + 64, _MM_HINT_T0);
                for (int i = 0; i < 4; i++) {
                    const __m256i q = _mm256_loadu_si256((const __m256i *)(p + (size_t)b * 128 + 32 * i));
                    const __m256i q4 = _mm256_srli_epi16(q, 4);
                    hi[i] = _mm256_add_epi16(hi[i], _mm256_maddubs_epi16(_mm256_and_si256(q4, m12), _mm256_loadu_si256((const __m256i *)ab)));
                    lo[i] = _mm256_add_epi16(lo[i], _mm256_maddubs_epi16(_mm256_and_si256(q4, m3), _mm256_loadu_si256((const __m256i *)(ab + 32))));
                    hi[i] = _mm256_add_epi16(hi[i], _mm256_maddubs_epi16(_mm256_and_si256(q, m12), _mm256_loadu_si256((const __m256i *)(ab + 64))));
                    lo[i] = _mm256_add_epi16(lo[i], _mm256_maddubs_epi16(_mm256_and_si256(q, m3), _mm256_loadu_si256((const __m256i *)(ab + 96))));
                    __asm__("" : "+x"(lo[i]), "+x"(hi[i]));
                }
            }
            for (int i = 0; i < 4; i++)
                acc[i] = _mm256_add_epi32(acc[i], _mm256_add_epi32(_mm256_madd_epi16(lo[i], ones),
                                                                   _mm256_srai_epi32(_mm256_madd_epi16(hi[i], ones), 2)));
        }
        for (int i = 0; i < 4; i++) {
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(acc[i]), _mm256_extracti128_si256(acc[i], 1));
            t = _mm_hadd_epi32(t, t);
            out[r + i] = _mm_cvtsi128_si32(_mm_hadd_epi32(t, t));
        }
    }
}
#else
/* The engine's VNNI GEMV constants (tq_avx512.c): the field masks and the shifts that undo them */
VNNI static inline void vnni_consts(__m512i *m01, __m512i *m23, __m512i *sh01, __m512i *sh23) {
    *m01 = _mm512_inserti64x4(_mm512_set1_epi8((char)0xc0), _mm256_set1_epi8(0x30), 1);
    *m23 = _mm512_inserti64x4(_mm512_set1_epi8(0x0c), _mm256_set1_epi8(0x03), 1);
    *sh01 = _mm512_inserti64x4(_mm512_set1_epi32(6), _mm256_set1_epi32(4), 1);
    *sh23 = _mm512_inserti64x4(_mm512_set1_epi32(2), _mm256_set1_epi32(0), 1);
}

/* The engine's VNNI arithmetic (masked fields, tq_avx512.c) on the interleaved layout: block b of
 * the group's rows 0..3 at w + b * 128 + i * 32. */
VNNI static void gemv_interleaved(const uint8_t *w, size_t rows, int nb, const int8_t *a, int32_t *out) {
    __m512i m01, m23, sh01, sh23;
    vnni_consts(&m01, &m23, &sh01, &sh23);
    for (size_t r = 0; r + 4 <= rows; r += 4, w += (size_t)4 * nb * TQ_QK_BYTES) {
        __m512i s01[4], s23[4];
        for (int i = 0; i < 4; i++) s01[i] = s23[i] = _mm512_setzero_si512();
        for (int b = 0; b < nb; b++) {
            const __m512i x01 = _mm512_loadu_si512(a + (size_t)b * 128);
            const __m512i x23 = _mm512_loadu_si512(a + (size_t)b * 128 + 64);
            const uint8_t *p = w + (size_t)b * 128;
            for (int i = 0; i < 4; i++) {
                const __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p + 32 * i)));
                s01[i] = _mm512_dpbusd_epi32(s01[i], _mm512_and_si512(q, m01), x01);
                s23[i] = _mm512_dpbusd_epi32(s23[i], _mm512_and_si512(q, m23), x23);
            }
        }
        for (int i = 0; i < 4; i++)
            out[r + i] = _mm512_reduce_add_epi32(
                _mm512_add_epi32(_mm512_srav_epi32(s01[i], sh01), _mm512_srav_epi32(s23[i], sh23)));
    }
}
#endif

#if defined(RS_AVX2)
static void gemv_one(const uint8_t *w, size_t rows, int nb, const int8_t *a, int32_t *out) {
    K->gemv(w, (int)rows, nb, a, 0, out);
}
#else
/* The engine's VNNI arithmetic, its rows one after another; blocks alternate between two sets of
 * sums so that no vpdpbusd waits on the previous one's result. */
VNNI static void gemv_one(const uint8_t *w, size_t rows, int nb, const int8_t *a, int32_t *out) {
    __m512i m01, m23, sh01, sh23;
    vnni_consts(&m01, &m23, &sh01, &sh23);
    for (size_t r = 0; r < rows; r++, w += (size_t)nb * TQ_QK_BYTES) {
        __m512i s01[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()}, s23[2] = {s01[0], s01[0]};
        for (int b = 0; b < nb; b++) {
            if (!(b & 1)) _mm_prefetch((const char *)w + TQ_GEMV_PREFETCH_LEAD + (size_t)b * TQ_QK_BYTES, _MM_HINT_T0);
            const __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + (size_t)b * TQ_QK_BYTES)));
            s01[b & 1] = _mm512_dpbusd_epi32(s01[b & 1], _mm512_and_si512(q, m01), _mm512_loadu_si512(a + (size_t)b * 128));
            s23[b & 1] = _mm512_dpbusd_epi32(s23[b & 1], _mm512_and_si512(q, m23), _mm512_loadu_si512(a + (size_t)b * 128 + 64));
        }
        out[r] = _mm512_reduce_add_epi32(
            _mm512_add_epi32(_mm512_srav_epi32(_mm512_add_epi32(s01[0], s01[1]), sh01),
                             _mm512_srav_epi32(_mm512_add_epi32(s23[0], s23[1]), sh23)));
    }
}
#endif

static void barrier(long *gen) {
    const long g = ++*gen;
    __atomic_fetch_add(&BAR, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&BAR, __ATOMIC_SEQ_CST) < g * NTH) _mm_pause();
}

static void run_model(int ith) {
    long gen = 0;
    for (int m = 0; m < NMAT; m++) {
        const long units = (MR[m] + 63) / 64, beg = units * ith / NTH, end = units * (ith + 1) / NTH;
        const int r0 = (int)beg * 64, r1 = (int)end * 64 < MR[m] ? (int)end * 64 : MR[m];
        const int cont = FORM == M_CONT || FORM == M_CONTILV;
        const uint8_t *w = cont ? W + MOFF_T[m][ith] : W + MOFF[m] + (size_t)r0 * MNB[m] * TQ_QK_BYTES;
        if (FORM == M_ENGINE || FORM == M_CONT)
            K->gemv(w, r1 - r0, MNB[m], A, 0, OUT + r0);
        else if (FORM == M_READLIN)
            read_linear(w, (size_t)(r1 - r0) * MNB[m] * TQ_QK_BYTES);
        else if (FORM == M_ONE)
            gemv_one(w, (size_t)(r1 - r0), MNB[m], A, OUT + r0);
        else
            gemv_interleaved(w, (size_t)(r1 - r0), MNB[m], A, OUT + r0);
        if (NTH > 1) barrier(&gen);
    }
}

static void *thread_main(void *arg) {
    const int ith = (int)(size_t)arg;
    if (FORM >= M_ENGINE) {
        run_model(ith);
        return NULL;
    }
    const size_t r0 = ROWS / (4 * (size_t)NTH) * 4 * ith, r1 = ROWS / (4 * (size_t)NTH) * 4 * (ith + 1);
    const uint8_t *w = W + r0 * NB * TQ_QK_BYTES;
    const size_t n = (r1 - r0) * NB * TQ_QK_BYTES;
    switch (FORM) {
    case PROBE: SINK += micro_sum_words((const uint64_t *)w, n / 8); break;
    case ENGINE: K->gemv(w, (int)(r1 - r0), NB, A, 0, OUT + r0); break;
    case READPAT: read_pattern(w, r1 - r0); break;
    case READLIN: read_linear(w, n); break;
    case ONE: gemv_one(w, r1 - r0, NB, A, OUT + r0); break;
    default: gemv_interleaved(w, r1 - r0, NB, A, OUT + r0); break;
    }
    return NULL;
}

/* GB/s of one form at nth threads (the model forms read the model's bytes, the others BYTES) */
static double run(int form, int nth, size_t model_bytes) {
    FORM = form;
    NTH = nth;
    BAR = 0;
    pthread_t th[2];
    const double t0 = micro_now();
    for (int i = 1; i < nth; i++) pthread_create(&th[i], NULL, thread_main, (void *)(size_t)i);
    thread_main((void *)0);
    for (int i = 1; i < nth; i++) pthread_join(th[i], NULL);
    return (form >= M_ENGINE ? model_bytes : BYTES) / (micro_now() - t0) / 1e9;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, micro_cmp_double);
    return n ? (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2) : 0;
}

int main(int argc, char **argv) {
#if defined(RS_AVX2)
    K = tq_kernels_avx2();
    if (!K || strcmp(K->isa, "avx2") != 0) {
        fprintf(stderr, "row_streams: needs AVX2 (TRIT_NO_VNNI=1 on an AVX-VNNI CPU)\n");
        return 2;
    }
#else
    K = tq_kernels_avx512();
    if (!K || strcmp(K->isa, "avx512vnni") != 0) {
        fprintf(stderr, "row_streams: needs AVX-512 VNNI\n");
        return 2;
    }
#endif
    const int rounds = argc > 1 ? atoi(argv[1]) : 40;
    ROWS = ((size_t)512 << 20) / (NB * TQ_QK_BYTES) / 8 * 8;
    BYTES = ROWS * NB * TQ_QK_BYTES;
    W = micro_huge_alloc(BYTES);
    A = aligned_alloc(64, NB * TQ_QK);
    OUT = aligned_alloc(64, ROWS * sizeof(int32_t) + 64);
    if (!W || !A || !OUT) return 1;
    for (size_t i = 0; i < BYTES; i++) W[i] = (uint8_t)((i * 2654435761u >> 13) & 0xAA); /* codes 0 and 2 */
    for (int i = 0; i < NB * TQ_QK; i++) A[i] = (int8_t)(i * 7);
    K->gemv(W, 4096, NB, A, 0, OUT);
    gemv_one(W, 4096, NB, A, OUT + 4096);
    if (memcmp(OUT, OUT + 4096, 4096 * sizeof(int32_t)) != 0) {
        fprintf(stderr, "row_streams: the one-stream GEMV's sums differ from the engine's\n");
        return 1;
    }

    /* the model: 30 x (q, k, v, o, gate, up, down), rows and 128-blocks per row */
    const int shapes[7][2] = {{2560, 20}, {640, 20}, {640, 20}, {2560, 20}, {6912, 20}, {6912, 20}, {2560, 54}};
    size_t off = 0;
    for (int l = 0; l < 30; l++)
        for (int j = 0; j < 7; j++, NMAT++) {
            MR[NMAT] = shapes[j][0];
            MNB[NMAT] = shapes[j][1];
            MOFF[NMAT] = off;
            off += (size_t)shapes[j][0] * shapes[j][1] * TQ_QK_BYTES;
        }
    const size_t model_bytes = off;
    const size_t huge = (size_t)2 << 20;
    size_t tail[2] = {0, (model_bytes / 2 + huge - 1) / huge * huge}; /* thread 1's run starts here */
    for (int m = 0; m < NMAT; m++)
        for (int t = 0; t < 2; t++) {
            const long units = (MR[m] + 63) / 64, beg = units * t / 2, end = units * (t + 1) / 2;
            const int r0 = (int)beg * 64, r1 = (int)end * 64 < MR[m] ? (int)end * 64 : MR[m];
            MOFF_T[m][t] = tail[t];
            tail[t] += (size_t)(r1 - r0) * MNB[m] * TQ_QK_BYTES;
        }
    if (tail[1] > BYTES) return 1;

    double *pct[2][NFORMS], *one[4];
    int n[2] = {0, 0};
    for (int s = 0; s < 2; s++) {
        for (int f = 0; f < NFORMS; f++) pct[s][f] = malloc(sizeof(double) * (size_t)rounds);
    }
    for (int f = 0; f < 4; f++) one[f] = malloc(sizeof(double) * (size_t)rounds);
    printf("%d rounds; %% of the mean of the probes taken before and after each round\n", rounds);
    for (int r = 0; r < rounds; r++) {
        double gbs[NFORMS];
        const double p0 = run(PROBE, 2, 0);
        for (int f = ENGINE; f < NFORMS; f++) gbs[f] = run(f, 2, model_bytes);
        const double p1 = run(PROBE, 2, 0), probe = (p0 + p1) / 2;
        const int fast = probe > FAST_GBS;
        printf("%s probe %5.1f/%5.1f", fast ? "FAST" : "slow", p0, p1);
        for (int f = ENGINE; f < NFORMS; f++) {
            pct[fast][f][n[fast]] = 100 * gbs[f] / probe;
            printf(" %s %3.0f%%", NAMES[f], 100 * gbs[f] / probe);
        }
        n[fast]++;
        /* one thread, model: engine and interleaved against a one-thread probe */
        const double t0 = micro_now();
        SINK += micro_sum_words((const uint64_t *)W, BYTES / 8);
        const double p1t = BYTES / (micro_now() - t0) / 1e9;
        one[0][r] = 100 * run(M_ENGINE, 1, model_bytes) / p1t;
        one[1][r] = 100 * run(M_ILV, 1, model_bytes) / p1t;
        one[2][r] = 100 * run(M_READLIN, 1, model_bytes) / p1t;
        one[3][r] = 100 * run(M_ONE, 1, model_bytes) / p1t;
        printf(" | 1 thread probe %5.1f m.engine %3.0f%% m.ilv %3.0f%% m.readlin %3.0f%% m.one %3.0f%%\n", p1t,
               one[0][r], one[1][r], one[2][r], one[3][r]);
        fflush(stdout);
    }
    for (int s = 1; s >= 0; s--) {
        printf("median, %s state (%d rounds):", s ? "fast" : "slow", n[s]);
        for (int f = ENGINE; f < NFORMS; f++) printf(" %s %.1f%%", NAMES[f], median(pct[s][f], n[s]));
        printf("\n");
    }
    printf("median, one thread (%d rounds): m.engine %.1f%% m.ilv %.1f%% m.readlin %.1f%% m.one %.1f%%\n", rounds,
           median(one[0], rounds), median(one[1], rounds), median(one[2], rounds), median(one[3], rounds));
    return SINK == 42; /* keeps the reads */
}
