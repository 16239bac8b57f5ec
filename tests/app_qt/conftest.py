"""Fixtures for the desktop app tests: offscreen Qt, a temporary data dir per test (store,
settings, models folder), the default model (SmolLM2) found the way a first run finds it, and a
window whose worker has loaded it."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before pytest-qt creates the QApplication

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from trit.app.core.catalog import bundled_entry
from trit.app.qt.context import AppContext
from trit.app.qt.main_window import MainWindow

LOAD_TIMEOUT_MS = 60_000
REPLY_TIMEOUT_MS = 120_000


@pytest.fixture(autouse=True)
def own_xdg_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-test XDG data folder: the system trash (model deletes) and the per-user models folder
    live there, never in the real home."""
    d = tmp_path / "xdg-data"
    d.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(d))
    return d


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_ctx(tmp_path: Path, data_dir: Path) -> Iterator[Any]:
    made: list[AppContext] = []

    def make(**kw: Any) -> AppContext:
        kw.setdefault("models_dir", tmp_path / "models")
        kw.setdefault("catalog", [bundled_entry()])  # as shipped, minus the hub entries
        ctx = AppContext.create(data_dir, **kw)  # this machine's energy sources, as the app has
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def default_model_env(default_model_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """default_model_path() finds SmolLM2 the way an installed app finds its bundled copy."""
    monkeypatch.setenv("TRIT_DEFAULT_MODEL", str(default_model_gguf))
    return default_model_gguf


def open_window(qtbot: Any, ctx: AppContext, **kw: Any) -> MainWindow:
    win = MainWindow(ctx, **kw)
    qtbot.addWidget(win, before_close_func=lambda w: w.shutdown())
    win.show()
    qtbot.waitExposed(win)
    return win


@pytest.fixture
def window(qtbot: Any, make_ctx: Any, default_model_env: Path) -> MainWindow:
    """The real window with SmolLM2 loaded through the worker (load_model() with no argument: the
    path a first run takes)."""
    win = open_window(qtbot, make_ctx(), autoload=False)
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS) as blocker:
        win.load_model()
    assert "error" not in blocker.args[0], blocker.args[0]
    return win


@pytest.fixture(scope="session")
def tiny_chat_gguf(default_model_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer, dim-256 BitNet GGUF (27 MB, random ternary weights) with SmolLM2's tokenizer
    (its tokenizer.ggml.* metadata and its 49152-token vocab)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from tiny import random_weights  # tests/engine/tiny.py
    from trit.engine.convert import write_bitnet_gguf
    from trit.engine.gguf import GGUFFile

    g = GGUFFile(default_model_gguf)
    try:
        tokenizer = {k: v for k, v in g.metadata.items() if k.startswith("tokenizer.ggml.")}
    finally:
        g.close()
    vocab = len(tokenizer["tokenizer.ggml.tokens"])
    assert vocab == 49152
    weights, _ = random_weights(11, dim=256, hidden=512, n_layers=1, vocab=vocab)
    path = tmp_path_factory.mktemp("tiny-chat") / "tiny-bitnet-chat.gguf"
    write_bitnet_gguf(weights, path, extra_metadata=tokenizer)
    return path
