"""Regenerate with the real window and engine: the reply a regenerate replaced comes back with Undo
(the new one finished or stopped), until the next message is sent."""

from __future__ import annotations

import re
from typing import Any

import pytest
from trit.app.core.sampling import Sampling
from trit.app.core.store import StoreError
from trit.app.qt.main_window import MainWindow

from .conftest import REPLY_TIMEOUT_MS
from .test_chat_window import LONG_PROMPT, long_conversation, type_and_enter, wait_reply, wait_tokens

pytestmark = pytest.mark.timeout(300)


def _contents(win: MainWindow, cid: int) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in win.store.messages(cid)]


def test_a_stopped_regenerate_can_be_undone_and_the_old_reply_comes_back(
    qtbot: Any, window: MainWindow
) -> None:
    win = window
    cid = win.new_conversation("Story")
    # a reply long enough to be stopped: "Say hello." was answered in a few words at times, and
    # the regenerate had ended before Stop (its reply_finished was never seen)
    win.store.update_conversation(cid, sampling=Sampling(temperature=0.8, top_p=0.95, max_tokens=160))
    win.select_conversation(cid)
    wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, LONG_PROMPT))
    before = _contents(win, cid)
    old = win.store.messages(cid)[-1]
    assert not win.undo_regen_button.isVisible() and not win.undo_action.isEnabled()
    win.regenerate()
    wait_tokens(qtbot, win, 3)
    assert not win.undo_regen_button.isVisible()  # nothing to undo while it is written
    with qtbot.waitSignal(win.reply_finished, timeout=REPLY_TIMEOUT_MS):
        win.stop()
    assert _contents(win, cid) != before  # the stopped new reply is shown...
    assert win.undo_regen_button.isVisible() and win.undo_action.isEnabled()
    assert win.undo_action.text().replace("&", "") == "Undo regenerate"
    win.undo_action.trigger()  # ...and Ctrl+Z brings the old one back (it was deleted for good)
    assert _contents(win, cid) == before
    back = win.store.messages(cid)[-1]
    assert (back.status, back.stats) == (old.status, old.stats)
    assert not win.undo_regen_button.isVisible() and not win.undo_action.isEnabled()
    # the view shows it again: its first run of plain words (Markdown is drawn, paragraphs apart)
    words = re.findall(r"[A-Za-z][A-Za-z ,.']{8,}[A-Za-z]", old.content)
    assert words and words[0] in win.chat.toPlainText()


def test_undo_regenerate_on_a_full_disk_keeps_the_new_reply_and_the_undo(
    qtbot: Any, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    win = window
    cid = long_conversation(win)
    wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, "Say hello."))
    before = _contents(win, cid)
    wait_reply(qtbot, win, win.regenerate)
    after = _contents(win, cid)
    new_id = win.store.messages(cid)[-1].id
    real_delete = win.store.delete_message

    def full(mid: int) -> None:  # the old reply is written back, then taking the new one out fails
        if mid == new_id:
            raise StoreError("conversations.sqlite3: database or disk is full", "Free some disk space.")
        real_delete(mid)

    monkeypatch.setattr(win.store, "delete_message", full)
    win.undo_regenerate()
    assert _contents(win, cid) == after  # the old reply written back was taken out again
    assert win.banner.isVisible() and "disk is full" in win.banner.text()
    assert win.undo_regen_button.isVisible()  # can be tried again
    monkeypatch.setattr(win.store, "delete_message", real_delete)
    win.undo_regenerate()
    assert _contents(win, cid) == before


def test_the_next_message_ends_undo_regenerate(qtbot: Any, window: MainWindow) -> None:
    win = window
    cid = long_conversation(win)
    wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, "Say hello."))
    wait_reply(qtbot, win, win.regenerate)
    assert win.undo_regen_button.isVisible()
    other = win.new_conversation("Other")
    assert not win.undo_regen_button.isVisible()  # about the conversation shown only
    win.select_conversation(cid)
    assert win.undo_regen_button.isVisible()
    win.store.update_conversation(other, sampling=win.store.get_conversation(cid).sampling)
    with qtbot.waitSignal(win.reply_finished, timeout=REPLY_TIMEOUT_MS):
        type_and_enter(qtbot, win, "And goodbye?")
        win.stop()
    kept = _contents(win, cid)
    assert not win.undo_regen_button.isVisible() and not win.undo_action.isEnabled()
    win.undo_last()
    assert _contents(win, cid) == kept


def test_regenerate_uses_the_settings_typed_without_apply(qtbot: Any, window: MainWindow) -> None:
    win = window
    cid = long_conversation(win)
    wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, "Tell me about the Eiffel Tower."))
    win.settings_panel.max_tokens.setValue(3)  # lowered in the panel, no Apply
    d = wait_reply(qtbot, win, win.regen_button.click)
    assert 0 < d["record"]["tokens"] <= 3  # it used the stored 400
    assert win.store.get_conversation(cid).sampling.max_tokens == 3 and not win.settings_panel.dirty()
