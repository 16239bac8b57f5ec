# Sourced by chat.sh and test.sh (from the checkout's root): picks the Python to install Trit
# into, as $PY, and installs this checkout into it only when it changed.

# $PYTHON if set; else python3 when it is a virtual environment or takes pip installs; else (a
# system Python that refuses them, PEP 668: Debian 12, Ubuntu 24.04) the checkout's own .venv,
# made on first use.
pick_python() {
    if [ -n "${PYTHON:-}" ]; then
        PY=$PYTHON
    else
        PY=python3
        if ! command -v "$PY" >/dev/null 2>&1; then
            echo "python3 was not found: install Python 3.10 or newer (e.g. sudo apt install python3)" >&2
            exit 1
        fi
        if ! "$PY" - <<'PYEOF'; then
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if in_venv or not managed else 1)
PYEOF
            if [ ! -x .venv/bin/python ]; then
                echo "python3 is the system's, which refuses pip installs: making a virtual environment in $(pwd)/.venv" >&2
                if ! python3 -m venv .venv 2>/dev/null; then
                    rm -rf .venv
                    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
                        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
                        python3 -m venv .venv
                    else
                        echo "Python's venv module is missing: install it (sudo apt install python3-venv) and run this again" >&2
                        exit 1
                    fi
                fi
            fi
            PY=$(pwd)/.venv/bin/python
        fi
    fi
    if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        echo "Trit needs Python 3.10 or newer; $("$PY" --version 2>&1) was found (set PYTHON=/path/to/python3.x)" >&2
        exit 1
    fi
}

# install_trit SPEC: pip-installs SPEC (".", ".[test]") unless this very source is installed
# already with it (a stamp beside the package holds the source's hash): building the engine
# takes minutes, and a second start of the chat should not.
install_trit() {
    local spec=$1 digest site extra
    digest=$("$PY" - <<'PYEOF'
import hashlib, os
h = hashlib.sha256()
for top in ("setup.py", "pyproject.toml", "engine", "app", "trit", "resources"):
    paths = [top] if os.path.isfile(top) else sorted(
        os.path.join(d, f) for d, dirs, files in os.walk(top) for f in files
        if "__pycache__" not in d and ".egg-info" not in d and not f.endswith((".so", ".pyd", ".pyc"))
        # what building writes into the tree: Cython's C beside its .pyx
        and not (f.endswith(".c") and os.path.exists(os.path.join(d, f[:-2] + ".pyx")))
    )
    for p in paths:
        h.update(p.encode() + b"\0")
        with open(p, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
print(h.hexdigest())
PYEOF
)
    site=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    extra=$(echo "$spec" | sed -n 's/^\.\[\(.*\)\]$/-\1/p')  # ".[test]" -> "-test"
    if [ "$(cat "$site/trit-source$extra.sha256" 2>/dev/null)" = "$digest" ] \
        && (cd / && "$PY" -c 'import trit.engine._core' >/dev/null 2>&1); then
        return 0
    fi
    echo "Building and installing Trit into $("$PY" -c 'import sys; print(sys.prefix)') (the engine is compiled: a few minutes, once)..." >&2
    rm -f "$site"/trit-source*.sha256
    "$PY" -m pip install -q "$spec"
    echo "$digest" >"$site/trit-source.sha256"
    [ -z "$extra" ] || echo "$digest" >"$site/trit-source$extra.sha256"
}
