"""Text from outside shown as text: a tooltip or question holding a tag was rendered as HTML, and
its images loaded local files (<img src=/dev/zero> read until memory ran out)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QPoint, Qt
from PySide6.QtGui import QHelpEvent
from PySide6.QtGui import Qt as GuiQt
from PySide6.QtWidgets import QApplication, QLabel, QListWidget, QListWidgetItem, QToolTip
from trit.app.qt.app import _application
from trit.app.qt.safe_text import PlainToolTips, plain

# a file that is not there: a test must not read /dev/zero should the filter regress
HOSTILE = '"<img src=no-such-picture.png>": 12 tok/s'


def test_plain_leaves_text_alone_and_escapes_what_qt_takes_for_html() -> None:
    assert plain("12 tok/s · 3 < 4") == "12 tok/s · 3 < 4"
    shown = plain(HOSTILE + "\nsecond line")
    assert GuiQt.mightBeRichText(HOSTILE)  # Qt would render the raw text as HTML
    assert "<img" not in shown and "&lt;img src=no-such-picture.png&gt;" in shown and "pre-wrap" in shown


def test_tooltips_of_widgets_and_items_are_shown_as_text(qtbot: Any) -> None:
    app = _application(["trit"])
    assert len(app.findChildren(PlainToolTips)) == 1  # the app's setup installs it, once
    _application(["trit"])
    assert len(app.findChildren(PlainToolTips)) == 1

    label = QLabel("model")
    label.setToolTip(HOSTILE)
    items = QListWidget()
    it = QListWidgetItem("A conversation")
    it.setToolTip(HOSTILE)
    items.addItem(it)
    for w in (label, items):
        qtbot.addWidget(w)
        w.show()
        qtbot.waitExposed(w)
    for target, pos in ((label, QPoint(2, 2)), (items.viewport(), items.visualItemRect(it).center())):
        QToolTip.hideText()
        ev = QHelpEvent(QEvent.Type.ToolTip, pos, target.mapToGlobal(pos))
        QApplication.sendEvent(target, ev)
        qtbot.waitUntil(QToolTip.isVisible, timeout=2000)
        assert QToolTip.text() == plain(HOSTILE)
    QToolTip.hideText()


def test_labels_and_questions_with_outside_text_are_plain(qtbot: Any, make_ctx: Any) -> None:
    """The status bar's model label and the Models dialog's lines show names as written."""
    from trit.app.qt.main_window import ElidedLabel
    from trit.app.qt.models_dialog import ModelsDialog

    label = ElidedLabel(HOSTILE, purpose="Model")
    qtbot.addWidget(label)
    assert label.textFormat() == Qt.TextFormat.PlainText
    dlg = ModelsDialog(make_ctx())
    qtbot.addWidget(dlg)
    assert all(
        w.textFormat() == Qt.TextFormat.PlainText for w in (dlg.status, dlg.bar_label, dlg.folder_label)
    )
