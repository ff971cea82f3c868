"""bench.scaling's cost model (numbers checked by hand), the budget predictor and the memory bound."""

import pytest
import torch

from bench.scaling import costs
from bench.scaling.budget import Predictor, share_out
from bench.scaling.grid import CellSpec, length_grid, rank_of_group
from bench.scaling.registry import METHODS


CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# cost model (numbers checked by hand)


def test_fft_building_blocks():
    assert costs.rfft_flops(8, 8) == 8 * 2.5 * 8 * 3  # 480
    assert costs.fft_conv_flops(1, 8) == 5 * 8 * 3 + 6 * 5  # 150
    assert costs.fft_conv_flops(512, 8) == 76_800
    assert costs.wave_flops(1, 8, 4, 64, 8, "fwd") == 76_800 + 480
    assert costs.wave_flops(1, 8, 4, 64, 8, "fwdbwd") == 76_800 * 2.5 + 2 * 480


def test_softmax_flops():
    # 4 B H N^2 d / 2 (causal) at B=1 H=8 N=1024 d=64
    assert costs.softmax_flops(1, 8, 1024, 64, "fwd") == 1_073_741_824
    assert costs.softmax_flops(1, 8, 1024, 64, "fwdbwd") == 3.5 * 1_073_741_824
    assert costs.softmax_flops(1, 8, 1024, 64, "fwd", causal=False) == 2 * 1_073_741_824


def test_wave_core_cost_token_and_field():
    # token path, N=512: M = fast_fft_size(1023) = 1024; R = 512 rows, kernel H = 8 rows
    assert costs.conv_length(512, 4.0, "token") == (512, 1024)
    c = costs.mixing_cost("wave", "token", 1, 8, 512, 64, 4, "fwd")
    assert c.flops == 512 * (5 * 1024 * 10 + 6 * 513) + 8 * 2.5 * 1024 * 10  # 27,995,136
    assert c.bytes == 3 * 8 * 512 * 64 * 4  # k, v read, y written: 3 x B H N d x 4 bytes = 3,145,728
    # field path, s=4: G = ceil(511 * 4) + 2 = 2046 cells, M = fast_fft_size(4091) = 4096
    assert costs.field_cells(512, 4.0) == 2046
    assert costs.conv_length(512, 4.0, "field") == (2046, 4096)
    f = costs.mixing_cost("wave", "field", 1, 8, 512, 64, 4, "fwd")
    assert f.flops == 512 * (5 * 4096 * 12 + 6 * 2049) + 8 * 2.5 * 4096 * 12


def test_recurrent_paths_count_no_fft():
    # wave-scan and wave-triton run the same chunked one-pole recurrence (no FFT): 2 R N (C + 4) plus the
    # doubling scan; the Triton kernels' chunk is 32 tokens in float32, 64 in 16-bit (triton_scan._config)
    rows, n = 1 * 8 * 64, 2048
    scan = rows * n * (2 * 32 + 8) + rows * 64 * 8 * 6  # 64 chunks of 32, log2 64 = 6
    assert costs.mixing_cost("wave", "scan", 1, 8, n, 64, 4, "fwd").flops == scan
    assert costs.mixing_cost("wave", "triton", 1, 8, n, 64, 4, "fwd").flops == scan  # was the FFT count
    half = rows * n * (2 * 64 + 8) + rows * 32 * 8 * 5
    assert costs.mixing_cost("wave", "triton", 1, 8, n, 64, 2, "fwd").flops == half
    spec = CellSpec("core", "fwdbwd", 1, 8, 64, n, CPU, torch.float32)
    assert METHODS["wave-triton"].cost(spec).flops == METHODS["wave-scan"].cost(spec).flops == scan * 2.5


