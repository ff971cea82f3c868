"""bench.scaling: latency, memory and throughput of Wave Field attention vs softmax attention over N.

Layout (each file holds one thing):
    cli.py          flags, configuration (defaults, --quick, --resume), the run   (python -m bench.scaling)
    config.py       SweepConfig and the per-device defaults (and why)
    registry.py     the method registry: one Method record per benchmarked method
    builders.py     per cell: inputs + a ready-to-call closure, for core / layer / model levels
    checks.py       correctness gate: each method vs a float64 reference at N=257 before timing
    costs.py        cost model (FLOPs, minimum bytes) and roofline
    footprint.py    peak-memory estimates used to skip cells that cannot fit
    budget.py       the budget predictor (fit of log time vs log N; skip decisions)
    grid.py         cell spec, CSV key, run order, rank assignment
    sweep.py        the engine: gates, warm-up, memory, interleaved timing, one row per cell
    results.py      timings.csv writing / reading / merging of torchrun parts
    schema.py       the timings.csv columns
    summary.py, plots.py  summary.md and plots/ derived from timings.csv (separate owners)
The timing and memory protocols themselves live in bench/common/timing.py and memory.py.
"""
