"""engine/convert.py -> engine/gguf_loader.py round trips on tiny random BitNet models, the
bitnet.cpp metadata conventions (checked with the gguf package), and loader errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from tiny import random_weights  # tests/engine/tiny.py (rootdir-relative import, as the other tests do)
from trit.engine.convert import write_bitnet_gguf
from trit.engine.errors import ModelFormatError
from trit.engine.gguf import GGUFFile
from trit.engine.gguf_loader import load_gguf_weights
from trit.engine.gguf_writer import GGUFWriter
from trit.engine.ternary import unpack_tq
from trit.engine.weights import ModelWeights

pytestmark = pytest.mark.timeout(120)

LINEARS = ("q", "k", "v", "o", "gate", "up", "down")
NORMS = ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")


def tiny(seed: int = 0) -> tuple[ModelWeights, dict[str, Any]]:
    return random_weights(
        seed,
        dim=256,
        hidden=512,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=64,
        vocab=300,
        context=128,
        eos_ids=(7, 9),
    )


def check_same(loaded: ModelWeights, plain: dict[str, Any], f16_scales: bool) -> None:
    cfg = plain["config"]
    assert loaded.config == cfg
    np.testing.assert_array_equal(loaded.embed, plain["embed"])
    np.testing.assert_array_equal(loaded.out_norm, plain["out_norm"])
    for lw, pl in zip(loaded.layers, plain["layers"]):
        for n in NORMS:
            got = getattr(lw, n)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, pl[n])
        for n in LINEARS:
            t = getattr(lw, n)
            w, s = pl[n]
            assert (t.rows, t.cols) == w.shape
            np.testing.assert_array_equal(unpack_tq(t.packed, t.cols), w)
            expect = np.float32(np.float16(s)) if f16_scales else np.float32(s)
            np.testing.assert_array_equal(t.scale, np.full(t.rows, expect, np.float32))


@pytest.mark.parametrize("ternary_type", ["I2_S", "TQ2_0", "TQ1_0"])
def test_round_trip_from_plain_arrays(tmp_path: Path, ternary_type: str) -> None:
    _, plain = tiny(1)
    p = tmp_path / f"tiny-{ternary_type}.gguf"
    write_bitnet_gguf(plain, p, ternary_type=ternary_type)
    w = load_gguf_weights(p)
    check_same(w, plain, f16_scales=ternary_type != "I2_S")
    assert w.file_type == f"GGUF {ternary_type}" and w.family == "bitnet" and w.source == str(p)
    q = w.layers[0].q
    assert q.source_type == ternary_type
    # I2_S is used in place (read-only view of the map); TQ types are repacked in memory
    assert q.packed.flags.writeable == (ternary_type != "I2_S")
    assert isinstance(w.keepalive[0], GGUFFile)


def test_round_trip_from_model_weights(tmp_path: Path) -> None:
    weights, plain = tiny(2)
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    write_bitnet_gguf(weights, a)
    write_bitnet_gguf(plain, b)
    assert a.read_bytes() == b.read_bytes()
    check_same(load_gguf_weights(a), plain, f16_scales=False)
    c = tmp_path / "c.gguf"
    write_bitnet_gguf(weights, c, ternary_type="TQ2_0")
    check_same(load_gguf_weights(c), plain, f16_scales=True)


def test_loaded_model_computes_the_same_logits(tmp_path: Path) -> None:
    from trit.engine.model import Model, load_model

    weights, plain = tiny(3)
    p = tmp_path / "m.gguf"
    write_bitnet_gguf(plain, p)
    ids = [1, 5, 42, 7, 299]
    ref = Model(weights, threads=1).logits(ids)
    got = load_model(p, threads=1).logits(ids)
    np.testing.assert_array_equal(got, ref)


def test_metadata_follows_bitnet_cpp(tmp_path: Path) -> None:
    _, plain = tiny(4)
    p = tmp_path / "m.gguf"
    write_bitnet_gguf(plain, p, ternary_type="TQ2_0", extra_metadata={"tokenizer.chat_template": "{{x}}"})
    r = gguf.GGUFReader(p)  # the gguf package cannot read I2_S, but TQ2_0 is fine
    V = gguf.GGUFValueType
    expect = {
        "general.architecture": (V.STRING, "bitnet-b1.58"),
        "general.file_type": (V.UINT32, 37),
        "bitnet-b1.58.block_count": (V.UINT32, 2),
        "bitnet-b1.58.embedding_length": (V.UINT32, 256),
        "bitnet-b1.58.feed_forward_length": (V.UINT32, 512),
        "bitnet-b1.58.attention.head_count": (V.UINT32, 4),
        "bitnet-b1.58.attention.head_count_kv": (V.UINT32, 2),
        "bitnet-b1.58.context_length": (V.UINT32, 128),
        "bitnet-b1.58.vocab_size": (V.UINT32, 300),
        "bitnet-b1.58.rope.freq_base": (V.FLOAT32, 500000.0),
        "bitnet-b1.58.attention.layer_norm_rms_epsilon": (V.FLOAT32, np.float32(1e-5)),
        "tokenizer.ggml.eos_token_id": (V.UINT32, 7),
    }
    for key, (vt, val) in expect.items():
        field = r.fields[key]
        assert field.types == [vt], key
        assert field.contents() == val, key
    t = {x.name: x for x in r.tensors}
    assert t["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert list(t["token_embd.weight"].shape) == [256, 300]
    assert t["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert list(t["blk.1.ffn_down.weight"].shape) == [512, 256]  # ne0 = in, ne1 = out
    assert t["blk.1.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.TQ2_0
    assert "output.weight" not in t
    names = set(t)
    for i in range(2):
        for n in (
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "attn_sub_norm",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
            "ffn_sub_norm",
        ):
            assert f"blk.{i}.{n}.weight" in names
    # the gguf package's dequantizer agrees with what we load
    deq = gguf.quants.dequantize(np.asarray(t["blk.0.ffn_up.weight"].data), gguf.GGMLQuantizationType.TQ2_0)
    w, s = plain["layers"][0]["up"]
    np.testing.assert_array_equal(deq, w.astype(np.float32) * np.float32(np.float16(s)))
    assert load_gguf_weights(p).chat_template == "{{x}}"


def _rewrite(
    src: Path,
    dst: Path,
    *,
    drop: str = "",
    retype: dict[str, Any] | None = None,
    reshape: dict[str, tuple[int, ...]] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Copy a GGUF with changes (dropping / reshaping a tensor, changing metadata)."""
    retype, reshape, meta = retype or {}, reshape or {}, meta or {}
    with GGUFFile(src) as f:
        w = GGUFWriter(dst)
        for k, v in f.metadata.items():
            if k in meta:
                if meta[k] is not None:
                    w.add_metadata(k, meta[k])
                continue
            w.add_metadata(k, v, f.metadata_types[k], f.array_item_types.get(k))
        for k, v in meta.items():
            if k not in f.metadata and v is not None:
                w.add_metadata(k, v)
        for name, info in f.tensors.items():
            if name == drop:
                continue
            if name in retype:
                w.add_tensor(name, retype[name])
                continue
            w.add_raw_tensor(name, reshape.get(name, info.shape), info.type_id, f.tensor_data(name).tobytes())
        w.write()


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    _, plain = tiny(5)
    p = tmp_path / "ok.gguf"
    write_bitnet_gguf(plain, p)
    return p


