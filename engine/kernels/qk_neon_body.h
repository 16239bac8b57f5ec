/* Integer gemv bodies of qk_neon.c, included twice by it: once with SDOT (TQ_SFX dot, every
 * function carrying the dotprod target attribute) and once with SMULL/SADALP (TQ_SFX nodot, plain
 * NEON). Not a public header. Expects, from the includer:
 *   TQ_ATTR          function attribute (dotprod target or nothing)
 *   TQ_FN(name)      name with the variant suffix
 *   TQ_DOT16(acc, a, b)  int32x4 acc plus the products of two int8x16 (lanes may hold any split of
 *                    the sum: only whole-vector totals are used) */

/* 32 codes x 32 activations -> int32x4 whose lane sum is the block dot */
static inline TQ_ATTR int32x4_t TQ_FN(tq_dot32)(int8x16_t c0, int8x16_t c1, const int8_t *a) {
    int32x4_t s = vdupq_n_s32(0);
    s = TQ_DOT16(s, c0, vld1q_s8(a));
    return TQ_DOT16(s, c1, vld1q_s8(a + 16));
}

/* 32-value block types against Q8_0 / Q8_1 activations (see qk_avx2.c for the float part) */
static inline TQ_ATTR void TQ_FN(tq_q32_rows)(const int T, const int R, const uint8_t *w, size_t rb,
                                               int nb, const uint8_t *act, float *out) {
    const int bb = tq_q32_block_bytes(T);
    const int has_min = tq_q32_has_min(T);
    const int ab = has_min ? (int)sizeof(tq_block_q8_1) : (int)sizeof(tq_block_q8_0);
    float32x4_t acc[TQ_QK_NEON_ROWS];
    float accm[TQ_QK_NEON_ROWS];
    for (int r = 0; r < R; r++) {
        acc[r] = vdupq_n_f32(0.0f);
        accm[r] = 0.0f;
    }
    for (int b = 0; b < nb; b++) {
        const uint8_t *ablk = act + (size_t)b * ab;
        const int8_t *a = (const int8_t *)(ablk + ab - 32);
        const float da = tq_h2f(ablk);
        float das = 0.0f;
        if (has_min) {
            int16_t s;
            memcpy(&s, ablk + 2, 2);
            das = da * (float)s;
        }
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + r * rb + (size_t)b * bb;
            int8x16_t c0, c1;
            tq_q32_codes(T, blk, &c0, &c1);
            const int32x4_t p = TQ_FN(tq_dot32)(c0, c1, a);
            acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(p), tq_h2f(blk) * da);
            if (has_min) accm[r] += tq_h2f(blk + 2) * das;
        }
    }
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(acc[r]) + accm[r];
}

/* sumi + sc_lo * (codes 2p . a[0..32)) + sc_hi * (codes 2p + 1 . a[32..64)) (c: tq_q4k_codes) */
static inline TQ_ATTR int32x4_t TQ_FN(tq_q4k_pair)(int32x4_t sumi, const int8x16_t c[4], const int8_t *a,
                                                    uint8_t sl, uint8_t sh) {
    sumi = vmlaq_n_s32(sumi, TQ_FN(tq_dot32)(c[0], c[1], a), sl);
    return vmlaq_n_s32(sumi, TQ_FN(tq_dot32)(c[2], c[3], a + 32), sh);
}

/* sumi + sc_g * (codes . a) for the four groups g of Q6_K half h, l-range half (c: tq_q6k_codes) */
static inline TQ_ATTR int32x4_t TQ_FN(tq_q6k_quarter)(int32x4_t sumi, const tq_block_q6_k *x, const int8x16_t c[4],
                                                       const tq_block_q8_k *y, int h, int half) {
    for (int k = 0; k < 4; k++) {
        const int g = 8 * h + 2 * k + half; /* scale of values 128h + 32k + 16 half .. +15 */
        const int32x4_t s = TQ_DOT16(vdupq_n_s32(0), c[k], vld1q_s8(y->qs + 128 * h + 32 * k + 16 * half));
        sumi = vmlaq_n_s32(sumi, s, x->scales[g]);
    }
    return sumi;
}

/* One Q4_K / Q5_K block of a row (x) against the Q8_K blocks y[t] of NT tokens: its codes are built
 * once for all of them, and acc[t] gets the same operations in the same order whatever NT is (the
 * gemv passes NT = 1, the prompt GEMM its token group). */
