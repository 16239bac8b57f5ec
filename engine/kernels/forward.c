/* posix_memalign; mmap's MAP_ANONYMOUS and madvise's MADV_HUGEPAGE (glibc: _DEFAULT_SOURCE) */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
/* BitNet b1.58 forward pass (see ../shared/docs/formats.md for the math), batched over a chunk of
 * prompt tokens so every ternary matrix is read once per chunk (GEMM), or once per token (GEMV).
 * Every heavy loop runs on the thread pool with dynamic chunking; everything else is short and
 * serial. No Python, no GIL: engine/_core.pyx calls in with the GIL released. */
#include "forward.h"
#include "tq_norm.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define TQ_ROWS_PER_CHUNK 64   /* rows of a ternary matrix per work item */
/* A decode token's matrix job: each thread takes this many chunks of its own range at once and runs
 * them as one GEMV call (TQ_ROWS_PER_CHUNK stays the unit that is stolen near the end). Two
 * threads, alternating runs, median % of the paired bandwidth probe: 78.3/79.1 -> 80.7 with the
 * machine's memory in its fast state, 93.3 -> 93.9 in its slow one. */
#define TQ_DECODE_TAKE 4
#define TQ_HEAD_ROWS 512       /* rows of the f16 head per work item */
#define TQ_ATTN_KEYS 32        /* keys per attention block (tq_attn_worker) */
#define TQ_ATTN_TOKENS 8       /* prompt tokens per attention work item */
#define TQ_Q3_BLOCK 32         /* elements per scale in a TQ_KV_Q3 row */

struct tq_state {
    const tq_model *m;
    const tq_kernels *k;
    tq_pool *pool;
    int n_ctx, max_batch, nth;
    int qdim, kvdim, xdim, apad;
    volatile int cancel;
    float *x;       /* max_batch x dim: residual stream */
    float *xb;      /* max_batch x xdim: normed input, attention output (xdim = max(dim, qdim)) */
    float *xb2;     /* max_batch x dim: projection output before the residual add */
    float *q;       /* max_batch x qdim */
    float *hb;      /* max_batch x hidden: gate, then the gated product */
    float *hb2;     /* max_batch x hidden: up */
    int8_t *qa;     /* max_batch x apad: int8 activations, zero padded to whole blocks */
    int32_t *qsum;  /* max_batch */
    float *qscale;  /* max_batch */
    uint8_t *qka[TQ_ACTF_COUNT]; /* max_batch x qka_stride[f]: activations in llama.cpp formats */
    size_t qka_stride[TQ_ACTF_COUNT];
    float *hx;      /* dim: the normed state the head reads */
    int32_t *tmp;   /* nth x tq_tmp_rows(): per-thread integer products */
    float *sone;    /* nth x TQ_DECODE_TAKE * TQ_ROWS_PER_CHUNK: per-thread copies of a uniform scale */
    float *att;     /* nth x tq_attn_rows() x n_ctx: per-thread attention scores of one work item */
    float *attv;    /* nth x head_dim: per-thread partial value sum of one key block */
    void *kc, *vc;  /* n_layers x n_kv_heads x n_ctx x head_dim (tq_kv_at): KV cache of kv_type elements
                     * (f32, f16 or int8 codes), in kv_map[0] / [1] */
    float *ksc, *vsc; /* the scales of a TQ_KV_Q8 cache (one per row: element index / head_dim) or a
                       * TQ_KV_Q3 one (one per TQ_Q3_BLOCK elements: element index / TQ_Q3_BLOCK) */
    int kv_type;
    int8_t *kvq;    /* nth x TQ_ATTN_KEYS x head_dim: a block of a TQ_KV_Q3 cache unpacked to codes, */
    float *kvf;     /* and the same block dequantized (codes times their scales) */
    int acts;       /* TQ_ACTS_* */
    uint32_t *sel;  /* max_batch x qdim: TopK's working copy of o's input (TQ_ACTS_A48) */
    float *kst, *vst; /* max_batch x kvdim: a chunk's new K and V rows (f32) before they go into the cache */
    void *kv_map[2];
    size_t kv_map_len;
    float *rcos, *rsin; /* n_ctx x head_dim/2: RoPE tables */
};

static size_t tq_round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

static void *tq_alloc(size_t n) {
    /* 64-byte alignment keeps vector loads on cache-line boundaries */
    void *p = NULL;
#if defined(_WIN32)
    p = _aligned_malloc(n ? n : 64, 64);
    if (p) memset(p, 0, n);
#else
    if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
    memset(p, 0, n);
#endif
    return p;
}

/* The KV cache: zeroed memory that costs nothing until a position is written. On Linux an anonymous
 * mapping, 2 MiB aligned, with transparent huge pages asked for: attention walks every layer's
 * cache at every token, and through 4 KiB pages each of those reads paid a TLB miss per page
 * (the weights streamed in between evict the page tables from the caches). Measured (2B4T, one
 * thread, 1000 positions in the cache, alternating runs): decode 15.9 -> 17.7 and 16.0 -> 16.5
 * tok/s. Memory then becomes resident in 2 MiB steps per layer instead of 4 KiB ones. Elsewhere
 * calloc. *map and *len are what tq_kv_free needs. */
static void *tq_kv_alloc(size_t bytes, void **map, size_t *len) {
#if defined(__linux__)
    const size_t huge = (size_t)2 << 20;
    *len = bytes + huge;
    void *p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        *map = NULL;
        return NULL;
    }
    *map = p;
    const uintptr_t a = ((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1);
#if defined(MADV_HUGEPAGE)
    (void)madvise((void *)a, bytes, MADV_HUGEPAGE); /* a hint: failure is harmless */
#endif
    return (void *)a;
#else
    *len = 0;
    *map = calloc(bytes ? bytes : 1, 1);
    return *map;
#endif
}

static void tq_kv_free(void *map, size_t len) {
    if (!map) return;
#if defined(__linux__)
    munmap(map, len);
#else
    (void)len;
    free(map);
#endif
}

static void tq_free_aligned(void *p) {
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}

void tq_state_free(tq_state *s) {
    if (!s) return;
    if (s->pool) tq_pool_free(s->pool);
    void *bufs[] = {s->x, s->xb, s->xb2, s->q, s->hb, s->hb2, s->qa, s->qsum, s->qscale,
                    s->tmp, s->sone, s->att, s->attv, s->rcos, s->rsin, s->kst, s->vst, s->ksc, s->vsc, s->kvq, s->kvf, s->sel};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) tq_free_aligned(bufs[i]);
    for (int f = 0; f < TQ_ACTF_COUNT; f++) tq_free_aligned(s->qka[f]);
    tq_free_aligned(s->hx);
    tq_kv_free(s->kv_map[0], s->kv_map_len);
    tq_kv_free(s->kv_map[1], s->kv_map_len);
    free(s);
}

