#!/usr/bin/env python3
"""Render resources/icons/trit.svg into the icon files the app and the installers use.

    python packaging/make_icons.py

writes resources/icons/trit-<N>.png (N = 16 ... 512), trit.ico (Windows: the PNGs up to 256 inside
an ICO container) and trit.icns (macOS: the PNGs inside an ICNS container). The outputs are
committed, so building the app or an installer needs no SVG renderer; run this again after changing
the SVG. Rendering uses Qt's SVG module (PySide6-Essentials), offscreen.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)  # the ICO format stops at 256
# ICNS entry types that hold a PNG of the given edge (Apple's icns format)
ICNS_TYPES = ((b"icp4", 16), (b"icp5", 32), (b"icp6", 64), (b"ic07", 128), (b"ic08", 256), (b"ic09", 512))


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    """An ICO file holding PNG images (supported since Windows Vista). Header: reserved 0, type 1,
    count; one 16-byte directory entry per image (width and height 0 mean 256)."""
    sizes = [s for s in ICO_SIZES if s in pngs]
    out = bytearray(struct.pack("<HHH", 0, 1, len(sizes)))
    offset = 6 + 16 * len(sizes)
    for s in sizes:
        edge = 0 if s == 256 else s
        out += struct.pack("<BBBBHHII", edge, edge, 0, 0, 1, 32, len(pngs[s]), offset)
        offset += len(pngs[s])
    for s in sizes:
        out += pngs[s]
    return bytes(out)


def icns_bytes(pngs: dict[int, bytes]) -> bytes:
    """An ICNS file: b"icns", total length (big-endian), then (type, length incl. 8, PNG) entries."""
    body = bytearray()
    for kind, s in ICNS_TYPES:
        body += kind + struct.pack(">I", 8 + len(pngs[s])) + pngs[s]
    return b"icns" + struct.pack(">I", 8 + len(body)) + bytes(body)


def render(svg: Path, size: int) -> bytes:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    img = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    img.fill(0)
    painter = QPainter(img)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    img.save(buf, "PNG")
    return bytes(data.data())


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841  # Qt needs one
    svg = ICONS / "trit.svg"
    pngs = {s: render(svg, s) for s in SIZES}
    for s, data in pngs.items():
        (ICONS / f"trit-{s}.png").write_bytes(data)
    (ICONS / "trit.ico").write_bytes(ico_bytes(pngs))
    (ICONS / "trit.icns").write_bytes(icns_bytes(pngs))
    print(f"wrote {len(pngs)} PNGs, trit.ico and trit.icns into {ICONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
