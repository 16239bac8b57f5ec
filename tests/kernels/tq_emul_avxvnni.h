/* Test builds only (tests/kernels/test_x86_emulated.py): tq_avx2.c built with -DTQ_EMULATE_AVXVNNI
 * (and -I tests/kernels) takes vpdpbusd from here instead of the AVX-VNNI instruction, so its
 * "avxvnni" table runs, and is checked against numpy, on any CPU with AVX2.
 *
 * Exact: per 32-bit lane, acc + u[0]*s[0] + u[1]*s[1] + u[2]*s[2] + u[3]*s[3] with u unsigned and s
 * signed bytes, every product and sum in int32 (no saturation), as the instruction defines it.
 * Each product is within [-32640, 32385], so the bytes widened to int16 multiply exactly in
 * vpmaddwd, whose pair sums are int32. */
#ifndef TQ_EMUL_AVXVNNI_H
#define TQ_EMUL_AVXVNNI_H

#include <immintrin.h>

static inline __m256i tq_emul_dpbusd(__m256i acc, __m256i u, __m256i s) {
    const __m256i u_even = _mm256_and_si256(u, _mm256_set1_epi16(0x00ff)); /* bytes 0, 2 of a lane */
    const __m256i u_odd = _mm256_srli_epi16(u, 8);                          /* bytes 1, 3 */
    const __m256i s_even = _mm256_srai_epi16(_mm256_slli_epi16(s, 8), 8);
    const __m256i s_odd = _mm256_srai_epi16(s, 8);
    return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(u_even, s_even), _mm256_madd_epi16(u_odd, s_odd)));
}

#endif
