"""Chat templates: turn a conversation into the prompt text a model was trained on.

Templates are Jinja2, rendered the way transformers' apply_chat_template renders them: a sandboxed,
immutable environment with trim_blocks and lstrip_blocks, the loopcontrols extension, a `tojson`
filter that keeps non-ASCII text, and `messages`, `add_generation_prompt`, `bos_token`, `eos_token`,
`raise_exception` and `strftime_now` in scope.

Verified built-in templates (resources/templates/) are preferred over the one a file embeds when
the model family is known: some GGUF conversions embed a wrong template (docs/formats.md). A
template that fails to compile or to render does not stop the chat: the error is logged, kept in
`ChatFormat.warning` for the UI, and a plain "User: ...\nAssistant:" prompt is used instead.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

FAMILIES = ("bitnet", "llama3", "smollm", "falcon3")

# family -> built-in template file in resources/templates/
BUILTIN_TEMPLATES = {
    "bitnet": "bitnet.jinja",
    "llama3": "llama3.jinja",
    "smollm": "chatml.jinja",
    "falcon3": "falcon3.jinja",
}

# Extra template variables per family. SmolLM2's own template writes this system prompt when the
# conversation has none; the model was tuned with it.
SMOLLM_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
FAMILY_CONTEXT: dict[str, dict[str, str]] = {
    "smollm": {"default_system": SMOLLM_DEFAULT_SYSTEM},
}

# Special-token texts a family's template uses, for when the tokenizer does not name them.
FAMILY_TOKENS: dict[str, tuple[str, str]] = {  # family -> (bos, eos)
    "bitnet": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "smollm": ("<|im_start|>", "<|im_end|>"),
    "falcon3": ("", "<|endoftext|>"),
}

Message = Mapping[str, Any]  # {"role": "system" | "user" | "assistant", "content": str}


class ChatTemplateError(Exception):
    """A template failed to compile or render (wraps jinja2 errors and raise_exception)."""


# -- environment ----------------------------------------------------------------------------------


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    # Same settings as transformers' _compile_jinja_template, so embedded templates render alike.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def compile_template(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateError as e:
        raise ChatTemplateError(_describe(e)) from e


def _describe(e: BaseException) -> str:
    line = getattr(e, "lineno", None)
    where = f" (line {line})" if line else ""
    return f"{type(e).__name__}{where}: {e}"


# -- built-in templates ---------------------------------------------------------------------------


def templates_dir() -> Path:
    """resources/templates: in the PyInstaller bundle, the installed package (trit/resources), or
    the source tree."""
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "resources" / "templates"]
    meipass = getattr(sys, "_MEIPASS", None)
    if meipass:
        candidates.insert(0, Path(meipass) / "resources" / "templates")
    for d in candidates:
        if d.is_dir():
            return d
    return candidates[-1]


@cache
def builtin_template(family: str) -> str:
    """The source of the built-in template of a known family."""
    name = BUILTIN_TEMPLATES[family]
    return (templates_dir() / name).read_text(encoding="utf-8")


# -- family ---------------------------------------------------------------------------------------


def guess_family(metadata: Mapping[str, Any]) -> str:
    """The model family from GGUF metadata: "bitnet", "llama3", "smollm", "falcon3", or "" when
    unknown (then the embedded template, if any, is used)."""
    arch = str(metadata.get("general.architecture", "")).lower()
    names = " ".join(
        str(metadata.get(k, "")) for k in ("general.name", "general.basename", "general.finetune")
    ).lower()
    pre = str(metadata.get("tokenizer.ggml.pre", "")).lower()
    # Falcon3 first: its 1.58-bit variants are BitNet-style models with Falcon3's chat format.
    if pre == "falcon3" or "falcon3" in names.replace("-", "").replace(" ", ""):
        return "falcon3"
    if arch in ("bitnet-b1.58", "bitnet-25", "bitnet"):
        return "bitnet"
    if pre == "smollm" or "smollm" in names:
        return "smollm"
    if pre in ("llama-bpe", "llama3", "llama-v3") and arch == "llama":
        return "llama3"
    return ""


# -- ChatFormat -----------------------------------------------------------------------------------


def plain_prompt(messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    """The fallback format: "System: ...\nUser: ...\nAssistant: ...\nAssistant:"."""
    lines = [
        f"{str(m.get('role', 'user')).capitalize()}: {str(m.get('content', '')).strip()}" for m in messages
    ]
    if add_generation_prompt:
        lines.append("Assistant:")
    return "\n".join(lines)


@dataclass
class ChatFormat:
    """How one model's conversations become prompt text.

    source: "builtin:<file>", "embedded" or "plain".
    warning: set when the template could not be used (compile or render error); the UI shows it.
    """

    template: str | None
    family: str = ""
    bos_token: str = ""
    eos_token: str = ""
    source: str = "plain"
    warning: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    _compiled: jinja2.Template | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.template is not None:
            try:
                self._compiled = compile_template(self.template)
            except ChatTemplateError as e:
                self._fail(f"the chat template ({self.source}) does not compile: {e}")

    @classmethod
    def for_model(
        cls,
        family: str = "",
        embedded_template: str | None = None,
        bos: str | None = None,
        eos: str | None = None,
    ) -> ChatFormat:
        """Built-in template for a known family, else the embedded one, else the plain format.
        bos / eos: the tokenizer's special-token texts (family defaults when None)."""
        fam_bos, fam_eos = FAMILY_TOKENS.get(family, ("", ""))
        bos_t = bos if bos is not None else fam_bos
        eos_t = eos if eos is not None else fam_eos
        ctx = dict(FAMILY_CONTEXT.get(family, {}))
        if family in BUILTIN_TEMPLATES:
            return cls(
                builtin_template(family),
                family,
                bos_t,
                eos_t,
                f"builtin:{BUILTIN_TEMPLATES[family]}",
                context=ctx,
            )
        if embedded_template:
            return cls(embedded_template, family, bos_t, eos_t, "embedded", context=ctx)
        return cls(None, family, bos_t, eos_t, "plain", context=ctx)

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, family: str = "") -> ChatFormat:
        def text(i: int | None) -> str | None:
            return tokenizer.token_text(i) if i is not None else None

        return cls.for_model(family, tokenizer.chat_template, text(tokenizer.bos_id), text(tokenizer.eos_id))

    def _fail(self, message: str) -> None:
        self.warning = f"{message}. Using a plain User/Assistant format instead."
        log.warning("%s", self.warning)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text. Falls back to plain_prompt() (and sets `warning`) when the template fails."""
        if self._compiled is None:
            return plain_prompt(messages, add_generation_prompt)
        try:
            return self.render_strict(messages, add_generation_prompt)
        except ChatTemplateError as e:
            self._fail(f"the chat template ({self.source}) failed: {e}")
            return plain_prompt(messages, add_generation_prompt)

    def render_strict(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """Like render(), but raises ChatTemplateError instead of falling back."""
        if self._compiled is None:
            raise ChatTemplateError(self.warning or "no template")
        variables = {
            **self.context,
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        try:
            return self._compiled.render(**variables)
        except jinja2.TemplateError as e:
            raise ChatTemplateError(_describe(e)) from e
        except Exception as e:  # a template can fail in plain Python ways (None + str, bad index ...)
            raise ChatTemplateError(_describe(e)) from e

    def encode(
        self, tokenizer: Tokenizer, messages: Sequence[Message], add_generation_prompt: bool = True
    ) -> list[int]:
        """Prompt ids: template tokens are recognised as control tokens, message contents are not
        (a user typing "<|im_end|>" cannot end a turn). BOS is added unless the template wrote it."""
        text = self.render(messages, add_generation_prompt)
        spans = content_spans(text, messages)
        return tokenizer.encode(text, special=True, plain_spans=spans)


def content_spans(text: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
    """Character spans of the message contents in the rendered text, found in order (templates may
    trim the content, so the stripped text is searched)."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in messages:
        content = str(m.get("content", "")).strip()
        if not content:
            continue
        at = text.find(content, pos)
        if at < 0:
            continue
        spans.append((at, at + len(content)))
        pos = at + len(content)
    return spans


__all__ = [
    "BUILTIN_TEMPLATES",
    "FAMILIES",
    "SMOLLM_DEFAULT_SYSTEM",
    "ChatFormat",
    "ChatTemplateError",
    "builtin_template",
    "compile_template",
    "content_spans",
    "guess_family",
    "plain_prompt",
]
