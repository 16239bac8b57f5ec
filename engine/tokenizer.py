"""Text <-> token ids, built on Hugging Face `tokenizers` from a GGUF file's `tokenizer.ggml.*`
metadata or from a Hugging Face model directory (tokenizer.json).

Two GGUF vocabulary kinds (`tokenizer.ggml.model`):

gpt2  byte-level BPE. Every byte is spelled as one printable character (GPT-2's bytes_to_unicode:
      "Ġ" is the space); tokens and merges are stored in that spelling. Text is first cut by the
      pre-tokenizer named in `tokenizer.ggml.pre` (table _BPE_PRE below, from llama.cpp's
      llama-vocab.cpp and transformers' integrations/gguf/gguf_tokenizer_mapping.py), then each piece
      is merged by rank.
llama SentencePiece-style BPE: spaces become "▁", a "▁" is put before the text when
      `tokenizer.ggml.add_space_prefix` (default true), pieces merge by score (best first), and a
      character with no token falls back to its UTF-8 bytes as <0xXX> tokens.

Special tokens come from `tokenizer.ggml.token_type` (llama.cpp's llama_token_type):
1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. Control tokens (<|im_end|>,
<|eot_id|> ...) are recognised in text only when encode(..., special=True), which is what a rendered
chat template needs; with special=False (user content) "<|im_end|>" is tokenized as plain text, so a
user cannot inject a turn end. User-defined tokens are always matched whole, as in llama.cpp.

Deliberate differences from transformers' GGUF conversion (which the tests otherwise match id for id):
- llama-bpe (Llama-3, BitNet): the BPE model ignores merges for a piece that is itself a token
  (`ignore_merges`), as llama.cpp does for this pre-tokenizer and as Llama-3's own tokenizer.json
  says; transformers' conversion does not set it. It matters only for a vocabulary whose merges
  cannot rebuild some token, which a synthetic test vocabulary shows.
- smollm: digits are split one by one before the GPT-2 regex, as llama.cpp and SmolLM's
  tokenizer.json do; transformers' conversion has no entry for "smollm". SmolLM2's vocabulary has no
  token with more than one digit, so the ids are the same.
- llama (SentencePiece): a "▁" is prepended to the text even when it starts with a space, and again
  after each control token, as sentencepiece and llama.cpp do; transformers' Metaspace does neither.
"""

from __future__ import annotations

import bisect
import codecs
import functools
import json
import logging
import mmap
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from trit.text import replace_surrogates  # re-exported: the engine's callers use it from here

from .errors import ModelFormatError

log = logging.getLogger(__name__)

# llama_token_type values in tokenizer.ggml.token_type
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# Tokens that end a turn or the text (llama.cpp's end-of-generation list): generation stops on any
# of them that the vocabulary has, in addition to the file's eos/eot/eom ids.
EOG_TOKEN_TEXTS = (
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
)

