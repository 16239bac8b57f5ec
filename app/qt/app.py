"""Starting the desktop app: `trit` (no subcommand), `trit-chat`, and `trit --self-test`."""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

SELF_TEST_PROMPT = "What is the capital of France? Answer in one sentence."


def _no_display() -> bool:
    return (
        sys.platform.startswith("linux")
        and not os.environ.get("QT_QPA_PLATFORM")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    )


def _answers(family: int, address: object) -> bool | None:
    """True when something accepts a connection there, False when nothing does, None when the
    check itself could not tell."""
    import socket

    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(address)  # type: ignore[arg-type]
            return True
    except (TimeoutError, FileNotFoundError, ConnectionRefusedError, socket.gaierror):
        return False
    except OSError:
        return None


def _display_reachable() -> bool:
    """Whether the display the environment names can be reached: Qt aborts the process (with a
    message about xcb-cursor) when DISPLAY points at no X server, e.g. a stale one over ssh. Only a
    definite "nothing there" counts as unreachable."""
    import socket

    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return True
    wayland = os.environ.get("WAYLAND_DISPLAY", "")
    if wayland:
        path = (
            wayland
            if wayland.startswith("/")
            else os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), wayland)
        )
        if _answers(socket.AF_UNIX, path) is not False:
            return True
    display = os.environ.get("DISPLAY", "")
    m = re.fullmatch(r"(?:unix)?([^:]*):(\d+)(?:\.\d+)?", display)
    if not display:
        return False
    if m is None:
        return True  # a form we do not parse: let Qt try
    host, n = m.group(1), int(m.group(2))
    if host and host != "unix":
        return _answers(socket.AF_INET, (host, 6000 + n)) is not False
    unix = f"/tmp/.X11-unix/X{n}"
    return any(_answers(socket.AF_UNIX, a) is not False for a in ("\0" + unix, unix))


# Debian/Ubuntu packages of the libraries Qt's X11 plugin (libqxcb.so) loads that desktop installs
# may lack (Qt 6.5+ needs libxcb-cursor0, which many distributions do not install by default).
_DEBIAN_PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}


