"""The conversation as a document (QTextBrowser), the prompt box, and reply readouts.

Messages render as Markdown (QTextCursor.insertMarkdown); fenced code blocks are cut out first and
drawn as monospace frames with a "Copy" link above them, so copying gives exactly the code. The
streamed reply is the last thing in the document: each update removes it from its start position
and inserts it again, throttled to STREAM_FPS, so the cost per update is the reply, not the
conversation, and the GUI thread stays free while the model writes.
"""

from __future__ import annotations

import bisect
import html
import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from PySide6.QtCore import QByteArray, QEvent, QMimeData, QPoint, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QAccessible,
    QAccessibleAnnouncementEvent,
    QColor,
    QContextMenuEvent,
    QCursor,
    QFocusEvent,
    QFont,
    QFontDatabase,
    QImage,
    QKeyEvent,
    QKeySequence,
    QPainter,
    QPalette,
    QPen,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
    QTextFrameFormat,
    QTextOption,
)
from PySide6.QtWidgets import (
    QApplication,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QTextBrowser,
    QToolTip,
    QWidget,
)
from trit.app.core.meters import readout_line as format_readout  # the line under a reply
from trit.app.core.store import COMPLETE, STOPPED, STREAMING

from trit.text import BIDI_MARKS, BIDI_REORDERING, grapheme_floor, show_bidi_controls

from .colours import TEXT_CONTRAST, readable_hint

STREAM_FPS = 20  # redraws of the streamed reply per second
# Width in pixels of the ring in the highlight colour that shows keyboard focus on the conversation
# (the style's 1 px frame did not change at all): kept free around the viewport, in the background
# colour while the view has no focus, so nothing moves when focus comes and goes.
FOCUS_RING = 2
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)(?:^```[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Segment:
    kind: str  # "text" | "code"
    text: str
    lang: str = ""


def split_markdown(text: str) -> list[Segment]:
    """Prose and fenced code blocks, in order. An unclosed fence (a reply still streaming) runs to
    the end of the text."""
    out: list[Segment] = []
    pos = 0
    for m in _FENCE.finditer(text):
        if m.start() > pos:
            out.append(Segment("text", text[pos : m.start()]))
        out.append(Segment("code", m.group(2).rstrip("\n"), m.group(1).strip()))
        pos = m.end()
    if pos < len(text):
        out.append(Segment("text", text[pos:]))
    return [s for s in out if s.kind == "code" or s.text.strip()]


@dataclass
class ShownMessage:
    """What the view needs of a message (a store.Message or the reply being streamed)."""

    id: int
    role: str
    content: str
    status: str = COMPLETE
    stats: dict[str, Any] = field(default_factory=dict)


ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System"}

# Text between code blocks longer than this many lines is shown as plain text: QTextCursor's
# Markdown import takes time quadratic in a list's length (8000 items: ~4 s with the GUI frozen).
MARKDOWN_MAX_LINES = 1500
# Qt lays out a word in time that grows with the square of its length: a 200k-character line
# without a space (a pasted blob, minified code) took 10 s to show, while as much prose with spaces
# takes a fraction of a second. Runs of more than this many characters without whitespace are shown
# cut into lines of at most this many; the text itself is unchanged (Copy and the export use it).
LONG_RUN = 1000
# Scripts written without spaces (Thai, Lao, Myanmar, Khmer, Hangul, CJK punctuation, kana, Han,
# full-width forms): Qt finds break opportunities inside them itself, so a paragraph of them lays out
# in linear time (200k characters of Chinese: 1 s uncut, 0.5 s cut), and cutting one split an
# ordinary paragraph in two and any **bold** across the cut. They end a run instead of being part
# of it: only blobs of other characters (base64, URLs, hashes, minified code) are cut.
_SPACELESS = (
    "\u0e00-\u0eff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u2e80-\u2fdf\u3000-\u9fff"
    "\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff"
)
_LONG_RUN = re.compile(rf"[^\s{_SPACELESS}]{{{LONG_RUN + 1},}}")
# Markdown's inline syntax: a run holding any of these is cut by a line break inside the paragraph
# (inline_sep), so emphasis, code spans and links across a cut still pair up.
_INLINE_MARKUP = re.compile(r"[*_`~\[\]<>\\]")


def _pieces(run: str, limit: int) -> list[str]:
    """run in pieces of at most limit characters, cut between user-perceived characters (one
    longer than limit is cut anyway, after its first character)."""
    out: list[str] = []
    i = 0
    while i < len(run):
        j = min(i + limit, len(run))
        if j < len(run):
            j = max(i + 1, grapheme_floor(run, j))  # back to the start of the cluster
        out.append(run[i:j])
        i = j
    return out


