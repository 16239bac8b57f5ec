/* Forms of the f16 head GEMV (128256 x 2560, the 2B4T tied head) from DRAM, one thread, 2 MiB pages,
 * against a read loop over the same bytes; means of 4 passes. The engine's forms are the first
 * (one FMA chain per row, no software prefetch: tq_f16_gemv_avx512, on AMD) and "one chain, T1
 * prefetch 4 KiB" (tq_f16_gemv_avx512_far, elsewhere; tq_head_prefetch_far in tq.h). The read loop
 * is trit.bench's bandwidth probe (micro_probe_read; before 2026-11-27 evening, micro_sum_words,
 * which read slower on the Intel VM: RESULTS.md's older tables). The last two forms split the far
 * form in two: its walk alone (an xor for the arithmetic), and that walk plus its count of vector work
 * on registers that never wait for the loads (what the arithmetic's time alone costs). Build and run:
 *
 *   gcc -O3 -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c benchmarks/micro/head_forms.c \
 *       -o /tmp/head_forms && /tmp/head_forms
 *
 * x86-64 with AVX-512 and Linux (madvise) only. */
#define _DEFAULT_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "micro.h"

#define ROWS 128256
#define COLS 2560

/* chains: 1 or 2 FMA chains per row; lead: prefetch distance in bytes (0: none); hint 0-3: T0, T1,
 * T2, NTA. Constant arguments after inlining. */
static inline __attribute__((always_inline)) void gemv(const uint16_t *w, const float *x, float *out,
                                                       const int chains, const size_t lead, const int hint) {
    for (int r = 0; r < ROWS; r++, w += COLS) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (int i = 0; i < COLS; i += 32) {
            if (lead) {
                const char *p = (const char *)(w + i) + lead;
                if (hint == 1) _mm_prefetch(p, _MM_HINT_T1);
                else if (hint == 2) _mm_prefetch(p, _MM_HINT_T2);
                else if (hint == 3) _mm_prefetch(p, _MM_HINT_NTA);
                else _mm_prefetch(p, _MM_HINT_T0);
            }
            const __m512 lo = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i)));
            const __m512 hi = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i + 16)));
            a0 = _mm512_fmadd_ps(lo, _mm512_loadu_ps(x + i), a0);
            if (chains == 2) a1 = _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + i + 16), a1);
            else a0 = _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + i + 16), a0);
        }
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
}

/* Two adjacent rows in lockstep, each its own single chain: the same sums as one chain per row, bit
 * for bit, with twice the independent FMAs in flight, but two load streams (see streams.c). */
static void gemv_pairs(const uint16_t *w, const float *x, float *out) {
    for (int r = 0; r + 2 <= ROWS; r += 2, w += 2 * COLS) {
        __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
        for (int i = 0; i < COLS; i += 16) {
            const __m512 xv = _mm512_loadu_ps(x + i);
            a = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i))), xv, a);
            b = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + COLS + i))), xv, b);
        }
        out[r] = _mm512_reduce_add_ps(a);
        out[r + 1] = _mm512_reduce_add_ps(b);
    }
}

/* The engine's far form's walk (one row after another, a T1 prefetch 4 KiB ahead per line) with an
 * xor for its arithmetic; alu: plus its count of vector work per line (2 conversions, 2 FMAs) on
 * registers that never depend on the loads, so only the time that work takes can slow the walk. */
static void gemv_loads(const uint16_t *w, const float *x, float *out, const int alu) {
    const __m256i one = _mm256_set1_epi16(1);
    const __m512 c = _mm512_loadu_ps(x + 32);
    __m256i h = _mm256_loadu_si256((const __m256i *)x);
    __m512 f0 = _mm512_loadu_ps(x), f1 = _mm512_loadu_ps(x + 16);
    for (int r = 0; r < ROWS; r++, w += COLS) {
        __m512i s = _mm512_setzero_si512();
        for (int i = 0; i < COLS; i += 32) {
            _mm_prefetch((const char *)(w + i) + 4096, _MM_HINT_T1);
            s = _mm512_xor_si512(s, _mm512_loadu_si512(w + i));
            if (alu) { /* h changes every line (one 256-bit add) so that the conversions stay in the loop */
                f0 = _mm512_fmadd_ps(_mm512_cvtph_ps(h), c, f0);
                f1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_xor_si256(h, one)), c, f1);
                h = _mm256_add_epi16(h, one);
            }
        }
        out[r] = (float)_mm512_reduce_add_epi32(s);
    }
    out[0] += _mm512_reduce_add_ps(_mm512_add_ps(f0, f1));
}

