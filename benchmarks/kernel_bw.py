#!/usr/bin/env python
"""The decode kernels alone against the machine's read bandwidth, at one and two threads.

    python benchmarks/kernel_bw.py [--seconds 30] [--isa avx512]

Each round reads the same bytes four ways and prints GB/s: the benchmark's bandwidth probe (a C
sum over a 1 GiB buffer), the f16 head GEMV over the 2B4T head shape (128256 x 2560, 657 MB), and
the ternary GEMV over 120 stacked 6912 x 2560 matrices (531 MB, about the 2B4T layers' ternary
bytes) - once on one thread, once split in
two halves over two threads in one job (the kernels release the GIL; no pool, no barriers, no glue
between matrices). The share of the probe is what the kernel itself can stream; the gap between
that and the engine's decode (benchmarks/bw_states.py) is what the engine's structure costs.
Rounds repeat for --seconds because a shared VM's bandwidth changes (see bw_states.py).

    python benchmarks/kernel_bw.py --baseline /tmp/old/_kernels.cpython-311-x86_64-linux-gnu.so

also times the same kernels from another build of trit.engine._kernels (e.g. one built from an
earlier commit) in every round, right after this build's, and prints both: on a VM whose speed
moves by a third within minutes, only rounds that alternate the two builds compare them.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
from trit.engine import _kernels as K

from trit.bench import BandwidthProbe


def _split(fn: Callable[[slice], object], rows: int, nth: int) -> float:
    """Seconds for fn over rows split into nth contiguous halves, one thread each."""
    return _on_threads(lambda i: fn(slice(rows * i // nth, rows * (i + 1) // nth)), nth)


def _on_threads(fn: Callable[[int], object], nth: int) -> float:
    """Seconds for fn(0) .. fn(nth - 1) run at once, fn(0) on the calling thread."""
    th = [threading.Thread(target=fn, args=(i,)) for i in range(1, nth)]
    t0 = time.perf_counter()
    for t in th:
        t.start()
    fn(0)
    for t in th:
        t.join()
    return time.perf_counter() - t0


class _HeadGEMV:
    """The f16 head GEMV over self.head (uint16 bits, rows x cols) and self.x, split by rows."""

    isa: str
    head: np.ndarray
    x: np.ndarray

    def head_gbps(self, mod, nth: int) -> float:
        head = self.head
        return (
            head.nbytes / _split(lambda s: mod.f16_gemv(self.isa, head[s], self.x), head.shape[0], nth) / 1e9
        )


class KernelLoads(_HeadGEMV):
    """The two decode kernels alone over 2B4T-sized random data: the f16 head GEMV over the head's
    shape (128256 x 2560, 657 MB) and the ternary GEMV over 120 stacked 6912 x 2560 matrices
    (531 MB, about the layers' ternary bytes). GB/s of one pass split over nth threads."""

    def __init__(self, isa: str) -> None:
        self.isa = isa
        rng = np.random.default_rng(0)
        self.head = rng.integers(0x3000, 0x3C00, (128256, 2560), dtype=np.uint16)  # f16 bits of 0.125 .. 1
        self.x = rng.standard_normal(2560).astype(np.float32)
        self.tern = rng.integers(0, 256, (120 * 6912, 2560 // 4), dtype=np.uint8)
        self.act = rng.integers(-127, 128, 2560, dtype=np.int8)

    def tern_gbps(self, mod, nth: int) -> float:
        tern = self.tern
        return (
            tern.nbytes / _split(lambda s: mod.gemv(self.isa, tern[s], self.act, 0), tern.shape[0], nth) / 1e9
        )


class ModelKernels(_HeadGEMV):
    """The same two kernels over a loaded model's own weights, in decode order and without the
    glue between them: each layer's ternary matrices (q, k, v, o, gate, up, down) one GEMV call each,
    and the f16 head (or tied embedding). At nth threads each thread takes its half of the rows of
    every matrix in turn, with no barrier between matrices. For ternary models with an f16 head."""

    NAMES = ("q", "k", "v", "o", "gate", "up", "down")

    def __init__(self, model, isa: str) -> None:
        w = model.weights
        head = w.head if w.head is not None else w.embed
        self.isa = isa
        self.mats = [getattr(layer, n) for layer in w.layers for n in self.NAMES]
        if not all(hasattr(t, "packed") for t in self.mats) or getattr(head, "dtype", None) != np.float16:
            raise ValueError("ModelKernels needs ternary layers and an f16 head")
        self.head = head.view(np.uint16)
        rng = np.random.default_rng(0)
        # in either layout the model holds them (B3: 320-value blocks, layout="b3")
        self.acts = {
            (t.layout, t.nb): rng.integers(
                -127, 128, t.nb * (320 if t.layout == "b3" else 128), dtype=np.int8
            )
            for t in self.mats
        }
        self.x = rng.standard_normal(self.head.shape[1]).astype(np.float32)
        self.tern_bytes = sum(t.packed.nbytes for t in self.mats)

    def tern_gbps(self, mod, nth: int) -> float:
        def part(i: int) -> None:
            for t in self.mats:
                r = t.packed.shape[0]
                kw = {"layout": "b3"} if t.layout == "b3" else {}  # (a --baseline build may predate B3)
                mod.gemv(
                    self.isa, t.packed[r * i // nth : r * (i + 1) // nth], self.acts[t.layout, t.nb], 0, **kw
                )

        return self.tern_bytes / _on_threads(part, nth) / 1e9


def default_isa() -> str:
    return next(i for i in ("avx512", "avx2", "neon", "scalar") if i in K.available_isas())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--isa", default=None, help="scalar, avx2, avx512, neon (default: the best here)")
    ap.add_argument(
        "--baseline", default=None, help="another build's _kernels extension file to time alongside"
    )
    a = ap.parse_args(argv)
    a.isa = a.isa or default_isa()
    builds = [("", K)]
    if a.baseline:
        builds.insert(0, ("base ", _load_build(a.baseline)))
    loads = KernelLoads(a.isa)
    probe = BandwidthProbe(1024, 1)

    names = [f"{kind}{b}{nth}" for nth in (1, 2) for kind in ("head", "tern") for b, _ in builds]
    print(f"kernels: {K.table_name(a.isa)}; GB/s (and % of the probe of the same thread count, same round)")
    print(
        "  ".join(
            [f"{'probe1':>6}"]
            + [f"{n:>12}" for n in names[: len(names) // 2]]
            + [f"{'probe2':>6}"]
            + [f"{n:>12}" for n in names[len(names) // 2 :]]
        )
    )
    rows: list[dict[str, float]] = []
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        r: dict[str, float] = {}
        cells: list[str] = []
        for nth in (1, 2):
            r[f"probe{nth}"] = p = probe.probe([nth])[nth]
            cells.append(f"{p:6.1f}")
            for kind, fn in (("head", loads.head_gbps), ("tern", loads.tern_gbps)):
                for b, mod in builds:
                    v = r[f"{kind}{b}{nth}"] = max(fn(mod, nth) for _ in range(2))
                    cells.append(f"{v:5.1f} ({100 * v / p:3.0f}%)")
        rows.append(r)
        print("  ".join(cells), flush=True)
    probe.close()

    def pct(key: str, nth: int) -> float:
        return 100 * statistics.median(r[key] / r[f"probe{nth}"] for r in rows)

    for b, _ in builds:
        print(
            f"{'baseline' if b else 'median'}: head {pct(f'head{b}1', 1):.0f}% / {pct(f'head{b}2', 2):.0f}%, ternary "
            f"{pct(f'tern{b}1', 1):.0f}% / {pct(f'tern{b}2', 2):.0f}% of the probe at 1 / 2 threads (probe medians "
            f"{statistics.median(r['probe1'] for r in rows):.1f} / {statistics.median(r['probe2'] for r in rows):.1f} GB/s)"
        )
    return 0


def _load_build(path: str):
    """Another build of trit.engine._kernels, imported under a name of its own beside this one."""
    spec = importlib.util.spec_from_file_location("trit_kernel_bw_baseline._kernels", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python extension module")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":
    sys.exit(main())
