"""What every figure of the suite shares: files only (the Agg backend, never a display), one colour
per method, the log2 sequence-length axis, and how a figure is written."""
from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402

# One colour per method, the same in every plot: wave warm, softmax blue/green, peers purple/brown,
# references grey. A method not listed gets a colour from its name's checksum (stable across runs).
COLORS = {
    "wave": "#d62728", "wave-bhnd": "#ff7f0e", "wave-compiled": "#e377c2", "wave-scan": "#bcbd22",
    "wave-field": "#8c1c13", "wave-triton": "#f4a261", "wave-graphed": "#ffbb78",
    "softmax-sdpa": "#1f77b4", "softmax-sdpa-flash": "#17becf", "softmax-sdpa-cudnn": "#2ca02c",
    "softmax-sdpa-efficient": "#98df8a", "softmax-sdpa-math": "#aec7e8", "softmax-flash-attn": "#0b3d91",
    "softmax-naive": "#393b79", "softmax-sdpa-graphed": "#6baed6",
    "peer-hgrn": "#9467bd", "peer-simple-gla": "#8c564b", "peer-retnet": "#c5b0d5", "peer-diag-ssm": "#c49c94",
    "peer-hgrn-fla": "#7b4173", "peer-simple-gla-fla": "#5a3a29",
    "fft-floor": "#7f7f7f", "fft-floor-field": "#b0b0b0", "standard": "#1f77b4", "standard-matched": "#2ca02c",
}
_SPARE = ["#637939", "#8ca252", "#bd9e39", "#843c39", "#d6616b", "#7b4173", "#a55194", "#3182bd"]


def color(method: str) -> str:
    return COLORS.get(method) or _SPARE[zlib.crc32(method.encode()) % len(_SPARE)]


def length_axis(ax) -> None:
    """log2 x axis, "sequence length N (tokens)", labelled 512, 1K, 2K, ... rather than 2^9."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda x, _: f"{x / 1024:g}K" if x >= 1024 else f"{x:g}"))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.set_xlabel("sequence length N (tokens)")


def save(fig, path: Path, note: str = "", tight: bool = True, **margins) -> Path:
    """Write the figure and close it; `note` (provenance, cells not drawn) in small grey type along the bottom.
    Layout: `margins` (subplots_adjust) if given, else tight_layout (room for the note) unless `tight` is False."""
    if note:
        fig.text(0.01, 0.01, note, fontsize=6.5, color="0.35", wrap=True, va="bottom")
    if margins:
        fig.subplots_adjust(**margins)
    elif tight:
        fig.tight_layout(rect=(0, 0.06 if note else 0, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
