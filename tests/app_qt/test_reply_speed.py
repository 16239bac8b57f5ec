"""The speed area beside the prompt (label and chart) and the Stop button with more than one
conversation: a running reply's progress is named when another conversation is shown, its final
figures stay with its own conversation, a chart that is over says so, one token or none shows no
speed, a discarded attempt leaves the figures of the reply that stays, and Stop / Esc act on the
running reply as the button says. The real window and SmolLM2."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import QObject, Slot
from trit.app.core.sampling import Sampling
from trit.app.core.store import STOPPED
from trit.app.qt.main_window import MainWindow

from .conftest import REPLY_TIMEOUT_MS

pytestmark = pytest.mark.timeout(300)

LONG = Sampling(temperature=0.8, top_p=0.95, max_tokens=400)
GREEDY = Sampling(temperature=0.0, top_p=1.0, max_tokens=24)


def conversation(win: MainWindow, title: str, sampling: Sampling) -> int:
    cid = win.new_conversation(title)
    win.store.update_conversation(cid, sampling=sampling)
    win.select_conversation(cid)
    return cid


def wait_tokens(qtbot: Any, win: MainWindow, n: int) -> None:
    qtbot.waitUntil(lambda: win.reply is not None and len(win.chart.tps) >= n, timeout=60_000)


def reply(qtbot: Any, win: MainWindow, action: Any) -> dict[str, Any]:
    with qtbot.waitSignal(win.reply_finished, timeout=REPLY_TIMEOUT_MS) as blocker:
        action()
    return dict(blocker.args[0])


def test_a_reply_that_ends_in_another_conversation_keeps_its_figures_in_its_own(
    qtbot: Any, window: MainWindow
) -> None:
    """QA: A's reply ended while empty B was shown: B showed A's tokens and tok/s and its chart,
    still titled "now …", and going back to A cleared them."""
    win = window
    a = conversation(win, "Rain poem", Sampling(temperature=0.8, top_p=0.95, max_tokens=120))
    assert win.send("Write a short poem about rain.")
    wait_tokens(qtbot, win, 2)
    assert win.chart.title().startswith("now ")
    b = win.new_conversation("B")
    assert win.current_id == b and win.reply is not None
    # while it runs, the speed area beside B is the reply's and says whose
    assert win.live_label.text().startswith("“Rain poem”: ")
    with qtbot.waitSignal(win.reply_finished, timeout=REPLY_TIMEOUT_MS) as blocker:
        pass
    d = blocker.args[0]
    assert d["conversation_id"] == a and d["record"]["tokens"] > 1
    assert win.live_label.text() == "" and win.chart.tps == []  # B has had no reply
    win.select_conversation(a)
    rec = d["record"]
    assert win.live_label.text() == f"{rec['tokens']} tokens · {rec['decode_tps']:.1f} tok/s"
    assert win.chart.tps and not win.chart.title().startswith("now")
    win.select_conversation(b)
    assert win.live_label.text() == "" and win.chart.tps == []


def test_a_finished_reply_in_the_shown_conversation_drops_now(qtbot: Any, window: MainWindow) -> None:
    win = window
    conversation(win, "Story", Sampling(temperature=0.8, top_p=0.95, max_tokens=40))
    d = reply(qtbot, win, lambda: win.send("Tell me a story about a cat."))
    assert d["record"]["tokens"] > 10 and win.chart.tps
    assert win.chart.title() == "tok/s during the reply"
    assert win.live_label.text().endswith(f"· {d['record']['decode_tps']:.1f} tok/s")


def test_one_token_or_none_shows_no_speed(qtbot: Any, window: MainWindow) -> None:
    """QA: "1 token · 0.0 tok/s" and "0 tokens · 0.0 tok/s" (the line under the reply rightly
    leaves the speed out of one token, and says a reply stopped in its prompt was stopped)."""
    win = window
    conversation(win, "One", Sampling(temperature=0.0, top_p=1.0, max_tokens=1))
    d = reply(qtbot, win, lambda: win.send("Say hello."))
    assert d["record"]["tokens"] == 1
    assert win.live_label.text() == "1 token"
    conversation(win, "None", GREEDY)

    def send_and_stop() -> None:
        assert win.send("Say hello.")
        win.stop()  # before the worker has begun: it never starts the reply

    d = reply(qtbot, win, send_and_stop)
    assert d["status"] == STOPPED and d["record"]["tokens"] == 0
    assert win.live_label.text() == "" and win.chart.tps == []


def test_a_discarded_attempt_leaves_the_kept_replys_figures(qtbot: Any, window: MainWindow) -> None:
    """QA: Ctrl+R then Esc at once kept the old reply but the label said "0 tokens · 0.0 tok/s"
    for the attempt that was thrown away."""
    win = window
    cid = conversation(win, "Colours", GREEDY)
    first = reply(qtbot, win, lambda: win.send("Name three colours."))
    shown = win.live_label.text()
    assert shown.startswith(f"{first['record']['tokens']} tokens · ")
    points = list(win.chart.tps)
    before = [(m.id, m.content) for m in win.store.messages(cid)]

    def regenerate_and_escape() -> None:
        win.regenerate()
        win.escape()

    d = reply(qtbot, win, regenerate_and_escape)
    assert d["record"]["tokens"] == 0
    assert [(m.id, m.content) for m in win.store.messages(cid)] == before  # the old reply stays
    assert win.live_label.text() == shown and win.chart.tps == points
    assert not win.chart.title().startswith("now")


def test_stop_names_the_reply_it_stops_and_esc_elsewhere_leaves_it(qtbot: Any, window: MainWindow) -> None:
    """QA: Stop and Esc while B was shown stopped A's reply without a word. The Stop button is
    about the running reply wherever it is, and its tooltip names the conversation; Esc belongs
    to the conversation shown, so in B it leaves A's reply running."""
    win = window
    a = conversation(win, "Lighthouse", LONG)
    assert win.send("Write a long story about a lighthouse keeper and a storm.")
    wait_tokens(qtbot, win, 2)
    assert win.stop_button.toolTip() == "Stop the reply (Esc)"
    win.new_conversation("B")
    assert win.stop_button.isEnabled()
    assert win.stop_button.toolTip() == "Stop the reply being written in “Lighthouse”"
    assert win.stop_button.accessibleDescription() == win.stop_button.toolTip()
    # a long title in the speed area does not widen the window on a small screen (800 pixels
    # at 200% scaling), it is cut with "…"
    win.resize(800, 500)
    win.rename(a, "Lighthouse keepers and the storm of the century")
    qtbot.wait(300)  # a few progress updates
    assert win.live_label.text().startswith("“Lighthouse keepers and the stor…”: ")
    assert win.stop_button.toolTip().endswith("“Lighthouse keepers and the stor…”")
    assert win.width() == 800
    win.rename(a, "Lighthouse")
    win.prompt.setFocus()
    win.stop_action.trigger()  # Esc
    n = len(win.chart.tps)
    wait_tokens(qtbot, win, n + 3)  # still writing
    assert win.reply is not None and win.reply["conversation_id"] == a
    # sending in B says which reply is in the way and how to end it
    assert not win.send("A question for B")
    assert "“Lighthouse”" in win.statusBar().currentMessage() and "Stop" in win.statusBar().currentMessage()
    d = reply(qtbot, win, win.stop_button.click)
    assert d["conversation_id"] == a and d["status"] == STOPPED
    assert win.reply is None and not win.stop_button.isEnabled()
    assert win.stop_button.toolTip() == "Stop the reply (Esc)"
    assert win.live_label.text() == ""  # B's area: A's figures stay with A
    win.select_conversation(a)
    assert win.live_label.text().startswith(f"{d['record']['tokens']} tokens")


