"""A local stand-in for the Hugging Face hub (127.0.0.1, ephemeral ports) with injectable faults.

Speaks what huggingface_hub.get_hf_file_metadata and our ranged transfer need:
  HEAD/GET /{repo}/resolve/{rev}/{file} -> 302 to the "CDN" port, with X-Repo-Commit,
      X-Linked-Etag / ETag (the sha256), X-Linked-Size; 404 + X-Error-Code for unknown files,
      401 for gated repos without the right Bearer token
  GET  /cdn/{sha256} on a second port -> the bytes, honouring Range with 206
  GET  /api/models/{repo}/revision/{rev} -> {"id", "sha"}
Faults (attributes, changeable between requests): drop_after (close the connection after that
many body bytes, `drops` times), corrupt (flip a byte), ignore_range (always 200), chunk_delay
(slow link), fail_status (answer every request with this status), stall (an Event: while it is
set the CDN sends nothing more, keeping the connection open)."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# a self-signed certificate for 127.0.0.1, made by tests/fixtures/make_tls_cert.sh
TLS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "tls"
TLS_CERT = TLS_DIR / "cert.pem"


def client_context() -> ssl.SSLContext:
    """A client context that trusts the test certificate (and nothing else)."""
    return ssl.create_default_context(cafile=str(TLS_CERT))


@dataclass
class Logged:
    server: str  # "hub" | "cdn"
    method: str
    path: str
    range: str | None
    auth: str | None


@dataclass
class HubState:
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (repo, file) -> bytes
    gated: dict[str, str] = field(default_factory=dict)  # repo -> token
    log: list[Logged] = field(default_factory=list)
    drop_after: int | None = None
    drops: int = 1
    corrupt: bool = False
    ignore_range: bool = False
    chunk_delay: float = 0.0
    chunk: int = 1 << 14
    fail_status: int | None = None
    stall: threading.Event = field(default_factory=threading.Event)
    chunked: bool = False
    cdn_base: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    sockets: set[socket.socket] = field(default_factory=set)  # open connections, closed by stop()

    def by_sha(self, sha: str) -> bytes | None:
        for data in self.files.values():
            if hashlib.sha256(data).hexdigest() == sha:
                return data
        return None


def _handler(state: HubState, role: str, cdn_base: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            with state.lock:
                state.sockets.add(self.connection)

        def finish(self) -> None:
            with state.lock:
                state.sockets.discard(self.connection)
            super().finish()

        def _log(self) -> None:
            with state.lock:
                state.log.append(
                    Logged(
                        role,
                        self.command,
                        self.path,
                        self.headers.get("Range"),
                        self.headers.get("Authorization"),
                    )
                )

        def _empty(self, code: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            self._log()
            self._route()

        def do_GET(self) -> None:
            self._log()
            self._route()

        def _route(self) -> None:
            if state.fail_status is not None:
                return self._empty(state.fail_status)
            parts = self.path.split("?")[0].strip("/").split("/")
            if role == "cdn" and len(parts) == 2 and parts[0] == "cdn":
                return self._serve(parts[1])
            if role == "hub" and parts[:2] == ["api", "models"] and "revision" in parts:
                i = parts.index("revision")
                body = json.dumps({"id": "/".join(parts[2:i]), "sha": COMMIT}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)
                return None
            if role == "hub" and "resolve" in parts:
                i = parts.index("resolve")
                repo, file = "/".join(parts[:i]), "/".join(parts[i + 2 :])
                token = state.gated.get(repo)
                if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                    return self._empty(401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"})
                data = state.files.get((repo, file))
                if data is None:
                    code = "EntryNotFound" if any(r == repo for r, _ in state.files) else "RepoNotFound"
                    return self._empty(404, {"X-Error-Code": code, "X-Error-Message": code})
                sha = hashlib.sha256(data).hexdigest()
                return self._empty(
                    302,
                    {
                        "Location": f"{state.cdn_base or cdn_base[0]}/cdn/{sha}",
                        "X-Repo-Commit": COMMIT,
                        "X-Linked-Etag": f'"{sha}"',
                        "ETag": '"pointer-etag"',
                        "X-Linked-Size": str(len(data)),
                    },
                )
            return self._empty(404)

        def _serve(self, sha: str) -> None:
            data = state.by_sha(sha)
            if data is None:
                return self._empty(404)
            if state.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            rng = self.headers.get("Range")
            if rng and not state.ignore_range and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                if start >= len(data):
                    return self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            if state.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{sha}"')
            self.end_headers()
            if self.command == "HEAD":
                return None
            limit = None
            with state.lock:
                if state.drop_after is not None and state.drops > 0:
                    state.drops -= 1
                    limit = state.drop_after
            sent = 0
            import time

            while sent < len(body):
                n = state.chunk if limit is None else min(state.chunk, limit - sent)
                if n <= 0:
                    break
                while state.stall.is_set():
                    time.sleep(0.01)
                piece = body[sent : sent + n]
                if state.chunked:
                    piece = b"%x\r\n%s\r\n" % (len(piece), piece)
                try:
                    self.wfile.write(piece)
                    self.wfile.flush()
                except OSError:
                    break
                sent += n
                if state.chunk_delay:
                    time.sleep(state.chunk_delay)
            if limit is not None:
                self.close_connection = True
            elif state.chunked:
                try:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    pass
            return None

    return Handler


class HubServer:
    """Two ThreadingHTTPServers on 127.0.0.1 (hub and CDN) sharing one HubState. Pass port=
    (the hub's old port) to restart "the same" server after stop(); tls=True serves the CDN over
    HTTPS."""

    def __init__(self, state: HubState | None = None, port: int = 0, *, tls: bool = False) -> None:
        self.state = state or HubState()
        cdn_base: list[str] = [""]
        self.hub = ThreadingHTTPServer(("127.0.0.1", port), _handler(self.state, "hub", cdn_base))
        self.cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state, "cdn", cdn_base))
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(TLS_CERT, TLS_DIR / "key.pem")
            # the handshake runs in the connection's own thread (a stuck client blocks no one)
            self.cdn.socket = ctx.wrap_socket(
                self.cdn.socket, server_side=True, do_handshake_on_connect=False
            )
        cdn_base[0] = f"{'https' if tls else 'http'}://127.0.0.1:{self.cdn.server_address[1]}"
        for s in (self.hub, self.cdn):
            s.daemon_threads = True
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in (self.hub, self.cdn)
        ]
        for t in self._threads:
            t.start()

    @property
    def port(self) -> int:
        return int(self.hub.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Like a process exit: also drops kept-alive connections (huggingface_hub pools them)."""
        self.state.stall.clear()
        for s in (self.hub, self.cdn):
            s.shutdown()
            s.server_close()
        with self.state.lock:
            socks = list(self.state.sockets)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> HubServer:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
