"""Budget predictor: whether a cell fits the time and memory budgets, decided before it runs (docs/method.md, "The
budget predictor" and "Run order"). The memory estimates (bytes, inputs included) are deliberately generous: a cell
predicted just under the budget that then needs more would meet the OOM killer on CPU. `unit` = one (B, H, N, d)
tensor of the dtype, `f32` = one in float32 (the FFT math dtype); the FFT terms checked against the peak RSS of single
cells (docs/method.md), which the torch-profiler peaks understate (fft_buffers)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np

from bench.scaling.costs import conv_length
from bench.scaling.grid import CellSpec

# FLOP/s assumed before anything is measured (deliberately low: first lengths are short anyway)
ASSUMED_RATE = {  # peer: elementwise recurrences run far below GEMM rates
    ("cpu", "wave"): 5e9, ("cpu", "reference"): 5e9, ("cpu", "softmax"): 3e10, ("cpu", "peer"): 1e9,
    ("cuda", "wave"): 2e12, ("cuda", "reference"): 2e12, ("cuda", "softmax"): 1e14, ("cuda", "peer"): 1e11}
ASSUMED_BANDWIDTH = {"cpu": 5e9, "cuda": 1e12}
FIT_POINTS = 3


def secs(seconds: float) -> str:
    """'3.2 s'; below 1 s two significant digits ('0.008 s', where one decimal printed 0.0)."""
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds:.2g} s"


def above(value: float, limit: float, unit: str) -> tuple[str, str]:
    """Texts of value > limit, both with the fewest significant digits (3 or more) that print the first above the
    second: '8.04 s > 8 s', where fixed decimals printed 'predicted 8.0 s > time budget 8 s' or '0.0 s > 1e-09 s'."""
    digits = 3
    while float(f"{value:.{digits}g}") <= float(f"{limit:.{digits}g}"):
        digits += 1
    return f"{value:.{digits}g} {unit}", f"{limit:.{digits}g} {unit}"


@dataclass
class Decision:
    run: bool
    reason: str = ""
    bytes: float = float("nan")  # the memory estimate (nan: the skip came before one was made)
    reduced: bool = False  # protected cell over a time budget: run with the fewest calls


@dataclass
class Predictor:
    device_type: str  # "cpu" | "cuda"
    time_budget: float  # seconds per cell
    mem_budget: float  # bytes
    calls: int  # calls a cell needs at least (warm-up + minimum timed repetitions)
    total_budget: float | None = None  # seconds for the whole sweep
    points: dict = field(default_factory=dict)  # series -> {N: seconds per call}
    stuck: dict = field(default_factory=dict)  # series -> (reason every longer length inherits, cause)

    def record(self, series: tuple, n: int, seconds: float) -> None:
        if seconds > 0 and math.isfinite(seconds):
            self.points.setdefault(series, {})[n] = seconds

    def block_longer(self, series: tuple, reason: str, cause: str = "time") -> None:
        """Skip every longer length of series; cause "time" or "memory"."""
        self.stuck.setdefault(series, (reason, cause))

    def call_seconds(self, series: tuple, n: int, kind: str, flops_at: Callable[[int], float],
                     bytes_at: Callable[[int], float]) -> tuple[float, str]:
        """Predicted seconds of one call at length n, and what the prediction rests on."""
        pts = sorted((m, t) for m, t in self.points.get(series, {}).items() if m < n)
        if pts:
            m_last, t_last = pts[-1]
            ratio = t_last * flops_at(n) / max(flops_at(m_last), 1.0)
            if len(pts) >= 2:
                use = pts[-FIT_POINTS:]
                # a log-log line through the last lengths (measured times: positive, distinct lengths)
                slope, icpt = np.polyfit(np.log([m for m, _ in use]), np.log([t for _, t in use]), 1)
                fit = float(np.exp(icpt + slope * math.log(n)))
                return max(fit, ratio), f"fit of {len(use)} lengths (slope {slope:.2f})"
            return ratio, f"N={m_last} scaled by the cost model"
        rate, bw = ASSUMED_RATE.get((self.device_type, kind), 1e10), ASSUMED_BANDWIDTH.get(self.device_type, 5e9)
        return max(flops_at(n) / rate, bytes_at(n) / bw), "cost model only"

    def decide(self, series: tuple, n: int, kind: str, est_bytes: float, flops_at, bytes_at,
               elapsed_s: float = 0.0, share_left_s: float | None = None, protected: bool = False) -> Decision:
        """Run or skip (with the reason) a cell of `series` at length n; share_left_s: seconds left of the current
        (level, pass)'s share (share_out); protected: reduced, not skipped, for time."""
        stuck = self.stuck.get(series)
        if stuck is not None and (not protected or stuck[1] == "memory"):
            return Decision(False, stuck[0])
        if est_bytes > self.mem_budget:
            predicted = above(est_bytes / 1e9, self.mem_budget / 1e9, "GB")[0]  # the budget as --mem-budget takes it
            return Decision(False, f"predicted peak memory {predicted} > memory budget {self.mem_budget / 1e9:g} GB",
                            bytes=est_bytes)
        call_s, basis = self.call_seconds(series, n, kind, flops_at, bytes_at)
        cell_s = call_s * self.calls
        over = ""  # why the cell is over the per-cell budget, the total or its level/pass's share of the total
        if cell_s > self.time_budget:
            per_call = f"{call_s * 1e3:.3g} ms" if call_s < 1 else f"{call_s:.3g} s"
            predicted = above(cell_s, self.time_budget, "s")[0]  # the budget as typed
            over = (f"predicted {predicted} > time budget {self.time_budget:g} s ({self.calls} calls of {per_call}; "
                    f"{basis})")
        elif self.total_budget is not None and elapsed_s + cell_s > self.total_budget:
            predicted, left = above(cell_s, max(0.0, self.total_budget - elapsed_s), "s")
            over = f"predicted {predicted} > {left} left of the total budget {self.total_budget:g} s"
        elif share_left_s is not None and cell_s > share_left_s:
            predicted, left = above(cell_s, max(0.0, share_left_s), "s")
            over = (f"predicted {predicted} > {left} left of this level/pass's share of the total budget "
                    f"{self.total_budget:g} s")
        if protected:
            reason = f"fewest calls: predicted {secs(cell_s)} at full repetitions is over a time budget ({basis})"
            return Decision(True, reason if over else "", est_bytes, reduced=bool(over))
        if cell_s > self.time_budget:
            self.block_longer(series, f"longer than N={n}, which was predicted over the time budget")
        return Decision(not over, over, est_bytes)


