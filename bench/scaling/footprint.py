"""Peak-memory estimates (bytes, inputs included) used to skip cells that cannot fit.

Deliberately generous: a cell predicted just under the budget that then needs more would meet the
kernel's OOM killer on CPU. Units: `unit` = one (B, H, N, d) tensor of the dtype, `f32` = one such
tensor in float32 (the FFT math dtype); constants checked against torch-profiler peaks on CPU.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from bench.scaling.costs import conv_length
from bench.scaling.grid import CellSpec


def softmax_core_bytes(b: int, h: int, n: int, d: int, elem: int, pass_: str, materializes: bool) -> float:
    """Naive attention (or SDPA's math kernel) keeps (B, H, N, N) float32 scores: about 2 alive at
    once in the forward (scores and the next elementwise result), 4 in fwdbwd (saved probs, their
    gradient, the softmax gradient, a temporary). Fused kernels keep O(B H N d)."""
    unit = b * h * n * d * elem
    if materializes:
        scores = b * h * n * n * 4
        mask = n * n
        return (4 * unit + 2.5 * scores + mask) if pass_ == "fwd" else (8 * unit + 4.5 * scores + mask)
    lse = b * h * n * 4
    return (5 * unit + lse) if pass_ == "fwd" else (12 * unit + 2 * lse)


def wave_core_bytes(b: int, h: int, n: int, d: int, elem: int, pass_: str, path: str, stride: float) -> float:
    """Inputs (k, v; q when drawn), deposits, the (B, H, d, L) field, its spectrum (M/2+1 complex)
    and the irfft output (M reals), L = N (token) or G (field)."""
    length, m = conv_length(n, stride, path)  # scan: bounded by the token path's
    rows = b * h * d
    unit = b * h * n * d * elem
    f32 = b * h * n * d * 4
    fft = rows * ((m // 2 + 1) * 8 + m * 4)  # spectrum + irfft output
    field = rows * length * 4
    if pass_ == "fwd":
        return 4 * unit + 3 * f32 + field + fft
    return 8 * unit + 8 * f32 + 3 * field + 2.5 * fft


def floor_memory(spec: CellSpec, path: str) -> float:
    """fft-floor: input and output, spectrum and irfft output per row, the cached kernel spectrum."""
    length, m = conv_length(spec.seq_len, spec.field_stride, path)
    rows = spec.batch * spec.heads * spec.head_dim
    return rows * (2 * length * 4 + (m // 2 + 1) * 8 + m * 4) + spec.heads * (m // 2 + 1) * 8


def level_memory(spec: CellSpec, core_bytes: Callable[..., float]) -> float:
    """The cell's estimate from its mixing operator's core_bytes(b, h, n, d, elem, pass_), plus what the
    layer and model levels keep on top of it."""
    at = partial(core_bytes, spec.batch, spec.heads, spec.seq_len, spec.row_head_dim, spec.elem)
    core = at(spec.pass_)
    b, n, d_model = spec.batch, spec.seq_len, spec.d_model
    if spec.level == "core":
        return core
    if spec.level == "layer":
        act = b * n * d_model * spec.elem
        params = 6 * d_model * d_model * spec.elem
        return core + (8 if spec.pass_ == "fwd" else 16) * act + 3 * params
    # model: float32 weights (+ grad + AdamW state), activations per layer, logits (+ float32 copy)
    layers = spec.model_layers
    act = b * n * d_model * 4
    ffn = b * n * spec.d_ff * 4
    logits = b * n * spec.vocab * 4
    params = (layers * (6 * d_model * d_model + 2 * d_model * spec.d_ff) + spec.vocab * d_model) * 4
    if spec.pass_ == "fwd":
        return core + 10 * act + 2 * ffn + 3 * logits + params
    return layers * (at("fwdbwd") + 16 * act + 3 * ffn) + 4 * logits + 4 * params


def wave_memory(spec: CellSpec, path: str) -> float:
    return level_memory(spec, lambda *cell: wave_core_bytes(*cell, path, spec.field_stride))


def softmax_memory(spec: CellSpec, impl: str, sdpa_backend: str | None = None) -> float:
    materializes = impl == "naive" or sdpa_backend == "math"
    return level_memory(spec, lambda *cell: softmax_core_bytes(*cell, materializes))
