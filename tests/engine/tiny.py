"""Random tiny BitNet models built in memory, for tests that need a model but no file."""

from __future__ import annotations

import numpy as np
from trit.engine.ternary import pack_tq
from trit.engine.weights import LayerWeights, ModelConfig, ModelWeights, TernaryTensor


def random_weights(
    seed: int = 0,
    *,
    dim: int = 256,
    hidden: int = 768,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    head_dim: int = 64,
    vocab: int = 300,
    context: int = 256,
    eos_ids: tuple[int, ...] = (),
) -> tuple[ModelWeights, dict]:
    """Returns the packed ModelWeights and the plain matrices ({"layers": [{name: (int8 W, scale)},
    ...], norms, "embed", "out_norm"}) for an independent reference."""
    rng = np.random.default_rng(seed)
    cfg = ModelConfig(
        "bitnet-b1.58", dim, hidden, n_layers, n_heads, n_kv_heads, head_dim, vocab, context,
        500000.0, 1e-5, eos_ids=eos_ids,
    )
    qdim, kvdim = n_heads * head_dim, n_kv_heads * head_dim
    shapes = {"q": (qdim, dim), "k": (kvdim, dim), "v": (kvdim, dim), "o": (dim, qdim),
              "gate": (hidden, dim), "up": (hidden, dim), "down": (dim, hidden)}
    layers, plain = [], []
    for _ in range(n_layers):
        mats, tens = {}, {}
        for name, (r, c) in shapes.items():
            w = rng.integers(-1, 2, size=(r, c)).astype(np.int8)
            s = np.float32(rng.uniform(0.5, 2.0))
            mats[name] = (w, s)
            tens[name] = TernaryTensor(pack_tq(w), r, c, np.full(r, s, np.float32))
        norms = {
            "attn_norm": rng.uniform(0.5, 1.5, dim).astype(np.float32),
            "attn_sub_norm": rng.uniform(0.5, 1.5, qdim).astype(np.float32),
            "ffn_norm": rng.uniform(0.5, 1.5, dim).astype(np.float32),
            "ffn_sub_norm": rng.uniform(0.5, 1.5, hidden).astype(np.float32),
        }
        layers.append(LayerWeights(**tens, **norms))
        plain.append({**mats, **norms})
    embed = (rng.standard_normal((vocab, dim)) * 0.5).astype(np.float16)
    out_norm = rng.uniform(0.5, 1.5, dim).astype(np.float32)
    weights = ModelWeights(cfg, embed, layers, out_norm, source="<random>", file_type="random")
    return weights, {"layers": plain, "embed": embed, "out_norm": out_norm, "config": cfg}
