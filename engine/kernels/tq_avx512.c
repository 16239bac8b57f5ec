/* AVX-512 kernels: two tables, "avx512vnni" and "avx512" (F/BW/VL without VNNI).
 *
 * The file is built with -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma -mf16c but NOT -mavx512vnni:
 * a CPU with AVX-512 F/BW/VL and no VNNI (Skylake-X) must never execute a VNNI instruction, so only
 * the functions marked TQ_VNNI may use it, and tq_kernels_avx512() hands out the VNNI table only
 * when cpu.c saw TQ_CPU_AVX512VNNI. (MSVC needs no per-function target: its intrinsics are always
 * available, and the run-time pick is the same.)
 *
 * Ternary blocks: one 32-byte block (tq.h) is broadcast into both halves of a ZMM register. Byte j
 * holds values j, j+32, j+64, j+96 in bits 7-6, 5-4, 3-2, 1-0, so with the low half giving field
 * 7-6 and the high half field 5-4, the codes line up with the contiguous activations a[0..63]; the
 * 3-2 / 1-0 fields line up with a[64..127]. No activation shuffles are needed.
 * On any other architecture this file compiles to a table that reports the path as absent. */
#include "tq.h"
#include "tq_attn.h"
#include "tq_gemm.h"

#if defined(__x86_64__) || defined(_M_X64)

#if defined(TQ_SIMDE_AVX512)
/* Test builds only (tests/kernels/test_x86_emulated.py, with -I tests/kernels): the AVX-512
 * intrinsics come from SIMDe's portable implementations, so this file's two tables run, and are
 * checked against numpy, on CPUs without AVX-512. Never set by setup.py. */
#include "tq_simde_avx512.h"
#else
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(_MSC_VER) && !defined(__clang__)
#define TQ_INLINE static __forceinline
#define TQ_NOINLINE static __declspec(noinline)
#define TQ_VNNI
#else
#define TQ_INLINE static inline __attribute__((always_inline))
#define TQ_NOINLINE static __attribute__((noinline))
#if defined(TQ_SIMDE_AVX512)
#define TQ_VNNI
#else
#define TQ_VNNI __attribute__((target("avx512vnni")))
#endif
#endif

#define TQ_512_GEMV_ROWS 4
/* AVX-512BW GEMM tile: 4 rows x 4 tokens = 16 int32 accumulators (the VNNI GEMM: tq_unpacked_gemm). */
#define TQ_512_GEMM_ROWS 4
#define TQ_512_GEMM_TOKS TQ_GEMM_TOKS

/* VNNI GEMV: the fields are masked in place, not shifted: field 7-6 is code << 6 (0, 64, 128) and
 * so on, still a valid unsigned byte for vpdpbusd, whose int32 lanes cannot saturate. Each lane
 * then holds 64x, 16x, 4x or 1x its true sum, an exact multiple, undone by an arithmetic shift per
 * half (6 / 4 and 2 / 0). A lane gains at most 4 * 128 * 128 = 65536 in magnitude per block, so
 * the scaled lanes are shifted down and flushed every 16384 blocks (2^30 < 2^31).
 * Per row and block this is 2 AND + 2 vpdpbusd, against 2 shifts + 2 AND + 2 vpdpbusd. */
#define TQ_VNNI_FLUSH_BLOCKS 16384

/* AVX-512BW GEMV: int16 accumulation across blocks. Per block a 16-bit lane gains two maddubs
 * pair sums, each within [-512, 508] (codes <= 2, |a| <= 128): [-1024, 1016]; 32 blocks stay
 * within [-32768, 32512]. */
#define TQ_512_I16_BLOCKS 32

/* low half: value from the low 256 bits, high half: from the high 256 bits */
TQ_INLINE __m512i tq_halves_epi8(char lo, char hi) {
    return _mm512_inserti64x4(_mm512_set1_epi8(lo), _mm256_set1_epi8(hi), 1);
}
TQ_INLINE __m512i tq_halves_epi32(int lo, int hi) {
    return _mm512_inserti64x4(_mm512_set1_epi32(lo), _mm256_set1_epi32(hi), 1);
}

TQ_INLINE __m512i tq_bcast_block(const uint8_t *p) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
}

/* Linear prefetch ahead of the next row group (TQ_GEMV_PREFETCH_LEAD in tq_gemm.h). Per block the
 * group consumes R * 32 bytes. l2 (a constant): into L2 (T1) instead of L1 (T0), the tables' far
 * form (tq_head_prefetch_far(): not on AMD). On the Intel VM (benchmarks/micro/gemv_lead.c, one
 * thread, % of the bandwidth probe, two rounds) T1 read 81-82% (2560 columns) and 87-88% (6912)
 * where T0 read 77% and 78%; the head's stream gained the same way (tq_f16_gemv_512). Zen 4 chose
 * T0 (its measurements of TQ_GEMV_PREFETCH_LEAD). */
TQ_INLINE void tq_prefetch_next_group(const uint8_t *w, size_t stride, int b, const int R, const int l2) {
    const char *pf = (const char *)w + R * stride + TQ_GEMV_PREFETCH_LEAD + (size_t)b * R * TQ_QK_BYTES;
    if (l2) {
        _mm_prefetch(pf, _MM_HINT_T1);
        if (R > 2) _mm_prefetch(pf + 64, _MM_HINT_T1);
    } else {
        _mm_prefetch(pf, _MM_HINT_T0);
        if (R > 2) _mm_prefetch(pf + 64, _MM_HINT_T0);
    }
}

/* Sums of four vectors' lanes, one int32 per 128-bit lane position: [a b c d] -> per 128-bit lane
 * partial sums of a, b, c, d in positions 0..3 of that lane. */
