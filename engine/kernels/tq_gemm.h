/* The ternary GEMM's loop structure, shared by every SIMD file (tq_avx2.c, tq_avx512.c,
 * tq_neon.c); only the tile differs between them. Included into each of those files, so it holds
 * no ISA instruction itself and is compiled with each file's flags.
 *
 * Order of work: row panels (one panel's weights, TQ_GEMM_PANEL_BYTES at most, stay in L2 while
 * every token tile re-reads them, so the weights stream from memory once), then token tiles (the
 * TQ_GEMM_TOKS tokens' activations, 4 x cols bytes, stay in L1 while the panel's row tiles pass
 * under them), then row tiles. Per block a tile reads R x 32 weight bytes and TQ_GEMM_TOKS x 128
 * activation bytes; this order takes the larger stream from L1. The earlier order (token chunks of
 * 256 KB of activations in L2 outer, then row tiles, then token tiles) took the activations from
 * L2, ~22 bytes a cycle for the AVX2 tile: on the Zen 3 VM, over the engine's 64-row work items of
 * the 2B4T matrices, 107-117 against 113-123 GMAC/s for this one (best of 9 rounds,
 * benchmarks/micro/gemm_order.c); not timed with the AVX-512 and NEON tiles. A tile
 * takes R weight rows (TILE_ROWS, or 1 for the last rows) and T tokens (1..4) as compile-time
 * constants after TQ_GEMM_TILE_ANY's switch, so that
 * its accumulators live in registers. */
#ifndef TQ_GEMM_H
#define TQ_GEMM_H

#include "tq.h"

#define TQ_GEMM_TOKS 4                       /* tokens per tile, every ISA */
#define TQ_GEMM_PANEL_BYTES (128 * 1024)     /* weight bytes of one row panel */

/* The AVX-512, AVX-VNNI and NEON decode GEMVs read R interleaved row streams, which the hardware
 * prefetchers follow badly (7 GB/s from DRAM without help, measured with the AVX2 GEMV when it read
 * that way), so they walk the next rows linearly with software prefetches, R * 32 bytes per block
 * (the AVX2 GEMV reads its rows one after another and prefetches the same distance ahead of that
 * stream). They run this many bytes beyond the next R rows' first byte, so that each line is
 * requested well over a memory latency before its row reaches it: with the prefetches exactly one
 * row group ahead, a 6912-column group's last rows were requested only ~14 blocks before use.
 * Measured on Zen 4 (one thread, 2 MiB pages, GB/s from DRAM, the machine's plain read loop
 * 25-32), AVX-512 VNNI: 2560 columns 22-29 -> 29.6, 6912 columns 24.9 -> 26.3-27.2 against no
 * lead; leads of 2-6 KiB are within noise of each other, 10 KiB and more fall off again. The AVX2
 * kernel is bound by its own arithmetic there (26-27 GB/s either way) and neither gains nor loses. */
#ifndef TQ_GEMV_PREFETCH_LEAD /* -D overrides it for measurements */
#define TQ_GEMV_PREFETCH_LEAD 4096
#endif

typedef void (*tq_gemm_tile_fn)(const uint8_t *w, size_t stride, int nb, const int8_t *a, size_t a_stride,
                                const int32_t *asum, int32_t *out, size_t out_stride, int R, int T);

/* The cases of a switch on T that call tile with T = 3, 2 or 1 (any other T) as constants */
#define TQ_GEMM_TILE_CASES_BELOW_4(tile, R)                                                              \
    case 3: tile(w, stride, nb, a, a_stride, asum, out, out_stride, R, 3); break;                      \
    case 2: tile(w, stride, nb, a, a_stride, asum, out, out_stride, R, 2); break;                      \
    default: tile(w, stride, nb, a, a_stride, asum, out, out_stride, R, 1); break;

#define TQ_GEMM_TILE_SWITCH(tile, R)                                                                     \
    switch (T) {                                                                                       \
    case 4: tile(w, stride, nb, a, a_stride, asum, out, out_stride, R, 4); break;                      \
    TQ_GEMM_TILE_CASES_BELOW_4(tile, R)                                                                \
    }

/* Defines `static ATTR void NAME(...)`, a tq_gemm_tile_fn that calls TILE with R = ROWS or 1 and
 * T = 1..4 as constants. ATTR: a target attribute (e.g. VNNI) or nothing. */
