"""The model catalog (resources/catalog.json) and the user's model library folder.

Catalog entries are typed and pinned: size and sha256 come from the catalog, never from the
server, so a download is verified against what we shipped. An entry whose sha256 we could not
verify has sha256 = null and lists the field in "unverified"; downloading it needs the user's
explicit confirmation (require_verified(confirmed=True)).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trit.text import SURROGATES, replace_surrogates, short_repr

from .units import format_bytes

if TYPE_CHECKING:
    from .downloads import DownloadRequest

CATALOG_FORMAT = 1

MetadataValue = str | int | float | bool


class CatalogError(Exception):
    """catalog.json is unreadable or malformed; the message names the file, entry and field."""


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
    file: str  # file in the repo (the download URL)
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
    # the file name in the library folder; "" = file. Repos may share a file name (bitnet.cpp
    # names every I2_S export ggml-model-i2_s.gguf), local names may not: one file would count
    # as every entry installed, and deleting one would delete the others' model.
    local_file: str = ""
    # local names of earlier catalogs that may still hold this entry's file (downloaded then).
    # Several entries may share one (older catalogs saved bitnet.cpp's exports all under their
    # repo name): gguf_metadata then tells which entry such a file is.
    old_local_files: tuple[str, ...] = ()
    # (key, value) pairs the entry's GGUF header has, e.g. ("general.architecture", "llama")
    gguf_metadata: tuple[tuple[str, MetadataValue], ...] = ()

    @property
    def local_name(self) -> str:
        """The entry's file name in the models folder."""
        return self.local_file or self.file

    @property
    def verified(self) -> bool:
        """True when sha256 and size are pinned."""
        return self.sha256 is not None and self.size is not None

    def require_verified(self, *, confirmed: bool = False) -> None:
        """Raises UnverifiedEntryError unless the entry has a pinned sha256 or the user confirmed."""
        if self.sha256 is None and not confirmed:
            raise UnverifiedEntryError(self)

    def compatible(self, app_version: str) -> bool:
        """app_version >= min_app_version (dotted numbers)."""
        return _version(app_version) >= _version(self.min_app_version)

    def download_url(self, endpoint: str = "https://huggingface.co") -> str:
        return f"{endpoint.rstrip('/')}/{self.repo}/resolve/{self.revision}/{self.file}"


def _version(v: str) -> tuple[int, ...]:
    nums = []
    for part in str(v).split("."):
        m = re.match(r"\d+", part)
        nums.append(int(m.group()) if m else 0)
    return tuple(nums)


def catalog_path() -> Path:
    """resources/catalog.json (see trit.default_model.resources_dir)."""
    from trit.default_model import resources_dir

    return resources_dir() / "catalog.json"


_REQUIRED_STR = ("id", "name", "file", "license", "family")
_FIELDS = set(CatalogEntry.__dataclass_fields__)


def _entry(d: Any, where: str) -> CatalogEntry:
    if not isinstance(d, dict):
        raise CatalogError(f"{where}: each model must be a JSON object")
    label = f"{where}: model {d.get('id', '?')!r}"
    for k in _REQUIRED_STR:
        if not isinstance(d.get(k), str) or not d[k]:
            raise CatalogError(f"{label}: {k} must be a non-empty string")
    for k in (
        "repo",
        "revision",
        "license_url",
        "min_app_version",
        "description",
        "source",
        "comment",
        "local_file",
    ):
        if k in d and not isinstance(d[k], str):
            raise CatalogError(f"{label}: {k} must be a string")
    if "min_app_version" in d and not re.fullmatch(r"\d{1,6}(\.\d{1,6}){0,3}", d["min_app_version"]):
        # a typo would otherwise read as 0 and offer the model to every version
        raise CatalogError(f"{label}: min_app_version must be dotted numbers such as 0.2.0")
    size, sha, ram = d.get("size"), d.get("sha256"), d.get("ram_mb", 0)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise CatalogError(f"{label}: size must be a positive number of bytes or null")
    if sha is not None and (not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha)):
        raise CatalogError(f"{label}: sha256 must be 64 hex digits or null")
    if isinstance(ram, bool) or not isinstance(ram, int) or ram < 0:
        raise CatalogError(f"{label}: ram_mb must be a whole number of megabytes")
    if not isinstance(d.get("gated", False), bool):  # "no" would be truthy: a token asked for in vain
        raise CatalogError(f"{label}: gated must be true or false")
    unverified = d.get("unverified", [])
    if not isinstance(unverified, list) or not all(isinstance(u, str) for u in unverified):
        raise CatalogError(f"{label}: unverified must be a list of field names")
    old = d.get("old_local_files", [])
    if not isinstance(old, list) or not all(isinstance(o, str) for o in old):
        raise CatalogError(f"{label}: old_local_files must be a list of file names")
    meta = d.get("gguf_metadata", {})
    if not isinstance(meta, dict) or not all(
        isinstance(v, (str, int, float)) and not (isinstance(v, float) and not math.isfinite(v))
        for v in meta.values()
    ):
        raise CatalogError(f"{label}: gguf_metadata must map header keys to strings, numbers or true/false")
    names = [("file", d["file"]), *(("old_local_files", o) for o in old)]
    if "local_file" in d:
        names.append(("local_file", d["local_file"]))
    for k, name in names:
        if not name or any(c in name for c in "/\\\0") or name.startswith("."):
            raise CatalogError(f"{label}: {k} must be a plain file name")  # it becomes a path in the library
    if d.get("source", "hub") == "hub" and (not d.get("repo") or not d.get("revision")):
        raise CatalogError(f"{label}: a hub model needs repo and revision")
    known = {k: v for k, v in d.items() if k in _FIELDS}
    known.update(
        sha256=sha.lower() if sha else None,
        unverified=tuple(unverified),
        old_local_files=tuple(old),
        gguf_metadata=tuple(meta.items()),
    )
    known.setdefault("repo", "")
    known.setdefault("revision", "")
    known.setdefault("license_url", "")
    known.setdefault("ram_mb", 0)
    known.setdefault("size", None)
    return CatalogEntry(**known)


