/* TQ1_0 / TQ2_0 -> TQ layout. Layouts (engine/ternary.py has the derivation; tests compare with the
 * gguf package's quantizers and with the numpy reference):
 *
 * TQ layout: per 128 values, 32 bytes; byte j holds values j, j+32, j+64, j+96 in bits 7-6, 5-4,
 * 3-2, 1-0 as code = w + 1. A 256-value block becomes TQ blocks 0 (values 0..127) and 1 (128..255).
 *
 * TQ1_0: qs[m] (m < 32) holds values m + 32k (k = 0..4), qs[32 + m] (m < 16) holds 160 + m + 16k,
 * qh[m] (m < 4) holds 240 + m + 4k (k = 0..3); trit k of byte b is ((b * 3^k) mod 256) * 3 >> 8.
 * So, with out0 / out1 the 32 bytes of TQ blocks 0 / 1:
 *   out0[m]      = qs[m] trits 0, 1, 2, 3                        (values m, m+32, m+64, m+96)
 *   out1[m]      = qs[m] trit 4 | qs[32+m] trits 0, 2, 4          (m < 16)
 *   out1[16+m]   = qs[16+m] trit 4 | qs[32+m] trits 1, 3 | qh[m & 3] trit (m >> 2)
 *
 * TQ2_0: qs byte 32c + m holds values 128c + m + 32l in bits 2l+1..2l: the TQ grouping with the
 * four 2-bit fields in the reverse order. */
#include "repack.h"

#include <string.h>

/* Trit of a base-3 byte for pow3 = 3^k (ggml's dequantizer): all in 8 and 16 bits, so that gcc
 * vectorizes the loops below with SSE2 (3x faster than 256-entry tables, which it cannot). */
static inline uint8_t trit(uint8_t b, uint8_t pow3) {
    const uint8_t x = (uint8_t)(b * pow3); /* mod 256 */
    return (uint8_t)(((uint16_t)x * 3) >> 8);
}

/* 1 when any of the 64 bytes differs from 0x55 (four codes of 1 = four zero weights) */
static inline uint8_t tq_block_nonzero(const uint8_t *p) {
    uint64_t diff = 0;
    for (int i = 0; i < TQ_K_PACKED; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        diff |= w ^ 0x5555555555555555ull;
    }
    return diff != 0;
}

void tq_repack_tq1_0(const uint8_t *restrict blocks, size_t n, uint8_t *restrict out,
                     uint8_t *restrict nonzero) {
    for (size_t i = 0; i < n; i++) {
        const uint8_t *qs = blocks + i * TQ1_0_BYTES; /* qs[48], then qh[4] */
        const uint8_t *qh = qs + 48;
        uint8_t *o0 = out + i * TQ_K_PACKED; /* [32] TQ block 0 */
        uint8_t *o1 = o0 + 32;               /* [32] TQ block 1 */
        for (int m = 0; m < 32; m++) {
            const uint8_t v = qs[m];
            o0[m] = (uint8_t)(trit(v, 1) << 6 | trit(v, 3) << 4 | trit(v, 9) << 2 | trit(v, 27));
            o1[m] = (uint8_t)(trit(v, 81) << 6);
        }
        for (int m = 0; m < 16; m++) {
            const uint8_t v = qs[32 + m];
            o1[m] |= (uint8_t)(trit(v, 1) << 4 | trit(v, 9) << 2 | trit(v, 81));
            o1[16 + m] |= (uint8_t)(trit(v, 3) << 4 | trit(v, 27) << 2);
        }
        for (int m = 0; m < 4; m++) {
            const uint8_t v = qh[m];
            o1[16 + m] |= trit(v, 1);
            o1[20 + m] |= trit(v, 3);
            o1[24 + m] |= trit(v, 9);
            o1[28 + m] |= trit(v, 27);
        }
        nonzero[i] = tq_block_nonzero(o0);
    }
}

void tq_repack_tq2_0(const uint8_t *restrict blocks, size_t n, uint8_t *restrict out,
                     uint8_t *restrict nonzero) {
    const uint64_t m2 = 0x3333333333333333ull, m4 = 0x0F0F0F0F0F0F0F0Full;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *qs = blocks + i * TQ2_0_BYTES; /* qs[64], then d */
        uint8_t *o = out + i * TQ_K_PACKED;           /* [64] TQ blocks 0 and 1 */
        for (int j = 0; j < TQ_K_PACKED; j += 8) {
            uint64_t w;
            memcpy(&w, qs + j, 8);
            w = ((w >> 2) & m2) | ((w & m2) << 2); /* swap the 2-bit fields within each nibble */
            w = ((w >> 4) & m4) | ((w & m4) << 4); /* then the nibbles within each byte */
            memcpy(o + j, &w, 8);
        }
        nonzero[i] = tq_block_nonzero(o);
    }
}
