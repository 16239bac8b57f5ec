"""Ternary llama-family models (HF1BitLLM/Llama3-8B-1.58, tiiuae/Falcon3-*-1.58bit) against
transformers' LlamaForCausalLM with its BitNet quantizer, on the tiny checkpoints written by
tests/fixtures/make_llama_ternary_fixtures.py, through both loaders:

* the HF folder (config.json model_type "llama" + quantization_config quant_method "bitnet");
* TQ1_0 / TQ2_0 GGUFs in llama.cpp's llama-arch form, written here from the HF weights with q/k
  rows permuted as llama.cpp's converter does (the GGUF loader then runs interleaved RoPE).

The criteria are test_bitnet_reference.py's (same per-token int8 activations, same reasons), with
its check functions imported. The fixtures' scales are exact in TQ's f16 block scale (powers of two
for the dividing BitLinear class, f16 values for the multiplying one), so the GGUF files are the
same model, not an approximation of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from llama_gguf import permute_qk, write_llama_gguf
from test_bitnet_reference import check_layers_teacher_forced, run_reference_checks
from test_hf_loader import edit_config, edit_tensors, raises
from trit.engine import load_model
from trit.engine._kernels import available_isas
from trit.engine.errors import ModelFormatError
from trit.engine.hf import load_hf_weights, parse_config
from trit.engine.ternary import tq1_0_bytes, tq2_0_bytes, unpack_tq
from trit.engine.weights import QuantTensor, TernaryTensor

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
FIXTURES = ["llama-ternary-untied", "llama-ternary-tied"]
ISAS = available_isas()
TQ = {"TQ1_0": tq1_0_bytes, "TQ2_0": tq2_0_bytes}
GGUF_CASES = [(n, t) for n in FIXTURES for t in TQ]


def test_fixtures_present_and_small():
    total = 0
    for name in FIXTURES:
        d = DATA / name
        assert (d / "config.json").is_file() and (d / "ref.npz").is_file(), name
        total += sum(p.stat().st_size for p in d.iterdir())
        ref = np.load(d / "ref.npz")
        # the greedy criterion compares tokens up to the first reference margin < 1.0
        steps = [int(np.argmax(np.append(ref[f"margin_{k}"], 0.0) < 1.0)) for k in ("1", "33")]
        assert max(steps) >= 5 and min(steps) >= 3, (name, steps)
    assert total < 2_000_000, total


@pytest.mark.parametrize("name", FIXTURES)
def test_hf_config_semantics(name):
    w = load_hf_weights(DATA / name)
    c = w.config
    assert (c.arch, c.act, c.rope_neox, c.rope_theta, c.norm_eps) == ("llama", "silu", True, 500000.0, 1e-5)
    assert (c.dim, c.hidden, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab) == (256, 768, 4, 2, 64, 384)
    assert c.tied == name.endswith("-tied") and (w.head is None) == c.tied
    for lw in w.layers:
        assert lw.attn_sub_norm is None and lw.ffn_sub_norm is None
        assert all(
            isinstance(getattr(lw, f), TernaryTensor) for f in ("q", "k", "v", "o", "gate", "up", "down")
        )
    if name.endswith("-untied"):
        # HF1BitLLM's form: bf16 embedding and head kept exact, BitLinear's dividing power-of-two scales
        assert isinstance(w.embed, QuantTensor) and w.embed.type_name == "BF16"
        assert isinstance(w.head, QuantTensor) and w.head.type_name == "BF16"
        assert w.file_type == "llama HF packed (bitlinear, dividing scale)"
        scales = {float(getattr(lw, f).scale[0]) for lw in w.layers for f in ("gate", "up", "down", "o", "v")}
        assert scales <= {0.5, 1.0, 2.0} and len(scales) > 1, scales
    else:
        assert isinstance(w.embed, np.ndarray) and w.embed.dtype == np.float16
        assert w.file_type == "llama HF packed (autobitlinear)"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", FIXTURES)
def test_hf_checkpoint_matches_transformers(name, isa):
    ref = np.load(DATA / name / "ref.npz")
    model = load_model(DATA / name, isa=isa, threads=2)
    run_reference_checks(model, ref)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", FIXTURES)
def test_hf_layers_teacher_forced(name, isa, monkeypatch):
    ref = np.load(DATA / name / "ref.npz")
    model = load_model(DATA / name, isa=isa, threads=1)
    check_layers_teacher_forced(model, ref, monkeypatch)


# -- GGUF ------------------------------------------------------------------------------------------


def _float_tensor(t) -> tuple[str, np.ndarray]:
    """An embedding / head in the type it has (bf16 stays BF16, f16 stays F16): no rounding."""
    if isinstance(t, np.ndarray):
        return ("F16", t)
    from trit.engine.weights import dense_float

    return (t.type_name, dense_float(t))


def write_ternary_llama_gguf(name: str, path: Path, ttype: str, *, permute: bool = True) -> None:
    w = load_hf_weights(DATA / name)
    c = w.config
    layers = []
    for lw in w.layers:
        L = {"attn_norm": lw.attn_norm, "ffn_norm": lw.ffn_norm}
        for f in ("q", "k", "v", "o", "gate", "up", "down"):
            tt = getattr(lw, f)
            t, s = unpack_tq(tt.packed, tt.cols), tt.scale
            if permute and f in ("q", "k"):
                n_head = c.n_heads if f == "q" else c.n_kv_heads
                t, s = permute_qk(t, n_head), permute_qk(s, n_head)
            assert np.all(np.float16(s) == s), "fixture scales must be exact in f16"
            L[f] = (ttype, TQ[ttype](t, s).reshape(tt.rows, -1))
        layers.append(L)
    head = None if c.tied else _float_tensor(w.head)
    write_llama_gguf(
        path, c, embed=_float_tensor(w.embed), out_norm=w.out_norm, layers=layers, head=head, file_type=ttype
    )


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama-tq")
    out = {}
    for name, tt in GGUF_CASES:
        out[(name, tt)] = root / f"{name}-{tt}.gguf"
        write_ternary_llama_gguf(name, out[(name, tt)], tt)
    return out


@pytest.mark.parametrize(("name", "ttype"), GGUF_CASES)
def test_gguf_config(name, ttype, gguf_files):
    model = load_model(gguf_files[(name, ttype)], threads=1)
    hf = load_hf_weights(DATA / name).config
    c = model.config
    assert (c.arch, c.act, c.rope_neox, c.tied) == ("llama", "silu", False, hf.tied)
    assert (c.dim, c.hidden, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim) == (
        hf.dim,
        hf.hidden,
        hf.n_layers,
        hf.n_heads,
        hf.n_kv_heads,
        hf.head_dim,
    )
    assert (c.rope_theta, c.norm_eps, c.vocab) == (hf.rope_theta, hf.norm_eps, hf.vocab)
    assert model.info.quant_types == (ttype,)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(("name", "ttype"), GGUF_CASES)
def test_gguf_matches_transformers(name, ttype, isa, gguf_files):
    ref = np.load(DATA / name / "ref.npz")
    model = load_model(gguf_files[(name, ttype)], isa=isa, threads=2)
    run_reference_checks(model, ref)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(("name", "ttype"), GGUF_CASES)
def test_gguf_layers_teacher_forced(name, ttype, isa, gguf_files, monkeypatch):
    ref = np.load(DATA / name / "ref.npz")
    model = load_model(gguf_files[(name, ttype)], isa=isa, threads=1)
    check_layers_teacher_forced(model, ref, monkeypatch)


def test_unpermuted_gguf_is_wrong(tmp_path):
    """The permutation is what makes rope_neox=False right: without it the logits move far
    outside the criteria (so the GGUF tests above do test the RoPE form)."""
    name = FIXTURES[0]
    path = tmp_path / "unpermuted.gguf"
    write_ternary_llama_gguf(name, path, "TQ2_0", permute=False)
    ref = np.load(DATA / name / "ref.npz")
    got = load_model(path, threads=1).logits(ref["prompt_33"].tolist())
    want = ref["logits_33"]
    assert np.abs(got - want).mean() > 0.1 * want.std()
    # position 0 has no rotation: the permutation cannot matter there
    assert np.abs(got[0] - want[0]).max() <= 1e-3 * np.ptp(want[0])


# -- config.json / checkpoint validation for the llama family ---------------------------------------


@pytest.fixture
def llama_dir(tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(DATA / "llama-ternary-untied", d)
    return d


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"quantization_config": ...}, "GGUF file of this llama model"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported for model_type 'llama' (silu)"),
        ({"hidden_act": "relu2"}, "hidden_act 'relu2'"),
        ({"attention_bias": True}, "biased ternary llama projections"),
        ({"mlp_bias": True}, "mlp_bias"),
        (
            {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}},
            "RoPE type 'llama3'",
        ),
        ({"quantization_config": {"quant_method": "bitnet", "modules_to_not_convert": ["q_proj"]}}, "q_proj"),
        ({"quantization_config": {"quant_method": "bitnet", "modules_to_not_convert": ["x"]}}, "lm_head"),
    ],
)
def test_llama_bad_config(llama_dir, changes, needle):
    edit_config(llama_dir, **changes)
    raises(llama_dir, needle, file="config.json")


def test_llama_defaults_and_wider_heads(llama_dir):
    """LlamaConfig's defaults apply (rope_theta 10000, eps 1e-6, tie false, silu), and llama allows
    n_heads x head_dim != hidden_size (Falcon3 / Llama 3.2 style), which BitNet's sub-norm forbids."""
    edit_config(llama_dir, rope_parameters=..., rms_norm_eps=..., tie_word_embeddings=..., hidden_act=...)
    c = load_hf_weights(llama_dir).config
    assert (c.rope_theta, c.norm_eps, c.tied, c.act) == (10000.0, 1e-6, False, "silu")
    doc = json.loads((llama_dir / "config.json").read_text())
    cfg, _ = parse_config({**doc, "head_dim": 128}, llama_dir / "config.json")
    assert (cfg.n_heads, cfg.head_dim, cfg.dim) == (4, 128, 256)
    with pytest.raises(ModelFormatError, match="head_dim 128 != hidden_size 256"):
        parse_config({**doc, "model_type": "bitnet", "head_dim": 128}, llama_dir / "config.json")


