"""summary.md for a scaling run: tables, scaling exponents, crossovers, floor ratios and the claims
audit, all derived from the run's long-format timings.csv (the single source) and env.json.

    python -m bench.scaling.summary RUN_DIR     # regenerates RUN_DIR/summary.md and RUN_DIR/plots/

Copes with any mix of statuses, missing methods, a single length, NaNs and rows from several
ranks: when several ranks measured one cell the slowest rank's timing is reported (a synchronous
step waits for it) and the peak memory is the largest over ranks.
"""
from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.common.cli import ArgParser, UsageError, run_cli
from bench.common.env import env_get, read_env as load_env  # noqa: F401 - load_env is used by plots.py too
from bench.scaling.claims import CLAIM_LENGTHS, claims_section
from bench.scaling.schema import COLUMNS, LEVELS, PASSES

CONFIG_COLUMNS = ["device", "dtype", "batch", "heads", "head_dim"]
NUMERIC = ["seq_len", "median_ms", "p20_ms", "p80_ms", "peak_mem_mb", "tflops", "roofline_frac",
           "tokens_per_s", "rank", "batch", "heads", "head_dim", "setup_s"]
KNOWN_ORDER = ["wave", "wave-bhnd", "wave-compiled", "wave-scan", "wave-field", "softmax-sdpa", "softmax-sdpa-flash", "softmax-sdpa-cudnn",
               "softmax-sdpa-efficient", "softmax-sdpa-math", "softmax-flash-attn", "softmax-naive",
               "fft-floor", "fft-floor-field"]
FLOOR_PAIRS = [("wave", "fft-floor", 1.3), ("wave-field", "fft-floor-field", 1.5)]
FLOOR_RANGE = (2048, 32768)


def is_wave(m: str) -> bool:
    return m.startswith("wave")


def is_softmax(m: str) -> bool:
    return m.startswith("softmax")


def is_reference(m: str) -> bool:
    return m.startswith("fft-floor")


def order_methods(methods) -> list[str]:
    """Wave methods, then softmax methods, then references; known names in a fixed order."""
    def key(m):
        family = 0 if is_wave(m) else 1 if is_softmax(m) else 2 if is_reference(m) else 3
        return (family, KNOWN_ORDER.index(m) if m in KNOWN_ORDER else len(KNOWN_ORDER), m)
    return sorted(set(methods), key=key)


# ---------------------------------------------------------------------------------------------
# loading


def load_timings(run_dir: Path) -> pd.DataFrame:
    """timings.csv with every schema column present, numbers parsed and statuses normalised."""
    path = Path(run_dir) / "timings.csv"
    if not path.is_file():
        raise UsageError(f"{str(run_dir)!r} holds no timings.csv (expected a folder written by python -m bench.scaling)")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame(columns=COLUMNS)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot parse {path}: {exc}")
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ["method", "level", "pass", "device", "dtype", "status", "reason", "mem_method", "backend"]:
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str).str.strip()
    df["status"] = df["status"].str.lower().replace("", "error")
    df["rank"] = df["rank"].fillna(0)
    df = df[(df["method"] != "") & df["seq_len"].notna()].copy()
    df["seq_len"] = df["seq_len"].astype(int)
    # an "ok" row without a usable median cannot be tabulated as a time
    bad = (df["status"] == "ok") & ~(df["median_ms"] > 0)
    df.loc[bad, "status"] = "no-time"
    df.loc[bad, "reason"] = "status ok but no positive median_ms"
    return df