def parse_catalog(doc: Any, where: str = "catalog.json") -> list[CatalogEntry]:
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise CatalogError(f"{where}: expected an object with a 'models' list")
    fmt = doc.get("format", CATALOG_FORMAT)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        raise CatalogError(
            f"{where}: format must be a whole number (this Trit reads {CATALOG_FORMAT}), not {fmt!r}"
        )
    if fmt > CATALOG_FORMAT:
        raise CatalogError(f"{where}: catalog format {fmt} is newer than this Trit reads")
    entries = [_entry(m, where) for m in doc["models"]]
    ids = [e.id for e in entries]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise CatalogError(f"{where}: duplicate model id {min(dup)!r}")
    _check_local_names(entries, where)
    return entries


def _check_local_names(entries: Sequence[CatalogEntry], where: str) -> None:
    """Each local file name belongs to one entry and is no entry's old name. An old name may be
    shared by entries that all say what their GGUF header holds (gguf_metadata), which tells a
    file found there apart. Compared case-insensitively: macOS and Windows folders would hold
    A.gguf and a.gguf as one file."""
    owner: dict[str, str] = {}
    for e in entries:
        other = owner.setdefault(e.local_name.casefold(), e.id)
        if other != e.id:
            raise CatalogError(
                f"{where}: models {other!r} and {e.id!r} have the same file name {e.local_name!r} in "
                "the models folder; give one a local_file of its own"
            )
    old_owners: dict[str, list[CatalogEntry]] = {}
    for e in entries:
        for name in set(e.old_local_files):
            old_owners.setdefault(name.casefold(), []).append(e)
    for key, sharing in old_owners.items():
        name = next(o for o in sharing[0].old_local_files if o.casefold() == key)
        if key in owner:
            raise CatalogError(
                f"{where}: models {owner[key]!r} and {sharing[0].id!r} have the same file name "
                f"{name!r} in the models folder (as {sharing[0].id!r}'s old name); a file there "
                "would count as both"
            )
        blind = next((e for e in sharing if not e.gguf_metadata), None)
        if len(sharing) > 1 and blind is not None:
            raise CatalogError(
                f"{where}: models {sharing[0].id!r} and {sharing[1].id!r} share the old file name "
                f"{name!r}; {blind.id!r} needs gguf_metadata to tell a file there apart"
            )


def bundled_entry(spec: dict[str, Any] | None = None) -> CatalogEntry:
    """The default model (resources/default_model.json) as a catalog entry."""
    if spec is None:
        from trit.default_model import default_model_spec

        spec = default_model_spec()
    upstream = str(spec.get("upstream", ""))
    return CatalogEntry(
        id=Path(str(spec["file"])).stem.lower().replace(".", "-"),
        name=str(spec.get("name", spec["file"])),
        repo="",
        revision="",
        file=str(spec["file"]),
        size=int(spec["size"]) if spec.get("size") else None,
        sha256=str(spec["sha256"]).lower() if spec.get("sha256") else None,
        license=str(spec.get("license", "")),
        license_url=f"https://huggingface.co/{upstream}" if upstream else "",
        ram_mb=int(spec.get("min_ram_mb", 0)),
        family=str(spec.get("family", "")),
        description=f"Bundled with Trit ({upstream})" if upstream else "Bundled with Trit",
        source="bundled",
    )


