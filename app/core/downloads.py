"""Resumable, verified model downloads from the Hugging Face hub (or a mirror).

huggingface_hub resolves the file (hf_hub_url + get_hf_file_metadata: final URL, commit, ETag,
size); the transfer itself is ours, because huggingface_hub deletes partial files on failure and
checks sizes only. The bytes go to `<dest>.part`, with `<dest>.part.json` beside it (url, etag,
size, expected sha256); a later attempt, even after an app restart, sends `Range: bytes=N-` and
appends on 206 or starts over on 200. The sha256 is checked before the atomic rename into place;
on a mismatch the part file is deleted and ChecksumError raised.

Thread use: Download.run() blocks (call it on a worker thread); pause()/cancel() may be called
from any thread. DownloadQueue runs downloads on its own threads and reports through callbacks
that are called on those threads (the Qt layer re-emits them as signals).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 16
DISK_MARGIN = 64 << 20  # keep this much free beyond the file itself


class DownloadError(Exception):
    """A download failed. ``retryable``: trying again may work (network trouble); the .part file
    is kept for resuming unless the error says otherwise."""

    retryable = False


class NetworkError(DownloadError):
    """Connection refused/dropped or a server error; the part file is kept for resuming."""

    retryable = True


class NotFoundError(DownloadError):
    """404: the repo, revision or file does not exist (or the repo is private)."""


class AuthRequiredError(DownloadError):
    """401/403: the repo is gated or private; a Hugging Face token with access is needed."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the pinned sha256; the part file was deleted."""

    def __init__(self, path: object, expected: str, actual: str) -> None:
        self.path = str(path)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{self.path}: the download is corrupt (sha256 {actual}, expected {expected}); "
            "the partial file was deleted. Try downloading it again."
        )


class SizeMismatchError(DownloadError):
    """The server's size differs from the catalog's (a different file): nothing was downloaded."""


class DiskSpaceError(DownloadError):
    """Not enough free space (``needed``, ``free`` in bytes)."""

    def __init__(self, folder: object, needed: int, free: int) -> None:
        self.folder = str(folder)
        self.needed = needed
        self.free = free
        super().__init__(
            f"{self.folder}: not enough disk space: the download needs {needed / 1e9:.1f} GB more, "
            f"{free / 1e9:.1f} GB are free. Free some space or choose another models folder."
        )


class UnverifiedDownloadError(DownloadError):
    """No sha256 is pinned and the request did not set allow_unverified."""


class CancelledError(DownloadError):
    """The download was cancelled; the part file was deleted."""


class PausedError(DownloadError):
    """The download was paused; the part file is kept."""


class State(str, enum.Enum):
    QUEUED = "queued"
    RESOLVING = "resolving"
    DOWNLOADING = "downloading"
    PAUSED = "paused"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class DownloadRequest:
    repo: str
    file: str
    dest: Path  # final path in the library; the part file is dest + ".part"
    revision: str = "main"
    sha256: str | None = None  # pinned (from the catalog); None needs allow_unverified
    size: int | None = None  # pinned; checked against the server's before transferring
    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = None  # Hugging Face token for gated repos
    allow_unverified: bool = False  # the user confirmed downloading without a pinned sha256
    key: str = ""  # caller's id for the job (e.g. the catalog id); default: repo/file


@dataclass(frozen=True)
class Resolved:
    url: str  # where to GET the bytes (after the hub's redirect, if any)
    commit: str | None
    etag: str | None  # for LFS files: the sha256
    size: int | None


@dataclass(frozen=True)
class Progress:
    key: str
    state: State
    downloaded: int  # bytes in the part file (or final file)
    total: int | None
    speed: float  # bytes/s over the last few seconds
    eta: float | None  # seconds
    error: str = ""  # message for FAILED

    @property
    def fraction(self) -> float | None:
        return self.downloaded / self.total if self.total else None


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def sidecar_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def resolve(
    repo: str,
    file: str,
    revision: str = "main",
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    token: str | None = None,
) -> Resolved:
    """Asks the hub (HEAD) where the file is and what it is; maps hub errors to ours."""
    raise NotImplementedError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    raise NotImplementedError


class Download:
    """One file. run() resolves, checks disk space, transfers (resuming a part file), verifies
    and renames; it returns the final path or raises a DownloadError."""

    def __init__(
        self,
        request: DownloadRequest,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 0.2,
        timeout: float = 30.0,
    ) -> None:
        raise NotImplementedError

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def progress(self) -> Progress:
        raise NotImplementedError

    def run(self) -> Path:
        raise NotImplementedError

    def pause(self) -> None:
        """The running transfer stops within one chunk and raises PausedError; the part file
        stays for a later run()."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stops and deletes the part file (CancelledError)."""
        raise NotImplementedError


class DownloadQueue:
    """Runs queued downloads on background threads, at most max_parallel at a time.

    Callbacks run on the queue's threads: on_progress(Progress), on_done(key, Path),
    on_failed(key, DownloadError)."""

    def __init__(
        self,
        *,
        max_parallel: int = 1,
        on_progress: Callable[[Progress], None] | None = None,
        on_done: Callable[[str, Path], None] | None = None,
        on_failed: Callable[[str, DownloadError], None] | None = None,
    ) -> None:
        raise NotImplementedError

    def add(self, request: DownloadRequest) -> str:
        """Queues a download; returns its key. Adding a key that is queued or running is a no-op."""
        raise NotImplementedError

    def pause(self, key: str) -> None:
        raise NotImplementedError

    def resume(self, key: str) -> None:
        """Re-queues a paused or failed download (it resumes from its part file)."""
        raise NotImplementedError

    def cancel(self, key: str) -> None:
        raise NotImplementedError

    def jobs(self) -> list[Progress]:
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until nothing is queued or running; False on timeout."""
        raise NotImplementedError

    def close(self, *, wait: bool = True) -> None:
        """Pauses running downloads (their part files stay) and stops the threads."""
        raise NotImplementedError


def pending_downloads(folder: Path) -> list[dict[str, Any]]:
    """Sidecars of interrupted downloads in folder (to offer resuming after a restart)."""
    raise NotImplementedError


__all__ = [
    "DEFAULT_ENDPOINT",
    "AuthRequiredError",
    "CancelledError",
    "ChecksumError",
    "DiskSpaceError",
    "Download",
    "DownloadError",
    "DownloadQueue",
    "DownloadRequest",
    "NetworkError",
    "NotFoundError",
    "PausedError",
    "Progress",
    "Resolved",
    "SizeMismatchError",
    "State",
    "UnverifiedDownloadError",
    "part_path",
    "pending_downloads",
    "resolve",
    "sha256_file",
    "sidecar_path",
]
