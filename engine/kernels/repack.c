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

#include <stdlib.h>
#include <string.h>

#include "tq.h"

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

int tq_repack_b3(const uint8_t *src, size_t rows, int cols, uint8_t *dst) {
    const int nb = (cols + TQ_QK - 1) / TQ_QK, nb3 = (cols + TQ_B3_QK - 1) / TQ_B3_QK;
    const size_t in_bytes = (size_t)nb * TQ_QK_BYTES, out_bytes = (size_t)nb3 * TQ_B3_BYTES;
    const size_t ncodes = (size_t)nb3 * TQ_B3_QK > (size_t)nb * TQ_QK ? (size_t)nb3 * TQ_B3_QK : (size_t)nb * TQ_QK;
    uint8_t *codes = malloc(ncodes); /* one row's codes, padded with 1 */
    if (!codes) return TQ_ENOMEM;
    uint8_t bad = 0;
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *in = src + r * in_bytes;
        for (int b = 0; b < nb; b++) /* tq.h: byte j of a block holds values j, j+32, j+64, j+96 */
            for (int f = 0; f < 4; f++) {
                uint8_t *c = codes + (size_t)b * TQ_QK + 32 * f;
                const uint8_t *q = in + (size_t)b * TQ_QK_BYTES;
                for (int j = 0; j < 32; j++) c[j] = (uint8_t)((q[j] >> (6 - 2 * f)) & 3);
            }
        memset(codes + cols, 1, ncodes - (size_t)cols);
        uint8_t *out = dst + r * out_bytes;
        for (int b = 0; b < nb3; b++) {
            const uint8_t *c = codes + (size_t)b * TQ_B3_QK;
            uint8_t *o = out + (size_t)b * TQ_B3_BYTES;
            for (int j = 0; j < TQ_B3_BYTES; j++) {
                const uint8_t c0 = c[j], c1 = c[j + 64], c2 = c[j + 128], c3 = c[j + 192], c4 = c[j + 256];
                bad |= (uint8_t)((c0 == 3) | (c1 == 3) | (c2 == 3) | (c3 == 3) | (c4 == 3));
                const uint8_t v = (uint8_t)(c0 + 3 * c1 + 9 * c2 + 27 * c3 + 81 * c4); /* <= 242 for codes <= 2 */
                o[j] = v <= 121 ? v : (uint8_t)(0x80 | (242 - v));
            }
        }
    }
    free(codes);
    return bad ? TQ_EINVAL : TQ_OK;
}
