"""A small live chart of decode speed (tok/s) and, when it is measured, power (W), drawn with
QPainter from the worker's progress signals. It keeps only the points of one reply: the running
one ("now … tok/s"), or a finished one (end(), show_points()), titled as over."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPalette, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

MAX_POINTS = 300


class ThroughputChart(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Speed chart")
        self.setAccessibleDescription("Tokens per second during the current reply, and power when measured")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.tps: list[tuple[float, float]] = []  # (seconds, tok/s)
        self.watts: list[tuple[float, float]] = []  # (seconds, W); empty unless measured
        self.live = False  # the points are a running reply's: the title says "now"

    def sizeHint(self) -> QSize:
        # as narrow as its minimum: it takes the room left, after the speed label beside it has
        # its text (at 200% scaling the label was cut for the chart's sake)
        h = self.fontMetrics().height()
        return QSize(120, h * 4)

    def minimumSizeHint(self) -> QSize:
        return QSize(120, self.fontMetrics().height() * 4)

    def clear(self) -> None:
        self.tps.clear()
        self.watts.clear()
        self.live = False
        self.update()

    def end(self) -> None:
        """The reply has ended: its points stay, without a "now"."""
        self.live = False
        self.update()

    def points(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Copies of (tps, watts), to be shown again with show_points."""
        return list(self.tps), list(self.watts)

    def show_points(self, tps: list[tuple[float, float]], watts: list[tuple[float, float]]) -> None:
        """Shows a finished reply's points."""
        self.tps, self.watts = list(tps), list(watts)
        self.live = False
        self.update()

    def add(self, point: dict[str, object]) -> None:
        t = float(point.get("seconds", 0.0))  # type: ignore[arg-type]
        self.tps.append((t, float(point.get("tps", 0.0))))  # type: ignore[arg-type]
        w = point.get("watts")
        if w is not None:
            self.watts.append((t, float(w)))  # type: ignore[arg-type]
        del self.tps[:-MAX_POINTS]
        del self.watts[:-MAX_POINTS]
        self.live = True
        self.update()

    def title(self) -> str:
        """The line drawn at the chart's top."""
        if self.tps and self.live:
            label = f"now {self.tps[-1][1]:.1f} tok/s"  # the label beside the chart: the average so far
            if self.watts:
                label += f"  ·  {self.watts[-1][1]:.1f} W"
            return label
        if self.tps:  # a finished reply: what it was "now" is over
            return "tok/s and W during the reply" if self.watts else "tok/s during the reply"
        return "tok/s (live during a reply)"

    def _line(self, p: QPainter, pts: list[tuple[float, float]], area: QRectF, color: QColor) -> float:
        if not pts:
            return 0.0
        t0, t1 = pts[0][0], max(pts[-1][0], pts[0][0] + 1e-9)
        top = max(v for _, v in pts) * 1.15 or 1.0
        poly = QPolygonF(
            [
                QPointF(
                    area.left() + (t - t0) / (t1 - t0) * area.width(), area.bottom() - v / top * area.height()
                )
                for t, v in pts
            ]
        )
        p.setPen(QPen(color, 1.6))
        p.drawPolyline(poly)
        return top

    def paintEvent(self, _e: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        r = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        p.fillRect(r, pal.color(QPalette.ColorRole.Base))
        p.setPen(QPen(pal.color(QPalette.ColorRole.Mid)))
        p.drawRect(r)
        fm = self.fontMetrics()
        text_h = fm.height()
        area = r.adjusted(4, text_h + 2, -4, -4)
        accent = pal.color(QPalette.ColorRole.Highlight)
        power = QColor(220, 120, 40)
        self._line(p, self.tps, area, accent)
        if self.watts:
            self._line(p, self.watts, area, power)
        p.setPen(pal.color(QPalette.ColorRole.Text))
        label = self.title()
        p.drawText(
            QRectF(r.left() + 6, r.top() + 1, r.width() - 12, text_h),
            int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
            fm.elidedText(label, Qt.TextElideMode.ElideRight, int(r.width() - 12)),
        )
        p.end()


__all__ = ["ThroughputChart"]
