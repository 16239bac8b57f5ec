"""The `trit` command line: run, chat, info, logits, bench; with no subcommand it opens the
desktop app (`trit --self-test` checks the app end to end and exits)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trit.engine.errors import ContextFullError, EngineError
from trit.engine.gguf_loader import WEIGHT_MEMORY
from trit.engine.model import KV_TYPES, LM_HEADS, TERNARY_LAYOUTS, Model, Session, Stats
from trit.engine.tokenizer import replace_surrogates
from trit.launch import interrupted
from trit.options import MAX_THREADS, int_range, real, writable_file
from trit.text import terminal_safe

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head` reports: the reader went away


def _ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids: {e}") from None
    if not ids:
        raise argparse.ArgumentTypeError("no token ids given")
    if min(ids) < 0:
        raise argparse.ArgumentTypeError(f"token ids are >= 0, not {min(ids)}")
    return ids


def _check_ids(ids: Sequence[int], model: Model) -> None:
    """Token ids within the model's vocabulary (checked here so the message names --ids; a huge id
    would otherwise overflow on its way to the engine)."""
    vocab = model.config.vocab
    bad = [i for i in ids if i >= vocab]
    if bad:
        raise ValueError(f"--ids: {bad[0]} is not a token of this model (its ids are 0 to {vocab - 1})")


def _add_model_args(p: argparse.ArgumentParser, *, default_ok: bool = False) -> None:
    p.add_argument(
        "-m",
        "--model",
        required=not default_ok,
        help="GGUF file or Hugging Face model directory"
        + (" (default: the bundled SmolLM2-135M-Instruct)" if default_ok else ""),
    )
    p.add_argument(
        "-t",
        "--threads",
        type=int_range(1, MAX_THREADS),
        default=None,
        help="worker threads (default: physical cores)",
    )
    p.add_argument("--isa", default=None, help="force a kernel path: scalar, avx2, avx512, neon")
    p.add_argument(
        "-c",
        "--context",
        type=int_range(1),
        default=None,
        help="context size in tokens (KV cache positions; default: the model's, at most 4096)",
    )
    p.add_argument(
        "--activations",
        choices=("f32", "q8"),
        default="f32",
        help="llama.cpp weight types: f32 = exact activations (default), q8 = 8-bit like llama.cpp (faster)",
    )
    p.add_argument(
        "--head",
        choices=LM_HEADS,
        default="f16",
        help="LM head: f16 as stored (default) or a Q8_0 copy built at load (fewer bytes per token)",
    )
    p.add_argument(
        "--kv",
        choices=KV_TYPES,
        default="f32",
        help="KV cache: f32 (default, exact), f16 (half the memory and of the bytes attention reads per "
        "token; K and V rounded to f16), q8 (a quarter: each head row as int8 codes with one scale) or "
        "q3 (BitNet a4.8's 3-bit cache, one scale per 32; for models trained with it: costly on others)",
    )
    p.add_argument(
        "--a48",
        action="store_true",
        help="BitNet a4.8 activations: 4-bit inputs of q/k/v and gate/up, TopK (half) on o's input. For "
        "models trained that way; others lose most of their quality (benchmarks/a48_quality.py)",
    )
    p.add_argument(
        "--ternary",
        choices=TERNARY_LAYOUTS,
        default="auto",
        help="ternary matrices in memory: tq = 2 bits per weight, b3 = 1.6 bits (five base-3 codes a "
        "byte, repacked at load; the same logits); auto (default) = b3 where this CPU reads it faster",
    )
    p.add_argument(
        "--weights",
        choices=WEIGHT_MEMORY,
        default="auto",
        help="GGUF tensors: ram = huge-page copy (faster decode), map = in place from the file; "
        "auto (default) = ram where Linux offers huge pages",
    )


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--max-tokens", type=int_range(0), default=256, help="most tokens in a reply")
    p.add_argument("--temp", type=real(0), default=0.7, help="temperature; 0 = greedy")
    p.add_argument("--top-k", type=int_range(0), default=40, help="0 = off")
    p.add_argument("--top-p", type=real(0, 1, lo_open=True), default=0.95, help="1 = off")
    p.add_argument("--min-p", type=real(0, 1, hi_open=True), default=0.05, help="0 = off")
    p.add_argument("--repeat-penalty", type=real(0, lo_open=True), default=1.1, help="1 = off")
    p.add_argument(
        "--seed", type=int_range(0), default=None, help="random seed (default: a new one each run)"
    )


def _sampling(args: argparse.Namespace) -> dict[str, object]:
    return {
        "max_tokens": args.max_tokens,
        "temperature": args.temp,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "seed": args.seed,
    }


def _stats_line(st, model) -> str:
    return (
        f"prompt: {_count(st.prompt_tokens, 'token')} ({st.cached_tokens} cached) in {st.prompt_ms:.0f} ms "
        f"({st.prompt_tps:.1f} tok/s) | reply: {_count(st.tokens_generated, 'token')}, {st.decode_tps:.1f} tok/s | "
        f"first token: {st.ttft_ms:.0f} ms | {model.info.isa}, {_threads(model.threads)}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _threads(n: int) -> str:
    return _count(n, "thread")


class _HelpFormatter(argparse.HelpFormatter):
    """--help shows each option's default, unless its help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default in (None, False, argparse.SUPPRESS)
            or "default" in text
        ):
            return text
        return text + " (default: %(default)s)"


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: an option it does not know is named before a required one that is
    missing (`trit run --bogus` said "-p/--prompt is required"; argparse checks those first)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> Any:  # type: ignore[override]
        if message.startswith(("the following arguments are required", "one of the arguments")):
            known = self._option_string_actions
            unknown = [
                a
                for a in getattr(self, "_given", [])
                if a.startswith("--") and not any(o.startswith(a.split("=")[0]) for o in known)
            ]
            if unknown:
                message = f"unrecognized arguments: {' '.join(unknown)}"
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="trit",
        description="Offline inference for 1.58-bit language models. Without a command, opens the desktop app.",
    )
    from trit import __version__

    ap.add_argument("--version", action="version", version=f"trit {__version__}")
    ap.add_argument(
        "--self-test",
        action="store_true",
        help="open the app window, load the model, send one prompt, print the reply's stats and exit "
        "(0 = everything works)",
    )
    ap.add_argument("--model", dest="gui_model", default=None, help="model the desktop app opens")
    ap.add_argument("--data-dir", default=None, help="desktop app: keep conversations and settings here")
    sub = ap.add_subparsers(dest="cmd", parser_class=_CommandParser)

    run = sub.add_parser("run", help="one reply: streams it to stdout, stats to stderr")
    _add_model_args(run, default_ok=True)
    src = run.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", help="user message, sent in the model's chat template")
    src.add_argument("--ids", type=_ids, help="prompt token ids, comma separated (any model)")
    run.add_argument("--raw", action="store_true", help="send the prompt text as is, without the template")
    run.add_argument("--system", default=None, help="system prompt")
    _add_sampling_args(run)

    chat = sub.add_parser("chat", help="interactive multi-turn chat in the terminal")
    _add_model_args(chat, default_ok=True)
    chat.add_argument("--system", default=None, help="system prompt")
    _add_sampling_args(chat)

    info = sub.add_parser("info", help="print what a model file holds")
    _add_model_args(info, default_ok=True)

    ppl = sub.add_parser("perplexity", help="perplexity of a text file under the model")
    _add_model_args(ppl, default_ok=True)
    ppl.add_argument("-f", "--file", required=True, help="UTF-8 text file")
    ppl.add_argument("--window", type=int_range(2), default=512, help="tokens per window (each starts fresh)")

    lg = sub.add_parser("logits", help="write the logits of a token sequence to a .npy file")
    _add_model_args(lg, default_ok=True)
    lg.add_argument("--ids", type=_ids, required=True, help="token ids, comma separated (e.g. 1,2,3)")
    lg.add_argument(
        "-o",
        "--output",
        required=True,
        help="the .npy file to write (a new file's name gets .npy if it lacks it); - for stdout",
    )

    from trit import bench

    bn = sub.add_parser("bench", help="measure prompt and decode speed, TTFT, RSS and bandwidth use")
    bench.add_cli_args(bn)
    return ap


