"""Energy and memory readouts for a reply.

Energy sources, best first: Linux RAPL package counters, the battery's discharge power (Linux
sysfs, macOS ioreg, Windows WMI), else an estimate from this process's CPU time times a per-core
power figure. A reading comes from exactly one source and says which ("measured: RAPL package",
"measured: battery", "estimated: CPU time x 5 W/core"); measured and estimated figures are never
added together. Note what the meters see: RAPL and the battery measure the whole machine, the
estimate only this process.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

DEFAULT_WATTS_PER_CORE = 5.0  # a busy modern laptop/desktop core under SIMD load, roughly 3-8 W


class SourceUnavailable(Exception):
    """The source cannot measure here (no such device, permission denied, not discharging)."""


@dataclass(frozen=True)
class EnergyReading:
    joules: float
    seconds: float
    source_label: str  # "measured: RAPL package", "estimated: CPU time x 5 W/core", ...
    measured: bool

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else 0.0


class EnergySource(Protocol):
    label: str
    measured: bool

    def start(self) -> None:
        """Raises SourceUnavailable when the source cannot measure now."""

    def stop(self) -> float:
        """Joules since start(); raises SourceUnavailable when the measurement became invalid."""
        ...


class RaplSource:
    """Sum of the package domains /sys/class/powercap/intel-rapl:N/energy_uj (not the
    sub-domains intel-rapl:N:M, which the package already includes), with max_energy_range_uj
    wraparound. Usually root-only: unreadable counters make it unavailable."""

    label = "measured: RAPL package"
    measured = True

    def __init__(self, sysfs_root: str | Path = "/sys") -> None:
        raise NotImplementedError

    def available(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> float:
        raise NotImplementedError


class SampledPowerSource:
    """Integrates a watts reading sampled every `interval` seconds on a background thread
    (trapezoids; the first and last samples are taken in start() and stop()). Any failed sample
    invalidates the measurement."""

    label = "measured: battery"
    measured = True

    def __init__(
        self, read_watts: Callable[[], float], *, interval: float = 0.5, label: str | None = None
    ) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> float:
        raise NotImplementedError


def linux_battery_watts(sysfs_root: str | Path = "/sys") -> float:
    """Discharge power of the Linux batteries (/sys/class/power_supply/*/ with type Battery):
    power_now (uW), or current_now (uA) x voltage_now (uV). Raises SourceUnavailable unless a
    battery is Discharging."""
    raise NotImplementedError


def parse_ioreg(output: str) -> float:
    """Watts from `ioreg -rn AppleSmartBattery` output: |InstantAmperage| (mA, may be printed as
    an unsigned 64-bit number) x Voltage (mV). Raises SourceUnavailable when not discharging
    (ExternalConnected = Yes or amperage >= 0) or the keys are missing."""
    raise NotImplementedError


def parse_wmi_battery(output: str) -> float:
    """Watts from `powershell Get-CimInstance -Namespace root/wmi BatteryStatus` output
    (DischargeRate in mW, Discharging : True). Raises SourceUnavailable otherwise."""
    raise NotImplementedError


def macos_battery_watts(run: Callable[[Sequence[str]], str] | None = None) -> float:
    raise NotImplementedError


def windows_battery_watts(run: Callable[[Sequence[str]], str] | None = None) -> float:
    raise NotImplementedError


class CpuTimeEstimate:
    """Joules = this process's CPU seconds (user + system, all threads) x watts_per_core."""

    measured = False

    def __init__(
        self, watts_per_core: float = DEFAULT_WATTS_PER_CORE, cpu_seconds: Callable[[], float] | None = None
    ) -> None:
        raise NotImplementedError

    @property
    def label(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> float:
        raise NotImplementedError


def detect_sources(
    *,
    sysfs_root: str | Path = "/sys",
    platform: str = sys.platform,
    run: Callable[[Sequence[str]], str] | None = None,
    interval: float = 0.5,
) -> list[EnergySource]:
    """Measured sources that could work on this machine, best first (not yet started)."""
    raise NotImplementedError


class EnergyMeter:
    """start() ... stop() -> EnergyReading around one reply. Runs the CPU-time estimate beside the
    measured sources and reports the first measured source that stayed valid, else the estimate."""

    def __init__(
        self,
        sources: Sequence[EnergySource] | None = None,
        *,
        estimate: CpuTimeEstimate | None = None,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """sources=None: detect_sources() for this machine; [] = estimate only."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> EnergyReading:
        raise NotImplementedError


@dataclass(frozen=True)
class MemoryReading:
    rss_bytes: int  # this process's resident set
    model_file_bytes: int  # the model file (or folder) on disk; 0 if unknown
    kv_bytes: int  # the session's KV cache; 0 if no session

    def text(self) -> str:
        """ "RAM 412 MB · model 1.2 GB · KV cache 150 MB" """
        raise NotImplementedError


def process_rss() -> int:
    raise NotImplementedError


def path_bytes(path: str | Path | None) -> int:
    """Size of a file, or of every file in a folder; 0 when missing."""
    raise NotImplementedError


def memory_reading(model_path: str | Path | None = None, session: Any = None) -> MemoryReading:
    """session: an engine Session (its kv_bytes is read) or None."""
    raise NotImplementedError


@dataclass(frozen=True)
class ReplyRecord:
    """Per-reply numbers, stored as the message's stats JSON (to_dict / from_dict)."""

    ttft_ms: float
    prompt_tokens: int
    prompt_tps: float
    tokens: int
    decode_tps: float
    joules: float | None
    joules_per_token: float | None
    energy_label: str  # the EnergyReading's source_label ("" when no energy was read)
    energy_measured: bool
    stop_reason: str = ""
    cached_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReplyRecord:
        raise NotImplementedError

    def summary(self) -> str:
        """ "TTFT 0.41 s · 23.5 tok/s · 128 tokens · 0.36 J/token (estimated: CPU time x 5 W/core)" """
        raise NotImplementedError


def reply_record(stats: Any, energy: EnergyReading | None) -> ReplyRecord:
    """Combines engine Stats (duck-typed: prompt_tokens, tokens_generated, ttft_ms, prompt_tps,
    decode_tps, stop_reason, cached_tokens) with one energy reading."""
    raise NotImplementedError


class ReplyMeter:
    """Wraps one reply: start() before Session.chat, finish(gen.stats) after it."""

    def __init__(self, energy: EnergyMeter | None = None) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def finish(self, stats: Any) -> ReplyRecord:
        raise NotImplementedError


__all__ = [
    "DEFAULT_WATTS_PER_CORE",
    "CpuTimeEstimate",
    "EnergyMeter",
    "EnergyReading",
    "EnergySource",
    "MemoryReading",
    "RaplSource",
    "ReplyMeter",
    "ReplyRecord",
    "SampledPowerSource",
    "SourceUnavailable",
    "detect_sources",
    "linux_battery_watts",
    "macos_battery_watts",
    "memory_reading",
    "parse_ioreg",
    "parse_wmi_battery",
    "path_bytes",
    "process_rss",
    "reply_record",
    "windows_battery_watts",
]
