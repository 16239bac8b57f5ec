#include "qk.h"

const tq_qk_ops *tq_qk_ops_f32act_neon(int type) {
    (void)type;
    return 0;
}
