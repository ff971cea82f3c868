"""Wave Field attention (V3.5 mechanism), with the faithful field path and the exact token path.

What the operator is (say it plainly): for each head and channel,
    y_t = g_t * sum_{j <= t} A[t, j] * ||k_j|| * v_j
a gated, parametric (damped-cosine) long convolution over tokens followed by a softmax head mixer.
There is no query-key content routing: q is computed (V3.5 does) but never used.

Paths (SPEC.md sections 1-3):
- "field": tokens sit at positions p_n = n * s on a 1-D field of G = ceil((N-1) s) + 2 cells
  (sized from N, never clamped), deposit bilinearly, convolve the field with the kernel over
  G cell lags, read back bilinearly. The faithful reference of the mechanism.
- "token": for integer s every token lands exactly on a cell, so the field convolution sampled at
  token positions is a token-level causal convolution with the kernel sampled every s cells.
  FFT size about 2N instead of about 2sN. Exact (same operator), so it is the default where valid.
- "scan": the same token-level operator computed as the one-pole linear recurrence it is
  (wavefield_core/recurrent.py): O(N), no FFT. Exact; opt-in, since the published method is FFT-based.
Head coupling P = softmax(C) mixes heads after the convolution. Because the gather is linear and
the same for every head, mixing before or after the gather is the same operator; we mix after it
(on N tokens, not G cells), which is cheaper.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from wavefield_core.fftconv import LAYOUTS, causal_fft_conv
from wavefield_core.recurrent import wave_scan_conv
from wavefield_core.kernel import DEFAULT_NORM_CELLS, check_stride, stride_is_integer, v35_init, wave_kernel

MODES = ("auto", "field", "token", "scan")


def resolve_mode(mode: str, stride: float) -> str:
    """Validate (mode, stride) and return the concrete path: 'field', 'token' or 'scan'."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid choices: {', '.join(MODES)}")
    s = check_stride(stride)
    if mode in ("token", "scan") and not stride_is_integer(s):
        raise ValueError(f"mode={mode!r} is exact only for integer strides, got field_stride={s:g}; use mode='field' or 'auto'")
    if mode == "auto":
        return "token" if stride_is_integer(s) else "field"
    return mode


def field_geometry(n: int, stride: float, device=None):
    """Cells of each token: lo (N,) int64, frac (N,) float64, and the field size G.

    Positions are computed in float64 so that n * s is exact for the strides people use.
    G = ceil((N - 1) s) + 2 leaves room for the last token's upper cell: nothing is ever clamped.
    """
    pos = torch.arange(n, device=device, dtype=torch.float64) * float(stride)  # (N,)
    lo = torch.floor(pos)
    frac = pos - lo
    g = int(math.ceil((n - 1) * float(stride))) + 2
    return lo.long(), frac, g


def wave_conv(u: torch.Tensor, frequency, damping, phase, stride: float, mode: str,
              norm_cells: int = DEFAULT_NORM_CELLS, layout: str = "bhnd") -> torch.Tensor:
    """The wave convolution of deposits u (v * ||k||), before head coupling.

    u: (B, H, N, d) for layout "bhnd", (B, N, H, d) for "bnhd". Returns the same shape (possibly a
    non-contiguous view). `mode` must be concrete ('field' or 'token') and the stride validated
    (resolve_mode).
    """
    tdim = LAYOUTS[layout][3]  # the token axis of u
    n = u.shape[tdim]
    pdt = frequency.dtype if u.dtype == torch.float64 else torch.float32
    freq, damp, ph = frequency.to(pdt), damping.to(pdt), phase.to(pdt)
    if mode == "token":
        lags = torch.arange(n, device=u.device, dtype=pdt) * float(stride)  # (N,) in cells
        kernel = wave_kernel(freq, damp, ph, lags, norm_cells)  # (H, N)
        return causal_fft_conv(u, kernel, layout=layout)
    if mode == "scan":
        perm = LAYOUTS[layout]
        x = u.permute(perm).transpose(-1, -2)  # (B, H, N, d) view
        y = wave_scan_conv(x.contiguous(), freq, damp, ph, float(stride), norm_cells)
        inverse = tuple(sorted(range(4), key=perm.__getitem__))
        return y.transpose(-1, -2).permute(inverse)

    lo, frac, g = field_geometry(n, stride, u.device)
    shape = [1] * u.dim()
    shape[tdim] = n
    frac = frac.to(u.dtype).view(shape)  # broadcast over the token axis
    exact_cells = bool((frac == 0).all())  # integer stride: no upper-cell deposit at all
    fshape = list(u.shape)
    fshape[tdim] = g
    field = u.new_zeros(fshape)  # the field: G cells instead of N tokens
    if exact_cells:
        field = field.index_add(tdim, lo, u)
    else:
        field = field.index_add(tdim, lo, u * (1 - frac)).index_add(tdim, lo + 1, u * frac)
    lags = torch.arange(g, device=u.device, dtype=pdt)  # every cell lag 0 .. G-1
    kernel = wave_kernel(freq, damp, ph, lags, norm_cells)  # (H, G)
    field = causal_fft_conv(field, kernel, layout=layout)
    out = field.index_select(tdim, lo)  # read back at each token's lower cell
    if not exact_cells:
        out = out * (1 - frac) + field.index_select(tdim, lo + 1) * frac
    return out