def _config_label(row) -> str:
    parts = [str(row[c]) for c in CONFIG_COLUMNS[:2]]
    for short, col in zip(("B", "H", "d"), CONFIG_COLUMNS[2:]):
        v = pd.to_numeric(row[col], errors="coerce")
        if pd.notna(v) and math.isfinite(v):
            parts.append(f"{short}={int(v)}")
    return " ".join(p for p in parts if p)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (level, pass, config, method, seq_len) cell.

    Per rank, the last row written wins (a resumed run may repeat a key). Across ranks, the
    slowest ok rank is kept; without any ok rank the status is the first of oom, error, other,
    skipped. Adds n_ranks and config (a readable label of device, dtype, B, H, d).
    """
    if df.empty:
        return df.assign(config="", n_ranks=0)
    df = df.copy()
    df["config"] = df.apply(_config_label, axis=1)
    df["_order"] = np.arange(len(df))
    if df["finished_at"].notna().any():
        df = df.sort_values(["finished_at", "_order"], na_position="first", kind="stable")
    cell = ["level", "pass", "config", "method", "seq_len"]
    df = df.drop_duplicates(cell + ["rank"], keep="last")
    prio = {"ok": 0, "oom": 1, "error": 2, "skipped": 4}
    df["_prio"] = df["status"].map(prio).fillna(3)
    df["_slow"] = -df["median_ms"].fillna(-np.inf)
    n_ranks = df.groupby(cell)["rank"].nunique().rename("n_ranks")
    peak = df[df["status"] == "ok"].groupby(cell)["peak_mem_mb"].max().rename("_peak")
    best = df.sort_values(["_prio", "_slow"], kind="stable").drop_duplicates(cell, keep="first")
    best = best.merge(n_ranks.reset_index(), on=cell).merge(peak.reset_index(), on=cell, how="left")
    best["peak_mem_mb"] = best["_peak"].where(best["status"] == "ok")
    return best.drop(columns=["_order", "_prio", "_slow", "_peak"])


def panels(cells: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(level, pass, config, cells) in level/pass order; config is '' when the level/pass has one."""
    out = []
    levels = [lv for lv in LEVELS if lv in set(cells["level"])] + sorted(set(cells["level"]) - set(LEVELS))
    passes = [p for p in PASSES if p in set(cells["pass"])] + sorted(set(cells["pass"]) - set(PASSES))
    for level in levels:
        for pas in passes:
            sub = cells[(cells["level"] == level) & (cells["pass"] == pas)]
            configs = sorted(sub["config"].unique())
            for cfg in configs:
                out.append((level, pas, cfg if len(configs) > 1 else "", sub[sub["config"] == cfg]))
    return out


def panel_slug(level: str, pas: str, config: str) -> str:
    """File-name part for a panel: core_fwd, or core_fwd_cuda-bfloat16-B8-H8-d64 with several configs."""
    slug = f"{level}_{pas}"
    if config:
        slug += "_" + "".join(c if c.isalnum() else "-" for c in config.replace("=", "")).strip("-")
    return slug


def ok_series(sub: pd.DataFrame, method: str, col: str = "median_ms") -> pd.Series:
    """col over seq_len for the ok cells of one method (sorted, finite values only)."""
    s = sub[(sub["method"] == method) & (sub["status"] == "ok")].set_index("seq_len")[col].sort_index()
    return s[np.isfinite(s.astype(float))].astype(float)


# ---------------------------------------------------------------------------------------------
# analysis


def fit_exponent(ns: Sequence[float], ts: Sequence[float]) -> dict[str, float]:
    """Least-squares slope of log(t) against log(N), with R^2 and the length range used.

    Needs two or more distinct lengths with positive times; otherwise slope and R^2 are NaN.
    """
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
    out["slope"] = float(slope)
    out["r2"] = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return out


def crossover(ns: Sequence[float], wave_ms: Sequence[float], soft_ms: Sequence[float]) -> dict[str, Any]:
    """Where wave becomes faster than softmax, over the lengths where both were measured.

    kind: 'always' (faster at every length), 'none' (at no length, or not at the longest),
    'cross' (first_n: the first measured length from which wave stays faster; n_star: the
    crossing interpolated in log-log between the bracketing lengths), or 'no-data'.
    """
    ns, w, s = (np.asarray(a, float) for a in (ns, wave_ms, soft_ms))
    order = np.argsort(ns)
    ns, ratio = ns[order], (s / w)[order]
    if len(ns) == 0:
        return {"kind": "no-data"}
    faster = ratio > 1
    if faster.all():
        return {"kind": "always", "n_lo": ns[0], "n_hi": ns[-1]}
    if not faster[-1]:
        return {"kind": "none", "n_lo": ns[0], "n_hi": ns[-1], "wave_faster_somewhere": bool(faster.any())}
    i = int(np.flatnonzero(~faster)[-1]) + 1  # first index of the final all-faster run
    n0, n1, r0, r1 = ns[i - 1], ns[i], ratio[i - 1], ratio[i]
    t = (0.0 - math.log(r0)) / (math.log(r1) - math.log(r0))  # log r0 <= 0 < log r1, so 0 <= t < 1
    n_star = math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))
    return {"kind": "cross", "first_n": n1, "n_star": n_star, "n_below": n0,
            "non_monotone": bool(faster[:i].any())}


