"""The engine's stable Python API: load_model(), Model, Session, Stats.

A Model owns the weights (views into the file's mmap where the layout allows) and the kernel
choice; a Session owns a KV cache and the token history it holds, so a follow-up message only runs
the tokens the cache does not have yet. Every forward pass runs in C with the GIL released.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trit.text import short_repr, short_text

from . import _core
from .errors import (
    CancelledError,
    ContextFullError,
    EngineError,
    ModelFormatError,
    ModelNotFoundError,
    NonFiniteLogitsError,
    OutOfMemoryError,
    UnsupportedOptionError,
    megabytes,
)
from .sampler import Sampler, SamplingParams
from .weights import ModelConfig, ModelWeights, QuantTensor, TernaryTensor

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 4096
LOAD_RESERVE_BYTES = 1 << 20  # memory load_model holds while it loads, to report running out of it
PROMPT_BATCH = 128  # prompt tokens per GEMM pass; bounds the activation buffers


def physical_cores() -> int:
    """Physical cores (hyper-threads share the load/store units the decode loop is bound by)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except ImportError:
        pass
    return max(1, (os.cpu_count() or 2) // 2)


PLAIN_TURN = "\nUser:"  # where a reply in the plain chat format ends (chat.plain_prompt)
LM_HEADS = ("f16", "q8_0")  # load_model(head=...): as stored, or a Q8_0 copy built at load
KV_TYPES = ("f32", "f16", "q8", "q3")  # load_model(kv=...): the KV cache's element type
# load_model(ternary=...): the ternary matrices' layout in memory: "auto" (B3 where the CPU's kernels
# read it faster, else TQ), "tq" (2 bits per weight, I2_S files in place) or "b3" (1.6 bits, built at
# load). Every layout gives the same logits.
TERNARY_LAYOUTS = ("auto", "tq", "b3")


def kv_cache_bytes(config: ModelConfig, kv: str, positions: int) -> int:
    """Bytes of a KV cache of type kv (KV_TYPES) holding `positions` positions: what attention reads
    per token at that length (forward.c's tq_state_kv_bytes, which Session.kv_bytes reports)."""
    rows = 2 * config.n_layers * positions * config.n_kv_heads  # K and V, one row per KV head
    elems = rows * config.head_dim
    if kv == "q3":  # 3 bits per element and a float scale per 32
        return elems * 3 // 8 + elems // 32 * 4
    if kv == "q8":  # a byte per element and a float scale per row
        return elems + rows * 4
    return elems * {"f32": 4, "f16": 2}[kv]


@dataclass(frozen=True)
class ModelInfo:
    path: str
    arch: str
    file_type: str
    n_layers: int
    dim: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    context: int
    quant_types: tuple[str, ...]
    isa: str
    threads: int
    weight_bytes: int  # bytes of weights the forward pass reads (packed ternary + f16 embedding)
    memory: str = "file map"  # "file map" (tensors used in place) or "RAM copy" (huge pages)
    head_type: str = "F16"  # the LM head's type as computed ("Q8_0 (built at load ...)" when asked for)
    head_approx: bool = False  # the head is a lower-precision copy built at load: logits are approximate
    kv: str = "f32"  # the KV cache's element type: "f32" (exact), "f16" (half the bytes, rounded),
    # "q8" (a quarter of the bytes: int8 codes with one scale per head row) or "q3" (3-bit codes, one
    # scale per 32)
    a48: bool = False  # BitNet a4.8 activations (4-bit inputs of q/k/v and gate/up, TopK on o's input)
    ffn_act: str = "relu2"  # the FFN gate's activation: "relu2" (BitNet 2B4T) or "silu" (llama, 1bitLLM)
    activations: str = "f32"  # in effect: "q8" only where some matrix meets 8-bit-rounded activations
    # (a llama.cpp quantized type); ternary layers and float heads are the same in both modes
    no_effect: tuple[str, ...] = ()  # load_model options that change nothing on this model, whatever
    # their value: "activations" (no llama.cpp quantized matrix), "head" (the head is not a float one)
    ternary: str = ""  # the ternary matrices' layout in effect (load_model(ternary=...)): "tq" (2 bits
    # per weight), "b3" (1.6 bits, repacked at load) or "tq+b3" ("auto": only some matrices' rows are
    # shorter in B3); "" without any

    def describe(self) -> str:
        return "\n".join(f"{k:12s} {v}" for k, v in self.__dict__.items())


@dataclass(frozen=True)
class Stats:
    prompt_tokens: int  # tokens run through the model for this prompt (cache hits excluded)
    prompt_ms: float
    tokens_generated: int
    decode_ms: float
    ttft_ms: float  # from the call until the first generated token was available
    cached_tokens: int = 0  # prompt tokens served from the session's KV cache
    stop_reason: str = "length"  # "stop" (a stop id), "length", "cancelled", "context"
    decode_runs: int = -1  # tokens run through the model in decode_ms (-1: tokens_generated - 1)

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / (self.prompt_ms / 1e3) if self.prompt_ms > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        """Tokens per second of the decode passes. The first token comes from the prompt pass;
        decode time covers the tokens run after it: each generated token but a last one that is
        not run (a reply cut at max_tokens), and all of them when a stop id ended the reply (it
        was counted one short there: a two-token reply showed half its speed)."""
        n = self.decode_runs if self.decode_runs >= 0 else self.tokens_generated - 1
        return n / (self.decode_ms / 1e3) if n > 0 and self.decode_ms > 0 else 0.0


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    stats: Stats | None = None
    text: str = ""  # the decoded reply (chat calls)


def _load_weights(path: Path, memory: str = "map", embedding_lookup_only: bool = False) -> ModelWeights:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ModelNotFoundError(path) from None
    except OSError as e:  # a folder on the way we may not enter, a symlink loop ...
        raise ModelFormatError(path, f"cannot open: {e.strerror or e}") from None
    try:
        if stat.S_ISDIR(mode):
            from .hf import load_hf_weights

            return load_hf_weights(path)
        if not stat.S_ISREG(mode):  # reading a pipe or a device would block or never end
            raise ModelFormatError(path, "not a regular file (a pipe, device or socket)")
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:  # no permission, an I/O error (a failing disk, /proc/self/mem) ...
        raise ModelFormatError(e.filename or path, f"cannot read: {e.strerror or e}") from None
    if magic == b"GGUF":
        from .gguf_loader import load_gguf_weights

        return load_gguf_weights(path, memory=memory, embedding_lookup_only=embedding_lookup_only)
    raise ModelFormatError(
        path, f"not a model file (magic {magic!r}): expected a GGUF file or a Hugging Face directory"
    )


def _check_load_options(threads: object, a48: object, kv: object = "f32", weights: object = "map") -> None:
    """ValueError for a weights, threads, a48 or kv of the wrong kind (load_model and
    gguf_model_info check before reading a file of gigabytes; Model.session checks the same but
    weights per session)."""
    from .gguf_loader import WEIGHT_MEMORY

    if weights not in WEIGHT_MEMORY:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_MEMORY)}, not {weights!r}")
    if threads is not None and (
        isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)) or threads < 1
    ):
        raise ValueError(f"threads must be a whole number >= 1 (or None: one per core), not {threads!r}")
    if not isinstance(a48, (bool, np.bool_)):
        # "no" or "false" from a config file would have turned the approximate mode on
        raise ValueError(f"a48 must be True or False, not {a48!r}")  # noqa: TRY004 - the API's convention
    if kv not in KV_TYPES:
        raise ValueError(f"kv must be one of {', '.join(KV_TYPES)}, not {kv!r}")


