"""The long-format timings.csv schema, the single source every table and plot is derived from: one
row per cell, written as each cell finishes (columns: docs/method.md, "Results layout")."""
from __future__ import annotations

# Identity of a cell: two rows with the same key are the same measurement.
KEY_COLUMNS = ["method", "level", "pass", "device", "dtype", "batch", "heads", "head_dim", "seq_len"]

COLUMNS = KEY_COLUMNS + [
    "d_model", "field_stride", "status", "reason", "median_ms", "p20_ms", "p80_ms", "reps",
    "peak_mem_mb", "reserved_mem_mb", "device_used_mb", "mem_method", "flops", "bytes", "tflops", "gbps",
    "roofline_frac",
    "over_mem_bound",  # time / (bytes / copy bandwidth): 1.0 = at the memory roofline measured in this run
    "copy_gbps",  # device-to-device copy bandwidth measured when the sweep started (read + write)
    "tokens_per_s", "backend", "rank", "finished_at", "setup_s",
]

STATUSES = ("ok", "oom", "skipped", "error")
LEVELS = ("core", "layer", "model")
PASSES = ("fwd", "fwdbwd")
