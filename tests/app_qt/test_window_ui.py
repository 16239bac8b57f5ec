"""Window behaviour that needs no model: conversation list (search, rename, delete + Undo),
keyboard (Enter / Shift+Enter / Esc, tab order), accessible names, Markdown and code blocks,
clear messages when the model is missing or unreadable."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox, QApplication, QLabel, QWidget
from trit.app.qt import main_window as mw
from trit.app.qt.chat_view import ChatView, ShownMessage, format_readout, split_markdown
from trit.app.qt.main_window import MainWindow

from .conftest import LOAD_TIMEOUT_MS, open_window

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def win(qtbot: Any, make_ctx: Any) -> MainWindow:
    return open_window(qtbot, make_ctx(), autoload=False)


def titles(win: MainWindow) -> list[str]:
    return [win.conv_list.item(i).text() for i in range(win.conv_list.count())]


def test_the_window_opens_within_the_screen(win: MainWindow) -> None:
    """The first size (1180x760) is cut to the screen's free area: at 150% a 1600x1000 screen
    leaves 1067x667 logical pixels (the offscreen test screen is 800x800)."""
    avail = win.screen().availableGeometry()
    assert avail.width() < 1180  # the check means something on this screen
    assert win.width() <= avail.width() and win.height() <= avail.height()
    assert win.minimumSizeHint().width() <= 800 and win.minimumSizeHint().height() <= 500


def test_on_a_narrow_screen_the_settings_panel_makes_room(
    qtbot: Any, make_ctx: Any, monkeypatch: Any
) -> None:
    """1280x800 at 200% is 640 logical pixels: the three columns need ~750, so the right one
    was cut off. The conversation settings panel is hidden there (Ctrl+Alt+S shows it)."""
    from PySide6.QtCore import QRect
    from PySide6.QtGui import QScreen

    monkeypatch.setattr(QScreen, "availableGeometry", lambda _screen: QRect(0, 0, 640, 400))
    win = open_window(qtbot, make_ctx(), autoload=False)
    assert not win.settings_panel.isVisible() and not win.panel_action.isChecked()
    assert win.minimumSizeHint().width() <= 640 and win.width() <= 640
    win.panel_action.trigger()
    assert win.settings_panel.isVisible()


def test_a_search_that_fills_the_list_says_so(win: MainWindow) -> None:
    from trit.app.qt.main_window import SEARCH_LIMIT

    for i in range(SEARCH_LIMIT + 5):
        win.store.add_message(win.store.create_conversation(f"chat {i}").id, "user", "lighthouse")
    win.search.setText("lighthouse")
    assert win.conv_list.count() == SEARCH_LIMIT and titles(win)[0] == f"chat {SEARCH_LIMIT + 4}"
    assert win.search_note.isVisible() and "type more" in win.search_note.text()
    win.search.setText("chat 10")  # chat 10, chat 100 ... chat 104: all listed, no note
    assert win.conv_list.count() == 6 and not win.search_note.isVisible()
    win.search.setText("")  # no search: every conversation, no note
    assert win.conv_list.count() == SEARCH_LIMIT + 5 and not win.search_note.isVisible()


def test_search_filters_by_title_and_message_text(win: MainWindow) -> None:
    s = win.store
    a = s.create_conversation("Cooking")
    s.add_message(a.id, "user", "how long do I boil an egg")
    b = s.create_conversation("Travel")
    s.add_message(b.id, "user", "trains from Lisbon to Porto")
    s.add_message(a.id, "assistant", "About nine minutes.")
    win.refresh_list()
    assert sorted(titles(win)) == ["Cooking", "Travel"]
    win.search.setText("porto")
    assert titles(win) == ["Travel"]
    assert "Porto" in win.conv_list.item(0).toolTip()
    win.search.setText("nine minutes")
    assert titles(win) == ["Cooking"]
    win.search.setText("cook")
    assert titles(win) == ["Cooking"]
    win.search.setText("nothing like this")
    assert titles(win) == []
    win.search.clear()
    assert len(titles(win)) == 2


def test_an_empty_chat_says_how_to_start(win: MainWindow) -> None:
    assert win.current_id is None
    assert "Start a new chat with Ctrl+N" in win.chat.toPlainText()
    a = win.new_conversation("Empty")
    assert win.current_id == a
    assert win.chat.toPlainText().strip() == "Type a message below to start."
    win.store.add_message(a, "system", "be brief")  # not drawn: the chat still has nothing to show
    win.select_conversation(a)
    assert win.chat.toPlainText().strip() == "Type a message below to start."
    win.store.add_message(a, "user", "hello there")
    win.select_conversation(a)
    text = win.chat.toPlainText()
    assert "hello there" in text and "Type a message below" not in text


def test_delete_with_undo_and_rename(qtbot: Any, win: MainWindow) -> None:
    a = win.new_conversation("First")
    b = win.new_conversation("Second")
    assert win.current_id == b
    win.delete_current()
    assert titles(win) == ["First"] and win.current_id == a
    assert win.undo_button.isVisible() and "Deleted" in win.statusBar().currentMessage()
    win.undo_button.click()
    assert sorted(titles(win)) == ["First", "Second"] and win.current_id == b
    assert not win.undo_button.isVisible()
    # the Delete key in the list deletes; the Undo offer ends after its time
    win.conv_list.setFocus()
    qtbot.keyClick(win.conv_list, Qt.Key.Key_Delete)
    assert "Second" not in titles(win)
    win._undo_timer.setInterval(10)
    win._undo_timer.start()
    qtbot.waitUntil(lambda: not win.undo_button.isVisible(), timeout=2000)
    assert [c.title for c in win.store.list_conversations(deleted=True)] == ["Second"]
    # rename in place (F2 edits the item; committing the edit renames in the store)
    win.select_conversation(a)
    item = win.conv_list.currentItem()
    item.setText("Renamed")
    qtbot.waitUntil(lambda: win.store.get_conversation(a).title == "Renamed", timeout=2000)
    assert titles(win) == ["Renamed"] and win.windowTitle().startswith("Renamed")


def test_enter_sends_shift_enter_makes_a_newline(qtbot: Any, win: MainWindow) -> None:
    sent: list[str] = []
    win.prompt.submitted.connect(lambda: sent.append(win.prompt.toPlainText()))
    win.prompt.setFocus()
    qtbot.keyClicks(win.prompt, "line one")
    qtbot.keyClick(win.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(win.prompt, "line two")
    assert sent == [] and win.prompt.toPlainText() == "line one\nline two"
    qtbot.keyClick(win.prompt, Qt.Key.Key_Return)
    assert sent == ["line one\nline two"]
    # no model loaded: nothing is sent, the text stays, the status bar says why
    assert win.prompt.toPlainText() == "line one\nline two"
    assert "No model" in win.statusBar().currentMessage()


def _focus_target(w: QWidget | None, order: list[QWidget]) -> QWidget | None:
    while w is not None and w not in order:
        w = w.parentWidget()  # a spin box's line edit stands for the spin box
    return w


def test_tab_order_follows_the_layout(qtbot: Any, win: MainWindow) -> None:
    win.new_conversation("One")
    win.activateWindow()
    order = win.tab_order
    reachable = [w for w in order if w.isEnabled() and w.isVisible()]
    win.search.setFocus()
    qtbot.waitUntil(lambda: win.search.hasFocus(), timeout=2000)
    seen: list[QWidget] = [win.search]
    for _ in range(80):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        w = _focus_target(QApplication.focusWidget(), order)
        if w is not None and w is not seen[-1]:
            seen.append(w)
        if w is reachable[-1]:
            break
    assert seen == reachable


def test_tab_leaves_a_long_conversation_after_the_links_on_screen(qtbot: Any, win: MainWindow) -> None:
    """Tab walks the Copy/Edit links from the top of what is on screen (they were unreachable
    from the keyboard), then leaves for the prompt: in a long conversation, not through every
    link above."""
    cid = win.new_conversation("Long")
    for i in range(40):
        win.store.add_message(cid, "user", f"question {i}")
        win.store.add_message(cid, "assistant", f"answer {i}\n\n```\ncode {i}\n```")
    win.select_conversation(cid)  # shown at its end, where a conversation is read
    win.activateWindow()
    win.delete_button.setFocus()  # the widget before the view in the Tab order
    qtbot.waitUntil(win.delete_button.hasFocus, timeout=2000)
    qtbot.keyClick(win.delete_button, Qt.Key.Key_Tab)
    assert win.chat.hasFocus()
    links = win.chat.toHtml().count("<a href")
    tabs = 0
    while not win.prompt.hasFocus() and tabs < links:
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        tabs += 1
    assert win.prompt.hasFocus() and 1 <= tabs < links // 3, (tabs, links)


def test_controls_have_accessible_names(win: MainWindow) -> None:
    for w in win.tab_order + [win.undo_button, win.model_label, win.memory_label, win.chart, win.banner]:
        assert w.accessibleName(), w
    buttons = win.findChildren(QAbstractButton)
    spins = win.findChildren(QAbstractSpinBox)
    unnamed = [b for b in buttons + spins if not b.accessibleName() and b.isVisibleTo(win) and b.text()]
    assert unnamed == []


def test_models_dialog_controls_have_accessible_names(qtbot: Any, win: MainWindow) -> None:
    win.open_models()
    dlg = win._models_dialog
    qtbot.addWidget(dlg)
    for b in dlg.findChildren(QAbstractButton):
        if b.text():
            assert b.accessibleName(), b.text()
    assert dlg.tree.accessibleName() and dlg.bar.accessibleName()
    dlg.close()


def test_markdown_and_copyable_code_blocks(qtbot: Any) -> None:
    view = ChatView()
    qtbot.addWidget(view)
    reply = "Here is **bold** text.\n\n```python\nprint('hi')\nx = 1\n```\n\nAnd a list:\n\n- one\n- two\n"
    view.show_messages(
        [
            ShownMessage(1, "user", "show me code"),
            ShownMessage(2, "assistant", reply, stats={"ttft_ms": 410, "tokens": 9, "decode_tps": 40.0}),
        ]
    )
    text = view.toPlainText()
    assert "**" not in text and "bold" in text and "print('hi')\nx = 1" in text and "```" not in text
    assert view.code_blocks() == ["print('hi')\nx = 1"]
    assert "TTFT 0.41 s" in text and "decode 40.0 tok/s" in text and "Regenerate" in text
    view.anchorClicked.emit(QUrl("copy-code:0"))
    assert QApplication.clipboard().text() == "print('hi')\nx = 1"
    copied: list[int] = []
    view.copy_message.connect(copied.append)
    view.anchorClicked.emit(QUrl("copy-msg:2"))
    assert copied == [2]


def test_a_long_code_block_renders_as_fast_as_prose(qtbot: Any) -> None:
    view = ChatView()
    qtbot.addWidget(view)
    view.resize(700, 600)
    view.show()
    n = 4000  # was about 10 s (quadratic in the lines); prose of the same size takes ~0.1 s
    code = "\n".join(f"x{i} = {i}" for i in range(n))

    def render(text: str) -> float:
        t0 = time.perf_counter()
        view.show_messages([ShownMessage(1, "user", text)])
        QApplication.processEvents()
        return time.perf_counter() - t0

    t_prose = render("\n\n".join(f"x{i} = {i}" for i in range(n)))
    t_code = render(f"```python\n{code}\n```")
    assert t_code < 2.0 and t_code < 5 * t_prose + 0.25, (t_code, t_prose)
    assert view.code_blocks() == [code]
    assert "x0 = 0\nx1 = 1\n" in view.toPlainText() and f"x{n - 1} = {n - 1}" in view.toPlainText()
    mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont).family()
    doc = view.document()
    lines = {doc.findBlockByNumber(k).text(): doc.findBlockByNumber(k) for k in range(doc.blockCount())}
    for line in ("x0 = 0", f"x{n // 2} = {n // 2}", f"x{n - 1} = {n - 1}"):  # every line is monospace
        assert lines[line].begin().fragment().charFormat().font().family() == mono


def test_a_very_long_list_shows_as_plain_text_without_freezing(qtbot: Any) -> None:
    from trit.app.qt.chat_view import MARKDOWN_MAX_LINES

    view = ChatView()
    qtbot.addWidget(view)
    view.resize(700, 600)
    view.show()
    short = "\n".join(f"- item {i}" for i in range(5))
    view.show_messages([ShownMessage(1, "user", short)])
    doc = view.document()
    assert any(doc.findBlockByNumber(k).textList() is not None for k in range(doc.blockCount()))
    n = 8000  # Qt's Markdown import took ~4 s for this many items (quadratic)
    assert n > MARKDOWN_MAX_LINES
    t0 = time.perf_counter()
    view.show_messages([ShownMessage(1, "user", "\n".join(f"- item {i}" for i in range(n)))])
    QApplication.processEvents()
    assert time.perf_counter() - t0 < 2.0
    text = view.toPlainText()
    assert "- item 0\n- item 1\n" in text and f"- item {n - 1}" in text  # every line, as typed


def test_streaming_redraws_only_the_reply(qtbot: Any) -> None:
    view = ChatView()
    qtbot.addWidget(view)
    view.show_messages([ShownMessage(1, "user", "hi")])
    renders = view.renders
    view.begin_stream(2)
    for piece in ["Sure", ", here:", "\n\n```sh\nls", " -l\n"]:
        view.append_stream(piece)
    qtbot.waitUntil(lambda: "ls -l" in view.toPlainText(), timeout=2000)
    assert view.code_blocks() == ["ls -l"]  # an unclosed fence renders as code while it streams
    view.append_stream("```\nDone.")
    view.end_stream()
    assert view.renders == renders and view.toPlainText().rstrip().endswith("Done.")
    assert "hi" in view.toPlainText()


def test_break_long_runs() -> None:
    from trit.app.qt.chat_view import break_long_runs

    assert break_long_runs("short\nlines") == "short\nlines"
    blob = "x" * 4500
    assert break_long_runs(blob, limit=2000) == "\n".join(["x" * 2000, "x" * 2000, "x" * 500])
    # prose is left alone however long its lines: Markdown in it (**bold**, `code`) stays whole
    prose = " ".join(["some **important bold phrase** and `code`"] * 200)
    assert break_long_runs(prose, "\n\n", limit=100) == prose
    mixed = "see " + "y" * 250 + " there"
    assert (
        break_long_runs(mixed, "\n\n", limit=100)
        == "see " + "\n\n".join(["y" * 100, "y" * 100, "y" * 50]) + " there"
    )


def test_a_huge_line_is_shown_in_paragraphs_and_copied_whole(qtbot: Any, win: MainWindow) -> None:
    """A 200k-character line without a break took 10 s to lay out as one paragraph."""
    from trit.app.qt.chat_view import LONG_RUN

    cid = win.new_conversation()
    blob = "0123456789abcdef" * 12500
    code = "```js\n" + "var a=1;" * 25000 + "\n```"
    m = win.store.add_message(cid, "user", blob + "\n\n" + code)
    win.select_conversation(cid)
    assert win.chat.document().blockCount() > len(blob) // LONG_RUN
    assert win.chat.toPlainText().replace("\n", "").count("0123456789abcdef") == 12500
    win.copy_message(m.id)
    from PySide6.QtWidgets import QApplication

    assert QApplication.clipboard().text() == blob + "\n\n" + code


def test_split_markdown_and_readout() -> None:
    segs = split_markdown("a\n```js\nx()\n```\nb")
    assert [(s.kind, s.text, s.lang) for s in segs] == [
        ("text", "a\n", ""),
        ("code", "x()", "js"),
        ("text", "\nb", ""),
    ]
    assert [s.kind for s in split_markdown("```\nopen")] == ["code"]
    line = format_readout(
        {
            "ttft_ms": 500,
            "prompt_tokens": 20,
            "prompt_tps": 80,
            "tokens": 10,
            "decode_tps": 30,
            "joules": 3.0,
            "joules_per_token": 0.3,
            "energy_label": "measured: RAPL package",
        }
    )
    assert (
        line
        == "TTFT 0.50 s · prompt 80 tok/s · decode 30.0 tok/s · 10 tokens · 3 J · 0.3 J/token · measured: RAPL package"
    )


def test_the_readout_writes_large_energy_and_one_token_for_people() -> None:
    # was "1.5e+03 J", "2.4e+02 J/token" and "1 tokens"
    long = {"ttft_ms": 900, "prompt_tokens": 40, "prompt_tps": 50, "tokens": 512, "decode_tps": 9.0}
    line = format_readout({**long, "joules": 1534.0, "joules_per_token": 1534.0 / 512, "energy_label": "m"})
    assert line == "TTFT 0.90 s · prompt 50 tok/s · decode 9.0 tok/s · 512 tokens · 1.53 kJ · 3 J/token · m"
    one = {"ttft_ms": 900, "prompt_tokens": 3000, "prompt_tps": 50, "tokens": 1, "decode_tps": 9.0}
    line = format_readout({**one, "joules": 240.0, "joules_per_token": 240.0, "energy_label": "e"})
    assert line == "TTFT 0.90 s · prompt 50 tok/s · 1 token · 240 J · 240 J/token · e"


def test_missing_default_model_says_how_to_fix_it(
    qtbot: Any, make_ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trit.default_model

    monkeypatch.setattr(trit.default_model, "default_model_path", lambda: None)
    win = open_window(qtbot, make_ctx(), autoload=True)
    assert win.banner.isVisible()
    text = win.banner.text()
    assert "not installed" in text and "fetch_default_model.py" in text and "Models" in text
    assert not win.send_button.isEnabled() and win.model_label.text() == "No model"


def test_unreadable_model_shows_the_engine_message(qtbot: Any, make_ctx: Any, tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 60)
    win = open_window(qtbot, make_ctx(), autoload=False)
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        win.load_model(str(bad))
    assert "error" in blocker.args[0]
    assert win.banner.isVisible() and "broken.gguf" in win.banner.text() and "Models" in win.banner.text()
    assert not win.send_button.isEnabled()


def test_worker_thread_ends_on_close(qtbot: Any, make_ctx: Any) -> None:
    win = open_window(qtbot, make_ctx(), autoload=False)
    assert win.worker.thread_running
    win.close()
    assert not win.worker.thread_running


def test_resolve_model_path_prefers_explicit_then_settings(
    make_ctx: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import trit.default_model

    monkeypatch.setattr(trit.default_model, "default_model_path", lambda: tmp_path / "bundled.gguf")
    ctx = make_ctx()
    assert mw.resolve_model_path(ctx) == str(tmp_path / "bundled.gguf")
    chosen = tmp_path / "chosen.gguf"
    chosen.write_bytes(b"x")
    ctx.settings = dataclasses.replace(ctx.settings, default_model=str(chosen))
    assert mw.resolve_model_path(ctx) == str(chosen)
    assert mw.resolve_model_path(ctx, "/explicit.gguf") == "/explicit.gguf"


def test_signal_emit_keeps_refcounts() -> None:
    """PySide6 6.12.0's Signal.emit() returns True without a reference of its own, so every emit
    drops one reference to True and a long chat ends in "Fatal Python error: bool_dealloc"
    (pyproject excludes that version). The worker emits a signal per token: guard against it."""
    import sys

    from PySide6.QtCore import QObject, Signal

    class Emitter(QObject):
        number = Signal(int)
        flag = Signal(bool)

    e = Emitter()
    before = sys.getrefcount(True), sys.getrefcount(False)
    for _ in range(1000):
        e.number.emit(1)
        e.flag.emit(False)
    after = sys.getrefcount(True), sys.getrefcount(False)
    assert after[0] >= before[0] - 2 and after[1] >= before[1] - 2, (before, after)


def test_settings_panel_shows_what_a_new_chat_gets(win: MainWindow) -> None:
    # no conversation yet: the panel shows the new chat's defaults, not the spin boxes' minimums
    expected = win._default_sampling(win.conversation_model(None))
    p = win.settings_panel

    def shown() -> tuple[str, float, float, int]:
        return p.system.toPlainText(), p.temperature.value(), p.top_p.value(), p.max_tokens.value()

    want = ("", expected.temperature, expected.top_p, expected.max_tokens)
    assert win.current_id is None and shown() == want and expected.max_tokens > 1
    # a conversation with its own settings, then deleted: back to the defaults
    cid = win.new_conversation("Own settings")
    win.store.update_conversation(cid, system_prompt="Be brief.", sampling=mw.Sampling(0.3, 0.5, 7))
    win.select_conversation(cid)
    assert shown() == ("Be brief.", 0.3, 0.5, 7)
    win.select_conversation(None)
    assert shown() == want
    # Apply without a conversation creates one with what the panel shows
    p.apply_button.click()
    conv = win.store.get_conversation(win.current_id)
    assert (conv.system_prompt, conv.sampling) == ("", expected)


def test_help_menu_lists_every_shortcut_and_says_where_data_lives(qtbot: Any, win: MainWindow) -> None:
    from PySide6.QtGui import QAction, QKeySequence
    from PySide6.QtWidgets import QDialog, QTableWidget

    from trit import __version__

    menus = [a.text().replace("&", "") for a in win.menuBar().actions()]
    assert menus == ["File", "Edit", "View", "Help"]
    rows = dict(win.shortcut_rows())
    # every menu action with a shortcut is listed, with its keys
    for a in win.findChildren(QAction):
        keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in a.shortcuts() if not k.isEmpty()]
        if keys and a is not win.delete_action:
            assert rows[a.text().replace("&", "").rstrip("…")] == ", ".join(keys)
    assert rows["Quit"] == "Ctrl+Q"
    assert rows["New chat"] == QKeySequence(QKeySequence.StandardKey.New).toString(
        QKeySequence.SequenceFormat.NativeText
    )
    assert rows["Send the message"] == "Enter" and rows["Keyboard shortcuts"] == "Ctrl+/"
    shortcuts = win.findChild(QAction, "shortcuts")
    shortcuts.trigger()
    dlg = next(d for d in win.findChildren(QDialog) if d.windowTitle() == "Keyboard shortcuts")
    assert dlg.isVisible() and dlg.findChild(QTableWidget).rowCount() == len(win.shortcut_rows())
    dlg.close()
    text = win.about_text()
    assert f"Trit {__version__}" in text and str(win.store.path) in text
    assert str(win.ctx.library.folder) in text and "MIT" in text


def test_status_bar_messages_keep_their_room_beside_a_long_model_name(qtbot: Any, win: MainWindow) -> None:
    win.resize(1180, 760)
    long_name = "a-very-long-model-file-name-that-goes-on-and-on-" * 3 + "Q4_1.gguf · avx2 · 2 threads"
    win.model_label.setText(long_name)
    notice = "This conversation outgrew the model's context: the model does not see its first 4 messages"
    win.statusBar().showMessage(notice)
    qtbot.waitUntil(lambda: win.model_label.width() == win.model_label.maximumWidth() == win.width() // 4)
    assert win.model_label.text() == long_name  # the whole name, for code and the tooltip
    shown = QLabel.text(win.model_label)
    assert shown.endswith("threads") and "…" in shown and win.model_label.toolTip() == long_name
    free = win.width() - win.model_label.width() - win.memory_label.width()
    assert win.statusBar().fontMetrics().horizontalAdvance(notice) < free


def _spoken_name(w: QWidget) -> str:
    from PySide6.QtGui import QAccessible

    iface = QAccessible.queryAccessibleInterface(w)
    return iface.text(QAccessible.Text.Name)


def test_screen_readers_read_the_labels_words_not_only_their_purpose(win: MainWindow) -> None:
    """An accessible name replaces a label's text for a screen reader: the model, memory and
    reply-progress labels and the problem banner were read as "Model", "Memory use", "Reply
    progress" and "Problem", never what they said."""
    win.model_label.setText("SmolLM2-135M-Instruct.Q4_1.gguf · 2 threads")
    assert _spoken_name(win.model_label) == "Model: SmolLM2-135M-Instruct.Q4_1.gguf · 2 threads"
    win.model_label.resize(60, 20)  # elided on the screen: the whole text is still read
    assert "…" in QLabel.text(win.model_label) and "2 threads" in _spoken_name(win.model_label)
    win.live_label.setText("83 tokens · 23.4 tok/s")
    assert _spoken_name(win.live_label) == "Reply progress: 83 tokens · 23.4 tok/s"
    win.banner.show_problem("model.gguf is not on this computer.", "Choose a model in Models.")
    spoken = _spoken_name(win.banner)
    assert "model.gguf is not on this computer." in spoken and "Choose a model in Models." in spoken


