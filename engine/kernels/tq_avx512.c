/* avx512 kernels: not yet written; this table reports the path as absent. */
#include "tq.h"
const tq_kernels *tq_kernels_avx512(void) { return 0; }
