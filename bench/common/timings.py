"""timings.csv as data for the scaling summary, its plots, the regression gate and the results page: cells =
aggregate(load_timings(run_dir)), one row per (level, pass, config, method, N); panels, series, fits, method kinds."""
from __future__ import annotations

import functools
import math
from contextlib import suppress
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from bench.common.cli import UsageError
from bench.common.files import SCHEMAS, read_table
from bench.scaling.schema import COLUMNS, LEVELS, PASSES

KINDS = ("wave", "softmax", "peer", "reference")
NUMERIC = ["seq_len", "median_ms", "p20_ms", "p80_ms", "peak_mem_mb", "tflops", "roofline_frac", "tokens_per_s",
           "rank", "batch", "heads", "head_dim", "setup_s", "reps", "device_used_mb", "over_mem_bound"]
CONFIG_FIELDS = (("device", ""), ("dtype", ""), ("batch", "B="), ("heads", "H="), ("head_dim", "d="))
CELL = ["level", "pass", "config", "method", "seq_len"]
# Name prefixes for methods the registry does not list (older runs, hand-made files).
_PREFIX_KIND = (("wave", "wave"), ("softmax", "softmax"), ("peer", "peer"), ("fft-floor", "reference"))


@functools.cache
def _registry() -> dict[str, str]:
    """{method: kind} of the scaling registry in its order ({} when it cannot be imported, e.g. without torch)."""
    try:
        from bench.scaling.registry import METHODS
    except Exception:  # the registry imports torch and the kernels; data-only readers must not need them
        return {}
    return {m.name: m.kind for m in METHODS.values()}


def method_kind(method: str) -> str:
    """wave | softmax | peer | reference | other: the registry's kind, else the name's prefix."""
    return _registry().get(method) or next((k for prefix, k in _PREFIX_KIND if method.startswith(prefix)), "other")


def order_methods(methods: Iterable[str]) -> list[str]:
    """Wave, softmax, peers, references, others; registry order inside each kind, then by name."""
    known = {m: i for i, m in enumerate(_registry())}
    kinds = {k: i for i, k in enumerate(KINDS)}

    def key(m: str) -> tuple[int, int, str]:
        return kinds.get(method_kind(m), len(kinds)), known.get(m, len(known)), m
    return sorted(set(methods), key=key)


def config_label(get) -> str:
    """'cpu float32 B=1 H=8 d=64' from whatever of device, dtype, batch, heads, head_dim `get` knows."""
    parts = []
    for name, prefix in CONFIG_FIELDS:
        value = get(name)
        if value is not None and str(value).strip().lower() not in ("", "nan", "inf", "-inf"):
            with suppress(TypeError, ValueError):
                value = int(float(value)) if prefix else value  # B=8, not B=8.0
            parts.append(f"{prefix}{value}")
    return " ".join(parts)


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows of a timings.csv (strings) as a frame: every column present, numbers parsed, statuses
    normalised; an ok row without a positive median becomes status no-time."""
    df = pd.DataFrame(rows, columns=list(dict.fromkeys(COLUMNS + [c for r in rows[:1] for c in r])))
    df[NUMERIC] = df[NUMERIC].apply(pd.to_numeric, errors="coerce")
    for col in sorted(SCHEMAS["timings.csv"][1]):
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str).str.strip()
    df["status"] = df["status"].str.lower().replace("", "error")
    df["rank"] = df["rank"].fillna(0)
    df = df[(df["method"] != "") & df["seq_len"].notna()].copy()
    df["seq_len"] = df["seq_len"].astype(int)
    bad = (df["status"] == "ok") & ~(df["median_ms"] > 0)
    df.loc[bad, ["status", "reason"]] = ["no-time", "status ok but no positive median_ms"]
    df["config"] = [config_label(r.get) for r in df[[f for f, _ in CONFIG_FIELDS]].to_dict("records")]
    return df


def load_timings(run: str | Path, cut: str = "drop", required: tuple[str, ...] | None = None) -> pd.DataFrame:
    """A run folder's timings.csv (or the CSV itself), validated; a cut last row is left out (cut="drop") or refused."""
    path = Path(run)
    path = path / "timings.csv" if path.is_dir() else path
    if not path.is_file():
        raise UsageError(f"{str(run)!r} holds no timings.csv (expected a folder written by python -m bench.scaling)")
    # whatever the file is called (regress compares any two CSV paths)
    return frame(read_table(path, cut=cut, required=required, schema="timings.csv"))


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (level, pass, config, method, seq_len) cell, with n_ranks. Per rank the last row written wins
    (a resumed run may repeat a key). Across ranks the slowest ok rank is kept (a synchronous step waits for it)
    and the peak memory is the largest; without an ok rank the status is the first of oom, error, other, skipped."""
    if df.empty:
        return df.assign(n_ranks=0)
    df = df.sort_values("finished_at", kind="stable").drop_duplicates(CELL + ["rank"], keep="last")
    df["_prio"] = df["status"].map({"ok": 0, "oom": 1, "error": 2, "skipped": 4}).fillna(3)
    df["_slow"] = -df["median_ms"].fillna(-np.inf)
    n_ranks = df.groupby(CELL)["rank"].nunique().rename("n_ranks")
    peak = df[df["status"] == "ok"].groupby(CELL)["peak_mem_mb"].max().rename("_peak")
    best = df.sort_values(["_prio", "_slow"], kind="stable").drop_duplicates(CELL, keep="first")
    best = best.merge(n_ranks.reset_index(), on=CELL).merge(peak.reset_index(), on=CELL, how="left")
    best["peak_mem_mb"] = best["_peak"].where(best["status"] == "ok")
    return best.drop(columns=["_prio", "_slow", "_peak"]).reset_index(drop=True)


def _in_order(values: pd.Series, known: Sequence[str]) -> list[str]:
    """The distinct values, those of `known` first in its order, then the rest sorted."""
    present = set(values)
    return [v for v in known if v in present] + sorted(present - set(known))


def panels(cells: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(level, pass, config, cells) in level/pass order; config is '' when the level/pass has one."""
    if cells.empty:
        return []
    out = []
    for level in _in_order(cells["level"], LEVELS):
        for pas in _in_order(cells["pass"], PASSES):
            sub = cells[(cells["level"] == level) & (cells["pass"] == pas)]
            configs = sorted(sub["config"].unique())
            out += [(level, pas, cfg if len(configs) > 1 else "", sub[sub["config"] == cfg]) for cfg in configs]
    return out


