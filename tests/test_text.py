"""trit.text: values from damaged or hostile files, quoted in messages at a bounded length."""

from __future__ import annotations

import numpy as np
import pytest

from trit.text import cut_text, grapheme_ceil, grapheme_floor, short_repr, short_text


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


GRAPHEMES = {  # text as the user-perceived characters a cut must keep whole
    "family": ["a", "👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧\u200d👦", "b"],
    "flags": ["x", "🇮🇳", "🇺🇸", "🇮🇱", "🇸🇦", "y"],
    "skin tone": ["👍🏿", " ", "👋🏽", "!"],
    "keycap and tag flag": [
        "1\ufe0f\u20e3",
        "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
        ".",
    ],
    "hindi conjuncts": ["औ", "र", "क्षा", " ", "न", "म", "स्ते", " ", "क्ष", "त्रि", "य"],
    "thai": ["ส", "วั", "ส", "ดี", " ", "น้ำ", "ที่"],
    "combining accents": ["\u0301", "e\u0301", "a\u0308\u0323", "o\u0301\u0301", "z"],  # a lone mark first
    "arabic harakat": ["مَ", "رْ", "حَ", "بً", "ا"],
    "hangul jamo and crlf": ["\u1100\u1161\u11a8", "\u1100\u1161", "\r\n", "가", "\uac01"],
    "zwj sequence": ["🏳\ufe0f\u200d🌈", "🧑\u200d💻"],
}


@pytest.mark.parametrize("name", GRAPHEMES)
def test_cut_text_never_splits_a_user_perceived_character(name: str) -> None:
    parts = GRAPHEMES[name]
    s = "".join(parts)
    bounds = [0]
    for g in parts:
        bounds.append(bounds[-1] + len(g))
    for i in range(len(s) + 1):
        assert grapheme_floor(s, i) == max(b for b in bounds if b <= i), (name, i)
        assert grapheme_ceil(s, i) == min(b for b in bounds if b >= i), (name, i)
    for limit in range(1, len(s) + 2):
        cut = cut_text(s, limit)
        if limit >= len(s):
            assert cut == s
            continue
        assert cut.endswith("…") and len(cut) <= limit, (name, limit, cut)
        assert len(cut) - 1 == max(b for b in bounds if b <= limit - 1), (name, limit, cut)
        assert s.startswith(cut[:-1])
        assert cut_text(s, limit, ellipsis="") == s[: max(b for b in bounds if b <= limit)]


def test_short_text_cuts_between_user_perceived_characters() -> None:
    assert short_text("ab👍🏿c", 4) == "ab…"  # not "ab👍…" (the skin tone cut off)
    assert short_text("Compare 🇮🇳🇺🇸!", 12) == "Compare 🇮🇳…"  # not half of 🇺🇸
    assert short_text("नमस्ते", 5) == "नम…"
