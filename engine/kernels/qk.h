/* Kernels for the common llama.cpp weight types (llama-family models): F32, F16, BF16, Q8_0,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K. Block layouts are llama.cpp's (ggml-common.h), read
 * straight from the GGUF mmap.
 *
 * A matrix-vector product runs in two steps, as in llama.cpp: the f32 activation is first
 * quantized once into the format the weight type pairs with (Q8_0 blocks of 32 for the 32-blocks
 * types, Q8_K blocks of 256 for the K-quants, or kept f32 for float weights), then every row is
 * dotted with it using integer arithmetic inside a block and one float multiply per block.
 * The result therefore differs from an f32 product by the Q8 rounding of the activations. */
#ifndef TQ_QK_H
#define TQ_QK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ggml type ids (GGUF tensor types) */
enum {
    TQ_GGML_F32 = 0,
    TQ_GGML_F16 = 1,
    TQ_GGML_Q4_0 = 2,
    TQ_GGML_Q4_1 = 3,
    TQ_GGML_Q5_0 = 6,
    TQ_GGML_Q5_1 = 7,
    TQ_GGML_Q8_0 = 8,
    TQ_GGML_Q4_K = 12,
    TQ_GGML_Q5_K = 13,
    TQ_GGML_Q6_K = 14,
    TQ_GGML_BF16 = 30,
    TQ_GGML_NTYPES = 40,
};

/* activation formats */
enum { TQ_ACTF_F32 = 0, TQ_ACTF_Q8_0 = 1, TQ_ACTF_Q8_K = 2, TQ_ACTF_COUNT = 3 };

typedef struct {
    int type;        /* ggml type id */
    const char *name;
    int block;       /* values per block (1 for float types) */
    int block_bytes; /* bytes per block */
    int act;         /* TQ_ACTF_* the dot product wants */
    /* row r of w starts at w + r * row_bytes; n = values per row (a multiple of block);
     * act: the activation in format `act` (from tq_qk_quant_act); out[r] = dot(row r, x). */
    void (*gemv)(const void *w, size_t row_bytes, int rows, int n, const void *act, float *out);
    /* one row -> f32 (embedding lookups), n values */
    void (*dequant)(const void *row, float *out, int n);
} tq_qk_ops;

/* Ops of a type for the ISA named by a tq_kernels table (tq.h `isa`, e.g. "avx512vnni" uses the
 * best x86 ops available); NULL if the type is not supported. The scalar ops are the reference. */
const tq_qk_ops *tq_qk_get(const char *isa, int type);

/* Bytes of an activation of n values in format act (n a multiple of 32, or 256 for Q8_K). */
size_t tq_qk_act_bytes(int act, int n);
/* Quantizes f32 x[n] into format act (llama.cpp's quantize_row_q8_0 / q8_K semantics);
 * TQ_ACTF_F32 copies. Same result on every ISA (round-to-nearest as llama.cpp's reference). */
void tq_qk_quant_act(int act, const float *x, void *out, int n);

#ifdef __cplusplus
}
#endif

#endif
