"""Screenshots of the desktop app on a real X server (Xvfb), for reviewing layout by eye.

    python tests/screenshots/take_screenshots.py [--scale 2] [--dark] [--out DIR]

Starts Xvfb on a free display (unless DISPLAY is set and --no-xvfb is given), opens the real
window with the default model (SmolLM2, $TRIT_DEFAULT_MODEL or the usual places), sends a prompt
and captures the window mid-reply, the finished reply's readouts, and the model manager
mid-download from the local test hub (tests/app_core/hubserver.py). Conversations go to a
temporary folder. Files: main_window{suffix}.png, readouts{suffix}.png, models_download{suffix}.png,
settings{suffix}.png (File › Settings… with a rejected endpoint), where suffix is "", "_dark", "_scale2",
"_a48" (--a48: the model loaded in BitNet a4.8 mode) ...
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent


def start_xvfb() -> subprocess.Popen[bytes]:
    if shutil.which("Xvfb") is None:
        sys.exit("Xvfb is not installed (apt-get install xvfb)")
    for n in range(90, 140):
        if Path(f"/tmp/.X{n}-lock").exists() or Path(f"/tmp/.X11-unix/X{n}").exists():
            continue
        proc = subprocess.Popen(
            ["Xvfb", f":{n}", "-screen", "0", "2600x1700x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{n}").exists():
                os.environ["DISPLAY"] = f":{n}"
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        proc.kill()
    sys.exit("could not start Xvfb")


def dark_palette() -> object:
    from PySide6.QtGui import QColor, QPalette

    p = QPalette()
    roles = {
        QPalette.ColorRole.Window: "#2b2b2b",
        QPalette.ColorRole.WindowText: "#e6e6e6",
        QPalette.ColorRole.Base: "#1e1e1e",
        QPalette.ColorRole.AlternateBase: "#333333",
        QPalette.ColorRole.Text: "#e6e6e6",
        QPalette.ColorRole.Button: "#3a3a3a",
        QPalette.ColorRole.ButtonText: "#e6e6e6",
        QPalette.ColorRole.Highlight: "#3d8ee6",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: "#6cb4ff",
        QPalette.ColorRole.PlaceholderText: "#9a9a9a",
        QPalette.ColorRole.Mid: "#555555",
        QPalette.ColorRole.ToolTipBase: "#3a3a3a",
        QPalette.ColorRole.ToolTipText: "#e6e6e6",
    }
    for role, color in roles.items():
        p.setColor(role, QColor(color))
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor("#777777"))
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor("#777777"))
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--scale", default="", help="QT_SCALE_FACTOR, e.g. 2")
    ap.add_argument("--dark", action="store_true", help="a dark palette")
    ap.add_argument("--no-xvfb", action="store_true", help="use the DISPLAY already set")
    ap.add_argument("--a48", action="store_true", help="the model loaded in BitNet a4.8 mode with the 3-bit cache")
    args = ap.parse_args()
    xvfb = None if args.no_xvfb and os.environ.get("DISPLAY") else start_xvfb()
    os.environ["QT_QPA_PLATFORM"] = "xcb"  # a real X server, not offscreen
    if args.scale:
        os.environ["QT_SCALE_FACTOR"] = args.scale
    suffix = ("_dark" if args.dark else "") + (f"_scale{args.scale}" if args.scale else "") + ("_a48" if args.a48 else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return shoot(out, suffix, dark=args.dark, a48=args.a48)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(5)


def shoot(out: Path, suffix: str, *, dark: bool, a48: bool = False) -> int:
    sys.path.insert(0, str(TESTS))
    from app_core.hubserver import HubServer, HubState
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication
    from trit.app.core.catalog import CatalogEntry, load_catalog
    from trit.app.core.downloads import State
    from trit.app.core.sampling import Sampling
    from trit.app.qt.context import AppContext
    from trit.app.qt.main_window import MainWindow

    app = QApplication(["trit"])
    app.setStyle("Fusion")  # the same look on every machine the screenshots are taken on
    if dark:
        app.setPalette(dark_palette())  # type: ignore[arg-type]

    def pump(seconds: float) -> None:
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    def wait_for(cond: object, timeout: float) -> bool:
        t0 = time.monotonic()
        while not cond():  # type: ignore[operator]
            if time.monotonic() - t0 > timeout:
                return False
            pump(0.05)
        return True

    def save(widget: object, name: str) -> None:
        app.processEvents()
        screen = widget.screen()  # type: ignore[attr-defined]
        pix = screen.grabWindow(widget.winId())  # type: ignore[attr-defined]  # what X shows
        path = out / f"{name}{suffix}.png"
        pix.save(str(path))
        print(f"wrote {path} ({pix.width()}x{pix.height()})")

    data = random.Random(5).randbytes(40_000_000)
    sha = hashlib.sha256(data).hexdigest()
    hub_entry = CatalogEntry(
        id="demo-bitnet",
        name="BitNet b1.58 demo (local test hub)",
        repo="demo/bitnet-gguf",
        revision="main",
        file="demo-bitnet-i2_s.gguf",
        size=len(data),
        sha256=sha,
        license="MIT",
        license_url="https://opensource.org/license/mit",
        ram_mb=900,
        family="bitnet",
        description="A stand-in file served by tests/app_core/hubserver.py to show a download in progress.",
    )
    state = HubState(files={(hub_entry.repo, hub_entry.file): data}, chunk_delay=0.02)
    with tempfile.TemporaryDirectory(prefix="trit-shots-") as tmp, HubServer(state) as hub:
        ctx = AppContext.create(
            Path(tmp) / "data", catalog=[*load_catalog(), hub_entry], models_dir=Path(tmp) / "models"
        )
        import dataclasses

        ctx.settings = dataclasses.replace(ctx.settings, hf_endpoint=hub.endpoint)
        if a48:
            ctx.settings = dataclasses.replace(ctx.settings, kv_cache="q3", bitnet_mode="a4.8")
        win = MainWindow(ctx, autoload=False)
        win.resize(1280, 800)
        win.show()
        for title, msgs in (
            (
                "Trip to Lisbon: three-day plan",
                ["Plan three days in Lisbon.", "Day 1: Alfama and the castle…"],
            ),
            ("Explain ternary weights", ["What is a 1.58-bit model?", "Each weight is -1, 0 or +1…"]),
        ):
            cid = ctx.store.create_conversation(title)
            ctx.store.add_message(cid.id, "user", msgs[0])
            ctx.store.add_message(cid.id, "assistant", msgs[1])
        loaded: list[dict[str, object]] = []
        win.model_loaded.connect(loaded.append)
        win.load_model()
        if not wait_for(lambda: loaded, 60):
            print("the model did not load", file=sys.stderr)
            return 1
        if "error" in loaded[0]:
            print(f"cannot load the default model: {loaded[0]['error']}", file=sys.stderr)
            return 1
        cid = win.new_conversation()
        ctx.store.update_conversation(
            cid,
            system_prompt="You are a helpful assistant.",
            sampling=Sampling(temperature=0.2, top_p=0.9, max_tokens=220),
        )
        win.select_conversation(cid)
        ctx.store.add_message(cid, "user", "What is the capital of France?")
        ctx.store.add_message(cid, "assistant", "The capital of France is Paris.")
        win.select_conversation(cid)
        done: list[dict[str, object]] = []
        win.reply_finished.connect(done.append)
        win.prompt.setPlainText("Write a Python function that reverses a string, with an example.")
        win.send()
        wait_for(lambda: done or (win.reply is not None and len(win.reply["text"]) > 90), 60)
        win.prompt.setPlainText("Now make it handle None")  # the next message, being typed
        pump(0.05)
        save(win, "main_window")
        wait_for(lambda: done, 120)
        pump(0.3)
        win.chat.scroll_to_bottom()
        pump(0.2)
        save(win, "readouts")

        win.open_models()
        dlg = win._models_dialog
        dlg.resize(980, 560)
        dlg.select(("entry", hub_entry.id))
        dlg.download(hub_entry)
        dlg.select(("entry", hub_entry.id))
        wait_for(
            lambda: (
                (p := dlg.progress.get(hub_entry.id)) is not None
                and p.state == State.DOWNLOADING
                and p.downloaded > len(data) * 0.3
                and p.speed > 0
            ),
            60,
        )
        pump(0.3)
        save(dlg, "models_download")
        ctx.downloads.cancel(hub_entry.id)
        dlg.close()

        ctx.save_settings(dataclasses.replace(ctx.settings, hf_token="hf_exampleTokenNotReal"))
        win.open_settings()
        sdlg = win._settings_dialog
        sdlg.endpoint.setText("huggingface.co")  # one bad field, to show how problems read
        sdlg.ok_button.click()
        pump(0.3)
        save(sdlg, "settings")
        sdlg.reject()
        win.close()
        ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
