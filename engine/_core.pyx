# cython: language_level=3, boundscheck=False, wraparound=False
"""C <-> Python boundary of the forward pass.

Shapes, dtypes and contiguity are checked and buffers allocated while holding the GIL; only the C
call runs under ``with nogil``. C returns status codes, mapped here to trit.engine.errors.
"""

from libc.stdint cimport int32_t, uint8_t, uint16_t, uintptr_t
from libc.stdlib cimport calloc, free

import numpy as np

from .weights import QuantTensor, TernaryTensor
from .errors import CancelledError, ContextFullError, EngineError, OutOfMemoryError, UnsupportedCPUError


cdef extern from "tq.h" nogil:
    ctypedef struct tq_kernels:
        const char *isa
        int b3_fast
    int TQ_QK
    int TQ_QK_BYTES
    int TQ_B3_QK
    int TQ_B3_BYTES
    const tq_kernels *tq_select()
    const tq_kernels *tq_select_isa(const char *name)
    enum:
        TQ_OK
        TQ_ENOMEM
        TQ_EINVAL


cdef extern from "qk.h" nogil:
    ctypedef struct tq_qk_ops:
        int type
        const char *name
        int block
        int block_bytes
        int act
    const tq_qk_ops *tq_qk_get(const char *isa, int type)
    const tq_qk_ops *tq_qk_get_f32act(const char *isa, int type)
    enum:
        TQ_GGML_F16


cdef extern from "forward.h" nogil:
    enum:
        TQ_ACT_RELU2
        TQ_ACT_SILU
        TQ_ECANCELLED
        TQ_ERANGE
    int TQ_LIN_TERNARY
    ctypedef struct tq_lin:
        int type
        const uint8_t *w
        size_t row_bytes
        const float *scale
        int scale_one
        float scale1
        const float *bias
        int rows, cols, nb
        int b3
        const tq_qk_ops *ops
    ctypedef struct tq_layer:
        const float *attn_norm
        const float *attn_sub_norm
        const float *ffn_norm
        const float *ffn_sub_norm
        tq_lin q, k, v, o, gate, up, down
    ctypedef struct tq_model:
        int dim, hidden, n_layers, n_heads, n_kv_heads, head_dim, vocab, context
        float rope_theta, norm_eps
        int rope_neox
        int act
        tq_lin embed
        tq_lin head
        const float *out_norm
        const tq_layer *layers
    ctypedef struct tq_state:
        pass
    tq_state *tq_state_new(const tq_model *m, const tq_kernels *k, int n_ctx, int max_batch, int nthreads,
                           int kv_type, int acts)
    void tq_state_free(tq_state *s)
    void tq_state_cancel(tq_state *s, int flag)
    int tq_state_threads(const tq_state *s)
    long long tq_state_kv_bytes(const tq_state *s)
    void tq_state_pool_stats(const tq_state *s, long long *out)
    int tq_forward(tq_state *s, const int32_t *tokens, int n, int pos, float *logits, int all_logits)
    int tq_forward_layer(tq_state *s, int layer, float *x, int n, int pos)
    enum:
        TQ_CODES_HAS3
        TQ_CODES_ALL_ZERO
    int tq_scan_codes(const uint8_t *p, size_t n)


cdef extern from "repack.h" nogil:
    enum:
        TQ1_0_BYTES
        TQ2_0_BYTES
        TQ_K_PACKED
    void tq_repack_tq1_0(const uint8_t *blocks, size_t n, uint8_t *out, uint8_t *nonzero)
    void tq_repack_tq2_0(const uint8_t *blocks, size_t n, uint8_t *out, uint8_t *nonzero)
    int tq_repack_b3(const uint8_t *src, size_t rows, int cols, uint8_t *dst)


cdef extern from *:
    """
    #if defined(__linux__) || defined(__APPLE__)
    #include <sys/mman.h>
    #include <unistd.h>
    /* MADV_DONTNEED over the whole pages inside [p, p + n); 0, or -1 where there is none */
    static int trit_release_pages(const void *p, size_t n) {
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        const size_t a = ((size_t)p + page - 1) / page * page, b = ((size_t)p + n) / page * page;
        return b > a ? madvise((void *)a, b - a, MADV_DONTNEED) : 0;
    }
    #else
    static int trit_release_pages(const void *p, size_t n) { (void)p; (void)n; return -1; }
    #endif
    """
    int trit_release_pages(const void *p, size_t n) nogil


