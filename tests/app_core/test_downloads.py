"""Resumable verified downloads against a real local HTTP server speaking the hub protocol, with
faults: dropped connections, wrong bytes, 404, 401 (gated), slow link with pause/resume, server
restart between attempts, a server that ignores Range. Only 127.0.0.1 is contacted."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import random
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from trit.app.core import downloads as dl
from trit.app.core.downloads import (
    AuthRequiredError,
    CancelledError,
    ChecksumError,
    DiskSpaceError,
    Download,
    DownloadQueue,
    DownloadRequest,
    LinkExpiredError,
    NetworkError,
    NotFoundError,
    PausedError,
    Progress,
    RemoteMismatchError,
    State,
    StorageError,
    UnverifiedDownloadError,
    part_path,
    pending_downloads,
    pending_requests,
    resolve,
    sidecar_path,
)

from .hubserver import COMMIT, TLS_CERT, HubServer, HubState, client_context

pytestmark = pytest.mark.timeout(120)

REPO = "org/model-gguf"
FILE = "model-i2_s.gguf"
DATA = random.Random(1).randbytes(600_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def hub() -> Iterator[HubServer]:
    state = HubState(
        files={(REPO, FILE): DATA, ("gated/model", FILE): DATA[:1000]}, gated={"gated/model": "hf_good"}
    )
    with HubServer(state) as s:
        yield s


def request(hub: HubServer, tmp_path: Path, **kw: object) -> DownloadRequest:
    args: dict[str, object] = {
        "repo": REPO,
        "file": FILE,
        "dest": tmp_path / FILE,
        "sha256": SHA,
        "size": len(DATA),
    }
    args["endpoint"] = hub.endpoint
    args.update(kw)
    return DownloadRequest(**args)  # type: ignore[arg-type]


def fast(req: DownloadRequest, **kw: object) -> Download:
    opts: dict[str, object] = {"retries": 0, "backoff": 0.01, "timeout": 10}
    opts.update(kw)
    return Download(req, **opts)  # type: ignore[arg-type]


def assert_clean_success(tmp_path: Path) -> None:
    dest = tmp_path / FILE
    assert dest.read_bytes() == DATA
    assert not part_path(dest).exists() and not sidecar_path(dest).exists()


def gets(hub: HubServer) -> list[str | None]:
    return [e.range for e in hub.state.log if e.server == "cdn" and e.method == "GET"]


def test_resolve(hub: HubServer) -> None:
    r = resolve(REPO, FILE, "main", endpoint=hub.endpoint)
    assert r.commit == COMMIT and r.etag == SHA and r.size == len(DATA)
    assert r.url == f"http://127.0.0.1:{hub.cdn.server_address[1]}/cdn/{SHA}"


def test_download_verifies_and_reports_progress(hub: HubServer, tmp_path: Path) -> None:
    seen: list[Progress] = []
    d = fast(request(hub, tmp_path), progress_interval=0.0)
    d.on_progress = seen.append
    assert d.run() == tmp_path / FILE
    assert_clean_success(tmp_path)
    states = [p.state for p in seen]
    assert states[0] == State.RESOLVING and states[-1] == State.DONE and State.VERIFYING in states
    sizes = [p.downloaded for p in seen if p.state == State.DOWNLOADING]
    assert sizes == sorted(sizes) and sizes[-1] == len(DATA)
    assert all(p.total == len(DATA) for p in seen if p.state == State.DOWNLOADING)
    assert d.progress.fraction == 1.0
    assert gets(hub) == [None]
    # running it again finds the verified file and transfers nothing
    assert fast(request(hub, tmp_path)).run() == tmp_path / FILE
    assert gets(hub) == [None]


def test_drop_then_resume_in_a_later_run(hub: HubServer, tmp_path: Path) -> None:
    hub.state.drop_after = 200_000
    req = request(hub, tmp_path)
    with pytest.raises(NetworkError):
        fast(req).run()
    part = part_path(req.dest)
    assert part.stat().st_size == 200_000 and part.read_bytes() == DATA[:200_000]
    side = json.loads(sidecar_path(req.dest).read_text())
    assert side["etag"] == SHA and side["size"] == len(DATA) and side["sha256"] == SHA
    assert pending_downloads(tmp_path)[0]["downloaded"] == 200_000
    assert not req.dest.exists()
    (again,) = pending_requests(tmp_path, endpoint=hub.endpoint)  # as after an app restart
    assert (again.repo, again.file, again.dest, again.sha256, again.size) == (
        REPO,
        FILE,
        req.dest,
        SHA,
        len(DATA),
    )
    assert again.key == f"{REPO}/{FILE}" and not again.allow_unverified
    fast(again).run()
    assert gets(hub) == [None, "bytes=200000-"]
    assert_clean_success(tmp_path)
    assert pending_downloads(tmp_path) == []


def test_drop_is_retried_within_one_run(hub: HubServer, tmp_path: Path) -> None:
    hub.state.drop_after = 100_000
    hub.state.drops = 2
    fast(request(hub, tmp_path), retries=3).run()
    assert gets(hub) == [None, "bytes=100000-", "bytes=200000-"]
    assert_clean_success(tmp_path)


def test_wrong_bytes_delete_the_part_file(hub: HubServer, tmp_path: Path) -> None:
    hub.state.corrupt = True
    req = request(hub, tmp_path)
    with pytest.raises(ChecksumError, match="partial file was deleted") as ei:
        fast(req).run()
    assert ei.value.expected == SHA and ei.value.actual != SHA
    assert not req.dest.exists() and not part_path(req.dest).exists() and not sidecar_path(req.dest).exists()
    hub.state.corrupt = False
    fast(req).run()
    assert_clean_success(tmp_path)


def test_404(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="404"):
        fast(request(hub, tmp_path, file="nope.gguf", dest=tmp_path / "nope.gguf")).run()
    with pytest.raises(NotFoundError):
        fast(request(hub, tmp_path, repo="no/such-repo")).run()
    assert list(tmp_path.iterdir()) == []


def test_gated_needs_token_and_token_stays_on_the_hub(hub: HubServer, tmp_path: Path) -> None:
    small = DATA[:1000]
    kw = {"repo": "gated/model", "sha256": hashlib.sha256(small).hexdigest(), "size": 1000}
    with pytest.raises(AuthRequiredError, match="access token"):
        fast(request(hub, tmp_path, **kw)).run()
    with pytest.raises(AuthRequiredError, match="refused the Hugging Face token"):
        fast(request(hub, tmp_path, token="hf_bad", **kw)).run()
    assert list(tmp_path.iterdir()) == []
    fast(request(hub, tmp_path, token="hf_good", **kw)).run()
    assert (tmp_path / FILE).read_bytes() == small
    assert any(e.auth == "Bearer hf_good" for e in hub.state.log if e.server == "hub")
    assert all(e.auth is None for e in hub.state.log if e.server == "cdn")


def test_the_token_is_not_sent_over_http_to_the_https_hub_s_host(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QA: a hub at https://host whose file resolved to http://host/... got the token in clear
    text (only the host was compared, not the scheme). Here the hub's own port answers over http
    while the endpoint names it with https; the resolve step answers with that http address."""
    sent: list[tuple[str, str | None]] = []
    real = http.client.HTTPConnection.request

    def spy(conn: http.client.HTTPConnection, method: str, url: str, *a: Any, **kw: Any) -> None:
        scheme = "https" if isinstance(conn, http.client.HTTPSConnection) else "http"
        sent.append((scheme, (kw.get("headers") or {}).get("Authorization")))
        real(conn, method, url, *a, **kw)

    monkeypatch.setattr(http.client.HTTPConnection, "request", spy)
    small = DATA[:1000]
    http_url = f"{hub.endpoint}/gated/model/resolve/main/{FILE}"
    monkeypatch.setattr(
        dl, "resolve", lambda *a, **kw: dl.Resolved(url=http_url, commit=None, etag=None, size=1000)
    )
    req = request(
        hub,
        tmp_path,
        repo="gated/model",
        sha256=hashlib.sha256(small).hexdigest(),
        size=1000,
        token="hf_good",
        endpoint=hub.endpoint.replace("http://", "https://"),
    )
    with pytest.raises(AuthRequiredError):  # asked without the token, the gated file is refused
        fast(req).run()
    assert sent and all(auth is None for _, auth in sent)
    assert not any(e.auth for e in hub.state.log)


