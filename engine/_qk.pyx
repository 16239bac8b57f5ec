# cython: language_level=3, boundscheck=False, wraparound=False
"""Test / debug access to the kernels of the llama.cpp weight types (engine/kernels/qk.h).

Not used by the forward pass. Shapes, dtypes and strides are checked and outputs allocated while
holding the GIL; only the C call runs under ``with nogil``. An ISA the CPU or the build lacks
raises UnsupportedCPUError; a type without kernels raises ValueError.
"""

from libc.stdint cimport uint8_t

import numpy as np

from .errors import UnsupportedCPUError


cdef extern from "qk.h" nogil:
    enum:
        TQ_ACTF_F32
        TQ_ACTF_Q8_0
        TQ_ACTF_Q8_K
        TQ_ACTF_Q8_1
        TQ_ACTF_COUNT
        TQ_GGML_NTYPES
    ctypedef void (*tq_qk_gemv_fn)(const void *w, size_t row_bytes, int rows, int n, const void *act,
                                   float *out) noexcept
    ctypedef void (*tq_qk_dequant_fn)(const void *row, float *out, int n) noexcept
    ctypedef void (*tq_qk_gemm_fn)(const void *w, size_t row_bytes, int rows, int n, const void *act,
                                   size_t act_stride, int ntok, float *out, size_t ldo) noexcept
    ctypedef struct tq_qk_ops:
        int type
        const char *name
        int block
        int block_bytes
        int act
        tq_qk_gemv_fn gemv
        tq_qk_dequant_fn dequant
        tq_qk_gemm_fn gemm
    const tq_qk_ops *tq_qk_get(const char *isa, int type)
    const tq_qk_ops *tq_qk_get_f32act(const char *isa, int type)
    size_t tq_qk_act_bytes(int act, int n)
    void tq_qk_quant_act(int act, const float *x, void *out, int n)


ACTF_F32 = TQ_ACTF_F32
ACTF_Q8_0 = TQ_ACTF_Q8_0
ACTF_Q8_K = TQ_ACTF_Q8_K
ACTF_Q8_1 = TQ_ACTF_Q8_1
ACT_BLOCK = {TQ_ACTF_F32: 1, TQ_ACTF_Q8_0: 32, TQ_ACTF_Q8_1: 32, TQ_ACTF_Q8_K: 256}


cdef const tq_qk_ops *_ops(str isa, int qtype) except NULL:
    if qtype < 0 or qtype >= TQ_GGML_NTYPES or tq_qk_get(b"scalar", qtype) == NULL:
        raise ValueError(f"ggml type {qtype} has no kernels")
    cdef bytes name = isa.encode("ascii")
    cdef const tq_qk_ops *ops = tq_qk_get(name, qtype)
    if ops == NULL:
        raise UnsupportedCPUError(
            f"instruction set {isa!r} is not available on this CPU or in this build. Pick another with TRIT_ISA."
        )
    return ops


def types() -> list:
    """One dict per supported ggml type: type, name, block, block_bytes, act."""
    cdef const tq_qk_ops *o
    res = []
    for t in range(TQ_GGML_NTYPES):
        o = tq_qk_get(b"scalar", t)
        if o != NULL:
            res.append(dict(type=o.type, name=o.name.decode("ascii"), block=o.block,
                            block_bytes=o.block_bytes, act=o.act))
    return res


def act_bytes(int act, int n) -> int:
    if act < 0 or act >= TQ_ACTF_COUNT or n < 0 or n % ACT_BLOCK[act]:
        raise ValueError(f"activation format {act} cannot hold {n} values")
    return tq_qk_act_bytes(act, n)


def quant_act(int act, const float[::1] x):
    """uint8 [act_bytes(act, n)]: x quantized into format act (llama.cpp semantics)."""
    cdef int n = <int>x.shape[0]
    cdef Py_ssize_t nbytes = act_bytes(act, n)
    out = np.zeros(max(nbytes, 1), dtype=np.uint8)
    cdef uint8_t[::1] o = out
    if n > 0:
        with nogil:
            tq_qk_quant_act(act, &x[0], &o[0], n)
    return out[:nbytes]


