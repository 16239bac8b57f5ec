"""EngineWorker: the one QObject, on the one QThread, that owns the engine.

Only this object calls into trit.engine (load_model, Session.chat); the window talks to it through
requests (load/generate/unload, delivered as queued signals so they run on the worker thread) and
hears back through signals that carry plain data (str, dict). stop() is the exception: it runs on
the caller's thread and only sets a threading.Event and calls Session.cancel(), both thread-safe,
because the worker thread is busy inside the generation it is meant to stop.

A reply is written into the ConversationStore here (ReplyWriter), not by the window: if the user
switches to another conversation mid-reply, the text still lands in the conversation it belongs
to, and a crash mid-reply leaves a 'stopped' message with the text of the last flush.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot
from trit.app.core.meters import EnergyMeter, ReplyMeter, memory_reading
from trit.app.core.sampling import Sampling
from trit.app.core.store import ConversationStore, StoreError

PROGRESS_INTERVAL = 0.1  # s between progress signals (the live chart's resolution)
# load_model options that live in the session (Model.session takes them): a change of only these
# and of threads / context builds a new session on the loaded model instead of loading it again
SESSION_OPTIONS = ("kv", "a48")


def fit_context(
    messages: list[dict[str, str]],
    count: Any,
    context: int,
    reply_room: int,
    *,
    at_least: int = 0,
    slack: int = 0,
    size: Any = None,
) -> tuple[list[dict[str, str]], int]:
    """The messages without their oldest turns, so that the prompt (count(messages) tokens) leaves
    reply_room tokens of the context free. Whole messages are left out from the front, never the
    system prompt and never the last message, and the kept part never opens with a reply. At least
    `at_least` are left out (the cut of the conversation's previous turn: keeping it lets the
    engine reuse its cached prompt); a new cut leaves `slack` more tokens free, so that the next
    turns fit behind the same cut. Returns (messages, how many were left out); when even the system
    prompt and the last message do not fit, they are returned alone (the engine then says the
    prompt is too long).

    size(message), when given, is a cheap lower bound of the tokens one message adds to the
    prompt (its text's tokens). The sizes are summed from the newest end until they pass the
    budget, so count() is only ever asked about about a context's worth of messages: counting the
    whole of a 2,000-message conversation first took 6-11 s on the worker thread (holding the GIL
    most of it) before every first reply after a load."""
    head = [m for m in messages[:1] if m.get("role") == "system"]
    body = messages[len(head) :]
    budget = context - reply_room
    last = max(len(body) - 1, 0)

    def cut(d: int) -> int:  # a reply must not open the kept part: templates expect a user turn
        while d < last and body[d].get("role") == "assistant":
            d += 1
        return d

    drop = cut(min(max(at_least, 0), last))
    floor = drop  # the suffixes from here on are the ones that may fit
    if size is not None:
        total = sum(size(m) for m in head)
        d = len(body)
        while d > drop and total <= budget:
            d -= 1
            total += size(body[d])
        if total > budget:  # body[d:] surely does not fit: no count of it (or of more) is needed
            floor = d
    if floor > drop or count(head + body[drop:]) > budget:
        target = budget - slack

        def fits(d: int) -> bool:
            return count(head + body[cut(d) :]) <= target

        # The fewest left out that fits the target (count shrinks as more go), searched from the
        # newest end: the kept part is about a context long, so the counts stay that short however
        # long the conversation is (a search from the front counted half of it, then a quarter ...).
        lo, hi, step = max(drop, floor) + 1, last, 1  # the answer is in [lo, hi]
        while hi - step >= lo and fits(hi - step):
            hi -= step
            step *= 2
        lo = max(lo, hi - step + 1)
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid + 1
        drop = cut(min(lo, last))
    return head + body[drop:], drop


class _FitStopped(Exception):
    """Stop was pressed while the conversation was being fitted to the context."""


def _load_fix(e: BaseException) -> str:
    """What the user can do about a failed load (engine messages already say it when they can)."""
    from trit.engine.errors import (
        ModelFormatError,
        ModelNotFoundError,
        OutOfMemoryError,
        UnsupportedCPUError,
        UnsupportedOptionError,
    )

    if isinstance(e, OutOfMemoryError) and e.part == "session":  # the KV cache: the context's size
        return "Close other programs, or lower Context size in Settings (Ctrl+,) and load the model again."
    if isinstance(e, (OutOfMemoryError, MemoryError)):
        return "Close other programs and load the model again, or pick a smaller model in Models."
    if isinstance(e, UnsupportedCPUError):
        return "This CPU cannot run this build of Trit; see the README for supported CPUs."
    if isinstance(e, (FileNotFoundError, ModelNotFoundError)):
        return "The file was moved or deleted; pick the model again in Models."
    if isinstance(e, ModelFormatError):
        return "Pick another model file in Models, or download one from the catalog."
    if isinstance(e, UnsupportedOptionError) and e.option == "kv":  # the one the engine raises
        return "Choose another Conversation memory in Settings (Ctrl+,) for this model."
    return "Pick another model in Models."


class EngineWorker(QObject):
    """Requests (call from the GUI thread): load(path, threads, context, **load_model options),
    generate(request), stop(),
    unload(), shutdown(). A generate request is a dict: {"conversation_id": int, "messages":
    [{"role", "content"}, ...], "sampling": Sampling.to_dict()}.

    Signals:
      loaded(dict)            model info: path, name, arch, isa, threads, file_bytes, kv_bytes, ...
                              (threads, context, kv, a48: the session's); after load(keep_model=True)
                              kept the model: applied=True, and problem / problem_fix (str) when the
                              new options could not be used and the old ones were kept
      load_failed(str, str)   message, fix
      started(dict)           conversation_id, message_id of the reply being written
      token(str)              a piece of the reply text
      prompt_progress(dict)   conversation_id, done, total: prompt tokens run so far, of those to
                              run, while a prompt longer than one batch (128 tokens) is read
      progress(dict)          tokens, seconds, tps (recent), watts (None unless measured)
      finished(dict)          conversation_id, message_id, status, record (ReplyRecord dict), memory
      failed(str, str)        message, fix (generation failed; the partial reply is kept 'stopped',
                              an empty one is removed)
      context_trimmed(dict)   conversation_id, left_out: the oldest messages the model will not see
                              this time (the conversation outgrew the context; fit_context)
      chat_warning(str)       the model's chat template failed while a prompt was made from it (the
                              plain format is used); loaded() carries one found at load
      unloaded()
      busy_changed(bool)
    """

    loaded = Signal(dict)
    load_failed = Signal(str, str)
    started = Signal(dict)
    token = Signal(str)
    prompt_progress = Signal(dict)
    progress = Signal(dict)
    finished = Signal(dict)
    failed = Signal(str, str)
    context_trimmed = Signal(dict)
    chat_warning = Signal(str)
    unloaded = Signal()
    busy_changed = Signal(bool)

    # requests, emitted on the caller's thread and delivered (queued) on the worker thread
    _load_request = Signal(str, int, int, dict, bool)
    _generate_request = Signal(dict)
    _unload_request = Signal()

    def __init__(
        self,
        store: ConversationStore,
        *,
        energy: EnergyMeter | None = None,
        context: int | None = None,
    ) -> None:
        super().__init__()  # no parent: it is moved to its own thread
        self._store = store
        self._energy = energy
        self._context = context
        self._cuts: dict[int, int] = {}  # conversation id -> messages left out of its last prompt
        self._sizes: dict[str, int] = {}  # message text -> its tokens, for fit_context's size
        self._model: Any = None  # trit.engine Model, only touched on the worker thread
        self._session: Any = None
        self._path = ""
        self._weight_options: dict[str, Any] = {}  # the load_model options the model was loaded with
        self._chat_warning = ""  # the chat template's warning the window has been told
        self._stop = threading.Event()
        self._busy = False
        self._lock = threading.Lock()  # guards _session for stop() from another thread
        self._thread = QThread()
        self._thread.setObjectName("trit-engine")
        self.moveToThread(self._thread)
        self._load_request.connect(self._do_load)
        self._generate_request.connect(self._do_generate)
        self._unload_request.connect(self._do_unload)
        self._thread.start()

    # -- requests (any thread) -----------------------------------------------------------------
    def load(
        self,
        path: str | Path,
        threads: int | None = None,
        context: int | None = None,
        *,
        keep_model: bool = False,
        **options: Any,
    ) -> None:
        """Loads path in place of the current model (after any queued request). context: None
        = the one given to the constructor; options: load_model's other keyword arguments
        (activations, head, kv, a48: Settings.engine_options()). keep_model: when path is the
        loaded model and its weight options (those not in SESSION_OPTIONS) are the ones it was
        loaded with, only a new session is built with the new threads, context, kv and a48
        (milliseconds; a reload repacked a TQ1_0 2B4T file for 13-18 s); `loaded` then carries
        applied=True."""
        ctx = context if context is not None else self._context
        self._load_request.emit(str(path), int(threads or 0), int(ctx or 0), dict(options), bool(keep_model))

    def generate(self, request: dict[str, Any]) -> None:
        # cleared here, not on the worker thread: a Stop pressed before the request starts counts
        self._stop.clear()
        self._generate_request.emit(dict(request))

    def stop(self) -> None:
        """Stops the running (or queued) generation within one token; safe from any thread."""
        self._stop.set()
        with self._lock:
            session = self._session
        if session is not None:
            session.cancel()

    def unload(self) -> None:
        self.stop()
        self._unload_request.emit()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """stop, quit, wait: the generation ends within one token, then the thread's loop."""
        self.stop()
        if not self._thread.isRunning():
            return True
        self._unload_request.emit()  # frees the model on its own thread before the loop ends
        self._thread.quit()
        return bool(self._thread.wait(timeout_ms))

    @property
    def thread_running(self) -> bool:
        return bool(self._thread.isRunning())

    @property
    def model_path(self) -> str:
        return self._path

    # -- worker thread ---------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.busy_changed.emit(busy)

    @Slot(str, int, int, dict, bool)
    def _do_load(
        self, path: str, threads: int, context: int, options: dict, keep_model: bool = False
    ) -> None:
        self._set_busy(True)
        try:
            t0 = time.perf_counter()
            keep = (
                keep_model
                and self._model is not None
                and self._path == path
                and self._weights_same(options, self._weight_options)
            )
            if not keep:
                self._drop_model()
            try:
                info = (
                    self._new_session(threads, context, options)
                    if keep
                    else self._open(path, threads, context, options)
                )
            except Exception as e:  # noqa: BLE001  # any failure becomes a message in the window
                self._drop_model()  # (a new session that failed twice leaves no session to chat with)
                # (the session's KV cache included: it was allocated outside this, and an
                # OutOfMemoryError left the window on "Loading ..." for ever)
                msg, name = str(e) or type(e).__name__, Path(path).name
                msg = msg.removeprefix(f"{path}: ").removeprefix(f"{name}: ")  # the engine's may name it
                self.load_failed.emit(f"Cannot open {name}: {msg}", _load_fix(e))
                return
            if info is None:
                self.load_failed.emit(
                    f"{Path(path).name} has no tokenizer, so it cannot chat.",
                    "Pick a model that includes its tokenizer (GGUF files from the catalog do) in Models.",
                )
                return
            info["load_s"] = time.perf_counter() - t0
            self.loaded.emit(info)
        finally:
            self._set_busy(False)

    def _open(self, path: str, threads: int, context: int, options: dict) -> dict[str, Any] | None:
        """Loads the model and its session and makes them the worker's; returns the model's info
        for `loaded`, or None for a model without a tokenizer. Any failure raises (nothing kept)."""
        from trit.engine import load_model

        model = load_model(path, threads=threads or None, context=context or None, **options)
        if model.tokenizer is None:
            return None
        session = model.session()
        with self._lock:
            self._model, self._session, self._path = model, session, path
        self._weight_options = {k: v for k, v in options.items() if k not in SESSION_OPTIONS}
        self._chat_warning = getattr(model.chat_format, "warning", "") or ""
        return self._info()

    def _weights_same(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        """Whether load_model options a and b give the loaded model the same weights: the session's
        options aside, and those the model's info names as changing nothing on it (no_effect: Fast
        activations on a model without llama.cpp-type layers ...)."""
        skip = {*SESSION_OPTIONS, *self._model.info.no_effect}
        return {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}

    def _new_session(self, threads: int, context: int, options: dict) -> dict[str, Any]:
        """Replaces the session of the loaded model with one built with these threads, context, kv
        and a48, and returns the info for `loaded` (applied=True). The old session goes first, its
        KV cache and thread pool with it: both at once may not fit (2B4T's f32 cache at 4096
        positions is 629 MB). When the new one cannot be made (a kv this model cannot take, no
        memory for the context), the old options are built again and the info's `problem` says
        why; when even that fails, this raises (the caller drops the model)."""
        model = self._model
        with self._lock:
            old, self._session = self._session, None
        before = {"context": old.context, "threads": old.threads, "kv": old.kv, "a48": old.a48}
        del old  # the last reference: the C state (KV cache, pool threads) is freed here
        self._cuts = {}  # the cuts kept the old cache's prompt; the new cache is empty
        problem = fix = ""
        try:
            session = model.session(
                context=context or None,
                threads=threads or None,
                kv=options.get("kv"),
                a48=options.get("a48"),
            )
        except Exception as e:  # noqa: BLE001  # said in the window; the model keeps its old options
            problem, fix = str(e) or type(e).__name__, _load_fix(e)
            session = model.session(**before)
        with self._lock:
            self._session = session
        info = self._info()
        info.update(applied=True, problem=problem, problem_fix=fix)
        return info

    def _info(self) -> dict[str, Any]:
        """The loaded model's info for `loaded`: the session's threads, context, kv and a48 (what
        is in effect), and the memory it holds."""
        model, session, path = self._model, self._session, self._path
        info = dataclasses.asdict(model.info)
        mem = memory_reading(path, session)
        info.update(
            name=Path(path).name,
            file_bytes=mem.model_file_bytes,
            kv_bytes=mem.kv_bytes,
            rss_bytes=mem.rss_bytes,
            chat_warning=getattr(model.chat_format, "warning", "") or "",
            threads=session.threads,
            context=session.context,
            kv=session.kv,
            a48=session.a48,
        )
        return info

    def _drop_model(self) -> None:
        self._cuts = {}  # another model counts tokens (and holds a context) of its own
        self._sizes = {}
        with self._lock:
            had = self._model is not None or self._session is not None
            self._model = self._session = None
            self._path = ""
        self._weight_options = {}
        if had:  # the memory readout shows what the next model takes, not the last one's leftovers
            from trit.engine import release_free_memory

            release_free_memory()

    @Slot()
    def _do_unload(self) -> None:
        had = self._model is not None
        self._drop_model()
        if had:
            self.unloaded.emit()

    def _fit(
        self, conv_id: int, messages: list[dict[str, str]], sampling: Sampling
    ) -> tuple[list[dict[str, str]], int]:
        """fit_context with this model's chat format and context; the reply gets room for its
        max_tokens, up to half of the context."""
        session = self._session
        model = getattr(session, "model", None)
        tok, fmt = getattr(model, "tokenizer", None), getattr(model, "chat_format", None)
        if session is None or tok is None or fmt is None:
            return messages, 0
        context = int(session.context)
        if messages:  # the newest message alone too long: said at once, before any tokenizing
            from trit.engine.model import check_prompt_size

            check_prompt_size(tok, messages[-1:], context)
        room = max(1, min(int(sampling.max_tokens), context // 2))
        sizes = self._sizes

        def count(ms: list[dict[str, str]]) -> int:
            if self._stop.is_set():  # Stop while fitting: the reply will not run, stop counting
                raise _FitStopped
            return len(fmt.encode(tok, ms))

        def size(m: dict[str, str]) -> int:  # the text's tokens, once per text while this model is loaded
            text = str(m.get("content") or "")
            n = sizes.get(text)
            if n is None:
                if self._stop.is_set():
                    raise _FitStopped
                if len(sizes) >= 100_000:  # (a fit reads about a context's worth of messages)
                    sizes.clear()
                n = sizes[text] = len(tok.encode(text, add_bos=False))
            return n

        try:
            kept, left_out = fit_context(
                messages,
                count,
                context,
                room,
                at_least=self._cuts.get(conv_id, 0),
                slack=context // 4,
                size=size,
            )
        except _FitStopped:
            return messages, 0  # (not run: the caller sees the stop)
        self._cuts[conv_id] = left_out
        return kept, left_out

    def _report_chat_warning(self) -> None:
        fmt = getattr(getattr(self._session, "model", None), "chat_format", None)
        warning = getattr(fmt, "warning", None) or ""
        if warning and warning != self._chat_warning:
            self._chat_warning = warning
            self.chat_warning.emit(warning)

    @Slot(dict)
    def _do_generate(self, request: dict[str, Any]) -> None:
        conv_id = int(request["conversation_id"])
        if self._session is None:
            self.failed.emit("No model is loaded.", "Open Models and pick a model, then send again.")
            return
        sampling = Sampling.from_dict(request.get("sampling") or {})
        self._set_busy(True)
        writer = None
        meter = ReplyMeter(self._energy)
        try:
            writer = self._store.begin_reply(conv_id)
            self.started.emit({"conversation_id": conv_id, "message_id": writer.message_id})
            meter.start()
            t0 = time.monotonic()
            state = {"n": 0, "last_t": t0, "last_n": 0}

            def on_text(piece: str) -> None:
                writer.append(piece)
                self.token.emit(piece)

            def on_token(_tok: int) -> bool:
                state["n"] += 1
                now = time.monotonic()
                if state["n"] == 1:
                    # the speed is measured from the first token: from the start, the chart's first
                    # point counted the fitting and the prompt as decode time (0.1 tok/s for 50)
                    state["last_t"], state["last_n"] = now, 1
                elif now - state["last_t"] >= PROGRESS_INTERVAL:
                    tps = (state["n"] - state["last_n"]) / (now - state["last_t"])
                    self.progress.emit(
                        {
                            "tokens": state["n"],
                            "seconds": now - t0,
                            "tps": tps,
                            "watts": self._energy.current_watts() if self._energy is not None else None,
                        }
                    )
                    state["last_t"], state["last_n"] = now, state["n"]
                return not self._stop.is_set()  # False ends the reply as "cancelled"

            def on_prompt(done: int, total: int) -> None:
                self.prompt_progress.emit({"conversation_id": conv_id, "done": done, "total": total})

            try:
                messages, left_out = self._fit(conv_id, list(request.get("messages") or []), sampling)
            finally:  # the fitting renders the template: a failure of it shows while the reply runs
                self._report_chat_warning()
            if left_out:
                self.context_trimmed.emit({"conversation_id": conv_id, "left_out": left_out})
            if self._stop.is_set():  # stopped before it started
                gen_stats = None
            else:
                fitting_ms = (time.monotonic() - t0) * 1e3
                gen = self._session.chat(
                    messages,
                    on_text=on_text,
                    on_token=on_token,
                    on_prompt=on_prompt,
                    stop_event=self._stop,  # a Stop pressed while the prompt is encoded still counts
                    **sampling.engine_kwargs(),
                )
                gen_stats = gen.stats
                if gen_stats is not None and gen_stats.tokens_generated:
                    # the wait the user saw: the engine counts from its call, after the fitting
                    gen_stats = dataclasses.replace(gen_stats, ttft_ms=gen_stats.ttft_ms + fitting_ms)
            if gen_stats is None:
                from trit.engine.model import Stats

                gen_stats = Stats(0, 0.0, 0, 0.0, 0.0, 0, "cancelled")
            rec = dataclasses.replace(
                meter.finish(gen_stats),
                model=Path(self._path).name if self._path else "",
                left_out=left_out,  # the chat marks the messages above the oldest one it saw
            )
            stopped = gen_stats.stop_reason == "cancelled"
            msg = writer.stop(rec.to_dict()) if stopped else writer.finish(rec.to_dict())
            mem = memory_reading(self._path, self._session)
            self.finished.emit(
                {
                    "conversation_id": conv_id,
                    "message_id": msg.id,
                    "status": msg.status,
                    "text": msg.content,
                    "record": rec.to_dict(),
                    "memory": dataclasses.asdict(mem),
                }
            )
        except Exception as e:  # noqa: BLE001  # the window shows it; the partial reply is kept
            with contextlib.suppress(Exception):  # the reply's own error is the one to show
                meter.cancel()
            if writer is not None:
                try:
                    writer.stop()
                    if not writer.text:  # nothing to keep: no empty "stopped" reply per failed send
                        self._store.delete_message(writer.message_id)
                except StoreError:
                    pass  # the database fails too (e is most likely that): `finished` must still go
            from trit.engine.errors import ContextFullError

            if isinstance(e, StoreError):  # a damaged or full database: its own message and fix
                message, fix = e.message, e.fix
            else:
                message = str(e) or type(e).__name__
                fix = "Try again; if it keeps failing, pick another model in Models."
                if isinstance(e, ContextFullError):  # earlier messages were left out already
                    system = any(m.get("role") == "system" for m in request.get("messages") or [])
                    fix = (
                        "Shorten your message (Ctrl+Shift+E edits it)"
                        + (" or the system prompt" if system else "")
                        + ", or raise Context size in Settings (Ctrl+,)."
                    )
            self.failed.emit(message, fix)
            self.finished.emit(
                {
                    "conversation_id": conv_id,
                    "message_id": writer.message_id if writer is not None else None,
                    "status": "failed",
                    "text": writer.text if writer is not None else "",
                    "record": {},
                    "memory": {},
                }
            )
        finally:
            self._set_busy(False)


__all__ = ["EngineWorker"]
