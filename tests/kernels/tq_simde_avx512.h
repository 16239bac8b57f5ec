/* The AVX-512 intrinsics for a test build of engine/kernels/tq_avx512.c on a CPU without AVX-512
 * (-DTQ_SIMDE_AVX512, tests/kernels/test_x86_emulated.py): SIMDe's portable implementations under
 * the intrinsics' own names, plus the few that SIMDe 0.7.4 (Debian 12) lacks or aliases wrongly,
 * written here from Intel's definitions of them. Built without any -m flag, so nothing here can
 * execute an instruction the host does not have. */
#ifndef TQ_SIMDE_AVX512_H
#define TQ_SIMDE_AVX512_H

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>
#include <stdint.h>
#include <string.h>

typedef simde__mmask8 __mmask8;
typedef simde__mmask16 __mmask16;
typedef simde__mmask32 __mmask32;
typedef simde__mmask64 __mmask64;

/* SIMDe 0.7.4 declares this alias with four parameters */
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16(a, b)

/* per 32-bit lane: a >> count, arithmetic; counts above 31 fill with the sign bit */
static inline simde__m512i tq_simde_srav_epi32(simde__m512i a, simde__m512i count) {
    int32_t x[16], c[16];
    memcpy(x, &a, sizeof(x));
    memcpy(c, &count, sizeof(c));
    for (int i = 0; i < 16; i++) {
        const uint32_t n = (uint32_t)c[i];
        x[i] = n > 31 ? (x[i] < 0 ? -1 : 0) : (x[i] >> n);
    }
    memcpy(&a, x, sizeof(x));
    return a;
}
#define _mm512_srav_epi32(a, count) tq_simde_srav_epi32(a, count)
/* SIMDe 0.7.4 has no _mm512_srai_epi32: the same shift by one count in every lane */
#define _mm512_srai_epi32(a, n) tq_simde_srav_epi32(a, simde_mm512_set1_epi32(n))

/* sum of the 16 lanes, wrapping like the instructions' 32-bit adds */
static inline int tq_simde_reduce_add_epi32(simde__m512i a) {
    uint32_t x[16], s = 0;
    memcpy(x, &a, sizeof(x));
    for (int i = 0; i < 16; i++) s += x[i];
    return (int)s;
}
#define _mm512_reduce_add_epi32(a) tq_simde_reduce_add_epi32(a)

static inline float tq_simde_reduce_max_ps(simde__m512 a) {
    float x[16];
    memcpy(x, &a, sizeof(x));
    float m = x[0];
    for (int i = 1; i < 16; i++) m = x[i] > m ? x[i] : m;
    return m;
}
#define _mm512_reduce_max_ps(a) tq_simde_reduce_max_ps(a)


#ifndef _MM_FROUND_NO_EXC
#define _MM_FROUND_NO_EXC SIMDE_MM_FROUND_NO_EXC
#endif

/* a 512-bit value from two 256-bit halves, and back */
#define TQ_SIMDE_JOIN_PS(lo, hi) simde_mm512_insertf32x8(simde_mm512_castps256_ps512(lo), hi, 1)
#define TQ_SIMDE_JOIN_SI(lo, hi) simde_mm512_inserti64x4(simde_mm512_castsi256_si512(lo), hi, 1)
#define TQ_SIMDE_HALF_PS(a, i) simde_mm256_castsi256_ps(simde_mm512_extracti64x4_epi64(simde_mm512_castps_si512(a), i))

static inline simde__m512 tq_simde_cvtepi32_ps(simde__m512i a) {
    return TQ_SIMDE_JOIN_PS(simde_mm256_cvtepi32_ps(simde_mm512_extracti64x4_epi64(a, 0)),
                            simde_mm256_cvtepi32_ps(simde_mm512_extracti64x4_epi64(a, 1)));
}
#define _mm512_cvtepi32_ps(a) tq_simde_cvtepi32_ps(a)

/* rounded by the current mode (nearest-even), out of range -> INT32_MIN, as the instruction */
static inline simde__m512i tq_simde_cvtps_epi32(simde__m512 a) {
    return TQ_SIMDE_JOIN_SI(simde_mm256_cvtps_epi32(TQ_SIMDE_HALF_PS(a, 0)),
                            simde_mm256_cvtps_epi32(TQ_SIMDE_HALF_PS(a, 1)));
}
#define _mm512_cvtps_epi32(a) tq_simde_cvtps_epi32(a)

