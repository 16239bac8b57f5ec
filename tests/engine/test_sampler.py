from __future__ import annotations

import numpy as np
import pytest
from trit.engine.sampler import Sampler, SamplingParams


def test_greedy_is_argmax():
    x = np.array([0.1, 3.0, 2.9, -1.0], np.float32)
    assert Sampler(SamplingParams(temperature=0, repeat_penalty=1.0)).sample(x) == 1


def test_repeat_penalty_divides_positive_multiplies_negative():
    s = Sampler(SamplingParams(temperature=0, repeat_penalty=2.0))
    out = s.penalize(np.array([4.0, -1.0, 3.0], np.float32), [0, 1])
    np.testing.assert_array_equal(out, [2.0, -2.0, 3.0])
    assert s.sample(np.array([4.0, -1.0, 3.0], np.float32), [0]) == 2


def test_top_k_one_is_greedy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(np.float32)
    s = Sampler(SamplingParams(temperature=5.0, top_k=1, repeat_penalty=1.0, seed=1))
    assert all(s.sample(x) == int(np.argmax(x)) for _ in range(50))


def test_distribution_follows_softmax():
    x = np.log(np.array([0.5, 0.3, 0.2], np.float64)).astype(np.float32)
    s = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, seed=3))
    counts = np.bincount([s.sample(x) for _ in range(20000)], minlength=3) / 20000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.2], atol=0.02)


def test_top_p_and_min_p_cut_the_tail():
    x = np.log(np.array([0.6, 0.3, 0.06, 0.04], np.float64)).astype(np.float32)
    s = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=0.85, min_p=0.0, repeat_penalty=1.0, seed=0))
    assert {s.sample(x) for _ in range(3000)} == {0, 1}
    s = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.2, repeat_penalty=1.0, seed=0))
    assert {s.sample(x) for _ in range(3000)} == {0, 1}


@pytest.mark.parametrize(
    "kw", [{"temperature": -0.1}, {"top_k": -1}, {"top_p": 0.0}, {"min_p": 1.0}, {"repeat_penalty": 0.0}]
)
def test_bad_params(kw):
    with pytest.raises(ValueError):
        SamplingParams(**kw)


@pytest.mark.parametrize("k", [1, 5, 40, 100])
def test_top_k_fast_path_is_exact(k):
    from trit.engine.sampler import _top_k

    rng = np.random.default_rng(k)
    for x in (
        rng.standard_normal(128256).astype(np.float32),
        np.sort(rng.standard_normal(50000)).astype(np.float32),  # the top k all at one end
        np.repeat(rng.standard_normal(1000), 64).astype(np.float32),
    ):  # heavy ties
        got = np.sort(x[_top_k(x, k)])
        want = np.sort(x)[-k:]
        np.testing.assert_array_equal(got, want)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "kw",
    [
        {"temperature": NAN},
        {"temperature": INF},
        {"top_p": NAN},
        {"min_p": NAN},
        {"repeat_penalty": NAN},
        {"repeat_penalty": INF},
        {"top_k": NAN},
        {"top_k": 2.5},
        {"repeat_last_n": NAN},
        {"seed": 1.5},
        {"temperature": "0.5"},
    ],
)
def test_non_finite_or_wrong_typed_params_name_the_parameter(kw):
    """NaN passed every `x < 0` check: repeat_penalty=nan turned every seen logit into NaN."""
    (name,) = kw
    with pytest.raises(ValueError, match=f"^{name} must be"):
        SamplingParams(**kw)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
@pytest.mark.parametrize("bad", [NAN, INF])
def test_non_finite_logits_raise_a_typed_error(temperature, bad):
    """Greedy took argmax of NaN (the first id: often end-of-text, an empty reply); sampling raised
    an IndexError. Both now say the model produced NaN (or infinite) logits."""
    from trit.engine.errors import EngineError, NonFiniteLogitsError

    s = Sampler(SamplingParams(temperature=temperature, seed=0))
    x = np.zeros(100, np.float32)
    x[17] = bad
    with pytest.raises(NonFiniteLogitsError, match="NaN logits" if np.isnan(bad) else "infinite logits"):
        s.sample(x)
    with pytest.raises(EngineError, match=r"NaN logits \(100 of 100\)"):
        s.sample(np.full(100, np.nan, np.float32))


def test_n_vocab_limits_the_ids_sampled():
    x = np.arange(10, dtype=np.float32)  # the best ids are the last ones
    assert Sampler(SamplingParams(temperature=0), n_vocab=6).sample(x) == 5
    s = Sampler(SamplingParams(temperature=100.0, top_k=0, top_p=1.0, min_p=0.0, seed=0), n_vocab=6)
    assert {s.sample(x, history=[9, 8, 7]) for _ in range(500)} == set(range(6))
    # NaN beyond n_vocab (rows without text) does not matter
    x[8] = np.nan
    assert Sampler(SamplingParams(temperature=0), n_vocab=6).sample(x) == 5


@pytest.mark.parametrize(("temperature", "penalty"), [(1e-320, 1.1), (0.7, 1e-300), (1e-320, 1e300), (5e-324, 1e-300)])
def test_extreme_but_valid_values_sample_without_nan_or_warnings(temperature: float, penalty: float) -> None:
    """A subnormal temperature is greedy, a tiny or huge penalty stays finite: no NaN
    probabilities, no overflow warnings (trit run --temp 1e-320 printed both and failed)."""
    import warnings

    x = np.random.default_rng(0).normal(size=300).astype(np.float32)
    s = Sampler(SamplingParams(temperature, 40, 0.95, 0.05, penalty, seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok = s.sample(x, [5])
    assert 0 <= tok < 300
    if penalty == 1.1:
        assert tok == int(np.argmax(x))