TQ_INLINE __m512i tq_hsum4_lanes(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

/* Lane r of the result: the sum of the 16 lanes of the r-th argument (one tree for four rows'
 * sums instead of four horizontal sums). */
TQ_INLINE __m128i tq_reduce4_epi32(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i h = tq_hsum4_lanes(a, b, c, d);
    const __m256i q = _mm256_add_epi32(_mm512_castsi512_si256(h), _mm512_extracti64x4_epi64(h, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
}

/* out[r] = the sum of tot[r]'s lanes - asum for r < R (R = 4: one tree, else horizontal sums) */
TQ_INLINE void tq_store_row_sums(const __m512i *tot, int32_t asum, int32_t *out, const int R) {
    if (R == 4) {
        const __m128i s = tq_reduce4_epi32(tot[0], tot[1], tot[2], tot[3]);
        _mm_storeu_si128((__m128i *)out, _mm_sub_epi32(s, _mm_set1_epi32(asum)));
    } else {
        for (int r = 0; r < R; r++) out[r] = _mm512_reduce_add_epi32(tot[r]) - asum;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* VNNI */

TQ_INLINE TQ_VNNI void tq_gemv_rows_vnni(const uint8_t *w, size_t stride, int nb, const int8_t *a, int32_t asum,
                                         int32_t *out, const int R, const int l2) {
    const __m512i m01 = tq_halves_epi8((char)0xc0, 0x30), m23 = tq_halves_epi8(0x0c, 0x03);
    const __m512i sh01 = tq_halves_epi32(6, 4), sh23 = tq_halves_epi32(2, 0);
    __m512i tot[TQ_512_GEMV_ROWS]; /* int32 x 16 per row, unscaled */
    for (int r = 0; r < R; r++) tot[r] = _mm512_setzero_si512();
    for (int b0 = 0; b0 < nb; b0 += TQ_VNNI_FLUSH_BLOCKS) {
        const int b1 = nb - b0 > TQ_VNNI_FLUSH_BLOCKS ? b0 + TQ_VNNI_FLUSH_BLOCKS : nb;
        __m512i s01[TQ_512_GEMV_ROWS], s23[TQ_512_GEMV_ROWS]; /* int32 x 16, scaled 64|16 and 4|1 */
        for (int r = 0; r < R; r++) s01[r] = s23[r] = _mm512_setzero_si512();
        for (int b = b0; b < b1; b++) {
            const int8_t *ab = a + (size_t)b * TQ_QK;
            const __m512i x01 = _mm512_loadu_si512((const void *)ab);        /* a[0..63]   */
            const __m512i x23 = _mm512_loadu_si512((const void *)(ab + 64)); /* a[64..127] */
            tq_prefetch_next_group(w, stride, b, R, l2);
            for (int r = 0; r < R; r++) {
                const __m512i q = tq_bcast_block(w + r * stride + (size_t)b * TQ_QK_BYTES);
                s01[r] = _mm512_dpbusd_epi32(s01[r], _mm512_and_si512(q, m01), x01);
                s23[r] = _mm512_dpbusd_epi32(s23[r], _mm512_and_si512(q, m23), x23);
            }
        }
        for (int r = 0; r < R; r++)
            tot[r] = _mm512_add_epi32(tot[r], _mm512_add_epi32(_mm512_srav_epi32(s01[r], sh01),
                                                               _mm512_srav_epi32(s23[r], sh23)));
    }
    tq_store_row_sums(tot, asum, out, R);
}

/* the GEMV in its two prefetch forms (tq_prefetch_next_group), for TQ_GEMV_BY_ROWS */
TQ_INLINE TQ_VNNI void tq_gemv_rows_vnni_l1(const uint8_t *w, size_t stride, int nb, const int8_t *a, int32_t asum,
                                            int32_t *out, const int R) {
    tq_gemv_rows_vnni(w, stride, nb, a, asum, out, R, 0);
}
TQ_INLINE TQ_VNNI void tq_gemv_rows_vnni_l2(const uint8_t *w, size_t stride, int nb, const int8_t *a, int32_t asum,
                                            int32_t *out, const int R) {
    tq_gemv_rows_vnni(w, stride, nb, a, asum, out, R, 1);
}
TQ_GEMV_BY_ROWS(tq_gemv_avx512vnni, TQ_VNNI, tq_gemv_rows_vnni_l1, TQ_512_GEMV_ROWS)
TQ_GEMV_BY_ROWS(tq_gemv_avx512vnni_far, TQ_VNNI, tq_gemv_rows_vnni_l2, TQ_512_GEMV_ROWS)

/* The AVX-512BW GEMM tile decodes with shifts (codes 0..2, one accumulator per row and token):
 * the decode is shared by T tokens. */
TQ_INLINE void tq_decode_block_512(const uint8_t *p, __m512i m3, __m512i sh01, __m512i sh23, __m512i *c01,
                                   __m512i *c23) {
    const __m512i q = tq_bcast_block(p);
    *c01 = _mm512_and_si512(_mm512_srlv_epi64(q, sh01), m3); /* values j | j + 32  */
    *c23 = _mm512_and_si512(_mm512_srlv_epi64(q, sh23), m3); /* values j + 64 | j + 96 */
}

/* Reduce a 4 x 4 tile of accumulators together (a transpose-and-add tree instead of 16 separate
 * horizontal sums): lane 4 t + r of the result is the sum of acc[r][t]. */
TQ_INLINE void tq_store_4x4(__m512i acc[TQ_512_GEMM_ROWS][TQ_512_GEMM_TOKS], const int32_t *asum, int32_t *out,
                            size_t out_stride) {
    __m512i w[4];
    for (int t = 0; t < 4; t++) w[t] = tq_hsum4_lanes(acc[0][t], acc[1][t], acc[2][t], acc[3][t]);
    const __m512i s01 = _mm512_add_epi32(_mm512_shuffle_i32x4(w[0], w[1], 0x88), _mm512_shuffle_i32x4(w[0], w[1], 0xdd));
    const __m512i s23 = _mm512_add_epi32(_mm512_shuffle_i32x4(w[2], w[3], 0x88), _mm512_shuffle_i32x4(w[2], w[3], 0xdd));
    const __m512i tot = _mm512_add_epi32(_mm512_shuffle_i32x4(s01, s23, 0x88), _mm512_shuffle_i32x4(s01, s23, 0xdd));
    const __m512i as = _mm512_permutexvar_epi32(_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
                                                _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)asum)));
    const __m512i res = _mm512_sub_epi32(tot, as);
    _mm_storeu_si128((__m128i *)(out), _mm512_castsi512_si128(res));
    _mm_storeu_si128((__m128i *)(out + out_stride), _mm512_extracti32x4_epi32(res, 1));
    _mm_storeu_si128((__m128i *)(out + 2 * out_stride), _mm512_extracti32x4_epi32(res, 2));
    _mm_storeu_si128((__m128i *)(out + 3 * out_stride), _mm512_extracti32x4_epi32(res, 3));
}

/* ---------------------------------------------------------------------------------------------- */
/* AVX-512BW without VNNI */

TQ_INLINE void tq_gemv_rows_bw(const uint8_t *w, size_t stride, int nb, const int8_t *a, int32_t asum,
                               int32_t *out, const int R, const int l2) {
    const __m512i m3 = _mm512_set1_epi8(3), ones = _mm512_set1_epi16(1);
    const __m512i sh01 = _mm512_inserti64x4(_mm512_set1_epi64(6), _mm256_set1_epi64x(4), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi64(2), _mm256_set1_epi64x(0), 1);
    __m512i acc[TQ_512_GEMV_ROWS]; /* int32 x 16 per row */
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_si512();
    for (int b0 = 0; b0 < nb; b0 += TQ_512_I16_BLOCKS) {
        const int b1 = nb - b0 > TQ_512_I16_BLOCKS ? b0 + TQ_512_I16_BLOCKS : nb;
        __m512i s16[TQ_512_GEMV_ROWS]; /* int16 x 32 per row, see TQ_512_I16_BLOCKS */
        for (int r = 0; r < R; r++) s16[r] = _mm512_setzero_si512();
        for (int b = b0; b < b1; b++) {
            const int8_t *ab = a + (size_t)b * TQ_QK;
            const __m512i x01 = _mm512_loadu_si512((const void *)ab);
            const __m512i x23 = _mm512_loadu_si512((const void *)(ab + 64));
            tq_prefetch_next_group(w, stride, b, R, l2);
            for (int r = 0; r < R; r++) {
                __m512i c01, c23;
                tq_decode_block_512(w + r * stride + (size_t)b * TQ_QK_BYTES, m3, sh01, sh23, &c01, &c23);
                s16[r] = _mm512_add_epi16(s16[r], _mm512_add_epi16(_mm512_maddubs_epi16(c01, x01),
                                                                   _mm512_maddubs_epi16(c23, x23)));
            }
        }
        for (int r = 0; r < R; r++) acc[r] = _mm512_add_epi32(acc[r], _mm512_madd_epi16(s16[r], ones));
    }
    tq_store_row_sums(acc, asum, out, R);
}

TQ_INLINE void tq_gemv_rows_bw_l1(const uint8_t *w, size_t stride, int nb, const int8_t *a, int32_t asum,
                                  int32_t *out, const int R) {
    tq_gemv_rows_bw(w, stride, nb, a, asum, out, R, 0);
}
TQ_INLINE void tq_gemv_rows_bw_l2(const uint8_t *w, size_t stride, int nb, const int8_t *a, int32_t asum,
                                  int32_t *out, const int R) {
    tq_gemv_rows_bw(w, stride, nb, a, asum, out, R, 1);
}
TQ_GEMV_BY_ROWS(tq_gemv_avx512, , tq_gemv_rows_bw_l1, TQ_512_GEMV_ROWS)
TQ_GEMV_BY_ROWS(tq_gemv_avx512_far, , tq_gemv_rows_bw_l2, TQ_512_GEMV_ROWS)

TQ_INLINE void tq_gemm_tile_bw(const uint8_t *w, size_t stride, int nb, const int8_t *a, size_t a_stride,
                               const int32_t *asum, int32_t *out, size_t out_stride, const int R, const int T) {
    const __m512i m3 = _mm512_set1_epi8(3), ones = _mm512_set1_epi16(1);
    const __m512i sh01 = _mm512_inserti64x4(_mm512_set1_epi64(6), _mm256_set1_epi64x(4), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi64(2), _mm256_set1_epi64x(0), 1);
    __m512i acc[TQ_512_GEMM_ROWS][TQ_512_GEMM_TOKS]; /* int32 x 16 per (row, token) */
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_si512();
    for (int b = 0; b < nb; b++) {
        __m512i c01[TQ_512_GEMM_ROWS], c23[TQ_512_GEMM_ROWS];
        for (int r = 0; r < R; r++)
            tq_decode_block_512(w + r * stride + (size_t)b * TQ_QK_BYTES, m3, sh01, sh23, &c01[r], &c23[r]);
        for (int t = 0; t < T; t++) {
            const int8_t *ab = a + t * a_stride + (size_t)b * TQ_QK;
            const __m512i x01 = _mm512_loadu_si512((const void *)ab);
            const __m512i x23 = _mm512_loadu_si512((const void *)(ab + 64));
            for (int r = 0; r < R; r++) {
                /* one block: two pair sums per int16 lane, within [-1024, 1016] */
                const __m512i p = _mm512_add_epi16(_mm512_maddubs_epi16(c01[r], x01), _mm512_maddubs_epi16(c23[r], x23));
                acc[r][t] = _mm512_add_epi32(acc[r][t], _mm512_madd_epi16(p, ones));
            }
        }
    }
    if (R == 4 && T == 4) {
        tq_store_4x4(acc, asum, out, out_stride);
        return;
    }
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) out[t * out_stride + r] = _mm512_reduce_add_epi32(acc[r][t]) - asum[t];
}

/* ---------------------------------------------------------------------------------------------- */
/* GEMM entry points: tq_gemm.h's loops around this file's tiles. */

TQ_GEMM_TILE_ANY(tq_gemm_tile_any_bw, , tq_gemm_tile_bw, TQ_512_GEMM_ROWS)

/* NAME: tq_gemm_fn whose single tokens go to GEMV and the rest through TILE */
#define TQ_512_GEMM(NAME, GEMV, TILE)                                                                      \
    static void NAME(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride, const int32_t *asum, \
                     int ntok, int32_t *out, size_t out_stride) {                                          \
        tq_gemm_drive(GEMV, TILE, TQ_512_GEMM_ROWS, w, rows, nb, a, a_stride, asum, ntok, out, out_stride);  \
    }
TQ_512_GEMM(tq_gemm_avx512, tq_gemv_avx512, tq_gemm_tile_any_bw)
TQ_512_GEMM(tq_gemm_avx512_far, tq_gemv_avx512_far, tq_gemm_tile_any_bw)

/* ---------------------------------------------------------------------------------------------- */
/* Float kernels (shared by both tables). Tails use masked loads / stores: masked-off lanes read
 * as zero and never fault. */

TQ_INLINE __mmask16 tq_tail_mask(int left) { return (__mmask16)((1u << left) - 1u); }

/* Bit-identical to tq_quant_act_scalar: max|x| is exact in any order (NaN-free input), s is the
 * same scalar expression, x * s is one IEEE multiply, and roundscale with _MM_FROUND_TO_NEAREST_INT
 * rounds half to even like nearbyintf in the default mode. |x * s| <= 127 (+1 ulp), so neither the
 * clamp nor vpmovsdb's saturation ever bites. Masked-off tail lanes are 0 and add 0 to the sum. */
static float tq_quant_act_avx512(const float *x, int n, int npad, int8_t *q, int32_t *sum) {
    __m512 m = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
    if (i < n) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(tq_tail_mask(n - i), x + i)));
    const float amax = _mm512_reduce_max_ps(m);
    const float s = 127.0f * (1.0f / (amax > 1e-5f ? amax : 1e-5f)); /* torch: 127 / t is t.reciprocal() * 127 */
    const __m512 sv = _mm512_set1_ps(s), lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
    __m512i acc = _mm512_setzero_si512(); /* int32 x 16 */
    for (i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : tq_tail_mask(n - i);
        const __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), sv),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512i r = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
        acc = _mm512_add_epi32(acc, r);
        _mm512_mask_cvtsepi32_storeu_epi8(q + i, k, r);
    }
    if (npad > n) memset(q + n, 0, (size_t)(npad - n));
    *sum = _mm512_reduce_add_epi32(acc);
    return s;
}

