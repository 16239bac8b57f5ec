#!/usr/bin/env python
"""Decode efficiency against the read bandwidth of the same moment, on a machine whose bandwidth
changes while you measure (shared VMs).

    python benchmarks/bw_states.py MODEL.gguf [--seconds 60] [-t 2] [-n 16]

Loops for --seconds: probe the read bandwidth at -t threads (one pass of each of the probe's loops
over a 512 MiB buffer, the faster: trit.bench.BandwidthProbe), decode -n tokens with our engine at
-t threads, probe again. Each line is one sample: the two probes, decode tok/s, GB/s read (tok/s x
Model.info.weight_bytes) and that as a share of the higher probe; with --kernels the sample also
times the two decode kernels alone at the same thread count, the better of two passes each: over the
model's own weights in decode order without the glue between them (kernel_bw.ModelKernels: ternary
models with an f16 head), and over kernel_bw.py's stacked 2B4T-sized arrays, so that decode and the
kernels it is made of are compared in the same moment. At the end the samples are grouped by the
bandwidth state they ran in (both probes within trit.bench.STEADY_PROBES, 15%, of each other), with
the median share per state.

This project's 2-vCPU CI VM has two such states at 2 threads, ~31-35 GB/s and ~55-62 GB/s, each
lasting seconds to minutes (one thread: ~28-32 GB/s in both): benchmarks/RESULTS.md has what each
gives. Random 2B4T-shaped weights: `python benchmarks/bench_decode.py --keep DIR` writes them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from kernel_bw import KernelLoads, ModelKernels, default_isa
from trit.engine import _kernels, load_model

from trit.bench import PROBE_LEADS, STEADY_PROBES, BandwidthProbe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", "--gen-tokens", type=int, default=16)
    ap.add_argument("--kernels", action="store_true", help="also time the head and ternary kernels alone")
    a = ap.parse_args(argv)
    m = load_model(a.model, threads=a.threads, context=a.gen_tokens + 8)
    kinds: list[tuple[str, object]] = []  # (label, kernel_bw loads) timed per sample with --kernels
    if a.kernels:
        try:
            kinds.append(("model's", ModelKernels(m, default_isa())))
        except ValueError as e:
            print(f"(not timing the model's own kernels: {e})")
        kinds.append(("stacked", KernelLoads(default_isa())))
    m.generate([1, 2, 3], max_tokens=4, temperature=0)  # warm-up
    gb = m.info.weight_bytes / 1e9
    # one pass of each of the probe's loops (PROBE_LEADS) per reading, the faster: the moment, not the
    # best of several; a single pass would be the loop without a prefetch, slower on the Intel VM
    probe = BandwidthProbe(512, passes=len(PROBE_LEADS))

    def bw() -> float:
        return probe.probe([a.threads])[a.threads]

    samples: list[tuple[float, float, float]] = []
    alone: list[list[float]] = []  # per sample: head, ternary GB/s of each kind (--kernels)
    end = time.monotonic() + a.seconds
    print(
        "probe before / after GB/s, decode tok/s, GB/s read, % of the higher probe"
        + "".join(f"; {label} head and ternary kernels alone, % of it" for label, _ in kinds)
    )
    while time.monotonic() < end:
        before = bw()
        tps = m.generate([1, 2, 3], max_tokens=a.gen_tokens + 1, temperature=0, stop_ids=[]).stats.decode_tps
        alone.append(
            [
                max(f(_kernels, a.threads) for _ in range(2))
                for _, k in kinds
                for f in (k.head_gbps, k.tern_gbps)  # type: ignore[attr-defined]
            ]
        )
        after = bw()
        share = 100 * tps * gb / max(before, after)
        samples.append((before, after, share))
        kern = "".join(
            "  {} head {:4.0f}%  ternary {:4.0f}%".format(
                label, *(100 * x / max(before, after) for x in pair)
            )
            for (label, _), pair in zip(kinds, zip(alone[-1][::2], alone[-1][1::2]))
        )
        print(
            f"{before:5.1f} {after:5.1f}  {tps:6.2f} tok/s  {tps * gb:5.1f} GB/s  {share:4.0f}%{kern}",
            flush=True,
        )
    probe.close()
    ok = [abs(b - c) <= STEADY_PROBES * max(b, c) for b, c, _ in samples]
    steady = [(max(b, c), s) for (b, c, s), keep in zip(samples, ok) if keep]
    if kinds and any(ok):
        pairs = [(k, max(b, c)) for k, (b, c, _), keep in zip(alone, samples, ok) if keep]
        for j, (label, _) in enumerate(kinds):
            print(
                "steady samples: {} kernels alone, head {:.0f}%, ternary {:.0f}% of the probe (medians)".format(
                    label, *(100 * statistics.median(k[2 * j + i] / g for k, g in pairs) for i in (0, 1))
                )
            )
    if not steady:
        print(
            f"no sample had both probes within {100 * STEADY_PROBES:.0f}% of each other: run longer for a"
            " per-state summary"
        )
    else:
        lo, hi = min(g for g, _ in steady), max(g for g, _ in steady)
        cut = (lo + hi) / 2 if hi > 1.4 * lo else 0.0  # two states only when they are far apart
        groups = [("low", [x for x in steady if x[0] < cut]), ("high", [x for x in steady if x[0] >= cut])]
        if not cut:
            groups = [("one", steady)]
        for name, group in groups:
            if group:
                print(
                    f"{name} state: {len(group)} samples, bandwidth median {statistics.median(g for g, _ in group):.1f} GB/s, "
                    f"decode at {statistics.median(s for _, s in group):.0f}% of it (median)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
