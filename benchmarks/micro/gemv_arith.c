/* How much of the ternary GEMV's distance to a plain read at one thread is its arithmetic? One
 * thread, a 512 MB matrix from DRAM (2 MiB pages), each form against a linear read of the same bytes
 * in the same round (median over rounds of the ratio to the probe), and each arithmetic form's time
 * per row-block (128 weights of one row) from L2 (a 256 KiB slice read 2000 times):
 *
 *   read        32-byte loads, xor
 *   probe       trit.bench's bandwidth probe (micro_probe_read): its passes with no prefetch and with
 *               a 4 KiB lead, the faster of the two each round; the percentages are of this
 *   engine      the engine's AVX-512 VNNI GEMV (four rows, each block broadcast, 2 AND + 2 vpdpbusd)
 *   engine.loads  the same loads and software prefetches (the hint tq_head_prefetch_far() picks for
 *               this CPU), an xor instead of the arithmetic: what the engine's walk over memory reads
 *   loads+vnni  engine.loads plus the engine's count of AND + vpdpbusd per block, on registers that
 *               never depend on the loads: what the arithmetic's time alone costs the walk
 *   loads+add   the same with vpaddd for vpdpbusd (light 512-bit work, no VNNI)
 *   ilv         the same arithmetic with the four rows of a group interleaved per block (one linear
 *               stream, no software prefetch; the bytes are random, so only the speed means anything)
 *   ilv.half    ilv with one of its two vpdpbusd replaced by an xor (wrong sums, the same loads)
 *   ilv.loads   ilv's loads and ANDs, no vpdpbusd
 *   ilv.ymm     256-bit VNNI on the interleaved layout: a plain 32-byte load, 4 AND + 4 vpdpbusd
 *   pairs       the engine's layout, one 64-byte load per row for two blocks (no broadcast),
 *               activations regrouped per block pair, 4 AND + 4 vpdpbusd per two blocks
 *               (bit-identical to the engine's GEMV: checked before timing)
 *
 * Build and run (x86-64 with AVX-512 VNNI, Linux):
 *
 *   gcc -O3 -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c -Iengine/kernels \
 *       benchmarks/micro/gemv_arith.c engine/kernels/tq_avx512.c engine/kernels/tq_scalar.c \
 *       engine/kernels/cpu.c -lm -lpthread -o /tmp/gemv_arith && /tmp/gemv_arith [ROUNDS [BLOCKS [THREADS]]]
 *
 * BLOCKS: 128-weight blocks per row (20: 2560 columns, the default; 54: 6912). THREADS 2: each
 * form also runs on two threads, each one continuous half of the matrix; this VM's two-thread
 * bandwidth has two states (read ~30-35 or ~50-60 GB/s), so those rounds are split by the read
 * form's rate (fast: above 45 GB/s) and their medians printed per state. */
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

#define VNNI __attribute__((target("avx512vnni,avx512f,avx512bw,avx512vl"), noinline))

enum { READ, PROBE, PROBE_LEAD, ENGINE, ENGINE_LOADS, LOADS_VNNI, LOADS_ADD, ILV, ILV_HALF, ILV_LOADS, ILV_YMM, PAIRS, NFORMS };
static const char *NAMES[NFORMS] = {"read",      "probe",     "probe.4k",  "engine",    "engine.loads", "loads+vnni",
                                    "loads+add", "ilv",       "ilv.half",  "ilv.loads", "ilv.ymm",      "pairs"};

static const tq_kernels *K;
static volatile uint64_t SINK;

static void read_linear(const uint8_t *w, size_t n) { SINK += micro_read_lines(w, n); }

/* The engine's GEMV (tq_avx512.c tq_gemv_rows_vnni, four rows) with an xor for its arithmetic: the
 * same 32-byte broadcast loads in the same order, the same prefetches of the next row group. */
