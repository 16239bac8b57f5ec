"""Decode benchmark: our engine (and, from benchmarks/bench_decode.py, llama.cpp) side by side.

Shared by `trit bench -m MODEL` and benchmarks/bench_decode.py; nothing here is imported by the
engine. What is measured, the way llama-bench does it:

- pp{P}: a P-token prompt evaluated from an empty KV cache in one call (our engine runs it in
  PROMPT_BATCH-token GEMM chunks; llama.cpp gets n_batch = n_ubatch >= P); the head runs for the
  last token only. tok/s = P / time.
- tg{N}: one token at position 0 (not timed), then N single-token decode steps (positions 1..N),
  tok/s = N / time. Ours is Model.generate(max_tokens=N+1, greedy, stop_ids=[]), so our time
  includes the Python loop and the argmax sampler; llama.cpp's is N llama_decode() calls through
  ctypes (llama-bench does not sample either).
- TTFT: a T-token prompt (default 100) from an empty cache until the first token id is known
  (ours: Stats.ttft_ms; llama.cpp: decode + logits + numpy argmax).
- load s: the worker's model load, from the call to the engine's loader until it returns (ours:
  load_model with the weights copied into huge pages, the files warm in the page cache).
- RSS: peak resident set (VmHWM) of the worker process that ran one engine at one
  thread count: the Python interpreter and numpy (about 30-40 MB) plus the engine, its mapped
  weights (file pages count once touched) and its KV cache.
- GB/s: tg tok/s x bytes the weights read per token (packed ternary matrices + the f16 head;
  Model.info.weight_bytes, or the same sum over the peer's GGUF). The ceiling is the measured
  read bandwidth at that thread count / bytes per token. "% of ceiling" pairs every tg sample with
  the bandwidth probed (same thread count, workers idle) right before and right after it, the
  higher of the two: a shared machine's bandwidth changes from one second to the next (this
  project's 2-core VM switches between ~35 and ~62 GB/s at 2 threads and stays in either for
  seconds), so a decode run is judged against what the machine could read while it ran; the
  column is the median of the per-sample ratios, over the samples whose two probes agree
  (STEADY_PROBES) when there are any: a sample whose probes disagree ran through a switch, at a
  bandwidth nobody measured. "% of best" holds the median tg against the best probe of the run.

Each (engine, threads) runs in its own worker process (`python -m trit.bench worker ...`) that
loads the model once and answers measurement requests over a pipe, so RSS is per engine and the
parent can alternate the engines rep by rep (warm-up first, then --reps rounds) on a noisy machine.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Self

TTFT_PROMPT = 100
# A tg sample whose probes right before and right after it differ by more than this share of the
# higher one ran through a change of the machine's bandwidth state (seconds-long switches between
# ~35 and ~60 GB/s at 2 threads here): which bandwidth it had is unknown, so "% of ceiling" leaves it
# out when steady samples exist (benchmarks/bw_states.py groups its samples by the same rule).
STEADY_PROBES = 0.15


# -- model shapes and random weights -----------------------------------------------------------------


@dataclass(frozen=True)
class BenchShape:
    name: str
    n_layers: int
    dim: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    context: int = 4096


SHAPE_2B4T = BenchShape(
    "2B4T", n_layers=30, dim=2560, hidden=6912, n_heads=20, n_kv_heads=5, head_dim=128, vocab=128256
)
# CI shape: every dimension a multiple of 256 (TQ1_0 / TQ2_0 blocks), GQA 4:1 like 2B4T.
SHAPE_QUICK = BenchShape(
    "quick", n_layers=4, dim=1024, hidden=2816, n_heads=8, n_kv_heads=2, head_dim=128, vocab=32000
)

# byte -> ternary value. 256 % 3 == 1, so -1 is 86/256 likely and 0, +1 85/256: close enough to
# uniform for a timing model, and an order of magnitude faster than rng.integers on int8.
_BYTE_TO_TRIT = (np.arange(256) % 3 - 1).astype(np.int8)
_LINEARS = ("q", "k", "v", "o", "gate", "up", "down")


class _RandomTernary:
    """A lazy int8 [rows, cols] matrix in {-1, 0, 1}: the bytes come from its own seeded generator
    each time it is converted with np.asarray, so every file gets the same weights and no more than
    one matrix is in memory while a file is written (write_bitnet_gguf encodes matrices lazily)."""

    def __init__(self, seed: Sequence[int], rows: int, cols: int) -> None:
        self.seed = list(seed)
        self.shape = (rows, cols)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        rows, cols = self.shape
        raw = np.random.default_rng(self.seed).bytes(rows * cols)
        w = _BYTE_TO_TRIT[np.frombuffer(raw, dtype=np.uint8)].reshape(rows, cols)
        return w if dtype is None else w.astype(dtype)


def random_bitnet_source(shape: BenchShape, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """(ModelConfig, plain-array source for engine.convert.write_bitnet_gguf) with random ternary
    matrices (lazy), one f16 scale per tensor (~1/sqrt(cols), exact in both f32 and f16 so I2_S and
    TQ files hold the same value), unit norms and an N(0, 0.05) f16 tied embedding."""
    from trit.engine.weights import ModelConfig

    cfg = ModelConfig(
        arch="bitnet-b1.58",
        dim=shape.dim,
        hidden=shape.hidden,
        n_layers=shape.n_layers,
        n_heads=shape.n_heads,
        n_kv_heads=shape.n_kv_heads,
        head_dim=shape.head_dim,
        vocab=shape.vocab,
        context=shape.context,
        rope_theta=500000.0,
        norm_eps=1e-5,
    )
    qdim, kvdim = shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    dims = {
        "q": (qdim, shape.dim),
        "k": (kvdim, shape.dim),
        "v": (kvdim, shape.dim),
        "o": (shape.dim, qdim),
        "gate": (shape.hidden, shape.dim),
        "up": (shape.hidden, shape.dim),
        "down": (shape.dim, shape.hidden),
    }
    layers = []
    for i in range(shape.n_layers):
        layer: dict[str, Any] = {}
        for j, f in enumerate(_LINEARS):
            rows, cols = dims[f]
            layer[f] = (_RandomTernary((seed, i, j), rows, cols), float(np.float16(cols**-0.5)))
        layer["attn_norm"] = np.ones(shape.dim, np.float32)
        layer["attn_sub_norm"] = np.ones(qdim, np.float32)
        layer["ffn_norm"] = np.ones(shape.dim, np.float32)
        layer["ffn_sub_norm"] = np.ones(shape.hidden, np.float32)
        layers.append(layer)
    embed = np.empty((shape.vocab, shape.dim), np.float16)
    rng = np.random.default_rng((seed, 1 << 20))
    step = max(1, (1 << 24) // shape.dim)  # ~64 MB of float32 temporaries per slice
    for r in range(0, shape.vocab, step):
        n = min(step, shape.vocab - r)
        embed[r : r + n] = rng.standard_normal((n, shape.dim), dtype=np.float32) * np.float32(0.05)
    return cfg, {"layers": layers, "embed": embed, "out_norm": np.ones(shape.dim, np.float32)}


# file format -> (GGUF architecture, extra metadata). I2_S is ours (bitnet.cpp's arch name); the TQ
# files are for upstream llama.cpp, whose `bitnet` architecture takes the same tensor names and
# arch-prefixed keys, treats the per-tensor `*.scale` tensors as optional (TQ blocks carry their
# scale), and needs a tokenizer model: "none" + `bitnet.vocab_size` gives it a vocabulary of
# placeholder tokens (llama-vocab.cpp). Its graph uses SiLU instead of ReLU^2: same shapes, same
# bytes per token, different text.
PEER_FORMATS = ("TQ2_0", "TQ1_0")
_FORMAT_ARCH = {
    "I2_S": ("bitnet-b1.58", {}),
    "TQ2_0": ("bitnet", {"tokenizer.ggml.model": "none"}),
    "TQ1_0": ("bitnet", {"tokenizer.ggml.model": "none"}),
}


def write_random_models(
    shape: BenchShape,
    out_dir: str | os.PathLike[str],
    formats: Iterable[str] = ("I2_S", *PEER_FORMATS),
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Write the same random weights as one GGUF per format into out_dir: {format: path}."""
    from trit.engine.convert import write_bitnet_gguf

    cfg, source = random_bitnet_source(shape, seed)
    out: dict[str, Path] = {}
    for fmt in formats:
        arch, extra = _FORMAT_ARCH[fmt]
        path = Path(out_dir) / f"random-{shape.name}-{fmt}.gguf"
        t0 = time.perf_counter()
        write_bitnet_gguf(source, path, config=cfg, ternary_type=fmt, arch=arch, extra_metadata=extra)
        if log:
            log(f"wrote {path.name}: {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s")
        out[fmt] = path
    return out


