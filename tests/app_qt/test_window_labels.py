"""What the status bar's model label and the window's questions say about the engine settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from trit.app.core.sampling import Sampling
from trit.app.qt.main_window import MainWindow

from .conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS, open_window

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


def test_fast_activations_on_ternary_layers_are_named_as_not_applied(
    qtbot: Any, make_ctx: Any, tiny_chat_gguf: Path
) -> None:
    """Activation precision Fast changes nothing on a BitNet model (its layers are ternary, its
    head f16): the label said '8-bit activations', and switching it reloaded the model."""
    ctx = make_ctx()
    ctx.save_settings(dataclasses.replace(ctx.settings, activations="q8"))
    win = open_window(qtbot, ctx, autoload=False)
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        win.load_model(str(tiny_chat_gguf))
    info = blocker.args[0]
    assert info["activations"] == "f32" and "activations" in info["no_effect"]
    assert "8-bit activations" not in win.model_label.text()
    assert "Activation precision Fast does not apply" in win.model_label.toolTip()
    assert "Activation precision Fast does not apply" in win.statusBar().currentMessage()
    model = win.worker._model
    with qtbot.assertNotEmitted(win.model_loaded, wait=300):  # no reload either way
        assert win.apply_settings(dataclasses.replace(win.ctx.settings, activations="f32")) == {}
    assert (
        "does not apply" not in win.model_label.toolTip()
        and win.statusBar().currentMessage() == "Settings saved"
    )
    with qtbot.assertNotEmitted(win.model_loaded, wait=300):
        assert win.apply_settings(dataclasses.replace(win.ctx.settings, activations="q8")) == {}
    assert "Activation precision Fast does not apply" in win.statusBar().currentMessage()
    assert "Activation precision Fast does not apply" in win.model_label.toolTip()
    # with a session change it is applied to the kept model
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        win.apply_settings(dataclasses.replace(win.ctx.settings, threads=1, activations="f32"))
    assert blocker.args[0]["applied"] and win.worker._model is model


def test_fast_head_on_a_quantized_head_is_named_as_not_applied(qtbot: Any, window: MainWindow) -> None:
    """SmolLM2's head is Q8_0 already: Output head Fast was reloaded for nothing and only stderr
    said it did not apply."""
    win = window
    model = win.worker._model
    with qtbot.assertNotEmitted(win.model_loaded, wait=300):
        assert win.apply_settings(dataclasses.replace(win.ctx.settings, lm_head="q8_0")) == {}
    assert win.worker._model is model and "approx" not in win.model_label.text()
    assert "Output head Fast does not apply" in win.statusBar().currentMessage()
    assert "head is Q8_0 already" in win.model_label.toolTip()
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        win.apply_settings(dataclasses.replace(win.ctx.settings, kv_cache="f16"))
    assert blocker.args[0]["applied"] and win.worker._model is model
    assert "Output head Fast does not apply" in win.model_label.toolTip()