#define TQ_GEMM_TILE_ANY(NAME, ATTR, TILE, ROWS)                                                         \
    static ATTR void NAME(const uint8_t *w, size_t stride, int nb, const int8_t *a, size_t a_stride,   \
                          const int32_t *asum, int32_t *out, size_t out_stride, int R, int T) {        \
        if (R == (ROWS)) {                                                                             \
            TQ_GEMM_TILE_SWITCH(TILE, ROWS)                                                            \
        } else {                                                                                       \
            TQ_GEMM_TILE_SWITCH(TILE, 1)                                                               \
        }                                                                                              \
    }

/* Like TQ_GEMM_TILE_ANY, but the full ROWS x TQ_GEMM_TOKS tile goes to FULL, a function of its
 * own with the tile_fn arguments but R and T (written out where the generic tile compiles badly);
 * TILE then never runs ROWS x 4. */
#define TQ_GEMM_TILE_ANY_FULL(NAME, ATTR, TILE, ROWS, FULL)                                              \
    static ATTR void NAME(const uint8_t *w, size_t stride, int nb, const int8_t *a, size_t a_stride,   \
                          const int32_t *asum, int32_t *out, size_t out_stride, int R, int T) {        \
        if (R == (ROWS)) {                                                                             \
            switch (T) {                                                                               \
            case TQ_GEMM_TOKS: FULL(w, stride, nb, a, a_stride, asum, out, out_stride); break;         \
            TQ_GEMM_TILE_CASES_BELOW_4(TILE, ROWS)                                                     \
            }                                                                                          \
        } else {                                                                                       \
            TQ_GEMM_TILE_SWITCH(TILE, 1)                                                               \
        }                                                                                              \
    }

/* Defines `static ATTR void NAME(...)`, a tq_gemv_fn that runs ROWS_FN(w, stride, nb, a, asum, out, R)
 * on groups of ROWS rows (R = ROWS, a constant after inlining), then on the last rows one at a
 * time (R = 1). ATTR: a target attribute or nothing. */
#define TQ_GEMV_BY_ROWS(NAME, ATTR, ROWS_FN, ROWS)                                                       \
    static ATTR void NAME(const uint8_t *w, int rows, int nb, const int8_t *a, int32_t asum, int32_t *out) { \
        const size_t stride = (size_t)nb * TQ_QK_BYTES;                                                \
        int r = 0;                                                                                     \
        for (; r + (ROWS) <= rows; r += (ROWS))                                                        \
            ROWS_FN(w + (size_t)r * stride, stride, nb, a, asum, out + r, (ROWS));                     \
        for (; r < rows; r++) ROWS_FN(w + (size_t)r * stride, stride, nb, a, asum, out + r, 1);        \
    }

/* A tq_gemm_fn body: one token goes to the ISA's GEMV (its multi-row decode pass is the better
 * tile for a single token), more go through `tile` in tiles of tile_rows x TQ_GEMM_TOKS. */
static inline void tq_gemm_drive(tq_gemv_fn gemv, tq_gemm_tile_fn tile, int tile_rows, const uint8_t *w,
                                 int rows, int nb, const int8_t *a, size_t a_stride, const int32_t *asum,
                                 int ntok, int32_t *out, size_t out_stride) {
    if (ntok == 1) {
        gemv(w, rows, nb, a, asum[0], out);
        return;
    }
    const size_t stride = (size_t)nb * TQ_QK_BYTES;
    int panel = (int)(TQ_GEMM_PANEL_BYTES / stride);
    panel = panel < tile_rows ? tile_rows : panel - panel % tile_rows;
    for (int r0 = 0; r0 < rows; r0 += panel) {
        const int r1 = rows - r0 > panel ? r0 + panel : rows;
        for (int t = 0; t < ntok; t += TQ_GEMM_TOKS) {
            const int T = ntok - t >= TQ_GEMM_TOKS ? TQ_GEMM_TOKS : ntok - t;
            for (int r = r0; r < r1;) {
                const int R = r1 - r >= tile_rows ? tile_rows : 1;
                tile(w + (size_t)r * stride, stride, nb, a + (size_t)t * a_stride, a_stride, asum + t,
                     out + (size_t)t * out_stride + r, out_stride, R, T);
                r += R;
            }
        }
    }
}

#endif