def crossover_text(c: dict[str, Any]) -> str:
    kind = c["kind"]
    if kind == "no-data":
        return "no length with both ok"
    if kind == "always":
        return f"always faster in range ({int(c['n_lo'])}-{int(c['n_hi'])})"
    if kind == "none":
        extra = " (faster at some shorter lengths, not at the longest)" if c["wave_faster_somewhere"] else ""
        return f"none in range ({int(c['n_lo'])}-{int(c['n_hi'])}){extra}"
    extra = "; also faster at some shorter lengths" if c["non_monotone"] else ""
    return (f"~{c['n_star']:.0f} (log-log between {int(c['n_below'])} and {int(c['first_n'])}); "
            f"faster from {int(c['first_n'])} on{extra}")


# ---------------------------------------------------------------------------------------------
# formatting


def fmt(x: float) -> str:
    """About three significant figures without exponents."""
    if x is None or not math.isfinite(x):
        return "n/a"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_x(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{fmt(x)}x"


def _grid(sub: pd.DataFrame, methods: list[str], cell_fn) -> pd.DataFrame:
    """rows seq_len, columns methods; cell_fn(row) for ok rows, the status word otherwise, '' when absent."""
    ns = sorted(sub["seq_len"].unique())
    table = pd.DataFrame(index=pd.Index(ns, name="N"), columns=methods, dtype=object).fillna("")
    for _, row in sub.iterrows():
        if row["method"] in methods:
            table.loc[row["seq_len"], row["method"]] = cell_fn(row) if row["status"] == "ok" else row["status"]
    return table


def _latency_cell(row) -> str:
    med, lo, hi = row["median_ms"], row["p20_ms"], row["p80_ms"]
    if math.isfinite(lo) and math.isfinite(hi):
        return f"{fmt(med)} [{fmt(lo)}-{fmt(hi)}]"
    return fmt(med)


def speedup_table(sub: pd.DataFrame, methods: list[str]) -> pd.DataFrame | None:
    """Speedup of each wave method over each softmax method: softmax ms / wave ms (> 1 = wave faster)."""
    waves = [m for m in methods if is_wave(m)]
    softs = [m for m in methods if is_softmax(m)]
    if not waves or not softs:
        return None
    ns = sorted(sub["seq_len"].unique())
    status = {(r["method"], r["seq_len"]): r["status"] for _, r in sub.iterrows()}
    table = pd.DataFrame(index=pd.Index(ns, name="N"))
    for w in waves:
        tw = ok_series(sub, w)
        for s in softs:
            ts = ok_series(sub, s)
            col = []
            for n in ns:
                if n in tw.index and n in ts.index:
                    col.append(fmt_x(ts[n] / tw[n]))
                else:
                    why = [f"{m} {status[(m, n)]}" for m in (w, s) if status.get((m, n), "ok") != "ok"]
                    col.append(f"n/a ({', '.join(why)})" if why else "")
            table[f"{w} vs {s}"] = col
    return table


def _hardware_line(env: dict[str, Any], config: str) -> str:
    gpus = env.get("gpus") or []
    hw = ", ".join(str(g.get("name", "?")) for g in gpus if isinstance(g, dict)) if gpus else None
    hw = hw or env_get(env, "cpu_model", default="unknown hardware")
    threads = env_get(env, "torch_threads", "threads")
    bits = [config or "", hw, f"{threads} threads" if threads else ""]
    return "_Measured on: " + " | ".join(b for b in bits if b) + "_"


def header_lines(run_dir: Path, env: dict[str, Any], df: pd.DataFrame) -> list[str]:
    """Section 1: which run, which command, which hardware and software."""
    git = env.get("git") if isinstance(env.get("git"), dict) else {}
    sha = git.get("sha") or git.get("sha_short") or env_get(env, "git_sha", default="unknown")
    dirty = git.get("dirty", env.get("dirty"))
    dirty_txt = {True: "dirty: uncommitted changes", False: "clean"}.get(dirty, "dirty flag unknown")
    argv = env.get("argv")
    command = env_get(env, "command") or (shlex.join(map(str, argv)) if isinstance(argv, list) else argv) or "unknown"
    gpus = [g for g in (env.get("gpus") or []) if isinstance(g, dict)]
    gpu_txt = "; ".join(
        f"{g.get('name', '?')} (driver {g.get('driver', '?')}, {fmt(float(g['memory_total_mb']) / 1024)} GiB)"
        if g.get("memory_total_mb") else f"{g.get('name', '?')} (driver {g.get('driver', '?')})" for g in gpus
    ) or "none"

    def uniq(col):
        vals = sorted({str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
                       for v in df[col].dropna() if str(v) not in ("", "nan")})
        return ", ".join(vals) if vals else None

    def shape(name, col):
        v = env_get(env, name)
        return str(v) if v is not None else (uniq(col) or "unknown")

    items = [
        ("run", run_dir.resolve().name),
        ("git", f"{sha} ({dirty_txt})"),
        ("created", env_get(env, "created", default="unknown")),
        ("command", f"`{command}`"),
        ("device", env_get(env, "device") or uniq("device") or "unknown"),
        ("GPU", gpu_txt),
        ("CPU", f"{env_get(env, 'cpu_model', default='unknown')}, "
                f"{env_get(env, 'cpu_cores_physical', default='?')} physical / "
                f"{env_get(env, 'cpu_cores_logical', default='?')} logical cores, "
                f"{env_get(env, 'ram_total_gb', default='?')} GB RAM"),
        ("torch threads", env_get(env, "torch_threads", "threads", default="unknown")),
        ("software", f"python {env_get(env, 'python', default='?')}, torch {env_get(env, 'torch', default='?')}, "
                     f"CUDA {env_get(env, 'cuda', default='none')}, cuDNN {env_get(env, 'cudnn', default='none')}"),
        ("dtype", env_get(env, "dtype") or uniq("dtype") or "unknown"),
        ("batch / heads / head_dim", f"{shape('batch', 'batch')} / {shape('heads', 'heads')} / {shape('head_dim', 'head_dim')}"),
        ("memory method", env_get(env, "mem_method", "memory_method") or uniq("mem_method") or "unknown"),
        ("seed", env_get(env, "seed", default="unknown")),
        ("rows", f"{len(df)} in timings.csv; statuses: "
                 + (", ".join(f"{k} {v}" for k, v in df["status"].value_counts().items()) or "none")),
    ]
    ranks = df["rank"].nunique() if len(df) else 0
    if ranks > 1:
        items.append(("ranks", f"{ranks} ranks measured cells; each table shows the slowest rank"))
    table = pd.DataFrame(items, columns=["item", "value"])
    return [f"# Scaling run {run_dir.resolve().name}", "", "## 1. Run and hardware", "",
            table.to_markdown(index=False, disable_numparse=True), ""]


# ---------------------------------------------------------------------------------------------
# sections


def measurement_lines(level, pas, cfg, sub, env, run_dir) -> list[str]:
    """Section 2 for one panel: latency, memory, speedup, TFLOP/s, tokens/s."""
    methods = order_methods(sub["method"])
    slug = panel_slug(level, pas, cfg)
    lines = [f"### {level} {pas}" + (f" ({cfg})" if cfg else ""), "", _hardware_line(env, cfg or sub["config"].iloc[0]), ""]
    lines += ["Latency, median ms [p20-p80]; a status word where the cell did not run:", "",
              _grid(sub, methods, _latency_cell).to_markdown(disable_numparse=True), ""]
    notes = sub[(sub["status"] != "ok") & (sub["reason"] != "")]
    if len(notes):
        lines.append("Cells that did not run:")
        for (status, reason), grp in notes.groupby(["status", "reason"], sort=False):
            where = ", ".join(f"{m} @ {n}" for m, n in zip(grp["method"], grp["seq_len"]))
            lines.append(f"- {status}: {reason} ({where})")
        lines.append("")
    if sub["peak_mem_mb"].notna().any():
        mem_how = ", ".join(sorted({m for m in sub["mem_method"] if m})) or "method not recorded"
        lines += [f"Peak memory, MB ({mem_how}):", "",
                  _grid(sub, methods, lambda r: fmt(r["peak_mem_mb"])).to_markdown(disable_numparse=True), ""]
    sp = speedup_table(sub, methods)
    if sp is not None:
        lines += ["Speedup of each wave method over each softmax method = softmax median ms / wave median ms "
                  "(> 1x: wave is faster):", "", sp.to_markdown(disable_numparse=True), ""]
    if sub["tflops"].notna().any():
        tf = _grid(sub, methods, lambda r: fmt(r["tflops"]))
        roof = [m for m in methods if sub.loc[sub["method"] == m, "roofline_frac"].notna().any()]
        for m in roof:
            tf[f"{m} roofline"] = _grid(sub, [m], lambda r: fmt(100 * r["roofline_frac"]) + "%")[m]
        lines += ["Achieved TFLOP/s (cost-model FLOPs / median time)"
                  + (", with the fraction of roofline" if roof else "") + ":", "", tf.to_markdown(disable_numparse=True), ""]
    if level == "model" and sub["tokens_per_s"].notna().any():
        lines += ["Tokens/s (batch x N / median time" + (", per rank" if sub["n_ranks"].max() > 1 else "") + "):", "",
                  _grid(sub, methods, lambda r: fmt(r["tokens_per_s"])).to_markdown(disable_numparse=True), ""]
    plots = [p for p in (f"latency_{slug}.png", f"memory_{slug}.png", f"speedup_{slug}.png")
             if (Path(run_dir) / "plots" / p).is_file()]
    if plots:
        lines += ["Plots: " + ", ".join(f"[{p}](plots/{p})" for p in plots), ""]
    return lines


def _f(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def _range(fit: dict) -> str:
    lo, hi, k = int(fit["n_min"]), int(fit["n_max"]), fit["points"]
    return (f"{lo}-{hi}" if hi > lo else f"{lo}") + f" ({k} pt{'s' if k != 1 else ''})"


def _nlogn_slope(n_lo: float, n_hi: float) -> float:
    ns = np.geomspace(n_lo, n_hi, 16)
    return fit_exponent(ns, ns * np.log2(ns))["slope"]


def scaling_lines(level, pas, cfg, sub) -> list[str]:
    """Section 3 for one panel: fitted exponents per method, all points and upper half."""
    rows = []
    for m in order_methods(sub["method"]):
        s = ok_series(sub, m)
        full = fit_exponent(s.index, s.values)
        row = {"method": m, "exponent": _f(full["slope"], 2), "R^2": _f(full["r2"], 3),
               "lengths": _range(full) if full["points"] else "no ok cell"}
        if full["points"] >= 4:
            k = math.ceil(full["points"] / 2)
            up = fit_exponent(s.index[-k:], s.values[-k:])
            row.update({"exponent (upper half)": _f(up["slope"], 2), "R^2 (upper)": _f(up["r2"], 3),
                        "upper lengths": _range(up)})
        else:
            row.update({"exponent (upper half)": "", "R^2 (upper)": "", "upper lengths": "< 4 points"})
        rows.append(row)
    ns = sorted(sub.loc[sub["status"] == "ok", "seq_len"].unique())
    ref = (f"For reference over {ns[0]}-{ns[-1]}: pure N log2 N fits {_f(_nlogn_slope(ns[0], ns[-1]), 2)}, "
           f"pure N^2 fits 2.00, linear 1.00." if len(ns) >= 2 else "Fewer than two ok lengths: no slope.")
    return [f"### {level} {pas}" + (f" ({cfg})" if cfg else ""), "", pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), "", ref, ""]


def crossover_lines(level, pas, cfg, sub) -> list[str] | None:
    """Section 4 for one panel, or None without both a wave and a softmax method."""
    methods = order_methods(sub["method"])
    rows = []
    for w in filter(is_wave, methods):
        for s in filter(is_softmax, methods):
            tw, ts = ok_series(sub, w), ok_series(sub, s)
            common = tw.index.intersection(ts.index)
            c = crossover(common, tw[common].values, ts[common].values)
            rows.append({"wave method": w, "softmax method": s, "crossover N": crossover_text(c),
                         "speedup at shortest": fmt_x(ts[common[0]] / tw[common[0]]) if len(common) else "n/a",
                         "speedup at longest": fmt_x(ts[common[-1]] / tw[common[-1]]) if len(common) else "n/a"})
    if not rows:
        return None
    return [f"### {level} {pas}" + (f" ({cfg})" if cfg else ""), "", pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), ""]


