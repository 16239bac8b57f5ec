/* Scalar reference kernels for the llama.cpp weight types (qk.h): the spec every SIMD path is
 * tested against. Built with baseline flags only.
 *
 * gemv semantics (every ISA): per block an exact int32 dot of the integer codes with the int8
 * activation, then one float term per block (scale products as written below), summed in float.
 * SIMD paths may add the block terms in another order and with FMA: they agree with this file
 * within that float rounding, never in the integer parts.
 *
 * Dequantization matches gguf.quants (and ggml's dequantize_row_*) bit for bit: the scale
 * products are formed first (d * sc), then times q, then the minimum is added / subtracted, each
 * as its own rounded f32 operation (separate statements, so no compiler contracts them into FMA).
 */
#include <math.h>
#include <string.h>

#include "qk.h"
#include "tq.h"

static inline float tq_h(uint16_t h) { return tq_f16_to_f32(h); }

static inline uint32_t tq_ld32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline const uint8_t *tq_row(const void *w, size_t row_bytes, int r) {
    return (const uint8_t *)w + (size_t)r * row_bytes;
}

/* ---------------------------------------------------------------- activation quantization */

size_t tq_qk_act_bytes(int act, int n) {
    switch (act) {
    case TQ_ACTF_F32: return (size_t)n * sizeof(float);
    case TQ_ACTF_Q8_0: return (size_t)(n / TQ_QK32) * sizeof(tq_block_q8_0);
    case TQ_ACTF_Q8_1: return (size_t)(n / TQ_QK32) * sizeof(tq_block_q8_1);
    case TQ_ACTF_Q8_K: return (size_t)(n / TQ_QKK) * sizeof(tq_block_q8_k);
    default: return 0;
    }
}

/* llama.cpp quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d) (half away from zero);
 * the f32 d quantizes, f16(d) is stored and used by the dot. Returns sum(q). */
static int32_t tq_q8_32(const float *x, uint16_t *dh, int8_t *qs) {
    float amax = 0.0f;
    for (int j = 0; j < TQ_QK32; j++) {
        const float v = fabsf(x[j]);
        if (v > amax) amax = v;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int32_t sum = 0;
    for (int j = 0; j < TQ_QK32; j++) {
        qs[j] = (int8_t)roundf(x[j] * id);
        sum += qs[j];
    }
    *dh = tq_f32_to_f16(d);
    return sum;
}

/* llama.cpp quantize_row_q8_K_ref: scale from the signed value of largest magnitude (first one
 * wins), iscale = -127 / max, q = min(127, nearest_int(iscale * x)) with round half to even (its
 * nearest_int), d = 1 / iscale. */
static void tq_q8_k(const float *x, tq_block_q8_k *y) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < TQ_QKK; j++) {
        const float v = fabsf(x[j]);
        if (v > amax) {
            amax = v;
            max = x[j];
        }
    }
    if (amax == 0.0f) {
        memset(y, 0, sizeof(*y));
        return;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < TQ_QKK; j++) {
        long v = lrintf(iscale * x[j]); /* default rounding mode: half to even */
        y->qs[j] = (int8_t)(v < 127 ? v : 127);
    }
    for (int k = 0; k < TQ_QKK / 16; k++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += y->qs[16 * k + j];
        y->bsums[k] = (int16_t)s;
    }
    y->d = 1.0f / iscale;
}

void tq_qk_quant_act(int act, const float *x, void *out, int n) {
    switch (act) {
    case TQ_ACTF_F32: memcpy(out, x, (size_t)n * sizeof(float)); break;
    case TQ_ACTF_Q8_0: {
        tq_block_q8_0 *y = (tq_block_q8_0 *)out;
        for (int b = 0; b < n / TQ_QK32; b++) tq_q8_32(x + b * TQ_QK32, &y[b].d, y[b].qs);
        break;
    }
    case TQ_ACTF_Q8_1: {
        tq_block_q8_1 *y = (tq_block_q8_1 *)out;
        for (int b = 0; b < n / TQ_QK32; b++) y[b].s = (int16_t)tq_q8_32(x + b * TQ_QK32, &y[b].d, y[b].qs);
        break;
    }
    case TQ_ACTF_Q8_K: {
        tq_block_q8_k *y = (tq_block_q8_k *)out;
        for (int b = 0; b < n / TQ_QKK; b++) tq_q8_k(x + b * TQ_QKK, &y[b]);
        break;
    }
    default: break;
    }
}

