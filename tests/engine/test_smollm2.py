"""The bundled default model (SmolLM2-135M-Instruct, Q4_1 GGUF, llama architecture) against
transformers loading the same GGUF (dequantized to float32); references written by
tests/fixtures/make_smollm2_fixtures.py.

Bound for our logits, stated: with the llama.cpp-style precision ("q8") every matmul input is
rounded to 8 bits per block of 32 (Q8_0/Q8_1), which moves this model's logits by ~0.2-0.3 on
average by itself (an independent numpy emulation of that rounding on the dequantized weights is
stored beside the reference). Our mean |d| over the reference's top-128 logits per position may be
at most 25% above the emulation's. Wherever the reference's top-2 margin is >= 1.0 the top-1 must
agree, and greedy continuations must be identical up to the first step whose reference margin is
below 1.0 (the same tolerance as the BitNet tests; the rounding moves logits by far more than the
smaller margins).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trit.engine import load_model
from trit.engine.perplexity import perplexity

REF = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "smollm2_ref.npz"
N_PROMPTS = 5
MARGIN = 1.0


@pytest.fixture(scope="module")
def ref():
    return np.load(REF)


@pytest.fixture(scope="module")
def model(default_model_gguf):
    return load_model(default_model_gguf, threads=2)


@pytest.mark.parametrize("i", range(N_PROMPTS))
def test_prompt_logits_within_q8_rounding(model, ref, i):
    ids = ref[f"p{i}_ids"].tolist()
    logits = model.logits(ids)
    top_ids, want, emu = ref[f"p{i}_top_ids"], ref[f"p{i}_top_ref"], ref[f"p{i}_top_q8emu"]
    got = np.take_along_axis(logits, top_ids, -1)
    ours, rounding = np.abs(got - want).mean(), np.abs(emu - want).mean()
    assert ours <= 1.25 * rounding, (ours, rounding)
    sure = want[:, 0] - want[:, 1] >= MARGIN
    assert sure.sum() >= len(ids) // 3
    assert (logits.argmax(-1) == top_ids[:, 0])[sure].all()


@pytest.mark.parametrize("i", range(N_PROMPTS))
def test_greedy_matches_reference(model, ref, i):
    ids = ref[f"p{i}_ids"].tolist()
    got = model.generate(ids, max_tokens=16, temperature=0, repeat_penalty=1.0, stop_ids=[]).tokens
    want, margin = ref[f"p{i}_greedy"].tolist(), ref[f"p{i}_margin"]
    for step, (g, w) in enumerate(zip(got, want)):
        if margin[step] < MARGIN:
            break
        assert g == w, (step, got, want)


def test_capital_of_france(model):
    msgs = [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    reply = model.chat(msgs, temperature=0, repeat_penalty=1.0, max_tokens=24)
    assert reply.text.strip() == "The capital of France is Paris."
    assert reply.stats.stop_reason == "stop"  # ended on <|im_end|>, not on the length limit


def test_perplexity_q8(model, ref):
    # the engine's own arithmetic: within 1% of the emulated q8 rounding's figure
    r = perplexity(model, ref["ppl_ids"].tolist())
    assert r.tokens_scored == len(ref["ppl_ids"]) - 1
    assert abs(r.perplexity / float(ref["ppl_q8emu"]) - 1) <= 0.01, (r.perplexity, float(ref["ppl_q8emu"]))