def test_slow_link_pause_and_resume(hub: HubServer, tmp_path: Path) -> None:
    hub.state.chunk_delay = 0.01  # ~1.6 MB/s
    hub.state.chunk = 1 << 14
    req = request(hub, tmp_path)
    d = fast(req, progress_interval=0.0)
    paused = threading.Event()
    errors: list[BaseException] = []

    def on_progress(p: Progress) -> None:
        if p.state == State.DOWNLOADING and p.downloaded > 150_000:
            d.pause()

    d.on_progress = on_progress

    def run() -> None:
        try:
            d.run()
        except BaseException as e:  # noqa: BLE001  # checked below
            errors.append(e)
        paused.set()

    t = threading.Thread(target=run)
    t.start()
    assert paused.wait(30)
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], PausedError)
    assert d.progress.state == State.PAUSED
    have = part_path(req.dest).stat().st_size
    assert 150_000 < have < len(DATA)
    assert part_path(req.dest).read_bytes() == DATA[:have]
    d.on_progress = None
    hub.state.chunk_delay = 0.0
    d.run()  # resume with the same object
    assert gets(hub)[-1] == f"bytes={have}-"
    assert_clean_success(tmp_path)
    assert d.progress.speed > 0


def test_server_restart_between_attempts(tmp_path: Path) -> None:
    state = HubState(files={(REPO, FILE): DATA}, drop_after=300_000)
    s = HubServer(state)
    port = s.port
    req = DownloadRequest(REPO, FILE, tmp_path / FILE, sha256=SHA, size=len(DATA), endpoint=s.endpoint)
    try:
        with pytest.raises(NetworkError):
            fast(req).run()
    finally:
        s.stop()
    with pytest.raises(NetworkError, match="cannot reach"):
        fast(req).run()  # server down: nothing is lost
    assert part_path(req.dest).stat().st_size == 300_000
    with HubServer(HubState(files={(REPO, FILE): DATA}), port=port) as s2:
        fast(req).run()
        assert gets(s2) == ["bytes=300000-"]
    assert_clean_success(tmp_path)


def test_server_ignoring_range_restarts_cleanly(hub: HubServer, tmp_path: Path) -> None:
    hub.state.drop_after = 100_000
    req = request(hub, tmp_path)
    with pytest.raises(NetworkError):
        fast(req).run()
    hub.state.ignore_range = True
    fast(req).run()
    assert gets(hub) == [None, "bytes=100000-"]
    assert_clean_success(tmp_path)


def test_stale_part_of_another_file_is_discarded(hub: HubServer, tmp_path: Path) -> None:
    req = request(hub, tmp_path)
    part_path(req.dest).write_bytes(b"x" * 5000)
    sidecar_path(req.dest).write_text(json.dumps({"etag": "0" * 64, "size": len(DATA), "sha256": SHA}))
    fast(req).run()
    assert gets(hub) == [None]
    assert_clean_success(tmp_path)
    part_path(req.dest).write_bytes(b"y" * 10)  # a part file without its sidecar is not trusted either
    req.dest.unlink()
    fast(req).run()
    assert gets(hub) == [None, None]
    assert_clean_success(tmp_path)


