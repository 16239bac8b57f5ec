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


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        # eps 1e30 loaded and chatted only newlines; a RoPE base of 1e-30 was taken as well
        ("attention.layer_norm_rms_epsilon", 1e30, "between 0 and 1"),
        ("attention.layer_norm_rms_epsilon", 1.0, "between 0 and 1"),
        ("attention.layer_norm_rms_epsilon", 0.0, "between 0 and 1"),
        ("attention.layer_norm_rms_epsilon", float("nan"), "between 0 and 1"),
        ("rope.freq_base", 1e-30, "above 1"),
        ("rope.freq_base", 1.0, "above 1"),
        ("rope.freq_base", -5.0, "above 1"),
        ("rope.freq_base", float("inf"), "above 1"),
    ],
)
def test_norm_epsilon_and_rope_base_have_the_hf_loaders_bounds(
    tmp_path: Path, key: str, value: float, expected: str
) -> None:
    with pytest.raises(
        ModelFormatError, match=f"metadata key llama.{key} is .*, expected a number {expected}"
    ) as ei:
        config_of(tmp_path, **{f"llama__{key.replace('.', '__')}": np.float32(value)})
    assert ei.value.path == str(tmp_path / "m.gguf")


def test_values_inside_the_bounds_are_kept(tmp_path: Path) -> None:
    c = config_of(
        tmp_path,
        llama__attention__layer_norm_rms_epsilon=np.float32(1e-6),
        llama__rope__freq_base=np.float32(500000.0),
    )
    assert (c.norm_eps, c.rope_theta) == (1e-6, 500000.0)
