"""The `trit` executable's entry point: imports the command line inside a Ctrl-C guard.

Loading trit.cli pulls in numpy and the engine's extension (a few tenths of a second); a Ctrl-C in
that window would otherwise print a Python traceback of the import instead of one line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

# In the PyInstaller bundle sys.executable is trit itself: the benchmark starts its child processes
# as `trit --bench-child ...` (trit.bench.child_command), and main hands them to trit.bench.
BENCH_CHILD_FLAG = "--bench-child"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def interrupted() -> int:
    """Say that Ctrl-C stopped the command (one line) and return its exit status."""
    # on a terminal the ^C echo is still on the line
    print(("\n" if sys.stderr.isatty() else "") + "trit: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == [BENCH_CHILD_FLAG]:
        from trit.bench import child_main

        return child_main(args[1:])
    try:
        from trit.cli import main as cli_main
    except KeyboardInterrupt:
        return interrupted()
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