cdef uintptr_t _addr(object arr, object dtype, tuple shape, str what) except 0:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array, got {type(arr).__name__}")
    if arr.dtype != dtype or tuple(arr.shape) != shape or not arr.flags.c_contiguous:
        raise ValueError(f"{what}: expected {np.dtype(dtype).name} {shape} C-contiguous, "
                         f"got {arr.dtype} {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{what}: empty array")
    return <uintptr_t>arr.ctypes.data


cdef void _set_lin(tq_lin *t, object tt, int rows, int cols, str what, const tq_kernels *k,
                   bint f32_act) except *:
    """Fills t from a TernaryTensor, a QuantTensor or a float16 [rows, cols] array."""
    if isinstance(tt, np.ndarray):
        if tt.dtype != np.float16:
            raise ValueError(f"{what}: expected float16 [{rows}, {cols}], got {tt.dtype}")
        tt = QuantTensor(tt.view(np.uint8).reshape(tt.shape[0], -1), tt.shape[0], tt.shape[1], TQ_GGML_F16, "F16")
    if tt.rows != rows or tt.cols != cols:
        raise ValueError(f"{what}: shape [{tt.rows}, {tt.cols}], expected [{rows}, {cols}]")
    t.rows = rows
    t.cols = cols
    t.bias = NULL
    t.scale = NULL
    t.scale_one = 0
    t.scale1 = 0
    t.ops = NULL
    t.b3 = 0
    if isinstance(tt, TernaryTensor):
        t.type = TQ_LIN_TERNARY
        t.b3 = tt.layout == "b3"
        t.nb = tt.nb
        t.row_bytes = t.nb * (TQ_B3_BYTES if t.b3 else TQ_QK_BYTES)
        t.w = <const uint8_t *>_addr(tt.packed, np.uint8, (rows, t.row_bytes), what)
        t.scale = <const float *>_addr(tt.scale, np.float32, (rows,), what + " scale")
        bits = np.asarray(tt.scale).view(np.uint32)
        if rows > 0 and bool((bits == bits[0]).all()):  # one scale for every row (I2_S)
            t.scale_one = 1
            t.scale1 = tt.scale[0]
        return
    t.type = tt.ggml_type
    # f32_act: llama.cpp types dequantize each block against the f32 activation instead of
    # rounding the activation to 8 bits (exact to the dequantized weights, a bit slower)
    t.ops = tq_qk_get_f32act(k.isa, tt.ggml_type) if f32_act else tq_qk_get(k.isa, tt.ggml_type)
    if t.ops == NULL:
        raise ValueError(f"{what}: weight type {tt.type_name} has no kernels in this build")
    if cols % t.ops.block:
        raise ValueError(f"{what}: {cols} columns is not a multiple of the {tt.type_name} block ({t.ops.block})")
    t.nb = cols // t.ops.block
    t.row_bytes = t.nb * t.ops.block_bytes
    t.w = <const uint8_t *>_addr(tt.data, np.uint8, (rows, t.row_bytes), what)
    if tt.bias is not None:
        t.bias = <const float *>_addr(tt.bias, np.float32, (rows,), what + " bias")


cdef extern from "memcap.h":
    int mc_begin(size_t limit, size_t small_limit)
    int mc_end(int slot, size_t *peak, size_t *small)


def memory_cap_begin(size_t limit, size_t small_limit):
    """Cap the calling thread's live large blocks (1 MiB and up) at `limit` bytes, and the bytes it
    asks for in smaller blocks (added up, frees not subtracted) at `small_limit`: a request past
    either raises MemoryError. Returns a handle for memory_cap_end, or a negative number when no cap could
    be set (-1: four threads capped already, or this one; -2: another allocator hook replaced ours)."""
    return mc_begin(limit, small_limit)


def memory_cap_end(int handle):
    """End a cap: (whether a request was refused, the peak bytes held in large blocks, the bytes
    asked for in small ones)."""
    cdef size_t peak = 0, small = 0
    cdef int over = mc_end(handle, &peak, &small)
    return bool(over), peak, small


def scan_ternary_codes(const uint8_t[::1] codes):
    """(any field holds the invalid code 3, every byte is 0x55: all weights 0) over packed 2-bit
    ternary codes, in one C pass without the GIL (the loaders' check_tq_codes)."""
    cdef int r
    cdef size_t n = <size_t>codes.shape[0]
    if n == 0:
        r = tq_scan_codes(NULL, 0)
    else:
        with nogil:
            r = tq_scan_codes(&codes[0], n)
    return bool(r & TQ_CODES_HAS3), bool(r & TQ_CODES_ALL_ZERO)


