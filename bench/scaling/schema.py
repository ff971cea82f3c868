"""The long-format timings.csv schema: the single source every table and plot is derived from.

One row per cell (method x level x pass x seq_len [x batch/heads/head_dim/dtype/device]).
Written and flushed as each cell finishes; a resumed run skips cells whose key is present.
"""
from __future__ import annotations

# Identity of a cell: two rows with the same key are the same measurement.
KEY_COLUMNS = ["method", "level", "pass", "device", "dtype", "batch", "heads", "head_dim", "seq_len"]

COLUMNS = KEY_COLUMNS + [
    "d_model",        # layer/model width (heads * head_dim)
    "field_stride",   # wave methods: cells per token s; empty for softmax
    "status",         # ok | oom | skipped | error
    "reason",         # why skipped / oom / error (one line); when ok, why it has fewer repetitions
    "median_ms", "p20_ms", "p80_ms",
    "reps",           # timed repetitions behind the percentiles
    "peak_mem_mb",    # peak bytes above the baseline allocated before the cell (see mem_method)
    "reserved_mem_mb",  # CUDA: max_memory_reserved; CPU: empty
    "device_used_mb",   # CUDA: the device's used memory after the call, from NVML (every process and
                        # the CUDA context included: what nvidia-smi shows); CPU: empty
    "mem_method",     # how peak_mem_mb was measured (cuda-max-allocated | torch-profiler | estimate)
    "flops",          # cost-model FLOPs of one call (docs/method.md, "Cost model")
    "bytes",          # minimum bytes moved by one call (inputs read once, outputs written once)
    "tflops",         # flops / median time
    "gbps",           # bytes / median time, GB/s
    "roofline_frac",  # max(flops/peak_flops, bytes/peak_bw) / time, where the peak is known
    "over_mem_bound", # time / (bytes / copy bandwidth): 1.0 = at the memory roofline measured in this run
    "copy_gbps",      # device-to-device copy bandwidth measured when the sweep started (read + write)
    "tokens_per_s",   # batch * seq_len / median time
    "backend",        # the kernel that actually ran (e.g. cpu-flash, flash, cufft, pocketfft)
    "rank",           # torch.distributed rank that measured the cell (0 when single process)
    "finished_at",    # ISO time the row was written
    "setup_s",        # seconds to build the cell and warm it up before timing (for compiled methods
                      # this holds torch.compile's compile time, which the timings exclude)
]

STATUSES = ("ok", "oom", "skipped", "error")
LEVELS = ("core", "layer", "model")
PASSES = ("fwd", "fwdbwd")