# Pre-tokenizer regexes. Llama-3's is tiktoken's cl100k pattern (Llama-3 tokenizer.json; llama.cpp
# LLAMA_VOCAB_PRE_TYPE_LLAMA3). GPT-2's is the ByteLevel pre-tokenizer's built-in one.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# tokenizer.ggml.pre -> how text is cut before BPE.
#   ("regex", pattern, ignore_merges): Split(pattern) then ByteLevel without its own regex
#   ("gpt2", individual_digits): ByteLevel with GPT-2's regex, optionally after splitting digits
_LLAMA3_NAMES = ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral")
_BPE_PRE: dict[str, tuple[Any, ...]] = {
    **{name: ("regex", LLAMA3_SPLIT, True) for name in _LLAMA3_NAMES},
    **{name: ("regex", LLAMA3_SPLIT, False) for name in ("dbrx", "smaug-bpe")},
    **{name: ("regex", QWEN2_SPLIT, False) for name in ("qwen2", "deepseek-r1-qwen", "megrez")},
    # llama.cpp: "\p{N}" then the GPT-2 regex; SmolLM's tokenizer.json: Digits(individual) + ByteLevel.
    **{
        name: ("gpt2", True)
        for name in ("smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva-7b")
    },
    "gpt2": ("gpt2", False),
    "default": ("gpt2", False),
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (openai/gpt-2 encoder.py)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _number_array(v: Any, kind: type[np.generic]) -> np.ndarray | None:
    """v as a 1-D array of `kind` (np.integer, np.number), or None when it is anything else: a GGUF
    numeric array, or a list of Python numbers from a caller that builds metadata by hand."""
    if isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        v = np.asarray(v)
    if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype == np.bool_:
        return None
    return v if np.issubdtype(v.dtype, kind) else None


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) spans sorted, with overlapping or touching ones joined into one."""
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def _per_token(
    md: Mapping[str, Any], key: str, kind: type[np.generic], what: str, n: int, fail: Any
) -> np.ndarray | None:
    """The per-token array md[key] (one `kind` value per token), None when the key is absent;
    anything else raises fail(problem)."""
    raw = md.get(key)
    if raw is None:
        return None
    arr = _number_array(raw, kind)
    if arr is None:
        raise fail(f"{key} is {_describe(raw)}, expected an array of {what}")
    if len(arr) != n:
        raise fail(f"{key} has {len(arr)} entries for {n} tokens")
    return arr


def _describe(v: Any) -> str:
    """A metadata value for an error message, short even when it is a 100k-entry array."""
    if isinstance(v, np.ndarray):
        return f"an array of {v.size} {v.dtype.name}"
    if isinstance(v, list):
        return f"a list of {len(v)} items"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


MAX_MERGE_CHARS = 64 << 20


def spm_merges(
    tokens: Sequence[str], scores: Sequence[float], skip: Iterable[int] = ()
) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-driven merging.

    Every way to cut a token into two tokens is a merge; merges are ranked by the merged token's
    score, best first. The order (including ties) is that of transformers' generate_merges, so the
    result is the same as its GGUF conversion.

    Only cuts into lengths that tokens have are tried (a single token of 300k characters cost
    minutes when every cut was), and a vocabulary whose merges would hold more than
    MAX_MERGE_CHARS characters (tokens that nest: "b", "bb", "bbb" ...) is refused with ValueError
    instead of filling memory in the tokenizer library.
    """
    skip_ids = set(skip)
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab[t] = i  # a duplicated token text keeps its last id, like a dict built from the list
    skip_texts = {tokens[i] for i in skip_ids}
    lengths = sorted({len(t) for t in vocab})
    have = set(lengths)
    merges: list[tuple[str, str, float]] = []
    chars = 0
    for piece, idx in vocab.items():
        if piece in skip_texts:
            continue
        score = float(scores[idx])
        local = []
        n = len(piece)
        for k in lengths:
            if k >= n:
                break
            if n - k not in have:
                continue
            left, right = piece[:k], piece[k:]
            if left in skip_texts or right in skip_texts:
                continue
            if left in vocab and right in vocab:
                local.append((left, right, score))
                chars += n
        if chars > MAX_MERGE_CHARS:
            raise ValueError(
                f"tokenizer.ggml.tokens: the SentencePiece vocabulary's merges would hold more than "
                f"{MAX_MERGE_CHARS} characters (its tokens nest too deeply to be a real vocabulary)"
            )
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


