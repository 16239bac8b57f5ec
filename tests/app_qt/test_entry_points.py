"""`trit --self-test` and `trit` without a subcommand, as a user runs them (subprocesses)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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


@pytest.mark.parametrize("display", ["as set", "where nothing answers"])
def test_self_test_opens_the_window_and_gets_a_streamed_reply(
    default_model_gguf: Path, tmp_path: Path, display: str
) -> None:
    env = {"TRIT_DEFAULT_MODEL": str(default_model_gguf)}
    drop: tuple[str, ...] = ()
    if display == "where nothing answers":  # Qt aborted (134); the check runs offscreen instead
        env["DISPLAY"] = ":987"
        drop = ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")
    r = trit("--self-test", "--data-dir", str(tmp_path / "data"), env=env, drop=drop)
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


def _library_needing(tmp_path: Path, dep: str) -> Path:
    """A real shared library linked against `dep` (built here, then deleted): what a system without
    one of Qt's X11 libraries looks like to the dynamic loader."""
    if not sys.platform.startswith("linux") or not shutil.which("gcc"):
        pytest.skip("needs Linux and gcc")
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "dep.c").write_text("int dep_value(void) { return 3; }\n")
    (tmp_path / "plug.c").write_text("int dep_value(void);\nint plug_value(void) { return dep_value(); }\n")
    subprocess.run(
        ["gcc", "-shared", "-fPIC", f"-Wl,-soname,{dep}", "-o", str(tmp_path / dep), str(tmp_path / "dep.c")],
        check=True,
    )
    plug = tmp_path / "libplug.so"
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-o",
            str(plug),
            str(tmp_path / "plug.c"),
            str(tmp_path / dep),
            "-Wl,-rpath,$ORIGIN",
        ],
        check=True,
    )
    return plug


def test_missing_libraries_names_each_missing_one(tmp_path: Path) -> None:
    """(Each library name is used once: the loader keeps what it loaded for the process's life.)"""
    from trit.app.qt.app import missing_libraries

    present = _library_needing(tmp_path / "present", "libtrit-present-dep.so.7")
    assert missing_libraries(present) == []
    absent = _library_needing(tmp_path / "absent", "libtrit-absent-dep.so.7")
    (tmp_path / "absent" / "libtrit-absent-dep.so.7").unlink()
    assert missing_libraries(absent) == ["libtrit-absent-dep.so.7"]


