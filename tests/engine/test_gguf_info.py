"""gguf_model_info (`trit info` of a GGUF file): Model.info from the header and tensor table only."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import quants
from llama_gguf import write_llama_gguf
from tiny import random_weights
from trit.engine import load_model
from trit.engine.convert import write_bitnet_gguf
from trit.engine.gguf import GGUFFile
from trit.engine.gguf_loader import gguf_model_info
from trit.engine.weights import ModelConfig

from trit import cli

pytestmark = pytest.mark.timeout(300)

OPTIONS = [
    {},
    {"weights": "map"},
    {"weights": "ram"},
    {"head": "q8_0"},
    {"head": "q8_0", "weights": "ram"},
    {"context": 100, "threads": 3, "kv": "f16", "a48": True, "activations": "q8"},
    {"context": 100000, "kv": "q3", "isa": "scalar"},
    {"ternary": "b3"},
    {"ternary": "tq", "weights": "map"},
]


def _llama(path: Path) -> Path:
    """A llama file of mixed types: Q8_0 q/k/v, F16 o/gate/up, F32 down, BF16 embedding, Q4_0 head."""
    rng = np.random.default_rng(3)
    cfg = ModelConfig("llama", 64, 128, 2, 4, 2, 16, 96, 512, 10000.0, 1e-5)
    qdim, kvdim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim

    def quant(kind: str, rows: int, cols: int) -> tuple[str, np.ndarray]:
        x = rng.standard_normal((rows, cols)).astype(np.float32)
        return kind, quants.quantize(x, Q[kind]).reshape(rows, -1)

    def dense(kind: str, rows: int, cols: int) -> tuple[str, np.ndarray]:
        return kind, rng.standard_normal((rows, cols)).astype(np.float32)

    layers = [
        {
            "attn_norm": np.ones(cfg.dim, np.float32),
            "ffn_norm": np.ones(cfg.dim, np.float32),
            "q": quant("Q8_0", qdim, cfg.dim),
            "k": quant("Q8_0", kvdim, cfg.dim),
            "v": quant("Q8_0", kvdim, cfg.dim),
            "o": dense("F16", cfg.dim, qdim),
            "gate": dense("F16", cfg.hidden, cfg.dim),
            "up": dense("F16", cfg.hidden, cfg.dim),
            "down": dense("F32", cfg.dim, cfg.hidden),
        }
        for _ in range(cfg.n_layers)
    ]
    write_llama_gguf(
        path,
        cfg,
        embed=dense("BF16", cfg.vocab, cfg.dim),
        out_norm=np.ones(cfg.dim, np.float32),
        layers=layers,
        head=quant("Q4_0", cfg.vocab, cfg.dim),
        file_type="Q8_0",
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("info")
    weights, _ = random_weights(21)
    out = {}
    for ttype in ("I2_S", "TQ1_0", "TQ2_0"):
        out[ttype] = root / f"tiny-{ttype}.gguf"
        write_bitnet_gguf(weights, out[ttype], ternary_type=ttype)
    out["llama"] = _llama(root / "llama-mixed.gguf")
    return out


def _no_tensor_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any read of tensor values (views, the RAM copy, a full load) fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tensor data was read")

    for name in ("tensor_data", "tensor_array", "read_into_memory"):
        monkeypatch.setattr(GGUFFile, name, refuse)
    monkeypatch.setattr("trit.engine.load_model", refuse)
    monkeypatch.setattr("trit.engine.model.load_model", refuse)


@pytest.mark.parametrize("kind", ["I2_S", "TQ1_0", "TQ2_0", "llama"])
def test_header_info_equals_the_loaded_models(files, kind, monkeypatch) -> None:
    """Field by field what load_model(...).info says, for every option that shows in it."""
    path = files[kind]
    for opts in OPTIONS:
        if kind == "llama" and opts.get("kv") == "q3":
            opts = {**opts, "kv": "q8"}  # head size 16: the 3-bit KV cache refuses it (tested below)
        want = dataclasses.asdict(load_model(path, **opts).info)
        with monkeypatch.context() as m:
            _no_tensor_data(m)
            got = dataclasses.asdict(gguf_model_info(path, **opts))
        assert got == want, opts


def test_header_info_of_the_default_model(default_model_gguf, monkeypatch) -> None:
    for opts in ({}, {"head": "q8_0"}, {"weights": "ram", "context": 8192}):
        want = dataclasses.asdict(load_model(default_model_gguf, **opts).info)
        with monkeypatch.context() as m:
            _no_tensor_data(m)
            assert dataclasses.asdict(gguf_model_info(default_model_gguf, **opts)) == want, opts


def test_header_info_refuses_what_the_load_refuses(files) -> None:
    from trit.engine.errors import UnsupportedCPUError, UnsupportedOptionError

    with pytest.raises(UnsupportedOptionError, match="3-bit KV cache needs a head size divisible by 32"):
        gguf_model_info(files["llama"], kv="q3")
    with pytest.raises(UnsupportedCPUError, match="instruction set 'sparc'"):
        gguf_model_info(files["I2_S"], isa="sparc")
    for bad in ({"weights": "disk"}, {"threads": 0}, {"context": 0}, {"head": "q4"}, {"kv": "f8"}):
        with pytest.raises(ValueError):
            gguf_model_info(files["I2_S"], **bad)


def test_trit_info_prints_the_loaded_models_info_without_loading(files, monkeypatch, capsys) -> None:
    """`trit info` prints what it printed when it loaded the model (ModelInfo.describe()), and
    neither loads the model nor reads tensor data; a warning of the head option still shows."""
    for kind, args in (
        ("I2_S", []),
        ("TQ1_0", ["-t", "1", "-c", "64"]),
        ("llama", ["--head", "q8_0", "--weights", "ram"]),
    ):
        path = files[kind]
        opts = {"threads": 1, "context": 64} if args[:1] == ["-t"] else {}
        if "--head" in args:
            opts = {"head": "q8_0", "weights": "ram"}
        want = load_model(path, **opts).info.describe() + "\n"
        with monkeypatch.context() as m:
            _no_tensor_data(m)
            m.setattr(sys, "argv", ["trit"])
            assert cli.main(["info", "-m", str(path), *args]) == 0
        out, err = capsys.readouterr()
        assert out == want
        assert ("applies to a float output head" in err) == ("--head" in args), err