def load_catalog(path: str | Path | None = None, *, include_bundled: bool = True) -> list[CatalogEntry]:
    """Entries of catalog.json, plus the bundled default model from default_model.json (first).
    Raises CatalogError naming the entry and field for a malformed file."""
    p = Path(path) if path is not None else catalog_path()
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise CatalogError(f"{p}: cannot read the model catalog: {e.strerror or e}") from e
    except ValueError as e:  # also UnicodeDecodeError
        raise CatalogError(f"{p}: the model catalog is not valid JSON: {e}") from e
    except RecursionError as e:
        raise CatalogError(f"{p}: the model catalog is not valid JSON: it is nested too deeply") from e
    entries = parse_catalog(doc, str(p))
    if include_bundled:
        b = bundled_entry()
        entries = [b, *(e for e in entries if e.id != b.id)]
        _check_local_names(entries, str(p))
    return entries


class ImportCancelledError(Exception):
    """The user cancelled an import; nothing was added to the models folder."""


@dataclass(frozen=True)
class SkippedFile:
    """A file of an imported folder that was not copied, and why."""

    name: str  # its path in the folder, e.g. "README.md" or "docs/a.md"
    reason: str  # "a link to outside the folder"


@dataclass(frozen=True)
class InstalledModel:
    path: Path  # a .gguf file or a Hugging Face folder
    name: str
    size: int  # bytes on disk
    kind: str  # "gguf" | "hf"
    entry: CatalogEntry | None = None  # the catalog entry it was installed from, if any
    # set by import_model: files of the source folder it left out (links out of it, devices)
    skipped: tuple[SkippedFile, ...] = field(default=(), compare=False)


def path_problem(path: str) -> tuple[str, str] | None:
    """(message, fix) when a model's path cannot be used: a file name that is not UTF-8 (an old
    archive's Latin-1 name) reaches Python as lone surrogates, which Qt's strings drop and the
    conversation store cannot hold: the path would change on its way and another model load."""
    if SURROGATES.search(path) is None:
        return None
    message = f"{replace_surrogates(Path(path).name)}: the file's name is not valid UTF-8 text, so Trit cannot keep it."
    fix = (
        "Rename the file (the letters shown as \ufffd are the ones to change), then choose it "
        "again in Models… (Ctrl+M)."
    )
    return message, fix


@dataclass(frozen=True)
class RamFit:
    needed_bytes: int
    available_bytes: int
    fits: bool
    text: str  # "needs 1.4 GB, you have 6.2 GB free"


def ram_fit(needed_bytes: int, available_bytes: int | None = None) -> RamFit:
    """available_bytes defaults to psutil.virtual_memory().available."""
    if available_bytes is None:
        import psutil

        available_bytes = int(psutil.virtual_memory().available)
    fits = needed_bytes <= available_bytes
    text = f"needs {format_bytes(needed_bytes)}, you have {format_bytes(available_bytes)} free"
    if not fits:
        text += ": close other apps or pick a smaller model"
    return RamFit(needed_bytes, available_bytes, fits, text)


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _is_hf_dir(p: Path) -> bool:
    return p.is_dir() and (p / "config.json").is_file() and any(p.glob("*.safetensors"))


IMPORT_CHUNK = 4 << 20
# O_NOFOLLOW: the path was resolved, so a link there now was swapped in since; O_NONBLOCK: a FIFO
# swapped in opens at once (and fstat then refuses it) instead of waiting for a writer
_READ_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
)
_NOT_A_FILE = "not a regular file (a device, FIFO or socket)"
_OUTSIDE = "a link to outside the folder"


@dataclass(frozen=True)
class _ImportFile:
    real: Path  # the file read: the path resolved, links and all
    name: Path  # where it goes, relative to the copy ("" for a GGUF: the copy itself)
    size: int


