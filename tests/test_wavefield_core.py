"""Correctness of the wave mechanism: the kernel, the layer paths against the float64 reference, causality,
prefix consistency, the model and the scan path (the FFT convolution itself: test_fftconv.py)."""
import math

import pytest
import torch

from wavefield_core import WaveFieldAttention, WaveFieldLM, causal_fft_conv, wave_conv, wave_mix
from wavefield_core.kernel import check_stride, stride_is_exact, v35_init, wave_kernel
from wavefield_core.reference import reference_kernel, reference_wave_layer, reference_wave_mix


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------- kernel

def test_kernel_matches_reference_and_is_l1_bounded():
    p = v35_init(8)
    lags = torch.arange(5000, dtype=torch.float64)
    k = wave_kernel(p["frequency"].double(), p["damping"].double(), p["phase"].double(), lags)
    ref = reference_kernel(p["frequency"], p["damping"], p["phase"], 5000)
    assert rel_err(k, ref) < 1e-12
    l1 = k.abs().sum(-1)
    assert (l1 <= 1 + 1e-12).all()
    assert (l1 > 0.999).all(), "at V3.5 init the tail bound is negligible: L1 norm ~ 1"


def test_kernel_norm_bounds_l1_even_for_slow_damping():
    # alpha tiny: the envelope reaches far beyond the 1024-cell reference range; the tail bound
    # must still keep sum |k| <= 1 over any number of lags.
    freq, damp, ph = torch.tensor([0.01]), torch.tensor([-9.0]), torch.tensor([0.0])
    k = wave_kernel(freq.double(), damp.double(), ph.double(), torch.arange(200000, dtype=torch.float64))
    assert k.abs().sum() <= 1.0


@pytest.mark.parametrize("s", [1, 2, 3, 4, 8, 2.0, 2.5, 7.3, 100])
def test_exact_strides_accepted(s):
    assert stride_is_exact(s) and check_stride(s) == float(s)


@pytest.mark.parametrize("s", [0.125, 0.5, 0.996, 1.29, 1.5, 1.999, 0, -1, float("nan"), float("inf")])
def test_leaking_strides_refused(s):
    assert not stride_is_exact(s)
    with pytest.raises(ValueError, match="safe strides"):
        WaveFieldAttention(32, 4, field_stride=s)
    # the public convolutions too: at a leaking stride two deposits share a cell and the scatter kept one
    u, p = torch.randn(1, 2, 5, 3), v35_init(2)
    with pytest.raises(ValueError, match="safe strides"):
        wave_conv(u, p["frequency"], p["damping"], p["phase"], s, "field")
    with pytest.raises(ValueError, match="safe strides"):
        causal_fft_conv(u, torch.randn(2, 40), field_stride=s)


@pytest.mark.parametrize("d_model,heads,norm_cells,message", [
    (16, 0, 1024, "n_heads must be an integer >= 1"),  # was a ZeroDivisionError
    (16, -2, 1024, "n_heads must be an integer >= 1"),
    (16, 3, 1024, "positive divisor of d_model"),
    (-8, 4, 1024, "d_model must be an integer >= 1"),  # was "negative dimension"
    (True, 1, 1024, "d_model must be an integer >= 1"),  # a bool passed, then failed in torch.empty
    (8, 4, -1, "norm_cells must be an integer >= 0"),  # constructed, then failed deep in forward
    (8, 4, 2.5, "norm_cells must be an integer >= 0"),
])
def test_bad_sizes_are_value_errors(d_model, heads, norm_cells, message):
    with pytest.raises(ValueError, match=message):
        WaveFieldAttention(d_model, heads, norm_cells=norm_cells)


def test_numpy_integer_sizes_are_taken():
    """Sizes read from numpy (a config array, a sweep grid) are integers too; they were refused for a while."""
    import numpy as np

    layer = WaveFieldAttention(np.int64(16), np.int64(4), norm_cells=np.int64(512))
    assert (layer.d_model, layer.n_heads, layer.norm_cells) == (16, 4, 512) and type(layer.norm_cells) is int
    assert layer(torch.randn(1, 5, 16)).shape == (1, 5, 16)


