"""Hugging Face ternary checkpoints (config.json + safetensors) -> ModelWeights.

Two families: BitNet b1.58 (model_type "bitnet": ReLU² FFN, attn/ffn sub-norms, tied head by
default) and ternary llama-family models (model_type "llama" with a ``quantization_config`` whose
quant_method is "bitnet": HF1BitLLM/Llama3-8B-1.58-*, tiiuae/Falcon3-*-1.58bit). For the latter,
transformers builds a plain LlamaForCausalLM (SiLU gate, no sub-norms, rotate_half RoPE on the HF
row order, head untied unless tie_word_embeddings) and its BitNet quantizer swaps every nn.Linear
for the configured BitLinear class except the modules_to_not_convert; when that list is absent
(null), transformers skips the output embedding (lm_head) and tied weights
(quantizers/base.py get_keys_to_not_convert), so lm_head stays a float matrix. Falcon3-1.58bit's
config holds ``{"modules_to_not_convert": ["lm_head"], "quant_method": "bitnet"}``: transformers'
default linear_class "bitlinear", packed uint8 weights and a weight_scale that divides the output.
An explicit list without lm_head would make the head ternary too: refused.

Three storage forms for either family, with the semantics of transformers 5.x (integrations/bitnet.py), which the
fixtures in tests/fixtures/data check against transformers itself:

* packed, ``linear_class: autobitlinear``, ``quantization_mode: offline`` (microsoft/bitnet-b1.58-2B-4T
  main): ``weight`` uint8 [out/4, in]; with R = out/4, output row k*R + r is bits 2k..2k+1 of packed
  row r, value = code - 1 (pack_weights / unpack_weights). ``weight_scale`` [1] MULTIPLIES the output
  (AutoBitLinear.forward: ``output * self.weight_scale``).
* packed, ``linear_class: bitlinear`` (the older BitLinear class; transformers' default linear_class):
  same packing, but the output is DIVIDED by ``weight_scale``
  (BitLinear.post_quant_process: ``y / (weight_scale * act_scale)``). We store scale = 1 / weight_scale
  in float32; y * fl(1/ws) differs from y / ws by at most ~1 ulp (relative 1.2e-7).
* master weights, ``autobitlinear`` + ``quantization_mode: online`` (the -bf16 repo): full matrices,
  ternarized exactly as WeightQuant does in float32: ws = 1 / max(mean|W|, 1e-5),
  T = clamp(round_half_even(W * ws), -1, 1), effective weight T / ws. We keep scale = fl(1 / ws):
  T / ws and T * fl(1/ws) are the same float32 numbers. mean|W| is computed correctly rounded
  (float64 sum); torch's float32 cascade sum can differ by 1 ulp, which moves the scale by 1 ulp.

Embeddings (and an untied lm_head) keep their precision: f16 stays a float16 array, bf16 and f32
become QuantTensor rows of that type (copied into aligned memory), so no value is rounded on the
way in (an f32 embedding rounded to f16 moves tiny models' logits past the test criteria).
Norms become float32. Nothing here depends on torch.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trit.text import short_repr

from .errors import ModelFormatError
from .gguf_loader import MAX_HPARAM
from .ternary import check_tq_codes, pack_tq
from .weights import LayerWeights, ModelConfig, ModelWeights, QuantTensor, TernaryTensor, bf16_to_f32

CONFIG_NAME = "config.json"
MAX_CONFIG_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class _Family:
    """transformers' config defaults for the optional fields (configuration_bitnet.py,
    configuration_llama.py) and what the block looks like."""

    arch: str  # ModelConfig.arch
    max_positions: int
    rope_theta: float
    eps: float
    act: str  # default hidden_act
    acts: tuple[str, ...]  # hidden_act values we run
    tied: bool  # default tie_word_embeddings
    sub_norms: bool  # attn_sub_norm / ffn_sub_norm in every block
    label: str  # "BitNet b1.58" / "ternary llama"


FAMILIES = {
    "bitnet": _Family(
        "bitnet-b1.58", 2048, 500000.0, 1e-5, "relu2", ("relu2", "silu"), False, True, "BitNet"
    ),
    "llama": _Family("llama", 2048, 10000.0, 1e-6, "silu", ("silu",), False, False, "ternary llama"),
}
# kept for callers of the BitNet defaults
DEFAULT_MAX_POSITIONS = FAMILIES["bitnet"].max_positions
DEFAULT_ROPE_THETA = FAMILIES["bitnet"].rope_theta
DEFAULT_EPS = FAMILIES["bitnet"].eps

PROJ = {  # our LayerWeights field -> HF module path inside model.layers.N
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}
NORMS = {
    "attn_norm": "input_layernorm",
    "attn_sub_norm": "self_attn.attn_sub_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_sub_norm": "mlp.ffn_sub_norm",
}
FLOAT_DTYPES = ("F32", "F16", "BF16")
ROWS_PER_SLICE_VALUES = 1 << 24  # values handled per slice when ternarizing master weights


@dataclass(frozen=True)
class QuantSpec:
    linear_class: str  # "autobitlinear" or "bitlinear"
    mode: str  # "offline" or "online"
    family: str = "bitnet"  # config.json model_type: "bitnet" or "llama"


# -- config.json -----------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int beyond float's range: JSON allows 400 digits
        return False


class _Cfg:
    """Typed access to config.json fields; every failure names the file and the field."""

    def __init__(self, doc: dict[str, Any], path: Path) -> None:
        self.doc = doc
        self.path = path

    def fail(self, problem: str) -> ModelFormatError:
        return ModelFormatError(
            self.path, problem + ". The checkpoint's config.json is damaged or not a BitNet model."
        )

    def get(self, key: str, default: Any = None) -> Any:
        """The field, or default when it is absent or null (transformers reads null as unset)."""
        v = self.doc.get(key)
        return default if v is None else v

    def pos_int(self, key: str, default: int | None = None) -> int:
        v = self.get(key, default)
        if v is None:
            raise self.fail(f"field {key!r} is missing")
        if not _is_int(v) or v <= 0:
            raise self.fail(f"field {key!r} is {short_repr(v)}, expected a positive integer")
        if v > MAX_HPARAM:  # the GGUF loader's bound; the C side takes these as int
            raise self.fail(f"field {key!r} is {short_repr(v)}, out of range (at most {MAX_HPARAM})")
        return int(v)

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        v = self.get(key, default)
        if not _is_num(v) or not lo < v < hi:
            raise self.fail(f"field {key!r} is {short_repr(v)}, expected a number between {lo} and {hi}")
        return float(v)

    def token_ids(self, key: str, vocab: int) -> tuple[int, ...]:
        v = self.doc.get(key)
        if v is None:
            return ()
        ids = v if isinstance(v, list) else [v]
        for i in ids:
            if not _is_int(i) or not 0 <= i < vocab:
                raise self.fail(f"field {key!r} is {short_repr(v)}, expected token ids in 0..{vocab - 1}")
        return tuple(int(i) for i in ids)


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict; ModelFormatError naming the file for a missing, huge, nested too
    deeply or malformed one."""
    if not path.is_file():
        raise ModelFormatError(path, "config.json is missing; a Hugging Face model folder needs it")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelFormatError(path, "config.json is implausibly large")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ModelFormatError(path, "cannot read config.json: it is nested too deeply") from None
    except (OSError, ValueError) as e:
        raise ModelFormatError(path, f"cannot read config.json: {str(e)[:200]}") from None
    if not isinstance(doc, dict):
        raise ModelFormatError(path, f"config.json holds a JSON {type(doc).__name__}, expected an object")
    return doc


