"""The AArch64 NEON kernels under qemu-aarch64: cross-build tests/kernels/isa_harness.c with the
kernel sources (static), feed it test vectors written here with numpy, and compare the outputs of
the scalar and NEON tables with numpy: integers bit-exactly, floats within the named tolerance.

Run twice: `-cpu max` (has FEAT_DotProd: the "neon-dotprod" table) and `-cpu cortex-a53` (no
dotprod: the plain "neon" table). Needs aarch64-linux-gnu-gcc and qemu-aarch64 (Debian/Ubuntu:
apt-get install gcc-aarch64-linux-gnu qemu-user); skipped with a message when they are missing.
Also checks once that clang still compiles the x86 kernel files with their setup.py flags.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_kernels import ref_sum_squares

ROOT = Path(__file__).resolve().parents[2]
KDIR = ROOT / "engine" / "kernels"
HARNESS = Path(__file__).with_name("isa_harness.c")
SOURCES = ["tq_scalar.c", "tq_neon.c", "cpu.c", "dispatch.c", "tq_avx2.c", "tq_avx512.c"]
CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"

QK = 128
B3_QK = 320  # values per block of the B3 layout (tq.h)
SEED = 20261126
EPS32 = float(np.finfo(np.float32).eps)
# Float sums in another order / with FMA: random-walk rounding error bound, see test_kernels.py.
FSUM_K = 8.0

# qemu CPU model -> the table tq_select_isa("neon") must hand out there
CPUS = {"max": "neon-dotprod", "cortex-a53": "neon"}


def pack_ternary(w: np.ndarray) -> np.ndarray:
    """int8 ternary [rows, cols] -> packed uint8 [rows, nb * 32] (tq.h layout), padded with w = 0."""
    rows, cols = w.shape
    nb = max(1, -(-cols // QK))
    codes = np.ones((rows, nb * QK), dtype=np.uint8)
    codes[:, :cols] = (w + 1).astype(np.uint8)
    c = codes.reshape(rows, nb, 4, 32)
    return np.ascontiguousarray(((c[:, :, 0] << 6) | (c[:, :, 1] << 4) | (c[:, :, 2] << 2) | c[:, :, 3]).reshape(rows, -1))


def pack_b3(w: np.ndarray) -> np.ndarray:
    """int8 ternary [rows, cols] -> the B3 layout uint8 [rows, nb3 * 64] (tq.h), padded with w = 0:
    byte j of a 320-value block holds values j + 64k as v = sum_k code_k 3^k, stored as v when
    v <= 121, else as 0x80 | (242 - v)."""
    rows, cols = w.shape
    nb3 = max(1, -(-cols // B3_QK))
    codes = np.ones((rows, nb3 * B3_QK), dtype=np.int32)
    codes[:, :cols] = w.astype(np.int32) + 1
    c = codes.reshape(rows, nb3, 5, 64)
    v = (c * (3 ** np.arange(5, dtype=np.int32))[None, None, :, None]).sum(axis=2)
    return np.ascontiguousarray(np.where(v <= 121, v, 0x80 | (242 - v)).astype(np.uint8).reshape(rows, -1))


def ref_quant(x: np.ndarray, npad: int):
    amax = np.float32(np.max(np.abs(x))) if x.size else np.float32(0)
    s = np.float32(127) * (np.float32(1) / max(amax, np.float32(1e-5)))  # as torch evaluates 127 / t
    q = np.clip(np.rint(x * s), -128, 127).astype(np.int8)
    out = np.zeros(max(x.size, npad), dtype=np.int8)
    out[: x.size] = q
    return out, int(q.astype(np.int64).sum()), s


def fsum_tol(terms: np.ndarray) -> float:
    return FSUM_K * np.sqrt(max(terms.size, 1)) * EPS32 * float(np.abs(terms).sum()) + 1e-38


class Vectors:
    """Test records: the bytes for the harness and, per record, how to read and check its output."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.checks: list[tuple] = []

    def _ints(self, *vals: int) -> None:
        self.chunks.append(struct.pack(f"<{len(vals)}i", *vals))

    def gemv(self, w: np.ndarray, a: np.ndarray, off: int, b3: bool = False) -> None:
        """b3: the weights in the B3 layout, through b3_gemv"""
        wp = pack_b3(w) if b3 else pack_ternary(w)
        qk = B3_QK if b3 else QK
        nb = wp.shape[1] // (64 if b3 else 32)
        ap = np.zeros(nb * qk, np.int8)
        ap[: a.size] = a
        self._ints(14 if b3 else 1, w.shape[0], nb, int(ap.astype(np.int64).sum()), off)
        self.chunks += [wp.tobytes(), ap.tobytes()]
        ref = (w.astype(np.int64) @ a.astype(np.int64)).astype(np.int32)
        self.checks.append(("gemv", w.shape, ref))

    def gemm(self, w: np.ndarray, a: np.ndarray, extra: int, out_pad: int, off: int, b3: bool = False) -> None:
        wp = pack_b3(w) if b3 else pack_ternary(w)
        qk = B3_QK if b3 else QK
        nb = wp.shape[1] // (64 if b3 else 32)
        ntok = a.shape[0]
        stride = nb * qk + extra
        ap = np.zeros((ntok, stride), np.int8)
        ap[:, : a.shape[1]] = a
        ap[:, nb * qk :] = 99  # bytes between rows must not be read as activations
        asum = ap[:, : nb * qk].astype(np.int64).sum(axis=1).astype(np.int32)
        self._ints(15 if b3 else 2, w.shape[0], nb, ntok, stride, w.shape[0] + out_pad, off)
        self.chunks += [wp.tobytes(), ap.tobytes(), asum.astype("<i4").tobytes()]
        ref = (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.int32)
        self.checks.append(("gemm", (ntok, w.shape[0], nb), ref))

    def quant(self, x: np.ndarray, npad: int) -> None:
        x = x.astype(np.float32)
        self._ints(3, x.size, npad)
        self.chunks.append(x.astype("<f4").tobytes())
        self.checks.append(("quant", (x.size, npad), ref_quant(x, npad)))

    def f16_gemv(self, w16: np.ndarray, x: np.ndarray) -> None:
        self._ints(4, *w16.shape)
        self.chunks += [w16.view("<u2").tobytes(), x.astype("<f4").tobytes()]
        terms = w16.astype(np.float64) * x.astype(np.float64)
        self.checks.append(("f16_gemv", w16.shape, terms))

    @staticmethod
    def _kv(rows: np.ndarray) -> tuple[int, bytes]:
        """The dots kind (wsum is one more) and the bytes of f32 rows (5 / 6), f16 rows (an f16 KV
        cache: 9 / 10) or int8 codes (an 8-bit cache: 11 / 12)."""
        if rows.dtype == np.int8:
            return 11, rows.tobytes()
        half = rows.dtype == np.float16
        return (9 if half else 5), rows.astype("<f2" if half else "<f4").tobytes()

    def dots(self, rows: np.ndarray, x: np.ndarray) -> None:
        kind, data = self._kv(rows)
        self._ints(kind, rows.shape[0], x.size, rows.shape[1])
        self.chunks += [data, x.astype("<f4").tobytes()]
        self.checks.append(("dots", rows.shape[0], rows[:, : x.size].astype(np.float64) * x.astype(np.float64)))

    def wsum(self, rows: np.ndarray, w: np.ndarray, n: int) -> None:
        kind, data = self._kv(rows)
        self._ints(kind + 1, rows.shape[0], n, rows.shape[1])
        self.chunks += [data, w.astype("<f4").tobytes()]
        self.checks.append(("wsum", n, (w.astype(np.float64)[:, None] * rows[:, :n].astype(np.float64)).T))

    def scale_out(self, acc: np.ndarray, sa: np.float32, scale: np.ndarray) -> None:
        self._ints(7, acc.size, int(np.float32(sa).view(np.int32)))
        self.chunks += [acc.astype("<i4").tobytes(), scale.astype("<f4").tobytes()]
        self.checks.append(("scale_out", acc.size, (acc.astype(np.float32) / np.float32(sa)) * scale))

    def softmax(self, x: np.ndarray, scale: float) -> None:
        self._ints(8, x.size, int(np.float32(scale).view(np.int32)))
        self.chunks.append(x.astype("<f4").tobytes())
        v = x.astype(np.float64) * np.float32(scale)
        e = np.exp(v - v.max())
        self.checks.append(("softmax", x.size, e / e.sum()))

    def sumsq(self, x: np.ndarray, prefetch: bool) -> None:
        self._ints(13, x.size, int(prefetch))
        self.chunks.append(x.astype("<f4").tobytes())
        self.checks.append(("sumsq", x.size, ref_sum_squares(x)))

    def data(self) -> bytes:
        return b"".join(self.chunks) + struct.pack("<i", 0)