def _import_plan(src: Path) -> tuple[list[_ImportFile], list[SkippedFile]]:
    """What importing src copies: a GGUF file itself (a link the user picked is followed), or each
    regular file inside the folder src. A link is followed only where its target stays inside the
    folder: a cloned or unpacked folder can hold README.md -> ~/.ssh/id_ed25519 or a link to
    /dev/zero, which a plain copy turned into a private file in the models folder or a full disk.
    In Hugging Face's cache a snapshot's files are links into its repo's blobs/, which count as
    inside. Devices, FIFOs, sockets and links to folders are left out (SkippedFile says why)."""
    if not os.path.exists(src):
        return [], []  # validate() says so
    if not src.is_dir():
        try:
            real = src.resolve(strict=True)
            st = os.stat(real)
        except (OSError, RuntimeError) as e:
            raise LibraryError(src, f"cannot read the file: {_os_problem(e)}") from e
        if not stat.S_ISREG(st.st_mode):
            raise LibraryError(src, f"{_NOT_A_FILE}, so it cannot be a model")
        return [_ImportFile(real, Path(), st.st_size)], []
    root = src.resolve()
    inside = [root]
    if root.parent.name == "snapshots" and (root.parent.parent / "blobs").is_dir():
        inside.append((root.parent.parent / "blobs").resolve())
    files: list[_ImportFile] = []
    skipped: list[SkippedFile] = []

    def walk(folder: Path) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise LibraryError(
                src / folder.relative_to(root), f"cannot read the folder: {_os_problem(e)}"
            ) from e
        for e in entries:
            path = Path(e.path)
            name = path.relative_to(root)
            if e.is_dir(follow_symlinks=False):
                walk(path)
                continue
            real = path
            if e.is_symlink():
                try:
                    real = path.resolve(strict=True)
                except (OSError, RuntimeError):  # dangling, or a loop (RuntimeError before 3.13)
                    skipped.append(SkippedFile(name.as_posix(), "a broken link"))
                    continue
                if not any(real.is_relative_to(r) for r in inside):
                    skipped.append(SkippedFile(name.as_posix(), _OUTSIDE))
                    continue
            try:
                st = os.lstat(real)
            except OSError as err:
                raise LibraryError(src / name, f"cannot read the file: {_os_problem(err)}") from err
            if stat.S_ISDIR(st.st_mode):  # its files are copied where the folder itself is
                skipped.append(SkippedFile(name.as_posix(), "a link to a folder"))
            elif not stat.S_ISREG(st.st_mode):
                skipped.append(SkippedFile(name.as_posix(), _NOT_A_FILE))
            else:
                files.append(_ImportFile(real, name, st.st_size))

    walk(root)
    return files, skipped


