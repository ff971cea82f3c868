"""The sweep configuration: one dataclass (stored in env.json as "sweep", reused by --resume), the
per-device defaults, and the --quick preset.

Why these defaults
- Run order (both devices): the first phase measures the methods that answer the published
  claims (wave, the FFT floor, SDPA, and naive softmax where it fits) at every level, pass and
  length; the extras (wave-field, wave-scan, pinned backends, ...) get the time left after it. At
  the core level, forward pass (what the published claims count), wave, the floor and SDPA are
  never skipped for time while they fit memory: over a budget they run with one warm-up call and
  one timed call instead.
- CPU (this project's 2-core machine; `python -m bench.scaling --max-len 32768` should finish in
  about 5 minutes): batch 1, float32, every level and pass, min_run_time 0.2 s / min_reps 5,
  one warm-up call (which is also the memory-measurement call), an 8 s budget per cell (a cell
  predicted over it is skipped at that length and above, unless it is protected as above), a
  small LM (D=256, 2 layers, the published width at a third of its depth) and a 240 s
  whole-sweep budget: each (level, pass) gets a share of what is left (core fwd 3/8 of it, the
  others 1/8 each, unused time rolling over), so every level keeps its shorter lengths and only
  long cells are cut. Summary and plots take 10-20 s more.
- CUDA (H200-class): batch 8 (enough work per launch for short lengths), bfloat16 (the dtype
  FlashAttention-class kernels are measured in; wave FFT math stays float32), 3 warm-up calls,
  min_run_time 0.2 s / min_reps 10, 30 s per cell, the published LM size (D=256, 6 layers), and
  the same 240 s whole-sweep budget, so the default run ends within about 5 minutes.
- Memory budget: 60% of available RAM on CPU, 85% of free GPU memory on CUDA.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import psutil
import torch

from bench.scaling.schema import LEVELS, PASSES



@dataclass
class SweepConfig:
    device: str
    dtype: str
    batch: int
    heads: int
    head_dim: int
    field_stride: float
    methods: list[str]
    levels: list[str]
    passes: list[str]
    seq_lens: list[int]
    floor: bool
    warmup: int
    min_run_time: float
    min_reps: int
    seed: int
    threads: int
    time_budget: float
    mem_budget_gb: float
    total_budget: float | None
    model_dim: int
    model_layers: int
    vocab: int
    quick: bool

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SweepConfig":
        names = {f.name for f in fields(cls)}
        missing = names - set(data)
        if missing:
            raise KeyError(f"missing {', '.join(sorted(missing))}")
        return cls(**{k: data[k] for k in names})


DEVICE_DEFAULTS = {
    "cpu": dict(batch=1, dtype="float32", levels=list(LEVELS), passes=list(PASSES), warmup=1, min_run_time=0.2,
                min_reps=5, time_budget=8.0, total_budget=240.0, model_dim=256, model_layers=2, mem_fraction=0.6),
    "cuda": dict(batch=8, dtype="bfloat16", levels=list(LEVELS), passes=list(PASSES), warmup=3, min_run_time=0.2,
                 min_reps=10, time_budget=30.0, total_budget=240.0, model_dim=256, model_layers=6, mem_fraction=0.85),
}

# --quick: a tiny grid for smoke tests and CI (seconds on a 2-core CPU)
QUICK = dict(seq_lens=[256, 512], heads=2, head_dim=16, batch=1, warmup=1, min_run_time=0.02, min_reps=3,
             time_budget=2.0, total_budget=None, model_dim=32, model_layers=1)

COMMON_DEFAULTS = dict(heads=8, head_dim=64, field_stride=4.0, min_len=512, max_len=32768, seed=0, vocab=256)


def default_mem_budget_gb(device: torch.device, fraction: float) -> float:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return round(fraction * free / 1e9, 2)
    return round(fraction * psutil.virtual_memory().available / 1e9, 2)


def default_threads(local_world: int = 1) -> int:
    """All cores for one process; shared out when several ranks run on one CPU."""
    cores = psutil.cpu_count(logical=True) or torch.get_num_threads()
    return max(1, cores // max(1, local_world)) if local_world > 1 else torch.get_num_threads()