def _model_path(args: argparse.Namespace) -> str:
    if args.model == "":
        raise ValueError("-m: the model path is empty")
    if args.model is not None:
        return str(args.model)
    from trit.default_model import default_model_path, how_to_get_default_model

    p = default_model_path()
    if p is None:
        from trit.engine.errors import EngineError

        raise EngineError(
            f"no model given and the default model is not installed: pass -m MODEL, or {how_to_get_default_model()}"
        )
    return str(p)


def _warn_threads(args: argparse.Namespace) -> None:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.threads is not None and args.threads > cpus:
        print(
            f"trit: warning: -t {args.threads}: this machine runs {cpus} at once; more threads than "
            "that wait for each other and slow every token",
            file=sys.stderr,
        )


def _warn_context(args: argparse.Namespace, context: int) -> None:
    if args.context is not None and context < args.context:  # the engine caps it
        print(
            f"trit: warning: -c {args.context}: this model holds at most {context} tokens; using {context}",
            file=sys.stderr,
        )


def _load(args: argparse.Namespace):
    from trit.engine import load_model

    _warn_threads(args)
    model = _load_model(args, load_model)
    _warn_context(args, model.context)
    return model


def _load_options(args: argparse.Namespace) -> dict[str, Any]:
    """load_model's (and gguf_model_info's) keywords from the command line."""
    names = ("threads", "isa", "context", "activations", "head", "weights", "kv", "a48", "ternary")
    return {name: getattr(args, name) for name in names}


