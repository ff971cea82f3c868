"""Causal long convolution through real FFTs, with an explicit backward.

y[..., n, :] = sum_{j <= n} kernel[h, n - j] * x[..., j, :]   (per head h, per channel)

Two placements of tokens on the convolution axis:
- token placement (field_stride=None): token n sits at position n; the axis has N positions.
- field placement (field_stride=s): token n deposits at cells lo_n = floor(n s) and lo_n + 1 with
  bilinear weights (1 - frac_n, frac_n), the field of G = ceil((N - 1) s) + 2 cells is convolved
  over every cell lag, and each token reads back from the same two cells with the same weights.
  Only exactly causal strides reach this module (integer s >= 1 or s >= 2, see kernel.check_stride),
  so no two tokens ever write the same cell: the deposit is a scatter, not an accumulation.

Why a custom autograd.Function: the forward needs only x's spectrum and the kernel's spectrum;
letting autograd record rfft -> mul -> irfft would keep both complex spectra alive for backward
(about 4x the input in bytes). Here backward recomputes x's spectrum instead, so the saved state
is x, the optional per-token scale and the small kernel, and backward costs three long FFTs (rfft of
grad, rfft of x, irfft of grad_x) plus a short one for the kernel gradient.

The optional `scale` (one number per token and head, e.g. the deposit weight ||k||) is multiplied
into x while x is written into the zero-padded FFT buffer: the deposit u = x * scale never exists as
a separate tensor, and backward returns its gradient.

All math runs time-last: the FFT libraries are fastest on a contiguous last axis, and the one write
into the padded buffer does any transpose. FFT math is float32 (complex64) for every dtype but
float64: bf16/fp16 FFTs lose too much precision on long lags and cuFFT only supports power-of-two
half-precision sizes. The result is cast back to x.dtype.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from wavefield_core.kernel import check_stride


@functools.lru_cache(maxsize=None)
def fast_fft_size(n: int) -> int:
    """Smallest m >= n whose only prime factors are 2, 3 and 5 (fast for pocketfft, MKL and cuFFT).

    Rounding 2N - 1 up to a power of two can cost up to 2x in FFT size; 5-smooth sizes stay
    within about 10% of 2N - 1 for the lengths that matter here.
    """
    if n <= 1:
        return 1
    best = 1 << (n - 1).bit_length()  # power of two is always a candidate
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (for references and gradcheck); everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# Layouts the convolution accepts, as the permutation that views x as (B, H, d, N): time last.
# "bhnd" is the public layout; "bhdn" (time-last) is the one that needs no transpose at all.
LAYOUTS = {"bhnd": (0, 1, 3, 2), "bnhd": (0, 2, 3, 1), "bhdn": (0, 1, 2, 3)}
_INVERSE = {name: tuple(sorted(range(4), key=perm.__getitem__)) for name, perm in LAYOUTS.items()}


def field_cells(n: int, stride: float) -> int:
    """Field size G = ceil((N - 1) s) + 2 cells for N tokens at stride s (see field_geometry)."""
    return int(math.ceil((n - 1) * float(stride))) + 2


def field_geometry(n: int, stride: float, device=None):
    """Cells of each token: lo (N,) int64, frac (N,) float64, and the field size G.

    Positions are computed in float64 so that n * s is exact for the strides people use.
    G = ceil((N - 1) s) + 2 leaves room for the last token's upper cell: nothing is ever clamped.
    """
    pos = torch.arange(n, device=device, dtype=torch.float64) * float(stride)  # (N,)
    lo = torch.floor(pos)
    frac = pos - lo
    return lo.long(), frac, field_cells(n, stride)


@dataclass(frozen=True)
class Placement:
    """Where N tokens sit on a convolution axis of `cells` positions (see the module doc).

    step > 0: token n at cell n * step exactly (token placement: step 1, cells N). step == 0:
    bilinear between cells lo and lo + 1 with weights (1 - frac, frac).
    """
    n: int
    cells: int
    step: int = 1
    lo: torch.Tensor | None = None
    frac: torch.Tensor | None = None

    @staticmethod
    def tokens(n: int) -> "Placement":
        return Placement(n, n)

    @staticmethod
    def field(n: int, stride: float, device=None) -> "Placement":
        lo, frac, g = field_geometry(n, stride, device)
        s = float(stride)
        if s == int(s):  # integer stride: every token on its own cell, no upper-cell deposit
            return Placement(n, g, int(s))
        return Placement(n, g, 0, lo, frac)

    def scatter(self, buf: torch.Tensor, xt: torch.Tensor, st: torch.Tensor | None) -> torch.Tensor:
        """Write x * scale (B, H, d, N) into buf (B, H, d, m), zeros everywhere else."""
        n = self.n
        if self.step == 1:
            buf[..., n:].zero_()
            dst = buf[..., :n]
        else:
            buf.zero_()
            if self.step > 1:
                dst = buf[..., : (n - 1) * self.step + 1: self.step]
            else:
                u = xt * st if st is not None else xt
                w = self.frac.to(buf.dtype)
                buf.index_copy_(-1, self.lo, (u * (1 - w)).to(buf.dtype))
                buf.index_copy_(-1, self.lo + 1, (u * w).to(buf.dtype))
                return buf
        if st is None:
            dst.copy_(xt)
        else:
            torch.mul(xt, st, out=dst)
        return buf

    def gather(self, ybuf: torch.Tensor) -> torch.Tensor:
        """Read each token's output back from (B, H, d, m): (B, H, d, N)."""
        n = self.n
        if self.step == 1:
            return ybuf.narrow(-1, 0, n)  # a view: no copy
        if self.step > 1:
            return ybuf[..., : (n - 1) * self.step + 1: self.step].contiguous()  # compact, frees ybuf
        w = self.frac.to(ybuf.dtype)
        return ybuf.index_select(-1, self.lo) * (1 - w) + ybuf.index_select(-1, self.lo + 1) * w


