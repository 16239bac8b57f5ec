"""Every kernel of every ISA table against the scalar spec and a numpy reference.

Integer results (gemv / gemm int32, quant_act int8 values, sums and scale) and scale_out must be
bit-identical to the scalar path and to numpy. Float kernels (f16_gemv, kv_dots, kv_wsum over f32,
f16 and int8 rows) are compared with a float64 numpy reference within the named tolerances below.
"""

from __future__ import annotations

import numpy as np
import pytest
from trit.engine import _kernels as K
from trit.engine.errors import UnsupportedCPUError

QK = 128
SEED = 20261125
EPS32 = float(np.finfo(np.float32).eps)

# Float sums: the SIMD paths add in a different order (and with FMA) than the scalar loop. For the
# random data below the rounding error of a length-n sum behaves like a random walk, so
# |err| <= FSUM_K * sqrt(n) * eps32 * sum|terms| holds with a wide margin (deterministic seed), while a
# single wrong or missing term (~ sum|terms| / n) is still far above it for the sizes tested.
FSUM_K = 8.0

# (test id, ISA name for tq_select_isa, env overrides). "avx512-novnni" runs the AVX-512BW table
# on a VNNI CPU, "avx2-novnni" the AVX2 table on an AVX-VNNI one, through the TRIT_NO_VNNI debug
# switch read by tq_kernels_avx512() and tq_kernels_avx2().
# "...-otherprefetch": the AVX-512 tables in the prefetch form this CPU does not get by default
# (their ternary GEMV prefetches into L2 or L1 by tq_head_prefetch_far: TRIT_HEAD_PREFETCH_FAR).
OTHER_PREFETCH = {"TRIT_HEAD_PREFETCH_FAR": "1" if K.cpu_features()["amd"] else "0"}
VARIANTS = [
    ("scalar", "scalar", {}),
    ("avx2", "avx2", {}),
    ("avx2-novnni", "avx2", {"TRIT_NO_VNNI": "1"}),
    ("avx512", "avx512", {}),
    ("avx512-novnni", "avx512", {"TRIT_NO_VNNI": "1"}),
    ("avx512-otherprefetch", "avx512", OTHER_PREFETCH),
    ("avx512-novnni-otherprefetch", "avx512", {"TRIT_NO_VNNI": "1", **OTHER_PREFETCH}),
    ("avx512-nob3", "avx512", {"TRIT_NO_B3": "1"}),
    ("neon", "neon", {}),
    ("neon-nodotprod", "neon", {"TRIT_NO_DOTPROD": "1"}),
]


@pytest.fixture(params=VARIANTS, ids=[v[0] for v in VARIANTS])
def isa(request, monkeypatch):
    vid, name, env = request.param
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    if name not in K.available_isas():
        pytest.skip(f"{vid}: this CPU/build lacks {name} (features: {K.cpu_features()})")
    table = K.table_name(name)
    if vid == "avx2":
        assert table == ("avxvnni" if K.cpu_features()["avxvnni"] else "avx2")
    if vid == "avx2-novnni":
        assert table == "avx2"
        if not K.cpu_features()["avxvnni"]:
            pytest.skip("avx2-novnni: same table as avx2 on this CPU")
    if vid == "avx512" and not K.cpu_features()["avx512vnni"]:
        assert table == "avx512"
    if vid.startswith("avx512-novnni"):
        assert table == "avx512"
        if not K.cpu_features()["avx512vnni"]:
            pytest.skip("avx512-novnni: same table as avx512 on this CPU")
    if vid == "avx512-nob3":  # TRIT_NO_B3: the VNNI table with the scalar B3 kernels
        if not _b3_simd():
            pytest.skip("avx512-nob3: this CPU has no AVX-512 VBMI + VNNI B3 kernels to turn off")
        assert not K.b3_fast(name)
    if vid == "neon-nodotprod":
        assert table == "neon"
        if not K.cpu_features()["neon_dotprod"]:
            pytest.skip("neon-nodotprod: same table as neon on this CPU")
    return name


def _b3_simd() -> bool:
    f = K.cpu_features()
    return f["avx512vnni"] and f["avx512vbmi"]