def floor_lines(sub: pd.DataFrame) -> list[str] | None:
    """Section 5: wave / fft-floor and wave-field / fft-floor-field at core fwd, with targets."""
    present = [(w, f, tgt) for w, f, tgt in FLOOR_PAIRS if (sub["method"] == f).any() and (sub["method"] == w).any()]
    if not present:
        return None
    ns = sorted(sub["seq_len"].unique())
    table = pd.DataFrame(index=pd.Index(ns, name="N"))
    for w, f, tgt in present:
        tw, tf = ok_series(sub, w), ok_series(sub, f)
        ratio, verdict = [], []
        for n in ns:
            if n in tw.index and n in tf.index:
                r = tw[n] / tf[n]
                ratio.append(fmt_x(r))
                inside = FLOOR_RANGE[0] <= n <= FLOOR_RANGE[1]
                verdict.append(("pass" if r <= tgt else "miss") if inside else "(outside target range)")
            else:
                ratio.append("n/a")
                verdict.append("")
        table[f"{w} / {f}"] = ratio
        table[f"{w} <= {tgt}x"] = verdict
    targets = "; ".join(f"{w} within {tgt}x of {f}" for w, f, tgt in present)
    return [f"Target for N = {FLOOR_RANGE[0]}..{FLOOR_RANGE[1]}: {targets} (the bare rfft + multiply + irfft "
            "at the same FFT size, measured in this run). Ratio = method median / floor median.", "",
            table.to_markdown(disable_numparse=True), ""]


