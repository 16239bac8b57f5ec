"""Token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded RNG.

Greedy (temperature <= 0) is a plain argmax of the logits, so it is deterministic across thread
counts and ISAs wherever the engine's logits agree on the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import NonFiniteLogitsError


def _number(name: str, v: object) -> float:
    """A real, finite number (not a bool): NaN passes every comparison check below unnoticed."""
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float, np.integer, np.floating))
        or not math.isfinite(v)
    ):
        raise ValueError(f"{name} must be a finite number, not {v!r}")
    return float(v)


def _integer(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        # ValueError like every other bad sampling value: callers (the CLI, the app) catch that one
        raise ValueError(f"{name} must be an integer, not {v!r}")  # noqa: TRY004
    return int(v)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_k: int = 40  # 0 = off
    top_p: float = 0.95  # 1.0 = off
    min_p: float = 0.05  # 0.0 = off
    repeat_penalty: float = 1.1  # 1.0 = off
    repeat_last_n: int = 64
    seed: int | None = None

    def __post_init__(self) -> None:
        if _number("temperature", self.temperature) < 0:
            raise ValueError("temperature must be >= 0")
        if _integer("top_k", self.top_k) < 0:
            raise ValueError("top_k must be >= 0")
        if not 0.0 < _number("top_p", self.top_p) <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if not 0.0 <= _number("min_p", self.min_p) < 1.0:
            raise ValueError("min_p must be in [0, 1)")
        if _number("repeat_penalty", self.repeat_penalty) <= 0:
            raise ValueError("repeat_penalty must be > 0")
        if _integer("repeat_last_n", self.repeat_last_n) < 0:
            raise ValueError("repeat_last_n must be >= 0")
        if self.seed is not None and not 0 <= _integer("seed", self.seed) < 2**128:
            raise ValueError(f"seed must be an integer from 0 to 2**128 - 1, not {self.seed}")


class Sampler:
    """Picks the next token from one position's logits.

    n_vocab: sample only ids below it (None: every id). A tokenizer smaller than the model's
    embedding (models pad the embedding to a round size) cannot spell the ids beyond it, so they
    are never generated."""

    def __init__(self, params: SamplingParams, n_vocab: int | None = None) -> None:
        self.params = params
        self.n_vocab = n_vocab
        self.rng = np.random.Generator(np.random.PCG64(params.seed))

    def penalize(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """llama.cpp's repetition penalty: divide positive, multiply negative logits of tokens
        seen in the last repeat_last_n positions. Returns a new array."""
        p = self.params
        out = np.array(logits, dtype=np.float32, copy=True)
        if p.repeat_penalty != 1.0 and p.repeat_last_n > 0 and len(history):
            seen = np.unique(np.asarray(history[-p.repeat_last_n :], dtype=np.int64))
            vals = out[seen].astype(np.float64)  # a penalty like 1e-300 is 0 in float32
            fmax = np.finfo(np.float32).max  # a tiny or huge penalty stays finite (no inf - inf later)
            with np.errstate(over="ignore"):
                scaled = np.where(vals > 0, vals / p.repeat_penalty, vals * p.repeat_penalty)
            out[seen] = np.clip(scaled, -fmax, fmax)
        return out

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """The next token id. Raises NonFiniteLogitsError when the logits hold NaN or infinities:
        argmax would silently pick the first NaN (often an end-of-text id: an empty reply) and
        the probabilities would all be NaN."""
        p = self.params
        raw = np.asarray(logits)[: self.n_vocab]  # [n_vocab] the model's own values
        if not np.isfinite(raw).all():
            n_nan = int(np.isnan(raw).sum())
            what = f"NaN logits ({n_nan} of {raw.shape[0]})" if n_nan else "infinite logits"
            raise NonFiniteLogitsError(
                f"the model produced {what}, so no token can be chosen; the model file is probably "
                "damaged. Download it again or pick another model."
            )
        x = self.penalize(logits, history)[: self.n_vocab]  # history ids may lie beyond n_vocab
        if p.temperature <= 0.0:
            return int(np.argmax(x))
        # candidate set: top-k first (argpartition keeps this O(vocab), not a full sort)
        k = x.shape[0] if p.top_k <= 0 else min(p.top_k, x.shape[0])
        idx = _top_k(x, k)
        idx = idx[np.argsort(-x[idx], kind="stable")]
        # relative to the best before dividing: a tiny temperature makes the others -inf (greedy), never NaN
        with np.errstate(over="ignore"):
            z = (x[idx].astype(np.float64) - float(x[idx[0]])) / p.temperature
        probs = np.exp(z)
        probs /= probs.sum()
        keep = len(probs)
        if p.top_p < 1.0:
            # smallest prefix whose mass reaches top_p (always at least one token)
            keep = min(keep, int(np.searchsorted(np.cumsum(probs), p.top_p) + 1))
        if p.min_p > 0.0:
            keep = min(keep, max(1, int(np.count_nonzero(probs >= p.min_p * probs[0]))))
        probs = probs[:keep] / probs[:keep].sum()
        return int(idx[int(self.rng.choice(keep, p=probs))])


def _top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values (any order). A full argpartition of a 128k vocabulary costs
    ~1.3 ms, over 2% of a token; so first the k-th largest value of every 16th logit gives a
    threshold t (at least k logits are >= t, hence all of the top k are), and only the few logits
    >= t are partitioned."""
    n = x.shape[0]
    if k >= n:
        return np.arange(n)
    if n > 4096 and k < n // 64:
        sub = x[::16]
        t = np.partition(sub, len(sub) - k)[len(sub) - k]
        cand = np.flatnonzero(x >= t)
        return cand[np.argpartition(-x[cand], k - 1)[:k]]
    return np.argpartition(-x, k - 1)[:k]
