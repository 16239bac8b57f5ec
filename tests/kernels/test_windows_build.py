"""The C kernels, thread pool and forward pass build for Windows: every file cross-compiled with
mingw-w64 (the _WIN32 paths: Win32 threads, SRW locks, _aligned_malloc, IsProcessorFeaturePresent)
and linked into a DLL, so no symbol is missing. MSVC itself cannot run here; this is the closest
check that the Windows code paths compile and link."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

KDIR = Path(__file__).resolve().parents[2] / "engine" / "kernels"
CC = "x86_64-w64-mingw32-gcc"
# the same per-file ISA flags setup.py uses on x86 (files for other ISAs build with none)
FLAGS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"],
}


def isa_flags(name: str) -> list[str]:
    for isa in ("avx512", "avx2"):
        if name.endswith(f"_{isa}.c"):
            return FLAGS[isa]
    return []


@pytest.mark.skipif(shutil.which(CC) is None, reason=f"{CC} not found: apt-get install gcc-mingw-w64-x86-64")
def test_kernels_build_and_link_for_windows(tmp_path):
    objs = []
    for src in sorted(KDIR.glob("*.c")):
        obj = tmp_path / (src.stem + ".o")
        cmd = [CC, "-O2", "-std=c11", "-Wall", "-Werror", "-Wno-unused-function", "-c", f"-I{KDIR}",
               *isa_flags(src.name), str(src), "-o", str(obj)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert res.returncode == 0, f"{src.name}:\n{res.stderr}"
        objs.append(str(obj))
    dll = tmp_path / "trit_kernels.dll"
    res = subprocess.run([CC, "-shared", "-o", str(dll), *objs], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert dll.stat().st_size > 0
