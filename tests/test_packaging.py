"""The installable packages: icons, the Linux desktop entry, and a real PyInstaller build of the
installed package (packaging/build.py) whose bundle, tarball and .deb are unpacked and run."""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
ICONS = ROOT / "resources" / "icons"
PACKAGING = ROOT / "packaging"
PROMPT = "What is the capital of France?"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, PACKAGING / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def committed_pngs() -> dict[int, bytes]:
    make_icons = load_script("make_icons")
    return {n: (ICONS / f"trit-{n}.png").read_bytes() for n in make_icons.SIZES}


def test_icon_pngs_have_their_sizes() -> None:
    for n, data in committed_pngs().items():
        assert png_size(data) == (n, n)


def test_ico_holds_the_committed_pngs() -> None:
    data = (ICONS / "trit.ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", data[:6])
    assert (reserved, kind) == (0, 1) and count == 7
    pngs = committed_pngs()
    for i in range(count):
        w, h, _, _, planes, bpp, size, offset = struct.unpack("<BBBBHHII", data[6 + 16 * i : 22 + 16 * i])
        edge = w or 256
        assert h == w and planes == 1 and bpp == 32
        assert data[offset : offset + size] == pngs[edge]
    # the writer is deterministic: the committed file is exactly what it makes of the PNGs
    assert load_script("make_icons").ico_bytes(pngs) == data


def test_icns_holds_the_committed_pngs() -> None:
    data = (ICONS / "trit.icns").read_bytes()
    assert data[:4] == b"icns" and struct.unpack(">I", data[4:8])[0] == len(data)
    pngs = committed_pngs()
    seen = {}
    pos = 8
    while pos < len(data):
        kind, length = data[pos : pos + 4], struct.unpack(">I", data[pos + 4 : pos + 8])[0]
        seen[kind] = data[pos + 8 : pos + length]
        pos += length
    assert pos == len(data)
    for kind, edge in load_script("make_icons").ICNS_TYPES:
        assert seen[kind] == pngs[edge] and png_size(seen[kind]) == (edge, edge)


