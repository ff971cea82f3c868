"""Wave Field attention (V3.5 mechanism), with the faithful field path and the exact token path.

What the operator is (say it plainly): for each head and channel,
    y_t = g_t * sum_{j <= t} A[t, j] * ||k_j|| * v_j
a gated, parametric (damped-cosine) long convolution over tokens followed by a softmax head mixer.
There is no query-key content routing: q is computed (V3.5 does) but never used.

Paths (docs/mechanism.md):
- "field": tokens sit at positions p_n = n * s on a 1-D field of G = ceil((N-1) s) + 2 cells
  (sized from N, never clamped), deposit bilinearly, convolve the field with the kernel over
  G cell lags, read back bilinearly. The faithful reference of the mechanism.
- "token": for integer s every token lands exactly on a cell, so the field convolution sampled at
  token positions is a token-level causal convolution with the kernel sampled every s cells.
  FFT size about 2N instead of about 2sN. Exact (same operator), so it is the default where valid.
- "scan": the same token-level operator computed as the one-pole linear recurrence it is
  (wavefield_core/recurrent.py): O(N), no FFT. Exact; opt-in, since the published method is FFT-based.
- "triton": the same recurrence in fused Triton kernels (wavefield_core/triton_scan.py): one pass
  over memory forward and one backward. CUDA (or triton's interpreter on CPU); opt-in until a GPU
  run shows it faster than the FFT path at every length.
Head coupling P = softmax(C) mixes heads after the convolution. Because the gather is linear and
the same for every head, mixing before or after the gather is the same operator; we mix after it
(on N tokens, not G cells), which is cheaper.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from collections import OrderedDict

from wavefield_core.fftconv import LAYOUTS, axis_fft_size, causal_fft_conv, field_cells, field_geometry, kernel_spectrum
from wavefield_core.recurrent import wave_scan_conv
from wavefield_core.kernel import (DEFAULT_NORM_CELLS, check_int, check_stride, check_wave_params, kernel_support,
                                   stride_is_integer, v35_init, wave_kernel)

MODES = ("auto", "field", "token", "scan", "triton")
__all__ = ["MODES", "WaveFieldAttention", "field_geometry", "mix_heads", "resolve_mode", "wave_conv", "wave_conv_bhdn",
           "wave_mix"]


def resolve_mode(mode: str, stride: float) -> str:
    """Validate (mode, stride) and return the concrete path: 'field', 'token', 'scan' or 'triton'."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid choices: {', '.join(MODES)}")
    s = check_stride(stride)
    if mode in ("token", "scan", "triton") and not stride_is_integer(s):
        raise ValueError(f"mode={mode!r} is exact only for integer strides, got field_stride={s:g}; use mode='field' or 'auto'")
    if mode == "auto":
        return "token" if stride_is_integer(s) else "field"
    return mode


def _path_kernel(freq, damp, ph, n: int, stride: float, mode: str, norm_cells: int, dtype) -> torch.Tensor:
    """The kernel taps the path convolves with, cut at their numerical support (kernel_support).

    token: lags 0, s, 2s, ... (one per token); field: every cell lag 0, 1, ..., G-1.
    """
    if mode == "token":
        count, step = n, float(stride)
    else:
        count, step = field_cells(n, stride), 1.0
    count = kernel_support(damp, step, count, dtype)
    lags = torch.arange(count, device=freq.device, dtype=freq.dtype) * step
    return wave_kernel(freq, damp, ph, lags, norm_cells)  # (H, count)


