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
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ._core import memory_cap_begin, memory_cap_end

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

log = logging.getLogger(__name__)
_T = TypeVar("_T")

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


# A template comes with the model file, so it is hostile too: its rendering gets a time budget and
# its operators a size limit, so that a loop of 10^10 steps or 'x' * 10**9 fails (and the plain
# format is used) instead of hanging or exhausting memory.
RENDER_SECONDS = 2.0
MAX_TEMPLATE_CHARS = 1 << 20  # text a template may write beyond the messages' own
# Memory a render may hold in large blocks: every way to build big text (`~`, join, center,
# indent, format, tojson ...) is bound by it, not only the operators call_binop sees. Small blocks
# are counted as asked for, frees not subtracted (see engine/memcap.h), against a larger budget.
RENDER_BYTES = 256 << 20
RENDER_SMALL_BYTES = 1 << 30
_MAX_POWER_BITS = 4096


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**", "+"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if _too_large(operator, left, right):
            raise jinja2.exceptions.SecurityError(f"the result of {operator} would be too large")
        return super().call_binop(context, operator, left, right)


def _too_large(operator: str, left: Any, right: Any) -> bool:
    if operator == "*":
        return any(
            isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_TEMPLATE_CHARS
            for seq, n in ((left, right), (right, left))
        )
    if operator == "**":
        ints = isinstance(left, int) and isinstance(right, int) and abs(left) > 1
        return ints and right * abs(left).bit_length() > _MAX_POWER_BITS
    sequences = isinstance(left, (str, list)) and isinstance(right, (str, list))
    return operator == "+" and sequences and len(left) + len(right) > 64 * MAX_TEMPLATE_CHARS


