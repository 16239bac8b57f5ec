/* Helpers shared by the SIMD files (qk_avx2.c, qk_f32act_avx2.c, qk_neon.c, qk_f32act_neon.c,
 * and tq_avx2.c for tq_hsum): unaligned little-endian loads, the K-quant scale unpacking, and
 * per ISA the f16 scalar conversion, horizontal sum, Q5 high-bit expansion and the linear
 * prefetch of the next rows; on NEON also the K-quant code decoders of the integer and the
 * f32-activation kernels. Not a public header: include it after the ISA's intrinsics header,
 * inside the file's ISA guard. */
#ifndef TQ_QK_SIMD_H
#define TQ_QK_SIMD_H

#include <stdint.h>
#include <string.h>

#ifndef TQ_INLINE
#if defined(_MSC_VER) && !defined(__clang__)
#define TQ_INLINE static __forceinline
#else
#define TQ_INLINE static inline __attribute__((always_inline))
#endif
#endif
#ifndef TQ_NOINLINE
#if defined(_MSC_VER) && !defined(__clang__)
#define TQ_NOINLINE static __declspec(noinline)
#else
#define TQ_NOINLINE static __attribute__((noinline))
#endif
#endif

TQ_INLINE uint16_t tq_ld16(const void *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

TQ_INLINE uint32_t tq_ld32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Q4_K / Q5_K 6-bit scales and minima, four per uint32 (qk.h for the packing). */
TQ_INLINE void tq_k4_scales(const uint8_t *s, uint8_t sc[8], uint8_t m[8]) {
    const uint32_t s0 = tq_ld32(s), s1 = tq_ld32(s + 4), s2 = tq_ld32(s + 8);
    const uint32_t v[4] = {
        s0 & 0x3f3f3f3fu,                                   /* sc 0..3 */
        (s2 & 0x0f0f0f0fu) | ((s0 >> 2) & 0x30303030u),     /* sc 4..7: high bits from s[0..3] */
        s1 & 0x3f3f3f3fu,                                   /* m 0..3 */
        ((s2 >> 4) & 0x0f0f0f0fu) | ((s1 >> 2) & 0x30303030u), /* m 4..7: high bits from s[4..7] */
    };
    memcpy(sc, v, 8);
    memcpy(m, v + 2, 8);
}

/* The 32-value block types and the K-quants, as the SIMD row functions name them (their T is a
 * compile-time constant after inlining, so every test on it folds away). */
enum { TQ_B_Q8_0, TQ_B_Q4_0, TQ_B_Q4_1, TQ_B_Q5_0, TQ_B_Q5_1 };
enum { TQ_K_Q4, TQ_K_Q5, TQ_K_Q6 };

TQ_INLINE int tq_q32_block_bytes(int T) {
    return T == TQ_B_Q8_0 ? 34 : T == TQ_B_Q4_0 ? 18 : T == TQ_B_Q4_1 ? 20 : T == TQ_B_Q5_0 ? 22 : 24;
}
TQ_INLINE int tq_q32_has_min(int T) { return T == TQ_B_Q4_1 || T == TQ_B_Q5_1; }

/* The loop of the prompt GEMMs (tq_qk_ops.gemm): tokens in groups of TOKS (the rest one at a
 * time), rows in tiles of RT for full groups (the rest one by one), so every TILE(R, NT, r, a, o)
 * call (rows r.., the group's activations at a, a const uint8_t *, its outputs at o) has constant
 * tile sizes. GROUP(nt, a) runs first for each group of nt tokens (TQ_GEMM_NO_GROUP: nothing).
 * as: bytes from one token's activation to the next. */
#define TQ_GEMM_NO_GROUP(nt, a)
#define TQ_GEMM_LOOP(ntok, rows, act, as, out, ldo, RT, TOKS, GROUP, TILE)                       \
    for (int t_ = 0; t_ < (ntok);) {                                                            \
        const int nt_ = (ntok) - t_ >= (TOKS) ? (TOKS) : 1;                                     \
        const uint8_t *a_ = (const uint8_t *)(act) + (size_t)t_ * (as);                         \
        float *o_ = (out) + (size_t)t_ * (ldo);                                                 \
        int r_ = 0;                                                                             \
        GROUP(nt_, a_);                                                                         \
        if (nt_ == (TOKS))                                                                      \
            for (; r_ + (RT) <= (rows); r_ += (RT)) TILE((RT), (TOKS), r_, a_, o_ + r_);        \
        for (; r_ < (rows); r_++) {                                                             \
            if (nt_ == (TOKS))                                                                  \
                TILE(1, (TOKS), r_, a_, o_ + r_);                                               \
            else                                                                                \
                TILE(1, 1, r_, a_, o_ + r_);                                                    \
        }                                                                                       \
        t_ += nt_;                                                                              \
    }

#if defined(__AVX2__)

TQ_INLINE float tq_h2f(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

TQ_INLINE float tq_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The R rows of the next pass are one contiguous range: walk it linearly, as far as this pass
 * has walked its own rows, so it is in cache when that pass starts (R interleaved row streams
 * are followed badly by the hardware prefetchers; see tq_avx2.c). Past the end never faults. */
TQ_INLINE void tq_prefetch_next(const uint8_t *w, size_t rb, int R, size_t done, size_t span) {
    const char *pf = (const char *)w + (size_t)R * rb + done * (size_t)R;
    for (size_t o = 0; o < span; o += 64) _mm_prefetch(pf + o, _MM_HINT_T0);
    _mm_prefetch(pf + span - 1, _MM_HINT_T0);
}

/* bit i of the little-endian uint32 at qh -> 0x10 in byte i (bit 4 of the Q5 codes) */
TQ_INLINE __m256i tq_hbit32(const uint8_t *qh) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                           0x0101010101010101LL, 0x0000000000000000LL);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)tq_ld32(qh)), shuf);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