def i2s_model(
    path: str | None, quick: bool, seed: int = 0
) -> tuple[str, str, tempfile.TemporaryDirectory[str] | None]:
    """The I2_S file a benchmark script runs: path itself, or (path None) the random 2B4T-shaped one
    (quick: the small shape) written to a new temp dir. -> (path, its name for the table, the temp
    dir for the caller to clean up, or None)."""
    if path is not None:
        return path, path, None
    shape = SHAPE_QUICK if quick else SHAPE_2B4T
    tmp = tempfile.TemporaryDirectory(prefix="trit-bench-")
    print(f"writing the random {shape.name} I2_S model ...", file=sys.stderr, flush=True)
    out = write_random_models(shape, tmp.name, formats=("I2_S",), seed=seed)["I2_S"]
    return str(out), f"random {shape.name} I2_S", tmp


def gguf_bytes_per_token(path: str | os.PathLike[str]) -> int:
    """Bytes of weights one decoded token reads from a GGUF: every matrix of the blocks, plus the
    head (output.weight, or the tied token_embd); the embedding lookup itself reads one row."""
    from trit.engine.gguf import GGUFFile

    with GGUFFile(path) as f:
        infos = f.tensors
        total = sum(t.nbytes for n, t in infos.items() if n.startswith("blk.") and len(t.shape) >= 2)
        head = infos.get("output.weight") or infos.get("token_embd.weight")
        return total + (head.nbytes if head is not None else 0)


# -- memory bandwidth ----------------------------------------------------------------------------

_BW_SOURCE = r"""
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
/* 64 bytes in the widest registers -march=native has (one zmm, two ymm, four NEON q), four cache
 * lines a step into four sums: few instructions per line, so the core keeps many lines in flight.
 * A plain loop of uint64 words (one line a step, gcc's one-register sum) read 0.75-0.85x as fast
 * on the Intel VM at two threads (17 against 23 GB/s), below what the engine's kernels read. */
typedef uint64_t lane8 __attribute__((vector_size(64)));
/* s += the 64 bytes at p (a function returning the vector is an ABI warning without AVX-512) */
#define ADD64(s, p) do { lane8 v_; memcpy(&v_, (p), sizeof v_); (s) += v_; } while (0)
typedef struct { const uint64_t *p; size_t n; size_t lead; uint64_t sum; } job;
static void *sum_lines(void *a) {
    job *j = (job *)a;
    const uint64_t *p = j->p;
    lane8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    size_t i = 0;
    if (j->lead) {
        for (; i + 32 <= j->n; i += 32) {
            __builtin_prefetch((const char *)(p + i) + j->lead, 0, 2);
            ADD64(s0, p + i); ADD64(s1, p + i + 8); ADD64(s2, p + i + 16); ADD64(s3, p + i + 24);
        }
    } else {
        for (; i + 32 <= j->n; i += 32) {
            ADD64(s0, p + i); ADD64(s1, p + i + 8); ADD64(s2, p + i + 16); ADD64(s3, p + i + 24);
        }
    }
    lane8 s = s0 + s1 + s2 + s3;
    uint64_t t = 0;
    for (int k = 0; k < 8; k++) t += s[k];
    for (; i < j->n; i++) t += p[i];
    j->sum = t;
    return 0;
}
/* One pass over buf (n 64-bit words) split across nth threads, each prefetching lead bytes ahead
 * into L2 (0: none); returns seconds. */
double trit_bw_pass(const uint64_t *buf, size_t n, int nth, size_t lead, uint64_t *sum) {
    pthread_t t[64];
    job jobs[64];
    if (nth < 1) nth = 1;
    if (nth > 64) nth = 64;
    size_t per = n / nth / 8 * 8;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < nth; i++) {
        jobs[i].p = buf + per * i;
        jobs[i].n = i == nth - 1 ? n - per * i : per;
        jobs[i].lead = lead;
        if (i) pthread_create(&t[i], 0, sum_lines, &jobs[i]);
    }
    sum_lines(&jobs[0]);
    for (int i = 1; i < nth; i++) pthread_join(t[i], 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    uint64_t s = 0;
    for (int i = 0; i < nth; i++) s += jobs[i].sum;
    *sum = s; /* the sum is returned so the loads cannot be optimized away */
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
}
"""


