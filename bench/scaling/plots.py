"""plots/*.png for a scaling run, derived from timings.csv: per level and pass, latency vs N and
peak memory vs N (log-log, p20-p80 band) and the speedup of each wave method over each softmax
method vs N. Cells that did not run (skipped, oom, error) are marked along the top of the axes.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from bench.scaling.summary import (  # noqa: E402
    aggregate, is_reference, is_softmax, is_wave, load_env, load_timings, ok_series, order_methods,
    panel_slug, panels,
)

FIGSIZE = (7, 4.5)
DPI = 100
STATUS_MARKERS = {"skipped": "x", "oom": "v", "error": "D"}  # anything else not ok: "s"


def _colors(methods: list[str]) -> dict[str, tuple]:
    """Stable colours: wave methods warm, softmax cool, references grey."""
    warm = sns.color_palette("autumn_r", 3)[::-1] + sns.color_palette("Reds", 3)
    cool = sns.color_palette("tab10")
    cool = [cool[i] for i in (0, 2, 4, 9, 6, 5, 8, 7, 3)]
    grey = sns.color_palette("Greys", 4)[2:]
    out, counters = {}, {"w": 0, "s": 0, "r": 0}
    for m in methods:
        fam, pal = ("w", warm) if is_wave(m) else ("s", cool) if is_softmax(m) else ("r", grey)
        out[m] = pal[counters[fam] % len(pal)]
        counters[fam] += 1
    return out


def _title(kind: str, level: str, pas: str, config: str, sub, env) -> str:
    cfg = config or sub["config"].iloc[0]
    hw = (env.get("gpus") or [{}])[0].get("name") if env.get("gpus") else env.get("cpu_model")
    return f"{kind}: {level} {pas}  [{cfg}]" + (f"\n{hw}" if hw else "")


def _length_axis(ax) -> None:
    """log2 x axis labelled 512, 1K, 2K, ... rather than 2^9."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(
        lambda x, _: f"{x / 1024:g}K" if x >= 1024 else f"{x:g}"))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())


def _value_axis(ax) -> None:
    """Plain numbers on a log y axis (0.5, 20, 1000); minor labels only when it spans < 1.5 decades."""
    plain = mticker.FuncFormatter(lambda y, _: f"{y:g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    ax.yaxis.set_minor_formatter(plain if hi / lo < 10 ** 1.5 else mticker.NullFormatter())


def _mark_not_run(ax, sub, methods, colors) -> set[str]:
    """Marker in a strip along the top of the axes (above the data) for each cell that did not run.

    Returns the statuses shown, for the legend.
    """
    bad_all = sub[sub["method"].isin(methods) & (sub["status"] != "ok")]
    if bad_all.empty:
        return set()
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * (hi / lo) ** 0.18)  # headroom on a log axis: the strip holds no data
    lo_x, hi_x = ax.get_xlim()
    ax.set_xlim(min(lo_x, bad_all["seq_len"].min() / 1.2), max(hi_x, bad_all["seq_len"].max() * 1.2))
    top = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    shown = set()
    for i, m in enumerate(methods):
        bad = bad_all[bad_all["method"] == m]
        for status, grp in bad.groupby("status"):
            y = 0.965 - 0.035 * (i % 4)  # stagger methods so markers at one N do not overlap
            ax.scatter(grp["seq_len"], [y] * len(grp), transform=top, marker=STATUS_MARKERS.get(status, "s"),
                       color=colors[m], s=40, clip_on=False, zorder=5)
            shown.add(status)
    return shown


def _finish(ax, shown: set[str], path: Path, fig) -> Path:
    handles, labels = ax.get_legend_handles_labels()
    for status in sorted(shown):
        handles.append(Line2D([], [], ls="none", marker=STATUS_MARKERS.get(status, "s"), color="0.3"))
        labels.append(f"{status} (not run)")
    ax.legend(handles, labels, fontsize=7, loc="best", framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _series_plot(sub, methods, colors, col, band, ylabel, title, path) -> Path | None:
    """One line per method of `col` vs N on log-log axes; None when no method has ok data."""
    series = {m: ok_series(sub, m, col) for m in methods}
    series = {m: s[s > 0] for m, s in series.items()}
    if not any(len(s) for s in series.values()):
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for m, s in series.items():
        if not len(s):
            continue
        style = "--" if is_reference(m) else "-"
        ax.plot(s.index, s.values, style, marker="o", ms=3.5, color=colors[m], label=m)
        if band:
            ok = sub[(sub["method"] == m) & (sub["status"] == "ok")].set_index("seq_len").loc[s.index]
            lo, hi = ok["p20_ms"].astype(float), ok["p80_ms"].astype(float)
            fine = np.isfinite(lo) & np.isfinite(hi) & (lo > 0)
            if fine.any():
                ax.fill_between(s.index[fine], lo[fine], hi[fine], color=colors[m], alpha=0.2, lw=0)
    _length_axis(ax)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    shown = _mark_not_run(ax, sub, methods, colors)
    _value_axis(ax)
    return _finish(ax, shown, path, fig)


def _speedup_plot(sub, methods, colors, title, path) -> Path | None:
    """softmax ms / wave ms vs N for each (wave, softmax) pair; None without a pair with ok data."""
    pairs = []
    for w in filter(is_wave, methods):
        for s in filter(is_softmax, methods):
            tw, ts = ok_series(sub, w), ok_series(sub, s)
            common = tw.index.intersection(ts.index)
            if len(common):
                pairs.append((w, s, common, ts[common].values / tw[common].values))
    if not pairs:
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    wave_styles = {w: st for w, st in zip(filter(is_wave, methods), ["-", "--", ":", "-."] * 3)}
    for w, s, ns, ratio in pairs:
        ax.plot(ns, ratio, wave_styles[w], marker="o", ms=3.5, color=colors[s], label=f"{w} over {s}")
    ax.axhline(1.0, color="0.2", lw=1, label="1x (equal time)")
    _length_axis(ax)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda y, _: f"{y:g}x"))
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    ax.set_ylabel("speedup = softmax ms / wave ms")
    ax.set_title(title, fontsize=9)
    return _finish(ax, set(), path, fig)


def make_plots(run_dir: Path) -> list[Path]:
    """Write run_dir/plots/{latency,memory,speedup}_<level>_<pass>.png; return the files written.

    A plot with no ok data is skipped (not written). Reads run_dir/timings.csv and env.json.
    """
    run_dir = Path(run_dir)
    env = load_env(run_dir)
    cells = aggregate(load_timings(run_dir))
    out_dir = run_dir / "plots"
    written: list[Path] = []
    if cells.empty:
        return written
    out_dir.mkdir(exist_ok=True)
    with sns.axes_style("whitegrid"), plt.rc_context({"axes.titlesize": 9}):
        for level, pas, cfg, sub in panels(cells):
            methods = order_methods(sub["method"])
            colors = _colors(methods)
            slug = panel_slug(level, pas, cfg)
            made = [
                _series_plot(sub, methods, colors, "median_ms", True, "median time per call, ms (p20-p80 band)",
                             _title("latency", level, pas, cfg, sub, env), out_dir / f"latency_{slug}.png"),
                _series_plot(sub, methods, colors, "peak_mem_mb", False, "peak memory, MB",
                             _title("peak memory", level, pas, cfg, sub, env), out_dir / f"memory_{slug}.png"),
                _speedup_plot(sub, methods, colors, _title("speedup of wave", level, pas, cfg, sub, env),
                              out_dir / f"speedup_{slug}.png"),
            ]
            written += [p for p in made if p is not None]
    return written
