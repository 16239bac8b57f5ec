/* neon kernels for the llama.cpp types: not yet written; the lookup reports them as absent. */
#include "qk.h"
const tq_qk_ops *tq_qk_ops_neon(int type) { (void)type; return 0; }
