# cython: language_level=3, boundscheck=False, wraparound=False
"""Test / debug access to every kernel table of engine/kernels (tq.h), one ISA at a time.

Not used by the forward pass. Shapes, dtypes and contiguity are checked and outputs allocated
while holding the GIL; only the C call runs under ``with nogil``. An ISA the CPU or the build
lacks raises UnsupportedCPUError.
"""

from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t

import numpy as np

from .errors import UnsupportedCPUError


# extern functions are noexcept in Cython 3; the pointer typedefs say so explicitly.
cdef extern from "tq.h" nogil:
    int TQ_QK
    int TQ_QK_BYTES
    int TQ_B3_QK
    int TQ_B3_BYTES
    ctypedef void (*tq_gemv_fn)(const uint8_t *w, int rows, int nb, const int8_t *a, int32_t asum,
                                int32_t *out) noexcept
    ctypedef void (*tq_gemm_fn)(const uint8_t *w, int rows, int nb, const int8_t *a, size_t a_stride,
                                const int32_t *asum, int ntok, int32_t *out, size_t out_stride) noexcept
    ctypedef float (*tq_quant_fn)(const float *x, int n, int npad, int8_t *q, int32_t *sum) noexcept
    ctypedef void (*tq_f16_gemv_fn)(const uint16_t *w, int rows, int cols, const float *x, float *out) noexcept
    ctypedef void (*tq_f32_dots_fn)(const float *rows, size_t stride, int len, const float *x, int n,
                                    float *out) noexcept
    ctypedef void (*tq_f32_wsum_fn)(const float *rows, size_t stride, int len, const float *w, int n,
                                    float *out) noexcept
    ctypedef void (*tq_f16_dots_fn)(const uint16_t *rows, size_t stride, int len, const float *x, int n,
                                    float *out) noexcept
    ctypedef void (*tq_f16_wsum_fn)(const uint16_t *rows, size_t stride, int len, const float *w, int n,
                                    float *out) noexcept
    ctypedef void (*tq_q8_dots_fn)(const int8_t *rows, size_t stride, int len, const float *x, int n,
                                   float *out) noexcept
    ctypedef void (*tq_q8_wsum_fn)(const int8_t *rows, size_t stride, int len, const float *w, int n,
                                   float *out) noexcept
    ctypedef void (*tq_scale_out_fn)(const int32_t *acc, int n, float sa, const float *scale, float *out) noexcept
    ctypedef void (*tq_softmax_fn)(float *x, int n, float scale) noexcept
    ctypedef struct tq_kernels:
        const char *isa
        tq_gemv_fn gemv
        tq_gemm_fn gemm
        tq_quant_fn quant_act
        tq_f16_gemv_fn f16_gemv
        tq_f32_dots_fn f32_dots
        tq_f32_wsum_fn f32_wsum
        tq_scale_out_fn scale_out
        tq_softmax_fn softmax
        tq_f16_dots_fn f16_dots
        tq_f16_wsum_fn f16_wsum
        tq_q8_dots_fn q8_dots
        tq_q8_wsum_fn q8_wsum
        int head_lead
        tq_gemv_fn b3_gemv
        tq_gemm_fn b3_gemm
        int b3_fast
    enum:
        TQ_CPU_AVX2
        TQ_CPU_AVX512
        TQ_CPU_AVX512VNNI
        TQ_CPU_NEON
        TQ_CPU_NEON_DOTPROD
        TQ_CPU_AVXVNNI
        TQ_CPU_AMD
        TQ_CPU_AVX512VBMI
    unsigned tq_cpu_features()
    const tq_kernels *tq_select()
    const tq_kernels *tq_select_isa(const char *name)
    float tq_f16_to_f32(uint16_t h)
    uint16_t tq_f32_to_f16(float f)


cdef extern from "tq_norm.h" nogil:
    double tq_sum_squares(const float *x, int n, const float *prefetch)


ISA_NAMES = ("scalar", "avx2", "avx512", "neon")


cdef const tq_kernels *_table(str isa) except NULL:
    cdef bytes name = isa.encode("ascii")
    cdef const tq_kernels *k = tq_select_isa(name)
    if k == NULL:
        raise UnsupportedCPUError(
            f"instruction set {isa!r} is not available on this CPU or in this build "
            f"(available: {', '.join(available_isas())}). Pick another with TRIT_ISA."
        )
    return k


