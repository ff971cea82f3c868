"""The conservation bound (docs/mechanism.md, "The kernel normalisation"): by Young's inequality
||k * x||_p <= ||k||_1 ||x||_p, and sum |k| <= 1, so the wave convolution cannot add energy."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from wavefield_core.attention import WaveFieldAttention, field_geometry
from wavefield_core.fftconv import causal_fft_conv
from wavefield_core.kernel import wave_kernel

P_NORMS = {"1": 1.0, "2": 2.0, "inf": math.inf}  # the label (CSV quantity ratio_p<label>) -> p
MIN_NORM = 1e-20  # a channel with a smaller p-norm (a zero channel) has no ratio


@dataclass
class ConservationResult:
    ratios: np.ndarray  # (H, len(P_NORMS)): largest ||k * x||_p / ||x||_p over batch and channels
    l1: np.ndarray  # (H,): sum |k| of the kernel used
    tol: float

    max_ratio = property(lambda self: float(self.ratios.max()))
    max_l1 = property(lambda self: float(self.l1.max()))
    passed = property(lambda self: max(self.max_ratio, self.max_l1) <= 1.0 + self.tol)


def check_conservation(x: torch.Tensor, kernel: torch.Tensor, tol: float = 1e-5) -> ConservationResult:
    """Ratios ||k * x||_p / ||x||_p per head of the causal convolution (in x's dtype) of x (B, H, d, N) with
    kernel (H, K >= N), given as an argument so a test can pass an unnormalised one; above 1 + tol fails."""
    y = causal_fft_conv(x, kernel, layout="bhdn")  # (B, H, d, N)
    ratios = np.zeros((x.shape[1], len(P_NORMS)))
    for j, p in enumerate(P_NORMS.values()):
        nx = torch.linalg.vector_norm(x.double(), ord=p, dim=-1)  # (B, H, d)
        ny = torch.linalg.vector_norm(y.double(), ord=p, dim=-1)
        # a NaN channel keeps its NaN ratio (it fails); only a zero channel has none
        r = torch.where((nx > MIN_NORM) | nx.isnan(), ny / nx.clamp_min(MIN_NORM), torch.zeros_like(nx))
        ratios[:, j] = r.amax(dim=(0, 2)).cpu().numpy()
    l1 = kernel[:, : x.shape[-1]].double().abs().sum(-1).detach().cpu().numpy()
    return ConservationResult(ratios=ratios, l1=l1, tol=tol)


def layer_conv_operands(layer: WaveFieldAttention, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (signal, kernel) pair the layer's wave convolution really uses for deposits u (B, H, d, N): token,
    scan and triton paths (u, kernel at token lags n*s), field path (scattered field (B, H, d, G), kernel at cell
    lags 0..G-1)."""
    n = u.shape[-1]
    with torch.no_grad():
        if layer.path != "field":
            return u, layer.kernel(n).to(u.dtype)
        lo, frac, g = field_geometry(n, layer.field_stride, u.device)
        frac = frac.to(u.dtype)
        field = u.new_zeros(*u.shape[:-1], g).index_add(-1, lo, u * (1 - frac)).index_add(-1, lo + 1, u * frac)
        lags = torch.arange(g, device=u.device, dtype=layer.frequency.dtype)
        kernel = wave_kernel(layer.frequency, layer.damping, layer.phase, lags, layer.norm_cells).to(u.dtype)
        return field, kernel


def full_grid_l1(layer: WaveFieldAttention, n_cells: int = 1 << 16) -> np.ndarray:
    """sum over cell lags 0..n_cells-1 of |k| per head (float64): the ||k||_1 Young needs, (H,)."""
    with torch.no_grad():
        params = (t.double().cpu() for t in (layer.frequency, layer.damping, layer.phase))
        k = wave_kernel(*params, torch.arange(n_cells, dtype=torch.float64), layer.norm_cells)
    return k.abs().sum(-1).numpy()
