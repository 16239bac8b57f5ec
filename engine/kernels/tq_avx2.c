/* AVX2 + FMA + F16C kernels, and the "avxvnni" table (the same with an AVX-VNNI ternary GEMV and
 * GEMM, below). Built with -mavx2 -mfma -mf16c only (setup.py); the dispatch calls
 * tq_kernels_avx2() only after cpu.c saw AVX2, FMA, F16C and OS support for the YMM state.
 *
 * Ternary dot products use the packed layout of tq.h as is: one 32-byte load of a block, shifts by
 * 6/4/2/0 and & 3 give four vectors of codes (0..2) that line up with a[0..31], a[32..63],
 * a[64..95], a[96..127]. _mm256_maddubs_epi16(codes u8, a s8) sums two code * a products into an
 * int16 lane; with codes <= 2 and |a| <= 128 a pair is within [-512, 508], so the instruction
 * never saturates and the int32 result is bit-identical to tq_gemv_scalar:
 *   sum(w * a) = sum(code * a) - sum(a).
 * On any other architecture this file compiles to a table that reports the path as absent. */
#include "tq.h"
#include "tq_attn.h"
#include "tq_gemm.h"

#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "qk_simd.h" /* TQ_INLINE, TQ_NOINLINE, tq_hsum */

/* Blocks accumulated in int16 before widening: per block a 16-bit lane gains four maddubs pair
 * sums, each in [-512, 508], i.e. [-2048, 2032]; 16 blocks stay within [-32768, 32512]. */
#define TQ_AVX2_I16_BLOCKS 16

/* Rows per GEMV pass: four rows share the four activation registers of a block. */
#define TQ_AVX2_GEMV_ROWS 4

/* GEMM tile: 2 weight rows x 4 tokens = 8 int32 accumulators + 4 code registers + constants fill
 * the 16 YMM registers; a row's codes are decoded once per block and reused for 4 tokens. */
#define TQ_AVX2_GEMM_ROWS 2
#define TQ_AVX2_GEMM_TOKS TQ_GEMM_TOKS

/* 4 int32 vectors -> their 4 horizontal sums, in order. */
TQ_INLINE __m128i tq_hsum4_epi32_avx2(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    const __m256i s01 = _mm256_hadd_epi32(v0, v1); /* per lane: v0 v0 v1 v1 */
    const __m256i s23 = _mm256_hadd_epi32(v2, v3);
    const __m256i s = _mm256_hadd_epi32(s01, s23); /* per lane: v0 v1 v2 v3 */
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

/* Blocks per int16 stage of the GEMV (tq_gemv_rows_avx2): its 4x sums gain at most 2 maddubs pair
 * sums of 4 x codes (<= 8) x a per block, [-4096, 4064]; 8 blocks stay within [-32768, 32512]. */
#define TQ_AVX2_GEMV_I16_BLOCKS 8

/* The GEMVs' decoding of one block q (the GEMMs shift per field instead: their decode is shared by
 * 4 tokens). One 16-bit shift by 4 puts fields 7-6 / 5-4 where fields 3-2 / 1-0 are, so one shift
 * and four ANDs give the codes (against 3 shifts + 4 ANDs): fields 5-4 and 1-0 masked with 3 are
 * the codes (c[1], c[3]), fields 7-6 and 3-2 masked with 12 are 4 x the codes (c[0], c[2]; the bits
 * the shift brings in from the next byte are masked off), still valid unsigned bytes for maddubs
 * and vpdpbusd. c[f] lines up with a[32 f .. 32 f + 31]; the caller sums the 4x products apart
 * and shifts them down, exactly, since they are multiples of 4. */
TQ_INLINE void tq_codes_gemv_avx2(__m256i q, __m256i m3, __m256i m12, __m256i c[4]) {
    const __m256i q4 = _mm256_srli_epi16(q, 4);
    c[0] = _mm256_and_si256(q4, m12);
    c[1] = _mm256_and_si256(q4, m3);
    c[2] = _mm256_and_si256(q, m12);
    c[3] = _mm256_and_si256(q, m3);
}

/* Empty asm that claims to change its vector arguments: gcc (12, -O3) regroups chains of vpaddw
 * into trees of vpmaddubsw results and then spills the sums (see the GEMV and tq_gemm_tile24_avx2);
 * pinning the sums after each step keeps the adds where they are written. clang needs no help. */
#if defined(__GNUC__) && !defined(__clang__)
#define TQ_REG_BARRIER2(a, b) __asm__("" : "+x"(a), "+x"(b))
#define TQ_REG_BARRIER4(a, b, c, d) __asm__("" : "+x"(a), "+x"(b), "+x"(c), "+x"(d))
#else
#define TQ_REG_BARRIER2(a, b) ((void)0)
#define TQ_REG_BARRIER4(a, b, c, d) ((void)0)
#endif

/* R (1..4, a constant after inlining) rows of the GEMV. w: R rows of `stride` bytes.
 * Codes from tq_codes_gemv_avx2; the two kinds sum in two int16 registers, lo and hi; hi is
 * widened and shifted down every TQ_AVX2_GEMV_I16_BLOCKS blocks. The activations are memory
 * operands. Order: the R rows one after another, each from its first block to its last, so that a
 * thread reads one linear stream (the R rows are contiguous), with one software prefetch per
 * 64-byte line TQ_GEMV_PREFETCH_LEAD ahead of it (prefetches past the matrix end never fault).
 * Reading the R rows block by block in turn (R streams, the activations shared) took fewer
 * instructions but read memory worse: on the Zen 3 VM, benchmarks/micro/row_streams.c -DRS_AVX2
 * over the 2B4T matrices at two threads, 79-87% of the probe against ~100% for this order;
 * whole-model decode, alternating builds, +5-9% at two threads (14.41 -> 15.66 and 15.22 -> 15.95
 * tok/s, means of 9 and 15 runs) and level at one (10.08 / 10.15, 10.38 / 10.46). With the weights
 * in L2 (a compute-bound case only small models reach) this order runs ~10% slower. */
TQ_INLINE void tq_gemv_rows_avx2(const uint8_t *w, size_t stride, int nb, const int8_t *a, int32_t asum,
                                 int32_t *out, const int R) {
    const __m256i m3 = _mm256_set1_epi8(3), m12 = _mm256_set1_epi8(12);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[TQ_AVX2_GEMV_ROWS]; /* int32 x 8 per row */
    for (int r = 0; r < R; r++) {
        const uint8_t *wr = w + r * stride;
        __m256i s32 = _mm256_setzero_si256();
        for (int b0 = 0; b0 < nb; b0 += TQ_AVX2_GEMV_I16_BLOCKS) {
            const int b1 = nb - b0 > TQ_AVX2_GEMV_I16_BLOCKS ? b0 + TQ_AVX2_GEMV_I16_BLOCKS : nb;
            __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
#define TQ_GEMV_BLOCK(b)                                                                                   \
    do {                                                                                                   \
        const int8_t *ab = a + (size_t)(b) * TQ_QK;                                                        \
        __m256i c[4];                                                                                      \
        tq_codes_gemv_avx2(_mm256_loadu_si256((const __m256i *)(wr + (size_t)(b) * TQ_QK_BYTES)), m3, m12, c); \
        hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(c[0], _mm256_loadu_si256((const __m256i *)ab)));      \
        lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(c[1], _mm256_loadu_si256((const __m256i *)(ab + 32)))); \
        hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(c[2], _mm256_loadu_si256((const __m256i *)(ab + 64)))); \
        lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(c[3], _mm256_loadu_si256((const __m256i *)(ab + 96)))); \
        TQ_REG_BARRIER2(lo, hi);                                                                          \
    } while (0)
            int b = b0;
            /* two 64-byte lines a step (the one-line loop below unrolled once), the sums pinned after
             * each block (unpinned, gcc spilled them: 6 stack accesses a step; now 64 instructions
             * and none): on the Zen 3 VM (benchmarks/kernel_bw.py --baseline, same rounds, 90 s
             * runs) 75-80% -> 85-87% of the probe at one thread and 82-88% -> 87-91% at two against
             * one line a step (unpinned: 77-78% -> 81-82% and level) */
            for (; b + 4 <= b1; b += 4) {
                _mm_prefetch((const char *)wr + TQ_GEMV_PREFETCH_LEAD + (size_t)b * TQ_QK_BYTES, _MM_HINT_T0);
                TQ_GEMV_BLOCK(b);
                TQ_GEMV_BLOCK(b + 1);
                _mm_prefetch((const char *)wr + TQ_GEMV_PREFETCH_LEAD + (size_t)(b + 2) * TQ_QK_BYTES, _MM_HINT_T0);
                TQ_GEMV_BLOCK(b + 2);
                TQ_GEMV_BLOCK(b + 3);
            }
            for (; b + 2 <= b1; b += 2) { /* one prefetch per 64-byte line */
                _mm_prefetch((const char *)wr + TQ_GEMV_PREFETCH_LEAD + (size_t)b * TQ_QK_BYTES, _MM_HINT_T0);
                TQ_GEMV_BLOCK(b);
                TQ_GEMV_BLOCK(b + 1);
            }
            if (b < b1) {
                _mm_prefetch((const char *)wr + TQ_GEMV_PREFETCH_LEAD + (size_t)b * TQ_QK_BYTES, _MM_HINT_T0);
                TQ_GEMV_BLOCK(b);
            }
