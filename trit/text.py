"""Text for messages, shared by the engine and the app (no heavy imports: the app's core reads its
files without loading the engine)."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

SHORT_REPR_CHARS = 80
SURROGATES = re.compile("[\ud800-\udfff]")


# (the docstring spells its example's escape: Python 3.13 cannot compile a docstring that holds a
# lone surrogate, and every module importing this one failed to load there)
def replace_surrogates(text: str) -> str:
    """`text` with every surrogate code point replaced by U+FFFD, one for one (so character offsets
    into it stay valid). No UTF-8 text holds surrogates, but a Python str can: undecodable bytes in
    argv, a file name or a file read with errors="surrogateescape" become U+DC80..U+DCFF, and JSON
    may spell a lone one as an escape. `tokenizers` refuses such a str outright, SQLite cannot store
    it, and Qt's strings drop it ("mod\\udce8le" read "modle")."""
    if SURROGATES.search(text) is None:  # the common case: no copy
        return text
    return SURROGATES.sub("\ufffd", text)


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
    """s cut to at most limit characters with an ellipsis (a name shown as it is, without
    quotes), never inside a user-perceived character (cut_text)."""
    return cut_text(s, limit)


# -- user-perceived characters ---------------------------------------------------------------------
# A simplified UAX #29 (extended grapheme clusters, with 15.1's Indic conjuncts): enough never to
# split what a reader sees as one character (an emoji family, a flag, an accented letter, a
# Devanagari conjunct), without the full property tables the `regex` package would bring.
_ZWJ = "\u200d"
_SPACING_VOWELS = "\u0e33\u0eb3"  # Thai and Lao SARA AM: Lo, but UAX #29 SpacingMarks


def _extends(c: str) -> bool:
    """Never cut before c: a mark, ZWJ, a variation selector, a skin tone, a tag character."""
    cp = ord(c)
    return (
        unicodedata.category(c)[0] == "M"
        or c == _ZWJ
        or 0xFE00 <= cp <= 0xFE0F
        or 0xE0100 <= cp <= 0xE01EF
        or 0x1F3FB <= cp <= 0x1F3FF
        or 0xE0020 <= cp <= 0xE007F
        or c in _SPACING_VOWELS
    )


def _regional(c: str) -> bool:
    return "\U0001f1e6" <= c <= "\U0001f1ff"


def _script(c: str) -> str:
    return unicodedata.name(c, "").partition(" ")[0]  # "DEVANAGARI" of "DEVANAGARI LETTER SSA"


def _hangul(c: str) -> str:
    """The Hangul syllable type of c (L, V, T, LV, LVT) or ""."""
    cp = ord(c)
    if 0x1100 <= cp <= 0x115F or 0xA960 <= cp <= 0xA97C:
        return "L"
    if 0x1160 <= cp <= 0x11A7 or 0xD7B0 <= cp <= 0xD7C6:
        return "V"
    if 0x11A8 <= cp <= 0x11FF or 0xD7CB <= cp <= 0xD7FB:
        return "T"
    if 0xAC00 <= cp <= 0xD7A3:
        return "LV" if (cp - 0xAC00) % 28 == 0 else "LVT"
    return ""


_HANGUL_JOINS = {"L": ("L", "V", "LV", "LVT"), "V": ("V", "T"), "LV": ("V", "T"), "T": ("T",), "LVT": ("T",)}


def is_grapheme_boundary(s: str, i: int) -> bool:
    """Whether s may be cut before s[i] without splitting a user-perceived character."""
    if i <= 0 or i >= len(s):
        return True
    a, b = s[i - 1], s[i]
    if a == "\r" and b == "\n":
        return False
    if _extends(b) or a == _ZWJ:
        return False
    if unicodedata.combining(a) == 9 and unicodedata.category(b) == "Lo" and _script(a) == _script(b):
        return False  # a virama joins the next consonant of its script: क + ् + ष is one (क्ष)
    if _regional(a) and _regional(b):
        n = 0  # regional indicators pair up from the start of their run: 🇮🇳🇺🇸 is two flags
        while i - 1 - n >= 0 and _regional(s[i - 1 - n]):
            n += 1
        return n % 2 == 0
    ha = _hangul(a)
    return not (ha and _hangul(b) in _HANGUL_JOINS[ha])


def grapheme_floor(s: str, i: int) -> int:
    """The last place at or before i where s may be cut (0 <= result <= i)."""
    i = max(0, min(i, len(s)))
    while not is_grapheme_boundary(s, i):
        i -= 1
    return i


def grapheme_ceil(s: str, i: int) -> int:
    """The first place at or after i where s may be cut (i <= result <= len(s))."""
    i = max(0, min(i, len(s)))
    while not is_grapheme_boundary(s, i):
        i += 1
    return i


