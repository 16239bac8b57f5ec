"""Load a BitNet b1.58 GGUF (bitnet.cpp's `bitnet-b1.58` / `bitnet-25` files, llama.cpp's `bitnet`,
or ours) into ModelWeights.

I2_S matrices are used in place (views into the mmap, checked for code 3 and all-zero tensors);
TQ1_0 / TQ2_0 are repacked into the TQ layout in memory. The token embedding is an F16 view (other
llama.cpp types come as QuantTensor rows); norms are float32. Every expected tensor must exist with
the expected shape. bitnet.cpp runs NeoX ("rotate_half") RoPE on unpermuted q/k rows, so BitNet files
get rope_neox=True (docs/formats.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trit.text import short_repr

from .errors import ModelFormatError, OutOfMemoryError
from .gguf import GGUFFile, GGUFValueType, TensorInfo
from .ternary import ternary_tensor_from_gguf
from .weights import (
    LayerWeights,
    ModelConfig,
    ModelWeights,
    QuantTensor,
    TernaryTensor,
    bf16_to_f32,
    packed_row_bytes,
)

if TYPE_CHECKING:
    from .model import ModelInfo

# bitnet.cpp's 2B4T files ("bitnet-b1.58", "bitnet-25": ReLU^2 FFN) and llama.cpp's "bitnet" (the same
# block with a SiLU FFN unless <arch>.hidden_activation says otherwise; 1bitLLM's models, and 2B4T
# as llama.cpp's converter writes it: see _bitnet_act)
BITNET_ARCHS = ("bitnet-b1.58", "bitnet-25", "bitnet")
# 2B4T's shape (dim, hidden, layers, heads, KV heads, vocab): trained with ReLU^2
SHAPE_2B4T = (2560, 6912, 30, 20, 5, 128256)
FFN_ACTS = ("silu", "relu2")
# llama.cpp's llama graph: Llama 2/3, SmolLM2, Falcon3 (and its 1.58-bit TQ1_0/TQ2_0 conversions)
LLAMA_ARCHS = ("llama",)
TERNARY_TYPES = ("I2_S", "TQ1_0", "TQ2_0")
# Embedding / head types the kernels read as QuantTensor rows (engine/kernels/qk.h).
QUANT_TYPES = ("F32", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
MAX_HPARAM = 1 << 24  # no sane dimension or count is larger


def _int_key(f: GGUFFile, key: str, default: int | None = None, *, lo: int = 1) -> int:
    if key not in f.metadata:
        if default is not None:
            return default
        raise ModelFormatError(f.path, f"metadata key {key} is missing")
    v: Any = f.metadata[key]
    if isinstance(v, np.ndarray) and v.ndim == 1 and v.size and np.issubdtype(v.dtype, np.integer):
        # llama.cpp allows per-layer arrays for some counts; one value for every layer is all we run
        if not np.all(v == v[0]):
            raise ModelFormatError(f.path, f"metadata key {key} varies per layer ({v[:8].tolist()}...)")
        v = int(v[0])
    if isinstance(v, bool) or not isinstance(v, int):
        raise ModelFormatError(f.path, f"metadata key {key} is {short_repr(v)}, expected an integer")
    if not lo <= v <= MAX_HPARAM:
        raise ModelFormatError(f.path, f"metadata key {key} is {v}, out of range")
    return v


def _float_key(f: GGUFFile, key: str, default: float, lo: float, hi: float = float("inf")) -> float:
    """A number strictly between lo and hi. The HF loader's bounds (0 < eps < 1, RoPE base > 1):
    outside them a model loads and chats garbage (eps 1e30 gave only newlines)."""
    v = f.metadata.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or not lo < v < hi:
        expected = f"between {lo:g} and {hi:g}" if hi < float("inf") else f"above {lo:g}"
        raise ModelFormatError(
            f.path,
            f"metadata key {key} is {short_repr(v)}, expected a number {expected}. The file is damaged "
            "or was converted wrongly; pick another file",
        )
    if f.metadata_types.get(key) == GGUFValueType.FLOAT32:
        # the shortest decimal that rounds to this float32 (1e-05, not 9.999999747378752e-06): the
        # value the converter started from, and the same float32 the kernels use
        return float(str(np.float32(v)))
    return float(v)


def _optional_id(f: GGUFFile, key: str, vocab: int) -> int | None:
    v = f.metadata.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab:
        raise ModelFormatError(f.path, f"metadata key {key} is {short_repr(v)}, not a token id below {vocab}")
    return v


def _bitnet_act(f: GGUFFile, arch: str, shape: tuple[int, ...]) -> str:
    """The FFN gate activation of a BitNet-block file. llama.cpp's "bitnet" graph runs SiLU (right
    for 1bitLLM's models) unless the file names one in bitnet.hidden_activation; its converter
    also writes Microsoft's 2B4T, trained with ReLU^2, as "bitnet" without that key, which llama.cpp
    then runs with the wrong activation. A file of exactly 2B4T's shape gets ReLU^2."""
    if arch != "bitnet":
        return "relu2"
    key = f"{arch}.hidden_activation"
    act = f.metadata.get(key)
    if act is None:
        return "relu2" if shape == SHAPE_2B4T else "silu"
    if not isinstance(act, str) or act not in FFN_ACTS:  # an array: `in` would ask numpy for one truth value
        raise ModelFormatError(
            f.path, f"metadata key {key} is {short_repr(act)}; supported: {', '.join(FFN_ACTS)}"
        )
    return str(act)


