"""Figures of a quality run, derived from curves.csv and final.csv only.

plots/val_loss_vs_tokens.png   validation loss vs training tokens, one line per seed, colour per method
plots/val_loss_vs_wall.png     the same against job wall time (evaluation included)
plots/final_metrics.png        test PPL, bpc and accuracy per method: seeds as dots, mean with std error bars
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.scaling.plots import color as _color  # noqa: E402 - one colour per method in every plot of the suite


def write_plots(run_dir: Path, curves: list[dict], finals: list[dict], title: str = "") -> list[Path]:
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    paths = []
    val = [r for r in curves if r["split"] == "val"]
    methods = list(dict.fromkeys(r["method"] for r in curves + finals))
    for xkey, xlabel, name in (("tokens", "training tokens", "val_loss_vs_tokens.png"),
                               ("wall_s", "job wall time (s, evaluation included)", "val_loss_vs_wall.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m in methods:
            seeds = sorted({r["seed"] for r in val if r["method"] == m}, key=int)
            for i, seed in enumerate(seeds):
                rows = [r for r in val if r["method"] == m and r["seed"] == seed]
                ax.plot([float(r[xkey]) for r in rows], [float(r["loss"]) for r in rows], color=_color(m),
                        alpha=0.85, marker=".", label=m if i == 0 else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (nats/token, token-weighted)")
        ax.set_title(title or "validation loss (one line per seed)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    for ax, (key, label, scale) in zip(axes, (("test_ppl", "test perplexity", 1.0), ("test_bpc", "test bits/char", 1.0),
                                               ("test_acc", "test top-1 accuracy (%)", 100.0))):
        for i, m in enumerate(methods):
            vals = [float(r[key]) * scale for r in finals if r["method"] == m]
            if not vals:
                continue
            mean = sum(vals) / len(vals)
            std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
            ax.errorbar([i], [mean], yerr=[std], fmt="o", color=_color(m), capsize=6, markersize=8)
            ax.scatter([i + 0.12] * len(vals), vals, color=_color(m), s=12, alpha=0.6)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=15)
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("test metrics (best-validation weights): mean ± std over seeds, dots = seeds")
    fig.tight_layout()
    fig.savefig(out / "final_metrics.png", dpi=120)
    plt.close(fig)
    paths.append(out / "final_metrics.png")
    return paths