#undef TQ_GEMV_BLOCK
            s32 = _mm256_add_epi32(s32, _mm256_add_epi32(_mm256_madd_epi16(lo, ones),
                                                         _mm256_srai_epi32(_mm256_madd_epi16(hi, ones), 2)));
        }
        acc[r] = s32;
    }
    if (R == 4) {
        const __m128i s = tq_hsum4_epi32_avx2(acc[0], acc[1], acc[2], acc[3]);
        _mm_storeu_si128((__m128i *)out, _mm_sub_epi32(s, _mm_set1_epi32(asum)));
    } else {
        for (int r = 0; r < R; r++) {
            const __m128i s = tq_hsum4_epi32_avx2(acc[r], acc[r], acc[r], acc[r]);
            out[r] = _mm_cvtsi128_si32(s) - asum;
        }
    }
}

TQ_GEMV_BY_ROWS(tq_gemv_avx2, , tq_gemv_rows_avx2, TQ_AVX2_GEMV_ROWS)

/* R rows x T tokens (constants after inlining) of the GEMM: out[t * out_stride + r]. */
TQ_INLINE void tq_gemm_tile_avx2(const uint8_t *w, size_t stride, int nb, const int8_t *a, size_t a_stride,
                                 const int32_t *asum, int32_t *out, size_t out_stride, const int R,
                                 const int T) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[TQ_AVX2_GEMM_ROWS][TQ_AVX2_GEMM_TOKS]; /* int32 x 8 per (row, token) */
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_si256();
    for (int b = 0; b < nb; b++) {
        for (int r = 0; r < R; r++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(w + r * stride + (size_t)b * TQ_QK_BYTES));
            const __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(q, 6), m3);
            const __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(q, 4), m3);
            const __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(q, 2), m3);
            const __m256i c3 = _mm256_and_si256(q, m3);
            for (int t = 0; t < T; t++) {
                const int8_t *ab = a + t * a_stride + (size_t)b * TQ_QK;
                const __m256i p = _mm256_add_epi16(
                    _mm256_add_epi16(_mm256_maddubs_epi16(c0, _mm256_loadu_si256((const __m256i *)ab)),
                                     _mm256_maddubs_epi16(c1, _mm256_loadu_si256((const __m256i *)(ab + 32)))),
                    _mm256_add_epi16(_mm256_maddubs_epi16(c2, _mm256_loadu_si256((const __m256i *)(ab + 64))),
                                     _mm256_maddubs_epi16(c3, _mm256_loadu_si256((const __m256i *)(ab + 96)))));
                acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(p, ones));
            }
        }
    }
    for (int t = 0; t < T; t++) {
        if (R == 2) {
            const __m128i s = tq_hsum4_epi32_avx2(acc[0][t], acc[1][t], acc[0][t], acc[1][t]);
            const __m128i d = _mm_sub_epi32(s, _mm_set1_epi32(asum[t]));
            _mm_storel_epi64((__m128i *)(out + t * out_stride), d);
        } else {
            for (int r = 0; r < R; r++) {
                const __m128i s = tq_hsum4_epi32_avx2(acc[r][t], acc[r][t], acc[r][t], acc[r][t]);
                out[t * out_stride + r] = _mm_cvtsi128_si32(s) - asum[t];
            }
        }
    }
}