# The probe's passes alternate these prefetch distances (bytes; 0: none) and keep the fastest: on
# the Intel VM a core streams a single linear read faster with a prefetch 4 KiB ahead into L2 (as
# the engine's head does there), on Zen 4 without one.
PROBE_LEADS = (0, 4096)


def _bw_helper(workdir: str) -> Any:
    """The read-bandwidth helper compiled for this CPU (gcc/cc -O3 -march=native), or None."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None or sys.platform == "win32":
        return None
    src, lib = os.path.join(workdir, "bw.c"), os.path.join(workdir, "bw.so")
    with open(src, "w") as f:
        f.write(_BW_SOURCE)
    r = subprocess.run(
        [cc, "-O3", "-march=native", "-shared", "-fPIC", "-pthread", src, "-o", lib],
        check=False,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        return None
    dll = ctypes.CDLL(lib)
    dll.trit_bw_pass.restype = ctypes.c_double
    dll.trit_bw_pass.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_uint64),
    ]
    return dll


@dataclass
class Bandwidth:
    gbps: dict[int, float]  # threads -> best read GB/s (1e9 bytes/s) over every probe of the run
    method: str
    buffer_mib: int
    samples: dict[int, list[float]] = field(default_factory=dict)  # threads -> GB/s of each probe


class BandwidthProbe:
    """Read bandwidth of a `mib` MiB buffer (far beyond any L3), per thread count.

    A C loop compiled at run time with -O3 -march=native sums the buffer in 64-byte vectors (the
    widest registers the CPU has, four cache lines a step into four sums), the buffer split evenly
    over pthreads; its passes alternate PROBE_LEADS (with and without a software prefetch). Each
    probe() keeps the best of `passes` passes and returns it; run_bench probes right before and
    after every decode measurement (see the module docstring), and result() also keeps the best
    probe of the run. Without a C compiler, numpy sums uint64 slices from Python threads (ufunc
    reductions release the GIL); the method is reported."""

    def __init__(self, mib: int = 1024, passes: int = 6) -> None:
        self.mib, self.passes = mib, passes
        self._dir = tempfile.TemporaryDirectory(prefix="trit-bw-")
        self._dll = _bw_helper(self._dir.name)
        self._buf = np.ones(mib << 17, dtype=np.uint64)  # touched: every page is resident
        self.samples: dict[int, list[float]] = {}

    def probe(self, threads: Iterable[int]) -> dict[int, float]:
        """GB/s per thread count, each the best of `passes` passes; also kept in samples."""
        buf = self._buf
        out: dict[int, float] = {}
        for t in sorted(set(threads)):
            best = float("inf")
            for i in range(self.passes):
                if self._dll is not None:
                    s = ctypes.c_uint64()
                    lead = PROBE_LEADS[i % len(PROBE_LEADS)]
                    dt = self._dll.trit_bw_pass(buf.ctypes.data, buf.size, t, lead, ctypes.byref(s))
                else:
                    dt = _numpy_pass(buf, t)
                best = min(best, dt)
            out[t] = buf.nbytes / best / 1e9
            self.samples.setdefault(t, []).append(out[t])
        return out

    def result(self) -> Bandwidth:
        method = (
            "C sum of 64-byte vectors, 4 lines a step, passes with and without a prefetch 4 KiB ahead, "
            "-O3 -march=native, pthreads"
            if self._dll is not None
            else "numpy uint64 sum, Python threads"
        )
        return Bandwidth({t: max(v) for t, v in self.samples.items()}, method, self.mib, dict(self.samples))

    def close(self) -> None:
        self._buf = np.empty(0, dtype=np.uint64)
        self._dll = None
        self._dir.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def measure_bandwidth(threads: Iterable[int], mib: int = 1024, passes: int = 8) -> Bandwidth:
    """One BandwidthProbe.probe() per thread count."""
    with BandwidthProbe(mib, passes) as bp:
        bp.probe(threads)
        return bp.result()


def _numpy_pass(buf: np.ndarray, nth: int) -> float:
    parts = np.array_split(buf, nth)
    t0 = time.perf_counter()
    th = [threading.Thread(target=np.add.reduce, args=(p,)) for p in parts[1:]]
    for x in th:
        x.start()
    np.add.reduce(parts[0])
    for x in th:
        x.join()
    return time.perf_counter() - t0


# -- workers: one engine, one thread count, one process --------------------------------------------


def _rss_peak_mb() -> float:
    """Peak resident set of this process in MiB.

    Linux: VmHWM, the high-water mark of this process's own address space. Not ru_maxrss, which
    survives fork + exec and so starts at the parent's RSS (the benchmark parent holds the
    embedding and the bandwidth buffer)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows: psutil's peak working set
        import psutil

        mi = psutil.Process().memory_info()
        return float(getattr(mi, "peak_wset", mi.rss)) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class _Ours:
    engine = "trit"

    def __init__(
        self,
        path: str,
        threads: int,
        context: int,
        head: str = "f16",
        activations: str = "f32",
        ternary: str = "auto",
    ) -> None:
        from trit.engine import load_model

        self.model = load_model(
            path, threads=threads, context=context, head=head, activations=activations, ternary=ternary
        )
        self.vocab = self.model.config.vocab
        info = self.model.info
        self.meta = {
            # the ternary matrices' layout in memory when not the file's own 2-bit one (I2_S as B3)
            "format": "/".join(info.quant_types)
            + (f" as {info.ternary.upper()}" if info.ternary not in ("", "tq") else ""),
            "isa": info.isa,
            "threads": self.model.threads,
            "context": self.model.context,  # capped at the model's own: run_bench checks it is enough
            "weight_bytes": info.weight_bytes,
            "head": info.head_type,
        }

    def _gen(self, ids: Sequence[int], max_tokens: int) -> Any:
        g = self.model.generate(ids, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0, stop_ids=[])
        assert g.stats is not None and g.stats.tokens_generated == max_tokens, g.stats
        return g.stats

    def pp(self, ids: Sequence[int]) -> float:
        return self._gen(ids, 1).prompt_ms / 1e3

    def tg(self, first: int, n: int) -> float:
        st = self._gen([first], n + 1)  # decode_ms covers the n forward passes after the first token
        return st.decode_ms / 1e3

    def pool_stats(self) -> dict[str, int]:
        return self.model._default_session().pool_stats

    def ttft(self, ids: Sequence[int]) -> float:
        return self._gen(ids, 1).ttft_ms / 1e3


