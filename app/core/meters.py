"""Energy and memory readouts for a reply.

Energy sources, best first: Linux RAPL package counters, the battery's discharge power (Linux
sysfs, macOS ioreg, Windows WMI), else an estimate from this process's CPU time times a per-core
power figure. A reading comes from exactly one source and says which ("measured: RAPL package",
"measured: battery", "estimated: CPU time x 5 W/core"); measured and estimated figures are never
added together. Note what the meters see: RAPL and the battery measure the whole machine, the
estimate only this process.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from .units import count_noun, format_bytes, format_energy

DEFAULT_WATTS_PER_CORE = 5.0  # a busy modern laptop/desktop core under SIMD load, roughly 3-8 W


class SourceUnavailable(Exception):
    """The source cannot measure here (no such device, permission denied, not discharging). The
    message says why, naming the file or command that failed; `fix` says what the user can do
    about it ("" when nothing can be done), for the window's explanation of an estimate."""

    def __init__(self, message: str, *, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class SourceProblem:
    """Why one measured source was not used for a reading."""

    source: str  # the source's name for people: "RAPL package counter", "battery"
    reason: str  # "/sys/class/powercap/intel-rapl:0/energy_uj is readable by root only"
    fix: str = ""  # what the user can do; "" when nothing can be done


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
    # Optional, for the window's explanation (explain_energy): `name` ("RAPL package counter"),
    # `where` (the files or command it reads) and `covers` ("the whole machine, ...").

    def start(self) -> None:
        """Raises SourceUnavailable when the source cannot measure now."""

    def stop(self) -> float:
        """Joules since start(); raises SourceUnavailable when the measurement became invalid."""
        ...

    # Optional: `current_watts() -> float | None`, the power right now between start() and stop()
    # (EnergyMeter.current_watts() uses it when a source has it, for the live chart).


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except PermissionError as e:
        # Linux made RAPL's energy_uj root-only in November 2020: its readings leaked other
        # programs' secrets (PLATYPUS, CVE-2020-8694), hence the warning that goes with the fix
        raise SourceUnavailable(
            f"{path} is readable by root only",
            fix=(
                f"To measure: sudo chmod o+r {path} (until the next boot; a udev rule keeps it).\n"
                "Only on a computer you alone use: power readings can leak other programs' secrets."
            ),
        ) from e
    except (OSError, ValueError) as e:
        raise SourceUnavailable(f"{path}: {e}") from e


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


# More than a CPU package draws (server parts reach ~500 W): a RAPL difference beyond it is a
# counter that stepped back or reset, not energy
MAX_PACKAGE_WATTS = 2000.0


class RaplSource:
    """Sum of the package domains /sys/class/powercap/intel-rapl:N/energy_uj (not the
    sub-domains intel-rapl:N:M, which the package already includes, nor a "psys" domain, which
    covers the whole platform and would count the package twice), with max_energy_range_uj
    wraparound. Usually root-only: unreadable counters make it unavailable. It measures the whole
    CPU package, not only Trit. A reply spanning more than one counter wrap (hours at normal
    power) would be under-counted."""

    label = "measured: RAPL package"
    measured = True
    name = "RAPL package counter"
    covers = "the whole CPU package, other programs included"

    def __init__(
        self, sysfs_root: str | Path = "/sys", *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = Path(sysfs_root) / "class" / "powercap"
        self._clock = clock
        self._start: list[int] = []
        self._t_start = 0.0
        self._last: tuple[float, list[int]] | None = None  # (time, counters) of the last power reading

    def domains(self) -> list[Path]:
        out = []
        for d in sorted(self.root.glob("intel-rapl:*")):
            if re.fullmatch(r"intel-rapl:\d+", d.name) and _read_text(d / "name").startswith("package"):
                out.append(d)
        return out

    def _read(self) -> list[int]:
        doms = self.domains()
        if not doms:
            raise SourceUnavailable(f"none in {self.root} (a virtual machine, or no driver for this CPU)")
        return [_read_int(d / "energy_uj") for d in doms]

    @property
    def where(self) -> str:
        """The counter files it reads."""
        return ", ".join(str(d / "energy_uj") for d in self.domains()) or str(self.root)

    def available(self) -> bool:
        try:
            self._read()
        except SourceUnavailable:
            return False
        return True

    def start(self) -> None:
        self._start = self._read()
        self._t_start = self._clock()
        self._last = (self._t_start, list(self._start))

    def _joules_between(self, doms: list[Path], a: list[int], b: list[int], seconds: float) -> float:
        """Joules between two readings `seconds` apart. A counter lower than before has wrapped at
        max_energy_range_uj, if that gives a power a package can draw; else it stepped back (a
        reset after suspend, a glitch), which was shown as hundreds of kJ "measured"."""
        if len(a) != len(b):
            raise SourceUnavailable("the RAPL domains changed during the measurement")
        total = 0
        for d, x, y in zip(doms, a, b, strict=True):
            if y >= x:
                total += y - x
                continue
            top = _read_int(d / "max_energy_range_uj")
            if top <= x:
                raise SourceUnavailable(
                    f"{d.name}: the counter went back and its range ({top}) is not above it"
                )
            total += top - x + y
        joules = total / 1e6
        if joules > MAX_PACKAGE_WATTS * max(seconds, 1e-3):
            raise SourceUnavailable(
                f"the RAPL counters moved by {joules:.0f} J in {seconds:.1f} s (reset or stepped back)"
            )
        return joules

    def stop(self) -> float:
        doms = self.domains()
        end = self._read()
        self._last = None
        return self._joules_between(doms, self._start, end, self._clock() - self._t_start)

    def current_watts(self) -> float | None:
        """Package power since the previous call (the first call: since start()); None before
        start(), when no time has passed, or when the counters cannot be read now."""
        if self._last is None:
            return None
        try:
            doms = self.domains()
            now, counters = self._clock(), self._read()
            t0, before = self._last
            if now <= t0:
                return None
            watts = self._joules_between(doms, before, counters, now - t0) / (now - t0)
        except SourceUnavailable:
            return None
        self._last = (now, counters)
        return watts


class SampledPowerSource:
    """Integrates a watts reading sampled every `interval` seconds on a background thread
    (trapezoids; the first and last samples are taken in start() and stop()). Any failed sample
    (e.g. the charger was plugged in) invalidates the measurement."""

    measured = True

    def __init__(
        self,
        read_watts: Callable[[], float],
        *,
        interval: float = 0.5,
        label: str = "measured: battery",
        clock: Callable[[], float] = time.monotonic,
        blocking_edges: bool = True,
        name: str = "battery",
        where: str = "",
        covers: str = "the whole computer, other programs included",
    ) -> None:
        """name, where (what read_watts reads) and covers: for the window's explanation."""
        self.read_watts = read_watts
        self.name, self.where, self.covers = name, where, covers
        self.blocking_edges = blocking_edges
        self._run = 0  # which measurement the sampler thread's readings belong to
        self._t_start = 0.0
        self.interval = interval
        self.label = label
        self._clock = clock
        self._samples: list[tuple[float, float]] = []
        self._failed: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _sample(self, run: int | None = None) -> None:
        try:
            w = float(self.read_watts())
            if not w > 0:  # 0 W (or less) on battery is a firmware's placeholder, not a measurement
                raise SourceUnavailable(f"the battery reported {w:g} W")
        except SourceUnavailable as e:
            with self._lock:
                if run is None or run == self._run:
                    self._failed = str(e)
            return
        with self._lock:
            if run is None or run == self._run:  # a late sample of an ended measurement is dropped
                self._samples.append((self._clock(), w))

    def _loop(self, run: int, stop: threading.Event, first: bool) -> None:
        if first:
            self._sample(run)
        while not stop.wait(self.interval):
            self._sample(run)

    def start(self) -> None:
        """blocking_edges: the first sample is taken here (a failing one raises at once) and the
        last in stop(). Otherwise (a slow reader: PowerShell on Windows takes ~1 s, which came before
        every reply and after it) the sampler thread takes the first at once, and stop() neither
        samples nor waits: the readings are held flat to the reply's start and end."""
        if self._thread is not None:  # started twice without a stop: one sampler, not two
            self._stop.set()
            if self.blocking_edges:
                self._thread.join()
            self._thread = None
        with self._lock:
            self._run += 1
            self._samples, self._failed = [], None
            run = self._run
        self._t_start = self._clock()
        if self.blocking_edges:
            self._sample(run)
            if self._failed is not None:
                raise SourceUnavailable(self._failed)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop,
            args=(run, self._stop, not self.blocking_edges),
            name="trit-power-sampler",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        t_end = self._clock()
        if self._thread is not None:
            if self.blocking_edges:
                self._thread.join()
            self._thread = None
        if self.blocking_edges:
            self._sample(self._run)
        with self._lock:
            self._run += 1  # what the thread still reads now is not this reply's
            if self._failed is not None:
                raise SourceUnavailable(self._failed)
            s = list(self._samples)
        if not self.blocking_edges:
            if not s:
                raise SourceUnavailable("no battery reading came during the reply")
            s = [(self._t_start, s[0][1]), *[p for p in s if p[0] <= t_end], (t_end, s[-1][1])]
        return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in itertools.pairwise(s))

    def current_watts(self) -> float | None:
        """The latest sample (taken at most `interval` seconds ago); None before start() or after
        a failed sample (the measurement is no longer valid)."""
        with self._lock:
            if self._failed is not None or not self._samples:
                return None
            return self._samples[-1][1]


def linux_battery_watts(sysfs_root: str | Path = "/sys") -> float:
    """Discharge power of the Linux batteries (/sys/class/power_supply/*/ with type Battery):
    power_now (uW), or current_now (uA) x voltage_now (uV). Raises SourceUnavailable unless a
    battery is Discharging."""
    root = Path(sysfs_root) / "class" / "power_supply"
    total, found = 0.0, False
    for d in sorted(root.glob("*")):
        if _read_text(d / "type") != "Battery" or _read_text(d / "status") != "Discharging":
            continue
        if (d / "power_now").exists():
            w = abs(_read_int(d / "power_now")) / 1e6
        elif (d / "current_now").exists() and (d / "voltage_now").exists():
            w = abs(_read_int(d / "current_now")) * _read_int(d / "voltage_now") / 1e12
        else:
            continue
        total += w
        found = True
    if not found:
        raise SourceUnavailable("no battery is discharging (on mains power, or no battery)")
    return total


def parse_ioreg(output: str) -> float:
    """Watts from `ioreg -rn AppleSmartBattery` output: |InstantAmperage| (mA, may be printed as
    an unsigned 64-bit number) x Voltage (mV). Raises SourceUnavailable when not discharging
    (ExternalConnected = Yes or amperage >= 0) or the keys are missing."""
    kv = dict(re.findall(r'"(\w+)"\s*=\s*([^\s,}]+)', output))
    if kv.get("ExternalConnected") == "Yes":
        raise SourceUnavailable("on mains power")
    raw = kv.get("InstantAmperage", kv.get("Amperage"))
    volt = kv.get("Voltage", kv.get("AppleRawBatteryVoltage"))
    if raw is None or volt is None:
        raise SourceUnavailable("ioreg printed no battery amperage/voltage")
    try:
        amp, mv = int(raw), int(volt)
    except ValueError as e:
        raise SourceUnavailable(f"unexpected ioreg values {raw!r} / {volt!r}") from e
    if amp >= 1 << 63:  # ioreg prints the signed value as unsigned 64-bit
        amp -= 1 << 64
    if amp >= 0:
        raise SourceUnavailable("the battery is not discharging")
    return -amp * mv / 1e6


def parse_wmi_battery(output: str) -> float:
    """Watts from `powershell Get-CimInstance -Namespace root/wmi BatteryStatus` output
    (DischargeRate in mW, Discharging : True). Raises SourceUnavailable otherwise."""
    total, found = 0.0, False
    for block in re.split(r"\n\s*\n", output.replace("\r\n", "\n")):
        kv = {}
        for line in block.splitlines():
            k, sep, v = line.partition(":")
            if sep:
                kv[k.strip()] = v.strip()
        if kv.get("Discharging") != "True" or kv.get("PowerOnline") == "True":
            continue
        try:
            rate = int(kv.get("DischargeRate", ""))
        except ValueError:
            continue
        if rate > 0:
            total += rate / 1e3
            found = True
    if not found:
        raise SourceUnavailable("no battery is discharging (on mains power, or no battery)")
    return total


IOREG_CMD = ("ioreg", "-rn", "AppleSmartBattery")
WMI_CMD = (
    "powershell",
    "-NoProfile",
    "-NonInteractive",
    "-Command",
    (
        "Get-CimInstance -Namespace root/wmi -ClassName BatteryStatus | "
        "Format-List Discharging,DischargeRate,PowerOnline"
    ),
)


def _run(cmd: Sequence[str]) -> str:
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise SourceUnavailable(f"{cmd[0]}: {e}") from e
    if p.returncode != 0:
        raise SourceUnavailable(f"{cmd[0]} exited with {p.returncode}: {p.stderr.strip()[:200]}")
    return p.stdout


def macos_battery_watts(run: Callable[[Sequence[str]], str] | None = None) -> float:
    return parse_ioreg((run or _run)(IOREG_CMD))


def windows_battery_watts(run: Callable[[Sequence[str]], str] | None = None) -> float:
    return parse_wmi_battery((run or _run)(WMI_CMD))


def _process_cpu_seconds() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def cpu_seconds_without(thread: threading.Thread) -> Callable[[], float]:
    """A reader of this process's CPU seconds less those of `thread`: for the window, whose own
    work is not a reply's (switching to a long conversation while a reply ran added half again to
    its estimate). All threads' where a thread's CPU clock cannot be read (Windows)."""
    try:
        clock = time.pthread_getcpuclockid(thread.ident)  # type: ignore[arg-type]
        time.clock_gettime(clock)
    except (AttributeError, OSError, TypeError, OverflowError):
        return _process_cpu_seconds

    def read() -> float:
        return max(0.0, _process_cpu_seconds() - time.clock_gettime(clock))

    return read


class CpuTimeEstimate:
    """Joules = this process's CPU seconds (user + system, all threads) x watts_per_core. Only
    Trit's own work, and only as good as the per-core figure: say "estimated"."""

    measured = False

    def __init__(
        self, watts_per_core: float = DEFAULT_WATTS_PER_CORE, cpu_seconds: Callable[[], float] | None = None
    ) -> None:
        if not watts_per_core > 0:
            raise ValueError("watts_per_core must be positive")
        self.watts_per_core = float(watts_per_core)
        self._cpu = cpu_seconds or _process_cpu_seconds
        self._start = 0.0
        self._watts = self.watts_per_core  # the figure of the reply being measured

    @property
    def label(self) -> str:
        return f"estimated: CPU time x {self.watts_per_core:g} W/core"

    @property
    def run_watts(self) -> float:
        """The watts per core of the reply last measured, as they were at its start."""
        return self._watts

    @property
    def run_label(self) -> str:
        """The label of the reply last measured (its watts per core, as they were at its start)."""
        return f"estimated: CPU time x {self._watts:g} W/core"

    def start(self) -> None:
        self._start = self._cpu()
        # a change in Settings during a reply applies from the next one (it re-priced the running one)
        self._watts = self.watts_per_core

    def stop(self) -> float:
        return max(0.0, self._cpu() - self._start) * self._watts


def detect_sources(
    *,
    sysfs_root: str | Path = "/sys",
    platform: str = sys.platform,
    run: Callable[[Sequence[str]], str] | None = None,
    interval: float = 0.5,
) -> list[EnergySource]:
    """Measured sources for this system, best first (not yet started). They are listed even when
    they cannot measure now (RAPL root-only or absent, on mains power): start() decides per reply,
    so a counter opened with chmod is used from the next reply, and an estimate can say why each
    one was not used (a RAPL counter left out at startup had the battery's reason shown instead)."""
    out: list[EnergySource] = []
    if platform.startswith("linux"):
        out.append(RaplSource(sysfs_root))
        out.append(
            SampledPowerSource(
                lambda: linux_battery_watts(sysfs_root),
                interval=interval,
                where=str(Path(sysfs_root) / "class" / "power_supply"),
            )
        )
    elif platform == "darwin":
        out.append(
            SampledPowerSource(
                lambda: macos_battery_watts(run), interval=max(interval, 1.0), where=" ".join(IOREG_CMD)
            )
        )
    elif platform == "win32":
        # each sample starts PowerShell (~0.5 s of CPU): sample rarely so the meter does not
        # become a noticeable part of what it measures
        out.append(
            SampledPowerSource(
                lambda: windows_battery_watts(run),
                interval=max(interval, 5.0),
                blocking_edges=False,
                where="WMI BatteryStatus",
            )
        )
    return out


def _source_name(src: EnergySource) -> str:
    return str(getattr(src, "name", "") or src.label.removeprefix("measured: "))


def source_problem(src: EnergySource, e: SourceUnavailable) -> SourceProblem:
    return SourceProblem(_source_name(src), str(e), getattr(e, "fix", ""))


def explain_energy(
    measured_by: EnergySource | None, problems: Sequence[SourceProblem], watts_per_core: float
) -> str:
    """Where a reading came from, for the readout's tooltip: the measured source with the files it
    read and what it covers; or, for an estimate, each source tried, why it could not be used and
    what the user can do about it, one per line."""
    if measured_by is not None:
        where = str(getattr(measured_by, "where", "") or "")
        covers = str(getattr(measured_by, "covers", "") or "")
        return (
            f"Measured by {_source_name(measured_by)}"
            + (f" ({where})" if where else "")
            + (f": {covers}" if covers else "")
            + "."
        )
    lines = [f"Estimated: Trit's CPU time x {watts_per_core:g} W/core (Watts per core in Settings)."]
    if not problems:
        lines.append("Trit has no power meter for this system.")
    for p in problems:
        lines.append(f"{p.source[:1].upper()}{p.source[1:]}: {p.reason}.")
        if p.fix:
            lines.append(p.fix)
    return "\n".join(lines)


class EnergyMeter:
    """start() ... stop() -> EnergyReading around one reply. Runs the CPU-time estimate beside the
    first measured source that starts, and reports that source if it stayed valid, else the
    estimate — one or the other, never a mix."""

    def __init__(
        self,
        sources: Sequence[EnergySource] | None = None,
        *,
        estimate: CpuTimeEstimate | None = None,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """sources=None: detect_sources() for this machine; [] = estimate only."""
        self.sources = list(detect_sources() if sources is None else sources)
        self.estimate = estimate or CpuTimeEstimate(watts_per_core)
        self._clock = clock
        self._active: EnergySource | None = None
        self._t0 = 0.0
        self.problems: list[SourceProblem] = []  # why each source tried for the last reading failed
        self.explanation = ""  # explain_energy() of the last reading

    @property
    def last_problem(self) -> str:
        """Why the last reading fell back to the estimate, one "source: reason" per source tried."""
        return "; ".join(f"{p.source}: {p.reason}" for p in self.problems)

    def start(self) -> None:
        self._active = None
        self.problems = []
        for s in self.sources:
            try:
                s.start()
            except SourceUnavailable as e:
                self.problems.append(source_problem(s, e))
                continue
            self._active = s
            break
        self.estimate.start()
        self._t0 = self._clock()

    def current_watts(self) -> float | None:
        """Power right now from the measured source running between start() and stop(), for a
        live chart; None when nothing measured is running (the CPU-time estimate is only summed
        per reply, never shown as live power) or the source cannot say now. Call it from the
        thread that called start()."""
        src = self._active
        if src is None or not src.measured:
            return None
        read = getattr(src, "current_watts", None)
        if read is None:
            return None
        try:
            w = read()
        except SourceUnavailable:
            return None
        return float(w) if w is not None else None

    def stop(self) -> EnergyReading:
        seconds = self._clock() - self._t0
        est = self.estimate.stop()
        src, self._active = self._active, None
        if src is not None:
            try:
                reading = EnergyReading(src.stop(), seconds, src.label, True)
            except SourceUnavailable as e:
                self.problems.append(source_problem(src, e))
            else:
                self.explanation = explain_energy(src, [], self.estimate.run_watts)
                return reading
        self.explanation = explain_energy(None, self.problems, self.estimate.run_watts)
        return EnergyReading(est, seconds, self.estimate.run_label, False)


@dataclass(frozen=True)
class MemoryReading:
    rss_bytes: int  # this process's resident set
    model_file_bytes: int  # the model file (or folder) on disk; 0 if unknown
    kv_bytes: int  # the session's KV cache; 0 if no session

    def text(self) -> str:
        """ "RAM 412 MB · model 1.2 GB · KV cache 150 MB" """
        parts = [f"RAM {format_bytes(self.rss_bytes)}"]
        if self.model_file_bytes:
            parts.append(f"model {format_bytes(self.model_file_bytes)}")
        if self.kv_bytes:
            parts.append(f"KV cache {format_bytes(self.kv_bytes)}")
        return " · ".join(parts)


def process_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def path_bytes(path: str | Path | None) -> int:
    """Size of a file, or of every file in a folder; 0 when missing."""
    if path is None:
        return 0
    p = Path(path)
    try:
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return p.stat().st_size
    except OSError:
        return 0


def memory_reading(model_path: str | Path | None = None, session: Any = None) -> MemoryReading:
    """session: an engine Session (its kv_bytes is read) or None."""
    kv = int(getattr(session, "kv_bytes", 0) or 0) if session is not None else 0
    return MemoryReading(process_rss(), path_bytes(model_path), kv)


@dataclass(frozen=True)
class ReplyRecord:
    """Per-reply numbers, stored as the message's stats JSON (to_dict / from_dict). Energy covers
    the whole reply (prompt + decode); joules_per_token divides it by the generated tokens."""

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
    seconds: float = 0.0  # wall time the energy reading covers
    model: str = ""  # the model file that wrote the reply (a conversation may change models)
    energy_note: str = ""  # where the energy figure came from, or why it is estimated (explain_energy)
    left_out: int = 0  # the oldest messages the reply was written without (the context was full)

    def to_dict(self) -> dict[str, Any]:
        """The fields plus "summary" (the text the chat shows under a reply)."""
        return {**asdict(self), "summary": self.summary()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReplyRecord:
        """Unknown keys are ignored; raises ValueError when a required field is missing."""
        names = [f for f in cls.__dataclass_fields__]
        try:
            return cls(**{k: d[k] for k in names if k in d})
        except TypeError as e:
            raise ValueError(f"not a reply record: {e}") from e

    def summary(self) -> str:
        """The reply's readout_line, as the window shows it under the reply."""
        return readout_line(asdict(self))


def readout_line(stats: dict[str, Any]) -> str:
    """The line under a reply (the window, the export): TTFT, prompt and decode speed (with the
    prompt tokens the cache served), tokens, why a reply was cut (the context, Max tokens), energy
    with its source; a reply stopped before its first token says so instead of a TTFT."""
    if not stats:
        return ""
    parts = []
    tokens = int(stats.get("tokens", 0) or 0)
    if tokens and "ttft_ms" in stats:  # no first token, no time to it
        parts.append(f"TTFT {float(stats['ttft_ms']) / 1e3:.2f} s")
    if stats.get("prompt_tokens"):
        cached = int(stats.get("cached_tokens", 0) or 0)  # the speed is of the tokens that ran
        parts.append(
            f"prompt {float(stats.get('prompt_tps', 0)):.0f} tok/s"
            + (f" ({cached} cached)" if cached else "")
        )
    elif not tokens and stats.get("stop_reason") == "cancelled":
        parts.append("stopped while reading the prompt")
    if tokens > 1 and "decode_tps" in stats:
        parts.append(f"decode {float(stats['decode_tps']):.1f} tok/s")
    if "tokens" in stats:
        parts.append(count_noun(tokens, "token"))
    if stats.get("stop_reason") == "context":
        parts.append("cut short: the context is full")
    elif stats.get("stop_reason") == "length":
        parts.append("cut at Max tokens")
    j = stats.get("joules")
    if j is not None:
        parts.append(format_energy(float(j)))  # "1.53 kJ", not "1.53e+03 J"
        jpt = stats.get("joules_per_token")
        if jpt is not None:
            parts.append(f"{format_energy(float(jpt))}/token")
        if stats.get("energy_label"):
            parts.append(str(stats["energy_label"]))
    return " · ".join(parts)


def reply_record(stats: Any, energy: EnergyReading | None) -> ReplyRecord:
    """Combines engine Stats (duck-typed: prompt_tokens, tokens_generated, ttft_ms, prompt_tps,
    decode_tps, stop_reason, cached_tokens) with one energy reading."""
    n = int(stats.tokens_generated)
    joules = energy.joules if energy is not None else None
    return ReplyRecord(
        ttft_ms=float(stats.ttft_ms),
        prompt_tokens=int(stats.prompt_tokens),
        prompt_tps=float(stats.prompt_tps),
        tokens=n,
        decode_tps=float(stats.decode_tps),
        joules=joules,
        joules_per_token=joules / n if joules is not None and n > 0 else None,
        energy_label=energy.source_label if energy is not None else "",
        energy_measured=energy.measured if energy is not None else False,
        stop_reason=str(getattr(stats, "stop_reason", "")),
        cached_tokens=int(getattr(stats, "cached_tokens", 0)),
        seconds=energy.seconds if energy is not None else 0.0,
    )


class ReplyMeter:
    """Wraps one reply: start() before Session.chat, finish(gen.stats) after it (on the same
    thread as the generation: the estimate reads this process's CPU time)."""

    def __init__(self, energy: EnergyMeter | None = None) -> None:
        self.energy = energy
        self._running = False

    def start(self) -> None:
        if self.energy is not None:
            self.energy.start()
        self._running = True

    def finish(self, stats: Any) -> ReplyRecord:
        reading = self.energy.stop() if self.energy is not None and self._running else None
        self._running = False
        rec = reply_record(stats, reading)
        if reading is not None and self.energy is not None:
            rec = replace(rec, energy_note=self.energy.explanation)
        return rec

    def cancel(self) -> None:
        """Stop measuring a reply that failed (no record): a battery or WMI sampler must not run on."""
        if self.energy is not None and self._running:
            self.energy.stop()
        self._running = False


__all__ = [
    "DEFAULT_WATTS_PER_CORE",
    "IOREG_CMD",
    "WMI_CMD",
    "CpuTimeEstimate",
    "EnergyMeter",
    "EnergyReading",
    "EnergySource",
    "MemoryReading",
    "RaplSource",
    "ReplyMeter",
    "ReplyRecord",
    "SampledPowerSource",
    "SourceProblem",
    "SourceUnavailable",
    "detect_sources",
    "explain_energy",
    "linux_battery_watts",
    "macos_battery_watts",
    "memory_reading",
    "parse_ioreg",
    "parse_wmi_battery",
    "path_bytes",
    "process_rss",
    "reply_record",
    "source_problem",
    "windows_battery_watts",
]
