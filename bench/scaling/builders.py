"""Builders: for one cell, make the inputs and return a ready-to-call closure (nothing timed here).

Built(fn, backend): fn() runs one call of the cell's pass (docs/method.md, "Levels and passes");
backend() names the kernel that ran (call it after a warm-up call). Inputs are drawn after
torch.manual_seed(seed) in the same order (q, k, v, then the output gradient) for every method, so
all methods of one length see the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from bench.scaling.costs import conv_length
from bench.scaling.grid import CellSpec


@dataclass
class Built:
    fn: Callable[[], object]
    backend: Callable[[], str]


def fft_backend(device: torch.device) -> str:
    return "cufft" if device.type == "cuda" else "pocketfft"


def _randn(spec: CellSpec, *shape, dtype=None) -> torch.Tensor:
    return torch.randn(*shape, device=spec.device, dtype=dtype or spec.dtype)


def _qkv(spec: CellSpec):
    """q, k, v of shape (B, H, N, d) in the cell's dtype, drawn from the cell's seed."""
    torch.manual_seed(spec.seed)
    shape = (spec.batch, spec.heads, spec.seq_len, spec.head_dim)
    return _randn(spec, *shape), _randn(spec, *shape), _randn(spec, *shape)


def wave_params(heads: int, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    """frequency, damping, phase (H,) and coupling (H, H), float32, V3.5 init (as the layer has)."""
    from wavefield_core import v35_init

    init = v35_init(heads)
    gen = torch.Generator().manual_seed(seed + 1)
    coupling = torch.eye(heads) + 0.01 * torch.randn(heads, heads, generator=gen)
    return [t.to(device) for t in (init["frequency"], init["damping"], init["phase"], coupling)]


def _pass_fn(spec: CellSpec, forward: Callable[[], torch.Tensor], wrt: list[torch.Tensor], out_shape):
    """fwd: forward() under no_grad; fwdbwd: forward() and the gradients w.r.t. `wrt` of a fixed random
    output gradient of `out_shape` (drawn here, after the inputs)."""
    if spec.pass_ == "fwd":
        return torch.no_grad()(forward)
    for t in wrt:
        t.requires_grad_(True)
    grad_out = _randn(spec, *out_shape)
    return lambda: torch.autograd.grad(forward(), wrt, grad_out)


def _autocast(spec: CellSpec):
    return torch.autocast(device_type=spec.device.type, dtype=spec.dtype, enabled=spec.dtype != torch.float32)


def compiled_wave_mix():
    """wave_mix through torch.compile (inductor, static shapes): one compiled graph per shape."""
    from wavefield_core import wave_mix

    return torch.compile(wave_mix, dynamic=False)


def _wave_core(spec: CellSpec, path: str, v_layout: str = "bhdn", compiled: bool = False) -> Built:
    """The wave core on the softmax methods' k, v. With v_layout "bhdn", v is handed over
    channel-major (B, H, d, N), made outside the timed call: that is the layout the wave layer's
    own projection writes at no cost (W_v @ x^T), as (B, H, N, d) is for SDPA. "bhnd" makes the
    core pay the transpose itself (method wave-bhnd)."""
    from wavefield_core import wave_mix

    mix = compiled_wave_mix() if compiled else wave_mix  # compiled on the first (warm-up) call, outside the timings
    _q, k, v = _qkv(spec)  # (B, H, N, d); q drawn to keep k, v equal to the softmax methods' inputs
    if v_layout == "bhdn":
        v = v.transpose(-1, -2).contiguous()  # (B, H, d, N)
    params = wave_params(spec.heads, spec.device, spec.seed)
    s = spec.field_stride

    def forward():
        return mix(k, v, *params, field_stride=s, mode=path, v_layout=v_layout)  # (B, H, N, d)
    return Built(_pass_fn(spec, forward, [k, v, *params], k.shape), lambda: fft_backend(spec.device))


def softmax_function(impl: str, sdpa_backend: str | None):
    """The attention function (q, k, v) -> y of a softmax method."""
    from baselines import softmax_flash_attn, softmax_naive, softmax_sdpa

    if impl == "naive":
        return softmax_naive
    if impl == "flash_attn":
        return softmax_flash_attn
    return lambda q, k, v: softmax_sdpa(q, k, v, sdpa_backend)


def _softmax_core(spec: CellSpec, impl: str, sdpa_backend: str | None) -> Built:
    from baselines import sdpa_backend_that_runs

    q, k, v = _qkv(spec)
    attn = softmax_function(impl, sdpa_backend)
    fn = _pass_fn(spec, lambda: attn(q, k, v), [q, k, v], q.shape)

    def backend() -> str:
        if impl != "sdpa":
            return impl
        return sdpa_backend_that_runs(q, k, v, sdpa_backend)  # on the cell's own inputs (grad flags too)
    return Built(fn, backend)


def floor_kernel(spec: CellSpec, path: str, device: torch.device) -> torch.Tensor:
    """The wave kernel (H, L) an fft floor convolves with: L tokens (token path) or field cells."""
    from wavefield_core import wave_kernel

    length = conv_length(spec.seq_len, spec.field_stride, path)[0]
    freq, damp, phase, _c = wave_params(spec.heads, device, spec.seed)
    step = spec.field_stride if path == "token" else 1.0
    return wave_kernel(freq, damp, phase, torch.arange(length, device=device, dtype=torch.float32) * step)


def _layer(spec: CellSpec, module: torch.nn.Module, backend: Callable[[], str]) -> Built:
    module = module.to(device=spec.device, dtype=spec.dtype)
    torch.manual_seed(spec.seed)
    x = _randn(spec, spec.batch, spec.seq_len, spec.d_model)  # (B, N, D)
    module.train(spec.pass_ != "fwd")
    return Built(_pass_fn(spec, lambda: module(x), [x, *module.parameters()], x.shape), backend)


def _model(spec: CellSpec, model: torch.nn.Module, backend: Callable[[], str]) -> Built:
    model = model.to(spec.device)  # float32 weights; low precision through autocast
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


def wave_model(spec: CellSpec, path: str) -> torch.nn.Module:
    from wavefield_core import WaveFieldLM

    return WaveFieldLM(spec.vocab, d_model=spec.model_dim, n_layers=spec.model_layers, n_heads=spec.heads,
                       d_ff=spec.d_ff, field_stride=spec.field_stride, mode=path)


def standard_model(spec: CellSpec, impl: str, sdpa_backend: str | None) -> torch.nn.Module:
    from baselines import StandardLM

    return StandardLM(spec.vocab, spec.model_dim, spec.model_layers, spec.heads, spec.d_ff,
                      max_seq_len=spec.seq_len, attn_impl=impl, sdpa_backend=sdpa_backend)


def build_graphed(spec: CellSpec, build: Callable[..., Built], warmup: int = 3, **kw) -> Built:
    """The cell build(spec, **kw) makes, replayed from a CUDA graph: one launch per call instead of one
    per kernel, so the timing shows what the GPU executes, without Python and launch overhead. The
    closure's inputs are static, so replaying the graph recomputes the same work into the same output
    buffers. Warm-up runs on a side stream first, as capture requires (lazy init, cuFFT plans); a
    capture failure is the cell's error row."""
    built = build(spec, **kw)
    side = torch.cuda.Stream(spec.device)
    side.wait_stream(torch.cuda.current_stream(spec.device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
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
    """wave (path 'token'), wave-scan ('scan') and wave-field ('field') at any level; v_layout
    matters at the core level only (the layer makes its own layouts)."""
    torch.manual_seed(spec.seed)
    if spec.level == "core":
        return _wave_core(spec, path, v_layout, compiled)
    fft = lambda: fft_backend(spec.device)  # noqa: E731
    if spec.level == "layer":
        from wavefield_core import WaveFieldAttention

        layer = WaveFieldAttention(spec.d_model, spec.heads, field_stride=spec.field_stride, mode=path)
        return _layer(spec, layer, fft)
    return _model(spec, wave_model(spec, path), fft)


def build_softmax(spec: CellSpec, impl: str, sdpa_backend: str | None = None) -> Built:
    """softmax-* methods: impl 'naive' | 'sdpa' | 'flash_attn', optionally one pinned SDPA kernel."""
    torch.manual_seed(spec.seed)
    if spec.level == "core":
        return _softmax_core(spec, impl, sdpa_backend)
    if spec.level == "layer":
        from baselines import SoftmaxAttention

        mod = SoftmaxAttention(spec.d_model, spec.heads, impl=impl, sdpa_backend=sdpa_backend)
        return _layer(spec, mod, lambda: mod.last_backend or impl)
    model = standard_model(spec, impl, sdpa_backend)
    return _model(spec, model, lambda: (model.attention_backends() or [impl])[0] or impl)


def build_floor(spec: CellSpec, path: str) -> Built:
    """fft-floor (path 'token', length N) and fft-floor-field (path 'field', length G), core fwd only: the
    bare FFT floor at the wave core's shape, x (B, H, d, L) float32 contiguous, cached spectrum."""
    from wavefield_core import fft_floor, floor_spectrum

    length, m = conv_length(spec.seq_len, spec.field_stride, path)
    torch.manual_seed(spec.seed)
    x = _randn(spec, spec.batch, spec.heads, spec.head_dim, length, dtype=torch.float32)  # (B, H, d, L)
    k_spec = floor_spectrum(floor_kernel(spec, path, spec.device), m)  # (H, 1, M/2+1) complex64
    return Built(torch.no_grad()(lambda: fft_floor(x, k_spec, m)), lambda: fft_backend(spec.device))