def _rope_theta(c: _Cfg, default: float) -> float:
    """transformers 5.x writes rope_parameters {rope_type, rope_theta}; older configs (2B4T) have a
    top-level rope_theta and rope_scaling null. Only the default RoPE is supported."""
    rp = c.doc.get("rope_parameters")
    scaling = c.doc.get("rope_scaling")
    if rp is not None:
        if not isinstance(rp, dict):
            raise c.fail(f"field 'rope_parameters' is {short_repr(rp)}, expected an object")
        rtype = rp.get("rope_type", rp.get("type", "default"))
        theta = rp.get("rope_theta") or c.get("rope_theta", default)
    else:
        if scaling is not None and not isinstance(scaling, dict):
            raise c.fail(f"field 'rope_scaling' is {short_repr(scaling)}, expected an object or null")
        rtype = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
        theta = c.get("rope_theta", default)
    if rtype != "default":
        raise ModelFormatError(
            c.path,
            f"RoPE type {short_repr(rtype)} is not supported (only the default RoPE). Pick another model.",
        )
    if not _is_num(theta) or theta <= 1:
        raise c.fail(f"rope_theta is {short_repr(theta)}, expected a number > 1")
    return float(theta)


def _converts(module: str, patterns: list[str]) -> bool:
    """transformers' should_convert_module (quantizers/quantizers_utils.py): a module is skipped
    when a pattern matches its full name from the start (at a module boundary, also as a regex)
    or as a suffix."""
    boundary = r"(?:(?<=\.)|(?=\.|$))"
    for key in patterns:
        try:
            if re.match(rf"(?:{key}){boundary}", module):
                return False
        except re.error:
            pass
        if module.endswith(key):
            return False
    return True


