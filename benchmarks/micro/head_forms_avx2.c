/* Forms of the AVX2 f16 head GEMV (128256 x 2560, the 2B4T tied head) from DRAM, one thread, 2 MiB
 * pages, each against a plain read of the same bytes in the same round; medians over the rounds.
 * The first row is the engine's kernel itself (tq_kernels_avx2()->f16_gemv), the others are
 * variants written here. Build and run from the repository root on any x86-64 with AVX2 (Linux):
 *
 *   gcc -O3 -mavx2 -mfma -mf16c -Iengine/kernels -Ibenchmarks/micro benchmarks/micro/head_forms_avx2.c \
 *       engine/kernels/tq_avx2.c engine/kernels/tq_scalar.c engine/kernels/cpu.c -o /tmp/head_forms_avx2 -lm
 *   /tmp/head_forms_avx2 [ROUNDS]
 */
#define _DEFAULT_SOURCE
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "micro.h"
#include "tq.h"

#define ROWS 128256
#define COLS 2560

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* chains: 2 or 4 FMA chains per row; lead: T0 prefetch distance in bytes (0: none) */
static inline __attribute__((always_inline)) void form(const uint16_t *w, const float *x, float *out, const int chains,
                                                       const size_t lead) {
    for (int r = 0; r < ROWS; r++, w += COLS) {
        __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int i = 0; i < COLS; i += 32) {
            if (lead) _mm_prefetch((const char *)(w + i) + lead, _MM_HINT_T0);
            for (int k = 0; k < 4; k++)
                a[k % chains] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8 * k))),
                                                _mm256_loadu_ps(x + i + 8 * k), a[k % chains]);
        }
        out[r] = hsum8(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
    }
}

static void engine(const uint16_t *w, const float *x, float *o) { tq_kernels_avx2()->f16_gemv(w, ROWS, COLS, x, o); }
static __attribute__((noinline)) void c4(const uint16_t *w, const float *x, float *o) { form(w, x, o, 4, 0); }
static __attribute__((noinline)) void c2(const uint16_t *w, const float *x, float *o) { form(w, x, o, 2, 0); }
static __attribute__((noinline)) void c4p1k(const uint16_t *w, const float *x, float *o) { form(w, x, o, 4, 1024); }
static __attribute__((noinline)) void c2p1k(const uint16_t *w, const float *x, float *o) { form(w, x, o, 2, 1024); }
static __attribute__((noinline)) void c2p512(const uint16_t *w, const float *x, float *o) { form(w, x, o, 2, 512); }
static __attribute__((noinline)) void c2p2k(const uint16_t *w, const float *x, float *o) { form(w, x, o, 2, 2048); }
static __attribute__((noinline)) void c2p4k(const uint16_t *w, const float *x, float *o) { form(w, x, o, 2, 4096); }

typedef void (*form_fn)(const uint16_t *, const float *, float *);
static const struct {
    const char *name;
    form_fn fn;
} FORMS[] = {
    {"engine: 2 chains, 1 KiB, 128 B a step", engine}, {"2 chains, prefetch 1 KiB (before)", c2p1k},
    {"4 chains, no prefetch", c4}, {"2 chains, no prefetch", c2},
    {"4 chains, prefetch 1 KiB", c4p1k},          {"2 chains, prefetch 512 B", c2p512}, {"2 chains, prefetch 2 KiB", c2p2k},
    {"2 chains, prefetch 4 KiB", c2p4k},
};
#define NFORMS (int)(sizeof(FORMS) / sizeof(FORMS[0]))
#define MAX_ROUNDS 64

int main(int argc, char **argv) {
    if (!tq_kernels_avx2() || !(tq_cpu_features() & TQ_CPU_AVX2)) {
        fprintf(stderr, "needs AVX2\n");
        return 2;
    }
    int rounds = argc > 1 ? atoi(argv[1]) : 15;
    if (rounds < 1 || rounds > MAX_ROUNDS) rounds = 15;
    const size_t n = (size_t)ROWS * COLS * 2;
    uint16_t *w = aligned_alloc(1 << 21, n);
    float *x = aligned_alloc(64, COLS * sizeof(float)), *o = aligned_alloc(64, ROWS * sizeof(float));
    if (!w || !x || !o) return 1;
    madvise(w, n, MADV_HUGEPAGE);
    for (size_t i = 0; i < n / 2; i++) w[i] = (uint16_t)(0x3000 | ((i * 2654435761u) >> 22 & 0x3ff));
    for (int i = 0; i < COLS; i++) x[i] = 1.0f / (float)(i + 1);
    static double pct[16][MAX_ROUNDS];
    volatile uint64_t sink = 0;
    for (int r = 0; r < rounds; r++) {
        double t = micro_now();
        sink += micro_read_lines((const uint8_t *)w, n);
        const double tr = micro_now() - t;
        for (int f = 0; f < NFORMS; f++) {
            t = micro_now();
            FORMS[f].fn(w, x, o);
            pct[f][r] = 100.0 * tr / (micro_now() - t);
        }
        printf("round %d: plain read %.1f GB/s\n", r, n / tr / 1e9);
        fflush(stdout);
    }
    for (int f = 0; f < NFORMS; f++) {
        qsort(pct[f], (size_t)rounds, sizeof(double), micro_cmp_double);
        printf("%-34s median %5.1f%% of the plain read (min %.1f, max %.1f)\n", FORMS[f].name, pct[f][rounds / 2],
               pct[f][0], pct[f][rounds - 1]);
    }
    return (int)(sink & 0);
}
