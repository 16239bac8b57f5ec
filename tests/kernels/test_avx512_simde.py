"""The AVX-512 tables on any x86-64 CPU: tests/kernels/isa_harness.c built natively with
tq_avx512.c compiled against SIMDe (-DTQ_SIMDE_AVX512: every AVX-512 intrinsic is SIMDe's portable
implementation of it, so the file needs no AVX-512 hardware), run on the same test vectors as the
NEON tables under qemu, and checked the same way: integers bit-exactly against numpy, floats
within the named tolerance.

This proves the AVX-512 C code (the VNNI table and the AVX-512BW one) on CI machines without
AVX-512; on a CPU that has it, tests/kernels/test_kernels.py also runs the real instructions. Needs
gcc and SIMDe's headers (Debian/Ubuntu: apt-get install libsimde-dev); skipped with a message when
they are missing.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from test_neon_qemu import HARNESS, KDIR, build_vectors, check_outputs

CC = "gcc"
# Each file with its setup.py flags, except tq_avx512.c: no -m flags at all, so nothing in it can
# reach for an instruction the host lacks (SIMDe then builds everything from SSE2).
SOURCES = {
    "tq_scalar.c": [],
    "tq_neon.c": [],
    "cpu.c": [],
    "dispatch.c": [],
    "tq_avx2.c": ["-mavx2", "-mfma", "-mf16c"],
    "tq_avx512.c": ["-DTQ_SIMDE_AVX512", f"-I{HARNESS.parent}"],
}
# TRIT_NO_VNNI value -> the table "avx512" must hand out
TABLES = {"0": "avx512vnni", "1": "avx512"}


def _simde_missing() -> bool:
    probe = subprocess.run([CC, "-E", "-x", "c", "-", "-o", os.devnull], input="#include <simde/x86/avx512.h>\n",
                           check=False, capture_output=True, text=True)
    return probe.returncode != 0


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    if platform.machine().lower() not in ("x86_64", "amd64") or os.name != "posix":
        pytest.skip("the SIMDe build of the AVX-512 tables is tested on x86-64 Linux")
    if shutil.which(CC) is None:
        pytest.skip("gcc not found")
    if _simde_missing():
        pytest.skip("SIMDe headers not found: apt-get install libsimde-dev")
    build = tmp_path_factory.mktemp("avx512_simde")
    objs = []
    for src, flags in {"isa_harness.c": ["-DTQ_SIMDE_AVX512"], **SOURCES}.items():
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
def vectors(tmp_path_factory):
    v = build_vectors()
    path = tmp_path_factory.mktemp("avx512_in") / "vectors.bin"
    path.write_bytes(v.data())
    return v, path


@pytest.mark.parametrize("no_vnni", list(TABLES))
def test_avx512_tables_through_simde(harness, vectors, tmp_path, no_vnni):
    v, inp = vectors
    out = tmp_path / "out.bin"
    env = {**os.environ, "TRIT_NO_VNNI": no_vnni}
    res = subprocess.run([str(harness), "avx512", str(inp), str(out)], check=False, capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, f"isa_harness avx512 (TRIT_NO_VNNI={no_vnni}): exit {res.returncode}\n{res.stderr}"
    name = check_outputs(out.read_bytes(), v, f"SIMDe TRIT_NO_VNNI={no_vnni}")
    assert name == TABLES[no_vnni]