class _Budget:
    """sys.settrace hook for the template's own code (compiled as "<template>"): raises once the
    render has used more than `seconds` of this thread's CPU time. CPU time, not wall time: a
    render that waited for the GIL (another thread in a long C call) or for the CPU was stopped as
    too long, which switched even a built-in template off for the session. Other code is not
    traced line by line, so it costs the template only; but every Python call counts, so that a
    filter's own loop is timed too (`'ab' * 500000 | list | sort` ran 5 s in jinja's sort, one
    key call per item, and a string of 16 MB would have run for minutes)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.thread_time() + seconds
        self.steps = 0

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        self._tick()
        return self._line if frame.f_code.co_filename == "<template>" else None

    def _line(self, frame: Any, event: str, arg: Any) -> Any:
        self._tick()
        return self._line

    def _tick(self) -> None:
        self.steps += 1
        if not self.steps & 1023 and time.thread_time() > self.deadline:
            raise jinja2.exceptions.SecurityError(f"the template ran longer than {self.seconds:g} s")


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    # Same settings as transformers' _compile_jinja_template, so embedded templates render alike.
    env = _LimitedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    # jinja's lipsum() writes text in its own code, which the time budget does not see: lipsum(10**6)
    # ran for minutes. transformers' templates never use it.
    del env.globals["lipsum"]
    return env


def compile_template(source: str) -> jinja2.Template:
    if not isinstance(source, str):  # jinja2 raises a bare TypeError for anything else
        raise ChatTemplateError(f"the template is {type(source).__name__}, not text")
    return _bounded(lambda: _environment().from_string(source), timed=False)  # jinja computes constants


def _bounded(call: Callable[[], _T], *, timed: bool = True) -> _T:
    """call() (compiling or rendering a template) within the memory cap and, when timed, the time
    budget (compiling runs no template code, which is all the budget's hook watches: the hook
    would only slow it down); any failure becomes a ChatTemplateError."""
    previous = sys.gettrace()  # a debugger's or coverage's, restored after
    if timed:
        sys.settrace(_Budget(RENDER_SECONDS))
    cap = memory_cap_begin(RENDER_BYTES, RENDER_SMALL_BYTES)
    if cap < 0:  # four threads capped at once, or another allocator hook replaced ours
        log.debug("chat template runs without a memory cap (%d)", cap)
    over = False
    try:
        try:
            result = call()
        finally:
            over = memory_cap_end(cap)[0]  # first: the code after it may need memory
            if timed:
                sys.settrace(previous)
    except Exception as e:  # a template can fail in plain Python ways too (None + str, bad index ...)
        if not over:
            raise ChatTemplateError(_describe(e)) from e
    if over:  # (also when something inside caught the MemoryError: the text may lack a part)
        limit = jinja2.exceptions.SecurityError("the template needed too much memory")
        raise ChatTemplateError(_describe(limit)) from limit
    return result


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
    """The fallback format: "System: ...\nUser: ...\nAssistant: ...\nAssistant:". It has no
    control tokens at all: ChatFormat.encode tokenizes all of it as plain text."""
    lines = [
        f"{str(m.get('role', 'user')).capitalize()}: {str(m.get('content', '')).strip()}" for m in messages
    ]
    if add_generation_prompt:
        lines.append("Assistant:")
    return "\n".join(lines)


def clean_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Copies of the messages whose text values hold no surrogate code points (replace_surrogates):
    any str a caller passes can be rendered and tokenized."""
    from .tokenizer import replace_surrogates

    return [{k: replace_surrogates(v) if isinstance(v, str) else v for k, v in m.items()} for m in messages]


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
        return self._render(clean_messages(messages), add_generation_prompt)[0]

    def _render(self, messages: Sequence[Message], add_generation_prompt: bool) -> tuple[str, bool]:
        """(text, True) from the template, or (plain_prompt text, False) when there is none or it fails."""
        if self._compiled is None:
            return plain_prompt(messages, add_generation_prompt), False
        try:
            return self.render_strict(messages, add_generation_prompt), True
        except ChatTemplateError as e:
            self._fail(f"the chat template ({self.source}) failed: {e}")
            if isinstance(e.__cause__, jinja2.exceptions.SecurityError):
                self._compiled = None  # a time or size limit, or a sandbox escape: not tried again
            return plain_prompt(messages, add_generation_prompt), False

    def render_with_spans(
        self, messages: Sequence[Message], add_generation_prompt: bool = True
    ) -> tuple[str, list[tuple[int, int]]]:
        """render(), plus the character spans of the text that the messages' contents fill: text a
        user (or the model, in an assistant turn) wrote, never to be read as control tokens.

        The spans are exact: the template is rendered a second time with each content replaced by
        a unique marker, and the text between the markers (the template's own text) must then
        match the first render around the contents (each as is, or trimmed as templates often do).
        So a content equal to template text ("<|im_end|>", the default system prompt) is found
        where the message put it, not where the template wrote the same text earlier; a content the
        template rewrites is the whole gap between its template text (_align). A template whose
        output differs in structure with the content (a branch on it) cannot be aligned at all;
        then every occurrence of each content is a span (content_spans): the template's own
        control tokens may then be read as text too, but a message's text never becomes one."""
        return self._render_with_spans(messages, add_generation_prompt)[:2]

    def _render_with_spans(
        self, messages: Sequence[Message], add_generation_prompt: bool
    ) -> tuple[str, list[tuple[int, int]], bool]:
        """render_with_spans(), and whether the template made the text (False: plain_prompt)."""
        messages = clean_messages(messages)
        text, templated = self._render(messages, add_generation_prompt)
        if not templated:
            return text, [(0, len(text))] if text else [], False
        markers: dict[str, str] = {}  # marker -> the content it stands for
        marked: list[dict[str, Any]] = []
        n = 0
        for m in messages:
            content = m.get("content")
            if not isinstance(content, str) or not content.strip():
                marked.append(dict(m))
                continue
            marker = f"\ue000{n}\ue001"  # private-use characters: no template trims or splits them
            while marker in text:  # a conversation that already holds such text
                n += 1
                marker = f"\ue000{n}\ue001"
            n += 1
            markers[marker] = content
            marked.append({**m, "content": marker})
        if not markers:
            return text, [], True
        try:
            skeleton = self.render_strict(marked, add_generation_prompt)
        except ChatTemplateError:
            skeleton = None
        spans = _align(text, skeleton, markers) if skeleton is not None else None
        if spans is None:
            log.debug("chat template output depends on the message text; marking every occurrence plain")
            return text, content_spans(text, messages), True
        return text, spans, True

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
        compiled = self._compiled
        out = _bounded(lambda: compiled.render(**variables))
        if not out.strip() and messages:  # e.g. a template that knows other role names
            raise ChatTemplateError("the template produced no text for these messages")
        own = len(out) - sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
        if own > MAX_TEMPLATE_CHARS:
            # a limit like the time and memory ones (a SecurityError behind it): not tried again
            what = f"the template wrote {own} characters of its own (at most {MAX_TEMPLATE_CHARS})"
            raise ChatTemplateError(what) from jinja2.exceptions.SecurityError(what)
        return out

    def encode(
        self, tokenizer: Tokenizer, messages: Sequence[Message], add_generation_prompt: bool = True
    ) -> list[int]:
        """Prompt ids: template tokens are recognised as control tokens, message contents are not
        (a user typing "<|im_end|>" cannot end a turn). BOS is added unless the template wrote it."""
        return self.encode_prompt(tokenizer, messages, add_generation_prompt)[0]

    def encode_prompt(
        self, tokenizer: Tokenizer, messages: Sequence[Message], add_generation_prompt: bool = True
    ) -> tuple[list[int], bool]:
        """encode(), and whether the plain format made the prompt (the template failed or there is
        none): a reply in it has no end-of-turn token to stop at."""
        text, spans, templated = self._render_with_spans(messages, add_generation_prompt)
        return tokenizer.encode(text, special=True, plain_spans=spans), not templated


