"""The token path as an exact linear recurrence: O(N) instead of O(N log N).

Why this exists: sampled every s cells, the V3.5 kernel is a single damped complex exponential,
    k[m] = exp(-alpha m s) cos(omega m s + phi) / Z = Re(c * r**m),
    r = exp((-alpha + i omega) s),  c = exp(i phi) / Z,
so the causal convolution y[n] = sum_{j<=n} k[n-j] u[j] equals Re(c * h[n]) with the one-pole
recurrence h[n] = r h[n-1] + u[n]: one complex state per head and channel, a diagonal linear
state-space model. The FFT is not needed to get sub-quadratic cost.

Computed chunk-wise (chunk C tokens), all with batched matmuls and no Python loop over tokens:
  intra-chunk:  y_intra = T u_chunk with T the C x C lower-triangular Toeplitz of k[0..C-1];
  chunk state:  s_m = sum_j r**(C-1-j) u[m, j]  (state contributed by chunk m at its end);
  across chunks: h_m = r**C h_{m-1} + s_m, solved by a log-depth doubling scan over chunks;
  carry-in:     y_inter[m, i] = Re(c r**(i+1) h_{m-1}).
Exact up to floating-point rounding (|r| < 1, so nothing grows). Only for integer strides
(the token path); the field path with fractional stride deposits bilinearly and is not a
single-pole filter per token.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from wavefield_core.kernel import DEFAULT_NORM_CELLS, check_wave_params, kernel_norm


def pole_and_gain(frequency, damping, phase, stride: float, norm_cells: int = DEFAULT_NORM_CELLS):
    """r (H,) and c (H,) complex such that k[m] = Re(c r**m) at token lag m (lags m * stride cells)."""
    alpha = F.softplus(damping)
    z = torch.complex(-alpha * stride, frequency * stride)  # log of the pole
    r = torch.exp(z)
    c = torch.exp(torch.complex(torch.zeros_like(phase), phase)) / kernel_norm(frequency, damping, phase, norm_cells)
    return r, c, z


def wave_scan_conv(u: torch.Tensor, frequency, damping, phase, stride: float, norm_cells: int = DEFAULT_NORM_CELLS,
                   chunk: int = 32) -> torch.Tensor:
    """Causal wave convolution of u (B, H, N, d) by recurrence. Returns (B, H, N, d), dtype of u.

    Same result as wave_conv(..., mode="token") for integer strides. The math runs in float32
    (float64 kept) with autocast off: under autocast the chunk matmuls would drop to half precision
    and the complex state would become a complex-half tensor, which most ops do not support.
    """
    check_wave_params(u.shape[1], frequency, damping, phase)  # a (1,) parameter would broadcast over every head
    with torch.autocast(u.device.type, enabled=False):
        return _scan(u, frequency, damping, phase, stride, norm_cells, chunk)


def _scan(u, frequency, damping, phase, stride, norm_cells, chunk):
    B, H, N, d = u.shape
    md = torch.float64 if u.dtype == torch.float64 else torch.float32
    freq, damp, ph = frequency.to(md), damping.to(md), phase.to(md)
    r, c, z = pole_and_gain(freq, damp, ph, float(stride), norm_cells)
    C = max(1, min(chunk, N))
    M = math.ceil(N / C)
    x = u.to(md)
    if M * C != N:
        x = F.pad(x, (0, 0, 0, M * C - N))  # zeros after the end: causal, changes no output < N
    x = x.view(B, H, M, C, d)  # (B, H, M, C, d)

    i = torch.arange(C, device=u.device, dtype=md)
    # Powers r**t for t = 0..C as exp(t z): no repeated multiplication, no drift.
    pw = torch.exp(z[:, None] * torch.arange(C + 1, device=u.device, dtype=md))  # (H, C+1) complex
    k = (c[:, None] * pw[:, :C]).real  # (H, C) kernel at token lags 0..C-1
    lag = i[:, None] - i[None, :]  # (C, C)
    toeplitz = torch.where(lag >= 0, k[:, lag.clamp(min=0).long()], torch.zeros((), dtype=md, device=u.device))  # (H, C, C)
    y = torch.matmul(toeplitz[None, :, None], x)  # (B, H, M, C, d) intra-chunk

    if M > 1:
        w = pw[:, :C].flip(-1)  # (H, C): r**(C-1-j)
        s_re = torch.einsum("hj,bhmjd->bhmd", w.real, x)
        s_im = torch.einsum("hj,bhmjd->bhmd", w.imag, x)
        s = torch.complex(s_re, s_im)  # (B, H, M, d) state each chunk adds at its end
        shift = 1
        while shift < M:  # doubling scan: h_m = sum_{m' <= m} a**(m - m') s_m'
            a_sh = torch.exp(z * (C * shift))[None, :, None, None]  # r**(C * shift)
            s = s + a_sh * F.pad(s, (0, 0, shift, 0))[:, :, :M]
            shift *= 2
        h_prev = F.pad(s, (0, 0, 1, 0))[:, :, :M]  # state entering chunk m: (B, H, M, d)
        carry = c[:, None] * pw[:, 1:]  # (H, C): c r**(i+1)
        y = y + carry.real[None, :, None, :, None] * h_prev.real[:, :, :, None, :] \
              - carry.imag[None, :, None, :, None] * h_prev.imag[:, :, :, None, :]
    return y.reshape(B, H, M * C, d)[:, :, :N].to(u.dtype)
