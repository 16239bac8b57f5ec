"""Flows a demanding user tries that once went wrong (found by driving the real window with the real
engine): editing then starting a new chat, settings typed without Apply, a conversation that
outgrows the context, a failed reply's banner, renaming while a reply ends, copying mid-reply."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLineEdit
from trit.app.core.sampling import Sampling
from trit.app.core.store import COMPLETE
from trit.app.qt.chat_view import UNSEEN_LINE
from trit.app.qt.main_window import MainWindow
from trit.app.qt.worker import fit_context

from .conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS, open_window
from .test_chat_window import LONG_PROMPT, long_conversation, type_and_enter, wait_reply, wait_tokens

pytestmark = pytest.mark.timeout(300)

GREEDY = Sampling(temperature=0.0, top_p=1.0, max_tokens=12)


def test_edit_then_new_chat_leaves_the_edited_conversation_alone(qtbot: Any, window: MainWindow) -> None:
    win = window
    a = win.new_conversation("A")
    win.store.update_conversation(a, sampling=GREEDY)
    wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, "What is the capital of Spain?"))
    before = [(m.role, m.content) for m in win.store.messages(a)]
    win.edit_message()
    assert win.editing_id is not None and win.edit_label.isVisible()
    b = win.new_conversation()
    assert win.editing_id is None and not win.edit_label.isVisible()
    assert win.prompt.toPlainText() == ""  # A's message text does not follow into B
    win.store.update_conversation(b, sampling=GREEDY)
    d = wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, "Tell me a joke"))
    assert [(m.role, m.content) for m in win.store.messages(a)] == before
    assert [m.role for m in win.store.messages(b)] == ["user", "assistant"]
    assert win.store.messages(b)[0].content == "Tell me a joke" and d["conversation_id"] == b


def test_an_edit_left_for_another_conversation_takes_its_text_along(qtbot: Any, window: MainWindow) -> None:
    win = window
    a = win.new_conversation("A")
    win.store.add_message(a, "user", "Secret question for A only")
    b = win.new_conversation("B")
    win.select_conversation(a)
    win.edit_message()
    assert win.prompt.toPlainText() == "Secret question for A only"
    win.select_conversation(b)
    assert win.editing_id is None and win.prompt.toPlainText() == ""
    assert not win.send()  # nothing of A's is sent into B
    assert win.store.messages(b) == []


def test_edit_then_deleting_the_only_conversation_cancels_the_edit(qtbot: Any, window: MainWindow) -> None:
    win = window
    a = win.new_conversation("A")
    win.store.update_conversation(a, sampling=GREEDY)
    wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, "Hello"))
    win.edit_message()
    win.delete_current()
    assert win.current_id is None and win.editing_id is None
    win.undo_delete()
    assert win.store.messages(a)[0].content == "Hello"


def test_settings_typed_without_apply_are_kept_and_used(qtbot: Any, window: MainWindow) -> None:
    win = window
    a = win.new_conversation("A")
    b = win.new_conversation("B")
    win.select_conversation(a)
    panel = win.settings_panel
    panel.system.setPlainText("Answer in French.")
    panel.max_tokens.setValue(5)
    panel.temperature.setValue(0.0)
    assert panel.dirty()
    win.select_conversation(b)  # switching away saves them to A
    conv = win.store.get_conversation(a)
    assert conv.system_prompt == "Answer in French." and conv.sampling.max_tokens == 5
    win.select_conversation(a)
    assert panel.system.toPlainText() == "Answer in French." and not panel.dirty()
    panel.max_tokens.setValue(7)  # and sending uses what the panel shows
    d = wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, "Say hello"))
    assert win.store.get_conversation(a).sampling.max_tokens == 7
    assert 0 < d["record"]["tokens"] <= 7


def test_apply_with_no_conversation_shows_what_it_saved(qtbot: Any, window: MainWindow) -> None:
    win = window
    win.select_conversation(None)
    panel = win.settings_panel
    panel.system.setPlainText("You are a pirate.")
    panel.max_tokens.setValue(9)
    panel.apply_button.click()
    cid = win.current_id
    assert cid is not None
    conv = win.store.get_conversation(cid)
    assert conv.system_prompt == "You are a pirate." and conv.sampling.max_tokens == 9
    assert panel.system.toPlainText() == "You are a pirate." and panel.max_tokens.value() == 9
    panel.apply_button.click()  # a second Apply keeps them
    assert win.store.get_conversation(cid).system_prompt == "You are a pirate."


def test_fit_context_leaves_out_the_oldest_messages_only() -> None:
    def count(ms: list[dict[str, str]]) -> int:  # 10 tokens per message
        return 10 * len(ms)

    system = {"role": "system", "content": "s"}
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": str(i)} for i in range(9)]
    msgs = [system, *turns]
    assert fit_context(msgs, count, 200, 50) == (msgs, 0)
    kept, out = fit_context(msgs, count, 100, 40)  # 6 messages fit
    assert kept[0] == system and kept[-1] == turns[-1] and out == 4 and len(kept) == 6
    assert kept[1]["role"] == "user"  # never opens with a reply
    kept, out = fit_context(msgs, count, 100, 40, at_least=6)  # the previous cut is kept
    assert out == 6 and kept[1:] == turns[6:]
    kept, out = fit_context(msgs, count, 100, 40, slack=20)  # a new cut leaves room for next turns
    assert out == 6 and count(kept) <= 40
    kept, out = fit_context(msgs, count, 25, 10)  # only the system prompt and the last message
    assert kept == [system, turns[-1]] and out == 8


def test_fit_context_counts_about_a_context_of_a_long_conversation() -> None:
    sizes: list[int] = []

    def count(ms: list[dict[str, str]]) -> int:
        sizes.append(len(ms))
        return 10 * len(ms)

    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": str(i)} for i in range(4001)]
    for at_least in (0, 3000):
        for reply_room in range(40, 100, 7):  # room for 10-20 messages
            sizes.clear()
            kept, out = fit_context(turns, count, 300, reply_room, at_least=at_least)
            fewest = len(turns) - (300 - reply_room) // 10  # the first that fits, give or take a reply
            assert count(kept) <= 300 - reply_room and out in (fewest, fewest + 1)
            # the first count is the whole (remaining) conversation; the search counts no more than
            # twice what fits, and about log2 of it times
            assert max(sizes[1:]) <= 2 * (300 - reply_room) // 10 + 2 and len(sizes) <= 12


def test_a_closed_window_reopens_where_it_was(qtbot: Any, make_ctx: Any) -> None:
    """Closing keeps the settings typed without Apply and the unsent text, and the window
    reopens on the conversation it showed (not the most recently updated one)."""
    ctx = make_ctx()
    win = open_window(qtbot, ctx, autoload=False)
    a = win.new_conversation("A")
    b = win.new_conversation("B")  # updated last
    win.select_conversation(a)
    win.settings_panel.system.setPlainText("Always answer as a pirate.")
    win.settings_panel.max_tokens.setValue(77)
    win.prompt.setPlainText("half a question")
    win.close()
    ctx.close()
    ctx2 = make_ctx()
    win2 = open_window(qtbot, ctx2, autoload=False)
    assert win2.current_id == a and b in [c.id for c in ctx2.store.list_conversations()]
    assert win2.prompt.toPlainText() == "half a question"
    assert win2.settings_panel.system.toPlainText() == "Always answer as a pirate."
    assert win2.settings_panel.max_tokens.value() == 77
    assert ctx2.store.draft(a) == ""  # taken back into the prompt box, not shown twice later


def test_the_last_replys_speed_does_not_follow_into_another_conversation(
    qtbot: Any, window: MainWindow
) -> None:
    win = window
    a = win.new_conversation("A")
    win.store.update_conversation(a, sampling=GREEDY)
    wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, "Hello"))
    assert "tok/s" in win.live_label.text()
    win.new_conversation("B")
    assert win.live_label.text() == "" and win.chart.tps == []


def test_each_conversation_keeps_its_own_unsent_text(qtbot: Any, make_ctx: Any) -> None:
    ctx = make_ctx()
    win = open_window(qtbot, ctx, autoload=False)
    a = win.new_conversation("A")
    win.prompt.setPlainText("typed in A")
    b = win.new_conversation("B")  # a new chat starts empty; A keeps its text
    assert win.prompt.toPlainText() == ""
    win.prompt.setPlainText("typed in B")
    win.select_conversation(a)
    assert win.prompt.toPlainText() == "typed in A"
    win.select_conversation(b)
    assert win.prompt.toPlainText() == "typed in B"
    win.prompt.clear()  # emptied by hand: nothing comes back
    win.select_conversation(a)
    win.select_conversation(b)
    assert win.prompt.toPlainText() == ""
    win.select_conversation(a)
    win.close()
    ctx.close()
    win2 = open_window(qtbot, make_ctx(), autoload=False)
    assert win2.current_id == a and win2.prompt.toPlainText() == "typed in A"


def test_a_window_that_only_showed_a_conversation_keeps_anothers_draft(qtbot: Any, make_ctx: Any) -> None:
    """Two windows on one folder: closing the one that did not type into a conversation erased
    what had been typed into it in the other (its empty box was stored as the draft)."""
    ctx1 = make_ctx()
    win1 = open_window(qtbot, ctx1, autoload=False)
    a = win1.new_conversation("A")
    ctx2 = make_ctx()
    win2 = open_window(qtbot, ctx2, autoload=False)
    win2.select_conversation(a)
    win2.prompt.setPlainText("typed in the second window")
    win2.close()
    ctx2.close()
    win1.close()  # it showed A all along, with nothing typed
    ctx1.close()
    win3 = open_window(qtbot, make_ctx(), autoload=False)
    assert win3.current_id == a and win3.prompt.toPlainText() == "typed in the second window"


def small_context_window(qtbot: Any, make_ctx: Any) -> MainWindow:
    """The window with SmolLM2 loaded in a 256-token context."""
    ctx = make_ctx()
    ctx.settings = dataclasses.replace(ctx.settings, context=256)
    win = open_window(qtbot, ctx, autoload=False)
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS):
        win.load_model()
    return win


def test_a_conversation_longer_than_the_context_goes_on(
    qtbot: Any, make_ctx: Any, default_model_env: Any
) -> None:
    win = small_context_window(qtbot, make_ctx)
    cid = win.new_conversation()
    win.store.update_conversation(cid, sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=60))
    trimmed: list[dict[str, Any]] = []
    win.worker.context_trimmed.connect(trimmed.append)
    for i in range(6):
        d = wait_reply(
            qtbot, win, lambda i=i: type_and_enter(qtbot, win, f"Tell me a fact about the number {i}.")
        )
        assert d["status"] == COMPLETE, (i, d, win.banner.text())
    assert trimmed and trimmed[-1]["conversation_id"] == cid and not win.banner.isVisible()
    assert "outgrew the model's context" in win.statusBar().currentMessage()
    msgs = win.store.messages(cid)
    assert [m.role for m in msgs] == ["user", "assistant"] * 6 and all(m.content for m in msgs)
    # the latest reply keeps how many it was written without, and the chat marks them lastingly
    left_out = msgs[-1].stats["left_out"]
    assert left_out == trimmed[-1]["left_out"] > 0
    text = win.chat.toPlainText()
    assert text.count(UNSEEN_LINE) == 1
    # the kept part opens with a question; the one before the cut is a question too (plain text)
    assert msgs[left_out].role == "user" and left_out >= 2
    before, after = msgs[left_out - 2].content, msgs[left_out].content
    assert text.index(before) < text.index(UNSEEN_LINE) < text.index(after)


def test_a_failed_reply_leaves_no_empty_reply_and_its_banner_goes(
    qtbot: Any, make_ctx: Any, default_model_env: Any
) -> None:
    win = small_context_window(qtbot, make_ctx)
    a = win.new_conversation()
    win.store.update_conversation(a, sampling=GREEDY)
    d = wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, "hello world " * 200))
    assert d["status"] == "failed" and win.banner.isVisible() and "context holds 256" in win.banner.text()
    # earlier messages were left out already: a new conversation would fail the same way
    assert "Shorten your message (Ctrl+Shift+E edits it), or raise Context size" in win.banner.text()
    assert [m.role for m in win.store.messages(a)] == ["user"]  # no empty "stopped" reply
    b = win.new_conversation()
    assert not win.banner.isVisible()  # it was about A
    win.store.update_conversation(b, sampling=GREEDY)
    assert wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, "Say hi"))["status"] == COMPLETE
    assert not win.banner.isVisible()


def test_a_rename_in_progress_survives_a_reply_ending(qtbot: Any, window: MainWindow) -> None:
    win = window
    cid = long_conversation(win, "Old title")
    # a prompt whose reply runs for seconds: "Count to twenty." was answered at times with one run of
    # digits (no three words), ended within a second, before the rename began
    type_and_enter(qtbot, win, LONG_PROMPT)
    wait_tokens(qtbot, win, 3)
    win.rename_current()
    editor = win.conv_list.findChild(QLineEdit)
    assert editor is not None and editor.isVisible()
    editor.setText("My title")
    with qtbot.waitSignal(win.reply_finished, timeout=REPLY_TIMEOUT_MS):
        win.stop()  # the reply ends while the title is being typed: the list refreshes
    assert win.conv_list.findChild(QLineEdit) is editor and editor.text() == "My title"
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: win.store.get_conversation(cid).title == "My title", timeout=5000)
    qtbot.waitUntil(
        lambda: any(win.conv_list.item(i).text() == "My title" for i in range(win.conv_list.count()))
    )


def test_copy_mid_reply_copies_the_text_on_screen_and_enter_says_why_it_waits(
    qtbot: Any, window: MainWindow
) -> None:
    win = window
    long_conversation(win)
    type_and_enter(qtbot, win, LONG_PROMPT)
    wait_tokens(qtbot, win, 12)
    win.copy_last_reply()  # tokens reach reply["text"] only through this (GUI) thread's events
    assert win.reply is not None and QApplication.clipboard().text() == win.reply["text"] != ""
    win.prompt.setPlainText("next question")
    assert not win.send()
    assert "still being written" in win.statusBar().currentMessage()
    with qtbot.waitSignal(win.reply_finished, timeout=REPLY_TIMEOUT_MS):
        win.stop()


def test_a_stop_while_the_prompt_is_encoded_stops_the_reply(
    qtbot: Any, window: MainWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Esc pressed together with Enter lands while the worker encodes the prompt, before the engine
    begins the generation (which clears a plain cancel): the long prompt must not run."""
    win = window
    long_conversation(win)
    fmt = win.worker._session.model.chat_format
    encode_prompt = fmt.encode_prompt  # what encode() and the engine's chat() both call
    calls: list[int] = []

    def encode_then_stop(*args: Any, **kw: Any) -> Any:
        ids, plain = encode_prompt(*args, **kw)
        calls.append(len(ids))
        if len(calls) == 2:  # the worker's fit_context counts first; this is the engine's encoding
            win.worker.stop()
        return ids, plain

    monkeypatch.setattr(fmt, "encode_prompt", encode_then_stop)
    d = wait_reply(qtbot, win, lambda: win.send(" ".join(f"word{i}" for i in range(600))))
    assert len(calls) == 2 and calls[-1] > 1000
    assert d["record"]["stop_reason"] == "cancelled" and d["record"]["tokens"] == 0
    assert d["record"]["prompt_tokens"] == 0  # nothing of the prompt ran


def test_the_readout_of_a_reply_stopped_in_its_prompt_or_cut_by_the_context() -> None:
    from trit.app.qt.chat_view import format_readout

    stopped = format_readout(
        {"ttft_ms": 0.0, "prompt_tokens": 0, "prompt_tps": 0.0, "tokens": 0, "decode_tps": 0.0}
        | {"stop_reason": "cancelled", "joules": 1.0}
    )
    assert stopped == "stopped while reading the prompt · 0 tokens · 1 J"
    cut = format_readout(
        {"ttft_ms": 300.0, "prompt_tokens": 40, "prompt_tps": 200.0, "tokens": 215, "decode_tps": 80.0}
        | {"stop_reason": "context"}
    )
    assert (
        cut
        == "TTFT 0.30 s · prompt 200 tok/s · decode 80.0 tok/s · 215 tokens · cut short: the context is full"
    )
