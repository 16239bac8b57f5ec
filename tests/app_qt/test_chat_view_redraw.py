"""A conversation is drawn again only from the first message that changed: a reply starting or
ending in a 2,000-message conversation drew every message again (2.3-2.6 s with the window
frozen). Each step below is checked against a fresh view that draws the same messages from
scratch: the same document, code blocks, message positions and links."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtGui import QPalette
from trit.app.core.store import COMPLETE, STOPPED, STREAMING
from trit.app.qt.chat_view import UNSEEN_LINE, ChatView, ShownMessage


def make_view(qtbot: Any) -> ChatView:
    view = ChatView()
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.show()
    qtbot.waitExposed(view)
    return view


def conversation(n: int) -> list[ShownMessage]:
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(ShownMessage(i, "user", f"Question {i}: what about **this** and `that`?"))
        else:
            code = f"\n\n```python\nprint({i})\n```\n\nAnd after it." if i % 4 == 1 else ""
            out.append(
                ShownMessage(
                    i,
                    "assistant",
                    f"Answer {i} with a [link](https://x.org/{i}).{code}",
                    COMPLETE,
                    {"tokens": 9, "decode_tps": 30.0, "ttft_s": 0.1},
                )
            )
    return out


def assert_drawn_as_fresh(qtbot: Any, view: ChatView, messages: list[ShownMessage], **kw: Any) -> None:
    fresh = make_view(qtbot)
    fresh.show_messages(messages, **kw)
    assert view.toHtml() == fresh.toHtml()
    assert view.code_blocks() == fresh.code_blocks()
    assert view._message_starts == fresh._message_starts
    assert view.streaming == fresh.streaming


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the messages drawn, in order."""
    drawn: list[int] = []
    real = ChatView._insert_message

    def insert(self: ChatView, cur: Any, m: ShownMessage, **kw: Any) -> None:
        drawn.append(m.id)
        real(self, cur, m, **kw)

    monkeypatch.setattr(ChatView, "_insert_message", insert)
    return drawn


def test_a_reply_starting_and_ending_draws_only_the_last_turn(qtbot: Any, counted: list[int]) -> None:
    view = make_view(qtbot)
    msgs = conversation(40)
    view.show_messages(msgs)
    assert counted == list(range(40))

    # the user sends: the last question loses its Edit link, the last reply its Regenerate link
    counted.clear()
    asked = [*msgs, ShownMessage(40, "user", "And now?")]
    stream = ShownMessage(41, "assistant", "", STREAMING)
    view.show_messages(asked, stream=stream)
    assert counted == [38, 39, 40]
    assert_drawn_as_fresh(qtbot, view, asked, stream=ShownMessage(41, "assistant", "", STREAMING))

    for piece in ("Some ", "text ```\ncode\n```"):
        view.append_stream(piece)
    view._flush_stream()
    view.end_stream()
    counted.clear()
    done = [*asked, ShownMessage(41, "assistant", "Some text ```\ncode\n```", COMPLETE, {"tokens": 4})]
    view.show_messages(done)
    assert counted == [41]
    assert_drawn_as_fresh(qtbot, view, done)

    # regenerate: the reply goes, a new one streams in its place; then it is stopped
    counted.clear()
    view.show_messages(done[:-1], stream=ShownMessage(42, "assistant", "", STREAMING))
    assert counted == []
    view.append_stream("Half")
    view.end_stream()
    stopped = [*asked, ShownMessage(42, "assistant", "Half", STOPPED, {"tokens": 1})]
    view.show_messages(stopped)
    assert counted == [42]
    assert_drawn_as_fresh(qtbot, view, stopped)


def test_edits_deletes_and_other_conversations_match_a_fresh_drawing(qtbot: Any) -> None:
    view = make_view(qtbot)
    msgs = conversation(30)
    steps: list[tuple[list[ShownMessage], dict[str, Any]]] = [
        (msgs, {}),
        (msgs[:20], {}),  # edit-and-resend of an earlier message cut the rest
        ([*msgs[:19], ShownMessage(19, "assistant", "changed", COMPLETE)], {}),  # one message changed
        ([*msgs[:19], ShownMessage(19, "assistant", "changed", COMPLETE, {"tokens": 2})], {}),  # its stats
        ([ShownMessage(0, "system", "Be brief."), *msgs[:10]], {}),  # a system prompt is not drawn
        ([], {"placeholder": "Type a message to start"}),
        (msgs[:4], {}),
        ([*msgs[:4], ShownMessage(4, "assistant", "cut", STREAMING)], {}),  # interrupted, not streaming
        (conversation(6)[::-1], {}),  # another conversation
        ([], {"stream": ShownMessage(7, "assistant", "", STREAMING)}),
        (msgs[:3], {"stream": ShownMessage(8, "assistant", "", STREAMING)}),
        (msgs[:3], {"stream": ShownMessage(8, "assistant", "", STREAMING)}),  # the same again
    ]
    for messages, kw in steps:
        view.show_messages(messages, **kw)
        assert_drawn_as_fresh(qtbot, view, messages, **kw)


