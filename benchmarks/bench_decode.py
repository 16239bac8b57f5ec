#!/usr/bin/env python
"""Decode benchmark of Trit against llama.cpp on BitNet b1.58 2B4T-shaped random weights.

    python benchmarks/bench_decode.py [--quick] [-t 1,2] [-p 128] [-n 64] [--reps 3]
                                      [--json out.json] [--no-peer]

1. Random ternary weights of the 2B4T shape (30 layers, 2560/6912, 20/5 heads of 128, vocab 128256,
   f16 tied embedding) are generated from --seed and written, one matrix at a time, as our I2_S GGUF
   and, for the peer, as TQ2_0 and TQ1_0 GGUFs of llama.cpp's `bitnet` architecture (same weights,
   same bytes per token; upstream's graph uses SiLU, so the text differs). The files live in a temp
   dir deleted at exit (--keep DIR keeps them). --quick: 4 layers, 1024/2816, vocab 32000.
2. The machine's read bandwidth is measured per thread count (trit.bench.measure_bandwidth).
3. Each engine x thread count runs in its own worker process; after a warm-up the engines alternate
   for --reps rounds (trit/bench.py explains every number).
4. Then --reps more decode rounds per engine while another process spins on one core (a busy
   loop that ends by itself; --no-contention skips them): "% of quiet" shows whether the thread
   pool holds up when a core is taken.
5. One more row runs our engine with the optional Q8_0 copy of the LM head (load_model(head="q8_0"),
   `trit --head q8_0`; off by default because the logits move by its rounding): fewer bytes per
   token, a lower ceiling to compare against (--no-q8-head skips it). Where our engine holds the
   ternary matrices in the B3 layout by default (AVX-512 VBMI + VNNI: "I2_S as B3", 1.6 bits a
   weight), a row with the file's own 2-bit layout (load_model(ternary="tq")) runs beside it.

The peer is llama.cpp through llama-cpp-python, a benchmark extra that is never a Trit dependency:
    CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python
Without it (or with --no-peer) only our engine runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

from trit.engine._core import kernel_b3_fast

from trit import bench


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shape (4 layers, 1024/2816, vocab 32000)")
    ap.add_argument("-t", "--threads", type=bench.parse_threads, default=[1, 2], help="e.g. 1,2")
    ap.add_argument("-p", "--prompt-tokens", type=int, default=128)
    ap.add_argument("-n", "--gen-tokens", type=int, default=64)
    ap.add_argument("--ttft-prompt", type=int, default=bench.TTFT_PROMPT)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--no-peer", action="store_true", help="skip llama.cpp")
    ap.add_argument("--peer-formats", default=",".join(bench.PEER_FORMATS), help="TQ2_0,TQ1_0 or a subset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--bw-mib", type=int, default=None, help="bandwidth buffer (default 1024, quick 256; 0 skips)"
    )
    ap.add_argument("--keep", metavar="DIR", help="write the model files to DIR and keep them")
    ap.add_argument(
        "--no-q8-head",
        action="store_true",
        help="skip the row of our engine with the optional Q8_0 LM head (load_model(head='q8_0'), off by default in the app)",
    )
    ap.add_argument(
        "--no-contention",
        action="store_true",
        help="skip the rounds that measure decode while another process spins on one core",
    )
    a = ap.parse_args(argv)
    if a.reps < 1 or a.prompt_tokens < 1 or a.gen_tokens < 1 or a.ttft_prompt < 1:
        ap.error("--reps, -p, -n and --ttft-prompt must be >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    shape = bench.SHAPE_QUICK if a.quick else bench.SHAPE_2B4T
    peer_formats: list[str] = []
    if not a.no_peer:
        if importlib.util.find_spec("llama_cpp") is None:
            log("llama-cpp-python is not installed: running our engine only (pip install llama-cpp-python)")
        else:
            peer_formats = [f for f in a.peer_formats.split(",") if f]
            bad = set(peer_formats) - set(bench.PEER_FORMATS)
            if bad:
                print(f"bench_decode: unknown peer format(s) {', '.join(sorted(bad))}", file=sys.stderr)
                return 2

    workdir = a.keep or tempfile.mkdtemp(prefix="trit-bench-")
    os.makedirs(workdir, exist_ok=True)
    try:
        # SIGTERM / SIGHUP end the run as Ctrl-C does: workers killed, the random models deleted
        with bench.ending_on_signals():
            res = _measure(a, shape, peer_formats, workdir, log)
    except bench.Terminated as e:
        log(f"stopped by {e}")
        return 128 + e.signum
    except bench.BenchError as e:  # e.g. a worker died (llama.cpp's SIGILL on a CPU it misjudged)
        print(f"bench_decode: {e}", file=sys.stderr)
        return 1
    res.machine["shape"] = shape.name
    if peer_formats:
        import llama_cpp

        res.machine["llama_cpp_python"] = getattr(llama_cpp, "__version__", "?")
    print(
        f"\n{shape.name} shape ({shape.n_layers} layers, {shape.dim}/{shape.hidden}, vocab {shape.vocab}), "
        f"{res.machine['cpu']}, {res.machine['logical_cpus']} logical CPUs"
    )
    print(bench.format_table(res))
    if a.json:
        bench.write_json(res, a.json)
        log(f"wrote {a.json}")
    return 0


def _measure(
    a: argparse.Namespace,
    shape: bench.BenchShape,
    peer_formats: list[str],
    workdir: str,
    log: Callable[[str], None],
) -> bench.BenchResult:
    """Writes the random models into workdir (deleted afterwards unless --keep) and runs them."""
    try:
        log(f"writing {shape.name} random weights (seed {a.seed}) to {workdir}")
        paths = bench.write_random_models(shape, workdir, ["I2_S", *peer_formats], seed=a.seed, log=log)
        mib = a.bw_mib if a.bw_mib is not None else (256 if a.quick else 1024)
        probe = bench.BandwidthProbe(mib) if mib > 0 else None
        try:
            if probe is not None:
                probe.probe(a.threads)
                log(
                    "read bandwidth: "
                    + ", ".join(f"t={t} {g[-1]:.1f} GB/s" for t, g in probe.samples.items())
                )
            specs = [bench.RowSpec("trit", str(paths["I2_S"]))]
            if kernel_b3_fast():  # the default then holds the ternary matrices as B3: TQ beside it
                specs.append(bench.RowSpec("trit", str(paths["I2_S"]), ternary="tq"))
            if not a.no_q8_head:
                specs.append(bench.RowSpec("trit", str(paths["I2_S"]), head="q8_0"))
            specs += [bench.RowSpec("llama.cpp", str(paths[f]), f) for f in peer_formats]
            return bench.run_bench(
                specs,
                a.threads,
                p=a.prompt_tokens,
                n=a.gen_tokens,
                ttft_prompt=a.ttft_prompt,
                reps=a.reps,
                probe=probe,
                seed=a.seed,
                contention=not a.no_contention,
                log=log,
            )
        finally:
            if probe is not None:
                probe.close()
    finally:
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
