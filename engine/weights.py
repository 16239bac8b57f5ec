"""The canonical in-memory form of a model, shared by every loader (GGUF, safetensors) and the
forward pass. Loaders produce a ``ModelWeights``; ``trit.engine._core`` only reads pointers from it,
so every array here must stay alive as long as the model (views into an mmap are fine)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

TQ_QK = 128  # values per packed block (engine/kernels/tq.h)
TQ_QK_BYTES = 32  # bytes per packed block
TQ_B3_QK = 320  # the B3 layout's values per block (tq.h: five base-3 codes a byte)
TQ_B3_BYTES = 64
LINEAR_NAMES = ("q", "k", "v", "o", "gate", "up", "down")  # a layer's matrices (LayerWeights)


def packed_row_bytes(cols: int, layout: str) -> int:
    """Bytes of one packed ternary row of `cols` values in a layout ("tq": 32 per 128 values,
    "b3": 64 per 320; the last block padded)."""
    if layout == "b3":
        return -(-cols // TQ_B3_QK) * TQ_B3_BYTES
    return -(-cols // TQ_QK) * TQ_QK_BYTES


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # the block: "bitnet-b1.58" (also bitnet-25 and llama.cpp's bitnet files, HF BitNet) or "llama"
    dim: int  # hidden size, e.g. 2560
    hidden: int  # FFN intermediate size, e.g. 6912
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    context: int  # maximum positions
    rope_theta: float
    norm_eps: float
    rope_neox: bool = True  # True: rotate_half pairs (i, i + head_dim/2); False: (2i, 2i+1)
    act: str = "relu2"  # FFN gate activation: "relu2" (BitNet) or "silu" (llama)
    tied: bool = True  # LM head is the token embedding
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    file_arch: str = ""  # what the file calls it (GGUF general.architecture), when it differs from arch


@dataclass
class TernaryTensor:
    """A ternary matrix W [rows, cols] in a packed layout, y = (W @ x) * scale[row].

    packed: uint8 [rows, nb * 32] in the TQ layout (layout "tq": nb = ceil(cols / 128) blocks of
            2-bit codes), or [rows, nb * 64] in the B3 one ("b3": nb = ceil(cols / 320) blocks of
            five base-3 codes a byte, made at load by to_b3 where the kernels read it faster);
            C-contiguous, may view an mmap.
    scale:  float32 [rows]; multiplies the integer dot product (a per-tensor scale is broadcast).
    """

    packed: np.ndarray
    rows: int
    cols: int
    scale: np.ndarray
    source_type: str = "I2_S"  # what the file held: I2_S, TQ1_0, TQ2_0, HF-packed, HF-bf16 ...
    layout: str = "tq"

    @property
    def nb(self) -> int:
        if self.layout == "b3":
            return (self.cols + TQ_B3_QK - 1) // TQ_B3_QK
        return (self.cols + TQ_QK - 1) // TQ_QK

    @property
    def row_bytes(self) -> int:
        return packed_row_bytes(self.cols, self.layout)

    def __post_init__(self) -> None:
        assert self.layout in ("tq", "b3"), self.layout
        assert self.packed.dtype == np.uint8 and self.packed.flags.c_contiguous
        assert self.packed.shape == (self.rows, self.row_bytes), (
            self.packed.shape,
            self.rows,
            self.cols,
            self.layout,
        )
        assert self.scale.dtype == np.float32 and self.scale.shape == (self.rows,)


@dataclass
class QuantTensor:
    """A matrix [rows, cols] in a llama.cpp type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
    Q4_K, Q5_K, Q6_K), rows as stored in the file (usually a view into the mmap).

    data: uint8 [rows, row_bytes], C-contiguous.   bias: float32 [rows] or None."""

    data: np.ndarray
    rows: int
    cols: int
    ggml_type: int
    type_name: str
    bias: np.ndarray | None = None

    @property
    def source_type(self) -> str:
        return self.type_name

    def __post_init__(self) -> None:
        assert (
            self.data.dtype == np.uint8 and self.data.flags.c_contiguous and self.data.shape[0] == self.rows
        )
        assert self.bias is None or (self.bias.dtype == np.float32 and self.bias.shape == (self.rows,))


Linear = TernaryTensor | QuantTensor


@dataclass
class LayerWeights:
    attn_norm: np.ndarray  # float32 [dim]
    q: Linear  # [n_heads * head_dim, dim]
    k: Linear  # [n_kv_heads * head_dim, dim]
    v: Linear  # [n_kv_heads * head_dim, dim]
    attn_sub_norm: np.ndarray | None  # float32 [n_heads * head_dim]; None for llama
    o: Linear  # [dim, n_heads * head_dim]
    ffn_norm: np.ndarray  # float32 [dim]
    gate: Linear  # [hidden, dim]
    up: Linear  # [hidden, dim]
    ffn_sub_norm: np.ndarray | None  # float32 [hidden]; None for llama
    down: Linear  # [dim, hidden]


@dataclass
class ModelWeights:
    config: ModelConfig
    embed: np.ndarray | QuantTensor  # float16 [vocab, dim], or a llama.cpp type (also the tied head)
    layers: list[LayerWeights]
    out_norm: np.ndarray  # float32 [dim]
    head: np.ndarray | QuantTensor | None = None  # [vocab, dim] when not tied
    source: str = ""  # path it was loaded from
    file_type: str = ""  # e.g. "GGUF I2_S", "HF packed (autobitlinear)"
    keepalive: list[object] = field(default_factory=list)  # mmaps etc. backing the views
    tokenizer: object | None = None  # trit.engine.tokenizer.Tokenizer when the source has one
    chat_template: str | None = None  # the template embedded in the source, if any
    family: str = ""  # model family for built-in chat templates: bitnet, llama3, smollm, falcon3
    memory: str = "file map"  # where the tensors live: "file map", "RAM copy", repacked ...


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 numbers held as their raw uint16 bits (bf16 is the top half of an
    f32; numpy has no bfloat16 type)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def dense_float(t: np.ndarray | QuantTensor) -> np.ndarray:
    """float32 [rows, cols] of a float matrix held as a numpy array or an F32/F16/BF16 QuantTensor
    (embeddings and heads; quantized llama.cpp types need the kernels' dequantizer instead)."""
    if isinstance(t, np.ndarray):
        return t.astype(np.float32)
    if t.type_name == "F32":
        return t.data.view(np.float32).reshape(t.rows, t.cols)
    if t.type_name == "F16":
        return t.data.view(np.float16).reshape(t.rows, t.cols).astype(np.float32)
    if t.type_name == "BF16":
        return bf16_to_f32(t.data.view(np.uint16)).reshape(t.rows, t.cols)
    raise TypeError(f"a {t.type_name} matrix is not a float matrix")


def load_workers(tasks: int | None = None) -> int:
    """Threads for the loaders' parallel copies and conversions (GGUFFile.read_into_memory, the Q8_0
    head): up to 4, no more than this machine's CPUs, nor than `tasks` when given. Their work
    releases the GIL (file reads, numpy array operations); past 4 threads memory is the limit."""
    return max(1, min(4, os.cpu_count() or 1, tasks if tasks is not None else 4))