def test_softmax_core_bytes_and_layer_flops():
    c = costs.mixing_cost("softmax", None, 1, 8, 1024, 64, 4, "fwd")
    assert c.bytes == 4 * 8 * 1024 * 64 * 4  # q, k, v read + y written = 8,388,608
    assert costs.mixing_cost("softmax", None, 1, 8, 1024, 64, 4, "fwdbwd").bytes == 2 * c.bytes
    # layer: + 2 FLOPs per matmul weight per token; softmax layer has 4 D^2 weights (D = 512)
    spec = CellSpec("layer", "fwd", 1, 8, 64, 1024, CPU, torch.float32)
    lay = METHODS["softmax-sdpa"].cost(spec)
    assert lay.flops == 1_073_741_824 + 2 * 4 * 512 * 512 * 1024  # 3,221,225,472
    lay_bwd = METHODS["softmax-sdpa"].cost(spec.at(pass_="fwdbwd"))
    assert lay_bwd.flops == 3.5 * 1_073_741_824 + 3 * 2 * 4 * 512 * 512 * 1024


def test_model_matmul_params_match_the_models():
    from baselines import StandardLM
    from wavefield_core import WaveFieldLM

    def linear_weights(model):
        return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))

    std = StandardLM(256, 256, 6, 8, 1024, max_seq_len=64)
    assert costs.model_matmul_params(4 * 256 * 256, 256, 6, 1024, 256) == linear_weights(std) == 4_784_128
    wave = WaveFieldLM(256, d_model=256, n_layers=6, n_heads=8, d_ff=1024)
    # the wave head is x @ embed.weight.T (not an nn.Linear): add V x D by hand
    wave_weights = costs.model_matmul_params(5 * 256 * 256, 256, 6, 1024, 256, interference=True)
    assert wave_weights == linear_weights(wave) + 256 * 256


def test_roofline():
    peak = costs.device_peak("NVIDIA H200")
    assert peak is not None and peak.bandwidth == 4.8e12
    assert costs.device_peak("Intel(R) Xeon(R) CPU") is None
    assert costs.roofline_frac(costs.Cost(67e12, 0), 1.0, peak, "wave", "bfloat16") == pytest.approx(1.0)
    assert costs.roofline_frac(costs.Cost(989e12, 0), 2.0, peak, "softmax", "bfloat16") == pytest.approx(0.5)
    assert costs.roofline_frac(costs.Cost(0, 4.8e12), 4.0, peak, "softmax", "float32") == pytest.approx(0.25)
    assert costs.roofline_frac(costs.Cost(1, 1), 1.0, None, "wave", "float32") is None


# ---------------------------------------------------------------------------------------------
# budget predictor


def _linear(n):
    return float(n)


def test_predictor_fit_and_time_skip():
    p = Predictor("cpu", time_budget=0.5, mem_budget=1e9, calls=4)
    series = ("wave", "core", "fwd")
    for n, t in [(512, 0.01), (1024, 0.02), (2048, 0.04)]:
        p.record(series, n, t)
    t, basis = p.call_seconds(series, 4096, "wave", _linear, _linear)
    assert t == pytest.approx(0.08, rel=1e-6) and "fit" in basis
    assert p.decide(series, 4096, "wave", 1e6, _linear, _linear).run  # 4 x 0.08 = 0.32 s < 0.5 s
    d = p.decide(series, 8192, "wave", 1e6, _linear, _linear)  # 4 x 0.16 = 0.64 s > 0.5 s
    assert not d.run
    assert d.reason.startswith("predicted 0.64 s > time budget 0.5 s (4 calls of 160 ms")
    later = p.decide(series, 16384, "wave", 1e6, _linear, _linear)
    assert not later.run and "longer than N=8192" in later.reason


def test_predictor_uses_the_larger_of_fit_and_cost_ratio():
    """Short lengths are overhead-bound (flat); the cost model's N^2 keeps the prediction honest."""
    p = Predictor("cpu", time_budget=10, mem_budget=1e12, calls=4)
    s = ("softmax-naive", "core", "fwd")
    p.record(s, 512, 0.010)
    p.record(s, 1024, 0.011)
    t, _ = p.call_seconds(s, 2048, "softmax", lambda n: n * n, lambda n: n)
    assert t == pytest.approx(0.044)


