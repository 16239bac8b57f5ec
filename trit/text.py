"""Text for messages, shared by the engine and the app (no heavy imports: the app's core reads its
files without loading the engine)."""

from __future__ import annotations

import math
from typing import Any

SHORT_REPR_CHARS = 80


def short_repr(v: Any, limit: int = SHORT_REPR_CHARS) -> str:
    """repr(v) cut to about limit characters with an ellipsis: a key, name or value echoed in a
    message may be a 400-digit number or megabytes of text in a damaged or hostile file, and a
    dialog would try to show it all."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 3 * limit:
        # repr() of a huge int is slow, and refused past 4300 digits
        return f"a number of about {round(v.bit_length() * math.log10(2))} digits"
    if isinstance(v, (str, bytes)):
        # cut the text, not its repr, so that no escape sequence (\x01) is split: 'abc'…
        n = min(len(v), limit)
        while n and len(repr(v[:n])) + (n < len(v)) > limit:
            n -= 1
        return repr(v[:n]) + ("…" if n < len(v) else "")
    if hasattr(v, "__getitem__") and hasattr(v, "__len__") and not isinstance(v, dict):
        try:
            if len(v) > limit:
                v = v[:limit]  # a list or array: its whole repr would be built only to be cut
        except (TypeError, ValueError):
            pass
    try:
        r = repr(v)
    except (RecursionError, ValueError):
        return f"a {type(v).__name__}"
    return r if len(r) <= limit else r[: limit - 1] + "…"


def short_text(s: str, limit: int = SHORT_REPR_CHARS) -> str:
    """s cut to limit characters with an ellipsis (a name shown as it is, without quotes)."""
    return s if len(s) <= limit else s[: limit - 1] + "…"


__all__ = ["SHORT_REPR_CHARS", "short_repr", "short_text"]
