"""The conversation view and the prompt box for every script and every way of working: paragraphs
in scripts written without spaces, right-to-left lines, keyboard focus and links, copying, font
size, palette changes, screen reader announcements."""

from __future__ import annotations

import base64
import time
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QApplication
from trit.app.qt.chat_view import LONG_RUN, ChatView, ShownMessage, break_long_runs
from trit.app.qt.colours import contrast


def shown_view(qtbot: Any, *messages: ShownMessage) -> ChatView:
    view = ChatView()
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.show()
    qtbot.waitExposed(view)
    view.show_messages(list(messages))
    return view


def test_a_long_chinese_paragraph_stays_one_paragraph_with_its_bold(qtbot: Any) -> None:
    """Chinese has no spaces: a 3000-character paragraph was cut every LONG_RUN characters into
    paragraphs, and a **bold** across a cut was shown with its asterisks."""
    sentence = "人工智能是计算机科学的一个分支，它企图了解智能的实质，并生产出一种新的能以人类智能相似的方式做出反应的智能机器。"
    para = (sentence * 60)[:990] + "**重要提示：请务必仔细阅读**" + (sentence * 60)[:2000]
    assert len(para) > 3 * LONG_RUN - 30
    view = shown_view(qtbot, ShownMessage(1, "assistant", para))
    text = view.toPlainText()
    assert "**" not in text
    doc = view.document()
    blocks = [doc.findBlockByNumber(k) for k in range(doc.blockCount())]
    body = [b for b in blocks if "重要提示" in b.text()]
    assert len(body) == 1 and body[0].text() == para.replace("**", "")
    bold = [text for text, weight in _fragments(body[0]) if weight >= QFont.Weight.Bold]
    assert bold == ["重要提示：请务必仔细阅读"]


def _fragments(block: Any) -> list[tuple[str, int]]:
    """(text, font weight) of each fragment of block."""
    out = []
    it = block.begin()
    while not it.atEnd():
        f = it.fragment()
        out.append((f.text(), f.charFormat().fontWeight()))
        it += 1
    return out


def test_thai_and_japanese_runs_are_not_cut_but_blobs_beside_them_are() -> None:
    thai = "ภาษาไทยเป็นภาษาที่ไม่มีการเว้นวรรคระหว่างคำ" * 60
    ja = "日本語の文章です。" * 400
    assert break_long_runs(thai, "\n\n") == thai and break_long_runs(ja, "\n\n") == ja
    blob = "ab" * 1200
    assert (
        break_long_runs("中文" + blob + "中文", "\n\n")
        == "中文"
        + "\n\n".join([blob[:LONG_RUN], blob[LONG_RUN : 2 * LONG_RUN], blob[2 * LONG_RUN :]])
        + "中文"
    )


def test_cuts_never_split_a_grapheme_or_a_bold_span() -> None:
    run = "x" + "e\u0301" * 1000  # every other character is a combining accent
    for piece in break_long_runs(run, "\n").split("\n"):
        assert not piece.startswith("\u0301") and len(piece) <= LONG_RUN
    emoji = "👍🏿" * 800  # thumbs up + skin tone: one cluster each
    for piece in break_long_runs(emoji, "\n").split("\n"):
        assert not piece.startswith("\U0001f3ff")
    bold = "**" + "a" * 1500 + "**"
    assert (
        break_long_runs(bold, "\n\n", inline_sep="\u2028") == "**" + "a" * 998 + "\u2028" + "a" * 502 + "**"
    )


def test_a_bold_blob_keeps_its_bold_and_a_base64_blob_still_lays_out_fast(qtbot: Any) -> None:
    view = shown_view(qtbot, ShownMessage(1, "assistant", "**" + "a" * 1500 + "**"))
    assert "**" not in view.toPlainText()
    blob = base64.b64encode(bytes(range(256)) * 15).decode()[:5000]
    hexrun = "0123456789abcdef" * 12500  # uncut: 11 s to lay out and paint
    for b in (blob, hexrun):
        t0 = time.perf_counter()
        view.show_messages([ShownMessage(1, "assistant", b)])
        QApplication.processEvents()
        view.grab()
        view.scroll_to_bottom()
        view.grab()
        assert time.perf_counter() - t0 < 2.0
        assert view.document().blockCount() > len(b) // LONG_RUN


