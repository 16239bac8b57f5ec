"""Ternary packing: the engine's TQ layout, and bitnet.cpp's I2_S and llama.cpp's TQ1_0 / TQ2_0.

TQ layout (engine/kernels/tq.h; identical to bitnet.cpp's x86 I2_S data): a row is cut into blocks of
128 values stored in 32 bytes; byte j of a block holds values j, j+32, j+64, j+96 in bits 7-6, 5-4,
3-2, 1-0 as code = w + 1. Rows are padded with w = 0 to a multiple of 128.

I2_S (ggml type 36, bitnet.cpp): TQ-layout data for the whole tensor (rows must be a multiple of 128
long), then a 32-byte tail whose first 4 bytes are the f32 per-tensor scale; the rest of the tail is
unspecified and ignored. So an I2_S tensor is used in place, straight from the mmap.

TQ2_0 (type 35, llama.cpp ggml-common.h block_tq2_0 { uint8_t qs[64]; ggml_half d; }): blocks of
256 values; qs byte 32*c + m (c = 0, 1 halves of 128) holds values 128c + m + 32l in bits 2l+1..2l
(l = 0..3) as code = w + 1, i.e. the TQ grouping with the order of the four 2-bit fields reversed.

TQ1_0 (type 34, block_tq1_0 { uint8_t qs[48]; uint8_t qh[4]; ggml_half d; }): base-3 packing of 256
values. qs[m] (m < 32) holds values m + 32k (k = 0..4), qs[32 + m] (m < 16) holds 160 + m + 16k,
qh[m] (m < 4) holds 240 + m + 4k (k = 0..3). A byte stores the trits t_0..t_4 (t_4 = 0 for qh) as
q = sum t_k 3^(4-k), scaled to a fixed-point fraction: byte = ceil(q * 256 / 243). Trit k is read back
as ((byte * 3^k) mod 256) * 3 >> 8. (Derived from gguf/quants.py, which mirrors ggml-quants.c;
tests check both encoders against gguf.quants.) Both are decoded into the TQ layout in C
(engine/kernels/repack.c); the tests keep the numpy decoder it replaced as its reference.

TQ1_0 / TQ2_0 carry one f16 scale d per 256-block. The kernels take one scale per row, so a tensor
is accepted when, within each row, every block that holds a nonzero weight has the same d (all-zero
blocks may carry any d, quantizers write 0 there).
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _core
from .errors import ModelFormatError
from .weights import (
    LINEAR_NAMES,
    TQ_B3_BYTES,
    TQ_B3_QK,
    TQ_QK,
    TQ_QK_BYTES,
    ModelWeights,
    TernaryTensor,
    load_workers,
    packed_row_bytes,
)

I2S_TAIL = 32  # bytes after the data of an I2_S tensor; the first 4 are the f32 scale
QK_K = 256  # values per TQ1_0 / TQ2_0 block
TQ2_0_BLOCK_BYTES = 66  # qs[64] + f16 d
TQ1_0_BLOCK_BYTES = 54  # qs[48] + qh[4] + f16 d
REPACK_SLICE = 16384  # TQ1_0 / TQ2_0 blocks per C call of a repack (1 MiB of TQ codes)

# Reverse the order of the four 2-bit fields of a byte: TQ2_0 <-> TQ. It is its own inverse.
_REV_FIELDS = np.array(
    [((b & 3) << 6) | (((b >> 2) & 3) << 4) | (((b >> 4) & 3) << 2) | (b >> 6) for b in range(256)],
    dtype=np.uint8,
)
# Any 2-bit field of the byte equal to 3 (an invalid code).
_HAS_CODE3 = np.array([bool(b & (b >> 1) & 0x55) for b in range(256)], dtype=np.bool_)
_POW3_5 = np.array([81, 27, 9, 3, 1], dtype=np.uint16)
_POW3_4 = np.array([81, 27, 9, 3], dtype=np.uint16)


# -- the TQ layout -----------------------------------------------------------------------------------


def _check_ternary(w: np.ndarray) -> None:
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.integer):
        raise ValueError(f"expected integer weights, got {w.dtype}")
    if w.size and (w.min() < -1 or w.max() > 1):
        raise ValueError("weights must be in {-1, 0, 1}")


def _codes_to_tq(codes: np.ndarray) -> np.ndarray:
    """codes uint8 [rows, nb * 128] in 0..2 -> packed uint8 [rows, nb * 32]."""
    rows, n = codes.shape
    c = codes.reshape(rows, n // TQ_QK, 4, 32)
    out = c[:, :, 0] << 6
    out |= c[:, :, 1] << 4
    out |= c[:, :, 2] << 2
    out |= c[:, :, 3]
    return out.reshape(rows, n // 4)


def pack_tq(w: np.ndarray) -> np.ndarray:
    """int8 [rows, cols] in {-1, 0, 1} -> uint8 [rows, nb * 32], nb = ceil(cols / 128), padded with 0."""
    w = np.asarray(w)
    _check_ternary(w)
    rows, cols = w.shape
    nb = -(-cols // TQ_QK)
    codes = np.ones((rows, nb * TQ_QK), dtype=np.uint8)  # code 1 = weight 0 pads the tail
    np.add(w, 1, out=codes[:, :cols], casting="unsafe")
    return _codes_to_tq(codes)


def unpack_tq(packed: np.ndarray, cols: int) -> np.ndarray:
    """uint8 [rows, nb * 32] -> int8 [rows, cols]. Code 3 raises ValueError."""
    packed = np.asarray(packed, dtype=np.uint8)
    rows, nbytes = packed.shape
    if nbytes % TQ_QK_BYTES or nbytes * 4 < cols:
        raise ValueError(f"packed rows of {nbytes} bytes cannot hold {cols} values")
    if _HAS_CODE3[packed].any():
        raise ValueError("packed data contains code 3")
    b = packed.reshape(rows, nbytes // 32, 1, 32)
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 1, 4, 1)
    codes = (b >> shifts) & 3  # [rows, nb, 4, 32]: value 32 * field + j
    w = codes.reshape(rows, nbytes * 4).astype(np.int8) - 1
    return np.ascontiguousarray(w[:, :cols])


def unpack_b3(packed: np.ndarray, cols: int) -> np.ndarray:
    """B3 rows uint8 [rows, nb3 * 64] (tq.h) -> int8 [rows, cols]. A byte that names no pattern
    (low 7 bits above 121) raises ValueError."""
    packed = np.asarray(packed, dtype=np.uint8)
    rows, nbytes = packed.shape
    if nbytes % TQ_B3_BYTES or nbytes // TQ_B3_BYTES * TQ_B3_QK < cols:
        raise ValueError(f"B3 rows of {nbytes} bytes cannot hold {cols} values")
    if ((packed & 0x7F) > 121).any():
        raise ValueError("B3 data holds a byte above 121 in its low 7 bits")
    v = packed.astype(np.int16)
    v = np.where(v & 0x80, 242 - (v & 0x7F), v).reshape(rows, nbytes // TQ_B3_BYTES, 1, TQ_B3_BYTES)
    codes = (v // (3 ** np.arange(5, dtype=np.int16)).reshape(1, 1, 5, 1)) % 3  # [rows, nb3, 5, 64]
    w = codes.reshape(rows, -1).astype(np.int8) - 1
    return np.ascontiguousarray(w[:, :cols])


def unpack_ternary(t: TernaryTensor) -> np.ndarray:
    """The weights of a TernaryTensor in either layout, int8 [rows, cols]."""
    return unpack_b3(t.packed, t.cols) if t.layout == "b3" else unpack_tq(t.packed, t.cols)


def _scale_rows(scale: float | np.ndarray, rows: int) -> np.ndarray:
    s = np.asarray(scale, dtype=np.float32)
    if s.ndim == 0 or s.size == 1:
        return np.full(rows, s.reshape(()), dtype=np.float32)
    if s.shape != (rows,):
        raise ValueError(f"scale has shape {s.shape}, expected () or ({rows},)")
    return s


# -- I2_S ------------------------------------------------------------------------------------------


def i2s_nbytes(rows: int, cols: int) -> int:
    return rows * cols // 4 + I2S_TAIL


def i2s_bytes(w: np.ndarray, scale: float) -> np.ndarray:
    """I2_S encoding of int8 w [rows, cols] (cols % 128 == 0) with a per-tensor scale:
    uint8 [rows * cols / 4 + 32] (data, then f32 scale and 28 zero bytes)."""
    w = np.asarray(w)
    _check_ternary(w)
    rows, cols = w.shape
    if cols % TQ_QK:
        raise ValueError(f"I2_S rows must be a multiple of {TQ_QK} long, got {cols}")
    out = np.zeros(i2s_nbytes(rows, cols), dtype=np.uint8)
    out[: rows * cols // 4] = pack_tq(w).reshape(-1)
    out[rows * cols // 4 : rows * cols // 4 + 4] = np.array([scale], dtype="<f4").view(np.uint8)
    return out


def check_tq_codes(packed: np.ndarray, name: str, path: str) -> None:
    """Reject code 3 and an all-zero tensor (every code 1), naming the tensor.

    One C pass over the codes without the GIL (_core.scan_ternary_codes)."""
    has3, all_zero = _core.scan_ternary_codes(np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1))
    if has3:
        raise ModelFormatError(path, f"tensor {name} contains the invalid 2-bit code 3; the file is corrupt")
    if all_zero:
        raise ModelFormatError(
            path,
            f"tensor {name} is all zero (every weight is 0); the file is damaged. "
            "Download the model again or pick another file.",
        )


def _check_scale(s: float, name: str, path: str) -> None:
    if not np.isfinite(s):
        raise ModelFormatError(path, f"tensor {name} has scale {s}, which is not a finite number")


def i2s_to_ternary_tensor(raw: np.ndarray, rows: int, cols: int, name: str, path: str) -> TernaryTensor:
    """An I2_S tensor's bytes (uint8, e.g. GGUFFile.tensor_data) as a TernaryTensor viewing them."""
    if cols % TQ_QK:
        raise ModelFormatError(
            path, f"I2_S tensor {name} has rows of {cols} values, not a multiple of {TQ_QK}"
        )
    n = rows * cols // 4
    raw = raw.reshape(-1)
    if raw.dtype != np.uint8 or raw.size < n + 4:
        raise ModelFormatError(
            path, f"I2_S tensor {name} has {raw.size} bytes, expected {n + I2S_TAIL} for {rows}x{cols}"
        )
    packed = raw[:n].reshape(rows, cols // 4)
    check_tq_codes(packed, name, path)
    scale = float(np.frombuffer(raw[n : n + 4].tobytes(), dtype="<f4")[0])
    _check_scale(scale, name, path)
    return TernaryTensor(
        packed=packed, rows=rows, cols=cols, scale=np.full(rows, scale, dtype=np.float32), source_type="I2_S"
    )


# -- TQ1_0 / TQ2_0 ----------------------------------------------------------------------------------


def _row_scales(d16: np.ndarray, nonzero: np.ndarray, name: str, path: str, kind: str) -> np.ndarray:
    """d16 float16 [rows, nblk], nonzero bool [rows, nblk] -> float32 [rows] (0 for all-zero rows)."""
    d = d16.astype(np.float32)
    rows = d.shape[0]
    first = np.argmax(nonzero, axis=1)  # first block with a nonzero weight (0 if none)
    ref = d[np.arange(rows), first]
    any_nz = nonzero.any(axis=1)
    with np.errstate(invalid="ignore"):
        bad_scale = nonzero & ~np.isfinite(d)
        mismatch = nonzero & (d != ref[:, None])
    if bad_scale.any():
        r, b = np.argwhere(bad_scale)[0]
        raise ModelFormatError(path, f"{kind} tensor {name} has scale {d[r, b]} in row {r}, block {b}")
    if mismatch.any():
        r, b = np.argwhere(mismatch)[0]
        raise ModelFormatError(
            path,
            f"{kind} tensor {name} has varying block scales (row {r}: {ref[r]} and {d[r, b]}), which "
            "ternary kernels cannot represent exactly",
        )
    return np.where(any_nz, ref, np.float32(0)).astype(np.float32)


def _blocks(
    raw: np.ndarray, rows: int, cols: int, block_bytes: int, name: str, path: str, kind: str
) -> np.ndarray:
    if cols % QK_K:
        raise ModelFormatError(
            path, f"{kind} tensor {name} has rows of {cols} values, not a multiple of {QK_K}"
        )
    nblk = cols // QK_K
    raw = raw.reshape(-1)
    if raw.dtype != np.uint8 or raw.size != rows * nblk * block_bytes:
        raise ModelFormatError(
            path, f"{kind} tensor {name} has {raw.size} bytes, expected {rows * nblk * block_bytes}"
        )
    return raw.reshape(rows, nblk, block_bytes)


def _repack(kind: str, blk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TQ1_0 / TQ2_0 blocks uint8 [rows, nblk, block bytes] (C-contiguous) -> (TQ codes uint8 [rows,
    nblk * 64], nonzero bool [rows, nblk]: the block holds a nonzero weight).

    In C (engine/kernels/repack.c, without the GIL) on slices of REPACK_SLICE blocks, spread over
    load_workers() threads. It was numpy with per-trit temporaries on one core: a TQ1_0 2B4T file
    spent 13.7 s of its 14-21 s load here."""
    rows, nblk, _ = blk.shape
    n = rows * nblk
    flat = blk.reshape(n, blk.shape[2])
    packed = np.empty((n, QK_K // 4), dtype=np.uint8)  # [n, 64]: two TQ blocks per block
    nonzero = np.empty(n, dtype=np.uint8)  # [n]

    def run(b0: int) -> None:
        b1 = b0 + REPACK_SLICE
        _core.repack_ternary_blocks(kind, flat[b0:b1], packed[b0:b1], nonzero[b0:b1])

    starts = range(0, n, REPACK_SLICE)
    if len(starts) <= 1:
        for b0 in starts:
            run(b0)
    else:
        with ThreadPoolExecutor(load_workers(len(starts))) as ex:
            list(ex.map(run, starts))  # re-raises a slice's error here
    return packed.reshape(rows, nblk * (QK_K // 4)), nonzero.view(np.bool_).reshape(rows, nblk)


def tq2_0_to_ternary_tensor(raw: np.ndarray, rows: int, cols: int, name: str, path: str) -> TernaryTensor:
    """Repack a TQ2_0 tensor (uint8 bytes, rows x cols values) into a TernaryTensor in memory."""
    blk = _blocks(raw, rows, cols, TQ2_0_BLOCK_BYTES, name, path, "TQ2_0")
    d16 = np.ascontiguousarray(blk[:, :, 64:66]).view("<f2")[:, :, 0]  # [rows, nblk]
    packed, nonzero = _repack("TQ2_0", blk)
    check_tq_codes(packed, name, path)
    scale = _row_scales(d16, nonzero, name, path, "TQ2_0")
    return TernaryTensor(packed=packed, rows=rows, cols=cols, scale=scale, source_type="TQ2_0")


def tq1_0_to_ternary_tensor(raw: np.ndarray, rows: int, cols: int, name: str, path: str) -> TernaryTensor:
    """Repack a TQ1_0 tensor (uint8 bytes, rows x cols values) into a TernaryTensor in memory."""
    blk = _blocks(raw, rows, cols, TQ1_0_BLOCK_BYTES, name, path, "TQ1_0")
    d16 = np.ascontiguousarray(blk[:, :, 52:54]).view("<f2")[:, :, 0]  # [rows, nblk]
    packed, nonzero = _repack("TQ1_0", blk)
    check_tq_codes(packed, name, path)  # base-3 bytes cannot hold code 3; this finds all-zero tensors
    scale = _row_scales(d16, nonzero, name, path, "TQ1_0")
    return TernaryTensor(packed=packed, rows=rows, cols=cols, scale=scale, source_type="TQ1_0")


def _block_d(w: np.ndarray, scale: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-block f16 d bytes [rows, nblk, 2] (0 for all-zero blocks, as llama.cpp's quantizer writes)
    and the block view of w [rows, nblk, 256]."""
    rows, cols = w.shape
    if cols % QK_K:
        raise ValueError(f"TQ1_0/TQ2_0 rows must be a multiple of {QK_K} long, got {cols}")
    s = _scale_rows(scale, rows).astype(np.float16)
    wb = w.reshape(rows, cols // QK_K, QK_K)
    nz = (wb != 0).any(axis=2)
    d = np.where(nz, s[:, None], np.float16(0)).astype("<f2")
    return d.view(np.uint8).reshape(rows, cols // QK_K, 2), wb


def tq2_0_bytes(w: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """TQ2_0 encoding of int8 w [rows, cols] (cols % 256 == 0); scale per tensor or per row."""
    w = np.asarray(w)
    _check_ternary(w)
    rows, cols = w.shape
    d, _ = _block_d(w, scale)
    packed = pack_tq(w).reshape(rows, cols // QK_K, 64)
    out = np.empty((rows, cols // QK_K, TQ2_0_BLOCK_BYTES), dtype=np.uint8)
    out[:, :, :64] = _REV_FIELDS[packed]
    out[:, :, 64:] = d
    return out.reshape(-1)


def tq1_0_bytes(w: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """TQ1_0 encoding of int8 w [rows, cols] (cols % 256 == 0); scale per tensor or per row."""
    w = np.asarray(w)
    _check_ternary(w)
    rows, cols = w.shape
    d, wb = _block_d(w, scale)
    n = rows * (cols // QK_K)
    t = (wb.reshape(n, QK_K) + 1).astype(np.uint16)  # trits 0..2
    q0 = (t[:, :160].reshape(n, 5, 32) * _POW3_5[None, :, None]).sum(axis=1)  # [n, 32]
    q1 = (t[:, 160:240].reshape(n, 5, 16) * _POW3_5[None, :, None]).sum(axis=1)  # [n, 16]
    qh = (t[:, 240:].reshape(n, 4, 4) * _POW3_4[None, :, None]).sum(axis=1)  # [n, 4]
    q = np.concatenate([q0, q1, qh], axis=1)  # [n, 52], each < 243
    out = np.empty((n, TQ1_0_BLOCK_BYTES), dtype=np.uint8)
    out[:, :52] = (q * 256 + 242) // 243  # ceil(q * 256 / 243)
    out[:, 52:] = d.reshape(n, 2)
    return out.reshape(-1)


def tq1_0_nbytes(rows: int, cols: int) -> int:
    return rows * cols // QK_K * TQ1_0_BLOCK_BYTES


def tq2_0_nbytes(rows: int, cols: int) -> int:
    return rows * cols // QK_K * TQ2_0_BLOCK_BYTES


def ternary_tensor_from_gguf(
    raw: np.ndarray, type_name: str, rows: int, cols: int, name: str, path: str
) -> TernaryTensor:
    """Dispatch on the ggml type name: I2_S (zero-copy), TQ2_0 or TQ1_0 (repacked)."""
    if type_name == "I2_S":
        return i2s_to_ternary_tensor(raw, rows, cols, name, path)
    if type_name == "TQ2_0":
        return tq2_0_to_ternary_tensor(raw, rows, cols, name, path)
    if type_name == "TQ1_0":
        return tq1_0_to_ternary_tensor(raw, rows, cols, name, path)
    raise ModelFormatError(
        path, f"tensor {name} has type {type_name}; a ternary weight must be I2_S, TQ1_0 or TQ2_0"
    )


def b3_is_shorter(cols: int) -> bool:
    """Whether B3 rows of `cols` values are shorter than TQ rows (short rows pad to 320 values)."""
    return packed_row_bytes(cols, "b3") < packed_row_bytes(cols, "tq")


def to_b3(weights: ModelWeights, *, release: bool = False, every: bool = False) -> ModelWeights:
    """The same weights with every ternary matrix whose rows B3 makes shorter (every: each one)
    repacked into the B3 layout (tq.h: five base-3 codes a byte, 1.6 bits per weight; the kernels'
    sums are the same),
    in one new 2 MiB-aligned buffer (numpy advises huge pages for it). The given weights are not
    changed, unless release: then each source matrix's memory pages are dropped (madvise) once it
    is repacked, so that the resident set never holds both forms; only for weights nothing else
    will read (load_model's own). In C without the GIL, the matrices spread over load_workers()."""
    seen: set[int] = set()
    todo: list[TernaryTensor] = []
    for lw in weights.layers:
        for t in (getattr(lw, n) for n in LINEAR_NAMES):
            wanted = isinstance(t, TernaryTensor) and t.layout == "tq" and (every or b3_is_shorter(t.cols))
            if wanted and id(t) not in seen:
                seen.add(id(t))
                todo.append(t)
    if not todo:
        return weights
    # a matrix starts on a 64-byte boundary; the whole buffer on a 2 MiB one
    sizes = [(t.rows * packed_row_bytes(t.cols, "b3") + 63) // 64 * 64 for t in todo]
    huge = 2 << 20
    raw = np.empty(sum(sizes) + huge, dtype=np.uint8)
    base = (-raw.ctypes.data) % huge
    offsets = np.cumsum([0, *sizes[:-1]]) + base
    # two matrices sharing bytes (one array under two names) must not lose them to the other's release
    shared = len({t.packed.ctypes.data for t in todo}) != len(todo)
    new: dict[int, TernaryTensor] = {}

    def run(i: int) -> None:
        t = todo[i]
        rb = packed_row_bytes(t.cols, "b3")
        out = raw[offsets[i] : offsets[i] + t.rows * rb].reshape(t.rows, rb)
        _core.repack_b3(t.packed, t.cols, out)
        new[id(t)] = dataclasses.replace(t, packed=out, layout="b3")
        if release and not shared:
            _core.release_pages(t.packed)

    with ThreadPoolExecutor(load_workers(len(todo))) as ex:
        list(ex.map(run, range(len(todo))))  # re-raises a matrix's error here

    def swap(t: object) -> object:
        return new.get(id(t), t)

    layers = [
        dataclasses.replace(lw, **{n: swap(getattr(lw, n)) for n in LINEAR_NAMES}) for lw in weights.layers
    ]
    return dataclasses.replace(weights, layers=layers, keepalive=[*weights.keepalive, raw])


__all__ = [
    "I2S_TAIL",
    "b3_is_shorter",
    "check_tq_codes",
    "i2s_bytes",
    "i2s_nbytes",
    "i2s_to_ternary_tensor",
    "pack_tq",
    "ternary_tensor_from_gguf",
    "to_b3",
    "tq1_0_bytes",
    "tq1_0_nbytes",
    "tq1_0_to_ternary_tensor",
    "tq2_0_bytes",
    "tq2_0_nbytes",
    "tq2_0_to_ternary_tensor",
    "unpack_b3",
    "unpack_ternary",
    "unpack_tq",
]
