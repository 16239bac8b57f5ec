"""Energy sources on fake sysfs trees and captured command output, the CPU-time estimate, the
meter's never-mix rule, memory readouts and per-reply records."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest
from trit.app.core.meters import (
    CpuTimeEstimate,
    EnergyMeter,
    EnergyReading,
    MemoryReading,
    RaplSource,
    ReplyMeter,
    ReplyRecord,
    SampledPowerSource,
    SourceUnavailable,
    detect_sources,
    linux_battery_watts,
    macos_battery_watts,
    memory_reading,
    parse_ioreg,
    parse_wmi_battery,
    path_bytes,
    process_rss,
    reply_record,
    windows_battery_watts,
)
from trit.app.core.units import count_noun, format_energy


def write(root: Path, rel: str, value: object) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"{value}\n")
    return p


def rapl_tree(root: Path, energy: dict[str, int], max_range: int = 262143328850) -> None:
    names = {
        "intel-rapl:0": "package-0",
        "intel-rapl:1": "package-1",
        "intel-rapl:0:0": "core",
        "intel-rapl:2": "psys",
    }
    for dom, uj in energy.items():
        write(root, f"class/powercap/{dom}/name", names[dom])
        write(root, f"class/powercap/{dom}/energy_uj", uj)
        write(root, f"class/powercap/{dom}/max_energy_range_uj", max_range)


# -- RAPL --------------------------------------------------------------------------------------------
def test_rapl_sums_packages_only(tmp_path: Path) -> None:
    rapl_tree(
        tmp_path,
        {"intel-rapl:0": 1_000_000, "intel-rapl:1": 5_000_000, "intel-rapl:0:0": 7, "intel-rapl:2": 9},
    )
    t = [0.0]  # a second passes: 3.5 J within the few ms of real time was "reset or stepped back"
    src = RaplSource(tmp_path, clock=lambda: t[0])
    assert src.available() and [d.name for d in src.domains()] == ["intel-rapl:0", "intel-rapl:1"]
    src.start()
    rapl_tree(
        tmp_path,
        {"intel-rapl:0": 3_500_000, "intel-rapl:1": 6_000_000, "intel-rapl:0:0": 99, "intel-rapl:2": 10**9},
    )
    t[0] = 1.0
    assert src.stop() == pytest.approx(3.5)  # 2.5 J + 1.0 J; core sub-domain and psys ignored
    assert src.label == "measured: RAPL package" and src.measured


def test_rapl_wraparound(tmp_path: Path) -> None:
    rapl_tree(tmp_path, {"intel-rapl:0": 999_000_000}, max_range=1_000_000_000)
    t = [0.0]
    src = RaplSource(tmp_path, clock=lambda: t[0])
    src.start()
    rapl_tree(tmp_path, {"intel-rapl:0": 4_000_000}, max_range=1_000_000_000)
    t[0] = 2.0
    assert src.stop() == pytest.approx(5.0)  # 1 J to the wrap + 4 J after it


@pytest.mark.parametrize(
    "before, after, top, why",
    [
        (500_000_000, 499_999_000, 262_143_328_850, "moved by 262143 J in 0.8 s"),  # stepped back 1 mJ
        (200_000_000_000, 1_000, 262_143_328_850, "moved by"),  # reset (suspend and resume)
        (5_000_000, 1_000_000, 0, "range \\(0\\) is not above it"),  # a bad range file
    ],
)
def test_a_rapl_counter_that_steps_back_is_not_a_wrap(
    tmp_path: Path, before: int, after: int, top: int, why: str
) -> None:
    """A counter lower than before was always taken as a wrap: a glitch of 1 mJ back showed as
    "262 kJ measured", a range file reading 0 as negative joules. Such a reply is estimated."""
    rapl_tree(tmp_path, {"intel-rapl:0": before}, max_range=top)
    t = [0.0]
    cpu = [0.0]
    src = RaplSource(tmp_path, clock=lambda: t[0])
    m = EnergyMeter([src], estimate=CpuTimeEstimate(5.0, cpu_seconds=lambda: cpu[0]), clock=lambda: t[0])
    m.start()
    rapl_tree(tmp_path, {"intel-rapl:0": after}, max_range=top)
    t[0], cpu[0] = 0.8, 0.5
    assert m.current_watts() is None  # the live figure is refused too
    r = m.stop()
    assert not r.measured and r.joules == pytest.approx(2.5) and r.joules >= 0
    assert re.search(why, m.last_problem), m.last_problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_rapl_root_only_is_unavailable(tmp_path: Path) -> None:
    rapl_tree(tmp_path, {"intel-rapl:0": 1})
    (tmp_path / "class/powercap/intel-rapl:0/energy_uj").chmod(0)
    assert not RaplSource(tmp_path).available()


def test_rapl_permission_error_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rapl_tree(tmp_path, {"intel-rapl:0": 1})
    real = Path.read_text

    def deny(self: Path, *a: object, **k: object) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", deny)
    src = RaplSource(tmp_path)
    assert not src.available()
    with pytest.raises(SourceUnavailable, match="readable by root only"):
        src.start()


def test_no_rapl(tmp_path: Path) -> None:
    assert not RaplSource(tmp_path).available()
    with pytest.raises(SourceUnavailable):
        RaplSource(tmp_path).start()


# -- Linux battery -------------------------------------------------------------------------------------
def battery(root: Path, name: str, status: str, **values: int) -> None:
    write(root, f"class/power_supply/{name}/type", "Battery")
    write(root, f"class/power_supply/{name}/status", status)
    for k, v in values.items():
        write(root, f"class/power_supply/{name}/{k}", v)


def test_linux_battery_power_now(tmp_path: Path) -> None:
    battery(tmp_path, "BAT0", "Discharging", power_now=12_500_000)
    write(tmp_path, "class/power_supply/AC/type", "Mains")
    write(tmp_path, "class/power_supply/AC/online", 0)
    assert linux_battery_watts(tmp_path) == pytest.approx(12.5)


def test_linux_battery_current_times_voltage(tmp_path: Path) -> None:
    battery(tmp_path, "BAT1", "Discharging", current_now=1_000_000, voltage_now=11_400_000)
    assert linux_battery_watts(tmp_path) == pytest.approx(11.4)


def test_linux_battery_not_discharging(tmp_path: Path) -> None:
    battery(tmp_path, "BAT0", "Charging", power_now=20_000_000)
    with pytest.raises(SourceUnavailable, match="discharging"):
        linux_battery_watts(tmp_path)
    with pytest.raises(SourceUnavailable):
        linux_battery_watts(tmp_path / "nothing")


def test_sampled_source_integrates_and_invalidates() -> None:
    t = [0.0]
    watts = [10.0]
    src = SampledPowerSource(lambda: watts[0], interval=3600, clock=lambda: t[0])
    src.start()
    t[0] = 2.0
    watts[0] = 20.0
    assert src.stop() == pytest.approx(30.0)  # trapezoid: (10 + 20) / 2 * 2 s

    def flaky() -> float:
        if t[0] > 2:
            raise SourceUnavailable("charger plugged in")
        return 10.0

    src = SampledPowerSource(flaky, interval=3600, clock=lambda: t[0])
    t[0] = 0.0
    src.start()
    t[0] = 5.0
    with pytest.raises(SourceUnavailable, match="charger"):
        src.stop()


def test_sampled_source_samples_in_background() -> None:
    calls = []

    def read() -> float:
        calls.append(1)
        return 5.0

    src = SampledPowerSource(read, interval=0.01)
    src.start()
    import time

    time.sleep(0.2)
    j = src.stop()
    assert len(calls) > 3 and j == pytest.approx(5.0 * 0.2, rel=0.5)


def test_a_failed_reply_stops_the_sampler() -> None:
    """A reply that failed went without ReplyMeter.finish: a battery sampler (PowerShell every 5 s
    on Windows) ran on until a later reply stopped it."""
    src = SampledPowerSource(lambda: 5.0, interval=0.01)
    meter = ReplyMeter(EnergyMeter([src]))
    meter.start()
    assert src._thread is not None and src._thread.is_alive()
    meter.cancel()
    assert src._thread is None
    meter.cancel()  # twice, or after finish: nothing to stop
    src.start()
    first = src._thread
    src.start()  # started twice without a stop: one sampler
    assert first is not None and not first.is_alive() and src._thread is not first
    src.stop()


# -- macOS / Windows parsers -----------------------------------------------------------------------------
IOREG_DISCHARGING = """
+-o AppleSmartBattery  <class AppleSmartBattery, id 0x100000285, registered, matched, active, busy 0 (0 ms), retain 8>
    {
      "ExternalConnected" = No
      "IsCharging" = No
      "Voltage" = 12453
      "Amperage" = 18446744073709550297
      "InstantAmperage" = 18446744073709550116
      "CurrentCapacity" = 4102
      "BatteryData" = {"Voltage"=12450,"StateOfCharge"=72}
    }
