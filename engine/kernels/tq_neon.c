/* neon kernels: not yet written; this table reports the path as absent. */
#include "tq.h"
const tq_kernels *tq_kernels_neon(void) { return 0; }