def dequant(str isa, int qtype, const uint8_t[::1] row, int n):
    """float32 [n]: one row of type qtype."""
    cdef const tq_qk_ops *ops = _ops(isa, qtype)
    if n <= 0 or n % ops.block:
        raise ValueError(f"{ops.name.decode()} rows hold a positive multiple of {ops.block} values, not {n}")
    cdef Py_ssize_t need = <Py_ssize_t>(n // ops.block) * ops.block_bytes
    if row.shape[0] < need:
        raise ValueError(f"row has {row.shape[0]} bytes, {n} values need {need}")
    out = np.empty(n, dtype=np.float32)
    cdef float[::1] o = out
    with nogil:
        ops.dequant(&row[0], &o[0], n)
    return out


cdef size_t _row_bytes(const tq_qk_ops *ops, const uint8_t[:, :] w, int n) except 0:
    """The row step of weights w for rows of n values of ops' type (checked: n a positive multiple
    of the block, rows at least a row long with unit column stride, not overlapping)."""
    if n <= 0 or n % ops.block:
        raise ValueError(f"{ops.name.decode()} rows hold a positive multiple of {ops.block} values, not {n}")
    cdef Py_ssize_t need = <Py_ssize_t>(n // ops.block) * ops.block_bytes
    cdef int rows = <int>w.shape[0]
    if w.shape[1] < need or (rows > 0 and w.strides[1] != 1):
        raise ValueError(f"weights must be [rows, >= {need}] bytes with unit column stride")
    if rows > 1 and w.strides[0] < need:
        raise ValueError("weight rows overlap")
    return <size_t>w.strides[0] if rows > 1 else <size_t>need


def gemv_act(str isa, int qtype, const uint8_t[:, :] w, int n, const uint8_t[::1] act):
    """float32 [rows]: w (rows x row_bytes, any row stride >= the row size, unit column stride)
    times an activation already in the paired format (bytes from quant_act)."""
    cdef const tq_qk_ops *ops = _ops(isa, qtype)
    cdef int rows = <int>w.shape[0]
    cdef size_t row_bytes = _row_bytes(ops, w, n)
    if act.shape[0] != <Py_ssize_t>tq_qk_act_bytes(ops.act, n):
        raise ValueError(f"activation has {act.shape[0]} bytes, expected {tq_qk_act_bytes(ops.act, n)}")
    out = np.empty(rows, dtype=np.float32)
    cdef float[::1] o = out
    if rows > 0:
        with nogil:
            ops.gemv(&w[0, 0], row_bytes, rows, n, &act[0], &o[0])
    return out


def gemv(str isa, int qtype, w, int n, const float[::1] x):
    """float32 [rows]: w times x, x first quantized into the format qtype pairs with."""
    cdef const tq_qk_ops *ops = _ops(isa, qtype)
    if x.shape[0] != n:
        raise ValueError(f"x has {x.shape[0]} values, the rows hold {n}")
    return gemv_act(isa, qtype, w, n, quant_act(ops.act, x))


def paired_act(int qtype) -> int:
    """The activation format (ACTF_*) type qtype's gemv takes."""
    return _ops("scalar", qtype).act


def simd_gemv(str isa, int qtype) -> bool:
    """True when the ISA has its own gemv for qtype (False: it falls back to the scalar one)."""
    return _ops(isa, qtype).gemv != tq_qk_get(b"scalar", qtype).gemv


cdef const tq_qk_ops *_ops_f32act(str isa, int qtype) except NULL:
    _ops(isa, qtype)  # same errors as the usual ops: unknown type, ISA not available
    cdef bytes name = isa.encode("ascii")
    cdef const tq_qk_ops *ops = tq_qk_get_f32act(name, qtype)
    if ops == NULL:
        raise ValueError(f"ggml type {qtype} has no f32-activation kernels")
    return ops


def gemv_f32(str isa, int qtype, const uint8_t[:, :] w, int n, const float[::1] x):
    """float32 [rows]: w (rows x row_bytes, any row stride >= the row size, unit column stride)
    times the f32 activation x itself, each weight block dequantized inside the dot product
    (tq_qk_get_f32act: no Q8 rounding of x)."""
    cdef const tq_qk_ops *ops = _ops_f32act(isa, qtype)
    cdef int rows = <int>w.shape[0]
    if x.shape[0] != n:
        raise ValueError(f"x has {x.shape[0]} values, the rows hold {n}")
    cdef size_t row_bytes = _row_bytes(ops, w, n)
    out = np.empty(rows, dtype=np.float32)
    cdef float[::1] o = out
    if rows > 0:
        with nogil:
            ops.gemv(&w[0, 0], row_bytes, rows, n, &x[0], &o[0])
    return out


def f32act_info(str isa, int qtype) -> dict:
    """The f32-activation ops of qtype on isa: name, block, block_bytes, act, simd (True when
    the ISA has its own gemv, False when it falls back to the scalar one) and gemm (True when it
    has a prompt GEMM; else a prompt runs the gemv once per token)."""
    cdef const tq_qk_ops *ops = _ops_f32act(isa, qtype)
    cdef const tq_qk_ops *ref = tq_qk_get_f32act(b"scalar", qtype)
    return dict(type=ops.type, name=ops.name.decode("ascii"), block=ops.block,
                block_bytes=ops.block_bytes, act=ops.act, simd=ops.gemv != ref.gemv,
                gemm=ops.gemm != NULL)


def gemm_f32(str isa, int qtype, const uint8_t[:, :] w, int n, const float[:, :] x):
    """float32 [ntok, rows]: every row of x (ntok x n f32 activations, any row stride, unit column
    stride) against w as gemv_f32 would take it, through the ISA's prompt GEMM (ValueError where
    the ISA has none)."""
    cdef const tq_qk_ops *ops = _ops_f32act(isa, qtype)
    if ops.gemm == NULL:
        raise ValueError(f"{ops.name.decode()} has no prompt GEMM on {isa}")
    cdef int rows = <int>w.shape[0], ntok = <int>x.shape[0]
    cdef size_t row_bytes = _row_bytes(ops, w, n)
    if x.shape[1] != n:
        raise ValueError(f"x rows have {x.shape[1]} values, the weight rows hold {n}")
    if ntok > 1 and (x.strides[1] != 4 or x.strides[0] < 4 * n or x.strides[0] % 4):
        raise ValueError("x must be [ntok, n] floats with unit column stride and whole-float row steps")
    out = np.empty((ntok, rows), dtype=np.float32)
    cdef float[:, ::1] o = out
    if rows > 0 and ntok > 0:
        with nogil:
            ops.gemm(&w[0, 0], row_bytes, rows, n, &x[0, 0], <size_t>x.strides[0] if ntok > 1 else <size_t>(4 * n),
                     ntok, &o[0, 0], <size_t>rows)
    return out