def missing_libraries(path: str | os.PathLike[str]) -> list[str]:
    """The shared libraries `path` (an ELF library) needs and the dynamic loader cannot find: empty
    when it loads. Loading it is the verdict; `ldd` then names every missing one (the loader's
    error names only the first)."""
    try:
        ctypes.CDLL(os.fspath(path))
        return []
    except OSError as e:
        first = str(e)
    missing: set[str] = set()
    try:
        out = subprocess.run(
            ["ldd", os.fspath(path)], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        missing = {line.split()[0] for line in out.splitlines() if "=> not found" in line}
    except (OSError, subprocess.SubprocessError):
        pass
    if not missing:
        m = re.search(r"([^\s:/]+\.so[.\d]*): cannot open shared object file", first)
        missing = {m.group(1) if m else first}
    return sorted(missing)


def _xcb_plugin() -> str | None:
    """PySide6's X11 platform plugin when Qt will use it: Linux, QT_QPA_PLATFORM unset (outside a
    Wayland session) or "xcb"."""
    if not sys.platform.startswith("linux"):
        return None
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform.split(":")[0] not in ("", "xcb") or (not platform and os.environ.get("WAYLAND_DISPLAY")):
        return None
    spec = importlib.util.find_spec("PySide6")
    if spec is None or spec.origin is None:
        return None
    plugin = os.path.join(os.path.dirname(spec.origin), "Qt", "plugins", "platforms", "libqxcb.so")
    return plugin if os.path.exists(plugin) else None


def missing_window_libraries_message() -> str | None:
    """Why the window cannot open on this X11 desktop, before Qt aborts the process over it (Qt's
    own message, "could not load the Qt platform plugin xcb", names no library): None when the
    X11 plugin loads or is not the one Qt will use."""
    plugin = _xcb_plugin()
    if plugin is None:
        return None
    missing = missing_libraries(plugin)
    try:  # Qt 6.5+ opens this one at run time (no link to it, so ldd cannot see it) and gives up without it
        ctypes.CDLL("libxcb-cursor.so.0")
    except OSError:
        missing.append("libxcb-cursor.so.0")
    if not missing:
        return None
    packages = [_DEBIAN_PACKAGES[name] for name in missing if name in _DEBIAN_PACKAGES]
    fix = f" On Debian or Ubuntu: sudo apt-get install {' '.join(packages)}." if packages else ""
    return (
        f"trit: the window cannot open: Qt's X11 plugin ({plugin}) needs system libraries that are "
        f"missing: {', '.join(missing)}.{fix} `trit chat` works in the terminal without them."
    )


def _application(argv: Sequence[str]) -> Any:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(list(argv) or ["trit"])
    app.setApplicationName("Trit")
    app.setApplicationDisplayName("Trit")
    app.setOrganizationName("Trit")
    app.setDesktopFileName("trit")  # matches trit.desktop (Linux packages), so docks group the window
    app.setWindowIcon(app_icon())
    from .safe_text import install_plain_tooltips

    install_plain_tooltips(app)  # a model's name or a title in a tooltip is never HTML
    if getattr(sys, "frozen", False) and sys.platform.startswith("linux"):
        _open_links_outside_the_bundle(app)
    return app


# What PyInstaller's bootloader and Qt's runtime hook put in the environment for the bundle itself;
# a program the app starts (the file manager, the browser) must not load the bundle's libraries or
# Qt plugins instead of its own.
_BUNDLE_ONLY = (
    "QT_PLUGIN_PATH",
    "QT_QPA_PLATFORM_PLUGIN_PATH",
    "QML2_IMPORT_PATH",
    "PYTHONHOME",
    "PYTHONPATH",
)


def outside_environment(env: Mapping[str, str]) -> dict[str, str]:
    """env as it was before the bundle started: LD_LIBRARY_PATH (and macOS's DYLD paths) back to
    what PyInstaller kept in *_ORIG, the bundle's own variables removed."""
    out = {k: v for k, v in env.items() if not k.startswith("_PYI") and not k.startswith("_MEI")}
    for var in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "DYLD_FRAMEWORK_PATH"):
        orig = out.pop(var + "_ORIG", None)
        out.pop(var, None)
        if orig:
            out[var] = orig
    for var in _BUNDLE_ONLY:
        out.pop(var, None)
    return out