def test_the_charts_first_point_is_decode_speed_not_the_prompts_wait(
    qtbot: Any, window: MainWindow, monkeypatch: Any
) -> None:
    """The first progress point counted the time from the reply's start (fitting, the prompt) as
    decode time: after a long prompt the chart began near 0 tok/s and climbed to the real speed."""
    import time

    from trit.app.qt import worker as worker_module

    slow_prompt = window.worker._fit  # a prompt pass that takes a second: the wait before token 1

    def fit_slowly(*a: Any, **k: Any) -> Any:
        time.sleep(1.0)
        return slow_prompt(*a, **k)

    monkeypatch.setattr(window.worker, "_fit", fit_slowly)
    monkeypatch.setattr(worker_module, "PROGRESS_INTERVAL", 0.05)
    points: list[float] = []
    window.worker.progress.connect(lambda d: points.append(float(d["tps"])))
    conversation(window, "Chart", Sampling(temperature=0.0, top_p=1.0, max_tokens=60))
    d = reply(qtbot, window, lambda: window.send("Write a short poem about the sea."))
    assert d["record"]["tokens"] >= 20 and len(points) >= 3, (d["record"], points)
    rest = sorted(points[1:])
    assert points[0] > 0.3 * rest[len(rest) // 2], points  # it was about 1/20 of the rest


def test_a_long_prompt_shows_how_much_of_it_has_been_read(qtbot: Any, window: MainWindow) -> None:
    """QA: a 1,530-token prompt took 50 s before the first word, the speed area saying only
    "Reading the prompt…". Each batch of the prompt now updates the count."""
    win = window
    conversation(win, "Long", Sampling(temperature=0.0, top_p=1.0, max_tokens=2))
    shown: list[tuple[str, dict[str, Any]]] = []

    class Seen(QObject):  # a GUI-thread receiver after the window's own: the label shows the batch
        @Slot(dict)
        def add(self, p: dict[str, Any]) -> None:
            shown.append((win.live_label.text(), dict(p)))

    seen = Seen()
    win.worker.prompt_progress.connect(seen.add)
    text = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(40))
    d = reply(qtbot, win, lambda: win.send(text))
    assert d["record"]["tokens"] >= 1
    assert len(shown) >= 3
    total = shown[0][1]["total"]
    assert total > 3 * 128 and all(p["total"] == total for _, p in shown)
    assert [p["done"] for _, p in shown] == list(range(128, total, 128))[: len(shown)]
    for label, p in shown:
        assert label == f"Reading the prompt… {p['done']:,} of {total:,} tokens"
    assert "Reading the prompt" not in win.live_label.text()
