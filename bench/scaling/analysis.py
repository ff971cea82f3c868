"""The derived sections of a scaling summary (exponents, crossovers, floor ratios, memory growth, backward/forward,
torch.compile, the claims audit's inputs): aggregated cells to markdown lines, or None when the run has nothing."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.common.env import env_get
from bench.common.tables import frame_table, table
from bench.common.timings import fit_exponent, fmt, fmt_x, method_kind, ok_series, order_methods

FLOOR_PAIRS = [("wave", "fft-floor", 1.3), ("wave-field", "fft-floor-field", 1.5)]
FLOOR_RANGE = (2048, 32768)
BWD_TARGET, MEM_SLOPE_TARGET, MEM_RANGE = 2.5, 1.1, (4096, 32768)


def waves(methods) -> list[str]:
    return [m for m in methods if method_kind(m) == "wave"]


def pairs(sub: pd.DataFrame, methods) -> list[tuple[str, str, pd.Series, pd.Series]]:
    """(wave method, baseline, wave ms, baseline ms) of every pair over the lengths both have ok; a wave method's
    baselines are softmax attention and the sub-quadratic peers."""
    baselines = [m for m in methods if method_kind(m) in ("softmax", "peer")]
    out = []
    for w in waves(methods):
        for s in baselines:
            tw, ts = ok_series(sub, w), ok_series(sub, s)
            common = tw.index.intersection(ts.index)
            out.append((w, s, tw[common], ts[common]))
    return out


def crossover(ns: Sequence[float], wave_ms: Sequence[float], soft_ms: Sequence[float]) -> dict[str, Any]:
    """Where wave becomes faster than a baseline: kind 'always', 'none' (not at the longest), 'no-data' or 'cross'
    (first_n: the first length of the final all-faster run; n_star: the crossing interpolated in log-log)."""
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
    return {"kind": "cross", "first_n": n1, "n_star": n_star, "n_below": n0, "non_monotone": bool(faster[:i].any())}


def span(lo: float, hi: float) -> str:
    """'512-4096', or '512' for a single length."""
    return f"{int(lo)}-{int(hi)}" if hi > lo else f"{int(lo)}"


def crossover_text(c: dict[str, Any]) -> str:
    kind = c["kind"]
    if kind == "no-data":
        return "no length with both ok"
    if kind == "always":
        return f"always faster in range ({span(c['n_lo'], c['n_hi'])})"
    if kind == "none":
        extra = " (faster at some shorter lengths, not at the longest)" if c["wave_faster_somewhere"] else ""
        return f"none in range ({span(c['n_lo'], c['n_hi'])}){extra}"
    extra = "; also faster at some shorter lengths" if c["non_monotone"] else ""
    return (f"~{c['n_star']:.0f} (log-log between {int(c['n_below'])} and {int(c['first_n'])}); "
            f"faster from {int(c['first_n'])} on{extra}")


def speedup_table(sub: pd.DataFrame, methods: list[str]) -> pd.DataFrame | None:
    """baseline ms / wave ms of each pair; a method with no ok cell gets no column (the latency table says why)."""
    found = pairs(sub, [m for m in methods if len(ok_series(sub, m))])
    if not found:
        return None
    ns = sorted(sub["seq_len"].unique())
    status = dict(zip(zip(sub["method"], sub["seq_len"]), sub["status"]))

    def missing(n, *methods) -> str:
        why = ", ".join(f"{m} {status[(m, n)]}" for m in methods if status.get((m, n), "ok") != "ok")
        return f"n/a ({why})" if why else ""
    return pd.DataFrame({f"{w} vs {s}": [fmt_x(ts[n] / tw[n]) if n in tw.index else missing(n, w, s) for n in ns]
                         for w, s, tw, ts in found}, index=pd.Index(ns, name="N"))


def _num(x: float, digits: int) -> str:
    """x to `digits` decimals; a value that rounds to zero prints as 0, never -0.00 (-0.0 + 0.0 is 0.0)."""
    return f"{round(x, digits) + 0.0:.{digits}f}" if math.isfinite(x) else "n/a"


def _fit_cells(fit: dict) -> list[str]:
    """A fit's exponent, R^2 and lengths (with the point count)."""
    k, lengths = fit["points"], "no ok cell"
    if k:
        lengths = span(fit["n_min"], fit["n_max"]) + f" ({k} pt{'s' if k != 1 else ''})"
    return [_num(fit["slope"], 2), _num(fit["r2"], 3), lengths]


