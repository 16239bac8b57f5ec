"""Human-readable quantities for the UI."""

from __future__ import annotations

import math


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


def format_energy(joules: float, digits: int = 3) -> str:
    """joules for people, with `digits` significant figures and an SI prefix rather than an
    exponent: "0.36 J", "240 J", "1.53 kJ", "12 mJ" (never "1.5e+03 J")."""
    j = float(joules)
    if not math.isfinite(j) or j == 0:
        return f"{j:g} J"
    r = float(f"{abs(j):.{digits}g}")  # rounded first: 999.7 is "1 kJ", not "1e+03 J"
    if r >= 1e3:
        scale, unit = (1e6, "MJ") if r >= 1e6 else (1e3, "kJ")
    elif r >= 0.01:  # joules down to 0.01 J ("0.36 J/token")
        scale, unit = 1.0, "J"
    elif r >= 1e-5:  # 0.004 J reads better as 4 mJ
        scale, unit = 1e-3, "mJ"
    else:  # microjoules, then nanojoules: a tiny energy is never shown as "0 mJ"
        scale, unit = (1e-6, "µJ") if r >= 1e-8 else (1e-9, "nJ")
    v = r / scale
    text = f"{v:.0f}" if v >= 10**digits else f"{v:.{digits}g}"  # beyond MJ: whole megajoules
    if "e" in text:  # below a thousandth of a nanojoule
        text = f"{v:.{digits}f}".rstrip("0").rstrip(".") or "0"
    return f"{'-' if j < 0 else ''}{text} {unit}"


def count_noun(n: int, noun: str) -> str:
    """ "1 token", "0 tokens", "512 tokens" """
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


__all__ = ["count_noun", "format_bytes", "format_duration", "format_energy"]
