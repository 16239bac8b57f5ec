"""Resumable, verified model downloads from the Hugging Face hub (or a mirror).

huggingface_hub resolves the file (hf_hub_url + get_hf_file_metadata: final URL, commit, ETag,
size); the transfer itself is ours, because huggingface_hub deletes partial files on failure and
checks sizes only. The bytes go to `<dest>.part`, with `<dest>.part.json` beside it (url, etag,
size, expected sha256); a later attempt, even after an app restart, sends `Range: bytes=N-` and
appends on 206 or starts over on 200. The sha256 is checked before the atomic rename into place;
on a mismatch the part file is deleted and ChecksumError raised.

Two Trit processes (each with its own data folder) may share one models folder. A download holds a
kernel lock on `<dest>.part.lock` from before it touches the part file until it is renamed into
place (_PartLock), so a second process's download of the same file fails at once
(DownloadingElsewhereError) and its Cancel leaves the other's part file alone. The kernel drops
the lock when a process dies: a crash leaves nothing that blocks the next attempt.

Thread use: Download.run() blocks (call it on a worker thread); pause()/cancel() may be called
from any thread. DownloadQueue runs downloads on its own threads and reports through callbacks
that are called on those threads (the Qt layer re-emits them as signals).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import errno
import hashlib
import http.client
import json
import os
import re
import select
import selectors
import shutil
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .units import format_bytes

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 16
DISK_MARGIN = 64 << 20  # keep this much free beyond the file itself


class DownloadError(Exception):
    """A download failed. ``retryable``: trying again may work (network trouble); the .part file
    is kept for resuming unless the error says otherwise. ``details``: technical particulars kept
    out of the message (paths, digests), for a tooltip or a log."""

    retryable = False
    details = ""


class NetworkError(DownloadError):
    """Connection refused/dropped or a server error; the part file is kept for resuming."""

    retryable = True


class NotFoundError(DownloadError):
    """404: the repo, revision or file does not exist (or the repo is private)."""


class AuthRequiredError(DownloadError):
    """401/403: the repo is gated or private; a Hugging Face token with access is needed."""


class LinkExpiredError(DownloadError):
    """401/403 from the host the hub redirected to (a CDN): its signed link expired or was refused.
    The token is never sent there, so a token would not help; a new attempt resolves a new link.
    The part file is kept."""

    retryable = True


class StorageError(DownloadError):
    """Writing to the models folder failed (disk full, read-only, no permission). The part file
    downloaded so far is kept; ``disk_full`` says whether freeing space is the fix."""

    retryable = True

    def __init__(self, message: str, *, disk_full: bool) -> None:
        self.disk_full = disk_full
        super().__init__(message)


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the pinned sha256; the part file was deleted."""

    def __init__(self, path: object, expected: str, actual: str, what: str = "") -> None:
        self.path = str(path)
        self.expected = expected
        self.actual = actual
        self.details = f"File: {self.path}\nExpected sha256: {expected}\nReceived sha256: {actual}"
        super().__init__(
            f"{what or Path(self.path).name}: the downloaded file is corrupt (its checksum does not "
            "match); the partial file was deleted. Try downloading it again."
        )


class RemoteMismatchError(DownloadError):
    """The server offers a different file than the catalog pins (size or sha256 differ): nothing
    was downloaded. The catalog entry or the revision is out of date."""


SizeMismatchError = RemoteMismatchError  # the skeleton's name


class DiskSpaceError(DownloadError):
    """Not enough free space (``needed``: bytes still to download, ``free``, ``margin``: what is
    kept free beyond the file)."""

    def __init__(self, folder: object, needed: int, free: int, margin: int = 0) -> None:
        self.folder = str(folder)
        self.needed = needed
        self.free = free
        self.margin = margin
        kept = f" (plus {format_bytes(margin)} that Trit keeps free)" if margin else ""
        super().__init__(
            f"{self.folder}: not enough disk space: the download needs {format_bytes(needed)} more{kept}, "
            f"{format_bytes(free)} are free. Free some space or choose another models folder."
        )


class UnverifiedDownloadError(DownloadError):
    """No sha256 is pinned and the request did not set allow_unverified."""


class CertificateError(DownloadError):
    """The server's TLS certificate could not be verified. Not retried at once (it would fail the
    same way); Resume may work once the cause is gone (a captive portal, a wrong clock, a proxy
    that inspects HTTPS). The part file is kept."""

    retryable = True


class CancelledError(DownloadError):
    """The download was cancelled; the part file was deleted."""


class PausedError(DownloadError):
    """The download was paused; the part file is kept."""


class DownloadingElsewhereError(DownloadError):
    """Another process (a second Trit with its own data folder and this models folder) is
    downloading this file: it holds the part file's lock, and nothing here touched the part file.
    Not retryable: trying again fails the same way while that download runs; once it is done the
    file is in place and a new attempt finds it."""

    def __init__(self, label: str, dest: Path) -> None:
        self.dest = str(dest)
        self.details = f"Locked: {lock_path(dest)}"
        super().__init__(
            f"{label}: another Trit is downloading this file into {dest.parent}; the download "
            "continues there. The model appears in Models once it has finished."
        )


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
    name: str = ""  # what the user calls it, for messages (e.g. the catalog name); default: key


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
    eta: float | None  # seconds; None while nothing arrives (stalled > 0)
    error: str = ""  # message for FAILED
    retryable: bool = False  # FAILED: whether trying again (Resume) may work, see DownloadError
    stalled: float = 0.0  # seconds since the server last sent a byte (DOWNLOADING)

    @property
    def fraction(self) -> float | None:
        return self.downloaded / self.total if self.total else None


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def sidecar_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def lock_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.lock")