def test_predictor_memory_and_cost_only():
    p = Predictor("cpu", time_budget=10, mem_budget=2e9, calls=4)
    d = p.decide(("softmax-naive", "core", "fwd"), 32768, "softmax", 34.4e9, _linear, _linear)
    assert not d.run and d.reason == "predicted peak memory 34.4 GB > memory budget 2 GB"
    d = Predictor("cpu", time_budget=10, mem_budget=14.6995e9, calls=4).decide(  # printed '14.7 GB > ... 14.7 GB'
        ("wave", "core", "fwd"), 32768, "wave", 14.72e9, _linear, _linear)
    assert not d.run and d.reason == "predicted peak memory 14.72 GB > memory budget 14.6995 GB"
    tiny = Predictor("cpu", time_budget=10, mem_budget=5e5, calls=4)  # --mem-budget 0.0005: both said 0.0 GB
    d = tiny.decide(("softmax-naive", "core", "fwd"), 256, "softmax", 2.7e6, _linear, _linear)
    assert not d.run and d.reason == "predicted peak memory 0.0027 GB > memory budget 0.0005 GB"
    t, basis = p.call_seconds(("x", "core", "fwd"), 512, "softmax", lambda n: 3e10, lambda n: 0)
    assert basis == "cost model only" and t == pytest.approx(1.0)


@pytest.mark.parametrize("at_512, time_budget, elapsed, share_left, want", [
    (0.001, 1e-9, 0.0, None, "predicted 0.008 s > time budget 1e-09 s"),  # printed 'predicted 0.0 s > ...'
    (1.005, 8.0, 0.0, None, "predicted 8.04 s > time budget 8 s"),  # printed 'predicted 8.0 s > time budget 8 s'
    (1.00005, 8.0, 0.0, None, "predicted 8.0004 s > time budget 8 s"),
    (1.005, 100.0, 231.97, None, "predicted 8.04 s > 8.03 s left of the total budget 240 s"),  # '8.0 s > 8.0 s left'
    (1.005, 100.0, 0.0, 8.03, "predicted 8.04 s > 8.03 s left of this level/pass's share of the total budget 240 s")])
def test_budget_reasons_print_the_prediction_above_the_limit(at_512, time_budget, elapsed, share_left, want):
    p = Predictor("cpu", time_budget=time_budget, mem_budget=1e12, calls=4, total_budget=240)
    s = ("wave", "core", "fwd")
    p.record(s, 512, at_512)  # at N=1024 (linear cost model): 4 calls of twice that
    d = p.decide(s, 1024, "wave", 1, _linear, _linear, elapsed_s=elapsed, share_left_s=share_left)
    assert not d.run and d.reason.startswith(want), d.reason


def test_predictor_total_budget():
    p = Predictor("cpu", time_budget=100, mem_budget=1e12, calls=4, total_budget=60)
    s = ("wave", "core", "fwd")
    p.record(s, 512, 1.0)
    d = p.decide(s, 1024, "wave", 1, _linear, _linear, elapsed_s=55)
    assert not d.run and "left of the total budget 60 s" in d.reason


def test_total_budget_is_shared_out_over_levels_and_passes():
    segs = [(lv, p) for lv in ("core", "layer", "model") for p in ("fwd", "fwdbwd")]
    assert share_out(240.0, segs) == pytest.approx(90.0)  # core fwd weighs 3 of 8
    assert share_out(100.0, segs[1:]) == pytest.approx(20.0)
    assert share_out(50.0, []) == 50.0
    p = Predictor("cpu", time_budget=100, mem_budget=1e12, calls=4, total_budget=240)
    s = ("wave", "layer", "fwd")
    p.record(s, 512, 1.0)
    d = p.decide(s, 1024, "wave", 1, _linear, _linear, elapsed_s=10, share_left_s=5.0)
    assert not d.run and "share of the total budget 240 s" in d.reason
    # short cells once a share is spent: 'predicted 0.0 s > 0 s left' read as 0 > 0
    p.record(s, 2048, 0.001)
    d = p.decide(s, 4096, "wave", 1, _linear, _linear, elapsed_s=10, share_left_s=0.0004)
    assert d.reason.startswith("predicted 0.008 s > 0.0004 s left of this level/pass's share"), d.reason
    d = p.decide(s, 4096, "wave", 1, _linear, _linear, elapsed_s=239.9996)
    assert d.reason == "predicted 0.008 s > 0.0004 s left of the total budget 240 s"
    d = p.decide(s, 4096, "wave", 1, _linear, _linear, elapsed_s=239.9996, protected=True)
    assert d.run and d.reduced and d.reason.startswith("fewest calls: predicted 0.008 s at full repetitions")


