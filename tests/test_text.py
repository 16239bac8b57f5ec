"""trit.text: values from damaged or hostile files, quoted in messages at a bounded length."""

from __future__ import annotations

import numpy as np

from trit.text import short_repr, short_text


def test_short_repr_bounds_what_a_message_quotes() -> None:
    assert short_repr("abc") == "'abc'" and short_repr(1.5) == "1.5" and short_repr(True) == "True"
    assert short_repr(10**400) == "a number of about 400 digits"  # repr() refuses past 4300 digits
    s = short_repr("\x01" * 1000)
    assert len(s) <= 80 and s.endswith("'…") and s.count("\\x01") == (len(s) - 3) // 4  # no split escape
    assert len(short_repr(list(range(10**6)))) <= 80  # not a megabyte built, then cut
    assert short_repr(np.arange(10**7)).startswith("array([") and len(short_repr(np.arange(10**7))) <= 80
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert short_repr(deep) == "a list"  # repr() raised RecursionError
    assert short_text("x" * 100) == "x" * 79 + "…" and short_text("name") == "name"
