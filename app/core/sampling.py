"""Sampling settings a conversation (or a model family's default) carries.

Kept apart from the engine's SamplingParams: this is what the user edits and what the store and
the settings file persist, so it validates loudly and round-trips through plain JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from trit.text import short_repr

MAX_TOKENS_LIMIT = 32768


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

    def validated(self) -> Sampling:
        """Self if every value is in range; raises ValueError naming the bad field otherwise."""
        t, p, n = self.temperature, self.top_p, self.max_tokens
        if not is_finite_number(t) or not 0 <= t <= 5:
            raise ValueError(f"temperature must be a number from 0 to 5, not {short_repr(t)}")
        if not is_finite_number(p) or not 0 < p <= 1:
            raise ValueError(f"top_p must be a number above 0 and at most 1, not {short_repr(p)}")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TOKENS_LIMIT:
            raise ValueError(
                f"max_tokens must be a whole number from 1 to {MAX_TOKENS_LIMIT}, not {short_repr(n)}"
            )
        return replace(self, temperature=float(t), top_p=float(p))

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
            temperature=d.get("temperature", base.temperature),
            top_p=d.get("top_p", base.top_p),
            max_tokens=d.get("max_tokens", base.max_tokens),
        ).validated()

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for Model.chat / Session.chat."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


__all__ = ["MAX_TOKENS_LIMIT", "Sampling", "is_finite_number"]