def pack_ternary(w: np.ndarray) -> np.ndarray:
    """int8 ternary [rows, cols] -> packed uint8 [rows, nb * 32] (tq.h layout). Columns are padded to
    a multiple of 128 with w = 0 (code 1); byte j of a block holds values j, j+32, j+64, j+96 in
    bits 7-6, 5-4, 3-2, 1-0 as code = w + 1."""
    rows, cols = w.shape
    nb = max(1, -(-cols // QK))
    codes = np.ones((rows, nb * QK), dtype=np.uint8)
    codes[:, :cols] = (w + 1).astype(np.uint8)
    c = codes.reshape(rows, nb, 4, 32)
    packed = (c[:, :, 0] << 6) | (c[:, :, 1] << 4) | (c[:, :, 2] << 2) | c[:, :, 3]
    return np.ascontiguousarray(packed.reshape(rows, nb * 32))


def pad_act(a: np.ndarray, nb: int) -> np.ndarray:
    out = np.zeros(a.shape[:-1] + (nb * QK,), dtype=np.int8)
    out[..., : a.shape[-1]] = a
    return out


def unaligned(arr: np.ndarray, offset: int = 1) -> np.ndarray:
    """A C-contiguous copy of arr whose data pointer is `offset` bytes past a 64-byte boundary."""
    raw = np.zeros(arr.nbytes + 64 + offset, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    view = raw[start : start + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    view[...] = arr
    assert view.ctypes.data % 64 == offset
    return view


def ref_dot(w: np.ndarray, a: np.ndarray) -> np.ndarray:
    return (w.astype(np.int64) @ a.astype(np.int64).T).astype(np.int32)


def rand_ternary(rng, rows, cols):
    return rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)


def rand_act(rng, *shape):
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


# --------------------------------------------------------------------------------------------------
# availability / dispatch


def test_available_isas_and_dispatch():
    isas = K.available_isas()
    assert isas[0] == "scalar"
    feats = K.cpu_features()
    assert ("avx2" in isas) == feats["avx2"]
    assert ("avx512" in isas) == feats["avx512"]
    assert ("neon" in isas) == feats["neon"]
    assert K.selected_isa() in {K.table_name(i) for i in isas}
    if feats["avx2"]:
        assert K.table_name("avx2") == ("avxvnni" if feats["avxvnni"] else "avx2")
    if feats["avx512"]:
        assert K.table_name("avx512") == ("avx512vnni" if feats["avx512vnni"] else "avx512")
    if feats["neon"]:
        assert K.table_name("neon") == ("neon-dotprod" if feats["neon_dotprod"] else "neon")


def test_unavailable_isa_raises():
    missing = [i for i in ("avx2", "avx512", "neon") if i not in K.available_isas()]
    if not missing:
        pytest.skip("every ISA is available: nothing to refuse")
    with pytest.raises(UnsupportedCPUError):
        K.gemv(missing[0], np.zeros((1, 32), np.uint8), np.zeros(128, np.int8), 0)
    with pytest.raises(UnsupportedCPUError):
        K.table_name("no-such-isa")


# --------------------------------------------------------------------------------------------------
# ternary GEMV / GEMM

GEMV_ROWS = [1, 2, 3, 4, 5, 7, 8, 9, 17, 64, 65]
GEMV_COLS = [1, 100, 127, 128, 129, 256, 300, 384, 640, 2047, 2048, 2560, 4096 + 128, 4224, 6912 - 64]


def test_gemv_shapes(isa):
    rng = np.random.default_rng(SEED)
    for rows in GEMV_ROWS:
        for cols in GEMV_COLS:
            w = rand_ternary(rng, rows, cols)
            a = rand_act(rng, cols)
            wp = pack_ternary(w)
            nb = wp.shape[1] // 32
            ap = pad_act(a, nb)
            asum = int(ap.astype(np.int64).sum())
            got = K.gemv(isa, wp, ap, asum)
            np.testing.assert_array_equal(got, ref_dot(w, a), err_msg=f"{isa} rows={rows} cols={cols}")
            np.testing.assert_array_equal(got, K.gemv("scalar", wp, ap, asum))


def test_gemv_unaligned(isa):
    rng = np.random.default_rng(SEED + 1)
    for rows, nb in [(5, 1), (9, 3), (17, 20)]:
        w = rand_ternary(rng, rows, nb * QK)
        a = rand_act(rng, nb * QK)
        wp = unaligned(pack_ternary(w), 1)
        ap = unaligned(a, 3)
        got = K.gemv(isa, wp, ap, int(a.astype(np.int64).sum()))
        np.testing.assert_array_equal(got, ref_dot(w, a))


@pytest.mark.parametrize("nb", [1, 2, 15, 16, 17, 31, 32, 33, 54])
def test_gemv_extremes(isa, nb):
    """All-zero / all +1 / all -1 weights against -128 / 127 activations: the int16 partial sums of
    the maddubs paths reach exactly -32768 at 16 (AVX2) and 32 (AVX-512BW) blocks."""
    cols = nb * QK
    for wval in (0, 1, -1):
        w = np.full((9, cols), wval, dtype=np.int8)
        wp = pack_ternary(w)
        for aval in (-128, 127):
            a = np.full(cols, aval, dtype=np.int8)
            got = K.gemv(isa, wp, a, int(a.astype(np.int64).sum()))
            np.testing.assert_array_equal(got, np.full(9, wval * aval * cols, np.int32))
        a = np.where(np.arange(cols) % 2 == 0, -128, 127).astype(np.int8)
        got = K.gemv(isa, wp, a, int(a.astype(np.int64).sum()))
        np.testing.assert_array_equal(got, ref_dot(w, a))


def test_gemv_long_rows(isa):
    """Rows longer than the VNNI path's 16384-block chunk (its scaled int32 lanes are flushed per
    chunk); all +1 against -128 is the largest magnitude a lane can reach."""
    nb = 16384 + 3
    w = np.ones((2, nb * QK), dtype=np.int8)
    w[1, ::3] = -1
    wp = pack_ternary(w)
    a = np.full(nb * QK, -128, dtype=np.int8)
    got = K.gemv(isa, wp, a, int(a.astype(np.int64).sum()))
    np.testing.assert_array_equal(got, ref_dot(w, a))


@pytest.mark.parametrize("rows,cols", [(6912, 2560), (2560, 6912)])
def test_gemv_model_shapes(isa, rows, cols):
    rng = np.random.default_rng(SEED + rows)
    w = rand_ternary(rng, rows, cols)
    a = rand_act(rng, cols)
    wp = pack_ternary(w)
    got = K.gemv(isa, wp, a, int(a.astype(np.int64).sum()))
    np.testing.assert_array_equal(got, ref_dot(w, a))


GEMM_NTOK = [1, 2, 3, 4, 5, 6, 7, 8, 9, 33]


def test_gemm_shapes(isa):
    rng = np.random.default_rng(SEED + 2)
    for rows in [1, 2, 3, 4, 5, 7, 8, 9, 17, 65]:
        for nb in [1, 2, 3, 5, 20]:
            cols = nb * QK - (rows % 3) * 5  # padded layouts too
            w = rand_ternary(rng, rows, cols)
            wp = pack_ternary(w)
            for ntok in GEMM_NTOK:
                a = rand_act(rng, ntok, cols)
                ap = pad_act(a, nb)
                asum = ap.astype(np.int64).sum(axis=1).astype(np.int32)
                got = K.gemm(isa, wp, ap, asum)
                np.testing.assert_array_equal(
                    got, ref_dot(w, a).T, err_msg=f"{isa} rows={rows} nb={nb} ntok={ntok}"
                )
                if isa != "scalar":
                    np.testing.assert_array_equal(got, K.gemm("scalar", wp, ap, asum))


def test_gemm_strided_unaligned(isa):
    """a_stride > nb * 128, activation rows starting at odd addresses, padded output rows."""
    rng = np.random.default_rng(SEED + 3)
    for rows, nb, ntok, extra, pad in [
        (7, 3, 9, 1, 3),
        (9, 5, 33, 77, 1),
        (4, 1, 5, 31, 0),
        (65, 2, 6, 128, 5),
    ]:
        w = rand_ternary(rng, rows, nb * QK)
        big = rand_act(rng, ntok, nb * QK + extra + 1)
        a = big[:, 1 : 1 + nb * QK]  # row stride nb*128+extra+1, pointer off by one byte
        asum = a.astype(np.int64).sum(axis=1).astype(np.int32)
        wp = unaligned(pack_ternary(w), 1)
        got = K.gemm(isa, wp, a, asum, out_pad=pad)
        np.testing.assert_array_equal(got, ref_dot(w, a).T)


def test_gemm_extremes(isa):
    nb = 33
    cols = nb * QK
    for wval in (0, 1, -1):
        w = np.full((6, cols), wval, dtype=np.int8)
        wp = pack_ternary(w)
        a = np.empty((5, cols), dtype=np.int8)
        a[0::2] = -128
        a[1::2] = 127
        asum = a.astype(np.int64).sum(axis=1).astype(np.int32)
        np.testing.assert_array_equal(K.gemm(isa, wp, a, asum), ref_dot(w, a).T)


# --------------------------------------------------------------------------------------------------
# the B3 layout (tq.h: five base-3 codes a byte)

B3_QK = 320


def pack_b3(w: np.ndarray) -> np.ndarray:
    """int8 ternary [rows, cols] -> the B3 layout uint8 [rows, nb3 * 64], from tq.h's words: a row
    is cut into blocks of 320 values (padded with w = 0); byte j of a block holds values j + 64k
    (k = 0..4) as v = sum_k code_k 3^k, stored as v when v <= 121, else as 0x80 | (242 - v)."""
    rows, cols = w.shape
    nb3 = max(1, -(-cols // B3_QK))
    codes = np.ones((rows, nb3 * B3_QK), dtype=np.int32)
    codes[:, :cols] = w.astype(np.int32) + 1
    out = np.zeros((rows, nb3 * 64), dtype=np.uint8)
    for b in range(nb3):
        for j in range(64):
            v = sum(codes[:, b * B3_QK + 64 * k + j] * 3**k for k in range(5))
            out[:, b * 64 + j] = np.where(v <= 121, v, 0x80 | (242 - v))
    return out


def b3_of(packed: np.ndarray, cols: int) -> np.ndarray:
    """The engine's repack (_core.repack_b3) of TQ rows"""
    from trit.engine import _core

    out = np.empty((packed.shape[0], -(-cols // B3_QK) * 64), dtype=np.uint8)
    _core.repack_b3(packed, cols, out)
    return out


def pad_b3(a: np.ndarray, cols: int) -> np.ndarray:
    out = np.zeros(a.shape[:-1] + (-(-cols // B3_QK) * B3_QK,), dtype=np.int8)
    out[..., : a.shape[-1]] = a
    return out


@pytest.mark.parametrize("cols", [1, 100, 128, 319, 320, 321, 640, 704, 2560, 6912])
def test_b3_repack_matches_the_layout(cols):
    rng = np.random.default_rng(SEED + cols)
    w = rand_ternary(rng, 5, cols)
    w[0] = 1  # every pattern of both signs and the all-zero one turn up across the rows
    w[1] = -1
    np.testing.assert_array_equal(b3_of(pack_ternary(w), cols), pack_b3(w))


def test_b3_repack_in_place_and_bad_codes():
    """dst may be src where B3 rows are the shorter (2560 columns: 512 bytes against 640); a code 3
    (no ternary value) is refused."""
    from trit.engine import _core

    rng = np.random.default_rng(SEED + 9)
    w = rand_ternary(rng, 9, 2560)
    buf = pack_ternary(w)
    out = buf.reshape(-1)[: 9 * 512].reshape(9, 512)
    _core.repack_b3(buf, 2560, out)
    np.testing.assert_array_equal(out, pack_b3(w))
    bad = pack_ternary(w)
    bad[4, 7] |= 0x03
    with pytest.raises(ValueError, match="code 3"):
        _core.repack_b3(bad, 2560, np.empty((9, 512), np.uint8))
    with pytest.raises(ValueError, match="columns"):
        _core.repack_b3(bad, 2561, np.empty((9, 512), np.uint8))


def test_b3_fast_where_measured():
    """The loader picks B3 where b3_fast: the AVX-512 VBMI + VNNI kernels, on Intel CPUs, where
    base3_512.c measured them (AMD's Zen 4 has them, but was not measured)."""
    assert not K.b3_fast("scalar")
    if "avx2" in K.available_isas():
        assert not K.b3_fast("avx2")
    if "avx512" in K.available_isas():
        assert K.b3_fast("avx512") == (_b3_simd() and not K.cpu_features()["amd"])


@pytest.mark.parametrize("cols", [1, 300, 320, 321, 704, 2560, 6912])
def test_b3_gemv(isa, cols):
    rng = np.random.default_rng(SEED + 11 + cols)
    for rows in (1, 2, 3, 5, 8):
        w = rand_ternary(rng, rows, cols)
        a = rand_act(rng, cols)
        wb = b3_of(pack_ternary(w), cols)
        ap = pad_b3(a, cols)
        got = K.gemv(isa, unaligned(wb, rows % 2), ap, int(a.astype(np.int64).sum()), layout="b3")
        np.testing.assert_array_equal(got, ref_dot(w, a), err_msg=f"{isa} rows={rows} cols={cols}")


def test_b3_extremes(isa):
    """+1 / -1 rows against -128 / 127: the 64x field's lanes at their largest (tq_avx512.c)"""
    cols = 6912
    w = np.ones((4, cols), dtype=np.int8)
    w[1] = -1
    w[2, ::2] = -1
    w[3] = 0
    wb = b3_of(pack_ternary(w), cols)
    for aval in (-128, 127):
        a = pad_b3(np.full(cols, aval, dtype=np.int8), cols)
        got = K.gemv(isa, wb, a, int(a.astype(np.int64).sum()), layout="b3")
        np.testing.assert_array_equal(got, ref_dot(w, a[:cols]))


@pytest.mark.parametrize("ntok", [1, 2, 3, 4, 5, 9])
def test_b3_gemm(isa, ntok):
    """strided, unaligned activation rows and padded output rows, as the prompt pass gives them"""
    rng = np.random.default_rng(SEED + 12 + ntok)
    for rows, cols in ((1, 320), (7, 700), (65, 2560), (6, 6912)):  # 6912: three chunks of the AVX-512 GEMM
        w = rand_ternary(rng, rows, cols)
        pcols = -(-cols // B3_QK) * B3_QK
        big = np.zeros((ntok, pcols + 2 + ntok), dtype=np.int8)
        big[:, 1 : 1 + cols] = rand_act(rng, ntok, cols)
        a = big[:, 1 : 1 + pcols]
        asum = a.astype(np.int64).sum(axis=1).astype(np.int32)
        got = K.gemm(isa, b3_of(pack_ternary(w), cols), a, asum, out_pad=ntok % 3, layout="b3")
        np.testing.assert_array_equal(
            got, ref_dot(w, a[:, :cols]).T, err_msg=f"{isa} rows={rows} cols={cols}"
        )


@pytest.mark.parametrize("rows, cols, ntok", [(260, 2560, 37), (151, 6912, 6)])
def test_gemm_large(isa, rows, cols, ntok):
    """Several row panels (tq_gemm.h: 128 KB of weights each, 204 rows at 2560 columns, 74-75 at
    6912), the last one short and of odd length, and a partial token tile."""
    rng = np.random.default_rng(SEED + 4)
    w = rand_ternary(rng, rows, cols)
    a = rand_act(rng, ntok, cols)
    asum = a.astype(np.int64).sum(axis=1).astype(np.int32)
    np.testing.assert_array_equal(K.gemm(isa, pack_ternary(w), a, asum), ref_dot(w, a).T)


# --------------------------------------------------------------------------------------------------
# activation quantization


def ref_quant(x: np.ndarray, npad: int):
    x = x.astype(np.float32)
    amax = np.float32(np.max(np.abs(x))) if x.size else np.float32(0)
    s = np.float32(127) * (np.float32(1) / max(amax, np.float32(1e-5)))  # as torch evaluates 127 / t
    q = np.clip(np.rint(x * s), -128, 127).astype(np.int8)
    out = np.zeros(max(x.size, npad), dtype=np.int8)
    out[: x.size] = q
    return out, int(q.astype(np.int64).sum()), s


def check_quant(isa, x, npad):
    q, s_, scale = K.quant_act(isa, x, npad)
    rq, rs, rscale = ref_quant(x, npad)
    n = x.size
    assert np.float32(scale).view(np.uint32) == np.float32(rscale).view(np.uint32), f"{isa} n={n}"
    np.testing.assert_array_equal(q, rq, err_msg=f"{isa} n={n} npad={npad}")
    assert s_ == rs
    if isa != "scalar":
        sq, ss, sscale = K.quant_act("scalar", x, npad)
        np.testing.assert_array_equal(q, sq)
        assert (s_, np.float32(scale)) == (ss, np.float32(sscale))


QUANT_N = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 127, 128, 129, 2560, 6912]


def test_quant_act_lengths(isa):
    rng = np.random.default_rng(SEED + 5)
    for n in QUANT_N:
        x = (rng.standard_normal(n) * rng.uniform(0.01, 100)).astype(np.float32)
        check_quant(isa, x, n)
        check_quant(isa, x, -(-n // QK) * QK)  # zero padding up to a block
        check_quant(isa, unaligned(x, 4), n + 5)  # one float past a 64-byte boundary


def test_quant_act_ties(isa):
    """amax = 127 makes s exactly 1, so x = k + 0.5 lands exactly on a tie: half to even."""
    half = np.arange(-127, 127, dtype=np.float32) + np.float32(0.5)
    for n in (1, 7, 9, 33, 300):
        x = np.concatenate([[np.float32(127)], np.resize(half, n - 1)]).astype(np.float32)
        check_quant(isa, x, n)
    q, _, scale = K.quant_act(isa, np.array([127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -126.5], np.float32), 8)
    assert scale == 1.0
    np.testing.assert_array_equal(q, [127, 0, 2, 2, 0, -2, -2, -126])


def test_quant_act_extremes(isa):
    rng = np.random.default_rng(SEED + 6)
    fmax = np.finfo(np.float32).max
    tiny = np.finfo(np.float32).smallest_subnormal
    cases = [
        np.zeros(17, np.float32),
        np.full(33, -0.0, np.float32),
        (rng.standard_normal(40) * 1e-7).astype(np.float32),  # amax below 1e-5: s = 127 / 1e-5
        np.full(9, 1e-30, np.float32),
        np.array([tiny, -tiny, 3 * tiny] * 11, np.float32),
        np.array([fmax, -fmax, fmax / 3, 1.0, -1e30] * 7, np.float32),
        (rng.standard_normal(129) * 1e30).astype(np.float32),
        np.array([-5.0] + [5.0] * 16, np.float32),
        np.array([9.999999e-6, -9.999999e-6, 1e-5, 1.0000001e-5] * 5, np.float32),
    ]
    for x in cases:
        for npad in (x.size, x.size + 1, 256):
            check_quant(isa, x, npad)


# --------------------------------------------------------------------------------------------------
# float kernels


def fsum_tol(terms: np.ndarray) -> float:
    n = max(terms.shape[-1], 1)
    return FSUM_K * np.sqrt(n) * EPS32 * float(np.abs(terms).sum()) + 1e-38


def test_f16_gemv(isa):
    rng = np.random.default_rng(SEED + 7)
    for rows in [1, 2, 3, 4, 5, 7, 9, 17, 33]:
        for cols in [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 257, 2560]:
            w16 = (rng.standard_normal((rows, cols)) * 0.5).astype(np.float16)
            x = rng.standard_normal(cols).astype(np.float32)
            got = K.f16_gemv(isa, w16.view(np.uint16), x)
            terms = w16.astype(np.float64) * x.astype(np.float64)
            ref = terms.sum(axis=1)
            for r in range(rows):
                assert abs(got[r] - ref[r]) <= fsum_tol(terms[r]), f"{isa} rows={rows} cols={cols} r={r}"
    # subnormal / large halves go through the hardware converters exactly
    w16 = np.array([[6e-8, -6e-8, 65504, -65504, 1e-5, 0.0, -0.0, 1.0, 3.0]] * 5, np.float16)
    x = unaligned(np.linspace(-2, 2, 9).astype(np.float32), 4)
    got = K.f16_gemv(isa, unaligned(w16.view(np.uint16), 2), x)
    terms = w16.astype(np.float64) * x.astype(np.float64)
    np.testing.assert_allclose(got, terms.sum(axis=1), rtol=0, atol=fsum_tol(terms[0]))


@pytest.mark.parametrize("name", ["avx2", "avx512"])
def test_f16_gemv_both_prefetch_forms_give_the_same_sums(name, monkeypatch):
    """The head GEMV prefetches far ahead or not by CPU (tq_head_prefetch_far: not on AMD, whose
    hardware prefetcher fed it best, far on Intel, where it read 55-63% of the bandwidth without).
    Both forms of both x86 tables run here whatever the CPU, and give the same float32 sums bit for
    bit (one chain, the same order), equal to a float64 reference within rounding."""
    if name not in K.available_isas():
        pytest.skip(f"this CPU/build lacks {name}")
    rng = np.random.default_rng(SEED + 8)
    shapes = [(1, 1), (3, 17), (5, 31), (7, 33), (9, 63), (4, 2560), (33, 2570), (2, 9000)]
    mats = [
        ((rng.standard_normal(s) * 0.5).astype(np.float16), rng.standard_normal(s[1]).astype(np.float32))
        for s in shapes
    ]
    leads, outs = [], []
    for far in ("0", "1"):
        monkeypatch.setenv("TRIT_HEAD_PREFETCH_FAR", far)
        leads.append(K.head_lead(name))
        outs.append([K.f16_gemv(name, unaligned(w.view(np.uint16), 2), x) for w, x in mats])
    near, far_lead = leads
    assert far_lead == 4096 and near == (1024 if name == "avx2" else 0)
    for (w, x), a, b in zip(mats, *outs):
        np.testing.assert_array_equal(a, b)
        terms = w.astype(np.float64) * x.astype(np.float64)
        assert np.all(np.abs(a - terms.sum(axis=1)) <= [fsum_tol(t) for t in terms])
    monkeypatch.delenv("TRIT_HEAD_PREFETCH_FAR")
    assert K.head_lead(name) == (near if K.cpu_features()["amd"] else far_lead)


# (keys, head size, row stride - head size): the attention shapes (head 64 / 128 inside a KV row of
# several heads) and every remainder of the 4-key and 16 / 8 / 4-column blocks
ATTN_SHAPES = [
    (1, 1, 0),
    (2, 3, 1),
    (3, 7, 0),
    (4, 8, 5),
    (5, 9, 0),
    (6, 15, 1),
    (7, 16, 0),
    (8, 17, 3),
    (9, 31, 0),
    (1, 32, 0),
    (11, 33, 2),
    (13, 63, 1),
    (4, 64, 576),
    (17, 65, 0),
    (33, 128, 512),
    (100, 128, 0),
    (3, 129, 7),
    (2, 1000, 24),
    (1, 4096, 0),
]


def kv_rows(rng: np.random.Generator, shape: tuple[int, int], kv: str) -> tuple[np.ndarray, np.ndarray]:
    """Random KV rows in the kernel's input form (float32, float16 bits as uint16, or int8 codes with
    the extremes -128 and 127 included) and as the float64 values they hold."""
    if kv == "q8":
        codes = rng.integers(-128, 128, shape, dtype=np.int8)
        codes.flat[::7] = -128
        codes.flat[3::11] = 127
        return codes, codes.astype(np.float64)
    rows = rng.standard_normal(shape).astype(np.float16 if kv == "f16" else np.float32)
    return (rows.view(np.uint16) if kv == "f16" else rows), rows.astype(np.float64)


@pytest.mark.parametrize("kv", ["f32", "f16", "q8"])
def test_kv_dots(isa, kv):
    rng = np.random.default_rng(SEED + 8)
    for length, n, extra in ATTN_SHAPES:
        rows, exact = kv_rows(rng, (length, n + extra), kv)
        x = rng.standard_normal(n).astype(np.float32)
        terms = exact[:, :n] * x.astype(np.float64)
        for got in (K.kv_dots(isa, rows, x), K.kv_dots(isa, unaligned(rows, 4), unaligned(x, 8))):
            for j in range(length):
                assert abs(got[j] - terms[j].sum()) <= fsum_tol(terms[j]), f"{isa} {kv} {length}x{n} key {j}"
        if kv != "f32":  # halves or codes widened exactly, then the f32 kernel's own sums, bit for bit
            np.testing.assert_array_equal(
                K.kv_dots(isa, rows, x), K.kv_dots(isa, exact.astype(np.float32), x)
            )


@pytest.mark.parametrize("kv", ["f32", "f16", "q8"])
def test_kv_wsum(isa, kv):
    rng = np.random.default_rng(SEED + 9)
    for length, n, extra in ATTN_SHAPES:
        rows, exact = kv_rows(rng, (length, n + extra), kv)
        w = rng.random(length).astype(np.float32)  # softmax weights: positive
        terms = (w.astype(np.float64)[:, None] * exact[:, :n]).T  # [n, length]
        for got in (K.kv_wsum(isa, rows, w, n), K.kv_wsum(isa, unaligned(rows, 4), unaligned(w, 8), n)):
            assert got.shape == (n,)
            for i in range(n):
                assert abs(got[i] - terms[i].sum()) <= fsum_tol(terms[i]), (
                    f"{isa} {kv} {length}x{n} column {i}"
                )
        if kv != "f32":
            np.testing.assert_array_equal(
                K.kv_wsum(isa, rows, w, n), K.kv_wsum(isa, exact.astype(np.float32), w, n)
            )
    # no keys: zeros, every column written
    empty = np.zeros((0, 20), {"f32": np.float32, "f16": np.uint16, "q8": np.int8}[kv])
    np.testing.assert_array_equal(K.kv_wsum(isa, empty, np.zeros(0, np.float32), 20), 0)


def test_scale_out_bit_exact(isa):
    # the ternary dot products back to floats: bit-identical to numpy's float32 (acc / sa) * scale
    rng = np.random.default_rng(SEED + 10)
    for n in [1, 3, 4, 7, 8, 15, 16, 17, 31, 64, 65, 2560, 6913]:
        acc = rng.integers(-(1 << 20), 1 << 20, n).astype(np.int32)
        acc[: min(n, 3)] = [0, (1 << 24) + 1, -(1 << 24) - 3][: min(n, 3)]  # exact and rounded int -> float
        scale = (rng.random(n) + 0.01).astype(np.float32)
        sa = np.float32(rng.random() * 200 + 0.5)
        ref = (acc.astype(np.float32) / sa) * scale
        for got in (
            K.scale_out(isa, acc, float(sa), scale),
            K.scale_out(isa, unaligned(acc, 4), float(sa), unaligned(scale, 8)),
        ):
            np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32), err_msg=f"{isa} n={n}")


def _softmax_ref(x: np.ndarray, scale: float) -> np.ndarray:
    v = x.astype(np.float64) * np.float32(scale)
    e = np.exp(v - v.max())
    return e / e.sum()


def test_softmax(isa):
    # attention weights: within a few ulp of float64 (the SIMD exp is a polynomial, scalar uses
    # expf); scalar is the reference loop itself
    rng = np.random.default_rng(SEED + 11)
    for n in [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 2000]:
        for spread in (1.0, 30.0):  # ordinary scores, and ones whose weights underflow
            x = (rng.standard_normal(n) * spread).astype(np.float32)
            got = K.softmax(isa, unaligned(x, 4), 0.088)
            ref = _softmax_ref(x, 0.088)
            assert got.dtype == np.float32 and np.isfinite(got).all()
            np.testing.assert_allclose(
                got, ref, rtol=2e-6, atol=1e-37, err_msg=f"{isa} n={n} spread={spread}"
            )
            assert abs(float(got.astype(np.float64).sum()) - 1.0) < 1e-5
    # equal scores: exact uniform weights; one dominant score: weight 1 and exact zeros beyond range
    np.testing.assert_array_equal(K.softmax(isa, np.full(19, 3.0, np.float32), 1.0), np.float32(1 / 19))
    got = K.softmax(isa, np.array([0, 0, 1000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], np.float32), 1.0)
    assert got[2] == 1.0 and (np.delete(got, 2) < 1e-37).all()


# --------------------------------------------------------------------------------------------------
# half conversions (portable helpers shared by every path)


def test_f16_to_f32_exhaustive():
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    got = K.f16_to_f32(h)
    ref = h.view(np.float16).astype(np.float32)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), ref[~nan].view(np.uint32))


def test_f32_to_f16():
    rng = np.random.default_rng(SEED + 10)
    fi16 = np.finfo(np.float16)
    edges = np.array(
        [
            0.0,
            -0.0,
            1.0,
            -1.0,
            65504,
            65519.996,
            65520,
            -65520,
            1e6,
            np.inf,
            -np.inf,
            np.nan,
            float(fi16.smallest_subnormal),
            float(fi16.smallest_subnormal) / 2,
            float(fi16.smallest_subnormal) * 0.5000001,
            float(fi16.smallest_subnormal) * 1.5,
            float(fi16.smallest_normal),
            float(fi16.smallest_normal) * (1 - 2**-11),
            2.0**-25,
            2.0**-26,
            1 + 2.0**-11,
            1 + 3 * 2.0**-11,
            1e-45,
            3.4e38,
        ],
        dtype=np.float32,
    )
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    finite = halves[np.isfinite(halves)]
    mids = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)  # exact ties
    rand = np.concatenate(
        [
            rng.standard_normal(20000).astype(np.float32) * np.float32(1000),
            (rng.standard_normal(20000) * 1e-5).astype(np.float32),
            rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        ]
    )
    vals = np.concatenate([edges, finite, mids, np.nextafter(mids, np.float32(np.inf)), rand])
    with np.errstate(over="ignore", invalid="ignore"):
        ref = vals.astype(np.float16)
    got = K.f32_to_f16(vals)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(got.view(np.float16)), nan)
    np.testing.assert_array_equal(got[~nan], ref[~nan].view(np.uint16))


def ref_sum_squares(x: np.ndarray) -> float:
    """tq_norm.h's spec in numpy: eight float64 sums, lane j adding x[i]^2 for i = j mod 8 in
    increasing i over the multiples of 8 (one vector add per step keeps that order), the n % 8
    leftovers added to lane 0 in order, then ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7))."""
    sq = x.astype(np.float64) ** 2  # exact: a float's square fits in a double
    body = len(sq) // 8 * 8
    p = np.zeros(8)
    for row in sq[:body].reshape(-1, 8):
        p = p + row
    for v in sq[body:]:
        p[0] = p[0] + v
    return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]))


def test_sum_squares_bit_exact():
    """RMSNorm's sum of squares (SSE2 / NEON vectors, or the scalar loop) equals the spec bit for
    bit: every length around the 8-value steps, model widths, wide ranges, odd alignments."""
    rng = np.random.default_rng(SEED)
    lengths = [*range(40), 255, 256, 257, 2560, 6912, 6913]
    for n in lengths:
        for scale in (1.0, 1e-20, 1e18):
            x = (rng.standard_normal(n) * scale * np.exp(rng.uniform(-8, 8, n))).astype(np.float32)
            for arr in (x, unaligned(x, 4)) if n else (x,):
                for pf in (False, True):
                    got = K.sum_squares(arr, pf)
                    assert got == ref_sum_squares(x), (n, scale, pf)
    x = np.array([3.4e38, -3.4e38, 1e-45, 0.0, -0.0, 1.5, 2.0, 7.0, 11.0], dtype=np.float32)
    assert K.sum_squares(x) == ref_sum_squares(x)
