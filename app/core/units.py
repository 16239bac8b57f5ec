"""Human-readable quantities for the UI."""

from __future__ import annotations


def format_bytes(n: float) -> str:
    """1.4 GB, 350 MB, 12 KB, 5 bytes (decimal units, as file managers and disk vendors show)."""
    n = float(n)
    if abs(n) < 1000:
        return f"{int(n)} bytes" if int(n) != 1 else "1 byte"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if abs(n) < 10 else f"{n:.0f} {unit}"
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """0.41 s, 12 s, 3 min 20 s, 1 h 05 min."""
    if seconds < 10:
        return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


__all__ = ["format_bytes", "format_duration"]