def test_unverified_needs_confirmation(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(UnverifiedDownloadError, match="Confirm"):
        fast(request(hub, tmp_path, sha256=None, size=None)).run()
    assert hub.state.log == []  # refused before contacting the server
    # confirmed: the server's LFS sha256 still catches corruption
    hub.state.corrupt = True
    with pytest.raises(ChecksumError):
        fast(request(hub, tmp_path, sha256=None, size=None, allow_unverified=True)).run()
    hub.state.corrupt = False
    fast(request(hub, tmp_path, sha256=None, size=None, allow_unverified=True)).run()
    assert_clean_success(tmp_path)


def test_catalog_mismatch_downloads_nothing(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(RemoteMismatchError, match="catalog pins"):
        fast(request(hub, tmp_path, size=len(DATA) + 1)).run()
    with pytest.raises(RemoteMismatchError, match="sha256"):
        fast(request(hub, tmp_path, sha256="ab" * 32)).run()
    assert gets(hub) == [] and list(tmp_path.iterdir()) == []


def test_disk_space_is_checked_first(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage

    def tiny(path: object) -> object:
        u = real(path)  # type: ignore[arg-type]
        return type(u)(u.total, u.total - 1000, 1000)

    monkeypatch.setattr(dl.shutil, "disk_usage", tiny)
    with pytest.raises(DiskSpaceError, match="not enough disk space") as ei:
        fast(request(hub, tmp_path)).run()
    assert ei.value.free == 1000 and ei.value.needed == len(DATA)
    # human units, and the margin kept free is said (not "0.0 GB more, 0.0 GB are free")
    assert "needs 600 KB more (plus 67 MB that Trit keeps free), 1.0 KB are free" in str(ei.value)
    assert gets(hub) == []


def test_cancel_deletes_the_part(hub: HubServer, tmp_path: Path) -> None:
    hub.state.chunk_delay = 0.01
    req = request(hub, tmp_path)
    d = fast(req, progress_interval=0.0)
    d.on_progress = lambda p: d.cancel() if p.downloaded > 50_000 else None
    with pytest.raises(CancelledError):
        d.run()
    assert list(tmp_path.iterdir()) == []
    assert d.progress.state == State.CANCELLED


def test_server_error_is_retryable(hub: HubServer, tmp_path: Path) -> None:
    hub.state.fail_status = 503
    with pytest.raises(NetworkError) as ei:
        fast(request(hub, tmp_path), retries=1).run()
    assert ei.value.retryable
    assert len([e for e in hub.state.log if e.method == "HEAD"]) == 2  # bounded retries


def test_queue_runs_in_background_with_pause_resume_cancel(hub: HubServer, tmp_path: Path) -> None:
    files = {f"m{i}.gguf": random.Random(i).randbytes(200_000) for i in range(4)}
    for name, data in files.items():
        hub.state.files[(REPO, name)] = data
    hub.state.chunk_delay = 0.005
    done: dict[str, Path] = {}
    failed: dict[str, Exception] = {}
    seen_states: list[tuple[str, State]] = []
    lock = threading.Lock()

    def on_progress(p: Progress) -> None:
        with lock:
            seen_states.append((p.key, p.state))

    q = DownloadQueue(
        max_parallel=2,
        on_progress=on_progress,
        on_done=lambda k, p: done.__setitem__(k, p),
        on_failed=lambda k, e: failed.__setitem__(k, e),
        download_options={"retries": 0, "progress_interval": 0.0},
    )
    try:
        t0 = time.monotonic()
        keys = [
            q.add(
                DownloadRequest(
                    REPO,
                    n,
                    tmp_path / n,
                    sha256=hashlib.sha256(d).hexdigest(),
                    size=len(d),
                    endpoint=hub.endpoint,
                    key=n,
                )
            )
            for n, d in files.items()
        ]
        assert time.monotonic() - t0 < 1.0  # add() does not block the caller
        assert (
            q.add(
                DownloadRequest(REPO, "m0.gguf", tmp_path / "m0.gguf", endpoint=hub.endpoint, key="m0.gguf")
            )
            == "m0.gguf"
        )
        q.cancel("m3.gguf")  # still queued (two run at a time)
        q.pause("m2.gguf")
        assert q.wait(60)
        assert set(done) == {"m0.gguf", "m1.gguf"} and failed == {}
        states = {p.key: p.state for p in q.jobs()}
        assert states == {"m0.gguf": State.DONE, "m1.gguf": State.DONE, "m2.gguf": State.PAUSED}
        q.resume("m2.gguf")
        assert q.wait(60)
        assert set(done) == {"m0.gguf", "m1.gguf", "m2.gguf"}
        for n in keys[:3]:
            assert (tmp_path / n).read_bytes() == files[n]
        assert not (tmp_path / "m3.gguf").exists() and not part_path(tmp_path / "m3.gguf").exists()
        # never more than two transfers at once
        active: set[str] = set()
        peak = 0
        for key, st in seen_states:
            if st == State.DOWNLOADING:
                active.add(key)
            elif st in (State.DONE, State.FAILED, State.PAUSED, State.CANCELLED, State.VERIFYING):
                active.discard(key)
            peak = max(peak, len(active))
        assert peak <= 2
    finally:
        q.close()


def test_queue_reports_failures_and_close_pauses(hub: HubServer, tmp_path: Path) -> None:
    failed: dict[str, Exception] = {}
    hub.state.chunk_delay = 0.02
    q = DownloadQueue(on_failed=lambda k, e: failed.__setitem__(k, e), download_options={"retries": 0})
    q.add(request(hub, tmp_path, file="missing.gguf", dest=tmp_path / "missing.gguf", key="missing"))
    assert q.wait(30)
    assert isinstance(failed["missing"], NotFoundError)
    key = q.add(request(hub, tmp_path))
    deadline = time.monotonic() + 30
    while not part_path(tmp_path / FILE).exists() or part_path(tmp_path / FILE).stat().st_size == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    q.close()  # the running download is paused, its part file kept
    assert part_path(tmp_path / FILE).exists() and sidecar_path(tmp_path / FILE).exists()
    assert {p.key: p.state for p in q.jobs()}[key] == State.PAUSED


class _FillingFile:
    """A part file on a disk that fills up after `room` bytes (write raises ENOSPC)."""

    def __init__(self, f: Any, room: int) -> None:
        self.f, self.room = f, room

    def write(self, b: bytes) -> int:
        if self.f.tell() + len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(b)

    def __enter__(self) -> Any:  # the wrapper itself
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def test_disk_full_fails_keeps_the_part_and_resumes(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = open
    monkeypatch.setattr(dl, "open", lambda *a, **k: _FillingFile(real_open(*a, **k), 200_000), raising=False)
    seen: list[Progress] = []
    failed: list[Exception] = []
    q = DownloadQueue(
        on_progress=seen.append,
        on_failed=lambda k, e: failed.append(e),
        download_options={"retries": 0, "progress_interval": 0.0},
    )
    req = request(hub, tmp_path)
    try:
        key = q.add(req)
        assert q.wait(30)
        # a FAILED update (not a row stuck at "Downloading"), so the UI offers Resume
        (p,) = q.jobs()
        assert p.state == State.FAILED and seen[-1].state == State.FAILED and "disk is full" in p.error
        assert isinstance(failed[0], StorageError) and failed[0].disk_full and failed[0].retryable
        have = part_path(req.dest).stat().st_size
        assert 0 < have <= 200_000 and DATA.startswith(part_path(req.dest).read_bytes())
        monkeypatch.undo()  # the user freed some space
        q.resume(key)
        assert q.wait(30)
        assert q.jobs()[0].state == State.DONE
        assert gets(hub) == [None, f"bytes={have}-"]  # resumed, not restarted
        assert_clean_success(tmp_path)
    finally:
        q.close()


def test_read_only_models_folder_fails_with_a_message(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(path: Path, doc: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(dl, "_write_json_atomic", read_only)
    d = fast(request(hub, tmp_path))
    with pytest.raises(StorageError, match="the models folder cannot be written: .*Read-only") as ei:
        d.run()
    assert not ei.value.disk_full
    assert d.progress.state == State.FAILED and "cannot be written" in d.progress.error


class _ExpiredLinkCDN(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(403)
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.write(b"expired")


def test_403_from_the_cdn_is_an_expired_link_not_a_gated_repo(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cdn = ThreadingHTTPServer(("127.0.0.1", 0), _ExpiredLinkCDN)
    threading.Thread(target=cdn.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{cdn.server_address[1]}/cdn/{SHA}?Expires=1"
        monkeypatch.setattr(dl, "resolve", lambda *a, **k: dl.Resolved(url, None, SHA, len(DATA)))
        with pytest.raises(LinkExpiredError, match="expired or was refused .*HTTP 403.*Try again") as ei:
            fast(request(hub, tmp_path, token="hf_good")).run()
        assert "access token" not in str(ei.value) and ei.value.retryable
    finally:
        cdn.shutdown()
        cdn.server_close()


def test_cancel_then_add_again_keeps_the_new_downloads_files(hub: HubServer, tmp_path: Path) -> None:
    hub.state.chunk_delay = 0.3  # slow link: the cancelled transfer unwinds only at its next chunk
    started = threading.Event()
    done: list[Path] = []
    failed: list[Exception] = []

    def on_progress(p: Progress) -> None:
        if p.state == State.DOWNLOADING and p.downloaded > 0:
            started.set()

    q = DownloadQueue(
        max_parallel=2,
        on_progress=on_progress,
        on_done=lambda k, p: done.append(p),
        on_failed=lambda k, e: failed.append(e),
        download_options={"retries": 0, "progress_interval": 0.0},
    )
    try:
        key = q.add(request(hub, tmp_path))
        assert started.wait(30)
        q.cancel(key)
        hub.state.chunk_delay = 0.02  # the new transfer takes ~0.8 s, longer than the old unwinds
        q.add(request(hub, tmp_path))  # the other worker is free; the old one is still unwinding
        assert q.wait(30)
        assert failed == [] and done == [tmp_path / FILE]
        assert_clean_success(tmp_path)
    finally:
        q.close()


def _wait(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_stalled_server_is_reported_and_fails_after_the_timeout(hub: HubServer, tmp_path: Path) -> None:
    seen: list[Progress] = []
    d = fast(request(hub, tmp_path), progress_interval=0.0, timeout=4.0)
    d.on_progress = seen.append
    hub.state.chunk_delay = 0.01
    errors: list[Exception] = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(NetworkError, d.run).value))
    t.start()
    _wait(lambda: d.progress.downloaded > 100_000)
    hub.state.stall.set()  # the server keeps the connection open and sends nothing
    t0 = time.monotonic()
    t.join(30)
    waited = time.monotonic() - t0
    assert errors and "sent nothing for 4 s" in str(errors[0]) and "kept" in str(errors[0])
    assert 3.5 < waited < 8
    # while stalled, progress kept coming: the stall grows, the speed falls to 0, no time left
    stalled = [p for p in seen if p.state == State.DOWNLOADING and p.stalled > 0]
    assert len(stalled) >= 3 and stalled[-1].stalled >= 3
    assert stalled[-1].speed == 0 and all(p.eta is None for p in stalled)
    assert part_path(tmp_path / FILE).stat().st_size == d.progress.downloaded > 100_000


def test_cancel_during_a_stall_stops_at_once_and_a_new_download_starts_clean(
    hub: HubServer, tmp_path: Path
) -> None:
    """The old thread used to sit in read() until the 30 s socket timeout; meanwhile the new job
    of the same file showed the old part file's size as its progress."""
    seen: list[Progress] = []
    done: list[str] = []
    q = DownloadQueue(
        on_progress=seen.append,
        on_done=lambda k, p: done.append(k),
        download_options={"retries": 0, "progress_interval": 0.0},  # default 30 s timeout
    )
    try:
        hub.state.chunk_delay = 0.01
        key = q.add(request(hub, tmp_path, key="m"))
        _wait(lambda: any(p.downloaded > 100_000 for p in q.jobs()))
        hub.state.stall.set()
        time.sleep(1.5)
        q.cancel(key)
        seen.clear()
        q.add(request(hub, tmp_path, key="m"))
        assert seen[0].state == State.QUEUED and seen[0].downloaded == 0  # not the old part's size
        t0 = time.monotonic()
        _wait(lambda: any(p.state == State.DOWNLOADING for p in seen), 10)
        assert time.monotonic() - t0 < 3  # the cancelled one stopped within a poll
        assert all(p.downloaded == 0 for p in seen if p.state == State.QUEUED)
        hub.state.stall.clear()
        hub.state.chunk_delay = 0.0
        assert q.wait(30) and done == ["m"]
        assert_clean_success(tmp_path)
    finally:
        q.close()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_pause_while_waiting_for_the_server_is_immediate(tmp_path: Path, scheme: str) -> None:
    """A server that accepts the connection but never answers the request (http) or the TLS
    hello (https: the handshake blocked): pause() does not wait for the socket timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    d = Download(DownloadRequest(REPO, FILE, tmp_path / FILE, sha256=SHA), timeout=30, retries=0)
    errors: list[BaseException] = []

    def transfer() -> None:
        try:
            d._transfer(f"{scheme}://127.0.0.1:{port}/cdn/x", len(DATA))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=transfer)
    t.start()
    _wait(lambda: accepted)
    got = b""
    # the request is in (or the TLS hello has begun); the answer never comes
    while b"\r\n\r\n" not in got and not (scheme == "https" and got):
        got += accepted[0].recv(4096)
    t0 = time.monotonic()
    d.pause()
    t.join(10)
    assert time.monotonic() - t0 < 2 and isinstance(errors[0], PausedError)
    listener.close()
    for s in accepted:
        s.close()


def test_failures_name_the_model_and_say_whether_retrying_helps(hub: HubServer, tmp_path: Path) -> None:
    hub.state.corrupt = True
    seen: list[Progress] = []
    d = fast(request(hub, tmp_path, name="Tiny Model"), progress_interval=0.0)
    d.on_progress = seen.append
    with pytest.raises(ChecksumError) as ei:
        d.run()
    msg = str(ei.value)
    assert (
        msg.startswith("Tiny Model: the downloaded file is corrupt") and SHA not in msg and ".part" not in msg
    )
    assert SHA in ei.value.details and str(part_path(tmp_path / FILE)) in ei.value.details
    # the part file is gone: the FAILED progress says so (not "100%") and that Resume cannot help
    assert seen[-1].state == State.FAILED and seen[-1].downloaded == 0 and not seen[-1].retryable
    with pytest.raises(NotFoundError, match=r"^Tiny Model: not found on the server \(HTTP 404\)"):
        fast(request(hub, tmp_path, file="missing.gguf", name="Tiny Model")).run()
    hub.state.corrupt = False
    hub.state.drop_after = 200_000
    d = fast(request(hub, tmp_path, name="Tiny Model"))
    with pytest.raises(NetworkError):
        d.run()
    assert d.progress.retryable and d.progress.downloaded == 200_000
    # the name survives an app restart (the sidecar keeps it)
    (req,) = pending_requests(tmp_path, endpoint=hub.endpoint)
    assert req.name == "Tiny Model"


def test_close_keeps_queued_downloads_for_the_next_start(hub: HubServer, tmp_path: Path) -> None:
    other = random.Random(5).randbytes(50_000)
    hub.state.files[(REPO, "b.gguf")] = other
    hub.state.chunk_delay = 0.02
    q = DownloadQueue(max_parallel=1, download_options={"retries": 0})
    q.add(request(hub, tmp_path, key="a", name="Model A"))
    b = request(
        hub,
        tmp_path,
        file="b.gguf",
        dest=tmp_path / "b.gguf",
        sha256=hashlib.sha256(other).hexdigest(),
        size=len(other),
        key="b",
        name="Model B",
    )
    q.add(b)
    _wait(lambda: part_path(tmp_path / FILE).exists())
    q.close()  # A is paused, B never started
    found = {r.key: r for r in pending_requests(tmp_path, endpoint=hub.endpoint)}
    assert set(found) == {"a", "b"}
    assert found["b"] == b and not part_path(b.dest).exists()
    # the next start downloads it (the sidecar written at close does not get in the way)
    hub.state.chunk_delay = 0.0
    fast(found["b"]).run()
    assert b.dest.read_bytes() == other and not sidecar_path(b.dest).exists()


def test_removing_the_models_folder_fails_the_download_early(hub: HubServer, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    req = request(hub, tmp_path, dest=folder / FILE, name="Tiny Model")
    hub.state.chunk_delay = 0.05  # ~2 s for the whole file
    seen: list[Progress] = []
    d = fast(req, progress_interval=0.0)
    d.on_progress = seen.append
    errors: list[Exception] = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(StorageError, d.run).value))
    t.start()
    _wait(lambda: d.progress.downloaded > 50_000)
    shutil.rmtree(folder)
    t.join(30)
    (err,) = errors
    assert str(err).startswith(f"Tiny Model: the models folder {folder} was removed while downloading.")
    assert not err.retryable and not err.disk_full
    assert d.progress.state == State.FAILED and d.progress.downloaded == 0
    # it stopped soon after, not once the whole file had been written into the deleted one
    assert max(p.downloaded for p in seen) < len(DATA) // 2


def test_a_sidecar_that_is_not_ours_is_ignored(tmp_path: Path) -> None:
    sidecar_path(tmp_path / "deep.gguf").write_text("[" * 100_000 + "]" * 100_000)
    sidecar_path(tmp_path / "list.gguf").write_text("[1, 2]")
    sidecar_path(tmp_path / "bad.gguf").write_bytes(b"\xff{")
    assert pending_downloads(tmp_path) == [] and pending_requests(tmp_path) == []


# -- HTTPS, chunked bodies, connecting and resolving -------------------------------------------------


def _run_in_thread(d: Download) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            d.run()
        except BaseException as e:  # noqa: BLE001 - checked by the caller
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, errors


@pytest.mark.parametrize("chunked", [False, True])
def test_https_transfer_resumes_and_verifies(tmp_path: Path, chunked: bool) -> None:
    """The CDN over TLS (as the hub's are): decrypted bytes select() cannot see, partial records,
    a dropped connection resumed with Range, all through the non-blocking body loop."""
    state = HubState(files={(REPO, FILE): DATA}, drop_after=250_000, chunked=chunked, chunk=5000)
    with HubServer(state, tls=True) as s:
        d = fast(request(s, tmp_path), retries=1, ssl_context=client_context())
        assert d.run() == tmp_path / FILE
        assert_clean_success(tmp_path)
        assert gets(s) == [None, "bytes=250000-"]


@pytest.mark.parametrize("tls", [False, True])
def test_chunked_body_stall_is_seen_and_pause_is_immediate(tmp_path: Path, tls: bool) -> None:
    """A body without Content-Length was read blocking: a stall showed nothing and Pause waited
    for the 30 s socket timeout."""
    state = HubState(files={(REPO, FILE): DATA}, chunked=True, chunk_delay=0.01)
    with HubServer(state, tls=tls) as s:
        seen: list[Progress] = []
        opts: dict[str, Any] = {"ssl_context": client_context()} if tls else {}
        d = Download(request(s, tmp_path), timeout=30, retries=0, progress_interval=0.0, **opts)
        d.on_progress = seen.append
        t, errors = _run_in_thread(d)
        _wait(lambda: d.progress.downloaded > 100_000)
        state.stall.set()
        _wait(lambda: d.progress.stalled >= 1.5)
        t0 = time.monotonic()
        d.pause()
        t.join(10)
        assert time.monotonic() - t0 < 2 and isinstance(errors[0], PausedError)
        have = part_path(tmp_path / FILE).stat().st_size
        assert part_path(tmp_path / FILE).read_bytes() == DATA[:have]
        state.stall.clear()
        state.chunk_delay = 0.0
        d.run()
        assert gets(s)[-1] == f"bytes={have}-"
        assert_clean_success(tmp_path)


def test_an_unverifiable_certificate_is_named_and_not_retried(tmp_path: Path) -> None:
    with HubServer(HubState(files={(REPO, FILE): DATA}), tls=True) as s:
        # the system's certificates do not include the test one
        d = Download(request(s, tmp_path, name="Tiny Model"), retries=3, backoff=2.0, timeout=10)
        t0 = time.monotonic()
        with pytest.raises(dl.CertificateError) as ei:
            d.run()
        assert time.monotonic() - t0 < 2  # no retries with their backoff: they would fail the same way
        msg = str(ei.value)
        host = f"127.0.0.1:{s.cdn.server_address[1]}"
        assert msg.startswith(f"Tiny Model: the certificate of {host} could not be verified (")
        assert "date and time" in msg and "part downloaded so far is kept" in msg
        assert "CERTIFICATE_VERIFY_FAILED" in ei.value.details
        assert d.progress.state == State.FAILED and d.progress.retryable  # Resume is offered


def _black_hole() -> tuple[socket.socket, list[socket.socket]]:
    """A port whose connects hang: its listen backlog is full and nobody accepts, so the kernel
    drops further SYNs (as a firewall that drops packets does)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filled: list[socket.socket] = []
    for _ in range(8):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        filled.append(c)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
        pytest.skip("this kernel does not drop connects to a full backlog")
    except TimeoutError:
        pass
    finally:
        probe.close()
    return listener, filled


@pytest.mark.parametrize("action", ["cancel", "pause"])
def test_stopping_while_connecting_is_immediate(hub: HubServer, tmp_path: Path, action: str) -> None:
    """Connecting to a host that drops packets used the whole 30 s timeout before Pause or Cancel
    took effect."""
    listener, filled = _black_hole()
    try:
        hub.state.cdn_base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        d = Download(request(hub, tmp_path), timeout=30, retries=0)
        t, errors = _run_in_thread(d)
        _wait(lambda: d.progress.state == State.DOWNLOADING)
        time.sleep(0.5)  # in connect()
        t0 = time.monotonic()
        getattr(d, action)()
        t.join(10)
        assert time.monotonic() - t0 < 2
        assert isinstance(errors[0], CancelledError if action == "cancel" else PausedError)
    finally:
        listener.close()
        for c in filled:
            c.close()


def test_a_host_that_never_answers_a_connect_times_out(hub: HubServer, tmp_path: Path) -> None:
    listener, filled = _black_hole()
    try:
        hub.state.cdn_base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(
            NetworkError, match=r"no answer from 127\.0\.0\.1 within 2 s.*Check the connection"
        ):
            Download(request(hub, tmp_path), timeout=2, retries=0).run()
        assert 1.8 < time.monotonic() - t0 < 5
    finally:
        listener.close()
        for c in filled:
            c.close()


def test_cancel_while_the_hub_does_not_answer_is_immediate(tmp_path: Path) -> None:
    """Resolving goes through huggingface_hub (30 s timeout); Cancel used to wait for it."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])  # and never answer
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        d = Download(DownloadRequest(REPO, FILE, tmp_path / FILE, sha256=SHA, endpoint=endpoint), retries=0)
        t, errors = _run_in_thread(d)
        _wait(lambda: accepted)
        t0 = time.monotonic()
        d.cancel()
        t.join(10)
        assert time.monotonic() - t0 < 2 and isinstance(errors[0], CancelledError)
        assert d.progress.state == State.CANCELLED
    finally:
        listener.close()
        for c in accepted:
            c.close()


def test_chunked_bodies_are_decoded_from_any_split_and_bad_framing_is_an_error() -> None:
    body = b"5;ext=1\r\nhello\r\n1A\r\n" + b"x" * 26 + b"\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"
    for step in (1, 2, 3, 7, len(body)):
        d = dl._Dechunk()
        got = b"".join(d.feed(body[i : i + step]) for i in range(0, len(body), step))
        assert got == b"hello" + b"x" * 26 and d.done
    for bad in (b"-5\r\nhello\r\n", b"zz\r\n", b"5\r\nhelloXX0\r\n\r\n", b"1" * 5000):
        with pytest.raises(http.client.HTTPException):
            dl._Dechunk().feed(bad)
    d = dl._Dechunk()
    assert d.feed(b"3\r\nab") == b"ab" and not d.done  # the rest is still to come


def test_a_chunked_body_cut_short_is_resumed(tmp_path: Path) -> None:
    state = HubState(files={(REPO, FILE): DATA}, chunked=True, drop_after=300_000)
    with HubServer(state) as s:
        fast(request(s, tmp_path), retries=1).run()
        assert gets(s) == [None, "bytes=300000-"]
        assert_clean_success(tmp_path)


def test_the_default_context_has_certifis_roots_besides_the_systems() -> None:
    import certifi

    ctx = dl.default_ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert dl.default_ssl_context() is ctx  # made once
    roots = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    assert ctx.cert_store_stats()["x509_ca"] >= roots > 100


def test_transfers_trust_the_systems_certificate_file_where_openssl_does_not_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle's OpenSSL looks for certificates where its build machine keeps them: on Fedora,
    openSUSE or macOS it found none, and every transfer failed the certificate check. Here OpenSSL's
    own places are empty and the system's file (the test certificate) is one of SYSTEM_CA_FILES."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(dl, "_SSL_CONTEXT", None)
    monkeypatch.setattr(dl, "SYSTEM_CA_FILES", (str(tmp_path / "missing.crt"), str(TLS_CERT)))
    with HubServer(HubState(files={(REPO, FILE): DATA}), tls=True) as s:
        assert fast(request(s, tmp_path)).run() == tmp_path / FILE  # no ssl_context: the default
    assert_clean_success(tmp_path)
    monkeypatch.setattr(dl, "_SSL_CONTEXT", None)
    monkeypatch.setattr(dl, "SYSTEM_CA_FILES", ())
    (tmp_path / FILE).unlink()
    with HubServer(HubState(files={(REPO, FILE): DATA}), tls=True) as s, pytest.raises(dl.CertificateError):
        fast(request(s, tmp_path)).run()


# -- two Trit processes sharing one models folder ------------------------------------------------

# Another Trit (its own data folder, this models folder): downloads FILE or cancels its download,
# and prints the outcome as JSON. With "hold_verify" it waits before verifying until the test
# creates that path + ".go" (and creates the path itself to say it got there).
_OTHER_TRIT = """
import json, sys, time
from pathlib import Path
from trit.app.core import downloads as dl

args = json.loads(sys.argv[1])
req = dl.DownloadRequest(
    args["repo"], args["file"], Path(args["dest"]), sha256=args["sha256"], size=args["size"],
    endpoint=args["endpoint"],
)
d = dl.Download(req, retries=0, timeout=10)
if args["action"] == "cancel":
    d.cancel()
hold = args.get("hold_verify")
if hold:
    real = dl.sha256_file

    def held(path, *a):
        Path(hold).touch()
        deadline = time.monotonic() + 30
        while not Path(hold + ".go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return real(path, *a)

    dl.sha256_file = held
try:
    out = {"done": str(d.run())}
except dl.DownloadError as e:
    out = {"error": type(e).__name__, "message": str(e)}
print(json.dumps(out))
"""


@contextlib.contextmanager
def other_trit(
    hub: HubServer, tmp_path: Path, action: str = "run", **kw: str
) -> Iterator[subprocess.Popen[str]]:
    args = {
        "repo": REPO,
        "file": FILE,
        "dest": str(tmp_path / FILE),
        "sha256": SHA,
        "size": len(DATA),
        "endpoint": hub.endpoint,
        "action": action,
        **kw,
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", _OTHER_TRIT, json.dumps(args)], stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.communicate()


def outcome(proc: subprocess.Popen[str]) -> dict[str, str]:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def _transferring(dest: Path) -> bool:
    part = part_path(dest)
    return part.exists() and part.stat().st_size > 50_000


def test_a_second_process_is_refused_at_once_and_leaves_the_part_alone(
    hub: HubServer, tmp_path: Path
) -> None:
    """Two Trit processes with their own data folders and one models folder: both wrote into one
    part file (interleaved bytes: a checksum failure, or a corrupt model without a checksum)."""
    hub.state.chunk_delay = 0.1  # ~4 s for the whole file
    dest = tmp_path / FILE
    with other_trit(hub, tmp_path) as other:
        _wait(lambda: _transferring(dest))
        requests = len(hub.state.log)
        d = Download(request(hub, tmp_path, name="Tiny Model"), retries=3, backoff=2.0, timeout=10)
        t0 = time.monotonic()
        with pytest.raises(dl.DownloadingElsewhereError) as ei:
            d.run()
        assert time.monotonic() - t0 < 1  # not retried: it would fail the same way
        msg = str(ei.value)
        assert (
            msg.startswith("Tiny Model: another Trit is downloading this file") and "continues there" in msg
        )
        assert not ei.value.retryable and d.progress.state == State.FAILED and not d.progress.retryable
        assert len(hub.state.log) == requests  # it asked the server nothing
        have = part_path(dest).read_bytes()
        assert DATA.startswith(have) and len(have) < len(DATA)
        hub.state.chunk_delay = 0.0
        assert outcome(other) == {"done": str(dest)}
    assert_clean_success(tmp_path)
    assert not dl.lock_path(dest).exists()
    assert fast(request(hub, tmp_path)).run() == dest  # now the finished file is found here


def test_a_crashed_process_does_not_block_resuming_its_part(hub: HubServer, tmp_path: Path) -> None:
    hub.state.chunk_delay = 0.1
    req = request(hub, tmp_path)
    with other_trit(hub, tmp_path) as other:
        _wait(lambda: _transferring(req.dest))
        with pytest.raises(dl.DownloadingElsewhereError):
            fast(req).run()
        other.kill()  # SIGKILL: no finally, no cleanup; the kernel drops its lock
        other.communicate()
    have = part_path(req.dest).stat().st_size
    assert 50_000 < have < len(DATA)
    hub.state.chunk_delay = 0.0
    fast(req).run()
    assert gets(hub)[-1] == f"bytes={have}-"  # resumed the crashed one's part
    assert_clean_success(tmp_path)
    assert not dl.lock_path(req.dest).exists()


def test_cancel_in_another_process_leaves_the_part_being_downloaded_here(
    hub: HubServer, tmp_path: Path
) -> None:
    """Its Cancel (of a paused download, or one cancelled before it ran) deleted the part file
    this process was writing: the transfer here then failed as "deleted while downloading"."""
    hub.state.chunk_delay = 0.1
    req = request(hub, tmp_path)
    d = fast(req)
    t, errors = _run_in_thread(d)
    try:
        _wait(lambda: d.progress.downloaded > 50_000)
        with other_trit(hub, tmp_path, "cancel") as other:
            assert outcome(other)["error"] == "CancelledError"
        assert part_path(req.dest).stat().st_size > 50_000 and sidecar_path(req.dest).exists()
    finally:
        hub.state.chunk_delay = 0.0
        t.join(30)
    assert errors == []
    assert_clean_success(tmp_path)


def test_no_other_process_verifies_or_renames_a_part_being_verified(hub: HubServer, tmp_path: Path) -> None:
    """A part file that is complete but still being checked: another process found its size
    right, checked and renamed it, and the first one's rename then failed."""
    hold = tmp_path / "verifying"
    dest = tmp_path / FILE
    with other_trit(hub, tmp_path, hold_verify=str(hold)) as other:
        _wait(lambda: hold.exists())
        assert part_path(dest).stat().st_size == len(DATA)
        with pytest.raises(dl.DownloadingElsewhereError):
            fast(request(hub, tmp_path)).run()
        assert part_path(dest).exists() and not dest.exists()
        hold.with_name("verifying.go").touch()
        assert outcome(other) == {"done": str(dest)}
    hold.unlink()
    hold.with_name("verifying.go").unlink()
    assert_clean_success(tmp_path)


def test_a_part_is_moved_to_a_new_name_only_when_no_process_is_writing_it(
    hub: HubServer, tmp_path: Path
) -> None:
    """The Models dialog moves a part left under an earlier catalog's file name to its entry's
    own name: it moved the part another process was writing (that download then failed as
    "deleted while downloading" and its bytes finished as the other entry's file)."""
    hub.state.chunk_delay = 0.1
    dest = tmp_path / FILE
    new = tmp_path / "renamed.gguf"
    with other_trit(hub, tmp_path) as other:
        _wait(lambda: _transferring(dest))
        assert not dl.move_partial(dest, new)
        assert _transferring(dest) and not part_path(new).exists() and not sidecar_path(new).exists()
        other.kill()
        other.communicate()
    have = part_path(dest).read_bytes()
    meta = sidecar_path(dest).read_text()
    part_path(new).write_bytes(b"x")  # the new name has a part of its own: nothing is moved over it
    assert not dl.move_partial(dest, new) and part_path(dest).read_bytes() == have
    part_path(new).unlink()
    assert dl.move_partial(dest, new)
    assert part_path(new).read_bytes() == have and sidecar_path(new).read_text() == meta
    assert not part_path(dest).exists() and not sidecar_path(dest).exists()
    assert not dl.lock_path(dest).exists() and not dl.lock_path(new).exists()
    assert not dl.move_partial(dest, new)  # nothing left to move
