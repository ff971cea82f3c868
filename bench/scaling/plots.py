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
PLOT_KINDS = {  # plots/<kind>_<panel>.png: (title, y label, column; None: the speedup of each pair)
    "latency": ("latency", "median time per call (ms; band: p20-p80)", "median_ms"),
    "memory": ("peak memory", "peak memory (MB)", "peak_mem_mb"),
    "speedup": ("speedup of wave", "speedup of wave = other ms / wave ms (x)", None),
}


def _not_run_note(sub, methods) -> str:
    bad = sub[sub["method"].isin(methods) & (sub["status"] != "ok")]
    parts = []
    for (m, status), g in bad.groupby(["method", "status"], sort=False):
        ns = sorted(g["seq_len"])
        k = lambda n: f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)  # noqa: E731 - 1536 stays 1536
        parts.append(f"{m} {k(ns[0])}" + (f"-{k(ns[-1])}" if len(ns) > 1 else "") + f" ({status})")
    return ("not run (no point drawn): " + "; ".join(parts)) if parts else ""


def _plot(kind: str, sub, methods, title: str, path: Path) -> Path | None:
    """One plot of a panel, None when it has no ok data: a line per method of the kind's column vs N (latency with
    its p20-p80 band), or for speedup, baseline ms / wave ms of each (wave, softmax or peer) pair."""
    what, ylabel, col = PLOT_KINDS[kind]
    if col is None:
        styles = dict(zip(waves(methods), ["-", "--", ":", "-."] * 3))
        lines = [(w, tw.index, ts.values / tw.values, styles[w], color(s), f"{w} over {s}")
                 for w, s, tw, ts in pairs(sub, methods) if len(tw)]
    else:
        series = {m: s[s > 0] for m, s in ((m, ok_series(sub, m, col)) for m in methods)}
        lines = [(m, s.index, s.values, "--" if method_kind(m) == "reference" else "-", color(m), m)
                 for m, s in series.items() if len(s)]
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)  # a log2 length axis and a log value axis
    length_axis(ax)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{what}: {title}", fontsize=9)
    for m, ns, values, style, line_color, label in lines:
        ax.plot(ns, values, style, marker="o", ms=3.5, color=line_color, label=label)
        if kind == "latency":
            lo, hi = (ok_series(sub, m, q).reindex(ns) for q in ("p20_ms", "p80_ms"))
            fine = lo.notna() & hi.notna() & (lo > 0)
            if fine.any():
                ax.fill_between(ns[fine], lo[fine], hi[fine], color=line_color, alpha=0.2, lw=0)
    if col is None:
        ax.axhline(1.0, color="0.2", lw=1, label="1x (equal time)")
        ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda y, _: f"{y:g}x"))
        ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    else:  # plain numbers on the log axis (0.5, 20, 1000); minor labels only when it spans < 1.5 decades
        plain = mticker.FuncFormatter(lambda y, _: f"{y:g}")
        ax.yaxis.set_major_formatter(plain)
        lo, hi = ax.get_ylim()
        ax.yaxis.set_minor_formatter(plain if hi / lo < 10 ** 1.5 else mticker.NullFormatter())
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
            title = f"{level} {pas} [{cfg or sub['config'].iloc[0]}]" + (f"\n{hw}" if hw else "")
            made = [_plot(kind, sub, methods, title, out_dir / f"{kind}_{slug}.png") for kind in PLOT_KINDS]
            written += [p for p in made if p is not None]
    return written