def _section(intro: str, head: list[str], rows: list) -> list[str] | None:
    return [intro, "", *table(head, rows), ""] if rows else None


def panel_heading(level, pas, cfg) -> str:
    return f"### {level} {pas}" + (f" ({cfg})" if cfg else "")


def scaling_lines(level, pas, cfg, sub) -> list[str]:
    """Section 3 for one panel: fitted exponents per method, all points and upper half."""
    rows = []
    for m in order_methods(sub["method"]):
        s = ok_series(sub, m)
        full = fit_exponent(s.index, s.values)
        k = math.ceil(full["points"] / 2)
        upper = _fit_cells(fit_exponent(s.index[-k:], s.values[-k:])) if full["points"] >= 4 else ["", "", "< 4 points"]
        rows.append([m, *_fit_cells(full), *upper])
    ns = sorted(sub.loc[sub["status"] == "ok", "seq_len"].unique())
    if len(ns) >= 2:
        grid = np.geomspace(ns[0], ns[-1], 16)
        nlogn = fit_exponent(grid, grid * np.log2(grid))["slope"]
        ref = f"For reference over {ns[0]}-{ns[-1]}: pure N log2 N fits {nlogn:.2f}, pure N^2 fits 2.00, linear 1.00."
    else:
        ref = "Fewer than two ok lengths: no slope."
    head = ["method", "exponent", "R^2", "lengths", "exponent (upper half)", "R^2 (upper)", "upper lengths"]
    return [panel_heading(level, pas, cfg), "", *table(head, rows), "", ref, ""]


def crossover_lines(level, pas, cfg, sub) -> list[str] | None:
    """Section 4 for one panel."""
    rows = []
    for w, s, tw, ts in pairs(sub, order_methods(sub["method"])):
        ends = [fmt_x(ts.iloc[i] / tw.iloc[i]) if len(tw) else "n/a" for i in (0, -1)]
        rows.append([w, s, crossover_text(crossover(tw.index, tw.values, ts.values)), *ends])
    head = ["wave method", "compared with", "crossover N", "speedup at shortest", "speedup at longest"]
    return _section(panel_heading(level, pas, cfg), head, rows)


def _floor_verdict(n: int, ratio: float, target: float) -> str:
    if math.isnan(ratio):
        return ""
    if not FLOOR_RANGE[0] <= n <= FLOOR_RANGE[1]:
        return "(outside target range)"
    return "pass" if ratio <= target else "miss"


def floor_lines(sub: pd.DataFrame) -> list[str] | None:
    """Section 5: wave / fft-floor and wave-field / fft-floor-field at core fwd, with targets."""
    present = [(w, f, tgt) for w, f, tgt in FLOOR_PAIRS if (sub["method"] == f).any() and (sub["method"] == w).any()]
    if not present:
        return None
    ns = sorted(sub["seq_len"].unique())
    out = pd.DataFrame(index=pd.Index(ns, name="N"))
    for w, f, tgt in present:
        ratio = (ok_series(sub, w) / ok_series(sub, f)).reindex(ns)  # NaN unless both are ok
        out[f"{w} / {f}"] = ratio.map(fmt_x)
        out[f"{w} <= {tgt}x"] = [_floor_verdict(n, r, tgt) for n, r in ratio.items()]
    targets = "; ".join(f"{w} within {tgt}x of {f}" for w, f, tgt in present)
    return [f"Target for N = {FLOOR_RANGE[0]}..{FLOOR_RANGE[1]}: {targets} (the bare rfft + multiply + irfft "
            "at the same FFT size, measured in this run). Ratio = method median / floor median.", "",
            frame_table(out, index=True), ""]