def parse_config(doc: dict[str, Any], path: Path) -> tuple[ModelConfig, QuantSpec]:
    """Validate a BitNet (or ternary llama) config.json; return our ModelConfig plus the
    quantization form."""
    c = _Cfg(doc, path)
    mtype = doc.get("model_type")
    if not isinstance(mtype, str) or mtype not in FAMILIES:
        raise ModelFormatError(
            path,
            f"model_type is {short_repr(mtype)}; Trit reads Hugging Face BitNet b1.58 checkpoints "
            "(model_type 'bitnet') and ternary llama checkpoints (model_type 'llama' with a bitnet "
            "quantization_config). Pick a BitNet model or a GGUF file.",
        )
    fam = FAMILIES[mtype]
    dim = c.pos_int("hidden_size")
    hidden = c.pos_int("intermediate_size")
    n_layers = c.pos_int("num_hidden_layers")
    n_heads = c.pos_int("num_attention_heads")
    vocab = c.pos_int("vocab_size")
    n_kv = c.pos_int("num_key_value_heads", n_heads)  # transformers: None means = heads
    if "head_dim" in doc and doc["head_dim"] is not None:
        head_dim = c.pos_int("head_dim")
    else:
        if dim % n_heads:
            raise c.fail(f"hidden_size {dim} is not divisible by num_attention_heads {n_heads}")
        head_dim = dim // n_heads
    if n_heads % n_kv:
        raise c.fail(f"num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv}")
    if fam.sub_norms and n_heads * head_dim != dim:
        # transformers sizes attn_sub_norm by hidden_size and applies it to the concatenated heads.
        raise c.fail(f"num_attention_heads {n_heads} x head_dim {head_dim} != hidden_size {dim}")
    if head_dim % 2:
        raise c.fail(f"head_dim {head_dim} is odd; RoPE needs an even head size")
    context = c.pos_int("max_position_embeddings", fam.max_positions)
    eps = c.number("rms_norm_eps", fam.eps, 0.0, 1.0)
    theta = _rope_theta(c, fam.rope_theta)
    act = c.get("hidden_act", fam.act)
    if act not in fam.acts:
        raise ModelFormatError(
            path,
            f"hidden_act {short_repr(act)} is not supported for model_type {short_repr(mtype)} ({' or '.join(fam.acts)}). "
            "Pick another model.",
        )
    tied = c.get("tie_word_embeddings", fam.tied)
    if not isinstance(tied, bool):
        raise c.fail(f"field 'tie_word_embeddings' is {short_repr(tied)}, expected true or false")
    for key in ("attention_bias", "mlp_bias"):
        bias = c.get(key, False)
        if bias is not False:
            raise ModelFormatError(
                path, f"{key} is {short_repr(bias)}; biased {fam.label} projections are not supported"
            )
    bos = c.token_ids("bos_token_id", vocab)
    eos = c.token_ids("eos_token_id", vocab)

    qc = doc.get("quantization_config")
    if qc is None:
        raise ModelFormatError(
            path,
            "config.json has no quantization_config, so this is not a ternary BitNet b1.58 "
            "checkpoint (transformers would run it as a full-precision model). Pick a BitNet model"
            + (" or a GGUF file of this llama model." if mtype == "llama" else "."),
        )
    if not isinstance(qc, dict):
        raise c.fail(f"quantization_config is {short_repr(qc)}, expected an object")
    if qc.get("quant_method") != "bitnet":
        raise ModelFormatError(
            path, f"quantization method {short_repr(qc.get('quant_method'))} is not supported (only 'bitnet')"
        )
    lc = qc.get("linear_class", "bitlinear")  # BitNetQuantConfig's defaults
    mode = qc.get("quantization_mode", "offline")
    if lc not in ("bitlinear", "autobitlinear"):
        raise c.fail(
            f"quantization_config.linear_class is {short_repr(lc)}, expected 'bitlinear' or 'autobitlinear'"
        )
    if mode not in ("offline", "online"):
        raise c.fail(
            f"quantization_config.quantization_mode is {short_repr(mode)}, expected 'offline' or 'online'"
        )
    if lc == "bitlinear" and mode == "online":
        mode = "offline"  # transformers ignores the mode for BitLinear: always packed
    if qc.get("use_rms_norm", False):
        raise ModelFormatError(
            path,
            "quantization_config.use_rms_norm (an extra RMSNorm inside every BitLinear) is not supported",
        )
    skip = qc.get("modules_to_not_convert")
    if skip is not None and (not isinstance(skip, list) or not all(isinstance(s, str) for s in skip)):
        raise c.fail(
            f"quantization_config.modules_to_not_convert is {short_repr(skip)}, expected a list of names"
        )
    for s in skip or []:
        if any(p.split(".")[-1] in s for p in PROJ.values()) or re.search(r"layers|self_attn|mlp", s):
            raise ModelFormatError(
                path,
                f"modules_to_not_convert lists {short_repr(s)}: full-precision projections are not supported",
            )
    if skip is not None and _converts("lm_head", skip):
        # An explicit list replaces transformers' default skips (lm_head, tied weights): the head
        # itself becomes a BitLinear, which no published checkpoint does.
        raise ModelFormatError(
            path,
            f"quantization_config.modules_to_not_convert is {short_repr(skip)}, so transformers would make "
            "lm_head a ternary BitLinear too; a ternary LM head is not supported",
        )
    cfg = ModelConfig(
        arch=fam.arch,
        dim=dim,
        hidden=hidden,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        vocab=vocab,
        context=context,
        rope_theta=theta,
        norm_eps=eps,
        rope_neox=True,  # transformers' rotate_half on the HF row order (BitNet and llama alike)
        act=act,
        tied=tied,
        bos_id=bos[0] if bos else None,
        eos_ids=eos,
    )
    return cfg, QuantSpec(lc, mode, mtype)


