"""The one timing protocol every harness uses, step by step in docs/method.md ("Timing protocol"). A closure that
raises is dropped from the rotation and its exception returned in its place; KeyboardInterrupt is never swallowed."""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

Fn = Callable[[], object]


@dataclass
class TimingPolicy:
    """How long and how often to time one cell (both minimums hold unless the budget ends first)."""
    warmup: int = 1  # untimed calls first; measure_interleaved makes them only for closures given no estimate
    min_run_time: float = 0.2  # seconds of timed work wanted per cell
    min_reps: int = 10
    max_cell_s: float | None = None  # per-cell wall budget, warm-up and memory calls included; None: no cap
    rep_target_s: float = 2e-3  # a repetition (inner calls) lasts at least this long
    max_reps: int = 2000  # cheap closures would otherwise repeat for min_run_time
    budget_min_reps: int = 3  # the budget stops a closure only once it has this many reps (or at 2x budget)
    clock: Callable[[], float] = time.perf_counter  # CPU clock; time.process_time skips time descheduled


@dataclass
class TimingResult:
    """Per-call seconds of each repetition, and the summary numbers reported."""
    samples_s: list[float]
    stopped_by: str  # "target" | "budget" | "max_reps"

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.samples_s, q)) * 1e3

    reps = property(lambda self: len(self.samples_s))
    median_ms = property(lambda self: self.percentile_ms(50))
    p20_ms = property(lambda self: self.percentile_ms(20))
    p80_ms = property(lambda self: self.percentile_ms(80))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Fn, device: torch.device, inner: int = 1, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per call of `inner` back-to-back calls of fn (CUDA events on GPU, `clock` on CPU)."""
    if device.type != "cuda":
        t0 = clock()
        for _ in range(inner):
            fn()
        return (clock() - t0) / inner
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    synchronize(device)  # nothing queued before the start event
    start.record()
    for _ in range(inner):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / inner


def warm_up(fn: Fn, device: torch.device, calls: int = 1, clock: Callable[[], float] = time.perf_counter) -> float:
    """Call fn `calls` (>= 1) times, not reported; return seconds of the last call (an estimate)."""
    for _ in range(max(1, calls)):
        est = time_calls(fn, device, clock=clock)
    return est


def calibrate_inner(est_call_s: float, rep_target_s: float) -> int:
    """Calls per repetition so that one repetition lasts about rep_target_s (1 to 1000)."""
    if not math.isfinite(est_call_s) or est_call_s <= 0:
        return 1
    return max(1, min(1000, math.ceil(rep_target_s / est_call_s)))


@dataclass
class _Slot:
    fn: Fn
    inner: int
    est_rep_s: float
    spent_s: float  # wall already spent on this closure (warm-up, memory call, timed reps)
    samples: list[float] = field(default_factory=list)
    timed_s: float = 0.0

    def stop_reason(self, policy: TimingPolicy) -> str | None:
        """Why this closure has had enough repetitions, or None while it wants more."""
        n = len(self.samples)
        if n >= policy.max_reps:
            return "max_reps"
        if policy.max_cell_s is not None and n >= 1:
            over = self.spent_s + self.est_rep_s
            if (n >= policy.budget_min_reps and over > policy.max_cell_s) or over > 2 * policy.max_cell_s:
                return "budget"
        if n >= policy.min_reps and self.timed_s >= policy.min_run_time:
            return "target"
        return None

    def repeat(self, device: torch.device, clock: Callable[[], float]) -> None:
        wall0 = time.perf_counter()
        per_call = time_calls(self.fn, device, self.inner, clock)
        self.spent_s += time.perf_counter() - wall0
        self.samples.append(per_call)
        self.timed_s += per_call * self.inner
        self.est_rep_s = max(per_call * self.inner, 0.5 * self.est_rep_s)


def measure_interleaved(fns: dict[str, Fn], device: torch.device, policy: TimingPolicy,
                        est_call_s: dict[str, float] | None = None, spent_s: dict[str, float] | None = None,
                        on_done: Callable[[str, "TimingResult | BaseException"], None] | None = None,
                        ) -> dict[str, "TimingResult | BaseException"]:
    """Time closures round-robin, the order reversed every round (docs/method.md, "Timing protocol"); return
    {name: TimingResult or the exception it raised}. est_call_s: seconds per call from the caller's warm-up
    (a closure without one gets policy.warmup calls here); spent_s: wall seconds already spent per closure,
    counted against policy.max_cell_s; on_done(name, result) as soon as a closure finishes."""
    est_call_s, spent_s = est_call_s or {}, spent_s or {}
    slots: dict[str, _Slot] = {}
    results: dict[str, TimingResult | BaseException] = {}

    def finish(name: str, res) -> None:
        results[name] = res
        if on_done is not None:
            on_done(name, res)

    for name, fn in fns.items():
        est, spent = est_call_s.get(name), spent_s.get(name, 0.0)
        if est is None:
            wall0 = time.perf_counter()
            try:
                est = warm_up(fn, device, policy.warmup, policy.clock)
            except Exception as exc:  # noqa: BLE001 - reported as this closure's result
                finish(name, exc.with_traceback(None))
                continue
            spent += time.perf_counter() - wall0
        inner = calibrate_inner(est, policy.rep_target_s)
        slots[name] = _Slot(fn, inner, est * inner, spent)

    for rnd in itertools.count():
        if not slots:
            break
        for name, slot in list(slots.items())[::-1 if rnd % 2 else 1]:
            try:
                reason = slot.stop_reason(policy)
                if reason is None:
                    slot.repeat(device, policy.clock)
                    continue
                res = TimingResult(slot.samples, reason)
            except Exception as exc:  # noqa: BLE001 - OOM and errors become this closure's result
                # drop the traceback: its frames hold the failed call's tensors (an OOM's memory)
                res = exc.with_traceback(None)
            del slots[name]
            finish(name, res)
    return results
