"""A safetensors reader that treats the file as hostile, and sharded checkpoint directories.

Layout (huggingface/safetensors docs): u64 little-endian header length N | N bytes of UTF-8 JSON
{"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__":
{str: str}} | data. Offsets are relative to the start of the data (8 + N). The header is checked
in full before any data is touched: length vs file size, JSON shape, dtypes, shape x dtype size ==
byte span, spans inside the file and not overlapping. Tensors are zero-copy numpy views into a
read-only mmap.
"""

from __future__ import annotations

import itertools
import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelFormatError, ModelNotFoundError

if TYPE_CHECKING:
    from typing_extensions import Self

MAX_HEADER = 100 * 1024 * 1024  # the reference implementation refuses larger headers too
MAX_DIM = 1 << 40

# dtype name -> (bytes per element, numpy dtype of the view). BF16 and the F8 types have no numpy
# dtype: they come as raw uint16 / uint8 bits.
DTYPES: dict[str, tuple[int, np.dtype[Any]]] = {
    "BOOL": (1, np.dtype(np.bool_)),
    "U8": (1, np.dtype("<u1")),
    "I8": (1, np.dtype("<i1")),
    "F8_E4M3": (1, np.dtype("<u1")),
    "F8_E5M2": (1, np.dtype("<u1")),
    "U16": (2, np.dtype("<u2")),
    "I16": (2, np.dtype("<i2")),
    "F16": (2, np.dtype("<f2")),
    "BF16": (2, np.dtype("<u2")),
    "U32": (4, np.dtype("<u4")),
    "I32": (4, np.dtype("<i4")),
    "F32": (4, np.dtype("<f4")),
    "U64": (8, np.dtype("<u8")),
    "I64": (8, np.dtype("<i8")),
    "F64": (8, np.dtype("<f8")),
}