def wave_conv(u: torch.Tensor, frequency, damping, phase, stride: float, mode: str,
              norm_cells: int = DEFAULT_NORM_CELLS, layout: str = "bhnd", scale: torch.Tensor | None = None) -> torch.Tensor:
    """The wave convolution of deposits u * scale (scale: optional per-token factor, e.g. ||k||), before
    head coupling.

    u: (B, H, N, d) for layout "bhnd", (B, N, H, d) for "bnhd", (B, H, d, N) for "bhdn"; scale has
    u's shape with one channel; frequency, damping, phase are (H,). Returns u's shape (possibly a
    non-contiguous view). `mode` is one of MODES ("auto" picks the path as resolve_mode does);
    unknown modes and leaking strides raise ValueError.
    """
    mode = resolve_mode(mode, stride)
    check_wave_params(u.shape[LAYOUTS[layout][1]], frequency, damping, phase)
    n = u.shape[LAYOUTS[layout][3]]
    pdt = torch.float64 if u.dtype == torch.float64 else torch.float32  # float64 data: a float64 kernel too
    freq, damp, ph = frequency.to(pdt), damping.to(pdt), phase.to(pdt)
    if mode == "triton":
        from wavefield_core.triton_scan import triton_available, wave_triton_conv

        why = triton_available(u.device)
        if why is not None:
            raise RuntimeError(f"mode='triton' cannot run here: {why}")
        return wave_triton_conv(u, frequency, damping, phase, float(stride), norm_cells, scale=scale, layout=layout)
    if mode == "scan":
        perm = LAYOUTS[layout]
        x = u if scale is None else u * scale
        x = x.permute(perm).transpose(-1, -2)  # (B, H, N, d) view
        # u's dtype, as the FFT paths return (u * scale may promote, e.g. bf16 u with a float32 scale)
        y = wave_scan_conv(x.contiguous(), freq, damp, ph, float(stride), norm_cells).to(u.dtype)
        inverse = tuple(sorted(range(4), key=perm.__getitem__))
        return y.transpose(-1, -2).permute(inverse)
    if u.numel() == 0:  # an empty batch or sequence: the FFT libraries refuse it, the result is empty too
        return u * 0
    field_stride = None if mode == "token" else stride
    recording = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, scale, frequency, damping, phase))
    if not recording and u.device.type == "cpu":
        kernel, spectrum = _inference_kernel(freq, damp, ph, n, stride, mode, norm_cells, pdt)
        return causal_fft_conv(u, kernel, layout=layout, scale=scale, field_stride=field_stride, spectrum=spectrum)
    kernel = _path_kernel(freq, damp, ph, n, stride, mode, norm_cells, pdt)
    return causal_fft_conv(u, kernel, layout=layout, scale=scale, field_stride=field_stride)


# Inference calls (autograd not recording) reuse the kernel and its spectrum while the three wave
# parameters keep their values: the key holds the values themselves (3H numbers, compared exactly),
# so a changed parameter can never meet a stale spectrum, however it was changed. At N = 2048 on a
# 2-core CPU, rebuilding them was about 8% of a forward. CPU only: reading the values of a CUDA
# tensor would synchronise the device every call. Training (autograd recording) always rebuilds.
_KERNEL_CACHE: "OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()
_KERNEL_CACHE_SIZE = 8


def _inference_kernel(freq, damp, ph, n: int, stride: float, mode: str, norm_cells: int, dtype):
    m = axis_fft_size(n, None if mode == "token" else stride)
    key = (mode, n, float(stride), int(norm_cells), dtype, m,
           tuple(freq.tolist()), tuple(damp.tolist()), tuple(ph.tolist()))
    hit = _KERNEL_CACHE.get(key)
    if hit is not None:
        _KERNEL_CACHE.move_to_end(key)
        return hit
    kernel = _path_kernel(freq, damp, ph, n, stride, mode, norm_cells, dtype)
    hit = (kernel, kernel_spectrum(kernel, m, torch.float64 if dtype == torch.float64 else torch.float32))
    _KERNEL_CACHE[key] = hit
    while len(_KERNEL_CACHE) > _KERNEL_CACHE_SIZE:
        _KERNEL_CACHE.popitem(last=False)
    return hit


def wave_conv_bhdn(u: torch.Tensor, frequency, damping, phase, stride: float, mode: str,
                   norm_cells: int = DEFAULT_NORM_CELLS) -> torch.Tensor:
    """wave_conv for deposits in the time-last (B, H, d, N) layout; returns (B, H, d, N)."""
    return wave_conv(u, frequency, damping, phase, stride, mode, norm_cells, layout="bhdn")


