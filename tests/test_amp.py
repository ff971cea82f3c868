"""Mixed precision: every wave path under autocast (bf16 and fp16), against float64 references.

CPU autocast runs the same code as CUDA autocast (the custom autograd Functions, the float32 FFT
and scan math inside an autocast region), so these tests catch on a CPU machine the dtype faults
that would otherwise first show on a GPU.
"""
import pytest
import torch

from baselines import StandardLM
from wavefield_core import WaveFieldAttention, WaveFieldLM, wave_mix
from wavefield_core.attention import wave_conv_bhdn
from wavefield_core.model import FieldInterference
from wavefield_core.reference import reference_wave_layer, reference_wave_mix

# Relative RMS error allowed against float64, per autocast dtype: the projections run in the
# autocast dtype (8 mantissa bits for bf16, 11 for fp16), the wave math in float32.
TOL = {torch.bfloat16: 3e-2, torch.float16: 5e-3}
AMP = [torch.bfloat16, torch.float16]
PATHS = [("token", 4.0), ("field", 2.5), ("scan", 3.0)]


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _ids(p):
    return str(p).replace("torch.", "")


@pytest.mark.parametrize("amp", AMP, ids=_ids)
@pytest.mark.parametrize("mode,stride", PATHS, ids=[p[0] for p in PATHS])
def test_layer_forward_backward_under_autocast(amp, mode, stride):
    torch.manual_seed(1)
    layer = WaveFieldAttention(24, 3, field_stride=stride, mode=mode)
    x = torch.randn(2, 37, 24, requires_grad=True)
    g = torch.randn(2, 37, 24)
    with torch.autocast("cpu", dtype=amp):
        y = layer(x)
    assert y.dtype == amp  # the output projection runs in the autocast dtype, as nn.Linear's would
    gx, gw, gd = torch.autograd.grad((y.float() * g).sum(), (x, layer.qkv.weight, layer.damping))
    assert gx.dtype == torch.float32 and gw.dtype == torch.float32  # parameter and input dtypes kept

    ref_layer = WaveFieldAttention(24, 3, field_stride=stride, mode=mode).double()
    ref_layer.load_state_dict(layer.state_dict())
    x64 = x.detach().double().requires_grad_()
    ref = reference_wave_layer(ref_layer, x64)
    rx, rw, rd = torch.autograd.grad((ref * g.double()).sum(), (x64, ref_layer.qkv.weight, ref_layer.damping))
    errs = {"y": rel_err(y, ref), "dx": rel_err(gx, rx), "dW": rel_err(gw, rw), "d_damping": rel_err(gd, rd)}
    print(mode, amp, {k: f"{v:.1e}" for k, v in errs.items()})
    assert max(errs.values()) < TOL[amp]


def test_field_interference_running_mean_past_fp16_range():
    """The running mean divided by counts in the activation dtype: under fp16 autocast every count past
    65504 was inf, so the mean (and the module's output) there fell to zero."""
    torch.manual_seed(4)
    module = FieldInterference(4)
    x = torch.randn(1, 65600, 4)
    ref = module(x)
    with torch.autocast("cpu", dtype=torch.float16):
        y = module(x)
    assert rel_err(y[:, 65505:], ref[:, 65505:]) < 5e-3


def test_bf16_layer_kernel_is_the_one_forward_uses():
    """layer.kernel() of a bf16 layer was computed in bf16 (lags and the 1024-cell normalisation range
    rounded past 256): off by about its own size from the impulse response its forward computes."""
    torch.manual_seed(5)
    layer = WaveFieldAttention(16, 2, field_stride=1.0).bfloat16()
    with torch.no_grad():
        layer.damping.fill_(-6.0)
    u = torch.zeros(1, 2, 1, 600, dtype=torch.bfloat16)
    u[..., 0] = 1.0
    impulse = wave_conv_bhdn(u, layer.frequency, layer.damping, layer.phase, 1.0, "token")[0, :, 0]
    assert rel_err(layer.kernel(600), impulse) < 1e-2


def test_float64_layer_under_autocast_stays_float64():
    """Autocast casts no float64 tensor (nn.Linear stays float64 in it), but the channel-major projection
    cast x to bf16 and the output GEMM then failed ('Input dtypes must be the same'). It now runs in float64."""
    torch.manual_seed(3)
    layer = WaveFieldAttention(16, 2).double()
    x = torch.randn(2, 20, 16, dtype=torch.float64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.float64 and rel_err(y, reference_wave_layer(layer, x)) < 1e-12
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert gx.dtype == torch.float64


@pytest.mark.parametrize("amp", AMP, ids=_ids)
@pytest.mark.parametrize("mode,stride", PATHS, ids=[p[0] for p in PATHS])
def test_core_half_inputs_against_float64(amp, mode, stride):
    """The core fed half-precision k and v (the benchmark's bf16 cells) returns their dtype and
    matches the float64 reference on the same rounded inputs."""
    torch.manual_seed(2)
    B, H, N, d = 2, 3, 41, 5
    k, v = torch.randn(B, H, N, d).to(amp), torch.randn(B, H, N, d).to(amp)
    freq, damp, ph = torch.linspace(0.3, 4.0, H), torch.linspace(-3.0, 0.5, H), torch.linspace(0, 3.1, H)
    coupling = torch.eye(H) + 0.1 * torch.randn(H, H)
    y = wave_mix(k, v, freq, damp, ph, coupling, field_stride=stride, mode=mode)
    assert y.dtype == amp
    ref = reference_wave_mix(k.double(), v.double(), freq.double(), damp.double(), ph.double(), coupling.double(),
                             stride)
    err = rel_err(y, ref)
    print(mode, amp, f"{err:.1e}")
    assert err < TOL[amp]


def _train(model, amp, steps=12, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.randint(0, 23, (4, 33))
    losses = []
    for _ in range(steps):
        with torch.autocast("cpu", dtype=amp):
            _, loss = model(data[:, :-1], data[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("amp", AMP, ids=_ids)
@pytest.mark.parametrize("kind", ["wave-token", "wave-field", "wave-scan", "standard"])
def test_lm_trains_under_autocast(kind, amp):
    """A few optimizer steps on a fixed batch: the loss stays finite and falls."""
    torch.manual_seed(0)
    if kind == "standard":
        model = StandardLM(vocab_size=23, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=64, dropout=0.0)
    else:
        mode = kind.split("-")[1]
        model = WaveFieldLM(vocab_size=23, d_model=32, n_layers=3, n_heads=4, d_ff=64, dropout=0.0,
                            field_stride=2.5 if mode == "field" else 4.0, mode=mode)
    losses = _train(model, amp)
    print(kind, amp, [f"{x:.3f}" for x in losses])
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.2
    assert all(p.dtype == torch.float32 for p in model.parameters())
