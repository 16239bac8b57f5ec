/* Trit kernels: the packed ternary layout, kernel signatures and the dispatch table.
 *
 * The packed layout is defined here once and never depends on the ISA: every kernel adapts to it.
 *
 * Packed ternary row (the "TQ" layout, identical to bitnet.cpp's x86 I2_S data so that I2_S GGUF
 * tensors are used straight from the mmap without a copy):
 *   a row of K weights is cut into nb = K / TQ_QK blocks of TQ_QK = 128 values, each stored in
 *   TQ_QK_BYTES = 32 bytes. Byte j (0..31) of a block holds values j, j+32, j+64, j+96 in bits
 *   7-6, 5-4, 3-2 and 1-0, as code = w + 1 (0, 1, 2 for -1, 0, +1; code 3 is invalid).
 *   Rows follow each other with no gap: row r starts at byte r * nb * 32.
 * Rows whose length is not a multiple of 128 (HF checkpoints such as intermediate 704) are padded
 * with code 1 (w = 0) at repack time; the matching int8 activations are padded with zeros.
 *
 * Integer products are exact: sum(w * a) = sum(code * a) - sum(a). With |a| <= 128 and K < 2^23
 * nothing overflows int32; every ISA must give bit-identical int32 results.
 */
#ifndef TQ_H
#define TQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TQ_QK 128
#define TQ_QK_BYTES 32

/* The base-3 layout ("B3"), built at load from the TQ layout where the ISA's kernels read it faster
 * (tq_kernels.b3_fast; benchmarks/micro/base3_512.c): 1.6 bits per weight instead of 2, the same
 * int32 sums.
 *   a row of K weights is cut into nb3 = ceil(K / TQ_B3_QK) blocks of TQ_B3_QK = 320 values, each in
 *   TQ_B3_BYTES = 64 bytes. Byte j (0..63) of a block holds values j + 64k (k = 0..4) as the base-3
 *   number v = sum_k code_k 3^k (0..242), stored as v when v <= 121 and as 0x80 | (242 - v) above:
 *   negating every weight (code -> 2 - code) takes v to 242 - v, so the low 7 bits (0..121) index
 *   a table of 122 patterns and the top bit says to negate. Values past K are code 1 (w = 0); the
 *   activations are zero padded to nb3 * 320. Rows follow each other with no gap (nb3 * 64 bytes).
 * These bytes are only ever made by tq_repack_b3 (repack.h), never read from a file. */
#define TQ_B3_QK 320
#define TQ_B3_BYTES 64

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(TQ_QK_BYTES * 4 == TQ_QK, "four 2-bit codes per byte");
#endif

/* Status codes returned by C entry points; engine/_core.pyx maps them to Python errors. */
enum { TQ_OK = 0, TQ_ENOMEM = 1, TQ_EINVAL = 2 };

/* Ternary x int8 matrix-vector product (decode).
 *   w: rows x (nb * 32) bytes, packed as above      a: nb * 128 int8 (zero padded)
 *   asum: sum of a                                   out[r] = sum_i w[r][i] * a[i]   (rows int32) */
typedef void (*tq_gemv_fn)(const uint8_t *w, int rows, int nb, const int8_t *a, int32_t asum,
                           int32_t *out);

/* Ternary x int8 matrix-matrix product (prompt): ntok activation rows share one pass over w.
 *   a: ntok x a_stride int8 (a_stride >= nb * 128)   asum: ntok
 *   out[t * out_stride + r] = sum_i w[r][i] * a[t][i]                                          */
typedef void (*tq_gemm_fn)(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride,
                           const int32_t *asum, int ntok, int32_t *out, size_t out_stride);

/* Per-token int8 activation quantization (BitNet b1.58):
 *   s = 127 * (1 / max(max|x|, 1e-5)) (in that order: transformers evaluates 127 / t as
 *   t.reciprocal() * 127, which differs from a division by 1 ulp in ~25% of rows);
 *   q = clamp(round_half_even(x * s), -128, 127)
 *   writes q[0..n), zeroes q[n..npad), stores sum(q) in *sum and returns s.                      */
typedef float (*tq_quant_fn)(const float *x, int n, int npad, int8_t *q, int32_t *sum);

