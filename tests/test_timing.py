"""The shared timing and memory protocols (bench/common/timing.py, memory.py). CPU, a few seconds."""
import subprocess
import sys
import time

import pytest
import torch

from bench.common.memory import CPU_METHOD, high_water, measure_peak
from bench.common.timing import TimingPolicy, calibrate_inner, measure_interleaved, time_calls, warm_up

CPU = torch.device("cpu")


def test_time_calls_measures_seconds_per_call():
    per_call = time_calls(lambda: time.sleep(0.005), CPU, inner=3)
    assert 0.004 < per_call < 0.05  # sleep never returns early; a loaded machine may add a lot


def test_calibrate_inner():
    assert calibrate_inner(1e-4, 2e-3) == 20
    assert calibrate_inner(0.5, 2e-3) == 1
    assert calibrate_inner(0.0, 2e-3) == 1
    assert calibrate_inner(float("nan"), 2e-3) == 1
    assert calibrate_inner(1e-9, 2e-3) == 1000  # capped


def test_measure_reports_percentiles_of_many_reps():
    nap = lambda: time.sleep(0.002)  # noqa: E731
    est = warm_up(nap, CPU)
    res = measure_interleaved({"nap": nap}, CPU, TimingPolicy(min_run_time=0.03, min_reps=5, rep_target_s=1e-3),
                              est_call_s={"nap": est})["nap"]
    assert res.reps >= 5
    assert res.stopped_by == "target"
    assert res.p20_ms <= res.median_ms <= res.p80_ms
    assert 1.5 < res.median_ms < 50


def test_interleaving_alternates_methods_and_direction():
    order = []
    fns = {name: (lambda name=name: order.append(name)) for name in "ABC"}
    policy = TimingPolicy(min_run_time=0.0, min_reps=4, rep_target_s=0.0)
    res = measure_interleaved(fns, CPU, policy, est_call_s=dict.fromkeys("ABC", 1e-3))
    assert "".join(order) == "ABC" "CBA" "ABC" "CBA"  # no method always runs first, or after the same one
    assert res["A"].reps == res["B"].reps == res["C"].reps == 4


def test_policy_clock_times_the_cpu_calls():
    ticks = iter(range(1000))
    res = measure_interleaved({"x": lambda: None}, CPU, TimingPolicy(min_run_time=0.0, min_reps=3, rep_target_s=0.0,
                                                                      clock=lambda: float(next(ticks))))["x"]
    assert res.samples_s == [1.0, 1.0, 1.0]  # one tick per call of the given clock, not the wall clock


def test_budget_caps_repetitions_but_keeps_three():
    policy = TimingPolicy(min_run_time=10.0, min_reps=100, max_cell_s=0.05, rep_target_s=0.0)
    res = measure_interleaved({"slow": lambda: time.sleep(0.01)}, CPU, policy, est_call_s={"slow": 0.01})["slow"]
    assert res.stopped_by == "budget"
    assert 3 <= res.reps <= 6
    # a warm-up that already blew the budget still leaves three samples (unless 2x over)
    res = measure_interleaved({"x": lambda: None}, CPU, policy, est_call_s={"x": 1e-6}, spent_s={"x": 0.06})["x"]
    assert res.reps == 3


def test_exceptions_are_returned_and_others_continue():
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    policy = TimingPolicy(min_run_time=0.0, min_reps=3, rep_target_s=0.0)
    res = measure_interleaved({"flaky": flaky, "fine": lambda: None}, CPU, policy,
                              est_call_s={"flaky": 1e-3, "fine": 1e-3})
    assert isinstance(res["flaky"], torch.cuda.OutOfMemoryError)
    assert res["fine"].reps == 3


def test_keyboard_interrupt_propagates():
    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        measure_interleaved({"x": stop}, CPU, TimingPolicy(), est_call_s={"x": 1e-3})


def test_closures_without_an_estimate_get_policy_warmup_calls():
    calls = {"A": 0, "B": 0}
    fns = {name: (lambda name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls}
    policy = TimingPolicy(warmup=3, min_run_time=0.0, min_reps=2, rep_target_s=0.0)
    res = measure_interleaved(fns, CPU, policy, est_call_s={"B": 1e-3})
    assert res["A"].reps == res["B"].reps == 2
    assert calls == {"A": 3 + 2, "B": 2}  # B was warmed up by the caller


def test_warm_up_returns_last_call_time():
    assert warm_up(lambda: time.sleep(0.002), CPU, calls=2) >= 0.0015


# ---------------------------------------------------------------------------------------------
# memory


def test_high_water():
    assert high_water([]) == 0
    assert high_water([4, 8, -4, 2, -10]) == 12
    assert high_water([-5, 3]) == 0  # freeing something older than the window is not a peak


@pytest.mark.parametrize("mb", [4, 32])
def test_cpu_peak_of_a_known_allocation(mb):
    n = mb * 2**20 // 4

    def alloc():
        t = torch.empty(n, dtype=torch.float32)
        t.fill_(1.0)  # touch it
        return t.sum()

    res = measure_peak(alloc, CPU)
    assert res.method == CPU_METHOD
    assert res.reserved_bytes is None
    assert abs(res.peak_bytes - n * 4) <= 0.05 * n * 4 + 4096, res


def test_cpu_peak_sees_overlapping_temporaries():
    n = 2**20  # 4 MB in float32

    def two_alive():
        a = torch.ones(n)
        b = a * 2  # a and b alive together: 8 MB
        del a
        c = b + 1  # b and c: 8 MB again, never 12
        return c

    peak = measure_peak(two_alive, CPU).peak_bytes
    assert abs(peak - 8 * n) <= 0.05 * 8 * n, peak


def test_memory_kept_by_glibc_goes_back_after_a_failure():
    """The harnesses make glibc keep freed memory (steady CPU timings); after an out-of-memory failure free_memory
    hands it back, as it empties CUDA's cache."""
    code = """
import psutil, torch
from bench.common.allocator import retain_freed_memory
from bench.common.memory import free_memory
if retain_freed_memory() != "glibc-retain":
    raise SystemExit(3)
rss = lambda: psutil.Process().memory_info().rss
x = torch.ones(64 << 20)  # 256 MB
del x
kept = rss()
free_memory(torch.device("cpu"))
print(kept - rss())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if proc.returncode == 3:
        pytest.skip("not glibc: nothing is kept")
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 200 << 20  # most of the 256 MB went back