if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)  # msvcrt.locking locks from the file position: byte 0
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EDEADLOCK):
                return False
            raise
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        # flock, not lockf: its lock belongs to the open file, so two Downloads of one process
        # exclude each other too, and closing some other fd of the file does not drop it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return True  # a file system without locks: download unlocked, as before
            raise
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class _PartLock:
    """The lock a download holds on `<dest>.part.lock` while it writes, verifies and renames its
    part file. A separate file, because the part file itself is truncated, deleted and renamed
    under the lock. Taken without waiting: a second process fails at once.

    The holder deletes the file as it lets go. On POSIX it does so while still locked, and a
    taker checks that the file it locked is still the one at the path (else it locked a deleted
    file whose holder has let go, and tries again); on Windows an open file cannot be deleted, so
    it is deleted after unlocking, and only when no other process has it open."""

    def __init__(self, dest: Path) -> None:
        self.path = lock_path(dest)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """True: locked (or already held); False: another process holds it. OSError: the lock
        file cannot be made (the folder is missing or read-only)."""
        for attempt in range(5):
            if self._fd is not None:
                break
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = _try_lock(fd)
                # the last attempt keeps what it locked: only a file system whose inode numbers
                # change under an open file gets there, and it should download, not spin
                current = locked and (sys.platform == "win32" or attempt == 4 or _same_file(fd, self.path))
                if locked and not current:
                    _unlock(fd)
            except BaseException:
                os.close(fd)
                raise
            if current:
                self._fd = fd
            else:
                os.close(fd)
                if not locked:
                    return False
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if sys.platform != "win32":
            _unlink_quietly(self.path)
        try:
            _unlock(fd)
        except OSError:
            pass  # closing drops it as well
        os.close(fd)
        if sys.platform == "win32":
            _unlink_quietly(self.path)  # fails while another process has it open: it stays


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def discard_partial(dest: Path) -> bool:
    """Deletes the part file of dest and its sidecar, unless another process is downloading into
    them (False). For a download that is not running here (Cancel of a paused or offered one)."""
    lock = _PartLock(dest)
    try:
        if not lock.acquire():
            return False
    except OSError:
        pass  # no lock file can be made there: neither can another process's download
    try:
        _unlink(part_path(dest), sidecar_path(dest))
    finally:
        lock.release()
    return True


@contextlib.contextmanager
def part_locks(*dests: Path) -> Iterator[bool]:
    """Holds the download locks of dests (their `.part.lock` files) for the with block: True when
    all are held, False when another process holds one (then none is). For work on a models
    folder's files that a download in another process may be writing (moving, deleting).
    OSError: a lock file cannot be made."""
    locks = [_PartLock(d) for d in dests]
    try:
        yield all(lock.acquire() for lock in locks)
    finally:
        for lock in locks:
            lock.release()


def move_partial(dest: Path, new_dest: Path) -> bool:
    """Moves the part file of dest and its sidecar to those of new_dest, holding both locks, so
    that a download running in another process neither loses its part nor has one moved in
    under it. False: another process holds either lock, or nothing could be moved (no part, or
    new_dest already has one); then nothing changed."""
    try:
        with part_locks(dest, new_dest) as held:
            if not held or not part_path(dest).exists():
                return False
            if part_path(new_dest).exists() or sidecar_path(new_dest).exists():
                return False
            os.replace(part_path(dest), part_path(new_dest))
            try:
                os.replace(sidecar_path(dest), sidecar_path(new_dest))
            except FileNotFoundError:
                pass  # a part without a sidecar resumes from its size alone
            except OSError:
                os.replace(part_path(new_dest), part_path(dest))  # both stay where they were
                return False
            return True
    except OSError:
        return False


_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_REDIRECTS = 5


def _is_sha256(s: str | None) -> bool:
    return bool(s) and _SHA_RE.match(s or "") is not None


def _network_error(e: BaseException, what: str) -> NetworkError:
    return NetworkError(f"{what}: {e or type(e).__name__}. Check the connection and try again.")


_SSL_CONTEXT: ssl.SSLContext | None = None
_SSL_LOCK = threading.Lock()
# Where systems keep their certificate bundle. A bundled app's OpenSSL looks only where the machine
# it was built on (Debian) keeps it, /usr/lib/ssl: on Fedora, openSUSE, Arch or macOS it found none
# and every transfer failed the certificate check after the hub (whose client looks here too) had
# answered; certificates an administrator added to the system's store were refused the same way.
SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch, Gentoo, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL, CentOS
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, Alpine, the BSDs
    "/usr/local/share/certs/ca-root-nss.crt",  # FreeBSD
)


def default_ssl_context() -> ssl.SSLContext:
    """What the system trusts (OpenSSL's own places, Windows' store, and the first of
    SYSTEM_CA_FILES there is) plus certifi's Mozilla roots, which huggingface_hub trusts too."""
    global _SSL_CONTEXT
    with _SSL_LOCK:
        if _SSL_CONTEXT is None:
            ctx = ssl.create_default_context()
            for path in SYSTEM_CA_FILES:
                if os.path.isfile(path):
                    try:
                        ctx.load_verify_locations(cafile=path)
                        break
                    except (OSError, ssl.SSLError):
                        continue
            try:
                import certifi

                ctx.load_verify_locations(cafile=certifi.where())
            except (ImportError, OSError, ssl.SSLError):
                pass  # the system's certificates alone
            _SSL_CONTEXT = ctx
        return _SSL_CONTEXT