/* f16 matrix x f32 vector (tied LM head, f16 embeddings): out[r] = sum_i half(w[r][i]) * x[i]. */
typedef void (*tq_f16_gemv_fn)(const uint16_t *w, int rows, int cols, const float *x, float *out);

/* Attention scores: out[j] = dot(rows + j * stride, x) over n floats, for j < len (the keys of
 * one head; stride = elements from one key to the next, head_dim in the head-major cache). One call
 * per head instead of one per key. */
typedef void (*tq_f32_dots_fn)(const float *rows, size_t stride, int len, const float *x, int n, float *out);

/* Attention output: out[i] = sum_j w[j] * rows[j * stride + i] for i < n, j < len (out is
 * overwritten; len 0 gives zeros). */
typedef void (*tq_f32_wsum_fn)(const float *rows, size_t stride, int len, const float *w, int n, float *out);

/* The same two over an f16 KV cache (rows of halves, stride in halves): every half is widened to
 * float exactly, then the sums run as in the f32 kernels of the same path. */
typedef void (*tq_f16_dots_fn)(const uint16_t *rows, size_t stride, int len, const float *x, int n, float *out);
typedef void (*tq_f16_wsum_fn)(const uint16_t *rows, size_t stride, int len, const float *w, int n, float *out);
/* And over an 8-bit cache (rows of int8 codes; each row's scale is applied by the caller: the dots
 * times the key's scale, the weights times the value's scale before the sum). Every code widens to
 * float exactly, so these are the f32 kernels' sums over the codes. */
typedef void (*tq_q8_dots_fn)(const int8_t *rows, size_t stride, int len, const float *x, int n, float *out);
typedef void (*tq_q8_wsum_fn)(const int8_t *rows, size_t stride, int len, const float *w, int n, float *out);

/* Attention weights in place: x[j] = exp(x[j] * scale - max) / sum over j < n (n >= 1), where max
 * is the largest x[j] * scale. SIMD paths use a polynomial exp (within 2 ulp of expf on [-87, 0];
 * below that the weights are < 1e-38 of the largest and flush towards 0); scalar uses expf. */
typedef void (*tq_softmax_fn)(float *x, int n, float scale);

/* Ternary outputs back to floats: out[r] = ((float)acc[r] / sa) * scale[r] for r < n (the
 * activation scale divides, as the reference's dequantized activations q / s do). Correctly
 * rounded division and product: every path is bit-identical to the scalar loop. */
typedef void (*tq_scale_out_fn)(const int32_t *acc, int n, float sa, const float *scale, float *out);

typedef struct {
    const char *isa;           /* "scalar", "avx2", "avxvnni", "avx512", "avx512vnni", "neon", "neon-dotprod" */
    tq_gemv_fn gemv;
    tq_gemm_fn gemm;
    tq_quant_fn quant_act;
    tq_f16_gemv_fn f16_gemv;
    tq_f32_dots_fn f32_dots;
    tq_f32_wsum_fn f32_wsum;
    tq_scale_out_fn scale_out;
    tq_softmax_fn softmax;
    tq_f16_dots_fn f16_dots;
    tq_f16_wsum_fn f16_wsum;
    tq_q8_dots_fn q8_dots;
    tq_q8_wsum_fn q8_wsum;
    int head_lead; /* bytes f16_gemv prefetches ahead of its reads, 0: none (tq_head_prefetch_far) */
    tq_gemv_fn b3_gemv; /* the same over the B3 layout (nb: 320-value blocks); every table has them */
    tq_gemm_fn b3_gemm;
    int b3_fast;        /* 1: these were measured to read a matrix faster than gemv reads its TQ form,
                         * on this kind of CPU (load_model's "auto" then picks B3) */
} tq_kernels;

/* Scalar reference: the spec every other path must match. */
void tq_gemv_scalar(const uint8_t *w, int rows, int nb, const int8_t *a, int32_t asum, int32_t *out);
void tq_gemm_scalar(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride,
                    const int32_t *asum, int ntok, int32_t *out, size_t out_stride);