def repack_ternary_blocks(str kind, const uint8_t[:, ::1] blocks, uint8_t[:, ::1] out,
                          uint8_t[::1] nonzero):
    """llama.cpp TQ1_0 / TQ2_0 blocks (kind; uint8 [n, 54] / [n, 66]) -> TQ codes out uint8 [n, 64]
    and nonzero[i] = block i holds a nonzero weight, in C without the GIL (engine/kernels/repack.c;
    the loaders call it on row slices from several threads)."""
    cdef size_t n = <size_t>blocks.shape[0]
    cdef int tq1 = kind == "TQ1_0"
    if not tq1 and kind != "TQ2_0":
        raise ValueError(f"kind must be 'TQ1_0' or 'TQ2_0', not {kind!r}")
    if blocks.shape[1] != (TQ1_0_BYTES if tq1 else TQ2_0_BYTES):
        raise ValueError(f"{kind} blocks have {TQ1_0_BYTES if tq1 else TQ2_0_BYTES} bytes, not {blocks.shape[1]}")
    if out.shape[0] != <Py_ssize_t>n or out.shape[1] != TQ_K_PACKED or nonzero.shape[0] != <Py_ssize_t>n:
        raise ValueError(f"out must be [{n}, {TQ_K_PACKED}] and nonzero [{n}]")
    if n == 0:
        return
    with nogil:
        if tq1:
            tq_repack_tq1_0(&blocks[0, 0], n, &out[0, 0], &nonzero[0])
        else:
            tq_repack_tq2_0(&blocks[0, 0], n, &out[0, 0], &nonzero[0])


def repack_b3(const uint8_t[:, ::1] packed, int cols, uint8_t[:, ::1] out):
    """TQ rows packed [rows, ceil(cols / 128) * 32] -> B3 rows out [rows, ceil(cols / 320) * 64]
    (tq.h), in C without the GIL. ValueError on a code 3 (no ternary value)."""
    cdef size_t rows = <size_t>packed.shape[0]
    cdef int r = 0
    if cols < 1 or packed.shape[1] != (cols + TQ_QK - 1) // TQ_QK * TQ_QK_BYTES:
        raise ValueError(f"{cols} columns need TQ rows of {(cols + TQ_QK - 1) // TQ_QK * TQ_QK_BYTES} bytes, "
                         f"got {packed.shape[1]}")
    if out.shape[0] != packed.shape[0] or out.shape[1] != (cols + TQ_B3_QK - 1) // TQ_B3_QK * TQ_B3_BYTES:
        raise ValueError(f"out must be [{rows}, {(cols + TQ_B3_QK - 1) // TQ_B3_QK * TQ_B3_BYTES}]")
    if rows:
        with nogil:
            r = tq_repack_b3(&packed[0, 0], rows, cols, &out[0, 0])
    if r == TQ_ENOMEM:
        raise OutOfMemoryError("out of memory repacking ternary rows", needed=0, part="weights")
    if r:
        raise ValueError("a packed code 3 (no ternary value)")


def release_pages(arr):
    """Tells the OS it may drop the whole memory pages inside arr's bytes (madvise MADV_DONTNEED):
    a file map's pages are read again from the file when touched, anonymous memory's read back as
    zeros, so only for bytes nothing reads again. False where the OS has no such call."""
    cdef uintptr_t p = <uintptr_t>arr.ctypes.data
    cdef size_t n = <size_t>arr.nbytes
    if not arr.flags.c_contiguous:
        raise ValueError("release_pages needs a C-contiguous array")
    return trit_release_pages(<const void *>p, n) == 0


def kernel_b3_fast(isa=None):
    """Whether the kernel table ``isa`` selects (None: this CPU's best) reads ternary matrices
    faster in the B3 layout than in the TQ one (the loader then repacks them)."""
    return bool(_kernels(isa).b3_fast)


def kernel_isa(isa=None):
    """Name of the kernel table that ``isa`` (None = best for this CPU, honouring TRIT_ISA)
    selects; raises UnsupportedCPUError when the CPU or the build lacks it."""
    cdef const tq_kernels *k = _kernels(isa)
    return k.isa.decode()


cdef const tq_kernels *_kernels(object isa) except NULL:
    cdef const tq_kernels *k
    cdef bytes name
    if isa is None:
        return tq_select()
    name = str(isa).encode()
    k = tq_select_isa(name)
    if k == NULL:
        names = ("scalar", "avx2", "avx512", "neon")
        here = ", ".join(n for n in names if tq_select_isa(n.encode()) != NULL)
        if str(isa) not in names:
            raise UnsupportedCPUError(
                f"unknown instruction set {isa!r}: the names are {', '.join(names)} (this CPU and "
                f"build have {here})")
        raise UnsupportedCPUError(
            f"instruction set '{isa}' is not available on this CPU or in this build (it has {here})")
    return k


