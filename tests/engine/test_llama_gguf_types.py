"""llama-architecture GGUFs with llama.cpp's weight types, through the whole model.

One tiny random llama per type (dim 256, FFN 512, 4 heads / 2 KV heads, 2 layers, vocab 300; every
row a multiple of 256 so the K-quants fit), every linear in that type, written with our GGUFWriter
the way llama.cpp's converter writes them (q/k rows permuted, tests/engine/llama_gguf.py). Type
bytes come from gguf.quants.quantize; for Q4_K / Q5_K / Q6_K, which gguf.quants cannot quantize,
random valid blocks are built directly. The oracle is an independent float64 numpy llama forward
on gguf.quants.dequantize'd weights, un-permuted back to the HF rows and rotated with rotate_half,
so the engine's reading of every type, of the permutation (rope_neox=False) and of biases is
checked at once.

Tolerances (logits of a 24-token prompt, every position):
* activations="f32" (the default): the engine dequantizes each weight block against the float
  activation, so the only differences are float32 rounding (accumulation over 256-512 terms, f32
  norms, softmax, RoPE tables): max |d| <= 1e-5 x the reference logit range (measured <= 4e-7 on
  scalar, AVX2 and AVX-512 for every type; llama.cpp-level tests use 1e-3).
* activations="q8" (llama.cpp's way: activations rounded to 8 bits per block before the integer
  dot product): a real approximation that compounds over the 14 matmuls and the head. Measured
  max |d| / range 2e-3 (Q8_0 head only) to 1.5e-2 (K-quants), mean |d| / std 4e-3 to 2.1e-2;
  the bound is max |d| <= 5% of the range and mean |d| <= 5% of the logits' std.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import quants
from llama_gguf import permute_qk, unpermute_qk, write_llama_gguf
from trit.engine import load_model
from trit.engine._kernels import available_isas
from trit.engine.errors import ModelFormatError
from trit.engine.gguf import GGML_TYPE_IDS, GGML_TYPES
from trit.engine.weights import ModelConfig

CFG = ModelConfig(
    arch="llama",
    dim=256,
    hidden=512,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=64,
    vocab=300,
    context=256,
    rope_theta=10000.0,
    norm_eps=1e-5,
    rope_neox=False,
    act="silu",
    tied=True,
    bos_id=1,
    eos_ids=(2,),
)
LINEAR_TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "F16", "BF16", "F32"]
FLOAT_TYPES = ("F32", "F16", "BF16")
# per-file variations: embedding type (Q8_0 or F16), an untied Q6_K head, q/k/v biases
EMBED = {t: ("Q8_0" if i % 2 == 0 else "F16") for i, t in enumerate(LINEAR_TYPES)}
UNTIED = {"Q6_K", "Q4_K"}  # Q6_K head (llama.cpp's choice for output.weight) in these files
BIASED = {"Q4_0", "Q5_K", "F32"}
PROMPT = [1, 17, 250, 3, 99, 42, 42, 7, 160, 299, 0, 5, 88, 123, 64, 64, 64, 201, 11, 2, 77, 150, 31, 9]
SHAPES = {
    "q": (CFG.n_heads * CFG.head_dim, CFG.dim),
    "k": (CFG.n_kv_heads * CFG.head_dim, CFG.dim),
    "v": (CFG.n_kv_heads * CFG.head_dim, CFG.dim),
    "o": (CFG.dim, CFG.n_heads * CFG.head_dim),
    "gate": (CFG.hidden, CFG.dim),
    "up": (CFG.hidden, CFG.dim),
    "down": (CFG.dim, CFG.hidden),
}
QK_K = 256
ISAS = available_isas()


# -- K-quant blocks built directly -----------------------------------------------------------------


def _pack_scales_k4(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """6-bit scales and mins [n, 8] -> the 12-byte field of Q4_K / Q5_K (ggml get_scale_min_k4)."""
    q = np.zeros((sc.shape[0], 12), np.uint8)
    q[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    q[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    q[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    return q


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).reshape(-1, 1).view(np.uint8)


def random_kquant(rng: np.random.Generator, type_name: str, rows: int, cols: int, std: float) -> np.ndarray:
    """uint8 [rows, row_bytes] of random valid blocks whose values have roughly this std and about
    zero mean per 32-value sub-block (min = 8 or 16 x d times a rounded scale, so the offset
    cancels the mean of the unsigned codes)."""
    n = rows * cols // QK_K
    d = rng.uniform(0.5, 1.5, n)  # relative block scales; set to absolute values below
    if type_name == "Q6_K":
        ql = rng.integers(0, 256, (n, 128), dtype=np.uint8)
        qh = rng.integers(0, 256, (n, 64), dtype=np.uint8)
        scales = rng.integers(-64, 64, (n, 16)).astype(np.int8).view(np.uint8)
        # value = d * scale * (q - 32), q uniform 0..63: std ~ d * 37 * 18.5
        d_abs = d * std / (37 * 18.5)
        return np.hstack([ql, qh, scales, _f16_bytes(d_abs)]).reshape(rows, -1)
    levels, codes = (16, 128) if type_name == "Q4_K" else (32, 128)
    sc = rng.integers(8, 64, (n, 8)).astype(np.uint8)
    ratio = 8 if type_name == "Q4_K" else 16  # dmin = ratio * d
    m = np.rint(sc * ((levels - 1) / 2) / ratio).astype(np.uint8)  # <= 63
    # value = d * sc * q - dmin * m, q uniform 0..levels-1: std ~ d * 36 * levels / sqrt(12)
    d_abs = (d * std / (36 * levels / np.sqrt(12))).astype(np.float16)
    dmin = d_abs.astype(np.float32) * ratio  # exact in f16: a power-of-two multiple
    head = np.hstack([_f16_bytes(d_abs), _f16_bytes(dmin), _pack_scales_k4(sc, m)])
    qs = rng.integers(0, 256, (n, codes), dtype=np.uint8)
    if type_name == "Q4_K":
        return np.hstack([head, qs]).reshape(rows, -1)
    qh = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    return np.hstack([head, qh, qs]).reshape(rows, -1)


def encode(
    rng: np.random.Generator, type_name: str, w: np.ndarray
) -> tuple[tuple[str, np.ndarray], np.ndarray]:
    """w float32 [rows, cols] (for K-quants only its shape and std are used) -> (the tensor for
    write_llama_gguf, the float64 values the file holds per gguf.quants.dequantize)."""
    qt = gguf.GGMLQuantizationType[type_name]
    if type_name in FLOAT_TYPES:
        data = quants.quantize(w, qt)  # F32 / F16 values, or BF16 bytes (round to nearest even)
        deq = quants.dequantize(data, qt).reshape(w.shape)
        stored = deq if type_name != "F16" else data
        return (type_name, np.asarray(stored)), deq.astype(np.float64)
    if type_name in ("Q4_K", "Q5_K", "Q6_K"):
        data = random_kquant(rng, type_name, *w.shape, std=float(w.std()))
    else:
        data = quants.quantize(w, qt)
    deq = quants.dequantize(data, qt).reshape(w.shape)
    return (type_name, data), deq.astype(np.float64)


# -- the model and its float64 reference ----------------------------------------------------------


def build(type_name: str, seed: int):
    """(file tensors for write_llama_gguf, float64 reference params in HF row order)."""
    rng = np.random.default_rng(seed)
    d = CFG.dim
    embed_w = rng.normal(0, 0.5, (CFG.vocab, d)).astype(np.float32)
    emb_t, emb_ref = encode(rng, EMBED[type_name], embed_w)
    ref = {"embed": emb_ref, "layers": []}
    layers = []
    for _ in range(CFG.n_layers):
        L = {
            "attn_norm": rng.uniform(0.2, 0.5, d).astype(np.float32),
            "ffn_norm": rng.uniform(0.6, 1.4, d).astype(np.float32),
        }
        R = {"attn_norm": L["attn_norm"].astype(np.float64), "ffn_norm": L["ffn_norm"].astype(np.float64)}
        for f, (rows, cols) in SHAPES.items():
            gain = 0.6 if f in ("q", "k") else 1.0  # attention scores O(1-10), not one-hot
            w = rng.normal(0, gain / np.sqrt(cols), (rows, cols)).astype(np.float32)
            n_head = {"q": CFG.n_heads, "k": CFG.n_kv_heads}.get(f)
            if n_head:
                w = permute_qk(w, n_head)  # the file holds llama.cpp's row order
            L[f], deq = encode(rng, type_name, w)
            R[f] = unpermute_qk(deq, n_head) if n_head else deq
            if type_name in BIASED and f in ("q", "k", "v"):
                b = rng.normal(0, 0.3, rows).astype(np.float32)
                L[f + "_bias"] = permute_qk(b, n_head) if n_head else b
                R[f + "_bias"] = (
                    b.astype(np.float64)
                    if not n_head
                    else unpermute_qk(L[f + "_bias"], n_head).astype(np.float64)
                )
        layers.append(L)
        ref["layers"].append(R)
    out_norm = rng.uniform(0.6, 1.4, d).astype(np.float32)
    ref["out_norm"] = out_norm.astype(np.float64)
    head = None
    if type_name in UNTIED:
        head, ref["head"] = encode(rng, "Q6_K", rng.normal(0, 0.5, (CFG.vocab, d)).astype(np.float32))
    else:
        ref["head"] = ref["embed"]
    return {"embed": emb_t, "layers": layers, "out_norm": out_norm, "head": head}, ref


def rms_norm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + CFG.norm_eps) * w


def rotate_half_rope(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """transformers' llama RoPE on HF rows: x [T, H, hd], pairs (i, i + hd/2)."""
    hd = x.shape[-1]
    inv = 1.0 / CFG.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = pos[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
    rot = np.concatenate([-x[..., hd // 2 :], x[..., : hd // 2]], -1)
    return x * cos + rot * sin


def ref_forward(ref: dict, ids: list[int]) -> np.ndarray:
    """float64 logits [T, vocab]."""
    T, H, KV, hd = len(ids), CFG.n_heads, CFG.n_kv_heads, CFG.head_dim
    pos = np.arange(T, dtype=np.float64)
    x = ref["embed"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for R in ref["layers"]:
        h = rms_norm(x, R["attn_norm"])

        def lin(f: str, v: np.ndarray, R: dict = R) -> np.ndarray:
            y = v @ R[f].T
            return y + R[f + "_bias"] if f + "_bias" in R else y

        q = rotate_half_rope(lin("q", h).reshape(T, H, hd), pos)
        k = rotate_half_rope(lin("k", h).reshape(T, KV, hd), pos)
        v = lin("v", h).reshape(T, KV, hd)
        att = np.empty((T, H, hd))
        for i in range(H):
            j = i // (H // KV)
            s = q[:, i] @ k[:, j].T / np.sqrt(hd) + mask
            p = np.exp(s - s.max(-1, keepdims=True))
            att[:, i] = (p / p.sum(-1, keepdims=True)) @ v[:, j]
        x = x + lin("o", att.reshape(T, H * hd))
        m = rms_norm(x, R["ffn_norm"])
        g = lin("gate", m)
        x = x + lin("down", g / (1 + np.exp(-g)) * lin("up", m))
    return rms_norm(x, ref["out_norm"]) @ ref["head"].T


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama-types")
    out = {}
    for i, t in enumerate(LINEAR_TYPES):
        tensors, ref = build(t, seed=100 + i)
        path = root / f"llama-{t}.gguf"
        cfg = ModelConfig(**{**CFG.__dict__, "tied": t not in UNTIED})
        write_llama_gguf(path, cfg, file_type=t, **tensors)
        out[t] = (path, ref, ref_forward(ref, PROMPT))
    return out


def test_kquant_blocks_are_centered_and_scaled():
    rng = np.random.default_rng(0)
    for t in ("Q4_K", "Q5_K", "Q6_K"):
        deq = quants.dequantize(random_kquant(rng, t, 64, 512, 0.05), gguf.GGMLQuantizationType[t])
        sub = deq.reshape(-1, 32).mean(-1)
        assert np.abs(sub).mean() < 0.01, t  # per-sub-block offsets cancel
        assert 0.03 < deq.std() < 0.08, (t, deq.std())


@pytest.mark.parametrize("type_name", LINEAR_TYPES)
def test_file_layout(type_name, models):
    path, _, _ = models[type_name]
    model = load_model(path, threads=1)
    c, w = model.config, model.weights
    assert (c.arch, c.act, c.rope_neox, c.tied) == ("llama", "silu", False, type_name not in UNTIED)
    assert model.info.quant_types == (type_name,)
    assert (w.embed.type_name if hasattr(w.embed, "type_name") else "F16") == EMBED[type_name]
    lw = w.layers[0]
    assert (lw.q.bias is not None) == (type_name in BIASED) and lw.o.bias is None
    if type_name in UNTIED:
        assert w.head.type_name == "Q6_K"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("type_name", LINEAR_TYPES)
def test_f32_activations_match_float64_reference(type_name, isa, models):
    path, _, want = models[type_name]
    got = load_model(path, isa=isa, threads=2, activations="f32").logits(PROMPT).astype(np.float64)
    rng_ = want.max() - want.min()
    err = np.abs(got - want).max()
    assert err <= 1e-5 * rng_, (type_name, err / rng_)
    assert want.std() > 1.0  # logits of a useful size, not a degenerate model


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("type_name", LINEAR_TYPES)
def test_q8_activations_within_rounding(type_name, isa, models):
    path, _, want = models[type_name]
    got = load_model(path, isa=isa, threads=2, activations="q8").logits(PROMPT).astype(np.float64)
    d = np.abs(got - want)
    assert d.mean() <= 0.05 * want.std(), (type_name, d.mean() / want.std())
    assert d.max() <= 0.05 * (want.max() - want.min()), (type_name, d.max() / (want.max() - want.min()))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("type_name", LINEAR_TYPES)
def test_prompt_chunks_equal_one_token_at_a_time(type_name, isa, models):
    """A prompt chunk runs each matrix once for all its tokens (the GEMM kernels where a type has
    them); its logits must be bit for bit those of the same tokens decoded one at a time, whatever
    the thread count and the chunk boundaries (a 13-token chunk, then 11: ragged token groups)."""
    from trit.engine import _core

    path, _, _ = models[type_name]
    for acts in ("f32", "q8"):
        m = load_model(path, isa=isa, threads=1, activations=acts)
        for threads in (1, 2, 3):
            chunks = _core.CoreState(m.core, 64, 16, threads, "f32", False)
            got = np.concatenate([chunks.forward(PROMPT[:13], 0, True), chunks.forward(PROMPT[13:], 13, True)])
            single = _core.CoreState(m.core, 64, 1, threads, "f32", False)
            want = np.stack([single.forward([t], pos) for pos, t in enumerate(PROMPT)])
            np.testing.assert_array_equal(got, want, err_msg=f"{type_name} {isa} {acts} threads={threads}")


def test_tokenizer_model_none_means_token_ids_only(tmp_path):
    """llama.cpp's vocabulary type "none" (a file without tokens): loads, takes token ids."""
    tensors, ref = build("Q8_0", seed=7)
    path = tmp_path / "none.gguf"
    write_llama_gguf(path, CFG, file_type="Q8_0", extra_metadata={"tokenizer.ggml.model": "none"}, **tensors)
    model = load_model(path, threads=1)
    assert model.tokenizer is None
    got = model.logits(PROMPT[:6]).astype(np.float64)
    want = ref_forward(ref, PROMPT[:6])
    assert np.abs(got - want).max() <= 1e-5 * (want.max() - want.min())


@pytest.mark.parametrize("type_name", ["Q4_K", "F16"])
def test_greedy_matches_reference(type_name, models):
    """Cached decoding (one token at a time) agrees with the reference's full recompute."""
    path, ref, _ = models[type_name]
    model = load_model(path, threads=2)
    gen = model.generate(PROMPT[:5], max_tokens=8, temperature=0, repeat_penalty=1.0, stop_ids=[])
    ids = list(PROMPT[:5])
    for tok in gen.tokens:
        logits = ref_forward(ref, ids)[-1]
        top2 = np.sort(logits)[-2:]
        if top2[1] - top2[0] < 1e-2:
            break  # a near-tie: either token is right
        assert tok == int(logits.argmax())
        ids.append(tok)


# -- unsupported types ------------------------------------------------------------------------------


def _zeros(type_name: str, rows: int, cols: int) -> tuple[str, np.ndarray]:
    gt = GGML_TYPES[GGML_TYPE_IDS[type_name]]
    return (type_name, np.zeros((rows, gt.nbytes(cols)), np.uint8))


@pytest.mark.parametrize("tensor", ["blk.1.ffn_down.weight", "token_embd.weight"])
def test_unsupported_type_is_named(tmp_path, tensor):
    """A valid Q8_0 llama file except for one tensor in IQ2_XXS (ggml type 16)."""
    tensors, _ = build("Q8_0", seed=7)
    if tensor == "token_embd.weight":
        tensors["embed"] = _zeros("IQ2_XXS", CFG.vocab, CFG.dim)
    else:
        tensors["layers"][1]["down"] = _zeros("IQ2_XXS", CFG.dim, CFG.hidden)
    path = tmp_path / "iq2.gguf"
    write_llama_gguf(path, CFG, file_type="Q8_0", **tensors)
    with pytest.raises(ModelFormatError) as ei:
        load_model(path, threads=1)
    msg = str(ei.value)
    assert tensor in msg and "IQ2_XXS" in msg, msg
    for t in ("Q4_K", "Q6_K", "Q8_0", "F16"):
        assert t in msg, msg  # the supported types are listed