# A line that starts a Markdown block of its own (a list item, quote, heading, table row, fence,
# HTML, a setext underline or rule) or is indented code: not joined to the line before it.
_BLOCK_START = re.compile(
    r"[ \t]*(?:[-*+](?:[ \t]|$)|\d{1,9}[.)](?:[ \t]|$)|>|#|```|~~~|<)|.*\||[ \t]*[=\-*_][=\-*_ \t]*$"
)
_INDENTED = re.compile(r"(?: {4}|\t)")


def line_breaks(text: str) -> str:
    """Markdown text with the line breaks a model meant (a poem, an address, a list item's second
    line) kept: Markdown joins lines that one newline separates. Such a newline becomes U+2028,
    which Qt shows as a break inside the same block (a Markdown hard break, "  \n", became a new
    block: a new list item). Lines that start blocks of their own are left to Markdown."""
    lines = text.split("\n")
    out = lines[:1]
    for prev, line in itertools.pairwise(lines):
        code = _INDENTED.match(prev) and _INDENTED.match(line)
        if prev.strip() and line.strip() and not code and not _BLOCK_START.match(line):
            out[-1] = out[-1].rstrip(" \t") + "\u2028" + line.lstrip(" \t")
        else:
            out.append(line)
    return "\n".join(out)


def break_long_runs(text: str, sep: str = "\n", limit: int = LONG_RUN, inline_sep: str | None = None) -> str:
    """text with every run of more than limit non-whitespace characters (outside the spaceless
    scripts) cut into pieces of at most limit characters, joined by sep, or by inline_sep (if given)
    where the run holds Markdown inline syntax; never inside a grapheme cluster. Everything else
    as it was."""
    if len(text) <= limit:
        return text
    pattern = _LONG_RUN if limit == LONG_RUN else re.compile(rf"[^\s{_SPACELESS}]{{{limit + 1},}}")

    def cut(m: re.Match[str]) -> str:
        join = inline_sep if inline_sep is not None and _INLINE_MARKUP.search(m[0]) else sep
        return join.join(_pieces(m[0], limit))

    return pattern.sub(cut, text)


# The view's own links, dropped from copied text.
_OWN_LINKS = {"copy-msg", "copy-code", "edit", "regenerate"}
# What a line keeps once its link labels are gone: the spaces before them, " · " after a language.
_LABEL_REST = re.compile(r"[ \u00a0]*(?:·[ \u00a0]*)?$")


def _own_link_spans(doc: QTextDocument, start: int = 0, end: int | None = None) -> list[tuple[int, int, int]]:
    """(position, length, block number) of each fragment linking with one of the view's own
    schemes (_OWN_LINKS), in the blocks from start to end (default: the whole document)."""
    cur = QTextCursor(doc)
    cur.setPosition(start)
    block = cur.block()
    spans = []
    while block.isValid() and (end is None or block.position() < end):
        it = block.begin()
        while not it.atEnd():
            f = it.fragment()
            if f.charFormat().anchorHref().partition(":")[0] in _OWN_LINKS:
                spans.append((f.position(), f.length(), block.blockNumber()))
            it += 1
        block = block.next()
    return spans


# Frame property holding a code block's index in code_blocks().
CODE_INDEX = QTextFormat.Property.UserProperty + 1


UNSEEN_LINE = (
    "\u2014 The model did not see the messages above for its latest reply: the conversation is "
    "longer than its context (Context size in Settings) \u2014"
)


def _left_out(messages: Sequence[ShownMessage]) -> int:
    """How many of the oldest messages (not counting a system prompt) the latest finished reply
    was written without: its stats' left_out (the worker's fitting to the context); 0 for none."""
    for m in reversed(messages):
        if m.role == "assistant" and m.status != STREAMING:
            n = m.stats.get("left_out", 0)
            return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0
    return 0


# How _insert_body shows a bidi control of a reply (show_bidi_controls): its code point, isolated as
# left-to-right text (LRI ... PDI), so that in a right-to-left paragraph the brackets are not
# mirrored into the words around it.
SHOWN_BIDI = "\u2066<U+{:04X}>\u2069"

# Bidirectional controls: an override inside a link's text can make it read backwards ("gnp.exe"
# shows as "exe.png") or run past the link into the rest of the line.
_BIDI_CONTROLS = re.compile(f"[{BIDI_REORDERING}{BIDI_MARKS}]")
_URL_LIKE = re.compile(r"(?:[a-zA-Z][a-zA-Z0-9+.-]*://)?([^\s/:@]+\.[^\s/:@]{2,})(?::\d+)?(?:[/?#]\S*)?")


def _bare_host(host: str) -> str:
    host = host.lower().rstrip(".")
    return host.removeprefix("www.")


def misleading_link(text: str, url: QUrl) -> bool:
    """True when a link's text names another place than it opens: text that reads as an address
    (https://mybank.com, mybank.com/login) whose host is not the target's, or text with bidi
    controls that can make it read as something else."""
    if _BIDI_CONTROLS.search(text):
        return True
    m = _URL_LIKE.fullmatch(text.strip())
    if m is None:
        return False  # ordinary words: the hover tooltip says where it goes
    shown = QUrl.fromUserInput(text.strip()).host(QUrl.ComponentFormattingOption.FullyEncoded)
    target = url.host(QUrl.ComponentFormattingOption.FullyEncoded)
    return _bare_host(shown or m.group(1)) != _bare_host(target)


