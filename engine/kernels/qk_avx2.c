/* avx2 kernels for the llama.cpp types: not yet written; the lookup reports them as absent. */
#include "qk.h"
const tq_qk_ops *tq_qk_ops_avx2(int type) { (void)type; return 0; }