@pytest.mark.parametrize("mode,s", [("token", 4), ("field", 2.5), ("scan", 1)])
def test_empty_batch_or_sequence(mode, s):
    """B = 0 failed in the FFT (an MKL/pocketfft error) and N = 0 with a ValueError about the kernel's shape;
    softmax attention returns an empty result for both, and so does every wave path now."""
    layer = WaveFieldAttention(8, 2, field_stride=s, mode=mode)
    for shape in ((0, 5, 8), (2, 0, 8)):
        x = torch.randn(*shape, requires_grad=True)
        y = layer(x)
        assert y.shape == shape
        y.sum().backward()
        assert x.grad.shape == shape


def test_token_mode_refuses_non_integer_stride():
    with pytest.raises(ValueError, match="integer"):
        WaveFieldAttention(32, 4, field_stride=2.5, mode="token")
    with pytest.raises(ValueError, match="valid choices"):
        WaveFieldAttention(32, 4, mode="fast")
    u, p = torch.randn(1, 2, 5, 3), v35_init(2)
    with pytest.raises(ValueError, match="valid choices"):  # wave_conv ran the field path for any unknown mode
        wave_conv(u, p["frequency"], p["damping"], p["phase"], 3, "bogus")
    auto = wave_conv(u, p["frequency"], p["damping"], p["phase"], 3, "auto")
    assert torch.equal(auto, wave_conv(u, p["frequency"], p["damping"], p["phase"], 3, "token"))
    assert WaveFieldAttention(32, 4, field_stride=2.5).path == "field"
    assert WaveFieldAttention(32, 4, field_stride=3).path == "token"


def test_setting_mode_re_resolves_the_path():
    """layer.mode = "scan" after construction was silently ignored: forward kept the path chosen at construction."""
    layer = WaveFieldAttention(8, 2, field_stride=3)
    layer.mode = "scan"
    assert layer.path == "scan"
    with pytest.raises(ValueError, match="integer"):
        WaveFieldAttention(8, 2, field_stride=2.5).mode = "token"
    with pytest.raises(ValueError, match="valid choices"):
        layer.mode = "fast"
    assert (layer.mode, layer.path) == ("scan", "scan")


# ---------------------------------------------------------------- layer vs reference

def _pair(s, d_model=32, n_heads=4, seed=0):
    torch.manual_seed(seed)
    a = WaveFieldAttention(d_model, n_heads, field_stride=s, mode="field")
    with torch.no_grad():  # move wave parameters off their init so heads differ more
        a.frequency.add_(torch.randn(n_heads) * 0.3)
        a.damping.add_(torch.randn(n_heads) * 0.3)
        a.coupling.add_(torch.randn(n_heads, n_heads) * 0.5)
    b = None
    if float(s) == int(s):
        b = WaveFieldAttention(d_model, n_heads, field_stride=s, mode="token")
        b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("s", [1, 2, 3, 4, 2.5, 8], ids=lambda s: f"s{s}")
@pytest.mark.parametrize("n", [1, 7, 63, 200], ids=lambda n: f"N{n}")
def test_layer_modes_match_reference(s, n):
    field, token = _pair(s)
    x = torch.randn(2, n, 32)
    ref = reference_wave_layer(field, x)
    assert rel_err(field(x), ref) < 1e-5
    if token is not None:
        assert rel_err(token(x), ref) < 1e-5


@pytest.mark.parametrize("s", [1, 3, 4, 2.5], ids=lambda s: f"s{s}")
def test_layer_gradients_match_reference(s):
    n = 45
    field, token = _pair(s, seed=1)
    x = torch.randn(2, n, 32)
    g = torch.randn(2, n, 32)
    for mod in [field] + ([token] if token is not None else []):
        assert_grads_match_reference(mod, x, g)
        # a float64 layer matches to float64 rounding: the projections' gradients were once summed in float32
        assert_grads_match_reference(mod.double(), x.double(), g.double(), tol=1e-10)


