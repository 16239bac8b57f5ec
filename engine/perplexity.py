"""Perplexity of a text under a model: exp(mean negative log-likelihood of each token given the
ones before it), over consecutive windows of `context` tokens (each window starts fresh; its first
token is not scored)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .model import Model


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    nll: float  # sum of negative log-likelihoods (nats)
    tokens_scored: int
    windows: int


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] per row, in float64 (log-sum-exp with the max taken out)."""
    x = logits.astype(np.float64)
    mx = x.max(axis=-1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(x - mx).sum(axis=-1))
    return lse - x[np.arange(len(targets)), targets]


def perplexity(
    model: Model,
    ids: Sequence[int],
    *,
    context: int = 512,
    on_progress: Callable[[int, int], object] | None = None,
) -> PerplexityResult:
    if len(ids) < 2:
        raise ValueError("perplexity needs at least two tokens")
    if context < 2:
        raise ValueError("context must be >= 2")
    arr = np.asarray(ids, dtype=np.int64)
    nll, count, windows = 0.0, 0, 0
    for start in range(0, len(arr) - 1, context):
        chunk = arr[start : start + context]
        if len(chunk) < 2:
            break
        logits = model.logits(chunk.tolist())  # [n, vocab], fresh context
        nll += float(token_nll(logits[:-1], chunk[1:]).sum())
        count += len(chunk) - 1
        windows += 1
        if on_progress is not None:
            on_progress(min(start + context, len(arr)), len(arr))
    return PerplexityResult(float(np.exp(nll / count)), nll, count, windows)
