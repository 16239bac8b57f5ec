"""The speed area says where a reply's energy figure came from: the measured source and the file it
read, or, for an estimate, why each source could not be used and what the user can do (the window
said "estimated" but not why). Real replies of SmolLM2, with the Linux sources reading a sysfs tree
made in tmp_path."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from trit.app.core.meters import CpuTimeEstimate, EnergyMeter, detect_sources
from trit.app.core.sampling import Sampling
from trit.app.qt.main_window import MainWindow

from .conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS, open_window

pytestmark = pytest.mark.timeout(300)


def sysfs_with_a_root_only_rapl_counter(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """A package-0 RAPL domain under root/class/powercap whose energy_uj is readable by root only,
    as Linux keeps it (the tests may run as root, who reads any file); no battery. Set ["deny"] =
    False to open it."""
    dom = root / "class" / "powercap" / "intel-rapl:0"
    dom.mkdir(parents=True)
    (dom / "name").write_text("package-0\n")
    (dom / "energy_uj").write_text("1000000\n")
    (dom / "max_energy_range_uj").write_text("262143328850\n")
    state = {"deny": True}
    real = Path.read_text

    def read_text(self: Path, *a: Any, **k: Any) -> str:
        if state["deny"] and self == dom / "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", read_text)
    return state


def reply(qtbot: Any, win: MainWindow, text: str) -> dict[str, Any]:
    with qtbot.waitSignal(win.reply_finished, timeout=REPLY_TIMEOUT_MS) as blocker:
        assert win.send(text)
    return dict(blocker.args[0])


def test_the_speed_area_says_why_energy_is_estimated_and_where_it_is_measured(
    qtbot: Any, make_ctx: Any, default_model_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysfs = tmp_path / "sys"
    rapl = sysfs_with_a_root_only_rapl_counter(sysfs, monkeypatch)
    counter = sysfs / "class/powercap/intel-rapl:0/energy_uj"
    ctx = make_ctx()
    ctx.energy = EnergyMeter(
        detect_sources(sysfs_root=sysfs, platform="linux"), estimate=CpuTimeEstimate(5.0)
    )
    win = open_window(qtbot, ctx, autoload=False)
    with qtbot.waitSignal(win.model_loaded, timeout=LOAD_TIMEOUT_MS):
        win.load_model()
    cid = win.new_conversation("Energy")
    win.store.update_conversation(cid, sampling=Sampling(temperature=0.0, top_p=1.0, max_tokens=8))
    win.select_conversation(cid)

    d = reply(qtbot, win, "Say hi.")
    assert d["record"]["tokens"] > 0 and not d["record"]["energy_measured"]
    tip = win.live_label.toolTip()
    assert tip.startswith("Estimated: Trit's CPU time x 5 W/core")
    assert f"RAPL package counter: {counter} is readable by root only." in tip
    assert f"sudo chmod o+r {counter}" in tip and "udev rule" in tip
    assert "Battery: no battery is discharging" in tip
    # a screen reader gets it as the label's description, and the chart beside it shows it too
    assert win.live_label.accessibleDescription() == tip == win.chart.toolTip()

    # another conversation has no reply of its own: no explanation; back, it is there again
    other = win.new_conversation("Other")
    win.select_conversation(other)
    assert win.live_label.toolTip() == "" and win.live_label.accessibleDescription() == ""
    win.select_conversation(cid)
    assert win.live_label.toolTip() == tip

    # the counter opened (chmod): the next reply is measured, and the tooltip names the file
    rapl["deny"] = False
    d = reply(qtbot, win, "Say bye.")
    assert d["record"]["energy_measured"]
    assert win.live_label.toolTip() == (
        f"Measured by RAPL package counter ({counter}): the whole CPU package, other programs included."
    )
    assert win.live_label.accessibleDescription() == win.live_label.toolTip()


@pytest.mark.skipif(sys.platform == "win32", reason="no per-thread CPU clock there")
def test_the_window_s_estimate_leaves_its_own_thread_out(make_ctx: Any) -> None:
    from trit.app.core import meters

    ctx = make_ctx()
    read = ctx.energy.estimate._cpu
    assert read is not meters._process_cpu_seconds
    before = read()
    end = time.thread_time() + 0.3
    while time.thread_time() < end:  # the GUI thread's work
        pass
    assert read() - before < 0.1