def _load_model(args: argparse.Namespace, load_model: Callable[..., Model]) -> Model:
    return load_model(_model_path(args), **_load_options(args))


def _run_interruptible(target: Model | Session, fn: Callable[[], Any]) -> tuple[Any, bool]:
    """Runs fn() in a worker thread so that Ctrl-C cancels the generation (target.cancel(): the
    engine stops within one token) instead of killing the process; returns (fn's result,
    interrupted). fn's exception is raised here.

    The worker sets `done` when it ends, and only that is waited for: on Python 3.11 a Ctrl-C that
    interrupts Thread.join() can leave is_alive() False while the thread still runs. While fn
    runs, SIGINT only raises a flag (a KeyboardInterrupt could surface anywhere in this loop); the
    loop then cancels again every 0.1 s until fn returns, since a cancel that lands before the
    generation has begun is cleared when it begins."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e
        finally:
            done.set()

    interrupted: list[bool] = []

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.append(True)

    # handlers can only be set from the main thread; a process started with SIGINT ignored (a
    # background job) keeps ignoring it
    previous = signal.getsignal(signal.SIGINT)
    own = threading.current_thread() is threading.main_thread() and previous not in (signal.SIG_IGN, None)
    if own:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        try:
            threading.Thread(target=work, daemon=True).start()
        except RuntimeError:  # no thread can be started (no memory left for its stack): fn runs
            if own:  # here, and Ctrl-C interrupts it as KeyboardInterrupt
                signal.signal(signal.SIGINT, previous)
                own = False
            work()
        while not done.wait(0.1):
            if interrupted:
                target.cancel()
    finally:
        if own:
            signal.signal(signal.SIGINT, previous)
    if "error" in box:
        raise box["error"]
    return box["result"], bool(interrupted)


def _raise_context(model: Model) -> str:
    if model.context < model.config.context:
        return f"-c raises the context, up to the model's {model.config.context}"
    return f"{model.config.context} tokens is this model's most"


def _context_note(stats: Stats, model: Model) -> str | None:
    """A reply cut by the full context says so (the engine reports why a generation stopped)."""
    if stats.stop_reason != "context":
        return None
    note = f"stopped at the context limit ({model.context} tokens)"
    if model.context < model.config.context:
        note += f"; -c raises it, up to the model's {model.config.context}"
    return note


def _cmd_run(args: argparse.Namespace) -> int:
    if args.ids is not None and (args.raw or args.system is not None):
        raise ValueError("--raw and --system shape a text prompt (-p); --ids are sent as they are")
    if args.prompt is not None and args.raw and not args.prompt:
        raise ValueError("-p: the prompt is empty (with --raw it is sent without the chat template)")
    model = _load(args)
    out = sys.stdout
    count = _PromptCount(sys.stderr)
    if args.ids is not None:
        _check_ids(args.ids, model)

        sep = ""

        def emit(tok: int) -> None:  # "1 2 3", without a space after the last
            nonlocal sep
            count.clear()
            out.write(f"{sep}{tok}")
            sep = " "
            out.flush()

        try:
            gen, stopped = _run_interruptible(
                model, lambda: model.generate(args.ids, on_token=emit, on_prompt=count, **_sampling(args))
            )
        finally:  # a failure or Ctrl-C within the prompt: its count goes before what is said
            count.clear()
    else:
        if model.tokenizer is None:
            raise EngineError(
                f"{model.info.path}: this model has no tokenizer; give the prompt as token ids with --ids"
            )
        messages = []
        if args.system:
            messages.append({"role": "system", "content": args.system})
        messages.append({"role": "user", "content": args.prompt})

        shown = _for_terminal(out)

        def write(text: str) -> None:
            count.clear()
            out.write(shown(text))
            out.flush()

        try:
            gen, stopped = _run_interruptible(
                model,
                lambda: model.chat(messages, on_text=write, raw=args.raw, on_prompt=count, **_sampling(args)),
            )
        except ContextFullError as e:  # its "start a new conversation" is for a chat
            raise ContextFullError(f"{str(e).split(';')[0]}; {_raise_context(model)}") from None
        finally:
            count.clear()
    if stopped and not gen.stats.prompt_tokens and not gen.stats.tokens_generated:
        return interrupted()  # within the prompt: no reply, and no stats of zeros to show
    out.write("\n")
    out.flush()
    note = _context_note(gen.stats, model)
    if note:
        print(f"trit: {note}", file=sys.stderr)
    print(_stats_line(gen.stats, model), file=sys.stderr)
    return interrupted() if stopped else 0


# Chat commands: the line's first word must be one of these exactly ("/systemd is down" is a
# message); a line starting with any other /word is sent to the model as it is.
_QUIT = ("/quit", "/exit")
_RESET = "/reset"
_SYSTEM = "/system"


QUIT_SECONDS = 2.0
TERMINAL_LINE_BYTES = 4095  # Linux's canonical-mode line buffer, less the newline


def _cmd_chat(args: argparse.Namespace) -> int:
    model = _load(args)
    if model.tokenizer is None:
        print(f"trit: {model.info.path}: this model has no tokenizer, so it cannot chat", file=sys.stderr)
        return 2
    if hasattr(sys.stdin, "reconfigure"):
        # bytes that are not UTF-8 (a Latin-1 terminal, a binary paste) become U+FFFD, not an error
        sys.stdin.reconfigure(errors="replace")
    cut_lines = False  # a terminal in canonical mode keeps 4095 bytes of a line and drops the rest
    if sys.stdin.isatty():
        # line editing, and lines past the terminal's own 4096-byte line buffer (a long paste was cut
        # there without a word); not in the bundle (GNU readline is GPL-3.0) nor on Windows
        try:
            import readline  # noqa: F401
        except ImportError:
            cut_lines = sys.platform != "win32"
    system = args.system
    history: list[dict[str, str]] = []
    print(
        f"Chatting with {Path(model.info.path).name} ({model.info.isa}, {_threads(model.threads)}). "
        "/reset clears the chat, /system TEXT sets the system prompt, /quit leaves; "
        "Ctrl-C stops a reply.",
        file=sys.stderr,
    )
    session = model.session()
    # the "> " prompt is for a person at a terminal: from a pipe it went into stdout between replies
    prompt = "> " if sys.stdin.isatty() else ""
    # A Ctrl-C at the prompt was most likely meant for a reply that just ended, or clears a typed
    # line (a shell habit): only a second one within QUIT_SECONDS leaves.
    interrupted_at = -QUIT_SECONDS
    while True:
        try:
            line = replace_surrogates(input(prompt))  # bytes stdin could not decode
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            if time.monotonic() - interrupted_at < QUIT_SECONDS:
                print(file=sys.stderr)
                return 0
            interrupted_at = time.monotonic()
            print("\n(Ctrl-C again at once, Ctrl-D or /quit leaves)", file=sys.stderr)
            continue
        if cut_lines and len(line.encode("utf-8", "surrogatepass")) >= TERMINAL_LINE_BYTES:
            print(
                f"(the terminal passes at most {TERMINAL_LINE_BYTES} bytes of a line, so this one may "
                'have been cut; for longer text use `trit run -p "$(cat FILE)"` or the desktop app)',
                file=sys.stderr,
            )
        text = line.strip()
        if not text:
            continue
        command, rest = (text.split(maxsplit=1) + [""])[:2]
        if command in _QUIT or command == _RESET:
            if rest:
                print(f"({command} takes nothing after it; nothing done)", file=sys.stderr)
                continue
            if command in _QUIT:
                return 0
            history.clear()
            print("(chat cleared)", file=sys.stderr)
            continue
        if command == _SYSTEM:
            system = rest or None
            history.clear()
            print(f"(system prompt {'set' if system else 'cleared'}; chat cleared)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        messages = ([{"role": "system", "content": system}] if system else []) + history

        count = _PromptCount(sys.stderr)
        shown = _for_terminal(sys.stdout)  # once a reply, not once a token

        def write(piece: str, count: _PromptCount = count, shown: Callable[[str], str] = shown) -> None:
            count.clear()
            sys.stdout.write(shown(piece))
            sys.stdout.flush()

        try:
            gen, stopped = _run_interruptible(
                session,
                lambda msgs=messages, count=count: session.chat(
                    msgs, on_text=write, on_prompt=count, **_sampling(args)
                ),
            )
        except EngineError as e:  # e.g. the context is full: keep the REPL alive
            hint = (
                " (/reset starts a new chat; -c sets the context size)"
                if isinstance(e, ContextFullError)
                else ""
            )
            print(f"\ntrit: {e}{hint}", file=sys.stderr)
            history.pop()
            continue
        finally:
            count.clear()
        if stopped and not gen.stats.prompt_tokens and not gen.stats.tokens_generated:
            history.pop()  # stopped within the prompt: no reply to keep, nor stats of zeros
            print("(stopped before the reply began; the message was not kept)", file=sys.stderr)
            continue
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": gen.text})
        note = _context_note(gen.stats, model)
        if note:
            print(f"trit: {note}; /reset starts a new chat", file=sys.stderr)
        print(_stats_line(gen.stats, model) + (" (stopped)" if stopped else ""), file=sys.stderr)


def _is_gguf(path: str) -> bool:
    """A regular file that starts with GGUF's magic (anything else, or one that cannot be read,
    goes to load_model, whose errors name the problem)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _cmd_info(args: argparse.Namespace) -> int:
    """A GGUF file's info comes from its header and tensor table (gguf_model_info): loading the
    weights took 6-17 s and 1.3 GB for a 2B4T file, for nothing that is printed. A Hugging Face
    folder is still loaded: its matrices are converted at load, and the info describes the result."""
    path = _model_path(args)
    if not _is_gguf(path):
        info = _load(args).info
    else:
        from trit.engine.gguf_loader import gguf_model_info

        _warn_threads(args)
        info = gguf_model_info(path, **_load_options(args))
        _warn_context(args, info.context)
    print(terminal_safe(info.describe()))  # names and templates come from the file
    return 0


