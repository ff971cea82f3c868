"""Tests for the softmax-attention baselines (CPU; the whole file runs in seconds)."""
import math

import pytest
import torch

from baselines import (
    SOFTMAX_IMPLS, SoftmaxAttention, StandardLM, count_params, flash_attn_available, param_matched_config,
    sdpa_backend_that_runs, softmax_flash_attn, softmax_naive, softmax_sdpa,
)

# (B, N, H, d): odd lengths, N=1 included, d not a power of two in one case
SHAPES = [(2, 1, 4, 16), (1, 7, 2, 8), (2, 63, 4, 16), (1, 200, 3, 24)]
SHAPE_IDS = [f"B{B}-N{N}-H{H}-d{d}" for B, N, H, d in SHAPES]

PUBLISHED_BASE = 4_739_072  # + 256 * (V + L_pos) at D=256, 6 layers, 8 heads, d_ff=1024
WAVE_BASE = 5_727_378       # + 256 * V, the wave model at the same sizes


def rel_max(a, b, floor=1e-30):
    """max |a - b| relative to max |b|, with max |b| floored (for references that are ~0)."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(floor)).item()


def rel_rms(a, b):
    a, b = a.double(), b.double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()


def qkv(B, N, H, d, dtype=torch.float32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, N, d, generator=g).to(dtype).requires_grad_(grad) for _ in range(3)]


# ---------------------------------------------------------------------------------------------
# functional ops


@pytest.mark.parametrize("B,N,H,d", SHAPES, ids=SHAPE_IDS)
def test_naive_sdpa_agree_values_and_grads(B, N, H, d):
    outs, grads = [], []
    g_out = torch.randn(B, H, N, d, generator=torch.Generator().manual_seed(1))
    for fn in (softmax_naive, softmax_sdpa):
        q, k, v = qkv(B, N, H, d, grad=True)
        o = fn(q, k, v)
        assert o.shape == (B, H, N, d)
        o.backward(g_out)
        outs.append(o.detach())
        grads.append([q.grad, k.grad, v.grad])
    assert rel_max(outs[0], outs[1]) < 1e-5
    for name, ga, gb in zip("qkv", *grads):
        # at N=1 the q-gradient is exactly 0 in theory (one key, probability 1) and sdpa returns
        # ~1e-8 rounding noise, so the error is taken relative to the O(1) upstream-gradient scale
        assert rel_max(ga, gb, floor=1.0) < 1e-5, f"grad wrt {name}"


@pytest.mark.parametrize("B,N,H,d", SHAPES[1:], ids=SHAPE_IDS[1:])
def test_bf16_agreement(B, N, H, d):
    q, k, v = qkv(B, N, H, d, dtype=torch.bfloat16)
    ref = softmax_naive(q.double(), k.double(), v.double())  # same bf16-rounded inputs, exact maths
    naive, sdpa = softmax_naive(q, k, v), softmax_sdpa(q, k, v)
    assert naive.dtype == sdpa.dtype == torch.bfloat16
    assert rel_rms(naive, ref) < 2e-2
    assert rel_rms(sdpa, ref) < 2e-2
    assert rel_rms(naive, sdpa.double()) < 2e-2


@pytest.mark.parametrize("impl", ["naive", "sdpa"])
def test_perturbing_token_t_leaves_earlier_outputs_unchanged(impl):
    fn = SOFTMAX_IMPLS[impl]
    B, N, H, d, t = 2, 63, 4, 16, 40
    q, k, v = qkv(B, N, H, d)
    base = fn(q, k, v)
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t] += 10.0
    out = fn(q2, k2, v2)
    # masked keys contribute exp(-inf) = 0 exactly, so earlier rows are bit-identical
    assert torch.equal(out[:, :, :t], base[:, :, :t])
    assert not torch.allclose(out[:, :, t], base[:, :, t])


@pytest.mark.parametrize("impl", ["naive", "sdpa"])
def test_module_jacobian_is_block_lower_triangular(impl):
    torch.manual_seed(0)
    N, D = 7, 16
    attn = SoftmaxAttention(D, 2, impl=impl)
    x = torch.randn(1, N, D)
    jac = torch.autograd.functional.jacobian(lambda x: attn(x), x)  # (1, N, D, 1, N, D)
    jac = jac[0, :, :, 0].abs().sum(dim=(1, 3))  # (N_out, N_in)
    future = torch.ones(N, N, dtype=torch.bool).triu(1)
    assert torch.all(jac[future] == 0)  # output i never depends on input j > i
    assert torch.all(jac[~future] > 0)  # ... and does depend on every j <= i


def test_sdpa_backend_reporting_on_cpu():
    q, k, v = qkv(2, 63, 4, 16)
    # torch's own CPU flash-style kernel serves fp32 causal attention without dropout
    assert sdpa_backend_that_runs(q, k, v) == "cpu-flash"
    assert sdpa_backend_that_runs(q, k, v, method="trial") == "cpu-flash"
    assert sdpa_backend_that_runs(q, k, v, backend="math") == "math"
    with pytest.raises(RuntimeError, match="efficient"):
        sdpa_backend_that_runs(q, k, v, backend="efficient")
    # pinned backends compute the same values; an unrunnable one raises naming itself
    ref = softmax_naive(q, k, v)
    for b in ("flash", "math"):
        assert rel_max(softmax_sdpa(q, k, v, backend=b), ref) < 1e-5
    with pytest.raises(RuntimeError, match="'efficient' cannot run"):
        softmax_sdpa(q, k, v, backend="efficient")
    with pytest.raises(ValueError, match="valid choices"):
        softmax_sdpa(q, k, v, backend="fast")


@pytest.mark.skipif(flash_attn_available(), reason="flash_attn is installed here")
def test_flash_attn_unavailable_is_a_clear_error():
    q, k, v = qkv(1, 7, 2, 8)
    with pytest.raises(RuntimeError, match="flash_attn"):
        softmax_flash_attn(q, k, v)
    with pytest.raises(RuntimeError, match="flash_attn"):
        SoftmaxAttention(16, 2, impl="flash_attn")


# ---------------------------------------------------------------------------------------------
# module


@pytest.mark.parametrize("N", [1, 63, 200], ids=lambda n: f"N{n}")
def test_module_naive_vs_sdpa_sharing_weights(N):
    torch.manual_seed(0)
    a = SoftmaxAttention(48, 3, impl="naive")
    b = SoftmaxAttention(48, 3, impl="sdpa")
    b.load_state_dict(a.state_dict())
    xa = torch.randn(2, N, 48, requires_grad=True)
    xb = xa.detach().clone().requires_grad_(True)
    ya, yb = a(xa), b(xb)
    assert ya.shape == (2, N, 48)
    assert rel_max(yb, ya) < 1e-5
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert rel_max(xb.grad, xa.grad) < 1e-5
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert rel_max(pb.grad, pa.grad) < 1e-5, name
    assert a.backend_name() == "naive"
    assert b.backend_name() == "cpu-flash"


def test_module_rejects_bad_config():
    with pytest.raises(ValueError, match="naive, sdpa, flash_attn"):
        SoftmaxAttention(32, 4, impl="linear")
    with pytest.raises(ValueError, match="multiple of n_heads"):
        SoftmaxAttention(30, 4)
    with pytest.raises(ValueError, match="positive multiple of n_heads"):  # -8 % 4 == 0: was "negative dimension"
        SoftmaxAttention(-8, 4)
    with pytest.raises(ValueError, match="valid choices"):
        SoftmaxAttention(32, 4, sdpa_backend="fast")
    with pytest.raises(ValueError, match="only applies to impl 'sdpa'"):
        SoftmaxAttention(32, 4, impl="naive", sdpa_backend="math")


# ---------------------------------------------------------------------------------------------
# language model


def test_published_parameter_count():
    V, L_pos = 100, 128
    m = StandardLM(V, 256, 6, 8, 1024, L_pos)
    assert count_params(m) == PUBLISHED_BASE + 256 * (V + L_pos) == m.config.num_params()
    assert m.head.weight is m.tok_emb.weight


@pytest.mark.parametrize("V", [100, 8000], ids=lambda v: f"V{v}")
def test_param_matched_to_wave_model(V):
    target = WAVE_BASE + 256 * V
    cfg = param_matched_config(target, V, 256, 6, 8, 128)
    assert cfg.d_ff % 8 == 0 and cfg.d_ff > 1024
    assert abs(cfg.num_params() - target) <= 0.02 * target
    m = StandardLM.param_matched(target, V, 256, 6, 8, 128, dropout=0.0)
    assert count_params(m) == cfg.num_params()
    assert m.config.dropout == 0.0


def test_param_matched_refuses_impossible_target():
    with pytest.raises(ValueError, match="cannot match"):
        param_matched_config(1000, 100, 256, 6, 8, 128)


def test_initial_loss_near_uniform():
    torch.manual_seed(0)
    V = 500
    m = StandardLM(V, 64, 2, 4, 256, 64)
    idx = torch.randint(0, V, (4, 64))
    targets = torch.randint(0, V, (4, 64))
    targets[:, -5:] = -100  # padding is ignored, not scored
    logits, loss = m(idx, targets)
    assert logits.shape == (4, 64, V)
    assert math.isfinite(loss.item())
    assert abs(loss.item() - math.log(V)) < 0.5
    _, none = m(idx)
    assert none is None


def test_overfits_one_batch():
    torch.manual_seed(0)
    V = 50
    m = StandardLM(V, 64, 2, 4, 256, 32, dropout=0.0)
    idx = torch.randint(0, V, (4, 32))
    targets = torch.randint(0, V, (4, 32))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        _, loss = m(idx, targets)
        first = loss.item() if first is None else first
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_lm_rejects_long_sequence_and_bad_impl():
    m = StandardLM(20, 32, 1, 2, 64, 16)
    with pytest.raises(ValueError, match="max_seq_len=16"):
        m(torch.zeros(1, 17, dtype=torch.long))
    m(torch.zeros(1, 16, dtype=torch.long))  # the full length is fine
    with pytest.raises(ValueError, match="valid choices: naive, sdpa, flash_attn"):
        StandardLM(20, 32, 1, 2, 64, 16, attn_impl="wave")


def test_lm_on_an_empty_sequence_matches_the_wave_lm():
    """StandardLM on a (1, 0) input failed to reshape its empty logits; the wave LM gives empty logits, NaN loss."""
    from wavefield_core import WaveFieldLM

    idx = torch.zeros(1, 0, dtype=torch.long)
    for model in (StandardLM(20, 16, 1, 2, 32, 8), WaveFieldLM(20, d_model=16, n_layers=1, n_heads=2, d_ff=32)):
        logits, loss = model(idx, idx)
        assert logits.shape == (1, 0, 20) and torch.isnan(loss)


def test_lm_naive_and_sdpa_give_same_logits():
    torch.manual_seed(0)
    a = StandardLM(30, 32, 2, 4, 64, 40, dropout=0.0, attn_impl="naive")
    b = StandardLM(30, 32, 2, 4, 64, 40, dropout=0.0, attn_impl="sdpa")
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 30, (2, 37))
    assert rel_max(b(idx)[0], a(idx)[0]) < 1e-5
    assert b.attention_backends() == ["cpu-flash", "cpu-flash"]
