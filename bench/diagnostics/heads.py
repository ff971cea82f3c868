"""Per-head physics: wave parameters, reach and role (docs/claims.md, claim 6; the rule: role_rule_text),
kernels, measured impulse responses, coupling."""
from __future__ import annotations

import bisect

import numpy as np
import torch

from wavefield_core.attention import WaveFieldAttention, wave_conv_bhdn


def role_rule_text(thresholds) -> str:
    lo, hi = thresholds
    return (f"reach = ln(10)/alpha cells (envelope exp(-alpha t) down to 10%), /s for tokens; "
            f"role = local if reach_tokens < {lo:g}, medium if {lo:g} <= reach_tokens < {hi:g}, "
            f"long-range if reach_tokens >= {hi:g}")


def role_of(reach_tokens: float, thresholds) -> str:
    return ("local", "medium", "long-range")[bisect.bisect_right(thresholds, reach_tokens)]


def head_params(layer: WaveFieldAttention, thresholds) -> list[dict]:
    """One dict per head: omega, alpha, phase, damping_raw, reach_cells, reach_tokens, role."""
    om, ph, al, raw = (c[:, 0] for c in _wave_params(layer))
    reach, s = np.log(10.0) / al, float(layer.field_stride)
    return [{"head": h, "omega": float(om[h]), "alpha": float(al[h]), "phase": float(ph[h]),
             "damping_raw": float(raw[h]), "reach_cells": float(reach[h]), "reach_tokens": float(reach[h] / s),
             "role": role_of(reach[h] / s, thresholds)} for h in range(layer.n_heads)]


def _wave_params(layer: WaveFieldAttention):
    """(omega, phi, alpha = softplus(damping), damping) as float64 numpy columns (H, 1)."""
    om, ph, raw = (t.detach().double().cpu().numpy()[:, None] for t in (layer.frequency, layer.phase, layer.damping))
    return om, ph, np.logaddexp(0.0, raw), raw


def kernel_z(layer: WaveFieldAttention) -> np.ndarray:
    """Normaliser Z per head, float64 (H,): L1 over R = norm_cells lags plus the geometric tail bound."""
    om, ph, al, _ = _wave_params(layer)
    r = int(layer.norm_cells)
    tr = np.arange(r, dtype=np.float64)[None, :]
    z = np.abs(np.exp(-al * tr) * np.cos(om * tr + ph)).sum(-1) + (np.exp(-al * r) / (1 - np.exp(-al)))[:, 0]
    return np.maximum(z, 1e-8)


def analytic_kernel(layer: WaveFieldAttention, lags) -> np.ndarray:
    """Closed-form normalised kernel exp(-alpha t) cos(omega t + phi) / Z at real cell `lags`, float64 (H, L):
    written out again (not wavefield_core.kernel) so the impulse check compares against an independent path."""
    om, ph, al, _ = _wave_params(layer)
    t = np.asarray(lags, dtype=np.float64)[None, :]
    return np.exp(-al * t) * np.cos(om * t + ph) / kernel_z(layer)[:, None]


def analytic_token_response(layer: WaveFieldAttention, n: int) -> np.ndarray:
    """What a unit deposit at token 0 (on cell 0) must produce at tokens 0..N-1, per head, (H, N) float64:
    the bilinear read (1-f) k(lo) + f k(lo+1) of the cell kernel at n*s, exactly k(n s) for integer s."""
    pos = np.arange(n, dtype=np.float64) * float(layer.field_stride)
    lo = np.floor(pos)
    frac = pos - lo
    return analytic_kernel(layer, lo) * (1 - frac) + analytic_kernel(layer, lo + 1) * frac


def impulse_check(layer: WaveFieldAttention, n: int) -> dict:
    """A unit deposit at token 0 (every head, one channel) through the layer's own wave convolution
    (the path forward() runs): the measured (H, N) response, the analytic one, their per-head max |diff|."""
    u = torch.zeros(1, layer.n_heads, 1, n, device=layer.frequency.device, dtype=torch.float32)  # (B, H, d=1, N)
    u[..., 0] = 1.0
    with torch.no_grad():
        y = wave_conv_bhdn(u, layer.frequency, layer.damping, layer.phase, layer.field_stride, layer.path,
                           layer.norm_cells)
    meas, ana = y[0, :, 0, :].double().cpu().numpy(), analytic_token_response(layer, n)
    return {"measured": meas, "analytic": ana, "max_abs_diff": np.abs(meas - ana).max(-1)}


def coupling_stats(layer: WaveFieldAttention) -> dict:
    """softmax(C) (H, H), its Frobenius distance from the identity and mean off-diagonal mass per row."""
    with torch.no_grad():
        p = torch.softmax(layer.coupling.double(), dim=-1).cpu().numpy()
    diag = np.diag(p)
    return {"matrix": p, "frobenius_from_identity": float(np.linalg.norm(p - np.eye(len(p)))),
            "mean_offdiag_mass": float((1.0 - diag).mean()),  # rows sum to 1: off-diagonal mass = 1 - P[h, h]
            "min_diag": float(diag.min()), "max_diag": float(diag.max())}