/* The full 2 x 4 tile. The generic tile widens every (row, token) sum to int32 once per block
 * (vpmaddwd + vpaddd, 2 of its 9 instructions per row, token and block), and gcc keeps 6 of its 8
 * int32 accumulators on the stack (a load and a store each per block). Here the 8 sums stay int16
 * in registers for TQ_AVX2_I16_BLOCKS blocks (each maddubs adds a pair sum within [-512, 508] to a
 * lane: 4 per block, 16 blocks within [-32768, 32512]) before they are widened: 8 instructions per
 * row, token and block (4 maddubs, 4 adds) plus each row's decoding (7 per block, shared by the 4
 * tokens). 8 sums + 4 codes + the mask + a product use 14 of the 16 registers, so the adds must
 * stay where they are written: gcc (12, -O3) otherwise regroups them into trees of maddubs
 * results, hoists the maddubs and spills. An empty asm that claims to change the four sums after
 * each field pins them (TQ_REG_BARRIER4). */

/* One row's block: decode its codes, add code x activation pair sums of tokens 0-3 into s[0..3]. */
#define TQ_AVX2_ROW_BLOCK(wr, s)                                                                           \
    do {                                                                                                   \
        const __m256i q = _mm256_loadu_si256((const __m256i *)((wr) + (size_t)b * TQ_QK_BYTES));            \
        const __m256i c[4] = {_mm256_and_si256(_mm256_srli_epi16(q, 6), m3), _mm256_and_si256(_mm256_srli_epi16(q, 4), m3), \
                              _mm256_and_si256(_mm256_srli_epi16(q, 2), m3), _mm256_and_si256(q, m3)};       \
        for (int f = 0; f < 4; f++) {                                                                      \
            for (int t = 0; t < TQ_GEMM_TOKS; t++)                                                         \
                s[t] = _mm256_add_epi16(s[t], _mm256_maddubs_epi16(c[f], _mm256_loadu_si256((const __m256i *)(ab + t * a_stride + 32 * f)))); \
            TQ_REG_BARRIER4(s[0], s[1], s[2], s[3]);                                                       \
        }                                                                                                  \
    } while (0)

TQ_NOINLINE void tq_gemm_tile24_avx2(const uint8_t *w, size_t stride, int nb, const int8_t *a, size_t a_stride,
                                     const int32_t *asum, int32_t *out, size_t out_stride) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[2][TQ_GEMM_TOKS]; /* int32 x 8 per (row, token) */
    for (int t = 0; t < TQ_GEMM_TOKS; t++) acc[0][t] = acc[1][t] = _mm256_setzero_si256();
    for (int b0 = 0; b0 < nb; b0 += TQ_AVX2_I16_BLOCKS) {
        const int b1 = nb - b0 > TQ_AVX2_I16_BLOCKS ? b0 + TQ_AVX2_I16_BLOCKS : nb;
        __m256i s0[TQ_GEMM_TOKS], s1[TQ_GEMM_TOKS]; /* int16 x 16 per (row, token) */
        for (int t = 0; t < TQ_GEMM_TOKS; t++) s0[t] = s1[t] = _mm256_setzero_si256();
        for (int b = b0; b < b1; b++) {
            const int8_t *ab = a + (size_t)b * TQ_QK;
            TQ_AVX2_ROW_BLOCK(w, s0);
            TQ_AVX2_ROW_BLOCK(w + stride, s1);
        }
        for (int t = 0; t < TQ_GEMM_TOKS; t++) {
            acc[0][t] = _mm256_add_epi32(acc[0][t], _mm256_madd_epi16(s0[t], ones));
            acc[1][t] = _mm256_add_epi32(acc[1][t], _mm256_madd_epi16(s1[t], ones));
        }
    }
    for (int t = 0; t < TQ_GEMM_TOKS; t++) {
        const __m128i s4 = tq_hsum4_epi32_avx2(acc[0][t], acc[1][t], acc[0][t], acc[1][t]);
        _mm_storel_epi64((__m128i *)(out + t * out_stride), _mm_sub_epi32(s4, _mm_set1_epi32(asum[t])));
    }
}

TQ_GEMM_TILE_ANY_FULL(tq_gemm_tile_any_avx2, , tq_gemm_tile_avx2, TQ_AVX2_GEMM_ROWS, tq_gemm_tile24_avx2)

void tq_gemm_avx2(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride, const int32_t *asum,
                  int ntok, int32_t *out, size_t out_stride) {
    tq_gemm_drive(tq_gemv_avx2, tq_gemm_tile_any_avx2, TQ_AVX2_GEMM_ROWS, w, rows, nb, a, a_stride, asum, ntok,
                  out, out_stride);
}