cdef class CoreModel:
    """C view of a ModelWeights. Keeps the weights object alive: the C structs point into it."""
    cdef tq_model m
    cdef tq_layer *layers
    cdef const tq_kernels *kern
    cdef readonly object weights
    cdef readonly bint f32_act

    def __cinit__(self):
        self.layers = NULL

    def __init__(self, weights, isa=None, f32_act=False, head_f32_act=None):
        """f32_act: llama.cpp weight types meet the f32 activation (else Q8-rounded activations);
        head_f32_act: the same for the LM head alone (default: f32_act)."""
        cfg = weights.config
        cdef tq_model *m = &self.m
        self.kern = _kernels(isa)
        self.weights = weights
        self.f32_act = bool(f32_act)
        m.dim, m.hidden, m.n_layers = cfg.dim, cfg.hidden, cfg.n_layers
        m.n_heads, m.n_kv_heads, m.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        m.vocab, m.context = cfg.vocab, cfg.context
        m.rope_theta, m.norm_eps = cfg.rope_theta, cfg.norm_eps
        m.rope_neox = 1 if cfg.rope_neox else 0
        if cfg.act == "relu2":
            m.act = TQ_ACT_RELU2
        elif cfg.act == "silu":
            m.act = TQ_ACT_SILU
        else:
            raise ValueError(f"unknown activation {cfg.act!r}")
        if cfg.n_heads % cfg.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        if len(weights.layers) != cfg.n_layers:
            raise ValueError("layer count does not match the config")
        _set_lin(&m.embed, weights.embed, cfg.vocab, cfg.dim, "token embedding", self.kern, self.f32_act)
        head = weights.embed if weights.head is None else weights.head
        _set_lin(&m.head, head, cfg.vocab, cfg.dim, "output head", self.kern,
                 self.f32_act if head_f32_act is None else bool(head_f32_act))
        m.out_norm = <const float *>_addr(weights.out_norm, np.float32, (cfg.dim,), "output_norm")
        qdim = cfg.n_heads * cfg.head_dim
        kvdim = cfg.n_kv_heads * cfg.head_dim
        self.layers = <tq_layer *>calloc(cfg.n_layers, sizeof(tq_layer))
        if self.layers == NULL:
            raise OutOfMemoryError("could not allocate the layer table")
        cdef tq_layer *L
        for i, lw in enumerate(weights.layers):
            L = &self.layers[i]
            p = f"layer {i}"
            L.attn_norm = <const float *>_addr(lw.attn_norm, np.float32, (cfg.dim,), p + " attn_norm")
            L.ffn_norm = <const float *>_addr(lw.ffn_norm, np.float32, (cfg.dim,), p + " ffn_norm")
            L.attn_sub_norm = NULL if lw.attn_sub_norm is None else <const float *>_addr(
                lw.attn_sub_norm, np.float32, (qdim,), p + " attn_sub_norm")
            L.ffn_sub_norm = NULL if lw.ffn_sub_norm is None else <const float *>_addr(
                lw.ffn_sub_norm, np.float32, (cfg.hidden,), p + " ffn_sub_norm")
            _set_lin(&L.q, lw.q, qdim, cfg.dim, p + " q", self.kern, self.f32_act)
            _set_lin(&L.k, lw.k, kvdim, cfg.dim, p + " k", self.kern, self.f32_act)
            _set_lin(&L.v, lw.v, kvdim, cfg.dim, p + " v", self.kern, self.f32_act)
            _set_lin(&L.o, lw.o, cfg.dim, qdim, p + " o", self.kern, self.f32_act)
            _set_lin(&L.gate, lw.gate, cfg.hidden, cfg.dim, p + " gate", self.kern, self.f32_act)
            _set_lin(&L.up, lw.up, cfg.hidden, cfg.dim, p + " up", self.kern, self.f32_act)
            _set_lin(&L.down, lw.down, cfg.dim, cfg.hidden, p + " down", self.kern, self.f32_act)
        m.layers = self.layers

    def __dealloc__(self):
        free(self.layers)

    @property
    def isa(self):
        return self.kern.isa.decode()


