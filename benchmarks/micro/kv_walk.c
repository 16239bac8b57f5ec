/* Attention's key walk for one decode token of the 2B4T shape (30 layers, 5 KV heads of 128, four
 * query heads per KV head, keys in blocks of 32 as the engine walks them) from DRAM, one thread,
 * f32 cache at NPOS positions, against a plain read loop over the same bytes. Forms:
 *   pos-major       the old cache layout (a position's five heads side by side): each head's walk
 *                   reads 512 of every 2560 bytes; the engine's score kernel
 *   head-major      each KV head's keys contiguous (the engine's layout now); the engine's kernel,
 *                   which reads one key's row after another
 *   head-major ilv4 the same layout with the previous kernel's order: four keys' rows interleaved
 *   head-major grp4 tried in the engine and dropped (+2-3% of a long-context token, -3% of a long
 *                   prompt: benchmarks/RESULTS.md): the four query heads of a KV head in one pass, so each key
 *                   row is loaded once for the four (sixteen FMA chains: four keys x four heads),
 *                   keys one after another, the sixteen sums reduced together (bit-identical to
 *                   _mm512_reduce_add_ps of each; checked below)
 * Build and run (x86-64 with AVX-512, Linux):
 *
 *   gcc -O3 -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c -Iengine/kernels \
 *       benchmarks/micro/kv_walk.c engine/kernels/tq_avx512.c engine/kernels/tq_scalar.c \
 *       engine/kernels/cpu.c -lm -o /tmp/kv_walk && /tmp/kv_walk [NPOS] [ROUNDS]            */
#define _DEFAULT_SOURCE
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "micro.h"
#include "tq.h"

#define LAYERS 30
#define KVH 5
#define HD 128
#define GROUP 4
#define BLOCK 32

/* the previous AVX-512 score kernel's order: four keys at a time, their rows interleaved */
static void dots_ilv4(const float *rows, size_t stride, int len, const float *x, float *out) {
    int j = 0;
    for (; j + 4 <= len; j += 4) {
        const float *r = rows + (size_t)j * stride;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < HD; i += 16) {
            const __m512 xv = _mm512_loadu_ps(x + i);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(r + i), xv, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(r + stride + i), xv, a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(r + 2 * stride + i), xv, a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(r + 3 * stride + i), xv, a3);
        }
        out[j] = _mm512_reduce_add_ps(a0);
        out[j + 1] = _mm512_reduce_add_ps(a1);
        out[j + 2] = _mm512_reduce_add_ps(a2);
        out[j + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; j < len; j++) {
        __m512 a = _mm512_setzero_ps();
        for (int i = 0; i < HD; i += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(rows + (size_t)j * stride + i), _mm512_loadu_ps(x + i), a);
        out[j] = _mm512_reduce_add_ps(a);
    }
}

/* 16 sums at once: lane 4a + b of the result = the _mm512_reduce_add_ps tree of v[a + 4b] */
static __m512 reduce16(const __m512 *v) {
    __m512 w[8], x[4], y[2];
    for (int p = 0; p < 8; p++) /* lanes i + i+8 */
        w[p] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * p], v[2 * p + 1], 0xEE));
    for (int p = 0; p < 4; p++) /* i + i+4 */
        x[p] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * p], w[2 * p + 1], 0x88),
                             _mm512_shuffle_f32x4(w[2 * p], w[2 * p + 1], 0xDD));
    for (int p = 0; p < 2; p++) { /* i + i+2 */
        const __m512d a = _mm512_castps_pd(x[2 * p]), b = _mm512_castps_pd(x[2 * p + 1]);
        y[p] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    return _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x88), _mm512_shuffle_ps(y[0], y[1], 0xDD)); /* i + i+1 */
}

/* scores of the four query heads x (HD apart) against len keys; head g's into out + g * 4096 */
static void dots_grp4(const float *rows, size_t stride, int len, const float *x, float *out) {
    int j = 0;
    for (; j + 4 <= len; j += 4) {
        __m512 acc[16]; /* acc[g + 4 s]: head g, key j + s */
        for (int m = 0; m < 16; m++) acc[m] = _mm512_setzero_ps();
        for (int s = 0; s < 4; s++)
            for (int i = 0; i < HD; i += 16) {
                const __m512 kv = _mm512_loadu_ps(rows + (size_t)(j + s) * stride + i);
                for (int g = 0; g < 4; g++) acc[g + 4 * s] = _mm512_fmadd_ps(kv, _mm512_loadu_ps(x + g * HD + i), acc[g + 4 * s]);
            }
        const __m512 z = reduce16(acc);
        for (int g = 0; g < 4; g++) _mm_storeu_ps(out + g * 4096 + j, _mm512_extractf32x4_ps(z, g));
    }
    for (; j < len; j++)
        for (int g = 0; g < 4; g++) {
            __m512 a = _mm512_setzero_ps();
            for (int i = 0; i < HD; i += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(rows + (size_t)j * stride + i), _mm512_loadu_ps(x + g * HD + i), a);
            out[g * 4096 + j] = _mm512_reduce_add_ps(a);
        }
}