/* The f16 GEMV walks the matrix as one linear stream: one row at a time, one accumulator. Measured
 * on the 128256 x 2560 head (one thread, Zen 4, 2 MiB pages; the machine's plain read loop: 28-29
 * GB/s): this form without a software prefetch 28.0-28.6 GB/s; two or four accumulators 26.6 / 24.0;
 * two interleaved rows 13.4 (24.5 with a linear prefetch); with 4 KiB pages 25.7 against 20.0 for
 * two rows + prefetch. A single FMA chain (4 cycles per 16 columns, 32 bytes) still allows ~30 GB/s
 * at 3.7 GHz, and the core running no further ahead of the hardware prefetcher than that is what
 * reads fastest there. An Intel Xeon's core (family 6 model 207) read the same form at 55-63% of
 * its plain read loop and needs a prefetch `lead` bytes ahead into L2 (4 KiB: 97-98%; 2 KiB into
 * L1 89-92%, non-temporal 45-51%); tq_head_prefetch_far() picks the form. The sums are the same,
 * bit for bit: one chain, added in column order either way. */
TQ_INLINE void tq_f16_gemv_512(const uint16_t *w, int rows, int cols, const float *x, float *out, const int lead) {
    const int body = cols & ~15;
    const __mmask16 k = tq_tail_mask(cols - body);
    for (int r = 0; r < rows; r++, w += cols) {
        __m512 acc = _mm512_setzero_ps();
        int i = 0;
        if (lead) /* 32 columns (one 64-byte line) a step; the prefetch may run past the row: harmless */
            for (; i + 32 <= body; i += 32) {
                _mm_prefetch((const char *)(w + i) + lead, _MM_HINT_T1);
                acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i))), _mm512_loadu_ps(x + i), acc);
                acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i + 16))), _mm512_loadu_ps(x + i + 16), acc);
            }
        for (; i < body; i += 16)
            acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i))), _mm512_loadu_ps(x + i), acc);
        if (body < cols)
            acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, w + body)), _mm512_maskz_loadu_ps(k, x + body), acc);
        out[r] = _mm512_reduce_add_ps(acc);
    }
}

