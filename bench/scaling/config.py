"""The sweep configuration: one dataclass (stored in env.json as "sweep", reused by --resume), the
per-device defaults (the reasons for them: docs/method.md), and the --quick preset.

The CPU defaults aim at about 5 minutes for `python -m bench.scaling --max-len 32768` on this
project's 2-core machine; on CUDA (H200-class) batch 8 gives short lengths enough work per launch,
and bfloat16 is the dtype FlashAttention-class kernels are measured in.
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


def default_threads(local_world: int = 1) -> int:
    """All cores for one process; shared out when several ranks run on one CPU."""
    cores = psutil.cpu_count(logical=True) or torch.get_num_threads()
    return max(1, cores // max(1, local_world)) if local_world > 1 else torch.get_num_threads()
