"""The thread pool's answer to a worker whose core was taken (engine/kernels/threadpool.h).

The real pool runs jobs of trivial chunks (trit.engine._kernels.pool_jobs); a "stall" job makes a
worker sleep while it holds a chunk, which is what another program's time slice does to it. After
such a job the caller must run the next jobs alone (the worker is not even woken), then use every
thread again, backing off exponentially while workers keep being late."""

from trit.engine import _kernels as K


def solo_lengths(n: int) -> list[int]:
    """The solo runs after n late jobs in a row, as the pool's constants say."""
    return [min(K.POOL_SOLO_MIN << i, K.POOL_SOLO_MAX) for i in range(n)]


def test_constants_are_sane():
    assert 0 < K.POOL_LATE_S < 0.01
    assert 0 < K.POOL_SOLO_MIN <= K.POOL_SOLO_MAX < K.POOL_SOLO_CLEAN * 4


def test_late_worker_makes_the_caller_run_the_next_jobs_alone_then_all_threads_again():
    n = K.POOL_SOLO_MIN
    plan = ["stall"] + ["any"] * n + ["together"] + ["any"] * 3
    worker, once, stats = K.pool_jobs(2, plan)
    assert once, "a chunk was skipped or done twice"
    assert worker[0] >= 1  # the stalled job ran on both threads
    assert worker[1 : 1 + n] == [0] * n  # then the worker was left asleep
    assert worker[1 + n] >= 1  # and then joined again
    assert stats == {"jobs": len(plan), "late": 1, "solo": n}


def test_repeated_lapses_back_off_exponentially_up_to_the_cap():
    lengths = solo_lengths(8)
    assert lengths[-1] == K.POOL_SOLO_MAX
    plan: list[str] = []
    for m in lengths:
        plan += ["stall"] + ["any"] * m
    plan += ["together"]
    worker, once, stats = K.pool_jobs(2, plan)
    assert once
    at = 0
    for m in lengths:
        assert worker[at] >= 1, f"job {at} should have run on both threads"
        assert worker[at + 1 : at + 1 + m] == [0] * m, f"jobs after {at} should have run alone"
        at += 1 + m
    assert worker[at] >= 1
    assert stats == {"jobs": len(plan), "late": len(lengths), "solo": sum(lengths)}


def test_a_clean_stretch_resets_the_back_off():
    n = K.POOL_SOLO_MIN
    plan = ["stall"] + ["any"] * n + ["stall"] + ["any"] * (2 * n)
    plan += ["any"] * K.POOL_SOLO_CLEAN  # all threads, nobody late
    plan += ["stall"] + ["any"] * n + ["together"]
    # A worker the VM deschedules during an "any" job is late there too (a fourth late: the
    # back-off doubled and the last job ran alone, seen once in a CI run); the pool's own count
    # shows it, and such a run is repeated.
    for _ in range(3):
        worker, once, stats = K.pool_jobs(2, plan)
        if stats["late"] == 3:
            break
    assert once
    tail = len(plan) - n - 2
    assert worker[tail] >= 1 and worker[tail + 1 : tail + 1 + n] == [0] * n and worker[-1] >= 1
    assert stats == {"jobs": len(plan), "late": 3, "solo": 4 * n}


def test_a_wait_shorter_than_the_callers_own_work_is_not_late():
    # The worker holds a chunk for 20 ms, the caller works 12 ms of it: the end waits ~8 ms, far
    # past TQ_LATE_S, yet both threads together still beat the caller alone, so nothing runs solo.
    plan = ["slow"] * 3 + ["together"] * 2
    worker, once, stats = K.pool_jobs(2, plan)
    assert once and all(w >= 1 for w in worker)
    assert stats == {"jobs": len(plan), "late": 0, "solo": 0}
    # the same stall without the caller's work is late
    worker, once, stats = K.pool_jobs(2, ["stall", "any"])
    assert once and stats["late"] == 1 and worker[1] == 0


def test_quick_jobs_are_not_late_and_one_thread_has_no_pool_work():
    worker, once, stats = K.pool_jobs(2, ["together"] * 20, chunks=256)
    assert once and all(w >= 1 for w in worker)
    assert stats["late"] == 0 and stats["solo"] == 0 and stats["jobs"] == 20
    worker, once, stats = K.pool_jobs(1, ["any"] * 3)
    assert once and worker == [0, 0, 0]
    assert stats == {"jobs": 0, "late": 0, "solo": 0}


def test_more_workers_than_cores_still_do_every_chunk_once():
    plan = ["together"] * 5 + ["stall"] + ["any"] * 40
    worker, once, stats = K.pool_jobs(8, plan, chunks=1000)
    assert once and all(w >= 1 for w in worker[:6])
    assert stats["jobs"] == len(plan) and stats["late"] >= 1 and stats["solo"] >= K.POOL_SOLO_MIN