/* ---- AVX-VNNI: the ternary GEMV and GEMM with vpdpbusd on YMM -----------------------------------
 *
 * Intel's client cores since Alder Lake (and AMD's since Zen 5) have AVX-VNNI but many have no
 * AVX-512: vpdpbusd multiplies 4 code bytes by 4 activation bytes and adds them to an int32 lane in
 * one instruction, where AVX2 needs vpmaddubsw + vpaddw and an int16 stage widened every 16 blocks.
 * The codes are decoded as above; the int32 lanes cannot saturate (a GEMM lane gains at most 4096
 * a block) and integer sums do not depend on their order, so the results are tq_gemv_scalar's.
 * The functions carry their own target attribute (this file is built with -mavx2 only), and
 * tq_kernels_avx2() hands out the "avxvnni" table only when cpu.c saw TQ_CPU_AVXVNNI.
 * TQ_EMULATE_AVXVNNI (test builds only, tests/kernels/test_x86_emulated.py) takes vpdpbusd from an
 * exact AVX2 emulation so the table is checked on any CPU. Other compilers (gcc < 11, clang < 12 or
 * Apple clang < 13, and MSVC, whose support for the intrinsic was never built or tested here) build
 * the AVX2 table alone. */
#if defined(TQ_EMULATE_AVXVNNI)
#include "tq_emul_avxvnni.h"
#define TQ_AVXVNNI_CC 1
#define TQ_AVXVNNI
#define TQ_DPBUSD(acc, u, s) tq_emul_dpbusd(acc, u, s)
#elif (defined(__clang__) && __clang_major__ >= (defined(__apple_build_version__) ? 13 : 12)) || \
    (defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11)
#define TQ_AVXVNNI_CC 1
#define TQ_AVXVNNI __attribute__((target("avxvnni")))
#define TQ_DPBUSD(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#else
#define TQ_AVXVNNI_CC 0
#endif

#if TQ_AVXVNNI_CC
/* GEMV: R (1..4) rows per call in the AVX2 GEMV's order (tq_gemv_rows_avx2): the rows one after
 * another, each from its first block to its last, so that a thread reads one linear stream, with
 * one software prefetch per 64-byte line TQ_GEMV_PREFETCH_LEAD ahead. That order read memory
 * best on the x86 CPUs measured here, neither with AVX-VNNI: the AVX2 GEMV on a Zen 3 VM, and the
 * same single stream (an interleaved-rows layout) on a Zen 4 VM (benchmarks/micro/row_streams.c).
 * It has not been timed on a CPU with AVX-VNNI. vpdpbusd has a latency of ~5 cycles, so a row's
 * sums run in 8 independent chains, h[] and l[]: two blocks a step, one chain per block and field
 * pair. Codes from tq_codes_gemv_avx2: fields 7-6 and 3-2 come as 4 x the codes, so the h chains
 * are exact multiples of 4, shifted down when flushed. The sums are pinned after each step (see
 * TQ_REG_BARRIER4): gcc 12 -O3 then compiles a step to 25 instructions (8 vpdpbusd) with no stack
 * access and no register copies, against 38 with 3 stack stores and 11 copies unpinned; the
 * earlier 4-row form (R streams, 8 chains over 4 rows) took 58 instructions and 3 stack accesses
 * per 16 vpdpbusd. A lane of a chain gains at most 4 * 12 * 128 = 6144 in magnitude per step;
 * flushing every TQ_AVXVNNI_FLUSH_BLOCKS blocks keeps far within int32 and lets the test vectors
 * (33 blocks) reach the flush. */
#define TQ_AVXVNNI_FLUSH_BLOCKS 32
TQ_INLINE TQ_AVXVNNI void tq_gemv_rows_avxvnni(const uint8_t *w, size_t stride, int nb, const int8_t *a, int32_t asum,
                                               int32_t *out, const int R) {
    const __m256i m3 = _mm256_set1_epi8(3), m12 = _mm256_set1_epi8(12);
    __m256i acc[TQ_AVX2_GEMV_ROWS];
    for (int r = 0; r < R; r++) {
        const uint8_t *wr = w + r * stride;
        __m256i s32 = _mm256_setzero_si256();
        for (int b0 = 0; b0 < nb; b0 += TQ_AVXVNNI_FLUSH_BLOCKS) {
            const int b1 = nb - b0 > TQ_AVXVNNI_FLUSH_BLOCKS ? b0 + TQ_AVXVNNI_FLUSH_BLOCKS : nb;
            __m256i h[4], l[4]; /* [2 * (block in the step) + (field pair)] */
            for (int k = 0; k < 4; k++) h[k] = l[k] = _mm256_setzero_si256();
#define TQ_VNNI_GEMV_BLOCK(b, k)                                                                           \
    do {                                                                                                   \
        const int8_t *ab = a + (size_t)(b) * TQ_QK;                                                        \
        __m256i c[4];                                                                                      \
        tq_codes_gemv_avx2(_mm256_loadu_si256((const __m256i *)(wr + (size_t)(b) * TQ_QK_BYTES)), m3, m12, c); \
        h[k] = TQ_DPBUSD(h[k], c[0], _mm256_loadu_si256((const __m256i *)ab));                             \
        l[k] = TQ_DPBUSD(l[k], c[1], _mm256_loadu_si256((const __m256i *)(ab + 32)));                      \
        h[k + 1] = TQ_DPBUSD(h[k + 1], c[2], _mm256_loadu_si256((const __m256i *)(ab + 64)));              \
        l[k + 1] = TQ_DPBUSD(l[k + 1], c[3], _mm256_loadu_si256((const __m256i *)(ab + 96)));              \
    } while (0)
            int b = b0;
            for (; b + 2 <= b1; b += 2) { /* one prefetch per 64-byte line */
                _mm_prefetch((const char *)wr + TQ_GEMV_PREFETCH_LEAD + (size_t)b * TQ_QK_BYTES, _MM_HINT_T0);
                TQ_VNNI_GEMV_BLOCK(b, 0);
                TQ_VNNI_GEMV_BLOCK(b + 1, 2);
                TQ_REG_BARRIER4(h[0], h[1], h[2], h[3]);
                TQ_REG_BARRIER4(l[0], l[1], l[2], l[3]);
            }
            if (b < b1) {
                _mm_prefetch((const char *)wr + TQ_GEMV_PREFETCH_LEAD + (size_t)b * TQ_QK_BYTES, _MM_HINT_T0);
                TQ_VNNI_GEMV_BLOCK(b, 0);
            }
#undef TQ_VNNI_GEMV_BLOCK
            const __m256i hs = _mm256_add_epi32(_mm256_add_epi32(h[0], h[1]), _mm256_add_epi32(h[2], h[3]));
            const __m256i ls = _mm256_add_epi32(_mm256_add_epi32(l[0], l[1]), _mm256_add_epi32(l[2], l[3]));
            s32 = _mm256_add_epi32(s32, _mm256_add_epi32(ls, _mm256_srai_epi32(hs, 2)));
        }
        acc[r] = s32;
    }
    if (R == 4) {
        const __m128i s = tq_hsum4_epi32_avx2(acc[0], acc[1], acc[2], acc[3]);
        _mm_storeu_si128((__m128i *)out, _mm_sub_epi32(s, _mm_set1_epi32(asum)));
    } else {
        for (int r = 0; r < R; r++) out[r] = _mm_cvtsi128_si32(tq_hsum4_epi32_avx2(acc[r], acc[r], acc[r], acc[r])) - asum;
    }
}

