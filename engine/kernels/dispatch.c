/* The one dispatch table: filled once from the CPU probe; TRIT_ISA forces a path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tq.h"

const tq_kernels *tq_select_isa(const char *name) {
    const unsigned f = tq_cpu_features();
    if (!name || !strcmp(name, "scalar")) return tq_kernels_scalar();
    if (!strcmp(name, "avx2")) return (f & TQ_CPU_AVX2) ? tq_kernels_avx2() : NULL;
    if (!strcmp(name, "avx512")) return (f & TQ_CPU_AVX512) ? tq_kernels_avx512() : NULL;
    if (!strcmp(name, "neon")) return (f & TQ_CPU_NEON) ? tq_kernels_neon() : NULL;
    return NULL;
}

static const tq_kernels *tq_best(void) {
    static const char *order[] = {"avx512", "avx2", "neon"};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        const tq_kernels *k = tq_select_isa(order[i]);
        if (k) return k;
    }
    return tq_kernels_scalar();
}

const tq_kernels *tq_select(void) {
    static const tq_kernels *chosen = NULL;
    if (!chosen) {
        const char *env = getenv("TRIT_ISA");
        const tq_kernels *k = (env && *env) ? tq_select_isa(env) : NULL;
        if (env && *env && !k)
            fprintf(stderr, "trit: TRIT_ISA=%s is not available on this CPU/build; using the best path\n", env);
        chosen = k ? k : tq_best();
    }
    return chosen;
}