/* ---------------------------------------------------------------- float types */

void tq_qk_dequant_f32_scalar(const void *row, float *out, int n) {
    memcpy(out, row, (size_t)n * sizeof(float));
}

void tq_qk_dequant_f16_scalar(const void *row, float *out, int n) {
    const uint16_t *h = (const uint16_t *)row;
    for (int i = 0; i < n; i++) out[i] = tq_h(h[i]);
}

void tq_qk_dequant_bf16_scalar(const void *row, float *out, int n) {
    const uint16_t *h = (const uint16_t *)row;
    for (int i = 0; i < n; i++) out[i] = tq_bf16_to_f32(h[i]);
}

void tq_qk_gemv_f32_scalar(const void *w, size_t row_bytes, int rows, int n, const void *act,
                           float *out) {
    const float *x = (const float *)act;
    for (int r = 0; r < rows; r++) {
        const float *wr = (const float *)tq_row(w, row_bytes, r);
        float acc = 0.0f;
        for (int i = 0; i < n; i++) acc += wr[i] * x[i];
        out[r] = acc;
    }
}

void tq_qk_gemv_f16_scalar(const void *w, size_t row_bytes, int rows, int n, const void *act,
                           float *out) {
    const float *x = (const float *)act;
    for (int r = 0; r < rows; r++) {
        const uint16_t *wr = (const uint16_t *)tq_row(w, row_bytes, r);
        float acc = 0.0f;
        for (int i = 0; i < n; i++) acc += tq_h(wr[i]) * x[i];
        out[r] = acc;
    }
}

void tq_qk_gemv_bf16_scalar(const void *w, size_t row_bytes, int rows, int n, const void *act,
                            float *out) {
    const float *x = (const float *)act;
    for (int r = 0; r < rows; r++) {
        const uint16_t *wr = (const uint16_t *)tq_row(w, row_bytes, r);
        float acc = 0.0f;
        for (int i = 0; i < n; i++) acc += tq_bf16_to_f32(wr[i]) * x[i];
        out[r] = acc;
    }
}

/* ---------------------------------------------------------------- 32-value block types */

/* The 32 integer codes of a block, value order (bias not yet removed). */
static inline void tq_nib32(const uint8_t *qs, int q[32]) {
    for (int j = 0; j < 16; j++) {
        q[j] = qs[j] & 15;
        q[j + 16] = qs[j] >> 4;
    }
}

static inline void tq_nib32_h(const uint8_t *qs, const uint8_t *qh, int q[32]) {
    const uint32_t h = tq_ld32(qh);
    tq_nib32(qs, q);
    for (int j = 0; j < 32; j++) q[j] |= (int)((h >> j) & 1) << 4;
}

static inline int32_t tq_dot32(const int q[32], int bias, const int8_t *a) {
    int32_t s = 0;
    for (int j = 0; j < 32; j++) s += (q[j] - bias) * a[j];
    return s;
}

/* Block i of a 32-value type: its codes in value order with the offset not yet removed (the
 * offset is returned: Q4_0 8, Q5_0 16, else 0), the scale d and, for Q4_1 / Q5_1, the minimum m. */