def test_the_deb_asks_for_the_glibc_its_libraries_need(tmp_path: Path) -> None:
    build = load_script("build")
    bundle = tmp_path / "bundle"
    (bundle / "_internal").mkdir(parents=True)
    # a library built against glibc 2.36 (as Debian 12's libexpat), one against 2.34, and text
    (bundle / "_internal" / "libnew.so").write_bytes(b"\x7fELF" + b"\0" * 40 + b"GLIBC_2.2.5\0GLIBC_2.36\0")
    (bundle / "_internal" / "libold.so").write_bytes(b"\x7fELF" + b"GLIBC_2.34\0GLIBC_PRIVATE\0")
    (bundle / "notes.txt").write_bytes(b"GLIBC_9.99\0")  # not an ELF file
    assert build.glibc_needed(bundle) == (2, 36)
    depends = build.deb_depends(bundle)
    assert depends.startswith("libc6 (>= 2.36), ") and depends.count("libc6") == 1
    assert build.deb_depends(tmp_path / "empty") == build.DEB_DEPENDS


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="Debian-family build hosts only")
def test_bundled_system_libraries_get_their_debian_copyright(tmp_path: Path) -> None:
    build = load_script("build")
    lib = Path("/lib") / (sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu") / "libexpat.so.1"
    if not lib.exists():
        pytest.skip(f"{lib} is not installed")
    internal = tmp_path / "bundle" / "_internal"
    (internal / "licenses").mkdir(parents=True)
    (internal / "licenses" / "THIRD-PARTY.md").write_text("# Third-party software\n")
    shutil.copy(lib, internal)  # as PyInstaller copies it from the build machine
    (internal / "libQt6Fake.so.6").write_bytes(b"\x7fELF")  # a Python package's: no Debian package
    # a library with a Debian library's name but other bytes (pyenv's libpython): not Debian's
    z = Path("/lib") / (sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu") / "libz.so.1"
    if z.exists():
        (internal / "libz.so.1").write_bytes(z.read_bytes() + b"\0")
    assert build.system_library_packages(tmp_path / "bundle") == {"libexpat1": ["libexpat.so.1"]}
    build.add_system_licenses(tmp_path / "bundle")
    notes = (internal / "licenses" / "THIRD-PARTY.md").read_text()
    assert "| libexpat1 |" in notes and "system/libexpat1/copyright" in notes and "Qt6Fake" not in notes
    assert (internal / "licenses" / "system" / "libexpat1" / "copyright").read_text().strip()


def test_desktop_entry() -> None:
    lines = (PACKAGING / "linux" / "trit.desktop").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[Desktop Entry]"
    keys = dict(line.split("=", 1) for line in lines[1:] if line and not line.startswith("#"))
    assert keys["Type"] == "Application" and keys["Exec"] == "trit" and keys["Icon"] == "trit"
    assert keys["Terminal"] == "false" and keys["Categories"].endswith(";")
    # the app's Qt desktop file name, so that docks match its windows to this entry
    app_src = (ROOT / "app" / "qt" / "app.py").read_text(encoding="utf-8")
    assert 'setDesktopFileName("trit")' in app_src and keys["StartupWMClass"] == "trit"


def test_version_is_single_sourced() -> None:
    import trit

    out = subprocess.run(
        [sys.executable, "-m", "trit", "--version"], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == f"trit {trit.__version__}"
    from importlib.metadata import version

    assert version("trit") == trit.__version__


def test_license_texts_for_the_bundle(tmp_path: Path) -> None:
    build = load_script("build")
    names = {d.metadata["Name"].lower().replace("_", "-") for d in build.runtime_distributions()}
    # Trit's runtime requirements and theirs, never a test or benchmark extra
    assert {"trit", "numpy", "pyside6-essentials", "shiboken6", "tokenizers", "jinja2", "markupsafe"} <= names
    assert not names & {"pytest", "torch", "transformers", "gguf", "hypothesis", "pyinstaller"}
    d = build.write_licenses(tmp_path / "licenses")
    assert (d / "Trit-LICENSE.txt").read_text(encoding="utf-8") == (ROOT / "LICENSE").read_text(
        encoding="utf-8"
    )
    table = (d / "THIRD-PARTY.md").read_text(encoding="utf-8")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "LGPL-3.0" in rows["PySide6_Essentials"] and "BSD" in rows["numpy"] and "Python" in rows
    numpy_texts = list((d / "numpy").iterdir())
    assert numpy_texts and all(p.stat().st_size > 0 for p in numpy_texts)
    copyright_ = build.deb_copyright()
    assert copyright_.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    assert "License: MIT\n Copyright (c) 2026 The Trit developers\n .\n Permission" in copyright_


def _installed_not_editable() -> bool:
    import trit.engine

    import trit

    pkg, eng = getattr(trit, "__file__", None), getattr(trit.engine, "__file__", None)
    return bool(pkg and eng) and Path(eng).resolve().parent == Path(pkg).resolve().parent / "engine"


def _env(home: Path) -> dict[str, str]:
    """An empty home: no user models folder, so the app must find the bundled model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIT_", "XDG_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"))
    env["QT_QPA_PLATFORM"] = "offscreen"
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux packages are built on Linux")
@pytest.mark.skipif(importlib.util.find_spec("PyInstaller") is None, reason="PyInstaller is a test extra")
@pytest.mark.timeout(1200)
def test_linux_packages_build_install_and_chat(tmp_path: Path, default_model_gguf: Path) -> None:
    if not _installed_not_editable():
        pytest.skip("PyInstaller bundles an installed Trit (pip install .), not an editable one")
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, str(PACKAGING / "build.py"), "--out", str(out), "--work", str(tmp_path / "pyi"),
         "--models", str(default_model_gguf.parent), "--deb-compression", "gzip"],
        check=False, capture_output=True, text=True, timeout=1200, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    made = [Path(line) for line in proc.stdout.split()]
    import trit

    tarball = next(p for p in made if p.name.endswith(".tar.gz"))
    deb = next(p for p in made if p.suffix == ".deb")
    assert tarball.name == f"trit-{trit.__version__}-linux-{load_script('build').machine()}.tar.gz"

    # the tarball: unpack anywhere and run
    unpacked = tmp_path / "unpacked"
    with tarfile.open(tarball) as tf:
        tf.extractall(unpacked, filter="tar")
    exe = unpacked / "trit" / "trit"
    bundled = unpacked / "trit" / "_internal" / "resources" / "models" / default_model_gguf.name
    assert bundled.read_bytes() == default_model_gguf.read_bytes()
    licenses = unpacked / "trit" / "_internal" / "licenses"
    assert "PySide6_Essentials" in (licenses / "THIRD-PARTY.md").read_text(encoding="utf-8")
    assert (licenses / "Trit-LICENSE.txt").is_file()
    # downloads trust certifi's roots where the bundle's OpenSSL finds no system certificates
    assert (unpacked / "trit" / "_internal" / "certifi" / "cacert.pem").stat().st_size > 100_000
    env = _env(tmp_path / "home")
    r = _run([str(exe), "--version"], env)
    assert r.returncode == 0 and r.stdout.strip() == f"trit {trit.__version__}"

    # one greedy reply from the bundled model (nothing in the user models folder), the same text as
    # the installed package gives from the same file
    r = _run([str(exe), "run", "-p", PROMPT, "-n", "16", "--temp", "0"], env)
    assert r.returncode == 0, r.stderr
    ref_env = dict(env, TRIT_DEFAULT_MODEL=str(default_model_gguf))
    ref = _run([sys.executable, "-m", "trit", "run", "-p", PROMPT, "-n", "16", "--temp", "0"], ref_env)
    assert ref.returncode == 0, ref.stderr
    assert r.stdout.strip() and r.stdout == ref.stdout
    assert not (tmp_path / "home" / "data" / "Trit" / "models").exists()

    # the desktop app, end to end: window, worker thread, model, one streamed reply
    r = _run([str(exe), "--self-test", "--data-dir", str(tmp_path / "appdata")], env)
    assert r.returncode == 0 and "self-test passed" in r.stderr, r.stderr[-3000:]
    assert "SmolLM2" in r.stderr

    # the .deb: metadata, file list, and the unpacked tree runs
    info = subprocess.run(
        ["dpkg-deb", "--field", str(deb)], check=True, capture_output=True, text=True
    ).stdout
    fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
    assert fields["Package"] == "trit" and fields["Version"] == trit.__version__
    assert "libxcb-cursor0" in fields["Depends"] and int(fields["Installed-Size"]) > 100_000
    # the system's C++ runtime and expat, not the build machine's (they alone needed glibc 2.36,
    # which kept the bundle off Ubuntu 22.04)
    internal = unpacked / "trit" / "_internal"
    assert not (internal / "libstdc++.so.6").exists() and not (internal / "libexpat.so.1").exists()
    assert "libstdc++6 (>= 12)" in fields["Depends"] and "libexpat1" in fields["Depends"]
    needed = load_script("build").glibc_needed(unpacked / "trit")
    assert needed is not None and needed <= (2, 35), needed
    assert f"libc6 (>= {'.'.join(map(str, needed))})" in fields["Depends"]
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True).stdout
    for path in (
        "./opt/trit/trit",
        "./usr/bin/trit -> /opt/trit/trit",
        "./usr/share/applications/trit.desktop",
        "./usr/share/icons/hicolor/256x256/apps/trit.png",
        "./usr/share/icons/hicolor/scalable/apps/trit.svg",
        "./usr/share/doc/trit/copyright",
        "./opt/trit/_internal/licenses/THIRD-PARTY.md",
        f"./opt/trit/_internal/resources/models/{default_model_gguf.name}",
    ):
        assert path in listing, path
    root = tmp_path / "deb-root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    assert os.access(root / "opt" / "trit" / "trit", os.X_OK)
    r = _run([str(root / "opt" / "trit" / "trit"), "--version"], env)
    assert r.returncode == 0 and trit.__version__ in r.stdout
    # nothing from the test or benchmark extras was bundled
    internal = unpacked / "trit" / "_internal"
    for heavy in ("torch", "transformers", "llama_cpp", "pytest", "gguf", "hf_xet"):
        assert not (internal / heavy).exists(), heavy
    shutil.rmtree(tmp_path / "pyi", ignore_errors=True)  # ~700 MB of PyInstaller work files


def test_no_docstring_holds_a_lone_surrogate() -> None:
    """Python 3.13 cannot compile a docstring holding a lone surrogate ("\\udce8" written as an
    escape): trit.text had one, and every module importing it failed to load there."""
    import ast
    import re

    root = Path(__file__).resolve().parents[1]
    sources = [root / "setup.py"]  # the source folders only: not build/ or a .venv in the checkout
    for folder in ("app", "benchmarks", "engine", "packaging", "scripts", "tests", "trit"):
        sources += (root / folder).rglob("*.py")
    bad = []
    for path in sorted(sources):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc is not None and re.search("[\ud800-\udfff]", doc):
                    bad.append(f"{path.relative_to(root)}:{getattr(node, 'lineno', 1)}")
    assert not bad, bad