def _mix_matrix(coupling: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """softmax(C) over each row (float32 math, float64 kept), in the dtype it multiplies."""
    return torch.softmax(coupling.to(dtype if dtype == torch.float64 else torch.float32), dim=-1).to(dtype)


def mix_heads(coupling: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Head coupling y_h <- sum_g softmax(C)[h, g] y_g on time-last y (B, H, d, N), any strides.

    One batched matmul that reads y where it lies (a strided view of the FFT buffer) and writes
    (B, d, H, N) memory; returned as a (B, H, d, N) view.
    """
    mix = _mix_matrix(coupling, y.dtype)
    B, H, d, N = y.shape
    if y.is_contiguous():  # compact time-last y (the training path): one GEMM over (H, d*N), contiguous out
        return torch.matmul(mix, y.view(B, H, d * N)).view(B, H, d, N)
    return torch.matmul(mix, y.transpose(1, 2)).transpose(1, 2)


def _check_mix_shapes(k: torch.Tensor, v: torch.Tensor, coupling: torch.Tensor, v_layout: str) -> None:
    """ValueError unless k is (B, H, N, d), v shares its B, H and N in v_layout, and coupling is (H, H)."""
    if v_layout not in ("bhnd", "bhdn"):
        raise ValueError(f"unknown v_layout {v_layout!r}; valid choices: bhnd, bhdn")
    if k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"k and v must be 4-D, got shapes {tuple(k.shape)} and {tuple(v.shape)}")
    B, H, N, _ = k.shape
    want = (B, H, N, v.shape[3]) if v_layout == "bhnd" else (B, H, v.shape[2], N)
    if tuple(v.shape) != want:
        raise ValueError(f"v must share k's batch, heads and length: k is {tuple(k.shape)}, so v ({v_layout}) "
                         f"must be {want}, got {tuple(v.shape)}")
    if tuple(coupling.shape) != (H, H):
        raise ValueError(f"coupling must have shape (H, H) = ({H}, {H}), got {tuple(coupling.shape)}")


def wave_mix(k: torch.Tensor, v: torch.Tensor, frequency, damping, phase, coupling, field_stride: float = 4.0,
             mode: str = "auto", norm_cells: int = DEFAULT_NORM_CELLS, v_layout: str = "bhnd") -> torch.Tensor:
    """The sequence-mixing core alone, on ready k (B, H, N, d) and v. Returns (B, H, N, d).

    deposit u = v * ||k|| -> per-head wave convolution -> head coupling softmax(coupling).
    (q is not an argument: V3.5 never reads it.)
    v_layout: "bhnd" (v is (B, H, N, d), like k) or "bhdn" (v is (B, H, d, N), channel-major: the
    layout a projection writes for free as W_v @ x^T, and the one the FFT needs, so no transpose is
    paid). The result is a (B, H, N, d) view either way (of time-last memory).
    """
    _check_mix_shapes(k, v, coupling, v_layout)
    norm = torch.linalg.vector_norm(k, dim=-1, keepdim=True)  # (B, H, N, 1): contiguous reduction
    if v_layout == "bhdn":
        norm = norm.transpose(-1, -2)  # (B, H, 1, N)
    y = wave_conv(v, frequency, damping, phase, field_stride, mode, norm_cells, layout=v_layout, scale=norm)
    if v_layout == "bhdn":
        y = y.transpose(-1, -2)  # (B, H, N, d) view
    if y.is_contiguous():  # token-major result (the scan path): one GEMM over (H, N*d)
        B, H, N, d = y.shape
        return torch.matmul(_mix_matrix(coupling, y.dtype), y.view(B, H, N * d)).view(B, H, N, d)
    return mix_heads(coupling, y.transpose(-1, -2)).transpose(-1, -2)  # time-last result (the FFT paths)


class _ProjectT(torch.autograd.Function):
    """Several linear maps of x (B, N, D_in), each written channel-major: W_i @ x^T + b_i as
    (B, D_i, N) contiguous, the layout the FFT wants (BLAS reads x through a transposed operand).

    The same numbers as nn.Linear. The explicit backward returns d(loss)/dx token-major, summed
    over the maps by accumulating GEMMs, so x's gradient needs neither a transposed sum (autograd
    would add a (B, D, N) gradient into a (B, N, D) one) nor the zero-filled concatenation that
    slicing one stacked output would cost. Saved: x (alive anyway) and the weights.
    """

    @staticmethod
    def forward(ctx, x, *wb):
        # Under autocast the GEMMs run in the autocast dtype, as nn.Linear's would (which leaves float64
        # alone: autocast casts no float64 tensor). A custom Function's backward runs outside autocast,
        # so the compute dtype is fixed here and the backward casts to it explicitly (mixing a bf16
        # gradient with fp32 weights fails otherwise).
        dev = x.device.type
        autocast = torch.is_autocast_enabled(dev) and x.dtype != torch.float64
        cdt = torch.get_autocast_dtype(dev) if autocast else x.dtype
        ctx.dtypes = (x.dtype, [None if t is None else t.dtype for t in wb])
        with torch.autocast(dev, enabled=False):
            xc = x.to(cdt)
            wbc = [None if t is None else t.to(cdt) for t in wb]
            ctx.save_for_backward(xc, *wbc)
            xt = xc.transpose(1, 2)  # (B, D_in, N) view
            outs = []
            for w, b in zip(wbc[0::2], wbc[1::2]):
                we = w.expand(x.shape[0], *w.shape)
                outs.append(torch.bmm(we, xt) if b is None else torch.baddbmm(b.view(1, -1, 1), we, xt))
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        x, *wb = ctx.saved_tensors
        x_dtype, wb_dtypes = ctx.dtypes
        B = x.shape[0]
        acc = torch.promote_types(x.dtype, torch.float32)  # fp32 sums for half precision; float64 kept
        grad_x = None
        grad_wb = []
        for i, (w, b) in enumerate(zip(wb[0::2], wb[1::2])):
            g = grads[i]  # (B, D_i, N)
            if g is None:
                grad_wb += [None, None]
                continue
            g = g.to(x.dtype)
            if ctx.needs_input_grad[0]:
                we = w.expand(B, *w.shape)
                gt = g.transpose(1, 2)  # (B, N, D_i) view
                grad_x = torch.bmm(gt, we) if grad_x is None else grad_x.baddbmm_(gt, we)
            # Per-sample products summed in fp32 (or float64): a half-precision sum over the batch loses bits.
            gw = torch.bmm(g, x).to(acc).sum(0).to(wb_dtypes[2 * i]) if ctx.needs_input_grad[1 + 2 * i] else None
            gb = (g.to(acc).sum(dim=(0, 2)).to(wb_dtypes[2 * i + 1])
                  if b is not None and ctx.needs_input_grad[2 + 2 * i] else None)
            grad_wb += [gw, gb]
        return (None if grad_x is None else grad_x.to(x_dtype), *grad_wb)


class WaveFieldAttention(nn.Module):
    """V3.5 Wave Field attention layer. forward: x (B, N, D) -> (B, N, D).

    Args:
        d_model, n_heads: width D and heads H (d = D / H).
        field_stride: cells per token s. Exactly causal strides only: integers >= 1 or any s >= 2;
            anything else raises ValueError (V3.5 ran s = 0.996 and s = 0.125, both leak).
        mode: "auto" (token path when exact, else field), "field", "token", "scan" (the token
            operator as an O(N) recurrence; integer strides only) or "triton" (that recurrence in
            fused kernels: CUDA, integer strides).
        norm_cells: lag range (cells, an integer >= 0) of the kernel's L1 normalisation; independent of N.
        gate_bias_init: V3.5 wrote 2.0 but its model-wide init reset every Linear bias to 0, so the
            trained model started at sigmoid(0) = 0.5. We default to 0.0, matching what trained.
    Parameters a reader looks for: frequency, damping (raw; alpha = softplus(damping)), phase (H,),
    coupling (H, H), initialised as in V3.5.
    """

    def __init__(self, d_model: int, n_heads: int, field_stride: float = 4.0, mode: str = "auto",
                 norm_cells: int = DEFAULT_NORM_CELLS, gate_bias_init: float = 0.0, bias: bool = True):
        super().__init__()
        d_model, n_heads = check_int("d_model", d_model, 1), check_int("n_heads", n_heads, 1)
        norm_cells = check_int("norm_cells", norm_cells, 0)  # -1 failed deep in the first forward
        if d_model % n_heads != 0:  # n_heads = 0 was a ZeroDivisionError, < 0 a RuntimeError
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads} "
                             "(n_heads must be a positive divisor of d_model)")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.field_stride = check_stride(field_stride)
        self.mode = mode  # also sets self.path, the concrete path that runs
        self.norm_cells = norm_cells
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

    @property
    def mode(self) -> str:
        """The requested mode; setting it re-resolves the path forward runs (ValueError if invalid)."""
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self.path = resolve_mode(mode, self.field_stride)
        self._mode = mode

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, field_stride={self.field_stride:g}, path={self.path}"

    def kernel(self, n_tokens: int) -> torch.Tensor:
        """The per-head kernel at token lags 0..N-1 (token path): (H, N), float32 (float64 parameters kept), as
        forward computes it for data of the parameters' dtype (float64 data gets a float64 kernel in forward);
        bf16 lags and normalisation range would be inexact past 256."""
        pdt = self.frequency.dtype if self.frequency.dtype == torch.float64 else torch.float32
        freq, damp, ph = (t.to(pdt) for t in (self.frequency, self.damping, self.phase))
        lags = torch.arange(n_tokens, device=freq.device, dtype=pdt) * self.field_stride
        return wave_kernel(freq, damp, ph, lags, self.norm_cells)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D). The same operator as V3.5, computed channel-major.

        k is projected token-major (its norm is a contiguous reduction); v and the gate are
        projected channel-major, (B, D, N) = W @ x^T, which is the layout the FFT needs, so no
        tensor is ever transposed; the output projection reads the gated field through a
        transposed BLAS operand and writes (B, N, D). q is not computed: V3.5 computes it and
        never reads it (its weights stay in qkv, as in V3.5, and get zero gradient there too).
        """
        B, N, D = x.shape
        H, d = self.n_heads, self.head_dim
        w, b = self.qkv.weight, self.qkv.bias
        wk, wv = w[D: 2 * D], w[2 * D:]
        bk, bv = (None, None) if b is None else (b[D: 2 * D], b[2 * D:])
        k = nn.functional.linear(x, wk, bk).view(B, N, H, d)
        scale = torch.linalg.vector_norm(k, dim=-1).transpose(1, 2).unsqueeze(2).contiguous()  # (B, H, 1, N)
        v, gate = _ProjectT.apply(x, wv, bv, self.gate.weight, self.gate.bias)  # (B, D, N) each
        v = v.view(B, H, d, N)
        gate = torch.sigmoid(gate).view(B, H, d, N)
        y = wave_conv(v, self.frequency, self.damping, self.phase, self.field_stride, self.path, self.norm_cells,
                      layout="bhdn", scale=scale)  # (B, H, d, N)
        z = gate * mix_heads(self.coupling, y)  # (B, H, d, N), laid out like gate: contiguous
        z = z.reshape(B, D, N).transpose(1, 2)  # (B, N, D) view
        out_w = self.out.weight.t().expand(B, D, D)
        if self.out.bias is None:
            return torch.bmm(z, out_w)
        return torch.baddbmm(self.out.bias.view(1, 1, D), z, out_w)