def wave_conv_bhdn(u: torch.Tensor, frequency, damping, phase, stride: float, mode: str,
                   norm_cells: int = DEFAULT_NORM_CELLS) -> torch.Tensor:
    """wave_conv for deposits in the time-last (B, H, d, N) layout; returns (B, H, d, N)."""
    return wave_conv(u, frequency, damping, phase, stride, mode, norm_cells, layout="bhdn")


def wave_mix(k: torch.Tensor, v: torch.Tensor, frequency, damping, phase, coupling, field_stride: float = 4.0,
             mode: str = "auto", norm_cells: int = DEFAULT_NORM_CELLS) -> torch.Tensor:
    """The sequence-mixing core alone, on ready k, v of shape (B, H, N, d). Returns (B, H, N, d).

    deposit u = v * ||k|| -> per-head wave convolution -> head coupling softmax(coupling).
    (q is not an argument: V3.5 never reads it.)
    """
    concrete = resolve_mode(mode, field_stride)
    u = v * torch.linalg.vector_norm(k, dim=-1, keepdim=True)  # (B, H, N, d)
    y = wave_conv(u, frequency, damping, phase, field_stride, concrete, norm_cells, layout="bhnd")
    mix = torch.softmax(coupling.to(y.dtype if y.dtype == torch.float64 else torch.float32), dim=-1).to(y.dtype)  # (H, H)
    return torch.einsum("hg,bgnd->bhnd", mix, y)  # (B, H, N, d)


class WaveFieldAttention(nn.Module):
    """V3.5 Wave Field attention layer. forward: x (B, N, D) -> (B, N, D).

    Args:
        d_model, n_heads: width D and heads H (d = D / H).
        field_stride: cells per token s. Exactly causal strides only: integers >= 1 or any s >= 2;
            anything else raises ValueError (V3.5 ran s = 0.996 and s = 0.125, both leak).
        mode: "auto" (token path when exact, else field), "field", "token" or "scan" (the token
            operator as an O(N) recurrence; integer strides only).
        norm_cells: lag range (cells) of the kernel's L1 normalisation; independent of N.
        gate_bias_init: V3.5 wrote 2.0 but its model-wide init reset every Linear bias to 0, so the
            trained model started at sigmoid(0) = 0.5. We default to 0.0, matching what trained.
    Parameters a reader looks for: frequency, damping (raw; alpha = softplus(damping)), phase (H,),
    coupling (H, H), initialised as in V3.5.
    """

    def __init__(self, d_model: int, n_heads: int, field_stride: float = 4.0, mode: str = "auto",
                 norm_cells: int = DEFAULT_NORM_CELLS, gate_bias_init: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.field_stride = check_stride(field_stride)
        self.mode = mode
        self.path = resolve_mode(mode, self.field_stride)  # the concrete path that runs
        self.norm_cells = int(norm_cells)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.gate = nn.Linear(d_model, d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        init = v35_init(n_heads)
        self.frequency = nn.Parameter(init["frequency"])
        self.damping = nn.Parameter(init["damping"])
        self.phase = nn.Parameter(init["phase"])
        self.coupling = nn.Parameter(torch.eye(n_heads) + 0.01 * torch.randn(n_heads, n_heads))
        if bias:
            nn.init.constant_(self.gate.bias, gate_bias_init)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, field_stride={self.field_stride:g}, path={self.path}"

    def kernel(self, n_tokens: int) -> torch.Tensor:
        """The per-head kernel at token lags 0..N-1 (token path) as used in forward: (H, N)."""
        lags = torch.arange(n_tokens, device=self.frequency.device, dtype=self.frequency.dtype) * self.field_stride
        return wave_kernel(self.frequency, self.damping, self.phase, lags, self.norm_cells)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        H, d = self.n_heads, self.head_dim
        qkv = self.qkv(x)  # (B, N, 3D)
        _q, k, v = qkv.split(D, dim=-1)  # q unused: faithful to V3.5 (no content routing)
        k = k.view(B, N, H, d)
        v = v.view(B, N, H, d)
        u = v * torch.linalg.vector_norm(k, dim=-1, keepdim=True)  # (B, N, H, d) deposits
        y = wave_conv(u, self.frequency, self.damping, self.phase, self.field_stride, self.path, self.norm_cells,
                      layout="bnhd")  # (B, N, H, d), a view of a time-last buffer
        mix = torch.softmax(self.coupling.float(), dim=-1).to(y.dtype)  # (H, H) rows sum to 1
        y = torch.einsum("hg,bngd->bnhd", mix, y).reshape(B, N, D)  # (B, N, D)
        g = torch.sigmoid(self.gate(x))  # content gate
        return self.out(y * g)