/* Integer products one thread holds: a chunk for every token of a batch, or a decode token's
 * TQ_DECODE_TAKE chunks. */
static size_t tq_tmp_rows(const tq_state *s) {
    return (size_t)(s->max_batch > TQ_DECODE_TAKE ? s->max_batch : TQ_DECODE_TAKE) * TQ_ROWS_PER_CHUNK;
}

/* Rows of attention scores one thread holds: an attention work item's tokens times its heads. */
static size_t tq_attn_rows(const tq_state *s) {
    const int tb = s->max_batch < TQ_ATTN_TOKENS ? s->max_batch : TQ_ATTN_TOKENS;
    return (size_t)tb * (s->m->n_heads / s->m->n_kv_heads);
}

/* Bytes of n KV cache elements (n a multiple of head_dim; a TQ_KV_Q3 row is head_dim * 3 / 8 bytes). */
static size_t tq_kv_size(const tq_state *s, size_t n) {
    switch (s->kv_type) {
    case TQ_KV_Q3: return n / 8 * 3;
    case TQ_KV_Q8: return n;
    case TQ_KV_F16: return n * sizeof(uint16_t);
    default: return n * sizeof(float);
    }
}

/* Float scales per row of head_dim elements of the quantized caches (0: not quantized). */
static int tq_kv_nsc(int kv_type, int head_dim) {
    return kv_type == TQ_KV_Q3 ? head_dim / TQ_Q3_BLOCK : kv_type == TQ_KV_Q8 ? 1 : 0;
}

/* The KV cache is head-major: each KV head of a layer keeps its n_ctx keys (values) of head_dim
 * elements contiguous, so attention walks one linear stream per head. With the position-major
 * layout (a position's heads side by side) each head's walk read 512 of every 2560 bytes; the key
 * walk of a 2B4T token at 2000 positions ran at 7.4-8.0 GB/s from memory, head-major 10.7-13.9
 * (benchmarks/micro/kv_walk.c; its grouped form, 23 GB/s alone, bought only ~2-3% of a long-context
 * token in the engine: benchmarks/RESULTS.md). Element of (layer, KV head, position). */
static size_t tq_kv_at(const tq_state *s, int layer, int kvh, int pos) {
    return (((size_t)layer * s->m->n_kv_heads + kvh) * s->n_ctx + pos) * s->m->head_dim;
}

tq_state *tq_state_new(const tq_model *m, const tq_kernels *k, int n_ctx, int max_batch, int nthreads,
                       int kv_type, int acts) {
    if (n_ctx < 1 || max_batch < 1 || nthreads < 1 || m->head_dim % 2) return NULL;
    if (kv_type < TQ_KV_F32 || kv_type > TQ_KV_Q3 || (kv_type == TQ_KV_Q3 && m->head_dim % TQ_Q3_BLOCK))
        return NULL;
    if (acts != TQ_ACTS_EXACT && acts != TQ_ACTS_A48) return NULL;
    tq_state *s = (tq_state *)calloc(1, sizeof(tq_state));
    if (!s) return NULL;
    s->m = m;
    s->k = k;
    s->n_ctx = n_ctx;
    s->max_batch = max_batch;
    s->qdim = m->n_heads * m->head_dim;
    s->kvdim = m->n_kv_heads * m->head_dim;
    s->xdim = m->dim > s->qdim ? m->dim : s->qdim;
    int amax = s->xdim > m->hidden ? s->xdim : m->hidden;
    /* whole blocks of either ternary layout: TQ (128) and B3 (320) */
    s->apad = (int)tq_round_up((size_t)amax, 5 * TQ_QK);
    s->pool = tq_pool_new(nthreads);
    if (!s->pool) goto fail;
    s->nth = tq_pool_threads(s->pool);
    const size_t B = (size_t)max_batch;
    s->x = tq_alloc(B * m->dim * sizeof(float));
    s->xb = tq_alloc(B * s->xdim * sizeof(float));
    s->xb2 = tq_alloc(B * m->dim * sizeof(float));
    s->q = tq_alloc(B * s->qdim * sizeof(float));
    s->hb = tq_alloc(B * m->hidden * sizeof(float));
    s->hb2 = tq_alloc(B * m->hidden * sizeof(float));
    s->qa = tq_alloc(B * s->apad);
    s->qsum = tq_alloc(B * sizeof(int32_t));
    s->qscale = tq_alloc(B * sizeof(float));
    s->tmp = tq_alloc((size_t)s->nth * tq_tmp_rows(s) * sizeof(int32_t));
    s->sone = tq_alloc((size_t)s->nth * TQ_DECODE_TAKE * TQ_ROWS_PER_CHUNK * sizeof(float));
    s->hx = tq_alloc((size_t)m->dim * sizeof(float));
    if (!s->hx) goto fail;
    /* Q8_K wants whole 256-blocks: size every format for the widest input rounded up to 256 */
    for (int f = 1; f < TQ_ACTF_COUNT; f++) {
        s->qka_stride[f] = tq_round_up(tq_qk_act_bytes(f, (int)tq_round_up((size_t)amax, 256)), 64);
        s->qka[f] = tq_alloc(B * s->qka_stride[f]);
        if (!s->qka[f]) goto fail;
    }
    s->att = tq_alloc((size_t)s->nth * tq_attn_rows(s) * n_ctx * sizeof(float));
    s->attv = tq_alloc((size_t)s->nth * m->head_dim * sizeof(float));
    const size_t half = (size_t)m->head_dim / 2;
    s->rcos = tq_alloc((size_t)n_ctx * half * sizeof(float));
    s->rsin = tq_alloc((size_t)n_ctx * half * sizeof(float));
    const size_t kv = (size_t)m->n_layers * n_ctx * s->kvdim;
    s->kv_type = kv_type;
    s->kc = tq_kv_alloc(tq_kv_size(s, kv), &s->kv_map[0], &s->kv_map_len);
    s->vc = tq_kv_alloc(tq_kv_size(s, kv), &s->kv_map[1], &s->kv_map_len);
    const int nsc = tq_kv_nsc(kv_type, m->head_dim);
    if (nsc) {
        s->ksc = tq_alloc(kv / m->head_dim * nsc * sizeof(float));
        s->vsc = tq_alloc(kv / m->head_dim * nsc * sizeof(float));
        if (!s->ksc || !s->vsc) goto fail;
    }
    if (kv_type == TQ_KV_Q3) {
        s->kvq = tq_alloc((size_t)s->nth * TQ_ATTN_KEYS * m->head_dim);
        s->kvf = tq_alloc((size_t)s->nth * TQ_ATTN_KEYS * m->head_dim * sizeof(float));
        if (!s->kvq || !s->kvf) goto fail;
    }
    s->acts = acts;
    if (acts == TQ_ACTS_A48) {
        s->sel = tq_alloc(B * s->qdim * sizeof(uint32_t));
        if (!s->sel) goto fail;
    }
    s->kst = tq_alloc(B * s->kvdim * sizeof(float));
    s->vst = tq_alloc(B * s->kvdim * sizeof(float));
    if (!s->x || !s->xb || !s->xb2 || !s->q || !s->hb || !s->hb2 || !s->qa || !s->qsum ||
        !s->qscale || !s->tmp || !s->sone || !s->att || !s->attv || !s->rcos || !s->rsin || !s->kc || !s->vc ||
        !s->kst || !s->vst)
        goto fail;
    /* RoPE angles exactly as transformers computes them in float32:
     * inv_freq = 1 / theta^(2i/hd), angle = float(pos) * inv_freq, then cos/sin. */
    for (size_t i = 0; i < half; i++) {
        const float inv = 1.0f / powf(m->rope_theta, (float)(2 * i) / (float)m->head_dim);
        for (int p = 0; p < n_ctx; p++) {
            const float a = (float)p * inv;
            s->rcos[(size_t)p * half + i] = cosf(a);
            s->rsin[(size_t)p * half + i] = sinf(a);
        }
    }
    return s;
fail:
    tq_state_free(s);
    return NULL;
}

