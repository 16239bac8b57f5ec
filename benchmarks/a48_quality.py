#!/usr/bin/env python
"""What the approximate modes cost in quality: BitNet a4.8's activations (a48) and the compact KV
caches, against the exact path of the same model on the same text.

    python benchmarks/a48_quality.py [-m MODEL] [--text FILE] [--window 512] [-t THREADS]

Without -m: the bundled default model (SmolLM2-135M-Instruct Q4_1, a real model, not trained for
a4.8, so its numbers bound what a model that was would lose). The text defaults to the test suite's
perplexity text (tests/fixtures/data/declaration.txt). Prints one row per mode: mean KL divergence
from the exact path per token (nats), how often both pick the same most likely next token, and
perplexity.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trit.engine import load_model
from trit.engine.perplexity import agreement

from trit.default_model import default_model_path

TEXT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "data" / "declaration.txt"
# (label, load_model keyword arguments): the exact path first, it is the reference
MODES = (
    ("exact (f32 KV)", {}),
    ("8-bit KV", {"kv": "q8"}),
    ("3-bit KV", {"kv": "q3"}),
    ("a4.8 activations", {"a48": True}),
    ("a4.8 activations + 3-bit KV", {"a48": True, "kv": "q3"}),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", help="a GGUF file or HF directory (default: the bundled model)")
    ap.add_argument("--text", default=str(TEXT), help="a UTF-8 text file")
    ap.add_argument("--window", type=int, default=512, help="tokens per fresh-context window")
    ap.add_argument("-t", "--threads", type=int, default=None)
    a = ap.parse_args(argv)
    path = a.model or default_model_path()
    if path is None:
        ap.error("no bundled default model here: pass -m")
    models = [(label, load_model(path, threads=a.threads, **kw)) for label, kw in MODES]
    tok = models[0][1].tokenizer
    if tok is None:
        ap.error(f"{path} has no tokenizer")
    ids = tok.encode(Path(a.text).read_text(encoding="utf-8"))
    print(
        f"{Path(path).name}: {len(ids)} tokens of {Path(a.text).name}, windows of {a.window}", file=sys.stderr
    )
    ref = models[0][1]
    print("| mode | KL from exact (nats/token) | top-1 same as exact | perplexity |")
    print("| --- | --- | --- | --- |")
    for label, m in models:
        r = agreement(ref, m, ids, context=a.window)
        print(f"| {label} | {r.kl:.4f} | {100 * r.top1:.1f}% | {r.perplexity:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
