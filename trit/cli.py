"""The `trit` command line: run, info, logits (and bench, chat as they land)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np


def _ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--ids takes comma-separated integers: {e}") from None
    if not ids:
        raise argparse.ArgumentTypeError("--ids is empty")
    return ids


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, help="GGUF file or Hugging Face model directory")
    p.add_argument("-t", "--threads", type=int, default=None, help="worker threads (default: physical cores)")
    p.add_argument("--isa", default=None, help="force a kernel path: scalar, avx2, avx512, neon")
    p.add_argument("-c", "--context", type=int, default=None, help="context size (KV cache positions)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="trit", description="Offline inference for 1.58-bit language models.")
    sub = ap.add_subparsers(dest="cmd")

    run = sub.add_parser("run", help="generate text (streams to stdout, stats to stderr)")
    _add_model_args(run)
    src = run.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", help="prompt text (needs a model with a tokenizer)")
    src.add_argument("--ids", type=_ids, help="prompt token ids, comma separated (any model)")
    run.add_argument("-n", "--max-tokens", type=int, default=128)
    run.add_argument("--temp", type=float, default=0.7, help="temperature; 0 = greedy")
    run.add_argument("--top-k", type=int, default=40)
    run.add_argument("--top-p", type=float, default=0.95)
    run.add_argument("--min-p", type=float, default=0.05)
    run.add_argument("--repeat-penalty", type=float, default=1.1)
    run.add_argument("--seed", type=int, default=None)

    info = sub.add_parser("info", help="print what a model file holds")
    _add_model_args(info)

    lg = sub.add_parser("logits", help="write the logits of a token sequence to a .npy file")
    _add_model_args(lg)
    lg.add_argument("--ids", type=_ids, required=True)
    lg.add_argument("-o", "--output", required=True)
    return ap


def _load(args: argparse.Namespace):  # noqa: ANN202
    from trit.engine import load_model

    return load_model(args.model, threads=args.threads, isa=args.isa, context=args.context)


def _cmd_run(args: argparse.Namespace) -> int:
    model = _load(args)
    if args.prompt is not None:
        print(
            f"trit: {args.model}: this build cannot tokenize text for this model yet; pass --ids",
            file=sys.stderr,
        )
        return 2
    out = sys.stdout

    def emit(tok: int) -> None:
        out.write(f"{tok} ")
        out.flush()

    try:
        gen = model.generate(
            args.ids,
            max_tokens=args.max_tokens,
            temperature=args.temp,
            top_k=args.top_k,
            top_p=args.top_p,
            min_p=args.min_p,
            repeat_penalty=args.repeat_penalty,
            seed=args.seed,
            on_token=emit,
        )
    except KeyboardInterrupt:
        model.cancel()
        print("\ntrit: stopped", file=sys.stderr)
        return 130
    out.write("\n")
    st = gen.stats
    print(
        f"prompt: {st.prompt_tokens} tokens in {st.prompt_ms:.1f} ms ({st.prompt_tps:.1f} tok/s) | "
        f"generated: {st.tokens_generated} tokens, {st.decode_tps:.1f} tok/s | "
        f"first token: {st.ttft_ms:.1f} ms | {model.info.isa}, {model.threads} threads",
        file=sys.stderr,
    )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    model = _load(args)
    print(model.info.describe())
    return 0


def _cmd_logits(args: argparse.Namespace) -> int:
    model = _load(args)
    np.save(args.output, model.logits(args.ids))
    print(f"wrote {args.output}: {len(args.ids)} x {model.config.vocab} float32", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from trit.engine.errors import EngineError

    ap = _parser()
    args = ap.parse_args(argv)
    if args.cmd is None:
        ap.print_help()
        return 0
    try:
        return {"run": _cmd_run, "info": _cmd_info, "logits": _cmd_logits}[args.cmd](args)
    except EngineError as e:
        print(f"trit: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"trit: {e}", file=sys.stderr)
        return 2