void tq_state_cancel(tq_state *s, int flag) { s->cancel = flag; }
int tq_state_threads(const tq_state *s) { return s->nth; }
void tq_state_pool_stats(const tq_state *s, long long out[3]) {
    const tq_pool_stats st = tq_pool_get_stats(s->pool);
    out[0] = st.jobs;
    out[1] = st.late;
    out[2] = st.solo;
}
long long tq_state_kv_bytes(const tq_state *s) {
    const long long rows = 2LL * s->m->n_layers * s->n_ctx * s->m->n_kv_heads; /* K and V */
    return (long long)tq_kv_size(s, (size_t)rows * s->m->head_dim) +
           rows * tq_kv_nsc(s->kv_type, s->m->head_dim) * 4LL;
}

/* ---- small serial pieces ---------------------------------------------------------------- */

/* n floats into an f16 cache row, rounded to nearest even; beyond the f16 range they saturate at
 * +-65504 rather than become infinities (which would turn the softmax into NaNs). */
static void tq_to_f16(uint16_t *out, const float *x, int n) {
    for (int i = 0; i < n; i++) {
        const float v = x[i] > 65504.0f ? 65504.0f : x[i] < -65504.0f ? -65504.0f : x[i];
        out[i] = tq_f32_to_f16(v);
    }
}

/* n floats into an 8-bit cache row: codes round(x * 127 / max|x|) (to nearest even, within
 * [-127, 127]) and *scale = max|x| / 127, so the row reads back as code * scale. An all-zero row (or
 * one without a finite maximum) gets scale 0 and codes 0. */
static void tq_to_q8(int8_t *out, float *scale, const float *x, int n) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        const float a = fabsf(x[i]);
        if (a > amax) amax = a; /* NaN compares false */
    }
    if (!(amax > 0.0f) || !isfinite(amax)) {
        memset(out, 0, (size_t)n);
        *scale = 0.0f;
        return;
    }
    const float inv = 127.0f / amax;
    for (int i = 0; i < n; i++) {
        const float q = rintf(x[i] * inv);
        out[i] = (int8_t)(q > 127.0f ? 127 : q < -127.0f ? -127 : q == q ? (int)q : 0);
    }
    *scale = amax / 127.0f;
}

/* n floats (n % TQ_Q3_BLOCK == 0) into a 3-bit cache row: in each block b of TQ_Q3_BLOCK elements,
 * codes c = round(x * 3 / max|x|) in [-3, 3] (to nearest even, as tq_to_q8) and scale[b] =
 * max|x| / 3 (0 for an all-zero block or one without a finite maximum: codes 0). With one scale
 * per 64-wide row SmolLM2's perplexity went from 8.84 to 175, with one per 32 to 92 (7 levels are
 * too coarse for a model not trained with them; benchmarks/a48_quality.py). The codes are stored
 * as u = c + 3 in two planes so that a row unpacks with fixed shifts: n / 4 bytes of low bit pairs
 * (byte j: elements j + k * n / 4 at bits 2k..2k+1, k < 4), then n / 8 bytes of high bits (byte j:
 * element j + k * n / 8 at bit k). */
static void tq_to_q3(uint8_t *out, float *scale, const float *x, int n) {
    if (n < TQ_Q3_BLOCK) return; /* (head_dim % TQ_Q3_BLOCK == 0 is checked at tq_state_new) */
    const int n4 = n / 4, n8 = n / 8;
    memset(out, 0, (size_t)(n4 + n8));
    for (int b = 0; b < n / TQ_Q3_BLOCK; b++) {
        const float *xb = x + b * TQ_Q3_BLOCK;
        float amax = 0.0f;
        for (int i = 0; i < TQ_Q3_BLOCK; i++) {
            const float a = fabsf(xb[i]);
            if (a > amax) amax = a; /* NaN compares false */
        }
        const int finite = amax > 0.0f && isfinite(amax);
        const float inv = finite ? 3.0f / amax : 0.0f;
        for (int i = b * TQ_Q3_BLOCK; i < (b + 1) * TQ_Q3_BLOCK; i++) {
            const float q = rintf(x[i] * inv);
            const int u = (q > 3.0f ? 3 : q < -3.0f ? -3 : q == q ? (int)q : 0) + 3;
            out[i % n4] |= (uint8_t)((u & 3) << (2 * (i / n4)));
            out[n4 + i % n8] |= (uint8_t)((u >> 2) << (i / n8));
        }
        scale[b] = finite ? amax / 3.0f : 0.0f;
    }
}

/* nrows 3-bit rows of n elements (tq_to_q3's layout, one after the other) into int8 codes in
 * [-3, 3], n per row. Element i = k * n8 + j has its low bits in byte i % n4 = (k & 1) * n8 + j at
 * shift 2 * (k / 2) and its high bit in byte j at shift k, so for each k the bytes j.. of both
 * planes give 8 codes at once in a 64-bit word (every shift and mask stays inside its byte, on
 * either byte order; u - 3 without borrows as ((u | 0x80) - 3) ^ 0x80 per byte). A byte-wise loop
 * (gcc vectorizes it, but SSE2 has no byte shifts) ran at 0.85 ns per element, this at 0.08. */
static void tq_q3_unpack(const uint8_t *restrict rows, int nrows, int n, int8_t *restrict out) {
    const int n4 = n / 4, n8 = n / 8;
    const uint64_t b01 = 0x0101010101010101ull, b03 = 3 * b01, b80 = 0x80 * b01;
    for (int r = 0; r < nrows; r++, rows += n4 + n8, out += n) {
        const uint8_t *hi = rows + n4;
        for (int k = 0; k < 8; k++) {
            const uint8_t *lo = rows + (k & 1) * n8;
            int8_t *o = out + k * n8;
            const int ls = 2 * (k >> 1);
            int j = 0;
            for (; j + 8 <= n8; j += 8) {
                uint64_t l, h;
                memcpy(&l, lo + j, 8);
                memcpy(&h, hi + j, 8);
                const uint64_t u = ((l >> ls) & b03) | (((h >> k) & b01) << 2);
                const uint64_t c = ((u | b80) - b03) ^ b80;
                memcpy(o + j, &c, 8);
            }
            for (; j < n8; j++) o[j] = (int8_t)((((lo[j] >> ls) & 3) | (((hi[j] >> k) & 1) << 2)) - 3);
        }
    }
}