# -- tensors ---------------------------------------------------------------------------------------


class _Reader:
    """Checkpoint access with errors that name the shard file and the config."""

    def __init__(self, ckpt: Any, root: Path, cfg_path: Path) -> None:
        self.ckpt = ckpt
        self.root = root
        self.cfg_path = cfg_path

    def file_of(self, name: str) -> Path:
        f = self.ckpt.where.get(name)
        return self.root / f if f else self.root

    def require(self, name: str) -> Any:
        if name not in self.ckpt:
            raise ModelFormatError(
                self.root,
                f"tensor {name} is missing from the checkpoint (config.json describes a model that "
                "needs it). The download may be incomplete: download the model again.",
            )
        return self.ckpt.info(name)

    def fail(self, name: str, problem: str) -> ModelFormatError:
        return ModelFormatError(self.file_of(name), f"tensor {name} {problem}")

    def shape_error(self, name: str, got: tuple[int, ...], want: tuple[int, ...]) -> ModelFormatError:
        return self.fail(
            name,
            f"has shape {list(got)}, but {self.cfg_path.name} implies {list(want)}; the config does not "
            "match the weights",
        )

    def float_array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float tensor of exactly ``shape`` as float32 (a new array)."""
        info = self.require(name)
        if info.dtype not in FLOAT_DTYPES:
            raise self.fail(name, f"has dtype {info.dtype}, expected one of {', '.join(FLOAT_DTYPES)}")
        if tuple(info.shape) != shape:
            raise self.shape_error(name, tuple(info.shape), shape)
        return to_f32(self.ckpt.tensor(name), info.dtype)


def to_f32(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":  # raw uint16 bits
        return bf16_to_f32(a)
    return a.astype(np.float32)


def _finite(r: _Reader, name: str, a: np.ndarray) -> None:
    if not np.isfinite(a).all():
        raise r.fail(name, "contains NaN or infinite values; the file is damaged")


_EMBED_TYPES = {"F32": (0, np.float32), "BF16": (30, np.uint16)}  # ggml type id, storage dtype


def _embedding(r: _Reader, name: str, shape: tuple[int, int]) -> np.ndarray | QuantTensor:
    """Embedding / LM head [vocab, dim] without loss: float16 array for F16, else a QuantTensor of
    the stored type. NaN / infinite values are refused."""
    info = r.require(name)
    if info.dtype not in FLOAT_DTYPES:
        raise r.fail(name, f"has dtype {info.dtype}, expected one of {', '.join(FLOAT_DTYPES)}")
    if tuple(info.shape) != shape:
        raise r.shape_error(name, tuple(info.shape), shape)
    src = r.ckpt.tensor(name)
    step = max(1, ROWS_PER_SLICE_VALUES // max(shape[1], 1))
    for i in range(0, shape[0], step):
        _finite(r, name, to_f32(src[i : i + step], info.dtype))
    if info.dtype == "F16":
        return np.array(src, dtype=np.float16)
    type_id, dtype = _EMBED_TYPES[info.dtype]
    data = np.array(src, dtype=dtype)  # aligned copy: safetensors offsets need not be aligned
    return QuantTensor(data.view(np.uint8).reshape(shape[0], -1), shape[0], shape[1], type_id, info.dtype)


def _scale_value(r: _Reader, name: str) -> float:
    info = r.require(name)
    if info.dtype not in FLOAT_DTYPES:
        raise r.fail(name, f"has dtype {info.dtype}, expected a float scale")
    if tuple(info.shape) not in ((), (1,)):
        raise r.fail(name, f"has shape {list(info.shape)}, expected one value per tensor ([1])")
    s = float(to_f32(r.ckpt.tensor(name).reshape(1), info.dtype)[0])
    if not math.isfinite(s) or s == 0.0:
        raise r.fail(name, f"is {s}, expected a finite nonzero scale")
    return s


def hf_unpack(packed: np.ndarray) -> np.ndarray:
    """transformers' packed form uint8 [R, in] -> int8 [4R, in]: row k*R + r is bits 2k..2k+1 of
    packed row r, minus 1 (integrations/bitnet.py unpack_weights). Code 3 must be rejected first."""
    rows4 = packed.shape[0]
    out = np.empty((4 * rows4, packed.shape[1]), dtype=np.int8)
    for k in range(4):
        field = out[k * rows4 : (k + 1) * rows4]
        np.right_shift(packed, 2 * k, out=field, casting="unsafe")
        field &= 3
        field -= 1
    return out


def _packed_ternary(r: _Reader, name: str, rows: int, cols: int) -> np.ndarray:
    """HF packed uint8 [rows/4, cols] -> int8 [rows, cols]; rejects code 3 and all-zero tensors."""
    info = r.require(name)
    if rows % 4:
        raise r.fail(
            name, f"belongs to a projection with {rows} outputs, not a multiple of 4; it cannot be packed"
        )
    if tuple(info.shape) != (rows // 4, cols):
        raise r.shape_error(name, tuple(info.shape), (rows // 4, cols))
    packed = r.ckpt.tensor(name)
    # The 2-bit fields are HF codes here, not TQ ones, but the byte patterns that matter are the
    # same: code 3 (invalid: transformers would read +2) and 0x55 (four zeros).
    check_tq_codes(packed, name, str(r.file_of(name)))
    return hf_unpack(packed)


def ternarize_master(w: np.ndarray, dtype: str) -> tuple[np.ndarray, np.float32]:
    """WeightQuant in float32: w (raw view) -> (int8 [rows, cols], scale = fl(1 / ws)).

    ws = fl(1 / max(mean|W|, 1e-5)); T = clamp(round_half_even(fl(W * ws)), -1, 1)."""
    rows, cols = w.shape
    step = max(1, ROWS_PER_SLICE_VALUES // max(cols, 1))
    total = 0.0
    for i in range(0, rows, step):
        total += float(np.abs(to_f32(w[i : i + step], dtype)).sum(dtype=np.float64))
    mean = np.float32(total / (rows * cols))
    if not np.isfinite(mean):
        raise ValueError("non-finite master weights")
    ws = np.float32(1) / max(mean, np.float32(1e-5))
    t = np.empty((rows, cols), dtype=np.int8)
    for i in range(0, rows, step):
        x = to_f32(w[i : i + step], dtype) * ws
        np.rint(x, out=x)
        np.clip(x, -1, 1, out=x)
        t[i : i + step] = x
    return t, np.float32(1) / ws


def _projection(r: _Reader, q: QuantSpec, prefix: str, rows: int, cols: int) -> TernaryTensor:
    wname, sname = prefix + ".weight", prefix + ".weight_scale"
    info = r.require(wname)
    if q.mode == "online":
        if info.dtype not in FLOAT_DTYPES:
            raise r.fail(
                wname, f"has dtype {info.dtype}; quantization_mode 'online' needs float master weights"
            )
        if tuple(info.shape) != (rows, cols):
            raise r.shape_error(wname, tuple(info.shape), (rows, cols))
        try:
            t, scale = ternarize_master(r.ckpt.tensor(wname), info.dtype)
        except ValueError:
            raise r.fail(wname, "contains NaN or infinite values; the file is damaged") from None
        kind = "HF-bf16" if info.dtype == "BF16" else f"HF-{info.dtype.lower()}"
    else:
        if info.dtype == "U8":
            t = _packed_ternary(r, wname, rows, cols)
        elif info.dtype in FLOAT_DTYPES and q.linear_class == "autobitlinear":
            # transformers unpacks only when stored rows * 4 == out_features; an unpacked float
            # matrix is used as is, so it must already be ternary.
            if tuple(info.shape) != (rows, cols):
                raise r.shape_error(wname, tuple(info.shape), (rows, cols))
            f = to_f32(r.ckpt.tensor(wname), info.dtype)
            if not np.isin(f, (-1.0, 0.0, 1.0)).all():
                raise r.fail(wname, "holds float weights that are not ternary, but the config says 'offline'")
            t = f.astype(np.int8)
        else:
            raise r.fail(wname, f"has dtype {info.dtype}; a packed BitNet weight must be U8")
        ws = _scale_value(r, sname)
        # BitLinear divides by weight_scale; kernels multiply: fl(1/ws) is within 1 ulp.
        with np.errstate(over="ignore"):  # an overflowing reciprocal is refused just below
            scale = np.float32(1) / np.float32(ws) if q.linear_class == "bitlinear" else np.float32(ws)
        if not math.isfinite(float(scale)):
            raise r.fail(sname, f"is {ws}, whose reciprocal overflows float32")
        kind = "HF-packed" if q.linear_class == "autobitlinear" else "HF-bitlinear"
    if not t.any():
        raise r.fail(wname, "is all zero (every weight is 0); the file is damaged. Download the model again.")
    return TernaryTensor(
        packed=pack_tq(t),
        rows=rows,
        cols=cols,
        scale=np.full(rows, scale, dtype=np.float32),
        source_type=kind,
    )


_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.")


def load_hf_weights(path: str | Path) -> ModelWeights:
    """Load a Hugging Face BitNet (or ternary llama) checkpoint folder (config.json + model.safetensors or an index
    with shards). Raises ModelFormatError naming the offending file."""
    from .safetensors import open_checkpoint

    root = Path(path)
    if root.is_file():
        root = root.parent
    cfg_path = root / CONFIG_NAME
    cfg, q = parse_config(read_config(cfg_path), cfg_path)
    ckpt = open_checkpoint(root)
    try:
        r = _Reader(ckpt, root, cfg_path)
        present = {int(m.group(1)) for n in ckpt.where if (m := _LAYER_RE.match(n))}
        extra = sorted(present - set(range(cfg.n_layers)))
        if extra:
            name = next(n for n in ckpt.where if n.startswith(f"model.layers.{extra[0]}."))
            raise ModelFormatError(
                cfg_path,
                f"num_hidden_layers is {cfg.n_layers}, but the checkpoint has layer {extra[0]} "
                f"(tensor {name}); the config does not match the weights",
            )
        sub_norms = FAMILIES[q.family].sub_norms
        if not sub_norms:
            # A BitNet checkpoint relabelled 'llama' would silently lose its sub-norms.
            stray = next(
                (n for n in ckpt.where if n.endswith(("attn_sub_norm.weight", "ffn_sub_norm.weight"))), None
            )
            if stray is not None:
                raise ModelFormatError(
                    cfg_path,
                    f"model_type is {short_repr(q.family)}, but the checkpoint has BitNet sub-norm tensor {stray}; "
                    "a llama block has no sub-norms. The config does not match the weights (model_type "
                    "'bitnet'?)",
                )
        d, h, qd, kvd = cfg.dim, cfg.hidden, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        shapes = {"q": (qd, d), "k": (kvd, d), "v": (kvd, d), "o": (d, qd)}
        shapes.update({"gate": (h, d), "up": (h, d), "down": (d, h)})
        norm_dims = {"attn_norm": d, "attn_sub_norm": qd, "ffn_norm": d, "ffn_sub_norm": h}
        embed = _embedding(r, "model.embed_tokens.weight", (cfg.vocab, d))
        head = None if cfg.tied else _embedding(r, "lm_head.weight", (cfg.vocab, d))
        layers = []
        for i in range(cfg.n_layers):
            p = f"model.layers.{i}."
            norms: dict[str, np.ndarray] = {}  # llama blocks have no sub-norms: those stay absent
            for field, hf in NORMS.items():
                if field.endswith("sub_norm") and not sub_norms:
                    continue
                a = r.float_array(p + hf + ".weight", (norm_dims[field],))
                _finite(r, p + hf + ".weight", a)
                norms[field] = a
            pj = {f: _projection(r, q, p + hf, *shapes[f]) for f, hf in PROJ.items()}
            layers.append(
                LayerWeights(
                    attn_norm=norms["attn_norm"],
                    q=pj["q"],
                    k=pj["k"],
                    v=pj["v"],
                    attn_sub_norm=norms.get("attn_sub_norm"),
                    o=pj["o"],
                    ffn_norm=norms["ffn_norm"],
                    gate=pj["gate"],
                    up=pj["up"],
                    ffn_sub_norm=norms.get("ffn_sub_norm"),
                    down=pj["down"],
                )
            )
        out_norm = r.float_array("model.norm.weight", (d,))
        _finite(r, "model.norm.weight", out_norm)
    finally:
        ckpt.close()  # every array above is a copy: nothing views the maps
    label = {
        ("autobitlinear", "offline"): "HF packed (autobitlinear)",
        ("autobitlinear", "online"): "HF master weights (autobitlinear online, ternarized at load)",
        ("bitlinear", "offline"): "HF packed (bitlinear, dividing scale)",
    }[(q.linear_class, q.mode)]
    if q.family == "llama":
        label = "llama " + label
    tokenizer = None
    if (root / "tokenizer.json").is_file():
        from .tokenizer import Tokenizer

        tokenizer = Tokenizer.from_hf_dir(root)
        # as in the GGUF loader: more tokens than embedding rows cannot work, fewer is padding
        if tokenizer.vocab_size > cfg.vocab:
            raise ModelFormatError(
                root / "tokenizer.json",
                f"the tokenizer has {tokenizer.vocab_size} tokens but the model has only {cfg.vocab} "
                f"({CONFIG_NAME} vocab_size, the rows of model.embed_tokens.weight): the tokenizer "
                "belongs to another model",
            )
    return ModelWeights(
        config=cfg,
        embed=embed,
        layers=layers,
        out_norm=out_norm,
        head=head,
        source=str(root),
        file_type=label,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template if tokenizer is not None else None,
        family="bitnet" if q.family == "bitnet" else _llama_family(root),
        memory="RAM (repacked from safetensors)",
    )


def _llama_family(root: Path) -> str:
    """Chat family of a ternary llama checkpoint: "falcon3" when its config or tokenizer names
    Falcon3 (tiiuae/Falcon3-*-1.58bit), else "" (the embedded chat template, if any, is used)."""
    text = ""
    for name in ("config.json", "tokenizer_config.json"):
        f = root / name
        try:
            if f.is_file() and f.stat().st_size <= MAX_CONFIG_BYTES:
                text += f.read_text(encoding="utf-8", errors="replace")[:4096].lower()
        except OSError:
            pass
    return "falcon3" if "falcon3" in text.replace("-", "") else ""


__all__ = ["QuantSpec", "hf_unpack", "load_hf_weights", "parse_config", "read_config", "ternarize_master"]