@dataclass(frozen=True)
class STensorInfo:
    name: str
    dtype: str  # safetensors dtype name, e.g. "BF16"
    shape: tuple[int, ...]  # numpy (row-major) order
    offset: int  # absolute byte offset in the file
    nbytes: int


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class SafetensorsFile:
    """One .safetensors file opened read-only through mmap.

    tensors: name -> STensorInfo (in header order); metadata: the "__metadata__" strings.
    tensor(name): typed zero-copy view (BF16 as uint16 bits, F8 as uint8). tensor_data(name): uint8.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.tensors: dict[str, STensorInfo] = {}
        self.metadata: dict[str, str] = {}
        self._mm: mmap.mmap | None = None
        try:
            with open(self.path, "rb") as f:
                self.file_size = os.fstat(f.fileno()).st_size
                if self.file_size < 8:
                    raise self._fail(f"not a safetensors file (only {self.file_size} bytes long)")
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise ModelFormatError(self.path, f"cannot open the file: {e.strerror or e}") from e
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    def _fail(self, problem: str) -> ModelFormatError:
        return ModelFormatError(self.path, problem)

    def _parse(self) -> None:
        assert self._mm is not None
        (n,) = struct.unpack_from("<Q", self._mm, 0)
        if n > self.file_size - 8:
            raise self._fail(
                f"header length {n} runs past the end of the file (size {self.file_size}); "
                "the file is truncated or not a safetensors file"
            )
        if n > MAX_HEADER:
            raise self._fail(f"header of {n} bytes is larger than the {MAX_HEADER}-byte limit")
        if n < 2:
            raise self._fail(f"header of {n} bytes cannot hold a JSON object")
        raw = self._mm[8 : 8 + n]
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise self._fail(f"header is not valid JSON: {str(e)[:200]}") from None
        if not isinstance(header, dict):
            raise self._fail(f"header is a JSON {type(header).__name__}, expected an object")
        data_start = 8 + n
        data_size = self.file_size - data_start
        meta = header.pop("__metadata__", None)
        if meta is not None:
            if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
                raise self._fail("__metadata__ must map strings to strings")
            self.metadata = meta
        for name, entry in header.items():
            if not isinstance(entry, dict):
                raise self._fail(f"tensor {name!r}: header entry is not an object")
            dtype, shape, offs = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
            if not isinstance(dtype, str) or dtype not in DTYPES:
                raise self._fail(
                    f"tensor {name!r} has dtype {dtype!r}, which this version cannot read "
                    f"(supported: {', '.join(DTYPES)})"
                )
            if not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(d) for d in shape):
                raise self._fail(f"tensor {name!r} has shape {str(shape)[:100]}, expected a list of integers")
            if any(not 0 <= d <= MAX_DIM for d in shape):
                raise self._fail(f"tensor {name!r} has shape {shape} with a dimension out of range")
            if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)):
                raise self._fail(f"tensor {name!r} has data_offsets {str(offs)[:100]}, expected [begin, end]")
            begin, end = offs
            if not 0 <= begin <= end:
                raise self._fail(f"tensor {name!r} has data_offsets [{begin}, {end}]")
            count = 1
            for d in shape:
                count *= d
            nbytes = count * DTYPES[dtype][0]
            if end - begin != nbytes:
                raise self._fail(
                    f"tensor {name!r} ({dtype} {shape}) needs {nbytes} bytes but data_offsets "
                    f"span {end - begin}"
                )
            if end > data_size:
                raise self._fail(
                    f"tensor {name!r} data (offset {data_start + begin}, {nbytes} bytes) runs past the "
                    f"end of the file (size {self.file_size})"
                )
            self.tensors[name] = STensorInfo(name, dtype, tuple(shape), data_start + begin, nbytes)
        spans = sorted((t for t in self.tensors.values() if t.nbytes), key=lambda t: t.offset)
        for a, b in itertools.pairwise(spans):
            if a.offset + a.nbytes > b.offset:
                raise self._fail(f"tensors {a.name!r} and {b.name!r} overlap")

    def _info(self, name: str) -> STensorInfo:
        info = self.tensors.get(name)
        if info is None:
            raise self._fail(f"tensor {name!r} is missing")
        if self._mm is None:
            raise ValueError(f"{self.path}: the file is closed")
        return info

    def tensor_data(self, name: str) -> np.ndarray:
        """uint8 [nbytes] zero-copy view."""
        info = self._info(name)
        return np.frombuffer(self._mm, dtype=np.uint8, count=info.nbytes, offset=info.offset)  # type: ignore[arg-type]

    def tensor(self, name: str) -> np.ndarray:
        """Typed zero-copy view of shape info.shape (BF16 as uint16 bits, F8 as uint8)."""
        info = self._info(name)
        dt = DTYPES[info.dtype][1]
        count = info.nbytes // dt.itemsize
        if count == 0:
            return np.zeros(info.shape, dtype=dt)
        arr = np.frombuffer(self._mm, dtype=dt, count=count, offset=info.offset)  # type: ignore[arg-type]
        return arr.reshape(info.shape)

    def close(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # views are alive; the map goes when the last one does

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class Checkpoint:
    """All tensors of a Hugging Face checkpoint: one model.safetensors or shards listed in
    model.safetensors.index.json (weight_map: tensor name -> shard file)."""

    def __init__(self, files: dict[str, SafetensorsFile], where: dict[str, str], path: str) -> None:
        self.path = path
        self.files = files  # shard file name -> open file
        self.where = where  # tensor name -> shard file name

    @property
    def tensors(self) -> dict[str, STensorInfo]:
        return {n: self.files[f].tensors[n] for n, f in self.where.items()}

    @property
    def metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in self.files.values():
            out.update(f.metadata)
        return out

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def info(self, name: str) -> STensorInfo:
        return self._file(name).tensors[name]

    def _file(self, name: str) -> SafetensorsFile:
        f = self.where.get(name)
        if f is None:
            raise ModelFormatError(self.path, f"tensor {name!r} is missing from the checkpoint")
        return self.files[f]

    def tensor(self, name: str) -> np.ndarray:
        return self._file(name).tensor(name)

    def tensor_data(self, name: str) -> np.ndarray:
        return self._file(name).tensor_data(name)

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """A checkpoint directory (model.safetensors, or model.safetensors.index.json + shards) or a
    single .safetensors file."""
    p = Path(path)
    if p.is_file():
        f = SafetensorsFile(p)
        return Checkpoint({p.name: f}, {n: p.name for n in f.tensors}, str(p))
    if not p.is_dir():
        raise ModelNotFoundError(p)
    index = p / INDEX_NAME
    if (p / SINGLE_NAME).is_file() and not index.is_file():
        return open_checkpoint(p / SINGLE_NAME)
    if not index.is_file():
        raise ModelFormatError(p, f"neither {SINGLE_NAME} nor {INDEX_NAME} is in this folder")
    try:
        if index.stat().st_size > MAX_HEADER:
            raise ModelFormatError(index, "the index file is implausibly large")
        doc = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ModelFormatError(index, f"cannot read the index: {str(e)[:200]}") from None
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict) or not wm:
        raise ModelFormatError(index, "the index has no weight_map")
    shards: dict[str, SafetensorsFile] = {}
    try:
        for name, shard in wm.items():
            if (
                not isinstance(shard, str)
                or not shard
                or "/" in shard
                or "\\" in shard
                or shard in (".", "..")
            ):
                raise ModelFormatError(
                    index, f"tensor {name!r} maps to an invalid shard name {str(shard)[:100]!r}"
                )
            if shard not in shards:
                sp = p / shard
                if not sp.is_file():
                    raise ModelFormatError(sp, f"shard {shard} listed in {INDEX_NAME} is missing")
                shards[shard] = SafetensorsFile(sp)
            if name not in shards[shard].tensors:
                raise ModelFormatError(
                    p / shard, f"tensor {name!r} listed in {INDEX_NAME} is not in this shard"
                )
    except BaseException:
        for f in shards.values():
            f.close()
        raise
    return Checkpoint(shards, dict(wm), str(p))


__all__ = ["DTYPES", "Checkpoint", "STensorInfo", "SafetensorsFile", "open_checkpoint"]