def test_the_window_explains_missing_x11_libraries_before_qt_aborts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Qt aborts the process when its X11 plugin cannot load and names no library; `trit` says
    which are missing and the apt line (here the plugin is a library built to lack one)."""
    from trit.app.qt import app

    plug = _library_needing(tmp_path, "libtrit-gone-dep.so.2")
    (tmp_path / "libtrit-gone-dep.so.2").unlink()
    monkeypatch.setattr(app, "_xcb_plugin", lambda: str(plug))
    monkeypatch.setitem(app._DEBIAN_PACKAGES, "libtrit-gone-dep.so.2", "libtrit-gone-dep2")

    def no_window(argv: object) -> None:
        raise AssertionError("the window was opened")

    monkeypatch.setattr(app, "_application", no_window)
    monkeypatch.setenv("DISPLAY", ":0")
    assert app.run_gui(data_dir=str(tmp_path / "data")) == 2
    err = capsys.readouterr().err
    assert "libtrit-gone-dep.so.2" in err and "sudo apt-get install libtrit-gone-dep2" in err
    assert str(plug) in err and "trit chat" in err
    assert not (tmp_path / "data").exists()  # nothing started


def test_a_display_where_nothing_answers_is_named_instead_of_qt_aborting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from trit.app.qt import app

    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":987")  # no X server there
    monkeypatch.setattr(app, "_application", lambda argv: (_ for _ in ()).throw(AssertionError("opened")))
    assert app.run_gui(data_dir=str(tmp_path / "data")) == 2
    err = capsys.readouterr().err
    assert "cannot reach the display (DISPLAY=:987)" in err and "trit chat" in err
    monkeypatch.setenv("DISPLAY", "127.0.0.1:987")  # nothing on TCP port 6987 either
    assert not app._display_reachable()
    # something listening where X11 clients look for display 988: reachable
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind("\0/tmp/.X11-unix/X988")
        server.listen(1)
        monkeypatch.setenv("DISPLAY", ":988.0")
        assert app._display_reachable()
    wayland = tmp_path / "wayland-9"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(wayland))
        server.listen(1)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-9")
        monkeypatch.setenv("DISPLAY", ":987")
        assert app._display_reachable()


def test_the_x11_check_looks_only_where_qt_uses_x11(monkeypatch: pytest.MonkeyPatch) -> None:
    from trit.app.qt import app

    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert app._xcb_plugin() is None and app.missing_window_libraries_message() is None
    monkeypatch.delenv("QT_QPA_PLATFORM")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert app._xcb_plugin() is None
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    if sys.platform.startswith("linux"):
        assert app._xcb_plugin() is not None and app._xcb_plugin().endswith("libqxcb.so")


def test_in_the_bundle_links_open_with_the_environment_from_before_it(
    qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyInstaller points LD_LIBRARY_PATH (and the Qt hook QT_PLUGIN_PATH) into the bundle: the
    file manager or browser that "Show in folder" and the links start must not inherit them."""
    from PySide6.QtCore import QUrl
    from PySide6.QtGui import QDesktopServices
    from PySide6.QtWidgets import QApplication
    from trit.app.qt import app

    log = tmp_path / "xdg-open.env"
    fake = tmp_path / "bin" / "xdg-open"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nenv > {log}.part && echo "$1" >> {log}.part && mv {log}.part {log}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/trit/_internal")
    monkeypatch.setenv("LD_LIBRARY_PATH_ORIG", "/usr/local/lib")
    monkeypatch.setenv("QT_PLUGIN_PATH", "/opt/trit/_internal/PySide6/Qt/plugins")
    monkeypatch.setenv("_PYI_APPLICATION_HOME_DIR", "/opt/trit/_internal")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    app._application(["trit"])
    try:
        assert QDesktopServices.openUrl(QUrl.fromLocalFile(str(tmp_path)))
        qtbot.waitUntil(log.exists, timeout=10_000)
    finally:
        for scheme in ("file", "http", "https"):
            QDesktopServices.unsetUrlHandler(scheme)
    env = dict(line.split("=", 1) for line in log.read_text().splitlines()[:-1] if "=" in line)
    assert log.read_text().splitlines()[-1] == QUrl.fromLocalFile(str(tmp_path)).toString()
    assert env["LD_LIBRARY_PATH"] == "/usr/local/lib"
    assert "QT_PLUGIN_PATH" not in env and not any(k.startswith("_PYI") for k in env)
    assert QApplication.instance() is not None
    assert app.outside_environment({"LD_LIBRARY_PATH": "/opt/trit/_internal"}) == {}


def test_a_second_start_on_the_same_data_folder_shows_the_running_window(qtbot: Any, tmp_path: Path) -> None:
    """Two Trit processes on one folder lost data (a reply being written marked stopped by the
    other's recovery, settings saved over each other, one part file for two downloads). The second
    asks the first to show its window and ends."""
    from trit.app.qt.app import SingleInstance

    shown: list[bool] = []
    first = SingleInstance(tmp_path)
    assert first.acquire()
    first.serve(lambda: shown.append(True))
    second = SingleInstance(tmp_path)
    assert not second.acquire() and second.holder() == os.getpid()
    assert second.ask_running_to_show()
    qtbot.waitUntil(lambda: shown == [True], timeout=5000)
    other = SingleInstance(tmp_path / "elsewhere")  # another data folder: its own instance
    (tmp_path / "elsewhere").mkdir()
    assert other.acquire() and other.name != first.name
    other.release()
    first.release()
    assert second.acquire()  # free once the first has ended
    second.release()


def _gui(data: Path, env: dict[str, str], *, capture: bool = False) -> subprocess.Popen[str]:
    code = "import sys; from trit.app.qt.app import run_gui; sys.exit(run_gui(data_dir=sys.argv[1]))"
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-c", code, str(data)], env=env, stdout=out, stderr=out, text=True
    )


def test_a_second_trit_ends_at_once_and_a_crashed_ones_lock_is_no_obstacle(tmp_path: Path) -> None:
    import signal
    import time

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "TRIT_DEFAULT_MODEL": str(tmp_path / "none.gguf")}
    data = tmp_path / "data"
    first = _gui(data, env)
    try:
        deadline = time.monotonic() + 60
        while not (data / "trit.lock").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)  # the window is up and listening
        second = _gui(data, env, capture=True)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
        assert "already open with this data folder; its window was brought to the front" in err
        assert first.poll() is None  # the first runs on
        first.send_signal(signal.SIGKILL)  # a crash: its lock file stays behind
        first.wait(30)
        assert (data / "trit.lock").exists()
        third = _gui(data, env)
        time.sleep(5)
        assert third.poll() is None  # started: the dead process's lock is stale
        third.terminate()
        third.wait(30)
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
