"""The conversation panel's sampling fields reach the engine: a seed repeats a reply (Regenerate
gives it again), top-k 1 is the greedy reply, and they are kept with the conversation. The panel
had only temperature, top-p and max tokens: no reply could be repeated at a temperature above 0."""

from __future__ import annotations

from typing import Any

import pytest
from trit.app.qt.main_window import MainWindow

from .test_chat_window import type_and_enter, wait_reply

pytestmark = pytest.mark.timeout(300)


def set_panel(win: MainWindow, **values: float) -> None:
    for name, v in values.items():
        getattr(win.settings_panel, name).setValue(v)


def last_reply(win: MainWindow, cid: int) -> str:
    return win.store.messages(cid)[-1].content


def test_a_seed_repeats_the_reply_and_top_k_1_is_greedy(qtbot: Any, window: MainWindow) -> None:
    win = window
    cid = win.new_conversation("Seeded")
    set_panel(win, temperature=1.5, top_p=1.0, max_tokens=12, top_k=0, min_p=0.0, seed=1234)
    wait_reply(qtbot, win, lambda: type_and_enter(qtbot, win, "Write one sentence about the sea."))
    first = last_reply(win, cid)
    kept = win.store.get_conversation(cid).sampling
    assert (kept.seed, kept.top_k, kept.min_p, kept.temperature) == (1234, 0, 0.0, 1.5)
    wait_reply(qtbot, win, win.regenerate)
    assert last_reply(win, cid) == first  # the same seed, conversation and settings: the same reply

    set_panel(win, temperature=0.0)  # greedy
    wait_reply(qtbot, win, win.regenerate)
    greedy = last_reply(win, cid)
    set_panel(win, temperature=1.5, top_k=1, seed=-1)  # only the most likely token, any seed
    wait_reply(qtbot, win, win.regenerate)
    assert last_reply(win, cid) == greedy
    assert win.store.get_conversation(cid).sampling.seed is None  # "random" is no seed

    # a conversation opened again shows what it keeps
    other = win.new_conversation("Other")
    assert win.settings_panel.seed.text() == "random" and other != cid
    win.select_conversation(cid)
    assert win.settings_panel.top_k.value() == 1 and win.settings_panel.seed.text() == "random"
    assert win.settings_panel.temperature.value() == 1.5