"""

IOREG_CHARGING = IOREG_DISCHARGING.replace('"ExternalConnected" = No', '"ExternalConnected" = Yes')


def test_parse_ioreg() -> None:
    # InstantAmperage 18446744073709550116 = -1500 mA as unsigned 64-bit; 1.5 A x 12.453 V
    assert parse_ioreg(IOREG_DISCHARGING) == pytest.approx(1.5 * 12.453)
    with pytest.raises(SourceUnavailable, match="mains"):
        parse_ioreg(IOREG_CHARGING)
    with pytest.raises(SourceUnavailable):
        parse_ioreg("")
    positive = IOREG_DISCHARGING.replace("18446744073709550116", "800")
    with pytest.raises(SourceUnavailable, match="not discharging"):
        parse_ioreg(positive)
    assert macos_battery_watts(run=lambda cmd: IOREG_DISCHARGING) == pytest.approx(18.6795)


WMI_DISCHARGING = (
    "\r\n\r\nDischarging   : True\r\nDischargeRate : 9876\r\nPowerOnline   : False\r\n\r\n"
    "Discharging   : True\r\nDischargeRate : 1000\r\nPowerOnline   : False\r\n\r\n\r\n"
)
WMI_AC = "\r\nDischarging   : False\r\nDischargeRate : 0\r\nPowerOnline   : True\r\n\r\n"


def test_parse_wmi() -> None:
    assert parse_wmi_battery(WMI_DISCHARGING) == pytest.approx(10.876)  # two batteries, mW
    with pytest.raises(SourceUnavailable):
        parse_wmi_battery(WMI_AC)
    with pytest.raises(SourceUnavailable):
        parse_wmi_battery("Get-CimInstance : Not supported\r\n")
    seen: list[list[str]] = []
    assert windows_battery_watts(run=lambda cmd: seen.append(list(cmd)) or WMI_DISCHARGING) > 10
    assert seen[0][0] == "powershell" and "BatteryStatus" in seen[0][-1]


def test_detect_sources(tmp_path: Path) -> None:
    rapl_tree(tmp_path, {"intel-rapl:0": 1})
    labels = [s.label for s in detect_sources(sysfs_root=tmp_path, platform="linux")]
    assert labels == ["measured: RAPL package", "measured: battery"]
    # without counters too: start() says why per reply, and the estimate shows it
    assert [s.label for s in detect_sources(sysfs_root=tmp_path / "x", platform="linux")] == labels
    assert len(detect_sources(platform="darwin", run=lambda c: IOREG_DISCHARGING)) == 1
    assert len(detect_sources(platform="win32", run=lambda c: WMI_DISCHARGING)) == 1
    assert detect_sources(platform="sunos5") == []


# -- estimate and the meter ------------------------------------------------------------------------------
def test_cpu_time_estimate() -> None:
    cpu = [10.0]
    est = CpuTimeEstimate(5.0, cpu_seconds=lambda: cpu[0])
    est.start()
    cpu[0] = 12.5  # 2.5 busy core-seconds
    assert est.stop() == pytest.approx(12.5)
    assert est.label == "estimated: CPU time x 5 W/core" and not est.measured
    assert CpuTimeEstimate(7.5).label == "estimated: CPU time x 7.5 W/core"
    with pytest.raises(ValueError):
        CpuTimeEstimate(0)


def test_cpu_time_estimate_real_process() -> None:
    est = CpuTimeEstimate()
    est.start()
    x = 0
    for i in range(2_000_000):
        x += i * i
    assert est.stop() > 0


def test_meter_prefers_measured_never_mixes(tmp_path: Path) -> None:
    rapl_tree(tmp_path, {"intel-rapl:0": 0})
    cpu = [0.0]
    t = [0.0]
    est = CpuTimeEstimate(5.0, cpu_seconds=lambda: cpu[0])
    m = EnergyMeter([RaplSource(tmp_path, clock=lambda: t[0])], estimate=est, clock=lambda: t[0])
    m.start()
    rapl_tree(tmp_path, {"intel-rapl:0": 7_000_000})
    cpu[0], t[0] = 1.0, 2.0
    r = m.stop()
    assert r == EnergyReading(7.0, 2.0, "measured: RAPL package", True)
    assert r.watts == pytest.approx(3.5)


def test_meter_falls_back_to_the_estimate_whole(tmp_path: Path) -> None:
    cpu = [0.0]
    est = CpuTimeEstimate(5.0, cpu_seconds=lambda: cpu[0])
    state = {"ok": True}

    def read() -> float:
        if not state["ok"]:
            raise SourceUnavailable("charger plugged in")
        return 30.0

    bat = SampledPowerSource(read, interval=3600)
    m = EnergyMeter([RaplSource(tmp_path), bat], estimate=est)  # no RAPL here
    m.start()
    cpu[0] = 2.0
    state["ok"] = False  # the battery reading became invalid mid-reply
    r = m.stop()
    assert r.joules == pytest.approx(10.0) and not r.measured
    assert r.source_label == "estimated: CPU time x 5 W/core"
    assert "charger" in m.last_problem
    m2 = EnergyMeter([], estimate=est)
    m2.start()
    assert not m2.stop().measured


def test_current_watts_from_rapl_counters(tmp_path: Path) -> None:
    """Live power for the chart: the package counters' difference over the time since the last
    reading (the first: since start()), wraparound included; None outside start()..stop()."""
    rapl_tree(tmp_path, {"intel-rapl:0": 0, "intel-rapl:1": 0}, max_range=1_000_000_000)
    t = [10.0]
    cpu = [0.0]
    est = CpuTimeEstimate(5.0, cpu_seconds=lambda: cpu[0])
    m = EnergyMeter([RaplSource(tmp_path, clock=lambda: t[0])], estimate=est, clock=lambda: t[0])
    assert m.current_watts() is None  # not started
    m.start()
    assert m.current_watts() is None  # no time has passed
    rapl_tree(tmp_path, {"intel-rapl:0": 6_000_000, "intel-rapl:1": 2_000_000}, max_range=1_000_000_000)
    t[0] = 12.0
    assert m.current_watts() == pytest.approx(4.0)  # 8 J over 2 s, both packages
    rapl_tree(tmp_path, {"intel-rapl:0": 999_000_000, "intel-rapl:1": 2_000_000}, max_range=1_000_000_000)
    t[0] = 13.0
    assert m.current_watts() == pytest.approx(993.0)  # since the previous reading only
    rapl_tree(tmp_path, {"intel-rapl:0": 1_000_000, "intel-rapl:1": 2_500_000}, max_range=1_000_000_000)
    t[0] = 14.0
    assert m.current_watts() == pytest.approx(2.5)  # 1 J to the wrap + 1 J after it + 0.5 J
    # the counters became unreadable mid-reply: no live figure, no exception
    (tmp_path / "class/powercap/intel-rapl:1/energy_uj").unlink()
    t[0] = 15.0
    assert m.current_watts() is None
    rapl_tree(tmp_path, {"intel-rapl:0": 2_000_000, "intel-rapl:1": 2_500_000}, max_range=1_000_000_000)
    r = m.stop()
    # the reply's total still comes from start() and stop() only (4.5 J: it sees no wrap between
    # them, as documented); live readings do not move its baseline
    assert r.measured and r.joules == pytest.approx(4.5)
    assert m.current_watts() is None  # stopped


def test_current_watts_from_the_latest_battery_sample() -> None:
    t = [0.0]
    watts = [12.0]

    def read() -> float:
        if watts[0] < 0:
            raise SourceUnavailable("charger plugged in")
        return watts[0]

    bat = SampledPowerSource(read, interval=3600, clock=lambda: t[0])
    m = EnergyMeter([bat], estimate=CpuTimeEstimate(5.0, cpu_seconds=lambda: 0.0))
    m.start()
    assert m.current_watts() == pytest.approx(12.0)  # the sample start() took
    watts[0], t[0] = 18.0, 1.0
    bat._sample()  # what the background thread does every `interval` seconds
    assert m.current_watts() == pytest.approx(18.0)
    watts[0] = -1.0
    bat._sample()  # a failed sample invalidates the measurement: no live figure from it
    assert m.current_watts() is None
    assert not m.stop().measured


def test_current_watts_is_none_when_only_estimated(tmp_path: Path) -> None:
    cpu = [0.0]
    m = EnergyMeter([RaplSource(tmp_path)], estimate=CpuTimeEstimate(5.0, cpu_seconds=lambda: cpu[0]))
    m.start()  # no RAPL here: the reply is estimated
    cpu[0] = 3.0
    assert m.current_watts() is None  # an estimate is never shown as live power
    assert not m.stop().measured

    class OldSource:  # a source without current_watts (the method is optional)
        label = "measured: other"
        measured = True

        def start(self) -> None:
            pass

        def stop(self) -> float:
            return 1.0

    m2 = EnergyMeter([OldSource()], estimate=CpuTimeEstimate(5.0, cpu_seconds=lambda: 0.0))
    m2.start()
    assert m2.current_watts() is None
    assert m2.stop().measured


# -- memory and reply records -----------------------------------------------------------------------------
def test_memory(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x" * 1234)
    d = tmp_path / "hf"
    d.mkdir()
    (d / "a").write_bytes(b"x" * 10)
    (d / "b").write_bytes(b"x" * 20)
    assert (
        path_bytes(f) == 1234
        and path_bytes(d) == 30
        and path_bytes(tmp_path / "no") == 0
        and path_bytes(None) == 0
    )
    assert process_rss() > 10_000_000

    class FakeSession:
        kv_bytes = 150_000_000

    r = memory_reading(f, FakeSession())
    assert r.model_file_bytes == 1234 and r.kv_bytes == 150_000_000 and r.rss_bytes > 0
    assert (
        MemoryReading(412_000_000, 1_200_000_000, 150_000_000).text()
        == "RAM 412 MB · model 1.2 GB · KV cache 150 MB"
    )
    assert memory_reading().text().startswith("RAM ")


class FakeStats:
    prompt_tokens = 40
    prompt_ms = 400.0
    tokens_generated = 101
    decode_ms = 4000.0
    ttft_ms = 410.0
    cached_tokens = 12
    stop_reason = "stop"
    prompt_tps = 100.0
    decode_tps = 25.0


def test_reply_record_and_meter() -> None:
    rec = reply_record(FakeStats(), EnergyReading(50.5, 4.4, "estimated: CPU time x 5 W/core", False))
    assert rec.joules_per_token == pytest.approx(0.5) and rec.tokens == 101 and rec.decode_tps == 25.0
    assert rec.summary() == (
        "TTFT 0.41 s · prompt 100 tok/s (12 cached) · decode 25.0 tok/s · 101 tokens · 50.5 J"
        " · 0.5 J/token · estimated: CPU time x 5 W/core"
    )
    d = rec.to_dict()
    assert d["summary"] == rec.summary() and d["energy_measured"] is False
    assert ReplyRecord.from_dict(d) == rec
    with pytest.raises(ValueError):
        ReplyRecord.from_dict({"ttft_ms": 1})
    none = reply_record(FakeStats(), None)
    assert none.joules is None and none.joules_per_token is None and "J" not in none.summary()

    cpu = [0.0]
    meter = ReplyMeter(EnergyMeter([], estimate=CpuTimeEstimate(5.0, cpu_seconds=lambda: cpu[0])))
    meter.start()
    cpu[0] = 1.0
    r = meter.finish(FakeStats())
    assert r.joules == pytest.approx(5.0) and r.energy_label.startswith("estimated")


@pytest.mark.parametrize(
    ("joules", "three", "two"),
    [
        (0.0, "0 J", "0 J"),
        (0.36, "0.36 J", "0.36 J"),
        (2.93, "2.93 J", "2.9 J"),
        (240.0, "240 J", "240 J"),
        (999.7, "1 kJ", "1 kJ"),  # rounded before the unit is picked
        (1534.0, "1.53 kJ", "1.5 kJ"),
        (123_456.0, "123 kJ", "120 kJ"),
        (1.5e6, "1.5 MJ", "1.5 MJ"),
        (0.004, "4 mJ", "4 mJ"),
        (2.5e-5, "0.025 mJ", "0.025 mJ"),
        (4e-7, "0.4 µJ", "0.4 µJ"),  # was "0.0004 mJ"
        (1e-9, "1 nJ", "1 nJ"),  # was "0 mJ": not zero
    ],
)
def test_energy_is_written_for_people(joules: float, three: str, two: str) -> None:
    # was "1.5e+03 J" and "2.4e+02 J/token"
    assert format_energy(joules) == three and format_energy(joules, 2) == two
    assert "e" not in format_energy(joules * 1e3) and "e" not in format_energy(joules / 1e3)


def test_summary_of_a_long_reply_and_of_a_one_token_reply() -> None:
    # the line the window shows under the reply, which the export writes too
    long = ReplyRecord(900, 40, 50, 512, 9, 1500.0, None, "measured: RAPL package", True)
    assert long.summary() == (
        "TTFT 0.90 s · prompt 50 tok/s · decode 9.0 tok/s · 512 tokens · 1.5 kJ · measured: RAPL package"
    )
    one = ReplyRecord(900, 3000, 50, 1, 9, 240.0, 240.0, "estimated: CPU time x 5 W/core", False)
    assert one.summary() == (
        "TTFT 0.90 s · prompt 50 tok/s · 1 token · 240 J · 240 J/token · estimated: CPU time x 5 W/core"
    )
    # stopped before the first token: no "TTFT 0.00 s"
    none = ReplyRecord(
        0, 0, 0, 0, 0, 0.25, None, "estimated: CPU time x 5 W/core", False, stop_reason="cancelled"
    )
    assert (
        none.summary()
        == "stopped while reading the prompt · 0 tokens · 0.25 J · estimated: CPU time x 5 W/core"
    )
    assert count_noun(0, "token") == "0 tokens" and count_noun(1, "token") == "1 token"
    # a reply cut by its Max tokens says so (it read like one that ended), and the prompt speed
    # of a follow-up names the tokens the cache served (62 tok/s of 1 new token looked slow)
    cut = ReplyRecord(300, 1, 62, 256, 20, None, None, "", False, stop_reason="length", cached_tokens=34)
    assert (
        cut.summary()
        == "TTFT 0.30 s · prompt 62 tok/s (34 cached) · decode 20.0 tok/s · 256 tokens · cut at Max tokens"
    )


def test_reply_record_from_engine_stats() -> None:
    from trit.engine.model import Stats

    s = Stats(prompt_tokens=10, prompt_ms=100.0, tokens_generated=11, decode_ms=500.0, ttft_ms=120.0)
    rec = reply_record(s, EnergyReading(2.2, 0.6, "measured: RAPL package", True))
    assert rec.prompt_tps == pytest.approx(100.0) and rec.decode_tps == pytest.approx(20.0)
    assert rec.joules_per_token == pytest.approx(0.2) and rec.energy_measured


def test_a_battery_reading_of_zero_watts_is_not_a_measurement() -> None:
    """Some firmware reports power_now 0 while discharging: the reply read "0 J · measured"."""
    src = SampledPowerSource(lambda: 0.0, interval=3600)
    m = EnergyMeter([src], estimate=CpuTimeEstimate(5.0, cpu_seconds=lambda: 0.0))
    m.start()
    r = m.stop()
    assert not r.measured and "0 W" in m.last_problem


def test_a_slow_battery_reader_holds_up_neither_the_start_nor_the_end_of_a_reply() -> None:
    """Windows reads the battery through PowerShell (~1 s): start() and stop() each waited for a
    sample, before and after every reply, and the energy ran to the last sample's time."""
    import threading
    import time

    release = threading.Event()
    calls: list[float] = []

    def slow() -> float:
        calls.append(time.monotonic())
        release.wait(2.0)
        return 15.0

    src = SampledPowerSource(slow, interval=3600, blocking_edges=False)
    t0 = time.monotonic()
    src.start()
    assert time.monotonic() - t0 < 0.2  # the first sample is the thread's
    release.set()
    deadline = time.monotonic() + 5
    while src.current_watts() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    release.clear()
    t1 = time.monotonic()
    joules = src.stop()
    assert time.monotonic() - t1 < 0.2
    seconds = t1 - t0
    assert joules == pytest.approx(15.0 * seconds, rel=0.15)  # held flat over the reply, no longer
    # no sample came during a reply (a very short one): unavailable, so the estimate is used
    release.clear()
    src.start()
    with pytest.raises(SourceUnavailable, match="no battery reading came during the reply"):
        src.stop()
    release.set()