class Tokenizer:
    """Encode text to ids and decode ids to text for one model.

    kind: "bpe" (byte-level BPE) or "spm" (SentencePiece-style).
    bos_id / eos_id: from the model files (None when absent); add_bos: prepend BOS by default.
    eos_ids: every id that ends generation (eos, eot, eom and the end-of-turn tokens the vocab has).
    special_ids: control tokens (never part of decoded display text when skip_special=True).
    chat_template: the template the source embeds, if any.
    """

    def __init__(
        self,
        hf: HFTokenizer,
        *,
        kind: str,
        pieces: list[bytes],
        tokens: list[str],
        special_ids: Iterable[int],
        bos_id: int | None,
        eos_id: int | None,
        extra_eos_ids: Iterable[int] = (),
        add_bos: bool = False,
        add_space_prefix: bool = False,
        chat_template: str | None = None,
        pre: str = "",
        source: str = "",
    ) -> None:
        self._hf = hf
        self._lock = threading.Lock()  # encode_special_tokens is tokenizer state; guard the toggle
        self.kind = kind
        self._pieces = pieces  # [vocab] bytes each token decodes to
        self._tokens = tokens  # [vocab] token text as stored
        self.special_ids = frozenset(special_ids)
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.add_bos = add_bos
        self.add_space_prefix = add_space_prefix
        self.chat_template = chat_template
        self.pre = pre
        self.source = source
        eog = {i for i in (eos_id, *extra_eos_ids) if i is not None and 0 <= i < len(tokens)}
        index = {t: i for i, t in enumerate(tokens)}
        eog.update(index[t] for t in EOG_TOKEN_TEXTS if t in index)
        self.eos_ids: tuple[int, ...] = tuple(sorted(eog))
        self._token_index = index

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, gguf: Any) -> Tokenizer:
        """Build from a GGUFFile (engine.gguf) or anything with `.metadata` and `.path`."""
        md: dict[str, Any] = gguf.metadata
        path = getattr(gguf, "path", "<gguf>")

        def fail(problem: str) -> ModelFormatError:
            return ModelFormatError(path, problem)

        model = md.get("tokenizer.ggml.model")
        tokens = md.get("tokenizer.ggml.tokens")
        if model is None or tokens is None:
            raise fail(
                "the file has no tokenizer (tokenizer.ggml.model / .tokens are missing); "
                "pass token ids, or use a file converted with its tokenizer"
            )
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            raise fail("tokenizer.ggml.tokens is not a non-empty list of strings")
        n = len(tokens)
        types_arr = _per_token(md, "tokenizer.ggml.token_type", np.integer, "integers", n, fail)
        types = [TOKEN_NORMAL] * n if types_arr is None else types_arr.tolist()

        def token_id(key: str) -> int | None:
            v = md.get(f"tokenizer.ggml.{key}")
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise fail(f"tokenizer.ggml.{key} is {_describe(v)}, expected a token id (an integer)")
            v = int(v)
            if not 0 <= v < n:
                raise fail(f"tokenizer.ggml.{key} is {v}, outside the vocabulary of {n} tokens")
            return v

        def flag(key: str, default: bool) -> bool:
            v = md.get(f"tokenizer.ggml.{key}", default)
            if isinstance(v, (bool, np.bool_)):
                return bool(v)
            if isinstance(v, (int, np.integer)) and v in (0, 1):  # a converter that wrote a number
                return bool(v)
            raise fail(f"tokenizer.ggml.{key} is {_describe(v)}, expected true or false")

        bos, eos = token_id("bos_token_id"), token_id("eos_token_id")
        extra = [i for i in (token_id("eot_token_id"), token_id("eom_token_id")) if i is not None]
        template = md.get("tokenizer.chat_template")
        if template is not None and not isinstance(template, str):
            raise fail(
                f"tokenizer.chat_template is {_describe(template)}, expected the template text (a string)"
            )
        pre = md.get("tokenizer.ggml.pre", "default")
        if not isinstance(pre, str):
            raise fail(f"tokenizer.ggml.pre is {_describe(pre)}, expected a pre-tokenizer name (a string)")

        if model == "gpt2":
            merges_raw = md.get("tokenizer.ggml.merges")
            if merges_raw is None:
                raise fail("byte-level BPE vocabulary without tokenizer.ggml.merges")
            if isinstance(merges_raw, np.ndarray) and merges_raw.size == 0:
                merges_raw = []  # an empty array has some item type; writers pick a number type
            if not isinstance(merges_raw, list):
                raise fail(f"tokenizer.ggml.merges is {_describe(merges_raw)}, expected a list of strings")
            merges = []
            for j, m in enumerate(merges_raw):
                if not isinstance(m, str):
                    raise fail(f"tokenizer.ggml.merges: merge #{j} is {_describe(m)}, not a string")
                a, sep, b = m.partition(" ")
                if not sep:
                    raise fail(f"merge #{j} ({m!r}) is not two tokens separated by a space")
                merges.append((a, b))
            try:
                hf, pieces, special = _build_bpe(tokens, types, merges, pre)
            except ValueError as e:
                raise fail(str(e)) from None
            # llama.cpp adds BOS by default for the Llama-3 pre-tokenizers only.
            add_bos = flag("add_bos_token", pre in _LLAMA3_NAMES)
            return cls(
                hf,
                kind="bpe",
                pieces=pieces,
                tokens=list(tokens),
                special_ids=special,
                bos_id=bos,
                eos_id=eos,
                extra_eos_ids=extra,
                add_bos=add_bos,
                chat_template=template,
                pre=pre,
                source=str(path),
            )
        if model == "llama":
            scores_arr = _per_token(md, "tokenizer.ggml.scores", np.number, "numbers", n, fail)
            if scores_arr is None:
                scores = [0.0] * n
            else:
                nan = np.isnan(scores_arr.astype(np.float64))
                if nan.any():  # merges are ranked by score: NaN would make the order arbitrary
                    raise fail(f"tokenizer.ggml.scores holds NaN (the score of token #{int(np.argmax(nan))})")
                scores = scores_arr.astype(np.float64).tolist()
            space = flag("add_space_prefix", True)
            unk = token_id("unknown_token_id")
            try:
                hf, pieces, special = _build_spm(tokens, types, scores, space, unk)
            except ValueError as e:
                raise fail(str(e)) from None
            return cls(
                hf,
                kind="spm",
                pieces=pieces,
                tokens=list(tokens),
                special_ids=special,
                bos_id=bos,
                eos_id=eos,
                extra_eos_ids=extra,
                add_bos=flag("add_bos_token", True),
                add_space_prefix=space,
                chat_template=template,
                pre="llama",
                source=str(path),
            )
        raise fail(
            f"tokenizer model {model!r} is not supported (supported: gpt2 byte-level BPE, llama "
            "SentencePiece); update Trit or pick another file in Models"
        )

    @classmethod
    def from_hf_dir(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Build from a Hugging Face model directory: tokenizer.json, plus tokenizer_config.json
        (bos/eos, add_bos_token, chat_template), chat_template.jinja and generation_config.json
        (extra eos ids) when present."""
        d = Path(path)
        tj = d / "tokenizer.json"
        if not tj.is_file():
            raise ModelFormatError(
                d, "no tokenizer.json in the model directory; it is needed to tokenize text"
            )
        _check_room_for_tokenizers(tj.stat().st_size // 16)  # (~20 bytes of JSON per entry)
        try:
            spec = json.loads(tj.read_text(encoding="utf-8"))
            hf = HFTokenizer.from_str(json.dumps(spec))
        except Exception as e:  # tokenizers raises plain Exception subclasses for bad files
            raise ModelFormatError(tj, f"cannot read the tokenizer: {e}") from e
        cfg = _read_json(d / "tokenizer_config.json")
        gen = _read_json(d / "generation_config.json")

        n = hf.get_vocab_size(with_added_tokens=True)
        tokens = [hf.id_to_token(i) or "" for i in range(n)]
        added = {int(t["id"]): t for t in spec.get("added_tokens", [])}
        special = {i for i, t in added.items() if t.get("special")}
        dec = json.dumps(spec.get("decoder") or {})
        pre = json.dumps(spec.get("pre_tokenizer") or {})
        if "ByteLevel" in dec or "ByteLevel" in pre:
            kind = "bpe"
        elif "ByteFallback" in dec or "Metaspace" in dec or "\\u2581" in dec or "▁" in dec:
            kind = "spm"
        else:
            raise ModelFormatError(
                tj, "this tokenizer is neither byte-level BPE nor SentencePiece-style; Trit cannot decode it"
            )
        pieces = [
            t.encode("utf-8") if i in added else (_bpe_piece(t) if kind == "bpe" else _spm_piece(t))
            for i, t in enumerate(tokens)
        ]

        def tok_text(v: Any) -> str | None:
            if isinstance(v, dict):
                v = v.get("content")
            return v if isinstance(v, str) else None

        def tok_id(v: Any) -> int | None:
            t = tok_text(v)
            return hf.token_to_id(t) if t is not None else None

        bos = tok_id(cfg.get("bos_token"))
        eos = tok_id(cfg.get("eos_token"))
        v = gen.get("eos_token_id")
        extra = v if isinstance(v, list) else [] if v is None else [v]
        if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < n for x in extra):
            raise ModelFormatError(
                d / "generation_config.json",
                f"eos_token_id is {_describe(v)}, expected a token id or a list of token ids below {n}",
            )
        if "add_bos_token" in cfg:
            add_bos = bool(cfg["add_bos_token"])
        else:  # the post-processor (TemplateProcessing) says whether BOS goes first
            bos_text = tok_text(cfg.get("bos_token"))
            add_bos = bos_text is not None and bos_text in json.dumps(spec.get("post_processor") or {})
        template = cfg.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            named = {
                t.get("name"): t.get("template")
                for t in template
                if isinstance(t, dict) and isinstance(t.get("name"), (str, type(None)))
            }
            template = named.get("default") or next(iter(named.values()), None)
        jinja = d / "chat_template.jinja"
        if template is None and jinja.is_file():
            try:
                template = jinja.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise ModelFormatError(jinja, f"cannot read the chat template: {e}") from None
        space = kind == "spm" and (
            "Prepend" in json.dumps(spec.get("normalizer") or {})
            or '"prepend_scheme": "always"' in pre
            or '"prepend_scheme": "first"' in pre
        )
        return cls(
            hf,
            kind=kind,
            pieces=pieces,
            tokens=tokens,
            special_ids=special,
            bos_id=bos,
            eos_id=eos,
            extra_eos_ids=extra,
            add_bos=add_bos,
            add_space_prefix=space,
            chat_template=template if isinstance(template, str) else None,
            pre="hf",
            source=str(d),
        )

    # -- API -------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def token_text(self, token_id: int) -> str:
        """The token as the vocabulary spells it ("Ġhello", "▁the", "<|eot_id|>")."""
        return self._tokens[token_id]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes this token contributes to decoded text (may be part of a UTF-8 character)."""
        return self._pieces[token_id]

    @functools.cached_property
    def max_token_bytes(self) -> int:
        """The most UTF-8 bytes one token stands for (at least 4: an unknown character is one
        token): a text of more than n * this many bytes cannot be n tokens or fewer."""
        return max(4, max((len(p) for p in self._pieces), default=0))

    def token_id(self, text: str) -> int | None:
        """The id of the token spelled exactly `text`, if the vocabulary has one."""
        return self._token_index.get(text)

    def is_special(self, token_id: int) -> bool:
        return token_id in self.special_ids

    def encode(
        self,
        text: str,
        *,
        add_bos: bool | None = None,
        special: bool = False,
        plain_spans: Sequence[tuple[int, int]] = (),
    ) -> list[int]:
        """Token ids of `text`.

        add_bos: prepend BOS (None: the model's default). No second BOS is added when the text
            itself already starts with it (a chat template that writes <|begin_of_text|>).
        special: recognise control-token text ("<|im_end|>") as those tokens. Leave it False for
            anything a user typed; set it for rendered chat templates.
        plain_spans: with special=True, character spans (start, end) of `text` where control-token
            text must stay plain text: the message contents inside a rendered template. The text is
            encoded in one piece unless such a span really holds control-token text; only then is
            it cut there.
        Any str is accepted: surrogate code points (what Python makes of undecodable bytes) are
        tokenized as U+FFFD (replace_surrogates).
        """
        text = replace_surrogates(text)  # one for one: plain_spans stay valid
        if special and plain_spans:
            enc = self._encode_raw(text, True)
            # control tokens' character spans, in order (they do not overlap): a span holds one when
            # the last that starts before its end ends after its start
            found = [o for i, o in zip(enc.ids, enc.offsets) if i in self.special_ids]
            starts = [o[0] for o in found]
            bad = []
            for s, e in plain_spans:
                k = bisect.bisect_left(starts, e) - 1
                if k >= 0 and found[k][1] > s:
                    bad.append((s, e))
            if not bad:
                ids: list[int] = list(enc.ids)
            else:
                ids, pos = [], 0
                for s, e in merge_spans(bad):  # overlapping spans become one plain part
                    ids += self._encode_raw(text[pos:s], True).ids
                    ids += self._encode_raw(text[s:e], False).ids
                    pos = e
                ids += self._encode_raw(text[pos:], True).ids
        else:
            ids = list(self._encode_raw(text, special).ids)
        if add_bos is None:
            add_bos = self.add_bos
        if add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids.insert(0, self.bos_id)
        return ids

    def _encode_raw(self, text: str, special: bool) -> Any:
        with self._lock:
            self._hf.encode_special_tokens = not special
            try:
                return self._hf.encode(text, add_special_tokens=False)
            finally:
                self._hf.encode_special_tokens = False

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of a whole sequence. Bytes that do not form valid UTF-8 become U+FFFD. A
        SentencePiece vocabulary's added leading space is removed, as transformers and llama.cpp do."""
        ids = [i for i in ids if not (skip_special and i in self.special_ids)]
        text = b"".join(self._piece(i, False) for i in ids).decode("utf-8", errors="replace")
        # The "▁" sentencepiece put before the text is not part of it; after a control token that is
        # shown ("<s> hello") it stays, as in transformers and llama.cpp.
        if self.add_space_prefix and text.startswith(" ") and ids[0] not in self.special_ids:
            text = text[1:]
        return text

    def stream(self, *, skip_special: bool = False) -> StreamDecoder:
        return StreamDecoder(self, skip_special=skip_special)

    def _piece(self, token_id: int, skip_special: bool) -> bytes:
        if not 0 <= token_id < len(self._pieces):
            raise ValueError(f"token id {token_id} is outside the vocabulary (0..{len(self._pieces) - 1})")
        if skip_special and token_id in self.special_ids:
            return b""
        return self._pieces[token_id]

    def __repr__(self) -> str:
        return f"Tokenizer({self.kind}, pre={self.pre!r}, vocab={self.vocab_size}, source={self.source!r})"


class StreamDecoder:
    """Turns ids arriving one by one into text chunks without ever splitting a UTF-8 character:
    bytes of an unfinished character wait for the next token. flush() returns what is left (an
    unfinished character becomes U+FFFD). The concatenated chunks equal tokenizer.decode(ids) of a
    continuation, i.e. without removing a SentencePiece leading space."""

    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = False) -> None:
        self._tok = tokenizer
        self._skip = skip_special
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._dec.decode(self._tok._piece(token_id, self._skip))

    def flush(self) -> str:
        text = self._dec.decode(b"", final=True)
        self._dec.reset()
        return text

    @property
    def pending(self) -> bool:
        """True while bytes of an unfinished character are held back."""
        return bool(self._dec.getstate()[0])


