"""f32-activation gemv of the llama.cpp weight types (qk.h tq_qk_get_f32act): the activation stays
f32 and each weight block is dequantized inside the dot product.

Oracle: float64 gguf.quants.dequantize(W) @ x (x the f32 activation itself, no Q8 rounding).

Tolerance, per row: tol = (D + 4) * eps32 * mag, with
  mag = sum_i (|scale part_i| + |minimum part_i|) * |x_i|   (test_qk.magnitude_parts: the largest
        any partial sum of any path can be; for types without a minimum simply sum |w_i x_i|)
  D = n / 32 + 32: the longest chain of roundings a path does (the scalar reference adds 32
        products into a chunk sum, then one chunk sum per 32 values; the SIMD paths add fewer
        terms per lane, then one scaled block sum per block, then a few horizontal adds), plus 4
        for the element roundings (dequantization, the scale products, FMA vs separate rounding).
This is a worst-case bound, valid for any data. On random data the error is ~1 eps32 * mag, and
test_error_is_a_few_eps holds every path to ERR_TYPICAL_EPS * eps32 * mag there. Every SIMD path is
also held to 2 * tol from the scalar path, and with integer-valued data (every partial sum an
integer below 2^24) every path must be exact.

AArch64 NEON runs under qemu-aarch64 through tests/kernels/qk_harness.c (record kind 3), as in
test_qk.py (`-cpu max` and `-cpu cortex-a53`; the f32 path uses no dotprod instruction).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
import test_qk as T
from gguf import GGMLQuantizationType as QT
from trit.engine import _qk as Q
from trit.engine.errors import UnsupportedCPUError

EPS32 = T.EPS32
SEED = 20270311
QNAMES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
FLOAT_NAMES = ["F32", "F16", "BF16"]
ROWS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 64, 300]
ISAS = ["scalar", "avx2", "avxvnni", "avx512", "avx512vnni", "neon", "neon-dotprod"]
ERR_TYPICAL_EPS = 4.0  # "a few eps32 * sum |terms|" on random data


def n_values(name: str) -> list[int]:
    return [256, 512, 2816] if name in T.KQUANTS else [32, 64, 576, 1536]


def qt(name: str) -> int:
    return int(QT[name])


@pytest.fixture(params=ISAS)
def isa(request):
    name = request.param
    try:
        Q.gemv_f32(name, qt("Q8_0"), np.zeros((1, 34), np.uint8), 32, np.zeros(32, np.float32))
    except UnsupportedCPUError:
        pytest.skip(f"{name}: not available on this CPU / build")
    return name


def reference(name: str, w: np.ndarray, n: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 dequant(W) @ x, tolerance, mag) per row; see the module docstring."""
    x64 = x.astype(np.float64)
    ref = T.gguf_dequant(name, w).astype(np.float64) @ x64
    mag = T.magnitude_parts(name, w, n) @ np.abs(x64)
    return ref, (n // 32 + 32 + 4) * EPS32 * mag, mag


def assert_close(got, scalar, ref, tol, what: str) -> None:
    err = np.abs(got.astype(np.float64) - ref)
    assert (err <= tol).all(), f"{what}: max err/tol {np.max(err / np.maximum(tol, 1e-300))}"
    assert (np.abs(got.astype(np.float64) - scalar) <= 2 * tol).all(), f"{what}: vs scalar"


def check(isa: str, name: str, w: np.ndarray, n: int, x: np.ndarray, what: str) -> np.ndarray:
    ref, tol, _ = reference(name, w, n, x)
    got = Q.gemv_f32(isa, qt(name), w, n, x)
    assert got.dtype == np.float32 and got.shape == (w.shape[0],)
    assert_close(got, Q.gemv_f32("scalar", qt(name), w, n, x), ref, tol, f"{isa} {name} {what}")
    return got


# --------------------------------------------------------------------------------------------------


def test_table_and_dispatch():
    for name in QNAMES:
        info = Q.f32act_info("scalar", qt(name))
        t = T.TYPES[name]
        assert (info["name"], info["block"], info["block_bytes"]) == (name, t["block"], t["block_bytes"])
        assert info["act"] == Q.ACTF_F32 and not info["simd"]
    for name in FLOAT_NAMES:  # the usual ops: they already take f32
        assert Q.f32act_info("scalar", qt(name))["act"] == Q.ACTF_F32
    with pytest.raises(ValueError):
        Q.f32act_info("scalar", int(QT.Q2_K))
    with pytest.raises(UnsupportedCPUError):
        Q.gemv_f32("no-such-isa", qt("Q4_0"), np.zeros((1, 18), np.uint8), 32, np.zeros(32, np.float32))
    with pytest.raises(ValueError):
        Q.gemv_f32("scalar", qt("Q4_0"), np.zeros((2, 18), np.uint8), 32, np.zeros(64, np.float32))
    with pytest.raises(ValueError):
        Q.gemv_f32("scalar", qt("Q4_0"), np.zeros((2, 17), np.uint8), 32, np.zeros(32, np.float32))
    with pytest.raises(ValueError):
        Q.gemv_f32("scalar", qt("Q4_K"), np.zeros((2, 144), np.uint8), 32, np.zeros(32, np.float32))


def test_simd_paths_present(isa):
    """Every quantized type has its own f32-activation gemv on an available SIMD ISA."""
    for name in QNAMES:
        assert Q.f32act_info(isa, qt(name))["simd"] == (isa != "scalar"), (isa, name)


@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_float_types_are_the_usual_ops(isa, name):
    rng = np.random.default_rng(SEED)
    n = 576
    w = T.weights(rng, name, 5, n)
    x = rng.standard_normal(n).astype(np.float32)
    np.testing.assert_array_equal(Q.gemv_f32(isa, qt(name), w, n, x), Q.gemv(isa, qt(name), w, n, x))


@pytest.mark.parametrize("name", QNAMES)
def test_gemv_random(isa, name):
    rng = np.random.default_rng(SEED + qt(name))
    for n in n_values(name):
        x = (rng.standard_normal(n) * rng.uniform(0.1, 3)).astype(np.float32)
        for kind in ("quantize", "blocks") if name not in T.KQUANTS else ("blocks",):
            wall = T.weights(rng, name, max(ROWS), n, kind)
            for rows in ROWS:
                check(isa, name, wall[:rows], n, x, f"{kind} rows={rows} n={n}")


@pytest.mark.parametrize("name", QNAMES + FLOAT_NAMES)
def test_gemm_is_the_gemv_per_token(isa, name):
    """The prompt GEMM (every SIMD path; the scalar reference runs the gemv per token) gives every
    token bit for bit the gemv's result: odd row counts (the 2-row tiles' tail), token counts that
    leave a ragged group, strided weights and activation rows, and rows longer than the K-quant
    GEMM's stack buffer (it then runs the gemv itself). NEON: test_f32act_neon_under_qemu."""
    has = Q.f32act_info(isa, qt(name))["gemm"]
    assert has == (isa != "scalar"), (isa, name)
    if not has:
        with pytest.raises(ValueError, match="no prompt GEMM"):
            Q.gemm_f32(isa, qt(name), np.zeros((1, 34), np.uint8), 32, np.zeros((1, 32), np.float32))
        return
    rng = np.random.default_rng(SEED + 7 * qt(name))
    float_ns = [13, 576, 1003]  # float rows: any length; the gemv's 8-lane steps leave tails
    for n in float_ns if name in FLOAT_NAMES else n_values(name) + ([256 * 129] if name in T.KQUANTS else []):
        w = T.weights(rng, name, 9, n, "quantize" if name in FLOAT_NAMES else "blocks")
        wide = np.zeros((9, w.shape[1] + 6), np.uint8)  # rows 6 bytes apart beyond their size
        wide[:, : w.shape[1]] = w
        xall = (rng.standard_normal((11, n + 8)) * rng.uniform(0.1, 3)).astype(np.float32)
        for rows in (1, 2, 3, 8, 9):
            for ntok in (1, 3, 4, 5, 11):
                for ww, x in ((w[:rows], np.ascontiguousarray(xall[:ntok, :n])), (wide[:rows, : w.shape[1]], xall[:ntok, :n])):
                    got = Q.gemm_f32(isa, qt(name), ww, n, x)
                    want = np.stack([Q.gemv_f32(isa, qt(name), ww, n, np.ascontiguousarray(x[t])) for t in range(ntok)])
                    np.testing.assert_array_equal(got, want, err_msg=f"{isa} {name} n={n} rows={rows} ntok={ntok}")


@pytest.mark.parametrize("name", QNAMES)
def test_error_is_a_few_eps(isa, name):
    """On random data the error is a few eps32 * sum |terms|, far below the worst-case bound (and
    far below the Q8 activation rounding this path exists to avoid)."""
    rng = np.random.default_rng(SEED + 50 + qt(name))
    n = n_values(name)[-1]
    w = T.weights(rng, name, 64, n)
    x = rng.standard_normal(n).astype(np.float32)
    ref, _, mag = reference(name, w, n, x)
    err = np.abs(Q.gemv_f32(isa, qt(name), w, n, x).astype(np.float64) - ref)
    assert (err <= ERR_TYPICAL_EPS * EPS32 * mag).all(), np.max(err / (EPS32 * mag))
    # the Q8 path on the same data is much further away
    q8 = np.abs(Q.gemv(isa, qt(name), w, n, x).astype(np.float64) - ref)
    assert np.median(q8) > 10 * np.median(err)


@pytest.mark.parametrize("name", QNAMES)
def test_gemv_unaligned_and_strided(isa, name):
    rng = np.random.default_rng(SEED + 200 + qt(name))
    n = n_values(name)[1]
    x = rng.standard_normal(n).astype(np.float32)
    w = T.weights(rng, name, 9, n)
    xr = np.zeros(n + 1, np.float32)[1:]  # x 4 bytes past an 8-byte boundary
    xr[:] = x
    for offset, pad in ((2, 0), (6, 2), (34, 30)):
        wu = T.unaligned_rows(w, offset, pad)
        got = check(isa, name, wu, n, xr, f"offset={offset} pad={pad}")
        np.testing.assert_array_equal(got, Q.gemv_f32(isa, qt(name), w, n, x))


@pytest.mark.parametrize("name", QNAMES)
def test_gemv_exact_integers(isa, name):
    """Integer scales and minima, small integer activations: every term and partial sum is an
    integer below 2^24, so every path must return the exact result (catches a wrong code, scale or
    index that a tolerance could hide)."""
    rng = np.random.default_rng(SEED + 300 + qt(name))
    for n in n_values(name):
        for rows in (1, 3, 4, 8, 9, 17):
            w, x = T.exact_case(rng, name, rows, n)
            ref = T.gguf_dequant(name, w).astype(np.float64) @ x.astype(np.float64)
            assert np.all(np.abs(ref) < 2**24) and np.all(ref == np.round(ref))
            got = Q.gemv_f32(isa, qt(name), w, n, x)
            np.testing.assert_array_equal(got, ref.astype(np.float32), err_msg=f"{isa} {name} n={n} rows={rows}")


@pytest.mark.parametrize("name", QNAMES)
def test_gemv_extremes(isa, name):
    """Largest / smallest codes (all bytes 0x00, 0xFF, 0x80, 0x7F) against constant and alternating
    activations, all-zero activations and all-zero weights."""
    t = T.TYPES[name]
    n = n_values(name)[-1]
    rng = np.random.default_rng(SEED + 400)
    for fill in (0x00, 0xFF, 0x80, 0x7F):
        w = np.full((5, n // t["block"] * t["block_bytes"]), fill, dtype=np.uint8).reshape(5, -1, t["block_bytes"])
        if name != "Q6_K":
            w[..., 0:2] = T.f16_bytes(np.full(w.shape[:2], 2.0**-6))
        if name in ("Q4_1", "Q5_1", "Q4_K", "Q5_K"):
            w[..., 2:4] = T.f16_bytes(np.full(w.shape[:2], 2.0**-8))
        if name == "Q6_K":
            w[..., 208:210] = T.f16_bytes(np.full(w.shape[:2], 2.0**-10))
        w = w.reshape(5, -1)
        for x in (
            np.full(n, 127.0, np.float32),
            np.full(n, -3.0e4, np.float32),
            np.where(np.arange(n) % 2 == 0, -1.0, 1.0).astype(np.float32),
            rng.standard_normal(n).astype(np.float32),
        ):
            check(isa, name, w, n, x, f"fill={fill:#x} x0={x[0]}")
    w = T.weights(rng, name, 7, n)
    np.testing.assert_array_equal(Q.gemv_f32(isa, qt(name), w, n, np.zeros(n, np.float32)), np.zeros(7, np.float32))
    x = rng.standard_normal(n).astype(np.float32)
    np.testing.assert_array_equal(Q.gemv_f32(isa, qt(name), np.zeros_like(w), n, x), np.zeros(7, np.float32))


# --------------------------------------------------------------------------------------------------
# AArch64 NEON under qemu-aarch64 (qk_harness.c record kind 3)

QEMU_CPUS = {"max": "neon-dotprod", "cortex-a53": "neon"}


class F32Vectors:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.checks: list[tuple] = []

    def gemv(self, name: str, w: np.ndarray, n: int, x: np.ndarray, off: int) -> None:
        self.chunks.append(struct.pack("<5i", 3, qt(name), w.shape[0], n, off))
        self.chunks += [np.ascontiguousarray(w).tobytes(), x.astype("<f4").tobytes()]
        self.checks.append((name, w, n, x))

    def gemm(self, name: str, w: np.ndarray, n: int, x: np.ndarray, off: int) -> None:
        """x [ntok, n]: the prompt GEMM and the gemv per token, compared bit for bit."""
        self.chunks.append(struct.pack("<6i", 4, qt(name), w.shape[0], n, x.shape[0], off))
        self.chunks += [np.ascontiguousarray(w).tobytes(), x.astype("<f4").tobytes()]
        self.checks.append((name, w, n, x))

    def data(self) -> bytes:
        return b"".join(self.chunks) + struct.pack("<i", 0)


def build_f32_vectors() -> F32Vectors:
    rng = np.random.default_rng(SEED + 600)
    v = F32Vectors()
    for name in QNAMES:
        for n in n_values(name):
            x = (rng.standard_normal(n) * rng.uniform(0.1, 3)).astype(np.float32)
            for rows in (1, 2, 3, 4, 5, 6, 7, 8, 9, 17) if n <= 576 else (1, 5, 9):
                v.gemv(name, T.weights(rng, name, rows, n), n, x, 2 * (rows % 3))
            v.gemv(name, T.random_blocks(rng, name, 4, n), n, x, 0)
            w, xe = T.exact_case(rng, name, 5, n)
            v.gemv(name, w, n, xe, 2)
        n = n_values(name)[-1]
        v.gemv(name, T.weights(rng, name, 64, n), n, rng.standard_normal(n).astype(np.float32), 0)
        v.gemv(name, T.weights(rng, name, 6, n), n, np.zeros(n, np.float32), 0)
    for name in FLOAT_NAMES:
        v.gemv(name, T.weights(rng, name, 5, 576), 576, rng.standard_normal(576).astype(np.float32), 2)
    for name in QNAMES + FLOAT_NAMES:  # the prompt GEMMs; K-quant rows longer than their stack buffer
        float_ns = [13, 576, 1003]  # too, float rows with tails after the 8-value steps
        for n in float_ns if name in FLOAT_NAMES else n_values(name)[:2] + ([256 * 65] if name in T.KQUANTS else []):
            for rows, ntok in ((1, 1), (3, 4), (5, 6), (2, 9)):
                x = (rng.standard_normal((ntok, n)) * rng.uniform(0.1, 3)).astype(np.float32)
                v.gemm(name, T.weights(rng, name, rows, n), n, x, 2 * (rows % 3))
    return v


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    missing = [t for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: apt-get install gcc-aarch64-linux-gnu qemu-user")
    out = tmp_path_factory.mktemp("qk_f32_neon") / "qk_harness"
    cmd = ["aarch64-linux-gnu-gcc", "-O2", "-std=c11", "-Wall", "-Werror", "-static", f"-I{T.KDIR}", "-o", str(out)]
    cmd += [str(Path(__file__).with_name("qk_harness.c"))] + [str(T.KDIR / s) for s in T.HARNESS_SOURCES] + ["-lm"]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert res.returncode == 0, f"cross build failed:\n{res.stderr}"
    return out


@pytest.fixture(scope="module")
def f32_vectors(tmp_path_factory) -> tuple[F32Vectors, Path]:
    v = build_f32_vectors()
    path = tmp_path_factory.mktemp("qk_f32_in") / "vectors.bin"
    path.write_bytes(v.data())
    return v, path


@pytest.mark.parametrize("cpu", list(QEMU_CPUS))
@pytest.mark.parametrize("hisa", ["scalar", "neon"])
def test_f32act_neon_under_qemu(harness, f32_vectors, tmp_path, cpu, hisa):
    v, inp = f32_vectors
    out = tmp_path / "out.bin"
    res = subprocess.run(
        ["qemu-aarch64", "-cpu", cpu, str(harness), hisa, str(inp), str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, f"qemu -cpu {cpu} {hisa}: exit {res.returncode}\n{res.stderr}"
    raw = out.read_bytes()
    name = raw[:16].rstrip(b"\0").decode()
    assert name == ("scalar" if hisa == "scalar" else QEMU_CPUS[cpu])
    pos = 16
    for i, (tname, w, n, x) in enumerate(v.checks):
        where = f"qemu -cpu {cpu} [{name}] record {i} {tname} n={n} rows={w.shape[0]}"
        if x.ndim == 2:  # gemm record: u8 has_gemm | GEMM outputs | the gemv's, token by token
            has = bool(raw[pos])
            k = x.shape[0] * w.shape[0]
            gemm = np.frombuffer(raw, "<f4", k, pos + 1)
            per = np.frombuffer(raw, "<f4", k, pos + 1 + 4 * k)
            pos += 1 + 8 * k
            assert has == (hisa != "scalar"), f"{where}: has gemm {has}"
            if has:
                np.testing.assert_array_equal(gemm, per, err_msg=f"{where} ntok={x.shape[0]}: gemm vs gemv")
            continue
        simd = bool(raw[pos])
        pos += 1
        assert simd == (hisa != "scalar"), f"{where}: simd {simd}"
        got = np.frombuffer(raw, "<f4", w.shape[0], pos)
        pos += got.nbytes
        if tname in FLOAT_NAMES:
            np.testing.assert_allclose(got, Q.gemv("scalar", qt(tname), w, n, x), rtol=1e-4, atol=1e-4, err_msg=where)
            continue
        ref, tol, _ = reference(tname, w, n, x)
        assert_close(got, Q.gemv_f32("scalar", qt(tname), w, n, x), ref, tol, where)
        if not np.any(x):
            np.testing.assert_array_equal(got, np.zeros_like(got), err_msg=where)
        elif np.all(x == np.round(x)) and np.all(np.abs(ref) < 2**24) and np.all(ref == np.round(ref)):
            np.testing.assert_array_equal(got, ref.astype(np.float32), err_msg=f"{where}: exact case")
    assert pos == len(raw), f"{len(raw) - pos} unread output bytes"


@pytest.mark.parametrize(
    "target,src,flags",
    [
        ("x86_64-linux-gnu", "qk_f32act_scalar.c", []),
        ("x86_64-linux-gnu", "qk_f32act_avx2.c", ["-mavx2", "-mfma", "-mf16c"]),
        ("x86_64-linux-gnu", "qk_f32act_avx2.c", []),  # no flags: must compile to the empty lookup
        ("x86_64-linux-gnu", "qk_f32act_neon.c", []),
        ("aarch64-linux-gnu", "qk_f32act_neon.c", []),
        ("aarch64-linux-gnu", "qk_f32act_avx2.c", []),
        ("aarch64-linux-gnu", "qk_f32act_scalar.c", []),
    ],
)
def test_clang_compiles_f32act(target, src, flags, tmp_path):
    if shutil.which("clang") is None:
        pytest.skip("clang not found: apt-get install clang")
    cmd = ["clang", f"--target={target}", "-O2", "-std=c11", "-Wall", "-Werror", "-c", f"-I{T.KDIR}", *flags]
    res = subprocess.run(cmd + [str(T.KDIR / src), "-o", str(tmp_path / "k.o")], check=False, capture_output=True, text=True)
    if res.returncode != 0 and "stdint.h" in res.stderr:
        pytest.skip(f"clang has no {target} C headers here")
    assert res.returncode == 0, f"clang {target} {src}:\n{res.stderr}"