def _fft_conv_bytes(rows: int, length: int, m: int) -> tuple[int, int]:
    """Bytes of one FFT convolution's tensors, made for real: (padded copy + spectrum + irfft output, padded copy +
    spectrum), the latter being what an rfft holds at once (the next call's, or a backward's second rfft)."""
    padded = torch.nn.functional.pad(torch.ones(rows, length), (0, m - length))  # what rfft(x, n=m) transforms
    spectrum = torch.fft.rfft(padded)
    out = torch.fft.irfft(spectrum, n=m)
    return padded.nbytes + spectrum.nbytes + out.nbytes, padded.nbytes + spectrum.nbytes


@pytest.mark.parametrize("name, pass_, path, inputs", [
    ("fft-floor", "fwd", "token", 1),  # x (B, H, d, L)
    ("fft-floor-field", "fwd", "field", 1),
    ("wave", "fwd", "token", 3),  # k, v, y
    ("wave-field", "fwd", "field", 3),
    ("wave-scan", "fwd", "token", 3),  # bounded by the token path's estimate
    ("wave", "fwdbwd", "token", 6),  # k, v, y, the output gradient, the gradients of k and v
    ("wave-field", "fwdbwd", "field", 6)])
def test_memory_estimates_cover_the_fft_buffers(name, pass_, path, inputs):
    """The estimate holds every buffer the FFT path keeps resident on CPU, the zero-padded copy rfft(x, n=m) makes
    included: it was left out, and a fft-floor-field cell estimated under the budget was OOM-killed at N=262144."""
    spec = CellSpec("core", pass_, 1, 2, 16, 1000, CPU, torch.float32)
    length, m = costs.conv_length(spec.seq_len, spec.field_stride, path)
    rows = spec.batch * spec.heads * spec.head_dim
    conv, rfft = _fft_conv_bytes(rows, length, m)
    one = torch.empty(rows, length if name.startswith("fft-floor") else spec.seq_len).nbytes  # an input's bytes
    # the allocator the harnesses set keeps freed memory: a call's buffers stay resident where the next rfft's may not
    # fit; fwdbwd: the backward's rffts of the gradient and of the input, and its irfft output
    need = inputs * one + conv + rfft if pass_ == "fwd" else inputs * one + 2 * conv + rfft
    assert METHODS[name].memory(spec) >= need


def test_length_grid_and_ranks():
    assert length_grid(512, 32768) == [512, 1024, 2048, 4096, 8192, 16384, 32768]
    assert length_grid(512, 3000) == [512, 1024, 2048, 3000]
    lens = [256, 512, 1024]
    assert [rank_of_group(n, lens, 2) for n in lens] == [0, 1, 0]


def test_memory_bound_ratio_uses_the_measured_copy_bandwidth():
    bw = costs.copy_bandwidth(CPU, nbytes=1 << 22, reps=2)
    assert 1e8 < bw < 1e13  # bytes/s of a real copy on any machine
    cost = costs.Cost(flops=1.0, bytes=2e9)
    assert costs.over_memory_bound(cost, 2.0, 2e9) == pytest.approx(2.0)  # twice the time the bytes need
    assert costs.over_memory_bound(cost, 2.0, None) is None and costs.over_memory_bound(None, 1.0, 1e9) is None
