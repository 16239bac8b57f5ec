"""Text colours chosen for the palette in use, with the contrast WCAG 2 asks of text (4.5:1 at
normal size): hints, muted readouts and error text (the fixed ones had read 2.6:1 on dark windows
and 3.9:1 on light ones)."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette

TEXT_CONTRAST = 4.5  # WCAG AA for normal-size text
# hints on a window aim a little higher because they often sit on a shade of it: Fusion fills group
# boxes with #ececec in a #efefef window (4.57:1 there was 4.44:1 here)
HINT_CONTRAST = 4.7


def contrast(a: QColor, b: QColor) -> float:
    """WCAG 2 contrast ratio of two opaque colours, 1 to 21."""

    def lum(c: QColor) -> float:
        ch = [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in c.getRgbF()[:3]]
        return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def over(a: QColor, b: QColor, opacity: float) -> QColor:
    """a drawn over b with the given opacity (opaque)."""
    return QColor.fromRgbF(
        *(opacity * x + (1 - opacity) * y for x, y in zip(a.getRgbF()[:3], b.getRgbF()[:3], strict=True))
    )


def readable_hint(hint: QColor, text: QColor, background: QColor, target: float) -> QColor:
    """hint as drawn over background (its alpha blended in: QColor.name() drops it, which made
    half-transparent white pure white), moved towards text just until it has `target` contrast on
    background; text itself where even that falls short."""
    start = over(hint, background, hint.alphaF())
    for step in range(101):
        c = QColor(over(text, start, step / 100).name())  # 8 bits per channel, as it is drawn
        if contrast(c, background) >= target:
            return c
    return QColor(text.name())


def muted_colour(palette: QPalette) -> QColor:
    """Grey hint text for a window: the default light palette's placeholder (#777777 on #efefef,
    3.9:1) becomes #6a6a6a (4.7:1); a dark palette's #959595 on #2b2b2b (4.7:1) is kept."""
    return readable_hint(
        palette.color(QPalette.ColorRole.PlaceholderText),
        palette.color(QPalette.ColorRole.WindowText),
        palette.color(QPalette.ColorRole.Window),
        HINT_CONTRAST,
    )


def error_colour(palette: QPalette) -> str:
    """Red text that reads on the window colour: the dark red is 4.7:1 on light grey #efefef, the
    light red 6.2:1 on dark grey #2b2b2b (the dark red there was 2.6:1)."""
    window = palette.color(QPalette.ColorRole.Window)
    return max(("#c0392b", "#ff8a80"), key=lambda red: contrast(QColor(red), window))
