"""The `trit` command line: run, chat, info, logits, bench; with no subcommand it opens the
desktop app (`trit --self-test` checks the app end to end and exits)."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trit.engine.errors import EngineError
from trit.engine.gguf_loader import WEIGHT_MEMORY
from trit.engine.model import KV_TYPES, LM_HEADS


def _ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--ids takes comma-separated integers: {e}") from None
    if not ids:
        raise argparse.ArgumentTypeError("--ids is empty")
    return ids


def _add_model_args(p: argparse.ArgumentParser, *, default_ok: bool = False) -> None:
    p.add_argument(
        "-m",
        "--model",
        required=not default_ok,
        help="GGUF file or Hugging Face model directory"
        + (" (default: the bundled SmolLM2-135M-Instruct)" if default_ok else ""),
    )
    p.add_argument("-t", "--threads", type=int, default=None, help="worker threads (default: physical cores)")
    p.add_argument("--isa", default=None, help="force a kernel path: scalar, avx2, avx512, neon")
    p.add_argument("-c", "--context", type=int, default=None, help="context size (KV cache positions)")
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
        "--weights",
        choices=WEIGHT_MEMORY,
        default="auto",
        help="GGUF tensors: ram = huge-page copy (faster decode), map = in place from the file; "
        "auto (default) = ram where Linux offers huge pages",
    )


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--max-tokens", type=int, default=256)
    p.add_argument("--temp", type=float, default=0.7, help="temperature; 0 = greedy")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=None)


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
        f"prompt: {st.prompt_tokens} tokens ({st.cached_tokens} cached) in {st.prompt_ms:.0f} ms "
        f"({st.prompt_tps:.1f} tok/s) | reply: {st.tokens_generated} tokens, {st.decode_tps:.1f} tok/s | "
        f"first token: {st.ttft_ms:.0f} ms | {model.info.isa}, {model.threads} threads"
    )


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
    sub = ap.add_subparsers(dest="cmd")

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
    _add_model_args(info)

    ppl = sub.add_parser("perplexity", help="perplexity of a text file under the model")
    _add_model_args(ppl, default_ok=True)
    ppl.add_argument("-f", "--file", required=True, help="UTF-8 text file")
    ppl.add_argument("--window", type=int, default=512, help="tokens per window (each starts fresh)")

    lg = sub.add_parser("logits", help="write the logits of a token sequence to a .npy file")
    _add_model_args(lg)
    lg.add_argument("--ids", type=_ids, required=True)
    lg.add_argument("-o", "--output", required=True)

    from trit import bench

    bn = sub.add_parser("bench", help="measure prompt and decode speed, TTFT, RSS and bandwidth use")
    bench.add_cli_args(bn)
    return ap


def _model_path(args: argparse.Namespace) -> str:
    if args.model:
        return str(args.model)
    from trit.default_model import default_model_path

    p = default_model_path()
    if p is None:
        from trit.engine.errors import EngineError

        raise EngineError(
            "no model given and the default model is not installed; fetch it with "
            "`python packaging/fetch_default_model.py` or pass -m MODEL"
        )
    return str(p)


def _load(args: argparse.Namespace):
    from trit.engine import load_model

    return load_model(
        _model_path(args),
        threads=args.threads,
        isa=args.isa,
        context=args.context,
        activations=args.activations,
        head=args.head,
        weights=args.weights,
        kv=args.kv,
        a48=args.a48,
    )


def _run_interruptible(model, fn):
    """Runs fn() in a worker thread so Ctrl-C cancels the generation (the engine stops within one
    token) instead of killing the process; returns (result, interrupted)."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=work, daemon=True)
    t.start()
    interrupted = False
    while t.is_alive():
        try:
            t.join(0.1)
        except KeyboardInterrupt:
            interrupted = True
            model.cancel()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("result"), interrupted


def _cmd_run(args: argparse.Namespace) -> int:
    model = _load(args)
    out = sys.stdout
    if args.ids is not None:

        def emit(tok: int) -> None:
            out.write(f"{tok} ")
            out.flush()

        gen, stopped = _run_interruptible(
            model, lambda: model.generate(args.ids, on_token=emit, **_sampling(args))
        )
    else:
        messages = []
        if args.system:
            messages.append({"role": "system", "content": args.system})
        messages.append({"role": "user", "content": args.prompt})

        def write(text: str) -> None:
            out.write(text)
            out.flush()

        gen, stopped = _run_interruptible(
            model, lambda: model.chat(messages, on_text=write, raw=args.raw, **_sampling(args))
        )
    out.write("\n")
    out.flush()
    if model.chat_format is not None and model.chat_format.warning:
        print(f"trit: warning: {model.chat_format.warning}", file=sys.stderr)
    print(_stats_line(gen.stats, model), file=sys.stderr)
    return 130 if stopped else 0


def _cmd_chat(args: argparse.Namespace) -> int:
    model = _load(args)
    if model.tokenizer is None:
        print(f"trit: {model.info.path}: this model has no tokenizer, so it cannot chat", file=sys.stderr)
        return 2
    system = args.system
    history: list[dict[str, str]] = []
    print(
        f"Chatting with {Path(model.info.path).name} ({model.info.isa}, {model.threads} threads). "
        "/reset clears the chat, /system TEXT sets the system prompt, /quit leaves; "
        "Ctrl-C stops a reply.",
        file=sys.stderr,
    )
    session = model.session()
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return 0
        if text == "/reset":
            history.clear()
            print("(chat cleared)", file=sys.stderr)
            continue
        if text.startswith("/system"):
            system = text[len("/system") :].strip() or None
            history.clear()
            print(f"(system prompt {'set' if system else 'cleared'}; chat cleared)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        messages = ([{"role": "system", "content": system}] if system else []) + history

        def write(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        try:
            gen, stopped = _run_interruptible(
                session, lambda msgs=messages: session.chat(msgs, on_text=write, **_sampling(args))
            )
        except EngineError as e:  # e.g. the context is full: keep the REPL alive
            print(f"\ntrit: {e}", file=sys.stderr)
            history.pop()
            continue
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": gen.text})
        note = " (stopped)" if stopped else ""
        print(_stats_line(gen.stats, model) + note, file=sys.stderr)


def _cmd_info(args: argparse.Namespace) -> int:
    model = _load(args)
    print(model.info.describe())
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

    r = perplexity(model, ids, context=args.window, on_progress=progress)
    print(file=sys.stderr)
    print(f"perplexity {r.perplexity:.4f} over {r.tokens_scored} tokens ({r.windows} windows of <= {args.window})")
    return 0


def _cmd_logits(args: argparse.Namespace) -> int:
    model = _load(args)
    np.save(args.output, model.logits(args.ids))
    print(f"wrote {args.output}: {len(args.ids)} x {model.config.vocab} float32", file=sys.stderr)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from trit import bench

    return bench.run_cli(args)


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


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.cmd is None:
        return _gui(args)
    try:
        cmds = {
            "run": _cmd_run,
            "chat": _cmd_chat,
            "info": _cmd_info,
            "logits": _cmd_logits,
            "bench": _cmd_bench,
            "perplexity": _cmd_perplexity,
        }
        return cmds[args.cmd](args)
    except EngineError as e:
        print(f"trit: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"trit: {e}", file=sys.stderr)
        return 2
