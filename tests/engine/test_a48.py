"""BitNet a4.8's modes (arXiv 2411.04965) against numpy_ref doing the same rounding, on the
transformers-generated fixtures, for every ISA: the 3-bit KV cache (kv="q3"), the a4.8 activations
(a48=True: 4-bit inputs of q/k/v and gate/up, TopK on o's input) and both together.

The modes are approximate by design: on these tiny random models they move logits by 45-90% of
their spread against the exact path. The engine must land on that rounding, not merely near it. On
most fixtures it agrees with numpy_ref to ~2e-7 of the spread; where float noise of ~1e-7 tips a
4-bit or 3-bit code across a .5 tie (a step of 1/7 of a token's scale), the logits move by up to
~6% of the spread. So: every case within 15% of the mode's own effect, at least half of the cases
within 1e-5 of the spread (any error in the mode's math would miss both), and greedy decoding
(one cached token at a time) follows numpy_ref up to its first near-tie.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy_ref import NumpyRef
from test_bitnet_reference import DATA, FIXTURES, ISAS, check_greedy
from trit.engine import load_model

MODES = {"q3 kv": ("q3", False), "a4.8": ("f32", True), "a4.8 + q3 kv": ("q3", True)}
# BitNet a4.8 is a recipe for ReLU^2 models (its sparse int8 down-projection input comes from them)
RELU2_FIXTURES = [n for n in FIXTURES if not n.endswith("-silu")]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("mode", MODES)
def test_a48_modes_match_numpy_ref(mode, isa):
    kv, a48 = MODES[mode]
    exact_cases = cases = 0
    for name in RELU2_FIXTURES:
        ref = np.load(DATA / name / "ref.npz")
        model = load_model(DATA / name, isa=isa, threads=2, kv=kv, a48=a48)
        assert (model.info.kv, model.info.a48) == (kv, a48)
        nr, exact = NumpyRef(model.weights, kv=kv, a48=a48), NumpyRef(model.weights)
        for key in ("1", "33"):
            prompt = ref[f"prompt_{key}"].tolist()
            got, want = model.logits(prompt), nr.forward(prompt)
            effect = np.abs(want - exact.forward(prompt)).mean()
            d = np.abs(got - want).mean()
            assert effect > 0.1 * want.std(), (name, key)  # the reference really rounds
            assert d <= 0.15 * effect, (name, key, d / effect)
            cases += 1
            exact_cases += d <= 1e-5 * want.std()
        prompt = ref["prompt_33"].tolist()[:9]
        toks, margin = nr.greedy(prompt, 12)
        gen = model.generate(prompt, max_tokens=12, temperature=0, repeat_penalty=1.0, stop_ids=[])
        check_greedy(gen.tokens, np.array(toks), np.array(margin))
    assert exact_cases >= cases / 2, (exact_cases, cases)