def _cmd_perplexity(args: argparse.Namespace) -> int:
    from trit.engine.perplexity import perplexity

    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        print(f"trit: {args.file}: {e}", file=sys.stderr)
        return 2
    model = _load(args)
    if model.tokenizer is None:
        print(f"trit: {model.info.path}: this model has no tokenizer", file=sys.stderr)
        return 2
    ids = model.tokenizer.encode(text)
    if args.window > model.context:
        print(f"trit: --window {args.window} exceeds the context ({model.context})", file=sys.stderr)
        return 2

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} tokens", end="", file=sys.stderr, flush=True)

    # a progress line redrawn with \r is for a terminal: in a log it is one line of every count
    tty = sys.stderr.isatty()
    r = perplexity(model, ids, context=args.window, on_progress=progress if tty else None)
    if tty:
        print(file=sys.stderr)
    print(
        f"perplexity {r.perplexity:.4f} over {r.tokens_scored} tokens ({r.windows} windows of <= {args.window})"
    )
    return 0


def _cmd_logits(args: argparse.Namespace) -> int:
    if args.output == "-":
        if sys.stdout.isatty():
            raise ValueError("-o -: stdout is a terminal; redirect it to a file or a program that reads .npy")
        path = "-"
    else:
        if Path(args.output).is_dir():
            raise ValueError(f"-o {args.output}: this is a folder; give a file name")
        # .npy is added to the name of a new file; a path that exists (/dev/null, /dev/stdout, a
        # fifo) is written as given (np.save made /dev/null.npy)
        exists = os.path.exists(args.output)
        path = args.output if exists or args.output.endswith(".npy") else args.output + ".npy"
        writable_file(path, "-o")
    model = _load(args)
    _check_ids(args.ids, model)
    logits = model.logits(args.ids)
    if path == "-":
        try:
            np.save(sys.stdout.buffer, logits)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(e.strerror or str(e)) from None
    else:
        with open(path, "wb") as f:
            np.save(f, logits)
    where = "stdout" if path == "-" else path
    print(f"wrote {where}: {len(args.ids)} x {model.config.vocab} float32", file=sys.stderr)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from trit import bench

    return bench.run_cli(args, out=sys.stdout, err=sys.stderr)