def _content_variants(content: str) -> list[str]:
    """The forms a template may write a content in: as is, or trimmed (`| trim`, .strip())."""
    out: list[str] = []
    for v in (content, content.strip(), content.lstrip(), content.rstrip()):
        if v not in out:
            out.append(v)
    return out


_Chain = tuple[Any, tuple[int, int]] | None  # (previous chain, span): the spans matched so far


ALIGN_STEPS = 100_000


def _align(text: str, skeleton: str, markers: Mapping[str, str]) -> list[tuple[int, int]] | None:
    """Spans of `text` where the markers of `skeleton` stand (a render with each content replaced
    by its marker), or None when the two renders do not line up. The template's text between the
    markers must match exactly. A marker matches one form of its content (as is, or trimmed) or,
    failing that, whatever lies before the next piece of template text: a template that rewrites
    the content (replace, split ...) still gets it all marked as plain. That last resort tries the
    latest occurrence of the template text first, so content that repeats the template's own text
    stays inside its span. A depth-first search over (marker index, position); one that would take
    more than ALIGN_STEPS candidate spans gives up (None): a rewritten content made of the template
    text's own letters made thousands of candidates at every position, minutes per chat turn."""
    pattern = "|".join(map(re.escape, markers))
    found = re.findall(pattern, skeleton)
    literals = re.split(pattern, skeleton)  # [len(found) + 1] the template's own text
    if not text.startswith(literals[0]):
        return None
    stack: list[tuple[int, int, _Chain]] = [(0, len(literals[0]), None)]
    seen: set[tuple[int, int]] = set()
    steps = 0
    while stack:
        i, pos, chain = stack.pop()
        if (i, pos) in seen:
            continue
        seen.add((i, pos))
        if i == len(found):
            if pos != len(text):
                continue
            spans: list[tuple[int, int]] = []
            while chain is not None:
                chain, span = chain
                if span[1] > span[0]:
                    spans.append(span)
            return spans[::-1]
        lit = literals[i + 1]
        # pushed in reverse order of preference: the stack pops the last one first
        if i == len(found) - 1:
            ends = [len(text) - len(lit)] if text.endswith(lit) and len(text) - len(lit) >= pos else []
        elif lit:
            ends, at = [], text.find(lit, pos)
            while at >= 0:
                ends.append(at)
                at = text.find(lit, at + 1)
        else:
            ends = []  # two contents back to back: no template text tells where one ends
        candidates = [(pos, e) for e in ends]
        for v in reversed(_content_variants(markers[found[i]])):
            if text.startswith(v, pos) and text.startswith(lit, pos + len(v)):
                candidates.append((pos, pos + len(v)))
        steps += len(candidates)
        if steps > ALIGN_STEPS:
            return None
        for span in candidates:
            stack.append((i + 1, span[1] + len(lit), (chain, span)))
    return None


def content_spans(text: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
    """Character spans of every occurrence of each message's content (stripped, as templates may
    trim it) in the rendered text, sorted, overlaps merged. The conservative fallback of
    ChatFormat.render_with_spans for a template whose output cannot be aligned with the messages:
    wherever a content's text appears, it stays plain text, even where the template wrote the same
    text itself."""
    from .tokenizer import merge_spans

    found: list[tuple[int, int]] = []
    for m in messages:
        content = m.get("content")
        content = content.strip() if isinstance(content, str) else str(content or "").strip()
        if not content:
            continue
        at = text.find(content)
        while at >= 0:
            found.append((at, at + len(content)))
            at = text.find(content, at + 1)
    return merge_spans(found)


__all__ = [
    "BUILTIN_TEMPLATES",
    "FAMILIES",
    "SMOLLM_DEFAULT_SYSTEM",
    "ChatFormat",
    "ChatTemplateError",
    "builtin_template",
    "clean_messages",
    "compile_template",
    "content_spans",
    "guess_family",
    "plain_prompt",
]