# -- builders --------------------------------------------------------------------------------------


def _bpe_piece(token: str) -> bytes:
    try:
        return bytes(_CHAR_TO_BYTE[c] for c in token)
    except KeyError:  # not in the byte alphabet: a raw-text token (llama.cpp writes some that way)
        return token.encode("utf-8")


def _spm_piece(token: str) -> bytes:
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return bytes([int(token[3:5], 16)])
        except ValueError:
            pass
    return token.replace("\u2581", " ").encode("utf-8")


def _added(
    tokens: Sequence[str], types: Sequence[int], byte_level: bool
) -> tuple[list[AddedToken], set[int]]:
    """Control tokens as special added tokens, user-defined ones as plain added tokens (always matched
    whole). In a byte-level vocabulary a 'control' token outside the byte alphabet is a llama.cpp
    mislabel; transformers skips it, and so do we."""
    alphabet = set(_CHAR_TO_BYTE) if byte_level else None
    out: list[AddedToken] = []
    special: set[int] = set()
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty == TOKEN_CONTROL and (alphabet is None or set(t) <= alphabet):
            out.append(AddedToken(t, special=True, normalized=False))
            special.add(i)
    for t, ty in zip(tokens, types):
        if ty == TOKEN_USER_DEFINED:
            out.append(AddedToken(t, special=False, normalized=False))
    return out, special