def _claim_inputs(cells: pd.DataFrame, env: dict[str, Any]) -> tuple[dict, int, int, int, str]:
    """Measured wave-vs-softmax speedups at the claim lengths (core fwd) and the B, H, d to model."""
    core = cells[(cells["level"] == "core") & (cells["pass"] == "fwd")]
    if core["config"].nunique() > 1:  # several shapes: use the most common one
        core = core[core["config"] == core["config"].value_counts().index[0]]
    shape, sources = {}, []
    for name, default in (("batch", 1), ("heads", 8), ("head_dim", 64)):
        v, src = env_get(env, name), "env.json"
        try:
            v = None if v is None else int(v[0] if isinstance(v, (list, tuple)) else v)
        except (TypeError, ValueError):
            v = None
        if v is None and core[name].notna().any():
            v, src = int(core[name].dropna().mode().iloc[0]), "timings.csv"
        if v is None:
            v, src = default, "a default"
        shape[name] = v
        sources += [src] if src not in sources else []
    source = "from " + " and ".join(sources)
    measured: dict[int, dict[str, object]] = {}
    for n in CLAIM_LENGTHS:
        at_n = core[core["seq_len"] == n]
        measured[n] = {}
        for s in ("softmax-naive", "softmax-sdpa"):
            base = s
            if s == "softmax-sdpa" and not (at_n["method"] == s).any():
                # no plain SDPA row (e.g. only pinned backends on a GPU): use the fastest fused kernel
                fused = at_n[(at_n["status"] == "ok") & at_n["method"].str.match(r"softmax-(sdpa-|flash-attn)")]
                if len(fused):
                    base = fused.sort_values("median_ms")["method"].iloc[0]
                    measured[n]["softmax-sdpa:via"] = base
            rows = {m: at_n[at_n["method"] == m] for m in ("wave", base)}
            missing = [f"{m}: no row at N={n}" for m, r in rows.items() if r.empty]
            bad = [f"{r['status'].iloc[0]}: {m}" + (f", {r['reason'].iloc[0]}" if r["reason"].iloc[0] else "")
                   for m, r in rows.items() if not r.empty and r["status"].iloc[0] != "ok"]
            if missing or bad:
                measured[n][s] = f"not measured ({'; '.join(bad + missing)})"
            else:
                measured[n][s] = float(rows[base]["median_ms"].iloc[0] / rows["wave"]["median_ms"].iloc[0])
    return measured, shape["batch"], shape["heads"], shape["head_dim"], source


