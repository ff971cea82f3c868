"""Correctness of the wave mechanism: fast paths against slow references, causality, prefix consistency."""
import math

import pytest
import torch

from wavefield_core import WaveFieldAttention, WaveFieldLM, causal_conv_direct, causal_fft_conv, fast_fft_size, wave_mix
from wavefield_core.kernel import check_stride, stride_is_exact, v35_init, wave_kernel
from wavefield_core.reference import reference_kernel, reference_wave_layer, reference_wave_mix


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------- causal_fft_conv

@pytest.mark.parametrize("n", [1, 7, 63, 1000], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)], ids=["fp32", "bf16"])
def test_fft_conv_matches_direct(n, dtype, tol):
    torch.manual_seed(n)
    x = torch.randn(2, 3, n, 5, dtype=torch.float64)
    k = torch.randn(3, n, dtype=torch.float64) / math.sqrt(n)
    ref = causal_conv_direct(x, k)
    y = causal_fft_conv(x.to(dtype), k.to(dtype))
    assert y.dtype == dtype and y.shape == x.shape
    # bf16 error is dominated by rounding of the inputs/outputs, so compare with the direct
    # convolution of the same rounded inputs.
    ref_q = causal_conv_direct(x.to(dtype).double(), k.to(dtype).double())
    err = rel_err(y, ref_q)
    print(f"N={n} {dtype}: rel err {err:.2e} (vs unrounded {rel_err(y, ref):.2e})")
    assert err < tol


@pytest.mark.parametrize("n", [1, 7, 63, 1000], ids=lambda n: f"N{n}")
def test_fft_conv_gradients_match_direct(n):
    torch.manual_seed(n)
    x = torch.randn(2, 3, n, 5, requires_grad=True)
    k = (torch.randn(3, n) / math.sqrt(n)).requires_grad_()
    g = torch.randn(2, 3, n, 5)
    gx, gk = torch.autograd.grad((causal_fft_conv(x, k) * g).sum(), (x, k))
    x64, k64 = x.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    rx, rk = torch.autograd.grad((causal_conv_direct(x64, k64) * g.double()).sum(), (x64, k64))
    assert rel_err(gx, rx) < 1e-5
    assert rel_err(gk, rk) < 1e-5


def test_fft_conv_gradcheck_float64_all_layouts():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 17, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 17, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: causal_fft_conv(a, b), (x, k))
    assert torch.autograd.gradcheck(lambda a, b: causal_fft_conv(a.transpose(1, 2), b, layout="bnhd"), (x, k))
    assert torch.autograd.gradcheck(lambda a, b: causal_fft_conv(a.transpose(-1, -2), b, layout="bhdn"), (x, k))


def test_fft_conv_rejects_wraparound_and_bad_shapes():
    x = torch.randn(1, 2, 10, 3)
    with pytest.raises(ValueError, match="wrap"):
        causal_fft_conv(x, torch.randn(2, 10), fft_size=18)
    with pytest.raises(ValueError, match="kernel"):
        causal_fft_conv(x, torch.randn(3, 10))
    with pytest.raises(ValueError, match="layout"):
        causal_fft_conv(x, torch.randn(2, 10), layout="nope")


