"""What the curves of a quality run say beyond the final test numbers: convergence, equal wall-clock and
the ratio against tokens (docs/quality.md). curves.csv rows in, numbers out."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.quality.schema import is_job, lr_of

RATIO_BASELINES = ("standard", "standard-matched")  # the denominators of every wave / baseline ratio
WAVE_METHODS = ("wave", "wave-scaled-pos")  # the numerators: wave and its ablation (bench.quality.methods)
TAIL = 0.10  # the last 10% of training tokens
IMPROVING, FLATTENING = 0.01, 0.002  # relative validation-loss fall over the tail that reads as still improving


def job_curve(curves: list[dict], method: str, seed: int, lr: float, split: str = "val") -> list[dict]:
    """The rows of one job and split, in step order (rows without peak_lr count as `lr`)."""
    return sorted((r for r in curves if r["split"] == split and is_job(r, method, seed, lr)),
                  key=lambda r: int(float(r["step"])))


def interp(rows: list[dict], xkey: str, x: float) -> float:
    """Validation loss at x (tokens or wall_s) by linear interpolation; NaN outside the measured span."""
    xs, ys = (np.array([float(r[k]) for r in rows]) for k in (xkey, "loss"))
    if len(xs) == 0 or x < xs[0] - 1e-9 or x > xs[-1] + 1e-9:
        return math.nan
    return float(np.interp(x, xs, ys))


@dataclass
class Convergence:
    steps: int
    best_step: int
    val_fall: float      # (L(0.9 T) - L(T)) / L(0.9 T) on validation, T = the job's tokens; NaN if not measured
    train_change: float  # least-squares train-loss change over the last 10% of steps (nats; < 0: still falling)

    @property
    def verdict(self) -> str:
        if math.isnan(self.val_fall):
            return "not measured (too few evaluations)"
        if self.val_fall >= IMPROVING:
            return "still improving"
        return "flattening" if self.val_fall >= FLATTENING else "flat"


def convergence(curves: list[dict], method: str, seed: int, lr: float, row: dict) -> Convergence:
    val = job_curve(curves, method, seed, lr)
    steps, tokens = (int(float(row.get(k) or 0)) for k in ("steps", "tokens"))
    fall = math.nan
    if val and tokens:
        start, end = interp(val, "tokens", (1 - TAIL) * tokens), float(val[-1]["loss"])
        fall = (start - end) / start if start and math.isfinite(start) else math.nan
    train = [r for r in job_curve(curves, method, seed, lr, "train") if int(float(r["step"])) >= (1 - TAIL) * steps]
    change = math.nan
    if len(train) >= 3:
        x, y = (np.array([float(r[k]) for r in train]) for k in ("step", "loss"))
        change = float(np.polyfit(x, y, 1)[0] * TAIL * steps)
    return Convergence(steps, int(float(row.get("best_step") or 0)), fall, change)


def equal_wall(curves: list[dict], wave: dict[int, dict], base: dict[int, dict]) -> tuple[list[float], float]:
    """(wave / base validation PPL per seed at the shorter job's last evaluation time, the mean of those times)."""
    ratios, times = [], []
    for w, b in _curve_pairs(curves, wave, base):
        if not w or not b:
            continue
        t = min(float(w[-1]["wall_s"]), float(b[-1]["wall_s"]))
        lw, lb = interp(w, "wall_s", t), interp(b, "wall_s", t)
        if math.isfinite(lw) and math.isfinite(lb):
            ratios.append(math.exp(lw - lb))
            times.append(t)
    return ratios, (sum(times) / len(times) if times else math.nan)


def ratio_by_tokens(curves: list[dict], wave: dict[int, dict], base: dict[int, dict]) -> list[tuple[int, list[float]]]:
    """[(tokens, [wave / base validation PPL per seed])] at the evaluations both jobs of a seed share."""
    out: dict[int, list[float]] = {}
    for pair in _curve_pairs(curves, wave, base):
        w, b = ({int(float(r["tokens"])): float(r["loss"]) for r in c} for c in pair)
        for tok in sorted(set(w) & set(b)):
            out.setdefault(tok, []).append(math.exp(w[tok] - b[tok]))
    return sorted(out.items())


def _curve_pairs(curves: list[dict], wave: dict[int, dict], base: dict[int, dict]):
    """(wave's validation curve, the baseline's) of every seed both have (final.csv rows name the jobs)."""
    for seed in sorted(set(wave) & set(base)):
        yield tuple(job_curve(curves, rows[seed]["method"], seed, lr_of(rows[seed])) for rows in (wave, base))