def test_ctrl_z_brings_back_a_deleted_conversation_and_the_keyboard_stays_on_it(
    qtbot: Any, win: MainWindow
) -> None:
    a = win.new_conversation("First")
    win.new_conversation("Second")
    win.activateWindow()
    win.conv_list.setFocus()
    qtbot.waitUntil(win.conv_list.hasFocus, timeout=2000)
    assert not win.undo_action.isEnabled()
    qtbot.keyClick(win.conv_list, Qt.Key.Key_Delete)
    assert titles(win) == ["First"] and win.undo_action.isEnabled()
    assert "Ctrl+Z" in win.statusBar().currentMessage()
    qtbot.keyClick(win.conv_list, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert sorted(titles(win)) == ["First", "Second"] and not win.undo_action.isEnabled()
    assert win.conv_list.hasFocus() and win.conv_list.currentItem().text() == "Second"
    # in the message box Ctrl+Z undoes typing, not a delete; with nothing left to undo there it
    # brings the conversation back (it did nothing: the box took the key anyway)
    win.select_conversation(a)
    win.delete_current()
    win.prompt.setFocus()
    qtbot.waitUntil(win.prompt.hasFocus, timeout=2000)
    qtbot.keyClicks(win.prompt, "abc")
    qtbot.keyClick(win.prompt, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert win.prompt.toPlainText() == "" and "First" not in titles(win)
    while win.prompt.document().isUndoAvailable():
        win.prompt.undo()
    qtbot.keyClick(win.prompt, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert "First" in titles(win) and win.prompt.toPlainText() == "" and win.prompt.hasFocus()
    # the same from the empty search box
    win.delete_current(a)
    win.search.setFocus()
    qtbot.waitUntil(win.search.hasFocus, timeout=2000)
    qtbot.keyClick(win.search, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert "First" in titles(win)


def test_the_window_opens_with_the_keyboard_in_the_message_box(qtbot: Any, make_ctx: Any) -> None:
    ctx = make_ctx()
    ctx.store.create_conversation("Old chat")
    win = open_window(qtbot, ctx, autoload=False)
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is not None, timeout=2000)
    assert QApplication.focusWidget() is win.prompt


def test_esc_in_the_search_box_clears_the_search(qtbot: Any, win: MainWindow) -> None:
    win.new_conversation("Cooking")
    win.new_conversation("Travel")
    win.activateWindow()
    win.search.setFocus()
    qtbot.waitUntil(win.search.hasFocus, timeout=2000)
    qtbot.keyClicks(win.search, "cook")
    assert titles(win) == ["Cooking"]
    qtbot.keyClick(win.search, Qt.Key.Key_Escape)
    assert win.search.text() == "" and sorted(titles(win)) == ["Cooking", "Travel"]


def test_at_a_large_font_the_settings_panel_and_shortcuts_fit_their_words(qtbot: Any, make_ctx: Any) -> None:
    """At 20 pt the panel stayed at 220-240 px ("Temperature" showed as "Temp") and the
    shortcuts dialog's 560 px pushed the Keys column off."""
    app = QApplication.instance()
    old = app.font()
    big = app.font()
    big.setPointSize(20)
    app.setFont(big)
    try:
        win = open_window(qtbot, make_ctx(), autoload=False)
        win.resize(2400, 1000)
        panel = win.settings_panel
        label_w = panel.fontMetrics().horizontalAdvance("Temperature")
        assert panel.minimumWidth() >= panel.minimumSizeHint().width() > label_w
        qtbot.waitUntil(lambda: panel.width() >= panel.minimumSizeHint().width(), timeout=2000)
        dlg = win.show_shortcuts()
        qtbot.addWidget(dlg)
        from PySide6.QtWidgets import QTableWidget

        table = dlg.findChild(QTableWidget)
        cols = sum(table.columnWidth(c) for c in range(table.columnCount()))
        room = win.screen().availableGeometry().width() - 40
        assert dlg.width() >= min(cols, room - 60)
    finally:
        app.setFont(old)


def test_a_model_file_name_that_is_not_utf8_is_refused_with_what_to_do(
    qtbot: Any, make_ctx: Any, tmp_path: Path
) -> None:
    """A Latin-1 name (mod\\xe8le.gguf) reaches Python as a lone surrogate: with -m, the banner
    said the file was missing and New chat raised UnicodeEncodeError in the store."""
    bad = str(tmp_path / "mod\udce8le.gguf")
    win = open_window(qtbot, make_ctx(), model=bad, autoload=False)
    assert win.banner.isVisible() and "not valid UTF-8" in win.banner.accessibleName()
    assert (
        "mod\ufffdle.gguf" in win.banner.accessibleName() and "Rename the file" in win.banner.accessibleName()
    )
    cid = win.new_conversation()  # with the default model, not the refused one
    assert win.store.get_conversation(cid).model_id != bad
    before = win.ctx.settings.default_model
    win.banner.hide()
    win.use_model(bad)
    assert win.banner.isVisible() and win.ctx.settings.default_model == before
    assert win.store.get_conversation(cid).model_id != bad


def test_titles_and_export_names_keep_every_scripts_characters_whole(
    qtbot: Any, win: MainWindow, monkeypatch: Any
) -> None:
    """A title was cut inside a family emoji (a dangling joiner), and the export's proposed file
    name turned combining vowel signs into "_" (नमस्ते -> नमस_त_)."""
    from PySide6.QtWidgets import QFileDialog

    win.model_info = {"name": "m"}  # send() needs a ready model: the reply itself is not wanted
    monkeypatch.setattr(type(win), "model_ready", property(lambda self: True))
    monkeypatch.setattr(win, "_start_reply", lambda *a, **k: None)
    cid = win.new_conversation()
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    win.send("x" * 46 + family + " and the rest of a long first line")
    title = win.store.get_conversation(cid).title
    assert title in ("x" * 46 + "…", "x" * 46 + family + "…"), title
    win.store.rename_conversation(cid, "नमस्ते दुनिया")
    proposed: list[str] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: proposed.append(a[2]) or ("", ""))
    win.export_conversation()
    assert Path(proposed[0]).name == "नमस्ते दुनिया.md"


def test_a_refused_send_gives_the_keyboard_back_to_the_message_box(qtbot: Any, win: MainWindow) -> None:
    """Send with only spaces in the box left the keyboard on the button: text typed next was lost."""
    win.new_conversation()
    win.activateWindow()
    win.prompt.setPlainText("   ")
    win.send_button.setEnabled(True)  # no model here: the button is off; the click is what counts
    win.send_button.setFocus()
    qtbot.waitUntil(win.send_button.hasFocus, timeout=2000)
    qtbot.mouseClick(win.send_button, Qt.MouseButton.LeftButton)
    assert win.prompt.hasFocus()