int main(void) {
    const size_t n = (size_t)ROWS * COLS;
    uint16_t *w = aligned_alloc((size_t)2 << 20, n * 2);
    float *x = aligned_alloc(64, COLS * 4), *out = aligned_alloc(64, ROWS * 4);
    if (!w || !x || !out) return 1;
    madvise(w, n * 2, MADV_HUGEPAGE);
    for (size_t i = 0; i < n; i++) w[i] = (uint16_t)(0x3c00 ^ (i & 0x3ff));
    for (int i = 0; i < COLS; i++) x[i] = i * 0.001f;
    static const char *name[] = {"one chain (engine)", "two chains", "one chain, T0 prefetch 2 KiB",
                                 "one chain, T1 prefetch 8 KiB", "one chain, T2 prefetch 8 KiB",
                                 "one chain, NTA prefetch 2 KiB", "two chains, T1 prefetch 4 KiB",
                                 "two chains, NTA prefetch 4 KiB", "one chain, T1 prefetch 16 KiB",
                                 "two rows at once, a chain each", "one chain, T0 prefetch 4 KiB",
                                 "one chain, T0 prefetch 8 KiB", "one chain, T1 prefetch 2 KiB",
                                 "one chain, T1 prefetch 4 KiB", "one chain, T2 prefetch 4 KiB",
                                 "loads only, T1 prefetch 4 KiB", "loads + arithmetic apart"};
    enum { FORMS = 17, PASSES = 4 };
    double gbs[FORMS] = {0}, probe = 0;
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < PASSES; rep++) {
        double best = 0;
        for (size_t lead = 0; lead <= 4096; lead += 4096) { /* trit.bench's probe: its faster pass */
            const double t = micro_now();
            sink += micro_probe_read((const uint64_t *)w, n / 4, lead);
            const double gb = n * 2 / (micro_now() - t) / 1e9;
            best = gb > best ? gb : best;
        }
        probe += best;
        for (int v = 0; v < FORMS; v++) {
            const double t = micro_now();
            switch (v) {
            case 0: gemv(w, x, out, 1, 0, 0); break;
            case 1: gemv(w, x, out, 2, 0, 0); break;
            case 2: gemv(w, x, out, 1, 2048, 0); break;
            case 3: gemv(w, x, out, 1, 8192, 1); break;
            case 4: gemv(w, x, out, 1, 8192, 2); break;
            case 5: gemv(w, x, out, 1, 2048, 3); break;
            case 6: gemv(w, x, out, 2, 4096, 1); break;
            case 7: gemv(w, x, out, 2, 4096, 3); break;
            case 8: gemv(w, x, out, 1, 16384, 1); break;
            case 9: gemv_pairs(w, x, out); break;
            case 10: gemv(w, x, out, 1, 4096, 0); break;
            case 11: gemv(w, x, out, 1, 8192, 0); break;
            case 12: gemv(w, x, out, 1, 2048, 1); break;
            case 13: gemv(w, x, out, 1, 4096, 1); break;
            case 15: gemv_loads(w, x, out, 0); break;
            case 16: gemv_loads(w, x, out, 1); break;
            default: gemv(w, x, out, 1, 4096, 2); break;
            }
            gbs[v] += n * 2 / (micro_now() - t) / 1e9;
        }
    }
    printf("bandwidth probe: %.1f GB/s\n", probe / PASSES);
    for (int v = 0; v < FORMS; v++) printf("%-32s %5.1f GB/s (%3.0f%%)\n", name[v], gbs[v] / PASSES, 100 * gbs[v] / probe);
    return (int)(sink & 1);
}