def test_the_prompt_takes_the_direction_of_its_text(qtbot: Any) -> None:
    """The message box kept a Hebrew or Arabic message flush left (the chat view right-aligns
    it). The box follows its text's first strong character, as chat apps do; per line it would
    need a QTextEdit, which took 4 s to paste 1 MB."""
    from PySide6.QtCore import QMimeData, Qt
    from PySide6.QtWidgets import QPlainTextEdit
    from trit.app.qt.chat_view import PromptEdit

    box = PromptEdit()
    # lays out lazily: as a QTextEdit, pasting 1 MB froze the window 4 s (2M characters: 12 s)
    assert isinstance(box, QPlainTextEdit)
    qtbot.addWidget(box)
    box.resize(600, 200)
    box.show()
    qtbot.waitExposed(box)
    doc = box.document()
    width = box.viewport().width()

    def lefts() -> list[float]:
        QApplication.processEvents()
        out = []
        for k in range(doc.blockCount()):
            line = doc.findBlockByNumber(k).layout().lineAt(0)
            x = line.x() + doc.documentLayout().blockBoundingRect(doc.findBlockByNumber(k)).left()
            # where the text is drawn: the line's alignment offset is applied when it is painted
            right = doc.defaultTextOption().alignment() & Qt.AlignmentFlag.AlignRight
            out.append(x + (line.width() - line.naturalTextWidth() if right else 0))
        return out

    box.setPlainText("مرحبا، كيف حالك اليوم؟\nשלום, מה שלומך?\nHello 123")
    assert all(x > width / 2 for x in lefts()), (lefts(), width)
    assert doc.defaultTextOption().textDirection() == Qt.LayoutDirection.RightToLeft
    box.setPlainText("Hello 123\nשלום, מה שלומך?")
    assert all(x < 20 for x in lefts()), lefts()
    box.setPlainText("123 ")  # no strong character yet: left to right
    assert doc.defaultTextOption().textDirection() == Qt.LayoutDirection.LeftToRight
    box.moveCursor(box.textCursor().MoveOperation.End)
    box.insertPlainText("שלום")  # typed: the first strong character decides
    assert doc.defaultTextOption().textDirection() == Qt.LayoutDirection.RightToLeft
    # still plain text: pasted HTML arrives as its text
    box.clear()
    mime = QMimeData()
    mime.setHtml("<b>bold</b> <i>it</i>")
    mime.setText("bold it")
    box.insertFromMimeData(mime)
    assert box.toPlainText() == "bold it"
    cur = box.textCursor()
    cur.setPosition(2)
    assert cur.charFormat().fontWeight() < QFont.Weight.Bold


def _dark_palette() -> Any:
    from PySide6.QtGui import QColor, QPalette

    pal = QPalette()
    roles = QPalette.ColorRole
    for role, name in [
        (roles.Window, "#2b2b2b"),
        (roles.WindowText, "#ffffff"),
        (roles.Base, "#1e1e1e"),
        (roles.AlternateBase, "#262626"),
        (roles.Text, "#ffffff"),
        (roles.Button, "#353535"),
        (roles.ButtonText, "#ffffff"),
        (roles.Highlight, "#3daee9"),
        (roles.HighlightedText, "#000000"),
        (roles.Link, "#6cb4ff"),
        (roles.Mid, "#505050"),
    ]:
        pal.setColor(role, QColor(name))
    placeholder = QColor("#ffffff")
    placeholder.setAlpha(128)
    pal.setColor(roles.PlaceholderText, placeholder)
    return pal


def test_keyboard_focus_on_the_conversation_shows_a_ring_in_the_highlight_colour(qtbot: Any) -> None:
    """Tab to the conversation changed no pixel."""
    from PySide6.QtGui import QColor, QPalette
    from PySide6.QtWidgets import QLineEdit, QVBoxLayout, QWidget

    for pal in (QPalette(QApplication.palette()), _dark_palette()):
        box = QWidget()
        qtbot.addWidget(box)
        box.setPalette(pal)
        lay = QVBoxLayout(box)
        other = QLineEdit()
        view = ChatView()
        lay.addWidget(other)
        lay.addWidget(view)
        view.show_messages([ShownMessage(1, "user", "hi"), ShownMessage(2, "assistant", "hello")])
        box.resize(500, 400)
        box.show()
        box.activateWindow()
        qtbot.waitExposed(box)
        other.setFocus()
        qtbot.waitUntil(other.hasFocus, timeout=2000)
        off = view.grab().toImage()
        view.setFocus(Qt.FocusReason.TabFocusReason)
        qtbot.waitUntil(view.hasFocus, timeout=2000)
        on = view.grab().toImage()
        highlight = pal.color(QPalette.ColorRole.Highlight).rgb()
        h = on.height() // 2
        ring = [on.pixel(x, h) for x in range(3)]  # the frame line and the margin inside it
        assert ring == [highlight] * 3, ([QColor(c).name() for c in ring], QColor(highlight).name())
        assert all(off.pixel(x, h) != highlight for x in range(3))
        other.setFocus()
        qtbot.waitUntil(other.hasFocus, timeout=2000)
        assert view.grab().toImage() == off  # the ring goes with the focus


