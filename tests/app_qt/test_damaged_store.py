"""A damaged conversation database in the window: the start recovers it and says so once, damage
met while in use shows in the banner (never an exception out of a slot, never a conversation
selected that is not the one shown), and a store that cannot be opened at all is explained."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from trit.app.core.store import ConversationStore, StoreFullError
from trit.app.qt import app as app_module
from trit.app.qt.main_window import MainWindow

from .conftest import open_window

pytestmark = pytest.mark.timeout(120)

PAGE = 4096  # SQLite's default page size


def fill(path: Path, chats: int = 30) -> None:
    with ConversationStore(path) as s:
        for i in range(chats):
            c = s.create_conversation(f"chat {i}")
            for j in range(10):
                s.add_message(c.id, "user", f"question {i}.{j} " + "x" * 500)
                s.add_message(c.id, "assistant", f"answer {i}.{j} " + "y" * 500)


def test_a_damaged_file_opens_with_what_could_be_read(qtbot: Any, make_ctx: Any, data_dir: Path) -> None:
    db = data_dir / "conversations.sqlite3"
    data_dir.mkdir(parents=True)
    fill(db)
    raw = bytearray(db.read_bytes())
    page = raw.index(b"answer 12.4 ") // PAGE
    raw[page * PAGE : (page + 1) * PAGE] = random.Random(0).randbytes(PAGE)
    db.write_bytes(bytes(raw))
    win = open_window(qtbot, make_ctx(), autoload=False)
    box = win.salvage_box
    assert box is not None
    qtbot.waitUntil(box.isVisible, timeout=2000)  # told once, over the window
    assert "recovered 30 conversations" in box.text() and "conversations.damaged-" in box.text()
    assert win.conv_list.count() == 30
    for i in range(win.conv_list.count()):  # every chat opens; chat 12 has lost one page
        win.conv_list.setCurrentRow(i)
        assert win.current_id == win.conv_list.item(i).data(256)
    assert not win.banner.isVisible()
    box.accept()
    assert len(list(data_dir.glob("conversations.damaged-*.sqlite3"))) == 1


def test_while_a_damaged_file_is_recovered_a_notice_shows(qtbot: Any, data_dir: Path) -> None:
    """Before the window exists, recovering a large file took seconds with nothing on the screen."""
    from trit.app.qt.context import AppContext

    db = data_dir / "conversations.sqlite3"
    data_dir.mkdir(parents=True)
    fill(db, chats=3)
    raw = bytearray(db.read_bytes())
    page = raw.index(b"answer 1.4 ") // PAGE
    raw[page * PAGE : (page + 1) * PAGE] = random.Random(0).randbytes(PAGE)
    db.write_bytes(bytes(raw))
    notice = app_module.SalvageNotice()
    seen: list[str] = []

    def show() -> None:
        notice.show()
        seen.append(notice.box.labelText() if notice.box.isVisible() else "")

    ctx = AppContext.create(data_dir, on_salvage=show)
    notice.close()
    try:
        assert seen == ["Recovering your conversation history from a damaged file…"]
        assert ctx.store.salvaged is not None and notice.box is None
        calls: list[int] = []  # a healthy file: no notice
        ctx.store.close()
        AppContext.create(data_dir, on_salvage=lambda: calls.append(1)).store.close()
        assert not calls
    finally:
        ctx.close()


class _DamagedPages:
    """The store's connection with damage SQLite meets in use, after the start's check: the
    messages of one conversation and the purge of deleted ones hit a malformed page."""

    def __init__(self, db: sqlite3.Connection, bad_conversation: int) -> None:
        self.db = db
        self.bad = bad_conversation

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if sql.startswith("DELETE FROM conversations") or ("FROM messages" in sql and self.bad in args):
            raise sqlite3.DatabaseError("database disk image is malformed")
        return self.db.execute(sql, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_damage_met_in_use_shows_in_the_banner(qtbot: Any, make_ctx: Any) -> None:
    ctx = make_ctx()
    good = ctx.store.create_conversation("good")
    ctx.store.add_message(good.id, "user", "readable text")
    bad = ctx.store.create_conversation("bad")
    ctx.store.add_message(bad.id, "user", "on a damaged page")
    ctx.store._db = _DamagedPages(ctx.store._db, bad.id)
    # the start purges deleted chats and shows the newest ("bad"): both fail, the window opens
    win = open_window(qtbot, ctx, autoload=False)
    assert win.banner.isVisible() and "damaged" in win.banner.text() and "Restart Trit" in win.banner.text()
    assert win.current_id is None and "Start a new chat" in win.chat.toPlainText()
    win.select_conversation(good.id)
    assert win.current_id == good.id and "readable text" in win.chat.toPlainText()
    win.banner.hide()
    row = next(i for i in range(win.conv_list.count()) if win.conv_list.item(i).data(256) == bad.id)
    win.conv_list.setCurrentRow(row)  # a click on the damaged chat
    assert win.banner.isVisible() and "damaged" in win.banner.text()
    # the chat shown is still the good one, and it is the one selected and current
    assert win.current_id == good.id and "readable text" in win.chat.toPlainText()
    assert win.conv_list.currentItem().data(256) == good.id
    assert win.windowTitle() == "good — Trit"


def test_a_store_that_cannot_be_opened_is_explained(
    qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    (data / "conversations.sqlite3").mkdir(parents=True)  # a folder where the file should be
    told: list[tuple[str, str]] = []
    monkeypatch.setattr(app_module, "error_dialog", lambda title, text: told.append((title, text)))
    assert app_module.run_gui(data_dir=str(data)) == 1
    assert told and "cannot open" in told[0][1] and "conversations.sqlite3" in told[0][1]


def test_a_data_folder_that_cannot_be_created_is_explained(
    qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")  # --data-dir under a file: mkdir fails (as root too)
    told: list[tuple[str, str]] = []
    monkeypatch.setattr(app_module, "error_dialog", lambda title, text: told.append((title, text)))
    assert app_module.run_gui(data_dir=str(tmp_path / "file" / "sub")) == 1
    assert told and "cannot create the folder" in told[0][1] and "--data-dir" in told[0][1]


def test_a_store_error_escaping_a_slot_goes_to_the_banner(qtbot: Any, make_ctx: Any) -> None:
    from PySide6.QtCore import QTimer
    from trit.app.core.store import StoreDamagedError

    win: MainWindow = open_window(qtbot, make_ctx(), autoload=False)

    def slot() -> None:
        raise StoreDamagedError(
            "conversations.sqlite3: the conversation database is damaged.", "Restart Trit."
        )

    with app_module.store_errors_in_banner(win):
        QTimer.singleShot(0, slot)
        qtbot.waitUntil(win.banner.isVisible, timeout=2000)
    assert "damaged" in win.banner.text() and "Restart Trit." in win.banner.text()


def test_a_data_folder_deleted_while_the_window_runs_loses_nothing(
    qtbot: Any, make_ctx: Any, data_dir: Path
) -> None:
    """QA: SQLite wrote on into the deleted file, the window said nothing, and after a restart the
    list was empty. The store writes the file again from what it has open."""
    ctx = make_ctx()
    before = ctx.store.create_conversation("before")
    win = open_window(qtbot, ctx, autoload=False)
    shutil.rmtree(data_dir)
    with app_module.store_errors_in_banner(win):
        win.new_conversation()
    assert ctx.store.rescued and (data_dir / "conversations.sqlite3").exists()
    # the window says what happened (the store wrote the file again), once the signal is handled
    qtbot.waitUntil(lambda: win.banner.isVisible(), timeout=5000)
    assert win.banner.kind == "rescued" and "deleted or moved while Trit ran" in win.banner.text()
    shown = win.current_id
    win.close()
    ctx.close()
    with ConversationStore(data_dir / "conversations.sqlite3") as s:
        assert {c.id for c in s.list_conversations()} == {before.id, shown}


def test_a_data_folder_deleted_with_no_write_after_is_written_again_when_the_window_closes(
    qtbot: Any, make_ctx: Any, data_dir: Path
) -> None:
    ctx = make_ctx()
    before = ctx.store.create_conversation("before")
    ctx.store.add_message(before.id, "user", "a question")
    win = open_window(qtbot, ctx, autoload=False)
    shutil.rmtree(data_dir)
    asked: list[str] = []
    win._confirm_close = lambda lost: asked.append(lost) or True  # type: ignore[method-assign]
    win.close()
    ctx.close()
    assert asked == [] and ctx.store.rescued
    with ConversationStore(data_dir / "conversations.sqlite3") as s:
        assert [m.content for m in s.messages(before.id)] == ["a question"]


def test_closing_asks_first_when_the_conversations_cannot_be_written_again(
    qtbot: Any, make_ctx: Any, data_dir: Path
) -> None:
    ctx = make_ctx()
    kept = ctx.store.create_conversation("held only in memory")
    win = open_window(qtbot, ctx, autoload=False)
    shutil.rmtree(data_dir)
    data_dir.write_text("")  # the folder cannot be made again
    asked: list[str] = []
    win._confirm_close = lambda lost: asked.append(lost) or False  # type: ignore[method-assign]
    win.close()
    assert win.isVisible() and len(asked) == 1  # cancelled: the window stays, holding them
    assert asked[0].startswith("Your conversations could not be saved:") and "keep it open" in asked[0]
    data_dir.unlink()  # the user clears the way and closes again
    win.close()
    assert not win.isVisible() and len(asked) == 1
    ctx.close()
    with ConversationStore(data_dir / "conversations.sqlite3") as s:
        assert kept.id in {c.id for c in s.list_conversations()}


def test_a_full_disk_at_start_is_said_in_the_banner(qtbot: Any, make_ctx: Any) -> None:
    """The store opened on a full disk (its conversations readable, nothing new saved until there
    is room) and the window said nothing until the first write failed."""
    ctx = make_ctx()
    ctx.store.open_warning = StoreFullError(
        "the disk holding /data is full (12 KB free)",
        "Free some space on that disk, then try again.",
        folder="/data",
    )
    win = open_window(qtbot, ctx, autoload=False)
    assert win.banner.isVisible() and win.banner.kind == "store"
    assert "is full" in win.banner.text() and "Free some space" in win.banner.text()
