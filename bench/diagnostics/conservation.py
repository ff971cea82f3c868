"""The conservation bound: the wave convolution cannot add energy.

Young's inequality for a causal convolution: ||k * x||_p <= ||k||_1 ||x||_p for every p in [1, inf].
wavefield_core normalises every kernel so that sum over all lags of |k| <= 1, hence
||k * x||_p <= ||x||_p for every head and channel, at any length. check_conservation measures the
ratio on given signals with a given kernel, so a test can hand it a deliberately unnormalised
kernel and watch it fail.

Which convolution is checked on a model: the one the layer actually runs (layer_conv_operands):
- token path (integer s): deposits u along tokens, kernel sampled every s cells;
- field path: the bilinearly scattered field (B, H, d, G) along cells, kernel at every cell lag.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from wavefield_core.attention import WaveFieldAttention, field_geometry
from wavefield_core.fftconv import causal_fft_conv
from wavefield_core.kernel import wave_kernel

P_NORMS = (1.0, 2.0, math.inf)
DEFAULT_TOL = 1e-5  # fp32 rounding allowance: a ratio above 1 + tol is a FAIL


def p_label(p: float) -> str:
    return "inf" if math.isinf(p) else f"{p:g}"


@dataclass
class ConservationResult:
    ratios: np.ndarray  # (H, len(ps)): largest ||k * x||_p / ||x||_p over batch and channels
    l1: np.ndarray  # (H,): sum |k| of the kernel used
    ps: tuple
    tol: float

    @property
    def max_ratio(self) -> float:
        return float(self.ratios.max()) if self.ratios.size else 0.0

    @property
    def max_l1(self) -> float:
        return float(self.l1.max()) if self.l1.size else 0.0

    @property
    def passed(self) -> bool:
        return self.max_ratio <= 1.0 + self.tol and self.max_l1 <= 1.0 + self.tol


def check_conservation(x: torch.Tensor, kernel: torch.Tensor, ps=P_NORMS, tol: float = DEFAULT_TOL,
                       min_norm: float = 1e-20) -> ConservationResult:
    """Ratios ||k * x||_p / ||x||_p per head for a causal convolution along the last axis.

    x: (B, H, d, N) signals (time last), kernel: (H, K >= N). The convolution runs in x's dtype
    through causal_fft_conv (float32 math for fp32 inputs). Channels with ||x||_p < min_norm are
    skipped (a zero channel has no ratio).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (B, H, d, N), got shape {tuple(x.shape)}")
    y = causal_fft_conv(x, kernel, layout="bhdn")  # (B, H, d, N)
    h = x.shape[1]
    ratios = np.zeros((h, len(ps)))
    for j, p in enumerate(ps):
        nx = torch.linalg.vector_norm(x.double(), ord=p, dim=-1)  # (B, H, d)
        ny = torch.linalg.vector_norm(y.double(), ord=p, dim=-1)
        r = torch.where(nx > min_norm, ny / nx.clamp_min(min_norm), torch.zeros_like(nx))
        ratios[:, j] = r.amax(dim=(0, 2)).cpu().numpy()
    l1 = kernel[:, : x.shape[-1]].double().abs().sum(-1).detach().cpu().numpy()
    return ConservationResult(ratios=ratios, l1=l1, ps=tuple(ps), tol=tol)


def layer_conv_operands(layer: WaveFieldAttention, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (signal, kernel) pair the layer's wave convolution really uses for deposits u (B, H, d, N).

    Token path: (u, kernel at token lags n*s). Field path: (scattered field (B, H, d, G), kernel at
    cell lags 0..G-1).
    """
    n = u.shape[-1]
    with torch.no_grad():
        if layer.path == "token":
            return u, layer.kernel(n).to(u.dtype)
        lo, frac, g = field_geometry(n, layer.field_stride, u.device)
        frac = frac.to(u.dtype)
        field = u.new_zeros(*u.shape[:-1], g)  # (B, H, d, G)
        field = field.index_add(-1, lo, u * (1 - frac)).index_add(-1, lo + 1, u * frac)
        lags = torch.arange(g, device=u.device, dtype=layer.frequency.dtype)
        kernel = wave_kernel(layer.frequency, layer.damping, layer.phase, lags, layer.norm_cells).to(u.dtype)
        return field, kernel


def full_grid_l1(layer: WaveFieldAttention, n_cells: int = 1 << 16) -> np.ndarray:
    """sum over cell lags 0..n_cells-1 of |k| per head (float64): the ||k||_1 Young needs, (H,)."""
    with torch.no_grad():
        lags = torch.arange(n_cells, dtype=torch.float64)
        k = wave_kernel(layer.frequency.double().cpu(), layer.damping.double().cpu(), layer.phase.double().cpu(),
                        lags, layer.norm_cells)
    return k.abs().sum(-1).numpy()
