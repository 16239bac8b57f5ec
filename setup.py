"""Build the Cython extension trit.engine._core and the C kernels.

setuptools cannot set compiler flags per source file, and each ISA file must be built with only
its own flags (tq_avx2.c with -mavx2 ..., never the whole library), so build_ext compiles
engine/kernels/*.c into objects itself and links them into the extension (as cython-blis does).
"""

from __future__ import annotations

import glob
import os
import platform
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KDIR = os.path.join("engine", "kernels")

# Baseline files: no ISA flags, so the module imports on any CPU of the architecture.
BASE_SOURCES = ["tq_scalar.c", "cpu.c", "dispatch.c", "threadpool.c", "forward.c", "qk_scalar.c",
                "qk_f32act_scalar.c", "repack.c"]


def _machine() -> str:
    m = platform.machine().lower()
    if m in ("amd64", "x86_64", "x64", "i686", "i386"):
        return "x86"
    if m in ("arm64", "aarch64", "armv8", "arm64e"):
        return "arm64"
    return m


def isa_sources(compiler_type: str) -> list[tuple[str, list[str]]]:
    """(file, flags) for every ISA file. Files for other architectures compile to tables that
    return NULL, so they are always built and the dispatch code stays the same everywhere."""
    msvc = compiler_type == "msvc"
    if _machine() == "x86":
        if msvc:
            return [
                ("tq_avx2.c", ["/arch:AVX2"]),
                ("tq_avx512.c", ["/arch:AVX512"]),
                ("tq_neon.c", []),
                ("qk_avx2.c", ["/arch:AVX2"]),
                ("qk_neon.c", []),
                ("qk_f32act_avx2.c", ["/arch:AVX2"]),
                ("qk_f32act_neon.c", []),
            ]
        return [
            ("tq_avx2.c", ["-mavx2", "-mfma", "-mf16c"]),
            # No -mavx512vnni: the VNNI functions carry their own target attribute and are only
            # picked at run time, so a CPU with AVX-512 but no VNNI never runs a VNNI instruction.
            ("tq_avx512.c", ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"]),
            ("tq_neon.c", []),
            ("qk_avx2.c", ["-mavx2", "-mfma", "-mf16c"]),
            ("qk_neon.c", []),
            ("qk_f32act_avx2.c", ["-mavx2", "-mfma", "-mf16c"]),
            ("qk_f32act_neon.c", []),
        ]
    # AArch64: NEON is baseline; the dotprod functions carry their own target attribute.
    return [("tq_avx2.c", []), ("tq_avx512.c", []), ("tq_neon.c", []), ("qk_avx2.c", []), ("qk_neon.c", []),
            ("qk_f32act_avx2.c", []), ("qk_f32act_neon.c", [])]


class BuildExt(build_ext):
    def build_extension(self, ext: Extension) -> None:
        ctype = self.compiler.compiler_type
        msvc = ctype == "msvc"
        # -O3 for the loops; no -ffast-math anywhere: rounding must stay round-half-even and
        # float reductions must keep their order within a path.
        base = ["/O2"] if msvc else ["-O3", "-std=c11", "-fPIC", "-Wall", "-Wno-unused-function"]
        if not msvc and sys.platform != "win32":
            base.append("-pthread")
        objects: list[str] = []
        tmp = os.path.join(self.build_temp, "kernels")
        jobs = [(f, []) for f in BASE_SOURCES] + isa_sources(ctype)
        for fname, flags in jobs:
            src = os.path.join(KDIR, fname)
            objects += self.compiler.compile(
                [src], output_dir=tmp, include_dirs=[KDIR], extra_postargs=base + flags
            )
        ext.extra_objects = list(ext.extra_objects or []) + objects
        if not msvc and sys.platform != "win32":
            ext.extra_link_args = list(ext.extra_link_args or []) + ["-pthread", "-lm"]
        super().build_extension(ext)


def extensions() -> list[Extension]:
    # depends: relink when a kernel file changes (distutils otherwise only looks at the .pyx)
    kernel_files = sorted(glob.glob(os.path.join(KDIR, "*.[ch]"))) + [os.path.join("engine", "memcap.h")]
    common = {
        "include_dirs": [KDIR, np.get_include()],
        "depends": kernel_files,
        "define_macros": [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    }
    exts = [
        Extension("trit.engine._core", [os.path.join("engine", "_core.pyx")], **common),
        Extension("trit.engine._kernels", [os.path.join("engine", "_kernels.pyx")], **common),
        Extension("trit.engine._qk", [os.path.join("engine", "_qk.pyx")], **common),
    ]
    return cythonize(exts, compiler_directives={"language_level": 3}, quiet=True)


setup(
    package_dir={
        "trit": "trit",
        "trit.engine": "engine",
        "trit.app": "app",
        "trit.app.core": "app/core",
        "trit.app.qt": "app/qt",
        # resources/ (default_model.json, chat templates) ships inside the package as trit/resources;
        # code looks there, then in _MEIPASS (PyInstaller), then in the source tree.
        "trit.resources": "resources",
    },
    packages=["trit", "trit.engine", "trit.app", "trit.app.core", "trit.app.qt", "trit.resources"],
    package_data={"trit.resources": ["*.json", "templates/*.jinja", "icons/*"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt},
)