static int tq_q32_unpack(int type, const void *row, int i, int q[32], float *d, float *m) {
    switch (type) {
    case TQ_GGML_Q8_0: {
        const tq_block_q8_0 *b = (const tq_block_q8_0 *)row + i;
        for (int j = 0; j < 32; j++) q[j] = b->qs[j];
        *d = tq_h(b->d);
        return 0;
    }
    case TQ_GGML_Q4_0: {
        const tq_block_q4_0 *b = (const tq_block_q4_0 *)row + i;
        tq_nib32(b->qs, q);
        *d = tq_h(b->d);
        return 8;
    }
    case TQ_GGML_Q4_1: {
        const tq_block_q4_1 *b = (const tq_block_q4_1 *)row + i;
        tq_nib32(b->qs, q);
        *d = tq_h(b->d);
        *m = tq_h(b->m);
        return 0;
    }
    case TQ_GGML_Q5_0: {
        const tq_block_q5_0 *b = (const tq_block_q5_0 *)row + i;
        tq_nib32_h(b->qs, b->qh, q);
        *d = tq_h(b->d);
        return 16;
    }
    default: { /* TQ_GGML_Q5_1 */
        const tq_block_q5_1 *b = (const tq_block_q5_1 *)row + i;
        tq_nib32_h(b->qs, b->qh, q);
        *d = tq_h(b->d);
        *m = tq_h(b->m);
        return 0;
    }
    }
}

static int tq_q32_has_min(int type) { return type == TQ_GGML_Q4_1 || type == TQ_GGML_Q5_1; }

/* x = d * (q - offset), or d * q + m for the minimum types */
static void tq_q32_dequant(int type, const void *row, float *out, int n) {
    const int has_min = tq_q32_has_min(type);
    int q[32];
    float d, m = 0.0f;
    for (int i = 0; i < n / TQ_QK32; i++) {
        const int off = tq_q32_unpack(type, row, i, q, &d, &m);
        for (int j = 0; j < 32; j++) {
            if (has_min) {
                const float v = d * (float)q[j]; /* exact: 11 x 5 significant bits */
                out[32 * i + j] = v + m;
            } else {
                out[32 * i + j] = d * (float)(q[j] - off);
            }
        }
    }
}

/* Against Q8_0 activations: dw * da * sum((q - offset) * qa) per block. Minimum types, against
 * Q8_1: sum(x_w * x_a) = dw * da * sum(q * qa) + m * da * sum(qa) per block. */
static void tq_q32_gemv(int type, const void *w, size_t row_bytes, int rows, int n, const void *act,
                        float *out) {
    const int has_min = tq_q32_has_min(type);
    int q[32];
    float d, m = 0.0f;
    for (int r = 0; r < rows; r++) {
        const uint8_t *row = tq_row(w, row_bytes, r);
        float acc = 0.0f;
        for (int i = 0; i < n / TQ_QK32; i++) {
            const int off = tq_q32_unpack(type, row, i, q, &d, &m);
            if (has_min) {
                const tq_block_q8_1 *a = (const tq_block_q8_1 *)act + i;
                const int32_t s = tq_dot32(q, 0, a->qs);
                const float da = tq_h(a->d);
                acc += (d * da) * (float)s + (m * da) * (float)a->s;
            } else {
                const tq_block_q8_0 *a = (const tq_block_q8_0 *)act + i;
                const int32_t s = tq_dot32(q, off, a->qs);
                acc += (d * tq_h(a->d)) * (float)s;
            }
        }
        out[r] = acc;
    }
}

#define TQ_Q32_SCALAR(t, T)                                                                        \
    void tq_qk_dequant_##t##_scalar(const void *row, float *out, int n) { tq_q32_dequant(T, row, out, n); } \
    void tq_qk_gemv_##t##_scalar(const void *w, size_t row_bytes, int rows, int n, const void *act,   \
                                 float *out) {                                                     \
        tq_q32_gemv(T, w, row_bytes, rows, n, act, out);                                           \
    }
TQ_Q32_SCALAR(q8_0, TQ_GGML_Q8_0)
TQ_Q32_SCALAR(q4_0, TQ_GGML_Q4_0)
TQ_Q32_SCALAR(q4_1, TQ_GGML_Q4_1)
TQ_Q32_SCALAR(q5_0, TQ_GGML_Q5_0)
TQ_Q32_SCALAR(q5_1, TQ_GGML_Q5_1)
#undef TQ_Q32_SCALAR

/* ---------------------------------------------------------------- K-quants */

