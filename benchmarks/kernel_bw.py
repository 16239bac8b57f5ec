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
"""

from __future__ import annotations

import argparse
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
    parts = [slice(rows * i // nth, rows * (i + 1) // nth) for i in range(nth)]
    th = [threading.Thread(target=fn, args=(p,)) for p in parts[1:]]
    t0 = time.perf_counter()
    for t in th:
        t.start()
    fn(parts[0])
    for t in th:
        t.join()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--isa", default=None, help="scalar, avx2, avx512, neon (default: the best here)")
    a = ap.parse_args(argv)
    a.isa = a.isa or next(i for i in ("avx512", "avx2", "neon", "scalar") if i in K.available_isas())
    rng = np.random.default_rng(0)
    head = rng.integers(0x3000, 0x3C00, (128256, 2560), dtype=np.uint16)  # f16 bits of 0.125 .. 1
    x = rng.standard_normal(2560).astype(np.float32)
    tern = rng.integers(0, 256, (120 * 6912, 2560 // 4), dtype=np.uint8)
    act = rng.integers(-127, 128, 2560, dtype=np.int8)
    probe = BandwidthProbe(1024, 1)

    def head_gb(nth: int) -> float:
        return head.nbytes / _split(lambda s: K.f16_gemv(a.isa, head[s], x), head.shape[0], nth) / 1e9

    def tern_gb(nth: int) -> float:
        return tern.nbytes / _split(lambda s: K.gemv(a.isa, tern[s], act, 0), tern.shape[0], nth) / 1e9

    rows: list[list[float]] = []
    print(f"kernels: {K.table_name(a.isa)}; GB/s (and % of the probe of the same thread count, same round)")
    print("probe1  head1        tern1        probe2  head2        tern2")
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        r: list[float] = []
        for nth in (1, 2):
            p = probe.probe([nth])[nth]
            h = max(head_gb(nth) for _ in range(2))
            t = max(tern_gb(nth) for _ in range(2))
            r += [p, h, t]
        rows.append(r)
        p1, h1, t1, p2, h2, t2 = r
        print(
            f"{p1:6.1f}  {h1:5.1f} ({100 * h1 / p1:3.0f}%)  {t1:5.1f} ({100 * t1 / p1:3.0f}%)  "
            f"{p2:6.1f}  {h2:5.1f} ({100 * h2 / p2:3.0f}%)  {t2:5.1f} ({100 * t2 / p2:3.0f}%)",
            flush=True,
        )
    probe.close()
    med = [statistics.median(c) for c in zip(*rows)]
    print(
        f"median: head {100 * statistics.median(r[1] / r[0] for r in rows):.0f}% / "
        f"{100 * statistics.median(r[4] / r[3] for r in rows):.0f}%, ternary "
        f"{100 * statistics.median(r[2] / r[0] for r in rows):.0f}% / {100 * statistics.median(r[5] / r[3] for r in rows):.0f}% "
        f"of the probe at 1 / 2 threads (probe medians {med[0]:.1f} / {med[3]:.1f} GB/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
