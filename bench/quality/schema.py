"""curves.csv and final.csv, the long-format sources of every table and plot of a quality run, and how a row
names its job (method, seed, peak LR)."""
from __future__ import annotations

import math

CURVE_COLUMNS = [
    "method", "seed", "step", "tokens",  # tokens: training target tokens seen so far (all ranks)
    "split",                             # train (mean over the last log interval) | val | test (best-val weights)
    "loss", "ppl", "bpc", "acc",         # token-weighted; bpc via the split's tokens per character
    "lr", "wall_s",                      # wall_s: job time so far, evaluation included
    "peak_lr",                           # the job's peak learning rate (a job = method, seed, peak_lr)
]

FINAL_COLUMNS = [
    "method", "seed",
    "test_loss", "test_ppl", "test_bpc", "test_acc",      # token-weighted, best-validation weights
    "test_batch_mean_loss", "test_batch_mean_ppl",        # the paper's metric: mean of per-batch means, exp(min(., 20))
    "params", "tokens_per_s", "wall_s", "peak_mem_mb", "best_step", "nonfinite_steps",
    # extras
    "best_val_loss", "best_val_ppl", "steps", "tokens", "train_s", "d_ff", "mem_method",
    "peak_lr",                                            # the job's peak learning rate (--lr or an --lr-sweep value)
    "oom",                                                # 1: the job ran out of memory (NaN test metrics), else 0
]


def lr_of(row: dict, default: float = math.nan) -> float:
    """A final/curve row's peak LR (`default` for a row of a file without the column)."""
    return float(row.get("peak_lr") or default)


def same_lr(a: float, b: float) -> bool:
    """Two peak LRs, one read back from a CSV, are the same (NaN, unknown, matches NaN)."""
    return math.isclose(a, b, rel_tol=1e-9) or (math.isnan(a) and math.isnan(b))


def is_job(row: dict, method: str, seed: int, lr: float) -> bool:
    """The row is of job (method, seed, lr); a row without peak_lr counts as `lr`."""
    return row["method"] == method and int(float(row["seed"])) == seed and same_lr(lr_of(row, lr), lr)


def planned_tokens(env: dict) -> int:
    """Token positions a run's plan trains each model on: steps x batch x seq_len (from its env.json)."""
    p = (env.get("settings") or {}).get("preset") or {}
    return int((env.get("plan") or {}).get("total_steps", 0)) * int(p.get("batch_size", 0)) * int(p.get("seq_len", 0))
