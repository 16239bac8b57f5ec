"""Write a BitNet b1.58 model as a bitnet.cpp-compatible GGUF file.

The file follows bitnet.cpp's converter: arch "bitnet-b1.58" (a SiLU model: llama.cpp's "bitnet"), arch-prefixed hyper-parameters as
UINT32 / FLOAT32 (llama.cpp's loader checks the value types), llama.cpp tensor names with the two
BitNet sub-norms, token_embd in F16, norms in F32, no output.weight when the head is tied, and the
seven BitLinear matrices of each block in I2_S (file type 40), TQ1_0 or TQ2_0. GGUF dims are in
ggml order: a weight [out, in] is written with ne0 = in, ne1 = out.

Tensor data are produced one at a time while the file is written, so converting the 2B4T shapes
needs about one matrix of extra memory.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .gguf import GGML_TYPE_IDS, GGML_TYPES, GGUFValueType
from .gguf_writer import GGUFWriter
from .ternary import I2S_TAIL, i2s_bytes, pack_tq, tq1_0_bytes, tq2_0_bytes, unpack_ternary, unpack_tq
from .weights import ModelConfig, ModelWeights, TernaryTensor, dense_float

BITNET_ARCH = "bitnet-b1.58"  # bitnet.cpp's name for the ReLU^2 block
LLAMA_CPP_BITNET_ARCH = "bitnet"  # llama.cpp's: the same block, its FFN activation named in the file
# llama_ftype values (llama.h; bitnet.cpp adds 40 for I2_S).
FILE_TYPES = {"I2_S": 40, "TQ1_0": 36, "TQ2_0": 37}
# Our LayerWeights field -> GGUF tensor name suffix (blk.N.<suffix>.weight).
LINEAR_NAMES = {
    "q": "attn_q",
    "k": "attn_k",
    "v": "attn_v",
    "o": "attn_output",
    "gate": "ffn_gate",
    "up": "ffn_up",
    "down": "ffn_down",
}
NORM_NAMES = {
    "attn_norm": "attn_norm",
    "attn_sub_norm": "attn_sub_norm",
    "ffn_norm": "ffn_norm",
    "ffn_sub_norm": "ffn_sub_norm",
}

Matrix = tuple[np.ndarray, Any]  # (int8 [out, in] in {-1, 0, 1}, scale: float or float32 [out])


def _metadata(cfg: ModelConfig, arch: str, ternary_type: str) -> list[tuple[str, Any, GGUFValueType]]:
    u32, f32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32
    md: list[tuple[str, Any, GGUFValueType]] = [
        ("general.architecture", arch, GGUFValueType.STRING),
        ("general.file_type", FILE_TYPES[ternary_type], u32),
        (f"{arch}.vocab_size", cfg.vocab, u32),
        (f"{arch}.context_length", cfg.context, u32),
        (f"{arch}.embedding_length", cfg.dim, u32),
        (f"{arch}.feed_forward_length", cfg.hidden, u32),
        (f"{arch}.block_count", cfg.n_layers, u32),
        (f"{arch}.attention.head_count", cfg.n_heads, u32),
        (f"{arch}.attention.head_count_kv", cfg.n_kv_heads, u32),
        (f"{arch}.attention.key_length", cfg.head_dim, u32),
        (f"{arch}.attention.value_length", cfg.head_dim, u32),
        (f"{arch}.rope.dimension_count", cfg.head_dim, u32),
        (f"{arch}.rope.freq_base", cfg.rope_theta, f32),
        (f"{arch}.attention.layer_norm_rms_epsilon", cfg.norm_eps, f32),
    ]
    if arch == LLAMA_CPP_BITNET_ARCH:
        md.append((f"{arch}.hidden_activation", cfg.act, GGUFValueType.STRING))
    if cfg.bos_id is not None:
        md.append(("tokenizer.ggml.bos_token_id", cfg.bos_id, u32))
    if cfg.eos_ids:
        md.append(("tokenizer.ggml.eos_token_id", cfg.eos_ids[0], u32))
        if len(cfg.eos_ids) > 1:
            md.append(("tokenizer.ggml.eot_token_id", cfg.eos_ids[1], u32))
    return md


def _ternary_producer(
    m: TernaryTensor | Matrix, ternary_type: str, name: str
) -> tuple[int, int, Callable[[], np.ndarray]]:
    """(rows, cols, producer of the encoded bytes) for one BitLinear matrix."""
    if isinstance(m, TernaryTensor):
        if m.layout != "tq":  # a Model's B3 copy (load_model ternary=...); the loaders give TQ
            m = dataclasses.replace(m, packed=pack_tq(unpack_ternary(m)), layout="tq")
        rows, cols = m.rows, m.cols
        scale: np.ndarray = m.scale
        if ternary_type == "I2_S":
            if cols % 128:
                raise ValueError(f"{name}: I2_S needs rows of a multiple of 128 values, got {cols}")
            if not np.all(scale == scale[0]):
                raise ValueError(f"{name}: I2_S has one scale per tensor, this matrix has one per row")
            t = m

            def i2s() -> np.ndarray:  # the TQ layout is I2_S data: no repacking
                tail = np.zeros(I2S_TAIL, dtype=np.uint8)
                tail[:4] = np.array([t.scale[0]], dtype="<f4").view(np.uint8)
                return np.concatenate([t.packed.reshape(-1), tail])

            return rows, cols, i2s
        enc = tq2_0_bytes if ternary_type == "TQ2_0" else tq1_0_bytes
        return rows, cols, lambda: enc(unpack_tq(m.packed, cols), scale)
    w, s = m
    rows, cols = w.shape
    if ternary_type == "I2_S":
        sa = np.asarray(s, dtype=np.float32).reshape(-1)
        if not np.all(sa == sa[0]):
            raise ValueError(f"{name}: I2_S has one scale per tensor")
        s = float(sa[0])
    enc2 = {"I2_S": i2s_bytes, "TQ2_0": tq2_0_bytes, "TQ1_0": tq1_0_bytes}[ternary_type]
    return rows, cols, lambda: enc2(w, s)


def write_bitnet_gguf(
    source: ModelWeights | Mapping[str, Any],
    out_path: str | os.PathLike[str],
    *,
    config: ModelConfig | None = None,
    ternary_type: str = "I2_S",
    arch: str | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write `source` as a bitnet.cpp-style GGUF.

    source: a ModelWeights whose linears are TernaryTensors, or plain arrays:
        {"layers": [{"q": (int8 W [out, in], scale), ..., "down": (...), "attn_norm": float32 [dim],
        "attn_sub_norm", "ffn_norm", "ffn_sub_norm"}, ...], "embed": float16 [vocab, dim],
        "out_norm": float32 [dim], optional "head": float16 [vocab, dim], optional "config"}.
    config: required for plain arrays without "config"; defaults to source.config.
    ternary_type: "I2_S" (per-tensor scale), "TQ2_0" or "TQ1_0" (per-row scales allowed).
    arch: "bitnet-b1.58" (ReLU^2 only) or "bitnet" (llama.cpp's, with bitnet.hidden_activation
        written); default: "bitnet-b1.58" for a ReLU^2 model, "bitnet" for a SiLU one.
    extra_metadata: more keys (e.g. tokenizer.ggml.*), types inferred by GGUFWriter.add_metadata.
    extra_tensors: more tensors, written after the model's (e.g. llama.cpp's blk.N.attn_q.scale).
    """
    if ternary_type not in FILE_TYPES:
        raise ValueError(f"ternary_type must be one of {', '.join(FILE_TYPES)}, got {ternary_type!r}")
    if isinstance(source, ModelWeights):
        cfg = config or source.config
        embed, out_norm, head = source.embed, source.out_norm, source.head
        layers: list[dict[str, Any]] = [
            {f: getattr(lw, f) for f in (*LINEAR_NAMES, *NORM_NAMES)} for lw in source.layers
        ]
    else:
        cfg = config or source.get("config")  # type: ignore[assignment]
        if cfg is None:
            raise ValueError("pass config= with plain arrays")
        embed, out_norm, head = source["embed"], source["out_norm"], source.get("head")
        layers = list(source["layers"])
    if len(layers) != cfg.n_layers:
        raise ValueError(f"config says {cfg.n_layers} layers, got {len(layers)}")
    if arch is None:
        arch = BITNET_ARCH if cfg.act == "relu2" else LLAMA_CPP_BITNET_ARCH
    if arch not in (BITNET_ARCH, LLAMA_CPP_BITNET_ARCH):
        raise ValueError(f"arch must be {BITNET_ARCH!r} or {LLAMA_CPP_BITNET_ARCH!r}, not {arch!r}")
    if arch == BITNET_ARCH and cfg.act != "relu2":
        raise ValueError(
            f"{BITNET_ARCH} files are ReLU^2 models; write a {cfg.act} model as {LLAMA_CPP_BITNET_ARCH!r}"
        )
    embed = _as_f16(embed)  # bitnet.cpp files hold an F16 embedding (bf16 converts exactly)

    w = GGUFWriter(out_path)
    for key, value, vtype in _metadata(cfg, arch, ternary_type):
        w.add_metadata(key, value, vtype)
    for key, value in (extra_metadata or {}).items():
        w.add_metadata(key, value)

    w.add_tensor("token_embd.weight", embed)
    gt = GGML_TYPES[GGML_TYPE_IDS[ternary_type]]
    for i, layer in enumerate(layers):
        for field in NORM_NAMES:
            if layer.get(field) is None:
                raise ValueError(f"layer {i}: {field} is missing (a BitNet block has both sub-norms)")
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.asarray(layer["attn_norm"], dtype=np.float32))
        for field in ("q", "k", "v", "o"):
            _add_linear(w, gt.name, f"blk.{i}.{LINEAR_NAMES[field]}.weight", layer[field])
        w.add_tensor(f"blk.{i}.attn_sub_norm.weight", np.asarray(layer["attn_sub_norm"], dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.asarray(layer["ffn_norm"], dtype=np.float32))
        for field in ("gate", "up", "down"):
            _add_linear(w, gt.name, f"blk.{i}.{LINEAR_NAMES[field]}.weight", layer[field])
        w.add_tensor(f"blk.{i}.ffn_sub_norm.weight", np.asarray(layer["ffn_sub_norm"], dtype=np.float32))
    w.add_tensor("output_norm.weight", np.asarray(out_norm, dtype=np.float32))
    if head is not None:
        w.add_tensor("output.weight", _as_f16(head))
    for name, array in (extra_tensors or {}).items():
        w.add_tensor(name, array)
    w.write()


def _as_f16(m: Any) -> np.ndarray:
    """float16 [rows, cols] of a float matrix, without a float32 copy when it already is f16
    (the 2B4T embedding is 656 MB in f16, 1.3 GB in f32)."""
    if isinstance(m, np.ndarray) and m.dtype == np.float16:
        return m
    return dense_float(m).astype(np.float16)


def _add_linear(w: GGUFWriter, ternary_type: str, name: str, m: Any) -> None:
    if not isinstance(m, (TernaryTensor, tuple)):
        raise TypeError(f"{name}: expected a TernaryTensor or (int8 matrix, scale), got {type(m).__name__}")
    rows, cols, produce = _ternary_producer(m, ternary_type, name)
    gt = GGML_TYPES[GGML_TYPE_IDS[ternary_type]]
    if cols % gt.block_size:
        raise ValueError(
            f"{name}: {ternary_type} needs rows of a multiple of {gt.block_size} values, got {cols}"
        )
    w.add_raw_tensor(name, (cols, rows), gt.id, produce, nbytes=gt.nbytes(rows * cols))


__all__ = ["BITNET_ARCH", "FILE_TYPES", "LLAMA_CPP_BITNET_ARCH", "write_bitnet_gguf"]