def backward_lines(cells: pd.DataFrame) -> list[str] | None:
    """Backward / forward of the wave methods at layer level: (fwdbwd - fwd) / fwd per length."""
    lay = cells[(cells["level"] == "layer") & (cells["method"].map(method_kind) == "wave")]
    rows = []
    for (cfg, method), sub in lay.groupby(["config", "method"]):
        fwd = ok_series(sub[sub["pass"] == "fwd"], method)
        both = ok_series(sub[sub["pass"] == "fwdbwd"], method)
        for n in sorted(set(fwd.index) & set(both.index)):
            r = (both[n] - fwd[n]) / fwd[n]
            rows.append([cfg, method, n, fmt(fwd[n]), fmt(both[n]), f"{r:.2f}", "pass" if r <= BWD_TARGET else "miss"])
    head = ["config", "method", "N", "fwd ms", "fwdbwd ms", "backward / forward", f"<= {BWD_TARGET}"]
    if len({r[0] for r in rows}) == 1:
        head, rows = head[1:], [r[1:] for r in rows]
    return _section(f"Wave layer, backward = fwdbwd - fwd (one training step of the layer minus its forward); "
                    f"target backward <= {BWD_TARGET}x forward.", head, rows)


def memory_lines(sub: pd.DataFrame) -> list[str] | None:
    """Peak-memory growth of the wave methods at core fwd: log-log slope over MEM_RANGE."""
    rows = []
    for method in order_methods(waves(sub["method"].unique())):
        mem = ok_series(sub, method, "peak_mem_mb")
        mem = mem[(mem.index >= MEM_RANGE[0]) & (mem.index <= MEM_RANGE[1]) & (mem > 0)]
        if len(mem) < 2:
            continue
        slope = fit_exponent(list(mem.index), list(mem.values))["slope"]
        rows.append([method, f"{mem.index.min()}..{mem.index.max()}", f"{fmt(mem.iloc[0])} -> {fmt(mem.iloc[-1])}",
                     f"{slope:.2f}", "pass" if slope <= MEM_SLOPE_TARGET else "miss"])
    head = ["method", "lengths", "peak MB (shortest -> longest)", "log-log slope", f"<= {MEM_SLOPE_TARGET}"]
    return _section(f"Peak memory of the wave core forward against N (N = {MEM_RANGE[0]}..{MEM_RANGE[1]} where "
                    f"measured); linear growth is slope 1, target <= {MEM_SLOPE_TARGET}.", head, rows)


def compiled_lines(cells: pd.DataFrame) -> list[str] | None:
    """torch.compile methods (name ends in -compiled) against their eager method, with compile time."""
    rows = []
    compiled = cells[cells["method"].str.endswith("-compiled")]
    for (level, pas, cfg, method), sub in compiled.groupby(["level", "pass", "config", "method"]):
        ref = ok_series(cells[(cells["level"] == level) & (cells["pass"] == pas) & (cells["config"] == cfg)],
                        method[: -len("-compiled")])
        comp = ok_series(sub, method)
        setup = ok_series(sub, method, "setup_s")
        for n in comp.index:
            rows.append([level, pas, n, fmt(ref[n]) if n in ref.index else "n/a", fmt(comp[n]),
                         f"{comp[n] / ref[n]:.2f}" if n in ref.index else "n/a", fmt(float(setup.get(n, math.nan)))])
    head = ["level", "pass", "N", "eager ms", "compiled ms", "compiled / eager", "compile + warm-up s"]
    return _section("torch.compile (inductor) against eager; the compile time (setup_s: build, compile and warm-up "
                    "before timing) is not in the timings.", head, rows)


# the fused kernels that may stand in for softmax-sdpa in the claims: not the math kernel (it materialises the
# scores) and not a graphed replay (a different measurement)
FUSED_SOFTMAX = ("softmax-sdpa-flash", "softmax-sdpa-cudnn", "softmax-sdpa-efficient", "softmax-flash-attn")


def claim_inputs(cells: pd.DataFrame, env: dict[str, Any], lengths) -> tuple[dict, int, int, int, str]:
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
        if src not in sources:
            sources.append(src)
    measured: dict[int, dict[str, object]] = {}
    for n in lengths:
        at_n = core[core["seq_len"] == n]
        measured[n] = {}
        for s in ("softmax-naive", "softmax-sdpa"):
            base = s
            if s == "softmax-sdpa" and not (at_n["method"] == s).any():
                # no plain SDPA row (e.g. only pinned backends on a GPU): use the fastest fused kernel
                fused = at_n[(at_n["status"] == "ok") & at_n["method"].isin(FUSED_SOFTMAX)]
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
                measured[n][f"{s}:single"] = [m for m, r in rows.items() if r["reps"].iloc[0] == 1]
    return measured, shape["batch"], shape["heads"], shape["head_dim"], "from " + " and ".join(sources)
