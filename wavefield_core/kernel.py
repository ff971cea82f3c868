"""The damped-wave kernel and the stride rule that keeps the field causal.

Per head h and field lag t (in cells, t >= 0):
    k_h(t) = exp(-alpha_h t) * cos(omega_h t + phi_h) / Z_h,   alpha_h = softplus(damping_h)

Normalisation (a deliberate change from V3.5, see docs/mechanism.md, "The kernel normalisation"): V3.5 divided by the L1 norm
over its fixed field of G = 1024 cells. Once the field grows with N, normalising over "the
field" would make every output depend on how many tokens follow it. Here Z_h is the L1 norm over
a fixed reference range of `norm_cells` cells (default 1024, V3.5's G) plus an upper bound on the
tail beyond it:
    Z_h = sum_{t < R} |k_h(t)|  +  exp(-alpha_h R) / (1 - exp(-alpha_h))
so that (a) Z_h never depends on N: outputs are prefix-consistent; (b) sum over ALL t >= 0 of
|k_h(t)| / Z_h <= 1 exactly, so by Young's inequality the convolution can never add energy, at any
length; (c) for V3.5's initial dampings (alpha >= 0.049) the tail term is below 1e-20, so at init
the kernel equals V3.5's to float precision.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

DEFAULT_NORM_CELLS = 1024


def v35_init(n_heads: int) -> dict[str, torch.Tensor]:
    """V3.5 initial values: omega = linspace(0.3, 4.0), damping_raw = linspace(-3.0, 0.5), phi = linspace(0, pi)."""
    return {
        "frequency": torch.linspace(0.3, 4.0, n_heads),
        "damping": torch.linspace(-3.0, 0.5, n_heads),
        "phase": torch.linspace(0.0, math.pi, n_heads),
    }


# exp(-x) drops below the smallest normal number of the dtype past these x: there the kernel is zero
# to working precision (and on CPUs, computing those subnormal values is many times slower).
_UNDERFLOW = {torch.float64: 708.0, torch.float32: 87.0}


def _damped_cos(alpha, frequency, phase, t: torch.Tensor) -> torch.Tensor:
    """exp(-alpha t) cos(omega t + phi) for every head (rows) and lag t (columns): (H, len(t)).

    The exponent is floored at the dtype's underflow point (-87 for float32, -708 for float64):
    past it the true envelope is below the smallest normal number anyway, so this changes no value
    by more than ~1e-38 (1e-308), and it keeps exp off the subnormal slow path (about 10x on CPUs).
    """
    cut = _UNDERFLOW.get(t.dtype, _UNDERFLOW[torch.float32])
    return torch.exp((-alpha[:, None] * t).clamp_(min=-cut)) * torch.cos(frequency[:, None] * t + phase[:, None])


def _norm_from_body(alpha, body: torch.Tensor, norm_cells: int) -> torch.Tensor:
    tail = torch.exp(-alpha * norm_cells) / (-torch.expm1(-alpha)).clamp_min(1e-12)  # (H,)
    return (body.abs().sum(-1) + tail).clamp_min(1e-8)


def kernel_norm(frequency, damping, phase, norm_cells: int = DEFAULT_NORM_CELLS) -> torch.Tensor:
    """Z_h of shape (H,): L1 norm over cells 0..R-1 plus the geometric tail bound (see module doc)."""
    norm_cells = check_int("norm_cells", norm_cells, 0)  # -1 failed deep in torch.arange
    alpha = F.softplus(damping)
    t = torch.arange(norm_cells, device=frequency.device, dtype=frequency.dtype)  # (R,)
    return _norm_from_body(alpha, _damped_cos(alpha, frequency, phase, t), norm_cells)


def wave_kernel(frequency, damping, phase, lags: torch.Tensor, norm_cells: int = DEFAULT_NORM_CELLS) -> torch.Tensor:
    """Normalised kernel sampled at `lags` (cells, any real values >= 0). Returns (H, len(lags)).

    Field mode passes lags = 0, 1, ..., G-1; token mode passes lags = 0, s, 2s, ... (N values):
    the kernel is normalised on the field grid first and sampled afterwards (sampling first would
    change the operator). The normalisation range and the lags go through one exp and one cos
    (the kernel is rebuilt every forward, and at short lengths these small ops are its cost).
    """
    norm_cells = check_int("norm_cells", norm_cells, 0)  # -1 failed deep in torch.arange
    alpha = F.softplus(damping)
    t = torch.cat([torch.arange(norm_cells, device=frequency.device, dtype=frequency.dtype),
                   lags.to(frequency.dtype)])  # (R + L,)
    raw = _damped_cos(alpha, frequency, phase, t)  # (H, R + L)
    z = _norm_from_body(alpha, raw[:, :norm_cells], norm_cells)
    return raw[:, norm_cells:] / z[:, None]


def kernel_support(damping: torch.Tensor, step: float, n: int, dtype: torch.dtype = torch.float32) -> int:
    """How many of the n lags (0, step, 2 step, ... cells) can hold a nonzero tap in `dtype`.

    Beyond lag t with alpha_min * t > ln(1 / smallest normal) every head's envelope exp(-alpha t)
    is below 1.2e-38 (float32; 2.2e-308 for float64), far under the rounding of any output, so the
    kernel can be cut there without changing a result. On accelerators this returns n: reading
    alpha would synchronise the device, and there is no subnormal penalty to avoid.
    """
    if damping.device.type != "cpu" or n <= 1:
        return n
    alpha_min = float(F.softplus(damping.detach().double()).min())
    if not alpha_min > 0.0:
        return n
    cutoff = _UNDERFLOW.get(dtype, _UNDERFLOW[torch.float32])
    return max(1, min(n, int(cutoff / (alpha_min * float(step))) + 2))


def reach_cells(damping: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """Lag (cells) where the envelope exp(-alpha t) falls to `fraction`: ln(1/fraction) / alpha."""
    return math.log(1.0 / fraction) / F.softplus(damping)


def stride_is_exact(stride: float) -> bool:
    """True when the field path is exactly causal: integer s >= 1, or any s >= 2 (docs/mechanism.md, "The rule the suite enforces")."""
    s = float(stride)
    return math.isfinite(s) and (s >= 2.0 or (s >= 1.0 and s == int(s)))


def stride_is_integer(stride: float) -> bool:
    s = float(stride)
    return math.isfinite(s) and s >= 1.0 and s == int(s)


def check_wave_params(heads: int, frequency, damping, phase) -> None:
    """Raise ValueError unless frequency, damping and phase each hold one value per head: shape (H,)."""
    for name, t in (("frequency", frequency), ("damping", damping), ("phase", phase)):
        if tuple(t.shape) != (heads,):
            raise ValueError(f"{name} must have shape (H,) = ({heads},), one value per head, got {tuple(t.shape)}")


def check_int(name: str, value, least: int) -> int:
    """`value` as an int if it is an integer (a Python or numpy one, not a bool) >= `least`, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def check_stride(stride: float) -> float:
    """Return the stride as float, or raise ValueError saying why it leaks and what is safe."""
    s = float(stride)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"field_stride must be a positive finite number, got {stride!r}; safe strides: any integer >= 1 or any value >= 2")
    if not stride_is_exact(s):
        why = ("s < 1 packs several tokens into one cell pair" if s < 1
               else "with 1 < s < 2 a token's upper cell also receives the next token's deposit")
        raise ValueError(
            f"field_stride={s:g} leaks future tokens into earlier outputs ({why}); "
            f"safe strides: any integer >= 1 (1, 2, 3, ...) or any value >= 2"
        )
    return s
