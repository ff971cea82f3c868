"""Cost model: FLOPs and minimum bytes of one call of a cell's timed closure, and the roofline (the conventions:
docs/method.md, "Cost model")."""
from __future__ import annotations

import math
from dataclasses import dataclass

from wavefield_core.fftconv import fast_fft_size, field_cells

SOFTMAX_PASS_MULT = {"fwd": 1.0, "fwdbwd": 3.5}
MATMUL_PASS_MULT = {"fwd": 1.0, "fwdbwd": 3.0}
WAVE_BWD_FACTOR = 1.5  # three long transforms in the backward (rfft of dy, rfft of x, irfft of dx) against two
INTERFERENCE_EVERY = 3  # WaveFieldLM default: a field-interference module after every 3rd block


@dataclass(frozen=True)
class Cost:
    flops: float
    bytes: float


def rfft_flops(rows: int, m: int) -> float:
    """One real FFT of length m on `rows` rows: 2.5 m log2 m each."""
    return rows * 2.5 * m * math.log2(m) if m > 1 else 0.0


def fft_conv_flops(rows: int, m: int) -> float:
    """rfft + spectrum product + irfft of `rows` rows padded to m: rows (5 m log2 m + 6 (m/2 + 1))."""
    return rows * ((5.0 * m * math.log2(m) if m > 1 else 0.0) + 6.0 * (m // 2 + 1))


def conv_length(n: int, stride: float, path: str) -> tuple[int, int]:
    """(L, M): the length the wave core (or its fft floor) convolves, N tokens or G field cells, and its FFT length."""
    length = field_cells(n, stride) if path == "field" else n
    return length, fast_fft_size(2 * length - 1)


def softmax_flops(b: int, h: int, n: int, d: int, pass_: str, causal: bool = True) -> float:
    fwd = 4.0 * b * h * n * n * d * (0.5 if causal else 1.0)
    return fwd * SOFTMAX_PASS_MULT[pass_]


def wave_flops(b: int, h: int, n: int, d: int, m: int, pass_: str) -> float:
    """The long convolution of B H d rows plus the kernel's own FFT (H rows), both again in the backward."""
    conv = fft_conv_flops(b * h * d, m)
    kern = rfft_flops(h, m)
    if pass_ == "fwd":
        return conv + kern
    return conv * (1.0 + WAVE_BWD_FACTOR) + 2.0 * kern


def scan_flops(b: int, h: int, n: int, d: int, pass_: str, chunk: int = 32) -> float:
    """The scan path (wavefield_core/recurrent.py), chunk C: intra-chunk Toeplitz matmul 2 C per element, chunk
    states and carry-in 4 each, the doubling scan 8 log2(N/C) per chunk state: about 2 B H N d (C + 4)."""
    rows = b * h * d
    chunks = max(1, math.ceil(n / chunk))
    fwd = rows * n * (2.0 * chunk + 8.0) + rows * chunks * 8.0 * max(1.0, math.log2(chunks))
    return fwd if pass_ == "fwd" else fwd * (1.0 + WAVE_BWD_FACTOR)


def mixing_cost(kind: str, path: str | None, b: int, h: int, n: int, d: int, elem: int, pass_: str,
                stride: float = 4.0) -> Cost:
    """The core level: the sequence mixer on ready (B, H, N, d) inputs (softmax: q, k, v; wave: k, v)."""
    n_in = 3 if kind == "softmax" else 2
    nbytes = (n_in + 1) * b * h * n * d * elem * (1 if pass_ == "fwd" else 2)  # the inputs read, y written
    if kind == "softmax":
        return Cost(softmax_flops(b, h, n, d, pass_), nbytes)
    if path == "scan":
        return Cost(scan_flops(b, h, n, d, pass_), nbytes)
    if path == "triton":  # the same chunked recurrence, no FFT; chunks of 32 tokens in fp32, else 64 (its _config)
        return Cost(scan_flops(b, h, n, d, pass_, chunk=32 if elem == 4 else 64), nbytes)
    m = conv_length(n, stride, path or "token")[1]
    return Cost(wave_flops(b, h, n, d, m, pass_), nbytes)


def model_matmul_params(layer_params: int, d_model: int, n_layers: int, d_ff: int, vocab: int,
                        interference: bool = False) -> int:
    """Matmul weights touched per token by an LM whose mixer has `layer_params`: layers (mixer + FFN), the tied head
    V x D and, for the wave LM, its interference modules (D->D/4, D/4->D, two DxD, 2D->D gate = 4.5 D^2 each)."""
    total = n_layers * (layer_params + 2 * d_model * d_ff) + vocab * d_model
    if interference:
        r = d_model // 4
        total += n_layers // INTERFERENCE_EVERY * (2 * d_model * r + 4 * d_model * d_model)
    return total


def level_cost(spec, core: Cost, layer_params: int, interference: bool = False) -> Cost:
    """A cell's cost from its mixer's and one layer's matmul weights (docs/method.md, "Cost model")."""
    if spec.level == "core":
        return core
    b, n, d_model, elem, fwd = spec.batch, spec.seq_len, spec.d_model, spec.elem, spec.pass_ == "fwd"
    per_token = 2.0 * b * n * MATMUL_PASS_MULT[spec.pass_]
    if spec.level == "layer":
        io = b * n * d_model * elem
        nbytes = (2 * io + layer_params * elem) if fwd else (4 * io + 2 * layer_params * elem)
        return Cost(core.flops + layer_params * per_token, nbytes)
    mm = model_matmul_params(layer_params, d_model, spec.model_layers, spec.d_ff, spec.vocab, interference)
    fwd_bytes = 2 * 8 * b * n + 4 * mm + b * n * spec.vocab * elem
    return Cost(spec.model_layers * core.flops + mm * per_token, fwd_bytes if fwd else fwd_bytes + 4 * mm + 7 * 4 * mm)


def method_cost(kind: str, path: str | None, spec) -> Cost:
    """A wave or softmax method's cost at the cell `spec` (a CellSpec) at any level."""
    core = mixing_cost(kind, path, spec.batch, spec.heads, spec.seq_len, spec.row_head_dim, spec.elem,
                       spec.pass_, spec.field_stride)
    # matmul weights of one attention layer: wave qkv 3D^2 + gate D^2 + out D^2; softmax qkv + out
    layer_params = (5 if kind == "wave" else 4) * spec.d_model * spec.d_model
    return level_cost(spec, core, layer_params, interference=kind == "wave")


def floor_cost(spec, path: str) -> Cost:
    """fft-floor / fft-floor-field: float32 x (B, H, d, L) read, output written, spectrum read."""
    length, m = conv_length(spec.seq_len, spec.field_stride, path)
    rows = spec.batch * spec.heads * spec.head_dim
    return Cost(fft_conv_flops(rows, m), 2.0 * rows * length * 4 + spec.heads * (m // 2 + 1) * 8)


@dataclass(frozen=True)
class DevicePeak:
    name: str
    flops: dict  # dtype name -> FLOP/s (dense)
    bandwidth: float  # bytes/s


HOPPER_FLOPS = {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}  # datasheet numbers (dense, no sparsity)
PEAKS = (DevicePeak("H200", HOPPER_FLOPS, 4.8e12), DevicePeak("H100", HOPPER_FLOPS, 3.35e12))


def device_peak(device_name: str | None) -> DevicePeak | None:
    """The known peak of a GPU by name ('NVIDIA H200' -> H200), None for CPUs and unknown GPUs."""
    return next((peak for peak in PEAKS if device_name and peak.name in device_name.upper()), None)


def roofline_frac(cost: Cost, seconds: float, peak: DevicePeak | None, kind: str, dtype: str) -> float | None:
    """max(flops / peak_flops, bytes / peak_bw) / seconds, None for an unknown peak; wave FFT math is fp32."""
    if peak is None or not seconds or seconds <= 0:
        return None
    fp32 = peak.flops["float32"]
    peak_flops = fp32 if kind in ("wave", "reference") else peak.flops.get(dtype, fp32)
    return max(cost.flops / peak_flops, cost.bytes / peak.bandwidth) / seconds


def copy_bandwidth(device, nbytes: int = 1 << 29, reps: int = 5) -> float:
    """Bytes/s of a device-to-device copy (read + write), best of `reps`: the memory roofline measured in this run."""
    import torch

    from bench.common.timing import time_calls, warm_up

    n = max(1, nbytes // 4)
    src = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    copy = lambda: dst.copy_(src)  # noqa: E731
    warm_up(copy, device)  # the first copy pays page faults / lazy init
    best = min(time_calls(copy, device) for _ in range(reps))
    return 2 * n * 4 / best


def over_memory_bound(cost: "Cost | None", seconds: float, bandwidth: float | None) -> float | None:
    """Measured time / the time the minimum bytes take at `bandwidth` (1.0: at the memory roofline; target <= 2)."""
    if cost is None or not bandwidth or not cost.bytes or seconds <= 0:
        return None
    return seconds / (cost.bytes / bandwidth)