def read_config(f: GGUFFile) -> ModelConfig:
    arch = f.metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelFormatError(f.path, "metadata key general.architecture is missing")
    if arch not in BITNET_ARCHS + LLAMA_ARCHS:
        raise ModelFormatError(
            f.path,
            f"architecture {short_repr(arch)} is not supported; this version runs "
            f"{', '.join(BITNET_ARCHS + LLAMA_ARCHS)} models",
        )
    llama = arch in LLAMA_ARCHS
    block = "llama" if llama else "bitnet-b1.58"  # the graph the engine runs
    p = arch
    dim = _int_key(f, f"{p}.embedding_length")
    hidden = _int_key(f, f"{p}.feed_forward_length")
    n_layers = _int_key(f, f"{p}.block_count")
    n_heads = _int_key(f, f"{p}.attention.head_count")
    n_kv = _int_key(f, f"{p}.attention.head_count_kv", n_heads)
    if n_heads % n_kv:
        raise ModelFormatError(f.path, f"{n_heads} query heads cannot share {n_kv} KV heads evenly")
    if f"{p}.attention.key_length" in f.metadata:
        head_dim = _int_key(f, f"{p}.attention.key_length")
    else:
        if dim % n_heads:
            raise ModelFormatError(f.path, f"embedding length {dim} is not a multiple of {n_heads} heads")
        head_dim = dim // n_heads
    if head_dim % 2:
        raise ModelFormatError(f.path, f"head size {head_dim} is odd; RoPE needs pairs")
    rope_dims = _int_key(f, f"{p}.rope.dimension_count", head_dim)
    if rope_dims != head_dim:
        raise ModelFormatError(
            f.path, f"RoPE over {rope_dims} of {head_dim} head dimensions (partial RoPE) is not supported"
        )
    embd = f.tensors.get("token_embd.weight")
    vocab_default = embd.shape[1] if embd is not None and len(embd.shape) == 2 else None
    tokens = f.metadata.get("tokenizer.ggml.tokens")
    if vocab_default is None and isinstance(tokens, list):
        vocab_default = len(tokens)
    vocab = _int_key(f, f"{p}.vocab_size", vocab_default)
    context = _int_key(f, f"{p}.context_length", 4096)
    rope_theta = _float_key(f, f"{p}.rope.freq_base", 10000.0, lo=1)
    eps = _float_key(f, f"{p}.attention.layer_norm_rms_epsilon", 1e-5, lo=0, hi=1)
    bos = _optional_id(f, "tokenizer.ggml.bos_token_id", vocab)
    eos: list[int] = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        t = _optional_id(f, key, vocab)
        if t is not None and t not in eos:
            eos.append(t)
    return ModelConfig(
        arch=block,
        dim=dim,
        hidden=hidden,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        vocab=vocab,
        context=context,
        rope_theta=rope_theta,
        norm_eps=eps,
        # llama.cpp's converter permutes q/k rows for the interleaved RoPE form; bitnet.cpp's does not
        rope_neox=not llama,
        act="silu" if llama else _bitnet_act(f, arch, (dim, hidden, n_layers, n_heads, n_kv, vocab)),
        tied="output.weight" not in f.tensors,
        bos_id=bos,
        eos_ids=tuple(eos),
        file_arch="" if arch == block else arch,  # bitnet, bitnet-25: another's block
    )


