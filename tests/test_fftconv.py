"""causal_fft_conv, the FFT fast path: values and gradients against the direct convolution, every layout,
wraparound and shape checks."""
import math

import pytest
import torch

from wavefield_core import WaveFieldAttention, causal_conv_direct, causal_fft_conv, fast_fft_size, wave_mix
from wavefield_core.kernel import v35_init


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


@pytest.mark.parametrize("shape", [(0, 2, 5, 3), (1, 2, 5, 0)], ids=["B0", "d0"])
@pytest.mark.parametrize("stride", [None, 2.5], ids=lambda s: f"s{s}")
def test_fft_conv_of_an_empty_batch_or_channel_axis_is_empty(shape, stride):
    """B = 0 or d = 0 was an MKL FFT error; the result is empty, like its gradient."""
    x, k = torch.randn(*shape, requires_grad=True), torch.randn(2, 20, requires_grad=True)
    y = causal_fft_conv(x, k, field_stride=stride)
    assert y.shape == shape
    y.sum().backward()
    assert x.grad.shape == shape and torch.equal(k.grad, torch.zeros_like(k))  # the kernel stays in the graph
    with pytest.raises(ValueError, match="wrap"):  # the size checks still run on an empty input
        causal_fft_conv(x, k, field_stride=stride, fft_size=4)


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


@pytest.mark.parametrize("mode", ["token", "field", "scan"])
def test_wave_mix_returns_v_dtype_whatever_k_dtype(mode):
    """Every path returns v's dtype: the scan path used to return float32 for bf16 v and float32 k
    (the deposit v * ||k|| was promoted), where the FFT paths returned bf16."""
    torch.manual_seed(0)
    k, v = torch.randn(1, 2, 9, 3), torch.randn(1, 2, 9, 3, dtype=torch.bfloat16)
    p = v35_init(2)
    y = wave_mix(k, v, p["frequency"], p["damping"], p["phase"], torch.eye(2), 4.0, mode=mode)
    assert y.dtype == torch.bfloat16
    ref = wave_mix(k, v.float(), p["frequency"], p["damping"], p["phase"], torch.eye(2), 4.0, mode=mode)
    assert rel_err(y, ref) < 1e-2


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
