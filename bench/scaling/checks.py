"""Correctness gates speed: before a method is timed, its output (and at fwdbwd its input gradients)
at N = 257, B = 1 is compared with a float64 reference on CPU, as a relative RMS error against a
tolerance keyed by dtype; a method that fails is not timed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial

import torch

from bench.scaling.builders import (_autocast, compiled_wave_mix, floor_kernel, softmax_function, standard_model,
                                    wave_model, wave_params)
from bench.scaling.costs import conv_length
from bench.scaling.grid import CellSpec

CHECK_LEN = 257
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 2e-2}


@dataclass
class CheckResult:
    error: float
    tol: float

    @property
    def ok(self) -> bool:
        return self.error <= self.tol  # False for NaN too

    def reason(self) -> str:
        return f"failed correctness check (rel. RMS error {self.error:.3g} > tolerance {self.tol:g} at N={CHECK_LEN})"


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-300)).item()


def small_spec(spec: CellSpec) -> CellSpec:
    """The cell a correctness check runs: the same method and shape at N = CHECK_LEN, batch 1."""
    return spec.at(seq_len=CHECK_LEN, batch=1)


def qkv(spec: CellSpec) -> list[torch.Tensor]:
    """The check's own q, k, v draw (seed + 7), in the cell's device and dtype."""
    g = torch.Generator().manual_seed(spec.seed + 7)
    shape = (spec.batch, spec.heads, spec.seq_len, spec.head_dim)
    return [torch.randn(*shape, generator=g).to(spec.device, spec.dtype) for _ in range(3)]


def compare_core(spec: CellSpec, fn, ref_fn, wrt: list[torch.Tensor], extra=()) -> CheckResult:
    """fn(*wrt, *extra) on the cell's device against ref_fn on float64 CPU copies; at fwdbwd also the
    gradients with respect to `wrt` of a random output gradient."""
    grad = spec.pass_ == "fwdbwd"
    wrt = [t.detach().requires_grad_(grad) for t in wrt]
    ref_wrt = [t.detach().cpu().double().requires_grad_(grad) for t in wrt]
    ref = ref_fn(*ref_wrt, *[t.detach().cpu().double() for t in extra])
    y = fn(*wrt, *extra)
    outs, refs = [y], [ref]
    if grad:
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(spec.seed + 11))
        outs += torch.autograd.grad(y, wrt, gy.to(y.device, y.dtype))
        refs += torch.autograd.grad(ref, ref_wrt, gy.double())
    return CheckResult(max(map(rel_rms, outs, refs)), TOLERANCE[spec.dtype])


def compare_layer(spec: CellSpec, make, reference) -> CheckResult:
    """The layer make() builds (after the cell's seed) on x (1, N, D) against reference(layer), a
    float64 CPU forward of the same weights; input gradients too at fwdbwd."""
    torch.manual_seed(spec.seed)
    layer = make().to(spec.device, spec.dtype).eval()
    ref = reference(layer)
    x = torch.randn(1, spec.seq_len, spec.d_model).to(spec.device, spec.dtype)
    return compare_core(spec, layer, ref, [x])


def naive_attention(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every softmax attention switched to the naive kernel (the reference's)."""
    for mod in model.modules():
        if hasattr(mod, "impl") and hasattr(mod, "sdpa_backend"):
            mod.impl, mod.sdpa_backend = "naive", None
    return model


def compare_model(spec: CellSpec, make, reference=naive_attention) -> CheckResult:
    """Logits of the model make() builds after the cell's seed (float32 weights, autocast for low
    precision) vs reference(its float64 CPU copy)."""
    torch.manual_seed(spec.seed)
    model = make().to(spec.device).eval()
    ref = reference(copy.deepcopy(model).cpu().double().eval())
    idx = torch.randint(0, spec.vocab, (1, spec.seq_len), generator=torch.Generator().manual_seed(spec.seed))
    with torch.no_grad():
        with _autocast(spec):
            logits = model(idx.to(spec.device))[0]
        ref_logits = ref(idx)[0]
    return CheckResult(rel_rms(logits, ref_logits), TOLERANCE[spec.dtype])


def check_wave(spec: CellSpec, path: str, v_layout: str = "bhdn", compiled: bool = False) -> CheckResult:
    from wavefield_core import WaveFieldAttention, wave_mix
    from wavefield_core.reference import reference_wave_layer, reference_wave_mix

    spec = small_spec(spec)
    s = spec.field_stride
    if spec.level == "core":
        _q, k, v = qkv(spec)
        mix = compiled_wave_mix() if compiled else wave_mix  # the compiled graph is what gets checked

        def fn(k, v, *params):  # v handed over in the layout the benchmark feeds
            return mix(k, v.transpose(-1, -2) if v_layout == "bhdn" else v, *params, field_stride=s, mode=path,
                       v_layout=v_layout)
        return compare_core(spec, fn, partial(reference_wave_mix, field_stride=s), [k, v],
                            wave_params(spec.heads, spec.device, spec.seed))
    if spec.level == "layer":
        return compare_layer(spec, lambda: WaveFieldAttention(spec.d_model, spec.heads, field_stride=s, mode=path),
                             lambda layer: partial(reference_wave_layer, copy.deepcopy(layer).cpu()))
    return compare_model(spec, lambda: wave_model(spec, path))


def check_softmax(spec: CellSpec, impl: str, sdpa_backend: str | None = None) -> CheckResult:
    from baselines import SoftmaxAttention, softmax_naive

    spec = small_spec(spec)
    if spec.level == "core":
        return compare_core(spec, softmax_function(impl, sdpa_backend), softmax_naive, qkv(spec))
    if spec.level == "layer":
        return compare_layer(spec, lambda: SoftmaxAttention(spec.d_model, spec.heads, impl=impl,
                                                            sdpa_backend=sdpa_backend),
                             lambda layer: naive_attention(copy.deepcopy(layer).cpu().double()))
    return compare_model(spec, lambda: standard_model(spec, impl, sdpa_backend))


def check_floor(spec: CellSpec, path: str) -> CheckResult:
    from wavefield_core import causal_conv_direct, fft_floor, floor_spectrum

    spec = small_spec(spec)
    length, m = conv_length(spec.seq_len, spec.field_stride, path)
    g = torch.Generator().manual_seed(spec.seed + 13)
    x = torch.randn(1, spec.heads, spec.head_dim, length, generator=g)  # (B, H, d, L)
    kernel = floor_kernel(spec, path, torch.device("cpu"))  # (H, L)
    y = fft_floor(x.to(spec.device), floor_spectrum(kernel.to(spec.device), m), m)
    ref = causal_conv_direct(x.double().transpose(-1, -2), kernel.double()).transpose(-1, -2)
    return CheckResult(rel_rms(y, ref), TOLERANCE[torch.float32])
