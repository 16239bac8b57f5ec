"""What a reply may not do in the conversation view (a downloaded model can write anything): load
files as images, or open a link that reads as one address and goes to another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QUrl
from PySide6.QtGui import QImage, QTextDocument
from trit.app.qt.chat_view import ChatView, ShownMessage, misleading_link


def shown(qtbot: Any, text: str) -> ChatView:
    view = ChatView()
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.show()
    qtbot.waitExposed(view)
    view.show_messages([ShownMessage(1, "user", "Show me"), ShownMessage(2, "assistant", text)])
    return view


@pytest.mark.timeout(30)
def test_images_in_a_reply_load_nothing(qtbot: Any, tmp_path: Path) -> None:
    """![x](/dev/zero) was read until memory ran out, at every start (the window reopens on the
    conversation); a FIFO hung the window; any picture of the user's could be shown. (Those two
    are not tried here: on a regression they would take the test run down with them.)"""
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n" + b"private" * 100)
    view = shown(qtbot, f"![c](file://{secret}) and ![d]({secret})")
    qtbot.wait(50)  # laid out and painted: the images were asked for
    doc = view.document()
    for url in (QUrl.fromLocalFile(str(secret)), QUrl(str(secret))):
        got = doc.resource(QTextDocument.ResourceType.ImageResource, url)
        assert isinstance(got, QImage) and got.width() == 16, type(got)  # the grey box, not the file
    assert view.loadResource(QTextDocument.ResourceType.StyleSheetResource, QUrl("x.css")).size() == 0
    assert "Show me" in view.toPlainText()


@pytest.mark.parametrize(
    ("text", "target", "misleading"),
    [
        ("mybank.com/login", "https://mybank.evil.example/steal", True),
        ("https://www.mybank.com", "https://mybank.evil.example/", True),
        ("https://mybank.com", "https://www.mybank.com/login", False),
        ("the docs", "https://docs.python.org/3/", False),  # words: the hover tooltip says where
        ("docs.python.org", "https://docs.python.org/3/library", False),
        ("gnp\u202e.exe", "https://x.org/a.exe", True),  # reads backwards
        ("example.com", "https://xn--exmple-cua.com/", True),  # another script's look-alike
    ],
)
def test_a_link_that_reads_as_another_address_is_misleading(text: str, target: str, misleading: bool) -> None:
    assert misleading_link(text, QUrl(target)) is misleading


def test_a_misleading_link_asks_before_opening_and_a_plain_one_does_not(
    qtbot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[mybank.com/login](https://mybank.evil.example/steal) opened the evil site without a word:
    nothing showed the target, on hover or before opening."""
    from PySide6.QtGui import QDesktopServices

    opened: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toString()) or True)
    view = shown(
        qtbot,
        "See [mybank.com/login](https://mybank.evil.example/steal) or [the docs](https://docs.python.org/3/).",
    )
    asked: list[tuple[str, str]] = []
    view._confirm_link = lambda text, target: asked.append((text, target)) or False  # type: ignore[method-assign]
    doc = view.document()
    for word, url in (
        ("mybank.com/login", "https://mybank.evil.example/steal"),
        ("the docs", "https://docs.python.org/3/"),
    ):
        cur = doc.find(word)
        view.setTextCursor(cur)  # the keyboard's selected link, as Tab selects it
        view.anchorClicked.emit(QUrl(url))
    assert asked == [("mybank.com/login", "https://mybank.evil.example/steal")]
    assert opened == ["https://docs.python.org/3/"]  # the misleading one was declined


def test_bidi_controls_in_a_reply_show_instead_of_reordering_it(qtbot: Any) -> None:
    """An override in a reply reordered the rest of its paragraph: a command in a code block could
    read as another one than what Copy put on the clipboard."""
    reply = "Run this:\n\n```sh\nrm -rf ~/\u202etmp/ #\u202c\n```\n\nיש\u200f עוד \u2067x\u2069"
    view = shown(qtbot, reply)
    text = view.toPlainText()
    assert "\u202e" not in text and "\u2067" not in text and "\u200f" in text  # a mark acts as it should
    assert "\u2066<U+202E>\u2069" in text  # isolated: its brackets are not mirrored in right-to-left text
    text = text.replace("\u2066", "").replace("\u2069", "")
    assert "rm -rf ~/<U+202E>tmp/ #<U+202C>" in text and "<U+2067>x<U+2069>" in text
    assert view.code_blocks() == ["rm -rf ~/<U+202E>tmp/ #<U+202C>"]  # Copy takes what is shown