def assert_grads_match_reference(mod, x, g, tol=1e-4):
    """Gradients of <mod(x), g> for x and every parameter: the layer against the float64 reference."""
    names, params = zip(*mod.named_parameters())
    xr, xd = x.clone().requires_grad_(), x.double().requires_grad_()
    fast = torch.autograd.grad((mod(xr) * g).sum(), [xr, *params])
    slow = torch.autograd.grad((reference_wave_layer(mod, xd) * g.double()).sum(), [xd, *params])
    for name, a, b in zip(["x", *names], fast, slow):
        assert rel_err(a, b) < tol, f"{mod.path} grad of {name}: {rel_err(a, b):.2e}"


def test_wave_mix_core_matches_reference_bf16():
    torch.manual_seed(3)
    B, H, N, d = 1, 4, 300, 16
    k, v = torch.randn(B, H, N, d), torch.randn(B, H, N, d)
    p = v35_init(H)
    c = torch.eye(H) + 0.1 * torch.randn(H, H)
    ref = reference_wave_mix(k, v, p["frequency"], p["damping"], p["phase"], c, 4.0)
    for mode in ("token", "field"):
        y32 = wave_mix(k, v, p["frequency"], p["damping"], p["phase"], c, 4.0, mode=mode)
        assert rel_err(y32, ref) < 1e-5
        y64 = wave_mix(k.double(), v.double(), p["frequency"], p["damping"], p["phase"], c, 4.0, mode=mode)
        assert rel_err(y64, ref) < 1e-12  # float64 data with float32 parameters: the kernel was float32
        y16 = wave_mix(k.bfloat16(), v.bfloat16(), p["frequency"], p["damping"], p["phase"], c, 4.0, mode=mode)
        assert y16.dtype == torch.bfloat16
        assert rel_err(y16, ref) < 2e-2


@pytest.mark.parametrize("mode", ["token", "field", "scan"])
@pytest.mark.parametrize("bad,message", [
    ({"frequency": torch.zeros(1)}, r"frequency must have shape \(H,\)"),
    ({"damping": torch.zeros(8)}, r"damping must have shape \(H,\)"),
    ({"phase": torch.zeros(4, 1)}, r"phase must have shape \(H,\)"),
    ({"coupling": torch.eye(3)}, r"coupling must have shape \(H, H\)"),
    ({"k": torch.randn(1, 4, 1, 3)}, "v must share k's batch, heads and length"),
    ({"v": torch.randn(2, 4, 10, 3)}, "v must share k's batch, heads and length"),
    ({"norm_cells": -1}, "norm_cells must be an integer >= 0"),  # was a RuntimeError deep in torch.arange
], ids=["frequency", "damping", "phase", "coupling", "length", "batch", "norm_cells"])
def test_wave_mix_refuses_mismatched_shapes(mode, bad, message):
    """scan broadcast one head's parameters over four heads, a length-1 k over v, a batch over another; token
    and field refused some naming a 'kernel' or 'scale' the caller never passed; coupling was a bmm error."""
    args = {"k": torch.randn(1, 4, 10, 3), "v": torch.randn(1, 4, 10, 3), **v35_init(4), "coupling": torch.eye(4)}
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        wave_mix(**args, field_stride=1, mode=mode)
    if "frequency" in bad:  # the scan itself, which the peers call directly, broadcast one head's parameters
        from wavefield_core.recurrent import wave_scan_conv

        with pytest.raises(ValueError, match=message):
            wave_scan_conv(args["v"], args["frequency"], args["damping"], args["phase"], 1.0)


# ---------------------------------------------------------------- causality