@pytest.mark.parametrize("n", [1, 7, 63, 1000], ids=lambda n: f"N{n}")
@pytest.mark.parametrize("layout", ["bhnd", "bnhd", "bhdn"])
def test_fft_conv_fused_scale_and_short_kernel_match_direct(n, layout):
    # The deposit weight is multiplied in while x is written into the FFT buffer, and a kernel cut
    # at its support (K < N taps) means zero taps beyond K: values and all three gradients.
    torch.manual_seed(n)
    B, H, d, K = 2, 3, 5, max(1, n // 3)
    x = torch.randn(B, H, n, d, requires_grad=True)
    w = torch.rand(B, H, n, 1).add_(0.5).requires_grad_()
    k = (torch.randn(H, K) / math.sqrt(K)).requires_grad_()
    g = torch.randn(B, H, n, d)
    to = {"bhnd": lambda t: t, "bnhd": lambda t: t.transpose(1, 2), "bhdn": lambda t: t.transpose(-1, -2)}[layout]
    back = to  # each of these permutations is its own inverse
    y = back(causal_fft_conv(to(x), k, layout=layout, scale=to(w)))
    fast = torch.autograd.grad((y * g).sum(), (x, w, k))
    x64, w64, k64 = (t.detach().double().requires_grad_() for t in (x, w, k))
    ref = causal_conv_direct(x64 * w64, k64)
    slow = torch.autograd.grad((ref * g.double()).sum(), (x64, w64, k64))
    assert rel_err(y, ref) < 1e-5
    for name, a, b in zip(("x", "scale", "kernel"), fast, slow):
        assert rel_err(a, b) < 1e-5, f"grad {name}"


@pytest.mark.parametrize("stride", [None, 1, 3, 2.5], ids=lambda s: f"s{s}")
def test_fft_conv_gradcheck_float64_scale_and_field_placements(stride):
    from wavefield_core.fftconv import field_geometry

    torch.manual_seed(0)
    n = 11
    cells = n if stride is None else field_geometry(n, stride)[2]
    x = torch.randn(2, 3, n, 4, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, 3, n, 1, dtype=torch.float64).add_(0.5).requires_grad_()
    k = torch.randn(3, cells, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: causal_fft_conv(a, c, scale=b, field_stride=stride), (x, w, k))
    assert torch.autograd.gradcheck(
        lambda a, b, c: causal_fft_conv(a.transpose(-1, -2), c, layout="bhdn", scale=b.transpose(-1, -2),
                                        field_stride=stride), (x, w, k))


def test_fft_conv_inference_path_equals_autograd_path():
    torch.manual_seed(0)
    x, w, k = torch.randn(1, 2, 300, 8), torch.rand(1, 2, 300, 1), torch.randn(2, 300)
    with torch.no_grad():
        y0 = causal_fft_conv(x, k, scale=w, field_stride=4)
    y1 = causal_fft_conv(x.requires_grad_(), k, scale=w, field_stride=4)
    assert y1.requires_grad and torch.equal(y0, y1.detach())


def test_kernel_cut_at_support_changes_nothing(monkeypatch):
    # kernel_support cuts the taps where every head's envelope is below the smallest normal float;
    # the result must equal the uncut kernel's (up to FFT rounding, far below 1e-6).
    import wavefield_core.attention as attn
    from wavefield_core.kernel import kernel_support

    torch.manual_seed(0)
    H, N = 4, 5000
    p = v35_init(H)
    assert kernel_support(p["damping"], 4.0, N) < N // 5  # V3.5 init: every head dies out early
    for dtype in (torch.float32, torch.float64):
        assert kernel_support(p["damping"], 4.0, N, dtype) <= N
    k, v = torch.randn(1, H, N, 8), torch.randn(1, H, N, 8)
    c = torch.eye(H)
    args = (k, v, p["frequency"], p["damping"], p["phase"], c, 4.0)
    for mode in ("token", "field"):
        cut = wave_mix(*args, mode=mode)
        monkeypatch.setattr(attn, "kernel_support", lambda damping, step, n, dtype=None: n)
        monkeypatch.setattr(attn, "_KERNEL_CACHE", type(attn._KERNEL_CACHE)())  # no cached cut kernel
        full = wave_mix(*args, mode=mode)
        monkeypatch.undo()
        assert rel_err(cut, full) < 1e-6, mode


def test_inference_kernel_cache_follows_parameter_values():
    # inference calls reuse the kernel spectrum; the key is the parameter values, so a change made
    # behind autograd's back (.data) must still give the new operator's result
    import wavefield_core.attention as attn

    torch.manual_seed(0)
    layer = WaveFieldAttention(32, 4, field_stride=4).eval()
    x = torch.randn(1, 300, 32)
    with torch.no_grad():
        first = layer(x)
        assert any(key[1] == 300 for key in attn._KERNEL_CACHE)
        layer.damping.data.add_(0.3)
        layer.frequency.data.mul_(1.1)
        changed = layer(x)
    fresh = layer(x)  # autograd recording: never uses the cache
    assert rel_err(changed, fresh) < 1e-6
    assert rel_err(changed, first) > 1e-3
    for mode in ("token", "field"):  # a cache hit gives exactly the uncached result
        layer.path = mode
        with torch.no_grad():
            a, b = layer(x), layer(x)
        assert torch.equal(a, b) and rel_err(a, layer(x)) < 1e-6


@pytest.mark.parametrize("mode", ["token", "field", "scan"])
def test_wave_mix_channel_major_v_matches_token_major(mode):
    torch.manual_seed(1)
    B, H, N, d = 2, 4, 77, 6
    k = torch.randn(B, H, N, d, requires_grad=True)
    v = torch.randn(B, H, N, d, requires_grad=True)
    p = {n: t.clone().requires_grad_() for n, t in v35_init(H).items()}
    c = (torch.eye(H) + 0.1 * torch.randn(H, H)).requires_grad_()
    g = torch.randn(B, H, N, d)
    wrt = [k, v, p["frequency"], p["damping"], p["phase"], c]
    outs = []
    for v_layout, vin in (("bhnd", v), ("bhdn", v.transpose(-1, -2))):
        y = wave_mix(k, vin, p["frequency"], p["damping"], p["phase"], c, 4.0, mode=mode, v_layout=v_layout)
        assert y.shape == (B, H, N, d)
        outs.append([y, *torch.autograd.grad((y * g).sum(), wrt)])
    for a, b in zip(*outs):
        assert rel_err(a, b) < 1e-6
    with pytest.raises(ValueError, match="bhnd, bhdn"):
        wave_mix(k, v, p["frequency"], p["damping"], p["phase"], c, 4.0, v_layout="bnhd")


def test_fast_fft_size_is_5_smooth_and_minimal():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1
    for n in [1, 2, 3, 7, 63, 127, 1000, 1999, 4095, 16383, 65535]:
        m = fast_fft_size(n)
        assert m >= n and smooth(m)
        assert not any(smooth(j) for j in range(n, m)), f"{m} is not the smallest 5-smooth >= {n}"


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


def test_token_mode_refuses_non_integer_stride():
    with pytest.raises(ValueError, match="integer"):
        WaveFieldAttention(32, 4, field_stride=2.5, mode="token")
    with pytest.raises(ValueError, match="valid choices"):
        WaveFieldAttention(32, 4, mode="fast")
    assert WaveFieldAttention(32, 4, field_stride=2.5).path == "field"
    assert WaveFieldAttention(32, 4, field_stride=3).path == "token"


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


def assert_grads_match_reference(mod, x, g):
    """Gradients of <mod(x), g> for x and the wave parameters: the layer against the float64 reference."""
    names = ["frequency", "damping", "phase", "coupling"]
    xr, xd = x.clone().requires_grad_(), x.double().requires_grad_()
    fast = torch.autograd.grad((mod(xr) * g).sum(), [xr] + [getattr(mod, p) for p in names])
    slow = torch.autograd.grad((reference_wave_layer(mod, xd) * g.double()).sum(), [xd] + [getattr(mod, p) for p in names])
    for name, a, b in zip(["x"] + names, fast, slow):
        assert rel_err(a, b) < 1e-4, f"{mod.path} grad of {name}: {rel_err(a, b):.2e}"


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
        y16 = wave_mix(k.bfloat16(), v.bfloat16(), p["frequency"], p["damping"], p["phase"], c, 4.0, mode=mode)
        assert y16.dtype == torch.bfloat16
        assert rel_err(y16, ref) < 2e-2


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
    assert torch.autograd.gradcheck(lambda cc, b: mix_heads(cc, b[..., :7]), (c, buf))  # rows 13 apart, like the FFT output


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