#define TQ_512_HEAD_LEAD 4096 /* the far form's prefetch distance, bytes */

static void tq_f16_gemv_avx512(const uint16_t *w, int rows, int cols, const float *x, float *out) {
    tq_f16_gemv_512(w, rows, cols, x, out, 0);
}

static void tq_f16_gemv_avx512_far(const uint16_t *w, int rows, int cols, const float *x, float *out) {
    tq_f16_gemv_512(w, rows, cols, x, out, TQ_512_HEAD_LEAD);
}

/* Sixteen KV elements from element idx (masked: lanes outside k read nothing and are 0): f32
 * (h = 0), f16 widened (h = 1) or int8 codes widened (h = 2). */
TQ_INLINE __m512 tq_kv16(__mmask16 k, const void *rows, size_t idx, const int h) {
    if (h == 2) return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, (const int8_t *)rows + idx)));
    return h ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, (const uint16_t *)rows + idx))
             : _mm512_maskz_loadu_ps(k, (const float *)rows + idx);
}

/* One key after another, each one FMA chain: the keys' rows are read in memory order (the
 * head-major cache keeps a head's keys contiguous), and the out-of-order core overlaps the chains of
 * consecutive keys. Reading four keys' rows interleaved, as this kernel did, streamed a head's keys
 * from memory slower (benchmarks/micro/kv_walk.c: 8.1-8.8 vs 10.7-13.9 GB/s). h: f32, f16 or int8 rows
 * (tq_kv16). */
TQ_INLINE void tq_dots_avx512(const void *rows, size_t stride, int len, const float *x, int n, float *out,
                              const int h) {
    const int body = n & ~15;
    const __mmask16 k = tq_tail_mask(n - body), all = 0xffff;
    for (int j = 0; j < len; j++) {
        const size_t r = (size_t)j * stride;
        __m512 a0 = _mm512_setzero_ps();
        for (int i = 0; i < body; i += 16) a0 = _mm512_fmadd_ps(tq_kv16(all, rows, r + i, h), _mm512_loadu_ps(x + i), a0);
        if (body < n) a0 = _mm512_fmadd_ps(tq_kv16(k, rows, r + body, h), _mm512_maskz_loadu_ps(k, x + body), a0);
        out[j] = _mm512_reduce_add_ps(a0);
    }
}

/* R x 16 output columns of the value sum from column c, one FMA chain per register, every key's
 * row read once (masked past n). */
TQ_INLINE void tq_wsum_cols_avx512(const void *rows, size_t stride, int len, const float *w, int n, float *out,
                                   int c, const int h, const int R) {
    __mmask16 k[8];
    __m512 a[8];
    for (int b = 0; b < R; b++) {
        const int left = n - c - 16 * b;
        k[b] = left >= 16 ? (__mmask16)0xffff : left > 0 ? tq_tail_mask(left) : (__mmask16)0;
        a[b] = _mm512_setzero_ps();
    }
    for (int j = 0; j < len; j++) {
        const size_t r = (size_t)j * stride + c;
        const __m512 wj = _mm512_set1_ps(w[j]);
        for (int b = 0; b < R; b++) a[b] = _mm512_fmadd_ps(wj, tq_kv16(k[b], rows, r + 16 * b, h), a[b]);
    }
    for (int b = 0; b < R; b++) _mm512_mask_storeu_ps(out + c + 16 * b, k[b], a[b]);
}

/* Up to 128 columns per pass (eight registers), so that a 128-wide head's value rows are read in
 * memory order in one pass over the keys; narrower rests 64 at a time. */
TQ_INLINE void tq_wsum_avx512(const void *rows, size_t stride, int len, const float *w, int n, float *out,
                              const int h) {
    int c = 0;
    for (; n - c > 64; c += 128) tq_wsum_cols_avx512(rows, stride, len, w, n, out, c, h, 8);
    for (; c < n; c += 64) tq_wsum_cols_avx512(rows, stride, len, w, n, out, c, h, 4);
}

