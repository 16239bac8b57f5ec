"""Settings that live in the engine's session (threads, context, conversation memory, BitNet mode)
are applied to the loaded model through a new session, not by loading it again; the weights'
settings (activation precision, output head) still reload."""

from __future__ import annotations

import dataclasses
import gc
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from trit.app.core.sampling import Sampling
from trit.app.qt.main_window import MainWindow
from trit.app.qt.worker import EngineWorker

from .conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS

pytestmark = pytest.mark.timeout(300)


def apply(qtbot: Any, win: MainWindow, **changes: Any) -> dict[str, Any]:
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        assert win.apply_settings(dataclasses.replace(win.ctx.settings, **changes)) == {}
        label, status = win.model_label.text(), win.statusBar().currentMessage()
    return {**blocker.args[0], "label_while": label, "status_while": status}


def test_session_settings_keep_the_model_and_free_the_old_session(qtbot: Any, window: MainWindow) -> None:
    win = window
    worker = win.worker
    model = worker._model
    old = weakref.ref(worker._session)
    info = apply(qtbot, win, threads=1)
    # the model was not loaded again: the same object, a new session with a pool of one thread
    assert worker._model is model and info["applied"] and not info.get("problem")
    assert worker._session.threads == 1 and info["threads"] == 1
    gc.collect()
    assert old() is None  # its KV cache and pool threads are gone, not kept beside the new ones
    assert not info["label_while"].startswith("Loading")  # it said "Loading …" and reloaded
    assert info["status_while"] == "Settings saved and applied"
    assert win.statusBar().currentMessage().startswith("Applied to ")
    assert " · 1 thread" in win.model_label.text()
    assert info["load_s"] < 1.0  # a new session: milliseconds (SmolLM2's reload took ~0.3 s)
    f32_kv = info["kv_bytes"]
    info = apply(qtbot, win, kv_cache="f16", context=2048)
    assert worker._model is model and info["applied"] and info["kv"] == "f16" and info["context"] == 2048
    assert info["kv_bytes"] * 4 == f32_kv  # half the bytes per position, half the positions
    assert win.last_memory is not None and win.last_memory.kv_bytes == info["kv_bytes"]
    assert "16-bit memory" in win.model_label.text()
    info = apply(qtbot, win, bitnet_mode="a4.8")
    assert worker._model is model and info["a48"] and "a4.8" in win.model_label.text()
    info = apply(qtbot, win, bitnet_mode="b1.58", kv_cache="f32", context=4096, threads=2)
    assert worker._session.threads == 2 and not info["a48"] and info["kv"] == "f32"
    # it chats on the new session
    cid = win.new_conversation()
    win.store.update_conversation(cid, sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=12))
    with qtbot.waitSignal(win.reply_finished, timeout=REPLY_TIMEOUT_MS) as done:
        win.send("What is the capital of France?")
    assert done.args[0]["status"] == "complete" and "Paris" in done.args[0]["text"]
    # the weights' settings load the model again
    info = apply(qtbot, win, activations="q8")
    assert worker._model is not model and not info.get("applied")
    assert info["label_while"].startswith("Loading ")


def test_a_session_change_during_a_reply_asks_and_stops_it(qtbot: Any, window: MainWindow) -> None:
    win = window
    model = win.worker._model
    cid = win.new_conversation()
    win.store.update_conversation(cid, sampling=Sampling(temperature=0.8, top_p=0.95, max_tokens=400))
    win.send("Write a long story about a lighthouse keeper and a storm.")
    qtbot.waitUntil(lambda: win.reply is not None and len(win.reply["text"].split()) >= 3, timeout=60_000)
    asked: list[str] = []
    win._confirm = lambda title, text: asked.append(text) or True  # type: ignore[method-assign]
    with qtbot.waitSignal(win.reply_finished, timeout=10_000) as finished:
        info = apply(qtbot, win, threads=1)
    assert "model stays loaded" in asked[0] and "conversation memory" in asked[0]
    assert finished.args[0]["status"] == "stopped" and info["applied"] and win.worker._model is model
    assert win.send_button.isEnabled()


def test_a_session_option_the_model_cannot_take_keeps_the_old_session(qtbot: Any) -> None:
    """kv q3 on a head size of 48: the new session is refused; the model keeps its previous one
    and `loaded` says why (the window shows it in the banner) instead of dropping the model."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from tiny import random_weights
    from trit.engine import Model

    worker = EngineWorker(store=None)  # type: ignore[arg-type]  # no replies here
    try:
        model = Model(random_weights(1, n_heads=4, n_kv_heads=2, head_dim=48)[0], threads=1, context=64)
        worker._model, worker._session, worker._path = model, model.session(), "head48.gguf"
        got: list[dict[str, Any]] = []
        failed: list[Any] = []
        worker.loaded.connect(got.append, Qt.ConnectionType.DirectConnection)
        worker.load_failed.connect(lambda *a: failed.append(a), Qt.ConnectionType.DirectConnection)
        worker._do_load("head48.gguf", 2, 32, {"kv": "q3", "a48": False}, True)
        assert not failed and got[0]["applied"] and "divisible by 32" in got[0]["problem"]
        assert "Conversation memory" in got[0]["problem_fix"]
        assert worker._model is model and worker._session.kv == "f32" and got[0]["kv"] == "f32"
        assert worker._session.context == 64 and got[0]["threads"] == 1  # all of the old options
        worker._do_load("head48.gguf", 2, 32, {"kv": "q8", "a48": False}, True)
        assert got[1]["applied"] and not got[1]["problem"] and worker._session.kv == "q8"
        assert (worker._session.threads, worker._session.context) == (2, 32)
    finally:
        worker.shutdown()
