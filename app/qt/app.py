"""Starting the desktop app: `trit` (no subcommand), `trit-chat`, and `trit --self-test`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

SELF_TEST_PROMPT = "What is the capital of France? Answer in one sentence."


def _no_display() -> bool:
    return (
        sys.platform.startswith("linux")
        and not os.environ.get("QT_QPA_PLATFORM")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    )


def _application(argv: Sequence[str]) -> Any:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(list(argv) or ["trit"])
    app.setApplicationName("Trit")
    app.setApplicationDisplayName("Trit")
    app.setOrganizationName("Trit")
    app.setDesktopFileName("trit")  # matches trit.desktop (Linux packages), so docks group the window
    app.setWindowIcon(app_icon())
    return app


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
    from .context import AppContext
    from .main_window import MainWindow

    app = _application(argv)
    ctx = AppContext.create(data_dir)
    win = MainWindow(ctx, model=model)
    win.show()
    try:
        return int(app.exec())
    finally:
        win.shutdown()
        ctx.close()


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
    if _no_display():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import QTimer
    from trit.app.core.sampling import Sampling

    from .chat_view import format_readout
    from .context import AppContext
    from .main_window import MainWindow

    app = _application(["trit"])
    tmp = tempfile.TemporaryDirectory(prefix="trit-self-test-") if data_dir is None else None
    ctx = AppContext.create(data_dir or tmp.name)  # type: ignore[union-attr]
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


__all__ = ["main", "run_gui", "self_test"]
