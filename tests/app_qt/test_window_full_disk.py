"""The window on a full disk (the store's writes fail with SQLite's "database or disk is full"):
nothing the user has is lost for good, what failed is said, and what can be tried again can be."""

from __future__ import annotations

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