class _LlamaCpp:
    engine = "llama.cpp"

    def __init__(self, path: str, threads: int, context: int, batch: int) -> None:
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        self._log = L.llama_log_callback(lambda level, text, data: None)  # keep a reference
        L.llama_log_set(self._log, ctypes.c_void_p(0))
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = context
        cp.n_batch = cp.n_ubatch = batch  # the whole prompt in one ubatch, as llama-bench's pp
        cp.n_threads = cp.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.meta = {
            "format": _file_type_name(path),
            "isa": "ggml-cpu",
            "threads": threads,
            "weight_bytes": gguf_bytes_per_token(path),
            "flash_attn_type": int(cp.flash_attn_type),
            "n_ubatch": batch,
        }

    def _clear(self) -> None:
        L = self.L
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)

    def _decode(self, ids: Sequence[int]) -> None:
        L = self.L
        arr = (L.llama_token * len(ids))(*ids)
        rc = L.llama_decode(self.ctx, L.llama_batch_get_one(arr, len(ids)))
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        L.llama_synchronize(self.ctx)

    def pp(self, ids: Sequence[int]) -> float:
        self._clear()
        t0 = time.perf_counter()
        self._decode(ids)
        return time.perf_counter() - t0

    def tg(self, first: int, n: int) -> float:
        self._clear()
        self._decode([first])
        one = [first]
        t0 = time.perf_counter()
        for _ in range(n):
            self._decode(one)
        return time.perf_counter() - t0

    def ttft(self, ids: Sequence[int]) -> float:
        L = self.L
        self._clear()
        t0 = time.perf_counter()
        self._decode(ids)
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, -1), shape=(self.vocab,))
        int(np.argmax(logits))
        return time.perf_counter() - t0


def _file_type_name(path: str) -> str:
    from trit.engine.gguf import GGUFFile

    with GGUFFile(path) as f:
        names = {t.type_name for n, t in f.tensors.items() if n.startswith("blk.") and len(t.shape) >= 2}
    return "/".join(sorted(names))