void tq_b3_gemv_scalar(const uint8_t *w, int rows, int nb, const int8_t *a, int32_t asum, int32_t *out);
void tq_b3_gemm_scalar(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride,
                       const int32_t *asum, int ntok, int32_t *out, size_t out_stride);
float tq_quant_act_scalar(const float *x, int n, int npad, int8_t *q, int32_t *sum);
void tq_f16_gemv_scalar(const uint16_t *w, int rows, int cols, const float *x, float *out);
void tq_scale_out_scalar(const int32_t *acc, int n, float sa, const float *scale, float *out);
void tq_softmax_scalar(float *x, int n, float scale);
/* (the attention kernels f32/f16_dots and _wsum: through tq_kernels_scalar(), see TQ_KV_KERNELS) */

/* Per-ISA tables; each returns NULL when that ISA was not compiled in. */
const tq_kernels *tq_kernels_scalar(void);
const tq_kernels *tq_kernels_avx2(void); /* "avxvnni" on a CPU with AVX-VNNI */
const tq_kernels *tq_kernels_avx512(void);
const tq_kernels *tq_kernels_neon(void);

/* CPU features (cpu.c): bit set, probed once, including OS support for the register state. */
enum {
    TQ_CPU_AVX2 = 1 << 0,        /* AVX2 + FMA + F16C, and the OS saves YMM */
    TQ_CPU_AVX512 = 1 << 1,      /* AVX-512 F/BW/VL, and the OS saves ZMM */
    TQ_CPU_AVX512VNNI = 1 << 2,
    TQ_CPU_NEON = 1 << 3,
    TQ_CPU_NEON_DOTPROD = 1 << 4,
    TQ_CPU_AVXVNNI = 1 << 5,     /* AVX-VNNI (VEX vpdpbusd on YMM), with TQ_CPU_AVX2 */
    TQ_CPU_AMD = 1 << 6,         /* an AMD (or Hygon) x86 CPU: a vendor, for tuning only */
    TQ_CPU_AVX512VBMI = 1 << 7,  /* AVX-512 VBMI (vpermi2b), with TQ_CPU_AVX512 */
};
unsigned tq_cpu_features(void);

/* 1 when the f16 head GEMV should prefetch far ahead of its single linear stream, 0 when the
 * hardware prefetcher alone feeds it best. Measured on the 128256 x 2560 head from DRAM, one thread
 * (benchmarks/micro/head_forms.c and head_forms_avx2.c): on Zen 4 (AVX-512) no software prefetch
 * read best (28.7-29.1 GB/s, every prefetching form 25.7-28.4); on Zen 3 (AVX2) a prefetch 1 KiB
 * ahead (84-87% of a plain read, 2-4 KiB 67-72%); on an Intel Xeon (family 6 model 207, AVX-512)
 * the unprefetched form read 55-63% of a plain read and one 4 KiB ahead into L2 97-98% (AVX2: 1 KiB
 * 87-90%, 4 KiB 105%). So: 0 on AMD, 1 elsewhere. The AVX-512 tables' ternary GEMV follows it too
 * (its prefetches into L2 instead of L1: tq_avx512.c). TRIT_HEAD_PREFETCH_FAR=0 or 1 overrides it
 * (read on every call, for tests and measurements; callers cache the table). */
int tq_head_prefetch_far(void);

/* 1 when the environment variable `name` is set to anything but "" or "0": the debug switches
 * TRIT_NO_VNNI / TRIT_NO_DOTPROD that make a table hand out its fallback on a CPU that has the
 * faster instructions, so the fallback is tested there too. Read on every call (not cached). */
int tq_env_flag(const char *name);

/* Dispatch (dispatch.c). tq_select() picks the best table for this CPU, honouring TRIT_ISA.
 * tq_select_isa(name) returns the table for a named ISA, or NULL when the CPU or the build
 * lacks it. */
const tq_kernels *tq_select(void);
const tq_kernels *tq_select_isa(const char *name);

/* Half / bfloat16 conversion (portable, exact for all finite values, inf and nan). */
float tq_f16_to_f32(uint16_t h);
uint16_t tq_f32_to_f16(float f);
static inline float tq_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

#ifdef __cplusplus
}
#endif

#endif /* TQ_H */