def _gui(args: argparse.Namespace) -> int:
    try:
        from trit.app.qt import app
    except ImportError as e:
        print(
            f"trit: the desktop app cannot start ({e}). Install its toolkit with "
            "`pip install PySide6-Essentials`, or use `trit chat` in the terminal.",
            file=sys.stderr,
        )
        return 2
    if args.self_test:
        return app.self_test(model=args.gui_model, data_dir=args.data_dir)
    return app.run_gui(data_dir=args.data_dir, model=args.gui_model, argv=[sys.argv[0]])


class OutputError(Exception):
    """stdout could not take what a command wrote (a full disk, a closed or failing descriptor):
    main says so in one line. BrokenPipeError, the reader going away, is not one: it ends quietly."""


class _Output:
    """sys.stdout while a command runs: a write or flush that fails raises OutputError (it was
    a traceback of OSError, or Python's "Exception ignored" at exit)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(e.strerror or str(e)) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(e.strerror or str(e)) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _is_terminal(stream: Any) -> bool:
    """stream.isatty(), False for a stream that is closed or has no such method."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _for_terminal(stream: Any) -> Callable[[str], str]:
    """How a model's text goes to stream: on a terminal with what the terminal would act on shown
    as escapes (a reply could retitle it, clear it or fake a notice); into a pipe or file as it is."""
    return terminal_safe if _is_terminal(stream) else str