def _check_ternary(ternary: object) -> None:
    if ternary not in TERNARY_LAYOUTS:
        raise ValueError(f"ternary must be one of {', '.join(TERNARY_LAYOUTS)}, not {ternary!r}")


def _b3_rule(ternary: str, isa: str | None) -> str:
    """Which ternary matrices load_model(ternary=..., isa=...) holds in the B3 layout: "every"
    ("b3"), "shorter" ("auto" where the kernel table for isa reads B3 faster: those whose rows B3
    makes shorter) or "none". "auto" takes TRIT_TERNARY when that names a layout."""
    _check_ternary(ternary)
    if ternary == "auto":
        env = os.environ.get("TRIT_TERNARY", "auto")
        ternary = env if env in TERNARY_LAYOUTS else "auto"
    if ternary == "b3":
        return "every"
    return "shorter" if ternary == "auto" and _core.kernel_b3_fast(isa) else "none"


def layout_name(layouts: Iterable[str]) -> str:
    """ModelInfo.ternary for the layouts of a model's ternary matrices ("tq", "b3")."""
    seen = set(layouts)
    return "+".join(x for x in ("tq", "b3") if x in seen)


def _ternary_layout(weights: ModelWeights, ternary: str, isa: str | None, *, release: bool) -> ModelWeights:
    """weights with its ternary matrices in the layout `ternary` asks for (_b3_rule, to_b3).
    release: see to_b3 (load_model's own weights only)."""
    rule = _b3_rule(ternary, isa)
    if rule == "none":
        return weights
    from .ternary import to_b3

    return to_b3(weights, release=release, every=rule == "every")


def _check_kv_fits(config: ModelConfig, kv: str) -> None:
    """UnsupportedOptionError for a KV cache type this model's shape cannot take."""
    if kv == "q3" and config.head_dim % 32:
        raise UnsupportedOptionError(
            "kv",
            f"the 3-bit KV cache needs a head size divisible by 32; this model's is {config.head_dim}",
        )


