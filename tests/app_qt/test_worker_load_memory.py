"""EngineWorker loads that fail for lack of memory: every failure of a load ends in load_failed
with the engine's message and a fix about memory, never a window left on "Loading ..."."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from trit.app.core.store import ConversationStore
from trit.app.qt.worker import EngineWorker, _load_fix
from trit.engine.errors import ModelFormatError, OutOfMemoryError

from .conftest import LOAD_TIMEOUT_MS

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
HUGE_CONTEXT = 1 << 21
KV_BYTES = 2 * 32 * HUGE_CONTEXT * 1024 * 4  # K and V, 32 layers, KV rows 1024 wide, f32: 512 GB


def refuses_the_kv_cache() -> bool:
    """Linux's overcommit policy 0 (heuristic: one mapping larger than RAM + swap is refused) or 2
    (strict), on a machine with less than the K half of the cache (256 GB) in RAM + swap. Under
    policy 1 any mapping is granted, and the test would see a load that works."""
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            policy = f.read().strip()
        with open("/proc/meminfo") as f:
            kb = {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[1:2]}
    except (OSError, ValueError):
        return False
    return policy in ("0", "2") and (kb["MemTotal"] + kb.get("SwapTotal", 0)) * 1024 < KV_BYTES // 2


@pytest.fixture(scope="module")
def huge_context_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BitNet GGUF (10 MB, random weights, a test tokenizer) whose context is 2^21
    positions and whose KV rows are 32 layers x 1024 wide: its KV cache at that context needs
    512 GB, which the allocation refuses honestly on a machine with less RAM + swap. Heads of 16
    keep the state's other tables, which are allocated (and zeroed) first, at 256 MB."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from tiny import random_weights  # tests/engine/tiny.py
    from trit.engine.convert import write_bitnet_gguf
    from trit.engine.gguf import GGUFFile

    g = GGUFFile(DATA / "tok_llama_bpe.gguf")
    try:
        tokenizer = {k: v for k, v in g.metadata.items() if k.startswith("tokenizer.ggml.")}
    finally:
        g.close()
    weights, _ = random_weights(
        3,
        dim=256,
        hidden=256,
        n_layers=32,
        n_heads=64,
        n_kv_heads=64,
        head_dim=16,
        vocab=len(tokenizer["tokenizer.ggml.tokens"]),
        context=HUGE_CONTEXT,
    )
    path = tmp_path_factory.mktemp("huge-context") / "huge-context.gguf"
    write_bitnet_gguf(weights, path, extra_metadata=tokenizer)
    return path


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[EngineWorker]:
    store = ConversationStore(tmp_path / "c.sqlite3")
    w = EngineWorker(store)
    yield w
    assert w.shutdown()
    store.close()


def load(qtbot: Any, worker: EngineWorker, path: Path, **kw: Any) -> tuple[str, tuple[Any, ...]]:
    """Loads and returns ("loaded", (info,)) or ("load_failed", (message, fix))."""
    got: list[tuple[str, tuple[Any, ...]]] = []
    worker.loaded.connect(lambda info: got.append(("loaded", (info,))))
    worker.load_failed.connect(lambda m, f: got.append(("load_failed", (m, f))))
    worker.load(path, **kw)
    qtbot.waitUntil(lambda: bool(got), timeout=LOAD_TIMEOUT_MS)
    return got[0]


@pytest.mark.skipif(not refuses_the_kv_cache(), reason="needs vm.overcommit_memory 0 or 2 and < 256 GB")
def test_a_kv_cache_that_cannot_be_allocated_fails_the_load_with_a_memory_fix(
    qtbot: Any, worker: EngineWorker, huge_context_gguf: Path
) -> None:
    """QA: the session's OutOfMemoryError was raised outside the try that emits load_failed: it
    only reached stderr, and the window stayed on "Loading <model>..." with Send disabled."""
    kind, args = load(qtbot, worker, huge_context_gguf, threads=1, context=HUGE_CONTEXT)
    assert kind == "load_failed", args
    message, fix = args
    assert message.startswith("Cannot open huge-context.gguf: ") and message.count("huge-context.gguf") == 1
    assert "KV cache for 2097152 positions needs 524,288 MB" in message and "shorter context" in message
    assert "Context size" in fix and "Pick another model" not in fix
    assert worker.model_path == ""  # nothing half-loaded is kept
    qtbot.waitUntil(lambda: not worker._busy, timeout=5000)
    # the worker is not stuck: the same file at a context that fits loads
    kind, args = load(qtbot, worker, huge_context_gguf, threads=1, context=64)
    assert kind == "loaded", args
    assert worker.model_path == str(huge_context_gguf)


def test_memory_failures_get_a_memory_fix_not_another_model() -> None:
    """QA: a failed mmap (ENOMEM) showed 'Pick another model file' although the file was fine."""
    weights = OutOfMemoryError("m.gguf: not enough memory", needed=100 << 20, part="weights")
    assert "Close other programs" in _load_fix(weights) and "Pick another" not in _load_fix(weights)
    session = OutOfMemoryError("m.gguf: not enough memory", needed=100 << 20, part="session")
    assert "Context size" in _load_fix(session)
    assert "Close other programs" in _load_fix(MemoryError())  # a raw one from anywhere else
    assert "Pick another model file" in _load_fix(ModelFormatError("m.gguf", "bad magic"))