TQ_GEMV_BY_ROWS(tq_gemv_avxvnni, TQ_AVXVNNI, tq_gemv_rows_avxvnni, TQ_AVX2_GEMV_ROWS)

/* GEMM tile: R (1..2) rows x T (1..4) tokens, up to 8 int32 accumulators and 8 independent
 * vpdpbusd chains; the activations are memory operands. The full 2 x 4 case is
 * tq_gemm_tile24_avxvnni below: this generic form compiled it (gcc 12, -O3) to 64 instructions per
 * block (32 vpdpbusd) with 2 stack stores and 12 register copies. (A 3 x 4 tile, 12 chains, ran
 * out of registers under gcc: 19-36 stack accesses per block in every form tried; clang managed it
 * without.) */
#define TQ_AVXVNNI_GEMM_ROWS 2
TQ_INLINE TQ_AVXVNNI void tq_gemm_tile_avxvnni(const uint8_t *w, size_t stride, int nb, const int8_t *a,
                                               size_t a_stride, const int32_t *asum, int32_t *out,
                                               size_t out_stride, const int R, const int T) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i acc[TQ_AVXVNNI_GEMM_ROWS][TQ_GEMM_TOKS];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_si256();
    for (int b = 0; b < nb; b++) {
        const int8_t *ab = a + (size_t)b * TQ_QK;
        for (int f = 0; f < 4; f++) {
            for (int r = 0; r < R; r++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(w + r * stride + (size_t)b * TQ_QK_BYTES));
                const __m256i c = _mm256_and_si256(f == 3 ? q : _mm256_srli_epi16(q, 6 - 2 * f), m3);
                for (int t = 0; t < T; t++)
                    acc[r][t] = TQ_DPBUSD(acc[r][t], c, _mm256_loadu_si256((const __m256i *)(ab + t * a_stride + 32 * f)));
            }
        }
    }
    for (int t = 0; t < T; t++) {
        const __m128i s = tq_hsum4_epi32_avx2(acc[0][t], acc[R - 1][t], acc[0][t], acc[R - 1][t]);
        const __m128i d = _mm_sub_epi32(s, _mm_set1_epi32(asum[t]));
        if (R == 2)
            _mm_storel_epi64((__m128i *)(out + t * out_stride), d);
        else
            out[t * out_stride] = _mm_cvtsi128_si32(d);
    }
}

/* The full 2 x 4 tile written out, its 8 sums pinned after each field and reduced without a loop
 * over the tokens: 52 instructions per block (32 vpdpbusd, 2 loads and 6 shifts/ANDs per row),
 * no stack access and no register copies (gcc 12, -O3; against 90 for tq_gemm_tile24_avx2). Not
 * timed: no CPU with AVX-VNNI here. */
TQ_NOINLINE TQ_AVXVNNI void tq_gemm_tile24_avxvnni(const uint8_t *w, size_t stride, int nb, const int8_t *a,
                                                   size_t a_stride, const int32_t *asum, int32_t *out,
                                                   size_t out_stride) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i s0[TQ_GEMM_TOKS], s1[TQ_GEMM_TOKS];
    for (int t = 0; t < TQ_GEMM_TOKS; t++) s0[t] = s1[t] = _mm256_setzero_si256();
    for (int b = 0; b < nb; b++) {
        const int8_t *ab = a + (size_t)b * TQ_QK;
        const __m256i q0 = _mm256_loadu_si256((const __m256i *)(w + (size_t)b * TQ_QK_BYTES));
        const __m256i q1 = _mm256_loadu_si256((const __m256i *)(w + stride + (size_t)b * TQ_QK_BYTES));
        for (int f = 0; f < 4; f++) {
            const __m256i c0 = _mm256_and_si256(f == 3 ? q0 : _mm256_srli_epi16(q0, 6 - 2 * f), m3);
            const __m256i c1 = _mm256_and_si256(f == 3 ? q1 : _mm256_srli_epi16(q1, 6 - 2 * f), m3);
            for (int t = 0; t < TQ_GEMM_TOKS; t++) {
                const __m256i at = _mm256_loadu_si256((const __m256i *)(ab + t * a_stride + 32 * f));
                s0[t] = TQ_DPBUSD(s0[t], c0, at);
                s1[t] = TQ_DPBUSD(s1[t], c1, at);
            }
            TQ_REG_BARRIER4(s0[0], s0[1], s0[2], s0[3]);
            TQ_REG_BARRIER4(s1[0], s1[1], s1[2], s1[3]);
        }
    }
    /* both rows' sums of tokens 0-1 and of 2-3 in one pass each (written out: with a loop over t gcc
     * kept s0 and s1 in memory, storing all 8 sums every block) */
    const __m256i h01 = _mm256_hadd_epi32(_mm256_hadd_epi32(s0[0], s1[0]), _mm256_hadd_epi32(s0[1], s1[1]));
    const __m256i h23 = _mm256_hadd_epi32(_mm256_hadd_epi32(s0[2], s1[2]), _mm256_hadd_epi32(s0[3], s1[3]));
    /* per 128-bit lane: (t0 r0, t0 r1, t1 r0, t1 r1); the two lanes' halves added */
    const __m128i t01 = _mm_add_epi32(_mm256_castsi256_si128(h01), _mm256_extracti128_si256(h01, 1));
    const __m128i t23 = _mm_add_epi32(_mm256_castsi256_si128(h23), _mm256_extracti128_si256(h23, 1));
    const __m128i a01 = _mm_setr_epi32(asum[0], asum[0], asum[1], asum[1]);
    const __m128i a23 = _mm_setr_epi32(asum[2], asum[2], asum[3], asum[3]);
    const __m128i d01 = _mm_sub_epi32(t01, a01), d23 = _mm_sub_epi32(t23, a23);
    _mm_storel_epi64((__m128i *)out, d01);
    _mm_storel_epi64((__m128i *)(out + out_stride), _mm_unpackhi_epi64(d01, d01));
    _mm_storel_epi64((__m128i *)(out + 2 * out_stride), d23);
    _mm_storel_epi64((__m128i *)(out + 3 * out_stride), _mm_unpackhi_epi64(d23, d23));
}