def test_llama_untied_head_missing(llama_dir):
    edit_tensors(llama_dir, lambda t: t.pop("lm_head.weight"))
    raises(llama_dir, "tensor lm_head.weight is missing")


def test_llama_ternary_head_refused(llama_dir):
    def pack_head(t):
        _, shape, raw = t["lm_head.weight"]
        t["lm_head.weight"] = ("U8", (shape[0] // 4, shape[1]), bytes(len(raw) // 8))

    edit_tensors(llama_dir, pack_head)
    raises(llama_dir, "lm_head.weight", "U8", file="model.safetensors")


def test_falcon3_1_58bit_config():
    """tiiuae/Falcon3-1B-Instruct-1.58bit's config.json (published values): legacy top-level
    rope_theta with rope_scaling null, head_dim 256, an extra is_bitnet_config key, lm_head kept."""
    doc = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "eos_token_id": 11,
        "head_dim": 256,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "is_bitnet_config": True,
        "max_position_embeddings": 8192,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 8,
        "num_hidden_layers": 18,
        "num_key_value_heads": 4,
        "pretraining_tp": 1,
        "quantization_config": {"modules_to_not_convert": ["lm_head"], "quant_method": "bitnet"},
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000042,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "vocab_size": 131072,
    }
    cfg, q = parse_config(doc, Path("config.json"))
    assert (q.linear_class, q.mode, q.family) == ("bitlinear", "offline", "llama")
    assert (cfg.arch, cfg.act, cfg.rope_neox, cfg.tied) == ("llama", "silu", True, False)
    assert (cfg.dim, cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (2048, 8192, 8, 4, 256)
    assert (cfg.rope_theta, cfg.norm_eps, cfg.eos_ids, cfg.bos_id) == (1000042.0, 1e-6, (11,), None)
    # transformers' default skips (lm_head) apply when the list is null
    doc["quantization_config"] = {"quant_method": "bitnet", "modules_to_not_convert": None}
    assert parse_config(doc, Path("config.json"))[0] == cfg


def test_chat_family(llama_dir):
    assert load_hf_weights(llama_dir).family == ""
    edit_config(llama_dir, _name_or_path="/home/ec2-user/checkpoints/falcon3-1b-1bit/hf-1bit")
    assert load_hf_weights(llama_dir).family == "falcon3"
