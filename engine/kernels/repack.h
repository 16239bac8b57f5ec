/* llama.cpp's ternary block types (TQ1_0, TQ2_0: ggml-common.h) repacked into the TQ layout (tq.h)
 * at load. Scalar C with baseline flags: it runs once per load, at memory speed. */
#ifndef TQ_REPACK_H
#define TQ_REPACK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    TQ_K = 256,            /* values per TQ1_0 / TQ2_0 block: two TQ blocks of 128 */
    TQ1_0_BYTES = 54,      /* block_tq1_0 { uint8_t qs[48]; uint8_t qh[4]; ggml_half d; } */
    TQ2_0_BYTES = 66,      /* block_tq2_0 { uint8_t qs[64]; ggml_half d; } */
    TQ_K_PACKED = TQ_K / 4 /* bytes of one repacked block: 64 */
};

/* n blocks (n * TQ1_0_BYTES / TQ2_0_BYTES bytes) -> out: n * TQ_K_PACKED bytes of TQ codes, value
 * order kept (a row of whole blocks becomes a row of TQ blocks). nonzero[i] = 1 when block i holds
 * a nonzero weight (a code other than 1), else 0. The scale d is not read. TQ2_0 codes pass through
 * unchecked (a 3 stays 3: the caller's tq_scan_codes finds it); base-3 TQ1_0 bytes cannot make one. */
void tq_repack_tq1_0(const uint8_t *blocks, size_t n, uint8_t *out, uint8_t *nonzero);
void tq_repack_tq2_0(const uint8_t *blocks, size_t n, uint8_t *out, uint8_t *nonzero);

/* rows of TQ codes (tq.h: nb = ceil(cols / 128) blocks, nb * 32 bytes a row) -> the B3 layout
 * (nb3 = ceil(cols / 320) blocks, nb3 * 64 bytes a row; values past cols code 1). dst may be src
 * when nb3 * 64 <= nb * 32 (each row is read whole before it is written, and no B3 row then ends
 * past the start of the next TQ row; for short rows the padding makes B3 the longer form).
 * TQ_EINVAL when a code 3 is met (dst then partly written), TQ_ENOMEM, else TQ_OK. */
int tq_repack_b3(const uint8_t *src, size_t rows, int cols, uint8_t *dst);

#ifdef __cplusplus
}
#endif

#endif
