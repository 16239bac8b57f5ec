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

/* activation formats. TQ_ACTF_Q8_1 (added; earlier values unchanged) is Q8_0 plus the exact
 * integer sum of each block, for the types with a per-block minimum (Q4_1, Q5_1). */
enum { TQ_ACTF_F32 = 0, TQ_ACTF_Q8_0 = 1, TQ_ACTF_Q8_K = 2, TQ_ACTF_Q8_1 = 3, TQ_ACTF_COUNT = 4 };

/* Block layouts (ggml-common.h). f16 fields are IEEE half bit patterns (tq_f16_to_f32). Blocks
 * are read in place from the mmap: block pointers must be 2-byte aligned (GGUF aligns tensor
 * data to 32 and every block size below is even); Q8_K blocks are our own buffers (4-aligned).
 * Within the 32-value types, byte j of qs holds value j in its low nibble and value j + 16 in its
 * high nibble; Q5 types add bit 4 of value i as bit i of qh (little-endian uint32). */
#define TQ_QK32 32
#define TQ_QKK 256
typedef struct { uint16_t d; uint8_t qs[16]; } tq_block_q4_0;              /* x = d * (q - 8) */
typedef struct { uint16_t d, m; uint8_t qs[16]; } tq_block_q4_1;           /* x = d * q + m */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } tq_block_q5_0; /* d * (q - 16) */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } tq_block_q5_1; /* d * q + m */
typedef struct { uint16_t d; int8_t qs[32]; } tq_block_q8_0;               /* x = d * q */
/* Activation of the minimum types: s = sum(qs) exactly (llama.cpp's q8_1 keeps f16(d * sum)
 * instead; the exact integer makes every ISA agree and costs nothing). |s| <= 32 * 127. */
typedef struct { uint16_t d; int16_t s; int8_t qs[32]; } tq_block_q8_1;
/* K-quants, super-blocks of 256. Q4_K / Q5_K: 8 sub-blocks of 32 with 6-bit scale sc and min m
 * packed in scales[12] (j < 4: sc = s[j] & 63, m = s[j+4] & 63; j >= 4: sc = (s[j+4] & 15) |
 * (s[j-4] >> 6) << 4, m = (s[j+4] >> 4) | (s[j] >> 6) << 4); x = d * sc * q - dmin * m.
 * Sub-block j reads the nibbles (j odd: high) of qs[32 * (j / 2) ..][0..32); Q5_K's bit 4 of
 * value l of sub-block j is bit j of qh[l]. */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } tq_block_q4_k;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } tq_block_q5_k;
/* Q6_K: x = d * sc[i / 16] * (q - 32), q 6-bit. For half h (values 128h..128h+127) and
 * l in 0..31: value 128h + 32k + l has low 4 bits from ql[64h + l + 32 (k & 1)] (k >= 2: high
 * nibble) and high 2 bits (qh[32h + l] >> 2k) & 3. */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } tq_block_q6_k;
/* Q8_K activation: d f32, bsums[k] = sum(qs[16k .. 16k+16)). */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } tq_block_q8_k;

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(tq_block_q4_0) == 18, "q4_0");
_Static_assert(sizeof(tq_block_q4_1) == 20, "q4_1");
_Static_assert(sizeof(tq_block_q5_0) == 22, "q5_0");
_Static_assert(sizeof(tq_block_q5_1) == 24, "q5_1");
_Static_assert(sizeof(tq_block_q8_0) == 34, "q8_0");
_Static_assert(sizeof(tq_block_q8_1) == 36, "q8_1");
_Static_assert(sizeof(tq_block_q4_k) == 144, "q4_K");
_Static_assert(sizeof(tq_block_q5_k) == 176, "q5_K");
_Static_assert(sizeof(tq_block_q6_k) == 210, "q6_K");
_Static_assert(sizeof(tq_block_q8_k) == 292, "q8_K");
#endif

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
    /* Several tokens at once (prompt chunks), or NULL where the caller runs gemv per token: the
     * activation of token t starts at (const char *)act + t * act_stride, and out[t * ldo + r] is
     * bit for bit what gemv writes to out[r] for that activation alone. */
    void (*gemm)(const void *w, size_t row_bytes, int rows, int n, const void *act, size_t act_stride,
                 int ntok, float *out, size_t ldo);
} tq_qk_ops;

/* The supported types, listed once: X(ggml id, name, values per block, bytes per block,
 * activation format of the integer dot product, kernel name suffix). Every ops table and the
 * reference kernels' declarations below are expanded from these two lists. */
#define TQ_QK_FLOAT_TYPES(X)                                                                   \
    X(TQ_GGML_F32, "F32", 1, 4, TQ_ACTF_F32, f32)                                              \
    X(TQ_GGML_F16, "F16", 1, 2, TQ_ACTF_F32, f16)                                              \
    X(TQ_GGML_BF16, "BF16", 1, 2, TQ_ACTF_F32, bf16)