def test_a_watts_per_core_change_during_a_reply_applies_from_the_next_one() -> None:
    cpu = [0.0]
    est = CpuTimeEstimate(5.0, cpu_seconds=lambda: cpu[0])
    est.start()
    est.watts_per_core = 10.0  # Settings changed while the reply ran
    cpu[0] = 2.0
    assert est.stop() == pytest.approx(10.0) and est.run_label == "estimated: CPU time x 5 W/core"
    assert est.label == "estimated: CPU time x 10 W/core"  # what the next reply uses
    est.start()
    cpu[0] = 3.0
    assert est.stop() == pytest.approx(10.0) and est.run_label == "estimated: CPU time x 10 W/core"


# -- why a reading is measured or estimated ----------------------------------------------------------------
@pytest.fixture
def deny_energy_uj(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """RAPL's energy_uj as Linux keeps it, readable by root only (the tests may run as root, who
    reads any file). Set ["deny"] = False to open it."""
    state = {"deny": True}
    real = Path.read_text

    def read_text(self: Path, *a: object, **k: object) -> str:
        if self.name == "energy_uj" and state["deny"]:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)
    return state


def test_an_estimate_says_which_sources_failed_why_and_what_to_do(
    tmp_path: Path, deny_energy_uj: dict[str, bool]
) -> None:
    """The window said "estimated" but not why; a root-only RAPL counter was left out at startup,
    so the only reason left was the battery's."""
    rapl_tree(tmp_path, {"intel-rapl:0": 1})
    cpu = [0.0]
    m = EnergyMeter(
        detect_sources(sysfs_root=tmp_path, platform="linux"),
        estimate=CpuTimeEstimate(7.5, cpu_seconds=lambda: cpu[0]),
    )
    meter = ReplyMeter(m)
    meter.start()
    cpu[0] = 1.0
    rec = meter.finish(FakeStats())
    counter = tmp_path / "class/powercap/intel-rapl:0/energy_uj"
    assert not rec.energy_measured
    assert (
        rec.energy_note
        == m.explanation
        == (
            "Estimated: Trit's CPU time x 7.5 W/core (Watts per core in Settings).\n"
            f"RAPL package counter: {counter} is readable by root only.\n"
            f"To measure: sudo chmod o+r {counter} (until the next boot; a udev rule keeps it).\n"
            "Only on a computer you alone use: power readings can leak other programs' secrets.\n"
            "Battery: no battery is discharging (on mains power, or no battery)."
        )
    )
    assert ReplyRecord.from_dict(rec.to_dict()) == rec
    assert m.last_problem.startswith(f"RAPL package counter: {counter} is readable by root only; battery: ")

    # opened with chmod: the next reply is measured, without a restart
    deny_energy_uj["deny"] = False
    meter.start()
    rec = meter.finish(FakeStats())
    assert rec.energy_measured and m.last_problem == ""
    assert rec.energy_note == (
        f"Measured by RAPL package counter ({counter}): the whole CPU package, other programs included."
    )


