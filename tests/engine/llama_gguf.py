"""Write llama-architecture GGUF files the way llama.cpp's converter lays them out, for tests.

llama.cpp's convert_hf_to_gguf.py (LlamaModel.modify_tensors) permutes the rows of q_proj and
k_proj (weights and biases) so that its interleaved RoPE (pairs 2i, 2i+1) computes what
transformers' rotate_half (pairs i, i + head_dim/2) computes on the HF rows:

    w.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)

with n_head = num_key_value_heads for k_proj. Our GGUF loader therefore sets rope_neox=False for
llama files; writing through permute_qk here is what makes that choice testable.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from trit.engine.convert import LINEAR_NAMES  # our field -> GGUF tensor name, as the BitNet writer uses
from trit.engine.gguf import GGML_TYPE_IDS, GGML_TYPES, GGUFValueType
from trit.engine.gguf_writer import GGUFWriter
from trit.engine.weights import ModelConfig

# llama_ftype (llama.h) for general.file_type, by the type of most linears
FILE_TYPES = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q4_K": 15,
    "Q5_K": 17,
    "Q6_K": 18,
    "BF16": 32,
    "TQ1_0": 36,
    "TQ2_0": 37,
}
FLOAT_TYPES = ("F32", "F16", "BF16")


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: HF rows [n_head * head_dim, ...] -> GGUF row order."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of permute_qk (GGUF row order -> HF rows)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


Tensor = tuple[str, np.ndarray]  # (ggml type name, data)


def add(w: GGUFWriter, name: str, t: Tensor, cols: int | None = None) -> None:
    """A float type from a float array [rows, cols] (or [n]), or any other type from its encoded
    bytes uint8 [rows, row_bytes] (then pass cols, the row length in values)."""
    type_name, data = t
    if type_name in FLOAT_TYPES:
        w.add_tensor(name, np.asarray(data), type_name)  # F16 / BF16 round from float32 if needed
        return
    gt = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    rows = data.shape[0]
    if cols is None:
        cols = data.shape[1] // gt.type_size * gt.block_size
    assert data.dtype == np.uint8 and data.nbytes == gt.nbytes(rows * cols), (name, data.shape, cols)
    w.add_raw_tensor(name, (cols, rows), gt.id, np.ascontiguousarray(data))


def write_llama_gguf(
    path: str | Path,
    cfg: ModelConfig,
    *,
    embed: Tensor,
    out_norm: np.ndarray,
    layers: list[Mapping[str, Any]],
    head: Tensor | None = None,
    file_type: str,
    extra_metadata: Mapping[str, Any] | None = None,
) -> None:
    """layers[i]: {"attn_norm", "ffn_norm": float32 [n]; "q" ... "down": Tensor already in GGUF row
    order (q/k permuted by the caller); optional "q_bias", "k_bias", "v_bias": float32 [rows]
    (q/k permuted too)}. The head is written only when given (else the file is tied)."""
    u32, f32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32
    w = GGUFWriter(path)
    a = "llama"
    for key, value, vt in (
        ("general.architecture", a, GGUFValueType.STRING),
        ("general.file_type", FILE_TYPES[file_type], u32),
        (f"{a}.vocab_size", cfg.vocab, u32),
        (f"{a}.context_length", cfg.context, u32),
        (f"{a}.embedding_length", cfg.dim, u32),
        (f"{a}.feed_forward_length", cfg.hidden, u32),
        (f"{a}.block_count", cfg.n_layers, u32),
        (f"{a}.attention.head_count", cfg.n_heads, u32),
        (f"{a}.attention.head_count_kv", cfg.n_kv_heads, u32),
        (f"{a}.rope.dimension_count", cfg.head_dim, u32),
        (f"{a}.rope.freq_base", cfg.rope_theta, f32),
        (f"{a}.attention.layer_norm_rms_epsilon", cfg.norm_eps, f32),
    ):
        w.add_metadata(key, value, vt)
    if cfg.head_dim != cfg.dim // cfg.n_heads:
        w.add_metadata(f"{a}.attention.key_length", cfg.head_dim, u32)
        w.add_metadata(f"{a}.attention.value_length", cfg.head_dim, u32)
    if cfg.bos_id is not None:
        w.add_metadata("tokenizer.ggml.bos_token_id", cfg.bos_id, u32)
    if cfg.eos_ids:
        w.add_metadata("tokenizer.ggml.eos_token_id", cfg.eos_ids[0], u32)
    for key, value in (extra_metadata or {}).items():
        w.add_metadata(key, value)
    qdim = cfg.n_heads * cfg.head_dim
    cols = {"q": cfg.dim, "k": cfg.dim, "v": cfg.dim, "o": qdim, "gate": cfg.dim, "up": cfg.dim}
    cols["down"] = cfg.hidden
    add(w, "token_embd.weight", embed, cfg.dim)
    for i, L in enumerate(layers):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", np.asarray(L["attn_norm"], dtype=np.float32))
        for f in ("q", "k", "v", "o"):
            add(w, b + LINEAR_NAMES[f] + ".weight", L[f], cols[f])
            if L.get(f + "_bias") is not None:
                w.add_tensor(b + LINEAR_NAMES[f] + ".bias", np.asarray(L[f + "_bias"], dtype=np.float32))
        w.add_tensor(b + "ffn_norm.weight", np.asarray(L["ffn_norm"], dtype=np.float32))
        for f in ("gate", "up", "down"):
            add(w, b + LINEAR_NAMES[f] + ".weight", L[f], cols[f])
    w.add_tensor("output_norm.weight", np.asarray(out_norm, dtype=np.float32))
    if head is not None:
        add(w, "output.weight", head, cfg.dim)
    w.write()