@pytest.mark.parametrize("s", [1, 2, 3, 4, 2.5, 8], ids=lambda s: f"s{s}")
@pytest.mark.parametrize("mode", ["field", "auto"])
def test_layer_is_causal_values_and_gradients(s, mode):
    # float64 so that FFT rounding (which spreads over all positions, ~1e-7 of the largest value
    # in fp32) cannot hide or fake a leak: any true leak is many orders above 1e-12.
    torch.manual_seed(0)
    n = 1000
    layer = WaveFieldAttention(32, 4, field_stride=s, mode=mode).double()
    x = torch.randn(1, n, 32, dtype=torch.float64)
    y = layer(x)
    for t in (0, 1, 499, 998):
        x2 = x.clone()
        x2[:, t + 1:] += torch.randn_like(x2[:, t + 1:]) * 10  # change everything after t
        y2 = layer(x2)
        scale = y2.abs().max()
        assert (y[:, : t + 1] - y2[:, : t + 1]).abs().max() < 1e-12 * scale
        if t < n - 1:
            assert (y[:, t + 1:] - y2[:, t + 1:]).abs().max() > 1e-3 * scale  # the probe does see changes
    # gradients: output at position t must not depend on inputs after t
    xr = x.clone().requires_grad_()
    t = 321
    layer(xr)[:, t].sum().backward()
    g = xr.grad.abs()
    assert g[:, t + 1:].max() < 1e-12 * g.max()
    assert g[:, t].max() > 0.0


def test_causal_far_beyond_default_lengths():
    torch.manual_seed(0)
    layer = WaveFieldAttention(16, 2, field_stride=4).double()
    n = 20000
    x = torch.randn(1, n, 16, dtype=torch.float64)
    y = layer(x)
    t = 12345
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:])
    assert (layer(x2)[:, : t + 1] - y[:, : t + 1]).abs().max() < 1e-12 * y.abs().max()


@pytest.mark.parametrize("s", [1, 4, 2.5], ids=lambda s: f"s{s}")
def test_prefix_consistency(s):
    torch.manual_seed(0)
    layer = WaveFieldAttention(32, 4, field_stride=s)
    x = torch.randn(2, 700, 32)
    short = layer(x[:, :300])
    long = layer(x)
    assert (short - long[:, :300]).abs().max() < 1e-5


def test_model_is_causal_and_prefix_consistent():
    torch.manual_seed(0)
    m = WaveFieldLM(50, d_model=32, n_layers=3, n_heads=4, d_ff=64, dropout=0.0).double().eval()
    idx = torch.randint(0, 50, (2, 400))
    logits, _ = m(idx)
    idx2 = idx.clone()
    idx2[:, 201:] = torch.randint(0, 50, (2, 199))
    logits2, _ = m(idx2)
    assert (logits[:, :201] - logits2[:, :201]).abs().max() < 1e-10
    assert (logits[:, 201:] - logits2[:, 201:]).abs().max() > 1e-3
    short, _ = m(idx[:, :150])
    assert (short - logits[:, :150]).abs().max() < 1e-10


# ---------------------------------------------------------------- model

@pytest.mark.parametrize("vocab", [100, 8000])
def test_wave_lm_published_parameter_count(vocab):
    m = WaveFieldLM(vocab, d_model=256, n_layers=6, n_heads=8, d_ff=1024)
    n = sum(p.numel() for p in m.parameters())
    assert n == 5_727_378 + 256 * vocab  # the published count: exact, not approximately


