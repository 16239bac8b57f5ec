/* Runs the qk.h kernels of one ISA on test vectors from a file and writes the outputs; used by
 * test_qk.py to test the AArch64 NEON paths under qemu-aarch64 (cross-built with -static).
 *
 *   qk_harness <isa> <in> <out>      isa: a name for tq_qk_get ("scalar", "neon", ...)
 *
 * All numbers little-endian. Input: records, each an int32 kind and its fields; kind 0 ends.
 *   1 gemv     type rows n off | w u8[rows * row_bytes] | x f32[n]
 *   2 dequant  type n off | row u8[row_bytes]
 *   3 gemv_f32 type rows n off | w u8[rows * row_bytes] | x f32[n]   (tq_qk_get_f32act ops)
 *   4 gemm_f32 type rows n ntok off | w u8[rows * row_bytes] | x f32[ntok * n]
 *   5 gemm     type rows n ntok off | w u8[rows * row_bytes] | x f32[ntok * n]   (tq_qk_get ops:
 *              each token's x quantized into the paired format first)
 * Output: the tq_kernels table name for isa in 16 bytes (NUL padded: tells "neon" from
 * "neon-dotprod"), then per record
 *   gemv     u8 simd (1: the ISA has its own gemv) | act u8[tq_qk_act_bytes] | f32[rows]
 *   dequant  f32[n]
 *   gemv_f32 u8 simd (1: the ISA has its own f32-activation gemv) | f32[rows]
 *   gemm_f32 u8 gemm (1: the ISA has a prompt GEMM) | f32[ntok * rows] from it (or 0s) | the
 *            f32-activation gemv of each token, f32[ntok * rows]
 *   gemm     the same with the usual ops
 * Weight bytes are placed `off` bytes past a 64-byte boundary (off even: blocks are 2-aligned).
 * Exit status 0 on success, 2 on bad input, 3 if the ISA or a type is absent. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qk.h"

#define HARNESS_NAME "qk_harness"
#include "harness_io.h"
#include "tq.h"

static const tq_qk_ops *ops_of(const char *isa, int type) {
    const tq_qk_ops *ops = tq_qk_get(isa, type);
    if (!ops) die("ISA or type not available", 3);
    return ops;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: qk_harness <isa> <in> <out>\n");
        return 2;
    }
    const char *isa = argv[1];
    const tq_kernels *k = tq_select_isa(isa);
    if (!k) die("ISA not available", 3);
    harness_begin(argv[2], argv[3], k->isa);
    for (;;) {
        const int32_t kind = rd_i32();
        if (kind == 0) break;
        if (kind == 1) {
            const int type = rd_i32(), rows = rd_i32(), n = rd_i32(), off = rd_i32();
            const tq_qk_ops *ops = ops_of(isa, type);
            const size_t rb = (size_t)(n / ops->block) * ops->block_bytes;
            const tq_buf wb = buf_read(rb * rows, (size_t)off), xb = buf_read(sizeof(float) * (size_t)n, 0);
            const uint8_t *w = wb.p;
            const float *x = (const float *)xb.p;
            const size_t ab = tq_qk_act_bytes(ops->act, n);
            void *act = malloc(ab + 1);
            float *out = malloc(sizeof(float) * (size_t)(rows > 0 ? rows : 1));
            if (!act || !out) die("out of memory", 2);
            tq_qk_quant_act(ops->act, x, act, n);
            ops->gemv(w, rb, rows, n, act, out);
            const uint8_t simd = ops->gemv != ops_of("scalar", type)->gemv;
            wr(&simd, 1);
            wr(act, ab);
            wr(out, sizeof(float) * (size_t)rows);
            free(act), free(out), free(wb.raw), free(xb.raw);
        } else if (kind == 2) {
            const int type = rd_i32(), n = rd_i32(), off = rd_i32();
            const tq_qk_ops *ops = ops_of(isa, type);
            const tq_buf rowb = buf_read((size_t)(n / ops->block) * ops->block_bytes, (size_t)off);
            const uint8_t *row = rowb.p;
            float *out = malloc(sizeof(float) * (size_t)n);
            if (!out) die("out of memory", 2);
            ops->dequant(row, out, n);
            wr(out, sizeof(float) * (size_t)n);
            free(out), free(rowb.raw);
        } else if (kind == 3) {
            const int type = rd_i32(), rows = rd_i32(), n = rd_i32(), off = rd_i32();
            const tq_qk_ops *ops = tq_qk_get_f32act(isa, type), *ref = tq_qk_get_f32act("scalar", type);
            if (!ops || !ref) die("ISA or type not available", 3);
            const size_t rb = (size_t)(n / ops->block) * ops->block_bytes;
            const tq_buf wb = buf_read(rb * rows, (size_t)off), xb = buf_read(sizeof(float) * (size_t)n, 0);
            const uint8_t *w = wb.p;
            const float *x = (const float *)xb.p;
            float *out = malloc(sizeof(float) * (size_t)(rows > 0 ? rows : 1));
            if (!out) die("out of memory", 2);
            ops->gemv(w, rb, rows, n, x, out);
            const uint8_t simd = ops->gemv != ref->gemv;
            wr(&simd, 1);
            wr(out, sizeof(float) * (size_t)rows);
            free(out), free(wb.raw), free(xb.raw);
        } else if (kind == 4 || kind == 5) {
            const int type = rd_i32(), rows = rd_i32(), n = rd_i32(), ntok = rd_i32(), off = rd_i32();
            const tq_qk_ops *ops = kind == 4 ? tq_qk_get_f32act(isa, type) : tq_qk_get(isa, type);
            if (!ops) die("ISA or type not available", 3);
            const size_t rb = (size_t)(n / ops->block) * ops->block_bytes, nout = (size_t)ntok * rows;
            const tq_buf wb = buf_read(rb * rows, (size_t)off), xb = buf_read(sizeof(float) * (size_t)n * ntok, 0);
            const uint8_t *w = wb.p;
            const float *x = (const float *)xb.p;
            const size_t ab = tq_qk_act_bytes(ops->act, n); /* f32: n floats, as x itself */
            uint8_t *acts = malloc(ab * (ntok ? ntok : 1) + 1);
            float *out = calloc(nout ? nout : 1, sizeof(float)), *per = calloc(nout ? nout : 1, sizeof(float));
            if (!acts || !out || !per) die("out of memory", 2);
            for (int t = 0; t < ntok; t++) tq_qk_quant_act(ops->act, x + (size_t)t * n, acts + (size_t)t * ab, n);
            if (ops->gemm) ops->gemm(w, rb, rows, n, acts, ab, ntok, out, (size_t)rows);
            for (int t = 0; t < ntok; t++) ops->gemv(w, rb, rows, n, acts + (size_t)t * ab, per + (size_t)t * rows);
            const uint8_t has = ops->gemm != 0;
            wr(&has, 1);
            wr(out, sizeof(float) * nout);
            wr(per, sizeof(float) * nout);
            free(acts), free(out), free(per), free(wb.raw), free(xb.raw);
        } else {
            die("unknown record kind", 2);
        }
    }
    return harness_end();
}
