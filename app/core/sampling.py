"""Sampling settings a conversation (or a model family's default) carries.

Kept apart from the engine's SamplingParams: this is what the user edits and what the store and
the settings file persist, so it validates loudly and round-trips through plain JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from trit.text import short_repr

MAX_TOKENS_LIMIT = 32768
MAX_TOP_K = 1000
MIN_REPEAT_PENALTY = 0.5
MAX_REPEAT_PENALTY = 2.0
MAX_SEED = 2**31 - 1  # what a spin box holds


def is_finite_number(v: Any) -> bool:
    """A JSON number that is finite as a float: an int beyond float's range (JSON allows 400 digits)
    would overflow in math.isfinite and in float()."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.95  # nucleus mass, (0, 1]
    max_tokens: int = 512  # reply length cap
    # the engine's defaults (SamplingParams), so records without them behave as before
    top_k: int = 40  # 0 = off
    min_p: float = 0.05  # 0 = off
    repeat_penalty: float = 1.1  # 1 = off
    seed: int | None = None  # None: a new random seed per reply; a number repeats the reply

    def validated(self) -> Sampling:
        """Self if every value is in range; raises ValueError naming the bad field otherwise."""
        t, p, n = self.temperature, self.top_p, self.max_tokens
        if not is_finite_number(t) or not 0 <= t <= 5:
            raise ValueError(f"temperature must be a number from 0 to 5, not {short_repr(t)}")
        if not is_finite_number(p) or not 0 < p <= 1:
            raise ValueError(f"top_p must be a number above 0 and at most 1, not {short_repr(p)}")
        if not _whole(n, 1, MAX_TOKENS_LIMIT):
            raise ValueError(
                f"max_tokens must be a whole number from 1 to {MAX_TOKENS_LIMIT}, not {short_repr(n)}"
            )
        if not _whole(self.top_k, 0, MAX_TOP_K):
            raise ValueError(
                f"top_k must be a whole number from 0 (off) to {MAX_TOP_K}, not {short_repr(self.top_k)}"
            )
        if not is_finite_number(self.min_p) or not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must be a number from 0 (off) to below 1, not {short_repr(self.min_p)}")
        r = self.repeat_penalty
        if not is_finite_number(r) or not MIN_REPEAT_PENALTY <= r <= MAX_REPEAT_PENALTY:
            raise ValueError(
                f"repeat_penalty must be a number from {MIN_REPEAT_PENALTY} to {MAX_REPEAT_PENALTY} "
                f"(1 = off), not {short_repr(r)}"
            )
        if self.seed is not None and not _whole(self.seed, 0, MAX_SEED):
            raise ValueError(
                f"seed must be empty (random) or a whole number from 0 to {MAX_SEED}, not {short_repr(self.seed)}"
            )
        return replace(
            self, temperature=float(t), top_p=float(p), min_p=float(self.min_p), repeat_penalty=float(r)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, fallback: Sampling | None = None) -> Sampling:
        """Reads the known keys of d (unknown keys are ignored, missing ones come from fallback
        or the class defaults) and validates the result."""
        base = fallback or cls()
        if not isinstance(d, dict):
            raise ValueError(f"sampling settings must be a JSON object, not {type(d).__name__}")  # noqa: TRY004
        return cls(
            **{name: d.get(name, getattr(base, name)) for name in cls.__dataclass_fields__}
        ).validated()

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for Model.chat / Session.chat."""
        return asdict(self)


def _whole(v: Any, lo: int, hi: int) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and lo <= v <= hi


__all__ = ["MAX_TOKENS_LIMIT", "Sampling", "is_finite_number"]
