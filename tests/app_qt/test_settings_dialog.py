"""File › Settings… on the real window: opened with Ctrl+,, values shown (token masked), checks
with messages and focus on the bad field, saved 0600, energy figure applied at once, and threads /
context / precision reloading SmolLM2 through the worker, asking first when a reply is running."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtGui import QAccessible, QColor, QKeySequence, QPalette, QScreen
from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox, QApplication, QComboBox, QLineEdit, QWidget
from trit.app.core.sampling import Sampling
from trit.app.core.settings import default_settings, physical_cores
from trit.app.core.store import STOPPED
from trit.app.qt.colours import contrast
from trit.app.qt.main_window import MainWindow
from trit.app.qt.settings_dialog import SettingsDialog

from .conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS, open_window

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def win(qtbot: Any, make_ctx: Any) -> MainWindow:
    return open_window(qtbot, make_ctx(), autoload=False)


def open_dialog(qtbot: Any, win: MainWindow) -> SettingsDialog:
    win.activateWindow()
    win.prompt.setFocus()
    qtbot.waitUntil(lambda: win.prompt.hasFocus(), timeout=2000)
    qtbot.keyClick(win.prompt, Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)
    dlg = win._settings_dialog
    assert isinstance(dlg, SettingsDialog)
    qtbot.waitUntil(lambda: dlg.isVisible() and QApplication.activeWindow() is dlg, timeout=2000)
    return dlg


def test_ctrl_comma_opens_settings_with_the_current_values(qtbot: Any, win: MainWindow) -> None:
    assert win.settings_action.shortcut() == QKeySequence("Ctrl+,")
    assert win.panel_action.shortcut() != QKeySequence("Ctrl+,")  # the panel toggle moved off it
    win.ctx.save_settings(dataclasses.replace(win.ctx.settings, hf_token="hf_secret123", context=2048))
    dlg = open_dialog(qtbot, win)
    assert dlg.threads.value() == physical_cores() == default_settings().threads
    assert dlg.context.value() == 2048
    assert dlg.precision.currentData() == "f32" and dlg.precision.currentText() == "Exact (f32)"
    assert [dlg.precision.itemText(i) for i in range(dlg.precision.count())] == [
        "Exact (f32)",
        "Fast, llama.cpp-style (q8)",
    ]
    assert dlg.models_dir.text() == str(win.ctx.library.folder)
    assert dlg.endpoint.text() == "https://huggingface.co"
    assert dlg.watts.value() == 5.0
    # the token is masked until Show is pressed
    assert dlg.token.text() == "hf_secret123"
    assert dlg.token.echoMode() == QLineEdit.EchoMode.Password
    assert "hf_secret123" not in dlg.token.displayText()
    dlg.show_token.click()
    assert (
        dlg.token.displayText() == "hf_secret123" and dlg.show_token.accessibleName() == "Hide access token"
    )
    dlg.show_token.click()
    assert dlg.token.echoMode() == QLineEdit.EchoMode.Password
    # Esc closes without saving
    dlg.threads.setValue(1)
    qtbot.keyClick(dlg, Qt.Key.Key_Escape)
    assert not dlg.isVisible() and win.ctx.settings.threads == physical_cores()
    # opened again, it shows the saved values, not the abandoned edit
    dlg = open_dialog(qtbot, win)
    assert dlg.threads.value() == physical_cores()


def test_bad_values_are_named_and_focused_and_nothing_is_saved(
    qtbot: Any, win: MainWindow, tmp_path: Path
) -> None:
    before = win.ctx.settings
    dlg = open_dialog(qtbot, win)
    dlg.endpoint.setText("huggingface.co")
    dlg.token.setText("hf_two words")
    dlg.ok_button.click()
    assert dlg.isVisible() and dlg.problems.isVisible()
    text = dlg.problems.text()
    assert "Hugging Face endpoint: must be an http(s) URL" in text
    assert "Access token: must be one word" in text and "hf_" in text
    assert "two words" not in text  # the token itself is never echoed
    assert dlg.endpoint.hasFocus()  # the first bad field, in the dialog's order
    assert win.ctx.settings == before and not win.ctx.settings_store.path.exists()

    dlg.endpoint.setText("https://hub.example.org/")
    dlg.token.setText("hf_ok")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    dlg.models_dir.setText(str(blocker / "models"))  # cannot be created under a file
    dlg.ok_button.click()
    assert dlg.isVisible()
    assert (
        dlg.problems.text().startswith("Models folder:") and "cannot use this folder" in dlg.problems.text()
    )
    assert "Choose a folder you can write to" in dlg.problems.text() and dlg.models_dir.hasFocus()
    assert win.ctx.settings == before

    dlg.models_dir.setText("")
    dlg.ok_button.click()
    assert "Models folder: must be a folder path" in dlg.problems.text()


def test_saved_owner_only_and_applied_without_a_reload(qtbot: Any, win: MainWindow, tmp_path: Path) -> None:
    dlg = open_dialog(qtbot, win)
    loads: list[Any] = []
    win.worker.loaded.connect(loads.append)
    new_folder = tmp_path / "my models"
    dlg.models_dir.setText(str(new_folder))
    dlg.endpoint.setText("http://127.0.0.1:8080/")
    dlg.token.setText("hf_gatedAccess9")
    dlg.watts.setValue(7.5)
    dlg.ok_button.click()
    assert not dlg.isVisible()
    s = win.ctx.settings
    assert s.hf_endpoint == "http://127.0.0.1:8080" and s.hf_token == "hf_gatedAccess9"
    assert s.models_dir == str(new_folder) and win.ctx.library.folder == new_folder and new_folder.is_dir()
    assert win.ctx.energy is not None and win.ctx.energy.estimate.watts_per_core == 7.5
    assert win.ctx.energy.estimate.label == "estimated: CPU time x 7.5 W/core"
    path = win.ctx.settings_store.path
    assert win.ctx.settings_store.load() == s
    assert json.loads(path.read_text())["hf_token"] == "hf_gatedAccess9"
    if sys.platform != "win32":
        assert path.stat().st_mode & 0o777 == 0o600
    assert "Settings saved" in win.statusBar().currentMessage()
    qtbot.wait(50)
    assert loads == []  # no engine setting changed, and no model was loaded anyway
    # the model manager uses the new folder, endpoint and token
    win.open_models()
    mdlg = win._models_dialog
    qtbot.addWidget(mdlg)
    assert mdlg.folder_label.text() == str(new_folder) and mdlg._token() == "hf_gatedAccess9"
    mdlg.close()


def test_restore_defaults_keeps_folder_and_token(qtbot: Any, win: MainWindow) -> None:
    win.ctx.save_settings(
        dataclasses.replace(
            win.ctx.settings, threads=1, context=1024, activations="q8", lm_head="q8_0", hf_token="hf_keep"
        )
    )
    dlg = open_dialog(qtbot, win)
    folder = dlg.models_dir.text()
    dlg.watts.setValue(9.0)
    dlg.defaults_button.click()
    d = default_settings()
    assert (
        dlg.threads.value(),
        dlg.context.value(),
        dlg.precision.currentData(),
        dlg.lm_head.currentData(),
    ) == (
        d.threads,
        d.context,
        d.activations,
        d.lm_head,
    )
    assert dlg.watts.value() == d.watts_per_core and dlg.endpoint.text() == d.hf_endpoint
    assert dlg.models_dir.text() == folder and dlg.token.text() == "hf_keep"


def test_keyboard_order_and_accessible_names(qtbot: Any, win: MainWindow) -> None:
    dlg = open_dialog(qtbot, win)
    order = dlg.tab_order
    for w in order:
        assert w.accessibleName(), w
    for w in (
        dlg.findChildren(QAbstractButton) + dlg.findChildren(QAbstractSpinBox) + dlg.findChildren(QComboBox)
    ):
        assert w.accessibleName(), w
    dlg.threads.setFocus()
    qtbot.waitUntil(dlg.threads.hasFocus, timeout=2000)
    seen: list[QWidget] = [dlg.threads]
    for _ in range(40):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        w = QApplication.focusWidget()
        while w is not None and w not in order:
            w = w.parentWidget()  # a spin box's line edit stands for the spin box
        if w is not None and w is not seen[-1]:
            seen.append(w)
        if w is order[-1]:
            break
    assert seen == order
    # labels are buddies: Alt+T goes to Threads from anywhere in the dialog
    dlg.watts.setFocus()
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_T, Qt.KeyboardModifier.AltModifier)
    assert dlg.threads.hasFocus() or dlg.threads.lineEdit().hasFocus()


def reload_with(qtbot: Any, win: MainWindow, **choices: str) -> dict[str, Any]:
    """Settings > each named combo box set to the given value, OK; -> the reloaded model's info."""
    dlg = open_dialog(qtbot, win)
    for name, value in choices.items():
        box = getattr(dlg, name)
        box.setCurrentIndex(box.findData(value))
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        dlg.ok_button.click()
    return blocker.args[0]


