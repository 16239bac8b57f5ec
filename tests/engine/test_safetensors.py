"""engine/safetensors.py: files written by the `safetensors` package and by hand, sharded
checkpoints, and hostile headers."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trit.engine.errors import ModelFormatError
from trit.engine.safetensors import SafetensorsFile, open_checkpoint

pytestmark = pytest.mark.timeout(120)


def st_bytes(header: dict[str, Any] | bytes, data: bytes) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def small_valid() -> bytes:
    a = np.arange(6, dtype="<f4").tobytes()
    b = np.arange(4, dtype="<u2").tobytes()  # BF16 bits
    header = {
        "__metadata__": {"format": "pt"},
        "a": entry("F32", [2, 3], 0, 24),
        "b": entry("BF16", [4], 24, 32),
    }
    return st_bytes(header, a + b)


def write(tmp_path: Path, data: bytes, name: str = "m.safetensors") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def open_all(p: Path) -> None:
    with SafetensorsFile(p) as f:
        for name in f.tensors:
            f.tensor(name).sum()
            f.tensor_data(name)


def expect_error(tmp_path: Path, data: bytes, *fragments: str) -> None:
    p = write(tmp_path, data)
    with pytest.raises(ModelFormatError) as ei:
        open_all(p)
    assert ei.value.path == str(p)
    for frag in fragments:
        assert frag in str(ei.value), str(ei.value)


def test_round_trip_with_safetensors_package(tmp_path: Path) -> None:
    sn = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f16": rng.standard_normal((5,)).astype(np.float16),
        "u8": rng.integers(0, 255, (2, 2, 2)).astype(np.uint8),
        "i8": rng.integers(-128, 127, (7,)).astype(np.int8),
        "i32": rng.integers(-1000, 1000, (3,)).astype(np.int32),
        "i64": rng.integers(-1000, 1000, (3,)).astype(np.int64),
        "f64": rng.standard_normal((2,)),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    p = tmp_path / "model.safetensors"
    sn.save_file(tensors, str(p), metadata={"format": "np"})
    with SafetensorsFile(p) as f:
        assert f.metadata == {"format": "np"}
        assert set(f.tensors) == set(tensors)
        for name, arr in tensors.items():
            got = f.tensor(name)
            assert got.dtype == arr.dtype and got.shape == arr.shape
            np.testing.assert_array_equal(got, arr)
        v = f.tensor("f32")
        assert not v.flags.writeable
        assert np.shares_memory(v, f.tensor_data("f32"))


def test_bf16_as_uint16(tmp_path: Path) -> None:
    p = write(tmp_path, small_valid())
    with SafetensorsFile(p) as f:
        b = f.tensor("b")
        assert b.dtype == np.uint16 and b.tolist() == [0, 1, 2, 3]
        assert f.tensors["b"].dtype == "BF16"
        np.testing.assert_array_equal(f.tensor("a"), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_every_truncation_fails_cleanly(tmp_path: Path) -> None:
    full = small_valid()
    for n in range(len(full)):
        expect_error(tmp_path, full[:n])
    open_all(write(tmp_path, full))


def test_hostile_headers(tmp_path: Path) -> None:
    d = b"\0" * 64
    expect_error(tmp_path, struct.pack("<Q", 2**63) + b"{}", "header length")
    expect_error(tmp_path, st_bytes(b"{not json", d), "not valid JSON")
    expect_error(tmp_path, st_bytes(b"\xff\xfe{}", d), "not valid JSON")
    expect_error(tmp_path, st_bytes(b"[" * 100000 + b"]" * 100000, b""), "not valid JSON")
    expect_error(tmp_path, st_bytes(b"[1, 2]", d), "expected an object")
    expect_error(
        tmp_path,
        st_bytes(
            b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
            b' "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
            d,
        ),
        "duplicate",
    )
    expect_error(tmp_path, st_bytes({"a": 5}, d), "'a'")
    expect_error(tmp_path, st_bytes({"a": entry("Q4", [1], 0, 1)}, d), "dtype 'Q4'", "cannot read")
    expect_error(tmp_path, st_bytes({"a": entry("F32", [2.5], 0, 4)}, d), "shape")
    expect_error(tmp_path, st_bytes({"a": entry("F32", [True], 0, 4)}, d), "shape")
    expect_error(tmp_path, st_bytes({"a": entry("F32", [-1], 0, 4)}, d), "out of range")
    expect_error(tmp_path, st_bytes({"a": entry("F32", [2**41], 0, 4)}, d), "out of range")
    expect_error(tmp_path, st_bytes({"a": {"dtype": "F32", "shape": [1]}}, d), "data_offsets")
    expect_error(tmp_path, st_bytes({"a": entry("F32", [2], 8, 0)}, d), "data_offsets")
    expect_error(tmp_path, st_bytes({"a": entry("F32", [3], 0, 8)}, d), "needs 12 bytes")
    expect_error(tmp_path, st_bytes({"a": entry("F32", [32], 0, 128)}, d), "runs past the end")
    expect_error(tmp_path, st_bytes({"a": entry("F32", [2], 2**64, 2**64 + 8)}, d), "runs past the end")
    expect_error(
        tmp_path, st_bytes({"a": entry("F32", [4], 0, 16), "b": entry("F32", [4], 8, 24)}, d), "overlap"
    )
    expect_error(tmp_path, st_bytes({"__metadata__": {"k": 1}}, d), "__metadata__")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(small_valid()) - 1), st.integers(0, 255)), min_size=1, max_size=6
    ),
    cut=st.integers(0, len(small_valid())),
)
def test_fuzz_mutations(tmp_path: Path, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(small_valid())
    for pos, val in edits:
        data[pos] = val
    p = write(tmp_path, bytes(data[:cut]), "fuzz.safetensors")
    try:
        open_all(p)
    except ModelFormatError:
        pass


# -- checkpoints ------------------------------------------------------------------------------------


def _shard(tmp_path: Path, name: str, tensors: dict[str, np.ndarray]) -> None:
    header: dict[str, Any] = {}
    data = b""
    for k, v in tensors.items():
        b = v.astype("<f4").tobytes()
        header[k] = entry("F32", list(v.shape), len(data), len(data) + len(b))
        data += b
    write(tmp_path, st_bytes(header, data), name)


def test_single_file_checkpoint(tmp_path: Path) -> None:
    _shard(tmp_path, "model.safetensors", {"w": np.ones((2, 2))})
    with open_checkpoint(tmp_path) as ck:
        assert "w" in ck and ck.tensor("w").shape == (2, 2)
        with pytest.raises(ModelFormatError, match="'nope' is missing"):
            ck.tensor("nope")
    with open_checkpoint(tmp_path / "model.safetensors") as ck:
        assert list(ck.tensors) == ["w"]


def test_sharded_checkpoint(tmp_path: Path) -> None:
    _shard(tmp_path, "model-00001-of-00002.safetensors", {"a": np.arange(3), "b": np.ones(2)})
    _shard(tmp_path, "model-00002-of-00002.safetensors", {"c": np.full((2, 2), 7.0)})
    wm = {
        "a": "model-00001-of-00002.safetensors",
        "b": "model-00001-of-00002.safetensors",
        "c": "model-00002-of-00002.safetensors",
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    with open_checkpoint(tmp_path) as ck:
        assert set(ck.tensors) == {"a", "b", "c"}
        np.testing.assert_array_equal(ck.tensor("c"), np.full((2, 2), 7.0, dtype=np.float32))
        np.testing.assert_array_equal(ck.tensor("a"), [0, 1, 2])
        assert len(ck.files) == 2


def test_missing_shard_is_named(tmp_path: Path) -> None:
    _shard(tmp_path, "model-00001-of-00002.safetensors", {"a": np.arange(3)})
    wm = {"a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    with pytest.raises(ModelFormatError, match="shard model-00002-of-00002.safetensors .* is missing") as e:
        open_checkpoint(tmp_path)
    assert e.value.path.endswith("model-00002-of-00002.safetensors")


def test_bad_indexes(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="neither"):
        open_checkpoint(tmp_path)
    with pytest.raises(ModelFormatError, match="no such"):
        open_checkpoint(tmp_path / "absent")
    idx = tmp_path / "model.safetensors.index.json"
    idx.write_text("{")
    with pytest.raises(ModelFormatError, match="cannot read the index"):
        open_checkpoint(tmp_path)
    idx.write_text(json.dumps({"weight_map": {"a": "../etc/passwd"}}))
    with pytest.raises(ModelFormatError, match="invalid shard name"):
        open_checkpoint(tmp_path)
    idx.write_text(json.dumps({"nothing": 1}))
    with pytest.raises(ModelFormatError, match="no weight_map"):
        open_checkpoint(tmp_path)
    _shard(tmp_path, "s1.safetensors", {"a": np.arange(3)})
    idx.write_text(json.dumps({"weight_map": {"zz": "s1.safetensors"}}))
    with pytest.raises(ModelFormatError, match="'zz' listed in .* is not in this shard"):
        open_checkpoint(tmp_path)
