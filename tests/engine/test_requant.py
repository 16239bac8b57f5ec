"""The optional Q8_0 LM head built at load (trit.engine.requant)."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants
from tiny import random_weights
from trit.engine import Model
from trit.engine.requant import quantize_q8_0


@pytest.mark.parametrize("shape", [(300, 256), (5, 32), (7, 96)])
def test_quantizer_is_byte_identical_to_ggml(shape):
    rng = np.random.default_rng(shape[0])
    m = (rng.standard_normal(shape) * 0.05).astype(np.float16)
    m[0, :4] = [0.5, -0.5, 0, 127]  # ties and an outlier
    m[-1] = 0  # all-zero blocks: d = 0
    want = quants.quantize(m.astype(np.float32), GGMLQuantizationType.Q8_0).reshape(shape[0], -1)
    np.testing.assert_array_equal(quantize_q8_0(m, rows_per_step=3), want)


def test_bf16_and_f32_heads_quantize_as_their_float_values():
    from trit.engine.requant import q8_0_head
    from trit.engine.weights import QuantTensor

    rng = np.random.default_rng(7)
    f32 = (rng.standard_normal((40, 64)) * 0.05).astype(np.float32)
    bits = (f32.view(np.uint32) >> 16).astype(np.uint16)  # bf16: the top half of each f32
    as_bf16 = (bits.astype(np.uint32) << 16).view(np.float32)
    bf16 = QuantTensor(bits.view(np.uint8).reshape(40, -1), 40, 64, 30, "BF16")
    want = quants.quantize(as_bf16, GGMLQuantizationType.Q8_0).reshape(40, -1)
    np.testing.assert_array_equal(q8_0_head(bf16).data, want)
    f = QuantTensor(f32.view(np.uint8).reshape(40, -1), 40, 64, 0, "F32")
    np.testing.assert_array_equal(
        q8_0_head(f).data, quants.quantize(f32, GGMLQuantizationType.Q8_0).reshape(40, -1)
    )
    with pytest.raises(ValueError, match="float head"):
        q8_0_head(QuantTensor(np.zeros((40, 68), np.uint8), 40, 64, 8, "Q8_0"))


def test_a_hugging_face_models_bf16_head_as_q8_0():
    # it was left BF16 with a warning: --head q8_0 did nothing for Hugging Face folders
    from pathlib import Path

    from trit.engine import load_model

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "bitnet-s256-packed"
    exact, fast = load_model(folder, threads=1), load_model(folder, threads=1, head="q8_0")
    assert exact.info.head_type == "BF16" and fast.info.head_type.startswith("Q8_0 (built at load from BF16")
    ids = [1, 5, 9, 200, 17, 3]
    a, b = exact.logits(ids), fast.logits(ids)
    assert np.abs(a - b).mean() <= 0.01 * a.std() and (a.argmax(-1) == b.argmax(-1)).mean() >= 0.8


def test_quantizer_reports_each_slice_it_has_read():
    # the loader drops a mapped embedding's pages slice by slice through this callback
    m = np.ones((10, 64), np.float16)
    seen: list[tuple[int, int]] = []
    quantize_q8_0(m, rows_per_step=4, done=lambda a, b: seen.append((a, b)))
    assert sorted(seen) == [(0, 4), (4, 8), (8, 10)]  # slices may finish out of order (threads)


def test_bad_row_length():
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_q8_0(np.zeros((2, 40), np.float16))


@pytest.mark.parametrize("activations", ["f32", "q8"])
def test_model_with_q8_0_head(activations):
    w = random_weights(5)[0]
    exact = Model(w, threads=2)
    fast = Model(w, threads=2, head="q8_0", activations=activations)
    assert exact.info.head_type == "F16" and fast.info.head_type.startswith("Q8_0")
    assert fast.info.head_approx and not exact.info.head_approx
    head_f16 = w.embed.nbytes
    assert exact.info.weight_bytes - fast.info.weight_bytes == head_f16 - head_f16 // 64 * 34
    ids = [3, 14, 15, 92, 65, 35, 89, 79]
    a, b = exact.logits(ids), fast.logits(ids)
    # the only change is the head's Q8_0 rounding (|error| <= half a step of amax/127 per weight)
    assert np.abs(a - b).mean() <= 0.01 * a.std()
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.875  # measured: 1.0, mean |d| 0.4-0.7% of std


def test_q8_0_head_meets_q8_activations_whatever_the_model_setting():
    # the built head is a speed option: its activations are rounded to Q8_0 blocks (int8 dot
    # products) even when llama.cpp-type layers meet f32 activations; the other matrices here are
    # ternary, so both settings give the same logits bit for bit
    w = random_weights(5)[0]
    ids = [3, 14, 15, 92]
    a = Model(w, threads=1, head="q8_0", activations="f32").logits(ids)
    b = Model(w, threads=1, head="q8_0", activations="q8").logits(ids)
    np.testing.assert_array_equal(a, b)
    assert "Q8_0 activations" in Model(w, threads=1, head="q8_0").info.head_type


def test_head_option_is_checked():
    with pytest.raises(ValueError, match="head must be"):
        Model(random_weights(5)[0], head="q4")