def ask_capital(qtbot: Any, win: MainWindow) -> dict[str, Any]:
    with qtbot.waitSignal(win.reply_finished, timeout=REPLY_TIMEOUT_MS) as done:
        win.send("What is the capital of France?")
    return done.args[0]


def test_engine_settings_reload_the_model(qtbot: Any, window: MainWindow) -> None:
    win = window
    assert window.model_info is not None and window.model_info["activations"] == "f32"
    dlg = open_dialog(qtbot, win)
    dlg.threads.setValue(1)
    dlg.context.setValue(512)
    dlg.precision.setCurrentIndex(dlg.precision.findData("q8"))
    dlg.lm_head.setCurrentIndex(dlg.lm_head.findData("q8_0"))
    dlg.kv_cache.setCurrentIndex(dlg.kv_cache.findData("f16"))
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        dlg.ok_button.click()
        assert win.model_label.text().startswith("Loading ") and not win.send_button.isEnabled()
    info = blocker.args[0]
    assert info["threads"] == 1 and info["context"] == 512 and info["activations"] == "q8"
    assert info["kv"] == "f16" and "16-bit memory" in win.model_label.text()
    assert "Conversation memory: 16-bit" in win.model_label.toolTip()
    assert "· 1 thread ·" in win.model_label.text() and win.send_button.isEnabled()
    s = win.ctx.settings_store.load()
    assert (s.threads, s.context, s.activations, s.lm_head, s.kv_cache) == (1, 512, "q8", "q8_0", "f16")
    # SmolLM2 stores its head as Q8_0 already: nothing is built, so the label does not say "approx."
    assert info["head_type"] == "Q8_0" and not info["head_approx"] and "approx" not in win.model_label.text()
    # and it chats with them
    cid = win.new_conversation()
    win.store.update_conversation(cid, sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=12))
    reply = ask_capital(qtbot, win)
    assert reply["status"] == "complete" and "Paris" in reply["text"]
    # the 8-bit conversation memory: a quarter of the exact cache's bytes, and it still chats
    f16_kv = info["kv_bytes"]
    info = reload_with(qtbot, win, kv_cache="q8")
    assert info["kv"] == "q8" and "8-bit memory" in win.model_label.text()
    assert "a quarter of the memory" in win.model_label.toolTip()
    assert f16_kv / 2 < info["kv_bytes"] < f16_kv * 0.6  # codes plus one float scale per row
    reply = ask_capital(qtbot, win)
    assert reply["status"] == "complete" and "Paris" in reply["text"]
    # BitNet a4.8 with its 3-bit memory: labelled experimental; SmolLM2 was not trained for it, so
    # the reply is only required to arrive, not to be right
    q8_kv = info["kv_bytes"]
    info = reload_with(qtbot, win, kv_cache="q3", bitnet_mode="a4.8")
    assert info["kv"] == "q3" and info["a48"] and "3-bit memory" in win.model_label.text()
    assert "a4.8 (experimental)" in win.model_label.text() and "lose most" in win.model_label.toolTip()
    assert "an eighth of the memory" in win.model_label.toolTip()
    assert q8_kv * 0.4 < info["kv_bytes"] < q8_kv * 0.5  # 3 of 8 bits, a float per 32 elements
    assert win.ctx.settings_store.load().engine_options()["a48"]
    reply = ask_capital(qtbot, win)
    assert reply["status"] == "complete" and reply["text"]
    info = reload_with(qtbot, win, bitnet_mode="b1.58")
    assert not info["a48"] and "a4.8" not in win.model_label.text()


