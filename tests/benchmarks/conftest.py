"""Shared pieces of the pytest-benchmark regression timings; the grid, the timing and the three choices
that make the numbers hold on a shared 2-core machine are in docs/regression.md.

The cells are the bench.scaling sweep's own (built by its method registry), so the gate times exactly
what the sweep times. CELLS runs every method of one length back to back: the gate divides cells
measured seconds apart, never absolute times across runs. With one torch thread the timer is the
process's CPU time (time spent descheduled is not counted); with several, CPU time would add up the
threads and their spin-waits, so the wall clock is used.
Knobs (environment): WAVEBENCH_CELL_S, WAVEBENCH_MIN_ROUNDS, WAVEBENCH_THREADS (0: torch's default), and
test_floor_ratio.py's bounds WAVEBENCH_FLOOR_RATIO_MAX, WAVEBENCH_BWD_RATIO_MAX.
"""
from __future__ import annotations

import math
import os
import sys
import time

import pytest
import torch

from bench.common.allocator import retain_freed_memory
from bench.common.cli import UsageError, env_value, positive_float, positive_int, thread_count
from bench.common.timing import warm_up
from bench.scaling.grid import CellSpec
from bench.scaling.registry import METHODS

BATCH, HEADS, HEAD_DIM, STRIDE = 1, 8, 64, 4.0
DTYPE, DEVICE = torch.float32, torch.device("cpu")
LENGTHS = (256, 512, 1024, 2048)
PASSES = ("fwd", "fwdbwd")
METHOD_NAMES = ("wave", "wave-field", "softmax-sdpa", "softmax-naive")

try:  # a bad knob is one line naming it, not an ImportError of this file
    CELL_S = env_value("WAVEBENCH_CELL_S", positive_float, "0.5")
    MIN_ROUNDS = env_value("WAVEBENCH_MIN_ROUNDS", positive_int, "7")
    THREADS = env_value("WAVEBENCH_THREADS", thread_count, "1") or torch.get_num_threads()  # 0: torch's, as --threads
    # test_floor_ratio.py's bounds: wave core / FFT floor, and wave layer backward / forward
    RATIO_BOUNDS = {"floor": env_value("WAVEBENCH_FLOOR_RATIO_MAX", positive_float, "1.5"),
                    "backward": env_value("WAVEBENCH_BWD_RATIO_MAX", positive_float, "2.8")}
except UsageError as exc:
    print(f"tests/benchmarks: error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
MAX_ROUNDS, WARMUP_CALLS = 400, 2
TIMER = time.process_time if THREADS == 1 else time.perf_counter
HERE = os.path.dirname(os.path.abspath(__file__))

# (pass, N, method) in run order: per pass and length, every method back to back
CELLS = [(pas, n, m) for pas in PASSES for n in LENGTHS for m in METHOD_NAMES]


def pytest_generate_tests(metafunc):
    """A test that asks for `cell` runs once per grid cell, ids like fwd-N1024-softmax-sdpa."""
    if "cell" in metafunc.fixturenames:
        metafunc.parametrize("cell", CELLS, ids=[f"{pas}-N{n}-{m}" for pas, n, m in CELLS])


def pytest_collection_modifyitems(config, items):
    """Every benchmark here uses TIMER (a marker on the item beats the module's plain one)."""
    for item in items:
        if str(item.path).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.benchmark(timer=TIMER))


@pytest.fixture(scope="session")
def allocator() -> str:
    return retain_freed_memory()


@pytest.fixture(autouse=True)
def bench_threads():
    """torch threads for the benchmarks only (the default suite keeps its own setting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def _spec(level: str, pas: str, n: int) -> CellSpec:
    return CellSpec(level=level, pass_=pas, batch=BATCH, heads=HEADS, head_dim=HEAD_DIM, seq_len=n,
                    device=DEVICE, dtype=DTYPE, field_stride=STRIDE)


@pytest.fixture
def time_cell(benchmark, allocator):
    """time_cell(level, cell): build, warm up, size and time one (pass, N, method) cell at `level`
    ("core" | "layer") with benchmark.pedantic; record it in extra_info."""
    def run(level: str, cell: tuple[str, int, str]) -> None:
        pas, n, method_name = cell
        method, spec = METHODS[method_name], _spec(level, pas, n)
        built = method.build(spec)  # inputs and modules made here, outside the timed closure
        estimate = warm_up(built.fn, DEVICE, WARMUP_CALLS, clock=TIMER)
        rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(CELL_S / max(estimate, 1e-6))))
        cost = method.cost(spec)
        benchmark.group = f"{level}-{pas}-N{n}"
        benchmark.extra_info.update({
            "method": method_name, "level": level, "pass": pas, "seq_len": n,
            "batch": BATCH, "heads": HEADS, "head_dim": HEAD_DIM, "d_model": spec.d_model,
            "field_stride": STRIDE if method.kind == "wave" else None,
            "dtype": str(DTYPE).removeprefix("torch."), "device": DEVICE.type, "threads": torch.get_num_threads(),
            "timer": TIMER.__name__, "torch": torch.__version__, "backend": built.backend(),
            "flops": cost.flops, "bytes": cost.bytes, "rounds": rounds,
        })
        benchmark.pedantic(built.fn, rounds=rounds, iterations=1, warmup_rounds=0)
        if benchmark.stats is None:  # --benchmark-disable: the closure ran once as a smoke test, nothing timed
            return
        median_s = benchmark.stats.stats.median
        benchmark.extra_info["gflops"] = cost.flops / median_s / 1e9 if median_s > 0 else None
        benchmark.extra_info["allocator"] = allocator
    return run


@pytest.fixture
def build_cell():
    """build_cell(level, pass, N, method) -> the cell's ready closure (for tests that time by hand)."""
    return lambda level, pas, n, method_name: METHODS[method_name].build(_spec(level, pas, n)).fn


@pytest.fixture
def ratio_bounds() -> dict:
    return RATIO_BOUNDS


@pytest.fixture
def cell_timer():
    """The clock the benchmarks here use (process CPU time with one thread, else wall time)."""
    return TIMER