def test_an_estimate_without_a_meter_says_so(tmp_path: Path) -> None:
    est = CpuTimeEstimate(5.0, cpu_seconds=lambda: 0.0)
    for sources, why in [
        (detect_sources(platform="sunos5"), "Trit has no power meter for this system."),
        (
            detect_sources(sysfs_root=tmp_path, platform="linux"),
            (
                f"RAPL package counter: none in {tmp_path / 'class/powercap'} (a virtual machine, or no"
                " driver for this CPU).\nBattery: no battery is discharging (on mains power, or no battery)."
            ),
        ),
        # the firmware's placeholder: nothing the user can do, so no advice
        ([SampledPowerSource(lambda: 0.0, interval=3600)], "Battery: the battery reported 0 W."),
    ]:
        m = EnergyMeter(sources, estimate=est)
        m.start()
        assert not m.stop().measured
        assert m.explanation == f"Estimated: Trit's CPU time x 5 W/core (Watts per core in Settings).\n{why}"


def test_a_source_that_fails_during_the_reply_is_named_with_its_reason(tmp_path: Path) -> None:
    state = {"ok": True}

    def read() -> float:
        if not state["ok"]:
            raise SourceUnavailable("charger plugged in")
        return 30.0

    battery(tmp_path, "BAT0", "Discharging", power_now=12_000_000)
    m = EnergyMeter(
        [SampledPowerSource(read, interval=3600, where="/sys/class/power_supply")],
        estimate=CpuTimeEstimate(5.0, cpu_seconds=lambda: 0.0),
    )
    m.start()
    state["ok"] = False
    assert not m.stop().measured
    assert m.explanation.endswith("\nBattery: charger plugged in.")
    state["ok"] = True
    m.start()
    assert m.stop().measured
    assert m.explanation == (
        "Measured by battery (/sys/class/power_supply): the whole computer, other programs included."
    )
    # the Linux battery source names the folder it reads
    (bat,) = [s for s in detect_sources(sysfs_root=tmp_path, platform="linux") if s.label.endswith("battery")]
    m = EnergyMeter([bat], estimate=CpuTimeEstimate(5.0, cpu_seconds=lambda: 0.0))
    m.start()
    assert m.stop().measured
    assert m.explanation.startswith(f"Measured by battery ({tmp_path / 'class/power_supply'}): ")


def test_an_old_record_has_no_energy_note() -> None:
    old = ReplyRecord(900, 40, 50, 512, 9, 1500.0, None, "measured: RAPL package", True).to_dict()
    del old["energy_note"]
    assert ReplyRecord.from_dict(old).energy_note == ""


def test_the_estimate_can_leave_out_the_window_s_thread() -> None:
    """The window's own work (drawing a long conversation switched to during a reply) counted as
    the reply's energy: +57% in a QA run."""
    import threading

    from trit.app.core.meters import cpu_seconds_without

    def spin(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    read = cpu_seconds_without(threading.current_thread())
    if sys.platform == "win32":  # no per-thread CPU clock: all threads count
        return
    before = read()
    spin(0.3)  # this thread's work: left out
    assert read() - before < 0.1
    before = read()
    other = threading.Thread(target=spin, args=(0.3,))
    other.start()
    other.join()
    assert read() - before >= 0.2  # another thread's (the engine's): counted