def _certificate_failure(e: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate error behind e (httpx wraps ssl's in its own ConnectError), if any."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _certificate_error(e: ssl.SSLCertVerificationError, host: str, what: str) -> CertificateError:
    reason = e.verify_message or e.reason or str(e)
    err = CertificateError(
        f"{what}: the certificate of {host} could not be verified ({reason}). Check the computer's "
        "date and time; on a network that signs in through a web page, or behind a proxy or antivirus "
        "that inspects secure connections, sign in or ask its administrator. The part downloaded so "
        "far is kept."
    )
    err.details = str(e)
    return err


def resolve(
    repo: str,
    file: str,
    revision: str = "main",
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    token: str | None = None,
    what: str = "",
) -> Resolved:
    """Asks the hub (HEAD) where the file is and what it is; maps hub errors to ours, which
    start with `what` (default: repo/file@revision)."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    url = huggingface_hub.hf_hub_url(repo, file, revision=revision, endpoint=endpoint)
    try:
        # token=False: never fall back to a token saved on this machine; the app passes its own
        meta = huggingface_hub.get_hf_file_metadata(url, token=token or False, endpoint=endpoint, timeout=30)
    except HfHubHTTPError as e:
        code = e.response.status_code if e.response is not None else 0
        raise _http_error(code, what or f"{repo}/{file}@{revision}", token) from e
    except Exception as e:
        cert = _certificate_failure(e)
        if cert is not None:
            host = urllib.parse.urlsplit(endpoint).netloc
            raise _certificate_error(cert, host, what or f"{repo}/{file}@{revision}") from e
        if isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore"):
            raise _network_error(e, f"cannot reach {endpoint}") from e
        raise
    etag = meta.etag.lower() if meta.etag else None
    return Resolved(url=meta.location or url, commit=meta.commit_hash, etag=etag, size=meta.size)


def _http_error(code: int, what: str, token: str | None) -> DownloadError:
    if code in (401, 403):
        if token:
            return AuthRequiredError(
                f"{what}: the server refused the Hugging Face token (HTTP {code}). Check that the token is "
                "valid and that you accepted the model's license on its Hugging Face page."
            )
        return AuthRequiredError(
            f"{what}: this model is gated or private (HTTP {code}). Accept its license on Hugging Face "
            "and enter an access token in Settings."
        )
    if code == 404:
        return NotFoundError(f"{what}: not found on the server (HTTP 404). The catalog may be out of date.")
    if code == 429 or code >= 500:
        return NetworkError(f"{what}: the server is busy or failing (HTTP {code}). Try again later.")
    return DownloadError(f"{what}: the server answered HTTP {code}.")


def _storage_error(e: OSError, key: str, folder: Path) -> StorageError:
    """A local file error while downloading, said in the user's terms."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(
            f"{key}: the disk is full ({folder}). Free some space and try again; "
            "the part downloaded so far is kept.",
            disk_full=True,
        )
    return StorageError(
        f"{key}: the models folder cannot be written: {folder}: {e.strerror or e}. "
        "Make it writable or choose another models folder in Settings.",
        disk_full=False,
    )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    return doc if isinstance(doc, dict) else None


def _write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        _unlink(tmp)  # e.g. the disk is full: leave no half-written .tmp behind
        raise


def _unlink(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


class _Speed:
    """Bytes/s over a sliding window of a few seconds."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, t: float, n: int) -> float:
        self.samples.append((t, n))
        while len(self.samples) > 2 and t - self.samples[0][0] > self.window:
            self.samples.popleft()
        t0, n0 = self.samples[0]
        return (n - n0) / (t - t0) if t > t0 else 0.0


class Download:
    """One file. run() resolves, checks disk space, transfers (resuming a part file), verifies
    and renames; it returns the final path or raises a DownloadError.

    Dropped connections are retried `retries` times (resuming with Range), waiting `backoff`,
    2*backoff, ... seconds; after that the NetworkError is raised and the part file stays, so a
    later run() — in this process or after a restart — continues where it stopped."""

    def __init__(
        self,
        request: DownloadRequest,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 0.2,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 1.0,
        part_size: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """timeout: seconds without a byte from the server (or to connect) before the connection
        counts as dropped (then retried). part_size: what the part file holds for this download
        (default: its size now; DownloadQueue passes 0 when a cancelled download is still deleting
        it). ssl_context: for HTTPS transfers (default: default_ssl_context())."""
        self.request = request
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.timeout = timeout
        # reads wait at most this long, so pause/cancel and a stall are seen within it
        self.poll = min(1.0, timeout)
        self.retries = retries
        self.backoff = backoff
        self.ssl_context = ssl_context
        self._pause = threading.Event()
        self._cancel = threading.Event()
        self._running = threading.Lock()
        self._lock = threading.Lock()
        have = self._part_size() if part_size is None else part_size
        self._progress = Progress(self.key, State.QUEUED, have, request.size, 0.0, None)
        self._last_emit = 0.0
        # a duplicate of the connection's socket while connecting and waiting for headers: shutting
        # it down wakes a blocked TLS handshake or read (the SSL socket owns the original)
        self._wake: socket.socket | None = None
        self._speed = _Speed()

    @property
    def key(self) -> str:
        return self.request.key or f"{self.request.repo}/{self.request.file}"

    @property
    def label(self) -> str:
        """The download's name in messages."""
        return self.request.name or self.key

    @property
    def progress(self) -> Progress:
        with self._lock:
            return self._progress

    @property
    def part(self) -> Path:
        return part_path(self.request.dest)

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.request.dest)

    def _part_size(self) -> int:
        try:
            return self.part.stat().st_size
        except OSError:
            return 0

    def _emit(self, force: bool = False, **changes: Any) -> None:
        now = time.monotonic()
        with self._lock:
            p = replace(self._progress, **changes)
            if "downloaded" in changes:
                speed = self._speed.add(now, p.downloaded)
                left = (p.total - p.downloaded) if p.total is not None else None
                moving = left is not None and speed > 0 and p.stalled == 0
                p = replace(p, speed=speed, eta=left / speed if moving else None)
            self._progress = p
            due = force or now - self._last_emit >= self.progress_interval
            if due:
                self._last_emit = now
        if due and self.on_progress is not None:
            self.on_progress(p)

    def pause(self) -> None:
        """The running transfer stops within one chunk and raises PausedError; the part file
        stays for a later run()."""
        self._pause.set()
        self._interrupt()

    def cancel(self) -> None:
        """Stops and deletes the part file (CancelledError). Also works when not running; a part
        file another process is downloading into is left to it."""
        self._cancel.set()
        self._interrupt()
        if self._running.acquire(blocking=False):
            try:
                discard_partial(self.request.dest)
                self._emit(True, state=State.CANCELLED, downloaded=0)
            finally:
                self._running.release()

    def _interrupt(self) -> None:
        """Wakes a run() that waits for a TLS handshake or a server's response headers (connecting,
        resolving and the body loop poll)."""
        with self._lock:
            wake = self._wake
            if wake is not None:
                try:
                    wake.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _drop_wake(self) -> None:
        with self._lock:
            wake, self._wake = self._wake, None
        if wake is not None:
            wake.close()

    def _connect(
        self, address: tuple[str, int], timeout: float | None = None, source_address: Any = None
    ) -> socket.socket:
        """socket.create_connection that sees pause/cancel while it waits (an unreachable host
        that drops packets took the whole timeout): a non-blocking connect, polled."""
        host, port = address
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        last: OSError | None = None
        for family, kind, proto, _, addr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                if source_address:
                    sock.bind(source_address)
                sock.setblocking(False)
                rc = sock.connect_ex(addr)
                while rc in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
                    self._check_stop()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"no answer from {host} within {limit:.0f} s")
                    # a refused connect on Windows shows in the exception set, not the write set
                    _, w, x = select.select([], [sock], [sock], min(self.poll, left))
                    if w or x:
                        rc = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if rc:
                    raise OSError(rc, os.strerror(rc))
                sock.settimeout(timeout)
                with self._lock:  # _open drops it when the connection is made or has failed
                    self._wake = sock.dup()
                self._check_stop()  # a pause/cancel before _wake was set
                return sock
            except OSError as e:
                sock.close()
                last = e
            except BaseException:
                sock.close()
                raise
        raise last or OSError(f"{host}: no address to connect to")

    def _wait_for(self, fn: Callable[[], Any]) -> Any:
        """fn() on a helper thread, waited for so that pause/cancel act within a poll: resolving
        goes through huggingface_hub, whose requests cannot be interrupted. A cancelled call is
        left to end by its own timeout; its result is dropped."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = e
            finally:
                done.set()

        threading.Thread(target=call, name="trit-download-resolve", daemon=True).start()
        while not done.wait(self.poll):
            self._check_stop()
        self._check_stop()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _check_stop(self) -> None:
        if self._cancel.is_set():
            raise CancelledError(f"{self.label}: download cancelled")
        if self._pause.is_set():
            raise PausedError(f"{self.label}: download paused")

    def run(self) -> Path:
        if not self._running.acquire(blocking=False):
            raise DownloadError(f"{self.label}: this download is already running")
        lock = _PartLock(self.request.dest)
        try:
            self._pause.clear()
            if self._cancel.is_set():
                raise CancelledError(f"{self.label}: download cancelled")
            path = self._run(lock)
            size = path.stat().st_size
            self._emit(True, state=State.DONE, error="", downloaded=size, total=size)
            return path
        except CancelledError as e:
            if lock.held:
                _unlink(self.part, self.sidecar)
            else:  # cancelled before it was locked: the part file may be another process's
                discard_partial(self.request.dest)
            self._emit(True, state=State.CANCELLED, downloaded=0, error=str(e))
            raise
        except PausedError:
            self._emit(True, state=State.PAUSED, downloaded=self._part_size())
            raise
        except DownloadError as e:
            # the part file's size: 0 after a failure that deleted it (checksum, wrong size)
            self._emit(
                True, state=State.FAILED, error=str(e), retryable=e.retryable, downloaded=self._part_size()
            )
            raise
        except OSError as e:
            # network OSErrors are NetworkErrors by now: this is the models folder (disk full,
            # read-only). The part file stays, so Resume continues once the cause is fixed.
            err = _storage_error(e, self.key, self.request.dest.parent)
            self._emit(True, state=State.FAILED, error=str(err), retryable=True, downloaded=self._part_size())
            raise err from e
        finally:
            lock.release()
            self._running.release()

    def _run(self, lock: _PartLock) -> Path:
        """Locks the part file (lock) before it looks at it or the final file: from there to the
        rename, no other process's download of this file writes, verifies or renames."""
        rq = self.request
        dest = rq.dest
        expected = rq.sha256.lower() if rq.sha256 else None
        if expected is not None and not _is_sha256(expected):
            raise DownloadError(f"{self.label}: the pinned sha256 {rq.sha256!r} is not 64 hex digits")
        if expected is None and not rq.allow_unverified:
            raise UnverifiedDownloadError(
                f"{self.label}: no checksum is pinned for {rq.file}, so the download cannot be verified. "
                "Confirm to download it anyway."
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not lock.acquire():
            raise DownloadingElsewhereError(self.label, dest)
        self._emit(True, state=State.RESOLVING)
        res = self._with_retries(
            lambda: self._wait_for(
                lambda: resolve(
                    rq.repo, rq.file, rq.revision, endpoint=rq.endpoint, token=rq.token, what=rq.name
                )
            )
        )
        self._check_stop()
        if rq.size is not None and res.size is not None and rq.size != res.size:
            raise RemoteMismatchError(
                f"{self.label}: the server's {rq.file} has {res.size} bytes, the catalog pins {rq.size}; "
                "nothing was downloaded. Update Trit's catalog or pick another model."
            )
        if expected is not None and _is_sha256(res.etag) and res.etag != expected:
            raise RemoteMismatchError(
                f"{self.label}: the server's {rq.file} has sha256 {res.etag}, the catalog pins {expected}; "
                "nothing was downloaded. Update Trit's catalog or pick another model."
            )
        if expected is None and _is_sha256(res.etag):
            expected = res.etag  # not pinned, but still catches a corrupted transfer
        total = rq.size if rq.size is not None else res.size
        if dest.exists():
            if expected is not None and dest.is_file() and sha256_file(dest) == expected:
                return dest
            raise DownloadError(f"{dest}: a different file with this name is already in the models folder")

        # resume only a part file whose sidecar describes this very file
        side = {
            "key": self.key,
            "url": res.url,
            "repo": rq.repo,
            "file": rq.file,
            "revision": rq.revision,
            "commit": res.commit,
            "etag": res.etag,
            "size": total,
            "sha256": expected,
            "name": rq.name,
        }
        old = _read_sidecar(self.sidecar)
        if old is None or any(old.get(k) != side[k] for k in ("etag", "size", "sha256")):
            _unlink(self.part)
        have = self._part_size()
        if total is not None and have > total:
            _unlink(self.part)
            have = 0
        _write_json_atomic(self.sidecar, side)

        if total is not None:
            free = shutil.disk_usage(dest.parent).free
            need = total - have + DISK_MARGIN
            if free < need:
                raise DiskSpaceError(dest.parent, total - have, free, DISK_MARGIN)

        self._emit(True, state=State.DOWNLOADING, downloaded=have, total=total)
        self._with_retries(lambda: self._transfer(res.url, total))
        self._check_stop()

        self._emit(True, state=State.VERIFYING)
        size = self._part_size()
        if total is not None and size != total:
            _unlink(self.part, self.sidecar)
            raise DownloadError(
                f"{self.label}: the download has {size} bytes, expected {total}; deleted it. Try again."
            )
        if expected is not None:
            actual = sha256_file(self.part)
            if actual != expected:
                _unlink(self.part, self.sidecar)
                raise ChecksumError(self.part, expected, actual, self.label)
        os.replace(self.part, dest)
        _unlink(self.sidecar)
        return dest

    def _with_retries(self, fn: Callable[[], Any]) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except NetworkError:
                if attempt == self.retries:
                    raise
            # wait, but wake up at once for pause/cancel
            deadline = time.monotonic() + self.backoff * (2**attempt)
            while time.monotonic() < deadline:
                self._check_stop()
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        raise AssertionError("unreachable")

    def _open(
        self, url: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
        """GETs url, following redirects; returns the connection, response and the final url."""
        # the token goes to the hub itself only, by its own scheme: never to a CDN it redirects to,
        # nor over http to the host of an https hub (in clear text)
        hub = urllib.parse.urlsplit(self.request.endpoint)
        token_to = (hub.scheme.lower(), hub.netloc.lower())
        for _ in range(MAX_REDIRECTS + 1):
            u = urllib.parse.urlsplit(url)
            if u.scheme not in ("http", "https"):
                raise DownloadError(f"{self.label}: refusing to download from {url!r}")
            h = dict(headers)
            if self.request.token and (u.scheme.lower(), u.netloc.lower()) == token_to:
                h["Authorization"] = f"Bearer {self.request.token}"
            if u.scheme == "https":
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    u.netloc, timeout=self.timeout, context=self.ssl_context or default_ssl_context()
                )
            else:
                conn = http.client.HTTPConnection(u.netloc, timeout=self.timeout)
            # http.client's own hook for making the socket (CPython 3.3+): ours polls pause/cancel
            conn._create_connection = self._connect  # type: ignore[attr-defined]
            path = u.path + (f"?{u.query}" if u.query else "")
            try:
                conn.connect()  # TCP by _connect, then the TLS handshake (which _wake can end)
                self._check_stop()
                conn.request("GET", path or "/", headers=h)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._check_stop()  # a pause or cancel, not the network
                cert = _certificate_failure(e)
                if cert is not None:
                    raise _certificate_error(cert, u.netloc, self.label) from e
                raise _network_error(e, f"{self.label}: connection to {u.netloc} failed") from e
            except DownloadError:
                conn.close()
                raise
            finally:
                self._drop_wake()
            if resp.status in (301, 302, 303, 307, 308):
                loc = resp.getheader("Location")
                conn.close()
                if not loc:
                    raise DownloadError(f"{self.label}: HTTP {resp.status} without a Location")
                url = urllib.parse.urljoin(url, loc)
                continue
            return conn, resp, url
        raise DownloadError(f"{self.label}: more than {MAX_REDIRECTS} redirects")

    def _transfer(self, url: str, total: int | None) -> None:
        have = self._part_size()
        if total is not None and have == total:
            return
        headers = {"Accept-Encoding": "identity", "User-Agent": "trit"}
        if have:
            headers["Range"] = f"bytes={have}-"
        conn, resp, final = self._open(url, headers)
        try:
            if resp.status == 206:
                m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.getheader("Content-Range") or "")
                if not m or int(m.group(1)) != have:
                    # not the range we asked for: start over rather than splice wrong bytes
                    _unlink(self.part)
                    raise NetworkError(f"{self.label}: the server sent an unexpected range; restarting")
                mode = "ab"
            elif resp.status == 200:
                have, mode = 0, "wb"  # the server ignored Range: start over
            elif resp.status == 416 and total is None:
                return  # we already have everything the server has
            elif resp.status == 416:
                _unlink(self.part)
                raise NetworkError(f"{self.label}: the server rejected the resume range; restarting")
            elif resp.status in (401, 403) and (
                urllib.parse.urlsplit(final).netloc != urllib.parse.urlsplit(self.request.endpoint).netloc
            ):
                # the hub resolved the file (with the token, if any); the CDN it sent us to
                # never gets the token, so this is its signed link expiring, not a gated repo
                host = urllib.parse.urlsplit(final).netloc
                raise LinkExpiredError(
                    f"{self.label}: the download link from {host} has expired or was refused "
                    f"(HTTP {resp.status}). Try again: a new attempt gets a new link."
                )
            else:
                raise _http_error(resp.status, self.key, self.request.token)
            self._emit(True, downloaded=have, stalled=0.0)
            last_data = next_check = time.monotonic()
            with open(self.part, mode) as f:
                body = self._body(conn, resp)
                while True:
                    self._check_stop()
                    if time.monotonic() >= next_check:
                        next_check = time.monotonic() + 0.5
                        self._check_part_file(f)
                    try:
                        chunk = next(body, b"")
                    except (OSError, http.client.HTTPException) as e:
                        raise _network_error(e, f"{self.label}: the connection dropped") from e
                    if chunk is None:  # nothing arrived within self.poll
                        stalled = time.monotonic() - last_data
                        if stalled >= self.timeout:
                            raise NetworkError(
                                f"{self.label}: the server sent nothing for {stalled:.0f} s. Check the "
                                "connection and try again; the part downloaded so far is kept."
                            )
                        self._emit(downloaded=have, stalled=stalled)  # the speed decays to 0
                        continue
                    if not chunk:
                        break
                    last_data = time.monotonic()
                    f.write(chunk)
                    have += len(chunk)
                    if total is not None and have > total:
                        f.close()
                        _unlink(self.part)
                        raise DownloadError(
                            f"{self.label}: the server sent more than {total} bytes; deleted them"
                        )
                    self._emit(downloaded=have, stalled=0.0)
                f.flush()
                os.fsync(f.fileno())
            self._emit(True, downloaded=have, stalled=0.0)
            if resp.length:  # http.client counts down Content-Length: bytes promised but not sent
                raise NetworkError(f"{self.label}: the connection ended {resp.length} bytes early")
            if total is not None and have < total:
                raise NetworkError(f"{self.label}: the connection ended after {have} of {total} bytes")
        finally:
            conn.close()

    def _check_part_file(self, f: Any) -> None:
        """Fails if the part file was deleted under us (with the models folder, say): writing on
        into the unlinked file would only end in a size mismatch after the whole transfer."""
        if os.fstat(f.fileno()).st_nlink > 0:
            return
        folder = self.request.dest.parent
        if not folder.is_dir():
            msg = (
                f"{self.label}: the models folder {folder} was removed while downloading. Choose a "
                "models folder in Settings (or create this one again) and download the model again."
            )
        else:
            msg = f"{self.label}: the partial file was deleted while downloading. Download the model again."
        err = StorageError(msg, disk_full=False)
        err.retryable = False  # nothing is left to resume from
        raise err

    def _body(
        self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse
    ) -> Iterator[bytes | None]:
        """The response body as it arrives, with None after each self.poll seconds without data,
        so the caller sees pause/cancel and stalls instead of blocking until the socket timeout."""
        sock = conn.sock
        if sock is None:
            while chunk := resp.read1(CHUNK):
                yield chunk
            return
        # Non-blocking socket: wait in select(), then read only what has arrived. A read that
        # times out would leave the socket's file object unusable, so there is none. A chunked
        # body (no Content-Length; the hub's CDNs send one) is taken apart here, as http.client
        # reads a chunk's size line with a blocking readline.
        sock.settimeout(0.0)
        pending = getattr(sock, "pending", None)  # TLS: decrypted bytes select() cannot see
        dechunk = _Dechunk() if resp.chunked else None
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            try:  # header parsing may have read into the body: the buffer holds those bytes
                ready = bool(resp.fp.peek())
            except ssl.SSLWantReadError:
                ready = False
            while resp.length != 0:  # 0: all promised bytes are in (the connection may stay open)
                if not ready:
                    ready = bool(pending and pending()) or bool(sel.select(self.poll))
                if not ready:
                    yield None
                    continue
                ready = False
                try:
                    chunk = resp.read1(CHUNK) if dechunk is None else resp.fp.read1(CHUNK)
                except ssl.SSLWantReadError:  # a partial TLS record: wait for the rest
                    continue
                if dechunk is None:
                    if not chunk:
                        return
                    yield chunk
                    continue
                if not chunk:
                    raise http.client.IncompleteRead(b"", None)  # the end of the body never came
                data = dechunk.feed(chunk)
                if data:
                    yield data
                if dechunk.done:
                    return


