"""Checks of command-line values shared by `trit` and `trit bench`: argparse types that name the
allowed range (argparse puts the option's name in front of the message), and the check that an
output file can be written, made before a long computation rather than after it."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

# More worker threads than any machine has cores; the thread pool takes a C int, and every thread
# is started at load, so an absurd count is refused instead of overflowing or exhausting memory.
MAX_THREADS = 1024


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi] (hi None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            span = f">= {lo}" if hi is None else f"from {lo} to {hi}"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, not {text}")
        return value

    return parse


def real(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite float within the bounds given (open ends exclude the bound).
    float() takes "nan" and "inf", which would reach the sampler as a silent nonsense setting."""
    if lo is not None and hi is not None:
        span = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        span = f"{'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        span = f"{'<' if hi_open else '<='} {hi:g}"
    else:
        span = ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
        bad = not math.isfinite(value)
        if lo is not None:
            bad |= value <= lo if lo_open else value < lo
        if hi is not None:
            bad |= value >= hi if hi_open else value > hi
        if bad:
            raise argparse.ArgumentTypeError(f"must be a finite number {span}".rstrip() + f", not {text}")
        return value

    return parse


def writable_file(path: str | os.PathLike[str], option: str) -> Path:
    """Checks that `path` can be created or overwritten as a file; raises ValueError naming the
    option otherwise. Run it before the work whose result goes there."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{option} {path}: this is a folder; give a file name")
    folder = p.parent
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(p if p.exists() else folder, os.W_OK):
        raise ValueError(f"{option} {path}: not writable")
    return p