TQ_GEMM_TILE_ANY_FULL(tq_gemm_tile_any_avxvnni, TQ_AVXVNNI, tq_gemm_tile_avxvnni, TQ_AVXVNNI_GEMM_ROWS,
                      tq_gemm_tile24_avxvnni)

static TQ_AVXVNNI void tq_gemm_avxvnni(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride,
                                       const int32_t *asum, int ntok, int32_t *out, size_t out_stride) {
    tq_gemm_drive(tq_gemv_avxvnni, tq_gemm_tile_any_avxvnni, TQ_AVXVNNI_GEMM_ROWS, w, rows, nb, a, a_stride, asum,
                  ntok, out, out_stride);
}
#endif

/* Same result as tq_quant_act_scalar bit for bit: max|x| is exact in any order (NaN-free input),
 * s is computed by the same scalar expression, x * s is one IEEE multiply either way, and
 * _MM_FROUND_TO_NEAREST_INT rounds half to even like nearbyintf in the default mode. |x * s| is at
 * most 127 (+1 ulp), so the clamp never bites; it is kept for symmetry with the spec. */
TQ_INLINE __m256i tq_quant8_avx2(const float *x, __m256 s, __m256 lo, __m256 hi) {
    const __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x), s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
}

float tq_quant_act_avx2(const float *x, int n, int npad, int8_t *q, int32_t *sum) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + i), absmask));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4);
    for (; i < n; i++) {
        const float v = fabsf(x[i]);
        if (v > amax) amax = v;
    }
    const float s = 127.0f * (1.0f / (amax > 1e-5f ? amax : 1e-5f)); /* torch: 127 / t is t.reciprocal() * 127 */
    const __m256 sv = _mm256_set1_ps(s), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
    /* packs_epi32 / packs_epi16 interleave the 128-bit lanes; this restores element order. */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i acc = _mm256_setzero_si256(); /* int32 x 8 */
    i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i r0 = tq_quant8_avx2(x + i, sv, lo, hi), r1 = tq_quant8_avx2(x + i + 8, sv, lo, hi);
        const __m256i r2 = tq_quant8_avx2(x + i + 16, sv, lo, hi), r3 = tq_quant8_avx2(x + i + 24, sv, lo, hi);
        acc = _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_add_epi32(r0, r1), _mm256_add_epi32(r2, r3)));
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(r0, r1), _mm256_packs_epi32(r2, r3));
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(p, order));
    }
    for (; i + 8 <= n; i += 8) {
        const __m256i r = tq_quant8_avx2(x + i, sv, lo, hi);
        acc = _mm256_add_epi32(acc, r);
        const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        _mm_storel_epi64((__m128i *)(q + i), _mm_packs_epi16(p16, p16));
    }
    int32_t total = _mm_cvtsi128_si32(tq_hsum4_epi32_avx2(acc, acc, acc, acc));
    for (; i < n; i++) { /* the spec's own code for the tail */
        float v = nearbyintf(x[i] * s);
        if (v > 127.0f) v = 127.0f;
        if (v < -128.0f) v = -128.0f;
        q[i] = (int8_t)v;
        total += q[i];
    }
    if (npad > n) memset(q + n, 0, (size_t)(npad - n));
    *sum = total;
    return s;
}

/* One row at a time, one linear stream (see tq_f16_gemv_avx512). With 8 lanes a single FMA chain
 * would cap a row at ~15 GB/s: measured on the 128256 x 2560 head (one thread, Zen 4, 2 MiB pages)
 * 16.9 GB/s with one chain, 27.0-27.9 with two, 28.0-28.7 with four. On a Zen 3 VM without AVX-512
 * (where this is the head's kernel; a plain read 12-17 GB/s) two chains with a software prefetch
 * 1 KiB ahead read best: 83.8-86.7% of a plain read against 79.3-79.4% for four chains without
 * (medians of 15-25 rounds; four chains with the prefetch 76.7-78.1%, prefetching 2-4 KiB ahead
 * 67-72%), and decode at one thread went from 77 / 77 / 77% to 79 / 80 / 84% of the bandwidth
 * of the same moment in alternating runs (`benchmarks/bw_states.py`). Two 64-byte lines a step
 * (both prefetches first) rather than one: `benchmarks/kernel_bw.py`, alternating builds on the Zen 3
 * VM, 86-87% -> 91-95% of the probe at one thread and 90% -> 93-95% at two (five pairs of 25 s runs);
 * the sums are added in the same order, so the results are the same. On an Intel Xeon (family 6
 * model 207) 1 KiB ahead read 87-90% of a plain read and 4 KiB 105% (2 KiB 100%), so the lead is
 * 4 KiB where tq_head_prefetch_far() says so (`lead`; the sums do not change). The column tail goes
 * through zero-padded copies (no masked loads in AVX2). */
