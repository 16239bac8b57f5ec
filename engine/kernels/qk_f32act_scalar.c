/* Scalar reference of the f32-activation gemv for the llama.cpp weight types (qk.h,
 * tq_qk_get_f32act) and its dispatch. Built with baseline flags only.
 *
 * The spec is literally dequant(row) . x: every block goes through the type's scalar dequant
 * function (bit-identical to gguf.quants), then each 32 values are summed in order into one float
 * (the compiler may contract multiply-add into FMA where the baseline has it, as on AArch64), and
 * the chunk sums are added to the row sum in order. The SIMD files factor the block scale (and
 * minimum) out of the inner sums instead; they agree with this within float rounding of the
 * terms |scale part * x| + |minimum part * x| (tests/kernels/test_qk_f32act.py states the bound).
 */
#include <string.h>

#include "qk.h"
#include "tq.h"

typedef void (*tq_qk_dequant_fn)(const void *row, float *out, int n);

/* One row: blocks of `block` values (32 or 256), `bb` bytes each, dequantized into tmp. */
static float tq_f32act_row(tq_qk_dequant_fn dq, int block, int bb, const uint8_t *row, int n,
                           const float *x) {
    float tmp[TQ_QKK]; /* one dequantized block */
    float acc = 0.0f;
    for (int b = 0; b < n / block; b++) {
        dq(row + (size_t)b * bb, tmp, block);
        const float *xb = x + (size_t)b * block;
        for (int c = 0; c < block; c += 32) {
            float s = 0.0f;
            for (int j = 0; j < 32; j++) s += tmp[c + j] * xb[c + j];
            acc += s;
        }
    }
    return acc;
}

#define TQ_F32ACT_GEMV(t, block, bb)                                                               \
    void tq_qk_gemv_f32act_##t##_scalar(const void *w, size_t row_bytes, int rows, int n,          \
                                        const void *act, float *out) {                             \
        for (int r = 0; r < rows; r++)                                                             \
            out[r] = tq_f32act_row(tq_qk_dequant_##t##_scalar, block, bb,                          \
                                   (const uint8_t *)w + (size_t)r * row_bytes, n, (const float *)act); \
    }
#define TQ_F32ACT_GEMV_OF(T, name, block, bytes, act, t) TQ_F32ACT_GEMV(t, block, bytes)
TQ_QK_QUANT_TYPES(TQ_F32ACT_GEMV_OF)
#undef TQ_F32ACT_GEMV_OF
#undef TQ_F32ACT_GEMV

#define TQ_QK_OPS(T, name, block, bytes, act, fn) \
    {T, name, block, bytes, TQ_ACTF_F32, tq_qk_gemv_f32act_##fn##_scalar, tq_qk_dequant_##fn##_scalar},

static const tq_qk_ops tq_qk_f32act_scalar_ops[] = {
    TQ_QK_QUANT_TYPES(TQ_QK_OPS)
};
#undef TQ_QK_OPS

const tq_qk_ops *tq_qk_ops_f32act_scalar(int type) {
    return tq_qk_find(tq_qk_f32act_scalar_ops, sizeof(tq_qk_f32act_scalar_ops) / sizeof(tq_qk_f32act_scalar_ops[0]), type);
}

/* Same ISA names and CPU checks as tq_qk_get(), which answers first: NULL there (unknown name,
 * ISA the CPU lacks, unsupported type) is NULL here; its float-type ops already take f32. A type
 * an ISA file lacks falls back to the scalar f32-activation ops. */
const tq_qk_ops *tq_qk_get_f32act(const char *isa, int type) {
    const tq_qk_ops *usual = tq_qk_get(isa, type);
    if (!usual || usual->act == TQ_ACTF_F32) return usual;
    const tq_qk_ops *ref = tq_qk_ops_f32act_scalar(type);
    const tq_qk_ops *ops = NULL;
    if (!ref || !isa || !strcmp(isa, "scalar")) return ref;
    if (!strcmp(isa, "avx2") || !strcmp(isa, "avxvnni"))
        ops = tq_qk_ops_f32act_avx2(type);
    else if (!strcmp(isa, "avx512") || !strcmp(isa, "avx512vnni"))
        ops = tq_cpu_features() & TQ_CPU_AVX512 ? tq_qk_ops_f32act_avx512(type) : tq_qk_ops_f32act_avx2(type);
    else if (!strcmp(isa, "neon") || !strcmp(isa, "neon-dotprod"))
        ops = tq_qk_ops_f32act_neon(type);
    return ops ? ops : ref;
}
