#!/usr/bin/env python
"""Long contexts: decode and prompt speed with the KV cache in f32 (exact), f16, 8-bit (kv="q8") and
3-bit (kv="q3").

    python benchmarks/bench_context.py [-m MODEL.gguf] [--quick] [-t 1,2] [--positions 500,1000,2000]
                                       [-n 32] [--reps 3]

For every thread count, one model per KV type is loaded in this process; at every context length
N, a session is filled with N random token ids (the prompt pass: "prompt tok/s" is N over its
time) and then decodes -n tokens greedily ("decode tok/s", the cache growing from N). The KV types
alternate within each repetition, so both see the same machine state; the table gives the median
(min) of --reps. "KV MB read" is what attention reads per decode token at N (the cache of N
positions, scales included: trit.engine.model.kv_cache_bytes). Without -m, the 2B4T-shaped random I2_S file (or --quick's shape) is written
to a temp dir first, as benchmarks/bench_decode.py does (its --keep DIR keeps one to pass as -m).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
from trit.engine import load_model
from trit.engine.model import KV_TYPES, kv_cache_bytes

from trit import bench


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", help="a GGUF file (default: write the random 2B4T-shaped one)")
    ap.add_argument("--quick", action="store_true", help="without -m: the small shape (4 layers)")
    ap.add_argument("-t", "--threads", type=bench.parse_threads, default=[1, 2], help="e.g. 1,2")
    ap.add_argument("--positions", type=bench.parse_threads, default=[500, 1000, 2000], help="e.g. 500,2000")
    ap.add_argument("-n", "--gen-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.reps < 1 or a.gen_tokens < 2:
        ap.error("--reps must be >= 1 and -n >= 2")
    return a


def _measure(model, ids: list[int], gen: int) -> tuple[float, float]:
    """(prompt tok/s, decode tok/s) for one fresh session holding ids, then gen tokens."""
    s = model.session(context=len(ids) + gen + 1)
    r = s.generate(ids, max_tokens=gen, temperature=0, stop_ids=[])
    assert r.stats is not None
    return len(ids) / (r.stats.prompt_ms / 1e3), r.stats.decode_tps


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    path, title, tmp = bench.i2s_model(a.model, a.quick, a.seed)
    longest = max(a.positions) + a.gen_tokens + 1
    rng = np.random.default_rng(a.seed)
    rows = []
    try:
        for t in a.threads:
            models = {kv: load_model(path, threads=t, context=longest, kv=kv) for kv in KV_TYPES}
            cfg = models["f32"].config
            for n in a.positions:
                ids = rng.integers(1, cfg.vocab, n).tolist()
                for m in models.values():  # warm-up: page in the weights, grow the cache once
                    _measure(m, ids[: min(n, 64)], 2)
                res: dict[str, list[tuple[float, float]]] = {kv: [] for kv in KV_TYPES}
                for rep in range(a.reps):
                    for kv in KV_TYPES if rep % 2 == 0 else KV_TYPES[::-1]:
                        res[kv].append(_measure(models[kv], ids, a.gen_tokens))
                for kv in KV_TYPES:
                    pp, tg = zip(*res[kv])
                    kv_mb = kv_cache_bytes(cfg, kv, n) / 1e6
                    rows.append(
                        (t, n, kv, statistics.median(pp), min(pp), statistics.median(tg), min(tg), kv_mb)
                    )
                    print(
                        f"t={t} N={n} kv={kv}: prompt {statistics.median(pp):.1f}, decode "
                        f"{statistics.median(tg):.2f} tok/s",
                        file=sys.stderr,
                        flush=True,
                    )
            del models
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(
        f"\n{title}, {a.gen_tokens} decoded tokens after N prompt tokens; median (min) of {a.reps}"
    )
    print(
        f"{'threads':>7}  {'N':>5}  {'kv':>4}  {'prompt tok/s':>14}  {'decode tok/s':>14}  {'KV MB read/token':>16}  {'decode vs f32':>13}"
    )
    base = {(t, n): tg for t, n, kv, _, _, tg, _, _ in rows if kv == "f32"}
    for t, n, kv, pp, ppmin, tg, tgmin, mb in rows:
        print(
            f"{t:>7}  {n:>5}  {kv:>4}  {pp:>7.1f} ({ppmin:>5.1f})  {tg:>7.2f} ({tgmin:>5.2f})  {mb:>16.1f}  "
            f"{tg / base[(t, n)]:>12.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