# Address space the tokenizers library takes per vocabulary entry and merge as it builds a BPE model
# (SmolLM2's 49k tokens and 48k merges: ~28 MB, ~290 bytes each), with some room to spare.
RUST_BYTES_PER_ENTRY = 320
RUST_MIN_BYTES = 16 << 20


def _check_room_for_tokenizers(entries: int) -> None:
    """MemoryError when a mapping of what the tokenizers library is about to allocate cannot be
    made: an allocation that fails inside that Rust library aborts the process (Rust's handler
    for a failed allocation), which no except can catch. A probe that is mapped and unmapped
    untouched costs no memory; it catches the address-space limits (ulimit -v, RLIMIT_AS) that
    made QA's `trit run` abort with "memory allocation of 2162704 bytes failed"."""
    n = max(RUST_MIN_BYTES, entries * RUST_BYTES_PER_ENTRY)
    try:
        mmap.mmap(-1, n).close()
    except OSError:  # ENOMEM: no room for the mapping
        raise MemoryError(n) from None


def _build_bpe(
    tokens: list[str], types: list[int], merges: list[tuple[str, str]], pre: str
) -> tuple[HFTokenizer, list[bytes], set[int]]:
    # Tokens outside the byte alphabet are respelled byte by byte, as transformers' conversion does.
    vocab = {
        (t if set(t) <= _CHAR_TO_BYTE.keys() else "".join(_BYTE_TO_CHAR[b] for b in t.encode("utf-8"))): i
        for i, t in enumerate(tokens)
    }
    rule = _BPE_PRE.get(pre)
    if rule is None:
        log.warning("unknown pre-tokenizer %r; using GPT-2's. Tokenization may differ from the model's.", pre)
        rule = _BPE_PRE["default"]
    ignore_merges = rule[0] == "regex" and rule[2]
    # tokenizers panics (a BaseException, with a Rust message on stderr) when a merged token is not
    # in the vocabulary, so that is checked first (one set comparison: ~60 ms for 49k merges);
    # a merge of unknown tokens is a plain Exception from tokenizers, explained the same way.
    if not vocab.keys() >= {a + b for a, b in merges}:
        raise ValueError(_bad_merge(vocab, merges) or "tokenizer.ggml.merges does not fit the vocabulary")
    _check_room_for_tokenizers(len(vocab) + len(merges))
    try:
        bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=ignore_merges)
    except Exception as e:  # tokenizers raises plain Exception for a vocabulary it cannot use
        raise ValueError(
            _bad_merge(vocab, merges) or f"tokenizer.ggml.tokens / .merges cannot form a BPE vocabulary: {e}"
        ) from e
    hf = HFTokenizer(bpe)
    if rule[0] == "regex":
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(rule[1]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        steps: list[Any] = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        if rule[1]:
            steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
        hf.pre_tokenizer = pre_tokenizers.Sequence(steps)
    hf.decoder = decoders.ByteLevel()
    added, special = _added(tokens, types, byte_level=True)
    hf.add_tokens(added)
    pieces = [
        t.encode("utf-8") if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED) else _bpe_piece(t)
        for t, ty in zip(tokens, types)
    ]
    return hf, pieces, special


