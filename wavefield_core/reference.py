"""Slow, obvious float64 references built straight from the definition (docs/mechanism.md, "The layer step by step").

Everything here materialises the (H, N, N) token operator A_h[t, j] explicitly:
    A_h[t, j] = sum over cells a of token t, cells b of token j, a >= b:  w(t, a) w(j, b) k_h[a - b]
with bilinear weights w (1 - f on the lower cell, f on the upper). No FFT, no token reduction,
no fused layouts. It accepts ANY stride (including leaking ones) and V3.5's fixed-field clamping,
so diagnostics can show what a leak looks like; the guard lives in the fast modules.
"""
from __future__ import annotations

import math

import torch

from wavefield_core.kernel import DEFAULT_NORM_CELLS


def reference_kernel(frequency, damping, phase, n_lags: int, norm_cells: int = DEFAULT_NORM_CELLS) -> torch.Tensor:
    """k_h[t] for integer cell lags t = 0 .. n_lags-1, float64, (H, n_lags). Written out term by term."""
    om, ph = frequency.double(), phase.double()
    alpha = torch.log1p(torch.exp(damping.double()))  # softplus
    t = torch.arange(n_lags, dtype=torch.float64)
    raw = torch.exp(-alpha[:, None] * t) * torch.cos(om[:, None] * t + ph[:, None])
    tr = torch.arange(norm_cells, dtype=torch.float64)
    body = (torch.exp(-alpha[:, None] * tr) * torch.cos(om[:, None] * tr + ph[:, None])).abs().sum(-1)
    tail = torch.exp(-alpha * norm_cells) / (1 - torch.exp(-alpha))  # sum_{t >= R} e^{-alpha t}
    return raw / torch.clamp(body + tail, min=1e-8)[:, None]


def token_cells(n: int, stride: float, field_size: int | None = None, clamp: bool = False):
    """Per token: lower cell, fraction, and field size. With clamp=True (V3.5), positions are
    clamped to G-2 of a FIXED field_size G -- the clamping leak. Otherwise G grows with N."""
    pos = [i * float(stride) for i in range(n)]
    if field_size is None:
        field_size = int(math.ceil((n - 1) * float(stride))) + 2
    if clamp:
        pos = [min(p, field_size - 2) for p in pos]
    lo = [int(math.floor(p)) for p in pos]
    frac = [p - l for p, l in zip(pos, lo)]
    if max(lo) + 1 >= field_size:
        raise ValueError(f"field of {field_size} cells is too small for N={n} at stride {stride} (use clamp=True to reproduce V3.5)")
    return lo, frac, field_size


def reference_operator(frequency, damping, phase, n: int, stride: float, norm_cells: int = DEFAULT_NORM_CELLS,
                       field_size: int | None = None, clamp: bool = False) -> torch.Tensor:
    """The explicit token operator A of shape (H, N, N), float64 (before coupling)."""
    lo, frac, g = token_cells(n, stride, field_size, clamp)
    k = reference_kernel(frequency, damping, phase, g, norm_cells)  # (H, G)
    lo_t = torch.tensor(lo)
    fr = torch.tensor(frac, dtype=torch.float64)
    cells = [(lo_t, 1 - fr), (lo_t + 1, fr)]  # (cell index, weight) for lower and upper cell
    a_op = torch.zeros(k.shape[0], n, n, dtype=torch.float64)
    for ca, wa in cells:  # cell a of the reading token t
        for cb, wb in cells:  # cell b of the depositing token j
            lag = ca[:, None] - cb[None, :]  # (N, N) a - b
            valid = lag >= 0  # the field convolution is causal in cells
            term = k[:, lag.clamp(min=0)] * valid  # (H, N, N)
            a_op += wa[None, :, None] * wb[None, None, :] * term
    return a_op


def reference_wave_mix(k, v, frequency, damping, phase, coupling, field_stride: float, norm_cells: int = DEFAULT_NORM_CELLS,
                       field_size: int | None = None, clamp: bool = False) -> torch.Tensor:
    """float64 reference of the core: k, v (B, H, N, d) -> (B, H, N, d)."""
    k, v = k.double(), v.double()
    n = k.shape[2]
    a_op = reference_operator(frequency, damping, phase, n, field_stride, norm_cells, field_size, clamp)  # (H, N, N)
    u = v * k.pow(2).sum(-1, keepdim=True).sqrt()  # deposit v * ||k||
    y = torch.einsum("htj,bhjd->bhtd", a_op, u)
    mix = torch.softmax(coupling.double(), dim=-1)
    return torch.einsum("hg,bgtd->bhtd", mix, y)


def reference_wave_layer(layer, x: torch.Tensor, **overrides) -> torch.Tensor:
    """float64 forward of a WaveFieldAttention `layer` on x (B, N, D), from its own weights.
    `overrides` may set field_stride, field_size, clamp (to probe leaking configurations)."""
    x = x.double()
    B, N, D = x.shape
    H, d = layer.n_heads, layer.head_dim

    def lin(mod, inp):
        w = mod.weight.double()
        return inp @ w.t() + (mod.bias.double() if mod.bias is not None else 0.0)

    qkv = lin(layer.qkv, x)
    k = qkv[..., D:2 * D].reshape(B, N, H, d).transpose(1, 2)  # (B, H, N, d)
    v = qkv[..., 2 * D:].reshape(B, N, H, d).transpose(1, 2)
    y = reference_wave_mix(k, v, layer.frequency, layer.damping, layer.phase, layer.coupling,
                           overrides.get("field_stride", layer.field_stride), layer.norm_cells,
                           overrides.get("field_size"), overrides.get("clamp", False))
    y = y.transpose(1, 2).reshape(B, N, D)
    g = torch.sigmoid(lin(layer.gate, x))
    return lin(layer.out, y * g)