TQ_KV_KERNELS(avx512)

static void tq_scale_out_avx512(const int32_t *acc, int n, float sa, const float *scale, float *out) {
    const __m512 s = _mm512_set1_ps(sa);
    int r = 0;
    for (; r + 16 <= n; r += 16) {
        const __m512 a = _mm512_cvtepi32_ps(_mm512_loadu_si512((const void *)(acc + r)));
        _mm512_storeu_ps(out + r, _mm512_mul_ps(_mm512_div_ps(a, s), _mm512_loadu_ps(scale + r)));
    }
    if (r < n) {
        const __mmask16 k = tq_tail_mask(n - r);
        const __m512 a = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(k, acc + r));
        _mm512_mask_storeu_ps(out + r, k, _mm512_mul_ps(_mm512_div_ps(a, s), _mm512_maskz_loadu_ps(k, scale + r)));
    }
}

TQ_INLINE __m512 tq_exp512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(TQ_EXP_LO));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(TQ_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(TQ_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(TQ_LN2_LO), r);
    __m512 y = _mm512_set1_ps(TQ_EXP_P0);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(TQ_EXP_P1));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(TQ_EXP_P2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(TQ_EXP_P3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(TQ_EXP_P4));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(TQ_EXP_P5));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

static void tq_softmax_avx512(float *x, int n, float scale) {
    const __m512 sc = _mm512_set1_ps(scale);
    const int body = n & ~15;
    const __mmask16 k = tq_tail_mask(n - body);
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < body; j += 16) {
        const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + j), sc);
        _mm512_storeu_ps(x + j, v);
        m = _mm512_max_ps(m, v);
    }
    if (body < n) {
        const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + body), sc);
        _mm512_mask_storeu_ps(x + body, k, v);
        m = _mm512_mask_max_ps(m, k, m, v);
    }
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    __m512 s = _mm512_setzero_ps();
    for (int j = 0; j < body; j += 16) {
        const __m512 e = tq_exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j), mx));
        _mm512_storeu_ps(x + j, e);
        s = _mm512_add_ps(s, e);
    }
    if (body < n) {
        const __m512 e = tq_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + body), mx));
        _mm512_mask_storeu_ps(x + body, k, e);
        s = _mm512_mask_add_ps(s, k, s, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(s));
    for (int j = 0; j < body; j += 16) _mm512_storeu_ps(x + j, _mm512_mul_ps(_mm512_loadu_ps(x + j), inv));
    if (body < n) _mm512_mask_storeu_ps(x + body, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + body), inv));
}

/* ---------------------------------------------------------------------------------------------- */
/* The B3 layout (tq.h) on AVX-512 VBMI + VNNI: a 64-byte block decodes by two table lookups of its
 * bytes' low 7 bits (vpermi2b: 128 entries from two registers) into A = code_0 | code_1 << 2 |
 * code_2 << 4 | code_3 << 6 and B = code_4, each taken back to 2 - code where the byte's top bit
 * says so (0xaa - A, 2 - B: one masked byte subtraction each). The GEMV then masks A's fields in
 * place (scaled 1, 4, 16, 64: exact multiples, shifted out at the end, as the TQ GEMV does) and
 * sums five vpdpbusd against a[64k .. 64k + 63]: per 320 weights 5 decode + 4 AND + 5 vpdpbusd.
 * On the Intel VM (benchmarks/micro/base3_512.c, 2560 columns, six runs) this read 11% / 12% more
 * weights per second than the TQ GEMV at one / two threads (medians; runs 0.99-1.29x; 6912
 * columns: 9-10%), for 20% fewer bytes. */
#if defined(TQ_SIMDE_AVX512) || (defined(_MSC_VER) && !defined(__clang__))
#define TQ_VBMI
#else
#define TQ_VBMI __attribute__((target("avx512vbmi,avx512vnni")))
#endif

/* A of m (m = 0..121; 122..127 unused): the first four base-3 digits of m as 2-bit fields */
static const uint8_t tq_b3_lut_a[128] = {
    0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0a, 0x10, 0x11, 0x12, 0x14, 0x15, 0x16, 0x18,
    0x19, 0x1a, 0x20, 0x21, 0x22, 0x24, 0x25, 0x26, 0x28, 0x29, 0x2a, 0x40, 0x41, 0x42, 0x44, 0x45,
    0x46, 0x48, 0x49, 0x4a, 0x50, 0x51, 0x52, 0x54, 0x55, 0x56, 0x58, 0x59, 0x5a, 0x60, 0x61, 0x62,
    0x64, 0x65, 0x66, 0x68, 0x69, 0x6a, 0x80, 0x81, 0x82, 0x84, 0x85, 0x86, 0x88, 0x89, 0x8a, 0x90,
    0x91, 0x92, 0x94, 0x95, 0x96, 0x98, 0x99, 0x9a, 0xa0, 0xa1, 0xa2, 0xa4, 0xa5, 0xa6, 0xa8, 0xa9,
    0xaa, 0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0a, 0x10, 0x11, 0x12, 0x14, 0x15, 0x16,
    0x18, 0x19, 0x1a, 0x20, 0x21, 0x22, 0x24, 0x25, 0x26, 0x28, 0x29, 0x2a, 0x40, 0x41, 0x42, 0x44,
    0x45, 0x46, 0x48, 0x49, 0x4a, 0x50, 0x51, 0x52, 0x54, 0x55, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

typedef struct {
    __m512i a0, a1, b0, b1; /* the tables of A (tq_b3_lut_a) and B (m >= 81) in two registers each */
} tq_b3_luts;

TQ_INLINE tq_b3_luts tq_b3_load_luts(void) {
    tq_b3_luts t;
    t.a0 = _mm512_loadu_si512((const void *)tq_b3_lut_a);
    t.a1 = _mm512_loadu_si512((const void *)(tq_b3_lut_a + 64));
    t.b0 = _mm512_setzero_si512();                                       /* m = 0..63: code_4 = 0 */
    t.b1 = _mm512_mask_set1_epi8(_mm512_setzero_si512(), 0x03fffffffffe0000ull, 1); /* m = 81..121 */
    return t;
}

/* a block's 64 bytes -> A and B (above) */
TQ_INLINE TQ_VBMI void tq_b3_decode(const uint8_t *p, const tq_b3_luts *t, __m512i *fa, __m512i *fb) {
    const __m512i v = _mm512_loadu_si512((const void *)p);
    const __mmask64 neg = _mm512_movepi8_mask(v);
    const __m512i a = _mm512_permutex2var_epi8(t->a0, v, t->a1), b = _mm512_permutex2var_epi8(t->b0, v, t->b1);
    *fa = _mm512_mask_sub_epi8(a, neg, _mm512_set1_epi8((char)0xaa), a);
    *fb = _mm512_mask_sub_epi8(b, neg, _mm512_set1_epi8(2), b);
}

/* One block of one row into its five sums (fields scaled 1, 4, 16, 64 and code_4 unscaled) */
#define TQ_B3_BLOCK(p, s0, s1, s2, s3, s4)                                                               \
    do {                                                                                               \
        __m512i fa_, fb_;                                                                              \
        tq_b3_decode((p), &t, &fa_, &fb_);                                                             \
        s0 = _mm512_dpbusd_epi32(s0, _mm512_and_si512(fa_, m0), x0);                                   \
        s1 = _mm512_dpbusd_epi32(s1, _mm512_and_si512(fa_, m1), x1);                                   \
        s2 = _mm512_dpbusd_epi32(s2, _mm512_and_si512(fa_, m2), x2);                                   \
        s3 = _mm512_dpbusd_epi32(s3, _mm512_and_si512(fa_, m3), x3);                                   \
        s4 = _mm512_dpbusd_epi32(s4, fb_, x4);                                                         \
    } while (0)

/* a row's sum from its five (the scaled fields shifted back: exact multiples), minus asum */
TQ_INLINE int32_t tq_b3_row_sum(__m512i s0, __m512i s1, __m512i s2, __m512i s3, __m512i s4, int32_t asum) {
    const __m512i lo = _mm512_add_epi32(s0, _mm512_srai_epi32(s1, 2));
    const __m512i hi = _mm512_add_epi32(_mm512_srai_epi32(s2, 4), _mm512_srai_epi32(s3, 6));
    return _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(lo, hi), s4)) - asum;
}

