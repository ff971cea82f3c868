"""Speedup of wave over SDPA against N, one figure per device: the published figures, the authors'
operation model, the suite's cost model, and the measured core and model levels (median over the
runs of a setup, the band their min-max). Only measured cells are drawn.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.common.figures import color, length_axis, plt, save
from bench.report import evidence as ev
from bench.scaling.claims import PUBLISHED_ADVANTAGE, authors_advantage, cost_model_ratio

SERIES_COLORS = {"published": "black", "authors' model": "0.45", "cost model": "0.65", "core": color("wave"),
                 "model": color("wave-field")}
STYLES = ["-", "--", ":", "-."]  # one per setup


def speedup_figures(cells: pd.DataFrame, out_dir: Path) -> None:
    """results/plots/speedup_<cpu|gpu>.png, for each device with cells."""
    for gpu, name in ((False, "cpu"), (True, "gpu")):
        sub = cells[cells["gpu"] == gpu]
        if sub.empty:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(8, 5))
        ns = np.geomspace(512, 32768, 40)
        ax.plot(list(PUBLISHED_ADVANTAGE), list(PUBLISHED_ADVANTAGE.values()), "*", ms=12,
                color=SERIES_COLORS["published"], label="published (31x / 107x / 367x)")
        ax.plot(ns, [authors_advantage(int(n)) for n in ns], "--", color=SERIES_COLORS["authors' model"],
                label="authors' model: 512 n^2 / (3000 n log2 n)")
        ax.plot(ns, [cost_model_ratio(int(n)) for n in ns], ":", color=SERIES_COLORS["cost model"], lw=2,
                label="suite cost model: softmax FLOPs / FFT-conv FLOPs")
        for i, setup in enumerate(dict.fromkeys(sub["setup"])):
            for level in ("core", "model"):
                got = {n: s.values for n in sorted(set(sub["seq_len"]))
                       if (s := ev.ratio(sub, level, "fwd", n, "softmax-sdpa", "wave").get(setup))}
                if not got:
                    continue
                n_ = np.array(list(got))
                med, lo, hi = (np.array([stat(v) for v in got.values()]) for stat in (np.median, min, max))
                c = SERIES_COLORS[level]
                ax.plot(n_, med, STYLES[i % 4], marker="o", ms=4, color=c, label=f"measured {level} fwd, {setup}")
                if (hi > lo).any():
                    ax.fill_between(n_, lo, hi, color=c, alpha=0.15, lw=0)
        ax.axhline(1.0, color="0.2", lw=0.8)
        length_axis(ax)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(lambda y, _: f"{y:g}x")
        ax.set_ylabel("speedup of wave = SDPA ms / wave ms (x)")
        ax.set_title(f"Speedup of wave over SDPA, {'GPU' if gpu else 'CPU'} (1x: equal time)", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", framealpha=0.9)
        save(fig, out_dir / f"speedup_{name}.png")