def build_vectors() -> Vectors:
    rng = np.random.default_rng(SEED)
    v = Vectors()
    for rows in (1, 2, 3, 4, 5, 7, 9, 17, 65):
        for cols in (1, 127, 128, 129, 300, 640, 2560):
            v.gemv(rng.integers(-1, 2, (rows, cols), dtype=np.int8), rng.integers(-128, 128, cols, dtype=np.int8), rows % 2)
    for nb in (1, 16, 17, 33):  # extremes: all-zero / +1 / -1 weights against -128 / 127
        for wval in (0, 1, -1):
            for aval in (-128, 127):
                v.gemv(np.full((5, nb * QK), wval, np.int8), np.full(nb * QK, aval, np.int8), 1)
    v.gemv(rng.integers(-1, 2, (64, 6912), dtype=np.int8), rng.integers(-128, 128, 6912, dtype=np.int8), 0)
    for rows, nb in ((1, 1), (3, 2), (4, 3), (5, 5), (9, 20), (17, 1), (65, 2)):
        for ntok in (1, 2, 3, 4, 5, 6, 7, 8, 9, 33):
            if rows * nb * ntok > 20000:
                continue
            cols = nb * QK - (rows % 3) * 7
            w = rng.integers(-1, 2, (rows, cols), dtype=np.int8)
            a = rng.integers(-128, 128, (ntok, cols), dtype=np.int8)
            v.gemm(w, a, extra=(ntok * 7) % 65, out_pad=ntok % 3, off=ntok % 2)
    v.gemm(np.ones((6, 33 * QK), np.int8), np.full((5, 33 * QK), -128, np.int8), 3, 1, 1)
    # more rows than one row panel (tq_gemm.h: 128 KB of weights, 74-75 rows at 6912 columns)
    v.gemm(rng.integers(-1, 2, (151, 6912), dtype=np.int8), rng.integers(-128, 128, (6, 6912), dtype=np.int8), 5, 2, 1)
    # the B3 layout: short and padded rows, the 2B4T widths, extreme values, every token count
    for rows in (1, 2, 3, 5):
        for cols in (1, 319, 320, 321, 2560, 6912):
            v.gemv(rng.integers(-1, 2, (rows, cols), dtype=np.int8), rng.integers(-128, 128, cols, dtype=np.int8), rows % 2, b3=True)
    for wval in (1, -1):
        v.gemv(np.full((3, 2560), wval, np.int8), np.full(2560, -128, np.int8), 1, b3=True)
    for ntok in (1, 2, 3, 4, 5, 9):
        cols = 640 - ntok * 3 if ntok < 9 else 3000  # 3000: two chunks of the AVX-512 GEMM
        w = rng.integers(-1, 2, (7, cols), dtype=np.int8)
        v.gemm(w, rng.integers(-128, 128, (ntok, cols), dtype=np.int8), ntok * 5, ntok % 3, ntok % 2, b3=True)
    for n in (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 127, 128, 129, 2560, 6912):
        x = (rng.standard_normal(n) * rng.uniform(0.01, 100)).astype(np.float32)
        v.quant(x, n)
        v.quant(x, -(-n // QK) * QK)
    ties = np.concatenate([[127.0], np.arange(-127, 127) + 0.5]).astype(np.float32)
    v.quant(ties, 256)
    fmax = np.finfo(np.float32).max
    for x in (
        np.zeros(17, np.float32),
        (rng.standard_normal(40) * 1e-7).astype(np.float32),
        np.array([fmax, -fmax, fmax / 3, 1.0, -1e30] * 7, np.float32),
        np.full(9, np.finfo(np.float32).smallest_subnormal, np.float32),
    ):
        v.quant(x, x.size + 3)
    for rows in (1, 3, 4, 5, 9):
        for cols in (1, 7, 8, 9, 17, 100, 2560):
            v.f16_gemv((rng.standard_normal((rows, cols)) * 0.5).astype(np.float16), rng.standard_normal(cols).astype(np.float32))
    for length, n, extra in ((1, 1, 0), (3, 4, 1), (4, 5, 3), (5, 15, 0), (7, 16, 4), (9, 17, 2), (1, 33, 0), (33, 128, 512), (2, 1000, 0)):
        for dtype in (np.float32, np.float16, np.int8):  # f32, f16 and 8-bit KV caches
            if dtype == np.int8:
                rows = rng.integers(-128, 128, (length, n + extra), dtype=np.int8)
            else:
                rows = rng.standard_normal((length, n + extra)).astype(dtype)
            v.dots(rows, rng.standard_normal(n).astype(np.float32))
            v.wsum(rows, rng.standard_normal(length).astype(np.float32), n)
    for dtype in (np.float32, np.float16, np.int8):
        v.wsum(np.zeros((0, 8), dtype), np.zeros(0, np.float32), 8)  # no keys: zeros
    for n in (1, 3, 4, 5, 17, 2560):
        acc = rng.integers(-(1 << 20), 1 << 20, n).astype(np.int32)
        acc[0] = (1 << 24) + 1  # rounded int -> float
        v.scale_out(acc, np.float32(rng.random() * 100 + 0.5), (rng.random(n) + 0.01).astype(np.float32))
    for n in (1, 3, 4, 5, 17, 2000):
        for spread in (1.0, 30.0):
            v.softmax((rng.standard_normal(n) * spread).astype(np.float32), 0.088)
    for n in (0, 1, 7, 8, 9, 15, 16, 17, 33, 2560, 6913):
        for scale in (1.0, 1e-20, 1e18):
            x = (rng.standard_normal(n) * scale * np.exp(rng.uniform(-8, 8, n))).astype(np.float32)
            v.sumsq(x, bool(n & 1))
    return v


def check_outputs(raw: bytes, v: Vectors, label: str) -> str:
    name = raw[:16].rstrip(b"\0").decode()
    pos = 16

    def take(dtype: str, count: int) -> np.ndarray:
        nonlocal pos
        arr = np.frombuffer(raw, dtype=dtype, count=count, offset=pos)
        pos += arr.nbytes
        return arr

    for i, (kind, shape, ref) in enumerate(v.checks):
        where = f"{label} [{name}] record {i} {kind} {shape}"
        if kind == "gemv":
            np.testing.assert_array_equal(take("<i4", shape[0]), ref, err_msg=where)
        elif kind == "gemm":
            ntok, rows, _ = shape
            np.testing.assert_array_equal(take("<i4", ntok * rows).reshape(ntok, rows), ref, err_msg=where)
        elif kind == "quant":
            rq, rs, rscale = ref
            np.testing.assert_array_equal(take("i1", rq.size), rq, err_msg=where)
            assert int(take("<i4", 1)[0]) == rs, where
            assert take("<f4", 1)[0].view(np.uint32) == np.float32(rscale).view(np.uint32), where
        elif kind == "f16_gemv":
            got = take("<f4", shape[0])
            for r in range(shape[0]):
                assert abs(got[r] - ref[r].sum()) <= fsum_tol(ref[r]), f"{where} row {r}"
        elif kind == "softmax":
            np.testing.assert_allclose(take("<f4", shape), ref, rtol=2e-6, atol=1e-37, err_msg=where)
        elif kind == "scale_out":
            np.testing.assert_array_equal(take("<f4", shape).view(np.uint32), ref.view(np.uint32), err_msg=where)
        elif kind == "sumsq":  # bit for bit: tq_norm.h's order is the spec
            assert take("<f8", 1)[0] == ref, where
        elif kind in ("dots", "wsum"):  # one row of float64 terms per output
            got = take("<f4", shape)
            for j in range(shape):
                assert abs(got[j] - ref[j].sum()) <= fsum_tol(ref[j]), f"{where} output {j}"
    assert pos == len(raw), f"{label}: {len(raw) - pos} unread output bytes"
    return name


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    missing = [t for t in (CC, QEMU) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: apt-get install gcc-aarch64-linux-gnu qemu-user")
    out = tmp_path_factory.mktemp("neon") / "isa_harness"
    cmd = [CC, "-O2", "-std=c11", "-Wall", "-static", f"-I{KDIR}", "-o", str(out), str(HARNESS)]
    cmd += [str(KDIR / s) for s in SOURCES] + ["-lm"]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert res.returncode == 0, f"cross build failed:\n{res.stderr}"
    return out


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> tuple[Vectors, Path]:
    v = build_vectors()
    path = tmp_path_factory.mktemp("neon_in") / "vectors.bin"
    path.write_bytes(v.data())
    return v, path


@pytest.mark.parametrize("cpu", list(CPUS))
@pytest.mark.parametrize("isa", ["scalar", "neon"])
def test_neon_under_qemu(harness, vectors, tmp_path, cpu, isa):
    v, inp = vectors
    out = tmp_path / "out.bin"
    res = subprocess.run([QEMU, "-cpu", cpu, str(harness), isa, str(inp), str(out)], check=False, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"qemu -cpu {cpu} {isa}: exit {res.returncode}\n{res.stderr}"
    name = check_outputs(out.read_bytes(), v, f"qemu -cpu {cpu}")
    assert name == ("scalar" if isa == "scalar" else CPUS[cpu])


X86_FLAGS = {
    "tq_avx2.c": ["-mavx2", "-mfma", "-mf16c"],
    "tq_avx512.c": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"],
    "tq_neon.c": [],
    "tq_scalar.c": [],
    "cpu.c": [],
    "dispatch.c": [],
}


@pytest.mark.parametrize("src", list(X86_FLAGS))
def test_clang_compiles_x86(src, tmp_path):
    if shutil.which("clang") is None:
        pytest.skip("clang not found: apt-get install clang")
    cmd = ["clang", "--target=x86_64-linux-gnu", "-O2", "-std=c11", "-Wall", "-Werror", "-c", f"-I{KDIR}"]
    res = subprocess.run(cmd + X86_FLAGS[src] + [str(KDIR / src), "-o", str(tmp_path / "k.o")], check=False, capture_output=True, text=True)
    assert res.returncode == 0, f"clang {src}:\n{res.stderr}"


def test_clang_compiles_neon(tmp_path):
    """clang --target=aarch64 compiles tq_neon.c (the dotprod target attribute path)."""
    if shutil.which("clang") is None:
        pytest.skip("clang not found: apt-get install clang")
    cmd = ["clang", "--target=aarch64-linux-gnu", "-O2", "-std=c11", "-Wall", "-Werror", "-c", f"-I{KDIR}"]
    res = subprocess.run(cmd + [str(KDIR / "tq_neon.c"), "-o", str(tmp_path / "k.o")], check=False, capture_output=True, text=True)
    if res.returncode != 0 and "stdint.h" in res.stderr:
        pytest.skip("clang has no AArch64 C headers here")
    assert res.returncode == 0, f"clang aarch64 tq_neon.c:\n{res.stderr}"