def _expect(f: GGUFFile, name: str, shape: tuple[int, ...]) -> TensorInfo:
    """The tensor's info, with shape checked (ggml order: ne0 = row length)."""
    info = f.tensors.get(name)
    if info is None:
        raise ModelFormatError(f.path, f"tensor {name} is missing (expected shape {list(shape)})")
    if info.shape != shape:
        raise ModelFormatError(
            f.path,
            f"tensor {name} has shape {list(info.shape)}, expected {list(shape)} (ggml order ne0, ne1)",
        )
    return info


def _norm_info(f: GGUFFile, name: str, n: int) -> TensorInfo:
    """The tensor's info, with shape and type checked for a norm weight (or a bias)."""
    info = _expect(f, name, (n,))
    if info.type_name not in ("F32", "F16", "BF16"):
        raise ModelFormatError(
            f.path, f"tensor {name} has type {info.type_name}; a norm must be F32, F16 or BF16"
        )
    return info


def _norm(f: GGUFFile, name: str, n: int) -> np.ndarray:
    """A norm weight (or a bias) as float32 [n]. NaN / infinite values are refused, as the HF loader
    does: one would make every logit NaN. These vectors are small, so checking them costs nothing;
    the large matrices are not scanned (the sampler refuses NaN logits instead)."""
    info = _norm_info(f, name, n)
    if info.type_name == "F32":
        a = f.tensor_array(name)
        a = a if a.flags.aligned else a.copy()
    elif info.type_name == "F16":
        a = f.tensor_array(name).astype(np.float32)
    else:
        a = bf16_to_f32(f.tensor_array(name))
    if not np.isfinite(a).all():
        raise ModelFormatError(
            f.path, f"tensor {name} contains NaN or infinite values; the file is damaged. Download it again."
        )
    return a


def _linear_info(f: GGUFFile, name: str, rows: int, cols: int, *, ternary_only: bool) -> TensorInfo:
    """The tensor's info, with shape and type checked for a linear layer."""
    info = _expect(f, name, (cols, rows))
    if info.type_name in TERNARY_TYPES:
        return info
    if ternary_only:
        raise ModelFormatError(
            f.path,
            f"tensor {name} has type {info.type_name}; BitNet weights must be ternary "
            f"({', '.join(TERNARY_TYPES)})",
        )
    if info.type_name not in QUANT_TYPES + ("F16",):
        raise ModelFormatError(
            f.path,
            f"tensor {name} has type {info.type_name}, which this version cannot compute; supported: "
            f"{', '.join(TERNARY_TYPES + QUANT_TYPES + ('F16',))}",
        )
    return info