def _placeholder_image() -> QImage:
    img = QImage(16, 16, QImage.Format.Format_ARGB32)
    img.fill(QColor(128, 128, 128, 96))
    return img


class ChatView(QTextBrowser):
    """Signals carry message ids; the window acts on the store."""

    copy_message = Signal(int)
    edit_message = Signal(int)
    regenerate_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # a word wider than the view (a URL, a hash) wraps instead of running off its edge
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.anchorClicked.connect(self._on_anchor)
        self.highlighted.connect(self._on_link_hovered)
        self._press_pos: QPoint | None = None
        self.setAccessibleName("Conversation")
        self.setAccessibleDescription("The messages of the selected conversation")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.document().setDocumentMargin(12)
        self.setViewportMargins(FOCUS_RING, FOCUS_RING, FOCUS_RING, FOCUS_RING)
        self._code_blocks: list[str] = []
        self._message_starts: list[tuple[int, int]] = []  # (document position, message id), in order
        self._stream: ShownMessage | None = None
        self._stream_pos = 0  # document position where the streamed reply starts
        self._stream_code_base = 0
        self._stream_dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(1000 // STREAM_FPS)
        self._timer.timeout.connect(self._flush_stream)
        self.renders = 0  # full renders, for tests
        # what show_messages() drew and with which colours and font, to draw it again when they change
        self._shown: tuple[list[Any], str] = ([], "")
        self._drawn_with = self._look()
        # each drawn message as (message, is last user message, is last message, the unseen line
        # before it) with where it
        # starts: (document position, len(_code_blocks), len(_message_starts)) before it was drawn
        self._drawn: list[tuple[tuple[ShownMessage, bool, bool, bool], int, int, int]] = []
        self._drawn_end: tuple[int, int, int] | None = None  # the same after the last one

    # -- keyboard: links, context menu, copy -----------------------------------------------------
    # Tab and Shift+Tab walk the links (Copy, Edit, Regenerate, a code block's Copy, links in
    # replies; Enter follows the selected one) from where the reader is: the walk starts at the top
    # of what is on screen when Tab brings focus in (at its bottom for Shift+Tab), not at the start
    # of a long conversation, and after the last link Tab leaves the view (QTextBrowser's
    # focusNextPrevChild), so it is no trap. The Menu key or Shift+F10 opens the context menu at the
    # cursor: Copy message, Copy code block.

    _cursor_reset = False  # show_messages() has moved the cursor since the reader last placed it

    def mousePressEvent(self, e: Any) -> None:
        self._cursor_reset = False  # a click places the cursor where the reader is
        self._press_pos = e.position().toPoint()  # the link text a click opens (_link_text)
        super().mousePressEvent(e)

    # -- what a reply may not do: load files, hide where a link goes ---------------------------------
    def loadResource(self, kind: int, name: QUrl) -> Any:
        """Nothing is loaded from disk or anywhere else: a reply's ![x](/dev/zero) was read until
        memory ran out (and the window reopened on it at every start), a FIFO hung the window, and
        any of the user's pictures could be shown. An image is a small grey box."""
        if kind == QTextDocument.ResourceType.ImageResource:
            return _placeholder_image()
        return QByteArray()

    def _on_link_hovered(self, url: QUrl) -> None:
        """A reply's link shows where it goes (its text may say otherwise), encoded, so that an
        address in another script or with invisible characters cannot pass for a familiar one."""
        if url.scheme() in ("http", "https"):
            QToolTip.showText(QCursor.pos(), url.toString(QUrl.ComponentFormattingOption.FullyEncoded), self)
        else:
            QToolTip.hideText()

    def _link_text(self, url: QUrl) -> str:
        """The text of the link being opened: under the click, or the keyboard's selected link."""
        pos, self._press_pos = self._press_pos, None
        if pos is not None and self.anchorAt(pos) == url.toString():
            cur = self.cursorForPosition(pos)
            href, at = url.toString(), cur.position()
            parts: list[tuple[int, str]] = []
            it = cur.block().begin()
            while not it.atEnd():
                frag = it.fragment()
                if frag.isValid() and frag.charFormat().anchorHref() == href:
                    parts.append((frag.position(), frag.text()))
                it += 1
            # the run of fragments with this link that holds the click
            text, end = "", -1
            for start, t in parts:
                text = text + t if start == end else t
                end = start + len(t)
                if start <= at <= end:
                    return text
            return text
        return self.textCursor().selectedText()

    def _confirm_link(self, text: str, target: str) -> bool:
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Open this link?",
            f"The link reads \u201c{text}\u201d but opens:\n\n{target}\n\nOpen it in the browser?",
            QMessageBox.StandardButton.Open | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        return box.exec() == QMessageBox.StandardButton.Open

    def focusInEvent(self, e: QFocusEvent) -> None:
        super().focusInEvent(e)
        reason = e.reason()
        tabbed = reason in (Qt.FocusReason.TabFocusReason, Qt.FocusReason.BacktabFocusReason)
        if tabbed and not self.textCursor().hasSelection():
            vp = self.viewport().rect()
            at = vp.topLeft() if reason == Qt.FocusReason.TabFocusReason else vp.bottomRight()
            self.setTextCursor(self.cursorForPosition(at))
        self.update()

    def focusNextPrevChild(self, next: bool) -> bool:
        """Qt walks the links from the current link, and without one from the document's start (or
        end): in a long conversation Tab went through every link above what is on screen. Without
        a link selected the walk starts at the cursor, which focusInEvent put on screen."""
        cur = self.textCursor()
        if not cur.hasSelection() and self.hasFocus():
            if self._cursor_reset or not self.viewport().rect().intersects(self.cursorRect(cur)):
                # a redraw (a reply ending, a palette change) put the cursor at the start or the
                # end: the walk goes on from the top of what is shown (its bottom for Shift+Tab)
                vp = self.viewport().rect()
                cur = self.cursorForPosition(vp.topLeft() if next else vp.bottomRight())
            self._cursor_reset = False
            pos = cur.position()
            start = QTextCursor(self.document())
            # a one-character selection just before the cursor (after it for Shift+Tab): Qt looks
            # for the next link after a selection's end, the previous one before its start
            lo = max(0, pos - 1) if next else pos
            hi = pos if next else min(pos + 1, self.document().characterCount() - 1)
            if lo < hi:
                start.setPosition(lo)
                start.setPosition(hi, QTextCursor.MoveMode.KeepAnchor)
                self.setTextCursor(start)
                if super().focusNextPrevChild(next):
                    return True
                self.setTextCursor(cur)  # no link that way: focus leaves the view
        return super().focusNextPrevChild(next)

    def keyPressEvent(self, e: QKeyEvent) -> None:
        menu_key = e.key() == Qt.Key.Key_Menu or (
            e.key() == Qt.Key.Key_F10 and e.modifiers() == Qt.KeyboardModifier.ShiftModifier
        )
        if menu_key:
            rect = self.cursorRect()
            self._show_menu(self.textCursor(), self.viewport().mapToGlobal(rect.bottomLeft()))
            return
        super().keyPressEvent(e)

    def contextMenuEvent(self, e: QContextMenuEvent) -> None:
        if e.reason() == QContextMenuEvent.Reason.Mouse:
            self._show_menu(self.cursorForPosition(e.pos()), e.globalPos())
        else:
            rect = self.cursorRect()
            self._show_menu(self.textCursor(), self.viewport().mapToGlobal(rect.bottomLeft()))

    def context_menu(self, cur: QTextCursor) -> QMenu:
        """The context menu for the document position of cur (a selection's start)."""
        menu = QMenu(self)
        pos = min(cur.position(), cur.anchor())
        msg_id = self.message_at(pos)
        if msg_id is not None:
            menu.addAction("Copy message", lambda: self.copy_message.emit(msg_id))
        code = self.code_block_at(pos)
        if code is not None:
            menu.addAction(
                "Copy code block", lambda: QApplication.clipboard().setText(self._code_blocks[code])
            )
        menu.addSeparator()
        copy = menu.addAction("Copy", self.copy)
        copy.setShortcut(QKeySequence.StandardKey.Copy)
        copy.setEnabled(self.textCursor().hasSelection())
        select_all = menu.addAction("Select All", self.selectAll)
        select_all.setShortcut(QKeySequence.StandardKey.SelectAll)
        return menu

    def _show_menu(self, cur: QTextCursor, at: QPoint) -> None:
        menu = self.context_menu(cur)
        menu.exec(at)
        menu.deleteLater()

    def message_at(self, pos: int) -> int | None:
        """Id of the message drawn at document position pos (its header or body)."""
        i = bisect.bisect_right([p for p, _ in self._message_starts], pos) - 1
        return self._message_starts[i][1] if i >= 0 else None

    def code_block_at(self, pos: int) -> int | None:
        """Index in code_blocks() of the code block at document position pos (its text or the line
        with its Copy link)."""
        cur = QTextCursor(self.document())
        cur.setPosition(pos)
        frame = cur.currentFrame()
        while frame is not None and frame != self.document().rootFrame():
            idx = frame.frameFormat().property(CODE_INDEX)
            if isinstance(idx, int):
                return idx
            frame = frame.parentFrame()
        for at in (pos, pos + 1):  # on the label line, the Copy link names the block
            cur.setPosition(min(at, self.document().characterCount() - 1))
            href = cur.charFormat().anchorHref()
            if href.startswith("copy-code:"):
                return int(href.partition(":")[2])
        return None

    def createMimeDataFromSelection(self) -> QMimeData:
        """The selection without the link labels (Copy, Edit, Regenerate) the view adds."""
        doc = QTextDocument()
        cur = QTextCursor(doc)
        cur.insertFragment(self.textCursor().selection())
        spans = _own_link_spans(doc)
        for start, length, _ in reversed(spans):
            cur.setPosition(start)
            cur.setPosition(start + length, QTextCursor.MoveMode.KeepAnchor)
            cur.removeSelectedText()
        # the spaces and " · " the labels leave at the end of their own lines; other lines keep
        # theirs (a diff's " " context line, a Markdown hard break)
        for number in sorted({n for _, _, n in spans}, reverse=True):
            block = doc.findBlockByNumber(number)
            rest = _LABEL_REST.search(block.text())
            if rest is not None and rest.start() < len(block.text()):
                cur.setPosition(block.position() + rest.start())
                cur.setPosition(block.position() + len(block.text()), QTextCursor.MoveMode.KeepAnchor)
                cur.removeSelectedText()
        mime = QMimeData()
        mime.setText(doc.toPlainText().replace("\u2028", "\n"))
        mime.setHtml(doc.toHtml())
        return mime

    # -- focus -----------------------------------------------------------------------------------
    def event(self, e: QEvent) -> bool:
        done = super().event(e)
        if e.type() == QEvent.Type.Paint:  # the view's own paint (its frame), not the viewport's
            self._paint_focus_ring()
        return done

    def _paint_focus_ring(self) -> None:
        pal = self.palette()
        focused = self.hasFocus()
        color = pal.color(QPalette.ColorRole.Highlight if focused else QPalette.ColorRole.Base)
        p = QPainter(self)
        # the ring covers the margin around the viewport and, with focus, the frame line too
        outer = 0 if focused else self.frameWidth()
        width = FOCUS_RING + self.frameWidth() - outer
        pen = QPen(color)
        pen.setWidth(width)
        pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
        p.setPen(pen)
        inset = outer + width / 2
        p.drawRect(self.rect().toRectF().adjusted(inset, inset, -inset, -inset))
        p.end()

    def focusOutEvent(self, e: QFocusEvent) -> None:
        super().focusOutEvent(e)
        self.update()

    # -- screen readers ----------------------------------------------------------------------------
    def announce(self, text: str) -> None:
        """Has screen readers speak text (e.g. "Reply finished") after what they are saying, without
        moving focus (Qt 6.8's announcement event: AT-SPI and UI Automation notifications)."""
        event = QAccessibleAnnouncementEvent(self, text)
        event.setPoliteness(QAccessible.AnnouncementPoliteness.Polite)
        QAccessible.updateAccessibility(event)

    # -- palette and font changes ------------------------------------------------------------------
    def _look(self) -> tuple[Any, ...]:
        """What the drawn document took from the palettes and the font: colours and sizes are set
        on its text when drawn (a link's colour from the application palette), so they do not follow
        a change by themselves."""
        pal, app = self.palette(), QApplication.palette()
        roles = QPalette.ColorRole
        return (
            *(pal.color(r).rgba() for r in (roles.Base, roles.AlternateBase, roles.Text, roles.Mid)),
            pal.color(QPalette.ColorGroup.Active, roles.PlaceholderText).rgba(),
            app.color(roles.Link).rgba(),
            self.font().key(),
        )

    def changeEvent(self, e: QEvent) -> None:
        super().changeEvent(e)
        kinds = (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange, QEvent.Type.FontChange)
        drawn = getattr(self, "_drawn_with", None)  # None while QTextBrowser's __init__ runs
        if e.type() in kinds and drawn is not None and self._look() != drawn:
            self.redraw()

    def redraw(self) -> None:
        """Draws the shown messages again (the reply being streamed included) where the reader was:
        at the bottom if there, else at the same scroll position."""
        bar = self.verticalScrollBar()
        at_bottom, value = self._at_bottom(), bar.value()
        stream = self._stream
        if stream is not None:
            self._flush_stream()
        messages, placeholder = self._shown
        self.show_messages(messages, stream=stream, placeholder=placeholder)
        self.document().documentLayout().documentSize()  # lays it out: the scroll range is final
        bar.setValue(bar.maximum() if at_bottom else value)

    # -- content ---------------------------------------------------------------------------------

    def code_blocks(self) -> list[str]:
        return list(self._code_blocks)

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def show_messages(
        self, messages: Sequence[ShownMessage], *, stream: ShownMessage | None = None, placeholder: str = ""
    ) -> None:
        """Renders the conversation; `stream` (if given) is the reply still being written, drawn
        last and updated by append_stream(); `placeholder` is the muted hint shown instead when
        there is nothing to draw (no conversation yet, or an empty one)."""
        self.renders += 1
        self._cursor_reset = True  # the walk of the links starts on screen again (focusNextPrevChild)
        self._shown = (list(messages), placeholder)
        look = self._look()
        self._timer.stop()
        at_bottom = self._at_bottom()
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        last = len(messages) - 1
        drawn = [
            (i, m)
            for i, m in enumerate(messages)
            if not (
                m.role == "system" or (m.role == "assistant" and m.status == STREAMING and stream is not None)
            )
        ]
        # the line saying what the model no longer sees goes before the message left_out counts
        # to: the prompt's messages, which leave out empty replies (stopped before their first token)
        unseen, line_at = _left_out(messages), None
        if unseen:
            in_prompt = [k for k, (_, m) in enumerate(drawn) if m.role != "assistant" or m.content]
            line_at = in_prompt[unseen] if unseen < len(in_prompt) else None
        wanted = [
            # the links a header has (Edit on the last question, Regenerate on the last reply) and
            # whether the line is drawn before it
            (
                replace(m, stats=dict(m.stats)),
                m.role == "user" and i == last_user,
                m.role == "assistant" and i == last,
                k == line_at,
            )
            for k, (i, m) in enumerate(drawn)
        ]
        # What is drawn already and stays the same (a long conversation took seconds to draw again
        # when a reply started or ended: 2.5 s at 2000 messages) is kept; the rest is drawn anew.
        keep = 0
        if look == self._drawn_with and wanted and self._drawn and self._drawn_end is not None:
            while keep < min(len(wanted), len(self._drawn)) and self._drawn[keep][0] == wanted[keep]:
                keep += 1
        if keep:
            cut, codes, starts = self._drawn[keep][1:] if keep < len(self._drawn) else self._drawn_end
            doc_cursor = QTextCursor(self.document())
            doc_cursor.setPosition(cut)
            doc_cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
            doc_cursor.removeSelectedText()
            del self._code_blocks[codes:], self._message_starts[starts:], self._drawn[keep:]
        else:
            self.clear()
            self._code_blocks = []
            self._message_starts = []
            self._drawn = []
            doc_cursor = QTextCursor(self.document())
        self._drawn_with = look
        self._stream = None
        for key in wanted[keep:]:
            self._drawn.append(
                (key, doc_cursor.position(), len(self._code_blocks), len(self._message_starts))
            )
            m, is_last_user, is_last, unseen_above = key
            if unseen_above:
                self._insert_unseen_line(doc_cursor)
            self._insert_message(doc_cursor, m, is_last_user=is_last_user, is_last=is_last)
        # where the messages end: a placeholder is drawn only in an empty view, so none is kept
        self._drawn_end = (
            (doc_cursor.position(), len(self._code_blocks), len(self._message_starts)) if wanted else None
        )
        if not wanted and stream is None and placeholder:
            doc_cursor.insertHtml(f'<p style="color:{self._muted()}">{html.escape(placeholder)}</p>')
        if stream is not None:
            self._begin_stream(doc_cursor, stream)
        if at_bottom or stream is not None:
            self.scroll_to_bottom()

    def begin_stream(self, message_id: int) -> None:
        """Appends an empty reply that append_stream() fills."""
        cur = QTextCursor(self.document())
        cur.movePosition(QTextCursor.MoveOperation.End)
        self._begin_stream(cur, ShownMessage(message_id, "assistant", "", STREAMING))
        self.scroll_to_bottom()

    def _begin_stream(self, cur: QTextCursor, msg: ShownMessage) -> None:
        self._stream = msg
        self._insert_header(cur, msg, is_last_user=False, is_last=False)
        self._stream_pos = cur.position()
        self._stream_code_base = len(self._code_blocks)
        self._stream_dirty = True
        self._flush_stream()
        self._timer.start()

    def append_stream(self, piece: str) -> None:
        if self._stream is None:
            return
        self._stream.content += piece
        self._stream_dirty = True  # drawn by the timer, at most STREAM_FPS times a second

    def stream_text(self) -> str:
        return self._stream.content if self._stream is not None else ""

    def end_stream(self) -> None:
        self._flush_stream()
        self._timer.stop()
        if self._stream is not None:  # drawn now as a finished message when the view redraws
            done = ShownMessage(self._stream.id, "assistant", self._stream.content, COMPLETE)
            shown = [m for m in self._shown[0] if m.id != done.id] + [done]
            self._shown = (shown, self._shown[1])
        self._stream = None

    def _flush_stream(self) -> None:
        if self._stream is None or not self._stream_dirty:
            return
        self._stream_dirty = False
        at_bottom = self._at_bottom()
        cur = QTextCursor(self.document())
        cur.setPosition(self._stream_pos)
        cur.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        cur.removeSelectedText()
        del self._code_blocks[self._stream_code_base :]
        text = self._stream.content or "…"
        self._insert_body(cur, text)
        if at_bottom:
            self.scroll_to_bottom()

    # -- drawing ---------------------------------------------------------------------------------
    def _muted(self) -> str:
        """The placeholder colour as drawn over the background (its alpha blended in: name() dropped
        it, so half-transparent white became pure white), darkened or lightened towards the text
        colour until it has the 4.5:1 contrast WCAG asks of text."""
        pal = self.palette()
        return readable_hint(
            pal.color(QPalette.ColorGroup.Active, QPalette.ColorRole.PlaceholderText),
            pal.color(QPalette.ColorRole.Text),
            pal.color(QPalette.ColorRole.Base),
            TEXT_CONTRAST,
        ).name()

    def _mono_font(self) -> QFont:
        """The system's monospace family at the size of the view's text: the system font comes at
        its own size (9 pt), small beside a 20 pt application font."""
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        base = self.font()
        if base.pointSizeF() > 0:
            mono.setPointSizeF(base.pointSizeF())
        elif base.pixelSize() > 0:
            mono.setPixelSize(base.pixelSize())
        return mono

    def _new_block(self, cur: QTextCursor, top: float = 0.0) -> None:
        fmt = QTextBlockFormat()
        fmt.setTopMargin(top)
        if cur.position() == 0 and self.document().characterCount() <= 1:
            cur.setBlockFormat(fmt)
            cur.setCharFormat(QTextCharFormat())
        else:
            cur.insertBlock(fmt, QTextCharFormat())

    def _insert_header(self, cur: QTextCursor, m: ShownMessage, *, is_last_user: bool, is_last: bool) -> None:
        self._new_block(cur, top=14)
        self._message_starts.append((cur.position(), m.id))
        links = [f'<a href="copy-msg:{m.id}">Copy</a>']
        if m.role == "user" and is_last_user:
            links.append(f'<a href="edit:{m.id}">Edit</a>')
        if m.role == "assistant" and is_last:
            links.append('<a href="regenerate:">Regenerate</a>')
        label = ROLE_LABELS.get(m.role, m.role)
        cur.insertHtml(
            f"<b>{html.escape(label)}</b>&nbsp;&nbsp;&nbsp;<small>{'&nbsp;&nbsp;'.join(links)}</small>"
        )

    def _insert_body(self, cur: QTextCursor, text: str) -> None:
        # bidi controls shown, not acting: an override reorders the rest of its paragraph, so that a
        # command in a reply could read as another one. A code block's Copy takes what it shows (no
        # hidden reordering in a pasted command); the message's Copy takes the text as it is
        for seg in split_markdown(show_bidi_controls(text, SHOWN_BIDI)):
            if seg.kind == "code":
                self._insert_code(cur, seg)
            else:
                self._new_block(cur)
                body = seg.text.strip("\n")
                if body.count("\n") < MARKDOWN_MAX_LINES:
                    start = cur.position()
                    cur.insertMarkdown(break_long_runs(line_breaks(body), "\n\n", inline_sep="\u2028"))
                    if ":" in body:
                        self._disarm_own_links(start, cur.position())
                else:  # Qt's Markdown import is quadratic in long lists: this much text stays plain
                    cur.insertText(break_long_runs(body))

    def _disarm_own_links(self, start: int, end: int) -> None:
        """Links in a message's own text that use the view's schemes (a reply writing
        "[docs](regenerate:)") become plain text: clicked, they asked for a new reply or to edit a
        message, and a copy dropped their words with the view's labels."""
        cur = QTextCursor(self.document())
        plain = QTextCharFormat()
        plain.setAnchor(False)
        plain.setAnchorHref("")
        plain.setFontUnderline(False)
        plain.setForeground(self.palette().color(QPalette.ColorRole.Text))
        for pos, length, _ in _own_link_spans(self.document(), start, end):
            cur.setPosition(pos)
            cur.setPosition(pos + length, QTextCursor.MoveMode.KeepAnchor)
            cur.mergeCharFormat(plain)

    def _insert_code(self, cur: QTextCursor, seg: Segment) -> None:
        idx = len(self._code_blocks)
        # (every isolate of the reply's own is a <U+...> by now: the ones left are SHOWN_BIDI's)
        self._code_blocks.append(seg.text.replace("\u2066", "").replace("\u2069", ""))
        self._new_block(cur, top=4)
        label = html.escape(seg.lang) + " · " if seg.lang else ""
        cur.insertHtml(
            f'<small style="color:{self._muted()}">{label}<a href="copy-code:{idx}">Copy</a></small>'
        )
        ff = QTextFrameFormat()
        ff.setProperty(CODE_INDEX, idx)
        pal = self.palette()
        ff.setBackground(pal.color(QPalette.ColorRole.AlternateBase))
        ff.setBorder(1)
        ff.setBorderBrush(pal.color(QPalette.ColorRole.Mid))
        ff.setPadding(6)
        ff.setMargin(2)
        cur.insertFrame(ff)
        mono = QTextCharFormat()
        mono.setFont(self._mono_font())
        # One insertText for the whole block: it turns each "\n" into a new block with this format.
        # A block per line inserted one by one inside a frame costs a relayout of the frame each
        # time (quadratic: 2000 lines took 2 s, 8000 lines about a minute).
        cur.insertText(break_long_runs(seg.text), mono)
        cur.movePosition(QTextCursor.MoveOperation.End)  # out of the frame

    def _insert_unseen_line(self, cur: QTextCursor) -> None:
        """The line before the oldest message the model saw for the latest reply: the conversation
        outgrew the context, and the messages above it were left out."""
        self._new_block(cur, top=14)
        fmt = cur.blockFormat()
        fmt.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        cur.setBlockFormat(fmt)
        cur.insertHtml(f'<small style="color:{self._muted()}">{html.escape(UNSEEN_LINE)}</small>')

    def _insert_message(
        self, cur: QTextCursor, m: ShownMessage, *, is_last_user: bool, is_last: bool
    ) -> None:
        self._insert_header(cur, m, is_last_user=is_last_user, is_last=is_last)
        self._insert_body(cur, m.content)
        notes = []
        if m.status == STOPPED:
            notes.append("stopped")
        elif m.status == STREAMING:
            notes.append("interrupted")
        readout = format_readout(m.stats) if m.role == "assistant" else ""
        if notes or readout:
            self._new_block(cur, top=5)
            text = " · ".join([f"({n})" for n in notes] + ([readout] if readout else []))
            cur.insertHtml(f'<small style="color:{self._muted()}">{html.escape(text)}</small>')

    # -- scrolling, links ------------------------------------------------------------------------
    def _at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 4

    def scroll_to_bottom(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _on_anchor(self, url: QUrl) -> None:
        s = url.toString()
        kind, _, arg = s.partition(":")
        if kind == "copy-code":
            i = int(arg)
            if 0 <= i < len(self._code_blocks):
                QApplication.clipboard().setText(self._code_blocks[i])
        elif kind == "copy-msg":
            self.copy_message.emit(int(arg))
        elif kind == "edit":
            self.edit_message.emit(int(arg))
        elif kind == "regenerate":
            self.regenerate_requested.emit()
        elif kind in ("http", "https"):
            from PySide6.QtGui import QDesktopServices

            text = self._link_text(url)
            target = url.toString(QUrl.ComponentFormattingOption.FullyEncoded)
            if misleading_link(text, url) and not self._confirm_link(text, target):
                return
            QDesktopServices.openUrl(url)  # links in replies open outside; nothing loads in here


class PromptEdit(QPlainTextEdit):
    """Enter sends, Shift+Enter inserts a newline. The text's direction follows its first strong
    character (a Hebrew or Arabic message is right-aligned, as the conversation shows it): a
    QPlainTextEdit lays out every paragraph with one text option, and a QTextEdit, which sets one
    per paragraph, took 4 s to paste 1 MB (as fast as a plain QPlainTextEdit here)."""

    submitted = Signal()
    SCAN = 256  # characters looked at for the first strong one

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Message")
        self.setAccessibleDescription("Type a message; Enter sends, Shift+Enter starts a new line")
        self.setPlaceholderText("Message (Enter sends, Shift+Enter for a new line)")
        self.setTabChangesFocus(True)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.document().contentsChange.connect(self._follow_direction)

    def text_direction(self) -> Qt.LayoutDirection:
        doc = self.document()
        for i in range(min(self.SCAN, doc.characterCount())):
            kind = unicodedata.bidirectional(doc.characterAt(i))
            if kind == "L":
                return Qt.LayoutDirection.LeftToRight
            if kind in ("R", "AL"):
                return Qt.LayoutDirection.RightToLeft
        return Qt.LayoutDirection.LeftToRight

    def _follow_direction(self, position: int, _removed: int = 0, _added: int = 0) -> None:
        if position > self.SCAN:
            return  # the first strong character is further up
        direction = self.text_direction()
        opt = self.document().defaultTextOption()
        if opt.textDirection() == direction:
            return
        opt.setTextDirection(direction)
        right = direction == Qt.LayoutDirection.RightToLeft
        opt.setAlignment(Qt.AlignmentFlag.AlignRight if right else Qt.AlignmentFlag.AlignLeft)
        self.document().setDefaultTextOption(opt)

    def keyPressEvent(self, e: QKeyEvent) -> None:
        if e.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
            e.modifiers() & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier)
        ):
            self.submitted.emit()
            return
        if (
            e.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
            and e.modifiers() & Qt.KeyboardModifier.ShiftModifier
        ):
            self.insertPlainText("\n")
            return
        super().keyPressEvent(e)


__all__ = [
    "ChatView",
    "PromptEdit",
    "Segment",
    "ShownMessage",
    "break_long_runs",
    "format_readout",
    "split_markdown",
]