def cut_text(s: str, limit: int, ellipsis: str = "…") -> str:
    """s when it has at most limit characters (code points), else its longest start that ends
    between user-perceived characters and leaves room for the ellipsis, then the ellipsis. A
    first character longer than that (an emoji family in limit 3) leaves the ellipsis alone."""
    if len(s) <= limit:
        return s
    return s[: grapheme_floor(s, limit - len(ellipsis))] + ellipsis


# -- file names ------------------------------------------------------------------------------------
_NOT_IN_NAMES = set('<>:"/\\|?*')  # Windows refuses these; / and \ separate folders
# Unicode's bidi controls. The embeddings, overrides and isolates reorder the text after them up
# to the end of the paragraph: a reply's "\u202e" can make a command read as another one (Trojan
# Source), a file name "\u202egpj.exe" read as "exe.jpg". The marks (ALM, LRM, RLM) move nothing but
# neutral characters, and belong in right-to-left text.
BIDI_REORDERING = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
BIDI_MARKS = "\u061c\u200e\u200f"
_BIDI_CONTROLS = set(BIDI_REORDERING + BIDI_MARKS)  # none of them in a file name
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{d}" for p in ("COM", "LPT") for d in "123456789¹²³"}
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")  # Windows drops trailing dots and spaces; a leading dot hides


def file_name(title: str, max_bytes: int = 200, fallback: str = "conversation") -> str:
    """A file name (without extension) made from a conversation title, legal on Windows, macOS
    and Linux: title in NFC with its letters, marks, digits, emoji, spaces and punctuation kept;
    path separators, the characters Windows refuses (<>:"/\\|?*), control characters, lone
    surrogates and bidi controls become "_" (line breaks and tabs a space); no leading or trailing
    dots and spaces; "_" after a name Windows reserves (CON, PRN, AUX, NUL, COM1-9, LPT1-9). At
    most max_bytes of UTF-8, cut between user-perceived characters (200 leaves room for an
    extension within the 255 bytes Linux and macOS allow). fallback when nothing is left."""
    chars = []
    for c in unicodedata.normalize("NFC", title):
        cat = unicodedata.category(c)
        if c in "\t\n\r\v\f\x85" or cat in ("Zl", "Zp"):
            chars.append(" ")
        elif c in _NOT_IN_NAMES or c in _BIDI_CONTROLS or cat in ("Cc", "Cs"):
            chars.append("_")
        else:
            chars.append(c)
    name = _EDGES.sub("", "".join(chars))
    size, n = 0, 0
    for c in name:
        size += len(c.encode("utf-8"))
        if size > max_bytes:
            break
        n += 1
    name = _EDGES.sub("", name[: grapheme_floor(name, n)])
    if not name.strip("_ "):
        return fallback  # nothing but what was replaced
    stem, dot, rest = name.partition(".")
    if stem.rstrip(" ").upper() in _RESERVED:  # "con.txt" and "CON " are reserved too
        name = cut_text(stem + "_" + dot + rest, max_bytes, ellipsis="")  # ASCII stem: bytes = chars
    return name


# What a terminal takes for a command rather than text: C0 controls but line feed and tab (ESC
# starts the sequences that set the title, clear the screen, colour text or, with OSC 52, write
# the clipboard; a carriage return overwrites what a line said), DEL, and C1 controls (CSI, OSC
# as single characters).
_TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """text with what a terminal would act on shown as escapes (\\x1b), for text from a model or
    a model file printed to a terminal: a reply or a chat template's message could retitle the
    window, clear the screen or fake a notice. Bidi controls that reorder text show as \\u202e
    (show_bidi_controls)."""
    text = _TERMINAL_CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text.replace("\r\n", "\n"))
    return show_bidi_controls(text, "\\u{:04x}")


_BIDI_REORDERING = re.compile(f"[{BIDI_REORDERING}]")


def show_bidi_controls(text: str, form: str = "<U+{:04X}>") -> str:
    """text with every bidi embedding, override and isolate control shown as form (filled with
    its code point) instead of acting, for a model's text on screen; the stored and copied text
    keeps them."""
    return _BIDI_REORDERING.sub(lambda m: form.format(ord(m.group())), text)


__all__ = [
    "BIDI_MARKS",
    "BIDI_REORDERING",
    "SHORT_REPR_CHARS",
    "SURROGATES",
    "cut_text",
    "file_name",
    "grapheme_ceil",
    "grapheme_floor",
    "is_grapheme_boundary",
    "replace_surrogates",
    "short_repr",
    "short_text",
    "show_bidi_controls",
    "terminal_safe",
]