HOW_TO_READ = [
    "- Times are medians of many repetitions (see `reps` in timings.csv) with the 20th-80th percentile "
    "range in brackets; a wide bracket means a noisy cell.",
    "- Ratios measured in one run (speedups, floor ratios, exponents) are more trustworthy than absolute "
    "times: machine noise and clock drift hit the interleaved methods alike, while absolute times move "
    "from machine to machine and run to run.",
    "- Everything here is for the hardware and software stated in section 1; compare runs only on the same setup.",
    "- Scaling exponents on short lengths are flattened by fixed overheads (launches, allocation, Python); "
    "the upper-half exponent is the better guide to asymptotic growth.",
    "- A status word (skipped, oom, error) means the cell has no time; its reason is listed under the table.",
]


BWD_TARGET, MEM_SLOPE_TARGET, MEM_RANGE = 2.5, 1.1, (4096, 32768)


def backward_lines(cells: pd.DataFrame) -> list[str] | None:
    """Backward / forward of the wave methods at layer level: (fwdbwd - fwd) / fwd per length."""
    lay = cells[(cells["level"] == "layer") & cells["method"].map(is_wave)]
    rows = []
    for (cfg, method), sub in lay.groupby(["config", "method"]):
        fwd = ok_series(sub[sub["pass"] == "fwd"], method)
        both = ok_series(sub[sub["pass"] == "fwdbwd"], method)
        for n in sorted(set(fwd.index) & set(both.index)):
            r = (both[n] - fwd[n]) / fwd[n]
            rows.append({"config": cfg, "method": method, "N": n, "fwd ms": fmt(fwd[n]), "fwdbwd ms": fmt(both[n]),
                         "backward / forward": f"{r:.2f}", f"<= {BWD_TARGET}": "pass" if r <= BWD_TARGET else "miss"})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    if table["config"].nunique() == 1:
        table = table.drop(columns="config")
    return [f"Wave layer, backward = fwdbwd - fwd (one training step of the layer minus its forward); target "
            f"backward <= {BWD_TARGET}x forward.", "", table.to_markdown(index=False, disable_numparse=True), ""]


