"""engine/ternary.py: the TQ layout, I2_S, TQ1_0 and TQ2_0 against independent references (the
formats.md description written out per element here, and gguf.quants as the llama.cpp oracle)."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import quants
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from trit.engine import _core, ternary
from trit.engine.errors import ModelFormatError
from trit.engine.ternary import (
    i2s_bytes,
    i2s_to_ternary_tensor,
    pack_tq,
    ternary_tensor_from_gguf,
    tq1_0_bytes,
    tq1_0_to_ternary_tensor,
    tq2_0_bytes,
    tq2_0_to_ternary_tensor,
    unpack_tq,
)

pytestmark = pytest.mark.timeout(120)


def rand_ternary(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1, 2, (rows, cols)).astype(np.int8)


def ref_i2s_value(data: bytes, row: int, col: int, cols: int) -> int:
    """formats.md, per element: rows cut into 128-value blocks of 32 bytes; byte j of a block holds
    values j, j+32, j+64, j+96 in bits 7-6, 5-4, 3-2, 1-0; code = w + 1."""
    block, within = divmod(col, 128)
    group, j = divmod(within, 32)
    byte = data[row * (cols // 4) + block * 32 + j]
    code = (byte >> (6 - 2 * group)) & 3
    return code - 1


ternary_matrices = st.tuples(st.integers(1, 5), st.integers(1, 300)).flatmap(
    lambda rc: hnp.arrays(np.int8, rc, elements=st.integers(-1, 1))
)


# -- TQ layout --------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(ternary_matrices)
def test_pack_unpack_round_trip(w: np.ndarray) -> None:
    rows, cols = w.shape
    p = pack_tq(w)
    assert p.dtype == np.uint8 and p.flags.c_contiguous
    assert p.shape == (rows, -(-cols // 128) * 32)
    np.testing.assert_array_equal(unpack_tq(p, cols), w)
    # padding is code 1 (w = 0)
    np.testing.assert_array_equal(unpack_tq(p, p.shape[1] * 4)[:, cols:], 0)


def test_pack_matches_per_element_reference() -> None:
    w = rand_ternary(3, 256, 1)
    data = pack_tq(w).tobytes()
    for r in range(3):
        for c in range(256):
            assert ref_i2s_value(data, r, c, 256) == w[r, c]


def test_pack_rejects_non_ternary() -> None:
    with pytest.raises(ValueError):
        pack_tq(np.array([[2, 0]], dtype=np.int8))
    with pytest.raises(ValueError):
        pack_tq(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="code 3"):
        unpack_tq(np.full((1, 32), 0xFF, dtype=np.uint8), 128)


# -- I2_S -------------------------------------------------------------------------------------------


def test_i2s_bytes_layout_and_tail() -> None:
    w = rand_ternary(4, 384, 2)
    b = i2s_bytes(w, 0.375)
    assert b.dtype == np.uint8 and b.size == 4 * 384 // 4 + 32
    data = b.tobytes()
    for r in range(4):
        for c in range(384):
            assert ref_i2s_value(data, r, c, 384) == w[r, c]
    assert struct.unpack("<f", data[-32:-28])[0] == 0.375
    assert data[-28:] == b"\0" * 28
    with pytest.raises(ValueError):
        i2s_bytes(rand_ternary(2, 100), 1.0)


def test_i2s_to_ternary_tensor_is_zero_copy() -> None:
    w = rand_ternary(6, 256, 3)
    raw = i2s_bytes(w, 1.5)
    raw[-28:] = 0xAB  # the rest of the tail is unspecified: garbage must be ignored
    t = i2s_to_ternary_tensor(raw, 6, 256, "blk.0.attn_q.weight", "m.gguf")
    assert np.shares_memory(t.packed, raw)
    assert (t.rows, t.cols, t.source_type) == (6, 256, "I2_S")
    assert t.scale.dtype == np.float32 and t.scale.shape == (6,) and np.all(t.scale == 1.5)
    np.testing.assert_array_equal(unpack_tq(t.packed, 256), w)
    t2 = ternary_tensor_from_gguf(raw, "I2_S", 6, 256, "x", "m.gguf")
    np.testing.assert_array_equal(t2.packed, t.packed)


def test_i2s_rejects_code_3() -> None:
    raw = i2s_bytes(rand_ternary(2, 128, 4), 1.0)
    raw[37] = 0b01_11_01_00  # one field with code 3
    with pytest.raises(ModelFormatError, match="blk.7.ffn_up.weight contains the invalid 2-bit code 3") as e:
        i2s_to_ternary_tensor(raw, 2, 128, "blk.7.ffn_up.weight", "m.gguf")
    assert e.value.path == "m.gguf"


def test_i2s_rejects_all_zero_tensor() -> None:
    raw = i2s_bytes(np.zeros((3, 256), dtype=np.int8), 1.0)
    with pytest.raises(ModelFormatError, match="tensor blk.0.attn_k.weight is all zero"):
        i2s_to_ternary_tensor(raw, 3, 256, "blk.0.attn_k.weight", "m.gguf")


def _scan_ref(b: np.ndarray) -> tuple[bool, bool]:
    fields = np.stack([(b >> s) & 3 for s in (0, 2, 4, 6)])
    return bool((fields == 3).any()), bool((b == 0x55).all())


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099])
def test_scan_ternary_codes_finds_every_code_3_and_all_zero(n: int) -> None:
    from trit.engine._core import scan_ternary_codes

    rng = np.random.default_rng(n)
    valid = (rng.integers(0, 3, size=(n, 4)) << np.array([0, 2, 4, 6])).sum(axis=1).astype(np.uint8)
    assert scan_ternary_codes(valid) == _scan_ref(valid)
    zero = np.full(n, 0x55, dtype=np.uint8)
    assert scan_ternary_codes(zero) == (False, True)
    # code 3 in any field of any byte (the 8-byte words and the tail alike), and one nonzero
    # weight anywhere in an all-zero tensor
    for i in range(n) if n <= 65 else list(range(16)) + list(range(n - 16, n)):
        for shift in (0, 2, 4, 6):
            b = valid.copy()
            b[i] |= np.uint8(3 << shift)
            assert scan_ternary_codes(b) == (True, False) == _scan_ref(b)[:1] + (False,)
            z = zero.copy()
            z[i] ^= np.uint8(1 << shift)  # that weight becomes -1
            assert scan_ternary_codes(z) == (False, False) == _scan_ref(z)
    # read-only views (a model's in-memory copy is read-only)
    valid.flags.writeable = False
    assert scan_ternary_codes(valid) == _scan_ref(valid)


def test_i2s_rejects_bad_shapes_and_scales() -> None:
    raw = np.full(2 * 192 // 4 + 32, 0x55, dtype=np.uint8)
    with pytest.raises(ModelFormatError, match="not a multiple of 128"):
        i2s_to_ternary_tensor(raw, 2, 192, "w", "m.gguf")
    raw = i2s_bytes(rand_ternary(1, 128), float("nan"))
    with pytest.raises(ModelFormatError, match="not a finite number"):
        i2s_to_ternary_tensor(raw, 1, 128, "w", "m.gguf")
    with pytest.raises(ModelFormatError, match="bytes"):
        i2s_to_ternary_tensor(raw[:20], 1, 128, "w", "m.gguf")


# -- TQ2_0 / TQ1_0 vs gguf.quants ------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 4),
    nblk=st.integers(1, 3),
    seed=st.integers(0, 2**31),
    scale=st.floats(0.0009765625, 10.0, width=32),
    zero_block=st.booleans(),
)
def test_tq_encoders_match_gguf_quantize(
    rows: int, nblk: int, seed: int, scale: float, zero_block: bool
) -> None:
    w = rand_ternary(rows, nblk * 256, seed)
    if zero_block:
        w[0, :256] = 0  # an all-zero block: llama.cpp writes d = 0 there
        w[-1, -1] = 1  # but never an all-zero tensor
    x = w.astype(np.float32) * np.float32(scale)
    for enc, qt, dec in (
        (tq2_0_bytes, Q.TQ2_0, tq2_0_to_ternary_tensor),
        (tq1_0_bytes, Q.TQ1_0, tq1_0_to_ternary_tensor),
    ):
        ours = enc(w, scale)
        theirs = quants.quantize(x, qt).reshape(-1)
        np.testing.assert_array_equal(ours, theirs)
        deq = quants.dequantize(ours.reshape(rows, -1), qt)
        np.testing.assert_array_equal(deq, w.astype(np.float32) * np.float32(np.float16(scale)))
        t = dec(theirs, rows, nblk * 256, "w", "m.gguf")
        assert t.source_type == qt.name
        np.testing.assert_array_equal(unpack_tq(t.packed, nblk * 256), w)
        expect = np.where((w != 0).any(axis=1), np.float32(np.float16(scale)), 0).astype(np.float32)
        np.testing.assert_array_equal(t.scale, expect)


@settings(max_examples=60, deadline=None)
@given(blocks=hnp.arrays(np.uint8, (3, 52), elements=st.integers(0, 255)))
def test_tq1_0_decodes_arbitrary_bytes_like_ggml(blocks: np.ndarray) -> None:
    """Non-canonical base-3 bytes must decode exactly as ggml does."""
    d = np.float16(0.5)
    raw = np.concatenate([blocks, np.tile(np.array([d]).view(np.uint8), (3, 1))], axis=1).reshape(-1)
    ref = quants.dequantize(raw.reshape(1, -1), Q.TQ1_0).reshape(-1) / np.float32(d)
    if not np.any(ref):
        with pytest.raises(ModelFormatError, match="all zero"):
            tq1_0_to_ternary_tensor(raw, 1, 768, "w", "m.gguf")
        return
    t = tq1_0_to_ternary_tensor(raw, 1, 768, "w", "m.gguf")
    np.testing.assert_array_equal(unpack_tq(t.packed, 768).reshape(-1), ref.astype(np.int8))


@settings(max_examples=60, deadline=None)
@given(qs=hnp.arrays(np.uint8, (2, 64), elements=st.integers(0, 255)))
def test_tq2_0_decodes_like_ggml_and_rejects_code_3(qs: np.ndarray) -> None:
    d = np.float16(0.25)
    raw = np.concatenate([qs, np.tile(np.array([d]).view(np.uint8), (2, 1))], axis=1).reshape(-1)
    ref = quants.dequantize(raw.reshape(1, -1), Q.TQ2_0).reshape(-1) / np.float32(d)
    if np.any(ref == 2):
        with pytest.raises(ModelFormatError, match="code 3"):
            tq2_0_to_ternary_tensor(raw, 1, 512, "w", "m.gguf")
    elif not np.any(ref):
        with pytest.raises(ModelFormatError, match="all zero"):
            tq2_0_to_ternary_tensor(raw, 1, 512, "w", "m.gguf")
    else:
        t = tq2_0_to_ternary_tensor(raw, 1, 512, "w", "m.gguf")
        np.testing.assert_array_equal(unpack_tq(t.packed, 512).reshape(-1), ref.astype(np.int8))


# The numpy repack that the C one (engine/kernels/repack.c) replaced, kept as its reference.
_REF_TRITS = np.array(
    [[(((b * 3**k) & 0xFF) * 3) >> 8 for k in range(5)] for b in range(256)], dtype=np.uint8
)  # [256, 5]: trit k of a TQ1_0 byte
_REF_REV_FIELDS = np.array(
    [((b & 3) << 6) | (((b >> 2) & 3) << 4) | (((b >> 4) & 3) << 2) | (b >> 6) for b in range(256)],
    dtype=np.uint8,
)


def _ref_codes_to_tq(codes: np.ndarray) -> np.ndarray:
    rows, n = codes.shape
    c = codes.reshape(rows, n // 128, 4, 32)
    return (c[:, :, 0] << 6 | c[:, :, 1] << 4 | c[:, :, 2] << 2 | c[:, :, 3]).reshape(rows, n // 4)


def _ref_repack(kind: str, blk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """blocks uint8 [n, 54 | 66] -> (TQ codes uint8 [n, 64], nonzero bool [n])."""
    n = blk.shape[0]
    if kind == "TQ2_0":
        qs = blk[:, :64]
        return _REF_REV_FIELDS[qs], (qs != 0x55).any(axis=1)
    codes = np.empty((n, 256), dtype=np.uint8)
    codes[:, :160] = _REF_TRITS[blk[:, :32]].transpose(0, 2, 1).reshape(n, 160)  # value m + 32k
    codes[:, 160:240] = _REF_TRITS[blk[:, 32:48]].transpose(0, 2, 1).reshape(n, 80)  # 160 + m + 16k
    codes[:, 240:] = _REF_TRITS[blk[:, 48:52], :4].transpose(0, 2, 1).reshape(n, 16)  # 240 + m + 4k
    return _ref_codes_to_tq(codes), (codes != 1).any(axis=1)


def _edge_blocks(kind: str, n_random: int, seed: int) -> np.ndarray:
    """Every byte value at every position (block i holds (i + p) % 256 at byte p), the values of
    all-zero, all-(+1), all-(-1) blocks, the base-3 range ends 242 / 243 / 255, then random bytes."""
    size = 54 if kind == "TQ1_0" else 66
    p = np.arange(size)
    sweep = ((np.arange(256)[:, None] + p[None, :]) % 256).astype(np.uint8)
    if kind == "TQ1_0":  # canonical encodings: all 0 trits, all 1 (w = 0), all 2 (w = +1)
        enc = tq1_0_bytes(np.stack([np.full(256, w, np.int8) for w in (-1, 0, 1)]), 1.0)
        special = enc.reshape(3, size)
    else:
        special = np.stack([np.full(size, v, np.uint8) for v in (0x00, 0x55, 0xAA, 0xFF)])
    fills = np.stack([np.full(size, v, np.uint8) for v in (242, 243, 255)])
    rnd = np.random.default_rng(seed).integers(0, 256, (n_random, size), dtype=np.uint8)
    return np.concatenate([sweep, special, fills, rnd])


@pytest.mark.parametrize("kind", ["TQ1_0", "TQ2_0"])
def test_c_repack_equals_the_numpy_reference(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C repack gives the numpy one's codes and nonzero flags bit for bit, on any bytes, in
    one call and split into slices over threads (with a short last slice)."""
    blk = _edge_blocks(kind, 1000, 1)
    blk = blk[: len(blk) // 2 * 2]  # whole rows of two blocks below
    want_packed, want_nz = _ref_repack(kind, blk)
    for n in (0, 1, 2, 3, 255, len(blk)):
        out = np.empty((n, 64), np.uint8)
        nz = np.empty(n, np.uint8)
        _core.repack_ternary_blocks(kind, blk[:n], out, nz)
        np.testing.assert_array_equal(out, want_packed[:n])
        np.testing.assert_array_equal(nz.view(bool), want_nz[:n])
    for slice_blocks in (7, ternary.REPACK_SLICE):
        monkeypatch.setattr(ternary, "REPACK_SLICE", slice_blocks)
        packed, nonzero = ternary._repack(kind, blk.reshape(len(blk) // 2, 2, -1))
        np.testing.assert_array_equal(packed.reshape(-1, 64), want_packed)
        np.testing.assert_array_equal(nonzero.reshape(-1), want_nz)


@pytest.mark.parametrize("kind", ["TQ1_0", "TQ2_0"])
def test_tq_tensor_repack_is_unchanged(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole tensors (codes, per-row scales) as the numpy implementation made them: random
    canonical weights with zero blocks and rows, larger than one slice of the threaded split."""
    monkeypatch.setattr(ternary, "REPACK_SLICE", 50)
    rows, cols = 96, 1024
    w = rand_ternary(rows, cols, 11)
    w[3] = 0  # an all-zero row: scale 0
    w[5, 256:512] = 0  # an all-zero block
    s = np.linspace(0.25, 4, rows).astype(np.float32)
    raw = (tq1_0_bytes if kind == "TQ1_0" else tq2_0_bytes)(w, s)
    t = ternary_tensor_from_gguf(raw, kind, rows, cols, "w", "m.gguf")
    blk = raw.reshape(rows * cols // 256, -1)
    want_packed, _ = _ref_repack(kind, blk)
    np.testing.assert_array_equal(t.packed, want_packed.reshape(rows, cols // 4))
    np.testing.assert_array_equal(t.packed, pack_tq(w))
    np.testing.assert_array_equal(t.scale, np.where((w != 0).any(axis=1), s.astype(np.float16), 0))


def test_repack_refuses_wrong_shapes() -> None:
    out, nz = np.zeros((1, 64), np.uint8), np.zeros(1, np.uint8)
    with pytest.raises(ValueError, match="kind"):
        _core.repack_ternary_blocks("I2_S", np.zeros((1, 54), np.uint8), out, nz)
    with pytest.raises(ValueError, match="54"):
        _core.repack_ternary_blocks("TQ1_0", np.zeros((1, 66), np.uint8), out, nz)
    with pytest.raises(ValueError, match="out must be"):
        _core.repack_ternary_blocks("TQ2_0", np.zeros((2, 66), np.uint8), out, np.zeros(2, np.uint8))


def test_per_row_scales_are_kept() -> None:
    w = rand_ternary(3, 512, 5)
    s = np.array([0.5, 2.0, 0.125], dtype=np.float32)
    for enc, dec in ((tq2_0_bytes, tq2_0_to_ternary_tensor), (tq1_0_bytes, tq1_0_to_ternary_tensor)):
        t = dec(enc(w, s), 3, 512, "w", "m.gguf")
        np.testing.assert_array_equal(t.scale, s)


def test_zero_block_with_any_scale_is_accepted() -> None:
    w = rand_ternary(2, 512, 6)
    w[1, 256:] = 0
    for enc, dec, d_at in (
        (tq2_0_bytes, tq2_0_to_ternary_tensor, (64, 66)),
        (tq1_0_bytes, tq1_0_to_ternary_tensor, (52, 54)),
    ):
        raw = enc(w, 1.0)
        bpb = d_at[1]
        raw.reshape(2, 2, bpb)[1, 1, d_at[0] : d_at[1]] = np.array([np.float16(7.0)]).view(np.uint8)
        t = dec(raw, 2, 512, "w", "m.gguf")
        np.testing.assert_array_equal(t.scale, [1.0, 1.0])


@pytest.mark.parametrize("kind", ["TQ2_0", "TQ1_0"])
def test_varying_block_scales_are_rejected(kind: str) -> None:
    w = rand_ternary(2, 512, 7)
    x = w.astype(np.float32)
    x[1, 256:] *= 3.0  # row 1: two blocks with different d
    raw = quants.quantize(x, Q[kind]).reshape(-1)
    with pytest.raises(
        ModelFormatError, match=f"{kind} tensor blk.1.ffn_gate.weight has varying block scales"
    ):
        ternary_tensor_from_gguf(raw, kind, 2, 512, "blk.1.ffn_gate.weight", "m.gguf")


@pytest.mark.parametrize("kind", ["TQ2_0", "TQ1_0"])
def test_tq_all_zero_and_bad_shapes_rejected(kind: str) -> None:
    raw = quants.quantize(np.zeros((2, 256), dtype=np.float32), Q[kind]).reshape(-1)
    with pytest.raises(ModelFormatError, match="all zero"):
        ternary_tensor_from_gguf(raw, kind, 2, 256, "w", "m.gguf")
    with pytest.raises(ModelFormatError, match="multiple of 256"):
        ternary_tensor_from_gguf(raw, kind, 4, 128, "w", "m.gguf")
    with pytest.raises(ModelFormatError, match="bytes"):
        ternary_tensor_from_gguf(raw[:-1], kind, 2, 256, "w", "m.gguf")


def test_non_finite_block_scale_rejected() -> None:
    raw = tq2_0_bytes(rand_ternary(1, 256), 1.0)
    raw[64:66] = np.array([np.float16(np.inf)]).view(np.uint8)
    with pytest.raises(ModelFormatError, match="scale inf"):
        tq2_0_to_ternary_tensor(raw, 1, 256, "w", "m.gguf")


def test_other_types_rejected() -> None:
    with pytest.raises(ModelFormatError, match="must be I2_S, TQ1_0 or TQ2_0"):
        ternary_tensor_from_gguf(np.zeros(10, np.uint8), "Q8_0", 1, 32, "w", "m.gguf")


# -- 2B4T shapes ------------------------------------------------------------------------------------


def test_2b4t_shape_speed() -> None:
    """6912 x 2560 (gate/up of 2B4T): each step must take well under a second."""
    rows, cols = 6912, 2560
    w = rand_ternary(rows, cols, 8)
    limit = 1.0  # generous for a loaded 2-core CI box; typical times are 10-100 ms
    t0 = time.perf_counter()
    packed = pack_tq(w)
    t_pack = time.perf_counter() - t0
    raw = i2s_bytes(w, 0.5)
    t0 = time.perf_counter()
    t = i2s_to_ternary_tensor(raw, rows, cols, "w", "m.gguf")
    t_i2s = time.perf_counter() - t0
    np.testing.assert_array_equal(t.packed, packed)
    raw2 = tq2_0_bytes(w, 0.5)
    t0 = time.perf_counter()
    t2 = tq2_0_to_ternary_tensor(raw2, rows, cols, "w", "m.gguf")
    t_tq2 = time.perf_counter() - t0
    np.testing.assert_array_equal(t2.packed, packed)
    raw1 = tq1_0_bytes(w, 0.5)
    t0 = time.perf_counter()
    t1 = tq1_0_to_ternary_tensor(raw1, rows, cols, "w", "m.gguf")
    t_tq1 = time.perf_counter() - t0
    np.testing.assert_array_equal(t1.packed, packed)
    assert max(t_pack, t_i2s, t_tq2, t_tq1) < limit, (t_pack, t_i2s, t_tq2, t_tq1)