/* Two rows (R = 2, stride bytes apart) or one of the B3 GEMV, sharing each block's activation
 * loads (four rows would need 20 sums besides the tables and masks: more than 32 registers). Per
 * block a lane of the 64x field gains at most 4 * 128 * 128 = 65536 in magnitude: 16384 blocks
 * (5.2M columns) fit int32; rows are far shorter. gcc copies each sum to a scratch register and
 * back around its vpdpbusd (as in the TQ GEMV); an asm vpdpbusd that kept them in place read no
 * faster, in L2 or from DRAM (base3_512.c, three alternating runs of each build). */
TQ_INLINE TQ_VBMI void tq_b3_gemv_rows(const uint8_t *w, size_t stride, int nb, const int8_t *a, int32_t asum,
                                       int32_t *out, const int R, const int l2) {
    const tq_b3_luts t = tq_b3_load_luts();
    const __m512i m0 = _mm512_set1_epi8(0x03), m1 = _mm512_set1_epi8(0x0c);
    const __m512i m2 = _mm512_set1_epi8(0x30), m3 = _mm512_set1_epi8((char)0xc0);
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0;
    __m512i b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0;
    for (int b = 0; b < nb; b++) {
        const char *pf = (const char *)w + R * stride + TQ_GEMV_PREFETCH_LEAD + (size_t)b * R * TQ_B3_BYTES;
        if (l2) { /* the hint must be a constant (clang) */
            _mm_prefetch(pf, _MM_HINT_T1);
            if (R == 2) _mm_prefetch(pf + 64, _MM_HINT_T1);
        } else {
            _mm_prefetch(pf, _MM_HINT_T0);
            if (R == 2) _mm_prefetch(pf + 64, _MM_HINT_T0);
        }
        const int8_t *ab = a + (size_t)b * TQ_B3_QK;
        const __m512i x0 = _mm512_loadu_si512((const void *)ab), x1 = _mm512_loadu_si512((const void *)(ab + 64));
        const __m512i x2 = _mm512_loadu_si512((const void *)(ab + 128));
        const __m512i x3 = _mm512_loadu_si512((const void *)(ab + 192));
        const __m512i x4 = _mm512_loadu_si512((const void *)(ab + 256));
        const uint8_t *p = w + (size_t)b * TQ_B3_BYTES;
        TQ_B3_BLOCK(p, a0, a1, a2, a3, a4);
        if (R == 2) TQ_B3_BLOCK(p + stride, b0, b1, b2, b3, b4);
    }
    out[0] = tq_b3_row_sum(a0, a1, a2, a3, a4, asum);
    if (R == 2) out[1] = tq_b3_row_sum(b0, b1, b2, b3, b4, asum);
}

/* two rows at a time (read best: base3_512.c), in the table's prefetch form (l2: into L2) */
TQ_INLINE TQ_VBMI void tq_b3_gemv_512(const uint8_t *w, int rows, int nb, const int8_t *a, int32_t asum,
                                      int32_t *out, const int l2) {
    const size_t stride = (size_t)nb * TQ_B3_BYTES;
    int r = 0;
    for (; r + 2 <= rows; r += 2) tq_b3_gemv_rows(w + (size_t)r * stride, stride, nb, a, asum, out + r, 2, l2);
    if (r < rows) tq_b3_gemv_rows(w + (size_t)r * stride, stride, nb, a, asum, out + r, 1, l2);
}
static TQ_VBMI void tq_b3_gemv_avx512(const uint8_t *w, int rows, int nb, const int8_t *a, int32_t asum,
                                      int32_t *out) {
    tq_b3_gemv_512(w, rows, nb, a, asum, out, 0);
}
static TQ_VBMI void tq_b3_gemv_avx512_far(const uint8_t *w, int rows, int nb, const int8_t *a, int32_t asum,
                                          int32_t *out) {
    tq_b3_gemv_512(w, rows, nb, a, asum, out, 1);
}

/* The unpacked GEMM (a prompt: many tokens per pass over the weights), for both layouts. Decoding
 * a B3 block costs about as much as its five vpdpbusd, and a TQ block's shifts and masks a third
 * of its work, so each row is decoded once per chunk of TQ_UNPACK_CHUNK values for all the
 * tokens: four rows' codes are unpacked into a buffer in L1 (one byte per weight, 0..2, in value
 * order), and a 4-row x 4-token tile of plain vpdpbusd runs over it (each 64 codes of a row meet
 * each token's 64 activations once: 16 vpdpbusd per 4 + 4 loads). Partial sums of each chunk are
 * added into out (the first chunk stores them, less asum). On the Intel VM (2B4T, pp128, three
 * alternating processes each) it took the TQ layout's prompts from 72-76 to 93-100 tok/s at one
 * thread and from 143-147 to 174-185 at two, against the tiles that decoded each block once per
 * four tokens (their 4 x 4 tile had been tuned on Zen 4, where this form is not yet measured). */