def test_reload_during_a_reply_asks_first(qtbot: Any, window: MainWindow) -> None:
    win = window
    cid = win.new_conversation()
    win.store.update_conversation(cid, sampling=Sampling(temperature=0.8, top_p=0.95, max_tokens=400))
    win.send("Write a long story about a lighthouse keeper and a storm.")
    qtbot.waitUntil(lambda: win.reply is not None and len(win.reply["text"].split()) >= 5, timeout=60_000)
    asked: list[str] = []
    win._confirm = lambda title, text: asked.append(text) or False  # type: ignore[method-assign]
    dlg = open_dialog(qtbot, win)
    dlg.threads.setValue(1)
    dlg.ok_button.click()
    assert asked and "Stop the reply" in asked[0]
    assert dlg.isVisible() and win.reply is not None  # "no": nothing applied, the reply goes on
    assert win.ctx.settings.threads == physical_cores()
    # a change that needs no reload does not ask
    dlg.threads.setValue(physical_cores())
    dlg.watts.setValue(6.0)
    dlg.ok_button.click()
    assert len(asked) == 1 and not dlg.isVisible() and win.reply is not None
    # "yes": the reply stops (kept as stopped) and the model comes back with the new threads
    win._confirm = lambda title, text: True  # type: ignore[method-assign]
    dlg = open_dialog(qtbot, win)
    dlg.threads.setValue(1)
    with (
        qtbot.waitSignal(win.reply_finished, timeout=10_000) as finished,
        qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS) as loaded,
    ):
        dlg.ok_button.click()
    assert finished.args[0]["status"] == STOPPED and loaded.args[0]["threads"] == 1
    assert win.store.messages(cid)[-1].status == STOPPED
    assert win.send_button.isEnabled()