#elif defined(__aarch64__) || defined(_M_ARM64)

TQ_INLINE float tq_h2f(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

/* bit i of the little-endian uint32 at qh -> 0x10 in byte i: h0 = values 0..15, h1 = 16..31 */
TQ_INLINE void tq_hbits(const uint8_t *qh, uint8x16_t *h0, uint8x16_t *h1) {
    static const uint8_t idx0[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t idx1[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t bytes = vreinterpretq_u8_u32(vdupq_n_u32(tq_ld32(qh)));
    const uint8x16_t b = vld1q_u8(bit), b4 = vdupq_n_u8(0x10);
    *h0 = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(idx0)), b), b4);
    *h1 = vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, vld1q_u8(idx1)), b), b4);
}

/* Codes of a 32-value block as signed bytes with the offset removed: c0 = values 0..15, c1 =
 * 16..31 (SDOT / SMULL and the float widening all take s8). */
TQ_INLINE void tq_q32_codes(const int T, const uint8_t *blk, int8x16_t *c0, int8x16_t *c1) {
    if (T == TQ_B_Q8_0) {
        *c0 = vld1q_s8((const int8_t *)blk + 2);
        *c1 = vld1q_s8((const int8_t *)blk + 18);
        return;
    }
    const int qo = T == TQ_B_Q4_0 ? 2 : T == TQ_B_Q4_1 ? 4 : T == TQ_B_Q5_0 ? 6 : 8;
    const uint8x16_t m4 = vdupq_n_u8(15);
    const uint8x16_t q = vld1q_u8(blk + qo);
    uint8x16_t u0 = vandq_u8(q, m4), u1 = vshrq_n_u8(q, 4);
    if (T == TQ_B_Q5_0 || T == TQ_B_Q5_1) {
        uint8x16_t h0, h1;
        tq_hbits(blk + qo - 4, &h0, &h1);
        u0 = vorrq_u8(u0, h0);
        u1 = vorrq_u8(u1, h1);
    }
    *c0 = vreinterpretq_s8_u8(u0);
    *c1 = vreinterpretq_s8_u8(u1);
    if (T == TQ_B_Q4_0 || T == TQ_B_Q5_0) {
        const int8x16_t o = vdupq_n_s8(T == TQ_B_Q4_0 ? 8 : 16);
        *c0 = vsubq_s8(*c0, o);
        *c1 = vsubq_s8(*c1, o);
    }
}