def release_free_memory() -> bool:
    """Gives the memory the C heap holds free back to the OS (glibc's malloc_trim), after a model
    was dropped: glibc keeps freed blocks below its mmap threshold for later, so each load and
    unload left the process a little larger (SmolLM2 load, chat and unload cycles: 0.14-0.4 MB a
    cycle across runs, where after a trim it was under 0.05 MB, and the process 20-25 MB smaller
    after 65 cycles). True where it was done; False
    elsewhere (other C libraries and systems return such memory themselves or offer no call)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl, or no symbol table to look in
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


FLOAT_TYPES = ("F16", "BF16", "F32")  # weight types whose kernels always take the f32 activation


def _meets_q8_activations(t: object) -> bool:
    """True for a matrix that activations="q8" changes: a llama.cpp quantized type (Q4_1, Q8_0 ...).
    Ternary matrices always use their own int8 activations, and the float types' kernels take the
    f32 activation in both modes (qk_f32act_scalar.c: tq_qk_get_f32act), so logits are bit-identical."""
    return isinstance(t, QuantTensor) and t.type_name not in FLOAT_TYPES


def load_model(
    path: str | os.PathLike[str],
    *,
    threads: int | None = None,
    isa: str | None = None,
    context: int | None = None,
    activations: str = "f32",
    head: str = "f16",
    weights: str = "auto",
    kv: str = "f32",
    a48: bool = False,
    ternary: str = "auto",
) -> Model:
    """Loads a GGUF file or a Hugging Face directory (config.json + safetensors).

    threads: worker threads (default: physical cores). isa: force a kernel path ("scalar", "avx2",
    "avx512", "neon"; each takes its VNNI / dotprod form where the CPU has it; default: the best
    this CPU has, or TRIT_ISA). context: KV cache positions (default: the model's, capped at 4096). activations: how llama.cpp weight types (Q4_1 ...)
    meet the activations: "f32" dequantizes each block against the float activation (matches
    the dequantized weights; default), "q8" rounds the activation to 8 bits per block first, as
    llama.cpp does (faster decode, slower prompts; SmolLM2: perplexity +0.5%). Ternary BitNet layers always
    use their own per-token int8 activations, which the model was trained with. head: "f16" (as
    stored) or "q8_0": a Q8_0 copy of a float16 LM head built at load, meeting Q8_0-rounded
    activations (BitNet 2B4T: 656 -> 349 MB read per token, 1-thread decode +40%; logits move by
    the head's Q8_0 rounding, so it is off by default). kv: the KV cache in "f32" (default, exact)
    or "f16": half its bytes (at 2000 positions the f32 cache of 2B4T is 307 MB read per token,
    a quarter of the weights), K and V rounded to f16 as they are stored; or "q8": a quarter of
    its bytes plus one float per head row, each row of K and V stored as int8 codes scaled by its
    max |x| / 127; or "q3" (BitNet a4.8's 3-bit KV): 3 bits per element plus one float per 32,
    codes in [-3, 3] scaled by the block's max |x| / 3 (needs head_dim % 32 == 0). a48: BitNet a4.8's activations
    (arXiv 2411.04965): the inputs of q/k/v and gate/up rounded to 4-bit integers per token
    (absmean scale sqrt(7) / mean|x|), the input of o keeps only its largest half of magnitudes
    (TopK) before the int8 rounding. For models trained that way; on others it is an approximation
    whose cost benchmarks/a48_quality.py measures. weights
    (GGUF): "map" uses the tensors in place from the file's mmap; "ram" reads them into
    anonymous memory with transparent huge pages (~0.3 s per GB from the page cache; decode
    streams ~20% faster through 2 MiB pages than 4 KiB ones); "auto" (default) is "ram" where
    Linux offers huge pages, except for TQ1_0/TQ2_0 files (repacked at load anyway), else "map";
    TRIT_WEIGHTS=auto|ram|map overrides it. ternary: the ternary matrices' layout in memory (the
    logits are the same): "tq" (2 bits per weight; I2_S data in place), "b3" (five base-3 codes a
    byte, 1.6 bits, repacked at load: 20% fewer bytes per token from the ternary matrices, decoded
    by table lookups) or "auto" (default): B3 where this CPU's kernels read it faster (AVX-512 VBMI
    + VNNI), else TQ; TRIT_TERNARY=auto|tq|b3 overrides "auto"."""
    _check_load_options(threads, a48, kv, weights)
    _check_ternary(ternary)  # refused before the file is read (_b3_rule reads TRIT_TERNARY later)
    p = Path(path)
    reserve: list[bytearray] = []
    try:
        # given back when memory runs out, so that the error can still be made: at some limits the
        # handlers on the way up failed too, and a bare MemoryError reached the caller
        reserve.append(bytearray(LOAD_RESERVE_BYTES))
        # a Q8_0 head is built from the embedding: the embedding itself is then only looked up
        w = _load_weights(p, weights, embedding_lookup_only=head == "q8_0")
        # these weights are this call's alone: each matrix's TQ form is dropped once repacked
        w = _ternary_layout(w, ternary, isa, release=True)
        return Model(
            w,
            threads=threads,
            isa=isa,
            context=context,
            activations=activations,
            head=head,
            kv=kv,
            a48=a48,
            ternary=ternary,
        )
    except MemoryError as e:  # numpy's _ArrayMemoryError too: the tokenizer, a repack, a copy ...
        reserve.clear()
        size = getattr(e, "_total_size", None) or (e.args[0] if e.args and isinstance(e.args[0], int) else 0)
        raise _load_memory_error(p, size, weights) from None
    except RuntimeError as e:
        if "can't start new thread" not in str(e):  # Python's words when a thread gets no stack
            raise
        raise _load_memory_error(p, 0, weights) from None
    except ImportError as e:  # the tokenizers library is loaded on the first load: its mmap can fail
        if "failed to map segment" not in str(e) and "annot allocate memory" not in str(e):
            raise
        reserve.clear()
        raise _load_memory_error(p, 0, weights) from None
    finally:
        reserve.clear()  # an error's traceback keeps this frame, and so the reserve, alive


def _load_memory_error(path: Path, needed: int, weights: str) -> OutOfMemoryError:
    """OutOfMemoryError for an allocation that failed while loading ("auto" weights already fall
    back to the file map when the copy finds no memory, so only "ram" gets that advice)."""
    what = f" (an allocation of {megabytes(needed)} failed)" if needed else ""
    instead = ", or use the weights from the file in place (--weights map)" if weights == "ram" else ""
    return OutOfMemoryError(
        f"{path}: not enough memory to load the model{what}; close other programs{instead}",
        needed=needed,
        part="weights",
    )


def _page_dropper(weights: ModelWeights) -> Callable[[int, int], None] | None:
    """For a tied embedding that lives in a GGUF file map: a callback that drops the resident
    pages of embedding rows [r0, r1) once they have been read (building the Q8_0 head reads the
    whole matrix; without this it would all stay resident although only looked-up rows are used)."""
    from .gguf import GGUFFile

    f = next((k for k in weights.keepalive if isinstance(k, GGUFFile)), None)
    name = "token_embd.weight"
    if f is None or weights.head is not None or name not in f.tensors:
        return None
    row = f.tensors[name].nbytes // max(1, weights.config.vocab)
    return lambda r0, r1: f.drop_pages(name, r0 * row, r1 * row)


class Model:
    def __init__(
        self,
        weights: ModelWeights,
        *,
        threads: int | None = None,
        isa: str | None = None,
        context: int | None = None,
        activations: str = "f32",
        head: str = "f16",
        kv: str = "f32",
        a48: bool = False,
        ternary: str = "auto",
    ) -> None:
        _check_load_options(threads, a48, kv)
        # (the caller's weights are not changed: a B3 copy of its matrices is made beside them)
        weights = _ternary_layout(weights, ternary, isa, release=False)
        if activations not in ("f32", "q8"):
            raise ValueError(f"activations must be 'f32' or 'q8', not {activations!r}")
        if head not in LM_HEADS:
            raise ValueError(f"head must be one of {', '.join(LM_HEADS)}, not {head!r}")
        _check_kv_fits(weights.config, kv)
        self.kv = kv
        self.a48 = bool(a48)
        from .requant import float_head, q8_0_head

        stored = weights.embed if weights.head is None else weights.head
        mats = [t for lw in weights.layers for t in (lw.q, lw.k, lw.v, lw.o, lw.gate, lw.up, lw.down)]
        # the options that change nothing on this model, whatever they are set to: the app names a
        # request of them as not applied, and a change of them needs no reload
        no_effect = []
        if not any(_meets_q8_activations(t) for t in [*mats, stored]):  # ternary layers, float head
            no_effect.append("activations")
        if float_head(stored) is None:  # a quantized head: about as small as Q8_0 already
            no_effect.append("head")
        head_type = None
        if head == "q8_0":
            if float_head(stored) is not None:  # F16, BF16 or F32
                weights = dataclasses.replace(weights, head=q8_0_head(stored, _page_dropper(weights)))
                head_type = f"Q8_0 (built at load from {_type_name(stored)}, Q8_0 activations)"
            else:  # a quantized head: about as small as Q8_0 already
                log.warning(
                    "%s: head q8_0 applies to a float output head (F16, BF16, F32); this model's is %s and stays so",
                    weights.source,
                    _type_name(stored),
                )
        self.weights = weights
        self.config = weights.config
        self.activations = activations
        # a Q8_0 head built at load is there for speed: it meets Q8_0-rounded activations (int8 dot
        # products, as llama.cpp does), which is what makes it fast (f32 activations: 20.7 vs 29 tok/s
        # at one thread on 2B4T, where the f16 head gives 20.7)
        self.core = _core.CoreModel(weights, isa, activations == "f32", None if head_type is None else False)
        self.threads = int(threads) if threads is not None else physical_cores()
        self.context = self._context(
            min(self.config.context, DEFAULT_CONTEXT) if context is None else context
        )
        self._default: Session | None = None
        self._chat: Session | None = None
        # two first calls on two threads each made a session of their own: neither was refused
        # as "already generating", and cancel() reached only one of them
        self._sessions = threading.Lock()
        self.tokenizer = weights.tokenizer
        self.chat_format = None
        stops = set(weights.config.eos_ids)
        if self.tokenizer is not None:
            from .chat import ChatFormat

            self.chat_format = ChatFormat.for_tokenizer(self.tokenizer, weights.family)  # type: ignore[arg-type]
            stops |= set(self.tokenizer.eos_ids)  # type: ignore[attr-defined]
        self.stop_ids: tuple[int, ...] = tuple(sorted(stops))
        # Ids generation may produce: a tokenizer smaller than the embedding (models pad it to a round
        # size; the loaders refuse a larger one) has no text for the padding rows, so they are never
        # sampled. None: every row.
        n_tok = self.tokenizer.vocab_size if self.tokenizer is not None else None  # type: ignore[attr-defined]
        self.sample_vocab: int | None = n_tok if n_tok is not None and n_tok < self.config.vocab else None
        cfg = self.config
        head = weights.embed if weights.head is None else weights.head
        wbytes = sum(_nbytes(t) for t in mats) + _nbytes(head)
        self.info = ModelInfo(
            path=weights.source,
            arch=cfg.file_arch or cfg.arch,  # what the file says (the block may be another's)
            file_type=weights.file_type,
            n_layers=cfg.n_layers,
            dim=cfg.dim,
            hidden=cfg.hidden,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.n_kv_heads,
            head_dim=cfg.head_dim,
            vocab=cfg.vocab,
            context=self.context,
            quant_types=tuple(sorted({t.source_type for t in mats})),
            isa=self.core.isa,
            threads=self.threads,
            weight_bytes=int(wbytes),
            memory=weights.memory,
            head_type=head_type or _type_name(head),
            head_approx=head_type is not None,
            kv=kv,
            a48=self.a48,
            ffn_act=cfg.act,
            activations="f32" if "activations" in no_effect else activations,
            no_effect=tuple(no_effect),
            ternary=layout_name(t.layout for t in mats if isinstance(t, TernaryTensor)),
        )

    # -- sessions ------------------------------------------------------------------------------
    def session(
        self,
        *,
        context: int | None = None,
        threads: int | None = None,
        kv: str | None = None,
        a48: bool | None = None,
    ) -> Session:
        """A new conversation state with its own KV cache and thread pool. Each option defaults to
        the one the model was loaded with and is checked as load_model checks it: context (tokens,
        at most the model's own positions), threads, kv (the KV cache's type) and a48 (BitNet
        a4.8 activations). These live in the session, not in the weights: changing them takes a
        new session (milliseconds), not a new load (seconds for a file that is repacked)."""
        threads = self.threads if threads is None else threads
        kv = self.kv if kv is None else kv
        a48 = self.a48 if a48 is None else a48
        _check_load_options(threads, a48, kv)
        _check_kv_fits(self.config, kv)
        ctx = self.context if context is None else self._context(context)
        return Session(self, ctx, threads=int(threads), kv=kv, a48=bool(a48))

    def _context(self, context: object) -> int:
        if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 1:
            raise ValueError(f"context must be a whole number of tokens >= 1, not {context!r}")
        return int(min(context, self.config.context))  # no position past what the model was made for

    def _default_session(self) -> Session:
        with self._sessions:
            if self._default is None:
                self._default = self.session()
            return self._default

    def _chat_session(self) -> Session:
        with self._sessions:
            if self._chat is None:
                self._chat = self.session()
            return self._chat

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """float32 [len(ids), vocab] logits of every position, in a fresh context. cancel() from
        another thread stops it with CancelledError."""
        ids = _as_ids(token_ids, self.config.vocab)
        s = self._default_session()
        if len(ids) > s.context:  # at once, with the true count (the pieces would meet it at the end)
            raise ContextFullError(
                f"{len(ids)} positions needed but the context holds {s.context}; "
                "pass fewer ids or load the model with a larger context"
            )
        with s._exclusive():  # a generate() on the same session (another thread) raises instead
            s.reset()
            s._clear_cancel()  # a cancel() that came when nothing ran (after a reply) is not for this
            try:
                out = _run_prompt(s.state, ids, 0, all_logits=True)
            finally:
                s._history = []  # the cache holds ids, but logits() promises a fresh context each time
        return out

    def generate(self, prompt_ids: Sequence[int], **kwargs: object) -> Generation:
        """Generates from a fresh context; see Session.generate for the arguments."""
        return self._default_session().generate(prompt_ids, fresh=True, **kwargs)  # type: ignore[arg-type]

    def chat(self, messages: Sequence[Mapping[str, str]], **kwargs: object) -> Generation:
        """Replies to a conversation (dicts with "role" and "content") in the model's chat format,
        streaming text to on_text(str). Keeps one KV cache across calls, so the next turn of the
        same conversation only runs its new tokens. See Session.chat."""
        return self._chat_session().chat(messages, **kwargs)  # type: ignore[arg-type]

    def cancel(self) -> None:
        """Stops the generation running on the default or chat session (from any thread)."""
        with self._sessions:
            sessions = (self._default, self._chat)
        for s in sessions:
            if s is not None:
                s.cancel()


def _type_name(t: object) -> str:
    if isinstance(t, np.ndarray):
        return {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32"}.get(t.dtype, str(t.dtype))
    return str(getattr(t, "type_name", getattr(t, "source_type", "?")))


def _nbytes(t: object) -> int:
    """Bytes the forward pass reads for one matrix."""
    if isinstance(t, np.ndarray):
        return int(t.nbytes)
    if isinstance(t, TernaryTensor):
        return int(t.packed.nbytes)
    assert isinstance(t, QuantTensor)
    return int(t.data.nbytes)


def reply_tail(stream: Any, *, cut: bool) -> str:
    """The text the stream still holds when a reply ends. A reply cut by its length, the context
    or Stop may end inside a character (an emoji spans several tokens): those bytes are dropped,
    not shown as U+FFFD; a reply the model ended itself keeps whatever it wrote."""
    if cut and stream.pending:
        stream.flush()
        return ""
    return str(stream.flush())


def check_prompt_size(tokenizer: Any, messages: Iterable[Mapping[str, Any]], context: int) -> None:
    """ContextFullError, without tokenizing, for messages whose text alone is more than `context`
    tokens could spell (a pasted file of many megabytes: tokenizing it would take seconds and
    gigabytes before the context check refused it)."""
    size = sum(
        len(c.encode("utf-8", "surrogatepass")) for m in messages if isinstance(c := m.get("content"), str)
    )
    at_least = size // tokenizer.max_token_bytes
    if at_least > context:
        raise ContextFullError(
            f"the messages hold {size} bytes of text, at least {at_least} tokens, but the context holds "
            f"{context}; shorten them or start a new conversation"
        )


def _run_prompt(
    state: Any,
    ids: np.ndarray,
    pos: int,
    *,
    all_logits: bool = False,
    on_prompt: Callable[[int, int], object] | None = None,
) -> Any:
    """state.forward(ids, pos) in pieces of PROMPT_BATCH tokens (the pieces the C side runs
    anyway: the same results), back in Python between them, where a Ctrl-C is seen: in one call a
    long prompt held KeyboardInterrupt for 20-40 s. Raises CancelledError when cancel() stopped it.
    on_prompt(done, total) is called after each piece but the last (the tokens run so far)."""
    n = len(ids)
    if not all_logits:
        last = None
        for i in range(0, n, PROMPT_BATCH):
            end = min(n, i + PROMPT_BATCH)
            last = state.forward(ids[i:end], pos + i, want_logits=end == n)
            if on_prompt is not None and end < n:
                on_prompt(end, n)
        return last
    out = None  # filled piece by piece (a list joined at the end held all the logits twice)
    for i in range(0, n, PROMPT_BATCH):
        end = min(n, i + PROMPT_BATCH)
        piece = state.forward(ids[i:end], pos + i, all_logits=True)
        if end == n and out is None:
            return piece
        if out is None:
            out = np.empty((n, piece.shape[1]), dtype=piece.dtype)
        out[i:end] = piece
        piece = None  # freed before the next piece is made
    return out


def _check_messages(messages: object) -> None:
    """ValueError unless messages is a non-empty list of {"role": str, "content": str}: a
    content that is not text (OpenAI-style parts, None) reached the model as its Python repr, and
    its text escaped the check that keeps typed control tokens plain."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ValueError('messages must be a list of {"role": ..., "content": ...} dicts')  # noqa: TRY004
    if not messages:
        raise ValueError("messages is empty: there is nothing to reply to")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(  # noqa: TRY004 - the API's bad arguments are ValueErrors
                f'messages[{i}] must be a {{"role": ..., "content": ...}} dict, not {short_repr(m)}'
            )
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not role:
            raise ValueError(f"messages[{i}]: role must be a non-empty string, not {short_repr(role)}")
        if not isinstance(content, str):
            hint = " (join the text of content parts into one string)" if isinstance(content, list) else ""
            raise ValueError(  # noqa: TRY004
                f"messages[{i}] ({short_text(role, 40)}): content must be a string, not "
                f"{short_repr(content)}{hint}"
            )


def _as_ids(ids: Iterable[int], vocab: int) -> np.ndarray:
    if isinstance(ids, (str, bytes)):
        raise ValueError("token ids must be a sequence of integers, not text (chat() takes text)")  # noqa: TRY004
    items = list(ids)
    # 1.7 would become 1 and True 1 without a word: only whole numbers are ids
    bad = next(
        (i for i in items if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer))), None
    )
    if bad is not None:
        raise ValueError(f"token ids must be integers, not {bad!r}")
    if any(not -(2**62) < int(i) < 2**62 for i in items):
        raise ValueError(f"token ids must be in [0, {vocab})")
    arr = np.asarray(items, dtype=np.int64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("token ids must be a non-empty 1-D sequence")
    if arr.min() < 0 or arr.max() >= vocab:
        raise ValueError(f"token ids must be in [0, {vocab})")
    return arr.astype(np.int32)


class Session:
    """A conversation's KV cache and the tokens it holds.

    generate() takes the WHOLE token sequence of the conversation so far (e.g. the rendered chat);
    the longest prefix already in the cache is reused and only the rest is run."""

    def __init__(
        self,
        model: Model,
        context: int,
        *,
        threads: int | None = None,
        kv: str | None = None,
        a48: bool | None = None,
    ) -> None:
        """Use Model.session(), which checks the options; None takes the model's."""
        self.model = model
        self.context = context
        self.kv = model.kv if kv is None else kv
        self.a48 = model.a48 if a48 is None else a48
        try:
            self.state = _core.CoreState(
                model.core,
                context,
                PROMPT_BATCH,
                model.threads if threads is None else threads,
                self.kv,
                self.a48,
            )
        except OutOfMemoryError:
            need = kv_cache_bytes(model.config, self.kv, context)
            raise OutOfMemoryError(
                f"{Path(model.weights.source).name}: not enough memory for the conversation state "
                f"(its KV cache for {context} positions needs {megabytes(need)}); close other programs "
                "or use a shorter context",
                needed=need,
                part="session",
            ) from None
        self._history: list[int] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def tokens(self) -> list[int]:
        return list(self._history)

    @property
    def kv_bytes(self) -> int:
        return int(self.state.kv_bytes)

    @property
    def threads(self) -> int:
        """The threads this session's pool runs the forward pass on (the caller's included)."""
        return int(self.state.threads)

    @property
    def pool_stats(self) -> dict[str, int]:
        """This session's thread pool since it began: {"jobs", "late", "solo"}: the pool's jobs (a
        group of matrices, attention or the head of one forward step), the jobs whose end waited
        on a worker whose core another program took, and the jobs the calling thread then ran
        alone (engine/kernels/threadpool.h). All zero at one thread."""
        return {k: int(v) for k, v in self.state.pool_stats.items()}

    def reset(self) -> None:
        self._history = []

    def cancel(self) -> None:
        """Thread-safe: the running generate() returns within one token (or one prompt layer)."""
        self._stop.set()
        self.state.cancel(True)

    def _clear_cancel(self) -> None:
        self._stop.clear()
        self.state.cancel(False)

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.1,
        seed: int | None = None,
        stop_ids: Iterable[int] | None = None,
        on_token: Callable[[int], object] | None = None,
        on_prompt: Callable[[int, int], object] | None = None,
        stop_event: threading.Event | None = None,
        fresh: bool = False,
    ) -> Generation:
        """Streams tokens after prompt_ids to on_token (return False from it to stop).

        fresh: start from an empty cache (what Model.generate does), not from the history.

        on_prompt(done, total): while a long prompt runs (more than PROMPT_BATCH tokens not in
        the cache), called on this thread after each batch with the prompt tokens run so far and
        the number to run (cached tokens are in neither); not called for the last batch, which
        ends in the first token.

        cancel() stops the generation that is running when it is called; one that lands just
        before a generation begins is cleared by it. A caller whose stop may come that early (a
        window's Stop pressed with Enter) passes stop_event, set together with cancel(): when it
        is set by the time the generation begins, nothing runs and the result is "cancelled".

        stop_ids default to the model's end-of-sequence ids; a stop id ends the reply and is not
        part of it (nor of the cache's history). The reply is kept in the cache, so the next call
        with prompt = history + reply + new message runs only the new part. Only ids the model's
        tokenizer has are generated (Model.sample_vocab). Sampling values that are not finite
        numbers raise ValueError naming the argument; NaN or infinite logits (a damaged model)
        raise NonFiniteLogitsError."""
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 0:
            raise ValueError(f"max_tokens must be an integer >= 0, not {max_tokens!r}")
        params = SamplingParams(temperature, top_k, top_p, min_p, repeat_penalty, seed=seed)
        sampler = Sampler(params, self.model.sample_vocab)
        if stop_ids is None:
            stops = set(self.model.stop_ids)
        else:
            if isinstance(stop_ids, (str, bytes)) or not isinstance(stop_ids, Iterable):
                raise ValueError(f"stop_ids must be a list of token ids, not {short_repr(stop_ids)}")
            stop_list = list(stop_ids)
            try:
                stops = {int(t) for t in _as_ids(stop_list, self.model.config.vocab)} if stop_list else set()
            except ValueError as e:
                raise ValueError(f"stop_ids: {e}") from None
        if on_prompt is not None and not callable(on_prompt):
            raise ValueError(f"on_prompt must be a function of (done, total), not {short_repr(on_prompt)}")
        if stop_event is not None and not callable(getattr(stop_event, "is_set", None)):
            raise ValueError(f"stop_event must be a threading.Event (or None), not {short_repr(stop_event)}")
        ids = _as_ids(prompt_ids, self.model.config.vocab)
        with self._exclusive():
            if fresh:
                self.reset()
            return self._generate(ids, max_tokens, sampler, stops, on_token, stop_event, on_prompt)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The session for one caller at a time: a second one (another thread) gets EngineError
        instead of mixing its tokens into the running one's cache."""
        if not self._lock.acquire(blocking=False):
            raise EngineError("this session is already generating")
        try:
            yield
        finally:
            self._lock.release()

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        on_text: Callable[[str], object] | None = None,
        raw: bool = False,
        **kwargs: object,
    ) -> Generation:
        """Renders messages with the model's chat template (raw=True: the single message's content
        is the prompt as is), generates, and streams the decoded reply to on_text. Text is never
        cut inside a UTF-8 character. Sampling arguments as for generate()."""
        tok = self.model.tokenizer
        fmt = self.model.chat_format
        if tok is None or fmt is None:
            raise EngineError(
                f"{self.model.info.path}: this model has no tokenizer; pass token ids to generate()"
            )
        _check_messages(messages)
        check_prompt_size(tok, messages, self.context)
        plain = False  # the plain chat format made the prompt
        if raw:
            text = "".join(m["content"] for m in messages)
            if not text:
                raise ValueError("the prompt is empty (raw=True sends the messages' text as it is)")
            ids = tok.encode(text)  # type: ignore[attr-defined]
        else:
            ids, plain = fmt.encode_prompt(tok, messages)  # type: ignore[attr-defined]
        stream = tok.stream(skip_special=True)  # type: ignore[attr-defined]
        parts: list[str] = []
        user_cb = kwargs.pop("on_token", None)
        # The plain format has no end-of-turn token: a model goes on to write the user's next turn.
        # "\nUser:" ends the reply there; text that may begin it is held back until it cannot.
        held = [""]
        ended = [False]

        def emit(text: str) -> None:
            if text:
                parts.append(text)
                if on_text is not None:
                    on_text(text)

        def on_token(t: int) -> object:
            piece = stream.feed(t)
            if piece and plain:
                text = held[0] + piece
                at = text.find(PLAIN_TURN)
                if at >= 0:
                    emit(text[:at].rstrip())
                    held[0], ended[0] = "", True
                    return False
                keep = next(
                    (n for n in range(len(PLAIN_TURN) - 1, 0, -1) if text.endswith(PLAIN_TURN[:n])), 0
                )
                emit(text[: len(text) - keep])
                held[0] = text[len(text) - keep :]
            elif piece:
                emit(piece)
            return user_cb(t) if callable(user_cb) else None

        gen = self.generate(ids, on_token=on_token, **kwargs)  # type: ignore[arg-type]
        if ended[0] and gen.stats is not None:
            gen.stats = dataclasses.replace(gen.stats, stop_reason="stop")
        else:
            emit(held[0] + reply_tail(stream, cut=gen.stats is not None and gen.stats.stop_reason != "stop"))
        gen.text = "".join(parts)
        return gen

    def _generate(
        self,
        ids: np.ndarray,
        max_tokens: int,
        sampler: Sampler,
        stops: set[int],
        on_token: Callable[[int], object] | None,
        stop_event: threading.Event | None = None,
        on_prompt: Callable[[int, int], object] | None = None,
    ) -> Generation:
        self._clear_cancel()
        t0 = time.perf_counter()
        # after the clear: a stop set before it is seen here, one set after it reaches the flags
        if stop_event is not None and stop_event.is_set():
            out = Generation()
            out.stats = Stats(0, 0.0, 0, 0.0, 0.0, 0, "cancelled")
            return out
        # reuse the cached prefix; at least the last prompt token is run to get its logits
        common = 0
        hist = self._history
        limit = min(len(hist), len(ids) - 1)
        while common < limit and hist[common] == ids[common]:
            common += 1
        todo = ids[common:]
        if len(ids) > self.context or (len(ids) == self.context and max_tokens > 0):
            raise ContextFullError(
                f"the prompt has {len(ids)} tokens but the context holds {self.context}; "
                "start a new conversation or raise the context size"
            )
        self._history = hist[:common]
        out = Generation()
        reason = "length"
        try:
            logits = _run_prompt(self.state, todo, common, on_prompt=on_prompt)
        except CancelledError:
            # the prompt was not finished and none of it is kept: 0 prompt tokens, no TTFT
            ms = (time.perf_counter() - t0) * 1e3
            out.stats = Stats(0, ms, 0, 0.0, 0.0, common, "cancelled")
            return out
        self._history = [int(t) for t in ids]
        t1 = time.perf_counter()
        prompt_ms = (t1 - t0) * 1e3
        ttft = prompt_ms
        pos = len(ids)
        runs = 0  # generated tokens run through the model (the decode passes)
        for i in range(max_tokens):
            if self._stop.is_set():
                reason = "cancelled"
                break
            try:
                tok = sampler.sample(logits, self._history)
            except NonFiniteLogitsError as e:
                raise NonFiniteLogitsError(f"{self.model.info.path}: {e}") from None
            if i == 0:
                ttft = (time.perf_counter() - t0) * 1e3
            if tok in stops:
                reason = "stop"
                break
            out.tokens.append(tok)
            if on_token is not None and on_token(tok) is False:
                reason = "cancelled"
                break
            if i == max_tokens - 1:
                break  # the last token is not run: a follow-up turn runs it with its prompt
            if pos >= self.context:
                reason = "context"
                break
            try:
                logits = self.state.forward([tok], pos)
            except CancelledError:
                reason = "cancelled"
                break
            # the history mirrors the cache exactly: only tokens that were run are in it
            self._history.append(tok)
            runs += 1
            pos += 1
        t2 = time.perf_counter()
        out.stats = Stats(
            prompt_tokens=len(todo),
            prompt_ms=prompt_ms,
            tokens_generated=len(out.tokens),
            decode_ms=(t2 - t1) * 1e3 - (ttft - prompt_ms),
            ttft_ms=ttft,
            cached_tokens=common,
            stop_reason=reason,
            decode_runs=runs,
        )
        return out