def memory_lines(sub: pd.DataFrame) -> list[str] | None:
    """Peak-memory growth of the wave methods at core fwd: log-log slope over MEM_RANGE."""
    if "peak_mem_mb" not in sub.columns:
        return None
    rows = []
    for method in order_methods(m for m in sub["method"].unique() if is_wave(m)):
        mem = ok_series(sub, method, "peak_mem_mb").dropna()
        mem = mem[(mem.index >= MEM_RANGE[0]) & (mem.index <= MEM_RANGE[1]) & (mem > 0)]
        if len(mem) < 2:
            continue
        fit = fit_exponent(list(mem.index), list(mem.values))
        slope = fit["slope"]
        rows.append({"method": method, "lengths": f"{mem.index.min()}..{mem.index.max()}",
                     "peak MB (shortest -> longest)": f"{fmt(mem.iloc[0])} -> {fmt(mem.iloc[-1])}",
                     "log-log slope": f"{slope:.2f}",
                     f"<= {MEM_SLOPE_TARGET}": "pass" if slope <= MEM_SLOPE_TARGET else "miss"})
    if not rows:
        return None
    return [f"Peak memory of the wave core forward against N (N = {MEM_RANGE[0]}..{MEM_RANGE[1]} where measured); "
            f"linear growth is slope 1, target <= {MEM_SLOPE_TARGET}.", "",
            pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), ""]


def compiled_lines(cells: pd.DataFrame) -> list[str] | None:
    """torch.compile methods (name ends in -compiled) against their eager method, with compile time."""
    if "setup_s" not in cells.columns:
        return None
    rows = []
    for (level, pas, cfg, method), sub in cells.groupby(["level", "pass", "config", "method"]):
        if not method.endswith("-compiled"):
            continue
        eager = method[: -len("-compiled")]
        ref = ok_series(cells[(cells["level"] == level) & (cells["pass"] == pas) & (cells["config"] == cfg)], eager)
        comp = ok_series(sub, method)
        setup = sub[sub["status"] == "ok"].set_index("seq_len")["setup_s"]
        for n in comp.index:
            rows.append({"level": level, "pass": pas, "N": n, "eager ms": fmt(ref[n]) if n in ref.index else "n/a",
                         "compiled ms": fmt(comp[n]),
                         "compiled / eager": f"{comp[n] / ref[n]:.2f}" if n in ref.index else "n/a",
                         "compile + warm-up s": fmt(float(setup.get(n, math.nan)))})
    if not rows:
        return None
    return ["torch.compile (inductor) against eager; the compile time (setup_s: build, compile and warm-up "
            "before timing) is not in the timings.", "", pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), ""]