/* Q5_K: the two 16-byte halves of qh (zero for Q4_K) */
TQ_INLINE void tq_q5k_high(const int five, const uint8_t *blk, uint8x16_t *h0, uint8x16_t *h1) {
    *h0 = five ? vld1q_u8(blk + 16) : vdupq_n_u8(0);
    *h1 = five ? vld1q_u8(blk + 32) : vdupq_n_u8(0);
}

/* Codes of sub-blocks 2p (c[0]: values 0..15, c[1]: 16..31, low nibbles) and 2p + 1 (c[2], c[3],
 * high nibbles) of a Q4_K / Q5_K super-block; Q5_K adds bit 4 from h0 / h1 (tq_q5k_high). */
TQ_INLINE void tq_q4k_codes(const int five, const uint8_t *blk, uint8x16_t h0, uint8x16_t h1, int p, int8x16_t c[4]) {
    const uint8_t *qs = blk + (five ? 48 : 16);
    const uint8x16_t m4 = vdupq_n_u8(15), b4 = vdupq_n_u8(0x10);
    const uint8x16_t q0 = vld1q_u8(qs + 32 * p), q1 = vld1q_u8(qs + 32 * p + 16);
    uint8x16_t l0 = vandq_u8(q0, m4), l1 = vandq_u8(q1, m4);
    uint8x16_t u0 = vshrq_n_u8(q0, 4), u1 = vshrq_n_u8(q1, 4);
    if (five) { /* bit j of qh[l] -> bit 4 of code l of sub-block j */
        l0 = vorrq_u8(l0, vandq_u8(vshlq_u8(h0, vdupq_n_s8((int8_t)(4 - 2 * p))), b4));
        l1 = vorrq_u8(l1, vandq_u8(vshlq_u8(h1, vdupq_n_s8((int8_t)(4 - 2 * p))), b4));
        u0 = vorrq_u8(u0, vandq_u8(vshlq_u8(h0, vdupq_n_s8((int8_t)(3 - 2 * p))), b4));
        u1 = vorrq_u8(u1, vandq_u8(vshlq_u8(h1, vdupq_n_s8((int8_t)(3 - 2 * p))), b4));
    }
    c[0] = vreinterpretq_s8_u8(l0), c[1] = vreinterpretq_s8_u8(l1);
    c[2] = vreinterpretq_s8_u8(u0), c[3] = vreinterpretq_s8_u8(u1);
}

/* Q6_K codes (offset removed) of half h, l in 16 half .. 16 half + 15: c[k] holds values
 * 128h + 32k + 16 half .. +15 (low 4 bits from ql, k >= 2 the high nibble; high 2 bits
 * (qh >> 2k) & 3 moved to bits 4..5). */
TQ_INLINE void tq_q6k_codes(const tq_block_q6_k *blk, int h, int half, int8x16_t c[4]) {
    const uint8x16_t m4 = vdupq_n_u8(15), m30 = vdupq_n_u8(0x30);
    const int8x16_t o32 = vdupq_n_s8(32);
    const int o = 16 * half;
    const uint8x16_t qh = vld1q_u8(blk->qh + 32 * h + o);
    const uint8x16_t l0 = vld1q_u8(blk->ql + 64 * h + o), l1 = vld1q_u8(blk->ql + 64 * h + 32 + o);
    const uint8x16_t u[4] = {
        vorrq_u8(vandq_u8(l0, m4), vandq_u8(vshlq_n_u8(qh, 4), m30)),
        vorrq_u8(vandq_u8(l1, m4), vandq_u8(vshlq_n_u8(qh, 2), m30)),
        vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(qh, m30)),
        vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(qh, 2), m30)),
    };
    for (int k = 0; k < 4; k++) c[k] = vsubq_s8(vreinterpretq_s8_u8(u[k]), o32);
}

#endif

#endif
