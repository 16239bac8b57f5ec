"""A GGUF v3 writer (little-endian), the counterpart of engine/gguf.py.

Tensor data are streamed: a tensor may be given as an array, as bytes, or as a callable that
produces its bytes when the file is written, so a 1 GB model never has to sit in memory at once.
Used by the converter, the tests (including hostile files: raw bytes with any type id) and the
benchmarks.

    w = GGUFWriter(path)
    w.add_string("general.architecture", "bitnet-b1.58")
    w.add_uint32("bitnet-b1.58.block_count", 30)
    w.add_tensor("token_embd.weight", embed_f16)               # F32 / F16 from the dtype
    w.add_ternary("blk.0.attn_q.weight", w_int8, scale, "I2_S")
    w.write()
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .gguf import DEFAULT_ALIGNMENT, GGML_TYPE_IDS, GGML_TYPES, SCALAR_DTYPES, GGUFValueType
from .ternary import i2s_bytes, tq1_0_bytes, tq2_0_bytes

_DTYPE_TYPES: dict[str, str] = {
    "float32": "F32",
    "float16": "F16",
    "float64": "F64",
    "int8": "I8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
}
_NP_VALUE_TYPES: dict[str, GGUFValueType] = {
    "uint8": GGUFValueType.UINT8,
    "int8": GGUFValueType.INT8,
    "uint16": GGUFValueType.UINT16,
    "int16": GGUFValueType.INT16,
    "uint32": GGUFValueType.UINT32,
    "int32": GGUFValueType.INT32,
    "float32": GGUFValueType.FLOAT32,
    "bool": GGUFValueType.BOOL,
    "uint64": GGUFValueType.UINT64,
    "int64": GGUFValueType.INT64,
    "float64": GGUFValueType.FLOAT64,
}


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]  # ggml order: ne0 (row length), ne1 (rows), ...
    type_id: int
    nbytes: int
    source: Any  # bytes-like, ndarray, or a callable returning one


def _infer_type(value: Any) -> GGUFValueType:
    if isinstance(value, (bool, np.bool_)):
        return GGUFValueType.BOOL
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if 0 <= v < 1 << 32:
            return GGUFValueType.UINT32
        if -(1 << 31) <= v < 0:
            return GGUFValueType.INT32
        return GGUFValueType.UINT64 if v > 0 else GGUFValueType.INT64
    if isinstance(value, (float, np.floating)):
        return GGUFValueType.FLOAT32
    if isinstance(value, str):
        return GGUFValueType.STRING
    if isinstance(value, (list, tuple, np.ndarray)):
        return GGUFValueType.ARRAY
    raise TypeError(f"cannot store a {type(value).__name__} in GGUF metadata")


def _infer_item_type(value: Sequence[Any] | np.ndarray) -> GGUFValueType:
    if isinstance(value, np.ndarray):
        t = _NP_VALUE_TYPES.get(value.dtype.name)
        if t is None:
            raise TypeError(f"cannot store a {value.dtype} array in GGUF metadata")
        return t
    if len(value) == 0:
        return GGUFValueType.UINT32
    types = {_infer_type(v) for v in value}
    if len(types) == 1:
        return types.pop()
    if types <= {GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.UINT64, GGUFValueType.INT64}:
        return GGUFValueType.INT64
    if types <= {GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.FLOAT32}:
        return GGUFValueType.FLOAT32
    raise TypeError(f"mixed array item types {sorted(t.name for t in types)}")


def _encode_string(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def _encode_value(value: Any, vtype: GGUFValueType, item_type: GGUFValueType | None = None) -> bytes:
    if vtype == GGUFValueType.STRING:
        return _encode_string(value)
    if vtype == GGUFValueType.ARRAY:
        if item_type is None:
            item_type = _infer_item_type(value)
        head = struct.pack("<IQ", int(item_type), len(value))
        if item_type in SCALAR_DTYPES:
            arr = np.asarray(value)
            if item_type == GGUFValueType.BOOL:
                arr = arr.astype(np.bool_)
            return head + arr.astype(SCALAR_DTYPES[item_type]).tobytes()
        if item_type == GGUFValueType.STRING:
            return head + b"".join(_encode_string(s) for s in value)
        parts = [head]
        for v in value:  # nested arrays: each item is (u32 item type, u64 count, items)
            parts.append(_encode_value(v, GGUFValueType.ARRAY))
        return b"".join(parts)
    dt = SCALAR_DTYPES[vtype]
    return np.array([value], dtype=np.bool_ if vtype == GGUFValueType.BOOL else dt).astype(dt).tobytes()


class GGUFWriter:
    """Collects metadata and tensors, then write() streams the file out."""

    def __init__(
        self, path: str | os.PathLike[str], alignment: int = DEFAULT_ALIGNMENT, version: int = 3
    ) -> None:
        if alignment < 1 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        self.path = str(path)
        self.alignment = alignment
        self.version = version
        self._kv: list[tuple[str, bytes]] = []
        self._keys: set[str] = set()
        self._tensors: list[_Tensor] = []
        if alignment != DEFAULT_ALIGNMENT:
            self.add_uint32("general.alignment", alignment)

    # -- metadata --------------------------------------------------------------------------------

    def add_metadata(
        self, key: str, value: Any, vtype: GGUFValueType | None = None, item_type: GGUFValueType | None = None
    ) -> None:
        """Any value; the type is inferred unless given (ints -> UINT32 when they fit, floats ->
        FLOAT32, lists -> ARRAY of the inferred item type, numpy arrays keep their dtype)."""
        if key in self._keys:
            raise ValueError(f"metadata key {key!r} added twice")
        if vtype is None:
            vtype = _infer_type(value)
        body = _encode_value(value, vtype, item_type)
        self._keys.add(key)
        self._kv.append((key, struct.pack("<I", int(vtype)) + body))

    def add_raw_metadata(self, key: str, vtype: int, body: bytes) -> None:
        """A key with an arbitrary type id and value bytes (for hostile-file tests)."""
        self._keys.add(key)
        self._kv.append((key, struct.pack("<I", vtype) + body))

    def add_string(self, key: str, value: str) -> None:
        self.add_metadata(key, value, GGUFValueType.STRING)

    def add_uint32(self, key: str, value: int) -> None:
        self.add_metadata(key, value, GGUFValueType.UINT32)

    def add_int32(self, key: str, value: int) -> None:
        self.add_metadata(key, value, GGUFValueType.INT32)

    def add_uint64(self, key: str, value: int) -> None:
        self.add_metadata(key, value, GGUFValueType.UINT64)

    def add_float32(self, key: str, value: float) -> None:
        self.add_metadata(key, value, GGUFValueType.FLOAT32)

    def add_bool(self, key: str, value: bool) -> None:
        self.add_metadata(key, value, GGUFValueType.BOOL)

    def add_array(
        self, key: str, values: Sequence[Any] | np.ndarray, item_type: GGUFValueType | None = None
    ) -> None:
        self.add_metadata(key, values, GGUFValueType.ARRAY, item_type)

    # -- tensors ---------------------------------------------------------------------------------

    def add_tensor(self, name: str, data: np.ndarray, type_name: str | None = None) -> None:
        """A plain array (numpy shape [..., ne1, ne0]). type_name "BF16" takes uint16 bits or
        float32 values (rounded to nearest even); otherwise the type follows the dtype."""
        arr = np.asarray(data)
        if type_name is None:
            type_name = _DTYPE_TYPES.get(arr.dtype.name)
            if type_name is None:
                raise TypeError(f"no GGUF type for dtype {arr.dtype}; pass type_name")
        if type_name == "BF16":
            if arr.dtype == np.float32:
                arr = _f32_to_bf16_bits(arr)
            arr = arr.astype("<u2", copy=False)
        elif type_name in ("F32", "F16", "F64", "I8", "I16", "I32", "I64"):
            dt = {
                "F32": "<f4",
                "F16": "<f2",
                "F64": "<f8",
                "I8": "<i1",
                "I16": "<i2",
                "I32": "<i4",
                "I64": "<i8",
            }[type_name]
            arr = arr.astype(dt, copy=False)
        else:
            raise ValueError(
                f"add_tensor writes plain types only; use add_ternary or add_raw_tensor for {type_name}"
            )
        arr = np.ascontiguousarray(arr)
        shape = tuple(int(d) for d in reversed(arr.shape)) or (1,)
        self._add(name, shape, GGML_TYPE_IDS[type_name], arr.nbytes, arr)

    def add_ternary(
        self,
        name: str,
        w: np.ndarray | Callable[[], np.ndarray],
        scale: float | np.ndarray,
        type_name: str = "I2_S",
        shape: tuple[int, int] | None = None,
    ) -> None:
        """A ternary matrix int8 [rows, cols] in {-1, 0, 1} encoded as I2_S (per-tensor scale),
        TQ2_0 or TQ1_0 (per-tensor or per-row scale). w may be a callable returning the matrix (then
        pass shape=(rows, cols)): it is encoded only while the file is written."""
        if callable(w):
            if shape is None:
                raise ValueError("pass shape=(rows, cols) with a lazy matrix")
            rows, cols = shape
            get = w
        else:
            arr = np.asarray(w)
            rows, cols = arr.shape

            def get() -> np.ndarray:
                return arr

        enc = {"I2_S": i2s_bytes, "TQ2_0": tq2_0_bytes, "TQ1_0": tq1_0_bytes}.get(type_name)
        if enc is None:
            raise ValueError(f"unknown ternary type {type_name}")
        gt = GGML_TYPES[GGML_TYPE_IDS[type_name]]
        if cols % gt.block_size:
            raise ValueError(f"{type_name} rows must be a multiple of {gt.block_size} long, got {cols}")
        sc: Any = scale
        if type_name == "I2_S":
            s = np.asarray(scale, dtype=np.float32).reshape(-1)
            if s.size != 1 and not np.all(s == s[0]):
                raise ValueError("I2_S has one scale per tensor")
            sc = float(s[0])
        self._add(name, (cols, rows), gt.id, gt.nbytes(rows * cols), lambda: enc(get(), sc))

    def add_raw_tensor(
        self, name: str, shape: Sequence[int], type_id: int, data: Any, nbytes: int | None = None
    ) -> None:
        """Bytes (or a callable producing them) with any ggml type id and ggml-order shape. nbytes
        defaults to the length of data; unknown type ids are allowed (hostile-file tests)."""
        if nbytes is None:
            if callable(data):
                raise ValueError("pass nbytes with a lazy raw tensor")
            nbytes = memoryview(data).nbytes if not isinstance(data, np.ndarray) else data.nbytes
        self._add(name, tuple(int(d) for d in shape), type_id, nbytes, data)

    def _add(self, name: str, shape: tuple[int, ...], type_id: int, nbytes: int, source: Any) -> None:
        if any(t.name == name for t in self._tensors):
            raise ValueError(f"tensor {name!r} added twice")
        self._tensors.append(_Tensor(name, shape, type_id, nbytes, source))

    # -- output ----------------------------------------------------------------------------------

    def _pad(self, n: int) -> int:
        return -n % self.alignment

    def write(self) -> None:
        """Write the file (to path + '.tmp' first, then rename, so a failure leaves no half file)."""
        header = bytearray()
        header += b"GGUF" + struct.pack("<IQQ", self.version, len(self._tensors), len(self._kv))
        for key, body in self._kv:
            header += _encode_string(key) + body
        offset = 0
        for t in self._tensors:
            header += _encode_string(t.name) + struct.pack("<I", len(t.shape))
            header += struct.pack(f"<{len(t.shape)}Q", *t.shape)
            header += struct.pack("<IQ", t.type_id, offset)
            offset += t.nbytes + self._pad(t.nbytes)
        header += b"\0" * self._pad(len(header))
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(header)
                for t in self._tensors:
                    self._write_data(f, t)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _write_data(self, f: BinaryIO, t: _Tensor) -> None:
        data = t.source() if callable(t.source) else t.source
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data)
        mv = memoryview(data).cast("B")
        if mv.nbytes != t.nbytes:
            raise ValueError(f"tensor {t.name!r}: produced {mv.nbytes} bytes, expected {t.nbytes}")
        f.write(mv)
        f.write(b"\0" * self._pad(t.nbytes))


def _f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype="<f4").view("<u4")
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
    nan = np.isnan(x)
    return np.where(nan, ((u >> 16) | 0x40).astype("<u2"), rounded)


__all__ = ["GGUFWriter"]
