/* Scalar reference kernels: the spec. Every SIMD path must equal these bit for bit on integer
 * results, and within a named tolerance on float results. Built with baseline flags only. */
#include <math.h>
#include <string.h>

#include "tq.h"
#include "tq_attn.h"

/* code of value i (0..127) inside a 32-byte block: byte i % 32, shift 6 - 2 * (i / 32) */
static inline int tq_code(const uint8_t *block, int i) {
    return (block[i & 31] >> (6 - 2 * (i >> 5))) & 3;
}

static int32_t tq_row_dot(const uint8_t *row, int nb, const int8_t *a) {
    int32_t acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * TQ_QK_BYTES;
        const int8_t *ab = a + (size_t)b * TQ_QK;
        for (int i = 0; i < TQ_QK; i++) acc += tq_code(blk, i) * (int32_t)ab[i];
    }
    return acc;
}

/* the B3 layout (tq.h): byte j of a block holds values j + 64k, code_k = digit k of v in base 3 */
static int32_t tq_b3_row_dot(const uint8_t *row, int nb, const int8_t *a) {
    int32_t acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + (size_t)b * TQ_B3_BYTES;
        const int8_t *ab = a + (size_t)b * TQ_B3_QK;
        for (int j = 0; j < TQ_B3_BYTES; j++) {
            int v = blk[j] & 0x80 ? 242 - (blk[j] & 0x7f) : blk[j];
            for (int k = 0; k < 5; k++, v /= 3) acc += (v % 3) * (int32_t)ab[j + 64 * k];
        }
    }
    return acc;
}

/* out[t * out_stride + r] = dot(row r, token t's activations) - asum[t], rows block_bytes * nb apart */
static void tq_rows_dots(int32_t (*dot)(const uint8_t *, int, const int8_t *), size_t block_bytes,
                         const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride,
                         const int32_t *asum, int ntok, int32_t *out, size_t out_stride) {
    const size_t stride = (size_t)nb * block_bytes;
    for (int t = 0; t < ntok; t++)
        for (int r = 0; r < rows; r++)
            out[(size_t)t * out_stride + r] = dot(w + (size_t)r * stride, nb, a + (size_t)t * a_stride) - asum[t];
}

void tq_gemv_scalar(const uint8_t *w, int rows, int nb, const int8_t *a, int32_t asum, int32_t *out) {
    tq_rows_dots(tq_row_dot, TQ_QK_BYTES, w, rows, nb, a, 0, &asum, 1, out, 0);
}

void tq_gemm_scalar(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride,
                    const int32_t *asum, int ntok, int32_t *out, size_t out_stride) {
    tq_rows_dots(tq_row_dot, TQ_QK_BYTES, w, rows, nb, a, a_stride, asum, ntok, out, out_stride);
}

void tq_b3_gemv_scalar(const uint8_t *w, int rows, int nb, const int8_t *a, int32_t asum, int32_t *out) {
    tq_rows_dots(tq_b3_row_dot, TQ_B3_BYTES, w, rows, nb, a, 0, &asum, 1, out, 0);
}

void tq_b3_gemm_scalar(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride,
                       const int32_t *asum, int ntok, int32_t *out, size_t out_stride) {
    tq_rows_dots(tq_b3_row_dot, TQ_B3_BYTES, w, rows, nb, a, a_stride, asum, ntok, out, out_stride);
}

float tq_quant_act_scalar(const float *x, int n, int npad, int8_t *q, int32_t *sum) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float v = fabsf(x[i]);
        if (v > amax) amax = v;
    }
    const float s = 127.0f * (1.0f / (amax > 1e-5f ? amax : 1e-5f)); /* torch: 127 / t is t.reciprocal() * 127 */
    int32_t acc = 0;
    for (int i = 0; i < n; i++) {
        /* nearbyintf rounds half to even in the default rounding mode, as torch.round does */
        float v = nearbyintf(x[i] * s);
        if (v > 127.0f) v = 127.0f;
        if (v < -128.0f) v = -128.0f;
        q[i] = (int8_t)v;
        acc += q[i];
    }
    if (npad > n) memset(q + n, 0, (size_t)(npad - n));
    *sum = acc;
    return s;
}