def test_missing_tensor(tiny_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    _rewrite(tiny_file, bad, drop="blk.1.ffn_sub_norm.weight")
    with pytest.raises(
        ModelFormatError, match=r"tensor blk.1.ffn_sub_norm.weight is missing \(expected shape \[512\]\)"
    ) as e:
        load_gguf_weights(bad)
    assert e.value.path == str(bad)


def test_shape_mismatch(tiny_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    _rewrite(tiny_file, bad, reshape={"blk.0.attn_v.weight": (512, 64)})  # same byte count as [256, 128]
    with pytest.raises(
        ModelFormatError, match=r"blk.0.attn_v.weight has shape \[512, 64\], expected \[256, 128\]"
    ):
        load_gguf_weights(bad)


def test_non_ternary_linear_rejected(tiny_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    _rewrite(tiny_file, bad, retype={"blk.0.attn_q.weight": np.zeros((256, 256), np.float32)})
    with pytest.raises(
        ModelFormatError, match="blk.0.attn_q.weight has type F32; BitNet weights must be ternary"
    ):
        load_gguf_weights(bad)


def test_all_zero_tensor_rejected(tmp_path: Path) -> None:
    _, plain = tiny(6)
    w, s = plain["layers"][1]["gate"]
    plain["layers"][1]["gate"] = (np.zeros_like(w), s)
    p = tmp_path / "zero.gguf"
    write_bitnet_gguf(plain, p)
    with pytest.raises(ModelFormatError, match="tensor blk.1.ffn_gate.weight is all zero"):
        load_gguf_weights(p)


def test_architecture_and_metadata_errors(tiny_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    _rewrite(tiny_file, bad, meta={"general.architecture": "gptneox"})
    with pytest.raises(ModelFormatError, match="architecture 'gptneox' is not supported; this version runs"):
        load_gguf_weights(bad)
    # a llama file reads the llama.* keys: the bitnet ones do not stand in for them
    _rewrite(tiny_file, bad, meta={"general.architecture": "llama"})
    with pytest.raises(ModelFormatError, match="metadata key llama.embedding_length is missing"):
        load_gguf_weights(bad)
    _rewrite(tiny_file, bad, meta={"bitnet-b1.58.embedding_length": None})
    with pytest.raises(ModelFormatError, match="metadata key bitnet-b1.58.embedding_length is missing"):
        load_gguf_weights(bad)
    _rewrite(tiny_file, bad, meta={"bitnet-b1.58.block_count": "two"})
    with pytest.raises(ModelFormatError, match="block_count is 'two'"):
        load_gguf_weights(bad)
    _rewrite(tiny_file, bad, meta={"bitnet-b1.58.block_count": 3})
    with pytest.raises(ModelFormatError, match="tensor blk.2.attn_norm.weight is missing"):
        load_gguf_weights(bad)
    _rewrite(tiny_file, bad, meta={"tokenizer.ggml.eos_token_id": 10**6})
    with pytest.raises(ModelFormatError, match="not a token id"):
        load_gguf_weights(bad)


def test_bitnet_25_files_load(tiny_file: Path, tmp_path: Path) -> None:
    """bitnet.cpp's older converter writes arch "bitnet-25" with the same layout and key suffixes."""
    b25 = tmp_path / "b25.gguf"
    with GGUFFile(tiny_file) as f:
        w = GGUFWriter(b25)
        for k, v in f.metadata.items():
            key = k.replace("bitnet-b1.58.", "bitnet-25.")
            value = "bitnet-25" if k == "general.architecture" else v
            w.add_metadata(key, value, f.metadata_types[k], f.array_item_types.get(k))
        for name, info in f.tensors.items():
            w.add_raw_tensor(name, info.shape, info.type_id, f.tensor_data(name).tobytes())
        w.write()
    a, b = load_gguf_weights(tiny_file), load_gguf_weights(b25)
    assert dataclasses.replace(b.config, file_arch="") == a.config and b.config.file_arch == "bitnet-25"
    assert b.config.arch == "bitnet-b1.58" and b.config.rope_neox  # the same block
    np.testing.assert_array_equal(a.layers[1].down.packed, b.layers[1].down.packed)


def test_untied_head(tmp_path: Path) -> None:
    _, plain = tiny(7)
    plain["head"] = (np.random.default_rng(0).standard_normal((300, 256))).astype(np.float16)
    p = tmp_path / "untied.gguf"
    write_bitnet_gguf(plain, p)
    w = load_gguf_weights(p)
    assert not w.config.tied
    assert isinstance(w.head, np.ndarray)
    np.testing.assert_array_equal(w.head, plain["head"])


def test_converter_refuses_what_it_cannot_store(tmp_path: Path) -> None:
    _, plain = tiny(8)
    w, _ = plain["layers"][0]["q"]
    plain["layers"][0]["q"] = (w, np.linspace(1, 2, w.shape[0]).astype(np.float32))
    with pytest.raises(ValueError, match="one scale per tensor"):
        write_bitnet_gguf(plain, tmp_path / "x.gguf")
    write_bitnet_gguf(plain, tmp_path / "x.gguf", ternary_type="TQ2_0")  # per-row scales fit TQ2_0
    got = load_gguf_weights(tmp_path / "x.gguf").layers[0].q.scale
    np.testing.assert_array_equal(got, np.linspace(1, 2, w.shape[0]).astype(np.float16).astype(np.float32))


def test_weights_in_ram_match_the_map(tmp_path, monkeypatch):
    """weights="ram" copies the tensor data into huge-page-advised memory: same bytes, same logits
    bit for bit, aligned views, the label in Model.info; TRIT_WEIGHTS picks the default."""
    from trit.engine.gguf_loader import huge_pages_available
    from trit.engine.model import load_model

    weights, _ = random_weights(3)
    p = tmp_path / "m.gguf"
    write_bitnet_gguf(weights, p)
    with GGUFFile(p) as mapped, GGUFFile(p) as copied:
        copied.read_into_memory()
        assert copied.in_memory and not mapped.in_memory
        for name in mapped.tensors:
            a, b = mapped.tensor_data(name), copied.tensor_data(name)
            np.testing.assert_array_equal(a, b)
            assert not b.flags.writeable and b.ctypes.data % 32 == 0
        view = copied.tensor_data("blk.0.attn_q.weight")
    assert copied.closed and view.sum() >= 0  # a view outlives close(), as with the map
    ids = [1, 5, 9, 2, 7]
    runs = {}
    for mem in ("map", "ram"):
        m = load_model(p, threads=2, weights=mem)
        assert m.info.memory == {"map": "file map", "ram": "RAM copy"}[mem]
        runs[mem] = m.logits(ids)
    np.testing.assert_array_equal(runs["map"], runs["ram"])
    auto = load_model(p, threads=1).info.memory
    assert auto == ("RAM copy" if huge_pages_available() else "file map")
    # TQ2_0 matrices are repacked at load: auto keeps the map (a copy would hold unused bytes)
    tq = tmp_path / "tq.gguf"
    write_bitnet_gguf(weights, tq, ternary_type="TQ2_0")
    assert load_model(tq, threads=1).info.memory == "file map (ternary matrices repacked in RAM)"
    forced = load_model(tq, threads=1, weights="ram")
    assert forced.info.memory == "RAM copy"
    np.testing.assert_array_equal(forced.logits(ids), load_model(tq, threads=1, weights="map").logits(ids))
    monkeypatch.setenv("TRIT_WEIGHTS", "map")
    assert load_model(p, threads=1).info.memory == "file map"
    monkeypatch.setenv("TRIT_WEIGHTS", "ram")
    assert load_model(p, threads=1).info.memory == "RAM copy"
    monkeypatch.setenv("TRIT_WEIGHTS", "disk")
    with pytest.raises(ValueError, match="TRIT_WEIGHTS"):
        load_model(p, threads=1)
    with pytest.raises(ValueError, match="weights must be one of"):
        load_model(p, weights="swap")


def test_lookup_only_embedding_stays_in_the_file_map(tmp_path):
    """With weights="ram", an embedding that is only looked up row by row (an untied model, or a
    Q8_0 head built from it) stays in the file map: the copy starts after it, the values and the
    logits are the same as from the map, and drop_pages() leaves the data readable."""
    import dataclasses

    from trit.engine.model import load_model

    weights, _ = random_weights(3)
    p = tmp_path / "tied.gguf"
    write_bitnet_gguf(weights, p)
    with GGUFFile(p) as ref, GGUFFile(p) as f:
        f.read_into_memory(exclude=["token_embd.weight"])
        assert f.in_memory and f.mapped_tensors == {"token_embd.weight"}
        for name in ref.tensors:
            np.testing.assert_array_equal(f.tensor_data(name), ref.tensor_data(name))
        emb = f.tensor_array("token_embd.weight")
        before = emb.copy()
        f.drop_pages("token_embd.weight", 0, f.tensors["token_embd.weight"].nbytes)
        np.testing.assert_array_equal(emb, before)  # dropped pages fault back in from the file
    with GGUFFile(p) as f:  # a tensor between others is copied with them: nothing stays mapped
        f.read_into_memory(exclude=["blk.0.attn_q.weight"])
        assert f.in_memory and not f.mapped_tensors

    ids = [1, 5, 9, 2, 7]
    # tied model: the f16 embedding is the head, so it is copied, unless a Q8_0 head replaces it
    assert load_model(p, threads=1, weights="ram").info.memory == "RAM copy"
    q8 = load_model(p, threads=1, weights="ram", head="q8_0")
    assert q8.info.memory == "RAM copy (embedding mapped)"
    np.testing.assert_array_equal(
        q8.logits(ids), load_model(p, threads=1, weights="map", head="q8_0").logits(ids)
    )
    # untied model (its own output.weight at the end of the file): the embedding stays mapped
    rng = np.random.default_rng(5)
    head = (rng.standard_normal(weights.embed.shape) * 0.02).astype(np.float16)
    u = tmp_path / "untied.gguf"
    write_bitnet_gguf(dataclasses.replace(weights, head=head), u)
    ram = load_model(u, threads=1, weights="ram")
    assert ram.info.memory == "RAM copy (embedding mapped)"
    np.testing.assert_array_equal(ram.logits(ids), load_model(u, threads=1, weights="map").logits(ids))


# -- damaged values and mismatched tokenizers ------------------------------------------------------


@pytest.mark.parametrize(
    "where, value",
    [("out_norm", np.nan), ("attn_norm", np.inf), ("ffn_sub_norm", -np.inf), ("attn_sub_norm", np.nan)],
)
def test_non_finite_norm_rejected(tmp_path: Path, where: str, value: float) -> None:
    """The HF loader refused NaN / infinite norms, the GGUF loader did not: every logit came out
    NaN (an IndexError or an empty reply later). Now the same typed error, naming file and tensor."""
    _, plain = tiny(9)
    if where == "out_norm":
        plain["out_norm"] = plain["out_norm"].copy()
        plain["out_norm"][5] = value
        tensor = "output_norm.weight"
    else:
        plain["layers"][1][where] = plain["layers"][1][where].copy()
        plain["layers"][1][where][0] = value
        tensor = f"blk.1.{where}.weight"
    p = tmp_path / "damaged.gguf"
    write_bitnet_gguf(plain, p)
    with pytest.raises(ModelFormatError, match=f"tensor {tensor} contains NaN or infinite values") as e:
        load_gguf_weights(p)
    assert e.value.path == str(p)


def _write_with_tokenizer(path: Path, n_extra: int) -> Path:
    """The tiny model (vocab 300) with a byte-level tokenizer: the 256 bytes and n_extra more."""
    from trit.engine.tokenizer import bytes_to_unicode

    _, plain = tiny(4)
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)] + [f"<|extra_{i}|>" for i in range(n_extra)]
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.array([1] * 256 + [3] * n_extra, np.int32),
        "tokenizer.ggml.merges": [],
    }
    write_bitnet_gguf(plain, path, extra_metadata=meta)
    return path


def test_tokenizer_larger_than_the_embedding_rejected(tmp_path: Path) -> None:
    """A tokenizer with ids the embedding has no row for was accepted; prompts or replies failed
    later with "token ids must be in [0, 300)"."""
    p = _write_with_tokenizer(tmp_path / "big.gguf", 60)  # 316 tokens, 300 rows
    with pytest.raises(
        ModelFormatError, match="the tokenizer .* has 316 tokens but the model has only 300"
    ) as e:
        load_gguf_weights(p)
    assert e.value.path == str(p)


def test_tokenizer_smaller_than_the_embedding_never_gets_padding_ids(tmp_path: Path) -> None:
    """Fewer tokens than embedding rows is normal (padded embeddings) and loads, but the rows past
    the tokenizer have no text: sampling them failed mid-reply ("token id 287 is outside the
    vocabulary"). They are never sampled now."""
    from trit.engine.model import load_model

    p = _write_with_tokenizer(tmp_path / "small.gguf", 4)  # 260 tokens, 300 rows
    m = load_model(p, threads=1)
    assert m.tokenizer.vocab_size == 260 and m.config.vocab == 300 and m.sample_vocab == 260
    hot = {"temperature": 5.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}
    gen = m.generate([1, 2, 3], max_tokens=64, seed=0, stop_ids=[], **hot)
    assert len(gen.tokens) == 64 and max(gen.tokens) < 260
    reply = m.chat([{"role": "user", "content": "hi"}], max_tokens=64, seed=1, stop_ids=[], **hot)
    assert len(reply.tokens) == 64 and max(reply.tokens) < 260
    assert reply.text == m.tokenizer.decode(reply.tokens)
    assert m.logits([1, 2]).shape == (2, 300)  # logits still cover every row