def _open_links_outside_the_bundle(app: Any) -> None:
    """QDesktopServices.openUrl (Show in folder, license and model links) starts xdg-open with the
    app's environment; in the bundle it goes through this handler, which starts it with
    outside_environment() instead."""
    from PySide6.QtCore import QObject, Slot
    from PySide6.QtGui import QDesktopServices

    class Opener(QObject):
        @Slot("QUrl")
        def open(self, url: Any) -> None:
            try:
                proc = subprocess.Popen(
                    ["xdg-open", url.toString()],
                    env=outside_environment(os.environ),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as e:
                print(f"trit: cannot open {url.toString()}: {e}", file=sys.stderr)
                return
            threading.Thread(target=proc.wait, daemon=True).start()  # reaped when it ends

    opener = Opener(app)
    app._trit_link_opener = opener  # lives as long as the application
    for scheme in ("file", "http", "https"):
        QDesktopServices.setUrlHandler(scheme, opener, "open")


def app_icon() -> Any:
    """The window and dock icon: every rendered size of resources/icons/trit.svg (an empty icon
    when the files are missing, e.g. in a trimmed install: the app still starts)."""
    from PySide6.QtGui import QIcon

    from trit.default_model import resources_dir

    icon = QIcon()
    for png in sorted((resources_dir() / "icons").glob("trit-*.png")):
        icon.addFile(str(png))
    return icon


def run_gui(*, data_dir: str | None = None, model: str | None = None, argv: Sequence[str] = ()) -> int:
    if _no_display():
        print(
            "trit: no display to open the window on (DISPLAY and WAYLAND_DISPLAY are unset). "
            "Run it in a desktop session, or use `trit chat` for the terminal.",
            file=sys.stderr,
        )
        return 2
    if not _display_reachable():
        shown = ", ".join(f"{k}={os.environ[k]}" for k in ("DISPLAY", "WAYLAND_DISPLAY") if os.environ.get(k))
        print(
            f"trit: cannot reach the display ({shown}): nothing answers there (a display of an ended "
            "session, or an ssh login without X forwarding?). Run it in a desktop session, or use "
            "`trit chat` for the terminal.",
            file=sys.stderr,
        )
        return 2
    why = missing_window_libraries_message()
    if why:
        print(why, file=sys.stderr)
        return 2
    from trit.app.core.store import StoreError

    from .context import AppContext
    from .main_window import MainWindow

    app = _application(argv)
    from trit.app.core.store import default_db_path, make_data_folder

    folder = Path(data_dir) if data_dir is not None else default_db_path().parent
    try:
        make_data_folder(folder)
    except StoreError as e:
        return _cannot_open(e)
    instance = SingleInstance(folder)
    if not instance.acquire():
        if instance.ask_running_to_show():
            print(
                "trit: Trit is already open with this data folder; its window was brought to the front",
                file=sys.stderr,
            )
            return 0
        pid = instance.holder()
        text = (
            f"Another Trit{f' (process {pid})' if pid else ''} is using {folder} and does not answer. "
            "Close it, or wait until it has ended, then start Trit again."
        )
        print(f"trit: {text}", file=sys.stderr)
        error_dialog("Trit is already running", text)
        return 1
    notice = SalvageNotice()
    try:
        # a damaged file is recovered here (the window says so); the notice shows meanwhile
        ctx = AppContext.create(data_dir, on_salvage=notice.show)
    except StoreError as e:  # a folder in its place, no permission, a newer Trit's file
        instance.release()
        return _cannot_open(e)
    finally:
        notice.close()
    win = MainWindow(ctx, model=model)
    win.show()
    instance.serve(lambda: show_window(win))
    try:
        with store_errors_in_banner(win):
            return int(app.exec())
    finally:
        win.shutdown()
        ctx.close()
        instance.release()


def _cannot_open(e: Any) -> int:
    """Says on stderr and in a dialog why the conversations cannot be opened (a StoreError)."""
    print(f"trit: {e}", file=sys.stderr)
    error_dialog("Trit cannot open your conversations", f"{e.message}\n\n{e.fix}".strip())
    return 1


class SingleInstance:
    """One Trit window per data folder. A second start on the same folder brings the running
    window to the front and ends: two processes on one folder lost data in several ways (a reply
    being written marked stopped by the other's recovery, settings saved over each other, the same
    model downloaded into one part file, a salvage replacing the database under a running window).
    A lock file in the folder says who runs (Qt removes one whose process is gone); a local socket
    named after the folder carries "show yourself" to it."""

    def __init__(self, folder: Path) -> None:
        import hashlib

        from PySide6.QtCore import QLockFile

        self.folder = folder
        self.lock = QLockFile(str(folder / "trit.lock"))
        self.lock.setStaleLockTime(0)  # stale only when its process is gone, however long it ran
        who = str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "")
        key = f"{who}:{folder.resolve()}".encode("utf-8", "surrogateescape")
        self.name = "trit-" + hashlib.sha256(key).hexdigest()[:20]
        self.server: Any = None

    def acquire(self) -> bool:
        return bool(self.lock.tryLock(0))

    def holder(self) -> int | None:
        info = self.lock.getLockInfo()  # (pid, hostname, appname); (False, ...) in some bindings
        pid = info[1] if len(info) == 4 else info[0]
        return int(pid) if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None

    def ask_running_to_show(self, timeout_ms: int = 2000) -> bool:
        """True when the running Trit answered (it shows its window)."""
        from PySide6.QtNetwork import QLocalSocket

        sock = QLocalSocket()
        sock.connectToServer(self.name)
        if not sock.waitForConnected(timeout_ms):
            return False
        sock.write(b"show\n")
        sent = sock.waitForBytesWritten(timeout_ms)
        sock.disconnectFromServer()
        return bool(sent)

    def serve(self, on_show: Callable[[], None]) -> None:
        from PySide6.QtNetwork import QLocalServer

        QLocalServer.removeServer(self.name)  # a socket file a crashed Trit left
        self.server = QLocalServer()
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)

        def connection() -> None:
            while self.server.hasPendingConnections():
                sock = self.server.nextPendingConnection()
                sock.readyRead.connect(lambda s=sock: s.readAll() and on_show())
                sock.disconnected.connect(sock.deleteLater)

        self.server.newConnection.connect(connection)
        self.server.listen(self.name)

    def release(self) -> None:
        if self.server is not None:
            self.server.close()
        self.lock.unlock()