float tq_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);           /* inf / nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);   /* normal: rebias 15 -> 127 */
    } else if (man == 0) {
        bits = sign;                                       /* signed zero */
    } else {                                               /* subnormal: normalise */
        exp = 113;
        while (!(man & 0x400u)) {
            man <<= 1;
            exp--;
        }
        bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
    union { uint32_t u; float f; } v;
    v.u = bits;
    return v.f;
}

uint16_t tq_f32_to_f16(float f) {
    union { float f; uint32_t u; } v;
    v.f = f;
    const uint32_t x = v.u;
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0); /* inf/nan */
    if (ax >= 0x477ff000u) return sign | 0x7c00u;                     /* rounds past 65504 */
    if (ax < 0x38800000u) {                                           /* subnormal or zero */
        if (ax < 0x33000000u) return sign;                            /* below half the min */
        const uint32_t e = ax >> 23;
        const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - e;                               /* 14..24 */
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t r = ((ax - 0x38000000u) >> 13);                           /* rebias, drop 13 bits */
    const uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) r++;            /* round half to even */
    return sign | (uint16_t)r;
}

/* f16 -> f32 through a table built once: the scalar head would otherwise spend most of its time
 * converting. 256 KiB, filled on first use (thread-safe: every writer stores the same values). */
static float tq_f16_table[65536];
static volatile int tq_f16_table_ready = 0;

static const float *tq_f16_lut(void) {
    if (!tq_f16_table_ready) {
        for (uint32_t i = 0; i < 65536; i++) tq_f16_table[i] = tq_f16_to_f32((uint16_t)i);
        tq_f16_table_ready = 1;
    }
    return tq_f16_table;
}

void tq_f16_gemv_scalar(const uint16_t *w, int rows, int cols, const float *x, float *out) {
    const float *lut = tq_f16_lut();
    for (int r = 0; r < rows; r++) {
        const uint16_t *row = w + (size_t)r * cols;
        float acc = 0.0f;
        for (int i = 0; i < cols; i++) acc += lut[row[i]] * x[i];
        out[r] = acc;
    }
}

/* h: 0 for f32 rows, 1 for f16 (tq_kv_elem) */
static inline void tq_dots_scalar(const void *rows, size_t stride, int len, const float *x, int n, float *out,
                                  const int h) {
    for (int j = 0; j < len; j++) {
        float acc = 0.0f;
        for (int i = 0; i < n; i++) acc += tq_kv_elem(rows, (size_t)j * stride + i, h) * x[i];
        out[j] = acc;
    }
}

static inline void tq_wsum_scalar(const void *rows, size_t stride, int len, const float *w, int n, float *out,
                                  const int h) {
    for (int i = 0; i < n; i++) out[i] = 0.0f;
    for (int j = 0; j < len; j++)
        for (int i = 0; i < n; i++) out[i] += w[j] * tq_kv_elem(rows, (size_t)j * stride + i, h);
}

TQ_KV_KERNELS(scalar)

void tq_scale_out_scalar(const int32_t *acc, int n, float sa, const float *scale, float *out) {
    for (int r = 0; r < n; r++) out[r] = ((float)acc[r] / sa) * scale[r];
}

void tq_softmax_scalar(float *x, int n, float scale) {
    const float mx = tq_softmax_scale_max(x, 0, n, scale, -INFINITY);
    tq_softmax_normalize(x, 0, n, 1.0f / tq_softmax_exp_sum(x, 0, n, mx, 0.0f));
}

static const tq_kernels tq_scalar_table = {
    "scalar",
    tq_gemv_scalar,
    tq_gemm_scalar,
    tq_quant_act_scalar,
    tq_f16_gemv_scalar,
    tq_f32_dots_scalar,
    tq_f32_wsum_scalar,
    tq_scale_out_scalar,
    tq_softmax_scalar,
    tq_f16_dots_scalar,
    tq_f16_wsum_scalar,
    tq_q8_dots_scalar,
    tq_q8_wsum_scalar,
    0,
    tq_b3_gemv_scalar,
    tq_b3_gemm_scalar,
    0,
};

const tq_kernels *tq_kernels_scalar(void) { return &tq_scalar_table; }