def test_wrapped_hints_are_not_cut(qtbot: Any, win: MainWindow) -> None:
    """At the dialog's narrowest the long hints wrap; each must get the height of all its lines
    (a form layout in a top-level dialog gave them one line: seen at QT_SCALE_FACTOR=2)."""
    dlg = open_dialog(qtbot, win)
    dlg.resize(dlg.minimumWidth(), dlg.height())
    qtbot.wait(50)
    wrapped = [h for h in dlg._hints if h.heightForWidth(h.width()) > h.fontMetrics().lineSpacing() * 1.5]
    assert wrapped  # the narrow dialog does wrap some hints
    assert [h.text() for h in wrapped if h.height() < h.heightForWidth(h.width())] == []
    dlg.reject()


def test_settings_fit_a_small_screen_with_ok_in_reach(qtbot: Any, win: MainWindow, monkeypatch: Any) -> None:
    """At 200% scaling a 1600x1000 screen is 800x500 logical pixels (a 1080p laptop 960x540): the
    sections scroll inside the dialog, OK / Cancel / Restore Defaults stay in sight, and a bad
    field below the fold is scrolled to (the dialog's minimum was 614 px tall, OK off-screen)."""
    dlg = open_dialog(qtbot, win)
    bars = dlg.scroll.verticalScrollBar(), dlg.scroll.horizontalScrollBar()
    # where the screen has room (the offscreen one is 800x800) nothing scrolls, problems shown or not
    assert dlg.screen().availableGeometry().height() >= 800
    assert bars[0].maximum() == 0 and bars[1].maximum() == 0
    dlg.show_problems({"hf_endpoint": "must be an http(s) URL"})
    qtbot.wait(50)
    assert bars[0].maximum() == 0 and bars[1].maximum() == 0
    dlg.reject()

    small = QRect(0, 0, 800, 500)
    monkeypatch.setattr(QScreen, "availableGeometry", lambda _screen: QRect(small))
    win._settings_dialog = None
    dlg = open_dialog(qtbot, win)
    title_bar = dlg.fontMetrics().height() * 2
    assert dlg.minimumSizeHint().width() <= small.width()
    assert dlg.minimumSizeHint().height() <= small.height() - title_bar
    qtbot.wait(50)
    assert small.contains(dlg.frameGeometry())
    for button in (dlg.ok_button, dlg.cancel_button, dlg.defaults_button):
        at = QRect(button.mapTo(dlg, QPoint(0, 0)), button.size())
        assert button.isVisible() and dlg.rect().contains(at), button.text()
    bars = dlg.scroll.verticalScrollBar(), dlg.scroll.horizontalScrollBar()
    assert bars[0].maximum() > 0 and bars[1].maximum() == 0  # up and down only
    # the energy section is below the fold: a bad figure there is scrolled into view
    dlg.show_problems({"watts_per_core": "too small"})
    qtbot.wait(50)
    assert small.contains(dlg.frameGeometry())
    viewport = dlg.scroll.viewport()
    at = QRect(dlg.watts.mapTo(viewport, QPoint(0, 0)), dlg.watts.size())
    assert viewport.rect().contains(at) and dlg.watts.hasFocus()
    dlg.reject()