def _worker_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m trit.bench worker")
    ap.add_argument("--engine", choices=("trit", "llama.cpp"), required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--context", type=int, required=True)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--head", default="f16", help="our engine's LM head (load_model(head=...) checks it)")
    ap.add_argument("--activations", default="f32", help="our engine's activations for llama.cpp types")
    ap.add_argument("--ternary", default="auto", help="our engine's layout of ternary matrices")
    args = ap.parse_args(argv)
    # replies go to a private copy of stdout; anything the engines print lands on stderr
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    # a file or an option the engine refuses: its message goes to the parent, which shows it as is
    refused: tuple[type[Exception], ...] = (RuntimeError, ValueError)  # _LlamaCpp's and option checks
    if args.engine == "trit":
        import trit.engine  # imported before the clock starts: load_s is the load alone

        refused += (trit.engine.EngineError,)
    t0 = time.perf_counter()
    eng: _Ours | _LlamaCpp
    try:
        if args.engine == "trit":
            eng = _Ours(args.model, args.threads, args.context, args.head, args.activations, args.ternary)
        else:
            eng = _LlamaCpp(args.model, args.threads, args.context, args.batch)
    except refused as e:
        reply.write(json.dumps({"error": str(e)}) + "\n")
        return 1
    reply.write(json.dumps({"ready": True, "load_s": time.perf_counter() - t0, **eng.meta}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "quit":
            break
        rng = np.random.default_rng(req.get("seed", 0))
        p, n, tt = req["p"], req["n"], req["ttft"]
        res: dict[str, float] = {}
        if p:
            res["pp_tps"] = p / eng.pp(rng.integers(0, eng.vocab, p).tolist())
        if n:
            pool0 = eng.pool_stats() if isinstance(eng, _Ours) else None
            res["tg_tps"] = n / eng.tg(int(rng.integers(0, eng.vocab)), n)
            if pool0 is not None:  # how often decode ran on the calling thread alone (threadpool.h)
                pool1 = eng.pool_stats()
                res.update({f"pool_{k}": float(pool1[k] - pool0[k]) for k in ("jobs", "late", "solo")})
        if tt:
            res["ttft_ms"] = eng.ttft(rng.integers(0, eng.vocab, tt).tolist()) * 1e3
        res["rss_mb"] = _rss_peak_mb()
        reply.write(json.dumps(res) + "\n")
    reply.write(json.dumps({"rss_mb": _rss_peak_mb()}) + "\n")
    return 0


class BenchError(Exception):
    """The benchmark cannot run: e.g. a worker's engine refused the model file (the message is the
    engine's, which names the file)."""


def _exit_words(rc: int) -> str:
    """How a worker process ended, for the error that says it died: a signal by name, with what
    the usual ones mean here. (The traceback of a RuntimeError whose text ended in "failed:" was
    all `trit bench --peer` said when llama.cpp's AMX code died of SIGILL on an Intel Xeon VM.)"""
    if rc >= 0:
        return f"ended with exit status {rc}"
    try:
        name = signal.Signals(-rc).name
    except ValueError:
        name = f"signal {-rc}"
    why = {
        "SIGILL": ": it ran an instruction this CPU (or VM) refuses; llama.cpp built with -march=native "
        "did this on an Intel Xeon VM with AMX, in its AMX code (build llama-cpp-python with "
        "CMAKE_ARGS='-DGGML_NATIVE=OFF' and the AVX options this CPU has)",
        "SIGKILL": ": killed from outside, often by the kernel when memory ran out",
        "SIGSEGV": ": it crashed (a memory fault)",
    }.get(name, "")
    return f"was killed by {name}{why}"


class ContextTooSmallError(BenchError):
    """The model's context holds fewer positions than the lengths asked for need (`needed`)."""

    def __init__(self, model: str, context: int, needed: int) -> None:
        self.model, self.context, self.needed = model, context, needed
        super().__init__(
            f"{model}: the benchmark needs a context of {needed} positions; this model holds {context}"
        )


class Terminated(BaseException):
    """SIGTERM or SIGHUP came while the benchmark ran (ending_on_signals). A BaseException, as
    KeyboardInterrupt is, so that only the finally blocks on its way out see it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextmanager
def ending_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Terminated, so the benchmark ends as a Ctrl-C
    ends it: the finally blocks kill the workers and the busy loop. Their default action ended the
    parent alone, and a worker went on decoding at full CPU for tens of seconds (`timeout`, a
    supervisor, a closed terminal). Handlers can only be set from the main thread."""
    own = [
        sig
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None))
        if sig is not None
        and threading.current_thread() is threading.main_thread()
        # a signal the process was started with ignored (nohup) stays ignored
        and signal.getsignal(sig) not in (signal.SIG_IGN, None)
    ]

    def on_signal(signum: int, frame: object) -> None:
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in own}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Worker:
    """The parent's handle on a worker process."""

    def __init__(
        self,
        engine: str,
        model: str | os.PathLike[str],
        threads: int,
        context: int,
        batch: int = 512,
        head: str = "f16",
        activations: str = "f32",
        ternary: str = "auto",
    ) -> None:
        self.engine, self.threads = engine, threads
        self._err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  # closed in close()
        cmd = [
            *child_command(),
            "worker",
            "--engine",
            engine,
            "--model",
            str(model),
            "--threads",
            str(threads),
            "--context",
            str(context),
            "--batch",
            str(batch),
        ]
        if head != "f16":
            cmd += ["--head", head]
        if activations != "f32":
            cmd += ["--activations", activations]
        if ternary != "auto":
            cmd += ["--ternary", ternary]
        # every engine runs with its defaults (llama.cpp's OpenMP threads spin briefly, then sleep)
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            bufsize=1,
        )
        try:
            self.meta = self._read()
        except BaseException:  # Ctrl-C or Terminated during the load: no caller holds it to kill it
            self.kill()
            raise

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise self._died()
        msg = json.loads(line)
        if "error" in msg:
            self.proc.wait()
            self._close_files()
            raise BenchError(msg["error"])
        return msg

    def _died(self) -> BenchError:
        """The error for a worker that is gone: how it ended and the end of what it wrote."""
        rc = self.proc.wait()
        self._err.seek(0)
        tail = self._err.read()[-2000:].strip()
        return BenchError(
            f"the {self.engine} worker (threads={self.threads}) {_exit_words(rc)}"
            + (f":\n{tail}" if tail else "")
        )

    def request(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # it died between two requests
            raise self._died() from None
        return self._read()

    def close(self) -> float:
        """Ends the worker; returns its peak RSS in MB."""
        try:
            rss = self.request(op="quit").get("rss_mb", float("nan"))
        except (BenchError, OSError):
            rss = float("nan")
        self.proc.wait(timeout=60)
        self._close_files()
        return rss

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_files()

    def _close_files(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout, self._err):
            if f is not None and not f.closed:
                try:
                    f.close()
                except BrokenPipeError:  # a request left unsent to a worker that died
                    pass


# -- the benchmark ---------------------------------------------------------------------------------

BUSY_LIMIT_S = 600.0  # a busy loop never outlives this, even if the benchmark dies


class BusyLoop:
    """Another program taking one core: a process spinning in a loop that ends by itself after
    `limit_s` seconds (and is killed as soon as the `with` block ends). The contention rounds of
    run_bench measure decode while it runs."""

    def __init__(self, limit_s: float = BUSY_LIMIT_S) -> None:
        self.limit_s = limit_s
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen([*child_command(), "busy", str(self.limit_s)])
        time.sleep(0.2)  # let it reach the loop (interpreter start-up is not a busy core)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class RowSpec:
    engine: str  # "trit" or "llama.cpp"
    model: str
    label: str = ""  # format shown in the table; the worker's own name (+ the head when not f16) when empty
    head: str = "f16"  # our engine only: "q8_0" builds a Q8_0 copy of the f16 LM head at load
    activations: str = "f32"  # our engine only: "q8" rounds them to 8 bits for llama.cpp weight types
    ternary: str = "auto"  # our engine only: the ternary matrices' layout (load_model(ternary=...))


@dataclass
class Row:
    engine: str
    format: str
    threads: int
    weight_bytes: int
    samples: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: float = float("nan")
    ceiling_tps: float = float("nan")
    meta: dict[str, Any] = field(default_factory=dict)

    def median(self, key: str) -> float:
        v = self.samples.get(key) or []
        return statistics.median(v) if v else float("nan")

    def min(self, key: str) -> float:
        v = self.samples.get(key) or []
        return min(v) if v else float("nan")

    @property
    def gbps(self) -> float:
        return self.median("tg_tps") * self.weight_bytes / 1e9

    def _steady(self) -> list[bool]:
        """Per tg sample: its two probes agree (STEADY_PROBES), or they were not both recorded."""
        a, b = self.samples.get("tg_bw_before") or [], self.samples.get("tg_bw_after") or []
        n = len(self.samples.get("tg_tps") or [])
        if len(a) != n or len(b) != n:
            return [True] * n
        return [abs(x - y) <= STEADY_PROBES * max(x, y) for x, y in zip(a, b)]

    @property
    def steady_samples(self) -> int:
        return sum(self._steady())

    @property
    def pct_ceiling(self) -> float:
        """Median over the tg samples of tg / (bandwidth probed around that sample / bytes), over the
        samples whose two probes agree when there are any (see STEADY_PROBES), else over all."""
        tg, bw = self.samples.get("tg_tps") or [], self.samples.get("tg_bw_gbps") or []
        if not bw or len(bw) != len(tg):
            return float("nan")
        pct = [100.0 * x * self.weight_bytes / (g * 1e9) for x, g in zip(tg, bw)]
        steady = [v for v, ok in zip(pct, self._steady()) if ok]
        return statistics.median(steady or pct)

    @property
    def pct_best(self) -> float:
        """Median tg against the best bandwidth probe of the whole run."""
        return 100.0 * self.median("tg_tps") / self.ceiling_tps


@dataclass
class BenchResult:
    p: int
    n: int
    ttft_prompt: int
    reps: int
    rows: list[Row]
    bandwidth: Bandwidth | None
    machine: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The results as JSON data: every row has the same keys (SAMPLE_KEYS and META_KEYS: a
        measurement a run did not make is an empty list, a value it lacks None), and a number that
        is not one (a median of no samples) is None, not NaN, which JSON has no word for."""
        rows = []
        for r in self.rows:
            d = asdict(r)
            d["samples"] = {k: list(r.samples.get(k, [])) for k in SAMPLE_KEYS}
            d["meta"] = {k: r.meta.get(k) for k in META_KEYS}
            d.update(
                {
                    "pp_tps_median": r.median("pp_tps"),
                    "pp_tps_min": r.min("pp_tps"),
                    "tg_tps_median": r.median("tg_tps"),
                    "tg_tps_min": r.min("tg_tps"),
                    "tg_busy_tps_median": r.median("tg_busy_tps"),
                    "ttft_ms_median": r.median("ttft_ms"),
                    "ttft_ms_min": r.min("ttft_ms"),
                    "gbps": r.gbps,
                    "pct_ceiling": r.pct_ceiling,
                    "pct_best_ceiling": r.pct_best,
                }
            )
            rows.append(d)
        return _finite(
            {
                "p": self.p,
                "n": self.n,
                "ttft_prompt": self.ttft_prompt,
                "reps": self.reps,
                "bandwidth": asdict(self.bandwidth) if self.bandwidth else None,
                "machine": self.machine,
                "rows": rows,
            }
        )


# The keys of a row's samples and meta in the JSON, whichever were measured or reported: a run
# without the bandwidth probe, --contention or llama.cpp had fewer, so files differed in shape.
QUIET_SAMPLE_KEYS = ("pp_tps", "tg_tps", "ttft_ms", "tg_bw_gbps", "tg_bw_before", "tg_bw_after")
SAMPLE_KEYS = (*QUIET_SAMPLE_KEYS, "tg_busy_tps", "tg_busy_alone")  # the last two: --contention
META_KEYS = (
    "load_s",
    "format",
    "isa",
    "threads",
    "context",  # ours
    "weight_bytes",
    "head",  # ours
    "flash_attn_type",  # llama.cpp's
    "n_ubatch",  # llama.cpp's
)


def _finite(x: Any) -> Any:
    """x with NaN and infinities as None, numpy scalars as Python numbers, tuples as lists."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def machine_info() -> dict[str, Any]:
    import platform

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_bench(
    specs: Sequence[RowSpec],
    threads: Sequence[int],
    *,
    p: int = 128,
    n: int = 64,
    ttft_prompt: int = TTFT_PROMPT,
    reps: int = 3,
    probe: BandwidthProbe | None = None,
    seed: int = 0,
    contention: bool = False,
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """For each thread count: start one worker per spec, warm each up with a full measurement, then
    `reps` rounds in which every worker measures once (the order rotates from round to round). The
    bandwidth probe, if any, runs right before and right after every decode measurement (workers
    idle); each tg sample keeps the higher of its two readings (tg_bw_gbps), and the run keeps the
    best reading of all.
    contention: afterwards `reps` more rounds of decode only (tg_busy_tps) while a BusyLoop takes
    one core, to see whether a thread pool collapses when a core is taken."""
    context = max(p, n + 1, ttft_prompt) + 16
    batch = max(512, p, ttft_prompt)
    rows: list[Row] = []
    for t in threads:
        workers: list[Worker] = []
        try:
            trows: list[Row] = []
            for spec in specs:
                w = Worker(
                    spec.engine, spec.model, t, context, batch, spec.head, spec.activations, spec.ternary
                )
                workers.append(w)
                m = w.meta
                # our engine caps the context at the model's own; a prompt of p tokens needs p + 1
                # positions (the token after it), decode n + 1 (one token, then n steps)
                needed = max(p, n, ttft_prompt) + 1
                if int(m.get("context", needed)) < needed:
                    raise ContextTooSmallError(str(spec.model), int(m["context"]), needed)
                trows.append(
                    Row(
                        spec.engine,
                        spec.label
                        or m["format"]
                        + ("" if spec.head == "f16" else f"+{spec.head.upper()} head")
                        + ("" if spec.activations == "f32" else f" {spec.activations} act"),
                        int(m["threads"]),
                        int(m["weight_bytes"]),
                        meta=m,
                    )
                )
                if log:
                    log(f"loaded {spec.engine} {trows[-1].format} t={t} in {m['load_s']:.1f} s")
            for rep in range(-1, reps):  # -1: warm-up, discarded
                order = list(range(len(workers)))
                k = rep % len(order) if rep >= 0 else 0
                order = order[k:] + order[:k]
                for i in order:
                    sd = [seed, rep + 1]
                    res = workers[i].request(op="measure", p=p, n=0, ttft=ttft_prompt, seed=sd)
                    before = probe.probe([t])[t] if probe is not None else float("nan")
                    res.update(workers[i].request(op="measure", p=0, n=n, ttft=0, seed=sd))
                    if probe is not None:
                        res["tg_bw_before"], res["tg_bw_after"] = before, probe.probe([t])[t]
                        res["tg_bw_gbps"] = max(res["tg_bw_before"], res["tg_bw_after"])
                    if rep >= 0:
                        for key in QUIET_SAMPLE_KEYS:
                            if key in res:
                                trows[i].samples.setdefault(key, []).append(res[key])
                    if log:
                        log(
                            f"  {'warm-up' if rep < 0 else f'rep {rep + 1}'} {trows[i].engine} "
                            f"{trows[i].format} t={t}: " + ", ".join(f"{k} {v:.1f}" for k, v in res.items())
                        )
            for rep in range(reps if contention else 0):
                with BusyLoop():
                    for i in range(len(workers)):
                        res = workers[i].request(op="measure", p=0, n=n, ttft=0, seed=[seed, 100 + rep])
                        trows[i].samples.setdefault("tg_busy_tps", []).append(res["tg_tps"])
                        if res.get("pool_jobs"):  # share of the decode's pool jobs run by one thread
                            trows[i].samples.setdefault("tg_busy_alone", []).append(
                                res["pool_solo"] / res["pool_jobs"]
                            )
                        if log:
                            pool = (
                                f" (decode jobs run alone: {res['pool_solo']:.0f} of {res['pool_jobs']:.0f}, "
                                f"after {res['pool_late']:.0f} late workers)"
                                if res.get("pool_jobs")
                                else ""
                            )
                            log(
                                f"  busy core, rep {rep + 1} {trows[i].engine} {trows[i].format} t={t}: "
                                f"tg_tps {res['tg_tps']:.1f}{pool}"
                            )
            for w, r in zip(workers, trows):
                r.rss_mb = w.close()
            rows += trows
        finally:
            for w in workers:
                w.kill()
    bandwidth = probe.result() if probe is not None else None
    if bandwidth is not None:
        for r in rows:
            if r.threads in bandwidth.gbps:
                r.ceiling_tps = bandwidth.gbps[r.threads] * 1e9 / r.weight_bytes
    return BenchResult(p, n, ttft_prompt, reps, rows, bandwidth, machine_info())


def _fmt(med: float, lo: float, digits: int = 1) -> str:
    if math.isnan(med):
        return "-"
    return f"{med:.{digits}f} ({lo:.{digits}f})"


def format_table(res: BenchResult) -> str:
    head = [
        "engine",
        "format",
        "threads",
        f"pp{res.p} tok/s",
        f"tg{res.n} tok/s",
        f"TTFT{res.ttft_prompt} ms",
        "load s",
        "RSS MB",
        "GB/s",
        "% of ceiling",
        "% of best",
    ]
    busy = any("tg_busy_tps" in r.samples for r in res.rows)
    if busy:
        head += [f"tg{res.n} busy core", "% of quiet"]
    lines = [head]
    for r in res.rows:
        lines.append(
            [
                r.engine,
                r.format,
                str(r.threads),
                _fmt(r.median("pp_tps"), r.min("pp_tps")),
                _fmt(r.median("tg_tps"), r.min("tg_tps"), 2),
                _fmt(r.median("ttft_ms"), r.min("ttft_ms")),
                f"{r.meta['load_s']:.1f}" if "load_s" in r.meta else "-",
                f"{r.rss_mb:.0f}",
                "-" if math.isnan(r.gbps) else f"{r.gbps:.1f}",
                "-" if math.isnan(r.pct_ceiling) else f"{r.pct_ceiling:.0f}%",
                "-" if math.isnan(r.pct_best) else f"{r.pct_best:.0f}%",
            ]
        )
        if busy:
            q, b = r.median("tg_tps"), r.median("tg_busy_tps")
            lines[-1] += [
                _fmt(b, r.min("tg_busy_tps"), 2),
                "-" if math.isnan(b) or not q else f"{100 * b / q:.0f}%",
            ]
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    notes = [
        f"median (min) of {res.reps} rep(s) after a warm-up; tg = decode tok/s, GB/s = tg x weight bytes/token"
    ]
    if busy:
        notes.append("busy core: decode while another process spins on one core (BusyLoop)")
    isas = sorted({str(r.meta["isa"]) for r in res.rows if r.engine == "trit" and r.meta.get("isa")})
    if isas:
        notes.append(f"kernel table of trit: {', '.join(isas)}")
    if res.bandwidth:
        bw = ", ".join(
            f"{t} thread{'s' if t > 1 else ''} {g:.1f} GB/s (median {statistics.median(res.bandwidth.samples[t]):.1f})"
            for t, g in sorted(res.bandwidth.gbps.items())
        )
        notes.append(f"read bandwidth ({res.bandwidth.method}, {res.bandwidth.buffer_mib} MiB): best {bw}")
        notes.append(
            "% of ceiling: each tg sample against the bandwidth probed right before and after it (the"
            " higher), median over the samples whose two probes agree within"
            f" {100 * STEADY_PROBES:.0f}% (all samples when none do); % of best: median tg against the"
            " best probe of the run"
        )
        unsteady = [
            f"{r.engine} {r.format} t={r.threads} {r.steady_samples}/{len(r.samples.get('tg_tps') or [])}"
            for r in res.rows
            if r.steady_samples < len(r.samples.get("tg_tps") or [])
        ]
        if unsteady:
            notes.append("samples with agreeing probes, where not all: " + ", ".join(unsteady))
    seen = set()
    for r in res.rows:
        key = (r.format, r.weight_bytes)
        if key in seen:
            continue
        seen.add(key)
        # one ceiling per thread count: both engines' rows of a shared format (e.g. Q4_1) share it
        by_threads = {
            x.threads: x.ceiling_tps
            for x in res.rows
            if (x.format, x.weight_bytes) == key and not math.isnan(x.ceiling_tps)
        }
        ceil = ", ".join(f"t={t}: {c:.1f} tok/s" for t, c in sorted(by_threads.items()))
        notes.append(
            f"{r.format}: {r.weight_bytes / 1e6:.1f} MB read per token"
            + (f"; ceiling at the best bandwidth {ceil}" if ceil else "")
        )
    return "\n".join(out + [""] + notes)


def parse_threads(text: str) -> list[int]:
    from trit.options import MAX_THREADS

    try:
        t = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"threads must be comma-separated integers, got {text!r}") from None
    if not t or min(t) < 1 or max(t) > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"threads must be from 1 to {MAX_THREADS}, got {text!r}")
    return t