#define TQ_QK_QUANT_TYPES(X)                                                                   \
    X(TQ_GGML_Q8_0, "Q8_0", 32, 34, TQ_ACTF_Q8_0, q8_0)                                        \
    X(TQ_GGML_Q4_0, "Q4_0", 32, 18, TQ_ACTF_Q8_0, q4_0)                                        \
    X(TQ_GGML_Q4_1, "Q4_1", 32, 20, TQ_ACTF_Q8_1, q4_1)                                        \
    X(TQ_GGML_Q5_0, "Q5_0", 32, 22, TQ_ACTF_Q8_0, q5_0)                                        \
    X(TQ_GGML_Q5_1, "Q5_1", 32, 24, TQ_ACTF_Q8_1, q5_1)                                        \
    X(TQ_GGML_Q4_K, "Q4_K", 256, 144, TQ_ACTF_Q8_K, q4_k)                                      \
    X(TQ_GGML_Q5_K, "Q5_K", 256, 176, TQ_ACTF_Q8_K, q5_k)                                      \
    X(TQ_GGML_Q6_K, "Q6_K", 256, 210, TQ_ACTF_Q8_K, q6_k)

/* The entry of `type` in an ops table of n entries, or NULL (qk_scalar.c). */
const tq_qk_ops *tq_qk_find(const tq_qk_ops *ops, size_t n, int type);

/* Ops of a type for the ISA named by a tq_kernels table (tq.h `isa`, e.g. "avx512vnni" uses the
 * best x86 ops available); NULL if the type is not supported. The scalar ops are the reference. */
const tq_qk_ops *tq_qk_get(const char *isa, int type);

/* Per-ISA lookups (qk_scalar.c, qk_avx2.c, qk_neon.c): NULL when the type is unsupported or the
 * file was built for another architecture. They do not check the CPU: tq_qk_get() does. */
const tq_qk_ops *tq_qk_ops_scalar(int type);
const tq_qk_ops *tq_qk_ops_avx2(int type);
const tq_qk_ops *tq_qk_ops_neon(int type);

/* Scalar reference kernels: the spec the SIMD paths are tested against. Per block the integer
 * dot is exact (int32); the block scale product, then the float sum over blocks in order. */
#define TQ_QK_SCALAR_DECL(id, name, block, bytes, act, t)                                      \
    void tq_qk_gemv_##t##_scalar(const void *w, size_t row_bytes, int rows, int n,             \
                                 const void *act, float *out);                                 \
    void tq_qk_dequant_##t##_scalar(const void *row, float *out, int n);
TQ_QK_FLOAT_TYPES(TQ_QK_SCALAR_DECL)
TQ_QK_QUANT_TYPES(TQ_QK_SCALAR_DECL)
#undef TQ_QK_SCALAR_DECL

/* Exact-activation variant: the f32 activation is used as is (act = TQ_ACTF_F32), and each weight
 * block is dequantized inside the dot product: out[r] = sum_i dequant(w_r)[i] * x[i] in f32. This
 * removes the Q8 rounding of the activations described at the top of this file (on SmolLM2-135M
 * Q4_1 it alone costs 1.4% perplexity) at the price of float work per weight instead of byte work.
 * Same types, block layouts, dequant functions and ISA names as tq_qk_get(); the float types
 * (F32, F16, BF16) return their usual ops, which already take f32 activations. NULL when
 * tq_qk_get() would return NULL. The scalar ops (qk_f32act_scalar.c) are the reference. */
const tq_qk_ops *tq_qk_get_f32act(const char *isa, int type);

/* Per-ISA lookups of the f32-activation ops of the quantized types (qk_f32act_*.c); like
 * tq_qk_ops_avx2() etc. they do not check the CPU and are NULL on another architecture. */
const tq_qk_ops *tq_qk_ops_f32act_scalar(int type);
const tq_qk_ops *tq_qk_ops_f32act_avx2(int type);
/* The AVX2 ops with prompt GEMMs built for 32 YMM registers (AVX-512 VL): bit-identical results. */
const tq_qk_ops *tq_qk_ops_f32act_avx512(int type);
const tq_qk_ops *tq_qk_ops_f32act_neon(int type);

/* Scalar reference of the f32-activation gemv (act: const float[n]): each block is dequantized
 * with the type's scalar dequant function (bit-identical to gguf / ggml), every 32 values are
 * dotted with x in order into one float, and those chunk sums are added to the row sum in order. */
#define TQ_QK_F32ACT_DECL(id, name, block, bytes, act, t)                                      \
    void tq_qk_gemv_f32act_##t##_scalar(const void *w, size_t row_bytes, int rows, int n,      \
                                        const void *act, float *out);
TQ_QK_QUANT_TYPES(TQ_QK_F32ACT_DECL)
#undef TQ_QK_F32ACT_DECL

/* Bytes of an activation of n values in format act (n a multiple of 32, or 256 for Q8_K; 0 for an
 * unknown format). */
size_t tq_qk_act_bytes(int act, int n);
/* Quantizes f32 x[n] into format act (llama.cpp's quantize_row_q8_0 / q8_K semantics);
 * TQ_ACTF_F32 copies. Same result on every ISA (round-to-nearest as llama.cpp's reference). */
void tq_qk_quant_act(int act, const float *x, void *out, int n);

#ifdef __cplusplus
}
#endif

#endif
