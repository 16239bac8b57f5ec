"""The GGUF loader's reading of hyperparameters (gguf_loader.read_config): bad values are
ModelFormatErrors naming the file and the key, in messages of a readable length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trit.engine.errors import ModelFormatError
from trit.engine.gguf import GGUFFile
from trit.engine.gguf_loader import read_config
from trit.engine.gguf_writer import GGUFWriter


def config_of(tmp_path: Path, arch: str = "llama", **extra: Any) -> Any:
    """read_config of a header-only GGUF: a small llama shape plus extra metadata."""
    p = tmp_path / "m.gguf"
    w = GGUFWriter(p)
    w.add_string("general.architecture", arch)
    for key, value in {
        "embedding_length": 64,
        "feed_forward_length": 128,
        "block_count": 1,
        "attention.head_count": 4,
        "vocab_size": 32,
    }.items():
        w.add_uint32(f"{arch}.{key}", value)
    for key, value in extra.items():
        w.add_metadata(key.replace("__", "."), value)
    w.write()
    with GGUFFile(p) as f:
        return read_config(f)


def test_a_plain_header_reads(tmp_path: Path) -> None:
    c = config_of(tmp_path)
    assert (c.dim, c.n_heads, c.vocab, c.norm_eps, c.rope_theta) == (64, 4, 32, 1e-5, 10000.0)


def test_odd_metadata_values_are_named_briefly(tmp_path: Path) -> None:
    # an array where a string belongs made numpy raise "truth value ... ambiguous"
    with pytest.raises(ModelFormatError, match=r"bitnet\.hidden_activation is array\(\[1, 2\]"):
        config_of(tmp_path, "bitnet", bitnet__hidden_activation=np.array([1, 2], np.uint8))
    with pytest.raises(ModelFormatError, match="bitnet.hidden_activation is 'xxx") as ei:
        config_of(tmp_path, "bitnet", bitnet__hidden_activation="x" * 1_000_000)
    assert len(ei.value.problem) < 200 and ei.value.path == str(tmp_path / "m.gguf")
    with pytest.raises(ModelFormatError, match="context_length is array") as ei:
        config_of(tmp_path, llama__context_length=np.arange(10**6, dtype=np.float32))
    assert len(ei.value.problem) < 200