def write_summary(run_dir: Path) -> Path:
    """Write run_dir/summary.md from run_dir/timings.csv and env.json; return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run folder {str(run_dir)!r} does not exist")
    env = load_env(run_dir)
    df = load_timings(run_dir)
    cells = aggregate(df)
    lines = header_lines(run_dir, env, df)
    groups = panels(cells) if len(cells) else []

    lines += ["## 2. Measurements per level and pass", ""]
    if not groups:
        lines += ["No rows in timings.csv yet.", ""]
    for level, pas, cfg, sub in groups:
        lines += measurement_lines(level, pas, cfg, sub, env, run_dir)

    lines += ["## 3. Scaling exponents", "",
              "Slope of log(median ms) against log(N) by least squares over the ok cells. On short lengths "
              "fixed overheads flatten the slope, so the slope over the upper half of the lengths is also "
              "given when there are at least 4 points.", ""]
    for level, pas, cfg, sub in groups:
        lines += scaling_lines(level, pas, cfg, sub)

    lines += ["## 4. Crossover lengths", "",
              "The length from which each wave method stays faster than each softmax method: the first measured "
              "length of the final all-faster run, and the crossing interpolated in log-log (log speedup linear "
              "in log N) between the two bracketing lengths.", ""]
    cross = [c for g in groups if (c := crossover_lines(*g))]
    lines += [ln for c in cross for ln in c] or ["No level/pass has both a wave and a softmax method.", ""]

    lines += ["## 5. Floor ratio (core fwd)", ""]
    core_fwd = [g for g in groups if g[0] == "core" and g[1] == "fwd"]
    floors = [(cfg, f) for _, _, cfg, sub in core_fwd if (f := floor_lines(sub))]
    if floors:
        for cfg, f in floors:
            lines += ([f"### {cfg}", ""] if cfg else []) + f
    else:
        lines += ["No fft-floor reference rows at core fwd in this run.", ""]
    mems = [(cfg, f) for _, _, cfg, sub in core_fwd if (f := memory_lines(sub))]
    for cfg, f in mems:
        lines += [f"### Memory growth{f' ({cfg})' if cfg else ''}", ""] + f
    bwd = backward_lines(cells) if len(cells) else None
    if bwd:
        lines += ["### Backward / forward (layer)", ""] + bwd
    comp = compiled_lines(cells) if len(cells) else None
    if comp:
        lines += ["### torch.compile", ""] + comp

    lines += ["## 6. Claims audit (SPEC.md section 5: advantage vs sequence length)", ""]
    measured, b, h, d, src = _claim_inputs(cells, env) if len(cells) else ({}, 1, 8, 64, "defaults: no rows")
    lines += claims_section(measured, b, h, d, src) + [""]

    lines += ["## 7. How to read this", ""] + HOW_TO_READ + [""]
    out = run_dir / "summary.md"
    out.write_text("\n".join(lines))
    return out


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgParser(prog="python -m bench.scaling.summary",
                       description="Regenerate summary.md and plots/*.png of a scaling run from its timings.csv.")
    parser.add_argument("run_dir", help="a run folder holding timings.csv and env.json (results/runs/<run>)")
    parser.add_argument("--no-plots", action="store_true", help="only write summary.md")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run folder {str(run_dir)!r} does not exist")
    if not (run_dir / "timings.csv").is_file():
        raise UsageError(f"{str(run_dir)!r} holds no timings.csv (expected a folder written by python -m bench.scaling)")
    written = []
    if not args.no_plots:
        from bench.scaling.plots import make_plots  # plots first, so summary.md can link them
        written += make_plots(run_dir)
    written.insert(0, write_summary(run_dir))
    print(f"wrote {written[0]}" + (f" and {len(written) - 1} plots in {run_dir / 'plots'}" if len(written) > 1 else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="python -m bench.scaling.summary"))
