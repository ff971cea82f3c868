"""Builders and correctness checks (docs/method.md, "Levels and passes" and "Run order"). A builder makes one cell's
inputs and returns Built(fn, backend): fn() runs one call of the cell's pass, backend() names the kernel that ran
(after a warm-up call). A check's error is a relative RMS error against a tolerance keyed by dtype."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from bench.scaling.costs import conv_length
from bench.scaling.grid import CellSpec
from wavefield_core import (WaveFieldAttention, WaveFieldLM, causal_conv_direct, fft_floor, floor_spectrum, v35_init,
                            wave_kernel, wave_mix)

# baselines and wavefield_core.reference are imported inside the functions that use them: importing the registry
# must not need them, so a broken baselines import only turns the softmax and peer cells into error rows


@dataclass
class Built:
    fn: Callable[[], object]
    backend: Callable[[], str]


def fft_backend(device: torch.device) -> str:
    return "cufft" if device.type == "cuda" else "pocketfft"


def _randn(spec: CellSpec, *shape, dtype=None) -> torch.Tensor:
    return torch.randn(*shape, device=spec.device, dtype=dtype or spec.dtype)


def qkv(spec: CellSpec, check: bool = False) -> list[torch.Tensor]:
    """q, k, v (B, H, N, d) in the cell's device and dtype: the draw every method of a cell shares (the cell's seed),
    or a correctness check's own (seed + 7, drawn on CPU)."""
    shape = (spec.batch, spec.heads, spec.seq_len, spec.head_dim)
    if check:
        g = torch.Generator().manual_seed(spec.seed + 7)
        return [torch.randn(*shape, generator=g).to(spec.device, spec.dtype) for _ in range(3)]
    torch.manual_seed(spec.seed)
    return [_randn(spec, *shape) for _ in range(3)]