VNNI static void gemv_engine_loads(const uint8_t *w, size_t rows, int nb, int32_t *out) {
    const size_t stride = (size_t)nb * TQ_QK_BYTES;
    const int l2 = tq_head_prefetch_far();
    for (size_t r = 0; r + 4 <= rows; r += 4, w += 4 * stride) {
        __m512i s[4];
        for (int i = 0; i < 4; i++) s[i] = _mm512_setzero_si512();
        for (int b = 0; b < nb; b++) {
            const char *pf = (const char *)w + 4 * stride + TQ_GEMV_PREFETCH_LEAD + (size_t)b * 4 * TQ_QK_BYTES;
            if (l2) {
                _mm_prefetch(pf, _MM_HINT_T1);
                _mm_prefetch(pf + 64, _MM_HINT_T1);
            } else {
                _mm_prefetch(pf, _MM_HINT_T0);
                _mm_prefetch(pf + 64, _MM_HINT_T0);
            }
            for (int i = 0; i < 4; i++)
                s[i] = _mm512_xor_si512(
                    s[i], _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + i * stride + (size_t)b * TQ_QK_BYTES))));
        }
        for (int i = 0; i < 4; i++) out[r + i] = _mm512_reduce_add_epi32(s[i]);
    }
}

/* engine.loads with, per block and row, one AND and one vpdpbusd (vnni) or vpaddd (else) into each
 * of two independent chains whose inputs are registers: the engine's count of vector work, none of
 * it waiting for memory. The loads' xor and the chains meet only after the matrix. */
VNNI static void gemv_loads_alu(const uint8_t *w, size_t rows, int nb, const int8_t *a, int32_t *out, const int vnni) {
    const size_t stride = (size_t)nb * TQ_QK_BYTES;
    const __m512i m = _mm512_set1_epi8((char)0xcc);
    __m512i c[8], x = _mm512_loadu_si512(a), y = _mm512_loadu_si512(a + 64);
    for (int i = 0; i < 8; i++) c[i] = _mm512_setzero_si512();
    for (size_t r = 0; r + 4 <= rows; r += 4, w += 4 * stride) {
        __m512i s[4];
        for (int i = 0; i < 4; i++) s[i] = _mm512_setzero_si512();
        for (int b = 0; b < nb; b++) {
            const char *pf = (const char *)w + 4 * stride + TQ_GEMV_PREFETCH_LEAD + (size_t)b * 4 * TQ_QK_BYTES;
            _mm_prefetch(pf, _MM_HINT_T1);
            _mm_prefetch(pf + 64, _MM_HINT_T1);
            for (int i = 0; i < 4; i++) {
                s[i] = _mm512_xor_si512(
                    s[i], _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + i * stride + (size_t)b * TQ_QK_BYTES))));
                if (vnni) {
                    c[2 * i] = _mm512_dpbusd_epi32(c[2 * i], _mm512_and_si512(x, m), y);
                    c[2 * i + 1] = _mm512_dpbusd_epi32(c[2 * i + 1], _mm512_and_si512(y, m), x);
                } else {
                    c[2 * i] = _mm512_add_epi32(c[2 * i], _mm512_and_si512(x, m));
                    c[2 * i + 1] = _mm512_add_epi32(c[2 * i + 1], _mm512_and_si512(y, m));
                }
            }
        }
        for (int i = 0; i < 4; i++) out[r + i] = _mm512_reduce_add_epi32(s[i]);
    }
    for (int i = 0; i < 8; i++) out[i] += _mm512_reduce_add_epi32(c[i]);
}

/* mode ILV: the engine's arithmetic; ILV_HALF: one vpdpbusd; ILV_LOADS: none */
VNNI static void gemv_ilv(const uint8_t *w, size_t rows, int nb, const int8_t *a, int32_t *out, int mode) {
    const __m512i m01 = _mm512_inserti64x4(_mm512_set1_epi8((char)0xc0), _mm256_set1_epi8(0x30), 1);
    const __m512i m23 = _mm512_inserti64x4(_mm512_set1_epi8(0x0c), _mm256_set1_epi8(0x03), 1);
    for (size_t r = 0; r + 4 <= rows; r += 4, w += (size_t)4 * nb * TQ_QK_BYTES) {
        __m512i s01[4], s23[4];
        for (int i = 0; i < 4; i++) s01[i] = s23[i] = _mm512_setzero_si512();
        for (int b = 0; b < nb; b++) {
            const __m512i x01 = _mm512_loadu_si512(a + (size_t)b * TQ_QK);
            const __m512i x23 = _mm512_loadu_si512(a + (size_t)b * TQ_QK + 64);
            const uint8_t *p = w + (size_t)b * 4 * TQ_QK_BYTES;
            for (int i = 0; i < 4; i++) {
                const __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p + 32 * i)));
                if (mode == ILV) {
                    s01[i] = _mm512_dpbusd_epi32(s01[i], _mm512_and_si512(q, m01), x01);
                    s23[i] = _mm512_dpbusd_epi32(s23[i], _mm512_and_si512(q, m23), x23);
                } else if (mode == ILV_HALF) {
                    s01[i] = _mm512_dpbusd_epi32(s01[i], _mm512_and_si512(q, m01), x01);
                    s23[i] = _mm512_xor_si512(s23[i], _mm512_and_si512(q, m23));
                } else {
                    s01[i] = _mm512_xor_si512(s01[i], _mm512_and_si512(q, m01));
                    s23[i] = _mm512_xor_si512(s23[i], _mm512_and_si512(q, m23));
                }
            }
        }
        for (int i = 0; i < 4; i++) out[r + i] = _mm512_reduce_add_epi32(_mm512_add_epi32(s01[i], s23[i]));
    }
}

