"""Correctness gates speed: before a method is timed, its output at a small odd shape (N = 257,
B = 1) is compared with a float64 reference on CPU; a method that fails is not timed.

References: wave core -> wavefield_core.reference.reference_wave_mix (explicit (H, N, N) operator
from the definition); wave layer -> reference_wave_layer; softmax -> softmax_naive in float64;
fft floors -> causal_conv_direct (Toeplitz matmul) in float64; model level -> the same model
deep-copied to float64 on CPU (naive attention for the standard model), logits compared.
At core fwdbwd the input gradients are compared too (autograd through the float64 reference).
Error = relative RMS, ||a - b|| / ||b||, with tolerances keyed by dtype.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from bench.scaling.builders import softmax_function, standard_model, wave_model, wave_params
from bench.scaling.costs import field_cells
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



def _qkv(spec: CellSpec, grad: bool):
    g = torch.Generator().manual_seed(spec.seed + 7)
    shape = (spec.batch, spec.heads, spec.seq_len, spec.head_dim)
    return [torch.randn(*shape, generator=g).to(spec.device, spec.dtype).requires_grad_(grad) for _ in range(3)]


def _compare(outs: list[torch.Tensor], refs: list[torch.Tensor]) -> float:
    return max(rel_rms(a, b) for a, b in zip(outs, refs))


def _with_grads(y, ref_y, inputs, ref_inputs, spec: CellSpec) -> float:
    """Error of y and, at fwdbwd, of the input gradients of a random output gradient."""
    if spec.pass_ == "fwd":
        return rel_rms(y, ref_y)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(spec.seed + 11))
    grads = torch.autograd.grad(y, inputs, gy.to(y.device, y.dtype))
    ref_grads = torch.autograd.grad(ref_y, ref_inputs, gy.double())
    return _compare([y, *grads], [ref_y, *ref_grads])


def _cpu64(tensors, grad: bool):
    return [t.detach().cpu().double().requires_grad_(grad) for t in tensors]


def check_wave(spec: CellSpec, path: str, v_layout: str = "bhdn", compiled: bool = False) -> CheckResult:
    from wavefield_core import WaveFieldAttention, wave_mix
    from wavefield_core.reference import reference_wave_layer, reference_wave_mix

    spec = small_spec(spec)
    tol = TOLERANCE[spec.dtype]
    grad = spec.pass_ == "fwdbwd"
    if spec.level == "core":
        _q, k, v = _qkv(spec, grad)
        params = wave_params(spec.heads, spec.device, spec.seed)
        vin = v.transpose(-1, -2) if v_layout == "bhdn" else v  # the layout the benchmark feeds
        if compiled:
            from bench.scaling.builders import compiled_wave_mix

            wave_mix = compiled_wave_mix()  # noqa: F811 - the compiled graph is what gets checked
        y = wave_mix(k, vin, *params, field_stride=spec.field_stride, mode=path, v_layout=v_layout)
        k64, v64 = _cpu64([k, v], grad)
        ref = reference_wave_mix(k64, v64, *[p.cpu().double() for p in params], field_stride=spec.field_stride)
        return CheckResult(_with_grads(y, ref, [k, v], [k64, v64], spec), tol)
    torch.manual_seed(spec.seed)
    if spec.level == "layer":
        layer = WaveFieldAttention(spec.d_model, spec.heads, field_stride=spec.field_stride, mode=path)
        layer = layer.to(spec.device, spec.dtype).eval()
        x = torch.randn(1, spec.seq_len, spec.d_model).to(spec.device, spec.dtype).requires_grad_(grad)
        y = layer(x)
        x64 = _cpu64([x], grad)[0]
        ref = reference_wave_layer(copy.deepcopy(layer).cpu(), x64)
        return CheckResult(_with_grads(y, ref, [x], [x64], spec), tol)
    return _check_model(spec, wave_model(spec, path), tol)


def check_softmax(spec: CellSpec, impl: str, sdpa_backend: str | None = None) -> CheckResult:
    from baselines import SoftmaxAttention, softmax_naive

    spec = small_spec(spec)
    tol = TOLERANCE[spec.dtype]
    grad = spec.pass_ == "fwdbwd"
    if spec.level == "core":
        q, k, v = _qkv(spec, grad)
        y = softmax_function(impl, sdpa_backend)(q, k, v)
        q64, k64, v64 = _cpu64([q, k, v], grad)
        ref = softmax_naive(q64, k64, v64)
        return CheckResult(_with_grads(y, ref, [q, k, v], [q64, k64, v64], spec), tol)
    torch.manual_seed(spec.seed)
    if spec.level == "layer":
        mod = SoftmaxAttention(spec.d_model, spec.heads, impl=impl, sdpa_backend=sdpa_backend)
        mod = mod.to(spec.device, spec.dtype).eval()
        ref_mod = copy.deepcopy(mod).cpu().double()
        ref_mod.impl, ref_mod.sdpa_backend = "naive", None
        x = torch.randn(1, spec.seq_len, spec.d_model).to(spec.device, spec.dtype).requires_grad_(grad)
        x64 = _cpu64([x], grad)[0]
        return CheckResult(_with_grads(mod(x), ref_mod(x64), [x], [x64], spec), tol)
    return _check_model(spec, standard_model(spec, impl, sdpa_backend), tol)


def _check_model(spec: CellSpec, model: torch.nn.Module, tol: float) -> CheckResult:
    """Logits of the model (float32 weights, autocast for low precision) vs a float64 CPU copy."""
    model = model.to(spec.device).eval()
    ref = copy.deepcopy(model).cpu().double().eval()
    for mod in ref.modules():  # the standard model's reference runs the naive attention
        if hasattr(mod, "impl") and hasattr(mod, "sdpa_backend"):
            mod.impl, mod.sdpa_backend = "naive", None
    idx = torch.randint(0, spec.vocab, (1, spec.seq_len), generator=torch.Generator().manual_seed(spec.seed))
    with torch.no_grad():
        if spec.dtype == torch.float32:
            logits = model(idx.to(spec.device))[0]
        else:
            with torch.autocast(device_type=spec.device.type, dtype=spec.dtype):
                logits = model(idx.to(spec.device))[0]
        ref_logits = ref(idx)[0]
    return CheckResult(rel_rms(logits, ref_logits), tol)


def check_floor(spec: CellSpec, path: str) -> CheckResult:
    from wavefield_core import causal_conv_direct, fast_fft_size, fft_floor, floor_spectrum, wave_kernel

    spec = small_spec(spec)
    length = spec.seq_len if path == "token" else field_cells(spec.seq_len, spec.field_stride)
    m = fast_fft_size(2 * length - 1)
    g = torch.Generator().manual_seed(spec.seed + 13)
    x = torch.randn(1, spec.heads, spec.head_dim, length, generator=g)  # (B, H, d, L)
    freq, damp, phase, _c = wave_params(spec.heads, torch.device("cpu"), spec.seed)
    step = spec.field_stride if path == "token" else 1.0
    kernel = wave_kernel(freq, damp, phase, torch.arange(length, dtype=torch.float32) * step)  # (H, L)
    y = fft_floor(x.to(spec.device), floor_spectrum(kernel.to(spec.device), m), m)
    ref = causal_conv_direct(x.double().transpose(-1, -2), kernel.double()).transpose(-1, -2)
    return CheckResult(rel_rms(y, ref), TOLERANCE[torch.float32])