def show_window(win: Any) -> None:
    """Brings win to the front (restored if minimised)."""
    from PySide6.QtCore import Qt

    if win.windowState() & Qt.WindowState.WindowMinimized:
        win.showNormal()
    win.show()
    win.raise_()
    win.activateWindow()


class SalvageNotice:
    """A small window saying that the conversation history is being recovered: before the main
    window exists, a large damaged file takes seconds (2.5 s for 100k messages) with nothing on
    the screen otherwise. Recovery blocks the GUI thread, so it is drawn once, before it starts."""

    def __init__(self) -> None:
        self.box: Any = None

    def show(self) -> None:
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QApplication, QProgressDialog

        box = QProgressDialog("Recovering your conversation history from a damaged file…", "", 0, 0)
        box.setWindowTitle("Trit")
        box.setCancelButton(None)  # it cannot be stopped half way: the damaged file stays as it is
        box.setWindowModality(Qt.WindowModality.ApplicationModal)
        box.setMinimumDuration(0)
        box.setMinimumWidth(
            box.fontMetrics().horizontalAdvance(box.labelText()) + 4 * box.fontMetrics().height()
        )
        box.show()
        for _ in range(3):  # mapped and painted before the GUI thread is busy
            QApplication.processEvents()
        self.box = box

    def close(self) -> None:
        if self.box is not None:
            self.box.close()
            self.box.deleteLater()
            self.box = None


