"""Across-seed statistics: mean, spread and a two-sided 95% Student-t interval of the mean,
mean +- t_{0.975, n-1} * std / sqrt(n) with std at ddof = 1 (one seed gives no interval)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Two-sided 95% Student-t quantiles t_{0.975, df}; between table entries the smaller df is used
# (a slightly wider, conservative interval).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101,
         19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(df: int) -> float:
    return 1.960 if df > 120 else _T975[max(k for k in _T975 if k <= df)]


@dataclass
class Spread:
    n: int
    mean: float
    std: float        # sample std (ddof = 1); nan for one value
    min: float
    max: float
    ci_low: float     # 95% t interval of the mean; nan for one value
    ci_high: float

    def fmt(self, digits: int = 3, pct: bool = False) -> str:
        """'mean ± std [min, max]' (just the mean for one seed)."""
        k = 100.0 if pct else 1.0
        f = lambda v: f"{v * k:.{digits}f}"  # noqa: E731
        if self.n < 2:
            return f(self.mean)
        return f"{f(self.mean)} ± {f(self.std)} [{f(self.min)}, {f(self.max)}]"

    def fmt_ci(self, digits: int = 3, interval: bool = True) -> str:
        """'1.44 (95% CI 1.09 to 1.79, 3 seeds)': the mean with its 95% interval; without `interval`,
        '50.5 (min-max 50.1 to 50.9, 3 seeds)'. '-' for no value."""
        if self.n == 0:
            return "-"
        if self.n < 2:
            return f"{self.mean:.{digits}f} (1 seed{': no interval' if interval else ''})"
        lo, hi = (self.ci_low, self.ci_high) if interval else (self.min, self.max)
        what = "95% CI " if interval else "min-max "
        return f"{self.mean:.{digits}f} ({what}{lo:.{digits}f} to {hi:.{digits}f}, {self.n} seeds)"


def spread(values: Sequence[float]) -> Spread:
    v, nan = [float(x) for x in values], math.nan
    n = len(v)
    mean = sum(v) / n if v else nan
    if n < 2:
        return Spread(n, mean, nan, mean, mean, nan, nan)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = t975(n - 1) * std / math.sqrt(n)
    lo, hi = (nan, nan) if math.isnan(mean) else (min(v), max(v))  # min/max of a list with NaN depend on its order
    return Spread(n, mean, std, lo, hi, mean - half, mean + half)


def paired_ratios(num: dict, den: dict) -> list[float]:
    """num[seed] / den[seed] over the seeds both have."""
    return [num[k] / den[k] for k in sorted(set(num) & set(den)) if den[k]]