static inline void tq_scale_min_k4(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* code l (0..31) of sub-block j of a Q4_K / Q5_K block */
static inline int tq_q4k_code(const uint8_t *qs, int j, int l) {
    return (qs[32 * (j >> 1) + l] >> (4 * (j & 1))) & 15;
}

static inline int tq_q6k_code(const tq_block_q6_k *b, int i) {
    const int h = i >> 7, k = (i >> 5) & 3, l = i & 31;
    const int lo = (b->ql[64 * h + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 15;
    const int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
    return (lo | hi << 4) - 32;
}

/* Q4_K and Q5_K share the header (d, dmin, 12 scale bytes); Q5_K adds bit 4 of each code in qh. */
typedef struct {
    float d, dmin;
    const uint8_t *scales, *qs, *qh; /* qh: NULL for Q4_K */
} tq_k4_view;

static tq_k4_view tq_k4_block(int five, const void *row, int i) {
    tq_k4_view v;
    if (five) {
        const tq_block_q5_k *b = (const tq_block_q5_k *)row + i;
        v.d = tq_h(b->d), v.dmin = tq_h(b->dmin), v.scales = b->scales, v.qs = b->qs, v.qh = b->qh;
    } else {
        const tq_block_q4_k *b = (const tq_block_q4_k *)row + i;
        v.d = tq_h(b->d), v.dmin = tq_h(b->dmin), v.scales = b->scales, v.qs = b->qs, v.qh = NULL;
    }
    return v;
}

/* code l (0..31) of sub-block j */
static inline int tq_k4_code(const tq_k4_view *v, int j, int l) {
    const int q = tq_q4k_code(v->qs, j, l);
    return v->qh ? q | ((v->qh[l] >> j) & 1) << 4 : q;
}

static void tq_k4_dequant(int five, const void *row, float *out, int n) {
    for (int i = 0; i < n / TQ_QKK; i++) {
        const tq_k4_view b = tq_k4_block(five, row, i);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            tq_scale_min_k4(j, b.scales, &sc, &m);
            const float dl = b.d * (float)sc, ml = b.dmin * (float)m;
            for (int l = 0; l < 32; l++) {
                const float v = dl * (float)tq_k4_code(&b, j, l);
                out[256 * i + 32 * j + l] = v - ml;
            }
        }
    }
}

void tq_qk_dequant_q4_k_scalar(const void *row, float *out, int n) { tq_k4_dequant(0, row, out, n); }
void tq_qk_dequant_q5_k_scalar(const void *row, float *out, int n) { tq_k4_dequant(1, row, out, n); }

void tq_qk_dequant_q6_k_scalar(const void *row, float *out, int n) {
    const tq_block_q6_k *b = (const tq_block_q6_k *)row;
    for (int i = 0; i < n / TQ_QKK; i++) {
        const float d = tq_h(b[i].d);
        for (int v = 0; v < 256; v++) {
            const float dl = d * (float)b[i].scales[v >> 4];
            out[256 * i + v] = dl * (float)tq_q6k_code(&b[i], v);
        }
    }
}

/* Q4_K / Q5_K block term: d_a * d * sum_j sc_j * dot_j  -  d_a * dmin * sum_j m_j * asum_j. */
static void tq_k4_gemv(int five, const void *w, size_t row_bytes, int rows, int n, const void *act,
                       float *out) {
    const tq_block_q8_k *a = (const tq_block_q8_k *)act;
    for (int r = 0; r < rows; r++) {
        const uint8_t *row = tq_row(w, row_bytes, r);
        float acc = 0.0f;
        for (int i = 0; i < n / TQ_QKK; i++) {
            const tq_k4_view b = tq_k4_block(five, row, i);
            int32_t sumi = 0, mins = 0;
            for (int j = 0; j < 8; j++) {
                int sc, m;
                tq_scale_min_k4(j, b.scales, &sc, &m);
                int32_t s = 0;
                for (int l = 0; l < 32; l++) s += tq_k4_code(&b, j, l) * a[i].qs[32 * j + l];
                sumi += sc * s;
                mins += m * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
            }
            acc += (a[i].d * b.d) * (float)sumi - (a[i].d * b.dmin) * (float)mins;
        }
        out[r] = acc;
    }
}

void tq_qk_gemv_q4_k_scalar(const void *w, size_t row_bytes, int rows, int n, const void *act,
                            float *out) {
    tq_k4_gemv(0, w, row_bytes, rows, n, act, out);
}

void tq_qk_gemv_q5_k_scalar(const void *w, size_t row_bytes, int rows, int n, const void *act,
                            float *out) {
    tq_k4_gemv(1, w, row_bytes, rows, n, act, out);
}

/* Q6_K block term: d_a * d * sum_g sc_g * sum_{16 values of g} (q - 32) * qa. */
void tq_qk_gemv_q6_k_scalar(const void *w, size_t row_bytes, int rows, int n, const void *act,
                            float *out) {
    const tq_block_q8_k *a = (const tq_block_q8_k *)act;
    for (int r = 0; r < rows; r++) {
        const tq_block_q6_k *b = (const tq_block_q6_k *)tq_row(w, row_bytes, r);
        float acc = 0.0f;
        for (int i = 0; i < n / TQ_QKK; i++) {
            int32_t sumi = 0;
            for (int g = 0; g < 16; g++) {
                int32_t s = 0;
                for (int l = 0; l < 16; l++) s += tq_q6k_code(&b[i], 16 * g + l) * a[i].qs[16 * g + l];
                sumi += b[i].scales[g] * s;
            }
            acc += (a[i].d * tq_h(b[i].d)) * (float)sumi;
        }
        out[r] = acc;
    }
}

/* ---------------------------------------------------------------- tables and dispatch */

const tq_qk_ops *tq_qk_find(const tq_qk_ops *ops, size_t n, int type) {
    for (size_t i = 0; i < n; i++)
        if (ops[i].type == type) return &ops[i];
    return NULL;
}

#define TQ_QK_OPS(T, name, block, bytes, act, fn) \
    {T, name, block, bytes, act, tq_qk_gemv_##fn##_scalar, tq_qk_dequant_##fn##_scalar},

static const tq_qk_ops tq_qk_scalar_ops[] = {
    TQ_QK_FLOAT_TYPES(TQ_QK_OPS)
    TQ_QK_QUANT_TYPES(TQ_QK_OPS)
};

const tq_qk_ops *tq_qk_ops_scalar(int type) {
    return tq_qk_find(tq_qk_scalar_ops, sizeof(tq_qk_scalar_ops) / sizeof(tq_qk_scalar_ops[0]), type);
}

/* isa: a tq_kernels name. x86 names use the best x86 ops this CPU and build have (AVX2 ones only
 * for now: no AVX-512 variant was written, the AVX2 loops are near memory speed for model-sized
 * matrices); a type an ISA file lacks falls back to the scalar ops. "neon" and "neon-dotprod"
 * both get qk_neon.c's lookup, which picks SDOT by the CPU (and TRIT_NO_DOTPROD). NULL for an
 * unknown name or an ISA the CPU lacks; a NULL isa means scalar. */
const tq_qk_ops *tq_qk_get(const char *isa, int type) {
    const tq_qk_ops *ref = tq_qk_ops_scalar(type);
    if (!ref || !isa) return ref;
    const unsigned f = tq_cpu_features();
    const tq_qk_ops *ops = NULL;
    if (!strcmp(isa, "scalar")) return ref;
    if (!strcmp(isa, "avx2") || !strcmp(isa, "avxvnni") || !strcmp(isa, "avx512") || !strcmp(isa, "avx512vnni")) {
        if (!(f & TQ_CPU_AVX2)) return NULL;
        ops = tq_qk_ops_avx2(type);
    } else if (!strcmp(isa, "neon") || !strcmp(isa, "neon-dotprod")) {
        if (!(f & TQ_CPU_NEON)) return NULL;
        ops = tq_qk_ops_neon(type);
    } else {
        return NULL;
    }
    return ops ? ops : ref;
}
