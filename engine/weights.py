"""The canonical in-memory form of a model, shared by every loader (GGUF, safetensors) and the
forward pass. Loaders produce a ``ModelWeights``; ``trit.engine._core`` only reads pointers from it,
so every array here must stay alive as long as the model (views into an mmap are fine)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TQ_QK = 128  # values per packed block (engine/kernels/tq.h)
TQ_QK_BYTES = 32  # bytes per packed block


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # "bitnet-b1.58" (also for bitnet-25 files and HF BitNet checkpoints)
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


@dataclass
class TernaryTensor:
    """A ternary matrix W [rows, cols] in the packed TQ layout, y = (W @ x) * scale[row].

    packed: uint8 [rows, nb * 32] with nb = ceil(cols / 128); C-contiguous, may view an mmap.
    scale:  float32 [rows]; multiplies the integer dot product (a per-tensor scale is broadcast).
    """

    packed: np.ndarray
    rows: int
    cols: int
    scale: np.ndarray
    source_type: str = "I2_S"  # what the file held: I2_S, TQ1_0, TQ2_0, HF-packed, HF-bf16 ...

    @property
    def nb(self) -> int:
        return (self.cols + TQ_QK - 1) // TQ_QK

    def __post_init__(self) -> None:
        assert self.packed.dtype == np.uint8 and self.packed.flags.c_contiguous
        assert self.packed.shape == (self.rows, self.nb * TQ_QK_BYTES), (self.packed.shape, self.rows, self.cols)
        assert self.scale.dtype == np.float32 and self.scale.shape == (self.rows,)


@dataclass
class LayerWeights:
    attn_norm: np.ndarray  # float32 [dim]
    q: TernaryTensor  # [n_heads * head_dim, dim]
    k: TernaryTensor  # [n_kv_heads * head_dim, dim]
    v: TernaryTensor  # [n_kv_heads * head_dim, dim]
    attn_sub_norm: np.ndarray  # float32 [n_heads * head_dim]
    o: TernaryTensor  # [dim, n_heads * head_dim]
    ffn_norm: np.ndarray  # float32 [dim]
    gate: TernaryTensor  # [hidden, dim]
    up: TernaryTensor  # [hidden, dim]
    ffn_sub_norm: np.ndarray  # float32 [hidden]
    down: TernaryTensor  # [dim, hidden]


@dataclass
class ModelWeights:
    config: ModelConfig
    embed: np.ndarray  # float16 [vocab, dim] (token embedding; also the head when tied)
    layers: list[LayerWeights]
    out_norm: np.ndarray  # float32 [dim]
    head: np.ndarray | None = None  # float16 [vocab, dim] when not tied
    source: str = ""  # path it was loaded from
    file_type: str = ""  # e.g. "GGUF I2_S", "HF packed (autobitlinear)"
    keepalive: list[object] = field(default_factory=list)  # mmaps etc. backing the views