def test_a_model_that_cannot_use_the_chosen_memory_says_which_setting() -> None:
    """The 3-bit cache needs head sizes divisible by 32: the engine raises UnsupportedOptionError
    naming the option (tests/engine/test_model_api.py), and the window's load-failure fix points at
    that setting rather than at another model."""
    from trit.app.qt.worker import _load_fix
    from trit.engine import UnsupportedOptionError

    e = UnsupportedOptionError(
        "kv", "the 3-bit KV cache needs a head size divisible by 32; this model's is 48"
    )
    assert _load_fix(e) == "Choose another Conversation memory in Settings (Ctrl+,) for this model."
    assert _load_fix(ValueError("x")) == "Pick another model in Models."


@pytest.mark.parametrize("watts", [0.05, 2.25, 4.75, 0.01, 100.0])
def test_ok_without_edits_keeps_every_valid_watts_figure(qtbot: Any, watts: float) -> None:
    # the field had a 0.1 minimum and one decimal: 0.05 became 0.1 and 2.25 became 2.3 on OK
    s = dataclasses.replace(default_settings(), watts_per_core=watts)
    applied: list[Any] = []
    dlg = SettingsDialog(s, lambda new: applied.append(new) or {})
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.ok_button.click()
    assert applied == [s] and applied[0].watts_per_core == watts


def test_an_endpoint_with_a_query_or_fragment_is_refused(qtbot: Any) -> None:
    dlg = SettingsDialog(default_settings(), lambda new: {})
    qtbot.addWidget(dlg)
    for url in ("https://huggingface.co?x=1", "https://hf.co#frag"):
        dlg.endpoint.setText(url)
        s, problems = dlg.values()
        assert "without ? or #" in problems["hf_endpoint"] and s.hf_endpoint == default_settings().hf_endpoint


