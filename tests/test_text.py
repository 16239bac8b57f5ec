"""trit.text: values from damaged or hostile files, quoted in messages at a bounded length."""

from __future__ import annotations

import numpy as np
import pytest

from trit.text import cut_text, file_name, grapheme_ceil, grapheme_floor, short_repr, short_text


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


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("नमस्ते दुनिया", "नमस्ते दुनिया"),  # the marks (matras, virama) are letters' parts, kept
        ("தமிழ் உரையாடல்", "தமிழ் உரையாடல்"),
        ("ภาษาไทย สวัสดี", "ภาษาไทย สวัสดี"),
        ("مُحَادَثَة عربية", "مُحَادَثَة عربية"),  # harakat kept
        ("Re\u0301sume\u0301 (macOS NFD)", "Résumé (macOS NFD)"),  # NFC
        ("🎉 Party plan 🎂", "🎉 Party plan 🎂"),
        ("👨\u200d👩\u200d👧 & 🇮🇳", "👨\u200d👩\u200d👧 & 🇮🇳"),
        ("a/b\\c:d", "a_b_c_d"),
        ('what? <x> "y" | *z*', "what_ _x_ _y_ _ _z_"),
        ("line one\nline\ttwo\x00end", "line one line two_end"),
        ("  Notes...  ", "Notes"),
        (".bashrc", "bashrc"),  # not a hidden file
        ("\u202egpj.exe", "_gpj.exe"),  # a bidi override would show it as "exe.jpg"
        ("CON", "CON_"),
        ("con.txt", "con_.txt"),
        ("Lpt1", "Lpt1_"),
        ("COM10", "COM10"),
        ("mod\udce8le", "mod_le"),  # a lone surrogate (an undecodable file name) cannot be encoded
        ('<>:"/\\|?*', "conversation"),
        ("", "conversation"),
        (" . . ", "conversation"),
    ],
)
def test_file_name_keeps_every_script_and_replaces_only_what_a_file_system_refuses(
    title: str, name: str
) -> None:
    assert file_name(title) == name


def test_file_name_fits_max_bytes_between_user_perceived_characters() -> None:
    name = file_name("会议记录" * 22)  # 88 characters, 264 bytes
    assert name == ("会议记录" * 22)[:66] and len(name.encode()) == 198
    family = "👨\u200d👩\u200d👧"  # 18 bytes
    assert file_name("x" * 190 + family) == "x" * 190  # not half of the family
    assert file_name("x" * 180 + family) == "x" * 180 + family
    assert file_name("ab. " * 60, max_bytes=10) == "ab. ab. ab"  # no trailing dot or space after the cut
    assert file_name("CON.x" + "y" * 300, max_bytes=20) == "CON_.x" + "y" * 14
    for n in range(1, 60):
        assert len(file_name("नमस्ते दुनिया 🇮🇳" * 4, max_bytes=n).encode()) <= max(n, len("conversation"))


def test_terminal_safe_shows_what_a_terminal_would_act_on() -> None:
    """A model's reply or a chat template's message printed by trit run/chat could retitle the
    terminal, clear it and print a fake notice (ESC and OSC sequences went out raw)."""
    from trit.text import terminal_safe

    assert (
        terminal_safe("\x1b]0;pwned\x07\x1b[2J\x1b[31mSYSTEM") == "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mSYSTEM"
    )
    assert terminal_safe("\x9b2J \x7f \x00") == "\\x9b2J \\x7f \\x00"  # C1 CSI, DEL, NUL
    assert terminal_safe("line\r\nnext\tcol\rover") == "line\nnext\tcol\\x0dover"  # a lone CR overwrote
    text = "plain: héllo, 日本語, emoji 👍, RTL שלום, ZWJ 👩\u200d💻"
    assert terminal_safe(text) == text
    # an override or isolate reorders the rest of the line where the terminal does bidi (VTE,
    # Konsole): shown as its escape. The marks stay (they belong in right-to-left text)
    assert (
        terminal_safe("cat \u202etxt.hs\u202c; \u2067x\u2069") == "cat \\u202etxt.hs\\u202c; \\u2067x\\u2069"
    )
    assert terminal_safe("שלום\u200f, \u200eA") == "שלום\u200f, \u200eA"


def test_show_bidi_controls_makes_every_reordering_control_visible() -> None:
    from trit.text import show_bidi_controls

    reordering = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]
    assert show_bidi_controls("".join(reordering)) == "".join(f"<U+{ord(c):04X}>" for c in reordering)
    assert show_bidi_controls("a\u200e\u200f\u061cb") == "a\u200e\u200f\u061cb"