def _os_problem(e: BaseException) -> str:
    """An OSError's reason in words (shutil.Error's str() is a list of tuples)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk holding the models folder is full"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _copy_import(
    src: Path,
    files: Sequence[_ImportFile],
    dest: Path,
    cancel: threading.Event | None,
    progress: Callable[[int, int], None] | None,
) -> list[SkippedFile]:
    """Copies files (_import_plan's) to dest in chunks: progress(done, total) after each,
    ImportCancelledError once cancel is set. A file that is no longer a regular file when opened
    is left out; a read or write error names the file. Returns what was left out."""
    total = sum(f.size for f in files)
    done = 0
    skipped: list[SkippedFile] = []
    for f in files:
        shown = src / f.name
        try:
            fd = os.open(f.real, _READ_FLAGS)
        except OSError as e:
            if e.errno == errno.ELOOP:  # a link put in its place since the plan was made
                skipped.append(SkippedFile(f.name.as_posix(), _OUTSIDE))
                continue
            raise LibraryError(shown, f"cannot read the file: {_os_problem(e)}") from e
        with os.fdopen(fd, "rb") as r:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                skipped.append(SkippedFile(f.name.as_posix(), _NOT_A_FILE))
                continue
            if hasattr(os, "O_NONBLOCK"):
                os.set_blocking(fd, True)
            target = dest / f.name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "xb") as w:
                    # at most the size planned: a file that grows while it is read cannot fill the disk
                    left = f.size
                    while left > 0 and (chunk := r.read(min(IMPORT_CHUNK, left))):
                        if cancel is not None and cancel.is_set():
                            raise ImportCancelledError
                        w.write(chunk)
                        left -= len(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            except OSError as e:
                raise LibraryError(
                    shown, f"cannot copy the file into the models folder: {_os_problem(e)}"
                ) from e
    return skipped


def skipped_text(skipped: Sequence[SkippedFile], most: int = 3) -> str:
    """ "Left out README.md (a link to outside the folder) and 2 more." for a status line."""
    if not skipped:
        return ""
    shown = ", ".join(f"{replace_surrogates(s.name)} ({s.reason})" for s in skipped[:most])
    more = f" and {len(skipped) - most} more" if len(skipped) > most else ""
    return f"Left out {shown}{more}."


STALE_IMPORT_SECONDS = 3600.0
# Hidden, in the models folder: {"format": 1, "moved": {old name: new name}} for files the library
# moved from an older catalog's shared name to their entry's own (ModelLibrary.locate).
MOVED_RECORD = ".trit-moved.json"
# a download's part, sidecar (and the sidecar's temp file) and lock: never models
_DOWNLOAD_SUFFIXES = (".part", ".part.json", ".part.json.tmp", ".part.lock")


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _same_value(have: object, want: MetadataValue) -> bool:
    """A header value equals the catalog's; bool is an int in Python, and True must not pass for a
    block_count of 1."""
    if isinstance(want, bool) or isinstance(have, bool):
        return type(have) is type(want) and have == want
    if isinstance(want, str):
        return isinstance(have, str) and have == want
    return isinstance(have, (int, float)) and have == want


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _rename_no_replace(src: Path, dst: Path) -> None:
    """Renames src to dst in one folder, never over an existing dst (FileExistsError). Windows'
    rename refuses an existing target itself; POSIX rename replaces it, so a hard link makes dst
    (failing if it exists) and src is unlinked after: a crash between the two leaves two names of
    one file, which ModelLibrary._settle resolves."""
    if sys.platform == "win32":
        os.rename(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        # no hard links here (FAT, exFAT, some network shares): the caller holds both names'
        # download locks, so only another app could create dst in this instant
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "the file exists", str(dst)) from e
        os.rename(src, dst)
        return
    os.unlink(src)


class ModelLibrary:
    """The folder of models the user has. Installed = GGUF files (named *.gguf, or named otherwise
    and starting with GGUF's magic: an older Trit imported model.bin as it was) and HF folders
    (config.json + *.safetensors) directly in the folder. An entry counts as installed when its
    local file is there (with the pinned size, when it is known). A file under an old local name
    (older catalogs saved BitNet 2B4T and the Falcon3 entries all as ggml-model-i2_s.gguf) is the
    entry its GGUF header says it is (gguf_metadata), and is moved to that entry's own name the
    first time the folder is listed; when no entry or several fit, it is a plain file. Partial
    downloads (*.part) are not models. The bundled default model also counts as installed where
    trit.default_model finds it."""

    def __init__(self, folder: str | Path, catalog: Sequence[CatalogEntry] = ()) -> None:
        self._folder = Path(folder).expanduser()
        self._catalog = list(catalog)
        # path -> ((size, mtime_ns), value): a header is read once while the file is unchanged
        self._headers: dict[Path, tuple[tuple[int, int], dict[str, MetadataValue] | None]] = {}
        self._magic: dict[Path, tuple[tuple[int, int], bool]] = {}
        # the model files in use (loaded or loading): a file under an old name is not moved while
        # it is one of them (the window lost track of its loaded model, and could delete it)
        self.in_use: Callable[[], Iterable[str | Path]] = tuple

    def settle_old_names(self) -> None:
        """Moves each file under an older catalog's shared name to its entry's own name, as a
        listing does: at start, before a model is loaded from there."""
        for name in sorted({n for e in self._catalog for n in e.old_local_files}):
            p = self._folder / name
            if p.is_file():
                self._settle(p)

    @property
    def folder(self) -> Path:
        return self._folder

    def holds(self, path: Path | str) -> bool:
        """True when path is directly in the models folder (symlinks resolved): the only models
        Trit deletes, and the ones an import refuses as already there."""
        try:
            return Path(path).resolve().parent == self._folder.resolve()
        except OSError:
            return False

    @property
    def catalog(self) -> list[CatalogEntry]:
        return list(self._catalog)

    def set_folder(self, folder: str | Path) -> None:
        """Uses another folder (created if needed; must be writable). Existing models stay where
        they are: the caller may offer to move them."""
        p = Path(folder).expanduser()
        try:
            p.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".trit-write-test-", dir=p)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise LibraryError(p, f"cannot use this folder for models: {e.strerror or e}") from e
        except ValueError as e:  # a NUL character: OK in Settings did nothing, with a traceback
            raise LibraryError(p, f"cannot use this folder for models: {e}") from e
        self._folder = p

    def entry(self, entry_id: str) -> CatalogEntry:
        for e in self._catalog:
            if e.id == entry_id:
                return e
        raise KeyError(entry_id)

    def path_for(self, entry: CatalogEntry) -> Path:
        """Where the entry's file lives (or will, once downloaded)."""
        if entry.source == "bundled":
            from trit.default_model import default_model_path

            found = default_model_path()
            if found is not None and found.name == entry.local_name:
                return found
        p = self._folder / entry.local_name
        if not self._matches(entry, p):
            for old in entry.old_local_files:  # downloaded under an earlier catalog's name
                if self._identify(self._folder / old) == entry:
                    return self._folder / old
        return p

    def _matches(self, entry: CatalogEntry, path: Path) -> bool:
        try:
            return path.is_file() and (entry.size is None or path.stat().st_size == entry.size)
        except OSError:
            return False

    def is_installed(self, entry: CatalogEntry) -> bool:
        return self._matches(entry, self.path_for(entry))

    def locate(self, path: str | Path) -> Path:
        """Where a model path that a conversation or the settings stored is now: the path when it
        exists; else, in the models folder, the file of that name (the folder was moved:
        Settings > Models folder) or the file the library moved it to from an older catalog's
        shared name; else the path unchanged (for the caller's "moved or deleted" message)."""
        p = Path(path).expanduser()
        if p.exists() or not p.name:
            return p
        here = self._folder / p.name
        if here.is_file():
            return here
        new = self._moves().get(p.name)
        if new is not None and (self._folder / new).is_file():
            return self._folder / new
        return p

    def _moves(self) -> dict[str, str]:
        """MOVED_RECORD's old name -> new name; {} when there is none or it is unreadable."""
        try:
            doc = json.loads((self._folder / MOVED_RECORD).read_text(encoding="utf-8"))
            moved = doc["moved"]
        except (OSError, ValueError, TypeError, KeyError, RecursionError):
            return {}
        if not isinstance(moved, dict):
            return {}
        return {
            k: v
            for k, v in moved.items()
            if isinstance(k, str) and isinstance(v, str) and v and Path(v).name == v and not v.startswith(".")
        }

    def _record_move(self, old: str, new: str) -> None:
        """Adds old -> new to MOVED_RECORD (a temp file of its own, then a rename). OSError: not
        written; the caller then leaves the file where it is."""
        moved = self._moves()
        moved[old] = new
        fd, tmp = tempfile.mkstemp(prefix=".trit-moved-", dir=self._folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": 1, "moved": moved}, f, indent=1)
            os.replace(tmp, self._folder / MOVED_RECORD)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _header(self, path: Path) -> dict[str, MetadataValue] | None:
        """The header values the catalog's gguf_metadata asks about (missing keys left out); None
        when the file is not a readable GGUF. Parsed once per (size, mtime): the Models dialog lists
        the folder each time it opens, and a header with a 131k-token vocabulary takes tens of ms.
        The engine's parser maps the file and reads only the header; no tensor data is touched."""
        try:
            stamp = _stamp(path)
        except OSError:
            return None
        hit = self._headers.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        from trit.engine.errors import ModelFormatError
        from trit.engine.gguf import GGUFFile

        keys = {k for e in self._catalog for k, _ in e.gguf_metadata}
        meta: dict[str, MetadataValue] | None
        try:
            with GGUFFile(path) as g:
                meta = {k: v for k in keys if isinstance(v := g.metadata.get(k), (str, int, float))}
        except (ModelFormatError, OSError, ValueError):
            meta = None
        self._headers[path] = (stamp, meta)
        return meta

    def _is_gguf(self, path: Path) -> bool:
        """The file starts with GGUF's magic (read once per size and mtime)."""
        try:
            stamp = _stamp(path)
            hit = self._magic.get(path)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            with open(path, "rb") as f:
                yes = f.read(4) == b"GGUF"
        except OSError:
            return False
        self._magic[path] = (stamp, yes)
        return yes

    def _identify(self, path: Path) -> CatalogEntry | None:
        """The one entry a file under an old local name is: of the entries that had that name, the
        one whose pinned size and gguf_metadata the file has. None when none or several fit or the
        header cannot be read: a plain file is better than a model under another's name."""
        claimants = [e for e in self._catalog if path.name in e.old_local_files]
        if not claimants or not path.is_file():
            return None
        meta = self._header(path)
        if meta is None:
            return None
        fits = [
            e
            for e in claimants
            if self._matches(e, path) and all(_same_value(meta.get(k), v) for k, v in e.gguf_metadata)
        ]
        return fits[0] if len(fits) == 1 else None

    def _settle(self, path: Path) -> tuple[Path, CatalogEntry | None]:
        """A model file in the folder: where it is and which entry it is. A file under an old local
        name that one entry fits is moved to that entry's own name when that name is free, so later
        lookups need no header; it stays (and still counts as the entry) while a download holds
        either name's lock or the folder refuses the move."""
        if not any(path.name in e.old_local_files for e in self._catalog):
            e = self._entry_named(path.name)
            return path, (e if e is not None and self._matches(e, path) else None)
        e = self._identify(path)
        if e is None:
            return path, None
        own = self._folder / e.local_name
        try:
            if os.path.lexists(own):
                if own.is_file() and os.path.samefile(path, own):
                    path.unlink()  # a move cut short between link and unlink: a second name
                    return own, e
                # the entry has a file of its own: this one is a copy, or the own one is damaged
                return (path, None) if self._matches(e, own) else (path, e)
        except OSError:
            return path, None
        if not path.is_symlink() and self._move_old(path, own, e):
            return own, e
        return path, e

    def _move_old(self, src: Path, dst: Path, entry: CatalogEntry) -> bool:
        """Moves src (an old local name) to dst (entry's own), holding both names' download locks:
        an older Trit may be finishing a download into src, this one into dst. The move is recorded
        first (locate finds a stored old path again). False: not now; nothing moved."""
        from .downloads import part_locks

        if any(_same_file(src, Path(p)) for p in self.in_use() if p):
            return False
        try:
            with part_locks(src, dst) as held:
                # under the locks: still the file identified, and still no dst
                if not held or os.path.lexists(dst) or self._identify(src) != entry:
                    return False
                self._record_move(src.name, dst.name)
                _rename_no_replace(src, dst)
                return True
        except OSError:
            return False

    def _entry_named(self, name: str) -> CatalogEntry | None:
        """The entry whose own file in the folder is called name."""
        return next((e for e in self._catalog if e.local_name == name), None)

    def installed(self) -> list[InstalledModel]:
        out: list[InstalledModel] = []
        seen: set[Path] = set()
        if self._folder.is_dir():
            for p in sorted(self._folder.iterdir()):
                if p.name.startswith(".") or p.name.endswith(_DOWNLOAD_SUFFIXES):
                    continue  # hidden (".importing-*" copies too) or a download's files
                if p.is_file() and (p.suffix.lower() == ".gguf" or self._is_gguf(p)):
                    p, entry = self._settle(p)
                    if p.resolve() in seen:
                        continue
                    # an imported model.bin keeps its suffix in the list: model.gguf may be beside it
                    label = p.stem if p.suffix.lower() == ".gguf" else p.name
                    out.append(
                        InstalledModel(
                            p,
                            entry.name if entry else replace_surrogates(label),
                            p.stat().st_size,
                            "gguf",
                            entry,
                        )
                    )
                    seen.add(p.resolve())
                elif _is_hf_dir(p):
                    out.append(InstalledModel(p, replace_surrogates(p.name), _dir_size(p), "hf", None))
                    seen.add(p.resolve())
        for e in self._catalog:  # the bundled model outside the folder
            if e.source == "bundled":
                p = self.path_for(e)
                if p.resolve() not in seen and self._matches(e, p):
                    out.insert(0, InstalledModel(p, e.name, p.stat().st_size, "gguf", e))
        return out

    def import_dest(self, src: Path, kind: str) -> Path:
        """Where import_model puts src (kind: validate()'s "gguf" or "hf"). A GGUF named otherwise
        (model.bin) gets the suffix: other apps, and file managers, know it by that."""
        return self._folder / (
            src.name if kind == "hf" or src.suffix.lower() == ".gguf" else f"{src.stem}.gguf"
        )

    def remove_stale_imports(self, max_age: float = STALE_IMPORT_SECONDS) -> list[Path]:
        """Deletes the hidden ".importing-*" copies an app that died mid-import left behind: those
        where nothing was written for max_age seconds (a running import writes every few ms, maybe
        in another Trit window). Returns what it deleted."""
        gone: list[Path] = []
        try:
            staged = [p for p in self._folder.iterdir() if p.name.startswith(".importing-")]
        except OSError:
            return gone
        now = time.time()
        for p in staged:
            try:
                newest = max(
                    (f.stat().st_mtime for f in [p, *p.rglob("*")] if not f.is_symlink()), default=0.0
                )
                if now - newest < max_age:
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                gone.append(p)
            except OSError:
                continue  # another window's, or not ours to touch: left as it is
        return gone

    def available(self) -> list[CatalogEntry]:
        """Catalog entries not installed yet (bundled entries excluded)."""
        return [e for e in self._catalog if e.source != "bundled" and not self.is_installed(e)]

    def validate(self, path: str | Path) -> str:
        """Checks a GGUF file or HF folder with the engine's parser without loading weights;
        returns "gguf" or "hf"; raises LibraryError with the parser's message."""
        from trit.engine.errors import ModelFormatError

        p = Path(path)
        try:
            if p.is_file():
                from trit.engine.gguf import GGUFFile
                from trit.engine.gguf_loader import BITNET_ARCHS, LLAMA_ARCHS

                with GGUFFile(p) as g:
                    arch = g.get("general.architecture")
                    # a number array would make `in` ask numpy for one truth value (ValueError)
                    if not isinstance(arch, str) or arch not in BITNET_ARCHS + LLAMA_ARCHS:
                        raise LibraryError(
                            p,
                            f"architecture {short_repr(arch)} is not supported; this version runs "
                            f"{', '.join(BITNET_ARCHS + LLAMA_ARCHS)} models",
                        )
                return "gguf"
            if p.is_dir():
                from trit.engine.hf import parse_config, read_config
                from trit.engine.safetensors import open_checkpoint

                cfg_path = p / "config.json"
                # the loader's reading: a size cap, and nesting too deep is a format error
                parse_config(read_config(cfg_path), cfg_path)
                open_checkpoint(p).close()  # headers, shapes and offsets checked; no weights read
                return "hf"
        except ModelFormatError as e:
            raise LibraryError(e.path, e.problem) from e
        raise LibraryError(p, "no such file or folder")

    def import_model(
        self,
        source: str | Path,
        *,
        move: bool = False,
        cancel: threading.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> InstalledModel:
        """Validates source, then copies (or moves) it into the folder under a temporary name and
        renames it, so a half-copied model never shows up. A GGUF file is named *.gguf there.
        Refuses to overwrite. A folder's copy holds only its own regular files (_import_plan); the
        result's skipped says what was left out. The copy goes in chunks: progress(done, total)
        after each, ImportCancelledError once cancel is set (nothing is left behind)."""
        src = Path(source).expanduser()
        files, skipped = ([], []) if move else _import_plan(src)
        needed = [s for s in skipped if s.name == "config.json" or s.name.endswith(".safetensors")]
        if needed:  # checked before validate() reads it: a FIFO there would block it for good
            raise LibraryError(
                src / needed[0].name,
                f"{needed[0].reason}: Trit copies only the folder's own files, and the model needs "
                "this one. Put the file itself in the folder in place of the link, then import again.",
            )
        kind = self.validate(src)
        self._folder.mkdir(parents=True, exist_ok=True)
        dest = self.import_dest(src, kind)
        if dest.exists():
            raise LibraryError(dest, "a model with this name is already in the models folder")
        if self.holds(src):
            raise LibraryError(src, "this model is already in the models folder")
        earlier = self._folder / src.name
        if (
            kind == "gguf"
            and earlier != dest
            and earlier.is_file()
            and earlier.stat().st_size == src.stat().st_size
        ):
            # an older Trit imported model.bin under its own name: a second copy of gigabytes
            raise LibraryError(earlier, "this model is already in the models folder")
        try:
            # ".importing-*": hidden from the list, and left behind only if the app dies mid-copy
            staging = Path(tempfile.mkdtemp(prefix=".importing-", dir=self._folder))
        except OSError as e:
            raise LibraryError(dest, f"cannot copy the model into the models folder: {_os_problem(e)}") from e
        tmp = staging / dest.name
        try:
            if move:
                shutil.move(str(src), str(tmp))
            else:
                skipped += _copy_import(src, files, tmp, cancel, progress)
            os.replace(tmp, dest)
        except OSError as e:  # shutil.Error too: its str() is a list of tuples
            raise LibraryError(dest, f"cannot copy the model into the models folder: {_os_problem(e)}") from e
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if kind == "hf":
            return InstalledModel(dest, dest.stem, _dir_size(dest), kind, None, tuple(skipped))
        dest, entry = self._settle(dest)
        return InstalledModel(dest, entry.name if entry else dest.stem, dest.stat().st_size, kind, entry)

    def delete(self, model: InstalledModel | Path, *, confirmed: bool) -> None:
        """Deletes a model in the folder. The caller asks the user first and passes confirmed=True;
        without it this raises LibraryError. Refuses paths outside the folder."""
        p = Path(model.path if isinstance(model, InstalledModel) else model)
        if not confirmed:
            raise LibraryError(p, "deleting a model needs the user's confirmation")
        if not self.holds(p):
            raise LibraryError(
                p, f"only models directly in the models folder ({self._folder}) can be deleted here"
            )
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError as e:
            raise LibraryError(p, f"cannot delete the model: {e.strerror or e}") from e
        for extra in (p.with_name(p.name + ".part"), p.with_name(p.name + ".part.json")):
            if extra.exists():
                extra.unlink()

    def download_request(
        self,
        entry: CatalogEntry,
        *,
        endpoint: str = "https://huggingface.co",
        token: str | None = None,
        confirmed: bool = False,
    ) -> DownloadRequest:
        """The downloads.DownloadRequest that puts entry into this folder. Raises
        UnverifiedEntryError for an entry without sha256 unless the user confirmed."""
        from .downloads import DownloadRequest

        if entry.source != "hub":
            raise LibraryError(entry.local_name, f"{entry.name} is bundled with Trit, not downloaded")
        entry.require_verified(confirmed=confirmed)
        return DownloadRequest(
            repo=entry.repo,
            file=entry.file,
            dest=self._folder / entry.local_name,
            revision=entry.revision,
            sha256=entry.sha256,
            size=entry.size,
            endpoint=endpoint,
            token=token,
            allow_unverified=confirmed,
            key=entry.id,
        )

    def ram_fit(
        self, entry_or_model: CatalogEntry | InstalledModel, available_bytes: int | None = None
    ) -> RamFit:
        """From the catalog's ram_mb, or for a model without an entry: its size + 25% + 300 MB
        (KV cache, activations, runtime)."""
        x = entry_or_model
        if isinstance(x, InstalledModel) and x.entry is not None:
            x = x.entry
        if isinstance(x, CatalogEntry) and x.ram_mb:
            need = x.ram_mb * 1_000_000
        else:
            size = x.size if isinstance(x, InstalledModel) else (x.size or 0)
            need = int(size * 1.25) + 300_000_000
        return ram_fit(need, available_bytes)


__all__ = [
    "CATALOG_FORMAT",
    "CatalogEntry",
    "CatalogError",
    "ImportCancelledError",
    "InstalledModel",
    "LibraryError",
    "ModelLibrary",
    "RamFit",
    "SkippedFile",
    "UnverifiedEntryError",
    "bundled_entry",
    "catalog_path",
    "format_bytes",
    "load_catalog",
    "parse_catalog",
    "ram_fit",
    "skipped_text",
]