TQ_INLINE void tq_f16_gemv_avx2_lead(const uint16_t *w, int rows, int cols, const float *x, float *out,
                                     const int lead) {
    for (int r = 0; r < rows; r++, w += cols) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int i = 0;
#define TQ_F16_LINE(i)                                                                                               \
    do {                                                                                                             \
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + (i)))), _mm256_loadu_ps(x + (i)), a0); \
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + (i) + 8))), _mm256_loadu_ps(x + (i) + 8), a1); \
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + (i) + 16))), _mm256_loadu_ps(x + (i) + 16), a0); \
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + (i) + 24))), _mm256_loadu_ps(x + (i) + 24), a1); \
    } while (0)
        for (; i + 64 <= cols; i += 64) { /* the prefetches may run past the row end: harmless */
            _mm_prefetch((const char *)(w + i) + lead, _MM_HINT_T0);
            _mm_prefetch((const char *)(w + i + 32) + lead, _MM_HINT_T0);
            TQ_F16_LINE(i);
            TQ_F16_LINE(i + 32);
        }
        if (i + 32 <= cols) {
            _mm_prefetch((const char *)(w + i) + lead, _MM_HINT_T0);
            TQ_F16_LINE(i);
            i += 32;
        }
#undef TQ_F16_LINE
        for (; i < cols; i += 8) {
            uint16_t wt[8] = {0};
            float xt[8] = {0};
            const int n = cols - i < 8 ? cols - i : 8;
            memcpy(wt, w + i, (size_t)n * sizeof(uint16_t));
            memcpy(xt, x + i, (size_t)n * sizeof(float));
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)wt)), _mm256_loadu_ps(xt), a0);
        }
        out[r] = tq_hsum(_mm256_add_ps(a0, a1));
    }
}

#define TQ_AVX2_HEAD_LEAD 1024     /* bytes: AMD (Zen 3) */
#define TQ_AVX2_HEAD_LEAD_FAR 4096 /* elsewhere */

void tq_f16_gemv_avx2(const uint16_t *w, int rows, int cols, const float *x, float *out) {
    tq_f16_gemv_avx2_lead(w, rows, cols, x, out, TQ_AVX2_HEAD_LEAD);
}

static void tq_f16_gemv_avx2_far(const uint16_t *w, int rows, int cols, const float *x, float *out) {
    tq_f16_gemv_avx2_lead(w, rows, cols, x, out, TQ_AVX2_HEAD_LEAD_FAR);
}

/* Eight KV elements from element idx: f32 (h = 0), f16 widened by F16C (h = 1) or int8 codes
 * widened (h = 2). */
TQ_INLINE __m256 tq_kv8(const void *rows, size_t idx, const int h) {
    if (h == 2) /* eight int8 codes, widened */
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)rows + idx))));
    return h ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)rows + idx)))
             : _mm256_loadu_ps((const float *)rows + idx);
}

/* Four keys at a time, each one FMA chain over its row, the rows read one after another; then single
 * keys (two chains each); columns past the last multiple of 8 in scalar. h: f32, f16 or int8 rows
 * (tq_kv8). */
TQ_INLINE void tq_dots_avx2(const void *rows, size_t stride, int len, const float *x, int n, float *out,
                            const int h) {
    const int body = n & ~7;
    int j = 0;
    for (; j + 4 <= len; j += 4) {
        /* memory order in the head-major cache (see tq_avx512.c); the out-of-order core overlaps the
         * four chains */
        const size_t r = (size_t)j * stride;
        float s[4];
        for (int q = 0; q < 4; q++) {
            __m256 a = _mm256_setzero_ps();
            for (int i = 0; i < body; i += 8) a = _mm256_fmadd_ps(tq_kv8(rows, r + q * stride + i, h), _mm256_loadu_ps(x + i), a);
            s[q] = tq_hsum(a);
        }
        tq_dots4_finish(rows, r, stride, x, body, n, s, out + j, h);
    }
    for (; j < len; j++) {
        const size_t r = (size_t)j * stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int i = 0;
        for (; i + 16 <= body; i += 16) {
            a0 = _mm256_fmadd_ps(tq_kv8(rows, r + i, h), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(tq_kv8(rows, r + i + 8, h), _mm256_loadu_ps(x + i + 8), a1);
        }
        if (i < body) a0 = _mm256_fmadd_ps(tq_kv8(rows, r + i, h), _mm256_loadu_ps(x + i), a0);
        float s0 = tq_hsum(_mm256_add_ps(a0, a1));
        for (i = body; i < n; i++) s0 += tq_kv_elem(rows, r + i, h) * x[i];
        out[j] = s0;
    }
}

/* 64 output columns at a time in eight registers (eight FMA chains; a 128-wide head's value rows are
 * then read in two passes instead of four), then 32, then 8 at a time, then scalar. */
TQ_INLINE void tq_wsum_avx2(const void *rows, size_t stride, int len, const float *w, int n, float *out,
                            const int h) {
    int c = 0;
    for (; c + 64 <= n; c += 64) {
        __m256 a[8];
        for (int b = 0; b < 8; b++) a[b] = _mm256_setzero_ps();
        for (int j = 0; j < len; j++) {
            const size_t r = (size_t)j * stride + c;
            const __m256 wj = _mm256_set1_ps(w[j]);
            for (int b = 0; b < 8; b++) a[b] = _mm256_fmadd_ps(wj, tq_kv8(rows, r + 8 * b, h), a[b]);
        }
        for (int b = 0; b < 8; b++) _mm256_storeu_ps(out + c + 8 * b, a[b]);
    }
    for (; c + 32 <= n; c += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int j = 0; j < len; j++) {
            const size_t r = (size_t)j * stride + c;
            const __m256 wj = _mm256_set1_ps(w[j]);
            a0 = _mm256_fmadd_ps(wj, tq_kv8(rows, r, h), a0);
            a1 = _mm256_fmadd_ps(wj, tq_kv8(rows, r + 8, h), a1);
            a2 = _mm256_fmadd_ps(wj, tq_kv8(rows, r + 16, h), a2);
            a3 = _mm256_fmadd_ps(wj, tq_kv8(rows, r + 24, h), a3);
        }
        _mm256_storeu_ps(out + c, a0);
        _mm256_storeu_ps(out + c + 8, a1);
        _mm256_storeu_ps(out + c + 16, a2);
        _mm256_storeu_ps(out + c + 24, a3);
    }
    for (; c + 8 <= n; c += 8) {
        __m256 a0 = _mm256_setzero_ps();
        for (int j = 0; j < len; j++)
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), tq_kv8(rows, (size_t)j * stride + c, h), a0);
        _mm256_storeu_ps(out + c, a0);
    }
    tq_wsum_columns(rows, stride, len, w, c, n, out, h);
}

