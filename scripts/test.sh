#!/usr/bin/env bash
# Sets up a fresh machine and runs the test suite: system packages for the cross-ISA kernel tests
# (aarch64 cross compiler + qemu for NEON, SIMDe for the AVX-512 tables on CPUs without AVX-512,
# clang), the package built from source with its test
# extras, then pytest against the INSTALLED package (not the source folders).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user clang gcc-mingw-w64-x86-64 libsimde-dev \
        libegl1 libgl1 libfontconfig1 libglib2.0-0 libxkbcommon0 libdbus-1-3 >/dev/null
fi

. scripts/python_env.sh
pick_python
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
install_trit ".[test]"

# pytest is started from tests/ so the source folders (trit/, engine/) cannot shadow the
# installed package; -m 'not slow' is the fast suite, TRIT_TEST_ALL=1 runs everything.
cd tests
if [ "${TRIT_TEST_ALL:-0}" = "1" ]; then
    exec "$PY" -m pytest -c ../pyproject.toml --rootdir=.. . "$@"
else
    exec "$PY" -m pytest -c ../pyproject.toml --rootdir=.. -m "not slow" . "$@"
fi
