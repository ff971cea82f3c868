"""Figures: kernels per layer, impulse error, coupling heatmaps, energy flow, causality scores."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, MaxNLocator

from bench.common.figures import plt, save
from bench.diagnostics import report
from bench.diagnostics.causality import leak_tol
from bench.diagnostics.heads import analytic_kernel, kernel_z
from bench.diagnostics.run import QUANTITIES


def _panels(n: int, max_cols: int, width: float, height: float, extra_height: float = 0.0):
    """A figure with a grid of n panels, at most max_cols a row; the unused panels are blank."""
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, extra_height + height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def plot_kernels(kern: dict, path: Path, layer_idx: int, footer: str) -> None:
    """One panel per head: cell-lag kernel, token-lag samples, measured impulse, envelope, reach."""
    params, meas, ana, layer = kern["params"], kern["measured"], kern["analytic"], kern["layer"]
    s = float(layer.field_stride)
    fig, axes = _panels(len(params), 4, 3.6, 2.8, extra_height=0.6)
    n_tok, z = meas.shape[1], kernel_z(layer)
    for p, ax in zip(params, axes.flat):
        h = p["head"]
        reach = 0.0 if math.isnan(p["reach_cells"]) else p["reach_cells"]  # NaN damping: the shortest span
        span_cells = min(max(3.0 * reach, 8 * s), (n_tok - 1) * s)
        cells = np.arange(int(span_cells) + 1)
        ax.plot(cells, analytic_kernel(layer, cells)[h], color="0.6", lw=1, label="kernel, cell lags")
        env = np.exp(-p["alpha"] * cells) / z[h]  # exp(-alpha t) / Z
        ax.plot(cells, env, "k:", lw=0.8, label="envelope")
        ax.plot(cells, -env, "k:", lw=0.8)
        nt = int(span_cells // s) + 1
        lags = np.arange(nt) * s
        ax.plot(lags, ana[h, :nt], "o", ms=3.5, color="C0", label="analytic, token lags")
        ax.plot(lags, meas[h, :nt], "x", ms=4, color="C3", label="measured impulse")
        ax.axvline(p["reach_cells"], color="C2", lw=0.8, ls="--", label="reach (10%)")
        ax.axhline(0, color="0.85", lw=0.5)
        ax.set_title(f"h{h} w={p['omega']:.2f} a={p['alpha']:.3f} phi={p['phase']:.2f}\n"
                     f"reach {p['reach_tokens']:.2f} tok ({p['role']})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel(f"lag (cells; token = {s:g} cells)", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("kernel value (output per unit deposit)", fontsize=7)
    axes.flat[0].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"Layer {layer_idx}: wave kernels (impulse response measured through wave_conv_bhdn)", fontsize=10)
    height = fig.get_figheight()  # inches: room for the suptitle + two-line titles on top, labels + footer below
    save(fig, path, footer, left=0.05, right=0.98, bottom=0.55 / height, top=1 - 0.85 / height, hspace=0.6, wspace=0.25)


def plot_impulse_error(df: pd.DataFrame, path: Path, footer: str) -> None:
    d = df[df["check"] == "impulse"]
    t = d.pivot_table(index="layer", columns="head", values="value", aggfunc="first")
    fig, ax = plt.subplots(figsize=(1 + 0.6 * t.shape[1], 1 + 0.5 * t.shape[0]))
    im = ax.imshow(np.log10(t.values.astype(float) + 1e-20), cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label="log10 max |measured - analytic|")
    ax.set_xticks(range(t.shape[1]), [str(int(float(c))) for c in t.columns])  # whole-number heads and layers
    ax.set_yticks(range(t.shape[0]), [str(int(float(i))) for i in t.index])
    ax.set(xlabel="head", ylabel="layer")
    thr = float(d["threshold"].iloc[0]) if len(d) else float("nan")
    ax.set_title(f"impulse response vs analytic kernel (threshold {thr:g})", fontsize=9)
    save(fig, path, footer, left=0.12, right=0.95, bottom=0.15, top=0.9)


def plot_coupling(couplings: dict, stats: pd.DataFrame, path: Path, footer: str) -> None:
    fig, axes = _panels(len(couplings), 3, 3.4, 3.1)
    for (i, p), ax in zip(couplings.items(), axes.flat):
        im = ax.imshow(p, vmin=0, vmax=1, cmap="magma")
        s = stats[stats["layer"] == i].iloc[0]
        ax.set_title(f"layer {i}: ||P-I||_F={s.iloc[1]:.2f}, off-diag={s.iloc[2]:.2f}", fontsize=8)
        ax.set_xlabel("source head h'", fontsize=7)
        ax.set_ylabel("target head h", fontsize=7)
        ax.set(xticks=range(p.shape[1]), yticks=range(p.shape[0]))  # heads are whole numbers: no 0.5 or 2.5 ticks
        ax.tick_params(labelsize=6)
    height = fig.get_figheight()  # inches: room for the suptitle on top and the footer below
    fig.subplots_adjust(left=0.08, right=0.86, bottom=0.45 / height, top=1 - 0.7 / height, hspace=0.5, wspace=0.35)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="coupling weight softmax(C)[h, h'] (0 to 1)")
    fig.suptitle("Head coupling P = softmax(C)", fontsize=10)
    save(fig, path, footer, tight=False)  # margins set above, before the colour bar took its share


def plot_energy(energy: dict, etable: pd.DataFrame, path: Path, text_desc: str, footer: str) -> None:
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.3))
    layers = etable["layer"].values
    for q in QUANTITIES:
        a1.plot(layers, etable[q].values, "o-", ms=3, label=q)
    a1.set(yscale="log", xlabel="layer", ylabel="mean per-token RMS")
    a1.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    a1.set_title("energy flow by layer", fontsize=9)
    a1.legend(fontsize=6)
    colors = plt.get_cmap("viridis")(np.linspace(0, 1, len(energy)))
    for color, (i, per) in zip(colors, energy.items()):
        a2.plot(per["residual_out"][0], color=color, lw=0.8, label=f"after block {i}")
    a2.set(yscale="log", xlabel="token position (batch element 0)", ylabel="per-token RMS of residual stream")
    plain = FuncFormatter(lambda y, _: f"{y:.3g}")  # 0.71, not 7.1 x 10^-1 (which ran into the axis label)
    a2.yaxis.set_major_formatter(plain)
    a2.yaxis.set_minor_formatter(plain)
    a2.set_title("residual stream per token", fontsize=9)
    a2.legend(fontsize=6)
    for color, (i, per) in zip(colors, energy.items()):
        a3.scatter(per["field_u"].ravel(), per["field_conv"].ravel(), s=2, color=color, label=f"layer {i}")
    lim = max(float(np.max([per["field_u"].max() for per in energy.values()])), 1e-12)
    a3.plot([0, lim], [0, lim], "k--", lw=0.8, label="y = x")
    a3.set(xlabel="per-token RMS of deposits u", ylabel="per-token RMS after wave conv")
    a3.set_title("field before vs after the convolution", fontsize=9)
    a3.legend(fontsize=6, markerscale=3)
    fig.suptitle(f"Energy flow on {text_desc}", fontsize=9)
    save(fig, path, footer, left=0.05, right=0.99, bottom=0.14, top=0.86, wspace=0.3)


def plot_causality(ctable: pd.DataFrame, path: Path, footer: str, tol: float) -> None:
    """Leak score per probe on a log axis: clean operators at rounding level, leaking ones near 1."""
    labels = [f"{r['group']}: {r['operator']} ({r['probe']}, N={r['N']})" for _, r in ctable.iterrows()]
    vals = np.maximum(ctable["max leak score"].values.astype(float), 1e-20)
    colors = ["C3" if g == "leak demo" else ("C0" if g == "model" else "C2") for g in ctable["group"]]
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(labels) + 1.5))
    ax.barh(range(len(labels)), vals, color=colors)
    ax.set(xscale="log", xlim=(1e-20, 10))
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.axvline(tol, color="k", ls="--", lw=0.8, label=f"leak threshold {tol:g}")
    ax.set_xlabel("leak score (change before t / change at or after t); bars at 1e-20 are exactly 0")
    # two lines: one line is wider than the axes, which start a third of the way in to leave room for the labels
    ax.set_title("Causality probes\nmodel (blue), clean reference (green), leaking configurations (red)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    save(fig, path, footer, left=0.36, right=0.97, bottom=0.6 / fig.get_figheight() + 0.02,
          top=1 - 0.55 / fig.get_figheight())


def plot_all(arrays: dict, df: pd.DataFrame, pdir: Path, text_desc: str, footer: str, probe_dtype) -> None:
    """Every figure of a run into pdir: `arrays` are run_diagnostics' plot data, `df` its rows."""
    pdir.mkdir(exist_ok=True)
    for i, kern in arrays["kernels"].items():
        plot_kernels(kern, pdir / f"kernels_layer{i}.png", i, footer)
    plot_impulse_error(df, pdir / "impulse_error.png", footer)
    plot_coupling(arrays["couplings"], report.coupling_table(df), pdir / "coupling.png", footer)
    plot_energy(arrays["energy"], report.energy_table(df), pdir / "energy_flow.png", text_desc, footer)
    plot_causality(report.causality_table(df), pdir / "causality.png", footer, tol=leak_tol(probe_dtype))