#define TQ_UNPACK_CHUNK 2560 /* values (20 TQ blocks, 8 B3 blocks): a 2B4T row of q/k/v/o/gate/up */

/* codes of B3 blocks [b0, b1) of one row -> buf (value order: block b's value 64k + j at buf[(b - b0) * 320 + 64k + j]) */
TQ_INLINE TQ_VBMI void tq_b3_unpack(const uint8_t *row, int b0, int b1, uint8_t *buf) {
    const tq_b3_luts t = tq_b3_load_luts();
    const __m512i m = _mm512_set1_epi8(0x03);
    for (int b = b0; b < b1; b++) {
        __m512i fa, fb;
        tq_b3_decode(row + (size_t)b * TQ_B3_BYTES, &t, &fa, &fb);
        uint8_t *o = buf + (size_t)(b - b0) * TQ_B3_QK;
        _mm512_storeu_si512((void *)o, _mm512_and_si512(fa, m));
        _mm512_storeu_si512((void *)(o + 64), _mm512_and_si512(_mm512_srli_epi16(fa, 2), m));
        _mm512_storeu_si512((void *)(o + 128), _mm512_and_si512(_mm512_srli_epi16(fa, 4), m));
        _mm512_storeu_si512((void *)(o + 192), _mm512_and_si512(_mm512_srli_epi16(fa, 6), m));
        _mm512_storeu_si512((void *)(o + 256), fb);
    }
}

/* codes of TQ blocks [b0, b1) of one row -> buf (tq_decode_block_512: values j | j + 32, then
 * j + 64 | j + 96, so value order) */
TQ_INLINE void tq_tq_unpack(const uint8_t *row, int b0, int b1, uint8_t *buf) {
    const __m512i m3 = _mm512_set1_epi8(3);
    const __m512i sh01 = _mm512_inserti64x4(_mm512_set1_epi64(6), _mm256_set1_epi64x(4), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi64(2), _mm256_set1_epi64x(0), 1);
    for (int b = b0; b < b1; b++) {
        __m512i c01, c23;
        tq_decode_block_512(row + (size_t)b * TQ_QK_BYTES, m3, sh01, sh23, &c01, &c23);
        uint8_t *o = buf + (size_t)(b - b0) * TQ_QK;
        _mm512_storeu_si512((void *)o, c01);
        _mm512_storeu_si512((void *)(o + 64), c23);
    }
}

/* acc + the u8 x s8 dot products of u and s, in acc's register. gcc 12 compiles the intrinsic as
 * a copy of the sum to a scratch register, vpdpbusd there and a copy back; with the tile's 16 sums
 * that ran out of registers and spilled sums to the stack inside the loop (perf: the prompt GEMM
 * 10% slower than the TQ one). The asm names the sum as read and written, so it stays put. */
TQ_INLINE TQ_VNNI __m512i tq_dpbusd_inplace(__m512i acc, __m512i u, __m512i s) {
#if defined(__GNUC__) && !defined(TQ_SIMDE_AVX512)
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s));
    return acc;
#else
    return _mm512_dpbusd_epi32(acc, u, s);
#endif
}

/* R rows' unpacked codes (buf, rows `len` bytes apart) against T tokens' activations at a (rows
 * a_stride apart), len values: the R x T dot products into out[t * out_stride + r], stored (first)
 * or added. R, T: 1..4, constants. */
TQ_INLINE TQ_VNNI void tq_unpacked_tile(const uint8_t *buf, int len, const int8_t *a, size_t a_stride, int32_t *out,
                                  size_t out_stride, int first, const int32_t *asum, const int R, const int T) {
    __m512i acc[4][4];
    for (int r = 0; r < R; r++)
        for (int k = 0; k < T; k++) acc[r][k] = _mm512_setzero_si512();
    for (int c = 0; c < len; c += 64) {
        __m512i x[4];
        for (int k = 0; k < T; k++) x[k] = _mm512_loadu_si512((const void *)(a + (size_t)k * a_stride + c));
        for (int r = 0; r < R; r++) {
            const __m512i w = _mm512_loadu_si512((const void *)(buf + (size_t)r * len + c));
            for (int k = 0; k < T; k++) acc[r][k] = tq_dpbusd_inplace(acc[r][k], w, x[k]);
        }
    }
    for (int k = 0; k < T; k++) {
        int32_t v[4], *o = out + (size_t)k * out_stride;
        if (R == 4)
            _mm_storeu_si128((__m128i *)v, tq_reduce4_epi32(acc[0][k], acc[1][k], acc[2][k], acc[3][k]));
        else
            for (int r = 0; r < R; r++) v[r] = _mm512_reduce_add_epi32(acc[r][k]);
        for (int r = 0; r < R; r++) o[r] = first ? v[r] - asum[k] : o[r] + v[r];
    }
}

#define TQ_UNPACKED_TILE_T(R)                                                                            \
    switch (T) {                                                                                       \
    case 4: tq_unpacked_tile(buf, len, at, a_stride, ot, out_stride, first, asum + t0, R, 4); break;   \
    case 3: tq_unpacked_tile(buf, len, at, a_stride, ot, out_stride, first, asum + t0, R, 3); break;   \
    case 2: tq_unpacked_tile(buf, len, at, a_stride, ot, out_stride, first, asum + t0, R, 2); break;   \
    default: tq_unpacked_tile(buf, len, at, a_stride, ot, out_stride, first, asum + t0, R, 1); break;  \
    }

/* static ATTR void NAME(...): a tq_gemm_fn over QK-value blocks of BLOCK_BYTES that UNPACK decodes;
 * one token goes to GEMV1(w, rows, nb, a, asum, out) */