/* The sum of squares in double (6912 squares keep full f32 precision) over eight independent
 * partial sums (tq_norm.h): one chain of dependent double adds cost ~4 cycles per element, and the
 * six norms of a layer were ~1% of a decode token, on one thread while the others wait. */
static void tq_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    const double ss = tq_sum_squares(x, n, w);
    const float inv = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * inv);
}

static void tq_rope(const tq_state *s, float *v, int nheads, int pos) {
    const int hd = s->m->head_dim, half = hd / 2;
    const float *c = s->rcos + (size_t)pos * half, *sn = s->rsin + (size_t)pos * half;
    for (int h = 0; h < nheads; h++) {
        float *x = v + (size_t)h * hd;
        if (s->m->rope_neox) {
            for (int i = 0; i < half; i++) {
                const float a = x[i], b = x[i + half];
                x[i] = a * c[i] - b * sn[i];
                x[i + half] = b * c[i] + a * sn[i];
            }
        } else {
            for (int i = 0; i < half; i++) {
                const float a = x[2 * i], b = x[2 * i + 1];
                x[2 * i] = a * c[i] - b * sn[i];
                x[2 * i + 1] = b * c[i] + a * sn[i];
            }
        }
    }
}

/* ---- matmul on the pool ------------------------------------------------------------------ */

typedef struct {
    const tq_lin *t;
    float *out;     /* out[tok * ld + row] */
    size_t ld;
} tq_mm_item;

typedef struct {
    tq_state *s;
    const float *x; /* f32 input rows (for F32-activation types) */
    size_t ldx;
    int ntok, nitems;
    tq_mm_item items[3];
    long first[4];  /* chunk index where each item starts; first[nitems] = total */
    tq_split split;
} tq_mm_task;

/* A matrix whose rows share one scale (scale_one: I2_S, whose scale is per tensor) takes its nr
 * scales from the thread's small buffer sone, which stays in L1, instead of the per-row array: at
 * a decode token those 2.7 MB (2B4T) come from DRAM in 1 KB pieces after each GEMV, ~1% of a token
 * spent waiting (perf). The values, and so the results, are the same. */
static void tq_mm_chunk_ternary(tq_mm_task *task, const tq_mm_item *it, int r0, int nr, int32_t *tmp, float *sone) {
    tq_state *s = task->s;
    const tq_lin *t = it->t;
    const uint8_t *w = t->w + (size_t)r0 * t->row_bytes;
    if (task->ntok == 1)
        (t->b3 ? s->k->b3_gemv : s->k->gemv)(w, nr, t->nb, s->qa, s->qsum[0], tmp);
    else
        (t->b3 ? s->k->b3_gemm : s->k->gemm)(w, nr, t->nb, s->qa, (size_t)s->apad, s->qsum, task->ntok, tmp,
                                             (size_t)nr);
    const float *scale = t->scale + r0;
    if (t->scale_one) {
        if (memcmp(sone, &t->scale1, sizeof(float)) != 0) /* sone holds one value in every slot */
            for (int r = 0; r < TQ_DECODE_TAKE * TQ_ROWS_PER_CHUNK; r++) sone[r] = t->scale1;
        scale = sone;
    }
    for (int tok = 0; tok < task->ntok; tok++)
        s->k->scale_out(tmp + (size_t)tok * nr, nr, s->qscale[tok], scale, it->out + (size_t)tok * it->ld + r0);
}

static void tq_mm_chunk_quant(tq_mm_task *task, const tq_mm_item *it, int r0, int nr) {
    tq_state *s = task->s;
    const tq_lin *t = it->t;
    const int f = t->ops->act;
    if (task->ntok > 1 && t->ops->gemm) {
        const int ld = f == TQ_ACTF_F32;
        t->ops->gemm(t->w + (size_t)r0 * t->row_bytes, t->row_bytes, nr, t->cols,
                     ld ? (const void *)task->x : (const void *)s->qka[f],
                     ld ? task->ldx * sizeof(float) : s->qka_stride[f], task->ntok, it->out + r0, it->ld);
        return;
    }
    for (int tok = 0; tok < task->ntok; tok++) {
        const void *act = f == TQ_ACTF_F32 ? (const void *)(task->x + (size_t)tok * task->ldx)
                                           : (const void *)(s->qka[f] + (size_t)tok * s->qka_stride[f]);
        t->ops->gemv(t->w + (size_t)r0 * t->row_bytes, t->row_bytes, nr, t->cols, act,
                     it->out + (size_t)tok * it->ld + r0);
    }
}

static void tq_mm_worker(void *arg, int ith, int nth) {
    (void)nth;
    tq_mm_task *task = (tq_mm_task *)arg;
    tq_state *s = task->s;
    int32_t *tmp = s->tmp + (size_t)ith * tq_tmp_rows(s);
    float *sone = s->sone + (size_t)ith * TQ_DECODE_TAKE * TQ_ROWS_PER_CHUNK;
    const long most = task->ntok == 1 ? TQ_DECODE_TAKE : 1;
    for (;;) {
        long cnt;
        const long c0 = tq_split_take_run(&task->split, ith, most, &cnt);
        if (c0 < 0) break;
        for (long c = c0, k; c < c0 + cnt; c += k) { /* consecutive chunks of one matrix: one call */
            int i = 0;
            while (c >= task->first[i + 1]) i++;
            k = (c0 + cnt < task->first[i + 1] ? c0 + cnt : task->first[i + 1]) - c;
            const tq_mm_item *it = &task->items[i];
            const tq_lin *t = it->t;
            const int r0 = (int)(c - task->first[i]) * TQ_ROWS_PER_CHUNK;
            const int nr = t->rows - r0 < k * TQ_ROWS_PER_CHUNK ? t->rows - r0 : (int)k * TQ_ROWS_PER_CHUNK;
            if (t->type == TQ_LIN_TERNARY)
                tq_mm_chunk_ternary(task, it, r0, nr, tmp, sone);
            else
                tq_mm_chunk_quant(task, it, r0, nr);
            if (t->bias)
                for (int tok = 0; tok < task->ntok; tok++) {
                    float *out = it->out + (size_t)tok * it->ld + r0;
                    for (int r = 0; r < nr; r++) out[r] += t->bias[r0 + r];
                }
        }
    }
}