def test_a_palette_change_draws_everything_again(qtbot: Any, counted: list[int]) -> None:
    view = make_view(qtbot)
    msgs = conversation(6)
    view.show_messages(msgs)
    counted.clear()
    pal = view.palette()
    pal.setColor(QPalette.ColorRole.Base, pal.color(QPalette.ColorRole.Text))
    pal.setColor(QPalette.ColorRole.Text, view.palette().color(QPalette.ColorRole.Base))
    view.setPalette(pal)
    assert counted == list(range(6))
    fresh = make_view(qtbot)
    fresh.setPalette(pal)
    fresh.show_messages(msgs)
    assert view.toHtml() == fresh.toHtml()


def test_a_message_changed_in_place_by_its_owner_is_drawn_again(qtbot: Any) -> None:
    """The view keeps its own copies: a caller that changes a message object it passed (its
    stats filled in afterwards) still gets it drawn again."""
    view = make_view(qtbot)
    msgs = conversation(4)
    view.show_messages(msgs)
    msgs[3].stats["tokens"] = 99
    msgs[3].content += " More."
    view.show_messages(msgs)
    assert_drawn_as_fresh(qtbot, view, msgs)


def test_a_line_marks_the_messages_the_latest_reply_was_written_without(qtbot: Any) -> None:
    """A conversation that outgrew the context said so for 12 s in the status bar only; nothing
    in the conversation showed which messages the model no longer saw."""
    view = make_view(qtbot)
    msgs = conversation(10)
    msgs[9].stats["left_out"] = 4  # the worker left out messages 0-3 for the latest reply
    system = ShownMessage(100, "system", "Be brief.")
    view.show_messages([system, *msgs])
    text = view.toPlainText()
    assert text.count(UNSEEN_LINE) == 1
    assert text.index("Answer 3") < text.index(UNSEEN_LINE) < text.index("Question 4")
    assert_drawn_as_fresh(qtbot, view, [system, *msgs])

    # the next turn streams: the line stays where the latest finished reply put it
    asked = [*msgs, ShownMessage(10, "user", "More?")]
    view.show_messages(asked, stream=ShownMessage(11, "assistant", "", STREAMING))
    assert view.toPlainText().count(UNSEEN_LINE) == 1
    # it was written without 6: the line moves
    done = [*asked, ShownMessage(11, "assistant", "Yes.", COMPLETE, {"left_out": 6})]
    view.show_messages(done)
    text = view.toPlainText()
    assert text.count(UNSEEN_LINE) == 1 and text.index("Answer 5") < text.index(UNSEEN_LINE) < text.index(
        "Question 6"
    )
    assert_drawn_as_fresh(qtbot, view, done)
    # Context size raised: the next reply saw everything, and the line goes
    done2 = [*done, ShownMessage(12, "user", "Again"), ShownMessage(13, "assistant", "Ok.", COMPLETE, {})]
    view.show_messages(done2)
    assert UNSEEN_LINE not in view.toPlainText()
    assert_drawn_as_fresh(qtbot, view, done2)
    for bad in (0, -3, True, "4", 99):  # none, or nonsense from a damaged file: no line
        view.show_messages([*msgs[:9], ShownMessage(9, "assistant", "x", COMPLETE, {"left_out": bad})])
        assert UNSEEN_LINE not in view.toPlainText()


def test_the_line_counts_only_messages_that_were_in_the_prompt(qtbot: Any) -> None:
    """A reply stopped before its first token is empty and not part of the prompt: the line was
    drawn one message too high for each, above a reply the model never saw."""
    view = make_view(qtbot)
    msgs = [
        ShownMessage(0, "user", "Question zero"),
        ShownMessage(1, "assistant", "", STOPPED),  # Esc before the first token
        ShownMessage(2, "user", "Question two"),
        ShownMessage(3, "assistant", "Answer three"),
        ShownMessage(4, "user", "Question four"),
        ShownMessage(5, "assistant", "Answer five", COMPLETE, {"left_out": 3}),  # the prompt lost 0, 2, 3
    ]
    view.show_messages(msgs)
    text = view.toPlainText()
    assert text.index("Answer three") < text.index(UNSEEN_LINE) < text.index("Question four")