def wave_params(heads: int, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    """frequency, damping, phase (H,) and coupling (H, H), float32, V3.5 init (as the layer has)."""
    init = v35_init(heads)
    gen = torch.Generator().manual_seed(seed + 1)
    coupling = torch.eye(heads) + 0.01 * torch.randn(heads, heads, generator=gen)
    return [t.to(device) for t in (init["frequency"], init["damping"], init["phase"], coupling)]


def _pass_fn(spec: CellSpec, forward: Callable[[], torch.Tensor], wrt: list[torch.Tensor], out_shape):
    """fwd: forward() under no_grad; fwdbwd: also the gradients w.r.t. `wrt` of a fixed random output gradient."""
    if spec.pass_ == "fwd":
        return torch.no_grad()(forward)
    for t in wrt:
        t.requires_grad_(True)
    grad_out = _randn(spec, *out_shape)
    return lambda: torch.autograd.grad(forward(), wrt, grad_out)


def _autocast(spec: CellSpec):
    return torch.autocast(device_type=spec.device.type, dtype=spec.dtype, enabled=spec.dtype != torch.float32)


def wave_mixer(compiled: bool):
    """wave_mix, or wave_mix through torch.compile (inductor, static shapes: one compiled graph per shape)."""
    return torch.compile(wave_mix, dynamic=False) if compiled else wave_mix


def softmax_function(impl: str, sdpa_backend: str | None):
    """The attention function (q, k, v) -> y of a softmax method."""
    from baselines import softmax_flash_attn, softmax_naive, softmax_sdpa

    if impl == "naive":
        return softmax_naive
    if impl == "flash_attn":
        return softmax_flash_attn
    return lambda q, k, v: softmax_sdpa(q, k, v, sdpa_backend)


def floor_kernel(spec: CellSpec, path: str, device: torch.device) -> torch.Tensor:
    """The wave kernel (H, L) an fft floor convolves with: L tokens (token path) or field cells."""
    length = conv_length(spec.seq_len, spec.field_stride, path)[0]
    freq, damp, phase, _c = wave_params(spec.heads, device, spec.seed)
    step = spec.field_stride if path == "token" else 1.0
    return wave_kernel(freq, damp, phase, torch.arange(length, device=device, dtype=torch.float32) * step)


def core_cell(spec: CellSpec, forward: Callable[[], torch.Tensor], wrt: list[torch.Tensor], out_shape,
              backend: Callable[[], str]) -> Built:
    """A core cell: forward() on inputs the caller drew (from qkv(spec), the draw every method shares); `wrt` get
    gradients at fwdbwd; backend() names the kernel that ran."""
    return Built(_pass_fn(spec, forward, wrt, out_shape), backend)


def layer_cell(spec: CellSpec, layer: torch.nn.Module, backend: Callable[[], str]) -> Built:
    """A layer cell: the layer (the caller makes it right after torch.manual_seed(spec.seed)) on x (B, N, D), both in
    the cell's dtype; backend() names the kernel that ran."""
    layer.to(device=spec.device, dtype=spec.dtype)
    torch.manual_seed(spec.seed)
    x = _randn(spec, spec.batch, spec.seq_len, spec.d_model)  # (B, N, D)
    layer.train(spec.pass_ != "fwd")
    return Built(_pass_fn(spec, lambda: layer(x), [x, *layer.parameters()], x.shape), backend)


def model_cell(spec: CellSpec, model: torch.nn.Module, backend: Callable[[], str]) -> Built:
    """A model cell: the LM's loss (the caller makes the LM right after torch.manual_seed(spec.seed)); fwdbwd is a
    full AdamW training step; backend() names the kernel that ran."""
    model.to(spec.device)  # float32 weights, low precision through autocast
    torch.manual_seed(spec.seed)
    idx = torch.randint(0, spec.vocab, (spec.batch, spec.seq_len), device=spec.device)
    tgt = torch.randint(0, spec.vocab, (spec.batch, spec.seq_len), device=spec.device)
    model.train(spec.pass_ != "fwd")

    def loss():
        with _autocast(spec):
            return model(idx, tgt)[1]
    if spec.pass_ == "fwd":
        return Built(torch.no_grad()(loss), backend)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def step():
        value = loss()
        value.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return value.detach()
    return Built(step, backend)


def wave_module(spec: CellSpec, path: str) -> torch.nn.Module:
    """The wave layer (layer level) or WaveFieldLM (model level) of a cell."""
    if spec.level == "layer":
        return WaveFieldAttention(spec.d_model, spec.heads, field_stride=spec.field_stride, mode=path)
    return WaveFieldLM(spec.vocab, d_model=spec.model_dim, n_layers=spec.model_layers, n_heads=spec.heads,
                       d_ff=spec.d_ff, field_stride=spec.field_stride, mode=path)


def softmax_module(spec: CellSpec, impl: str, sdpa_backend: str | None) -> torch.nn.Module:
    """The softmax attention layer (layer level) or StandardLM (model level) of a cell."""
    from baselines import SoftmaxAttention, StandardLM

    if spec.level == "layer":
        return SoftmaxAttention(spec.d_model, spec.heads, impl=impl, sdpa_backend=sdpa_backend)
    return StandardLM(spec.vocab, spec.model_dim, spec.model_layers, spec.heads, spec.d_ff,
                      max_seq_len=spec.seq_len, attn_impl=impl, sdpa_backend=sdpa_backend)


def build_graphed(spec: CellSpec, build: Callable[..., Built], **kw) -> Built:
    """The cell build(spec, **kw) makes, replayed from a CUDA graph (docs/method.md, "CUDA graphs and host overhead");
    warm-up runs on a side stream first, as capture requires; a capture failure is the cell's error row."""
    built = build(spec, **kw)
    side = torch.cuda.Stream(spec.device)
    side.wait_stream(torch.cuda.current_stream(spec.device))
    with torch.cuda.stream(side):
        for _ in range(3):
            built.fn()
    torch.cuda.current_stream(spec.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = built.fn()

    def replay():
        graph.replay()
        return out
    return Built(replay, lambda: f"{built.backend()}+cudagraph")


def build_wave(spec: CellSpec, path: str, v_layout: str = "bhdn", compiled: bool = False) -> Built:
    """wave (path 'token'), wave-scan ('scan'), wave-field ('field') and their variants at any level; the core's v
    layout (v_layout): docs/method.md, "Levels and passes"."""
    def fft() -> str:
        return fft_backend(spec.device)
    if spec.level == "core":
        mix = wave_mixer(compiled)  # compiled on the first (warm-up) call, outside the timings
        _q, k, v = qkv(spec)  # (B, H, N, d); q drawn to keep k, v equal to the softmax methods' inputs
        if v_layout == "bhdn":
            v = v.transpose(-1, -2).contiguous()  # (B, H, d, N)
        params = wave_params(spec.heads, spec.device, spec.seed)
        forward = partial(mix, k, v, *params, field_stride=spec.field_stride, mode=path, v_layout=v_layout)
        return core_cell(spec, forward, [k, v, *params], k.shape, fft)
    torch.manual_seed(spec.seed)
    module = wave_module(spec, path)
    if spec.level == "layer":
        return layer_cell(spec, module, fft)
    return model_cell(spec, module, fft)


def build_softmax(spec: CellSpec, impl: str, sdpa_backend: str | None = None) -> Built:
    """softmax-* methods: impl 'naive' | 'sdpa' | 'flash_attn', optionally one pinned SDPA kernel."""
    if spec.level == "core":
        from baselines import sdpa_backend_that_runs

        q, k, v = qkv(spec)
        forward = partial(softmax_function(impl, sdpa_backend), q, k, v)
        # SDPA's kernel is asked on the cell's own inputs (grad flags too)
        return core_cell(spec, forward, [q, k, v], q.shape,
                         lambda: sdpa_backend_that_runs(q, k, v, sdpa_backend) if impl == "sdpa" else impl)
    torch.manual_seed(spec.seed)
    module = softmax_module(spec, impl, sdpa_backend)
    if spec.level == "layer":
        return layer_cell(spec, module, lambda: module.last_backend or impl)
    return model_cell(spec, module, lambda: (module.attention_backends() or [impl])[0] or impl)


def build_floor(spec: CellSpec, path: str) -> Built:
    """fft-floor (path 'token') and fft-floor-field ('field'): the bare FFT floor at the wave core's shape."""
    length, m = conv_length(spec.seq_len, spec.field_stride, path)
    torch.manual_seed(spec.seed)
    x = _randn(spec, spec.batch, spec.heads, spec.head_dim, length, dtype=torch.float32)  # (B, H, d, L)
    k_spec = floor_spectrum(floor_kernel(spec, path, spec.device), m)  # (H, 1, M/2+1) complex64
    return Built(torch.no_grad()(lambda: fft_floor(x, k_spec, m)), lambda: fft_backend(spec.device))


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


def compare_core(spec: CellSpec, fn, ref_fn, wrt: list[torch.Tensor], extra=()) -> CheckResult:
    """fn(*wrt, *extra) on the cell's device against ref_fn on float64 CPU copies, at fwdbwd gradients too."""
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
    """The layer make() builds (after the cell's seed) on x (1, N, D) against reference(its CPU copy), a float64
    forward of the same weights; input gradients too at fwdbwd."""
    torch.manual_seed(spec.seed)
    layer = make().to(spec.device, spec.dtype).eval()
    ref = reference(copy.deepcopy(layer).cpu())
    x = torch.randn(1, spec.seq_len, spec.d_model).to(spec.device, spec.dtype)
    return compare_core(spec, layer, ref, [x])


def compare_model(spec: CellSpec, make, reference) -> CheckResult:
    """Logits of the LM make() builds after the cell's seed (float32 weights, autocast for low precision) against
    reference(its float64 CPU copy)."""
    torch.manual_seed(spec.seed)
    model = make().to(spec.device).eval()
    ref = reference(copy.deepcopy(model).cpu().double().eval())
    idx = torch.randint(0, spec.vocab, (1, spec.seq_len), generator=torch.Generator().manual_seed(spec.seed))
    with torch.no_grad():
        with _autocast(spec):
            logits = model(idx.to(spec.device))[0]
        ref_logits = ref(idx)[0]
    return CheckResult(rel_rms(logits, ref_logits), TOLERANCE[spec.dtype])


def naive_attention(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every softmax attention switched to the naive kernel (the reference's)."""
    for mod in model.modules():
        if hasattr(mod, "impl") and hasattr(mod, "sdpa_backend"):
            mod.impl, mod.sdpa_backend = "naive", None
    return model


def reference_wave_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The LM with every wave layer computed by reference_wave_layer (float64, CPU), as the layer-level check is:
    the layer's own path may not run there (triton: CUDA, float32 at most)."""
    from wavefield_core.reference import reference_wave_layer

    for mod in model.modules():
        if isinstance(mod, WaveFieldAttention):
            mod.forward = partial(reference_wave_layer, mod)
    return model


def check_wave(spec: CellSpec, path: str, v_layout: str = "bhdn", compiled: bool = False) -> CheckResult:
    from wavefield_core.reference import reference_wave_layer, reference_wave_mix

    spec = small_spec(spec)
    s = spec.field_stride
    if spec.level == "layer":
        return compare_layer(spec, partial(wave_module, spec, path), lambda layer: partial(reference_wave_layer, layer))
    if spec.level == "model":
        return compare_model(spec, partial(wave_module, spec, path), reference_wave_lm)
    _q, k, v = qkv(spec, check=True)
    mix = wave_mixer(compiled)  # the compiled graph is what gets checked

    def fn(k, v, *params):  # v handed over in the layout the benchmark feeds
        return mix(k, v.transpose(-1, -2) if v_layout == "bhdn" else v, *params, field_stride=s, mode=path,
                   v_layout=v_layout)
    return compare_core(spec, fn, partial(reference_wave_mix, field_stride=s), [k, v],
                        wave_params(spec.heads, spec.device, spec.seed))


def check_softmax(spec: CellSpec, impl: str, sdpa_backend: str | None = None) -> CheckResult:
    from baselines import softmax_naive

    spec = small_spec(spec)
    if spec.level == "core":
        return compare_core(spec, softmax_function(impl, sdpa_backend), softmax_naive, qkv(spec, check=True))
    make = partial(softmax_module, spec, impl, sdpa_backend)
    if spec.level == "layer":
        return compare_layer(spec, make, lambda layer: naive_attention(layer.double()))
    return compare_model(spec, make, naive_attention)


def check_floor(spec: CellSpec, path: str) -> CheckResult:
    spec = small_spec(spec)
    length, m = conv_length(spec.seq_len, spec.field_stride, path)
    g = torch.Generator().manual_seed(spec.seed + 13)
    x = torch.randn(1, spec.heads, spec.head_dim, length, generator=g)  # (B, H, d, L)
    kernel = floor_kernel(spec, path, torch.device("cpu"))  # (H, L)
    y = fft_floor(x.to(spec.device), floor_spectrum(kernel.to(spec.device), m), m)
    ref = causal_conv_direct(x.double().transpose(-1, -2), kernel.double()).transpose(-1, -2)
    return CheckResult(rel_rms(y, ref), TOLERANCE[torch.float32])
