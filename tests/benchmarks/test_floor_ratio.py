"""Targets measured as ratios within one process: the wave core against the bare FFT floor, and the wave
layer backward against its forward (docs/regression.md).

The floor (method fft-floor) is one rfft of x already in the FFT's favourite layout, one multiply by
a cached kernel spectrum and one irfft, at the wave core's shape and FFT size; the wave core adds the
deposit norm ||k||, the kernel rebuilt from its three parameters and transformed, and the
head-coupling pass. The two are timed interleaved, call by call, so machine drift hits both alike.
The bound (default 1.5; environment WAVEBENCH_FLOOR_RATIO_MAX, read by conftest.py) leaves room for a noisy
shared machine and still fails an implementation at 1.6-1.8x of the floor (the one before the
channel-major layout) or one that adds a full memory pass at these sizes.

Opt-in with the other timings: python -m pytest tests/benchmarks -m benchmark (the CI gate runs it).
"""
from __future__ import annotations

import pytest
import torch

from bench.common.timing import TimingPolicy, measure_interleaved

pytestmark = pytest.mark.benchmark

ROUNDS = 25


def interleaved_medians(fns: dict, rounds: int, timer) -> dict:
    """Median seconds per call of each closure: bench.common.timing's protocol, one call per repetition,
    two warm-up calls each, closures alternated call by call so machine drift hits all of them alike."""
    policy = TimingPolicy(warmup=2, min_run_time=0.0, min_reps=rounds, max_reps=rounds, rep_target_s=0.0, clock=timer)
    out = {}
    for name, res in measure_interleaved(fns, torch.device("cpu"), policy).items():
        if isinstance(res, BaseException):
            raise res
        out[name] = res.median_ms / 1e3
    return out


@pytest.mark.parametrize("wave,floor", [("wave", "fft-floor"), ("wave-field", "fft-floor-field")],
                         ids=["token", "field"])
@pytest.mark.parametrize("n", [2048, 8192], ids=lambda n: f"N{n}")
def test_wave_core_within_ratio_of_fft_floor(n, wave, floor, allocator, build_cell, cell_timer, ratio_bounds,
                                             capsys):
    bound = ratio_bounds["floor"]
    fns = {"wave": build_cell("core", "fwd", n, wave), "floor": build_cell("core", "fwd", n, floor)}
    med = interleaved_medians(fns, ROUNDS, cell_timer)
    ratio = med["wave"] / med["floor"]
    with capsys.disabled():
        print(f"\n[floor ratio] {wave} N={n}: {med['wave'] * 1e3:.2f} ms / {floor} {med['floor'] * 1e3:.2f} ms"
              f" = {ratio:.2f} (bound {bound}; {torch.get_num_threads()} thread(s), timer {cell_timer.__name__})")
    assert ratio < bound, f"{wave} is {ratio:.2f}x the FFT floor at N={n} (bound {bound})"


@pytest.mark.parametrize("n", [1024, 4096], ids=lambda n: f"N{n}")
def test_wave_layer_backward_within_ratio_of_forward(n, allocator, build_cell, cell_timer, ratio_bounds, capsys):
    """The wave layer's backward (fwdbwd - fwd) at most 2.5x its forward. The sweep measures the two
    passes minutes apart, so its ratio scatters by +-0.5; here they are interleaved call by call.
    Bound 2.8 (WAVEBENCH_BWD_RATIO_MAX): room for noise above the 2.1-2.3 measured this way."""
    bound = ratio_bounds["backward"]
    fns = {"fwd": build_cell("layer", "fwd", n, "wave"), "fwdbwd": build_cell("layer", "fwdbwd", n, "wave")}
    med = interleaved_medians(fns, ROUNDS if n <= 1024 else 9, cell_timer)
    ratio = (med["fwdbwd"] - med["fwd"]) / med["fwd"]
    with capsys.disabled():
        print(f"\n[backward ratio] wave layer N={n}: fwd {med['fwd'] * 1e3:.1f} ms, "
              f"fwdbwd {med['fwdbwd'] * 1e3:.1f} ms, backward / forward = {ratio:.2f} (bound {bound})")
    assert ratio < bound, f"wave layer backward is {ratio:.2f}x its forward at N={n} (bound {bound})"