TQ_KV_KERNELS(avx2)

static void tq_scale_out_avx2(const int32_t *acc, int n, float sa, const float *scale, float *out) {
    const __m256 s = _mm256_set1_ps(sa);
    int r = 0;
    for (; r + 8 <= n; r += 8) {
        const __m256 a = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(acc + r)));
        _mm256_storeu_ps(out + r, _mm256_mul_ps(_mm256_div_ps(a, s), _mm256_loadu_ps(scale + r)));
    }
    for (; r < n; r++) out[r] = ((float)acc[r] / sa) * scale[r];
}

TQ_INLINE __m256 tq_exp256(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(TQ_EXP_LO));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(TQ_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(TQ_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(TQ_LN2_LO), r);
    __m256 y = _mm256_set1_ps(TQ_EXP_P0);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(TQ_EXP_P1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(TQ_EXP_P2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(TQ_EXP_P3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(TQ_EXP_P4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(TQ_EXP_P5));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n from the exponent bits: n is in [-126, 0] for x in [TQ_EXP_LO, 0] */
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static void tq_softmax_avx2(float *x, int n, float scale) {
    const __m256 sc = _mm256_set1_ps(scale);
    const int body = n & ~7;
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (int j = 0; j < body; j += 8) {
        const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j), sc);
        _mm256_storeu_ps(x + j, v);
        m = _mm256_max_ps(m, v);
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    const float mx = tq_softmax_scale_max(x, body, n, scale, _mm_cvtss_f32(h));
    const __m256 mv = _mm256_set1_ps(mx);
    __m256 s = _mm256_setzero_ps();
    for (int j = 0; j < body; j += 8) {
        const __m256 e = tq_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv));
        _mm256_storeu_ps(x + j, e);
        s = _mm256_add_ps(s, e);
    }
    const float inv = 1.0f / tq_softmax_exp_sum(x, body, n, mx, tq_hsum(s));
    const __m256 iv = _mm256_set1_ps(inv);
    for (int j = 0; j < body; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), iv));
    tq_softmax_normalize(x, body, n, inv);
}

/* The AVX2 table and the AVX-VNNI one differ only in the ternary GEMV and GEMM; each comes with the
 * head GEMV's two prefetch distances. */
#define TQ_AVX2_TABLE(NAME, ISA, GEMV, GEMM, F16, LEAD)                                                 \
    static const tq_kernels NAME = {ISA, GEMV, GEMM, tq_quant_act_avx2, F16, tq_f32_dots_avx2,         \
                                    tq_f32_wsum_avx2, tq_scale_out_avx2, tq_softmax_avx2, tq_f16_dots_avx2,  \
                                    tq_f16_wsum_avx2, tq_q8_dots_avx2, tq_q8_wsum_avx2, LEAD,           \
                                    tq_b3_gemv_scalar, tq_b3_gemm_scalar, 0} /* B3: never loaded here */

TQ_AVX2_TABLE(tq_avx2_table, "avx2", tq_gemv_avx2, tq_gemm_avx2, tq_f16_gemv_avx2, TQ_AVX2_HEAD_LEAD);
TQ_AVX2_TABLE(tq_avx2_far_table, "avx2", tq_gemv_avx2, tq_gemm_avx2, tq_f16_gemv_avx2_far, TQ_AVX2_HEAD_LEAD_FAR);
#if TQ_AVXVNNI_CC
TQ_AVX2_TABLE(tq_avxvnni_table, "avxvnni", tq_gemv_avxvnni, tq_gemm_avxvnni, tq_f16_gemv_avx2, TQ_AVX2_HEAD_LEAD);
TQ_AVX2_TABLE(tq_avxvnni_far_table, "avxvnni", tq_gemv_avxvnni, tq_gemm_avxvnni, tq_f16_gemv_avx2_far,
              TQ_AVX2_HEAD_LEAD_FAR);
#endif

/* "avxvnni" where the CPU has AVX-VNNI (or the test build emulates it), unless TRIT_NO_VNNI=1; the
 * head GEMV's form by tq_head_prefetch_far(). */
const tq_kernels *tq_kernels_avx2(void) {
#if TQ_AVXVNNI_CC
#if defined(TQ_EMULATE_AVXVNNI)
    const int have_vnni = 1;
#else
    const int have_vnni = (tq_cpu_features() & TQ_CPU_AVXVNNI) != 0;
#endif
    if (have_vnni && !tq_env_flag("TRIT_NO_VNNI"))
        return tq_head_prefetch_far() ? &tq_avxvnni_far_table : &tq_avxvnni_table;
#endif
    return tq_head_prefetch_far() ? &tq_avx2_far_table : &tq_avx2_table;
}

#else /* not x86-64 */

const tq_kernels *tq_kernels_avx2(void) { return 0; }

#endif