def test_code_blocks_are_as_large_as_the_text_around_them(qtbot: Any) -> None:
    """Code came in the system monospace font at its own size (9 pt) beside 20 pt text."""
    from PySide6.QtGui import QFontDatabase

    view = ChatView()
    qtbot.addWidget(view)
    big = QFont(view.font())
    big.setPointSize(20)
    view.setFont(big)
    view.show_messages([ShownMessage(1, "assistant", "Code:\n\n```\ncode here\n```")])
    doc = view.document()
    block = next(
        doc.findBlockByNumber(k)
        for k in range(doc.blockCount())
        if doc.findBlockByNumber(k).text() == "code here"
    )
    font = block.begin().fragment().charFormat().font()
    assert font.pointSizeF() == 20
    assert font.family() == QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont).family()


def test_switching_to_a_dark_palette_redraws_code_links_and_readouts_where_the_reader_was(qtbot: Any) -> None:
    """Code blocks stayed light with white text, links dark blue and readouts black."""
    from PySide6.QtGui import QPalette

    msgs = []
    for i in range(12):
        msgs.append(ShownMessage(2 * i, "user", f"question {i}"))
        reply = f"See [the docs](https://example.com/{i}).\n\n```python\nprint({i})\n```"
        msgs.append(
            ShownMessage(
                2 * i + 1, "assistant", reply, stats={"ttft_ms": 300, "tokens": 9, "decode_tps": 30.0}
            )
        )
    view = shown_view(qtbot, *msgs)
    bar = view.verticalScrollBar()
    assert bar.maximum() > 200
    bar.setValue(bar.maximum() // 2)
    value = bar.value()
    light = QPalette(QApplication.palette())
    dark = _dark_palette()
    try:
        QApplication.setPalette(dark)
        QApplication.processEvents()
        doc = view.document()
        frames = doc.rootFrame().childFrames()
        assert len(frames) == 12
        assert all(
            f.frameFormat().background().color() == dark.color(QPalette.ColorRole.AlternateBase)
            for f in frames
        )
        links, muted = [], []
        for k in range(doc.blockCount()):
            it = doc.findBlockByNumber(k).begin()
            while not it.atEnd():
                f = it.fragment()
                fmt = f.charFormat()
                if fmt.anchorHref().startswith("https:"):
                    links.append(fmt.foreground().color().name())
                if "TTFT" in f.text():
                    muted.append(fmt.foreground().color())
                it += 1
        assert links == [dark.color(QPalette.ColorRole.Link).name()] * 12
        assert len(muted) == 12
        base = dark.color(QPalette.ColorRole.Base)
        assert all(c.name() not in ("#ffffff", "#000000") and contrast(c, base) >= 4.5 for c in muted)
        assert bar.value() == value  # where the reader was
    finally:
        QApplication.setPalette(light)


def test_muted_text_has_enough_contrast_in_the_light_palette(qtbot: Any) -> None:
    from PySide6.QtGui import QColor, QPalette

    view = shown_view(
        qtbot, ShownMessage(1, "assistant", "hi", stats={"ttft_ms": 300, "tokens": 9, "decode_tps": 30.0})
    )
    muted = QColor(view._muted())
    base = view.palette().color(QPalette.ColorRole.Base)
    assert contrast(muted, base) >= 4.5 and muted != view.palette().color(QPalette.ColorRole.Text)


def test_announce_posts_a_polite_announcement_for_screen_readers(qtbot: Any, monkeypatch: Any) -> None:
    from PySide6.QtGui import QAccessible

    view = ChatView()
    qtbot.addWidget(view)
    posted: list[tuple[Any, str, Any, Any]] = []

    def update(event: Any) -> None:
        posted.append((event.type(), event.message(), event.politeness(), event.object()))

    monkeypatch.setattr(QAccessible, "updateAccessibility", update)
    view.announce("Reply finished")
    assert posted == [
        (QAccessible.Event.Announcement, "Reply finished", QAccessible.AnnouncementPoliteness.Polite, view)
    ]


def _conversation_box(qtbot: Any) -> tuple[Any, Any, ChatView, Any]:
    """A line edit, the view with two replies holding code, another line edit: the Tab chain."""
    from PySide6.QtWidgets import QLineEdit, QVBoxLayout, QWidget

    box = QWidget()
    qtbot.addWidget(box)
    lay = QVBoxLayout(box)
    before, view, after = QLineEdit(), ChatView(), QLineEdit()
    for w in (before, view, after):
        lay.addWidget(w)
    view.show_messages(
        [
            ShownMessage(1, "user", "first question"),
            ShownMessage(2, "assistant", "First reply:\n\n```python\nprint('one')\n```"),
            ShownMessage(3, "user", "second question"),
            ShownMessage(4, "assistant", "Second reply:\n\n```sh\necho two\n```"),
        ]
    )
    box.resize(500, 700)
    box.show()
    box.activateWindow()
    qtbot.waitExposed(box)
    return box, before, view, after


def test_tab_walks_the_links_enter_follows_them_and_tab_leaves_after_the_last(qtbot: Any) -> None:
    """The code blocks' and earlier messages' Copy links could not be reached from the keyboard."""
    _box, before, view, after = _conversation_box(qtbot)
    before.setFocus()
    qtbot.waitUntil(before.hasFocus, timeout=2000)
    qtbot.keyClick(before, Qt.Key.Key_Tab)
    assert view.hasFocus()
    hrefs = []
    for _ in range(20):
        qtbot.keyClick(view, Qt.Key.Key_Tab)
        if not view.hasFocus():
            break
        cur = view.textCursor()
        cur.setPosition(min(cur.position(), cur.anchor()) + 1)
        hrefs.append(cur.charFormat().anchorHref())
    assert after.hasFocus()  # no trap
    assert hrefs == [
        "copy-msg:1",
        "copy-msg:2",
        "copy-code:0",
        "copy-msg:3",
        "edit:3",
        "copy-msg:4",
        "regenerate:",
        "copy-code:1",
    ]
    # back with Shift+Tab to the last code block's Copy, and Enter copies it
    qtbot.keyClick(after, Qt.Key.Key_Backtab)
    assert view.hasFocus()
    qtbot.keyClick(view, Qt.Key.Key_Backtab)
    QApplication.clipboard().setText("")
    qtbot.keyClick(view, Qt.Key.Key_Return)
    assert QApplication.clipboard().text() == "echo two"
    for _ in range(20):
        qtbot.keyClick(view, Qt.Key.Key_Backtab)
        if not view.hasFocus():
            break
    assert before.hasFocus()


def test_the_menu_key_offers_copy_message_and_copy_code_block(qtbot: Any) -> None:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QMenu

    _box, _, view, _ = _conversation_box(qtbot)
    view.setFocus()
    qtbot.waitUntil(view.hasFocus, timeout=2000)
    shown: list[list[str]] = []

    def close_menu() -> None:
        menu = QApplication.activePopupWidget()
        if isinstance(menu, QMenu):
            shown.append([a.text() for a in menu.actions() if a.text()])
            menu.close()

    closer = QTimer()
    closer.timeout.connect(close_menu)
    closer.start(50)
    text = view.toPlainText()
    cursors = []
    for needle, key, mods in [
        ("echo two", Qt.Key.Key_Menu, Qt.KeyboardModifier.NoModifier),
        ("first question", Qt.Key.Key_F10, Qt.KeyboardModifier.ShiftModifier),
    ]:
        cur = view.textCursor()
        cur.setPosition(text.index(needle) + 2)
        view.setTextCursor(cur)
        cursors.append(cur)
        qtbot.keyClick(view, key, mods)
    closer.stop()
    assert shown == [
        ["Copy message", "Copy code block", "Copy", "Select All"],
        ["Copy message", "Copy", "Select All"],
    ]
    copied: list[int] = []
    view.copy_message.connect(copied.append)
    code_menu, msg_menu = (view.context_menu(c).actions() for c in cursors)
    code_menu[1].trigger()
    assert QApplication.clipboard().text() == "echo two"
    code_menu[0].trigger()
    msg_menu[0].trigger()
    assert copied == [4, 1]


def test_select_all_and_copy_leave_out_the_link_labels(qtbot: Any) -> None:
    _box, _, view, _ = _conversation_box(qtbot)
    view.setFocus()
    qtbot.waitUntil(view.hasFocus, timeout=2000)
    qtbot.keyClick(view, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(view, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    copied = QApplication.clipboard().text()
    lines = copied.split("\n")
    assert lines[:6] == ["You", "first question", "Assistant", "First reply:", "python", "print('one')"], (
        lines
    )
    assert "Copy" not in copied and "Edit" not in copied and "Regenerate" not in copied
    assert "print('one')" in copied and "echo two" in copied and "second question" in copied
    mime = view.createMimeDataFromSelection()
    assert ">Copy<" not in mime.html()


def test_a_copy_keeps_the_texts_own_trailing_spaces_and_dots(qtbot: Any) -> None:
    """Leaving out the link labels stripped trailing spaces and a trailing "·" from every line:
    a diff's blank context line " " lost its space, a Markdown hard break its two spaces."""
    view = ChatView()
    qtbot.addWidget(view)
    diff = "```diff\n a\n \n-b\n+c\n```"
    view.show_messages(
        [ShownMessage(1, "user", "scores 3 · 4 ·"), ShownMessage(2, "assistant", f"The patch:\n\n{diff}")]
    )
    view.selectAll()
    copied = view.createMimeDataFromSelection().text()
    assert "\n a\n \n-b\n+c" in copied, copied
    assert "scores 3 · 4 ·" in copied and "Copy" not in copied


def test_links_in_a_reply_with_the_views_own_schemes_do_nothing(qtbot: Any) -> None:
    """A reply writing "[the docs](regenerate:)" drew a link that asked for a new reply when
    clicked; an (edit:N) link asked to edit message N; a copy dropped their words."""
    view = ChatView()
    qtbot.addWidget(view)
    view.show_messages(
        [
            ShownMessage(1, "user", "hi"),
            ShownMessage(
                2, "assistant", "See [the docs](regenerate:) and [this](edit:1) or [site](https://a.example)."
            ),
        ]
    )
    asked: list[object] = []
    view.regenerate_requested.connect(lambda: asked.append("regenerate"))
    view.edit_message.connect(asked.append)
    doc = view.document()
    hrefs = []
    block = doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            f = it.fragment()
            if "the docs" in f.text() or "this" == f.text() or "site" == f.text():
                hrefs.append((f.text(), f.charFormat().anchorHref()))
            it += 1
        block = block.next()
    assert ("the docs", "") in hrefs and ("this", "") in hrefs and ("site", "https://a.example") in hrefs
    # the view's own Regenerate link (the last reply's header) is still there and works
    view.anchorClicked.emit(QUrl("regenerate:"))
    assert asked == ["regenerate"]
    view.selectAll()
    copied = view.createMimeDataFromSelection().text()
    assert "See the docs and this or site." in copied, copied


def test_tab_after_a_redraw_walks_on_from_what_is_on_screen(qtbot: Any) -> None:
    """A redraw (a reply ending, a palette switch) put the cursor at the document's start: the
    next Tab jumped to the first message's Copy link, scrolling to the top."""
    from PySide6.QtWidgets import QLineEdit, QVBoxLayout, QWidget

    box = QWidget()
    qtbot.addWidget(box)
    lay = QVBoxLayout(box)
    view, after = ChatView(), QLineEdit()
    lay.addWidget(view)
    lay.addWidget(after)
    msgs = []
    for i in range(30):
        msgs += [
            ShownMessage(2 * i + 1, "user", f"question {i}"),
            ShownMessage(2 * i + 2, "assistant", f"answer {i}"),
        ]
    view.show_messages(msgs)
    box.resize(500, 400)
    box.show()
    qtbot.waitExposed(box)
    view.scroll_to_bottom()
    view.setFocus()
    qtbot.waitUntil(view.hasFocus, timeout=2000)
    view.redraw()
    bottom = view.verticalScrollBar().value()
    assert bottom > 0
    qtbot.keyClick(view, Qt.Key.Key_Tab)
    cur = view.textCursor()
    assert view.hasFocus() and cur.hasSelection() and view.verticalScrollBar().value() >= bottom - 50
    assert view.message_at(cur.selectionStart()) >= 50