class _Dechunk:
    """Decodes a chunked transfer-encoded body (RFC 9112 7.1) from the pieces it arrives in."""

    MAX_LINE = 4096

    def __init__(self) -> None:
        self._buf = b""
        self._left: int | None = None  # bytes of the current chunk still to come; None: a size line
        self._last = False  # the 0-size chunk was seen: trailer lines until an empty one
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data
        out: list[bytes] = []
        while not self.done:
            if self._left is None:
                end = buf.find(b"\n")
                if end < 0:
                    if len(buf) > self.MAX_LINE:
                        raise http.client.HTTPException("a chunk size line of the body is too long")
                    break
                line, buf = buf[:end].strip(), buf[end + 1 :]
                if self._last:
                    self.done = not line
                    continue
                size = line.split(b";")[0].strip()
                if not re.fullmatch(rb"[0-9a-fA-F]{1,15}", size):
                    raise http.client.HTTPException(f"a bad chunk size in the body: {line[:40]!r}")
                self._left = int(size, 16)
                if self._left == 0:
                    self._left, self._last = None, True
            elif self._left > 0:
                if not buf:
                    break
                take = buf[: self._left]
                out.append(take)
                buf = buf[len(take) :]
                self._left -= len(take)
            else:  # the CRLF after a chunk's data
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise http.client.HTTPException("a chunk of the body does not end where its size says")
                buf, self._left = buf[2:], None
        self._buf = buf
        return b"".join(out)