/* The activation formats a set of matrices reads: bit 0 ternary int8, bit f llama.cpp format f. */
static unsigned tq_items_need(int nitems, const tq_mm_item *items) {
    unsigned need = 0;
    for (int i = 0; i < nitems; i++)
        need |= items[i].t->type == TQ_LIN_TERNARY ? 1u : 1u << items[i].t->ops->act;
    return need;
}

/* Token t's row x (cols values) into every activation format in `need` (tq_items_need). */
static void tq_quantize_tok(tq_state *s, const float *x, int cols, int t, unsigned need) {
    if (need & 1u)
        s->qscale[t] = s->k->quant_act(x, cols, s->apad, s->qa + (size_t)t * s->apad, &s->qsum[t]);
    for (int f = 1; f < TQ_ACTF_COUNT; f++)
        if (need & (1u << f)) tq_qk_quant_act(f, x, s->qka[f] + (size_t)t * s->qka_stride[f], cols);
}

/* The input of q/k/v or gate/up, token t's row x (cols values): as tq_quantize_tok, or with BitNet
 * a4.8's 4-bit activations (TQ_ACTS_A48), in place: s = sqrt(7) / max(mean|x|, 1e-5) (the mean
 * summed in double), codes q = clamp(round(x * s), -8, 7) (to nearest even) go to the ternary int8
 * buffer with scale s, and x becomes the values q / s that every other format in `need` is then
 * quantized from (f32-activation types read x itself). */
#define TQ_SQRT7 2.6457513110645906f
static void tq_quantize_in(tq_state *s, float *x, int cols, int t, unsigned need) {
    if (s->acts != TQ_ACTS_A48) {
        tq_quantize_tok(s, x, cols, t, need);
        return;
    }
    double p[4] = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= cols; i += 4)
        for (int j = 0; j < 4; j++) p[j] += fabs((double)x[i + j]);
    for (; i < cols; i++) p[0] += fabs((double)x[i]);
    const float beta = (float)(((p[0] + p[1]) + (p[2] + p[3])) / cols);
    const float sc = TQ_SQRT7 / (beta > 1e-5f ? beta : 1e-5f);
    int8_t *q = s->qa + (size_t)t * s->apad;
    int32_t sum = 0;
    for (i = 0; i < cols; i++) {
        const float r = rintf(x[i] * sc);
        const int c = r > 7.0f ? 7 : r < -8.0f ? -8 : r == r ? (int)r : 0;
        q[i] = (int8_t)c;
        sum += c;
        x[i] = (float)c / sc;
    }
    memset(q + cols, 0, (size_t)(s->apad - cols));
    s->qsum[t] = sum;
    s->qscale[t] = sc;
    tq_quantize_tok(s, x, cols, t, need & ~1u);
}

/* The k-th smallest (0-based) of a[0..n), reordering a (Hoare's selection, median-of-three pivot). */
static uint32_t tq_select_u32(uint32_t *a, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const uint32_t x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi];
        const uint32_t piv = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y);
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] < piv) i++;
            while (a[j] > piv) j--;
            if (i <= j) {
                const uint32_t tmp = a[i];
                a[i++] = a[j];
                a[j--] = tmp;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k];
    }
    return a[k];
}

/* a4.8's TopK on x (n values, in place): the ceil(n * TQ_A48_KEEP) largest magnitudes stay (all
 * that tie with the smallest of them too), the rest become 0. Magnitudes compare as the bit
 * patterns of |x|, which order non-negative floats (a NaN counts as largest); sel: n scratch. */
static void tq_topk(float *x, int n, uint32_t *sel) {
    const int keep = (int)ceil(n * TQ_A48_KEEP);
    if (keep >= n) return;
    for (int i = 0; i < n; i++) {
        memcpy(&sel[i], &x[i], sizeof(uint32_t));
        sel[i] &= 0x7fffffffu;
    }
    const uint32_t thr = tq_select_u32(sel, n, n - keep);
    for (int i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], sizeof b);
        if ((b & 0x7fffffffu) < thr) x[i] = 0.0f;
    }
}

/* Runs up to three matrices that share one input in one pool job. x (ntok rows, row stride ldx)
 * must already be quantized into every format tq_items_need(items) names (tq_quantize_tok). */
static void tq_matmul(tq_state *s, const float *x, size_t ldx, int ntok, int nitems, const tq_mm_item *items) {
    tq_mm_task task;
    task.s = s;
    task.x = x;
    task.ldx = ldx;
    task.ntok = ntok;
    task.nitems = nitems;
    task.first[0] = 0;
    for (int i = 0; i < nitems; i++) {
        task.items[i] = items[i];
        task.first[i + 1] = task.first[i] + (items[i].t->rows + TQ_ROWS_PER_CHUNK - 1) / TQ_ROWS_PER_CHUNK;
    }
    tq_split_reset(&task.split, task.first[nitems], tq_pool_width(s->pool));
    tq_pool_run(s->pool, tq_mm_worker, &task);
}

/* ---- per-token glue ------------------------------------------------------------------------ */

/* The short per-token steps between the matrices (norms, activation quantization, RoPE, the
 * residual adds). A prompt chunk runs them on the pool, one token per work item: serial, they were
 * ~4% of a one-thread prompt and kept the second thread waiting. One decode token runs them inline
 * (a pool job would cost more than the work). Every step reads and writes token t's rows only, so
 * the result does not depend on which thread ran it. */
#define TQ_PAR_TOKENS 4

typedef struct {
    const tq_layer *L;
    float *x;            /* n x dim residual stream */
    int layer, pos;
    unsigned need_qkv, need_o, need_gu, need_down;
} tq_tok_ctx;

typedef void (*tq_tok_fn)(tq_state *s, const tq_tok_ctx *c, int t);

typedef struct {
    tq_state *s;
    const tq_tok_ctx *c;
    tq_tok_fn fn;
    int n;
    tq_counter ctr;
} tq_tok_task;

static void tq_tok_worker(void *arg, int ith, int nth) {
    (void)ith;
    (void)nth;
    tq_tok_task *task = (tq_tok_task *)arg;
    for (;;) {
        const long t = tq_counter_take(&task->ctr);
        if (t >= task->n) break;
        task->fn(task->s, task->c, (int)t);
    }
}

static void tq_for_tokens(tq_state *s, const tq_tok_ctx *c, int n, tq_tok_fn fn) {
    if (n < TQ_PAR_TOKENS || s->nth == 1) {
        for (int t = 0; t < n; t++) fn(s, c, t);
        return;
    }
    tq_tok_task task = {s, c, fn, n, {0}};
    tq_pool_run(s->pool, tq_tok_worker, &task);
}

/* ---- attention ---------------------------------------------------------------------------- */

/* For a TQ_KV_Q3 cache: the nk rows from element e of cache c (scales sc) as floats, codes times
 * their block's scale, in the thread's scratch (codes: int8 scratch). One unpack per block of keys
 * serves every query head of the group, and the f32 kernels then run over whole rows: with the
 * int8 kernels over each 32-element slice (a horizontal sum per slice and key) the cache decoded
 * 0.70x as fast as f32 at 2000 positions. NULL for the other types. */
