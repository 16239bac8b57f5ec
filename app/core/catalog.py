"""The model catalog (resources/catalog.json) and the user's model library folder.

Catalog entries are typed and pinned: size and sha256 come from the catalog, never from the
server, so a download is verified against what we shipped. An entry whose sha256 we could not
verify has sha256 = null and lists the field in "unverified"; downloading it needs the user's
explicit confirmation (require_verified(confirmed=True)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATALOG_FORMAT = 1


class CatalogError(Exception):
    """catalog.json is malformed (``path``, ``problem``)."""


class UnverifiedEntryError(Exception):
    """The entry has no pinned sha256: downloading it needs the user's confirmation (``entry``)."""

    def __init__(self, entry: CatalogEntry) -> None:
        self.entry = entry
        super().__init__(
            f"{entry.name}: the catalog has no verified checksum for {entry.file}, so Trit cannot "
            "check the download is intact. Confirm to download it anyway."
        )


class LibraryError(Exception):
    """An import, delete or folder change in the model library failed (``path``, ``problem``)."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class CatalogEntry:
    id: str  # stable key, e.g. "bitnet-b1.58-2b4t-i2s"
    name: str  # shown to the user
    repo: str  # Hugging Face repo id ("" for a bundled-only model)
    revision: str  # commit sha (pinned) or branch name
    file: str  # file in the repo, and the file name in the library folder
    size: int | None  # bytes; None = unknown
    sha256: str | None  # lowercase hex; None = unverified, needs confirmation to download
    license: str
    license_url: str
    ram_mb: int  # RAM the model needs to run (weights + KV cache + runtime)
    family: str  # chat template family: "bitnet", "falcon3", "smollm", "llama3"
    min_app_version: str = "0.1.0"
    description: str = ""
    source: str = "hub"  # "hub" or "bundled" (default_model.json)
    gated: bool = False  # the repo needs a Hugging Face token
    unverified: tuple[str, ...] = ()  # fields we could not check against the hub
    comment: str = ""

    @property
    def verified(self) -> bool:
        """True when sha256 and size are pinned."""
        return self.sha256 is not None and self.size is not None

    def require_verified(self, *, confirmed: bool = False) -> None:
        """Raises UnverifiedEntryError unless the entry is verified or the user confirmed."""
        raise NotImplementedError

    def compatible(self, app_version: str) -> bool:
        """app_version >= min_app_version (dotted numbers)."""
        raise NotImplementedError

    def download_url(self, endpoint: str = "https://huggingface.co") -> str:
        raise NotImplementedError


def catalog_path() -> Path:
    """resources/catalog.json (see trit.default_model.resources_dir)."""
    raise NotImplementedError


def load_catalog(path: str | Path | None = None, *, include_bundled: bool = True) -> list[CatalogEntry]:
    """Entries of catalog.json, plus the bundled default model from default_model.json.
    Raises CatalogError naming the entry and field for a malformed file."""
    raise NotImplementedError


def parse_catalog(doc: Any, where: str = "catalog.json") -> list[CatalogEntry]:
    raise NotImplementedError


@dataclass(frozen=True)
class InstalledModel:
    path: Path  # a .gguf file or a Hugging Face folder
    name: str
    size: int  # bytes on disk
    kind: str  # "gguf" | "hf"
    entry: CatalogEntry | None = None  # the catalog entry it was installed from, if any


@dataclass(frozen=True)
class RamFit:
    needed_bytes: int
    available_bytes: int
    fits: bool
    text: str  # "needs 1.4 GB, you have 6.2 GB free"


def format_bytes(n: float) -> str:
    """1.4 GB, 350 MB, 12 KB, 5 bytes (decimal units, as file managers show)."""
    raise NotImplementedError


def ram_fit(needed_bytes: int, available_bytes: int | None = None) -> RamFit:
    """available_bytes defaults to psutil.virtual_memory().available."""
    raise NotImplementedError


class ModelLibrary:
    """The folder of models the user has. Installed = .gguf files and HF folders (config.json +
    *.safetensors) directly in the folder; an entry counts as installed when its file is there
    (with the pinned size, when it is known). Partial downloads (*.part) are not models."""

    def __init__(self, folder: str | Path, catalog: Sequence[CatalogEntry] = ()) -> None:
        raise NotImplementedError

    @property
    def folder(self) -> Path:
        raise NotImplementedError

    @property
    def catalog(self) -> list[CatalogEntry]:
        raise NotImplementedError

    def set_folder(self, folder: str | Path) -> None:
        """Uses another folder (created if needed; must be writable). Existing models stay where
        they are: the caller may offer to move them."""
        raise NotImplementedError

    def entry(self, entry_id: str) -> CatalogEntry:
        raise NotImplementedError

    def path_for(self, entry: CatalogEntry) -> Path:
        """Where the entry's file lives (or will, once downloaded)."""
        raise NotImplementedError

    def is_installed(self, entry: CatalogEntry) -> bool:
        raise NotImplementedError

    def installed(self) -> list[InstalledModel]:
        raise NotImplementedError

    def available(self) -> list[CatalogEntry]:
        """Catalog entries not installed yet (bundled entries excluded)."""
        raise NotImplementedError

    def validate(self, path: str | Path) -> str:
        """Checks a GGUF file or HF folder with the engine's parser without loading weights;
        returns "gguf" or "hf"; raises LibraryError with the parser's message."""
        raise NotImplementedError

    def import_model(self, source: str | Path, *, move: bool = False) -> InstalledModel:
        """Validates source, then copies (or moves) it into the folder. Refuses to overwrite."""
        raise NotImplementedError

    def delete(self, model: InstalledModel | Path, *, confirmed: bool) -> None:
        """Deletes a model in the folder. The caller asks the user first and passes confirmed=True;
        without it this raises LibraryError. Refuses paths outside the folder."""
        raise NotImplementedError

    def ram_fit(self, entry_or_model: CatalogEntry | InstalledModel) -> RamFit:
        raise NotImplementedError


__all__ = [
    "CATALOG_FORMAT",
    "CatalogEntry",
    "CatalogError",
    "InstalledModel",
    "LibraryError",
    "ModelLibrary",
    "RamFit",
    "UnverifiedEntryError",
    "catalog_path",
    "format_bytes",
    "load_catalog",
    "parse_catalog",
    "ram_fit",
]