def _linear(
    f: GGUFFile, name: str, rows: int, cols: int, *, ternary_only: bool
) -> TernaryTensor | QuantTensor:
    info = _linear_info(f, name, rows, cols, ternary_only=ternary_only)
    if info.type_name in TERNARY_TYPES:
        t = ternary_tensor_from_gguf(f.tensor_data(name), info.type_name, rows, cols, name, f.path)
        # llama.cpp's optional per-matrix output scale (blk.N.attn_q.scale ...) multiplies every row's
        scale_name = name.removesuffix(".weight") + ".scale"
        if scale_name in f.tensors:
            t = dataclasses.replace(t, scale=(t.scale * _norm(f, scale_name, 1)[0]).astype(np.float32))
        return t
    data = f.tensor_data(name).reshape(rows, info.nbytes // rows)
    bias_name = name.removesuffix(".weight") + ".bias"
    bias = _norm(f, bias_name, rows) if bias_name in f.tensors else None
    return QuantTensor(data, rows, cols, info.type_id, info.type_name, bias)


def _embedding_info(f: GGUFFile, name: str, vocab: int, dim: int) -> TensorInfo:
    """The tensor's info, with shape and type checked for a token embedding or output head."""
    info = _expect(f, name, (dim, vocab))
    if info.type_name != "F16" and info.type_name not in QUANT_TYPES:
        raise ModelFormatError(
            f.path,
            f"tensor {name} has type {info.type_name}, which this version cannot use for embeddings; "
            f"supported: {', '.join(('F16',) + QUANT_TYPES)}",
        )
    return info


def _embedding(f: GGUFFile, name: str, vocab: int, dim: int) -> np.ndarray | QuantTensor:
    info = _embedding_info(f, name, vocab, dim)
    if info.type_name == "F16":
        a = f.tensor_array(name)  # float16 [vocab, dim]
        return a if a.flags.aligned else a.copy()
    data = f.tensor_data(name).reshape(vocab, info.nbytes // vocab)
    return QuantTensor(data, vocab, dim, info.type_id, info.type_name)


REPACKED_TYPES = ("TQ1_0", "TQ2_0")  # ternary types converted to our layout at load, not used in place
WEIGHT_MEMORY = ("auto", "ram", "map")
log = logging.getLogger(__name__)


def huge_pages_available() -> bool:
    """True where anonymous memory can get transparent huge pages (Linux with THP not 'never')."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def _memory_asked(memory: str) -> str:
    """load_gguf_weights' memory with "auto" resolved through TRIT_WEIGHTS and the OS (it may stay
    "auto": then the file decides, _memory_for)."""
    if memory == "auto":
        memory = os.environ.get("TRIT_WEIGHTS", "auto" if huge_pages_available() else "map")
        if memory not in WEIGHT_MEMORY:
            raise ValueError(f"TRIT_WEIGHTS must be one of {', '.join(WEIGHT_MEMORY)}, not {memory!r}")
    return memory


def _memory_for(f: GGUFFile, memory: str) -> str:
    """The weight memory for this file, "ram" or "map": "auto" maps TQ1_0/TQ2_0 files (they are
    repacked at load anyway)."""
    if memory == "auto":
        return "map" if any(t.type_name in REPACKED_TYPES for t in f.tensors.values()) else "ram"
    return memory


def _memory_text(in_memory: bool, embedding_mapped: bool, kinds: Iterable[str]) -> str:
    """ModelWeights.memory: how the weights are held."""
    if in_memory:
        return "RAM copy" + (" (embedding mapped)" if embedding_mapped else "")
    return "file map" + (" (ternary matrices repacked in RAM)" if set(kinds) & set(REPACKED_TYPES) else "")


def load_gguf_weights(
    path: str | os.PathLike[str], *, memory: str = "map", embedding_lookup_only: bool = False
) -> ModelWeights:
    """ModelWeights viewing the file; the GGUFFile stays open in weights.keepalive.

    memory: "map" uses the tensors in place from the file's mmap; "ram" first copies the tensor
    data into huge-page memory (GGUFFile.read_into_memory); "auto" is TRIT_WEIGHTS if set, else
    "ram" where Linux offers huge pages, except for files whose matrices are TQ1_0/TQ2_0 (repacked
    at load anyway: a copy would only hold their unused original bytes), else "map".
    With "ram", a token embedding that is only looked up (the model has its own output head, or
    embedding_lookup_only: the caller builds its own head from it) stays in the file map where the
    file allows (GGUFFile.read_into_memory exclude=): one row is read per token, so only the rows
    used become resident, instead of the whole vocab x dim matrix. When "auto" finds no memory for
    the copy, the weights stay in the map (with a warning); "ram" then raises OutOfMemoryError."""
    memory = _memory_asked(memory)
    f = GGUFFile(path)
    try:
        chosen = memory == "ram"  # asked for by name (not "auto"): a failure to copy is an error
        memory = _memory_for(f, memory)
        cfg = read_config(f)
        if memory == "ram":
            try:
                f.read_into_memory(
                    exclude=("token_embd.weight",) if embedding_lookup_only or not cfg.tied else ()
                )
            except OutOfMemoryError as e:
                if chosen:
                    raise
                # the map needs no memory of its own (its pages are the page cache's): low on
                # memory, the model still runs, ~20% slower (QA: 300 MB of address space
                # failed in "auto" and ran with "map")
                log.warning("%s; using the weights from the file in place instead", str(e).split(";")[0])
        qdim, kvdim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        embed = _embedding(f, "token_embd.weight", cfg.vocab, cfg.dim)
        head = None if cfg.tied else _embedding(f, "output.weight", cfg.vocab, cfg.dim)
        layers: list[LayerWeights] = []
        bitnet = cfg.arch == "bitnet-b1.58"

        def lin(name: str, rows: int, cols: int) -> TernaryTensor | QuantTensor:
            return _linear(f, name, rows, cols, ternary_only=bitnet)

        for i in range(cfg.n_layers):
            b = f"blk.{i}."
            layers.append(
                LayerWeights(
                    attn_norm=_norm(f, b + "attn_norm.weight", cfg.dim),
                    q=lin(b + "attn_q.weight", qdim, cfg.dim),
                    k=lin(b + "attn_k.weight", kvdim, cfg.dim),
                    v=lin(b + "attn_v.weight", kvdim, cfg.dim),
                    attn_sub_norm=_norm(f, b + "attn_sub_norm.weight", qdim) if bitnet else None,
                    o=lin(b + "attn_output.weight", cfg.dim, qdim),
                    ffn_norm=_norm(f, b + "ffn_norm.weight", cfg.dim),
                    gate=lin(b + "ffn_gate.weight", cfg.hidden, cfg.dim),
                    up=lin(b + "ffn_up.weight", cfg.hidden, cfg.dim),
                    ffn_sub_norm=_norm(f, b + "ffn_sub_norm.weight", cfg.hidden) if bitnet else None,
                    down=lin(b + "ffn_down.weight", cfg.dim, cfg.hidden),
                )
            )
        out_norm = _norm(f, "output_norm.weight", cfg.dim)
        kinds = Counter(
            t.source_type for lw in layers for t in (lw.q, lw.k, lw.v, lw.o, lw.gate, lw.up, lw.down)
        )
        template = f.metadata.get("tokenizer.chat_template")
        tokenizer = None
        # "none" is llama.cpp's LLAMA_VOCAB_TYPE_NONE: a file without a vocabulary (token ids only)
        if f.metadata.get("tokenizer.ggml.model", "none") != "none":
            from .tokenizer import Tokenizer

            tokenizer = Tokenizer.from_gguf(f)
            # More tokens than embedding rows: every id past the rows would fail in the middle of a
            # prompt or reply. Fewer is normal (embeddings are padded); Model samples only the ids
            # the tokenizer has.
            if tokenizer.vocab_size > cfg.vocab:
                raise ModelFormatError(
                    f.path,
                    f"the tokenizer (tokenizer.ggml.tokens) has {tokenizer.vocab_size} tokens but the model "
                    f"has only {cfg.vocab} (token_embd.weight rows): the tokenizer belongs to another "
                    "model. Pick another file.",
                )
        from .chat import guess_family

        return ModelWeights(
            config=cfg,
            embed=embed,
            layers=layers,
            out_norm=out_norm,
            head=head,
            source=f.path,
            file_type="GGUF " + "+".join(k for k, _ in kinds.most_common()),
            keepalive=[f],
            chat_template=template if isinstance(template, str) else None,
            tokenizer=tokenizer,
            family="bitnet" if bitnet else guess_family(f.metadata),
            memory=_memory_text(f.in_memory, bool(f.mapped_tensors), kinds),
        )
    except BaseException:
        f.close()
        raise


def _stays_mapped(f: GGUFFile, exclude: Iterable[str]) -> bool:
    """Whether GGUFFile.read_into_memory(exclude) would leave an excluded tensor in the file map:
    one at either end of the data section, outside the span of the copied ones (its rule, from
    the tensor table alone)."""
    excluded = set(exclude)
    copied = [t for name, t in f.tensors.items() if name not in excluded]
    if not copied:
        return False
    start = min(t.offset for t in copied)
    start -= start % f.alignment
    end = max(t.offset + t.nbytes for t in copied)
    return any(name in f.tensors and not start <= f.tensors[name].offset < end for name in excluded)


def gguf_model_info(
    path: str | os.PathLike[str],
    *,
    threads: int | None = None,
    isa: str | None = None,
    context: int | None = None,
    activations: str = "f32",
    head: str = "f16",
    weights: str = "auto",
    kv: str = "f32",
    a48: bool = False,
    ternary: str = "auto",
) -> ModelInfo:
    """The Model.info that load_model(path, same options) would give a GGUF file, from its header,
    metadata and tensor table alone: no tensor data is read, converted or copied (`trit info` on a
    2B4T file loaded it: I2_S 5.8 s and 1.26 GB RSS, TQ1_0 17 s).

    The tensors are checked as the loader checks them from the table (present, shape, type); what
    needs their values is not checked: code 3, all-zero and NaN tensors, TQ1_0/TQ2_0 block scales
    that vary within a row, a tokenizer larger than the embedding. memory is the plan: a "RAM copy"
    for which a load finds no memory falls back to the file map (with "auto" weights)."""
    from . import _core
    from .model import (
        DEFAULT_CONTEXT,
        FLOAT_TYPES,
        LM_HEADS,
        ModelInfo,
        _b3_rule,
        _check_kv_fits,
        _check_load_options,
        layout_name,
        physical_cores,
    )
    from .requant import Q8_0_BLOCK, Q8_0_BYTES
    from .ternary import b3_is_shorter

    # the checks of load_model and Model, in their order
    _check_load_options(threads, a48, kv, weights)
    if activations not in ("f32", "q8"):
        raise ValueError(f"activations must be 'f32' or 'q8', not {activations!r}")
    if head not in LM_HEADS:
        raise ValueError(f"head must be one of {', '.join(LM_HEADS)}, not {head!r}")
    memory = _memory_asked(weights)
    b3 = _b3_rule(ternary, isa)
    layouts = set()
    with GGUFFile(Path(path)) as f:
        memory = _memory_for(f, memory)
        cfg = read_config(f)
        _check_kv_fits(cfg, kv)
        bitnet = cfg.arch == "bitnet-b1.58"
        qdim, kvdim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        embed = _embedding_info(f, "token_embd.weight", cfg.vocab, cfg.dim)
        stored = embed if cfg.tied else _embedding_info(f, "output.weight", cfg.vocab, cfg.dim)
        kinds: Counter[str] = Counter()
        wbytes = 0
        for i in range(cfg.n_layers):
            b = f"blk.{i}."
            _norm_info(f, b + "attn_norm.weight", cfg.dim)
            for name, rows, cols in (
                ("attn_q", qdim, cfg.dim),
                ("attn_k", kvdim, cfg.dim),
                ("attn_v", kvdim, cfg.dim),
                ("attn_output", cfg.dim, qdim),
                ("ffn_gate", cfg.hidden, cfg.dim),
                ("ffn_up", cfg.hidden, cfg.dim),
                ("ffn_down", cfg.dim, cfg.hidden),
            ):
                t = _linear_info(f, f"{b}{name}.weight", rows, cols, ternary_only=bitnet)
                kinds[t.type_name] += 1
                # ternary matrices are held in the TQ or the B3 layout (_b3_rule); others as stored
                if t.type_name in TERNARY_TYPES:
                    to_b3 = b3 == "every" or (b3 == "shorter" and b3_is_shorter(cols))
                    layouts.add("b3" if to_b3 else "tq")
                    wbytes += rows * packed_row_bytes(cols, "b3" if to_b3 else "tq")
                else:
                    wbytes += t.nbytes
            _norm_info(f, b + "ffn_norm.weight", cfg.dim)
            if bitnet:
                _norm_info(f, b + "attn_sub_norm.weight", qdim)
                _norm_info(f, b + "ffn_sub_norm.weight", cfg.hidden)
        _norm_info(f, "output_norm.weight", cfg.dim)
        # Model's no_effect: activations="q8" changes only llama.cpp quantized matrices (neither
        # ternary nor float ones), head="q8_0" only a float head
        no_effect = []
        if all(t in TERNARY_TYPES + FLOAT_TYPES for t in [*kinds, stored.type_name]):
            no_effect.append("activations")
        if stored.type_name not in FLOAT_TYPES:
            no_effect.append("head")
        head_type = None
        if head == "q8_0":
            if stored.type_name in FLOAT_TYPES:  # requant.float_head's types
                head_type = f"Q8_0 (built at load from {stored.type_name}, Q8_0 activations)"
            else:
                log.warning(
                    "%s: head q8_0 applies to a float output head (F16, BF16, F32); this model's is %s and stays so",
                    f.path,
                    stored.type_name,
                )
        if head_type is not None:
            wbytes += cfg.vocab * (cfg.dim // Q8_0_BLOCK) * Q8_0_BYTES
        else:
            wbytes += stored.nbytes
        # load_gguf_weights copies all but a token embedding that is only looked up (load_model
        # says so whenever head="q8_0" is asked for)
        lookup_only = head == "q8_0" or not cfg.tied
        mapped = _stays_mapped(f, ("token_embd.weight",) if lookup_only else ())
        n_ctx = min(cfg.context, DEFAULT_CONTEXT) if context is None else context
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, (int, np.integer)) or n_ctx < 1:
            raise ValueError(f"context must be a whole number of tokens >= 1, not {n_ctx!r}")
        return ModelInfo(
            path=f.path,
            arch=cfg.file_arch or cfg.arch,
            file_type="GGUF " + "+".join(k for k, _ in kinds.most_common()),
            n_layers=cfg.n_layers,
            dim=cfg.dim,
            hidden=cfg.hidden,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.n_kv_heads,
            head_dim=cfg.head_dim,
            vocab=cfg.vocab,
            context=int(min(n_ctx, cfg.context)),
            quant_types=tuple(sorted(kinds)),
            isa=_core.kernel_isa(isa),
            threads=int(threads) if threads is not None else physical_cores(),
            weight_bytes=int(wbytes),
            memory=_memory_text(memory == "ram", mapped, kinds),
            head_type=head_type or stored.type_name,
            head_approx=head_type is not None,
            kv=kv,
            a48=bool(a48),
            ffn_act=cfg.act,
            activations="f32" if "activations" in no_effect else activations,
            no_effect=tuple(no_effect),
            ternary=layout_name(layouts),
        )


__all__ = ["gguf_model_info", "load_gguf_weights", "read_config"]