def write_json(res: BenchResult, path: str | os.PathLike[str]) -> None:
    with open(path, "w") as f:
        json.dump(res.to_json(), f, indent=2, allow_nan=False)


# -- `trit bench` ------------------------------------------------------------------------------------


def add_cli_args(ap: argparse.ArgumentParser) -> None:
    from trit.engine.model import (
        LM_HEADS,
        TERNARY_LAYOUTS,
    )  # `trit bench` runs in a process that has the engine anyway
    from trit.options import int_range

    ap.add_argument("-m", "--model", required=True, help="GGUF file or Hugging Face model directory")
    ap.add_argument(
        "-p", "--prompt-tokens", type=int_range(1), default=128, help="prompt length for pp (tokens)"
    )
    ap.add_argument("-n", "--gen-tokens", type=int_range(1), default=64, help="decode steps for tg")
    ap.add_argument(
        "-t", "--threads", type=parse_threads, default=[1, 2], help="thread counts, e.g. 1,2 (default: 1,2)"
    )
    ap.add_argument("--ttft-prompt", type=int_range(1), default=TTFT_PROMPT, help="prompt length for TTFT")
    ap.add_argument("--reps", type=int_range(1), default=3, help="measured repetitions after one warm-up")
    ap.add_argument(
        "--bw-mib", type=int_range(0), default=1024, help="bandwidth test buffer (MiB); 0 skips it"
    )
    ap.add_argument(
        "--head",
        choices=LM_HEADS,
        default="f16",
        help="our engine's LM head: q8_0 builds a Q8_0 copy of a float (F16, BF16, F32) head at load (fewer bytes per token)",
    )
    ap.add_argument(
        "--activations",
        choices=("f32", "q8"),
        default="f32",
        help="our engine's activations for llama.cpp weight types: q8 rounds them to 8 bits, as llama.cpp does",
    )
    ap.add_argument(
        "--ternary",
        choices=TERNARY_LAYOUTS,
        default="auto",
        help="our engine's ternary matrices: tq (2 bits a weight), b3 (1.6 bits, repacked at load) or "
        "auto (b3 where this CPU reads it faster)",
    )
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument(
        "--peer",
        action="store_true",
        help="also run llama.cpp (llama-cpp-python: pip install 'trit[bench]') on the same file, alternating with ours",
    )
    ap.add_argument(
        "--contention",
        action="store_true",
        help="also measure decode while another process spins on one core (a bounded busy loop)",
    )


