"""Figures of a quality run (plots/val_loss_vs_tokens, val_loss_vs_wall, ratio_vs_tokens, lr_sweep and
final_metrics .png), from env.json, curves.csv and final.csv at each method's kept LR."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.common.figures import color as _color, plt, save
from bench.quality.analysis import RATIO_BASELINES, job_curve, ratio_by_tokens
from bench.quality.schema import lr_of
from bench.quality.sweep import first_seed, tuned_rows
from bench.scaling.claims import PUBLISHED_QUALITY


def _save(fig, path: Path, ax=None, xlabel: str = "", ylabel: str = "", title: str = "") -> Path:
    """Label `ax` (with a grid and a legend) when given, and write the figure."""
    if ax is not None:
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    return save(fig, path)


def _band(ax, x, ys, colour: str, label: str) -> None:
    """Mean line and a min..max band over seeds (ys: one list per x)."""
    mean = [sum(v) / len(v) for v in ys]
    ax.plot(x, mean, color=colour, marker=".", label=f"{label} ({max(len(v) for v in ys)} seed(s))")
    if max(len(v) for v in ys) > 1:
        ax.fill_between(x, [min(v) for v in ys], [max(v) for v in ys], color=colour, alpha=0.2, linewidth=0)


def write_plots(run_dir: Path, curves: list[dict], finals: list[dict], env: dict) -> list[Path]:
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    seed0 = first_seed(env)
    by = tuned_rows(finals, seed0)
    paths = []
    for xkey, xlabel, name in (("tokens", "training tokens", "val_loss_vs_tokens.png"),
                               ("wall_s", "job wall time (s, evaluation included)", "val_loss_vs_wall.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m, rows in by.items():
            runs = [job_curve(curves, m, s, lr_of(r)) for s, r in rows.items()]
            n = min((len(c) for c in runs), default=0)
            if n == 0:
                continue
            x = [sum(float(c[i][xkey]) for c in runs) / len(runs) for i in range(n)]  # wall time: mean over seeds
            _band(ax, x, [[float(c[i]["loss"]) for c in runs] for i in range(n)], _color(m), m)
        paths.append(_save(fig, out / name, ax, xlabel, "validation loss (nats/token)",
                           "validation loss: mean over seeds, band = min..max"))

    if "wave" in by and len(by) > 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for base, rows in by.items():
            if base not in RATIO_BASELINES:
                continue
            pts = ratio_by_tokens(curves, by["wave"], rows)
            if pts:
                _band(ax, [t for t, _ in pts], [v for _, v in pts], _color(base), f"wave / {base}")
        kind = (env.get("tokenizer") or {}).get("kind", "char")
        pub = next(q for q in PUBLISHED_QUALITY if q["key"] == ("bpe" if kind == "bpe" else "char"))
        ax.axhline(pub["wave_ppl"] / pub["std_ppl"], color="black", linestyle="--",
                   label=f"published V3.5 {pub['key']}: {pub['wave_ppl'] / pub['std_ppl']:.2f}")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        paths.append(_save(fig, out / "ratio_vs_tokens.png", ax, "training tokens",
                           "validation PPL ratio (> 1: wave worse)", "wave / baseline validation perplexity"))

    lrs = {lr_of(r) for r in finals if not math.isnan(lr_of(r))}
    if len(lrs) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in by:
            pts = sorted((lr_of(r), float(r["best_val_loss"] or "nan")) for r in finals
                         if r["method"] == m and (seed0 is None or int(float(r["seed"])) == seed0))
            ax.plot([a for a, _ in pts], [b for _, b in pts], color=_color(m), marker="o", label=m)
        ax.set_xscale("log")
        paths.append(_save(fig, out / "lr_sweep.png", ax, "peak learning rate", "best validation loss (nats/token)",
                           f"learning-rate sweep (seed {seed0}, same budget)"))

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    for ax, (key, label, scale) in zip(axes, (("test_ppl", "test perplexity", 1.0), ("test_bpc", "test bits/char", 1.0),
                                               ("test_acc", "test top-1 accuracy (%)", 100.0))):
        for i, (m, rows) in enumerate(by.items()):
            vals = [float(r[key]) * scale for r in rows.values()]
            std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            ax.errorbar([i], [float(np.mean(vals))], yerr=[std], fmt="o", color=_color(m), capsize=6, markersize=8)
            ax.scatter([i + 0.12] * len(vals), vals, color=_color(m), s=12, alpha=0.6)
        ax.set_xticks(range(len(by)))
        ax.set_xticklabels(list(by), rotation=15)
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("test metrics (best-validation weights): mean ± std over seeds, dots = seeds")
    paths.append(_save(fig, out / "final_metrics.png"))
    return paths