#define TQ_UNPACKED_GEMM(NAME, ATTR, UNPACK, QK, BLOCK_BYTES, GEMV1)                                      \
    static ATTR void NAME(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride,         \
                          const int32_t *asum, int ntok, int32_t *out, size_t out_stride) {              \
        if (ntok == 1) {                                                                               \
            GEMV1(w, rows, nb, a, asum[0], out);                                                       \
            return;                                                                                    \
        }                                                                                              \
        const int per_chunk = TQ_UNPACK_CHUNK / (QK);                                                  \
        const size_t stride = (size_t)nb * (BLOCK_BYTES);                                              \
        uint8_t buf[4 * TQ_UNPACK_CHUNK]; /* 10 KB */                                                  \
        for (int r0 = 0; r0 < rows; r0 += 4) {                                                         \
            const int R = rows - r0 < 4 ? rows - r0 : 4;                                               \
            for (int b0 = 0; b0 < nb; b0 += per_chunk) {                                               \
                const int b1 = nb - b0 < per_chunk ? nb : b0 + per_chunk, len = (b1 - b0) * (QK);      \
                const int first = b0 == 0;                                                             \
                for (int r = 0; r < R; r++) UNPACK(w + (size_t)(r0 + r) * stride, b0, b1, buf + (size_t)r * len); \
                for (int t0 = 0; t0 < ntok; t0 += 4) {                                                 \
                    const int T = ntok - t0 < 4 ? ntok - t0 : 4;                                       \
                    const int8_t *at = a + (size_t)t0 * a_stride + (size_t)b0 * (QK);                  \
                    int32_t *ot = out + (size_t)t0 * out_stride + r0;                                  \
                    switch (R) {                                                                       \
                    case 4: TQ_UNPACKED_TILE_T(4) break;                                               \
                    case 3: TQ_UNPACKED_TILE_T(3) break;                                               \
                    case 2: TQ_UNPACKED_TILE_T(2) break;                                               \
                    default: TQ_UNPACKED_TILE_T(1) break;                                              \
                    }                                                                                  \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
    }

TQ_UNPACKED_GEMM(tq_b3_gemm_avx512, TQ_VBMI, tq_b3_unpack, TQ_B3_QK, TQ_B3_BYTES, tq_b3_gemv_avx512)
TQ_UNPACKED_GEMM(tq_gemm_avx512vnni, TQ_VNNI, tq_tq_unpack, TQ_QK, TQ_QK_BYTES, tq_gemv_avx512vnni)
TQ_UNPACKED_GEMM(tq_gemm_avx512vnni_far, TQ_VNNI, tq_tq_unpack, TQ_QK, TQ_QK_BYTES, tq_gemv_avx512vnni_far)

/* The two tables (VNNI or not: the ternary GEMV and GEMM tq_gemv_/tq_gemm_ SFX), each in both
 * prefetch forms: the head GEMV's (F16, LEAD) and the ternary GEMV's (SFX _far: into L2). */
#define TQ_512_TABLE(NAME, ISA, SFX, F16, LEAD, B3GEMV, B3GEMM, B3FAST)                                  \
    static const tq_kernels NAME = {ISA,                 tq_gemv_##SFX,       tq_gemm_##SFX,            \
                                    tq_quant_act_avx512, F16,                 tq_f32_dots_avx512,       \
                                    tq_f32_wsum_avx512,  tq_scale_out_avx512, tq_softmax_avx512,        \
                                    tq_f16_dots_avx512,  tq_f16_wsum_avx512,  tq_q8_dots_avx512,        \
                                    tq_q8_wsum_avx512,   LEAD,                B3GEMV,                   \
                                    B3GEMM,              B3FAST}

/* the B3 kernels: VBMI's where the CPU has it (the _b3 tables; _b3x where they were not measured
 * faster than the TQ kernels: b3_fast 0), else the scalar reference (a model loads B3 only where
 * b3_fast says so, or when asked, but any table must run it) */
#define TQ_512_TABLES(NAME, ISA, SFX, F16, LEAD, B3GEMV)                                                  \
    TQ_512_TABLE(NAME, ISA, SFX, F16, LEAD, tq_b3_gemv_scalar, tq_b3_gemm_scalar, 0);                    \
    TQ_512_TABLE(NAME##_b3, ISA, SFX, F16, LEAD, B3GEMV, tq_b3_gemm_avx512, 1);                          \
    TQ_512_TABLE(NAME##_b3x, ISA, SFX, F16, LEAD, B3GEMV, tq_b3_gemm_avx512, 0)

TQ_512_TABLES(tq_avx512vnni_table, "avx512vnni", avx512vnni, tq_f16_gemv_avx512, 0, tq_b3_gemv_avx512);
TQ_512_TABLES(tq_avx512vnni_far_table, "avx512vnni", avx512vnni_far, tq_f16_gemv_avx512_far, TQ_512_HEAD_LEAD,
              tq_b3_gemv_avx512_far);
TQ_512_TABLE(tq_avx512_table, "avx512", avx512, tq_f16_gemv_avx512, 0, tq_b3_gemv_scalar, tq_b3_gemm_scalar, 0);
TQ_512_TABLE(tq_avx512_far_table, "avx512", avx512_far, tq_f16_gemv_avx512_far, TQ_512_HEAD_LEAD, tq_b3_gemv_scalar,
             tq_b3_gemm_scalar, 0);

/* TRIT_NO_VNNI=1 hands out the AVX-512BW table on a VNNI CPU, so that the fallback is tested on
 * the machines we have (TRIT_HEAD_PREFETCH_FAR picks the head's form likewise). Read on every call
 * (not cached) for the tests' sake; callers cache. */
const tq_kernels *tq_kernels_avx512(void) {
#if defined(TQ_SIMDE_AVX512)
    const int have_vnni = 1; /* emulated: both tables run on any x86-64 CPU */
#else
    const int have_vnni = (tq_cpu_features() & TQ_CPU_AVX512VNNI) != 0;
#endif
    const int far = tq_head_prefetch_far();
    /* TRIT_NO_B3=1: the VNNI table with the scalar B3 kernels (tests) */
#if defined(TQ_SIMDE_AVX512)
    const int b3 = !tq_env_flag("TRIT_NO_B3");
#else
    const int b3 = (tq_cpu_features() & TQ_CPU_AVX512VBMI) && !tq_env_flag("TRIT_NO_B3");
#endif
    /* B3 read faster on the Intel VM (base3_512.c); AMD's Zen 4 has not been measured: there the
     * kernels are in the table (ternary="b3" uses them) but "auto" keeps TQ */
    const int b3_measured = !(tq_cpu_features() & TQ_CPU_AMD);
    if (have_vnni && !tq_env_flag("TRIT_NO_VNNI")) {
        if (b3 && b3_measured) return far ? &tq_avx512vnni_far_table_b3 : &tq_avx512vnni_table_b3;
        if (b3) return far ? &tq_avx512vnni_far_table_b3x : &tq_avx512vnni_table_b3x;
        return far ? &tq_avx512vnni_far_table : &tq_avx512vnni_table;
    }
    return far ? &tq_avx512_far_table : &tq_avx512_table;
}

#else /* not x86-64 */

const tq_kernels *tq_kernels_avx512(void) { return 0; }

#endif