cdef class CoreState:
    """Activations, KV cache and thread pool of one session."""
    cdef tq_state *s
    cdef readonly CoreModel model
    cdef readonly int n_ctx
    cdef readonly int max_batch
    cdef readonly str kv
    cdef readonly bint a48

    def __cinit__(self):
        self.s = NULL

    def __init__(self, CoreModel model, int n_ctx, int max_batch=64, int nthreads=1, str kv="f32",
                 bint a48=False):
        """kv: the KV cache's element type; a48: BitNet a4.8 activations (TQ_ACTS_A48 in forward.h)."""
        if n_ctx < 1 or max_batch < 1 or nthreads < 1:
            raise ValueError("n_ctx, max_batch and nthreads must be >= 1")
        kv_types = {"f32": 0, "f16": 1, "q8": 2, "q3": 3}  # TQ_KV_F32 / F16 / Q8 / Q3 in forward.h
        if kv not in kv_types:
            raise ValueError(f"kv must be one of {', '.join(kv_types)}, got {kv!r}")
        if kv == "q3" and model.m.head_dim % 32:
            raise ValueError(f"the 3-bit KV cache needs a head size divisible by 32, not {model.m.head_dim}")
        self.model = model
        self.n_ctx = n_ctx
        self.max_batch = max_batch
        self.kv = kv
        self.a48 = a48
        cdef int kv_type = kv_types[kv]
        cdef int acts = 1 if a48 else 0
        with nogil:
            self.s = tq_state_new(&model.m, model.kern, n_ctx, max_batch, nthreads, kv_type, acts)
        if self.s == NULL:
            raise OutOfMemoryError(
                f"could not allocate the session state (KV cache for {n_ctx} positions); "
                "use a shorter context")

    def __dealloc__(self):
        if self.s != NULL:
            with nogil:
                tq_state_free(self.s)

    @property
    def threads(self):
        return tq_state_threads(self.s)

    @property
    def kv_bytes(self):
        return tq_state_kv_bytes(self.s)

    @property
    def pool_stats(self):
        """The thread pool's counters since the session began: {"jobs", "late", "solo"}: jobs run
        (zero at one thread), jobs whose end waited on a worker whose core was taken, and jobs the
        caller then ran alone (engine/kernels/threadpool.c)."""
        cdef long long c[3]
        tq_state_pool_stats(self.s, c)
        return {"jobs": c[0], "late": c[1], "solo": c[2]}

    def cancel(self, bint flag=True):
        """Thread-safe: asks a running forward to stop between two layers."""
        tq_state_cancel(self.s, 1 if flag else 0)

    def forward(self, tokens, int pos, bint all_logits=False, bint want_logits=True):
        """Runs tokens at positions pos..; returns float32 logits [n, vocab] (all_logits) or
        [vocab] (last token), or None when want_logits is False."""
        cdef int32_t[::1] ids = np.ascontiguousarray(tokens, dtype=np.int32)
        cdef int n = ids.shape[0]
        cdef int vocab = self.model.m.vocab
        if n < 1:
            raise ValueError("no tokens to run")
        if pos < 0 or pos + n > self.n_ctx:
            raise ContextFullError(
                f"{pos + n} positions needed but the context holds {self.n_ctx}; "
                "start a new conversation or raise the context size")
        bad = [int(t) for t in np.asarray(ids) if t < 0 or t >= vocab]
        if bad:
            raise ValueError(f"token ids out of range [0, {vocab}): {bad[:5]}")
        cdef float[:, ::1] out2
        cdef float *lp = NULL
        out = None
        if want_logits:
            out = np.empty((n if all_logits else 1, vocab), dtype=np.float32)
            out2 = out
            lp = &out2[0, 0]
        cdef int rc
        with nogil:
            rc = tq_forward(self.s, &ids[0], n, pos, lp, all_logits)
        if rc == TQ_ECANCELLED:
            raise CancelledError("generation was stopped")
        if rc != TQ_OK:
            raise EngineError(f"forward pass failed (status {rc})")
        if out is not None and not all_logits:
            return out[0]
        return out

    def forward_layer(self, int layer, x, int pos):
        """Runs decoder layer ``layer`` on a copy of x [n, dim] at positions pos..; for tests."""
        cdef float[:, ::1] xv = np.array(x, dtype=np.float32, order="C", copy=True)
        if xv.shape[1] != self.model.m.dim:
            raise ValueError("x must be [n, dim]")
        cdef int n = xv.shape[0]
        cdef int rc
        with nogil:
            rc = tq_forward_layer(self.s, layer, &xv[0, 0], n, pos)
        if rc != TQ_OK:
            raise EngineError(f"forward_layer failed (status {rc}): check layer, n <= max_batch and pos")
        return np.asarray(xv)
