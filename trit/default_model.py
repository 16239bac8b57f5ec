"""Where the default model (SmolLM2-135M-Instruct, Q4_1) lives.

resources/default_model.json pins the file name, size and sha256; packaging/fetch_default_model.py
puts the file into the user models dir (or into resources/models/ for the PyInstaller bundle).
`default_model_path()` is what `trit run` without -m and the app use to find it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_VAR = "TRIT_DEFAULT_MODEL"


def resources_dir() -> Path:
    """resources/: in the PyInstaller bundle (sys._MEIPASS), in the installed package
    (trit/resources, see setup.py), or at the top of the source tree (editable install)."""
    here = Path(__file__).resolve().parent
    candidates = [here / "resources", here.parent / "resources"]
    meipass = getattr(sys, "_MEIPASS", None)
    if meipass:
        candidates.insert(0, Path(meipass) / "resources")
    for d in candidates:
        if (d / "default_model.json").is_file():
            return d
    return candidates[0]


def user_models_dir() -> Path:
    """Per-user models directory (models the user downloads, and the fetched default model)."""
    import platformdirs

    # appauthor=False: otherwise Windows nests the app name twice (Trit\Trit).
    return Path(platformdirs.user_data_dir("Trit", appauthor=False)) / "models"


def default_model_spec() -> dict[str, Any]:
    """The pinned description of the default model (file, sha256, size, license, family ...)."""
    with open(resources_dir() / "default_model.json", encoding="utf-8") as f:
        spec: dict[str, Any] = json.load(f)
    return spec


def default_model_path() -> Path | None:
    """The default model file, or None when it is nowhere to be found.

    Order: $TRIT_DEFAULT_MODEL, the user models dir, the bundled copy in resources/models/.
    Files in the usual places must have the pinned size (hashing 98 MB on every start would be
    slow; the fetch script verified the sha256 when it put the file there).
    """
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if p.is_file():
            return p
        log.warning("%s=%s does not name a file; looking in the usual places", ENV_VAR, env)
    try:
        spec = default_model_spec()
    except (OSError, ValueError) as e:
        log.warning("cannot read default_model.json: %s", e)
        return None
    for d in (user_models_dir(), resources_dir() / "models"):
        p = d / spec["file"]
        try:
            size = p.stat().st_size
        except OSError:
            continue
        if size == int(spec["size"]):
            return p
        log.warning("%s has %d bytes, expected %d; ignoring it", p, size, spec["size"])
    return None


def how_to_get_default_model() -> str:
    """What gets the default model back: a packaged Trit has no fetch script (its installer holds
    the model), a source checkout does."""
    if getattr(sys, "frozen", False):
        return "reinstall Trit"
    return "run `python packaging/fetch_default_model.py` (from Trit's source folder) or reinstall Trit"


__all__ = [
    "ENV_VAR",
    "default_model_path",
    "default_model_spec",
    "how_to_get_default_model",
    "resources_dir",
    "user_models_dir",
]