def _kernel_spectrum(kernel: torch.Tensor, m: int, dtype=torch.float32) -> torch.Tensor:
    """rfft of the (H, K) kernel zero-padded to m, shaped (H, 1, F) to broadcast over (B, H, d, F)."""
    return torch.fft.rfft(kernel.to(dtype), n=m, dim=-1).unsqueeze(1)


def _spectrum(place: Placement, xt, st, m: int, md: torch.dtype) -> torch.Tensor:
    buf = torch.empty(xt.shape[:-1] + (m,), dtype=md, device=xt.device)
    return torch.fft.rfft(place.scatter(buf, xt, st), dim=-1)


def _conv_forward(x, scale, kernel, layout: str, fft_size: int, place: Placement, spectrum=None,
                  compact: bool = False) -> torch.Tensor:
    perm = LAYOUTS[layout]
    xt = x.permute(perm)  # (B, H, d, N) view
    st = None if scale is None else scale.permute(perm)  # (B, H, 1, N) view
    md = _math_dtype(x.dtype)
    xs = _spectrum(place, xt, st, fft_size, md)  # (B, H, d, F) complex
    if spectrum is None or spectrum.dtype != xs.dtype:
        spectrum = _kernel_spectrum(kernel, fft_size, md)
    xs.mul_(spectrum)  # in place: saves one spectrum of memory
    y = place.gather(torch.fft.irfft(xs, n=fft_size, dim=-1))  # (B, H, d, N)
    if compact and y.dtype == x.dtype:
        y = y.contiguous()  # N columns instead of a view into the m-column buffer
    return y.to(x.dtype).permute(_INVERSE[layout])