class _PromptCount:
    """On a terminal's stderr, "[reading the prompt: 384 of 3,657 tokens]" on one line while a long
    prompt runs (on_prompt of Session.generate; it may take a minute before the first word), wiped
    before anything else is written. Nothing where stderr is not a terminal."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = _is_terminal(stream)
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            self._write(f"\r\x1b[2K[reading the prompt: {done:,} of {total:,} tokens]")
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.shown = False
            self._write("\r\x1b[2K")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken terminal: the count is not worth an error
            self.tty = False


class _WarningsToStderr(logging.Handler):
    """The engine's warnings (a chat template that failed ...) as one "trit: warning:" line each on
    stderr, instead of Python's bare last-resort output; sys.stderr as it is at each warning."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"trit: warning: {terminal_safe(record.getMessage())}", file=sys.stderr)


def _log_warnings_once() -> None:
    log = logging.getLogger("trit")
    if not any(isinstance(h, _WarningsToStderr) for h in log.handlers):
        log.addHandler(_WarningsToStderr(logging.WARNING))


def _misplaced_options(ap: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The command line with a command's options put after the command, when they came before it
    (`trit --isa avx2 chat`: argparse said "invalid choice: 'avx2'"); None otherwise."""
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    # --model is also the desktop app's, but before a command it was meant for the command:
    # `trit --model X run` ran the default model, not X
    top = {o for a in ap._actions for o in a.option_strings} - {"--model"}
    at = next((i for i, a in enumerate(argv) if a in sub.choices), None)
    if at is None or not any(a.startswith("-") and a.split("=")[0] not in top for a in argv[:at]):
        return None
    return " ".join(["trit", argv[at], *argv[:at], *argv[at + 1 :]])


def main(argv: Sequence[str] | None = None) -> int:
    _log_warnings_once()
    ap = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    fixed = _misplaced_options(ap, argv)
    if fixed is not None:
        ap.error(f"a command's options go after the command: {fixed}")
    args = ap.parse_args(argv)
    if args.cmd is None:
        return _gui(args)
    app_only = [o for o, v in (("--data-dir", args.data_dir), ("--self-test", args.self_test)) if v]
    if app_only:  # it was ignored without a word
        ap.error(f"{app_only[0]} is for the desktop app; `trit {args.cmd}` does not take it")
    if hasattr(sys.stdout, "reconfigure"):
        # a reply the locale's encoding lacks (Japanese under a Latin-1 locale) is written with "?"
        # for what it cannot hold: it ended `trit run` and `trit chat` with "codec can't encode".
        # stderr already uses backslashreplace
        sys.stdout.reconfigure(errors="replace")
    # Python keeps argv bytes the locale cannot decode as lone surrogates: U+FFFD before any use
    for name in ("prompt", "system"):
        if isinstance(getattr(args, name, None), str):
            setattr(args, name, replace_surrogates(getattr(args, name)))
    if sys.stderr is None:  # started with 2>&-: messages go nowhere (print would send them to stdout)
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stdout is None and (args.cmd != "logits" or args.output == "-"):  # started with >&-
        print("trit: cannot write the output: stdout is closed", file=sys.stderr)
        return 1
    if args.cmd == "chat" and sys.stdin is None:  # started with <&-
        print("trit: chat reads its messages from stdin, which is closed", file=sys.stderr)
        return 2
    real_stdout = sys.stdout
    if real_stdout is not None:
        sys.stdout = _Output(real_stdout)
    try:
        cmds = {
            "run": _cmd_run,
            "chat": _cmd_chat,
            "info": _cmd_info,
            "logits": _cmd_logits,
            "bench": _cmd_bench,
            "perplexity": _cmd_perplexity,
        }
        status = cmds[args.cmd](args)
        sys.stdout.flush()  # what is still buffered fails here, not in Python's flush at exit
        return status
    except OutputError as e:
        print(f"trit: cannot write the output: {e}", file=sys.stderr)
        _stdout_to_devnull()  # what is left in the buffer goes nowhere at exit, without a second error
        return 1
    except EngineError as e:
        print(f"trit: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"trit: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a reply, e.g. while the model loads
        return interrupted()
    except BrokenPipeError:
        # the reader of stdout went away (`trit run ... | head`): stop quietly. stdout now points at
        # devnull so the flush at exit cannot fail again (the recipe of Python's signal docs)
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    finally:
        sys.stdout = real_stdout


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