static inline TQ_ATTR void TQ_FN(tq_q4k_block)(const int five, const uint8_t *x, const int NT,
                                                const tq_block_q8_k *const *y, float32x4_t *acc) {
    uint8_t sc[8], m[8];
    tq_k4_scales(x + 4, sc, m);
    uint8x16_t h0, h1;
    tq_q5k_high(five, x, &h0, &h1);
    int32x4_t sumi[TQ_QK_NEON_GEMM_TOKS];
    for (int t = 0; t < NT; t++) sumi[t] = vdupq_n_s32(0);
    for (int p = 0; p < 4; p++) {
        int8x16_t c[4];
        tq_q4k_codes(five, x, h0, h1, p, c);
        for (int t = 0; t < NT; t++) sumi[t] = TQ_FN(tq_q4k_pair)(sumi[t], c, y[t]->qs + 64 * p, sc[2 * p], sc[2 * p + 1]);
    }
    for (int t = 0; t < NT; t++) acc[t] = tq_q4k_float(x, y[t], sumi[t], tq_k4_mins(m, y[t]), acc[t]);
}

/* One Q6_K block of a row against NT tokens' Q8_K blocks (as tq_q4k_block) */
static inline TQ_ATTR void TQ_FN(tq_q6k_block)(const tq_block_q6_k *x, const int NT, const tq_block_q8_k *const *y,
                                                float32x4_t *acc) {
    int32x4_t sumi[TQ_QK_NEON_GEMM_TOKS];
    for (int t = 0; t < NT; t++) sumi[t] = vdupq_n_s32(0);
    for (int h = 0; h < 2; h++)
        for (int half = 0; half < 2; half++) { /* l in 0..15, then 16..31 */
            int8x16_t c[4];
            tq_q6k_codes(x, h, half, c);
            for (int t = 0; t < NT; t++) sumi[t] = TQ_FN(tq_q6k_quarter)(sumi[t], x, c, y[t], h, half);
        }
    for (int t = 0; t < NT; t++) acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(sumi[t]), y[t]->d * tq_h2f(&x->d));
}

static inline TQ_ATTR void TQ_FN(tq_k_rows)(const int T, const int R, const uint8_t *w, size_t rb, int nb,
                                             const tq_block_q8_k *a, float *out) {
    const int bb = T == TQ_K_Q4 ? 144 : T == TQ_K_Q5 ? 176 : 210;
    float32x4_t acc[TQ_QK_NEON_ROWS];
    for (int r = 0; r < R; r++) acc[r] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        for (int r = 0; r < R; r++) {
            const uint8_t *x = w + r * rb + (size_t)b * bb;
            const tq_block_q8_k *y = a + b;
            if (T == TQ_K_Q6)
                TQ_FN(tq_q6k_block)((const tq_block_q6_k *)x, 1, &y, &acc[r]);
            else
                TQ_FN(tq_q4k_block)(T == TQ_K_Q5, x, 1, &y, &acc[r]);
        }
    }
    for (int r = 0; r < R; r++) out[r] = vaddvq_f32(acc[r]);
}

#define TQ_Q32_GEMV(name, T)                                                                        \
    static TQ_ATTR void TQ_FN(tq_qk_gemv_##name)(const void *w, size_t rb, int rows, int n, const void *act, \
                                                  float *out) {                                     \
        const uint8_t *wb = (const uint8_t *)w;                                                     \
        const int nb = n / TQ_QK32;                                                                 \
        int r = 0;                                                                                  \
        for (; r + TQ_QK_NEON_ROWS <= rows; r += TQ_QK_NEON_ROWS)                                   \
            TQ_FN(tq_q32_rows)(T, TQ_QK_NEON_ROWS, wb + r * rb, rb, nb, (const uint8_t *)act, out + r); \
        for (; r < rows; r++) TQ_FN(tq_q32_rows)(T, 1, wb + r * rb, rb, nb, (const uint8_t *)act, out + r); \
    }
TQ_Q32_GEMV(q8_0, TQ_B_Q8_0)
TQ_Q32_GEMV(q4_0, TQ_B_Q4_0)
TQ_Q32_GEMV(q4_1, TQ_B_Q4_1)
TQ_Q32_GEMV(q5_0, TQ_B_Q5_0)
TQ_Q32_GEMV(q5_1, TQ_B_Q5_1)
#undef TQ_Q32_GEMV