def test_changing_the_setting_a_failed_load_names_loads_the_model_again(
    qtbot: Any, make_ctx: Any, tmp_path: Path
) -> None:
    """A load that failed says which setting to change; changing it in Settings retries the
    load (nothing was loaded or loading, so there was no model to reload)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from tiny import random_weights
    from trit.engine.convert import write_bitnet_gguf

    gguf = tmp_path / "head48.gguf"  # a head size the 3-bit KV cache cannot take
    write_bitnet_gguf(random_weights(1, n_heads=8, n_kv_heads=2, head_dim=48)[0], gguf)
    ctx = make_ctx()
    ctx.save_settings(dataclasses.replace(ctx.settings, kv_cache="q3"))
    win = open_window(qtbot, ctx, autoload=False)
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS) as failed:
        win.load_model(str(gguf))
    assert "error" in failed.args[0] and "Conversation memory" in failed.args[0]["fix"]
    assert win.memory_label.text().startswith("RAM ") and "model" not in win.memory_label.text()
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS) as retried:
        assert win.apply_settings(dataclasses.replace(ctx.settings, kv_cache="f32")) == {}
    # the engine loads it now; (this tiny file has no tokenizer, which the window then names)
    assert "Conversation memory" not in retried.args[0].get("fix", "")
    assert "no tokenizer" in retried.args[0].get("error", "")


def test_a_number_typed_out_of_range_is_named_not_silently_kept(qtbot: Any, win: MainWindow) -> None:
    before = win.ctx.settings.threads
    dlg = open_dialog(qtbot, win)
    dlg.threads.lineEdit().selectAll()
    qtbot.keyClicks(dlg.threads.lineEdit(), "0")  # below the minimum: the box still holds the old value
    assert dlg.threads.value() == before and not dlg.threads.hasAcceptableInput()
    qtbot.keyClick(dlg.threads, Qt.Key.Key_Return)
    assert dlg.isVisible() and "Threads: 0 is not a number from 1 to 512" in dlg.problems.text()
    assert win.ctx.settings.threads == before
    dlg.threads.lineEdit().selectAll()
    qtbot.keyClicks(dlg.threads.lineEdit(), "3")
    qtbot.keyClick(dlg.threads, Qt.Key.Key_Return)
    assert not dlg.isVisible() and win.ctx.settings.threads == 3


def accessible(widget: QWidget) -> tuple[str, str]:
    """(name, description) a screen reader gets for widget."""
    i = QAccessible.queryAccessibleInterface(widget)
    return i.text(QAccessible.Text.Name), i.text(QAccessible.Text.Description)


def test_a_screen_reader_reads_the_problems(qtbot: Any, win: MainWindow) -> None:
    """The problems line's own text reaches a screen reader: its accessible name ("Settings
    problems") replaced it, and the problem itself could not be heard."""
    dlg = open_dialog(qtbot, win)
    dlg.endpoint.setText("huggingface.co")
    dlg.ok_button.click()
    name, description = accessible(dlg.problems)
    assert name == dlg.problems.text() and "Hugging Face endpoint: must be an http(s) URL" in name
    assert description == "Settings problems"
    dlg.reject()


def test_the_focused_bad_field_says_what_is_wrong(qtbot: Any, win: MainWindow) -> None:
    """Focus goes to the first bad field; a screen reader there hears the problem in the field's
    description, which goes back to the field's tooltip once the problem is fixed."""
    dlg = open_dialog(qtbot, win)
    dlg.endpoint.setText("huggingface.co")
    dlg.token.setText("hf_two words")
    dlg.ok_button.click()
    assert dlg.endpoint.hasFocus()
    name, description = accessible(QApplication.focusWidget())
    assert name == "Hugging Face endpoint"
    assert description == "Problem: must be an http(s) URL, like https://huggingface.co"
    assert accessible(dlg.token)[1].startswith("Problem: must be one word")
    assert "two words" not in accessible(dlg.token)[1]
    tip = accessible(dlg.threads)[1]
    assert tip == dlg.threads.toolTip()  # a good field keeps its own description

    dlg.endpoint.setText("https://hub.example.org")  # fixed; the token is still wrong
    dlg.ok_button.click()
    assert dlg.token.hasFocus() and accessible(dlg.token)[1].startswith("Problem: must be one word")
    assert "Problem" not in accessible(dlg.endpoint)[1]
    dlg.token.setText("hf_ok")
    dlg.ok_button.click()
    assert not dlg.isVisible()
    assert [accessible(w)[1] for w in dlg.fields.values() if "Problem" in accessible(w)[1]] == []
    # a number typed out of range is a problem of its field too
    dlg = open_dialog(qtbot, win)
    dlg.threads.lineEdit().selectAll()
    qtbot.keyClicks(dlg.threads.lineEdit(), "0")
    qtbot.keyClick(dlg.threads, Qt.Key.Key_Return)
    assert accessible(dlg.threads)[1] == "Problem: 0 is not a number from 1 to 512"
    dlg.reject()


