"""Text from outside (a model's name or reply, a file name, a conversation's first line) shown as
text. Qt renders a tooltip, a label or a message box as HTML when its first line holds a tag, and
HTML images load local files: a model name or title holding <img src=/dev/zero> read until memory
ran out, and <img src=~/photo.png> showed the user's picture."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QHelpEvent
from PySide6.QtGui import Qt as GuiQt  # Qt's namespace with mightBeRichText (QtCore's lacks it)
from PySide6.QtWidgets import QAbstractItemView, QMessageBox, QToolTip, QWidget


def plain(text: str) -> str:
    """text as Qt shows it without reading it as HTML: itself when Qt would not take it for HTML,
    else escaped (still shown as written, line breaks kept)."""
    if not GuiQt.mightBeRichText(text):
        return text
    return f'<p style="white-space:pre-wrap">{html.escape(text)}</p>'


class PlainToolTips(QObject):
    """Application event filter: every tooltip (a widget's, or an item's in a list or tree) is
    shown as plain text, wherever it was set."""

    def eventFilter(self, obj: QObject, e: QEvent) -> bool:
        if e.type() != QEvent.Type.ToolTip or not isinstance(e, QHelpEvent) or not isinstance(obj, QWidget):
            return False
        view = obj.parent()
        if isinstance(view, QAbstractItemView) and obj is view.viewport():
            tip = view.indexAt(e.pos()).data(Qt.ItemDataRole.ToolTipRole)
        else:
            tip = obj.toolTip()
        if not isinstance(tip, str) or not tip or not GuiQt.mightBeRichText(tip):
            return False  # nothing to show as HTML: Qt's own handling
        QToolTip.showText(e.globalPos(), plain(tip), obj)
        return True


def install_plain_tooltips(app: Any) -> PlainToolTips:
    """Installs the filter on app once (it is kept as the app's child)."""
    found = app.findChild(PlainToolTips)
    if found is not None:
        return found
    f = PlainToolTips(app)
    app.installEventFilter(f)
    return f


def ask(parent: QWidget | None, title: str, text: str, *, default_yes: bool = False) -> bool:
    """A Yes/No question whose text is shown as written (QMessageBox.question takes a text with a
    tag in its first line for HTML)."""
    yes, no = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
    box = QMessageBox(QMessageBox.Icon.Question, title, text, yes | no, parent)
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.setDefaultButton(yes if default_yes else no)
    return box.exec() == yes


__all__ = ["PlainToolTips", "ask", "install_plain_tooltips", "plain"]