#define TQ_K_GEMV(name, T)                                                                          \
    static TQ_ATTR void TQ_FN(tq_qk_gemv_##name)(const void *w, size_t rb, int rows, int n, const void *act, \
                                                  float *out) {                                     \
        const uint8_t *wb = (const uint8_t *)w;                                                     \
        const tq_block_q8_k *a = (const tq_block_q8_k *)act;                                        \
        const int nb = n / TQ_QKK;                                                                  \
        int r = 0;                                                                                  \
        for (; r + TQ_QK_NEON_ROWS <= rows; r += TQ_QK_NEON_ROWS)                                   \
            TQ_FN(tq_k_rows)(T, TQ_QK_NEON_ROWS, wb + r * rb, rb, nb, a, out + r);                  \
        for (; r < rows; r++) TQ_FN(tq_k_rows)(T, 1, wb + r * rb, rb, nb, a, out + r);              \
    }
TQ_K_GEMV(q4_k, TQ_K_Q4)
TQ_K_GEMV(q5_k, TQ_K_Q5)
TQ_K_GEMV(q6_k, TQ_K_Q6)
#undef TQ_K_GEMV

/* K-quant prompt GEMM (tq_qk_ops.gemm), one row x NT Q8_K activations per pass: a block's codes
 * are built once for the NT tokens; every (row, token) term takes tq_k_rows's operations in its
 * order, so each output is bit-identical to the gemv's. */
static inline TQ_ATTR void TQ_FN(tq_k_gemm_tile)(const int T, const int NT, const uint8_t *row, int nb,
                                                  const uint8_t *act, size_t as, float *out, size_t ldo) {
    const int bb = T == TQ_K_Q4 ? 144 : T == TQ_K_Q5 ? 176 : 210;
    float32x4_t acc[TQ_QK_NEON_GEMM_TOKS];
    for (int t = 0; t < NT; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        const uint8_t *x = row + (size_t)b * bb;
        const tq_block_q8_k *y[TQ_QK_NEON_GEMM_TOKS];
        for (int t = 0; t < NT; t++) y[t] = (const tq_block_q8_k *)(act + (size_t)t * as) + b;
        if (T == TQ_K_Q6)
            TQ_FN(tq_q6k_block)((const tq_block_q6_k *)x, NT, y, acc);
        else
            TQ_FN(tq_q4k_block)(T == TQ_K_Q5, x, NT, y, acc);
    }
    for (int t = 0; t < NT; t++) out[(size_t)t * ldo] = vaddvq_f32(acc[t]);
}

#define TQ_K_TILE(R, NT, r, a, o) TQ_FN(tq_k_gemm_tile)(T, NT, (const uint8_t *)w + (size_t)(r) * rb, nb, a, as, o, ldo)
#define TQ_K_GEMM(name, T_)                                                                         \
    static TQ_ATTR void TQ_FN(tq_qk_gemm_##name)(const void *w, size_t rb, int rows, int n, const void *act, \
                                                  size_t as, int ntok, float *out, size_t ldo) {    \
        const int T = T_, nb = n / TQ_QKK;                                                          \
        TQ_GEMM_LOOP(ntok, rows, act, as, out, ldo, 1, TQ_QK_NEON_GEMM_TOKS, TQ_GEMM_NO_GROUP, TQ_K_TILE) \
    }
TQ_K_GEMM(q4_k, TQ_K_Q4)
TQ_K_GEMM(q5_k, TQ_K_Q5)
TQ_K_GEMM(q6_k, TQ_K_Q6)
#undef TQ_K_GEMM
#undef TQ_K_TILE

/* float types: one variant (no integer dot product), shared by both tables */
#define TQ_FLOAT_OPS(T, name, block, bytes, act, fn) \
    {T, name, block, bytes, act, tq_qk_gemv_##fn##_neon, tq_qk_dequant_##fn##_scalar, tq_qk_gemm_##fn##_neon},
#define TQ_OPS(T, name, block, bytes, act, fn) \
    {T, name, block, bytes, act, TQ_FN(tq_qk_gemv_##fn), tq_qk_dequant_##fn##_scalar, TQ_K_GEMM_OF_##fn},

static const tq_qk_ops TQ_FN(tq_qk_neon_ops)[] = {
    TQ_QK_FLOAT_TYPES(TQ_FLOAT_OPS)
    TQ_QK_QUANT_TYPES(TQ_OPS)
};
#undef TQ_FLOAT_OPS
#undef TQ_OPS