static inline simde__m512i tq_simde_cvtepi8_epi32(simde__m128i a) {
    return TQ_SIMDE_JOIN_SI(simde_mm256_cvtepi8_epi32(a), simde_mm256_cvtepi8_epi32(simde_mm_srli_si128(a, 8)));
}
#define _mm512_cvtepi8_epi32(a) tq_simde_cvtepi8_epi32(a)

static inline simde__m512 tq_simde_cvtph_ps(simde__m256i a) {
    return TQ_SIMDE_JOIN_PS(simde_mm256_cvtph_ps(simde_mm256_extracti128_si256(a, 0)),
                            simde_mm256_cvtph_ps(simde_mm256_extracti128_si256(a, 1)));
}
#define _mm512_cvtph_ps(a) tq_simde_cvtph_ps(a)

/* gcc's order: the two 256-bit halves, then the 128-bit halves, then lanes 0+2 / 1+3, then those */
static inline float tq_simde_reduce_add_ps(simde__m512 a) {
    float x[16];
    memcpy(x, &a, sizeof(x));
    for (int i = 0; i < 8; i++) x[i] += x[i + 8];
    for (int i = 0; i < 4; i++) x[i] += x[i + 4];
    return (x[0] + x[2]) + (x[1] + x[3]);
}
#define _mm512_reduce_add_ps(a) tq_simde_reduce_add_ps(a)

/* Masked loads and stores, one lane of `size` bytes at a time: lanes outside the mask are zero
 * (loads) or left alone (stores), and their memory is never touched, as with the instructions. */
static inline void tq_simde_mask_copy(void *dst, const void *src, uint64_t k, int lanes, int size) {
    for (int i = 0; i < lanes; i++)
        if ((k >> i) & 1) memcpy((char *)dst + i * size, (const char *)src + i * size, (size_t)size);
}
/* `name`(k, p): a vector of `type` from 16 lanes of `size` bytes at p, the masked ones loaded */
#define TQ_SIMDE_MASKZ_LOAD(name, type, zero, size)                 \
    static inline type name(simde__mmask16 k, const void *p) {      \
        type r = zero;                                              \
        tq_simde_mask_copy(&r, p, k, 16, size);                     \
        return r;                                                   \
    }
TQ_SIMDE_MASKZ_LOAD(tq_simde_maskz_loadu_ps, simde__m512, simde_mm512_setzero_ps(), 4)
TQ_SIMDE_MASKZ_LOAD(tq_simde_maskz_loadu_epi32, simde__m512i, simde_mm512_setzero_si512(), 4)
TQ_SIMDE_MASKZ_LOAD(tq_simde_maskz_loadu_epi16, simde__m256i, simde_mm256_setzero_si256(), 2)
TQ_SIMDE_MASKZ_LOAD(tq_simde_maskz_loadu_epi8, simde__m128i, simde_mm_setzero_si128(), 1)
#define _mm512_maskz_loadu_ps(k, p) tq_simde_maskz_loadu_ps(k, p)
#define _mm512_maskz_loadu_epi32(k, p) tq_simde_maskz_loadu_epi32(k, p)
#define _mm256_maskz_loadu_epi16(k, p) tq_simde_maskz_loadu_epi16(k, p)
#define _mm_maskz_loadu_epi8(k, p) tq_simde_maskz_loadu_epi8(k, p)
static inline void tq_simde_mask_storeu_ps(void *p, simde__mmask16 k, simde__m512 a) {
    tq_simde_mask_copy(p, &a, k, 16, 4);
}
#define _mm512_mask_storeu_ps(p, k, a) tq_simde_mask_storeu_ps(p, k, a)
/* each int32 lane saturated to int8, the masked lanes stored */
static inline void tq_simde_mask_cvtsepi32_storeu_epi8(void *p, simde__mmask16 k, simde__m512i a) {
    int32_t x[16];
    int8_t q[16];
    memcpy(x, &a, sizeof(x));
    for (int i = 0; i < 16; i++) q[i] = (int8_t)(x[i] > 127 ? 127 : x[i] < -128 ? -128 : x[i]);
    tq_simde_mask_copy(p, q, k, 16, 1);
}
#define _mm512_mask_cvtsepi32_storeu_epi8(p, k, a) tq_simde_mask_cvtsepi32_storeu_epi8(p, k, a)

#endif