# weights of the (level, pass) shares of a total budget: core fwd, the headline, gets the most
SHARE_WEIGHTS = {("core", "fwd"): 3.0}


def share_out(total_left: float, segments: list[tuple[str, str]]) -> float:
    """Seconds the first of `segments` (the (level, pass) pairs still to run) may use: its share of what is left."""
    weights = [SHARE_WEIGHTS.get(seg, 1.0) for seg in segments]
    return total_left * weights[0] / sum(weights) if weights else total_left


def fft_buffers(rows: int, m: int) -> tuple[int, int]:
    """Bytes of the zero-padded copy of `rows` rows an rfft at FFT size m transforms (m float32 each: rfft(x, n=m)
    makes it; an irfft output is as large) and of their spectrum (m/2 + 1 complex64 each). On CPU the harnesses keep
    freed memory resident (bench/common/allocator.py), so peak RSS holds a call's padded copy, spectrum and irfft
    output at once, and the next call's padded copy and spectrum need not fit in the holes they leave (a spectrum is
    8 bytes a row larger than the padded copy before it): 3 padded copies + 2 spectra per forward convolution, where
    the torch profiler sees 2 buffers alive."""
    return rows * m * 4, rows * (m // 2 + 1) * 8


def floor_memory(spec: CellSpec, path: str) -> float:
    """fft-floor: the input, its FFT buffers (fft_buffers) and the cached kernel spectrum."""
    length, m = conv_length(spec.seq_len, spec.field_stride, path)
    rows = spec.batch * spec.heads * spec.head_dim
    padded, spectrum = fft_buffers(rows, m)
    return rows * length * 4 + 3 * padded + 2 * spectrum + spec.heads * (m // 2 + 1) * 8


def level_memory(spec: CellSpec, core_bytes: Callable[..., float]) -> float:
    """The estimate from the mixing operator's core_bytes(b, h, n, d, elem, pass_), plus what layer and model add."""
    at = partial(core_bytes, spec.batch, spec.heads, spec.seq_len, spec.row_head_dim, spec.elem)
    core = at(spec.pass_)
    b, n, d_model = spec.batch, spec.seq_len, spec.d_model
    if spec.level == "core":
        return core
    if spec.level == "layer":
        act = b * n * d_model * spec.elem
        params = 6 * d_model * d_model * spec.elem
        return core + (8 if spec.pass_ == "fwd" else 16) * act + 3 * params
    # model: float32 weights (+ grad + AdamW state), activations per layer, logits (+ float32 copy)
    layers = spec.model_layers
    act = b * n * d_model * 4
    ffn = b * n * spec.d_ff * 4
    logits = b * n * spec.vocab * 4
    params = (layers * (6 * d_model * d_model + 2 * d_model * spec.d_ff) + spec.vocab * d_model) * 4
    if spec.pass_ == "fwd":
        return core + 10 * act + 2 * ffn + 3 * logits + params
    return layers * (at("fwdbwd") + 16 * act + 3 * ffn) + 4 * logits + 4 * params


def wave_memory(spec: CellSpec, path: str) -> float:
    def core_bytes(b: int, h: int, n: int, d: int, elem: int, pass_: str) -> float:
        """Inputs (k, v; q when drawn), deposits, the output, and the FFT buffers (fft_buffers) of the convolution
        over L = N tokens (token) or G field cells (field): the forward's 3 padded copies (the irfft output counted as
        one) and 2 spectra; fwdbwd: the forward's padded copy, spectrum and irfft output, and the backward's padded
        copies and spectra of the gradient and of the input, and its irfft output."""
        m = conv_length(n, spec.field_stride, path)[1]  # scan: bounded by the token path's
        unit, f32 = b * h * n * d * elem, b * h * n * d * 4  # one (B, H, N, d) tensor of the dtype, of float32
        padded, spectrum = fft_buffers(b * h * d, m)
        if pass_ == "fwd":
            return 4 * unit + 3 * f32 + 3 * padded + 2 * spectrum
        return 8 * unit + 8 * f32 + 5 * padded + 3 * spectrum
    return level_memory(spec, core_bytes)


def softmax_memory(spec: CellSpec, impl: str, sdpa_backend: str | None = None) -> float:
    def core_bytes(b: int, h: int, n: int, d: int, elem: int, pass_: str) -> float:
        """Naive attention (or SDPA's math kernel) keeps (B, H, N, N) float32 scores: about 2 alive in the forward
        (scores, the next elementwise result), 4 in fwdbwd (saved probs, their gradient, the softmax gradient, a
        temporary). Fused kernels keep O(B H N d)."""
        unit = b * h * n * d * elem
        if impl == "naive" or sdpa_backend == "math":
            scores, mask = b * h * n * n * 4, n * n
            return (4 * unit + 2.5 * scores + mask) if pass_ == "fwd" else (8 * unit + 4.5 * scores + mask)
        lse = b * h * n * 4
        return (5 * unit + lse) if pass_ == "fwd" else (12 * unit + 2 * lse)
    return level_memory(spec, core_bytes)
