"""App settings: a JSON file in the per-user config dir.

load() never fails on a bad file: it keeps a copy (settings.json.bad-<time>), uses the defaults
for what it could not read, and says what was wrong in `problems`, for the UI to show once.
save() writes atomically (temp file + os.replace).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sampling import Sampling

SETTINGS_NAME = "settings.json"
SETTINGS_VERSION = 1

# Per chat family; the model cards' recommendations where they give one (SmolLM2: 0.2 / 0.9).
FAMILY_SAMPLING: dict[str, Sampling] = {
    "bitnet": Sampling(temperature=0.6, top_p=0.9, max_tokens=512),
    "falcon3": Sampling(temperature=0.7, top_p=0.9, max_tokens=512),
    "smollm": Sampling(temperature=0.2, top_p=0.9, max_tokens=512),
    "llama3": Sampling(temperature=0.6, top_p=0.9, max_tokens=512),
}
DEFAULT_SAMPLING = Sampling()


def physical_cores() -> int:
    raise NotImplementedError


def default_config_path() -> Path:
    """<user config dir>/Trit/settings.json (platformdirs)."""
    raise NotImplementedError


@dataclass(frozen=True)
class Settings:
    threads: int  # engine threads; default: physical cores
    models_dir: str  # the model library folder
    default_model: str = ""  # catalog id or path of the model to open at start; "" = bundled default
    sampling: dict[str, Sampling] = field(default_factory=lambda: dict(FAMILY_SAMPLING))  # per family
    watts_per_core: float = 5.0  # for the CPU-time energy estimate
    hf_endpoint: str = "https://huggingface.co"
    max_parallel_downloads: int = 1
    context: int = 4096

    def sampling_for(self, family: str) -> Sampling:
        """The family's default sampling, or the general default for an unknown family."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def default_settings() -> Settings:
    raise NotImplementedError


def settings_from_dict(doc: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Validated settings from a JSON document: each bad or missing field falls back to base
    (default_settings()), and each bad field adds a message to the returned list."""
    raise NotImplementedError


class SettingsStore:
    """Loads and saves Settings at path (default_config_path() when None).
    Attributes after load(): problems (list of messages), backup (Path of the kept bad file)."""

    def __init__(self, path: str | Path | None = None) -> None:
        raise NotImplementedError

    def load(self) -> Settings:
        raise NotImplementedError

    def save(self, settings: Settings) -> None:
        raise NotImplementedError


__all__ = [
    "DEFAULT_SAMPLING",
    "FAMILY_SAMPLING",
    "SETTINGS_NAME",
    "Settings",
    "SettingsStore",
    "default_config_path",
    "default_settings",
    "physical_cores",
    "settings_from_dict",
]