int main(int argc, char **argv) {
    const int npos = argc > 1 ? atoi(argv[1]) : 2000, rounds = argc > 2 ? atoi(argv[2]) : 6;
    const tq_kernels *k = tq_kernels_avx512();
    if (!k || npos < 1 || npos > 4096) return 2;
    const size_t kvdim = KVH * HD, per_layer = (size_t)npos * kvdim, n = LAYERS * per_layer;
    const size_t huge = (size_t)2 << 20, evict = (size_t)1 << 30;
    float *kc = aligned_alloc(huge, (n * 4 + huge - 1) / huge * huge);
    float *big = aligned_alloc(huge, evict);
    static float q[KVH * GROUP * HD], att[KVH * GROUP * 4096];
    if (!kc || !big) return 1;
    madvise(kc, n * 4, MADV_HUGEPAGE);
    madvise(big, evict, MADV_HUGEPAGE);
    for (size_t i = 0; i < n; i++) kc[i] = (float)((i * 2654435761u) >> 20) * 1e-6f - 0.002f;
    for (size_t i = 0; i < evict / 4; i++) big[i] = 1.0f;
    for (int i = 0; i < KVH * GROUP * HD; i++) q[i] = (float)(i % 37) * 0.01f - 0.15f;
    static const char *name[] = {"pos-major", "head-major", "head-major ilv4", "head-major grp4", "read loop"};
    double sum[5] = {0};
    { /* the grouped form gives the engine kernel's sums exactly */
        static float ref[GROUP * 4096];
        int bad = 0;
        for (int g = 0; g < GROUP; g++) k->f32_dots(kc, HD, npos, q + g * HD, HD, ref + g * 4096);
        dots_grp4(kc, HD, npos, q, att);
        for (int g = 0; g < GROUP; g++)
            for (int j = 0; j < npos; j++) bad += ref[g * 4096 + j] != att[g * 4096 + j];
        printf("grouped vs engine kernel: %d of %d sums differ\n", bad, GROUP * npos);
    }
    volatile uint64_t sink = 0;
    printf("%d positions, %.0f MB of keys per token\n", npos, n * 4 / 1e6);
    for (int r = 0; r < rounds; r++) {
        for (int v = 0; v < 5; v++) {
            sink += micro_sum_words((const uint64_t *)big, evict / 8); /* the keys leave the caches */
            const double t = micro_now();
            for (int l = 0; l < LAYERS; l++) {
                const float *lay = kc + (size_t)l * per_layer;
                if (v == 4) {
                    sink += micro_sum_words((const uint64_t *)lay, per_layer / 2);
                    continue;
                }
                for (int h = 0; h < KVH; h++) {
                    /* pos-major: key j of head h at (j * KVH + h) * HD; head-major: (h * npos + j) * HD */
                    const float *k0 = v == 0 ? lay + (size_t)h * HD : lay + (size_t)h * npos * HD;
                    const size_t stride = v == 0 ? kvdim : HD;
                    for (int j0 = 0; j0 < npos; j0 += BLOCK) {
                        const int nk = npos - j0 < BLOCK ? npos - j0 : BLOCK;
                        if (v == 3) {
                            dots_grp4(k0 + (size_t)j0 * stride, stride, nk, q + h * GROUP * HD, att + h * GROUP * 4096 + j0);
                            continue;
                        }
                        for (int g = 0; g < GROUP; g++) {
                            const float *x = q + (h * GROUP + g) * HD;
                            float *o = att + (h * GROUP + g) * 4096 + j0;
                            if (v == 2) dots_ilv4(k0 + (size_t)j0 * stride, stride, nk, x, o);
                            else k->f32_dots(k0 + (size_t)j0 * stride, stride, nk, x, HD, o);
                        }
                    }
                }
            }
            sum[v] += n * 4 / (micro_now() - t) / 1e9;
        }
    }
    for (int v = 0; v < 5; v++) printf("%-16s %5.1f GB/s\n", name[v], sum[v] / rounds);
    return (int)(sink & 1);
}
