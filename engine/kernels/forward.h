/* The transformer forward pass in C (run by engine/_core.pyx with the GIL released).
 *
 * Shape of the code follows llama2.c: tq_model holds the config and views of the weights (owned by
 * Python: numpy arrays, often views into the file's mmap), tq_state the activations, the KV cache
 * and the thread pool. One tq_state per conversation session. */
#ifndef TQ_FORWARD_H
#define TQ_FORWARD_H

#include <stdint.h>

#include "qk.h"
#include "threadpool.h"
#include "tq.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { TQ_ACT_RELU2 = 0, TQ_ACT_SILU = 1 };
enum { TQ_ECANCELLED = 3, TQ_ERANGE = 4 };

#define TQ_LIN_TERNARY (-1)

/* A weight matrix [rows, cols]: packed ternary (tq.h) or a llama.cpp type (qk.h). */
typedef struct {
    int type;              /* TQ_LIN_TERNARY or a ggml type id */
    const uint8_t *w;      /* rows x row_bytes */
    size_t row_bytes;      /* ternary: nb * 32 */
    const float *scale;    /* ternary: rows, multiplies the integer dot product; else NULL */
    int scale_one;         /* ternary: every scale[r] has the bits of scale1 */
    float scale1;
    const float *bias;     /* rows or NULL */
    int rows, cols, nb;    /* nb = ceil(cols / 128) for ternary (B3: ceil(cols / 320)) */
    int b3;                /* ternary: w in the B3 layout (tq.h; row_bytes = nb * 64) */
    const tq_qk_ops *ops;  /* llama.cpp types: the kernels for the model's ISA */
} tq_lin;

typedef struct {
    const float *attn_norm;     /* dim */
    const float *attn_sub_norm; /* n_heads * head_dim */
    const float *ffn_norm;      /* dim */
    const float *ffn_sub_norm;  /* hidden */
    tq_lin q, k, v, o, gate, up, down;
} tq_layer;

typedef struct {
    int dim, hidden, n_layers, n_heads, n_kv_heads, head_dim, vocab, context;
    float rope_theta, norm_eps;
    int rope_neox;              /* 1: pairs (i, i + hd/2) (rotate_half); 0: pairs (2i, 2i+1) */
    int act;                    /* TQ_ACT_* */
    tq_lin embed;               /* vocab x dim: F16 or a llama.cpp type (row lookups) */
    tq_lin head;                /* vocab x dim (the embedding when tied); F16 uses f16_gemv */
    const float *out_norm;      /* dim */
    const tq_layer *layers;     /* n_layers */
} tq_model;

typedef struct tq_state tq_state;

/* The KV cache's element type:
 *   TQ_KV_F32  exact
 *   TQ_KV_F16  half the bytes; K and V rounded to nearest even, saturating at +-65504
 *   TQ_KV_Q8   a quarter of the bytes (plus one float per row): each head's row of K or V as int8
 *              codes round(x * 127 / max|x|) with the scale max|x| / 127
 *   TQ_KV_Q3   3 bits per element plus one float per 32 (BitNet a4.8's 3-bit KV): codes
 *              round(x * 3 / max|x|) in [-3, 3] with the scale max|x| / 3 of each block of 32
 *              elements of a head's row (head_dim % 32 == 0) */
enum { TQ_KV_F32 = 0, TQ_KV_F16 = 1, TQ_KV_Q8 = 2, TQ_KV_Q3 = 3 };

/* Activations of the matrices:
 *   TQ_ACTS_EXACT  as the model was trained (BitNet b1.58: per-token int8 absmax everywhere)
 *   TQ_ACTS_A48    BitNet a4.8 (arXiv 2411.04965): the inputs of q/k/v and gate/up as 4-bit
 *                  integers, q = clamp(round(x * s), -8, 7) with s = sqrt(7) / max(mean|x|, 1e-5)
 *                  per token; the input of o keeps its TQ_A48_KEEP largest magnitudes (TopK, the rest
 *                  set to 0) before its int8 rounding; down's input (sparse by ReLU^2) stays int8.
 *                  Ternary matrices get the 4-bit codes themselves; other weight types get the
 *                  values they stand for (q / s) in their own activation format. */
enum { TQ_ACTS_EXACT = 0, TQ_ACTS_A48 = 1 };
#define TQ_A48_KEEP 0.5 /* fraction of o's inputs TopK keeps (ceil(n * keep) of n) */

/* n_ctx: KV cache positions; max_batch: tokens per prompt chunk; nthreads >= 1; kv_type: TQ_KV_*;
 * acts: TQ_ACTS_*. NULL on OOM or a bad argument. */
tq_state *tq_state_new(const tq_model *m, const tq_kernels *k, int n_ctx, int max_batch, int nthreads,
                       int kv_type, int acts);
void tq_state_free(tq_state *s);
/* Set from another thread to stop a forward between two layers (tq_forward then returns
 * TQ_ECANCELLED and the KV entries of that call are not valid). */
void tq_state_cancel(tq_state *s, int flag);
int tq_state_threads(const tq_state *s);
long long tq_state_kv_bytes(const tq_state *s);
/* The thread pool's counters (threadpool.h: jobs, late, solo); zeros at one thread. */
void tq_state_pool_stats(const tq_state *s, long long out[3]);

/* Runs tokens[0..n) at positions pos..pos+n-1 (the cache must hold 0..pos-1).
 * logits: if all_logits, n x vocab, else vocab for the last token only; may be NULL (no head).
 * Returns TQ_OK, TQ_ERANGE (pos + n > n_ctx or bad token id), TQ_ECANCELLED. */
int tq_forward(tq_state *s, const int32_t *tokens, int n, int pos, float *logits, int all_logits);

/* Per-layer hidden states for tests (teacher forcing): runs one decoder layer on x (n x dim, in
 * place) at positions pos.., using and filling the KV cache of that layer. */
int tq_forward_layer(tq_state *s, int layer, float *x, int n, int pos);

/* The loaders' check of packed 2-bit ternary codes (tq.h: codes 0, 1, 2 for -1, 0, +1): bit
 * TQ_CODES_HAS3 if any field holds the invalid code 3, bit TQ_CODES_ALL_ZERO if every byte is 0x55
 * (every weight 0; n == 0 counts as that). One pass at memory speed: a 2B4T model's 520 MB of
 * codes took 0.43 s of its load as numpy array operations. */
enum { TQ_CODES_HAS3 = 1, TQ_CODES_ALL_ZERO = 2 };
int tq_scan_codes(const uint8_t *p, size_t n);

#ifdef __cplusplus
}
#endif

#endif
