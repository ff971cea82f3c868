"""plots/<kind>_<panel>.png of a scaling run (PLOT_KINDS), log-log against N; only ok cells are drawn, the others are
listed in a note under the axes."""
from __future__ import annotations

from pathlib import Path

import matplotlib.ticker as mticker

from bench.common.figures import color, length_axis, plt, save
from bench.common.files import read_env
from bench.common.timings import aggregate, load_timings, method_kind, ok_series, order_methods, panel_slug, panels
from bench.scaling.analysis import pairs, waves

FIGSIZE = (7.5, 4.8)
PLOT_KINDS = ("latency", "memory", "speedup")  # plots/<kind>_<panel>.png, as make_plots names them


def _short_length(n: int) -> str:
    """16384 -> '16K'; a length that is not a multiple of 1024 stays as it is (1536)."""
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def _not_run_note(sub, methods) -> str:
    """'not run (no point drawn): softmax-naive 16K-32K (skipped); ...', one entry per method and status; a range
    joins only lengths that follow each other in the panel (512, 32K: not 512-32K)."""
    grid = sorted(sub["seq_len"].unique())
    bad = sub[sub["method"].isin(methods) & (sub["status"] != "ok")]
    parts = []
    for (m, status), g in bad.groupby(["method", "status"], sort=False):
        runs: list[list[int]] = []  # [first, last] of each run of neighbouring lengths
        for n in sorted(g["seq_len"]):
            if runs and grid.index(n) == grid.index(runs[-1][1]) + 1:
                runs[-1][1] = n
            else:
                runs.append([n, n])
        lengths = ", ".join(_short_length(a) + (f"-{_short_length(b)}" if b > a else "") for a, b in runs)
        parts.append(f"{m} {lengths} ({status})")
    return ("not run (no point drawn): " + "; ".join(parts)) if parts else ""


def _axes(ylabel: str, title: str):
    """A figure with a log2 length axis and a log value axis."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    length_axis(ax)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    return fig, ax


def _series_plot(sub, methods, col: str, band: bool, ylabel: str, title: str, path: Path) -> Path | None:
    """One line per method of `col` vs N (band: the p20-p80 band around it); None when no method has ok data."""
    series = {m: ok_series(sub, m, col) for m in methods}
    series = {m: s[s > 0] for m, s in series.items() if len(s[s > 0])}
    if not series:
        return None
    fig, ax = _axes(ylabel, title)
    for m, s in series.items():
        ax.plot(s.index, s.values, "--" if method_kind(m) == "reference" else "-", marker="o", ms=3.5, color=color(m),
                label=m)
        if band:
            lo, hi = (ok_series(sub, m, q).reindex(s.index) for q in ("p20_ms", "p80_ms"))
            fine = lo.notna() & hi.notna() & (lo > 0)
            if fine.any():
                ax.fill_between(s.index[fine], lo[fine], hi[fine], color=color(m), alpha=0.2, lw=0)
    # plain numbers on the log axis (0.5, 20, 1000); minor labels only when it spans < 1.5 decades
    plain = mticker.FuncFormatter(lambda y, _: f"{y:g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    ax.yaxis.set_minor_formatter(plain if hi / lo < 10 ** 1.5 else mticker.NullFormatter())
    ax.legend(fontsize=7, loc="best", framealpha=0.85)
    return save(fig, path, _not_run_note(sub, methods))


def _speedup_plot(sub, methods, title: str, path: Path) -> Path | None:
    """baseline ms / wave ms vs N for each (wave, softmax or peer) pair; None without a pair with ok data."""
    drawn = [(w, s, tw.index, ts.values / tw.values) for w, s, tw, ts in pairs(sub, methods) if len(tw)]
    if not drawn:
        return None
    fig, ax = _axes("speedup of wave = other ms / wave ms (x)", title)
    styles = dict(zip(waves(methods), ["-", "--", ":", "-."] * 3))
    for w, s, ns, ratio in drawn:
        ax.plot(ns, ratio, styles[w], marker="o", ms=3.5, color=color(s), label=f"{w} over {s}")
    ax.axhline(1.0, color="0.2", lw=1, label="1x (equal time)")
    ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda y, _: f"{y:g}x"))
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    ax.legend(fontsize=7, loc="best", framealpha=0.85)
    return save(fig, path, _not_run_note(sub, methods))


def make_plots(run_dir: Path) -> list[Path]:
    """Write run_dir/plots/<kind>_<panel>.png but those without ok data; return the files written."""
    run_dir = Path(run_dir)
    env = read_env(run_dir)
    cells = aggregate(load_timings(run_dir))
    written: list[Path] = []
    if cells.empty:
        return written
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    hw = env["gpus"][0].get("name") if env.get("gpus") else env.get("cpu_model")
    with plt.style.context("seaborn-v0_8-whitegrid"), plt.rc_context({"axes.titlesize": 9}):
        for level, pas, cfg, sub in panels(cells):
            methods = order_methods(sub["method"])
            slug = panel_slug(level, pas, cfg)
            panel = f"{level} {pas} [{cfg or sub['config'].iloc[0]}]" + (f"\n{hw}" if hw else "")
            made = [
                _series_plot(sub, methods, "median_ms", True, "median time per call (ms; band: p20-p80)",
                             f"latency: {panel}", out_dir / f"latency_{slug}.png"),
                _series_plot(sub, methods, "peak_mem_mb", False, "peak memory (MB)", f"peak memory: {panel}",
                             out_dir / f"memory_{slug}.png"),
                _speedup_plot(sub, methods, f"speedup of wave: {panel}", out_dir / f"speedup_{slug}.png"),
            ]
            written += [p for p in made if p is not None]
    return written
