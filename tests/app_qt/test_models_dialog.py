"""The model manager against the local hub server (tests/app_core/hubserver.py): download with
progress, a dropped connection then Resume (Range request), pause/resume on a slow link, cancel,
resume after an app restart, import of a real GGUF, delete to the trash with Undo (and with
confirmation where there is no trash), models folder."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import random
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from app_core.hubserver import HubServer, HubState
from PySide6.QtCore import Qt
from trit.app.core import downloads as dl
from trit.app.core.catalog import CatalogEntry, ModelLibrary
from trit.app.core.downloads import State, part_path
from trit.app.qt.context import AppContext
from trit.app.qt.models_dialog import ModelsDialog, progress_text

pytestmark = pytest.mark.timeout(120)

REPO = "org/tiny-gguf"
FILE = "tiny-model.gguf"
DATA = random.Random(7).randbytes(3_000_000)
SHA = hashlib.sha256(DATA).hexdigest()
ENTRY = CatalogEntry(
    id="tiny-model",
    name="Tiny test model",
    repo=REPO,
    revision="main",
    file=FILE,
    size=len(DATA),
    sha256=SHA,
    license="MIT",
    license_url="https://example.invalid/LICENSE",
    ram_mb=50,
    family="bitnet",
    description="Served by the local test hub.",
)
UNVERIFIED = dataclasses.replace(
    ENTRY, id="loose", name="Unpinned model", file="loose.gguf", sha256=None, size=None
)


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer(HubState(files={(REPO, FILE): DATA, (REPO, "loose.gguf"): DATA[:1000]})) as s:
        yield s


@pytest.fixture
def ctx_for(make_ctx: Any, hub: HubServer) -> Any:
    def make() -> AppContext:
        ctx = make_ctx(catalog=[ENTRY, UNVERIFIED])
        ctx.settings = dataclasses.replace(ctx.settings, hf_endpoint=hub.endpoint)
        ctx.download_options = {"retries": 0, "backoff": 0.01, "progress_interval": 0.02}
        return ctx

    return make


def dialog(qtbot: Any, ctx: AppContext) -> ModelsDialog:
    dlg = ModelsDialog(ctx)
    qtbot.addWidget(dlg)
    dlg.show()
    return dlg


def row_status(dlg: ModelsDialog, row: tuple[str, str]) -> str:
    for it in dlg._items():
        if tuple(it.data(0, 256) or ()) == row:
            return it.text(1)
    return ""


def test_lists_catalog_with_size_memory_and_license(qtbot: Any, ctx_for: Any) -> None:
    dlg = dialog(qtbot, ctx_for())
    assert dlg.select(("entry", "tiny-model"))
    assert row_status(dlg, ("entry", "tiny-model")) == "Available"
    assert row_status(dlg, ("entry", "loose")) == "Available (unverified)"
    it = dlg.tree.currentItem()
    assert it.text(2) == "3.0 MB" and it.text(3) == "fits" and it.text(4) == "MIT"
    details = dlg.details.text()
    assert "needs 50 MB" in details and 'href="https://example.invalid/LICENSE"' in details
    assert dlg.download_button.isEnabled() and not dlg.pause_button.isEnabled()


def test_download_fault_then_resume_then_use(qtbot: Any, ctx_for: Any, hub: HubServer) -> None:
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    hub.state.drop_after = 1_000_000  # the connection drops after 1 MB
    hub.state.chunk_delay = 0.002
    seen: list[Any] = []
    dlg.signals.progress.connect(seen.append)
    dlg.select(("entry", "tiny-model"))
    with qtbot.waitSignal(dlg.signals.failed, timeout=30_000) as failed:
        dlg.download_button.click()
    assert failed.args[0] == "tiny-model"
    assert row_status(dlg, ("entry", "tiny-model")) == "Failed"
    assert "Resume" in dlg.status.text() and dlg.resume_button.isEnabled()
    part = ctx.library.folder / (FILE + ".part")
    assert part.stat().st_size == 1_000_000
    assert any(p.state == State.DOWNLOADING and 0 < p.downloaded < len(DATA) for p in seen)
    with qtbot.waitSignal(dlg.signals.done, timeout=30_000) as done:
        dlg.resume_button.click()
    assert Path(done.args[1]) == ctx.library.folder / FILE
    assert (ctx.library.folder / FILE).read_bytes() == DATA and not part.exists()
    ranges = [e.range for e in hub.state.log if e.server == "cdn" and e.method == "GET"]
    assert ranges == [None, "bytes=1000000-"]
    # now installed: selected, usable, deletable
    assert dlg.selected() == ("installed", str(ctx.library.folder / FILE))
    chosen: list[str] = []
    dlg.model_chosen.connect(chosen.append)
    dlg.use_button.click()
    assert chosen == [str(ctx.library.folder / FILE)]


def test_pause_resume_and_progress_text(qtbot: Any, ctx_for: Any, hub: HubServer) -> None:
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    hub.state.chunk_delay = 0.01  # ~1.6 MB/s
    dlg.select(("entry", "tiny-model"))
    dlg.download_button.click()
    qtbot.waitUntil(
        lambda: (p := dlg.progress.get("tiny-model")) is not None and p.downloaded > 100_000, timeout=20_000
    )
    qtbot.waitUntil(lambda: "/s" in dlg.bar_label.text(), timeout=10_000)
    assert dlg.bar.isVisible() and "of 3.0 MB" in dlg.bar_label.text() and "left" in dlg.bar_label.text()
    assert dlg.pause_button.isEnabled()
    dlg.pause_button.click()
    qtbot.waitUntil(lambda: dlg.progress["tiny-model"].state == State.PAUSED, timeout=10_000)
    assert row_status(dlg, ("entry", "tiny-model")).startswith("Paused")
    assert dlg.resume_button.isEnabled() and not dlg.pause_button.isEnabled()
    hub.state.chunk_delay = 0.0
    with qtbot.waitSignal(dlg.signals.done, timeout=30_000):
        dlg.resume_button.click()
    assert (ctx.library.folder / FILE).read_bytes() == DATA


def test_cancel_deletes_the_part_file(qtbot: Any, ctx_for: Any, hub: HubServer) -> None:
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    hub.state.chunk_delay = 0.01
    dlg.select(("entry", "tiny-model"))
    dlg.download_button.click()
    qtbot.waitUntil(
        lambda: (p := dlg.progress.get("tiny-model")) is not None and p.downloaded > 50_000, timeout=20_000
    )
    stale = dlg.progress["tiny-model"]
    dlg.cancel_button.click()
    assert row_status(dlg, ("entry", "tiny-model")) == "Available"
    # progress the worker queued before it saw the cancel must not bring the row back
    dlg.signals.progress.emit(stale)
    assert row_status(dlg, ("entry", "tiny-model")) == "Available"
    qtbot.waitUntil(lambda: not (ctx.library.folder / (FILE + ".part")).exists(), timeout=10_000)
    assert row_status(dlg, ("entry", "tiny-model")) == "Available" and dlg.download_button.isEnabled()
    # a new download of the same model shows its progress again
    dlg.download_button.click()
    qtbot.waitUntil(
        lambda: row_status(dlg, ("entry", "tiny-model")).startswith("Downloading"), timeout=10_000
    )
    dlg.cancel_button.click()


def quit_with_a_part(qtbot: Any, ctx_for: Any, hub: HubServer) -> AppContext:
    """A download of tiny-model that fails at 700,000 bytes, then the app quits: a part file (and
    its sidecar) stay on disk. Returns the closed context."""
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    hub.state.drop_after = 700_000
    dlg.select(("entry", "tiny-model"))
    with qtbot.waitSignal(dlg.signals.failed, timeout=30_000):
        dlg.download_button.click()
    dlg.close()
    ctx.close()
    return ctx


@pytest.mark.parametrize("local_file", ["", "tiny-own-name.gguf"])
def test_resume_after_restart(qtbot: Any, ctx_for: Any, hub: HubServer, local_file: str) -> None:
    """A part file left when the app quit resumes after a restart. One left under an earlier
    catalog's local name (five entries once shared one) moves to its entry's own name: it finished
    under the shared name and was listed as another entry."""
    ctx = quit_with_a_part(qtbot, ctx_for, hub)
    assert part_path(ctx.library.folder / FILE).exists()

    ctx2 = ctx_for()
    if local_file:  # the next version's catalog
        renamed = dataclasses.replace(ENTRY, local_file=local_file, old_local_files=(FILE,))
        ctx2.library = ModelLibrary(ctx2.library.folder, [renamed, UNVERIFIED])
    dlg2 = dialog(qtbot, ctx2)
    assert row_status(dlg2, ("entry", "tiny-model")) == "Paused (can resume)"
    dlg2.select(("entry", "tiny-model"))
    assert dlg2.resume_button.isEnabled() and not dlg2.download_button.isEnabled()
    with qtbot.waitSignal(dlg2.signals.done, timeout=30_000):
        dlg2.resume_button.click()
    folder = ctx2.library.folder
    assert (folder / (local_file or FILE)).read_bytes() == DATA and not part_path(folder / FILE).exists()
    assert not local_file or not (folder / FILE).exists()
    assert [e.range for e in hub.state.log if e.server == "cdn" and e.method == "GET"][-1] == "bytes=700000-"


@pytest.mark.skipif(sys.platform == "win32", reason="holds the lock with fcntl")
def test_cancel_of_an_offered_download_leaves_a_part_another_trit_writes(
    qtbot: Any, ctx_for: Any, hub: HubServer
) -> None:
    """Cancel of a download offered from an earlier run deleted its part file even while another
    Trit (its own data folder, this models folder) was downloading into it."""
    ctx = quit_with_a_part(qtbot, ctx_for, hub)
    part = part_path(ctx.library.folder / FILE)
    lock = dl.lock_path(ctx.library.folder / FILE)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        dlg2 = dialog(qtbot, ctx_for())
        dlg2.select(("entry", "tiny-model"))
        dlg2.cancel_button.click()
        assert "Another Trit is downloading Tiny test model" in dlg2.status.text()
        assert part.stat().st_size == 700_000 and dl.sidecar_path(ctx.library.folder / FILE).exists()
        assert row_status(dlg2, ("entry", "tiny-model")) == "Paused (can resume)"
    finally:
        holder.communicate("")
    dlg2.cancel_button.click()
    assert dlg2.status.text().startswith("Cancelled") and not part.exists()
    assert row_status(dlg2, ("entry", "tiny-model")) == "Available"


# holds an flock on the path until stdin closes, as a download in another process does
_HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_unverified_entry_needs_confirmation(qtbot: Any, ctx_for: Any) -> None:
    dlg = dialog(qtbot, ctx_for())
    asked: list[str] = []
    dlg._confirm = lambda title, text: asked.append(text) or False  # type: ignore[method-assign]
    dlg.select(("entry", "loose"))
    dlg.download_button.click()
    assert asked and "checksum" in asked[0] and "loose" not in dlg.progress
    dlg._confirm = lambda title, text: True  # type: ignore[method-assign]
    with qtbot.waitSignal(dlg.signals.done, timeout=30_000):
        dlg.download_button.click()


def test_import_delete_and_folder(
    qtbot: Any, ctx_for: Any, tmp_path: Path, own_xdg_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from tiny import random_weights  # tests/engine/tiny.py
    from trit.engine.convert import write_bitnet_gguf

    src = tmp_path / "outside" / "my-tiny.gguf"
    src.parent.mkdir()
    weights, _ = random_weights(3)
    write_bitnet_gguf(weights, src)
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    m = dlg.import_model(str(src))
    assert m is not None and m.path == ctx.library.folder / "my-tiny.gguf" and src.exists()
    assert dlg.selected() == ("installed", str(m.path)) and "Imported" in dlg.status.text()
    assert dlg.delete_button.isEnabled() and dlg.reveal_button.isEnabled()
    bad = tmp_path / "outside" / "not-a-model.gguf"
    bad.write_bytes(b"nope" * 100)
    assert dlg.import_model(str(bad)) is None and "Cannot import" in dlg.status.text()
    # Delete moves it to the system trash, Undo brings it back
    size = m.path.stat().st_size
    dlg.delete_selected()
    trashed = own_xdg_data / "Trash" / "files" / m.path.name
    info = own_xdg_data / "Trash" / "info" / (m.path.name + ".trashinfo")
    assert not m.path.exists() and trashed.stat().st_size == size and info.is_file()
    assert "to the trash" in dlg.status.text() and dlg.undo_button.isVisible()
    assert all(str(x.path) != str(m.path) for x in ctx.library.installed())
    dlg.undo_button.click()
    assert m.path.stat().st_size == size and not trashed.exists() and not info.exists()
    assert dlg.selected() == ("installed", str(m.path)) and not dlg.undo_button.isVisible()
    # where there is no trash it asks before deleting for good; "no" keeps the file
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "no-trash-here"))
    dlg._confirm = lambda title, text: False  # type: ignore[method-assign]
    dlg.delete_selected()
    assert m.path.exists()
    dlg._confirm = lambda title, text: True  # type: ignore[method-assign]
    dlg.delete_selected()
    assert not m.path.exists() and "Deleted" in dlg.status.text()
    new_folder = tmp_path / "elsewhere"
    dlg.choose_folder(str(new_folder))
    assert ctx.library.folder == new_folder and ctx.settings.models_dir == str(new_folder)
    assert new_folder.is_dir() and str(new_folder) in dlg.folder_label.text()
    assert ctx.settings_store.load().models_dir == str(new_folder)  # saved


def test_reopened_dialog_can_download_a_deleted_model_again(qtbot: Any, ctx_for: Any) -> None:
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    dlg.select(("entry", "tiny-model"))
    with qtbot.waitSignal(dlg.signals.done, timeout=30_000):
        dlg.download_button.click()
    dlg.close()
    dlg2 = dialog(qtbot, ctx)  # Models again: the finished job is still in the queue's list
    (ctx.library.folder / FILE).unlink()  # deleted (the trash, or by hand)
    dlg2.refresh()
    assert dlg2.select(("entry", "tiny-model"))
    assert row_status(dlg2, ("entry", "tiny-model")) == "Available"
    assert dlg2.download_button.isEnabled() and not dlg2.bar.isVisible()


def test_disk_full_shows_failed_with_resume(
    qtbot: Any, ctx_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, doc: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(dl, "_write_json_atomic", full)
    dlg = dialog(qtbot, ctx_for())
    dlg.select(("entry", "tiny-model"))
    with qtbot.waitSignal(dlg.signals.failed, timeout=30_000):
        dlg.download_button.click()
    qtbot.waitUntil(lambda: dlg.progress["tiny-model"].state == State.FAILED, timeout=10_000)
    assert row_status(dlg, ("entry", "tiny-model")) == "Failed"
    assert "the disk is full" in dlg.status.text() and dlg.resume_button.isEnabled()
    # nothing was downloaded yet: no "continue from where it stopped"
    assert "continue from where it stopped" not in dlg.status.text()


def test_checksum_failure_does_not_offer_to_continue(qtbot: Any, ctx_for: Any, hub: HubServer) -> None:
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    hub.state.corrupt = True
    dlg.select(("entry", "tiny-model"))
    with qtbot.waitSignal(dlg.signals.failed, timeout=30_000):
        dlg.download_button.click()
    assert "partial file was deleted" in dlg.status.text()
    assert "continue from where it stopped" not in dlg.status.text()
    # the message is plain: the path and the two digests are in the details' tooltip
    text = dlg.status.text() + dlg.details.text()
    assert "Tiny test model: the downloaded file is corrupt" in dlg.status.text()
    assert ".part" not in text and SHA not in text and not re.search("[0-9a-f]{64}", text)
    assert SHA in dlg.details.toolTip() and str(ctx.library.folder / FILE) in dlg.details.toolTip()
    # nothing is left to resume: Download again, no "Failed 100%" bar
    assert dlg.download_button.isEnabled() and not dlg.resume_button.isEnabled()
    assert not dlg.cancel_button.isEnabled() and not dlg.bar.isVisible()
    hub.state.corrupt = False
    with qtbot.waitSignal(dlg.signals.done, timeout=30_000):
        dlg.download_button.click()
    assert (ctx.library.folder / FILE).read_bytes() == DATA


def test_not_found_names_the_model_and_offers_download(qtbot: Any, ctx_for: Any, hub: HubServer) -> None:
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    hub.state.files.pop((REPO, FILE))
    dlg.select(("entry", "tiny-model"))
    with qtbot.waitSignal(dlg.signals.failed, timeout=30_000):
        dlg.download_button.click()
    assert dlg.status.text().startswith("Tiny test model: not found on the server (HTTP 404).")
    assert REPO not in dlg.status.text()
    assert dlg.download_button.isEnabled() and not dlg.resume_button.isEnabled()
    assert not dlg.bar.isVisible()


def test_a_dropped_connection_says_resume_in_a_new_sentence(qtbot: Any, ctx_for: Any, hub: HubServer) -> None:
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    hub.state.drop_after = 1_000_000
    dlg.select(("entry", "tiny-model"))
    with qtbot.waitSignal(dlg.signals.failed, timeout=30_000):
        dlg.download_button.click()
    assert "bytes early. Select it and press Resume" in dlg.status.text()
    assert dlg.resume_button.isEnabled() and not dlg.download_button.isEnabled()
    assert dlg.bar.isVisible() and dlg.bar.format() == "Failed 33%"


def test_folder_change_is_refused_while_downloading(
    qtbot: Any, ctx_for: Any, hub: HubServer, tmp_path: Path
) -> None:
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    old = ctx.library.folder
    hub.state.chunk_delay = 0.005
    dlg.select(("entry", "tiny-model"))
    dlg.download_button.click()
    dlg.choose_folder(str(tmp_path / "new-models"))
    assert ctx.library.folder == old and ctx.settings.models_dir == str(old)
    assert "while models are downloading" in dlg.status.text()
    with qtbot.waitSignal(dlg.signals.done, timeout=30_000) as done:
        pass
    assert Path(done.args[1]) == old / FILE
    assert any(m.path == old / FILE for m in ctx.library.installed())
    dlg.choose_folder(str(tmp_path / "new-models"))  # nothing downloading now
    assert ctx.library.folder == tmp_path / "new-models"


def test_settings_refuse_a_new_models_folder_while_downloading(
    ctx_for: Any, hub: HubServer, tmp_path: Path
) -> None:
    from trit.app.qt.main_window import MainWindow

    ctx = ctx_for()
    hub.state.chunk_delay = 0.005
    ctx.downloads.add(ctx.library.download_request(ENTRY, endpoint=hub.endpoint, token=None))
    # the part of MainWindow that apply_settings reads before it changes the folder
    win = SimpleNamespace(
        ctx=ctx,
        loading_path="",
        loaded_path="",
        failed_path=None,
        manage_models=False,
        reply=None,
        _models_dialog=None,
    )
    new = dataclasses.replace(ctx.settings, models_dir=str(tmp_path / "new-models"))
    problems = MainWindow.apply_settings(win, new)  # type: ignore[arg-type]
    assert problems is not None and "downloading" in problems["models_dir"]
    assert ctx.library.folder != tmp_path / "new-models"
    assert ctx.downloads.wait(30)
    # nor while the Models dialog imports a model into it (its copy would land in the old folder)
    win._models_dialog = SimpleNamespace(importing=threading.Event())
    problems = MainWindow.apply_settings(win, new)  # type: ignore[arg-type]
    assert problems is not None and "being imported" in problems["models_dir"]
    assert ctx.library.folder != tmp_path / "new-models"


def test_progress_text() -> None:
    from trit.app.core.downloads import Progress

    p = Progress("k", State.DOWNLOADING, 12_000_000, 98_000_000, 4_100_000.0, 21.0)
    assert progress_text(p) == "12 MB of 98 MB · 4.1 MB/s · 21 s left"
    assert progress_text(dataclasses.replace(p, state=State.PAUSED)) == "12 MB of 98 MB"


def test_a_model_in_the_library_is_found_after_the_folder_moved(make_ctx: Any, tmp_path: Path) -> None:
    """Conversations keep an imported model's path; after the models folder was renamed (and
    Settings pointed at it) the file of that name in the current folder is the one used."""
    from trit.app.qt.main_window import model_choice, resolve_model_path

    old = tmp_path / "models"
    ctx = make_ctx(models_dir=old)
    old.mkdir(parents=True, exist_ok=True)
    (old / "Imported.gguf").write_bytes(b"GGUF")
    kept = str(old / "Imported.gguf")
    new = tmp_path / "models-renamed"
    old.rename(new)
    ctx.library.set_folder(str(new))
    assert model_choice(ctx, kept).path == str(new / "Imported.gguf")
    assert resolve_model_path(ctx, kept) == str(new / "Imported.gguf")
    assert model_choice(ctx, str(tmp_path / "elsewhere" / "Gone.gguf")).path is None  # not in the library


def test_keyboard_enter_uses_or_downloads_the_row_and_delete_deletes(
    qtbot: Any, ctx_for: Any, own_xdg_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication, QFileDialog, QPushButton

    asked: list[object] = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: asked.append(a) or "")
    ctx = ctx_for()
    ctx.library.folder.mkdir(parents=True, exist_ok=True)
    mine = ctx.library.folder / "mine.gguf"
    mine.write_bytes(b"GGUF" + bytes(100))
    dlg = dialog(qtbot, ctx)
    dlg.activateWindow()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is dlg.tree)
    # no button is the default one, so Enter reaches the list
    assert not [b.text() for b in dlg.findChildren(QPushButton) if b.isDefault() or b.autoDefault()]
    chosen: list[str] = []
    dlg.model_chosen.connect(chosen.append)
    dlg.select(("installed", str(mine)))
    QTest.keyClick(dlg.tree, Qt.Key.Key_Return)
    assert chosen == [str(mine)] and not asked
    dlg.current_path = ""  # not in use: it can be deleted
    dlg.select(("entry", "tiny-model"))
    with qtbot.waitSignal(dlg.signals.done, timeout=30_000):
        QTest.keyClick(dlg.tree, Qt.Key.Key_Enter)
    assert not asked
    dlg.select(("installed", str(mine)))
    QTest.keyClick(dlg.tree, Qt.Key.Key_Delete)
    assert not mine.exists() and dlg.undo_button.isVisible()
    # where one click opens items (KDE's option), one click only selects: no download
    from PySide6.QtWidgets import QProxyStyle, QStyle

    class SingleClick(QProxyStyle):
        def styleHint(self, hint: Any, *args: Any) -> int:  # Qt's name
            if hint == QStyle.StyleHint.SH_ItemView_ActivateItemOnSingleClick:
                return 1
            return super().styleHint(hint, *args)

    style = SingleClick()
    dlg.tree.setStyle(style)
    item = dlg.tree.topLevelItem(0)
    for i in range(dlg.tree.topLevelItemCount()):
        it = dlg.tree.topLevelItem(i)
        item = next((it.child(j) for j in range(it.childCount())), item) if it.childCount() else item
    rect = dlg.tree.visualItemRect(item)
    QTest.mouseClick(dlg.tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert dlg.tree.currentItem() is item and not dlg.progress and chosen == [str(mine)]
    # every button has its own mnemonic
    keys = [b.text().split("&")[1][0].lower() for b in dlg.findChildren(QPushButton) if b.text() != "Close"]
    assert len(keys) == len(set(keys)) == len(dlg.findChildren(QPushButton)) - 1
    # Tab goes down the screen: folder, list, details, then the buttons in their rows
    order, w = [], dlg.folder_button
    for _ in range(8):
        order.append(w)
        w = w.nextInFocusChain()
        while not (w.focusPolicy() & Qt.FocusPolicy.TabFocus) or not w.isVisible():
            w = w.nextInFocusChain()
    assert order == [
        dlg.folder_button,
        dlg.tree,
        dlg.details,
        dlg.use_button,
        dlg.download_button,
        dlg.pause_button,
        dlg.resume_button,
        dlg.cancel_button,
    ]


def test_a_stall_is_shown_and_cancel_then_download_starts_clean(
    qtbot: Any, ctx_for: Any, hub: HubServer
) -> None:
    ctx = ctx_for()
    ctx.download_options = {"retries": 0, "progress_interval": 0.02}  # the default 30 s timeout
    dlg = dialog(qtbot, ctx)
    hub.state.chunk_delay = 0.01
    dlg.select(("entry", "tiny-model"))
    dlg.download_button.click()
    qtbot.waitUntil(lambda: "left" in dlg.bar_label.text(), timeout=20_000)
    hub.state.stall.set()
    qtbot.waitUntil(lambda: "stalled — waiting for the server (4 s)" in dlg.bar_label.text(), timeout=10_000)
    assert "left" not in dlg.bar_label.text() and "/s" not in dlg.bar_label.text()
    dlg.cancel_button.click()
    assert row_status(dlg, ("entry", "tiny-model")) == "Available"
    seen: list[str] = []
    dlg.signals.progress.connect(lambda p: seen.append(row_status(dlg, ("entry", "tiny-model"))))
    dlg.download_button.click()
    qtbot.waitUntil(lambda: row_status(dlg, ("entry", "tiny-model")).startswith("Downloading"), timeout=5_000)
    # the cancelled download's part file (deleted as it stops) never showed as this one's progress
    assert seen and all(s in ("Queued 0%", "Connecting") or s.startswith("Downloading") for s in seen)
    hub.state.stall.clear()
    hub.state.chunk_delay = 0.0
    with qtbot.waitSignal(dlg.signals.done, timeout=30_000):
        pass
    assert (ctx.library.folder / FILE).read_bytes() == DATA


def test_long_names_keep_both_ends_and_have_a_tooltip(qtbot: Any, make_ctx: Any) -> None:
    long = "Meta-Llama-3-8B-Instruct-bitnet-1.58bit-ternary-experimental-finetune-v2-Q2_K-imatrix"
    entry = dataclasses.replace(ENTRY, name=long)
    dlg = dialog(qtbot, make_ctx(catalog=[entry]))
    assert dlg.tree.textElideMode() == Qt.TextElideMode.ElideMiddle
    assert dlg.select(("entry", "tiny-model"))
    tip = dlg.tree.currentItem().toolTip(0)
    assert long in tip and FILE in tip and REPO in tip


def test_the_error_red_is_readable_on_a_dark_window(qtbot: Any, ctx_for: Any, hub: HubServer) -> None:
    from PySide6.QtGui import QColor, QPalette
    from trit.app.qt.colours import contrast

    dlg = dialog(qtbot, ctx_for())
    hub.state.files.clear()
    dlg.select(("entry", "tiny-model"))
    with qtbot.waitSignal(dlg.signals.failed, timeout=30_000):
        dlg.download_button.click()

    def red_contrast() -> float:
        m = re.search(r"color:(#[0-9a-fA-F]{6})'>Tiny test model: not found", dlg.details.text())
        assert m, dlg.details.text()
        return contrast(QColor(m.group(1)), dlg.palette().color(QPalette.ColorRole.Window))

    assert red_contrast() >= 4.5
    dark = QPalette(dlg.palette())
    for role, colour in ((QPalette.ColorRole.Window, "#2b2b2b"), (QPalette.ColorRole.WindowText, "#e6e6e6")):
        dark.setColor(role, QColor(colour))
    dlg.setPalette(dark)
    assert red_contrast() >= 4.5


def test_the_first_size_fits_the_screen(qtbot: Any, ctx_for: Any) -> None:
    dlg = dialog(qtbot, ctx_for())
    avail = dlg.screen().availableGeometry()
    assert avail.width() < 900  # the offscreen platform's 800x600 screen
    assert dlg.frameGeometry().width() <= avail.width() and dlg.frameGeometry().height() <= avail.height()


def test_import_copies_in_the_background_with_progress_and_cancel(
    qtbot: Any, ctx_for: Any, tmp_path: Path
) -> None:
    import os
    import time

    from PySide6.QtCore import QTimer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from tiny import random_weights  # tests/engine/tiny.py
    from trit.engine.convert import write_bitnet_gguf

    big = tmp_path / "outside" / "big-model.gguf"
    big.parent.mkdir()
    write_bitnet_gguf(random_weights(3)[0], big)
    os.truncate(big, 400 << 20)  # bytes after the tensor data: still a valid GGUF (sparse here)
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    ticks: list[float] = []
    timer = QTimer(dlg)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    formats: list[str] = []
    dlg.import_bar.valueChanged.connect(lambda v: formats.append(dlg.import_bar.format()))
    dlg.start_import(str(big))
    assert dlg.import_bar.isVisible() and dlg.import_cancel_button.isVisible()
    assert not dlg.import_file_button.isEnabled() and "Importing big-model.gguf" in dlg.status.text()
    qtbot.waitUntil(lambda: dlg.importing is None, timeout=60_000)
    timer.stop()
    dest = ctx.library.folder / "big-model.gguf"
    assert dest.stat().st_size == 400 << 20 and dlg.status.text() == "Imported big-model."
    assert dlg.selected() == ("installed", str(dest)) and not dlg.import_bar.isVisible()
    assert any("MB of 419 MB" in f for f in formats)  # progress while it copied
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.5  # the window kept running
    # Cancel stops the copy and leaves nothing behind
    other = big.with_name("other-model.gguf")
    big.rename(other)
    dlg.start_import(str(other))
    qtbot.waitUntil(lambda: dlg.import_bar.maximum() == 1000, timeout=20_000)
    dlg.import_cancel_button.click()
    qtbot.waitUntil(lambda: dlg.importing is None, timeout=20_000)
    assert "Import cancelled" in dlg.status.text() and dlg.import_file_button.isEnabled()
    assert sorted(p.name for p in ctx.library.folder.iterdir()) == ["big-model.gguf"]
    # a model of that name is refused before anything is copied, also one that gets .gguf added
    formats.clear()
    for name in ("big-model.gguf", "big-model.bin"):
        same = other.with_name(name)
        other.rename(same)
        other = same
        dlg.start_import(str(same))
        qtbot.waitUntil(lambda: dlg.importing is None, timeout=20_000)
        assert "already in the models folder" in dlg.status.text() and not formats, name
    # quitting during an import cancels it, and its thread deletes the partial copy first
    dlg.start_import(str(big.with_name("big-model.bin").rename(big.with_name("third.gguf"))))
    qtbot.waitUntil(lambda: dlg.import_bar.maximum() == 1000, timeout=20_000)
    dlg.end_import()
    assert sorted(p.name for p in ctx.library.folder.iterdir()) == ["big-model.gguf"]


def accessible(widget: Any) -> tuple[str, str]:
    """(name, description) a screen reader gets for widget."""
    from PySide6.QtGui import QAccessible

    i = QAccessible.queryAccessibleInterface(widget)
    return i.text(QAccessible.Text.Name), i.text(QAccessible.Text.Description)


def test_a_screen_reader_reads_the_information_labels_text(qtbot: Any, ctx_for: Any) -> None:
    """The folder path, the details, the speed and the status line reach a screen reader: an
    accessible name ("Models folder") replaced them, and only the name could be heard."""
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    name, description = accessible(dlg.folder_label)
    assert str(ctx.library.folder) in name and description == "Models folder"
    dlg.select(("entry", "tiny-model"))
    dlg._on_progress(dl.Progress("tiny-model", State.DOWNLOADING, 1_000_000, len(DATA), 2_000_000.0, 1.0))
    name, description = accessible(dlg.details)
    assert "Tiny test model" in name and "License: MIT" in name and description == "Model details"
    name, description = accessible(dlg.bar_label)
    assert dlg.bar_label.text() == name and "1.0 MB of 3.0 MB" in name and "left" in name
    assert description == "Download speed and time left"
    dlg.folder_changed()
    name, description = accessible(dlg.status)
    assert (
        name == dlg.status.text() == f"Models folder: {ctx.library.folder}" and description == "Models status"
    )


def test_a_model_whose_file_name_is_not_utf8_is_shown_and_refused_with_what_to_do(
    qtbot: Any, ctx_for: Any
) -> None:
    """A Latin-1 name (mod\\xe8le-fran\\xe7ais.gguf from an old zip) was listed as "modle-franais"
    (Qt drops lone surrogates), and Use sent the path without them: a missing file, and the
    bundled model loaded instead without a word."""
    import os

    ctx = ctx_for()
    ctx.library.folder.mkdir(parents=True, exist_ok=True)
    bad = os.fsencode(ctx.library.folder) + b"/mod\xe8le-fran\xe7ais.gguf"
    with open(bad, "wb") as f:
        f.write(b"GGUF" + b"\0" * 60)
    dlg = dialog(qtbot, ctx)
    name = "mod\ufffdle-fran\ufffdais"
    rows = [it for it in dlg._items() if it.text(0) == name]
    assert rows, [it.text(0) for it in dlg._items()]
    dlg.tree.setCurrentItem(rows[0])
    chosen: list[object] = []
    dlg.model_chosen.connect(chosen.append)
    dlg.use_selected()
    assert chosen == [] and "not valid UTF-8" in dlg.status.text() and "Rename the file" in dlg.status.text()


def test_a_path_an_older_trit_stored_follows_the_model_the_library_moved(make_ctx: Any) -> None:
    """A Falcon3 file under the older catalog's shared name moves to its entry's own name when
    the library is listed; the settings' default model and a conversation's model still held the
    old path, and the window quietly fell back to the bundled model."""
    from app_core.test_catalog import SHARED, falcon_gguf, shared_name_catalog
    from trit.app.qt.main_window import model_choice, resolve_model_path

    ctx = make_ctx(catalog=shared_name_catalog())
    ctx.library.folder.mkdir(parents=True, exist_ok=True)
    old = falcon_gguf(ctx.library.folder / SHARED, 18, 2048)
    ctx.settings = dataclasses.replace(ctx.settings, default_model=str(old))
    assert [m.path.name for m in ctx.library.installed()] == ["falcon3-1b.gguf"]  # the dialog lists it
    assert not old.exists()
    moved = str(ctx.library.folder / "falcon3-1b.gguf")
    assert resolve_model_path(ctx) == moved
    choice = model_choice(ctx, str(old))
    assert choice.path == moved and choice.name == "falcon3-1b.gguf"


def test_the_library_knows_which_model_the_window_has_loaded(window: Any, default_model_env: Path) -> None:
    """The library moves no file the window has loaded (a Falcon3 file under an older catalog's
    name was moved under the loaded model when Models listed the folder)."""
    in_use = {str(p) for p in window.ctx.library.in_use() if p}
    assert in_use == {window.worker.model_path} and Path(window.worker.model_path).is_file()
    window.shutdown()
    assert not any(window.ctx.library.in_use())


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need a privilege there")
def test_import_folder_leaves_out_links_out_of_it_and_says_so(
    qtbot: Any, ctx_for: Any, tmp_path: Path
) -> None:
    """Import folder… copied README.md -> the user's private key and generation_config.json ->
    /proc/self/environ into the models folder as ordinary files (p.is_file() follows links)."""
    import shutil

    data = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "bitnet-s256-packed"
    src = tmp_path / "evil"
    src.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(data / name, src / name)
    (tmp_path / "id_ed25519").write_text("PRIVATE KEY")
    (src / "README.md").symlink_to(tmp_path / "id_ed25519")
    (src / "generation_config.json").symlink_to("/proc/self/environ")
    ctx = ctx_for()
    dlg = dialog(qtbot, ctx)
    dlg.start_import(str(src))
    qtbot.waitUntil(lambda: dlg.importing is None, timeout=20_000)
    dest = ctx.library.folder / "evil"
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]
    assert dlg.status.text() == (
        "Imported evil. Left out README.md (a link to outside the folder), "
        "generation_config.json (a link to outside the folder)."
    )