def test_wave_lm_initial_loss_and_overfit():
    torch.manual_seed(0)
    V = 64
    m = WaveFieldLM(V, d_model=64, n_layers=3, n_heads=4, d_ff=128, dropout=0.0)
    idx = torch.randint(0, V, (4, 48))
    tgt = torch.randint(0, V, (4, 48))
    _, loss0 = m(idx, tgt)
    assert torch.isfinite(loss0) and abs(loss0.item() - math.log(V)) < 0.5
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(150):
        _, loss = m(idx, tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * loss0.item(), f"could not overfit one batch: {loss0.item():.3f} -> {loss.item():.3f}"


def test_wave_lm_ignores_padding_targets():
    torch.manual_seed(0)
    m = WaveFieldLM(30, d_model=32, n_layers=1, n_heads=4, d_ff=64, dropout=0.0)
    idx = torch.randint(0, 30, (2, 20))
    tgt = torch.randint(0, 30, (2, 20))
    tgt_pad = tgt.clone()
    tgt_pad[:, 10:] = -100
    logits, loss = m(idx, tgt_pad)
    manual = torch.nn.functional.cross_entropy(logits[:, :10].reshape(-1, 30), tgt[:, :10].reshape(-1))
    assert abs(loss.item() - manual.item()) < 1e-5


# ---------------------------------------------------------------- scan (recurrent) path

@pytest.mark.parametrize("n", [1, 7, 31, 32, 33, 63, 1000], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("s", [1, 4], ids=lambda s: f"s{s}")
def test_scan_path_matches_token_and_reference(n, s):
    torch.manual_seed(n)
    token = WaveFieldAttention(32, 4, field_stride=s, mode="token")
    with torch.no_grad():
        token.frequency.add_(torch.randn(4) * 0.3)
        token.damping.add_(torch.randn(4) * 0.3)
    scan = WaveFieldAttention(32, 4, field_stride=s, mode="scan")
    scan.load_state_dict(token.state_dict())
    x = torch.randn(2, n, 32)
    ref = reference_wave_layer(token, x)
    assert rel_err(scan(x), ref) < 1e-5
    assert rel_err(scan(x), token(x)) < 1e-5


def test_scan_path_gradients_match_reference():
    torch.manual_seed(0)
    layer = WaveFieldAttention(32, 4, field_stride=2, mode="scan")
    with torch.no_grad():
        layer.damping.add_(torch.randn(4) * 0.5)
    x = torch.randn(2, 100, 32)
    assert_grads_match_reference(layer, x, torch.randn(2, 100, 32))


def test_scan_path_is_causal_and_refuses_fractional_stride():
    torch.manual_seed(0)
    layer = WaveFieldAttention(32, 4, field_stride=4, mode="scan").double()
    x = torch.randn(1, 1000, 32, dtype=torch.float64)
    y = layer(x)
    t = 500
    x2 = x.clone()
    x2[:, t + 1:] += 10 * torch.randn_like(x2[:, t + 1:])
    assert (layer(x2)[:, : t + 1] - y[:, : t + 1]).abs().max() < 1e-12 * y.abs().max()
    with pytest.raises(ValueError, match="integer"):
        WaveFieldAttention(32, 4, field_stride=2.5, mode="scan")


def test_mix_heads_gradcheck_on_a_strided_view():
    from wavefield_core.attention import mix_heads

    torch.manual_seed(0)
    c = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    buf = torch.randn(2, 3, 4, 13, dtype=torch.float64, requires_grad=True)
    # rows 13 apart, like the FFT output
    assert torch.autograd.gradcheck(lambda cc, b: mix_heads(cc, b[..., :7]), (c, buf))


@pytest.mark.parametrize("bias", [True, False])
def test_channel_major_projection_matches_linear_values_and_gradients(bias):
    from wavefield_core.attention import _ProjectT

    torch.manual_seed(0)
    x = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)
    lins = [torch.nn.Linear(6, 4, bias=bias).double(), torch.nn.Linear(6, 5, bias=bias).double()]
    wb = [t for lin in lins for t in (lin.weight, lin.bias)]
    outs = _ProjectT.apply(x, *wb)
    for out, lin in zip(outs, lins):
        assert out.shape == (2, lin.out_features, 9) and out.is_contiguous()
        assert torch.allclose(out, lin(x).transpose(1, 2))
    params = [x] + [t for t in wb if t is not None]
    assert torch.autograd.gradcheck(lambda *a: _ProjectT.apply(a[0], *_refill(wb, a[1:])), tuple(params))


def _refill(wb, given):
    """wb with its non-None entries replaced, in order, by `given` (gradcheck passes them anew)."""
    it = iter(given)
    return [None if t is None else next(it) for t in wb]