static const float *tq_kv_deq(const tq_state *s, const void *c, const float *sc, size_t e, int nk, int8_t *codes,
                              float *out) {
    if (s->kv_type != TQ_KV_Q3) return NULL;
    const int hd = s->m->head_dim;
    tq_q3_unpack((const uint8_t *)c + tq_kv_size(s, e), nk, hd, codes);
    sc += e / TQ_Q3_BLOCK;
    for (int b = 0; b < nk * hd / TQ_Q3_BLOCK; b++) {
        const float f = sc[b];
        const int8_t *q = codes + (size_t)b * TQ_Q3_BLOCK;
        float *o = out + (size_t)b * TQ_Q3_BLOCK;
        for (int i = 0; i < TQ_Q3_BLOCK; i++) o[i] = (float)q[i] * f;
    }
    return out;
}

/* Scores of nk keys of one KV head (key 0 at cache element e) against query x; the value sum with
 * weights w into out. The cache holds kv_type elements, head_dim per key; deq: the block as floats
 * when tq_kv_deq decoded it (a 3-bit cache). An 8-bit cache applies the row scales outside the
 * kernels: each key's score times its scale, and each weight times its value's scale before the
 * sum (in place: every block of weights is summed once). */
static void tq_kv_dots(const tq_state *s, size_t e, int nk, const float *deq, const float *x, float *out) {
    const int hd = s->m->head_dim;
    if (deq) {
        s->k->f32_dots(deq, (size_t)hd, nk, x, hd, out);
    } else if (s->kv_type == TQ_KV_Q8) {
        s->k->q8_dots((const int8_t *)s->kc + e, (size_t)hd, nk, x, hd, out);
        const float *sc = s->ksc + e / (size_t)hd;
        for (int j = 0; j < nk; j++) out[j] *= sc[j];
    } else if (s->kv_type == TQ_KV_F16) {
        s->k->f16_dots((const uint16_t *)s->kc + e, (size_t)hd, nk, x, hd, out);
    } else {
        s->k->f32_dots((const float *)s->kc + e, (size_t)hd, nk, x, hd, out);
    }
}
static void tq_kv_wsum(const tq_state *s, size_t e, int nk, const float *deq, float *w, float *out) {
    const int hd = s->m->head_dim;
    if (deq) {
        s->k->f32_wsum(deq, (size_t)hd, nk, w, hd, out);
    } else if (s->kv_type == TQ_KV_Q8) {
        const float *sc = s->vsc + e / (size_t)hd;
        for (int j = 0; j < nk; j++) w[j] *= sc[j];
        s->k->q8_wsum((const int8_t *)s->vc + e, (size_t)hd, nk, w, hd, out);
    } else if (s->kv_type == TQ_KV_F16) {
        s->k->f16_wsum((const uint16_t *)s->vc + e, (size_t)hd, nk, w, hd, out);
    } else {
        s->k->f32_wsum((const float *)s->vc + e, (size_t)hd, nk, w, hd, out);
    }
}

/* One work item is a block of up to TQ_ATTN_TOKENS consecutive tokens of a prompt chunk (one token
 * when decoding) and `gq` query heads that share a KV head (GQA): their scores and value sums go
 * through the keys in blocks of TQ_ATTN_KEYS, every token and head of the item over one block
 * before the next, so each block of the K and V cache is read from memory (and a 3-bit one
 * decoded) once for the item and from L1 for the rest (one head per item read the whole cache
 * `group` times: at 2000 positions that was more bytes per token than the weights; one token per
 * item read it once per token of a prompt chunk). Every (token, head) sees the same key blocks and
 * kernel calls in the same order whatever the item shape, so results do not depend on it. gq is the
 * KV group when that still gives every thread two items, else a divisor of it. */
typedef struct {
    tq_state *s;
    int layer, ntok, pos, gq, tb; /* tb: tokens per item */
    tq_counter ctr;
} tq_attn_task;

/* Keys of the block starting at key j0 that a token with len keys reads (0: none). */
static int tq_block_keys(int len, int j0) {
    return len <= j0 ? 0 : len - j0 < TQ_ATTN_KEYS ? len - j0 : TQ_ATTN_KEYS;
}

static void tq_attn_worker(void *arg, int ith, int nth) {
    (void)nth;
    tq_attn_task *task = (tq_attn_task *)arg;
    tq_state *s = task->s;
    const tq_model *m = s->m;
    const int hd = m->head_dim, group = m->n_heads / m->n_kv_heads, gq = task->gq, tb = task->tb;
    const size_t nc = (size_t)s->n_ctx;
    const float scale = 1.0f / sqrtf((float)hd);
    float *att = s->att + (size_t)ith * tq_attn_rows(s) * nc; /* tb x gq rows of n_ctx scores */
    float *part = s->attv + (size_t)ith * hd;
    int8_t *codes = s->kvq ? s->kvq + (size_t)ith * TQ_ATTN_KEYS * hd : NULL;
    float *deqbuf = s->kvf ? s->kvf + (size_t)ith * TQ_ATTN_KEYS * hd : NULL;
    const int per_blk = m->n_heads / gq;
    const long total = (long)((task->ntok + tb - 1) / tb) * per_blk;
    for (;;) {
        const long item = tq_counter_take(&task->ctr);
        if (item >= total) break;
        const int t0 = (int)(item / per_blk) * tb, h0 = (int)(item % per_blk) * gq;
        const int t1 = t0 + tb < task->ntok ? t0 + tb : task->ntok;
        const int kvh = h0 / group; /* GQA: query head h reads KV head h / group */
        const int longest = task->pos + t1; /* keys of the item's last token */
        const size_t kv0 = tq_kv_at(s, task->layer, kvh, 0); /* key 0 of this KV head */
        for (int j0 = 0; j0 < longest; j0 += TQ_ATTN_KEYS) {
            const size_t e = kv0 + (size_t)j0 * hd;
            const int nkb = tq_block_keys(longest, j0);
            const float *deq = tq_kv_deq(s, s->kc, s->ksc, e, nkb, codes, deqbuf);
            for (int t = t0; t < t1; t++) {
                const int nk = tq_block_keys(task->pos + t + 1, j0);
                if (!nk) continue;
                for (int g = 0; g < gq; g++)
                    tq_kv_dots(s, e, nk, deq, s->q + (size_t)t * s->qdim + (size_t)(h0 + g) * hd,
                               att + ((size_t)(t - t0) * gq + g) * nc + j0);
            }
        }
        for (int t = t0; t < t1; t++)
            for (int g = 0; g < gq; g++)
                s->k->softmax(att + ((size_t)(t - t0) * gq + g) * nc, task->pos + t + 1, scale);
        for (int j0 = 0; j0 < longest; j0 += TQ_ATTN_KEYS) {
            const size_t e = kv0 + (size_t)j0 * hd;
            const int nkb = tq_block_keys(longest, j0);
            const float *deq = tq_kv_deq(s, s->vc, s->vsc, e, nkb, codes, deqbuf);
            for (int t = t0; t < t1; t++) {
                const int nk = tq_block_keys(task->pos + t + 1, j0);
                if (!nk) continue;
                for (int g = 0; g < gq; g++) {
                    float *out = s->xb + (size_t)t * s->xdim + (size_t)(h0 + g) * hd;
                    float *dst = j0 ? part : out; /* the first block writes the output, later ones add */
                    tq_kv_wsum(s, e, nk, deq, att + ((size_t)(t - t0) * gq + g) * nc + j0, dst);
                    if (j0)
                        for (int i = 0; i < hd; i++) out[i] += part[i];
                }
            }
        }
    }
}