@dataclass
class _Job:
    download: Download
    state: State = State.QUEUED


class DownloadQueue:
    """Runs queued downloads on background threads, at most max_parallel at a time.

    Callbacks run on the queue's threads: on_progress(Progress), on_done(key, Path),
    on_failed(key, DownloadError). A paused job stays in jobs() until resumed or cancelled.

    A job waits while another download of the same file is still running, e.g. one that was
    cancelled and is unwinding: that one deletes "its" part file when it stops, which would be the
    new job's. Progress from a download that is no longer its key's job (cancelled, or replaced
    by resume()) is dropped, except the final CANCELLED of a cancelled one."""

    def __init__(
        self,
        *,
        max_parallel: int = 1,
        on_progress: Callable[[Progress], None] | None = None,
        on_done: Callable[[str, Path], None] | None = None,
        on_failed: Callable[[str, DownloadError], None] | None = None,
        download_options: dict[str, Any] | None = None,
    ) -> None:
        if not 1 <= max_parallel <= 4:
            raise ValueError("max_parallel must be 1 to 4")
        self.on_progress = on_progress
        self.on_done = on_done
        self.on_failed = on_failed
        self._options = dict(download_options or {})
        self._cond = threading.Condition()
        self._jobs: dict[str, _Job] = {}  # insertion order = queue order
        self._pending: collections.deque[str] = collections.deque()
        self._active = 0
        self._writing: set[Path] = set()  # dests of the downloads running now
        self._discarding: set[Path] = set()  # of those, cancelled ones: their part file goes
        self._closing = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"trit-download-{i}", daemon=True)
            for i in range(max_parallel)
        ]
        for t in self._threads:
            t.start()

    def _progress(self, p: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(p)

    def _new_download(self, request: DownloadRequest) -> Download:
        with self._cond:
            # the part file there is a cancelled download's, about to be deleted: not ours
            discarding = request.dest in self._discarding
        d = Download(request, **self._options, **({"part_size": 0} if discarding else {}))

        def on_progress(p: Progress) -> None:
            with self._cond:
                job = self._jobs.get(p.key)
                current = job is not None and job.download is d
            if current or (job is None and p.state == State.CANCELLED):
                self._progress(p)

        d.on_progress = on_progress
        return d

    def add(self, request: DownloadRequest) -> str:
        """Queues a download; returns its key. Adding a key that is queued or running is a no-op."""
        d = self._new_download(request)
        with self._cond:
            if self._closing:
                raise DownloadError("the download queue is closed")
            job = self._jobs.get(d.key)
            if job is not None and job.state in (State.QUEUED, State.DOWNLOADING):
                return d.key
            self._jobs[d.key] = _Job(d)
            self._pending.append(d.key)
            self._cond.notify()
        self._progress(d.progress)
        return d.key

    def _next(self) -> str | None:
        """The first queued key whose file no running download is writing (call with _cond held)."""
        for key in self._pending:
            if self._jobs[key].download.request.dest not in self._writing:
                return key
        return None

    def _worker(self) -> None:
        while True:
            key: str | None = None
            with self._cond:
                while not self._closing and (key := self._next()) is None:
                    self._cond.wait()
                if self._closing or key is None:
                    return
                self._pending.remove(key)
                job = self._jobs[key]
                job.state = State.DOWNLOADING
                dest = job.download.request.dest
                self._writing.add(dest)
                self._active += 1
            result: Path | None = None
            error: DownloadError | None = None
            try:
                result = job.download.run()
            except DownloadError as e:
                error = e
            except Exception as e:  # noqa: BLE001  # a bug must not kill the worker thread
                error = DownloadError(f"{key}: unexpected error: {e!r}")
                job.download._emit(True, state=State.FAILED, error=str(error))
            with self._cond:
                self._writing.discard(dest)
                self._discarding.discard(dest)
                self._active -= 1
                if result is not None:
                    job.state = State.DONE
                elif isinstance(error, PausedError):
                    job.state = State.PAUSED
                elif isinstance(error, CancelledError):
                    job.state = State.CANCELLED
                else:
                    job.state = State.FAILED
                current = self._jobs.get(key) is job
                self._cond.notify_all()
            if result is not None:
                if self.on_done is not None:
                    self.on_done(key, result)
            elif (
                error is not None
                and current
                and not isinstance(error, (PausedError, CancelledError))
                and self.on_failed
            ):
                self.on_failed(key, error)

    def pause(self, key: str) -> None:
        with self._cond:
            job = self._jobs[key]
            if job.state == State.QUEUED:
                self._pending.remove(key)
                job.state = State.PAUSED
                self._cond.notify_all()
                queued = True
            else:
                queued = False
        if queued:
            job.download._emit(True, state=State.PAUSED)
        else:
            job.download.pause()

    def resume(self, key: str) -> None:
        """Re-queues a paused or failed download (it resumes from its part file)."""
        with self._cond:
            job = self._jobs[key]
            if job.state not in (State.PAUSED, State.FAILED):
                return
            # a fresh Download: the old one may still be unwinding its pause on a worker thread
            job.download = self._new_download(job.download.request)
            job.state = State.QUEUED
            self._pending.append(key)
            self._cond.notify()
        job.download._emit(True, state=State.QUEUED)

    def cancel(self, key: str) -> None:
        """Stops the download and deletes its part file; the job leaves jobs()."""
        with self._cond:
            job = self._jobs.pop(key, None)
            if job is None:
                return
            if key in self._pending:
                self._pending.remove(key)
            if job.state == State.DOWNLOADING:
                self._discarding.add(job.download.request.dest)
            self._cond.notify_all()
        job.download.cancel()

    def jobs(self) -> list[Progress]:
        with self._cond:
            jobs = list(self._jobs.values())
        return [j.download.progress for j in jobs]

    def busy(self) -> set[Path]:
        """Final paths of the downloads that are queued or running, including cancelled ones still
        unwinding: these will still write into their folder."""
        with self._cond:
            queued = {j.download.request.dest for j in self._jobs.values() if j.state == State.QUEUED}
            return queued | self._writing

    def folder_change_refusal(self) -> str:
        """Why the models folder cannot change now ("" when it can): downloads that are queued or
        running (busy()) finish into the folder they started in, which would then not be the
        listed one."""
        if not self.busy():
            return ""
        return (
            "Cannot change the models folder while models are downloading: pause or cancel the "
            "downloads in Models first, or wait for them to finish."
        )

    def request(self, key: str) -> DownloadRequest | None:
        """The request of the job with this key (None: no such job)."""
        with self._cond:
            job = self._jobs.get(key)
            return job.download.request if job is not None else None

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until nothing is queued or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._active == 0, timeout)

    def close(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Pauses running downloads (their part files stay) and stops the threads. Queued ones
        get a sidecar, so that pending_requests() offers them after a restart as well."""
        with self._cond:
            self._closing = True
            running = [j.download for j in self._jobs.values() if j.state == State.DOWNLOADING]
            queued = [j.download for j in self._jobs.values() if j.state == State.QUEUED]
            self._cond.notify_all()
        for d in running:
            d.pause()
        for d in queued:
            _write_queued_sidecar(d)
        if wait:
            for t in self._threads:
                t.join(timeout)


def _write_queued_sidecar(d: Download) -> None:
    """What a download that never started needs to be offered again. Not over a sidecar that is
    there (a part file's, which the next run checks against the server's answer), nor while a
    download of the file runs (here or in another process) and may be writing its own."""
    rq = d.request
    doc = {
        "key": d.key,
        "repo": rq.repo,
        "file": rq.file,
        "revision": rq.revision,
        "size": rq.size,
        "sha256": rq.sha256.lower() if rq.sha256 else None,
        "name": rq.name,
        "queued": True,  # no url or etag: nothing was resolved yet
    }
    lock = _PartLock(rq.dest)
    try:
        if lock.acquire() and not d.sidecar.exists():
            _write_json_atomic(d.sidecar, doc)
    except OSError:
        pass  # the folder is gone or read-only: it is forgotten, as before
    finally:
        lock.release()


def pending_downloads(folder: Path) -> list[dict[str, Any]]:
    """Sidecars of interrupted downloads in folder (to offer resuming after a restart); each dict
    also has "dest" (the final path) and "downloaded" (bytes in the part file)."""
    out = []
    for side in sorted(Path(folder).glob("*.part.json")):
        doc = _read_sidecar(side)
        if doc is None:
            continue
        dest = side.with_name(side.name[: -len(".part.json")])
        try:
            have = part_path(dest).stat().st_size
        except OSError:
            have = 0
        out.append({**doc, "dest": str(dest), "downloaded": have})
    return out


def pending_requests(
    folder: Path, *, endpoint: str = DEFAULT_ENDPOINT, token: str | None = None
) -> list[DownloadRequest]:
    """DownloadRequests that continue the interrupted downloads in folder (after an app restart).
    The sha256 recorded in the sidecar (pinned, or the server's LFS hash) is checked again."""
    out = []
    for doc in pending_downloads(folder):
        try:
            out.append(
                DownloadRequest(
                    repo=str(doc["repo"]),
                    file=str(doc["file"]),
                    dest=Path(doc["dest"]),
                    revision=str(doc.get("revision") or "main"),
                    sha256=doc.get("sha256") or None,
                    size=int(doc["size"]) if doc.get("size") is not None else None,
                    endpoint=endpoint,
                    token=token,
                    allow_unverified=not doc.get("sha256"),
                    key=str(doc.get("key") or ""),
                    name=str(doc.get("name") or ""),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # a sidecar from something else: leave it alone
    return out


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
    "DownloadingElsewhereError",
    "LinkExpiredError",
    "NetworkError",
    "NotFoundError",
    "PausedError",
    "Progress",
    "RemoteMismatchError",
    "Resolved",
    "SizeMismatchError",
    "State",
    "StorageError",
    "UnverifiedDownloadError",
    "discard_partial",
    "lock_path",
    "move_partial",
    "part_locks",
    "part_path",
    "pending_downloads",
    "pending_requests",
    "resolve",
    "sha256_file",
    "sidecar_path",
]