class _CausalFFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, kernel, layout: str, fft_size: int, place: Placement):
        ctx.save_for_backward(x, scale, kernel)
        ctx.layout, ctx.fft_size, ctx.place = layout, fft_size, place
        # compact: whatever consumes y under autograd (the head mix) saves it for its backward, and
        # a contiguous y is half the bytes of the FFT buffer it would otherwise keep alive and lets
        # that backward run as plain GEMMs instead of copying it first
        return _conv_forward(x, scale, kernel, layout, fft_size, place, compact=True)

    @staticmethod
    def backward(ctx, grad_y):
        x, scale, kernel = ctx.saved_tensors
        layout, m, place = ctx.layout, ctx.fft_size, ctx.place
        perm = LAYOUTS[layout]
        md = _math_dtype(x.dtype)
        xt = x.permute(perm)
        st = None if scale is None else scale.permute(perm)
        # The adjoint of gather is scatter with the same weights, and vice versa.
        gs = _spectrum(place, grad_y.permute(perm), None, m, md)  # (B, H, d, F)
        grad_x = grad_s = grad_k = None
        if ctx.needs_input_grad[2]:
            # grad_k[h, t] = sum_{b, c, n} g[n + t] u[n]: a correlation, reduced over batch and
            # channels in the frequency domain before the (short, H-row) inverse transform.
            us = _spectrum(place, xt, st, m, md).conj_physical_().mul_(gs)  # in place, no extra spectrum
            cross = us.sum(dim=(0, 2))  # (H, F); an einsum here copied both spectra into its own layout
            del us
            grad_k = torch.fft.irfft(cross, n=m, dim=-1)[..., : kernel.shape[-1]].to(kernel.dtype)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # grad_u[j] = sum_{n >= j} k[n - j] g[n]: correlation with the kernel, i.e. multiply by
            # conj(K). Zero padding to m >= 2L - 1 keeps the wrap-around out of the used range.
            gs.mul_(_kernel_spectrum(kernel, m, md).conj())
            gu = place.gather(torch.fft.irfft(gs, n=m, dim=-1))  # (B, H, d, N), d(loss)/d(u)
            del gs
            if ctx.needs_input_grad[0]:
                gx = gu if st is None else gu * st
                grad_x = gx.to(x.dtype).permute(_INVERSE[layout])
            if ctx.needs_input_grad[1]:
                grad_s = (gu * xt).sum(dim=2, keepdim=True).to(scale.dtype).permute(_INVERSE[layout])
        return grad_x, grad_s, grad_k, None, None, None


