"""The token-level wave operator as fused Triton kernels: one pass over memory, forward and backward.

The operator, per batch b, head h, channel e (integer stride s, so every token sits on a cell):
    u[n] = v[n] * scale[n]                     (scale: one number per token, e.g. ||k_n||)
    y[n] = sum_{j <= n} K[n - j] u[j],  K[m] = Re(c r**m)
    r = exp((-alpha + i omega) s),  c = exp(i phi) / Z            (recurrent.pole_and_gain)
equivalently y[n] = Re(c h[n]) with the one-pole recurrence h[n] = r h[n - 1] + u[n].

The kernels themselves, and the algorithm and memory they take, are in wavefield_core/triton_kernels.py.

triton is imported, and the kernels defined, on first use; triton_available says why they cannot run.
"""
from __future__ import annotations

import contextlib
import importlib.util

import torch
from torch.autograd.function import once_differentiable

from wavefield_core import triton_kernels as _tk
from wavefield_core.fftconv import LAYOUTS
from wavefield_core.kernel import DEFAULT_NORM_CELLS, check_stride, check_wave_params, stride_is_integer
from wavefield_core.recurrent import pole_and_gain

__all__ = ["wave_triton_conv", "triton_available", "WaveTritonConv", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_available(device) -> str | None:
    """None when the kernels can run on `device`, else a one-line reason.

    Runs on CUDA devices with triton importable; with TRITON_INTERPRET=1 (set before the first
    use in the process) the same kernels run in triton's interpreter on cpu tensors instead.
    """
    device = torch.device(device)
    if _tk.triton is None and importlib.util.find_spec("triton") is None:  # not imported here: see _kernels
        return "triton is not installed; it ships with CUDA builds of torch (pip install triton)"
    if _tk._interpreting():
        if device.type == "cpu":
            return None
        return (f"the kernels run in triton's interpreter here (TRITON_INTERPRET=1), which takes cpu tensors; "
                f"device is {device.type}")
    if device.type != "cuda":
        return (f"needs a CUDA device (device is {device.type}); on cpu, set TRITON_INTERPRET=1 before the first "
                "use to run the kernels in triton's interpreter")
    if not torch.cuda.is_available():
        return "no CUDA device is available here"
    return None


def _config(dtype: torch.dtype, d: int, rows: int, device: torch.device, backward: bool) -> tuple[int, int, int]:
    """(BT tokens per chunk, BD channels per program, warps) for one launch.

    Programs are rows x ceil(d / BD) (rows = batch * heads), each walking the whole sequence, so
    BD trades work per program against parallelism. The sizes keep every variant under 255
    registers per thread without spills on sm_90 (ptxas, triton 3.9):
    16-bit inputs: 64-token chunks; forward BD 32 with 8 warps (about 120 registers) unless that
    leaves fewer than two programs per SM, then BD 16 with 4 warps; backward BD 16 with 8 warps
    (about 180). float32 inputs run the dots in full fp32 (FMA, no tensor cores), whose operand
    layouts take more registers: 32-token chunks, BD 16, 4 warps (about 155 / 240).
    The backward must use the forward's chunk length: it reuses the forward's coefficient table.
    """
    if dtype == torch.float32:
        return 32, 16, 4
    if backward or d <= 16:
        return 64, 16, 8 if backward else 4
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        if rows * -(-d // 32) < 2 * sms:
            return 64, 16, 4
    return 64, 32, 8


def log_pole(frequency, damping, stride) -> torch.Tensor:
    """(H, 2) float64 [log|r|, arg r] of the pole r = exp((-alpha + i omega) s), from the parameters.

    Taken from alpha and omega directly rather than from r's fp32 real and imaginary parts: for weak
    damping |r| = 1 - alpha s sits so close to 1 that fp32 keeps only a few digits of alpha s
    (alpha = 1e-4: 5e-4 relative), and r**m would carry that error m-fold. The angle is reduced to
    [-pi, pi] in float64, where omega s is exact for an fp32 omega.
    """
    alpha = torch.nn.functional.softplus(damping.detach().double())
    theta = torch.remainder(frequency.detach().double() * float(stride) + torch.pi, 2 * torch.pi) - torch.pi
    return torch.stack([-alpha * float(stride), theta], dim=1)


def _tables(r_re, r_im, c_re, c_im, pole: torch.Tensor | None, bt: int) -> torch.Tensor:
    """(H, 6, bt + 1) fp32 coefficient table at m = 0..bt: r**m, c r**m, m r**(m-1) (Re, Im each).

    Computed in float64 and rounded once: every kernel coefficient is then accurate to fp32
    rounding, with no exp/cos of large arguments inside the kernels. pole: log_pole's (H, 2), or
    None to take |r| and arg r from r_re, r_im.
    """
    rr, ri, cr, cim = (t.detach().double() for t in (r_re, r_im, c_re, c_im))
    if pole is None:
        logr, theta = 0.5 * torch.log(rr * rr + ri * ri), torch.atan2(ri, rr)
    else:
        logr, theta = pole.detach().double().unbind(1)
    z = torch.complex(logr.clamp(min=-1e4), theta)[:, None]  # log r; the floor keeps 0 * log r finite
    m = torch.arange(bt + 1, device=z.device, dtype=torch.float64)
    rm = torch.exp(z * m)
    crm = torch.complex(cr, cim)[:, None] * rm
    mrm = m * torch.exp(z * (m - 1).clamp(min=0))  # m r**(m-1): zero at m = 0
    return torch.stack([rm.real, rm.imag, crm.real, crm.imag, mrm.real, mrm.imag], dim=1).float().contiguous()


def _on_device(device: torch.device):
    """triton launches on the current CUDA device: make it the tensors' device."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _scale_strides(s4):
    if s4 is None:
        return 0, 0, 0
    return s4.stride(0), s4.stride(1), s4.stride(2)


class WaveTritonConv(torch.autograd.Function):
    """y = wave operator applied to u = v * scale, on logical (B, H, N, d) views of any strides.

    Inputs: v4 (B, H, N, d) float32/bfloat16/float16; s4 (B, H, N, 1) or None; r_re, r_im, c_re,
    c_im (H,) real; pole: optional (H, 2) [log|r|, arg r] (log_pole), the precise pole the kernels
    use (gradients still flow through r_re, r_im). Returns y (B, H, N, d) in v4's dtype, laid out
    like v4 when v4 is dense. Saved for backward: v4, s4 and the (H, 6, BT + 1) coefficient table.
    """

    @staticmethod
    def forward(ctx, v4, s4, r_re, r_im, c_re, c_im, pole=None):
        B, H, N, D = v4.shape
        y4 = torch.empty_like(v4)  # keeps v4's stride order: the caller's layout, no copy
        ctx.save_for_backward(v4, s4, r_re, r_im, c_re, c_im)
        ctx.has_scale = s4 is not None
        if y4.numel() == 0:
            return y4
        bt, bd, warps = _config(v4.dtype, D, B * H, v4.device, backward=False)
        table = _tables(r_re, r_im, c_re, c_im, pole, bt).to(v4.device)
        ctx.table = table  # the backward's chunk length is the forward's (_config)
        grid = (B * H, -(-D // bd))
        s_arg = s4 if s4 is not None else v4  # never read when HAS_SCALE is False
        fwd, _bwd = _tk._kernels()
        with _on_device(v4.device):
            fwd[grid](
                v4, s_arg, y4, table,
                H, N, D,
                *v4.stride(), *_scale_strides(s4), *y4.stride(),
                HAS_SCALE=s4 is not None, BT=bt, BD=bd,
                **_tk._dot_dtypes(v4.dtype), PRECISION="ieee",
                num_warps=warps,
            )
        return y4

    @staticmethod
    @once_differentiable
    def backward(ctx, g4):
        v4, s4, r_re, r_im, c_re, c_im = ctx.saved_tensors
        if not ctx.has_scale:
            s4 = None
        B, H, N, D = v4.shape
        need_dv = ctx.needs_input_grad[0]
        need_ds = s4 is not None and ctx.needs_input_grad[1]
        need_params = any(ctx.needs_input_grad[2:6])
        if not (need_dv or need_ds or need_params) or v4.numel() == 0:
            zero = [None if t is None else torch.zeros_like(t) for t in (v4, s4, r_re, r_im, c_re, c_im)]
            return (*(z if need else None for z, need in zip(zero, ctx.needs_input_grad)), None)
        bt, bd, warps = _config(v4.dtype, D, B * H, v4.device, backward=True)
        table = ctx.table
        assert table.shape[-1] == bt + 1
        ndb = -(-D // bd)
        dv4 = torch.empty_like(v4) if need_dv else v4  # never written when not needed
        ds = torch.empty((ndb, B, H, N) if need_ds else (1,), device=v4.device, dtype=torch.float32)
        pg = torch.empty((ndb, B, H, 4) if need_params else (1,), device=v4.device, dtype=torch.float32)
        s_arg = s4 if s4 is not None else v4
        _fwd, bwd = _tk._kernels()
        with _on_device(v4.device):
            bwd[(B * H, ndb)](
                v4, s_arg, g4, dv4, ds, pg, table,
                H, N, D, B * H,
                *v4.stride(), *_scale_strides(s4), *g4.stride(), *dv4.stride(),
                HAS_SCALE=s4 is not None, NEED_DV=need_dv, NEED_DS=need_ds, NEED_PARAMS=need_params,
                LOAD_V=need_ds or need_params,
                BT=bt, BD=bd, **_tk._dot_dtypes(v4.dtype), PRECISION="ieee",
                num_warps=warps,
            )
        grad_s = None
        if need_ds:
            grad_s = ds.sum(0).unsqueeze(-1).to(s4.dtype)  # (B, H, N, 1)
        grads_p = [None] * 4
        if need_params:
            tot = pg.sum(dim=(0, 1))  # (H, 4): sums over channel blocks and batch
            s_c = torch.complex(tot[:, 0], tot[:, 1])
            s_r = torch.complex(tot[:, 2], tot[:, 3]) * torch.complex(c_re.detach().float(), c_im.detach().float())
            grads_p = [s_r.real.to(r_re.dtype), (-s_r.imag).to(r_im.dtype),
                       s_c.real.to(c_re.dtype), (-s_c.imag).to(c_im.dtype)]
        return (dv4 if need_dv else None), grad_s, *grads_p, None


def _check_inputs(u: torch.Tensor, layout: str, scale: torch.Tensor | None, stride, params) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid choices: {', '.join(LAYOUTS)}")
    if u.dim() != 4:
        raise ValueError(f"u must be 4-D ({layout}), got shape {tuple(u.shape)}")
    if u.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"u has dtype {u.dtype}; the triton kernels take float32, bfloat16 or float16")
    check_wave_params(u.shape[LAYOUTS[layout][1]], *params)  # the kernels read one table row per head
    s = check_stride(stride)
    if not stride_is_integer(s):
        raise ValueError(f"the token operator is exact only for integer strides, got field_stride={s:g}")
    if scale is not None:
        want = list(u.shape)
        want[LAYOUTS[layout][2]] = 1  # the channel axis
        if list(scale.shape) != want:
            raise ValueError(f"scale must have u's shape with one channel, {tuple(want)}, got {tuple(scale.shape)}")
        if scale.device != u.device:
            raise ValueError(f"scale is on {scale.device} but u is on {u.device}")
    why = triton_available(u.device)
    if why is not None:
        raise RuntimeError(f"wave_triton_conv cannot run here: {why}")


def wave_triton_conv(u: torch.Tensor, frequency, damping, phase, stride, norm_cells: int = DEFAULT_NORM_CELLS,
                     scale: torch.Tensor | None = None, layout: str = "bhnd") -> torch.Tensor:
    """The wave convolution of deposits u * scale (before head coupling), by the fused Triton kernels.

    Same operator and conventions as wave_conv(..., mode="token"/"scan", layout=layout, scale=scale):
    u is (B, H, N, d) for "bhnd", (B, N, H, d) for "bnhd", (B, H, d, N) for "bhdn", any strides;
    scale has u's shape with one channel, or is None. frequency, damping, phase: (H,). Integer
    strides only. Returns u's shape and dtype, laid out like u when u is dense (no copies either
    way). Differentiable in u, scale, frequency, damping and phase.
    """
    _check_inputs(u, layout, scale, stride, (frequency, damping, phase))
    perm = LAYOUTS[layout]
    v4 = u.permute(perm).transpose(-1, -2)  # (B, H, N, d) view
    s4 = None if scale is None else scale.permute(perm).transpose(-1, -2)  # (B, H, N, 1) view
    pdt = torch.float32
    freq, damp, ph = frequency.to(pdt), damping.to(pdt), phase.to(pdt)
    r, c, _z = pole_and_gain(freq, damp, ph, float(stride), norm_cells)
    y4 = WaveTritonConv.apply(v4, s4, r.real, r.imag, c.real, c.imag, log_pole(freq, damp, stride))
    inverse = tuple(sorted(range(4), key=perm.__getitem__))
    return y4.transpose(-1, -2).permute(inverse)
