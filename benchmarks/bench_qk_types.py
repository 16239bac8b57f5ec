#!/usr/bin/env python
"""Prompt and decode speed on the common llama.cpp weight types, ours beside llama.cpp's.

    python benchmarks/bench_qk_types.py [--types Q4_0,Q4_1,Q8_0,Q4_K,Q5_K,Q6_K] [-t 1,2] [--reps 3]
                                         [--q8] [--quick] [--no-peer] [--keep DIR]

One random llama-architecture GGUF per type is written to a temp dir (dim 2048, FFN 5632, 32 / 4
heads, 6 layers, vocab 32000, an f16 tied embedding: a TinyLlama-1.1B layer shape; --quick: 2
layers, dim 1024, FFN 2816), every linear in that type: the 32-value types quantized from random
normal weights by gguf.quants, the K-quants as random valid blocks (tests/engine: gguf.quants cannot
quantize them); Q5_0, Q5_1, F16, BF16 and F32 on request. Then trit.bench.run_bench runs each file in our engine (its default exact f32
activations; with --q8 also rounded to 8 bits as llama.cpp does) and, with llama-cpp-python
installed, in llama.cpp, alternating, and prints the usual table (pp128, tg64, TTFT for a 100-token
prompt; no bandwidth probe: these files are small and the kernels compute-bound).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

from trit import bench

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "engine"))  # the llama GGUF writer and K-quant blocks

TYPES = ("Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
OTHER_TYPES = ("Q5_0", "Q5_1", "F16", "BF16", "F32")  # on request (--types)


def write_model(path: Path, type_name: str, quick: bool, seed: int) -> None:
    import gguf
    from gguf import quants
    from llama_gguf import write_llama_gguf
    from test_llama_gguf_types import CFG, random_kquant
    from trit.engine.weights import ModelConfig

    dim, hidden, layers = (1024, 2816, 2) if quick else (2048, 5632, 6)
    cfg = ModelConfig(
        **{
            **CFG.__dict__,
            "dim": dim,
            "hidden": hidden,
            "n_layers": layers,
            "n_heads": 32,
            "n_kv_heads": 4,
            "head_dim": dim // 32,
            "vocab": 32000,
            "tied": True,
        }
    )
    qdim, kvdim = dim, 4 * (dim // 32)
    shapes = {
        "q": (qdim, dim),
        "k": (kvdim, dim),
        "v": (kvdim, dim),
        "o": (dim, qdim),
        "gate": (hidden, dim),
        "up": (hidden, dim),
        "down": (dim, hidden),
    }
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(layers):
        lw = {"attn_norm": np.ones(dim, np.float32), "ffn_norm": np.ones(dim, np.float32)}
        for f, (rows, cols) in shapes.items():
            if type_name.endswith("_K"):
                data = random_kquant(rng, type_name, rows, cols, 1.0 / np.sqrt(cols))
            elif type_name in ("F16", "BF16", "F32"):  # the writer rounds float32 to the type
                data = rng.normal(0, 1.0 / np.sqrt(cols), (rows, cols)).astype(np.float32)
            else:
                w = rng.normal(0, 1.0 / np.sqrt(cols), (rows, cols)).astype(np.float32)
                data = quants.quantize(w, gguf.GGMLQuantizationType[type_name])
            lw[f] = (type_name, data)
        blocks.append(lw)
    embed = rng.normal(0, 0.5, (cfg.vocab, dim)).astype(np.float32)
    # tokenizer "none": llama.cpp then gives the file a vocabulary of placeholder tokens (trit.bench)
    write_llama_gguf(
        path,
        cfg,
        embed=("F16", embed),
        out_norm=np.ones(dim, np.float32),
        layers=blocks,
        file_type=type_name,
        extra_metadata={"tokenizer.ggml.model": "none"},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default=",".join(TYPES), help="comma-separated ggml type names")
    ap.add_argument("-t", "--threads", type=bench.parse_threads, default=[1, 2], help="e.g. 1,2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="the small shape (2 layers, dim 1024)")
    ap.add_argument("--no-peer", action="store_true", help="our engine only")
    ap.add_argument("--q8", action="store_true", help="also our engine with 8-bit activations (as llama.cpp)")
    ap.add_argument("--keep", metavar="DIR", help="write the models here and keep them")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    types = [t.strip().upper() for t in a.types.split(",") if t.strip()]
    bad = [t for t in types if t not in TYPES + OTHER_TYPES]
    if bad or a.reps < 1:
        ap.error(
            f"--types takes {', '.join(TYPES + OTHER_TYPES)}; --reps >= 1"
            + (f" (not {', '.join(bad)})" if bad else "")
        )
    peer = not a.no_peer and importlib.util.find_spec("llama_cpp") is not None
    if not a.no_peer and not peer:
        print("llama-cpp-python is not installed: our engine only", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="trit-qk-") as tmp:
        root = Path(a.keep) if a.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        specs = []
        for i, t in enumerate(types):
            path = root / f"random-llama-{t}.gguf"
            print(f"writing {path.name}", file=sys.stderr, flush=True)
            write_model(path, t, a.quick, a.seed + i)
            specs.append(bench.RowSpec("trit", str(path)))
            if a.q8:
                specs.append(bench.RowSpec("trit", str(path), activations="q8"))
            if peer:
                specs.append(bench.RowSpec("llama.cpp", str(path)))
        res = bench.run_bench(
            specs, a.threads, reps=a.reps, log=lambda m: print(m, file=sys.stderr, flush=True)
        )
    shape = "2 layers, 1024/2816" if a.quick else "6 layers, 2048/5632 (TinyLlama layer shape)"
    print(f"random llama, {shape}, vocab 32000, f16 tied embedding; ours with exact f32 activations")
    print(bench.format_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
