"""Causal long convolution through real FFTs, with an explicit backward.

y[..., n, :] = sum_{j <= n} kernel[h, n - j] * x[..., j, :]   (per head h, per channel)

Why a custom autograd.Function: the forward needs only x's spectrum and the kernel's spectrum;
letting autograd record rfft -> mul -> irfft would keep both complex spectra alive for backward
(about 4x the input in bytes). Here backward recomputes x's spectrum instead, so the saved state
is just x (already alive in the caller) and the small kernel, and backward costs three long FFTs
(rfft of grad, rfft of x, irfft of grad_x) plus a short one for the kernel gradient.

FFT math is float32 (complex64) for every dtype but float64: bf16/fp16 FFTs lose too much precision on long lags and
cuFFT only supports power-of-two half-precision sizes. The result is cast back to x.dtype.
"""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def fast_fft_size(n: int) -> int:
    """Smallest m >= n whose only prime factors are 2, 3 and 5 (fast for pocketfft and cuFFT).

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
# All math runs time-last: pocketfft and cuFFT are fastest on a contiguous last axis (about 1.4x
# over a strided time axis on a 2-core CPU at N = 8K-32K), and the one copy into the zero-padded
# FFT buffer does the transpose for free. "bhnd" is the public layout.
LAYOUTS = {"bhnd": (0, 1, 3, 2), "bnhd": (0, 2, 3, 1), "bhdn": (0, 1, 2, 3)}
_INVERSE = {name: tuple(sorted(range(4), key=perm.__getitem__)) for name, perm in LAYOUTS.items()}


def _kernel_spectrum(kernel: torch.Tensor, m: int, dtype=torch.float32) -> torch.Tensor:
    """rfft of the (H, N) kernel, shaped (H, 1, F) to broadcast over (B, H, d, F); F = m//2+1."""
    return torch.fft.rfft(kernel.to(dtype), n=m, dim=-1).unsqueeze(1)


def _padded_spectrum(xt: torch.Tensor, m: int, dtype: torch.dtype) -> torch.Tensor:
    """rfft over the last axis of xt (B, H, d, N) zero-padded to m.

    Builds the padded buffer by hand: torch's rfft(n=m) would allocate and zero all m columns and
    then copy; here only the tail is zeroed and the (possibly transposing, possibly casting) copy
    of x goes straight into the head.
    """
    n = xt.shape[-1]
    buf = torch.empty(xt.shape[:-1] + (m,), dtype=dtype, device=xt.device)
    buf[..., n:].zero_()
    buf[..., :n].copy_(xt)
    return torch.fft.rfft(buf, dim=-1)


class _CausalFFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, layout: str, fft_size: int):
        xt = x.permute(LAYOUTS[layout])  # (B, H, d, N) view
        n = xt.shape[-1]
        md = _math_dtype(x.dtype)
        xs = _padded_spectrum(xt, fft_size, md)  # (B, H, d, F) complex
        xs.mul_(_kernel_spectrum(kernel, fft_size, md))  # in place: saves one spectrum of memory
        y = torch.fft.irfft(xs, n=fft_size, dim=-1).narrow(-1, 0, n)  # (B, H, d, N) view
        ctx.save_for_backward(x, kernel)
        ctx.layout, ctx.fft_size = layout, fft_size
        return y.to(x.dtype).permute(_INVERSE[layout])

    @staticmethod
    def backward(ctx, grad_y):
        x, kernel = ctx.saved_tensors
        layout, m = ctx.layout, ctx.fft_size
        md = _math_dtype(x.dtype)
        gt = grad_y.permute(LAYOUTS[layout])  # (B, H, d, N)
        n = gt.shape[-1]
        gs = _padded_spectrum(gt, m, md)
        grad_x = grad_k = None
        if ctx.needs_input_grad[1]:
            # grad_k[h, t] = sum_{b, c, n} g[n + t] x[n]: a correlation, reduced over batch and
            # channels in the frequency domain before the (short, H-row) inverse transform.
            xs = _padded_spectrum(x.permute(LAYOUTS[layout]), m, md)
            cross = torch.einsum("bhcf,bhcf->hf", gs, xs.conj())  # (H, F)
            del xs
            grad_k = torch.fft.irfft(cross, n=m, dim=-1)[..., : kernel.shape[-1]].to(kernel.dtype)
        if ctx.needs_input_grad[0]:
            # grad_x[j] = sum_{n >= j} k[n - j] g[n]: correlation with the kernel, i.e. multiply by
            # conj(K). Zero padding to m >= 2N - 1 keeps the wrap-around out of [0, N).
            gs.mul_(_kernel_spectrum(kernel, m, md).conj())
            grad_x = torch.fft.irfft(gs, n=m, dim=-1).narrow(-1, 0, n).to(x.dtype).permute(_INVERSE[layout])
        return grad_x, grad_k, None, None


def causal_fft_conv(x: torch.Tensor, kernel: torch.Tensor, layout: str = "bhnd", fft_size: int | None = None) -> torch.Tensor:
    """Causal per-head convolution along the token axis.

    Args:
        x: (B, H, N, d) for layout "bhnd" (the public contract); "bnhd" = (B, N, H, d) and
           "bhdn" = (B, H, d, N) are accepted too. Any float dtype.
        kernel: (H, K) with K >= N; only kernel[:, :N] matters (lag 0 .. N-1).
        fft_size: FFT length; default fast_fft_size(2N - 1). Must be >= 2N - 1.
    Returns:
        y with the shape and dtype of x: y[b, h, n] = sum_{j<=n} kernel[h, n-j] x[b, h, j].
        y is a view of a time-last (B, H, d, N) buffer, so it is not contiguous for "bhnd";
        call .contiguous() if a consumer needs that.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid choices: {', '.join(LAYOUTS)}")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D ({layout}), got shape {tuple(x.shape)}")
    perm = LAYOUTS[layout]
    n, h_dim = x.shape[perm[3]], perm[1]
    if kernel.dim() != 2 or kernel.shape[0] != x.shape[h_dim]:
        raise ValueError(f"kernel must be (H={x.shape[h_dim]}, K>=N), got shape {tuple(kernel.shape)}")
    if kernel.shape[1] < n:
        raise ValueError(f"kernel has {kernel.shape[1]} lags but N={n} needs at least N")
    kernel = kernel[:, :n]
    m = fast_fft_size(2 * n - 1) if fft_size is None else int(fft_size)
    if m < 2 * n - 1:
        raise ValueError(f"fft_size={m} < 2N-1={2 * n - 1} would wrap the convolution around (not causal)")
    return _CausalFFTConv.apply(x, kernel, layout, m)


def causal_conv_direct(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Slow, obvious O(N^2) reference: build the lower-triangular Toeplitz matrix and multiply.

    x (B, H, N, d), kernel (H, >=N). Differentiable through ordinary autograd.
    """
    n = x.shape[-2]
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
