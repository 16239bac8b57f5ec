"""Fitting a long conversation to the context (fit_context, EngineWorker._fit): only about a
context's worth of the newest messages is tokenized, whatever the conversation's length, and a
Stop pressed while fitting ends it."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from trit.app.core.sampling import Sampling
from trit.app.core.store import ConversationStore
from trit.app.qt.worker import EngineWorker, fit_context

from .conftest import LOAD_TIMEOUT_MS

pytestmark = pytest.mark.timeout(300)

TURN = "Tell me more about the history of the lighthouse and the keeper who lived there for forty years. " * 3


def long_conversation(pairs: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(pairs):
        msgs += [{"role": "user", "content": f"{i}: {TURN}"}, {"role": "assistant", "content": TURN * 2}]
    return msgs + [{"role": "user", "content": "What was the keeper's name?"}]


def test_sizes_from_the_newest_end_give_the_same_cut_as_whole_counts() -> None:
    """The lower bound only saves counting: the messages kept are the ones the exact search keeps."""
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(1, 40)
        msgs = [{"role": "system", "content": "s" * rng.randint(0, 30)}] if rng.random() < 0.5 else []
        msgs += [
            {"role": rng.choice(["user", "assistant"]), "content": "w" * rng.randint(0, 80)} for _ in range(n)
        ]

        def size(m: dict[str, str]) -> int:
            return len(m["content"])

        def count(ms: list[dict[str, str]]) -> int:  # the text plus a template's few tokens per turn
            return sum(size(m) + 4 for m in ms) + 1

        context, room = rng.randint(50, 900), rng.randint(1, 100)
        kw = {"at_least": rng.randint(0, n) if rng.random() < 0.3 else 0, "slack": rng.randint(0, 60)}
        assert fit_context(msgs, count, context, room, size=size, **kw) == fit_context(
            msgs, count, context, room, **kw
        )


@pytest.fixture
def worker(tmp_path: Path, default_model_gguf: Path, qtbot: Any) -> Iterator[EngineWorker]:
    store = ConversationStore(tmp_path / "c.sqlite3")
    w = EngineWorker(store)
    with qtbot.waitSignal(w.loaded, timeout=LOAD_TIMEOUT_MS):
        w.load(default_model_gguf, threads=1, context=4096)
    yield w
    assert w.shutdown()
    store.close()


def counted_lengths(worker: EngineWorker, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The message counts of every prompt the fitting renders and tokenizes."""
    fmt = worker._session.model.chat_format
    seen: list[int] = []
    encode = fmt.encode

    def spy(tok: Any, ms: list[dict[str, str]], *a: Any, **kw: Any) -> Any:
        seen.append(len(ms))
        return encode(tok, ms, *a, **kw)

    monkeypatch.setattr(fmt, "encode", spy)
    return seen


def test_the_first_fit_of_a_long_conversation_counts_only_its_newest_end(
    worker: EngineWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QA: the first reply after a start, reload or model switch in a 2,000-message conversation
    froze the window 10-18 s: the fitting counted the tokens of the whole conversation (~188k)
    first, holding the GIL."""
    seen = counted_lengths(worker, monkeypatch)
    msgs = long_conversation(1000)
    sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=64)
    t = time.perf_counter()
    kept, left_out = worker._fit(1, msgs, sampling)
    took = time.perf_counter() - t
    assert left_out > 1900 and kept[0] == msgs[0] and kept[-1] == msgs[-1]
    assert seen and max(seen) < 200, seen  # a context holds ~40 of these messages
    assert took < 2.0, took  # (11 s before, 0.1 s after on the QA machine)
    # the next turn keeps the same cut and counts no more than that
    seen.clear()
    follow_up = [*msgs, {"role": "assistant", "content": "Ok."}, {"role": "user", "content": "And then?"}]
    assert worker._fit(1, follow_up, sampling)[1] >= left_out and max(seen) < 200


def test_stop_while_fitting_ends_the_fitting(worker: EngineWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = counted_lengths(worker, monkeypatch)
    worker._stop.set()
    assert worker._fit(2, long_conversation(1000), Sampling(max_tokens=64))[1] == 0
    assert seen == [] and 2 not in worker._cuts