VNNI static void gemv_ilv_ymm(const uint8_t *w, size_t rows, int nb, const int8_t *a, int32_t *out) {
    const __m256i m0 = _mm256_set1_epi8((char)0xc0), m1 = _mm256_set1_epi8(0x30);
    const __m256i m2 = _mm256_set1_epi8(0x0c), m3 = _mm256_set1_epi8(0x03);
    for (size_t r = 0; r + 4 <= rows; r += 4, w += (size_t)4 * nb * TQ_QK_BYTES) {
        __m256i s0[4], s1[4];
        for (int i = 0; i < 4; i++) s0[i] = s1[i] = _mm256_setzero_si256();
        for (int b = 0; b < nb; b++) {
            const int8_t *x = a + (size_t)b * TQ_QK;
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)x);
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(x + 32));
            const __m256i x2 = _mm256_loadu_si256((const __m256i *)(x + 64));
            const __m256i x3 = _mm256_loadu_si256((const __m256i *)(x + 96));
            const uint8_t *p = w + (size_t)b * 4 * TQ_QK_BYTES;
            for (int i = 0; i < 4; i++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(p + 32 * i));
                s0[i] = _mm256_dpbusd_epi32(s0[i], _mm256_and_si256(q, m0), x0);
                s1[i] = _mm256_dpbusd_epi32(s1[i], _mm256_and_si256(q, m1), x1);
                s0[i] = _mm256_dpbusd_epi32(s0[i], _mm256_and_si256(q, m2), x2);
                s1[i] = _mm256_dpbusd_epi32(s1[i], _mm256_and_si256(q, m3), x3);
            }
        }
        for (int i = 0; i < 4; i++) {
            int32_t t[8];
            _mm256_storeu_si256((__m256i *)t, _mm256_add_epi32(s0[i], s1[i]));
            out[r + i] = t[0] + t[7];
        }
    }
}

/* The engine's layout and prefetch; per row one 64-byte load covers blocks b and b + 1, and field k
 * of both meets x_k = [a_b[32k..32k+31] | a_b+1[32k..32k+31]]. Sums as the engine's (integers). */
#define PAIR_ROW(i, A0, A1, A2, A3)                                                                  \
    {                                                                                                \
        const __m512i q = _mm512_loadu_si512(w + (i) * stride + (size_t)b * TQ_QK_BYTES);            \
        A0 = _mm512_dpbusd_epi32(A0, _mm512_and_si512(q, m0), x0);                                   \
        A1 = _mm512_dpbusd_epi32(A1, _mm512_and_si512(q, m1), x1);                                   \
        A2 = _mm512_dpbusd_epi32(A2, _mm512_and_si512(q, m2), x2);                                   \
        A3 = _mm512_dpbusd_epi32(A3, _mm512_and_si512(q, m3), x3);                                   \
    }
#define PAIR_OUT(i, A0, A1, A2, A3)                                                                  \
    out[r + (i)] = _mm512_reduce_add_epi32(_mm512_add_epi32(                                        \
        _mm512_add_epi32(_mm512_srai_epi32(A0, 6), _mm512_srai_epi32(A1, 4)),                       \
        _mm512_add_epi32(_mm512_srai_epi32(A2, 2), A3)))

