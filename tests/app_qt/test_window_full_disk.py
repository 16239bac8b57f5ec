"""The window on a full disk (the store's writes fail with SQLite's "database or disk is full"):
nothing the user has is lost for good, what failed is said, and what can be tried again can be."""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest
from trit.app.core.store import StoreError
from trit.app.qt.main_window import MainWindow

from .conftest import open_window

pytestmark = pytest.mark.timeout(300)

FULL = StoreError("conversations.sqlite3: cannot write (database or disk is full).", "Free some disk space.")


def _full(*_a: Any, **_k: Any) -> Any:
    raise FULL


@pytest.fixture
def win(qtbot: Any, make_ctx: Any) -> MainWindow:
    return open_window(qtbot, make_ctx(), autoload=False)


def test_undo_delete_on_a_full_disk_stays_offered_until_it_works(
    qtbot: Any, win: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = win.new_conversation("Important notes")
    win.store.add_message(cid, "user", "my important notes")
    win.new_conversation()
    win.select_conversation(cid)
    win.delete_current()
    restore = win.store.restore_conversation
    monkeypatch.setattr(win.store, "restore_conversation", _full)
    win.undo_action.trigger()
    assert win.banner.isVisible() and "disk is full" in win.banner.text()
    assert win.undo_action.isEnabled() and win._deleted == [cid]
    assert not win._undo_timer.isActive()  # not ended 10 s later while the user frees space
    monkeypatch.setattr(win.store, "restore_conversation", restore)
    win.undo_action.trigger()
    assert win.store.get_conversation(cid).deleted is None and win.current_id == cid
    assert not win.undo_action.isEnabled()


def test_closing_on_a_full_disk_asks_before_losing_the_unsent_message(
    qtbot: Any, make_ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx()
    win = open_window(qtbot, ctx, autoload=False)
    cid = win.new_conversation()
    win.prompt.setPlainText("A LONG MESSAGE I was still writing")
    set_draft = win.store.set_draft
    monkeypatch.setattr(win.store, "set_draft", _full)
    asked: list[str] = []
    win._confirm_close = lambda lost: asked.append(lost) or False  # type: ignore[method-assign]
    assert not win.close()  # Cancel: the window stays, the text in the box
    assert win.isVisible() and win.prompt.toPlainText() == "A LONG MESSAGE I was still writing"
    assert (
        asked and asked[0].startswith("Your unsent message could not be saved") and "disk is full" in asked[0]
    )
    monkeypatch.setattr(win.store, "set_draft", set_draft)  # space freed: it closes without asking
    assert win.close() and len(asked) == 1
    assert ctx.store.draft(cid) == "A LONG MESSAGE I was still writing"


@pytest.mark.parametrize(("typed", "answer"), [("typed", True), ("", False)])
def test_close_anyway_closes_and_an_empty_box_does_not_ask(
    qtbot: Any, make_ctx: Any, monkeypatch: pytest.MonkeyPatch, typed: str, answer: bool
) -> None:
    win = open_window(qtbot, make_ctx(), autoload=False)
    win.new_conversation()
    win.prompt.setPlainText(typed)
    monkeypatch.setattr(win.store, "set_draft", _full)
    asked: list[str] = []
    win._confirm_close = lambda lost: asked.append(lost) or answer  # type: ignore[method-assign]
    assert win.close() and win._shut_down
    assert len(asked) == (1 if typed else 0)  # an empty box on a full disk loses nothing


def test_edit_and_resend_on_a_full_disk_stays_an_edit(
    qtbot: Any, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    win = window
    cid = win.new_conversation("Colours")
    win.store.add_message(cid, "user", "Name a colour.")
    win.store.add_message(cid, "assistant", "Blue.")
    win.select_conversation(cid)
    win.prompt.setPlainText("MY HALF-WRITTEN NEXT QUESTION")
    win.edit_message()
    win.prompt.setPlainText("Name a fruit instead.")
    monkeypatch.setattr(win.store, "add_message", _full)
    assert not win.send()
    assert win.banner.isVisible() and "disk is full" in win.banner.text()
    assert win.editing_id is not None and win.edit_label.isVisible()
    assert win.prompt.toPlainText() == "Name a fruit instead."
    win.escape()  # cancelling the edit gives back what was typed before it
    assert win.editing_id is None and win.prompt.toPlainText() == "MY HALF-WRITTEN NEXT QUESTION"
    assert [m.content for m in win.store.messages(cid)] == ["Name a colour.", "Blue."]


def test_settings_on_a_full_disk_say_they_were_not_saved(
    qtbot: Any, win: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import errno

    from trit.app.qt.settings_dialog import SettingsDialog

    save = win.ctx.settings_store.save

    def no_space(_settings: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(win.ctx.settings_store.path))

    monkeypatch.setattr(win.ctx.settings_store, "save", no_space)
    win.open_settings()
    dlg = win._settings_dialog
    assert isinstance(dlg, SettingsDialog)
    dlg.watts.setValue(7.5)
    dlg.ok_button.click()
    assert win.ctx.settings.watts_per_core == 7.5  # in use for this run
    assert "Settings saved" not in win.statusBar().currentMessage()
    assert win.banner.isVisible() and "No space left on device" in win.banner.text()
    assert "until Trit closes" in win.banner.text()
    monkeypatch.setattr(win.ctx.settings_store, "save", save)  # space freed: OK again saves them
    assert win.apply_settings(dataclasses.replace(win.ctx.settings, watts_per_core=7.5)) == {}
    assert win.statusBar().currentMessage() == "Settings saved" and not win.banner.isVisible()
    assert win.ctx.settings_store.load().watts_per_core == 7.5


def test_the_store_banner_goes_once_a_write_works_again(
    qtbot: Any, win: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = win.new_conversation("A")
    b = win.new_conversation("B")
    delete = win.store.delete_conversation
    monkeypatch.setattr(win.store, "delete_conversation", _full)
    win.delete_current()
    assert win.banner.isVisible() and "disk is full" in win.banner.text()
    assert win.current_id == b and not win.undo_button.isVisible()  # nothing deleted
    monkeypatch.setattr(win.store, "delete_conversation", delete)  # space freed
    win.rename(a, "Renamed")
    assert not win.banner.isVisible()


def test_a_failed_rename_shows_the_title_kept(
    qtbot: Any, win: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = win.new_conversation("Old title")
    monkeypatch.setattr(win.store, "rename_conversation", _full)
    item = win._item_for(cid)
    assert item is not None
    item.setText("My renamed chat")  # what the list's editor does on Enter
    qtbot.waitUntil(win.banner.isVisible, timeout=2000)
    assert "disk is full" in win.banner.text()
    assert [win.conv_list.item(i).text() for i in range(win.conv_list.count())] == ["Old title"]
    assert win.windowTitle() == "Old title — Trit"


class _FullFile:
    """A file just created on a disk that is full: every write fails with ENOSPC."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, _text: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self) -> _FullFile:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _disk_full_under(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files opened for writing under folder are created, and then take no data."""
    real_open = io.open

    def filling_open(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        f = real_open(file, mode, *a, **k)
        if isinstance(file, (str, os.PathLike)) and Path(file).parent == folder and mode[0] in "wx":
            return _FullFile(f)
        return f

    monkeypatch.setattr(io, "open", filling_open)  # Path.write_text's
    monkeypatch.setattr(builtins, "open", filling_open)


def test_a_failed_export_leaves_no_file_and_keeps_the_one_it_would_replace(
    qtbot: Any, win: MainWindow, tmp_path: Path
) -> None:
    cid = win.new_conversation("Notes")
    win.store.add_message(cid, "user", "hello " * 1000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.md").write_text("the earlier export", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        _disk_full_under(out, mp)
        assert win.export_conversation(str(out / "new.md")) is None
        assert "No space left on device" in win.banner.text() and "Free some disk space" in win.banner.text()
        assert win.export_conversation(str(out / "old.md")) is None
    assert [p.name for p in out.iterdir()] == ["old.md"]  # no 0-byte new.md, no temp file left
    assert (out / "old.md").read_text(encoding="utf-8") == "the earlier export"
    assert win.export_conversation(str(out / "old.md")) == str(out / "old.md")
    assert "hello hello" in (out / "old.md").read_text(encoding="utf-8")
