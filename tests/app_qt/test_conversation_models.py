"""Each conversation keeps its model: two real models (SmolLM2, and a tiny generated BitNet GGUF
that carries SmolLM2's tokenizer so it can chat, in gibberish) loaded through the worker as the
user switches conversations; "Use this model" sets the shown conversation's model; a missing model
file says how to fix it; a running reply is never cut short by a switch; a restart reopens the
last conversation with its model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from trit.app.core.catalog import CatalogEntry, bundled_entry
from trit.app.core.sampling import Sampling
from trit.app.core.store import COMPLETE
from trit.app.qt.main_window import MainWindow

from .conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS, open_window

pytestmark = pytest.mark.timeout(300)

GREEDY = Sampling(temperature=0.0, top_p=1.0, max_tokens=12)
FIX = "Choose another model or download it in Models…"


def wait_load(qtbot: Any, win: MainWindow, path: Path | str, action: Any) -> dict[str, Any]:
    """Runs action and waits until the worker has loaded path."""
    with qtbot.waitSignal(
        win.model_loaded, timeout=LOAD_TIMEOUT_MS, check_params_cb=lambda info: info.get("path") == str(path)
    ) as blocker:
        action()
    return dict(blocker.args[0])


def reply(qtbot: Any, win: MainWindow, text: str) -> dict[str, Any]:
    with qtbot.waitSignal(win.reply_finished, timeout=REPLY_TIMEOUT_MS) as blocker:
        assert win.send(text)
    return dict(blocker.args[0])


def choose_in_manager(win: MainWindow, path: Path) -> Any:
    """Selects an installed model in File › Models…, importing it first if needed."""
    win.open_models()
    dlg = win._models_dialog
    if not dlg.select(("installed", str(path))):
        m = dlg.import_model(str(path))
        assert m is not None
        path = m.path
    assert dlg.select(("installed", str(path))) and dlg.use_button.isEnabled()
    return dlg


def test_switching_conversations_switches_models(
    qtbot: Any, window: MainWindow, default_model_env: Path, tiny_chat_gguf: Path
) -> None:
    win = window
    smol = str(default_model_env)
    a = win.new_conversation("On SmolLM2")
    win.store.update_conversation(a, sampling=GREEDY)
    bundled_id = bundled_entry().id
    assert win.store.get_conversation(a).model_id == bundled_id  # new chats: the default model
    assert win.conversation_model(a).path == smol and win.send_button.isEnabled()

    # B gets the tiny model through the model manager's "Use this model"
    b = win.new_conversation("On the tiny model")
    win.store.update_conversation(b, sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=6))
    dlg = choose_in_manager(win, tiny_chat_gguf)
    tiny = dlg.selected()[1]  # the imported copy in the models folder
    assert Path(tiny).parent == win.ctx.library.folder

    def use() -> None:
        dlg.use_button.click()
        assert win.model_label.text() == "Loading tiny-bitnet-chat.gguf…"
        assert not win.send_button.isEnabled() and not win.regen_button.isEnabled()
        assert not win.send("too early")  # Send waits for the model
        assert "Loading tiny-bitnet-chat.gguf" in win.statusBar().currentMessage()

    info = wait_load(qtbot, win, tiny, use)
    dlg.close()
    assert info["arch"] == "bitnet-b1.58" and info["vocab"] == 49152
    assert win.store.get_conversation(b).model_id == tiny
    assert win.store.get_conversation(a).model_id == bundled_id  # A keeps its model
    assert win.ctx.settings.default_model == tiny  # and new chats get the chosen one
    assert win.send_button.isEnabled() and win.model_label.text().startswith("tiny-bitnet-chat.gguf")
    d = reply(qtbot, win, "Hello there")
    assert d["status"] == COMPLETE and d["record"]["tokens"] > 0 and d["conversation_id"] == b

    # back to A: SmolLM2 comes back, and it is SmolLM2 that answers
    info = wait_load(qtbot, win, smol, lambda: win.select_conversation(a))
    assert info["name"] == default_model_env.name and win.send_button.isEnabled()
    d = reply(qtbot, win, "What is the capital of France?")
    assert d["conversation_id"] == a and "Paris" in d["text"]

    # to B again: the tiny model; a new chat is on the tiny model too, so no load for it
    wait_load(qtbot, win, tiny, lambda: win.select_conversation(b))
    with qtbot.assertNotEmitted(win.worker.loaded, wait=300):
        c = win.new_conversation("Also tiny")
    assert win.store.get_conversation(c).model_id == tiny and win.send_button.isEnabled()


def test_missing_model_file_says_how_to_fix_it(
    qtbot: Any, make_ctx: Any, default_model_env: Path, tmp_path: Path
) -> None:
    hub_only = CatalogEntry(
        id="not-downloaded",
        name="Not downloaded yet",
        repo="org/repo",
        revision="main",
        file="not-downloaded.gguf",
        size=1000,
        sha256="0" * 64,
        license="MIT",
        license_url="",
        ram_mb=10,
        family="bitnet",
    )
    ctx = make_ctx(catalog=[bundled_entry(), hub_only])
    win = open_window(qtbot, ctx, autoload=False)
    wait_load(qtbot, win, default_model_env, win.load_model)
    ok = win.new_conversation("Fine")
    gone = win.new_conversation("Moved file")
    win.store.update_conversation(gone, model_id=str(tmp_path / "moved-away.gguf"))
    with qtbot.assertNotEmitted(win.worker.loaded, wait=200):
        win.select_conversation(gone)
    assert win.banner.isVisible()
    text = win.banner.text()
    assert "moved-away.gguf, the model this conversation uses, is not on this computer" in text
    assert FIX in text
    assert not win.send_button.isEnabled() and not win.send("hello")
    assert "not on this computer" in win.statusBar().currentMessage()
    assert [m.role for m in win.store.messages(gone)] == []

    # a catalog model that was never downloaded reads the same, by its catalog name
    later = win.new_conversation("Catalog model")
    win.store.update_conversation(later, model_id="not-downloaded")
    win.select_conversation(later)
    assert "Not downloaded yet, the model this conversation uses" in win.banner.text()
    assert FIX in win.banner.text() and not win.send_button.isEnabled()

    # a conversation whose model is there: the banner goes, Send comes back
    win.select_conversation(ok)
    assert not win.banner.isVisible() and win.send_button.isEnabled()

    # the fix: choose another model for it in the manager
    win.select_conversation(gone)
    dlg = choose_in_manager(win, default_model_env)
    dlg.use_button.click()  # SmolLM2 is loaded already: nothing to load
    dlg.close()
    assert win.store.get_conversation(gone).model_id == str(default_model_env)
    assert not win.banner.isVisible() and win.send_button.isEnabled()


def test_a_switch_mid_reply_waits_for_the_reply(
    qtbot: Any, window: MainWindow, default_model_env: Path, tiny_chat_gguf: Path
) -> None:
    win = window
    b = win.new_conversation("Tiny")
    win.store.update_conversation(b, model_id=str(tiny_chat_gguf))
    a = win.new_conversation("Story")
    win.store.update_conversation(a, sampling=Sampling(temperature=0.8, top_p=0.95, max_tokens=400))
    assert win.send("Write a long story about a lighthouse keeper and a storm.")
    qtbot.waitUntil(lambda: win.reply is not None and len(win.reply["text"].split()) >= 5, timeout=60_000)
    with qtbot.assertNotEmitted(win.worker.loaded, wait=300):
        win.select_conversation(b)  # the reply in A goes on with SmolLM2
    assert "will load when the current reply ends" in win.statusBar().currentMessage()
    assert win.reply is not None and not win.send_button.isEnabled()
    words = len(win.reply["text"].split())
    qtbot.waitUntil(
        lambda: win.reply is not None and len(win.reply["text"].split()) > words + 3, timeout=30_000
    )

    def stop() -> None:
        win.stop()

    with qtbot.waitSignal(win.reply_finished, timeout=10_000) as finished:
        info = wait_load(qtbot, win, tiny_chat_gguf, stop)
    assert finished.args[0]["conversation_id"] == a and finished.args[0]["text"]
    assert win.store.messages(a)[-1].content == finished.args[0]["text"]
    assert info["arch"] == "bitnet-b1.58" and win.current_id == b and win.send_button.isEnabled()


def test_restart_reopens_the_last_conversation_with_its_model(
    qtbot: Any, make_ctx: Any, default_model_env: Path, tiny_chat_gguf: Path
) -> None:
    ctx = make_ctx()
    win = open_window(qtbot, ctx, autoload=False)
    wait_load(qtbot, win, default_model_env, win.load_model)
    win.new_conversation("SmolLM2 chat")
    tiny_conv = win.new_conversation("Tiny chat")
    win.store.update_conversation(tiny_conv, model_id=str(tiny_chat_gguf))  # the most recent one
    win.close()
    ctx.close()

    ctx2 = make_ctx()
    win2 = MainWindow(ctx2)  # autoload, as a start does: the last conversation with its model
    qtbot.addWidget(win2, before_close_func=lambda w: w.shutdown())
    assert win2.current_id == tiny_conv
    assert win2.model_label.text() == "Loading tiny-bitnet-chat.gguf…" and not win2.send_button.isEnabled()
    info = wait_load(qtbot, win2, tiny_chat_gguf, lambda: None)
    assert info["arch"] == "bitnet-b1.58" and win2.send_button.isEnabled()


def test_deleting_the_default_model_sends_new_chats_to_the_bundled_one(
    qtbot: Any, window: MainWindow, default_model_env: Path, tiny_chat_gguf: Path
) -> None:
    win = window
    a = win.new_conversation("On the tiny model")
    dlg = choose_in_manager(win, tiny_chat_gguf)
    tiny = dlg.selected()[1]
    wait_load(qtbot, win, tiny, dlg.use_button.click)
    assert win.ctx.settings.default_model == tiny
    b = win.new_conversation("On SmolLM2")
    win.store.update_conversation(b, model_id=bundled_entry().id)
    wait_load(qtbot, win, default_model_env, lambda: win.select_conversation(b))
    dlg.refresh()
    assert dlg.select(("installed", tiny))
    dlg.delete_button.click()  # not loaded now, so it goes (to the trash)
    assert not Path(tiny).exists()
    c = win.new_conversation()
    assert win.store.get_conversation(c).model_id == bundled_entry().id
    assert win.send_button.isEnabled() and not win.banner.isVisible()
    assert win.store.get_conversation(a).model_id == tiny  # A still asks for its own model
    dlg.close()
