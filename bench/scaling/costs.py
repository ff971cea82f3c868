"""Cost model: FLOPs and minimum bytes of one call, and the roofline (docs/method.md, "Cost model").

Conventions (all counts are for ONE call of the timed closure):
- Softmax attention (FlashAttention convention): fwd = 4 B H N^2 d, halved when causal (always
  here); fwdbwd = 3.5 x fwd (bwd = 2.5 x fwd). Every softmax method gets the same count (useful
  work), whatever it actually executes (naive computes the masked half too).
- Causal FFT convolution of R rows (R = B H d) padded to M: a real FFT costs 2.5 M log2 M each
  way and the spectrum product 6 (M/2 + 1), so R (5 M log2 M + 6 (M/2 + 1)) per forward.
  The wave core also transforms its kernel every call (H rows, one rfft: + H 2.5 M log2 M).
  Backward of the wave convolution: 1.5 x the forward's long-FFT work (it runs three long
  transforms, rfft of the gradient, rfft of x again, irfft of grad_x, against the forward's two),
  and transforms the kernel again: fwdbwd = 2.5 x conv + 2 x kernel FFT.
  M is what the code uses: fast_fft_size(2N - 1) (token path), fast_fft_size(2G - 1) with
  G = ceil((N - 1) s) + 2 field cells (field path).
  Not counted: the deposit (v * ||k||), head coupling, gather (elementwise or tiny matmuls, a few
  % of the FFT work).
- fft-floor rows: the convolution only (the kernel spectrum is cached): R (5 M log2 M + 6 (M/2 + 1)).
- Layer and model levels add 2 FLOPs per matmul parameter per token (projections, gate, FFN,
  interference module, tied output head), x3 for fwdbwd (forward + two backward matmuls), on
  top of the mixing operator counted as above once per layer. Optimizer FLOPs are not counted.
- Minimum bytes: every input read once, every output written once. fwd: core reads its inputs
  (q, k, v or k, v) and writes y; fwdbwd also reads dy and writes the input gradients. Layers
  also read the weights (and write their gradients in fwdbwd); the model reads tokens and targets
  (int64) and weights and writes logits; its fwdbwd also writes weight gradients and runs AdamW
  (reads param, grad, exp_avg, exp_avg_sq; writes param, exp_avg, exp_avg_sq: 7 fp32 words per
  parameter).
- Roofline fraction = max(FLOPs / peak_flops, bytes / peak_bandwidth) / measured seconds, where the
  device's peak is known (PEAKS); empty on CPU, where the fft-floor rows are the measured ceiling.
  Wave and reference rows use the fp32 peak (their FFT math is float32 on CUDA cores whatever the
  dtype); softmax rows use the peak of the run's dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from wavefield_core.fftconv import fast_fft_size, field_cells

SOFTMAX_PASS_MULT = {"fwd": 1.0, "fwdbwd": 3.5}
MATMUL_PASS_MULT = {"fwd": 1.0, "fwdbwd": 3.0}
WAVE_BWD_FACTOR = 1.5
INTERFERENCE_EVERY = 3  # WaveFieldLM default: a field-interference module after every 3rd block


@dataclass(frozen=True)
class Cost:
    flops: float
    bytes: float


# ---------------------------------------------------------------------------------------------
# building blocks


def rfft_flops(rows: int, m: int) -> float:
    """One real FFT of length m on `rows` rows: 2.5 m log2 m each."""
    return rows * 2.5 * m * math.log2(m) if m > 1 else 0.0


def fft_conv_flops(rows: int, m: int) -> float:
    """rfft + spectrum product + irfft of `rows` rows padded to m: rows (5 m log2 m + 6 (m/2 + 1))."""
    return rows * ((5.0 * m * math.log2(m) if m > 1 else 0.0) + 6.0 * (m // 2 + 1))


def conv_length(n: int, stride: float, path: str) -> tuple[int, int]:
    """(L, M): what the wave core (or its fft floor) convolves, N tokens on the token path or
    G = field_cells(N, s) = ceil((N - 1) s) + 2 cells on the field path, and the FFT length M it pads to
    (the scan path uses no FFT; its memory estimate borrows the token path's size)."""
    length = field_cells(n, stride) if path == "field" else n
    return length, fast_fft_size(2 * length - 1)


def wave_fft_size(n: int, stride: float, path: str) -> int:
    return conv_length(n, stride, path)[1]


def softmax_flops(b: int, h: int, n: int, d: int, pass_: str, causal: bool = True) -> float:
    fwd = 4.0 * b * h * n * n * d * (0.5 if causal else 1.0)
    return fwd * SOFTMAX_PASS_MULT[pass_]


def wave_flops(b: int, h: int, n: int, d: int, m: int, pass_: str) -> float:
    conv = fft_conv_flops(b * h * d, m)
    kern = rfft_flops(h, m)
    if pass_ == "fwd":
        return conv + kern
    return conv * (1.0 + WAVE_BWD_FACTOR) + 2.0 * kern


# ---------------------------------------------------------------------------------------------
# matmul parameters of the layer and model levels


def layer_matmul_params(kind: str, d_model: int) -> int:
    """Weights of the matmuls in one attention layer: wave qkv 3D^2 + gate D^2 + out D^2; softmax qkv + out."""
    return (5 if kind == "wave" else 4) * d_model * d_model


def model_matmul_params(kind: str, d_model: int, n_layers: int, d_ff: int, vocab: int) -> int:
    """Matmul weights touched per token by the LM: layers (attention + FFN), wave interference
    modules (D->D/4, D/4->D, two DxD projections, 2D->D gate = 4.5 D^2 each), tied head V x D."""
    per_layer = layer_matmul_params(kind, d_model) + 2 * d_model * d_ff
    total = n_layers * per_layer + vocab * d_model
    if kind == "wave":
        n_int = n_layers // INTERFERENCE_EVERY
        r = d_model // 4
        total += n_int * (d_model * r + r * d_model + 2 * d_model * d_model + 2 * d_model * d_model)
    return total


# ---------------------------------------------------------------------------------------------
# per level


def core_bytes(kind: str, b: int, h: int, n: int, d: int, elem: int, pass_: str) -> float:
    """Inputs read once, outputs written once. Softmax: q, k, v -> y; wave: k, v -> y."""
    n_in = 3 if kind == "softmax" else 2
    unit = b * h * n * d * elem
    if pass_ == "fwd":
        return (n_in + 1) * unit
    return 2 * (n_in + 1) * unit  # + dy read, input grads written


def mixing_cost(kind: str, path: str | None, b: int, h: int, n: int, d: int, elem: int, pass_: str,
                stride: float = 4.0) -> Cost:
    """The core level: the sequence-mixing operator on ready (B, H, N, d) inputs."""
    if kind == "softmax":
        return Cost(softmax_flops(b, h, n, d, pass_), core_bytes(kind, b, h, n, d, elem, pass_))
    if path == "scan":
        return Cost(scan_flops(b, h, n, d, pass_), core_bytes(kind, b, h, n, d, elem, pass_))
    m = wave_fft_size(n, stride, path or "token")
    return Cost(wave_flops(b, h, n, d, m, pass_), core_bytes(kind, b, h, n, d, elem, pass_))


def scan_flops(b: int, h: int, n: int, d: int, pass_: str, chunk: int = 32) -> float:
    """The recurrent (scan) path, wavefield_core/recurrent.py, chunk C: intra-chunk Toeplitz
    matmul 2 C per element, chunk states 4 per element (complex weights), carry-in 4 per element,
    and the doubling scan over N/C chunk states (8 log2(N/C) per state): about 2 B H N d (C + 4)."""
    rows = b * h * d
    chunks = max(1, math.ceil(n / chunk))
    fwd = rows * n * (2.0 * chunk + 8.0) + rows * chunks * 8.0 * max(1.0, math.log2(chunks))
    return fwd if pass_ == "fwd" else fwd * (1.0 + WAVE_BWD_FACTOR)


def floor_cost(b: int, h: int, n: int, d: int, stride: float, path: str) -> Cost:
    """fft-floor / fft-floor-field: float32 input (B, H, d, L) read, output written, spectrum read."""
    length, m = conv_length(n, stride, path)
    rows = b * h * d
    return Cost(fft_conv_flops(rows, m), 2.0 * rows * length * 4 + h * (m // 2 + 1) * 8)


def layer_cost(kind: str, path: str | None, b: int, h: int, n: int, d: int, elem: int, pass_: str,
               stride: float = 4.0) -> Cost:
    """Attention module on x (B, N, D): the core plus its projections."""
    core = mixing_cost(kind, path, b, h, n, d, elem, pass_, stride)
    return with_projections(core.flops, layer_matmul_params(kind, h * d), b, n, h * d, elem, pass_)


def with_projections(core_flops: float, params: int, b: int, n: int, d_model: int, elem: int, pass_: str) -> Cost:
    """A layer on x (B, N, D): its mixing operator's FLOPs plus matmuls over `params` weights; bytes:
    x read and y written (fwdbwd: also dy read and dx written), the weights read (and their grads written)."""
    io = b * n * d_model * elem
    nbytes = (2 * io + params * elem) if pass_ == "fwd" else (4 * io + 2 * params * elem)
    return Cost(core_flops + 2.0 * params * b * n * MATMUL_PASS_MULT[pass_], nbytes)


def model_cost(kind: str, path: str | None, b: int, h: int, n: int, d_model: int, n_layers: int, d_ff: int,
               vocab: int, elem: int, pass_: str, stride: float = 4.0, total_params: int | None = None) -> Cost:
    """One LM step: n_layers mixing operators + matmuls; bytes per the module docstring.

    total_params: all parameters (for weight/optimizer traffic); default = matmul weights.
    """
    core = mixing_cost(kind, path, b, h, n, d_model // h, elem, pass_, stride)
    mm = model_matmul_params(kind, d_model, n_layers, d_ff, vocab)
    return lm_cost(core.flops, mm, n_layers, b, n, vocab, elem, pass_, total_params)


def lm_cost(core_flops: float, mm: int, n_layers: int, b: int, n: int, vocab: int, elem: int, pass_: str,
            total_params: int | None = None) -> Cost:
    """One LM step from one layer's mixing FLOPs and the matmul weights `mm` touched per token."""
    p = total_params if total_params is not None else mm
    fwd_bytes = 2 * 8 * b * n + 4 * p + b * n * vocab * elem
    return Cost(n_layers * core_flops + 2.0 * mm * b * n * MATMUL_PASS_MULT[pass_],
                fwd_bytes if pass_ == "fwd" else fwd_bytes + 4 * p + 7 * 4 * p)


# ---------------------------------------------------------------------------------------------
# roofline


@dataclass(frozen=True)
class DevicePeak:
    name: str
    flops: dict  # dtype name -> FLOP/s (dense)
    bandwidth: float  # bytes/s


# Datasheet numbers (dense, no sparsity).
PEAKS = (
    DevicePeak("H200", {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}, 4.8e12),
    DevicePeak("H100", {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}, 3.35e12),
)


def device_peak(device_name: str | None) -> DevicePeak | None:
    """The known peak of a GPU by name ('NVIDIA H200' -> H200), None for CPUs and unknown GPUs."""
    if not device_name:
        return None
    upper = device_name.upper()
    for peak in PEAKS:
        if peak.name in upper:
            return peak
    return None


def roofline_frac(cost: Cost, seconds: float, peak: DevicePeak | None, kind: str, dtype: str) -> float | None:
    """max(flops / peak_flops, bytes / peak_bw) / seconds, None when the peak is unknown."""
    if peak is None or not seconds or seconds <= 0:
        return None
    fp32 = peak.flops["float32"]
    peak_flops = fp32 if kind in ("wave", "reference") else peak.flops.get(dtype, fp32)
    return max(cost.flops / peak_flops, cost.bytes / peak.bandwidth) / seconds


def copy_bandwidth(device, nbytes: int = 1 << 29, reps: int = 5) -> float:
    """Bytes/s a device-to-device copy moves (read + write counted), best of `reps`: the memory
    roofline a memory-bound operator is held to, measured on this device in this run rather than
    taken from a datasheet."""
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
    """Measured time / the time the cost's minimum bytes take at `bandwidth` (1.0 = at the memory
    roofline; the target for a fused memory-bound kernel is within 2)."""
    if cost is None or not bandwidth or not cost.bytes or seconds <= 0:
        return None
    return seconds / (cost.bytes / bandwidth)