static inline __m512i pair_act(const int8_t *x, int k) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(x + 32 * k))),
                              _mm256_loadu_si256((const __m256i *)(x + TQ_QK + 32 * k)), 1);
}

VNNI static void gemv_pairs(const uint8_t *w, int rows, int nb, const int8_t *a, int32_t *out) {
    const size_t stride = (size_t)nb * TQ_QK_BYTES;
    const __m512i m0 = _mm512_set1_epi8((char)0xc0), m1 = _mm512_set1_epi8(0x30);
    const __m512i m2 = _mm512_set1_epi8(0x0c), m3 = _mm512_set1_epi8(0x03);
    for (int r = 0; r + 4 <= rows; r += 4, w += 4 * stride) {
        __m512i s00 = _mm512_setzero_si512(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00, s12 = s00;
        __m512i s13 = s00, s20 = s00, s21 = s00, s22 = s00, s23 = s00, s30 = s00, s31 = s00, s32 = s00, s33 = s00;
        for (int b = 0; b + 2 <= nb; b += 2) {
            const int8_t *x = a + (size_t)b * TQ_QK;
            const __m512i x0 = pair_act(x, 0), x1 = pair_act(x, 1), x2 = pair_act(x, 2), x3 = pair_act(x, 3);
            for (int k = 0; k < 2; k++) {
                const char *pf = (const char *)w + 4 * stride + TQ_GEMV_PREFETCH_LEAD + (size_t)(b + k) * 128;
                _mm_prefetch(pf, _MM_HINT_T0);
                _mm_prefetch(pf + 64, _MM_HINT_T0);
            }
            PAIR_ROW(0, s00, s01, s02, s03)
            PAIR_ROW(1, s10, s11, s12, s13)
            PAIR_ROW(2, s20, s21, s22, s23)
            PAIR_ROW(3, s30, s31, s32, s33)
        }
        PAIR_OUT(0, s00, s01, s02, s03);
        PAIR_OUT(1, s10, s11, s12, s13);
        PAIR_OUT(2, s20, s21, s22, s23);
        PAIR_OUT(3, s30, s31, s32, s33);
    }
}

static void run(int form, const uint8_t *w, size_t rows, int nb, const int8_t *a, int32_t *out) {
    const size_t n = rows * (size_t)nb * TQ_QK_BYTES;
    switch (form) {
    case READ: read_linear(w, n); break;
    case PROBE: SINK += micro_probe_read((const uint64_t *)w, n / 8, 0); break;
    case PROBE_LEAD: SINK += micro_probe_read((const uint64_t *)w, n / 8, 4096); break;
    case ENGINE: K->gemv(w, (int)rows, nb, a, 0, out); break;
    case ENGINE_LOADS: gemv_engine_loads(w, rows, nb, out); break;
    case LOADS_VNNI: gemv_loads_alu(w, rows, nb, a, out, 1); break;
    case LOADS_ADD: gemv_loads_alu(w, rows, nb, a, out, 0); break;
    case ILV_YMM: gemv_ilv_ymm(w, rows, nb, a, out); break;
    case PAIRS: gemv_pairs(w, (int)rows, nb, a, out); break;
    default: gemv_ilv(w, rows, nb, a, out, form); break;
    }
}

typedef struct {
    int form, nb;
    const uint8_t *w;
    size_t rows;
    const int8_t *a;
    int32_t *out;
} half_job;

static void *run_half(void *p) {
    const half_job *j = p;
    run(j->form, j->w, j->rows, j->nb, j->a, j->out);
    return NULL;
}

/* GB/s of one form over rows x nb blocks at nth threads (1 or 2: continuous halves) */
static double timed(int form, int nth, const uint8_t *w, size_t rows, int nb, const int8_t *a, int32_t *out) {
    const size_t half = rows / 8 * 4, row_bytes = (size_t)nb * TQ_QK_BYTES;
    const double t = micro_now();
    if (nth == 2) {
        half_job j = {form, nb, w + half * row_bytes, rows - half, a, out + half};
        pthread_t th;
        pthread_create(&th, NULL, run_half, &j);
        run(form, w, half, nb, a, out);
        pthread_join(th, NULL);
    } else {
        run(form, w, rows, nb, a, out);
    }
    return rows * row_bytes / (micro_now() - t) / 1e9;
}

int main(int argc, char **argv) {
    K = tq_kernels_avx512();
    if (!K || strcmp(K->isa, "avx512vnni") != 0) {
        fprintf(stderr, "gemv_arith: needs AVX-512 VNNI\n");
        return 2;
    }
    const int rounds = argc > 1 ? atoi(argv[1]) : 10, nb = argc > 2 ? atoi(argv[2]) : 20;
    const int nth = argc > 3 ? atoi(argv[3]) : 1;
    if (rounds < 1 || nb < 2 || nb % 2 || nth < 1 || nth > 2) {
        fprintf(stderr, "usage: gemv_arith [ROUNDS [BLOCKS (even) [THREADS (1 or 2)]]]\n");
        return 2;
    }
    const size_t rows = ((size_t)512 << 20) / ((size_t)nb * TQ_QK_BYTES) / 4 * 4;
    const size_t n = rows * nb * TQ_QK_BYTES;
    uint8_t *w = micro_huge_alloc(n);
    int8_t *a = aligned_alloc(64, (size_t)nb * TQ_QK);
    int32_t *out = aligned_alloc(64, rows * sizeof(int32_t) + 64), *ref = malloc(4096 * sizeof(int32_t));
    if (!w || !a || !out || !ref) return 1;
    for (size_t i = 0; i < n; i++) w[i] = (uint8_t)((i * 2654435761u >> 13) & 0xAA); /* codes 0 and 2 */
    for (int i = 0; i < nb * TQ_QK; i++) a[i] = (int8_t)(i * 7);
    K->gemv(w, 4096, nb, a, 0, ref);
    gemv_pairs(w, 4096, nb, a, out);
    if (memcmp(ref, out, 4096 * sizeof(int32_t)) != 0) {
        fprintf(stderr, "gemv_arith: pairs differs from the engine's GEMV\n");
        return 1;
    }
    double *pct[3][NFORMS]; /* one thread; two threads slow, fast */
    int cnt[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++)
        for (int f = 0; f < NFORMS; f++) pct[k][f] = malloc(sizeof(double) * (size_t)rounds);
    double read_sum[3] = {0, 0, 0};
    for (int r = 0; r < rounds; r++)
        for (int t = 1; t <= nth; t++) {
            double gbs[NFORMS];
            for (int f = 0; f < NFORMS; f++) gbs[f] = timed(f, t, w, rows, nb, a, out);
            const int k = t == 1 ? 0 : gbs[READ] > 45.0 ? 2 : 1;
            const double probe = gbs[PROBE] > gbs[PROBE_LEAD] ? gbs[PROBE] : gbs[PROBE_LEAD];
            read_sum[k] += probe;
            for (int f = 0; f < NFORMS; f++) pct[k][f][cnt[k]] = 100 * gbs[f] / probe;
            cnt[k]++;
        }
    printf("%d rounds, %d blocks per row\n", rounds, nb);
    static const char *what[3] = {"one thread", "two threads, slow state", "two threads, fast state"};
    for (int k = 0; k < 3; k++)
        if (cnt[k]) printf("%s: %d rounds, probe mean %.1f GB/s\n", what[k], cnt[k], read_sum[k] / cnt[k]);
    printf("%-10s %12s %12s %12s %22s\n", "form", "1t % of probe", "2t slow", "2t fast", "L2 ns per row-block");
    const size_t l2rows = ((size_t)256 << 10) / ((size_t)nb * TQ_QK_BYTES) / 4 * 4;
    for (int f = 0; f < NFORMS; f++) {
        printf("%-10s", NAMES[f]);
        for (int k = 0; k < 3; k++) {
            qsort(pct[k][f], (size_t)cnt[k], sizeof(double), micro_cmp_double);
            if (cnt[k]) printf(" %11.1f%%", pct[k][f][cnt[k] / 2]);
            else printf(" %12s", "-");
        }
        if (f >= ENGINE) {
            const double t = micro_now();
            for (int k = 0; k < 2000; k++) run(f, w, l2rows, nb, a, out);
            printf(" %21.2f", (micro_now() - t) / 2000 / ((double)l2rows * nb) * 1e9);
        }
        printf("\n");
    }
    return SINK == 42; /* keeps the reads */
}