def run_cli(args: argparse.Namespace, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """`trit bench`: our engine on a given model file (with --peer, llama.cpp on the same file)."""
    if not os.path.exists(args.model):
        print(f"trit: {args.model}: no such file or directory", file=err)
        return 2
    if args.reps < 1:
        print("trit: --reps must be >= 1", file=err)
        return 2
    if args.json:
        from trit.options import writable_file

        try:  # now, not after the whole run
            writable_file(args.json, "--json")
        except ValueError as e:
            print(f"trit: {e}", file=err)
            return 2

    def log(msg: str) -> None:
        print(msg, file=err, flush=True)

    head = getattr(args, "head", "f16")
    specs = [
        RowSpec(
            "trit",
            args.model,
            head=head,
            activations=getattr(args, "activations", "f32"),
            ternary=getattr(args, "ternary", "auto"),
        )
    ]
    if getattr(args, "peer", False):
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            how = (  # a bundle cannot take a pip install
                ", which the packaged app does not include: run it from a pip install of Trit "
                "(pip install 'trit[bench]')"
                if getattr(sys, "frozen", False)
                else " (pip install llama-cpp-python, or the trit[bench] extra)"
            )
            print(f"trit: --peer needs llama-cpp-python{how}", file=err)
            return 2
        specs.append(RowSpec("llama.cpp", args.model))
    try:
        with ending_on_signals():
            res = _run_cli_bench(args, specs, log)
    except Terminated as e:
        print(f"trit: stopped by {e}", file=err)
        return 128 + e.signum
    except ContextTooSmallError as e:
        asked = {"-p": args.prompt_tokens, "-n": args.gen_tokens, "--ttft-prompt": args.ttft_prompt}
        over = ", ".join(f"{k} {v}" for k, v in asked.items() if v + 1 > e.context)
        print(
            f"trit: {over}: {e.model} holds {e.context} tokens of context; use at most {e.context - 1}",
            file=err,
        )
        return 2
    except BenchError as e:
        print(f"trit: {e}", file=err)
        return 1
    print(format_table(res), file=out)
    if args.json:
        write_json(res, args.json)
    return 0


def _run_cli_bench(args: argparse.Namespace, specs: list[RowSpec], log: Callable[[str], None]) -> BenchResult:
    probe = BandwidthProbe(args.bw_mib) if args.bw_mib > 0 else None
    try:
        return run_bench(
            specs,
            args.threads,
            p=args.prompt_tokens,
            n=args.gen_tokens,
            ttft_prompt=args.ttft_prompt,
            reps=args.reps,
            probe=probe,
            contention=getattr(args, "contention", False),
            log=log,
        )
    finally:
        if probe is not None:
            probe.close()


def child_command() -> list[str]:
    """The start of a command line that runs child_main in a new process."""
    if getattr(sys, "frozen", False):
        from trit.launch import BENCH_CHILD_FLAG

        return [sys.executable, BENCH_CHILD_FLAG]
    # not `-m trit.bench`: that puts the current folder first on the path, and from a checkout's
    # root its source folder trit/ (no compiled engine) shadowed the installed package
    code = (
        "import os, sys; cwd = os.getcwd(); "
        "sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != cwd]; "
        "from trit.bench import child_main; sys.exit(child_main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", code]


def child_main(argv: Sequence[str]) -> int:
    """The benchmark's child processes: `worker ...` (one engine, driven over pipes) or `busy
    SECONDS` (a busy core for the contention rounds)."""
    if argv[:1] == ["worker"]:
        return _worker_main(list(argv[1:]))
    if argv[:1] == ["busy"] and len(argv) == 2:
        end = time.monotonic() + float(argv[1])
        while time.monotonic() < end:
            pass
        return 0
    print(
        "usage: python -m trit.bench worker ... | busy SECONDS (started by trit bench / benchmarks/bench_decode.py)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
