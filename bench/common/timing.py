"""The one timing protocol every harness uses (docs/method.md, "Timing protocol").

- Inputs are built by the caller, outside the timed region; a closure `fn()` does the work.
- Every closure is warmed up first (plan caches, lazy init, allocator growth).
- CUDA: CUDA events around the work, read after an event synchronize (never a bare host clock
  around asynchronous launches). CPU: time.perf_counter around synchronous work.
- Calibrated loop: one repetition runs `inner` calls back to back, with `inner` chosen so a
  repetition lasts at least `rep_target_s` (clock resolution, launch jitter); the sample is
  elapsed / inner, i.e. seconds per call.
- Many repetitions; report median, p20, p80. A closure keeps repeating until it has both
  `min_run_time` seconds of timed work and `min_reps` repetitions, and stops earlier when the next
  repetition would take its cell past `max_cell_s` (the per-cell time budget) once it has
  `budget_min_reps` repetitions (a one-off slow warm-up cannot leave a cell with a single sample),
  or past twice the budget whatever it has.
- Interleaving: measure_interleaved() runs closures round-robin (A B C A B C ...), so machine
  drift (thermal, a noisy neighbour) hits every method of one comparison alike.

A closure that raises is dropped from the rotation and its exception is returned in its place;
KeyboardInterrupt is never swallowed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

Fn = Callable[[], object]


@dataclass
class TimingPolicy:
    """How long and how often to time one cell.

    warmup: untimed calls before anything is measured (at least 1 is always made).
    min_run_time: seconds of timed work wanted per cell.
    min_reps: repetitions wanted per cell (both minimums are honoured unless the budget ends first).
    max_cell_s: per-cell wall budget (warm-up and memory calls included); None = no cap.
    rep_target_s: a repetition (inner calls) lasts at least this long.
    max_reps: hard cap on repetitions (cheap closures would otherwise repeat for min_run_time).
    """
    warmup: int = 1
    min_run_time: float = 0.2
    min_reps: int = 10
    max_cell_s: float | None = None
    rep_target_s: float = 2e-3
    max_reps: int = 2000
    budget_min_reps: int = 3  # the budget stops a closure only once it has this many reps (or at 2x budget)


@dataclass
class TimingResult:
    """Per-call seconds of each repetition, and the summary numbers reported."""
    samples_s: list[float]
    inner: int
    cell_s: float  # wall seconds spent on this closure in total (warm-up + timed)
    stopped_by: str  # "target" | "budget" | "max_reps"

    @property
    def reps(self) -> int:
        return len(self.samples_s)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.samples_s), q)) * 1e3

    median_ms = property(lambda self: self.percentile_ms(50))
    p20_ms = property(lambda self: self.percentile_ms(20))
    p80_ms = property(lambda self: self.percentile_ms(80))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Fn, device: torch.device, inner: int = 1) -> float:
    """Seconds per call of `inner` back-to-back calls of fn (CUDA events on GPU, perf_counter on CPU)."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        synchronize(device)  # nothing queued before the start event
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / inner
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def warm_up(fn: Fn, device: torch.device, calls: int = 1) -> float:
    """Run fn `calls` (>= 1) times untimed-for-reporting; return seconds of the last call (an estimate)."""
    est = math.inf
    for _ in range(max(1, calls)):
        est = time_calls(fn, device, 1)
    return est


def calibrate_inner(est_call_s: float, rep_target_s: float) -> int:
    """Calls per repetition so that one repetition lasts about rep_target_s (at least 1)."""
    if not math.isfinite(est_call_s) or est_call_s <= 0:
        return 1
    return max(1, min(1000, math.ceil(rep_target_s / est_call_s)))


@dataclass
class _Slot:
    fn: Fn
    inner: int
    est_rep_s: float
    spent_s: float  # wall already spent on this closure (warm-up, memory call)
    samples: list[float] = field(default_factory=list)
    timed_s: float = 0.0
    stopped_by: str = ""

    def wants_more(self, policy: TimingPolicy) -> bool:
        n = len(self.samples)
        if n >= policy.max_reps:
            self.stopped_by = "max_reps"
            return False
        if policy.max_cell_s is not None and n >= 1:
            over = self.spent_s + self.est_rep_s
            if (n >= policy.budget_min_reps and over > policy.max_cell_s) or over > 2 * policy.max_cell_s:
                self.stopped_by = "budget"
                return False
        if n >= policy.min_reps and self.timed_s >= policy.min_run_time:
            self.stopped_by = "target"
            return False
        return True


def measure_interleaved(fns: dict[str, Fn], device: torch.device, policy: TimingPolicy,
                        est_call_s: dict[str, float] | None = None, spent_s: dict[str, float] | None = None,
                        on_done: Callable[[str, "TimingResult | BaseException"], None] | None = None,
                        ) -> dict[str, "TimingResult | BaseException"]:
    """Time already-warmed closures round-robin; return {name: TimingResult or the exception it raised}.

    est_call_s: seconds per call from the warm-up (calibrates `inner`); missing -> one probe call.
    spent_s: wall seconds already spent per closure, counted against policy.max_cell_s.
    on_done(name, result) is called as soon as a closure finishes (so its row can be written).
    """
    est_call_s = dict(est_call_s or {})
    spent_s = dict(spent_s or {})
    slots: dict[str, _Slot] = {}
    results: dict[str, TimingResult | BaseException] = {}

    def finish(name: str, res):
        results[name] = res
        if on_done is not None:
            on_done(name, res)

    for name, fn in fns.items():
        est = est_call_s.get(name)
        spent = spent_s.get(name, 0.0)
        if est is None:
            try:
                est = time_calls(fn, device, 1)
            except Exception as exc:  # noqa: BLE001 - reported as this closure's result
                finish(name, exc.with_traceback(None))
                continue
            spent += est
        inner = calibrate_inner(est, policy.rep_target_s)
        slots[name] = _Slot(fn, inner, est * inner, spent)

    active = list(slots)
    while active:
        still = []
        for name in active:
            slot = slots[name]
            if not slot.wants_more(policy):
                finish(name, TimingResult(slot.samples, slot.inner, slot.spent_s, slot.stopped_by))
                continue
            wall0 = time.perf_counter()
            try:
                per_call = time_calls(slot.fn, device, slot.inner)
            except Exception as exc:  # noqa: BLE001 - OOM and errors become this closure's result
                # drop the traceback: its frames hold the failed call's tensors (an OOM's memory)
                finish(name, exc.with_traceback(None))
                continue
            wall = time.perf_counter() - wall0
            slot.samples.append(per_call)
            slot.timed_s += per_call * slot.inner
            slot.spent_s += wall
            slot.est_rep_s = max(per_call * slot.inner, 0.5 * slot.est_rep_s)
            still.append(name)
        active = still
    return results