def _bad_merge(vocab: dict[str, int], merges: list[tuple[str, str]]) -> str | None:
    """Why the first unusable merge is unusable, or None when every merge names known tokens."""
    for j, (a, b) in enumerate(merges):
        for t in (a, b, a + b):
            if t not in vocab:
                return (
                    f"tokenizer.ggml.merges: merge #{j} ({a + ' ' + b!r}) needs the token {t!r}, which "
                    "tokenizer.ggml.tokens does not have; the vocabulary is damaged"
                )
    return None


def _build_spm(
    tokens: list[str], types: list[int], scores: list[float], add_space_prefix: bool, unk_id: int | None
) -> tuple[HFTokenizer, list[bytes], set[int]]:
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab[t] = i
    # Control and byte tokens never take part in merges (their text is not text).
    skip = [i for i, ty in enumerate(types) if ty in (TOKEN_CONTROL, TOKEN_BYTE, TOKEN_UNUSED, TOKEN_UNKNOWN)]
    merges = spm_merges(tokens, scores, skip)
    unk = tokens[unk_id] if unk_id is not None else None
    _check_room_for_tokenizers(len(vocab) + len(merges))
    try:
        bpe = models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    except Exception as e:  # tokenizers raises plain Exception for a vocabulary it cannot use
        raise ValueError(f"tokenizer.ggml.tokens cannot form a SentencePiece-style vocabulary: {e}") from e
    hf = HFTokenizer(bpe)
    # sentencepiece (and llama.cpp) put "▁" before the text whatever it starts with, and before the
    # text after each control token: the normalizer runs on each piece between added tokens.
    steps: list[Any] = [normalizers.Replace(" ", "\u2581")]
    if add_space_prefix:
        steps.insert(0, normalizers.Prepend("\u2581"))
    hf.normalizer = normalizers.Sequence(steps)
    hf.pre_tokenizer = None
    hf.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    added, special = _added(tokens, types, byte_level=False)
    hf.add_tokens(added)
    pieces = [
        t.encode("utf-8") if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN) else _spm_piece(t)
        for t, ty in zip(tokens, types)
    ]
    return hf, pieces, special


MAX_SIDE_JSON_BYTES = 16 << 20  # tokenizer_config.json (chat templates included) is ~100 KB at most


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        if path.stat().st_size > MAX_SIDE_JSON_BYTES:
            raise ModelFormatError(path, f"it is implausibly large (over {MAX_SIDE_JSON_BYTES >> 20} MB)")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested thousands deep
        raise ModelFormatError(path, f"cannot read it: {str(e)[:200]}") from e
    return data if isinstance(data, dict) else {}


__all__ = [
    "EOG_TOKEN_TEXTS",
    "StreamDecoder",
    "Tokenizer",
    "bytes_to_unicode",
    "merge_spans",
    "replace_surrogates",
    "spm_merges",
]
