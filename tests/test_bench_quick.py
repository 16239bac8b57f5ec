"""benchmarks/bench_decode.py --quick and `trit bench`: the pipeline runs end to end and every number
in the table is a sane positive value. No speed thresholds: CI machines are noisy."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from trit.engine._core import kernel_b3_fast

from trit.bench import Bandwidth, BenchResult, BusyLoop, Row, format_table, write_json

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_decode.py"
TINY = ["-p", "8", "-n", "4", "--ttft-prompt", "8", "--reps", "1", "-t", "1", "--bw-mib", "64"]
# the quick shape's rows: where the CPU reads B3 faster, the default holds its 2816-column matrices
# in B3 (load_model(ternary="auto")) and a row with the file's own layout runs beside it
QUICK_FORMATS = ("I2_S", "I2_S+Q8_0 head", "I2_S as TQ+B3", "I2_S as TQ+B3+Q8_0 head")


def _run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """benchmarks/<name> with args, from cwd (not the checkout: its trit/ folder would shadow the
    installed package)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / name), *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, cwd=cwd)


def _check_rows(data: dict, engines: set[str]) -> None:
    assert {r["engine"] for r in data["rows"]} == engines
    bw = data["bandwidth"]
    assert bw and all(g > 0 for g in bw["gbps"].values()), bw
    for r in data["rows"]:
        assert r["threads"] == 1 and r["format"] in QUICK_FORMATS and r["weight_bytes"] > 0
        for key in ("pp_tps_median", "tg_tps_median", "ttft_ms_median", "gbps", "pct_ceiling", "rss_mb"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert len(r["samples"]["tg_tps"]) == 1
        # the decode sample is judged against the bandwidth probed around it, not the run's best
        (tg,), (bw_around,) = r["samples"]["tg_tps"], r["samples"]["tg_bw_gbps"]
        assert 0 < bw_around <= max(bw["gbps"].values())
        assert math.isclose(r["pct_ceiling"], 100 * tg * r["weight_bytes"] / (bw_around * 1e9))
        assert math.isfinite(r["pct_best_ceiling"]) and r["pct_best_ceiling"] <= r["pct_ceiling"] * (1 + 1e-9)
        assert r["rss_mb"] * 2**20 > r["weight_bytes"] / 2  # the mapped weights were touched
        assert 0 < r["meta"]["load_s"] < 60


def test_bench_decode_quick_and_trit_bench(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    keep = tmp_path / "models"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-peer", *TINY, "--json", str(out), "--keep", str(keep)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the checkout: its trit/ folder would shadow the installed package
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "% of ceiling" in proc.stdout and "trit" in proc.stdout, proc.stdout
    data = json.loads(out.read_text())
    _check_rows(data, {"trit"})
    # the table names the kernel table that was timed (avx2 and avxvnni are one "avx2" ISA name)
    assert f"kernel table of trit: {data['rows'][0]['meta']['isa']}" in proc.stdout, proc.stdout
    # the contention round ran (default on): decode measured while a busy loop held a core
    assert "tg4 busy core" in proc.stdout and "% of quiet" in proc.stdout, proc.stdout
    busy = data["rows"][0]["samples"]["tg_busy_tps"]
    assert len(busy) == 1 and busy[0] > 0 and data["rows"][0]["tg_busy_tps_median"] == busy[0]
    assert data["p"] == 8 and data["n"] == 4 and data["machine"]["shape"] == "quick"
    # bytes per token = packed matrices (2 bits per weight) + the f16 head (Model.info.weight_bytes)
    layer = 1024 * 1024 * 2 + 256 * 1024 * 2 + 2816 * 1024 * 3
    tq = 4 * layer // 4
    if kernel_b3_fast():
        # the default holds down (2816 columns) in B3: 9 blocks of 64 bytes a row instead of 704
        # bytes; the 1024-column matrices stay TQ (B3 pads them to 1280: no shorter). The file's own
        # 2-bit layout runs beside it.
        f16_row, tq_row, q8_row = data["rows"]
        auto = tq - 4 * 1024 * (704 - 576)
        assert f16_row["format"] == "I2_S as TQ+B3" and tq_row["format"] == "I2_S"
        assert tq_row["weight_bytes"] == tq + 32000 * 1024 * 2
        assert q8_row["format"] == "I2_S as TQ+B3+Q8_0 head"
    else:
        f16_row, q8_row = data["rows"]
        auto = tq
        assert f16_row["format"] == "I2_S" and q8_row["format"] == "I2_S+Q8_0 head"
    assert f16_row["meta"]["head"] == "F16"
    assert f16_row["weight_bytes"] == auto + 32000 * 1024 * 2
    # the row with the optional Q8_0 head (34 bytes per 32 values) reads fewer bytes per token
    assert q8_row["meta"]["head"].startswith("Q8_0")
    assert q8_row["weight_bytes"] == auto + 32000 * 1024 // 32 * 34

    model = keep / "random-quick-I2_S.gguf"
    out2 = tmp_path / "cli.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trit",
            "bench",
            "-m",
            str(model),
            *TINY,
            "--head",
            "q8_0",
            "--json",
            str(out2),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the checkout: its trit/ folder would shadow the installed package
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tg4 tok/s" in proc.stdout and "busy core" not in proc.stdout, proc.stdout
    cli = json.loads(out2.read_text())
    _check_rows(cli, {"trit"})
    assert [r["format"] for r in cli["rows"]] == [q8_row["format"]]  # --head q8_0 reached the worker
    assert cli["rows"][0]["weight_bytes"] == q8_row["weight_bytes"]

    # benchmarks/bw_states.py: decode samples paired with the bandwidth around them, grouped by state
    # (--kernels: each sample also times the head and ternary kernels alone, over the model's own
    # weights and over kernel_bw.py's stacked arrays)
    args = (str(model), "--seconds", "1", "-n", "2", "-t", "1", "--kernels")
    proc = _run_script("bw_states.py", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = [line for line in proc.stdout.splitlines() if " tok/s " in line and line.rstrip().endswith("%")]
    assert samples, proc.stdout  # at least one sample (the state summary needs two steady probes)
    kinds = r"model's head +\d+%  ternary +\d+%  stacked head +\d+%  ternary +\d+%$"
    assert all(re.search(kinds, line) for line in samples), proc.stdout

    # benchmarks/bench_context.py: the f32, f16, 8-bit and 3-bit KV caches side by side at a given context length
    args = ("-m", str(model), "--positions", "40", "-n", "3", "--reps", "1", "-t", "1")
    proc = _run_script("bench_context.py", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip().startswith("1 ")]
    assert [r[2] for r in rows] == ["f32", "f16", "q8", "q3"], proc.stdout
    # KV MB read per token at 40 positions: 2 x 4 layers x 40 x 256 x 4 (f32), 2 (f16), 1 byte (q8,
    # plus a 4-byte scale per head row: 0.08 + <0.01 MB) or 3/8 byte (q3, plus 4 bytes per 32)
    want = [round(2 * 4 * 40 * 256 * e / 1e6, 1) for e in (4, 2, 1, 3 / 8 + 4 / 32)]
    assert [float(r[7]) for r in rows] == want, proc.stdout
    assert all(float(r[3]) > 0 and float(r[5]) > 0 for r in rows), proc.stdout

    # benchmarks/bench_a48.py: a4.8 activations against the exact path, alternating
    args = ("-m", str(model), "-p", "8", "-n", "3", "--reps", "1", "-t", "1")
    proc = _run_script("bench_a48.py", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip().startswith("1 ")]
    assert [r[1] for r in rows] == ["b1.58", "a4.8"], proc.stdout
    assert all(float(r[2]) > 0 and float(r[4]) > 0 for r in rows), proc.stdout


def test_bench_qk_types_quick(tmp_path: Path) -> None:
    """benchmarks/bench_qk_types.py --quick: a random llama per type, a table row per type."""
    args = ("--quick", "--types", "Q4_1,Q6_K", "--reps", "1", "-t", "1", "--no-peer", "--q8")
    proc = _run_script("bench_qk_types.py", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [
        line.replace(" q8 act", "+q8").split()
        for line in proc.stdout.splitlines()
        if line.startswith("trit ")
    ]
    assert [(r[1], r[2]) for r in rows] == [("Q4_1", "1"), ("Q4_1+q8", "1"), ("Q6_K", "1"), ("Q6_K+q8", "1")]
    assert all(float(r[3]) > 0 and float(r[5]) > 0 for r in rows), proc.stdout


def test_a48_quality_script(tmp_path: Path, default_model_gguf: Path) -> None:
    """benchmarks/a48_quality.py on a short text: a row per mode, the exact one agreeing with itself."""
    text = tmp_path / "t.txt"
    text.write_text("We hold these truths to be self-evident, that all men are created equal. " * 3)
    args = ("-m", str(default_model_gguf), "--text", str(text), "-t", "2")
    proc = _run_script("a48_quality.py", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    modes = ["exact (f32 KV)", "8-bit KV", "3-bit KV", "a4.8 activations", "a4.8 activations + 3-bit KV"]
    assert [r[0] for r in rows] == modes, proc.stdout
    assert rows[0][1:3] == ["0.0000", "100.0%"], proc.stdout
    assert all(float(r[3]) > 1 for r in rows), proc.stdout


def test_busy_loop_spins_ends_by_itself_and_is_killed_on_exit() -> None:
    with BusyLoop(limit_s=1.0) as b:
        assert b.proc is not None and b.proc.poll() is None
        cpu0 = psutil.Process(b.proc.pid).cpu_times()
        time.sleep(0.3)
        cpu1 = psutil.Process(b.proc.pid).cpu_times()
        assert (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system) > 0.1  # it really spins
        assert b.proc.wait(timeout=30) == 0  # and stops on its own
    with BusyLoop(limit_s=60) as b:
        pass
    assert b.proc is not None and b.proc.returncode is not None  # killed when the block ends


def test_pct_ceiling_pairs_each_sample_with_its_own_bandwidth() -> None:
    # two decode samples taken while the machine read 30 and 60 GB/s: each is judged against its own
    # bandwidth, and the median of the two ratios is reported; "% of best" uses the run's best probe
    r = Row(
        "trit", "I2_S", 2, weight_bytes=10**9, samples={"tg_tps": [27.0, 48.0], "tg_bw_gbps": [30.0, 60.0]}
    )
    r.ceiling_tps = 60.0
    assert math.isclose(r.pct_ceiling, (90.0 + 80.0) / 2)
    assert math.isclose(r.pct_best, 100 * 37.5 / 60)
    assert math.isnan(Row("trit", "I2_S", 1, 10**9, samples={"tg_tps": [1.0]}).pct_ceiling)  # no probe


def test_pct_ceiling_leaves_out_samples_that_ran_through_a_bandwidth_change() -> None:
    # the third sample's probes read 35 before and 60 after it: the machine switched state while it
    # ran, so its ratio against 60 says nothing; the steady samples decide
    samples = {
        "tg_tps": [27.0, 48.0, 27.0],
        "tg_bw_before": [30.0, 58.0, 35.0],
        "tg_bw_after": [29.0, 60.0, 60.0],
        "tg_bw_gbps": [30.0, 60.0, 60.0],
    }
    r = Row("trit", "I2_S", 2, weight_bytes=10**9, samples=samples)
    assert r.steady_samples == 2
    assert math.isclose(r.pct_ceiling, (90.0 + 80.0) / 2)
    # when no sample is steady, all of them count (the old rule)
    flip = {k: v[2:] for k, v in samples.items()}
    r = Row("trit", "I2_S", 2, weight_bytes=10**9, samples=flip)
    assert r.steady_samples == 0 and math.isclose(r.pct_ceiling, 45.0)
    # the table's notes name the rows that lost samples
    row = Row("trit", "I2_S", 2, 10**9, samples=samples)
    row.ceiling_tps = 60.0
    bw = Bandwidth({2: 60.0}, "test", 64, {2: [60.0]})
    res = BenchResult(p=8, n=8, ttft_prompt=8, reps=3, rows=[row], bandwidth=bw, machine={})
    assert "samples with agreeing probes, where not all: trit I2_S t=2 2/3" in format_table(res)


def test_table_names_each_ceiling_once_when_both_engines_read_one_format() -> None:
    # trit bench on a llama.cpp type (SmolLM2's Q4_1) gives both engines' rows the same format and
    # bytes: the ceiling note lists each thread count once (it used to repeat them per engine)
    rows = []
    for threads, ceiling in ((1, 165.9), (2, 262.5)):
        for engine in ("trit", "llama.cpp"):
            row = Row(engine, "Q4_1", threads, 96_400_000, samples={"tg_tps": [70.0]})
            row.ceiling_tps = ceiling
            rows.append(row)
    bw = Bandwidth({1: 16.0, 2: 25.3}, "test", 64, {1: [16.0], 2: [25.3]})
    res = BenchResult(p=8, n=8, ttft_prompt=8, reps=1, rows=rows, bandwidth=bw, machine={})
    lines = [line for line in format_table(res).splitlines() if line.startswith("Q4_1:")]
    assert lines == [
        "Q4_1: 96.4 MB read per token; ceiling at the best bandwidth t=1: 165.9 tok/s, t=2: 262.5 tok/s"
    ]


@pytest.mark.skipif(
    not (
        sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64") and shutil.which("gcc")
    ),
    reason="the C microbenchmarks are x86-64 Linux programs built with gcc",
)
@pytest.mark.parametrize(
    "name",
    [
        "base3_512",
        "base3_gemv",
        "gemm_order-avx2",
        "gemv_arith",
        "gemv_lead",
        "head_forms",
        "head_forms_avx2",
        "kv_walk",
        "sparse_cols",
        "row_streams",
        "row_streams-avx2",
        "streams",
        "vec_throughput",
    ],
)
def test_micro_benchmarks_build(name: str, tmp_path: Path) -> None:
    # benchmarks/micro/*.c are run by hand (RESULTS.md quotes them); this keeps them building
    # against the current kernels with the command their own header gives
    root = Path(__file__).resolve().parents[1]
    src = root / "benchmarks" / "micro" / f"{name.removesuffix('-avx2')}.c"
    flags = ["-O3", "-Wall", "-Werror", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl"]
    kern = root / "engine" / "kernels"
    extra: list[str] = []
    if name in ("base3_512", "gemv_arith", "gemv_lead", "kv_walk", "row_streams"):  # run the engine's kernels
        flags += [f"-I{kern}"] + (["-DTQ_GEMV_PREFETCH_LEAD=4096"] if name == "gemv_lead" else [])
        extra = [str(kern / f) for f in ("tq_avx2.c", "tq_avx512.c", "tq_scalar.c", "cpu.c")] + [
            "-lm",
            "-lpthread",
        ]
    elif name in ("base3_gemv", "head_forms_avx2", "row_streams-avx2", "gemm_order-avx2"):  # AVX2 only
        flags = ["-O3", "-Wall", "-Werror", "-mavx2", "-mfma", "-mf16c", f"-I{kern}", f"-I{src.parent}"]
        flags += ["-DRS_AVX2"] if name == "row_streams-avx2" else []
        # gemm_order.c includes tq_avx2.c itself, for its static tile functions
        own = ("tq_scalar.c", "cpu.c") if name == "gemm_order-avx2" else ("tq_avx2.c", "tq_scalar.c", "cpu.c")
        extra = [str(kern / f) for f in own] + ["-lm", "-lpthread"]
    r = subprocess.run(
        ["gcc", *flags, str(src), *extra, "-o", str(tmp_path / name)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    if name == "base3_gemv" and "avx2" in Path("/proc/cpuinfo").read_text():
        # one round: it checks its base-3 decoding and sums against the engine's GEMV before timing
        run = subprocess.run(
            [str(tmp_path / name), "1"], check=False, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0 and "in L2" in run.stdout, run.stderr
    if name == "base3_512":  # one round: it checks its sums and the engine's B3 GEMV's first
        run = subprocess.run(
            [str(tmp_path / name), "1"], check=False, capture_output=True, text=True, timeout=300
        )
        flags = Path("/proc/cpuinfo").read_text()
        if "avx512vbmi" in flags and "avx512_vnni" in flags:
            assert run.returncode == 0 and "e.b3" in run.stdout, run.stderr
        else:
            assert run.returncode == 2 and "needs AVX-512 VNNI and VBMI" in run.stderr
    if name == "gemv_lead":  # without arguments it says how to call it instead of running
        run = subprocess.run([str(tmp_path / name)], check=False, capture_output=True, text=True)
        assert run.returncode == 2 and "usage" in run.stderr


def test_worker_reports_the_thread_pool_of_a_decode(default_model_gguf: Path) -> None:
    """The busy-core log says how many decode jobs ran on the calling thread alone: the worker
    returns the pool's counters for each decode (threadpool.h), none at one thread."""
    from trit.bench import Worker

    for threads in (2, 1):
        w = Worker("trit", default_model_gguf, threads=threads, context=64)
        try:
            res = w.request(op="measure", p=0, n=4, ttft=0, seed=0)
        finally:
            w.close()
            w.kill()
        assert res["tg_tps"] > 0
        if threads == 2:
            assert (
                res["pool_jobs"] > 0 and 0 <= res["pool_solo"] <= res["pool_jobs"] and res["pool_late"] >= 0
            )
        else:
            assert res["pool_jobs"] == 0 and res["pool_solo"] == 0


@pytest.mark.parametrize("sig", ["SIGILL", "SIGKILL"])
def test_a_worker_killed_by_a_signal_is_named_in_a_bench_error(sig: str, default_model_gguf: Path) -> None:
    """QA: llama.cpp's AMX code died of SIGILL on an Intel Xeon VM, and `trit bench --peer` printed
    a traceback ending in "llama.cpp worker (threads=1) failed:" and nothing else. Now a BenchError
    (which the CLI prints as one line) names the signal and what it usually means."""
    import signal

    from trit.bench import BenchError, Worker

    w = Worker("trit", default_model_gguf, threads=1, context=64)
    try:
        w.proc.send_signal(getattr(signal, sig))
        w.proc.wait(timeout=30)
        with pytest.raises(BenchError) as ei:
            w.request(op="measure", p=0, n=2, ttft=0, seed=0)
    finally:
        w.kill()
    msg = str(ei.value)
    assert msg.startswith(f"the trit worker (threads=1) was killed by {sig}: ")
    assert ("instruction this CPU" in msg) if sig == "SIGILL" else ("memory ran out" in msg)


def test_in_the_bundle_the_children_start_through_trit_itself(
    default_model_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyInstaller's sys.executable is the trit program, which has no `-m` or `-c`: the worker
    and the busy loop start as `trit --bench-child ...` (trit.launch)."""
    from trit.bench import BusyLoop, child_command

    trit_program = tmp_path / "trit"  # stands in for the bundle's executable: only trit.launch
    trit_program.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c 'import sys; from trit.launch import main; sys.exit(main())' \"$@\"\n"
    )
    trit_program.chmod(0o755)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(trit_program))
    assert child_command() == [str(trit_program), "--bench-child"]
    assert _worker_decodes(default_model_gguf)
    with BusyLoop(limit_s=0.5) as b:
        assert b.proc is not None and b.proc.wait(timeout=30) == 0


def test_kernel_bw_times_a_baseline_build_beside_this_one(tmp_path: Path) -> None:
    """benchmarks/kernel_bw.py --baseline: another build of _kernels (here a copy of this one) is
    imported beside it and both are timed in each round; one round, no speed thresholds."""
    from trit.engine import _kernels

    copy = tmp_path / Path(_kernels.__file__).name
    shutil.copy(_kernels.__file__, copy)
    r = _run_script("kernel_bw.py", "--seconds", "0.01", "--baseline", str(copy), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-2].startswith("baseline: head ") and lines[-1].startswith("median: head "), r.stdout
    row = lines[2].split()
    assert len([c for c in row if "%" in c]) == 8, r.stdout  # head and ternary, both builds, 1 and 2 threads
    bad = _run_script(
        "kernel_bw.py", "--seconds", "0.01", "--baseline", str(tmp_path / "none.txt"), cwd=tmp_path
    )
    assert bad.returncode != 0 and "none.txt" in bad.stderr


def _worker_decodes(model: Path) -> bool:
    """A benchmark worker process starts, loads model and decodes a few tokens."""
    from trit.bench import Worker

    w = Worker("trit", model, threads=1, context=64)
    try:
        return bool(w.request(op="measure", p=0, n=4, ttft=0, seed=0)["tg_tps"] > 0)
    finally:
        w.close()
        w.kill()


def test_the_benchmark_worker_starts_from_a_folder_with_a_trit_source_tree(
    default_model_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`trit bench` from the checkout's root: the worker ran `python -m trit.bench`, which put
    the root first on the path, and its source folder trit/ (no compiled engine) shadowed the
    installed package: ModuleNotFoundError: No module named 'trit.engine'."""
    (tmp_path / "trit").mkdir()
    (tmp_path / "trit" / "__init__.py").write_text("raise ImportError('the source tree, not the package')\n")
    monkeypatch.chdir(tmp_path)
    assert _worker_decodes(default_model_gguf)


def _keys(doc: object) -> object:
    """The shape of JSON data: its keys, nested, without the values."""
    if isinstance(doc, dict):
        return {k: _keys(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_keys(doc[0])] if doc and isinstance(doc[0], dict) else []
    return None


def test_bench_json_is_strict_json_with_the_same_keys_every_run(tmp_path: Path) -> None:
    """A run without the bandwidth probe wrote NaN for the ceiling (JSON.parse refuses it), and each
    row's samples and meta had other keys from run to run (probe, --contention, llama.cpp)."""
    quiet = Row("trit", "Q4_1", 1, 10**8, samples={"tg_tps": [30.0]}, meta={"ready": True, "load_s": 1.0})
    probed = Row(
        "llama.cpp",
        "Q4_1",
        1,
        10**8,
        samples={"tg_tps": [30.0], "tg_bw_gbps": [np.float32(9.0)], "tg_busy_tps": [20.0]},
        meta={"n_ubatch": 512, "flash_attn_type": -1},
    )
    probed.rss_mb, probed.ceiling_tps = 100.0, 90.0
    docs = []
    for row in (quiet, probed):
        path = tmp_path / f"{row.engine}.json"
        write_json(BenchResult(8, 4, 8, 1, [row], None, {"cpu": "x"}), path)
        docs.append(json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"not JSON: {c}")))
    assert _keys(docs[0]) == _keys(docs[1])
    first = docs[0]["rows"][0]
    assert first["ceiling_tps"] is None and first["pct_ceiling"] is None and first["rss_mb"] is None
    assert first["samples"]["tg_bw_gbps"] == [] and first["meta"]["n_ubatch"] is None
    assert docs[1]["rows"][0]["samples"]["tg_bw_gbps"] == [9.0]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_terminated_trit_bench_ends_its_worker(sig: str, default_model_gguf: Path, tmp_path: Path) -> None:
    """SIGTERM (`timeout`, a supervisor) or SIGHUP (a closed terminal) ended the parent alone: its
    worker went on decoding at full CPU for tens of seconds. Now they end the run as Ctrl-C does."""
    err = tmp_path / "err"
    cmd = [sys.executable, "-m", "trit", "bench", "-m", str(default_model_gguf), "-t", "1", "--reps", "1"]
    cmd += ["--bw-mib", "0", "-p", "8", "-n", "1500", "--ttft-prompt", "8"]
    with open(err, "w") as f:
        # as from a terminal: a run under nohup (SIGHUP ignored, which trit bench keeps) passes
        # that on to its children
        ignored = signal.signal(signal.SIGHUP, signal.SIG_DFL)
        try:
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, cwd=tmp_path)
        finally:
            signal.signal(signal.SIGHUP, ignored)
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while "loaded trit" not in err.read_text():
            assert p.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        time.sleep(1)  # the worker is in its warm-up, which decodes 1500 tokens
        workers = psutil.Process(p.pid).children()
        assert workers
        p.send_signal(getattr(signal, sig))
        assert p.wait(timeout=30) == 128 + getattr(signal, sig)
        deadline = time.monotonic() + 5
        while alive := [w for w in workers if _running(w)]:
            assert time.monotonic() < deadline, f"workers still running: {alive}"
            time.sleep(0.1)
        assert err.read_text().strip().splitlines()[-1] == f"trit: stopped by {sig}"
    finally:
        for q in [p, *workers]:
            with contextlib.suppress(Exception):
                q.kill()


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (a killed orphan waits for whoever adopted it to reap it)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
