"""Perplexity of a text under a model: exp(mean negative log-likelihood of each token given the
ones before it), over consecutive windows of `context` tokens (each window starts fresh; its first
token is not scored)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import NonFiniteLogitsError
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
        bad = ~np.isfinite(logits[:-1])
        if bad.any():  # a damaged model: say so rather than print "perplexity nan"
            row = int(np.argmax(bad.any(axis=-1)))
            raise NonFiniteLogitsError(
                f"{model.info.path}: the model produced NaN or infinite logits (at token {start + row} of the text)"
            )
        nll += float(token_nll(logits[:-1], chunk[1:]).sum())
        count += len(chunk) - 1
        windows += 1
        if on_progress is not None:
            on_progress(min(start + context, len(arr)), len(arr))
    return PerplexityResult(float(np.exp(nll / count)), nll, count, windows)


@dataclass(frozen=True)
class Agreement:
    """How far a model's next-token predictions are from a reference model's on the same text."""

    kl: float  # mean KL(reference || model) per scored token, nats
    top1: float  # fraction of scored tokens where both models' most likely next token is the same
    perplexity: float  # the model's perplexity
    reference_perplexity: float
    tokens_scored: int


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def agreement(reference: Model, model: Model, ids: Sequence[int], *, context: int = 512) -> Agreement:
    """Compares model with reference (e.g. an approximate mode with the exact one) over the same
    windows as perplexity(): every window runs in a fresh context in both."""
    if len(ids) < 2:
        raise ValueError("agreement needs at least two tokens")
    arr = np.asarray(ids, dtype=np.int64)
    kl = nll = ref_nll = 0.0
    same = count = 0
    for start in range(0, len(arr) - 1, context):
        chunk = arr[start : start + context]
        if len(chunk) < 2:
            break
        lp_ref = _log_softmax(reference.logits(chunk.tolist())[:-1])
        lp = _log_softmax(model.logits(chunk.tolist())[:-1])
        kl += float((np.exp(lp_ref) * (lp_ref - lp)).sum())
        tgt = chunk[1:]
        rows = np.arange(len(tgt))
        nll -= float(lp[rows, tgt].sum())
        ref_nll -= float(lp_ref[rows, tgt].sum())
        same += int((lp.argmax(-1) == lp_ref.argmax(-1)).sum())
        count += len(tgt)
    return Agreement(kl / count, same / count, float(np.exp(nll / count)), float(np.exp(ref_nll / count)), count)
