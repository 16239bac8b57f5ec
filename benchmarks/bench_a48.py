#!/usr/bin/env python
"""Speed of BitNet a4.8's activations (a48=True) against the exact b1.58 path, same weights.

    python benchmarks/bench_a48.py [-m MODEL.gguf] [--quick] [-t 1,2] [-p 128] [-n 64] [--reps 5]

For every thread count, both models are loaded in this process and alternate within each
repetition (one -p token prompt, then -n tokens decoded greedily); the table gives the median (min)
of --reps. Without -m, the 2B4T-shaped random I2_S file (or --quick's shape) is written to a temp
dir first, as benchmarks/bench_decode.py does. The quality side is benchmarks/a48_quality.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
from trit.engine import load_model

from trit import bench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", help="a GGUF file (default: write the random 2B4T-shaped one)")
    ap.add_argument("--quick", action="store_true", help="without -m: the small shape (4 layers)")
    ap.add_argument("-t", "--threads", type=bench.parse_threads, default=[1, 2], help="e.g. 1,2")
    ap.add_argument("-p", "--prompt-tokens", type=int, default=128)
    ap.add_argument("-n", "--gen-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args(argv)
    if a.reps < 1 or a.gen_tokens < 2 or a.prompt_tokens < 1:
        ap.error("--reps and -p must be >= 1, -n >= 2")
    path, title, tmp = bench.i2s_model(a.model, a.quick)
    rows = []
    try:
        for t in a.threads:
            models = {mode: load_model(path, threads=t, a48=mode == "a4.8") for mode in ("b1.58", "a4.8")}
            vocab = models["b1.58"].config.vocab
            ids = np.random.default_rng(0).integers(1, vocab, a.prompt_tokens).tolist()
            for m in models.values():  # warm-up: page the weights in
                m.generate(ids[:16], max_tokens=2, temperature=0, stop_ids=[])
            res: dict[str, list[tuple[float, float]]] = {mode: [] for mode in models}
            for rep in range(a.reps):
                for mode in list(models) if rep % 2 == 0 else list(models)[::-1]:
                    g = models[mode].generate(ids, max_tokens=a.gen_tokens, temperature=0, stop_ids=[])
                    assert g.stats is not None
                    res[mode].append((g.stats.prompt_tps, g.stats.decode_tps))
            for mode, samples in res.items():
                pp, tg = zip(*samples)
                rows.append((t, mode, statistics.median(pp), min(pp), statistics.median(tg), min(tg)))
            del models
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"\n{title}, median (min) of {a.reps}")
    pp_h, tg_h = f"pp{a.prompt_tokens} tok/s", f"tg{a.gen_tokens} tok/s"
    print(f"{'threads':>7}  {'activations':>11}  {pp_h:>15}  {tg_h:>15}")
    for t, mode, pp, ppmin, tg, tgmin in rows:
        print(f"{t:>7}  {mode:>11}  {pp:>7.1f} ({ppmin:>5.1f})  {tg:>7.2f} ({tgmin:>5.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
