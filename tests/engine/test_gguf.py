"""engine/gguf.py (reader) and engine/gguf_writer.py: round trips, the `gguf` package as an
independent oracle, and hostile files (hand-built here, independently of our writer)."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import quants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trit.engine.errors import ModelFormatError
from trit.engine.gguf import GGML_TYPES, GGUFFile, GGUFValueType
from trit.engine.gguf_writer import GGUFWriter

pytestmark = pytest.mark.timeout(120)

# -- a tiny hand-rolled GGUF builder (independent of engine/gguf_writer.py) -------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def gstr(x: str | bytes) -> bytes:
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def tinfo(name: str, shape: list[int], type_id: int, offset: int, n_dims: int | None = None) -> bytes:
    nd = len(shape) if n_dims is None else n_dims
    return (
        gstr(name)
        + struct.pack("<I", nd)
        + struct.pack(f"<{len(shape)}Q", *shape)
        + struct.pack("<IQ", type_id, offset)
    )


def build(
    kvs: list[bytes],
    infos: list[bytes],
    data: bytes,
    *,
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    alignment: int = 32,
    magic: bytes = b"GGUF",
) -> bytes:
    head = magic + struct.pack(
        "<IQQ", version, len(infos) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    head += b"".join(kvs) + b"".join(infos)
    head += b"\0" * (-len(head) % alignment)
    return head + data


def small_valid() -> bytes:
    """Two keys, an F32 [4] tensor at 0 and an F16 [8, 2] tensor at 32; the file ends exactly at
    the end of the last tensor, so every shorter prefix is invalid."""
    kvs = [
        kv("general.architecture", STR, gstr("llama")),
        kv("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, 3) + gstr("a") + gstr("bc") + gstr("")),
        kv("x.count", U32, struct.pack("<I", 7)),
    ]
    infos = [tinfo("a", [4], 0, 0), tinfo("b", [8, 2], 1, 32)]
    d1 = np.arange(4, dtype="<f4").tobytes()
    d2 = np.arange(16, dtype="<f2").tobytes()
    return build(kvs, infos, d1 + b"\0" * 16 + d2)


def write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def open_all(p: Path) -> None:
    """Open and touch every tensor: anything wrong must surface as ModelFormatError."""
    with GGUFFile(p) as f:
        for name, info in f.tensors.items():
            raw = f.tensor_data(name)
            assert raw.size == info.nbytes
            if info.type_name in ("F32", "F16", "BF16", "I8", "I16", "I32", "I64", "F64"):
                f.tensor_array(name).sum()


def expect_error(tmp_path: Path, data: bytes, *fragments: str) -> ModelFormatError:
    p = write(tmp_path, data)
    with pytest.raises(ModelFormatError) as ei:
        open_all(p)
    msg = str(ei.value)
    assert str(p) in msg and ei.value.path == str(p)
    for frag in fragments:
        assert frag in msg, msg
    return ei.value


# -- the type table ---------------------------------------------------------------------------------


def test_type_table_matches_gguf_package() -> None:
    for t in GGML_TYPES.values():
        if t.name == "I2_S":
            assert (t.id, t.block_size, t.type_size, t.tail) == (36, 128, 32, 32)
            continue
        q = gguf.GGMLQuantizationType[t.name]
        assert q.value == t.id
        assert gguf.GGML_QUANT_SIZES[q] == (t.block_size, t.type_size), t.name
    required = {
        "F32": 0,
        "F16": 1,
        "Q4_0": 2,
        "Q4_1": 3,
        "Q5_0": 6,
        "Q5_1": 7,
        "Q8_0": 8,
        "Q8_1": 9,
        "Q2_K": 10,
        "Q3_K": 11,
        "Q4_K": 12,
        "Q5_K": 13,
        "Q6_K": 14,
        "Q8_K": 15,
        "I8": 24,
        "I16": 25,
        "I32": 26,
        "I64": 27,
        "F64": 28,
        "BF16": 30,
        "TQ1_0": 34,
        "TQ2_0": 35,
        "I2_S": 36,
    }
    for name, tid in required.items():
        assert GGML_TYPES[tid].name == name


# -- round trips ------------------------------------------------------------------------------------


def test_small_valid_file(tmp_path: Path) -> None:
    p = write(tmp_path, small_valid())
    with GGUFFile(p) as f:
        assert f.version == 3
        assert f.metadata["general.architecture"] == "llama"
        assert f.metadata["tokenizer.ggml.tokens"] == ["a", "bc", ""]
        assert f.metadata["x.count"] == 7
        assert f.metadata_types["x.count"] == GGUFValueType.UINT32
        a, b = f.tensors["a"], f.tensors["b"]
        assert a.shape == (4,) and a.type_name == "F32" and a.nbytes == 16
        assert b.shape == (8, 2) and b.type_name == "F16" and b.offset == a.offset + 32
        np.testing.assert_array_equal(f.tensor_array("a"), np.arange(4, dtype=np.float32))
        arr = f.tensor_array("b")
        assert arr.shape == (2, 8) and arr.dtype == np.float16
        np.testing.assert_array_equal(arr.ravel(), np.arange(16, dtype=np.float16))


def _full_writer(path: Path, version: int = 3, alignment: int = 32) -> dict[str, np.ndarray]:
    w = GGUFWriter(path, alignment=alignment, version=version)
    w.add_metadata("u8", 200, GGUFValueType.UINT8)
    w.add_metadata("i8", -100, GGUFValueType.INT8)
    w.add_metadata("u16", 65000, GGUFValueType.UINT16)
    w.add_metadata("i16", -30000, GGUFValueType.INT16)
    w.add_uint32("u32", 4_000_000_000)
    w.add_int32("i32", -2_000_000_000)
    w.add_float32("f32", 1e-5)
    w.add_bool("bool", True)
    w.add_string("str", "héllo ✓")
    w.add_uint64("u64", 2**63 + 5)
    w.add_metadata("i64", -(2**62), GGUFValueType.INT64)
    w.add_metadata("f64", 0.1, GGUFValueType.FLOAT64)
    w.add_array("tokens", [f"tok{i}" for i in range(1000)] + ["", "Ġ", "\u00e9"])
    w.add_array("types", np.arange(300, dtype=np.int32) % 5)
    w.add_array("scores", np.linspace(-1, 1, 7, dtype=np.float32))
    w.add_array("flags", [True, False, True])
    w.add_array("nested", [[1, 2, 3], ["x", "yz"], [[0.5, 1.5], []]])
    w.add_array("empty", [], GGUFValueType.STRING)
    rng = np.random.default_rng(1)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((4, 64)).astype(np.float16),
        "bf16": (rng.integers(0, 65535, (2, 3, 8))).astype(np.uint16),
        "i32": rng.integers(-100, 100, (7,)).astype(np.int32),
    }
    w.add_tensor("f32", tensors["f32"])
    w.add_tensor("f16", tensors["f16"])
    w.add_tensor("bf16", tensors["bf16"], "BF16")
    w.add_tensor("i32", tensors["i32"])
    q8 = quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_raw_tensor("q8", [64, 2], 8, q8.tobytes())
    tensors["q8"] = q8
    w.write()
    return tensors


@pytest.mark.parametrize("version,alignment", [(3, 32), (2, 32), (3, 64), (3, 8)])
def test_writer_reader_round_trip(tmp_path: Path, version: int, alignment: int) -> None:
    p = tmp_path / "rt.gguf"
    tensors = _full_writer(p, version, alignment)
    with GGUFFile(p) as f:
        m = f.metadata
        assert f.version == version and f.alignment == alignment
        assert (m["u8"], m["i8"], m["u16"], m["i16"], m["u32"], m["i32"]) == (
            200,
            -100,
            65000,
            -30000,
            4_000_000_000,
            -2_000_000_000,
        )
        assert m["f32"] == float(np.float32(1e-5)) and m["bool"] is True and m["str"] == "héllo ✓"
        assert m["u64"] == 2**63 + 5 and m["i64"] == -(2**62) and m["f64"] == 0.1
        assert m["tokens"][:2] == ["tok0", "tok1"] and m["tokens"][-3:] == ["", "Ġ", "é"]
        assert f.metadata_types["tokens"] == GGUFValueType.ARRAY
        assert f.array_item_types["tokens"] == GGUFValueType.STRING
        np.testing.assert_array_equal(m["types"], np.arange(300) % 5)
        assert m["types"].dtype == np.int32
        np.testing.assert_array_equal(m["scores"], np.linspace(-1, 1, 7, dtype=np.float32))
        assert m["flags"].tolist() == [True, False, True]
        nested = m["nested"]
        assert nested[0].tolist() == [1, 2, 3] and nested[1] == ["x", "yz"]
        assert nested[2][0].tolist() == [0.5, 1.5] and len(nested[2][1]) == 0
        assert m["empty"] == []
        for name in ("f32", "f16", "i32"):
            np.testing.assert_array_equal(f.tensor_array(name), tensors[name])
        bf = f.tensor_array("bf16")
        assert bf.dtype == np.uint16 and bf.shape == (2, 3, 8)
        np.testing.assert_array_equal(bf, tensors["bf16"])
        assert f.tensors["bf16"].shape == (8, 3, 2)
        np.testing.assert_array_equal(f.tensor_data("q8"), tensors["q8"].reshape(-1))
        for info in f.tensors.values():
            assert info.offset % alignment == 0


def test_our_file_reads_in_gguf_package(tmp_path: Path) -> None:
    p = tmp_path / "rt.gguf"
    tensors = _full_writer(p)
    r = gguf.GGUFReader(p)
    assert r.fields["str"].contents() == "héllo ✓"
    assert r.fields["u64"].contents() == 2**63 + 5
    assert r.fields["tokens"].contents()[-2] == "Ġ"
    assert r.fields["types"].contents() == (np.arange(300) % 5).tolist()
    by_name = {t.name: t for t in r.tensors}
    np.testing.assert_array_equal(by_name["f32"].data, tensors["f32"])
    np.testing.assert_array_equal(np.asarray(by_name["f16"].data), tensors["f16"])
    assert [int(x) for x in by_name["f16"].shape] == [64, 4]


def test_gguf_package_file_reads_here(tmp_path: Path) -> None:
    p = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(p, "llama")
    w.add_block_count(3)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_token_list(["<s>", "a", "b"])
    w.add_array("llama.some_ints", [1, 2, 3])
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 256)).astype(np.float32)
    w.add_tensor("x", x)
    w.add_tensor("h", x.astype(np.float16))
    q = quants.quantize(x, gguf.GGMLQuantizationType.TQ2_0)
    w.add_tensor("t", q, raw_dtype=gguf.GGMLQuantizationType.TQ2_0)
    q4 = quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q4", q4, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with GGUFFile(p) as f:
        assert f.metadata["general.architecture"] == "llama"
        assert f.metadata["llama.block_count"] == 3
        assert f.metadata["tokenizer.ggml.tokens"] == ["<s>", "a", "b"]
        np.testing.assert_array_equal(f.tensor_array("x"), x)
        np.testing.assert_array_equal(f.tensor_array("h"), x.astype(np.float16))
        assert f.tensors["t"].type_name == "TQ2_0" and f.tensors["t"].shape == (256, 6)
        np.testing.assert_array_equal(f.tensor_data("t"), q.reshape(-1))
        np.testing.assert_array_equal(f.tensor_data("q4"), q4.reshape(-1))
        with pytest.raises(ModelFormatError, match="has type Q8_0"):
            f.tensor_array("q4")


def test_views_are_zero_copy_and_read_only(tmp_path: Path) -> None:
    p = write(tmp_path, small_valid())
    f = GGUFFile(p)
    raw = f.tensor_data("b")
    arr = f.tensor_array("b")
    assert not raw.flags.writeable and not arr.flags.writeable
    assert np.shares_memory(raw, arr)
    f.close()  # views still alive: the map stays until they go
    assert f.closed
    assert arr.sum() == np.arange(16, dtype=np.float16).sum()
    with pytest.raises(ModelFormatError, match="missing"):
        GGUFFile(p).tensor_data("nope")


def test_i2s_tensor_size_includes_tail(tmp_path: Path) -> None:
    p = tmp_path / "i2s.gguf"
    w = GGUFWriter(p)
    m = np.random.default_rng(3).integers(-1, 2, (3, 256)).astype(np.int8)
    w.add_ternary("w", m, 0.25)
    w.add_tensor("after", np.ones(4, dtype=np.float32))
    w.write()
    with GGUFFile(p) as f:
        t = f.tensors["w"]
        assert (t.type_name, t.shape, t.nbytes) == ("I2_S", (256, 3), 3 * 256 // 4 + 32)
        raw = f.tensor_data("w")
        assert struct.unpack("<f", raw[-32:-28].tobytes())[0] == 0.25
        np.testing.assert_array_equal(f.tensor_array("after"), np.ones(4))


def test_string_array_of_128k_tokens_is_fast(tmp_path: Path) -> None:
    import time

    p = tmp_path / "vocab.gguf"
    w = GGUFWriter(p)
    w.add_array("tokenizer.ggml.tokens", [f"token_{i}" for i in range(128256)])
    w.add_array("tokenizer.ggml.token_type", np.ones(128256, dtype=np.int32))
    w.write()
    t0 = time.perf_counter()
    with GGUFFile(p) as f:
        toks = f.metadata["tokenizer.ggml.tokens"]
    assert time.perf_counter() - t0 < 2.0
    assert len(toks) == 128256 and toks[-1] == "token_128255"


# -- hostile files ----------------------------------------------------------------------------------


def test_every_truncation_fails_cleanly(tmp_path: Path) -> None:
    full = small_valid()
    for n in range(len(full)):
        p = write(tmp_path, full[:n])
        with pytest.raises(ModelFormatError):
            open_all(p)
    open_all(write(tmp_path, full))


def test_empty_file(tmp_path: Path) -> None:
    expect_error(tmp_path, b"", "not a GGUF file")


def test_wrong_magic(tmp_path: Path) -> None:
    expect_error(tmp_path, build([], [], b"", magic=b"GGML"), "not a GGUF file", "GGML")


@pytest.mark.parametrize("version,frag", [(1, "version 1"), (99, "version 99"), (0x03000000, "big-endian")])
def test_bad_versions(tmp_path: Path, version: int, frag: str) -> None:
    expect_error(tmp_path, build([], [], b"", version=version), frag)


def test_absurd_counts(tmp_path: Path) -> None:
    expect_error(tmp_path, build([], [], b"", n_tensors=10**12), "10^12 tensors")
    expect_error(tmp_path, build([], [], b"", n_kv=2**64 - 1), "metadata entries")
    expect_error(
        tmp_path,
        build([kv("a", U8, b"\1")], [], gstr("ab") + b"\0\0", n_kv=2, alignment=1),
        "truncated while reading the type of metadata key #1",
    )


def test_absurd_string_lengths(tmp_path: Path) -> None:
    bad_key = struct.pack("<Q", 2**62) + b"abc" + struct.pack("<I", U8) + b"\0"
    expect_error(tmp_path, build([bad_key], [], b""), "metadata key #0", "bytes")
    expect_error(tmp_path, build([kv("s", STR, struct.pack("<Q", 10**15) + b"x")], [], b""), "'s'")
    strs = struct.pack("<IQ", STR, 2**40) + gstr("a")
    expect_error(tmp_path, build([kv("toks", ARR, strs)], [], b""), "toks", "STRING items")
    strs = struct.pack("<IQ", STR, 2) + gstr("a") + struct.pack("<Q", 10**9)
    expect_error(tmp_path, build([kv("toks", ARR, strs)], [], b""), "string #1")
    nums = struct.pack("<IQ", U64, 2**61)
    expect_error(tmp_path, build([kv("n", ARR, nums)], [], b""), "UINT64 items")


def test_bad_metadata_values(tmp_path: Path) -> None:
    expect_error(tmp_path, build([kv("t", 13, b"\0")], [], b""), "unknown value type 13")
    expect_error(tmp_path, build([kv("b", BOOL, b"\2")], [], b""), "bool")
    expect_error(tmp_path, build([kv("a", ARR, struct.pack("<IQ", BOOL, 2) + b"\1\5")], [], b""), "bool")
    expect_error(tmp_path, build([kv(b"\xff\xfe", U8, b"\0")], [], b""), "UTF-8")
    expect_error(tmp_path, build([kv("u", U8, b"\0"), kv("u", U8, b"\0")], [], b""), "twice")
    nested = struct.pack("<IQ", ARR, 1) * 12 + struct.pack("<IQ", U8, 0)
    expect_error(tmp_path, build([kv("deep", ARR, nested)], [], b""), "nests")
    expect_error(
        tmp_path, build([kv("general.alignment", U32, struct.pack("<I", 24))], [], b""), "power of two"
    )
    expect_error(
        tmp_path, build([kv("general.alignment", U32, struct.pack("<I", 0))], [], b""), "power of two"
    )
    expect_error(tmp_path, build([kv("general.alignment", STR, gstr("32"))], [], b""), "general.alignment")


def test_long_keys_and_names_are_cut_in_messages(tmp_path: Path) -> None:
    # a 4 MB key (control bytes: repr x4) made a 16 MB one-line error for a dialog to show
    key = "\x01" * (4 << 20)
    e = expect_error(tmp_path, build([kv(key, 99, b"\0")], [], b"\0" * 64), "unknown value type 99")
    assert (
        len(e.problem) < 200 and "metadata key #0 ('\\x01\\x01" in e.problem and "\\x01'…)" in e.problem
    )  # no \x0… split
    name = "t" * 1_000_000
    for info, frag in [
        (tinfo(name, [4], 41, 0), "has type 41"),  # an unknown type
        (tinfo(name, [4], 0, 0, n_dims=9), "has 9 dimensions"),
        (tinfo(name, [4], 0, 8), "not a multiple of the alignment"),
    ]:
        e = expect_error(tmp_path, build([], [info], b"\0" * 64), "tttt", frag)
        assert len(e.problem) < 700, e.problem[:300]  # the list of supported types is ~450
    e = expect_error(
        tmp_path, build([kv(key, U8, b"\0"), kv(key, U8, b"\0")], [], b"\0" * 64), "appears twice"
    )
    assert len(e.problem) < 200


def test_nested_arrays_within_limit(tmp_path: Path) -> None:
    inner = struct.pack("<IQ", U8, 2) + b"\1\2"
    two = struct.pack("<IQ", ARR, 2) + inner + inner
    p = write(tmp_path, build([kv("n", ARR, two)], [], b""))
    with GGUFFile(p) as f:
        assert [a.tolist() for a in f.metadata["n"]] == [[1, 2], [1, 2]]


def _one_tensor(shape: list[int], type_id: int, offset: int = 0, data_len: int = 64, **kw: int) -> bytes:
    return build([], [tinfo("w", shape, type_id, offset, **kw)], b"\0" * data_len)


def test_bad_dims(tmp_path: Path) -> None:
    expect_error(tmp_path, _one_tensor([4, 0], 0), "dimension 0")
    expect_error(tmp_path, _one_tensor([2**40 + 1], 0), "dimension")
    expect_error(tmp_path, _one_tensor([1, 1, 1, 1, 1], 0), "5 dimensions")
    expect_error(tmp_path, build([], [gstr("w") + struct.pack("<IIQ", 0, 0, 0)], b"\0" * 64), "0 dimensions")
    expect_error(tmp_path, _one_tensor([33, 2], 8), "block size 32")  # Q8_0 rows of 33
    expect_error(tmp_path, _one_tensor([4, 2**38, 2**38], 0), "runs past the end")


def test_tensor_data_bounds(tmp_path: Path) -> None:
    e = expect_error(tmp_path, _one_tensor([16], 0, data_len=60), "runs past the end of the file")
    assert "64 bytes" in e.problem
    expect_error(tmp_path, _one_tensor([4], 0, offset=2**63), "runs past the end")
    expect_error(tmp_path, _one_tensor([4], 0, offset=8), "not a multiple of the alignment 32")
    infos = [tinfo("a", [8], 0, 0), tinfo("b", [8], 0, 0)]
    expect_error(tmp_path, build([], infos, b"\0" * 64), "overlap")
    infos = [tinfo("a", [16], 0, 32), tinfo("b", [16], 0, 0)]  # b: 0..64 covers a at 32
    expect_error(tmp_path, build([], infos, b"\0" * 96), "overlap")
    infos = [tinfo("a", [4], 0, 0), tinfo("a", [4], 0, 32)]
    expect_error(tmp_path, build([], infos, b"\0" * 64), "twice")
    expect_error(tmp_path, build([], [tinfo("", [4], 0, 0)], b"\0" * 64), "empty name")


def test_unknown_type_id(tmp_path: Path) -> None:
    infos = [tinfo("blk.3.ffn_down.weight", [256, 4], 41, 0)]
    e = expect_error(
        tmp_path,
        build([], infos, b"\0" * 4096),
        "blk.3.ffn_down.weight has type 41",
        "cannot read",
        "I2_S (36)",
        "TQ2_0 (35)",
    )
    assert e.problem.startswith("tensor blk.3.ffn_down.weight")


def test_i2s_row_length_must_be_multiple_of_128(tmp_path: Path) -> None:
    expect_error(tmp_path, _one_tensor([64, 2], 36, data_len=128), "block size 128")


def test_absurd_tensor_count_with_some_valid(tmp_path: Path) -> None:
    data = build([], [tinfo("a", [4], 0, 0)], b"\0" * 32, n_tensors=3)
    expect_error(tmp_path, data, "tensor")


# -- fuzzing ----------------------------------------------------------------------------------------

_VALID = small_valid()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(0, len(_VALID)),
)
def test_fuzz_mutations(tmp_path: Path, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_VALID)
    for pos, val in edits:
        data[pos] = val
    p = write(tmp_path, bytes(data[: max(cut, 1)]), "fuzz.gguf")
    try:
        open_all(p)
    except ModelFormatError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    word_pos=st.integers(0, len(_VALID) // 8 - 1),
    value=st.sampled_from([0, 1, 3, 4, 5, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63, 2**64 - 1]),
)
def test_fuzz_large_words(tmp_path: Path, word_pos: int, value: int) -> None:
    """Plant big integers (as u64 and u32) at every 8-byte position: counts, lengths, dims, offsets."""
    for width, fmt in ((8, "<Q"), (4, "<I")):
        data = bytearray(_VALID)
        data[word_pos * 8 : word_pos * 8 + width] = struct.pack(fmt, value % (1 << (8 * width)))
        p = write(tmp_path, bytes(data), "fuzz.gguf")
        try:
            open_all(p)
        except ModelFormatError:
            pass
