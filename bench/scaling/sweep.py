"""The sweep engine: gate each cell by the budget predictor and its method's correctness check, build, warm up,
measure memory, time the methods of one length interleaved, write one row per cell (docs/method.md, "Run order")."""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from bench.common.cli import is_oom, one_line
from bench.common.device import DTYPES
from bench.common.memory import PeakMemory, free_memory, measure_peak, memory_method, prepare_profiler
from bench.common.timing import TimingPolicy, TimingResult, measure_interleaved, warm_up
from bench.scaling import builders, costs
from bench.scaling.budget import Decision, Predictor, above, share_out
from bench.scaling.grid import CellSpec, SweepConfig, cell_key, groups, rank_of_group, row_key
from bench.scaling.registry import FIRST, HEADLINE, METHODS, Method, chosen_methods
from bench.scaling.results import RowWriter
from bench.scaling.schema import KEY_COLUMNS

MIN_TIMED_REPS = 3  # a cell must afford warm-up + this many timed calls, or it is skipped


@dataclass
class _Prepared:
    method: Method
    spec: CellSpec
    fn: Callable[[], object]
    est_call_s: float
    spent_s: float
    mem: PeakMemory
    backend: str
    note: str = ""  # why this ok cell has fewer repetitions than asked


class Sweep:
    """One process's share of a sweep. `registry` is injectable (tests add failing methods)."""

    def __init__(self, cfg: SweepConfig, writer, device: torch.device, existing_rows: list[dict] | None = None,
                 rank: int = 0, world: int = 1, progress: bool = True, registry: dict[str, Method] | None = None):
        self.cfg, self.writer, self.device = cfg, writer, device
        self.rank, self.world = rank, world
        self.registry = registry if registry is not None else METHODS
        self.dtype = DTYPES[cfg.dtype]
        self.progress = progress
        self.peak = costs.device_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
        self.copy_bw: float | None = None  # measured when the sweep starts (run())
        self.mem_method = memory_method(device)
        self.policy = TimingPolicy(warmup=cfg.warmup, min_run_time=cfg.min_run_time, min_reps=cfg.min_reps,
                                   max_cell_s=cfg.time_budget, rep_target_s=1e-3 if device.type == "cuda" else 2e-3)
        # calls a cell needs at least: warm-up (on CPU the memory call, then at least one plain call to calibrate
        # on) + timed reps (+ on CUDA a separate memory call and a refill call)
        untimed = cfg.warmup + 2 if device.type == "cuda" else max(2, cfg.warmup)
        calls = untimed + MIN_TIMED_REPS
        self.predictor = Predictor(device.type, cfg.time_budget, cfg.mem_budget_gb * 1e9, calls, cfg.total_budget)
        self.done: set[tuple] = set()
        self.checks: dict[tuple, tuple[bool, str]] = {}
        self.by_status: Counter = Counter()  # rows written, by status
        self._t0 = time.perf_counter()
        self._share_end: float | None = None  # deadline of the current (level, pass) share
        self._bar = None
        for row in existing_rows or []:
            self._absorb(row)

    def _absorb(self, row: dict) -> None:
        """An already-written row: never re-measured; it also feeds the predictor (resume)."""
        self.done.add(row_key(row))
        series = (row["method"], row["level"], row["pass"])
        n = int(row["seq_len"])
        if row["status"] == "ok" and row.get("median_ms"):
            self.predictor.record(series, n, float(row["median_ms"]) / 1e3)
        elif row["status"] == "oom" or (row["status"] == "skipped" and "time budget" in row.get("reason", "")):
            self.predictor.block_longer(series, f"longer than N={n} ({row['status']}: {row.get('reason', '')[:80]})",
                                        "memory" if row["status"] == "oom" else "time")

    def spec_for(self, level: str, pass_: str, n: int) -> CellSpec:
        c = self.cfg
        return CellSpec(level, pass_, c.batch, c.heads, c.head_dim, n, self.device, self.dtype, c.field_stride,
                        c.model_dim, c.model_layers, c.vocab, c.seed)

    def pending(self) -> list[tuple[tuple[str, str, int], list[str]]]:
        """(group, methods still to run) for this rank in run order (docs/method.md, "Run order": two phases)."""
        names = chosen_methods(self.cfg.methods, self.cfg.floor)
        mine = [g for g in groups(self.cfg.levels, self.cfg.passes, self.cfg.seq_lens)
                if rank_of_group(g[2], self.cfg.seq_lens, self.world) == self.rank]
        out = []
        for phase in (True, False):  # True: the HEADLINE and FIRST tiers (the methods answering published claims)
            for grp in mine:
                spec = self.spec_for(*grp)
                todo = [n for n in names if (self.registry[n].tier <= FIRST) == phase
                        and self.registry[n].supports(grp[0], grp[1]) and cell_key(n, spec) not in self.done]
                if todo:
                    out.append((grp, todo))
        return out

    def _row(self, method: Method, spec: CellSpec, status: str, reason: str = "", **metrics) -> dict:
        cost = _safe_cost(method, spec)
        return {**dict(zip(KEY_COLUMNS, cell_key(method.name, spec))), "d_model": spec.d_model,
                "field_stride": spec.field_stride if method.uses_stride else None, "status": status, "reason": reason,
                "rank": self.rank, "flops": cost.flops if cost else None, "bytes": cost.bytes if cost else None,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **metrics}

    def _emit(self, row: dict) -> None:
        self.writer.append(row)
        self.done.add(row_key(row))
        self.by_status[row["status"]] += 1
        if self._bar is not None:
            self._bar.update(1)
            if self._bar.disable:
                med = f"{float(row['median_ms']):.3f} ms" if row.get("median_ms") is not None else ""
                print(f"[scaling] {row['level']:<5} {row['pass']:<6} N={row['seq_len']:<7} {row['method']:<22} "
                      f"{row['status']:<7} {med} {row['reason']}".rstrip(), file=sys.stderr, flush=True)

    def _status(self, text: str) -> None:
        if self._bar is not None and not self._bar.disable:
            self._bar.set_description_str(text, refresh=True)

    def _check(self, method: Method, spec: CellSpec) -> tuple[bool, str]:
        # the model-level check compares forward logits only, so one result serves both passes
        key = (method.name, spec.level, "any" if spec.level == "model" else spec.pass_)
        if key not in self.checks:
            self._status(f"{spec.level} {spec.pass_} {method.name}: correctness check")
            try:
                res = method.check(spec)
                self.checks[key] = (res.ok, "" if res.ok else res.reason())
            except Exception as exc:  # noqa: BLE001 - a method that cannot run its check is not timed
                free_memory(self.device)
                self.checks[key] = (False, f"correctness check raised {one_line(exc, named=True)}")
        return self.checks[key]

    def _prepare(self, method: Method, spec: CellSpec, decision: Decision) -> "_Prepared | dict":
        """Build, warm up (once on reduced calls), measure peak memory: the prepared cell or a failure row."""
        self._status(f"{spec.level} {spec.pass_} N={spec.seq_len} {method.name}: warm-up")
        t0 = time.perf_counter()
        warmup = 1 if decision.reduced else self.cfg.warmup
        try:
            built = method.build(spec)
            if self.device.type == "cpu":  # the first call is warm-up and memory measurement: no caching allocator
                t1 = time.perf_counter()
                mem = measure_peak(built.fn, self.device)
                est = time.perf_counter() - t1  # the profiler's time too: enough for a reduced cell's single call
                if not decision.reduced:  # inner is calibrated on a plain call, at least one after the memory call
                    est = warm_up(built.fn, self.device, max(1, warmup - 1))
            else:
                est = warm_up(built.fn, self.device, warmup)
                mem = measure_peak(built.fn, self.device)
            backend = built.backend()
        except Exception as exc:  # noqa: BLE001 - becomes this cell's row
            # drop the traceback and the closure first: they hold the failed call's tensors, which
            # must be garbage before free_memory() can hand an OOM's memory back
            exc = exc.with_traceback(None)
            built = None
            return self._failure(method, spec, exc)
        return _Prepared(method, spec, built.fn, est, time.perf_counter() - t0, mem, backend, decision.reason)

    def _failure(self, method: Method, spec: CellSpec, exc: BaseException) -> dict:
        """The row of a cell that raised: oom (then longer lengths of the method are skipped) or error."""
        oom = is_oom(exc)
        if oom:
            free_memory(self.device)
            self.predictor.block_longer((method.name, spec.level, spec.pass_), f"longer than N={spec.seq_len}, "
                                        "which ran out of memory", "memory")
        return self._row(method, spec, "oom" if oom else "error", one_line(exc, named=True), backend=None)

    def _ok_row(self, p: _Prepared, res: TimingResult) -> dict:
        spec, method = p.spec, p.method
        sec = res.median_ms / 1e3
        cost = _safe_cost(method, spec)
        metrics = {
            "median_ms": res.median_ms, "p20_ms": res.p20_ms, "p80_ms": res.p80_ms, "reps": res.reps,
            "peak_mem_mb": p.mem.peak_bytes / 2**20, "mem_method": self.mem_method, "backend": p.backend,
            "reserved_mem_mb": p.mem.reserved_bytes / 2**20 if p.mem.reserved_bytes is not None else None,
            "device_used_mb": p.mem.device_used_bytes / 2**20 if p.mem.device_used_bytes is not None else None,
            "tflops": cost.flops / sec / 1e12 if cost and sec > 0 else None,
            "gbps": cost.bytes / sec / 1e9 if cost and sec > 0 else None, "setup_s": p.spent_s,
            "roofline_frac": costs.roofline_frac(cost, sec, self.peak, method.kind, self.cfg.dtype) if cost else None,
            "over_mem_bound": costs.over_memory_bound(cost, sec, self.copy_bw),
            "copy_gbps": self.copy_bw / 1e9 if self.copy_bw else None,
            "tokens_per_s": spec.batch * spec.seq_len / sec if sec > 0 else None}
        self.predictor.record((method.name, spec.level, spec.pass_), spec.seq_len, sec)
        return self._row(method, spec, "ok", p.note, **metrics)

    def _gate(self, method: Method, spec: CellSpec) -> "dict | Decision":
        """The row of a cell that will not be timed, or the budget decision of one that will."""
        why = method.why_unavailable(self.device, self.dtype)
        if why is not None:
            return self._row(method, spec, "skipped", f"not available here: {why}")

        # budgets first: a cell that will not be timed costs no correctness check either
        def cost_at(n: int) -> costs.Cost:
            return _safe_cost(method, spec.at(seq_len=n)) or costs.Cost(0.0, 0.0)
        now = time.perf_counter()
        share_left = None if self._share_end is None else self._share_end - now
        # protected: a cell that answers a published claim (the claims are forward operation counts); its backward on
        # CPU would cost minutes at 32K
        protected = method.tier == HEADLINE and spec.level == "core" and spec.pass_ == "fwd"
        decision = self.predictor.decide((method.name, spec.level, spec.pass_), spec.seq_len, method.kind,
                                         method.memory(spec), lambda n: cost_at(n).flops, lambda n: cost_at(n).bytes,
                                         elapsed_s=now - self._t0, share_left_s=share_left, protected=protected)
        if not decision.run:
            est_mb = decision.bytes / 2**20 if decision.bytes == decision.bytes else None
            return self._row(method, spec, "skipped", decision.reason, peak_mem_mb=est_mb,
                             mem_method="estimate" if est_mb is not None else None)
        # the check runs the method at a short length beside a float64 reference (about 3x the method's own memory
        # there); at a huge width even that may not fit
        need = 3 * method.memory(builders.small_spec(spec))
        if need > self.cfg.mem_budget_gb * 1e9:
            return self._row(method, spec, "skipped", f"its correctness check (N={builders.CHECK_LEN}) needs "
                             f"about {above(need / 1e9, self.cfg.mem_budget_gb, 'GB')[0]} > memory budget "
                             f"{self.cfg.mem_budget_gb:g} GB")
        ok, reason = self._check(method, spec)
        if not ok:
            return self._row(method, spec, "error", reason)
        return decision

    def run_group(self, level: str, pass_: str, n: int, names: list[str]) -> None:
        spec = self.spec_for(level, pass_, n)
        prepared: dict[str, _Prepared] = {}
        for name in names:
            method = self.registry[name]
            gate = self._gate(method, spec)
            if isinstance(gate, dict):  # not timed: its row
                self._emit(gate)
                continue
            got = self._prepare(method, spec, gate)
            if isinstance(got, dict):
                self._emit(got)
            else:
                prepared[name] = got
        if self.device.type == "cuda":
            # refill the caching allocator the memory measurements' empty_cache() emptied: no timed call pays cudaMalloc
            for name in list(prepared):
                try:
                    prepared[name].fn()
                    torch.cuda.synchronize(self.device)
                except Exception as exc:  # noqa: BLE001 - becomes this cell's row
                    p = prepared.pop(name)
                    self._emit(self._failure(p.method, p.spec, exc.with_traceback(None)))
        if not prepared:
            return
        self._status(f"{level} {pass_} N={n}: timing {', '.join(prepared)}")

        def on_done(name: str, res) -> None:  # res: a TimingResult, or the Exception the closure raised
            p = prepared[name]
            self._emit(self._failure(p.method, p.spec, res) if isinstance(res, Exception) else self._ok_row(p, res))

        # cells on reduced calls are timed on their own, one repetition of one call: interleaving
        # them with the full-repetition cells would stretch those to the slow cell's pace
        full = {k: p for k, p in prepared.items() if not p.note}
        reduced = {k: p for k, p in prepared.items() if p.note}
        few = dataclasses.replace(self.policy, min_reps=1, min_run_time=0.0, budget_min_reps=1, max_cell_s=0.0,
                                  rep_target_s=0.0)
        for group, policy in ((full, self.policy), (reduced, few)):
            if group:
                measure_interleaved({k: p.fn for k, p in group.items()}, self.device, policy,
                                    est_call_s={k: p.est_call_s for k, p in group.items()},
                                    spent_s={k: p.spent_s for k, p in group.items()}, on_done=on_done)
        prepared.clear()

    def run(self) -> Counter:
        from tqdm import tqdm

        todo = self.pending()
        if todo:
            if self.device.type == "cpu":
                prepare_profiler()
            with contextlib.suppress(Exception):  # no bound then (copy_bw None); the cells still run
                self.copy_bw = costs.copy_bandwidth(self.device)
        # disable=None: tqdm turns itself off when stderr is not a terminal (logs get one line per cell)
        total = sum(len(names) for _, names in todo)
        prefix = f"rank {self.rank} " if self.world > 1 else ""
        self._bar = tqdm(total=total, unit="cell", file=sys.stderr, dynamic_ncols=True, position=self.rank,
                         disable=None if self.progress else True, desc=f"{prefix}scaling")
        segments = list(dict.fromkeys((lv, p) for (lv, p, _n), _names in todo))
        try:
            for (level, pass_, n), names in todo:
                if self.cfg.total_budget is not None and segments and segments[0] == (level, pass_):
                    now = time.perf_counter()
                    self._share_end = now + share_out(self.cfg.total_budget - (now - self._t0), segments)
                    segments.pop(0)
                self.run_group(level, pass_, n, names)
        finally:
            self._bar.close()
        return self.by_status


def _safe_cost(method: Method, spec: CellSpec):
    try:
        return method.cost(spec)
    except Exception:  # noqa: BLE001 - a cost model gap must not kill a row
        return None


def run_sweep(cfg: SweepConfig, csv_path: Path, device: torch.device, existing_rows: list[dict] | None = None,
              rank: int = 0, world: int = 1, **options) -> Counter:
    """Run this rank's share of the sweep, appending rows to csv_path; the rows written by status. options: Sweep's."""
    return Sweep(cfg, RowWriter(csv_path), device, existing_rows, rank, world, **options).run()
