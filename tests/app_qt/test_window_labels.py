"""What the status bar's model label and the window's questions say about the engine settings."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from trit.app.core.sampling import Sampling
from trit.app.qt.main_window import MainWindow

from .conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS

pytestmark = pytest.mark.timeout(300)


def test_fast_activations_are_named_in_the_model_label(qtbot: Any, window: MainWindow) -> None:
    win = window
    assert "activations" not in win.model_label.text()
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS):
        win.apply_settings(dataclasses.replace(win.ctx.settings, activations="q8"))
    assert "8-bit activations" in win.model_label.text()  # it said nothing: other answers, no hint why
    assert "Activation precision: Fast" in win.model_label.toolTip()
    assert "approximate" in win.model_label.toolTip()


@pytest.mark.parametrize(("field", "value"), [("kv_cache", "f16"), ("bitnet_mode", "a4.8")])
def test_the_stop_question_names_every_setting_that_reloads(
    qtbot: Any, window: MainWindow, field: str, value: str
) -> None:
    win = window
    cid = win.new_conversation()
    win.store.update_conversation(cid, sampling=Sampling(temperature=0.8, top_p=0.95, max_tokens=400))
    win.send("Write a long story about a lighthouse keeper and a storm.")
    qtbot.waitUntil(lambda: win.reply is not None and len(win.reply["text"].split()) >= 3, timeout=60_000)
    asked: list[str] = []
    win._confirm = lambda title, text: asked.append(text) or False  # type: ignore[method-assign]
    assert win.apply_settings(dataclasses.replace(win.ctx.settings, **{field: value})) is None
    assert asked and "conversation memory" in asked[0] and "BitNet mode" in asked[0]
    with qtbot.waitSignal(win.reply_finished, timeout=REPLY_TIMEOUT_MS):
        win.stop()


def test_one_thread_is_one_thread(qtbot: Any, window: MainWindow) -> None:
    win = window
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS):
        win.apply_settings(dataclasses.replace(win.ctx.settings, threads=1))
    assert " · 1 thread" in win.model_label.text() and "1 threads" not in win.model_label.text()
    assert "1 thread)" in win.about_text()
