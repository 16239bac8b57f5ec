"""`trit --self-test` and `trit` without a subcommand, as a user runs them (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def trit(
    *args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in drop}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "trit", *args], capture_output=True, text=True, timeout=240, env=e, check=False
    )


def test_self_test_opens_the_window_and_gets_a_streamed_reply(
    default_model_gguf: Path, tmp_path: Path
) -> None:
    r = trit(
        "--self-test",
        "--data-dir",
        str(tmp_path / "data"),
        env={"TRIT_DEFAULT_MODEL": str(default_model_gguf)},
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    stats = next(line for line in r.stdout.splitlines() if line.startswith("stats:"))
    for part in ("TTFT", "decode", "tok/s", "J/token"):
        assert part in stats
    assert "self-test passed" in r.stderr


def test_self_test_fails_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a model")
    r = trit("--self-test", "--model", str(bad), "--data-dir", str(tmp_path / "data"))
    assert r.returncode != 0
    assert "self-test failed" in r.stderr and "broken.gguf" in r.stderr


def test_no_subcommand_without_a_display_explains(tmp_path: Path) -> None:
    r = trit("--data-dir", str(tmp_path), drop=("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    assert r.returncode == 2 and "no display" in r.stderr and "trit chat" in r.stderr


def test_subcommands_still_work() -> None:
    r = trit("--help")
    assert r.returncode == 0 and "--self-test" in r.stdout and "chat" in r.stdout


def test_the_app_has_its_icon(qtbot: object) -> None:
    from PySide6.QtWidgets import QApplication
    from trit.app.qt.app import _application, app_icon

    icon = app_icon()
    sizes = {s.width() for s in icon.availableSizes()}
    assert not icon.isNull() and {16, 32, 256, 512} <= sizes
    app = _application(["trit"])
    assert app is QApplication.instance() and not app.windowIcon().isNull()
    assert app.desktopFileName() == "trit"