/* The attention task of a chunk of ntok tokens: tokens per item, then heads per item (the whole KV
 * group when every thread still gets two items, else a divisor of it). */
static tq_attn_task tq_attn_plan(tq_state *s, int layer, int ntok, int pos) {
    const int group = s->m->n_heads / s->m->n_kv_heads;
    const int tb = ntok < TQ_ATTN_TOKENS ? ntok : TQ_ATTN_TOKENS;
    const long blocks = (ntok + tb - 1) / tb;
    int gq = group;
    while (gq > 1 && blocks * (s->m->n_heads / gq) < 2L * s->nth) {
        int d = gq - 1;
        while (group % d) d--;
        gq = d;
    }
    tq_attn_task at = {s, layer, ntok, pos, gq, tb, {0}};
    return at;
}

/* ---- the head ----------------------------------------------------------------------------- */

typedef struct {
    tq_state *s;
    const float *x;   /* dim, normed */
    const void *act;  /* x in the head's activation format (llama.cpp types) */
    float *logits;
    tq_split split;
} tq_head_task;

static void tq_head_worker(void *arg, int ith, int nth) {
    (void)nth;
    tq_head_task *task = (tq_head_task *)arg;
    const tq_model *m = task->s->m;
    const tq_lin *h = &m->head;
    for (;;) {
        const long c = tq_split_take(&task->split, ith);
        if (c < 0) break;
        const int r0 = (int)c * TQ_HEAD_ROWS;
        const int nr = m->vocab - r0 < TQ_HEAD_ROWS ? m->vocab - r0 : TQ_HEAD_ROWS;
        const uint8_t *w = h->w + (size_t)r0 * h->row_bytes;
        if (h->type == TQ_GGML_F16) /* f16 x f32, no activation rounding (BitNet's tied head) */
            task->s->k->f16_gemv((const uint16_t *)w, nr, m->dim, task->x, task->logits + r0);
        else
            h->ops->gemv(w, h->row_bytes, nr, m->dim, task->act, task->logits + r0);
        if (h->bias)
            for (int r = 0; r < nr; r++) task->logits[r0 + r] += h->bias[r0 + r];
    }
}

static void tq_head(tq_state *s, const float *x, float *logits) {
    const tq_lin *h = &s->m->head;
    tq_head_task task;
    task.s = s;
    task.x = x;
    task.act = x;
    task.logits = logits;
    tq_split_reset(&task.split, (s->m->vocab + TQ_HEAD_ROWS - 1) / TQ_HEAD_ROWS, tq_pool_width(s->pool));
    if (h->type != TQ_GGML_F16 && h->ops->act != TQ_ACTF_F32) {
        tq_qk_quant_act(h->ops->act, x, s->qka[h->ops->act], s->m->dim);
        task.act = s->qka[h->ops->act];
    }
    tq_pool_run(s->pool, tq_head_worker, &task);
}

/* ---- one decoder layer ------------------------------------------------------------------ */

/* g = relu(g)^2 * u, relu as a bit mask (v > 0 keeps v, anything else, NaN included, gives +0:
 * the same as `v > 0 ? v : 0`) so that gcc vectorizes it without fast-math; the branchy scalar
 * loop was 2% of a 2B4T token. */
static void tq_relu2_mul(float *restrict g, const float *restrict u, int n) {
    for (int i = 0; i < n; i++) {
        const float v = g[i];
        uint32_t b;
        memcpy(&b, &v, sizeof b);
        b &= 0u - (uint32_t)(v > 0.0f);
        float r;
        memcpy(&r, &b, sizeof r);
        g[i] = (r * r) * u[i];
    }
}

/* attention input: x_t normed into xb_t, quantized for q/k/v */
static void tq_tok_attn_in(tq_state *s, const tq_tok_ctx *c, int t) {
    const int dim = s->m->dim;
    float *xb = s->xb + (size_t)t * s->xdim;
    tq_rmsnorm(xb, c->x + (size_t)t * dim, c->L->attn_norm, dim, s->m->norm_eps);
    tq_quantize_in(s, xb, dim, t, c->need_qkv);
}

/* RoPE on q_t and k_t, then k_t and v_t (staged in kst / vst) into the cache, one head at a time */
static void tq_tok_rope(tq_state *s, const tq_tok_ctx *c, int t) {
    const int hd = s->m->head_dim;
    float *k = s->kst + (size_t)t * s->kvdim;
    const float *v = s->vst + (size_t)t * s->kvdim;
    tq_rope(s, s->q + (size_t)t * s->qdim, s->m->n_heads, c->pos + t);
    tq_rope(s, k, s->m->n_kv_heads, c->pos + t);
    for (int h = 0; h < s->m->n_kv_heads; h++) {
        const size_t e = tq_kv_at(s, c->layer, h, c->pos + t), o = (size_t)h * hd;
        if (s->kv_type == TQ_KV_Q3) {
            const size_t si = e / TQ_Q3_BLOCK; /* the row's first scale */
            tq_to_q3((uint8_t *)s->kc + tq_kv_size(s, e), s->ksc + si, k + o, hd);
            tq_to_q3((uint8_t *)s->vc + tq_kv_size(s, e), s->vsc + si, v + o, hd);
        } else if (s->kv_type == TQ_KV_Q8) {
            tq_to_q8((int8_t *)s->kc + e, s->ksc + e / (size_t)hd, k + o, hd);
            tq_to_q8((int8_t *)s->vc + e, s->vsc + e / (size_t)hd, v + o, hd);
        } else if (s->kv_type == TQ_KV_F16) {
            tq_to_f16((uint16_t *)s->kc + e, k + o, hd);
            tq_to_f16((uint16_t *)s->vc + e, v + o, hd);
        } else {
            memcpy((float *)s->kc + e, k + o, (size_t)hd * sizeof(float));
            memcpy((float *)s->vc + e, v + o, (size_t)hd * sizeof(float));
        }
    }
}