def cpu_features() -> dict:
    """CPU features as probed by cpu.c (including OS support for the register state)."""
    cdef unsigned f = tq_cpu_features()
    return {
        "avx2": bool(f & TQ_CPU_AVX2),
        "avxvnni": bool(f & TQ_CPU_AVXVNNI),
        "avx512": bool(f & TQ_CPU_AVX512),
        "avx512vnni": bool(f & TQ_CPU_AVX512VNNI),
        "neon": bool(f & TQ_CPU_NEON),
        "neon_dotprod": bool(f & TQ_CPU_NEON_DOTPROD),
        "amd": bool(f & TQ_CPU_AMD),
        "avx512vbmi": bool(f & TQ_CPU_AVX512VBMI),
    }


def available_isas() -> list:
    """ISA names accepted by tq_select_isa() that this CPU and build can run."""
    return [n for n in ISA_NAMES if tq_select_isa(n.encode("ascii")) != NULL]


def selected_isa() -> str:
    """Name of the table tq_select() picked (honours TRIT_ISA)."""
    return tq_select().isa.decode("ascii")


def table_name(str isa) -> str:
    """The table behind an ISA name, e.g. "avx512" -> "avx512vnni" on a CPU with VNNI, "avx2" ->
    "avxvnni" on one with AVX-VNNI."""
    return _table(isa).isa.decode("ascii")


def head_lead(str isa) -> int:
    """How far ahead (bytes) that table's f16 head GEMV prefetches, 0: not at all. It depends on
    the CPU (tq_head_prefetch_far in tq.h; TRIT_HEAD_PREFETCH_FAR=0/1 overrides)."""
    return _table(isa).head_lead


def b3_fast(str isa) -> bool:
    """Whether that table reads the base-3 (B3) layout faster than the TQ one: the loader's pick."""
    return bool(_table(isa).b3_fast)