def causal_fft_conv(x: torch.Tensor, kernel: torch.Tensor, layout: str = "bhnd", fft_size: int | None = None,
                    scale: torch.Tensor | None = None, field_stride: float | None = None,
                    spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """Causal per-head convolution along the token axis, optionally of x * scale and on a field.

    Args:
        x: (B, H, N, d) for layout "bhnd" (the public contract); "bnhd" = (B, N, H, d) and
           "bhdn" = (B, H, d, N) are accepted too. Any float dtype.
        kernel: (H, K) taps at lags 0, 1, ... of the convolution axis. Taps beyond K are zero
            (so a kernel cut at its numerical support is exact); taps beyond the axis are ignored.
        fft_size: FFT length; default fast_fft_size(2L - 1) for an axis of L positions.
        scale: optional per-token factor with x's shape but 1 channel (for "bhnd": (B, H, N, 1));
            the convolution then runs on x * scale without materialising it.
        field_stride: None for token placement (axis = N tokens); a number s for the field
            placement (axis = G cells, bilinear deposit and read-back; only exactly causal s, others
            raise ValueError).
        spectrum: optional rfft of `kernel` at the FFT size, (H, 1, m//2 + 1), from kernel_spectrum();
            used only when autograd is not recording (an inference call may reuse it across calls).
    Returns:
        y with the shape and dtype of x: y[b, h, n] = sum_{j<=n} kernel[h, n-j] u[b, h, j] for the
        token placement. For the token placement y is a view of a time-last (B, H, d, m) buffer,
        so it is not contiguous for "bhnd"; call .contiguous() if a consumer needs that.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid choices: {', '.join(LAYOUTS)}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D ({layout}), got shape {tuple(x.shape)}")
    perm = LAYOUTS[layout]
    n, h_dim = x.shape[perm[3]], perm[1]
    if kernel.dim() != 2 or kernel.shape[0] != x.shape[h_dim] or kernel.shape[1] < 1:
        raise ValueError(f"kernel must be (H={x.shape[h_dim]}, K>=1), got shape {tuple(kernel.shape)}")
    if scale is not None:
        want = list(x.shape)
        want[perm[2]] = 1
        if list(scale.shape) != want:
            raise ValueError(f"scale must have shape {tuple(want)} (x's shape with 1 channel), got {tuple(scale.shape)}")
    if field_stride is not None:
        check_stride(field_stride)  # a leaking stride puts two deposits in one cell: the scatter would drop one
    place = Placement.tokens(n) if field_stride is None else Placement.field(n, field_stride, x.device)
    kernel = kernel[:, : place.cells]
    m = fast_fft_size(2 * place.cells - 1) if fft_size is None else int(fft_size)
    if m < 2 * place.cells - 1:
        raise ValueError(f"fft_size={m} < 2L-1={2 * place.cells - 1} would wrap the convolution around (not causal)")
    if x.numel() == 0:  # an empty batch, head, channel or token axis: the FFT libraries refuse it; the result is
        return x * 0 + 0 * kernel.sum()  # empty, and the kernel stays in the graph (a zero gradient)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, scale, kernel)):
        return _CausalFFTConv.apply(x, scale, kernel, layout, m, place)
    return _conv_forward(x, scale, kernel, layout, m, place, spectrum)  # inference: no autograd bookkeeping


def axis_fft_size(n: int, field_stride: float | None = None) -> int:
    """The FFT size causal_fft_conv uses by default for N tokens (token or field placement)."""
    cells = n if field_stride is None else field_cells(n, field_stride)
    return fast_fft_size(2 * cells - 1)


def kernel_spectrum(kernel: torch.Tensor, fft_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (H, 1, m//2 + 1) spectrum causal_fft_conv multiplies by (math dtype: float32, or float64)."""
    return _kernel_spectrum(kernel, fft_size, dtype)


def causal_conv_direct(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Slow, obvious O(N^2) reference: build the lower-triangular Toeplitz matrix and multiply.

    x (B, H, N, d), kernel (H, K): taps beyond K are zero. Differentiable through ordinary autograd.
    """
    n = x.shape[-2]
    if kernel.shape[1] < n:
        kernel = torch.nn.functional.pad(kernel, (0, n - kernel.shape[1]))
    idx = torch.arange(n, device=x.device)
    lag = idx[:, None] - idx[None, :]  # (N, N): n - j
    toeplitz = kernel[:, lag.clamp(min=0)] * (lag >= 0)  # (H, N, N), zero above the diagonal
    return torch.einsum("hnj,bhjd->bhnd", toeplitz.to(x.dtype), x)


def fft_floor(x: torch.Tensor, k_spec: torch.Tensor, fft_size: int, time_dim: int = -1) -> torch.Tensor:
    """The bare floor of an FFT convolution: one rfft, one multiply by a cached spectrum, one irfft.

    Used by benchmarks as the best an FFT-based operator can do on this machine in this run: give
    it x in the fastest layout, (B, H, d, N) contiguous with time_dim=-1, and the spectrum from
    floor_spectrum(). No casts, no autograd, no kernel FFT.
    """
    xs = torch.fft.rfft(x, n=fft_size, dim=time_dim)
    xs.mul_(k_spec)
    return torch.fft.irfft(xs, n=fft_size, dim=time_dim).narrow(time_dim, 0, x.shape[time_dim])


def floor_spectrum(kernel: torch.Tensor, fft_size: int) -> torch.Tensor:
    """The cached kernel spectrum fft_floor() multiplies by: float32, (H, 1, F) for (B, H, d, N) inputs."""
    return _kernel_spectrum(kernel, fft_size)
