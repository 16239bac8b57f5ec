"""Kernels of the llama.cpp weight types (engine/kernels/qk.h) against gguf.quants and the scalar path.

- dequant equals gguf.quants.dequantize bit for bit, on every ISA.
- quant_act equals llama.cpp's reference quantizers bit for bit (gguf's Q8_0 quantizer is bit-exact
  with ggml's; Q8_K is re-stated below in numpy).
- gemv: with integer-valued scales and small activations every partial sum is an integer below
  2^24, so every ISA must return the exact integer result (this is where a wrong integer block sum
  shows). With random data, gemv is compared with float64 dequant(W) @ dequant(act):
    block types: |err| <= (nb + 6) * eps32 * mag   (worst case of nb float additions of the block
      terms, plus a few roundings per term: the scale products, int -> float of the block sums,
      the f32 rounding of dequantized elements)
    float types: |err| <= FSUM_K * sqrt(n) * eps32 * mag   (random-walk bound, as test_kernels.py)
  with mag = sum_i |scale part_i| * |a_i| + |minimum part_i| * |a_i| per row; every ISA is also held
  to twice that distance from the scalar path.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT
from gguf import quants as GQ
from trit.engine import _qk as Q
from trit.engine.errors import UnsupportedCPUError

KDIR = Path(__file__).resolve().parents[2] / "engine" / "kernels"
SEED = 20261126
EPS32 = float(np.finfo(np.float32).eps)
FSUM_K = 8.0

TYPES = {t["name"]: t for t in Q.types()}
NAMES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
KQUANTS = {"Q4_K", "Q5_K", "Q6_K"}
GGUF_QUANTIZES = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"}
ROWS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 64]
ISAS = ["scalar", "avx2", "avxvnni", "avx512", "avx512vnni", "neon", "neon-dotprod"]


def n_values(name: str) -> list[int]:
    if name in KQUANTS:
        return [256, 512, 2816]
    if name.startswith("Q"):
        return [32, 96, 576, 1536]
    return [1, 7, 33, 576, 1536]


def qtype(name: str) -> QT:
    return QT[name]


@pytest.fixture(params=ISAS)
def isa(request):
    name = request.param
    try:
        Q.gemv(name, TYPES["Q8_0"]["type"], np.zeros((1, 34), np.uint8), 32, np.zeros(32, np.float32))
    except UnsupportedCPUError:
        pytest.skip(f"{name}: not available on this CPU / build")
    return name


# --------------------------------------------------------------------------------------------------
# data


def f16_bytes(vals: np.ndarray) -> np.ndarray:
    return np.asarray(vals, dtype=np.float16).view(np.uint8).reshape(vals.shape + (2,))


def random_blocks(rng, name: str, rows: int, n: int) -> np.ndarray:
    """uint8 [rows, row_bytes] of random valid blocks: random codes, scales and minima, and f16
    fields of sane magnitude (random bytes there could be inf / nan)."""
    t = TYPES[name]
    nb = n // t["block"]
    blk = rng.integers(0, 256, size=(rows, nb, t["block_bytes"]), dtype=np.uint8)
    d = rng.uniform(0.5, 2.0, size=(rows, nb)) * 2.0 ** rng.integers(-12, -4, size=(rows, nb))
    sign = np.where(rng.random((rows, nb)) < 0.2, -1.0, 1.0)
    if name in ("Q4_0", "Q5_0", "Q8_0"):
        blk[..., 0:2] = f16_bytes(d * sign)
    elif name in ("Q4_1", "Q5_1"):
        blk[..., 0:2] = f16_bytes(d)
        blk[..., 2:4] = f16_bytes(-d * rng.uniform(0, 16, size=(rows, nb)))
    elif name in ("Q4_K", "Q5_K"):
        blk[..., 0:2] = f16_bytes(d * 2.0**-4)
        blk[..., 2:4] = f16_bytes(d * 2.0**-4 * rng.uniform(0.1, 2, size=(rows, nb)))
    elif name == "Q6_K":
        blk[..., 208:210] = f16_bytes(d * sign * 2.0**-5)
    else:
        raise AssertionError(name)
    return blk.reshape(rows, nb * t["block_bytes"])


def weights(rng, name: str, rows: int, n: int, kind: str = "quantize") -> np.ndarray:
    """uint8 [rows, row_bytes]: gguf-quantized random normal data, or random valid blocks."""
    if kind == "blocks" or name not in GGUF_QUANTIZES:
        return random_blocks(rng, name, rows, n)
    data = (rng.standard_normal((rows, n)) * rng.uniform(0.01, 2.0, size=(rows, 1))).astype(np.float32)
    data[:, rng.integers(0, n, size=max(1, n // 50))] *= 8  # outliers
    q = GQ.quantize(data, qtype(name))
    return np.ascontiguousarray(q).view(np.uint8).reshape(rows, -1)


def gguf_dequant(name: str, w: np.ndarray) -> np.ndarray:
    return np.asarray(GQ.dequantize(np.ascontiguousarray(w), qtype(name)), dtype=np.float32)


def magnitude_parts(name: str, w: np.ndarray, n: int) -> np.ndarray:
    """float64 [rows, n]: |scale part| + |minimum part| of every weight (the size of the terms the
    kernels round), from the block fields."""
    wd = gguf_dequant(name, w).astype(np.float64)
    rows = w.shape[0]
    t = TYPES[name]
    if name in ("Q4_1", "Q5_1"):
        blk = w.reshape(rows, -1, t["block_bytes"])
        m = blk[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float64)
        mpart = -np.repeat(m, 32, axis=1)  # x = d * q + m: the scale part is x - m
    elif name in ("Q4_K", "Q5_K"):
        blk = w.reshape(-1, t["block_bytes"])
        dmin = blk[:, 2:4].copy().view(np.float16)[:, 0].astype(np.float64)
        _, mins = GQ.Q4_K.get_scale_min(blk[:, 4:16].copy())
        mpart = (dmin[:, None] * mins.astype(np.float64)).reshape(rows, -1)
        mpart = np.repeat(mpart, 32, axis=1)  # x = dl * q - ml: the scale part is x + ml
    else:
        return np.abs(wd)
    return np.abs(wd + mpart) + np.abs(mpart)


def act_dequant(act_fmt: int, act: np.ndarray, n: int) -> np.ndarray:
    """float64 [n]: the activation values the kernel multiplies (d * q per block)."""
    if act_fmt == Q.ACTF_F32:
        return act.view(np.float32).astype(np.float64)
    if act_fmt in (Q.ACTF_Q8_0, Q.ACTF_Q8_1):
        bb = 34 if act_fmt == Q.ACTF_Q8_0 else 36
        blk = act.reshape(-1, bb)
        d = blk[:, 0:2].copy().view(np.float16)[:, 0].astype(np.float64)
        q = blk[:, bb - 32 :].copy().view(np.int8).astype(np.float64)
        return (d[:, None] * q).reshape(n)
    blk = act.reshape(-1, 292)
    d = blk[:, 0:4].copy().view(np.float32)[:, 0].astype(np.float64)
    q = blk[:, 4:260].copy().view(np.int8).astype(np.float64)
    return (d[:, None] * q).reshape(n)


def unaligned_rows(w: np.ndarray, offset: int = 2, pad: int = 0) -> np.ndarray:
    """A copy of w whose data starts `offset` bytes past a 64-byte boundary and whose rows are
    `pad` bytes longer than the data (so row_bytes != the packed row size)."""
    rows, rb = w.shape
    raw = np.zeros(rows * (rb + pad) + 64 + offset, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    view = raw[start : start + rows * (rb + pad)].reshape(rows, rb + pad)[:, :rb]
    view[...] = w
    assert view.ctypes.data % 64 == offset
    return view


# --------------------------------------------------------------------------------------------------
# reference quantizers


def ref_q8_k(x: np.ndarray) -> np.ndarray:
    """llama.cpp quantize_row_q8_K_ref in numpy (f32 arithmetic, nearest_int = half to even)."""
    out = []
    for blk in x.reshape(-1, 256):
        ax = np.abs(blk)
        amax = ax.max()
        if amax == 0:
            out.append(np.zeros(292, np.uint8))
            continue
        mx = blk[int(np.argmax(ax))]  # first of the largest magnitudes
        iscale = np.float32(-127.0) / np.float32(mx)
        q = np.minimum(np.rint(iscale * blk), 127).astype(np.int8)
        bsums = q.astype(np.int16).reshape(16, 16).sum(axis=1).astype(np.int16)
        d = np.float32(1.0) / iscale
        out.append(
            np.concatenate([np.array([d], np.float32).view(np.uint8), q.view(np.uint8), bsums.view(np.uint8)])
        )
    return np.concatenate(out)


def test_types_table():
    assert sorted(TYPES) == sorted(NAMES)
    for name, t in TYPES.items():
        assert t["type"] == int(qtype(name))
        block, size = gguf.GGML_QUANT_SIZES[qtype(name)]
        assert (t["block"], t["block_bytes"]) == (block, size), name
    assert Q.paired_act(int(QT.Q4_1)) == Q.ACTF_Q8_1 and Q.paired_act(int(QT.Q5_1)) == Q.ACTF_Q8_1
    assert Q.paired_act(int(QT.Q4_0)) == Q.ACTF_Q8_0 and Q.paired_act(int(QT.Q8_0)) == Q.ACTF_Q8_0
    assert Q.paired_act(int(QT.Q6_K)) == Q.ACTF_Q8_K and Q.paired_act(int(QT.F16)) == Q.ACTF_F32
    with pytest.raises(ValueError):
        Q.paired_act(int(QT.Q2_K))
    with pytest.raises(UnsupportedCPUError):
        Q.dequant("no-such-isa", int(QT.Q8_0), np.zeros(34, np.uint8), 32)


def test_simd_paths_present(isa):
    """Every type has its own gemv on an available SIMD ISA (no silent scalar fallback)."""
    if isa == "scalar":
        return
    for name in NAMES:
        assert Q.simd_gemv(isa, TYPES[name]["type"]), (isa, name)


@pytest.mark.parametrize("n", [32, 256, 576, 1536, 2816])
def test_quant_act(n):
    rng = np.random.default_rng(SEED + n)
    for x in (
        rng.standard_normal(n).astype(np.float32),
        (rng.standard_normal(n) * 1e-3).astype(np.float32),
        np.zeros(n, np.float32),
        np.round(rng.standard_normal(n) * 40).astype(np.float32),  # many exact .5 ties after scaling
    ):
        x[: n // 3] *= 0  # some all-zero blocks
        q8_0 = Q.quant_act(Q.ACTF_Q8_0, x)
        np.testing.assert_array_equal(q8_0, GQ.quantize(x.reshape(1, n), QT.Q8_0).reshape(-1))
        q8_1 = Q.quant_act(Q.ACTF_Q8_1, x).reshape(-1, 36)
        b0 = q8_0.reshape(-1, 34)
        np.testing.assert_array_equal(q8_1[:, 0:2], b0[:, 0:2])
        np.testing.assert_array_equal(q8_1[:, 4:], b0[:, 2:])
        sums = b0[:, 2:].view(np.int8).astype(np.int16).sum(axis=1).astype(np.int16)
        np.testing.assert_array_equal(q8_1[:, 2:4].copy().view(np.int16)[:, 0], sums)
        if n % 256 == 0:
            np.testing.assert_array_equal(Q.quant_act(Q.ACTF_Q8_K, x), ref_q8_k(x))
        np.testing.assert_array_equal(Q.quant_act(Q.ACTF_F32, x).view(np.float32), x)
    assert Q.act_bytes(Q.ACTF_Q8_K, n - n % 256) == (n // 256) * 292


def test_q8_k_ties_and_sign():
    """The scale comes from the first value of largest magnitude, with its sign: iscale = -127 / max
    maps max to -127 and a later -max to +127; d = 1 / iscale is negative then."""
    x = np.zeros(256, np.float32)
    x[3], x[10], x[11] = 2.0, -2.0, 1.0 / 127 * 2.0 * 63.5  # 63.5 exactly: ties to even -> 64
    got = Q.quant_act(Q.ACTF_Q8_K, x)
    np.testing.assert_array_equal(got, ref_q8_k(x))
    q = got[4:260].view(np.int8)
    assert q[3] == -127 and q[10] == 127
    assert got[0:4].view(np.float32)[0] < 0


# --------------------------------------------------------------------------------------------------
# dequant


@pytest.mark.parametrize("name", NAMES)
def test_dequant_matches_gguf(isa, name):
    rng = np.random.default_rng(SEED + int(qtype(name)))
    t = TYPES[name]
    for n in n_values(name):
        for kind in ("quantize", "blocks") if name[0] == "Q" else ("quantize",):
            w = weights(rng, name, 3, n, kind)
            ref = gguf_dequant(name, w)
            for r in range(3):
                got = Q.dequant(isa, t["type"], unaligned_rows(w[r : r + 1])[0], n)
                # bit for bit: signed zeros included
                np.testing.assert_array_equal(
                    got.view(np.uint32), ref[r].view(np.uint32), err_msg=f"{name} n={n}"
                )


# --------------------------------------------------------------------------------------------------
# gemv


def gemv_reference(name: str, w: np.ndarray, n: int, act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 dequant(W) @ dequant(act), tolerance) per row; see the module docstring."""
    t = TYPES[name]
    xa = act_dequant(t["act"], act, n)
    ref = gguf_dequant(name, w).astype(np.float64) @ xa
    mag = magnitude_parts(name, w, n) @ np.abs(xa)
    if t["block"] == 1:
        return ref, FSUM_K * math.sqrt(n) * EPS32 * mag
    return ref, (n // t["block"] + 6) * EPS32 * mag


def assert_gemv_close(
    got: np.ndarray, scalar: np.ndarray, ref: np.ndarray, tol: np.ndarray, what: str
) -> None:
    err = np.abs(got.astype(np.float64) - ref)
    assert (err <= tol).all(), f"{what}: max err/tol {np.max(err / np.maximum(tol, 1e-300))}"
    assert (np.abs(got.astype(np.float64) - scalar) <= 2 * tol).all(), f"{what}: vs scalar"


def check_gemv(isa: str, name: str, w: np.ndarray, n: int, x: np.ndarray, what: str) -> None:
    t = TYPES[name]
    act = Q.quant_act(t["act"], x)
    ref, tol = gemv_reference(name, w, n, act)
    got = Q.gemv_act(isa, t["type"], w, n, act)
    assert_gemv_close(got, Q.gemv_act("scalar", t["type"], w, n, act), ref, tol, f"{isa} {name} {what}")
    np.testing.assert_array_equal(Q.gemv(isa, t["type"], w, n, x), got)


@pytest.mark.parametrize("name", NAMES)
def test_gemv_random(isa, name):
    rng = np.random.default_rng(SEED + 100 + int(qtype(name)))
    for n in n_values(name):
        x = (rng.standard_normal(n) * rng.uniform(0.1, 3)).astype(np.float32)
        for kind in ("quantize", "blocks") if name[0] == "Q" and name not in KQUANTS else ("quantize",):
            wall = weights(rng, name, max(ROWS), n, kind)
            for rows in ROWS:
                check_gemv(isa, name, wall[:rows], n, x, f"{kind} rows={rows} n={n}")


@pytest.mark.parametrize("name", NAMES)
def test_gemv_unaligned_and_strided(isa, name):
    rng = np.random.default_rng(SEED + 200 + int(qtype(name)))
    n = n_values(name)[1]
    x = rng.standard_normal(n).astype(np.float32)
    w = weights(rng, name, 9, n)
    for offset, pad in ((2, 0), (6, 2), (34, 30)):
        wu = unaligned_rows(w, offset, pad)
        assert wu.strides[0] == w.shape[1] + pad
        check_gemv(isa, name, wu, n, x, f"offset={offset} pad={pad}")


def exact_case(rng, name: str, rows: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights with integer-valued scales and minima, activations integer-valued with one -127 per
    block (so d_a = 1 and q_a = x): every product and partial sum is an integer below 2^24."""
    t = TYPES[name]
    x = rng.integers(-3, 4, size=n).astype(np.float32)
    ab = 256 if t["act"] == Q.ACTF_Q8_K else 32 if t["act"] != Q.ACTF_F32 else None
    if ab:
        x[::ab] = -127
    if t["block"] == 1:
        wv = rng.integers(-8, 9, size=(rows, n)).astype(np.float32)
        return weights_from_float(name, wv), x
    w = random_blocks(rng, name, rows, n).reshape(rows, -1, t["block_bytes"])
    one = f16_bytes(np.ones(w.shape[:2]))
    if name in ("Q4_0", "Q5_0", "Q8_0"):
        w[..., 0:2] = one
    elif name in ("Q4_1", "Q5_1"):
        w[..., 0:2] = one
        w[..., 2:4] = f16_bytes(-rng.integers(0, 20, size=w.shape[:2]).astype(np.float64))
    elif name in ("Q4_K", "Q5_K"):
        w[..., 0:2] = one
        w[..., 2:4] = one
    else:  # Q6_K: small scales keep the sums below 2^24
        w[..., 208:210] = one
        w[..., 192:208] = rng.integers(-4, 5, size=w.shape[:2] + (16,)).astype(np.int8).view(np.uint8)
    return w.reshape(rows, -1), x


def weights_from_float(name: str, wv: np.ndarray) -> np.ndarray:
    q = GQ.quantize(wv, qtype(name))
    return np.ascontiguousarray(q).view(np.uint8).reshape(wv.shape[0], -1)


@pytest.mark.parametrize("name", NAMES)
def test_gemv_exact_integers(isa, name):
    rng = np.random.default_rng(SEED + 300 + int(qtype(name)))
    t = TYPES[name]
    for n in n_values(name):
        for rows in (1, 3, 4, 8, 9, 17):
            w, x = exact_case(rng, name, rows, n)
            act = Q.quant_act(t["act"], x)
            xa = act_dequant(t["act"], act, n)
            np.testing.assert_array_equal(xa, x.astype(np.float64))
            ref = gguf_dequant(name, w).astype(np.float64) @ xa
            assert np.all(np.abs(ref) < 2**24) and np.all(ref == np.round(ref))
            got = Q.gemv_act(isa, t["type"], w, n, act)
            np.testing.assert_array_equal(
                got, ref.astype(np.float32), err_msg=f"{isa} {name} n={n} rows={rows}"
            )


@pytest.mark.parametrize("name", NAMES)
def test_gemv_extremes(isa, name):
    """Largest codes against +-127 activations (the SIMD paths' 16-bit pair sums and sign tricks at
    their limits), all-zero weights and all-zero activations."""
    t = TYPES[name]
    n = n_values(name)[-1]
    rng = np.random.default_rng(SEED + 400)
    for fill in (0x00, 0xFF, 0x80, 0x7F):
        if t["block"] == 1:
            continue
        w = np.full((5, n // t["block"] * t["block_bytes"]), fill, dtype=np.uint8).reshape(
            5, -1, t["block_bytes"]
        )
        if name in ("Q4_0", "Q5_0", "Q8_0", "Q4_1", "Q5_1", "Q4_K", "Q5_K"):
            w[..., 0:2] = f16_bytes(np.full(w.shape[:2], 2.0**-6))
        if name in ("Q4_1", "Q5_1", "Q4_K", "Q5_K"):
            w[..., 2:4] = f16_bytes(np.full(w.shape[:2], 2.0**-8))
        if name == "Q6_K":
            w[..., 208:210] = f16_bytes(np.full(w.shape[:2], 2.0**-10))
        w = w.reshape(5, -1)
        for x in (
            np.full(n, 127.0, np.float32),
            np.full(n, -127.0, np.float32),
            np.where(np.arange(n) % 2 == 0, -127.0, 127.0).astype(np.float32),
            rng.standard_normal(n).astype(np.float32),
        ):
            check_gemv(isa, name, w, n, x, f"fill={fill:#x} x0={x[0]}")
    rows = 7
    w = weights(rng, name, rows, n)
    np.testing.assert_array_equal(
        Q.gemv(isa, t["type"], w, n, np.zeros(n, np.float32)), np.zeros(rows, np.float32)
    )
    wz = np.zeros_like(w)
    np.testing.assert_array_equal(
        Q.gemv(isa, t["type"], wz, n, rng.standard_normal(n).astype(np.float32)), np.zeros(rows, np.float32)
    )


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1", "Q6_K", "F16"])
def test_gemv_model_shape(isa, name):
    """A whole SmolLM2-sized matrix (many row tiles, long rows)."""
    rng = np.random.default_rng(SEED + 500)
    n = 1536 if name not in KQUANTS else 2816
    w = weights(rng, name, 300, n)
    x = rng.standard_normal(n).astype(np.float32)
    check_gemv(isa, name, w, n, x, "model shape")


def test_gemv_rejects_bad_shapes():
    t = TYPES["Q4_0"]
    with pytest.raises(ValueError):
        Q.gemv("scalar", t["type"], np.zeros((2, 18), np.uint8), 33, np.zeros(33, np.float32))
    with pytest.raises(ValueError):
        Q.gemv("scalar", t["type"], np.zeros((2, 17), np.uint8), 32, np.zeros(32, np.float32))
    with pytest.raises(ValueError):
        Q.gemv("scalar", t["type"], np.zeros((2, 18), np.uint8), 32, np.zeros(64, np.float32))


# --------------------------------------------------------------------------------------------------
# AArch64 NEON under qemu-aarch64: tests/kernels/qk_harness.c cross-built with the kernel sources
# (static), fed vectors written here; its outputs (activation bytes, gemv, dequant) are checked with
# the same references as above. `-cpu max` has FEAT_DotProd (SDOT variant), `-cpu cortex-a53` not
# (SMULL variant). Needs aarch64-linux-gnu-gcc and qemu-aarch64, as test_neon_qemu.py.

QEMU_CPUS = {"max": "neon-dotprod", "cortex-a53": "neon"}
HARNESS_SOURCES = [
    "qk_scalar.c",
    "qk_neon.c",
    "qk_avx2.c",
    "qk_f32act_scalar.c",
    "qk_f32act_neon.c",
    "qk_f32act_avx2.c",
    "tq_scalar.c",
    "tq_neon.c",
    "tq_avx2.c",
    "tq_avx512.c",
    "cpu.c",
    "dispatch.c",
]


class QkVectors:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.checks: list[tuple] = []

    def _ints(self, *vals: int) -> None:
        self.chunks.append(struct.pack(f"<{len(vals)}i", *vals))

    def gemv(self, name: str, w: np.ndarray, n: int, x: np.ndarray, off: int) -> None:
        t = TYPES[name]
        self._ints(1, t["type"], w.shape[0], n, off)
        self.chunks += [np.ascontiguousarray(w).tobytes(), x.astype("<f4").tobytes()]
        self.checks.append(("gemv", name, w, n, x))

    def dequant(self, name: str, row: np.ndarray, n: int, off: int) -> None:
        self._ints(2, TYPES[name]["type"], n, off)
        self.chunks.append(row.tobytes())
        self.checks.append(("dequant", name, row, n, None))

    def gemm(self, name: str, w: np.ndarray, n: int, x: np.ndarray, off: int) -> None:
        """x [ntok, n]: the prompt GEMM and the gemv per token, compared bit for bit."""
        self._ints(5, TYPES[name]["type"], w.shape[0], n, x.shape[0], off)
        self.chunks += [np.ascontiguousarray(w).tobytes(), x.astype("<f4").tobytes()]
        self.checks.append(("gemm", name, w, n, x))

    def data(self) -> bytes:
        return b"".join(self.chunks) + struct.pack("<i", 0)


def build_qk_vectors() -> QkVectors:
    rng = np.random.default_rng(SEED + 600)
    v = QkVectors()
    for name in NAMES:
        for n in n_values(name):
            x = (rng.standard_normal(n) * rng.uniform(0.1, 3)).astype(np.float32)
            for rows in (1, 3, 4, 5, 9) if n <= 1536 else (1, 5):
                v.gemv(name, weights(rng, name, rows, n), n, x, 2 * (rows % 3))
            if name[0] == "Q":
                v.gemv(name, random_blocks(rng, name, 4, n), n, x, 0)
            w, xe = exact_case(rng, name, 5, n)
            v.gemv(name, w, n, xe, 2)
            v.dequant(name, weights(rng, name, 1, n, "blocks" if name[0] == "Q" else "quantize")[0], n, 2)
        n = n_values(name)[-1]
        v.gemv(name, weights(rng, name, 17, n), n, np.zeros(n, np.float32), 0)
        for rows, ntok in ((1, 1), (3, 4), (2, 9)):  # the prompt GEMMs (K-quants, float types)
            x = (rng.standard_normal((ntok, n)) * rng.uniform(0.1, 3)).astype(np.float32)
            v.gemm(name, weights(rng, name, rows, n), n, x, 2 * (rows % 3))
    return v


def check_qk_outputs(raw: bytes, v: QkVectors, label: str, isa: str) -> str:
    name = raw[:16].rstrip(b"\0").decode()
    pos = 16

    def take(dtype: str, count: int) -> np.ndarray:
        nonlocal pos
        arr = np.frombuffer(raw, dtype=dtype, count=count, offset=pos)
        pos += arr.nbytes
        return arr

    for i, (kind, tname, w, n, x) in enumerate(v.checks):
        t = TYPES[tname]
        where = f"{label} [{name}] record {i} {kind} {tname} n={n}"
        if kind == "dequant":
            ref = gguf_dequant(tname, w.reshape(1, -1))[0]
            np.testing.assert_array_equal(take("<u4", n), ref.view(np.uint32), err_msg=where)
            continue
        if kind == "gemm":
            has = bool(take("u1", 1)[0])
            k = x.shape[0] * w.shape[0]
            gemm, per = take("<f4", k), take("<f4", k)
            want = isa != "scalar" and (tname in KQUANTS or tname[0] != "Q")
            assert has == want, f"{where}: has gemm {has}"
            if has:
                np.testing.assert_array_equal(gemm, per, err_msg=f"{where} ntok={x.shape[0]}: gemm vs gemv")
            continue
        simd = bool(take("u1", 1)[0])
        assert simd == (isa != "scalar"), f"{where}: simd gemv {simd}"
        act = Q.quant_act(t["act"], x)
        np.testing.assert_array_equal(take("u1", act.size), act, err_msg=f"{where}: activation bytes")
        got = take("<f4", w.shape[0])
        ref, tol = gemv_reference(tname, w, n, act)
        assert_gemv_close(got, Q.gemv_act("scalar", t["type"], w, n, act), ref, tol, where)
        if not np.any(x):
            np.testing.assert_array_equal(got, np.zeros_like(got), err_msg=where)
    assert pos == len(raw), f"{label}: {len(raw) - pos} unread output bytes"
    return name


@pytest.fixture(scope="module")
def qk_harness(tmp_path_factory) -> Path:
    missing = [t for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: apt-get install gcc-aarch64-linux-gnu qemu-user")
    out = tmp_path_factory.mktemp("qk_neon") / "qk_harness"
    cmd = [
        "aarch64-linux-gnu-gcc",
        "-O2",
        "-std=c11",
        "-Wall",
        "-Werror",
        "-static",
        f"-I{KDIR}",
        "-o",
        str(out),
        str(Path(__file__).with_name("qk_harness.c")),
    ]
    res = subprocess.run(
        cmd + [str(KDIR / s) for s in HARNESS_SOURCES] + ["-lm"], check=False, capture_output=True, text=True
    )
    assert res.returncode == 0, f"cross build failed:\n{res.stderr}"
    return out


@pytest.fixture(scope="module")
def qk_vectors(tmp_path_factory) -> tuple[QkVectors, Path]:
    v = build_qk_vectors()
    path = tmp_path_factory.mktemp("qk_neon_in") / "vectors.bin"
    path.write_bytes(v.data())
    return v, path


@pytest.mark.parametrize("cpu", list(QEMU_CPUS))
@pytest.mark.parametrize("hisa", ["scalar", "neon"])
def test_qk_neon_under_qemu(qk_harness, qk_vectors, tmp_path, cpu, hisa):
    v, inp = qk_vectors
    out = tmp_path / "out.bin"
    cmd = ["qemu-aarch64", "-cpu", cpu, str(qk_harness), hisa, str(inp), str(out)]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"qemu -cpu {cpu} {hisa}: exit {res.returncode}\n{res.stderr}"
    name = check_qk_outputs(out.read_bytes(), v, f"qemu -cpu {cpu}", hisa)
    assert name == ("scalar" if hisa == "scalar" else QEMU_CPUS[cpu])


@pytest.mark.parametrize(
    "target,src,flags",
    [
        ("x86_64-linux-gnu", "qk_scalar.c", []),
        ("x86_64-linux-gnu", "qk_avx2.c", ["-mavx2", "-mfma", "-mf16c"]),
        ("x86_64-linux-gnu", "qk_avx2.c", []),  # no flags: must compile to the empty lookup
        ("x86_64-linux-gnu", "qk_neon.c", []),
        ("aarch64-linux-gnu", "qk_neon.c", []),
        ("aarch64-linux-gnu", "qk_avx2.c", []),
        ("aarch64-linux-gnu", "qk_scalar.c", []),
    ],
)
def test_clang_compiles_qk(target, src, flags, tmp_path):
    if shutil.which("clang") is None:
        pytest.skip("clang not found: apt-get install clang")
    cmd = ["clang", f"--target={target}", "-O2", "-std=c11", "-Wall", "-Werror", "-c", f"-I{KDIR}", *flags]
    res = subprocess.run(
        cmd + [str(KDIR / src), "-o", str(tmp_path / "k.o")], check=False, capture_output=True, text=True
    )
    if res.returncode != 0 and "stdint.h" in res.stderr:
        pytest.skip(f"clang has no {target} C headers here")
    assert res.returncode == 0, f"clang {target} {src}:\n{res.stderr}"
