"""The memory cap chat templates render under (engine/memcap.h through trit.engine._core)."""

from __future__ import annotations

import threading

import pytest
from trit.engine._core import memory_cap_begin, memory_cap_end

MiB = 1 << 20


def test_large_blocks_past_the_cap_are_refused_and_freed_ones_give_room_back() -> None:
    cap = memory_cap_begin(64 * MiB, 256 * MiB)
    assert cap >= 0
    try:
        a = "a" * (40 * MiB)
        with pytest.raises(MemoryError):
            "b" * (40 * MiB)  # 80 MiB held: past 64
        del a
        b = bytearray(40 * MiB)  # 40 MiB held again
        b.extend(bytes(MiB))  # a resize of a recorded block counts once
    finally:
        over, peak, _ = memory_cap_end(cap)
    assert over and 41 * MiB <= peak <= 48 * MiB
    # no cap after the end
    c = "c" * (100 * MiB)
    assert len(b) == 41 * MiB and len(c) == 100 * MiB


def test_small_blocks_are_counted_as_asked_for() -> None:
    cap = memory_cap_begin(256 * MiB, 32 * MiB)
    try:
        with pytest.raises(MemoryError):
            ("xyz\n" * (4 * MiB)).splitlines()  # 4M strings of ~50 bytes, each under 1 MiB
    finally:
        over, _, small = memory_cap_end(cap)
    assert over and 30 * MiB < small < 96 * MiB  # (after a refusal, 64 MiB more for the unwinding)
    cap = memory_cap_begin(64 * MiB, 32 * MiB)
    lines = ("xyz\n" * 1000).splitlines()
    over, peak, small = memory_cap_end(cap)
    assert not over and peak == 0 and 0 < small < MiB and len(lines) == 1000


def test_only_the_capped_thread_is_limited() -> None:
    cap = memory_cap_begin(8 * MiB, 8 * MiB)
    got: list[int] = []
    try:
        t = threading.Thread(target=lambda: got.append(len("z" * (64 * MiB))))
        t.start()
        t.join()
    finally:
        over, _, _ = memory_cap_end(cap)
    assert got == [64 * MiB] and not over


def test_a_thread_is_capped_once_and_four_at_most() -> None:
    cap = memory_cap_begin(8 * MiB, 8 * MiB)
    try:
        assert memory_cap_begin(8 * MiB, 8 * MiB) == -1  # nesting is not supported
    finally:
        memory_cap_end(cap)
    handles: list[int] = []
    go = threading.Event()

    def hold() -> None:
        handles.append(memory_cap_begin(MiB, MiB))
        go.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        while len(handles) < 4:
            threading.Event().wait(0.01)
        assert sorted(handles) == [0, 1, 2, 3]
        assert memory_cap_begin(MiB, MiB) == -1  # all slots taken
    finally:
        go.set()
        for t in threads:
            t.join()
        for h in handles:
            memory_cap_end(h)
    cap = memory_cap_begin(MiB, MiB)  # the slots are free again
    assert cap >= 0
    memory_cap_end(cap)


def test_an_allocator_hook_installed_on_top_keeps_the_cap(tmp_path) -> None:
    import tracemalloc

    memory_cap_end(memory_cap_begin(MiB, MiB))  # ours installed first
    tracemalloc.start()
    try:
        cap = memory_cap_begin(8 * MiB, 64 * MiB)
        try:
            with pytest.raises(MemoryError):
                "q" * (16 * MiB)
        finally:
            assert memory_cap_end(cap)[0]
    finally:
        tracemalloc.stop()
