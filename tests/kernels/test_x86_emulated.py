"""The x86 tables this CPU may lack, on any x86-64 CPU with AVX2: tests/kernels/isa_harness.c built
natively, run on the same test vectors as the NEON tables under qemu, and checked the same way:
integers bit-exactly against numpy, floats within the named tolerance.

- AVX-512 (the VNNI table and the AVX-512BW one): tq_avx512.c compiled against SIMDe
  (-DTQ_SIMDE_AVX512: every AVX-512 intrinsic is SIMDe's portable implementation of it, so the
  file needs no AVX-512 hardware). Needs SIMDe's headers (Debian/Ubuntu: apt-get install
  libsimde-dev); skipped with a message when they are missing.
- AVX-VNNI (the "avxvnni" table of tq_avx2.c): compiled with -DTQ_EMULATE_AVXVNNI, which takes
  vpdpbusd from the exact AVX2 emulation in tests/kernels/tq_emul_avxvnni.h; TRIT_NO_VNNI=1 gives
  the plain "avx2" table from the same build.

On a CPU that has the instructions, tests/kernels/test_kernels.py also runs the real ones.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from test_neon_qemu import HARNESS, KDIR, build_vectors, check_outputs
from trit.engine import _kernels as K

CC = "gcc"
AVX2 = ["-mavx2", "-mfma", "-mf16c"]
# Each file with its setup.py flags, except tq_avx512.c under SIMDe: no -m flags at all, so nothing
# in it can reach for an instruction the host lacks (SIMDe then builds everything from SSE2).
SOURCES = {"tq_scalar.c": [], "tq_neon.c": [], "cpu.c": [], "dispatch.c": [], "tq_avx2.c": AVX2}
SIMDE_SOURCES = {**SOURCES, "tq_avx512.c": ["-DTQ_SIMDE_AVX512", f"-I{HARNESS.parent}"]}
VNNI_SOURCES = {
    **SOURCES,
    "tq_avx2.c": [*AVX2, "-DTQ_EMULATE_AVXVNNI", f"-I{HARNESS.parent}"],
    "tq_avx512.c": ["-mavx512f", "-mavx512bw", "-mavx512vl", *AVX2],  # built, never picked here
}
# TRIT_NO_VNNI value -> the table "avx512" / "avx2" must hand out
AVX512_TABLES = {"0": "avx512vnni", "1": "avx512"}
AVX2_TABLES = {"0": "avxvnni", "1": "avx2"}


def _simde_missing() -> bool:
    probe = subprocess.run([CC, "-E", "-x", "c", "-", "-o", os.devnull], input="#include <simde/x86/avx512.h>\n",
                           check=False, capture_output=True, text=True)
    return probe.returncode != 0


def _build(build: Path, sources: dict[str, list[str]], harness_flags: list[str]) -> Path:
    if platform.machine().lower() not in ("x86_64", "amd64") or os.name != "posix":
        pytest.skip("the emulated x86 tables are tested on x86-64 Linux")
    if shutil.which(CC) is None:
        pytest.skip("gcc not found")
    objs = []
    for src, flags in {"isa_harness.c": harness_flags, **sources}.items():
        path = HARNESS if src == "isa_harness.c" else KDIR / src
        obj = build / (src + ".o")
        cmd = [CC, "-O2", "-std=c11", "-Wall", "-Werror", f"-I{KDIR}", *flags, "-c", str(path), "-o", str(obj)]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        assert res.returncode == 0, f"{' '.join(cmd)}:\n{res.stderr}"
        objs.append(str(obj))
    out = build / "isa_harness"
    res = subprocess.run([CC, "-o", str(out), *objs, "-lm", "-lpthread"], check=False, capture_output=True, text=True)
    assert res.returncode == 0, f"link failed:\n{res.stderr}"
    return out


@pytest.fixture(scope="module")
def simde_harness(tmp_path_factory) -> Path:
    if _simde_missing():
        pytest.skip("SIMDe headers not found: apt-get install libsimde-dev")
    return _build(tmp_path_factory.mktemp("avx512_simde"), SIMDE_SOURCES, ["-DTQ_SIMDE_AVX512"])


@pytest.fixture(scope="module")
def vnni_harness(tmp_path_factory) -> Path:
    if not K.cpu_features()["avx2"]:
        pytest.skip("the AVX-VNNI emulation runs AVX2 code: this CPU has no AVX2")
    return _build(tmp_path_factory.mktemp("avxvnni_emul"), VNNI_SOURCES, [])


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    v = build_vectors()
    path = tmp_path_factory.mktemp("x86_in") / "vectors.bin"
    path.write_bytes(v.data())
    return v, path


def _run(harness: Path, isa: str, vectors, tmp_path: Path, no_vnni: str, label: str) -> str:
    v, inp = vectors
    out = tmp_path / "out.bin"
    env = {**os.environ, "TRIT_NO_VNNI": no_vnni}
    res = subprocess.run([str(harness), isa, str(inp), str(out)], check=False, capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, f"isa_harness {isa} ({label}, TRIT_NO_VNNI={no_vnni}): exit {res.returncode}\n{res.stderr}"
    return check_outputs(out.read_bytes(), v, f"{label} TRIT_NO_VNNI={no_vnni}")


@pytest.mark.parametrize("no_vnni", list(AVX512_TABLES))
def test_avx512_tables_through_simde(simde_harness, vectors, tmp_path, no_vnni):
    assert _run(simde_harness, "avx512", vectors, tmp_path, no_vnni, "SIMDe") == AVX512_TABLES[no_vnni]


@pytest.mark.parametrize("no_vnni", list(AVX2_TABLES))
def test_avxvnni_table_emulated(vnni_harness, vectors, tmp_path, no_vnni):
    assert _run(vnni_harness, "avx2", vectors, tmp_path, no_vnni, "emulated AVX-VNNI") == AVX2_TABLES[no_vnni]