def error_dialog(title: str, text: str) -> None:
    """A problem that keeps the window from opening (tests replace this)."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox(QMessageBox.Icon.Critical, title, text)
    box.setTextFormat(Qt.TextFormat.PlainText)  # paths and file names are text, never HTML
    box.exec()


@contextmanager
def store_errors_in_banner(win: Any) -> Iterator[None]:
    """While it lasts, a StoreError that escapes a slot on the GUI thread (the window catches the
    ones it expects: reading a conversation, the list, the start) shows in win's banner instead of
    only as a traceback on stderr; PySide hands such exceptions to sys.excepthook."""
    from PySide6.QtCore import QThread
    from trit.app.core.store import StoreError

    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if isinstance(value, StoreError) and QThread.currentThread() == win.thread():
            print(f"trit: {value}", file=sys.stderr)
            win.show_store_error(value)
        else:
            previous(kind, value, tb)

    sys.excepthook = hook
    try:
        yield
    finally:
        sys.excepthook = previous


def self_test(
    *,
    model: str | None = None,
    data_dir: str | None = None,
    prompt: str = SELF_TEST_PROMPT,
    timeout_s: float = 180,
) -> int:
    """Opens the real window, loads the model through the worker, sends one prompt, waits for the
    streamed reply, prints the stats; 0 on success, otherwise non-zero with the reason on stderr.
    Conversations go to a temporary folder unless data_dir is given."""
    if _no_display() or not _display_reachable():  # the check needs no screen: Qt would abort
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    why = missing_window_libraries_message()
    if why:
        print(f"{why}\ntrit: self-test failed: no window", file=sys.stderr)
        return 2
    from PySide6.QtCore import QTimer
    from trit.app.core.sampling import Sampling
    from trit.app.core.store import StoreError

    from .chat_view import format_readout
    from .context import AppContext
    from .main_window import MainWindow

    app = _application(["trit"])
    tmp = tempfile.TemporaryDirectory(prefix="trit-self-test-") if data_dir is None else None
    try:
        ctx = AppContext.create(data_dir or tmp.name)  # type: ignore[union-attr]
    except StoreError as e:
        print(f"trit: self-test failed: {e}", file=sys.stderr)
        return 1
    result: dict[str, Any] = {"code": 1, "reason": "did not finish"}
    streamed: list[str] = []

    win = MainWindow(ctx, model=model, autoload=False)
    win.show()

    def done(code: int, reason: str = "") -> None:
        result.update(code=code, reason=reason)
        app.quit()

    def on_loaded(info: dict[str, Any]) -> None:
        if "error" in info:
            done(2, f"{info['error']} {info.get('fix', '')}".strip())
            return
        print(
            f"model: {info['name']} ({info['arch']}, {info['isa']}, {info['threads']} threads)",
            file=sys.stderr,
        )
        cid = win.new_conversation("Self-test")
        ctx.store.update_conversation(cid, sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=48))
        win.prompt.setPlainText(prompt)
        if not win.send():
            done(3, "the window did not send the prompt")

    def on_finished(d: dict[str, Any]) -> None:
        text = "".join(streamed).strip()
        rec = d.get("record") or {}
        if d.get("status") != "complete":
            done(4, f"the reply ended as {d.get('status')!r}: {win.banner.text()}")
        elif not text:
            done(5, "the reply was empty")
        elif text != str(d.get("text", "")).strip():
            done(6, "the streamed text differs from the stored reply")
        else:
            print(f"reply: {text}")
            print(f"stats: {format_readout(rec)}")
            print(f"memory: {win.memory_label.text()}")
            done(0)

    win.model_loaded.connect(on_loaded)
    win.worker.token.connect(streamed.append)
    win.reply_finished.connect(on_finished)
    QTimer.singleShot(int(timeout_s * 1000), lambda: done(7, f"no reply within {timeout_s:.0f} s"))
    QTimer.singleShot(0, lambda: win.load_model(model))
    app.exec()
    win.shutdown()
    win.close()
    ctx.close()
    if tmp is not None:
        tmp.cleanup()
    if result["code"]:
        print(f"trit: self-test failed: {result['reason']}", file=sys.stderr)
    else:
        print("self-test passed", file=sys.stderr)
    return int(result["code"])


def main(argv: Sequence[str] | None = None) -> int:
    """The trit-chat GUI script."""
    ap = argparse.ArgumentParser(prog="trit-chat", description="Trit: offline chat with 1.58-bit models")
    ap.add_argument(
        "-m", "--model", default=None, help="model to open (default: the last used, or the bundled one)"
    )
    ap.add_argument("--data-dir", default=None, help="keep conversations and settings in this folder")
    ap.add_argument(
        "--self-test", action="store_true", help="open the window, send one prompt, print stats, exit"
    )
    args, qt_args = ap.parse_known_args(argv)
    if args.self_test:
        return self_test(model=args.model, data_dir=args.data_dir)
    return run_gui(data_dir=args.data_dir, model=args.model, argv=[sys.argv[0], *qt_args])


__all__ = ["error_dialog", "main", "run_gui", "self_test", "store_errors_in_banner"]