def palette_of(window: str, text: str) -> QPalette:
    """A light or dark palette as desktops set them: the placeholder (hint) colour is the text
    colour at half alpha, Qt's default."""
    p = QPalette(QApplication.palette())
    half = QColor(text)
    half.setAlpha(128)
    for group in (QPalette.ColorGroup.Active, QPalette.ColorGroup.Inactive):
        for role, colour in (
            (QPalette.ColorRole.Window, QColor(window)),
            (QPalette.ColorRole.WindowText, QColor(text)),
            (QPalette.ColorRole.Text, QColor(text)),
            (QPalette.ColorRole.PlaceholderText, half),
        ):
            p.setColor(group, role, colour)
    return p


def drawn_contrast(label: QWidget) -> float:
    """The contrast of the label's strongest drawn pixel (its glyphs' solid parts) against its
    background as drawn (a group box's shade of the window), as a measuring tool sees it."""
    img = label.window().grab(QRect(label.mapTo(label.window(), QPoint(0, 0)), label.size())).toImage()
    background = img.pixelColor(0, 0)
    return max(
        contrast(img.pixelColor(x, y), background) for y in range(img.height()) for x in range(img.width())
    )


@pytest.mark.parametrize(("window", "text"), [("#efefef", "#000000"), ("#2b2b2b", "#ffffff")])
def test_hints_and_problems_read_on_a_light_and_a_dark_window(qtbot: Any, window: str, text: str) -> None:
    """WCAG AA (4.5:1) for the grey hints and the red problems line: the placeholder grey was
    3.9:1 on the light window, the fixed red 2.6:1 on a dark one. The colours follow a palette set
    after the dialog was made (the desktop switching to dark)."""
    dlg = SettingsDialog(default_settings(), lambda new: {})
    qtbot.addWidget(dlg)
    dlg.setPalette(palette_of("#808080", "#000000"))  # set again below: a change of palette
    dlg.setPalette(palette_of(window, text))
    dlg.show()
    dlg.show_problems({"hf_endpoint": "must be an http(s) URL"})
    qtbot.wait(20)
    for label in dlg._hints[:2] + [dlg.problems]:
        assert drawn_contrast(label) >= 4.5, label.text()
    # still a muted grey, not the text colour: hints stay quieter than the fields' labels
    grey = dlg._hints[0].palette().color(QPalette.ColorRole.WindowText)
    assert contrast(grey, QColor(window)) < contrast(QColor(text), QColor(window)) - 5
    dlg.reject()


def test_settings_open_with_focus_on_the_first_field(qtbot: Any, win: MainWindow) -> None:
    """Ctrl+, puts the focus on Threads, where it shows; the sections' scroll area (which shows
    no focus) took it and was a Tab stop before Threads. Opened again, focus starts there again."""
    dlg = open_dialog(qtbot, win)
    qtbot.waitUntil(lambda: QApplication.focusWidget() is not None, timeout=2000)
    assert dlg.threads.hasFocus()
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Backtab)
    assert QApplication.focusWidget() is not dlg.scroll and dlg.scroll.focusPolicy() == Qt.FocusPolicy.NoFocus
    dlg.watts.setFocus()
    dlg.reject()
    dlg = open_dialog(qtbot, win)
    assert dlg.threads.hasFocus()
    dlg.reject()