def panel_slug(level: str, pas: str, config: str) -> str:
    """File-name part for a panel: core_fwd, or core_fwd_cuda-bfloat16-B8-H8-d64 with several configs."""
    slug = "".join(c if c.isalnum() else "-" for c in config.replace("=", "")).strip("-")
    return f"{level}_{pas}_{slug}" if config else f"{level}_{pas}"


def ok_series(sub: pd.DataFrame, method: str, col: str = "median_ms") -> pd.Series:
    """col over seq_len for the ok cells of one method (sorted, finite values only)."""
    s = sub[(sub["method"] == method) & (sub["status"] == "ok")].set_index("seq_len")[col].sort_index()
    return s[np.isfinite(s.astype(float))].astype(float)


def times(cells: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, dict[int, float]]]:
    """{(level, pass, config): {method: {N: seconds}}} of the ok cells."""
    out: dict = {}
    ok = cells[cells["status"] == "ok"]
    for (level, pas, config, method), g in ok.groupby(["level", "pass", "config", "method"]):
        seconds = {int(n): float(ms) / 1e3 for n, ms in zip(g["seq_len"], g["median_ms"])}
        out.setdefault((level, pas, config), {})[method] = seconds
    return out


def fit_exponent(ns: Sequence[float], ts: Sequence[float]) -> dict[str, Any]:
    """Least-squares slope of log(t) against log(N), with R^2 and the length range used. Points with N <= 0 or
    t <= 0 are left out; fewer than two distinct lengths give NaN slope and R^2."""
    ns, ts = np.asarray(ns, float), np.asarray(ts, float)
    keep = (ns > 0) & (ts > 0) & np.isfinite(ts)
    ns, ts = ns[keep], ts[keep]
    out = {"slope": math.nan, "r2": math.nan, "n_min": ns.min() if len(ns) else math.nan,
           "n_max": ns.max() if len(ns) else math.nan, "points": int(len(ns))}
    if len(np.unique(ns)) < 2:
        return out
    x, y = np.log(ns), np.log(ts)
    slope, icpt = np.polyfit(x, y, 1)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    ss_res = float(((y - (slope * x + icpt)) ** 2).sum())
    out.update(slope=float(slope), intercept=float(icpt), r2=1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan)
    return out


def fmt(x: float | None) -> str:
    """Three significant figures (at least) without exponents, thousands separated; n/a for a missing or non-finite
    value."""
    if x is None or not isinstance(x, (int, float, np.number)) or not math.isfinite(x):
        return "n/a"
    a = abs(x)
    if a == 0:
        return "0"
    if a < 1e-4:  # where #.3g would switch to an exponent: three significant figures in plain decimals
        return format(x, f".{2 - math.floor(math.log10(a))}f")
    # '#': trailing zeros are significant figures too (0.280 next to 0.626, not 0.28)
    return format(x, ",.0f" if a >= 100 else ".1f" if a >= 10 else ".2f" if a >= 1 else "#.3g")


def fmt_x(x: float | None) -> str:
    return "n/a" if fmt(x) == "n/a" else f"{fmt(x)}x"
