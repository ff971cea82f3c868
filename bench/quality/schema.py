"""curves.csv and final.csv: the long-format sources every table and plot of a quality run comes from.

Both are appended and flushed row by row, so an interrupted run keeps what it measured.
"""
from __future__ import annotations

import csv
from pathlib import Path

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
]


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))