/* attention output (xb_t): sub-norm, a4.8's TopK, quantized for o */
static void tq_tok_attn_out(tq_state *s, const tq_tok_ctx *c, int t) {
    float *o = s->xb + (size_t)t * s->xdim;
    if (c->L->attn_sub_norm) tq_rmsnorm(o, o, c->L->attn_sub_norm, s->qdim, s->m->norm_eps);
    if (s->acts == TQ_ACTS_A48) tq_topk(o, s->qdim, s->sel + (size_t)t * s->qdim);
    tq_quantize_tok(s, o, s->qdim, t, c->need_o);
}

static void tq_residual(tq_state *s, const tq_tok_ctx *c, int t) {
    const int dim = s->m->dim;
    float *x = c->x + (size_t)t * dim;
    const float *d = s->xb2 + (size_t)t * dim;
    for (int i = 0; i < dim; i++) x[i] += d[i];
}

/* x_t += o output; feed-forward input: normed into xb_t, quantized for gate/up */
static void tq_tok_ffn_in(tq_state *s, const tq_tok_ctx *c, int t) {
    const int dim = s->m->dim;
    tq_residual(s, c, t);
    float *xb = s->xb + (size_t)t * s->xdim;
    tq_rmsnorm(xb, c->x + (size_t)t * dim, c->L->ffn_norm, dim, s->m->norm_eps);
    tq_quantize_in(s, xb, dim, t, c->need_gu);
}

/* gated activation into hb_t (f32: ReLU^2 overflows f16), sub-norm, quantized for down */
static void tq_tok_ffn_mid(tq_state *s, const tq_tok_ctx *c, int t) {
    const int hid = s->m->hidden;
    float *g = s->hb + (size_t)t * hid;
    const float *u = s->hb2 + (size_t)t * hid;
    if (s->m->act == TQ_ACT_RELU2) {
        tq_relu2_mul(g, u, hid);
    } else {
        for (int i = 0; i < hid; i++) g[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
    }
    if (c->L->ffn_sub_norm) tq_rmsnorm(g, g, c->L->ffn_sub_norm, hid, s->m->norm_eps);
    tq_quantize_tok(s, g, hid, t, c->need_down);
}

static void tq_layer_run(tq_state *s, int l, float *x, int n, int pos) {
    const tq_model *m = s->m;
    const tq_layer *L = &m->layers[l];
    const int dim = m->dim, qdim = s->qdim, kvdim = s->kvdim, hid = m->hidden;
    const tq_mm_item qkv[3] = {{&L->q, s->q, (size_t)qdim}, {&L->k, s->kst, (size_t)kvdim}, {&L->v, s->vst, (size_t)kvdim}};
    const tq_mm_item o = {&L->o, s->xb2, (size_t)dim};
    const tq_mm_item gu[2] = {{&L->gate, s->hb, (size_t)hid}, {&L->up, s->hb2, (size_t)hid}};
    const tq_mm_item d = {&L->down, s->xb2, (size_t)dim};
    const tq_tok_ctx c = {L, x, l, pos, tq_items_need(3, qkv), tq_items_need(1, &o), tq_items_need(2, gu),
                          tq_items_need(1, &d)};

    /* attention block */
    tq_for_tokens(s, &c, n, tq_tok_attn_in);
    tq_matmul(s, s->xb, s->xdim, n, 3, qkv);
    tq_for_tokens(s, &c, n, tq_tok_rope);
    tq_attn_task at = tq_attn_plan(s, l, n, pos);
    tq_pool_run(s->pool, tq_attn_worker, &at);
    tq_for_tokens(s, &c, n, tq_tok_attn_out);
    tq_matmul(s, s->xb, s->xdim, n, 1, &o);

    /* feed-forward block */
    tq_for_tokens(s, &c, n, tq_tok_ffn_in);
    tq_matmul(s, s->xb, s->xdim, n, 2, gu);
    tq_for_tokens(s, &c, n, tq_tok_ffn_mid);
    tq_matmul(s, s->hb, (size_t)hid, n, 1, &d);
    tq_for_tokens(s, &c, n, tq_residual);
}

int tq_forward_layer(tq_state *s, int layer, float *x, int n, int pos) {
    if (layer < 0 || layer >= s->m->n_layers || n < 1 || n > s->max_batch || pos < 0 || pos + n > s->n_ctx)
        return TQ_ERANGE;
    tq_layer_run(s, layer, x, n, pos);
    return TQ_OK;
}

int tq_forward(tq_state *s, const int32_t *tokens, int n, int pos, float *logits, int all_logits) {
    const tq_model *m = s->m;
    if (n < 1 || pos < 0 || pos + n > s->n_ctx) return TQ_ERANGE;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->vocab) return TQ_ERANGE;
    for (int c0 = 0; c0 < n; c0 += s->max_batch) {
        const int nb = n - c0 < s->max_batch ? n - c0 : s->max_batch;
        for (int t = 0; t < nb; t++) {
            const uint8_t *row = m->embed.w + (size_t)tokens[c0 + t] * m->embed.row_bytes;
            float *x = s->x + (size_t)t * m->dim;
            if (m->embed.type == TQ_GGML_F16) {
                const uint16_t *e = (const uint16_t *)row;
                for (int i = 0; i < m->dim; i++) x[i] = tq_f16_to_f32(e[i]);
            } else {
                m->embed.ops->dequant(row, x, m->dim);
            }
        }
        for (int l = 0; l < m->n_layers; l++) {
            if (s->cancel) return TQ_ECANCELLED;
            tq_layer_run(s, l, s->x, nb, pos + c0);
        }
        if (!logits) continue;
        const int last_chunk = c0 + nb >= n;
        for (int t = 0; t < nb; t++) {
            if (!all_logits && !(last_chunk && t == nb - 1)) continue;
            tq_rmsnorm(s->hx, s->x + (size_t)t * m->dim, m->out_norm, m->dim, m->norm_eps);
            float *out = all_logits ? logits + (size_t)(c0 + t) * m->vocab : logits;
            tq_head(s, s->hx, out);
        }
    }
    return TQ_OK;
}

int tq_scan_codes(const uint8_t *p, size_t n) {
    const uint64_t lo = 0x5555555555555555ull; /* bit 0 of every 2-bit field */
    uint64_t has3 = 0, diff = 0;
    size_t i = 0;
    /* a field is 3 when both its bits are set; the shift moves the next byte's bit 0 into bit 7,
     * which the mask drops. OR-reductions: gcc vectorizes the loop. */
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        has3 |= w & (w >> 1) & lo;
        diff |= w ^ lo;
    }
    for (; i < n; i++) {
        has3 |= (uint64_t)(p[i] & (p[i] >> 1) & 0x55);
        diff |= (uint64_t)(p[i] ^ 0x55);
    }
    return (has3 ? TQ_CODES_HAS3 : 0) | (diff ? 0 : TQ_CODES_ALL_ZERO);
}