cdef int _nb_of(Py_ssize_t row_bytes, bint b3) except -1:
    cdef int block = TQ_B3_BYTES if b3 else TQ_QK_BYTES
    if row_bytes % block != 0 or row_bytes == 0:
        raise ValueError(f"packed rows must be a positive multiple of {block} bytes, got {row_bytes}")
    return <int>(row_bytes // block)


cdef bint _is_b3(str layout) except -1:
    if layout not in ("tq", "b3"):
        raise ValueError(f"layout must be 'tq' or 'b3', not {layout!r}")
    return layout == "b3"


def gemv(str isa, const uint8_t[:, ::1] w, const int8_t[::1] a, int asum, str layout="tq"):
    """int32 [rows]: out[r] = sum_i w[r][i] * a[i] for packed ternary w: [rows, nb * 32] in the TQ
    layout, or [rows, nb * 64] in the B3 one (layout "b3": the table's b3_gemv)."""
    cdef const tq_kernels *k = _table(isa)
    cdef bint b3 = _is_b3(layout)
    cdef int rows = <int>w.shape[0]
    cdef int nb = _nb_of(w.shape[1], b3)
    cdef int qk = TQ_B3_QK if b3 else TQ_QK
    if a.shape[0] < <Py_ssize_t>nb * qk:
        raise ValueError(f"activations hold {a.shape[0]} values, the rows need {nb * qk}")
    out = np.empty(rows, dtype=np.int32)
    cdef int32_t[::1] o = out
    cdef tq_gemv_fn fn = k.b3_gemv if b3 else k.gemv
    if rows > 0:
        with nogil:
            fn(&w[0, 0], rows, nb, &a[0], asum, &o[0])
    return out


def gemm(str isa, const uint8_t[:, ::1] w, const int8_t[:, :] a, const int32_t[::1] asum, int out_pad=0,
         str layout="tq"):
    """int32 [ntok, rows]. ``a`` is [ntok, >= nb * 128] (B3: nb * 320) with unit column stride and
    any row stride (a view into a wider array tests arbitrary a_stride and unaligned rows); the
    output rows are written with a stride of rows + out_pad."""
    cdef const tq_kernels *k = _table(isa)
    cdef bint b3 = _is_b3(layout)
    cdef int rows = <int>w.shape[0]
    cdef int nb = _nb_of(w.shape[1], b3)
    cdef int qk = TQ_B3_QK if b3 else TQ_QK
    cdef int ntok = <int>a.shape[0]
    if ntok < 1:
        raise ValueError("gemm needs at least one token")
    if a.shape[1] < <Py_ssize_t>nb * qk or a.strides[1] != 1:
        raise ValueError(f"activations must be [ntok, >= {nb * qk}] with unit column stride")
    if ntok > 1 and a.strides[0] < <Py_ssize_t>nb * qk:
        raise ValueError(f"activation rows overlap (row stride below nb * {qk})")
    if asum.shape[0] != ntok:
        raise ValueError(f"asum has {asum.shape[0]} entries for {ntok} tokens")
    if out_pad < 0:
        raise ValueError("out_pad must be >= 0")
    cdef size_t a_stride = <size_t>a.strides[0] if ntok > 1 else <size_t>nb * qk
    cdef size_t out_stride = <size_t>(rows + out_pad)
    full = np.full((ntok, rows + out_pad), -7, dtype=np.int32)
    cdef int32_t[:, ::1] o = full
    cdef tq_gemm_fn fn = k.b3_gemm if b3 else k.gemm
    if rows > 0:
        with nogil:
            fn(&w[0, 0], rows, nb, &a[0, 0], a_stride, &asum[0], ntok, &o[0, 0], out_stride)
    if out_pad and not (full[:, rows:] == -7).all():
        raise AssertionError("gemm wrote past the rows of an output row")
    return full[:, :rows]


def quant_act(str isa, const float[::1] x, int npad):
    """(q int8 [max(n, npad)], sum, scale). q starts filled with 0x55 so that a missing zero pad
    shows up."""
    cdef const tq_kernels *k = _table(isa)
    cdef int n = <int>x.shape[0]
    cdef int total = n if n > npad else npad
    q = np.full(max(total, 1), 0x55, dtype=np.int8)
    cdef int8_t[::1] qv = q
    cdef int32_t s = 0
    cdef float scale
    cdef const float *xp = &x[0] if n > 0 else NULL
    with nogil:
        scale = k.quant_act(xp, n, npad, &qv[0], &s)
    return q[:total], int(s), float(scale)


def f16_gemv(str isa, const uint16_t[:, ::1] w, const float[::1] x):
    """float32 [rows]: out[r] = sum_i half(w[r][i]) * x[i]."""
    cdef const tq_kernels *k = _table(isa)
    cdef int rows = <int>w.shape[0]
    cdef int cols = <int>w.shape[1]
    if x.shape[0] != cols:
        raise ValueError(f"x has {x.shape[0]} values for {cols} columns")
    out = np.empty(rows, dtype=np.float32)
    cdef float[::1] o = out
    if rows > 0 and cols > 0:
        with nogil:
            k.f16_gemv(&w[0, 0], rows, cols, &x[0], &o[0])
    elif rows > 0:
        out[:] = 0
    return out


ctypedef fused kv_t:
    float
    uint16_t
    int8_t


def kv_dots(str isa, const kv_t[:, ::1] rows, const float[::1] x):
    """out[j] = dot(rows[j, :n], x) with n = len(x) <= rows.shape[1] (the row stride): f32_dots for
    float32 rows, f16_dots for uint16 rows (the bits of float16, e.g. ``a.view(np.uint16)``),
    q8_dots for int8 rows (codes; the row scales are the caller's)."""
    cdef const tq_kernels *k = _table(isa)
    if x.shape[0] > rows.shape[1]:
        raise ValueError("kv_dots: x is longer than a row")
    cdef int n = <int>x.shape[0], length = <int>rows.shape[0]
    cdef size_t stride = <size_t>rows.shape[1]
    out = np.zeros(length, dtype=np.float32)
    cdef float[::1] o = out
    if length > 0 and n > 0:
        with nogil:
            if kv_t is float:
                k.f32_dots(&rows[0, 0], stride, length, &x[0], n, &o[0])
            elif kv_t is uint16_t:
                k.f16_dots(&rows[0, 0], stride, length, &x[0], n, &o[0])
            else:
                k.q8_dots(&rows[0, 0], stride, length, &x[0], n, &o[0])
    return out


def kv_wsum(str isa, const kv_t[:, ::1] rows, const float[::1] w, int n):
    """out[i] = sum_j w[j] * rows[j, i] for i < n <= rows.shape[1] (the row stride): f32_wsum for
    float32 rows, f16_wsum for uint16 rows (float16 bits), q8_wsum for int8 rows (codes)."""
    cdef const tq_kernels *k = _table(isa)
    if w.shape[0] != rows.shape[0] or n < 0 or n > rows.shape[1]:
        raise ValueError("kv_wsum: need len(w) == rows.shape[0] and 0 <= n <= rows.shape[1]")
    cdef int length = <int>w.shape[0]
    cdef size_t stride = <size_t>rows.shape[1]
    out = np.full(n, np.nan, dtype=np.float32)  # every element must be written
    cdef float[::1] o = out
    cdef const float *wp = &w[0] if length > 0 else NULL
    if n > 0:
        with nogil:
            if kv_t is float:
                k.f32_wsum(&rows[0, 0] if length > 0 else NULL, stride, length, wp, n, &o[0])
            elif kv_t is uint16_t:
                k.f16_wsum(&rows[0, 0] if length > 0 else NULL, stride, length, wp, n, &o[0])
            else:
                k.q8_wsum(&rows[0, 0] if length > 0 else NULL, stride, length, wp, n, &o[0])
    return out


def scale_out(str isa, const int32_t[::1] acc, float sa, const float[::1] scale):
    """float32 ((float)acc[r] / sa) * scale[r], through the ISA's scale_out."""
    cdef const tq_kernels *k = _table(isa)
    if acc.shape[0] != scale.shape[0]:
        raise ValueError("scale_out needs equal lengths")
    cdef int n = <int>acc.shape[0]
    out = np.full(n, np.nan, dtype=np.float32)
    cdef float[::1] o = out
    if n > 0:
        with nogil:
            k.scale_out(&acc[0], n, sa, &scale[0], &o[0])
    return out


def softmax(str isa, const float[::1] x, float scale):
    """float32 softmax(x * scale) through the ISA's softmax (x itself is left alone)."""
    cdef const tq_kernels *k = _table(isa)
    if x.shape[0] < 1:
        raise ValueError("softmax needs at least one value")
    out = np.array(x, dtype=np.float32, copy=True)
    cdef float[::1] o = out
    with nogil:
        k.softmax(&o[0], <int>o.shape[0], scale)
    return out


def sum_squares(const float[::1] x, bint prefetch=False):
    """RMSNorm's sum of squares (tq_norm.h, the path this build compiles for every ISA table):
    float64. prefetch: also prefetch x itself, as the forward pass prefetches the norm weights."""
    cdef int n = <int>x.shape[0]
    cdef double r
    if n == 0:
        return tq_sum_squares(NULL, 0, NULL)
    with nogil:
        r = tq_sum_squares(&x[0], n, &x[0] if prefetch else NULL)
    return r


def f16_to_f32(const uint16_t[::1] h):
    """float32 array from f16 bit patterns, through tq_f16_to_f32."""
    out = np.empty(h.shape[0], dtype=np.float32)
    cdef float[::1] o = out
    cdef Py_ssize_t i
    with nogil:
        for i in range(h.shape[0]):
            o[i] = tq_f16_to_f32(h[i])
    return out


def f32_to_f16(const float[::1] f):
    """uint16 f16 bit patterns from float32 values, through tq_f32_to_f16."""
    out = np.empty(f.shape[0], dtype=np.uint16)
    cdef uint16_t[::1] o = out
    cdef Py_ssize_t i
    with nogil:
        for i in range(f.shape[0]):
            o[i] = tq_f32_to_f16(f[i])
    return out


# The thread pool (threadpool.h), driven with jobs whose workers can be made late on purpose.
cdef extern from "threadpool.h" nogil:
    ctypedef struct tq_pool:
        pass
    ctypedef struct tq_pool_stats:
        long jobs
        long late
        long solo
    tq_pool *tq_pool_new(int nthreads)
    void tq_pool_free(tq_pool *pool)
    int tq_pool_threads(const tq_pool *pool)
    tq_pool_stats tq_pool_get_stats(const tq_pool *pool)
    double TQ_LATE_S
    int TQ_SOLO_MIN
    int TQ_SOLO_MAX
    int TQ_SOLO_CLEAN

cdef extern from *:
    """
    #include "threadpool.h"
    #if defined(_WIN32)
    #include <windows.h>
    static void tq_test_sleep_ms(int ms) { Sleep((DWORD)ms); }
    #else
    #include <time.h>
    static void tq_test_sleep_ms(int ms) {
        struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&t, NULL);
    }
    #endif
    /* One job of pool_jobs(): chunks from a shared counter, each counted where it is done. */
    typedef struct {
        tq_counter next, worker_took;
        long chunks;
        int *hits;
        int stall_ms;    /* a worker sleeps this long right after taking its first chunk */
        int wait_worker; /* the caller takes nothing until a worker has taken a chunk (at most 2 s) */
        int caller_ms;   /* then the caller sleeps this long after its first chunk (its own work) */
    } tq_test_job;
    static void tq_test_task(void *arg, int ith, int nth) {
        tq_test_job *j = (tq_test_job *)arg;
        int stalled = 0;
        long c;
        (void)nth;
        if (ith == 0 && j->wait_worker)
            for (int i = 0; i < 2000 && j->worker_took.next == 0; i++) tq_test_sleep_ms(1);
        int worked = 0;
        while ((c = tq_counter_take(&j->next)) < j->chunks) {
            j->hits[c]++;
            if (ith == 0) {
                if (j->caller_ms && !worked) tq_test_sleep_ms(j->caller_ms);
                worked = 1;
                continue;
            }
            tq_counter_take(&j->worker_took);
            if (j->stall_ms && !stalled) {
                stalled = 1;
                tq_test_sleep_ms(j->stall_ms);
            }
        }
    }
    static long tq_test_run(tq_pool *pool, long chunks, int *hits, int stall_ms, int wait_worker, int caller_ms) {
        tq_test_job j;
        tq_counter_reset(&j.next);
        tq_counter_reset(&j.worker_took);
        j.chunks = chunks;
        j.hits = hits;
        j.stall_ms = stall_ms;
        j.wait_worker = wait_worker;
        j.caller_ms = caller_ms;
        tq_pool_run(pool, tq_test_task, &j);
        return j.worker_took.next;
    }
    """
    long tq_test_run(tq_pool *pool, long chunks, int *hits, int stall_ms, int wait_worker, int caller_ms) nogil


POOL_LATE_S = TQ_LATE_S
POOL_SOLO_MIN = TQ_SOLO_MIN
POOL_SOLO_MAX = TQ_SOLO_MAX
POOL_SOLO_CLEAN = TQ_SOLO_CLEAN


def pool_jobs(int nthreads, plan, long chunks=64, int stall_ms=20):
    """Runs one job per entry of plan on a new pool of nthreads, each job `chunks` chunks taken from
    a shared counter: "stall" (the caller waits for a worker to take the first chunk, and that
    worker then sleeps stall_ms while it holds it: a worker whose core was taken), "slow" (the same,
    but the caller then works, sleeps, 60% of stall_ms after its first chunk: a big job whose end
    still waits, for less than the caller worked), "together" (the caller waits, at most 2 s, until
    a worker has taken a chunk before taking any itself), "any" (no waiting). Returns (chunks done
    by workers per job, whether every chunk of every job was done exactly once, the pool's counters
    {"jobs", "late", "solo"})."""
    modes = {"stall": (stall_ms, 1, 0), "slow": (stall_ms, 1, stall_ms * 6 // 10), "together": (0, 1, 0),
             "any": (0, 0, 0)}
    steps = [modes[p] for p in plan]
    if chunks < 1:
        raise ValueError("chunks must be >= 1")
    cdef tq_pool *pool = tq_pool_new(nthreads)
    if pool == NULL:
        raise MemoryError("could not start the thread pool")
    hits = np.zeros(chunks, dtype=np.intc)
    cdef int[::1] h = hits
    cdef int st, ww, cm
    cdef long took
    worker = []
    once = True
    try:
        for st, ww, cm in steps:
            h[:] = 0
            with nogil:
                took = tq_test_run(pool, chunks, &h[0], st, ww, cm)
            worker.append(int(took))
            once = once and bool((hits == 1).all())
        s = tq_pool_get_stats(pool)
        return worker, once, {"jobs": s.jobs, "late": s.late, "solo": s.solo}
    finally:
        tq_pool_free(pool)
