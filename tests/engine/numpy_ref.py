"""Pure-numpy float32 forward pass of a BitNet b1.58 model held in a ``ModelWeights``.

The second, independent reference (the first is transformers, see tests/fixtures/ref.npz): it reads
only the canonical ModelWeights and implements docs/formats.md, so any loader (HF, GGUF) and the C
engine can be compared with it. Deliberately simple: dense unpacked weights, full-context recompute.

Op order follows transformers' BitNet code in float32 (models/bitnet/modeling_bitnet.py):
* RMSNorm: x * rsqrt(mean(x^2) + eps), then * weight.
* BitLinear: amax = max(max|x|, 1e-5) per token; s = 127 * (1 / amax) (torch evaluates ``127 / t``
  as ``t.reciprocal() * 127``); q = clamp(round_half_even(x * s), -128, 127);
  y = (q @ T^T) / s * scale[row]. The integer product is exact in float32 (|sum| < 2^24).
* RoPE: inv_freq = 1 / theta^(arange(0, hd, 2) / hd), angle = pos * inv_freq, rotate_half (NeoX)
  pairs (i, i + hd/2) or, for rope_neox=False, interleaved pairs (2i, 2i + 1).
* Attention: softmax(q k^T / sqrt(hd) + causal mask) v, query head h reads KV head h // (H / KV);
  attn_sub_norm on the concatenated heads, then o_proj. FFN: down(ffn_sub_norm(act(gate) * up)),
  act = relu(x)^2 (BitNet) or silu.

BitNet a4.8 (``NumpyRef(a48=True)``, the engine's TQ_ACTS_A48; arXiv 2411.04965): the inputs of q/k/v
and gate/up are rounded to 4 bits per token (quant_act4), the input of o keeps its largest half of
magnitudes (topk) before the usual int8 rounding, down's input is as in b1.58. ``kv="q3"``: the
3-bit KV cache (q3_rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from trit.engine.ternary import unpack_ternary
from trit.engine.weights import ModelWeights, TernaryTensor, dense_float

F32 = np.float32


def rms_norm(x: np.ndarray, w: np.ndarray | None, eps: float) -> np.ndarray:
    """x float32 [T, n] -> float32 [T, n]; w None means no norm (llama has no sub-norms)."""
    if w is None:
        return x
    var = np.mean(np.square(x), axis=-1, keepdims=True, dtype=F32)
    y = x * (F32(1) / np.sqrt(var + F32(eps)))
    return (w.astype(F32) * y).astype(F32)


def quant_act(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token int8 quantization: x float32 [T, n] -> (q float32 integers [T, n], s float32 [T, 1])."""
    amax = np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), F32(1e-5))
    s = F32(127) * (F32(1) / amax)
    q = np.clip(np.rint(x * s), -128, 127).astype(F32)
    return q, s


SQRT7 = F32(2.6457513110645906)


def quant_act4(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a4.8's per-token 4-bit quantization: beta = mean|x| (summed in float64, then float32);
    s = sqrt(7) / max(beta, 1e-5); q = clamp(round_half_even(x * s), -8, 7). -> (q, s) as quant_act."""
    beta = (np.abs(x).astype(np.float64).sum(axis=-1, keepdims=True) / x.shape[-1]).astype(F32)
    s = SQRT7 / np.maximum(beta, F32(1e-5))
    q = np.clip(np.rint(x * s), -8, 7).astype(F32)
    return q, s


def topk(x: np.ndarray, keep: float = 0.5) -> np.ndarray:
    """a4.8's TopK per token: the ceil(n * keep) largest |x| stay (ties with the smallest of them
    too), the rest become 0."""
    n = x.shape[-1]
    k = int(np.ceil(n * keep))
    mag = np.abs(x)
    thr = np.partition(mag, n - k, axis=-1)[..., n - k : n - k + 1]
    return np.where(mag >= thr, x, F32(0)).astype(F32)


@dataclass
class DenseTernary:
    t: np.ndarray  # float32 [rows, cols] with values in {-1, 0, 1}
    scale: np.ndarray  # float32 [rows]

    @classmethod
    def from_tensor(cls, tt: TernaryTensor) -> DenseTernary:
        if not isinstance(tt, TernaryTensor):
            raise NotImplementedError(f"numpy_ref handles ternary weights only, got {type(tt).__name__}")
        return cls(unpack_ternary(tt).astype(F32), tt.scale.astype(F32))

    def __call__(self, x: np.ndarray, four_bit: bool = False) -> np.ndarray:
        q, s = quant_act4(x) if four_bit else quant_act(x)
        acc = q @ self.t.T  # exact integers in float32
        return (acc / s * self.scale).astype(F32)


def rope_tables(n_pos: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin float32 [n_pos, head_dim / 2] (transformers' float32 inv_freq and angles)."""
    inv_freq = F32(1) / (F32(theta) ** (np.arange(0, head_dim, 2, dtype=F32) / F32(head_dim)))
    ang = np.arange(n_pos, dtype=F32)[:, None] * inv_freq[None, :].astype(F32)
    return np.cos(ang).astype(F32), np.sin(ang).astype(F32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool) -> np.ndarray:
    """x float32 [T, H, hd]; cos/sin [T, hd/2]."""
    c, s = cos[:, None, :], sin[:, None, :]
    out = np.empty_like(x)
    if neox:
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        out[..., :half] = x1 * c - x2 * s
        out[..., half:] = x2 * c + x1 * s
    else:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out[..., 0::2] = x1 * c - x2 * s
        out[..., 1::2] = x2 * c + x1 * s
    return out


