/* Runs the kernels of one ISA table on test vectors from a file and writes the outputs; used by
 * test_neon_qemu.py to test the AArch64 paths under qemu-aarch64 (cross-built with -static), and by
 * test_x86_emulated.py to test the x86 tables this CPU may lack: built with -DTQ_SIMDE_AVX512,
 * tq_avx512.c takes its intrinsics from SIMDe and "avx512" hands out its table whatever the CPU
 * (TRIT_NO_VNNI=1: the AVX-512BW table instead of the VNNI one); with tq_avx2.c built with
 * -DTQ_EMULATE_AVXVNNI, "avx2" hands out the "avxvnni" table (TRIT_NO_VNNI=1: the AVX2 one).
 *
 *   isa_harness <isa> <in> <out>      isa: a name for tq_select_isa ("scalar", "neon", ...)
 *
 * All numbers little-endian. Input: records, each an int32 kind followed by its fields; kind 0 ends.
 *   1 gemv      rows nb asum off | w u8[rows*nb*32] | a i8[nb*128]
 *   2 gemm      rows nb ntok a_stride out_stride off | w u8[rows*nb*32] | a i8[ntok*a_stride] | asum i32[ntok]
 *   3 quant     n npad | x f32[n]
 *   4 f16_gemv  rows cols | w u16[rows*cols] | x f32[cols]
 *   5 f32_dots  len n stride | rows f32[len*stride] | x f32[n]
 *   6 f32_wsum  len n stride | rows f32[len*stride] | w f32[len]
 *   7 scale_out n sa(f32 bits) | acc i32[n] | scale f32[n]
 *   8 softmax   n scale(f32 bits) | x f32[n]
 *   9 f16_dots  len n stride | rows u16[len*stride] | x f32[n]
 *  10 f16_wsum  len n stride | rows u16[len*stride] | w f32[len]
 *  11 q8_dots   len n stride | rows i8[len*stride] | x f32[n]
 *  12 q8_wsum   len n stride | rows i8[len*stride] | w f32[len]
 *  13 sumsq     n prefetch | x f32[n]   (tq_norm.h, the same code for every table)
 *  14 b3_gemv   as gemv with the B3 layout (tq.h): w u8[rows*nb*64] | a i8[nb*320]
 *  15 b3_gemm   as gemm with the B3 layout: w u8[rows*nb*64]
 * Output: the table name in 16 bytes (NUL padded), then per record
 *   gemv i32[rows] | gemm i32[ntok*rows] (row-major by token) | quant i8[max(n,npad)] i32 sum f32 scale
 *   f16_gemv f32[rows] | f32/f16/q8_dots f32[len] | f32/f16/q8_wsum f32[n] | scale_out f32[n] | softmax f32[n]
 *   sumsq f64
 * Byte inputs of gemv/gemm are placed `off` bytes past a 64-byte boundary (unaligned pointers);
 * float inputs 4 bytes past one. Exit status 0 on success, 2 on bad input, 3 if the ISA is absent. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq.h"
#include "tq_norm.h"

#define HARNESS_NAME "isa_harness"
#include "harness_io.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: isa_harness <isa> <in> <out>\n");
        return 2;
    }
#if defined(TQ_SIMDE_AVX512)
    const tq_kernels *k = strcmp(argv[1], "avx512") ? tq_select_isa(argv[1]) : tq_kernels_avx512();
#else
    const tq_kernels *k = tq_select_isa(argv[1]);
#endif
    if (!k) {
        fprintf(stderr, "isa_harness: ISA %s not available (features 0x%x)\n", argv[1], tq_cpu_features());
        return 3;
    }
    harness_begin(argv[2], argv[3], k->isa);
    for (;;) {
        const int32_t kind = rd_i32();
        if (kind == 0) break;
        if (kind == 1 || kind == 14) {
            const int b3 = kind == 14, bb = b3 ? TQ_B3_BYTES : TQ_QK_BYTES, qk = b3 ? TQ_B3_QK : TQ_QK;
            const int rows = rd_i32(), nb = rd_i32(), asum = rd_i32(), off = rd_i32();
            tq_buf w = buf_read((size_t)rows * nb * bb, (size_t)off);
            tq_buf a = buf_read((size_t)nb * qk, (size_t)off + 2);
            int32_t *out = malloc(sizeof(int32_t) * (size_t)(rows > 0 ? rows : 1));
            (b3 ? k->b3_gemv : k->gemv)(w.p, rows, nb, (const int8_t *)a.p, asum, out);
            wr(out, sizeof(int32_t) * (size_t)rows);
            free(out), free(w.raw), free(a.raw);
        } else if (kind == 2 || kind == 15) {
            const int b3 = kind == 15;
            const int rows = rd_i32(), nb = rd_i32(), ntok = rd_i32();
            const int a_stride = rd_i32(), out_stride = rd_i32(), off = rd_i32();
            tq_buf w = buf_read((size_t)rows * nb * (b3 ? TQ_B3_BYTES : TQ_QK_BYTES), (size_t)off);
            tq_buf a = buf_read((size_t)ntok * a_stride, (size_t)off + 1);
            tq_buf s = buf_read(sizeof(int32_t) * (size_t)ntok, 0);
            int32_t *out = malloc(sizeof(int32_t) * (size_t)ntok * out_stride);
            (b3 ? k->b3_gemm : k->gemm)(w.p, rows, nb, (const int8_t *)a.p, (size_t)a_stride, (const int32_t *)s.p,
                                        ntok, out, (size_t)out_stride);
            for (int t = 0; t < ntok; t++) wr(out + (size_t)t * out_stride, sizeof(int32_t) * (size_t)rows);
            free(out), free(w.raw), free(a.raw), free(s.raw);
        } else if (kind == 3) {
            const int n = rd_i32(), npad = rd_i32();
            const int total = n > npad ? n : npad;
            tq_buf x = buf_read(sizeof(float) * (size_t)n, 4);
            int8_t *q = malloc((size_t)total + 1);
            memset(q, 0x55, (size_t)total + 1); /* a missing zero pad shows up */
            int32_t sum = 0;
            const float scale = k->quant_act((const float *)x.p, n, npad, q, &sum);
            wr(q, (size_t)total);
            wr(&sum, 4);
            wr(&scale, 4);
            free(q), free(x.raw);
        } else if (kind == 4) {
            const int rows = rd_i32(), cols = rd_i32();
            tq_buf w = buf_read(sizeof(uint16_t) * (size_t)rows * cols, 2);
            tq_buf x = buf_read(sizeof(float) * (size_t)cols, 4);
            float *out = malloc(sizeof(float) * (size_t)(rows > 0 ? rows : 1));
            k->f16_gemv((const uint16_t *)w.p, rows, cols, (const float *)x.p, out);
            wr(out, sizeof(float) * (size_t)rows);
            free(out), free(w.raw), free(x.raw);
        } else if (kind == 5 || kind == 6 || (kind >= 9 && kind <= 12)) {
            const int len = rd_i32(), n = rd_i32(), stride = rd_i32();
            const int half = kind == 9 || kind == 10, q8 = kind >= 11, dots = kind == 5 || kind == 9 || kind == 11;
            const size_t esz = q8 ? 1 : half ? sizeof(uint16_t) : sizeof(float);
            tq_buf rows = buf_read(esz * (size_t)len * stride, q8 ? 3 : esz); /* codes: an odd address */
            tq_buf v = buf_read(sizeof(float) * (size_t)(dots ? n : len), 4);
            const int nout = dots ? len : n;
            float *out = malloc(sizeof(float) * (size_t)(nout > 0 ? nout : 1));
            const float *vp = (const float *)v.p;
            if (q8 && dots)
                k->q8_dots((const int8_t *)rows.p, (size_t)stride, len, vp, n, out);
            else if (q8)
                k->q8_wsum((const int8_t *)rows.p, (size_t)stride, len, vp, n, out);
            else if (half && dots)
                k->f16_dots((const uint16_t *)rows.p, (size_t)stride, len, vp, n, out);
            else if (half)
                k->f16_wsum((const uint16_t *)rows.p, (size_t)stride, len, vp, n, out);
            else if (dots)
                k->f32_dots((const float *)rows.p, (size_t)stride, len, vp, n, out);
            else
                k->f32_wsum((const float *)rows.p, (size_t)stride, len, vp, n, out);
            wr(out, sizeof(float) * (size_t)nout);
            free(out), free(rows.raw), free(v.raw);
        } else if (kind == 7) {
            const int n = rd_i32();
            const int32_t bits = rd_i32();
            float sa;
            memcpy(&sa, &bits, 4);
            tq_buf acc = buf_read(sizeof(int32_t) * (size_t)n, 4);
            tq_buf scale = buf_read(sizeof(float) * (size_t)n, 4);
            float *out = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
            k->scale_out((const int32_t *)acc.p, n, sa, (const float *)scale.p, out);
            wr(out, sizeof(float) * (size_t)n);
            free(out), free(acc.raw), free(scale.raw);
        } else if (kind == 8) {
            const int n = rd_i32();
            const int32_t bits = rd_i32();
            float scale;
            memcpy(&scale, &bits, 4);
            tq_buf x = buf_read(sizeof(float) * (size_t)n, 4);
            if (n > 0) k->softmax((float *)x.p, n, scale);
            wr(x.p, sizeof(float) * (size_t)n);
            free(x.raw);
        } else if (kind == 13) {
            const int n = rd_i32(), prefetch = rd_i32();
            tq_buf x = buf_read(sizeof(float) * (size_t)n, 4);
            const double ss = tq_sum_squares((const float *)x.p, n, prefetch ? (const float *)x.p : NULL);
            wr(&ss, sizeof ss);
            free(x.raw);
        } else {
            die("unknown record kind", 2);
        }
    }
    return harness_end();
}
