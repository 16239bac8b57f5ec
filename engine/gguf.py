"""A GGUF reader that treats the file as hostile.

GGUF layout (little-endian; v2 and v3, ggml/docs/gguf.md):
    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x (string key | u32 value type | value)
    n_tensors x (string name | u32 n_dims | n_dims x u64 ne | u32 ggml type | u64 offset)
    padding to `general.alignment` (default 32)
    tensor data; each offset is relative to the start of this section and aligned.
A string is u64 length + UTF-8 bytes (no terminator); an array is u32 item type + u64 count + items.

Every count, length, dimension, type, size and offset is checked against the file size before it
is used, so a corrupt or malicious file raises ModelFormatError instead of allocating gigabytes,
hanging or reading out of bounds. The file is mapped read-only; tensor data are zero-copy numpy
views into the map.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from trit.text import short_repr, short_text

from .errors import ModelFormatError, OutOfMemoryError, megabytes
from .weights import load_workers

if TYPE_CHECKING:
    from typing_extensions import Self

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_DIM = 1 << 40  # no real tensor has a dimension this large; bigger means corruption
MAX_ARRAY_DEPTH = 8  # nested metadata arrays; recursion stays far from Python's limit


class GGUFValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size value types: numpy dtype (little-endian) of each.
SCALAR_DTYPES: dict[GGUFValueType, np.dtype[Any]] = {
    GGUFValueType.UINT8: np.dtype("<u1"),
    GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.BOOL: np.dtype("<u1"),
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}
_SCALAR_STRUCTS: dict[GGUFValueType, struct.Struct] = {
    t: struct.Struct(
        "<"
        + {
            "u1": "B",
            "i1": "b",
            "u2": "H",
            "i2": "h",
            "u4": "I",
            "i4": "i",
            "f4": "f",
            "u8": "Q",
            "i8": "q",
            "f8": "d",
        }[dt.str[1:]]
    )
    for t, dt in SCALAR_DTYPES.items()
}
# Smallest encoding of one array item, used to bound counts before parsing them.
_MIN_ITEM_BYTES: dict[GGUFValueType, int] = {
    **{t: dt.itemsize for t, dt in SCALAR_DTYPES.items()},
    GGUFValueType.STRING: 8,  # u64 length
    GGUFValueType.ARRAY: 12,  # u32 type + u64 count
}


@dataclass(frozen=True)
class GGMLType:
    """One ggml tensor type: `block_size` values are stored in `type_size` bytes; `tail` extra
    bytes follow the whole tensor (only bitnet.cpp's I2_S has one)."""

    id: int
    name: str
    block_size: int
    type_size: int
    tail: int = 0

    def nbytes(self, n_elements: int) -> int:
        return n_elements // self.block_size * self.type_size + self.tail


QK_K = 256
# ggml's type table (ggml.c type_traits; sizes cross-checked against gguf.constants.GGML_QUANT_SIZES in
# the tests). I2_S is bitnet.cpp's type 36: 2 bits per value, rows cut into 128-value blocks of 32
# bytes, then a 32-byte tail whose first 4 bytes are the f32 per-tensor scale (docs/formats.md).
# Upstream ggml once used ids 31-33 and 36-38 for repacked Q4_0/IQ4_NL variants that are no longer
# written to files; 36 here means I2_S, as in every file that carries it.
GGML_TYPES: dict[int, GGMLType] = {
    t.id: t
    for t in (
        GGMLType(0, "F32", 1, 4),
        GGMLType(1, "F16", 1, 2),
        GGMLType(2, "Q4_0", 32, 2 + 16),
        GGMLType(3, "Q4_1", 32, 2 + 2 + 16),
        GGMLType(6, "Q5_0", 32, 2 + 4 + 16),
        GGMLType(7, "Q5_1", 32, 2 + 2 + 4 + 16),
        GGMLType(8, "Q8_0", 32, 2 + 32),
        GGMLType(9, "Q8_1", 32, 4 + 4 + 32),
        GGMLType(10, "Q2_K", QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
        GGMLType(11, "Q3_K", QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
        GGMLType(12, "Q4_K", QK_K, 2 + 2 + QK_K // 2 + 12),
        GGMLType(13, "Q5_K", QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
        GGMLType(14, "Q6_K", QK_K, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
        GGMLType(15, "Q8_K", QK_K, 4 + QK_K + QK_K // 8),
        GGMLType(16, "IQ2_XXS", QK_K, 2 + QK_K // 4),
        GGMLType(17, "IQ2_XS", QK_K, 2 + QK_K // 4 + QK_K // 32),
        GGMLType(18, "IQ3_XXS", QK_K, 2 + QK_K // 4 + QK_K // 8),
        GGMLType(19, "IQ1_S", QK_K, 2 + QK_K // 8 + QK_K // 16),
        GGMLType(20, "IQ4_NL", 32, 2 + 16),
        GGMLType(21, "IQ3_S", QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
        GGMLType(22, "IQ2_S", QK_K, 2 + QK_K // 4 + QK_K // 16),
        GGMLType(23, "IQ4_XS", QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
        GGMLType(24, "I8", 1, 1),
        GGMLType(25, "I16", 1, 2),
        GGMLType(26, "I32", 1, 4),
        GGMLType(27, "I64", 1, 8),
        GGMLType(28, "F64", 1, 8),
        GGMLType(29, "IQ1_M", QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
        GGMLType(30, "BF16", 1, 2),
        GGMLType(34, "TQ1_0", QK_K, 2 + 4 * 13),
        GGMLType(35, "TQ2_0", QK_K, 2 + QK_K // 4),
        GGMLType(36, "I2_S", 128, 32, tail=32),
        GGMLType(39, "MXFP4", 32, 1 + 16),
    )
}
GGML_TYPE_IDS: dict[str, int] = {t.name: t.id for t in GGML_TYPES.values()}

# Plain element types that tensor_array() can view directly.
_ARRAY_DTYPES: dict[str, np.dtype[Any]] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # numpy has no bfloat16: raw bits; tq_bf16_to_f32 or (u32 << 16) widens
    "F64": np.dtype("<f8"),
    "I8": np.dtype("<i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
}


def supported_types_text() -> str:
    return ", ".join(f"{t.name} ({t.id})" for t in GGML_TYPES.values())


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as described in the file. shape is in ggml order (ne0 = contiguous row length,
    ne1 = rows, ...); a numpy view of it has the reversed shape."""

    name: str
    shape: tuple[int, ...]  # ne0, ne1, ...
    type_id: int
    type_name: str
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def np_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _big(n: int) -> str:
    """Huge counts read better as powers of ten in messages."""
    if n >= 10**9:
        e = len(str(n)) - 1
        if n == 10**e:
            return f"10^{e}"
        return f"{n} (~10^{e})"
    return str(n)


class _Cursor:
    """Bounds-checked sequential reader over the map."""

    __slots__ = ("buf", "path", "pos", "size")

    def __init__(self, buf: mmap.mmap, size: int, path: str) -> None:
        self.buf = buf
        self.pos = 0
        self.size = size
        self.path = path

    def fail(self, problem: str) -> ModelFormatError:
        return ModelFormatError(self.path, problem)

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(
                f"truncated while reading {what} (needs {n} bytes at offset {self.pos}, file size {self.size})"
            )

    def unpack(self, st: struct.Struct, what: str) -> Any:
        self.need(st.size, what)
        (v,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    def u32(self, what: str) -> int:
        return int(self.unpack(_U32, what))

    def u64(self, what: str) -> int:
        return int(self.unpack(_U64, what))

    def string(self, what: str) -> str:
        n = self.u64(f"the length of {what}")
        if n > self.size - self.pos:
            raise self.fail(
                f"{what} claims a string of {_big(n)} bytes at offset {self.pos} but only "
                f"{self.size - self.pos} bytes remain (file size {self.size})"
            )
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None


_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _read_in_parallel(read: Any, items: Iterable[int], workers: int) -> None:
    """Calls read(item) for every item on up to `workers` threads, this one included. A thread
    that cannot be started (low memory: "can't start new thread") leaves fewer readers, at worst
    this one alone. The first error is raised once every reader has stopped; on an error or a
    Ctrl-C the items not yet started are dropped (running ones end before the caller's buffer is
    released)."""
    pending = iter(items)
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with lock:
                item = next(pending, None)
            if item is None:
                return
            try:
                read(item)
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
                errors.append(e)
                stop.set()
                return

    threads: list[threading.Thread] = []
    try:
        for _ in range(workers - 1):
            t = threading.Thread(target=reader, name="trit-read", daemon=True)
            try:
                t.start()
            except RuntimeError:  # no memory for another thread's stack: read with fewer
                break
            threads.append(t)
        reader()
    finally:
        stop.set()  # (all items were taken when this thread's reader returned normally)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


class GGUFFile:
    """A GGUF file opened read-only through mmap.

    metadata: key -> value. Scalars are int / float / bool / str; arrays of numbers or bools are
        1-D numpy arrays (copies, so they outlive the file); arrays of strings are list[str]; arrays
        of arrays are lists.
    metadata_types: key -> GGUFValueType of the value (and, for arrays, see array_item_types).
    tensors: name -> TensorInfo, in file order.
    tensor_data(name): uint8 zero-copy view of the tensor bytes.
    tensor_array(name): typed zero-copy view for F32/F16/BF16(as uint16)/F64/I8/I16/I32/I64.

    Views keep the map alive: close() releases it only when no view is left; otherwise the map is
    freed when the last view goes away.

    read_into_memory(): the tensor data section is read into anonymous memory (2 MiB-aligned; on
    Linux numpy advises transparent huge pages for it) and the map is closed, so tensor views
    taken afterwards point into that copy. Streaming weights through 2 MiB pages reads
    ~20% faster on x86 than through the page cache's 4 KiB pages (fewer TLB misses; the hardware
    prefetchers stop at every 4 KiB boundary): benchmarks/RESULTS.md has the measurement.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, GGUFValueType] = {}
        self.array_item_types: dict[str, GGUFValueType] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self.version = 0
        self.alignment = DEFAULT_ALIGNMENT
        self.data_offset = 0
        self._mm: mmap.mmap | None = None
        self._buf: Any = None  # what tensor views are made from: the map, or the in-memory copy
        self._buf_start = 0  # file offset of _buf[0]
        self._mapped: frozenset[str] = frozenset()  # tensors left in the map by read_into_memory
        self.in_memory = False
        self.file_size = 0
        try:
            with open(self.path, "rb") as f:
                self.file_size = os.fstat(f.fileno()).st_size
                if self.file_size < 4:
                    raise ModelFormatError(
                        self.path, f"not a GGUF file (only {_plural(self.file_size, 'byte')} long)"
                    )
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            if e.errno == errno.ENOMEM:  # no address space left for the map: the file is fine
                raise OutOfMemoryError(
                    f"{self.path}: not enough memory to map the file ({megabytes(self.file_size)}); "
                    "close other programs",
                    needed=self.file_size,
                    part="weights",
                ) from None
            raise ModelFormatError(self.path, f"cannot open the file: {e.strerror or e}") from e
        self._buf = self._mm
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    def read_into_memory(self, exclude: Iterable[str] = ()) -> None:
        """Copies the tensor data section into 2 MiB-aligned anonymous memory and drops the map.
        Call before taking any tensor view (views taken earlier keep pointing into the map).

        exclude: tensors that may stay in the map (e.g. an embedding that is only looked up row by
        row: its pages are read on demand and count in the resident set only once touched). The
        copy covers the byte range from the first to the last other tensor, so an excluded tensor
        at either end of the data section stays mapped (the map is then kept open); one between
        other tensors is copied with them."""
        if self.in_memory or self._mm is None:
            return
        excluded = set(exclude)
        copied = [t for name, t in self.tensors.items() if name not in excluded]
        if not copied:
            return
        start = min(t.offset for t in copied)
        start -= start % self.alignment
        end = max(t.offset + t.nbytes for t in copied)
        mapped = frozenset(
            name for name in excluded if name in self.tensors and not start <= self.tensors[name].offset < end
        )
        if not mapped:
            end = self.file_size
        n = end - start
        huge = 2 << 20
        try:
            raw = np.empty(n + huge, dtype=np.uint8)  # numpy advises huge pages for big allocations
        except MemoryError:
            raise OutOfMemoryError(
                f"{self.path}: not enough memory to read the weights into memory (they need "
                f"{megabytes(n)}); close other programs, or use them from the file in place "
                "(--weights map)",
                needed=n,
                part="weights",
            ) from None
        skip = (-raw.ctypes.data) % huge
        data = raw[skip : skip + n]
        view = memoryview(data)  # type: ignore[arg-type]
        span = 64 << 20
        parallel = hasattr(os, "preadv")  # Windows has no positioned read: one sequential reader
        try:
            with open(self.path, "rb", buffering=0) as f:

                def read_span(pos: int) -> None:
                    # the kernel copies from the page cache and faults in (zeroes) the huge pages:
                    # several threads do that in parallel (each read releases the GIL)
                    stop = min(pos + span, n)
                    if not parallel:
                        f.seek(start + pos)
                    while pos < stop:
                        if parallel:
                            k = os.preadv(f.fileno(), [view[pos:stop]], start + pos)
                        else:
                            k = f.readinto(view[pos:stop])
                        if not k:
                            raise ModelFormatError(
                                self.path, f"the file shrank while it was read (ended at byte {start + pos})"
                            )
                        pos += k

                _read_in_parallel(read_span, range(0, n, span), load_workers() if parallel else 1)
        except OSError as e:
            raise ModelFormatError(self.path, f"cannot read the file: {e.strerror or e}") from e
        finally:
            view.release()
        data.flags.writeable = False
        if not mapped:
            mm, self._mm = self._mm, None
            if mm is not None:
                try:
                    mm.close()  # only the header was read from it
                except BufferError:  # a view still exists: the map goes when it does
                    pass
        self._buf, self._buf_start, self._mapped, self.in_memory = data, start, mapped, True

    def drop_pages(self, name: str, start: int, end: int) -> None:
        """Lets the OS drop the resident pages of bytes [start, end) of a tensor that lives in the
        file map (they stay in the page cache; reading them again faults them back in), so that a
        pass over a mapped tensor does not leave it in this process's resident set. A no-op for
        tensors in the in-memory copy and where mmap has no madvise (Windows)."""
        info = self._info(name)
        buf, _ = self._source(name)
        if buf is not self._mm or not hasattr(buf, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        a = info.offset + max(0, start)
        b = info.offset + min(info.nbytes, end)
        a = (a + page - 1) // page * page  # whole pages inside the range only
        b = b // page * page
        if b > a:
            buf.madvise(mmap.MADV_DONTNEED, a, b - a)

    @property
    def mapped_tensors(self) -> frozenset[str]:
        """Tensors read_into_memory(exclude=...) left in the file map."""
        return self._mapped

    def _source(self, name: str) -> tuple[Any, int]:
        """The buffer a tensor's view is made from and that buffer's file offset."""
        if name in self._mapped:
            assert self._mm is not None
            return self._mm, 0
        return self._buf, self._buf_start

    # -- parsing ---------------------------------------------------------------------------------

    def _parse(self) -> None:
        assert self._mm is not None
        c = _Cursor(self._mm, self.file_size, self.path)
        magic = self._mm[0:4]
        if magic != GGUF_MAGIC:
            raise c.fail(f"not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
        c.pos = 4
        version = c.u32("the version")
        if version not in GGUF_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            if swapped in GGUF_VERSIONS:
                raise c.fail("big-endian GGUF files are not supported")
            if version == 1:
                raise c.fail(
                    "GGUF version 1 is too old (versions 2 and 3 are supported); re-convert the model"
                )
            raise c.fail(f"unsupported GGUF version {version} (versions 2 and 3 are supported)")
        self.version = version
        n_tensors = c.u64("the tensor count")
        n_kv = c.u64("the metadata count")
        remaining = self.file_size - c.pos
        # Smallest possible entries: a tensor info is 8 (name length) + 4 (n_dims) + 8 (one dim)
        # + 4 (type) + 8 (offset) bytes; a key-value pair 8 (key length) + 4 (type) + 1 (value).
        if n_tensors * 32 > remaining:
            raise c.fail(
                f"header says {_big(n_tensors)} tensors but the file has only {self.file_size} bytes"
            )
        if n_kv * 13 > remaining:
            raise c.fail(
                f"header says {_big(n_kv)} metadata entries but the file has only {self.file_size} bytes"
            )
        if n_tensors * 32 + n_kv * 13 > remaining:
            raise c.fail(
                f"header says {n_tensors} tensors and {n_kv} metadata entries but the file has only "
                f"{self.file_size} bytes"
            )

        for i in range(n_kv):
            key = c.string(f"metadata key #{i}")
            if key in self.metadata:
                raise c.fail(f"metadata key {short_repr(key)} appears twice")
            what = f"metadata key #{i} ({short_repr(key)})"
            vtype = self._value_type(c, what)
            self.metadata_types[key] = vtype
            if vtype == GGUFValueType.ARRAY:
                item_type = self._value_type(c, f"the item type of {what}")
                self.array_item_types[key] = item_type
                self.metadata[key] = self._read_array_body(c, item_type, what, 1)
            else:
                self.metadata[key] = self._read_value(c, vtype, what)

        if "general.alignment" in self.metadata:
            a = self.metadata["general.alignment"]
            if self.metadata_types["general.alignment"] not in (
                GGUFValueType.UINT8,
                GGUFValueType.UINT16,
                GGUFValueType.UINT32,
                GGUFValueType.UINT64,
                GGUFValueType.INT32,
                GGUFValueType.INT64,
            ):
                raise c.fail(
                    f"general.alignment has type {self.metadata_types['general.alignment'].name}, "
                    "expected an unsigned integer"
                )
            if not (1 <= a <= 1 << 30) or a & (a - 1):
                raise c.fail(f"general.alignment is {a}, which is not a power of two")
            self.alignment = int(a)

        infos: list[tuple[str, tuple[int, ...], GGMLType, int]] = []
        names: set[str] = set()
        for i in range(n_tensors):
            name = c.string(f"the name of tensor #{i}")
            label = f"tensor {short_repr(name)} (#{i})"
            if not name:
                raise c.fail(f"tensor #{i} has an empty name")
            if name in names:
                raise c.fail(f"tensor {short_repr(name)} appears twice")
            names.add(name)
            n_dims = c.u32(f"the dimension count of {label}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise c.fail(f"{label} has {n_dims} dimensions (1 to {MAX_DIMS} are allowed)")
            c.need(8 * n_dims, f"the dimensions of {label}")
            shape = struct.unpack_from(f"<{n_dims}Q", self._mm, c.pos)
            c.pos += 8 * n_dims
            for d in shape:
                if not 1 <= d <= MAX_DIM:
                    raise c.fail(f"{label} has dimension {d} in shape {list(shape)} (must be 1 to 2^40)")
            type_id = c.u32(f"the type of {label}")
            gt = GGML_TYPES.get(type_id)
            if gt is None:
                raise c.fail(
                    f"tensor {short_text(name)} has type {type_id}, which this version cannot read "
                    f"(supported: {supported_types_text()}). Update Trit or pick another file."
                )
            if shape[0] % gt.block_size:
                raise c.fail(
                    f"{label} of type {gt.name} has rows of {shape[0]} values, not a multiple of its "
                    f"block size {gt.block_size}"
                )
            rel = c.u64(f"the data offset of {label}")
            infos.append((name, tuple(shape), gt, rel))

        # The data section starts at the next multiple of the alignment.
        self.data_offset = -(-c.pos // self.alignment) * self.alignment
        if infos and self.data_offset > self.file_size:
            raise c.fail(
                f"the tensor data section (offset {self.data_offset}) starts past the end of the file "
                f"(size {self.file_size})"
            )
        data_size = self.file_size - self.data_offset
        for name, shape, gt, rel in infos:
            n = 1
            for d in shape:
                n *= d
            nbytes = gt.nbytes(n)
            if rel % self.alignment:
                raise c.fail(
                    f"tensor {short_repr(name)} data offset {rel} is not a multiple of the alignment {self.alignment}"
                )
            if rel > data_size or nbytes > data_size - rel:
                raise c.fail(
                    f"tensor {short_repr(name)} data (offset {self.data_offset + rel}, {nbytes} bytes) runs past "
                    f"the end of the file (size {self.file_size})"
                )
            self.tensors[name] = TensorInfo(name, shape, gt.id, gt.name, self.data_offset + rel, nbytes)

        spans = sorted(self.tensors.values(), key=lambda t: t.offset)
        for a, b in itertools.pairwise(spans):
            if a.offset + a.nbytes > b.offset:
                raise c.fail(
                    f"tensors {short_repr(a.name)} (bytes {a.offset}..{a.offset + a.nbytes}) and {short_repr(b.name)} "
                    f"(from byte {b.offset}) overlap"
                )

    def _value_type(self, c: _Cursor, what: str) -> GGUFValueType:
        t = c.u32(f"the type of {what}")
        try:
            return GGUFValueType(t)
        except ValueError:
            raise c.fail(f"{what} has unknown value type {t}") from None

    def _read_value(self, c: _Cursor, vtype: GGUFValueType, what: str) -> Any:
        if vtype == GGUFValueType.STRING:
            return c.string(what)
        if vtype == GGUFValueType.ARRAY:  # only reached for nested arrays (see _read_array_body)
            raise AssertionError
        v = c.unpack(_SCALAR_STRUCTS[vtype], what)
        if vtype == GGUFValueType.BOOL:
            if v > 1:
                raise c.fail(f"{what} is a bool with value {v}")
            return bool(v)
        return v

    def _read_array_body(self, c: _Cursor, item_type: GGUFValueType, what: str, depth: int) -> Any:
        if depth > MAX_ARRAY_DEPTH:
            raise c.fail(f"{what} nests arrays more than {MAX_ARRAY_DEPTH} deep")
        n = c.u64(f"the length of {what}")
        per = _MIN_ITEM_BYTES[item_type]
        if n * per > c.size - c.pos:
            raise c.fail(
                f"{what} claims {_big(n)} {item_type.name} items (at least {per} bytes each) but only "
                f"{c.size - c.pos} bytes remain (file size {c.size})"
            )
        if item_type in SCALAR_DTYPES:
            dt = SCALAR_DTYPES[item_type]
            arr = np.frombuffer(self._mm, dtype=dt, count=n, offset=c.pos).copy()  # type: ignore[arg-type]
            c.pos += n * dt.itemsize
            if item_type == GGUFValueType.BOOL:
                if n and arr.max() > 1:
                    raise c.fail(f"{what} holds a bool that is neither 0 nor 1")
                return arr.astype(np.bool_)
            return arr.astype(dt.newbyteorder("="), copy=False)
        if item_type == GGUFValueType.STRING:
            return self._read_strings(c, n, what)
        out: list[Any] = []
        for j in range(n):
            inner = self._value_type(c, f"the item type of item #{j} of {what}")
            out.append(self._read_array_body(c, inner, f"item #{j} of {what}", depth + 1))
        return out

    def _read_strings(self, c: _Cursor, n: int, what: str) -> list[str]:
        # Tight loop: tokenizer.ggml.tokens has ~128k entries in Llama-3 vocabularies.
        buf = c.buf
        size = c.size
        pos = c.pos
        unpack = _U64.unpack_from
        out: list[str] = []
        append = out.append
        for j in range(n):
            if pos + 8 > size:
                c.pos = pos
                c.need(8, f"the length of string #{j} of {what}")
            (ln,) = unpack(buf, pos)
            pos += 8
            if ln > size - pos:
                raise c.fail(
                    f"string #{j} of {what} claims {_big(ln)} bytes at offset {pos} but only "
                    f"{size - pos} bytes remain (file size {size})"
                )
            try:
                append(buf[pos : pos + ln].decode("utf-8"))
            except UnicodeDecodeError:
                raise c.fail(f"string #{j} of {what} is not valid UTF-8") from None
            pos += ln
        c.pos = pos
        return out

    # -- access ----------------------------------------------------------------------------------

    def _info(self, name: str) -> TensorInfo:
        info = self.tensors.get(name)
        if info is None:
            raise ModelFormatError(self.path, f"tensor {short_repr(name)} is missing")
        if self._buf is None:
            raise ValueError(f"{self.path}: the file is closed")
        return info

    def tensor_data(self, name: str) -> np.ndarray:
        """uint8 [nbytes] view of the tensor's bytes in the map (read-only, zero-copy)."""
        info = self._info(name)
        buf, base = self._source(name)
        return np.frombuffer(buf, dtype=np.uint8, count=info.nbytes, offset=info.offset - base)

    def tensor_array(self, name: str) -> np.ndarray:
        """Typed zero-copy view with the numpy shape (..., ne1, ne0). BF16 comes as uint16 bits."""
        info = self._info(name)
        dt = _ARRAY_DTYPES.get(info.type_name)
        if dt is None:
            raise ModelFormatError(
                self.path,
                f"tensor {short_text(name)} has type {info.type_name}; expected one of {', '.join(_ARRAY_DTYPES)}",
            )
        buf, base = self._source(name)
        arr = np.frombuffer(buf, dtype=dt, count=info.n_elements, offset=info.offset - base)
        return arr.reshape(info.np_shape)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def close(self) -> None:
        self._buf = None
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                # numpy views still point into the map; it is unmapped when the last one dies.
                pass

    @property
    def closed(self) -> bool:
        return self._buf is None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"GGUFFile({self.path!r}, v{self.version}, {len(self.metadata)} keys, "
            f"{len(self.tensors)} tensors)"
        )


def type_by_name(name: str) -> GGMLType:
    return GGML_TYPES[GGML_TYPE_IDS[name]]


def tensor_nbytes(type_id: int, shape: Iterable[int]) -> int:
    """Bytes of a tensor of this ggml type and ggml-order shape."""
    n = 1
    for d in shape:
        n *= d
    return GGML_TYPES[type_id].nbytes(n)


__all__ = [
    "DEFAULT_ALIGNMENT",
    "GGML_TYPES",
    "GGML_TYPE_IDS",
    "GGMLType",
    "GGUFFile",
    "GGUFValueType",
    "TensorInfo",
    "tensor_nbytes",
    "type_by_name",
]