def q8_rows(t: np.ndarray) -> np.ndarray:
    """What an 8-bit KV cache holds for float32 rows t [..., head_dim], read back as floats: codes
    rint(x * (127 / max|x|)) within [-127, 127] times the row's scale max|x| / 127, in float32 like
    the engine (an all-zero row stays zero)."""
    amax = np.abs(t).max(axis=-1, keepdims=True).astype(F32)
    safe = np.where(amax > 0, amax, F32(1))
    codes = np.clip(np.rint(t * (F32(127) / safe)), -127, 127).astype(F32)
    return np.where(amax > 0, codes * (safe / F32(127)), F32(0)).astype(F32)


def q3_rows(t: np.ndarray) -> np.ndarray:
    """What a 3-bit KV cache holds for float32 rows t [..., head_dim], read back as floats: in each
    block of 32 elements, codes rint(x * (3 / max|x|)) within [-3, 3] times the block's scale
    max|x| / 3 (float32, an all-zero block stays zero)."""
    b = t.reshape(*t.shape[:-1], t.shape[-1] // 32, 32)
    amax = np.abs(b).max(axis=-1, keepdims=True).astype(F32)
    safe = np.where(amax > 0, amax, F32(1))
    codes = np.clip(np.rint(b * (F32(3) / safe)), -3, 3).astype(F32)
    return np.where(amax > 0, codes * (safe / F32(3)), F32(0)).astype(F32).reshape(t.shape)


class NumpyRef:
    """Unpacks a ModelWeights once; ``forward(ids)`` gives float32 logits for every position."""

    def __init__(
        self, weights: ModelWeights, embed: np.ndarray | None = None, kv: str = "f32", a48: bool = False
    ) -> None:
        """``embed`` overrides weights.embed (e.g. the checkpoint's exact f32/bf16 values) to measure
        what the f16 embedding costs. kv="f16": K (after RoPE) and V rounded to float16 (saturating
        at +-65504) before attention reads them, as the engine's f16 KV cache stores them; kv="q8":
        rounded to int8 codes per head row as the engine's 8-bit cache stores them (q8_rows); kv="q3":
        to 3-bit codes (q3_rows). a48: BitNet a4.8 activations (see the module docstring)."""
        self.cfg = weights.config
        self.kv = kv
        self.a48 = a48
        self.embed = dense_float(weights.embed if embed is None else embed)  # [vocab, dim]
        head = weights.head if weights.head is not None and not self.cfg.tied else None
        self.head = self.embed if head is None else dense_float(head)
        self.out_norm = weights.out_norm
        self.layers = []
        for lw in weights.layers:
            self.layers.append(
                {
                    "attn_norm": lw.attn_norm,
                    "q": DenseTernary.from_tensor(lw.q),
                    "k": DenseTernary.from_tensor(lw.k),
                    "v": DenseTernary.from_tensor(lw.v),
                    "attn_sub_norm": lw.attn_sub_norm,
                    "o": DenseTernary.from_tensor(lw.o),
                    "ffn_norm": lw.ffn_norm,
                    "gate": DenseTernary.from_tensor(lw.gate),
                    "up": DenseTernary.from_tensor(lw.up),
                    "ffn_sub_norm": lw.ffn_sub_norm,
                    "down": DenseTernary.from_tensor(lw.down),
                }
            )

    def _act(self, g: np.ndarray) -> np.ndarray:
        if self.cfg.act == "relu2":
            r = np.maximum(g, F32(0))
            return (r * r).astype(F32)
        if self.cfg.act == "silu":
            with np.errstate(over="ignore"):  # exp(-g) = inf for g < -88 gives the right limit, -0
                return (g / (F32(1) + np.exp(-g))).astype(F32)
        raise NotImplementedError(self.cfg.act)

    def forward_layer(self, i: int, x: np.ndarray, pos0: int = 0) -> np.ndarray:
        """Decoder layer i on hidden states x float32 [T, dim] at positions pos0.. (fresh context)."""
        c = self.cfg
        L = self.layers[i]
        n = x.shape[0]
        cos, sin = rope_tables(pos0 + n, c.head_dim, c.rope_theta)
        cos, sin = cos[pos0:], sin[pos0:]
        group = c.n_heads // c.n_kv_heads
        causal = np.triu(np.full((n, n), -np.inf, dtype=F32), k=1)  # [T, T]
        a4 = self.a48
        h = rms_norm(x, L["attn_norm"], c.norm_eps)
        q = apply_rope(L["q"](h, a4).reshape(n, c.n_heads, c.head_dim), cos, sin, c.rope_neox)
        k = apply_rope(L["k"](h, a4).reshape(n, c.n_kv_heads, c.head_dim), cos, sin, c.rope_neox)
        v = L["v"](h, a4).reshape(n, c.n_kv_heads, c.head_dim)
        if self.kv == "f16":
            k, v = (np.clip(t, -65504, 65504).astype(np.float16).astype(F32) for t in (k, v))
        elif self.kv == "q8":
            k, v = q8_rows(k), q8_rows(v)
        elif self.kv == "q3":
            k, v = q3_rows(k), q3_rows(v)
        att = np.empty((n, c.n_heads, c.head_dim), dtype=F32)
        for hh in range(c.n_heads):
            kv = hh // group  # GQA: query head hh reads KV head hh // (H / KV)
            sc = (q[:, hh] @ k[:, kv].T) * F32(c.head_dim**-0.5) + causal  # [T, T]
            sc = sc - sc.max(axis=-1, keepdims=True)
            p = np.exp(sc)
            p /= p.sum(axis=-1, keepdims=True)
            att[:, hh] = p @ v[:, kv]
        a = rms_norm(att.reshape(n, c.n_heads * c.head_dim), L["attn_sub_norm"], c.norm_eps)
        if a4:
            a = topk(a)
        x = (x + L["o"](a)).astype(F32)
        m = rms_norm(x, L["ffn_norm"], c.norm_eps)
        f = (self._act(L["gate"](m, a4)) * L["up"](m, a4)).astype(F32)  # f32: ReLU^2 overflows f16
        f = rms_norm(f, L["ffn_sub_norm"], c.norm_eps)
        return (x + L["down"](f)).astype(F32)

    def forward(self, ids: np.ndarray | list[int], return_hidden: bool = False):
        """ids [T] -> logits float32 [T, vocab]; with return_hidden also (hidden float32
        [L + 1, T, dim] = the input of every layer then the last output, final_norm [T, dim])."""
        ids = np.asarray(ids, dtype=np.int64)
        x = self.embed[ids]  # [T, dim]
        hidden = [x]
        for i in range(len(self.layers)):
            x = self.forward_layer(i, x)
            hidden.append(x)
        xn = rms_norm(x, self.out_norm, self.cfg.norm_eps)
        logits = (xn @ self.head.T).astype(F32)
        if return_hidden:
            return logits, np.stack(hidden), xn
        return logits

    def greedy(self, prompt: np.ndarray | list[int], n_new: int) -> tuple[list[int], list[float]]:
        """Greedy continuation (full recompute per step) -> (tokens, top-2 margins)."""
        ids = list(np.asarray(prompt, dtype=np.int64))
        toks, margins = [], []
        for _ in range(n_new):
            last = self.forward(ids)[-1]
            top2 = np.sort(last)[-2:]
            tok = int(np.argmax(last))
            toks.append(tok)
            margins.append(float(top2[1] - top2[0]))
            ids.append(tok)
        return toks, margins
