"""Sub-quadratic peers (baselines/peers.py, baselines/peer_model.py, bench/scaling/peers.py).

What is proved here, besides each fast formulation equalling its obvious reference:

  Wave Field core, identity head coupling, ||k|| = 1  ==  diagonal SSM (one complex pole per head,
      fixed parameters: linear time-invariant)                         test_wave_with_identity_coupling_*
  diagonal SSM with a real pole (frequency 0, phase 0)  ==  RetNet with d_k = 1, q = k = 1 (times
      the gain 1/Z)  ==  HGRN with a constant gate f = gamma and input v / (1 - f)
                                                                      test_real_one_pole_*
So the LTI diagonal SSM is the constant-gate case of a (complex-valued) HGRN, and RetNet's retention
with a one-dimensional key is a real one-pole filter. HGRN and simple GLA gate on the input (time
varying), so the wave operator is not a special case of them in general, nor they of it.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from baselines import peers
from baselines.peer_model import PEER_OPS, PeerLM, PeerMixer, peer_matched_config, peer_params, resolve_impl

F64 = torch.float64
CPU = torch.device("cpu")
SHAPES = [(1, 1, 1, 1), (2, 3, 37, 5), (3, 1, 64, 2), (1, 2, 100, 3)]  # (B, H, N, d): N = 1, odd, chunk-multiple


def _randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _wave_params(h: int, dtype=F64):
    from wavefield_core import v35_init

    init = v35_init(h)
    return [init[k].to(dtype) for k in ("frequency", "damping", "phase")]


def _assert_same(fast_fn, ref_fn, inputs, atol=1e-11):
    """Outputs and the gradients of every input (a random output gradient) agree."""
    a = [t.clone().requires_grad_(True) for t in inputs]
    b = [t.clone().requires_grad_(True) for t in inputs]
    ya, yb = fast_fn(*a), ref_fn(*b)
    assert ya.shape == yb.shape and ya.dtype == yb.dtype
    torch.testing.assert_close(ya, yb, rtol=1e-9, atol=atol)
    gy = _randn(*ya.shape, seed=99, dtype=ya.dtype)
    ga = torch.autograd.grad(ya, a, gy)
    gb = torch.autograd.grad(yb, b, gy)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=atol)


# ---------------------------------------------------------------------------------------------
# fast formulation == reference (float64, values and gradients)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunk", [8, peers.HGRN_CHUNK])
def test_hgrn_chunked_equals_the_token_loop(shape, chunk):
    x, a = _randn(*shape, seed=1), 2 * _randn(*shape, seed=2)
    _assert_same(lambda x, a: peers.hgrn_chunked(x, a, chunk=chunk), peers.hgrn_reference, [x, a])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunk", [8, peers.ATTN_CHUNK])
@pytest.mark.parametrize("fixed", [False, True], ids=["simple-gla", "retnet"])
def test_decayed_attention_chunked_equals_the_explicit_matrix(shape, chunk, fixed):
    B, H, N, d = shape
    q, k = _randn(B, H, N, d, seed=1), _randn(B, H, N, d, seed=2)
    v = _randn(B, H, N, d + 2, seed=3)  # d_v != d_k
    if fixed:
        log_decay = peers.retnet_log_decay(H, dtype=F64)
        _assert_same(lambda q, k, v: peers.decayed_attention_chunked(q, k, v, log_decay, chunk=chunk),
                     lambda q, k, v: peers.decayed_attention_reference(q, k, v, log_decay), [q, k, v])
    else:
        log_decay = F.logsigmoid(_randn(B, H, N, seed=4))
        _assert_same(lambda *t: peers.decayed_attention_chunked(*t, chunk=chunk),
                     peers.decayed_attention_reference, [q, k, v, log_decay])


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_explicit_matrix_equals_the_recurrence_as_written(shape):
    """The (N, N) reference and S_t = g_t S_{t-1} + k_t^T v_t, o_t = scale q_t S_t agree."""
    B, H, N, d = shape
    q, k, v = (_randn(*shape, seed=s) for s in (1, 2, 3))
    log_decay = F.logsigmoid(_randn(B, H, N, seed=4))
    _assert_same(peers.decayed_attention_recurrent, peers.decayed_attention_reference, [q, k, v, log_decay])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("stride", [1.0, 4.0, 2.5])
def test_diag_ssm_chunked_equals_the_token_loop(shape, stride):
    u = _randn(*shape, seed=1)
    params = _wave_params(shape[1])
    _assert_same(lambda u, *p: peers.diag_ssm_chunked(u, *p, stride, chunk=8),
                 lambda u, *p: peers.diag_ssm_reference(u, *p, stride), [u, *params])


def test_extreme_gates_stay_finite_and_exact():
    """Forget logits of +-40 (f = 1 or 0 to double precision) and log decays of -60 per token:
    no overflow, no NaN, still equal to the references."""
    shape = (2, 2, 45, 3)
    x = _randn(*shape, seed=1)
    a = 40 * torch.sign(_randn(*shape, seed=2))
    _assert_same(lambda x, a: peers.hgrn_chunked(x, a, chunk=8), peers.hgrn_reference, [x, a])
    q, k, v = (_randn(*shape, seed=s) for s in (3, 4, 5))
    log_decay = torch.where(_randn(2, 2, 45, seed=6) > 0, -60.0, -1e-6).to(F64)
    _assert_same(lambda *t: peers.decayed_attention_chunked(*t, chunk=8), peers.decayed_attention_reference,
                 [q, k, v, log_decay])


def test_float32_and_bfloat16_inputs():
    """Low-precision inputs: float32 math inside, the input dtype out, close to float64."""
    shape = (1, 2, 300, 8)
    x, a, q, k, v = (_randn(*shape, seed=s) for s in range(5))
    ld = F.logsigmoid(_randn(1, 2, 300, seed=6)) / 16
    params = _wave_params(2)
    cases = [
        (lambda t: peers.hgrn_chunked(*t), peers.hgrn_reference(x, a), [x, a]),
        (lambda t: peers.decayed_attention_chunked(*t), peers.decayed_attention_reference(q, k, v, ld), [q, k, v, ld]),
        (lambda t: peers.diag_ssm_chunked(t[0], *params, 4.0), peers.diag_ssm_reference(v, *params, 4.0), [v]),
    ]
    for fn, ref, inputs in cases:
        for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
            y = fn([t.to(dtype) for t in inputs])
            assert y.dtype == dtype
            err = ((y.double() - ref).norm() / ref.norm()).item()
            assert err < tol, (dtype, err)


@pytest.mark.parametrize("op", PEER_OPS)
def test_causal_by_perturbation(op):
    """Changing every input at token t0 leaves every output before t0 bit-for-bit unchanged."""
    B, H, N, d = 2, 2, 70, 4
    t0 = 41  # inside a chunk, not at a chunk edge
    params = _wave_params(H, torch.float32)

    def run(seed_shift: float):
        ins = [_randn(B, H, N, d, seed=s, dtype=torch.float32) for s in (1, 2, 3)]
        ld = F.logsigmoid(_randn(B, H, N, seed=4, dtype=torch.float32))
        for t in ins:
            t[:, :, t0] += seed_shift
        ld[:, :, t0] -= seed_shift
        if op == "hgrn":
            return peers.hgrn_chunked(ins[0], ins[1], chunk=16)
        if op == "simple-gla":
            return peers.decayed_attention_chunked(*ins, ld, chunk=16)
        if op == "retnet":
            return peers.decayed_attention_chunked(*ins, peers.retnet_log_decay(H), chunk=16)
        return peers.diag_ssm_chunked(ins[2], *params, 4.0, chunk=16)

    y0, y1 = run(0.0), run(3.0)
    assert torch.equal(y0[:, :, :t0], y1[:, :, :t0])
    assert not torch.allclose(y0[:, :, t0], y1[:, :, t0])


# ---------------------------------------------------------------------------------------------
# exact relations between the operators


@pytest.mark.parametrize("stride", [1.0, 2.0, 4.0])
def test_wave_with_identity_coupling_and_unit_deposit_is_the_diagonal_ssm(stride):
    """Wave's token convolution (the FFT path: an independent computation) of deposits v * 1 is the
    one-pole complex recurrence per head, token by token."""
    from wavefield_core import wave_conv

    B, H, N, d = 2, 3, 57, 4
    v = _randn(B, H, N, d, seed=1)
    params = _wave_params(H)
    ones = torch.ones(B, H, N, 1, dtype=F64)
    y_wave = wave_conv(v, *params, stride, "token", layout="bhnd", scale=ones)
    torch.testing.assert_close(y_wave, peers.diag_ssm_reference(v, *params, stride), rtol=1e-9, atol=1e-12)


def test_wave_mix_with_identity_coupling_and_unit_keys_is_the_diagonal_ssm():
    """The whole core: softmax(1e4 I) is I to double precision (off-diagonal exp(-1e4) = 0) and
    unit-norm keys make the deposit v itself."""
    from wavefield_core import wave_mix

    B, H, N, d = 2, 4, 45, 3
    k = _randn(B, H, N, d, seed=2)
    k = k / k.norm(dim=-1, keepdim=True)
    v = _randn(B, H, N, d, seed=3)
    params = _wave_params(H)
    coupling = 1e4 * torch.eye(H, dtype=F64)
    assert torch.equal(torch.softmax(coupling, -1), torch.eye(H, dtype=F64))
    for mode in ("token", "field", "scan"):
        y = wave_mix(k, v, *params, coupling, field_stride=3.0, mode=mode)
        torch.testing.assert_close(y, peers.diag_ssm_chunked(v, *params, 3.0), rtol=1e-9, atol=1e-12)


def test_real_one_pole_retnet_hgrn_and_diag_ssm_agree():
    """One real pole gamma_h per head, y_t = sum_j gamma^(t-j) v_j, four ways:
    the loop; RetNet with d_k = 1, q = k = 1 (scale 1); HGRN with constant gate f = gamma and input
    v / (1 - f); the diagonal SSM with frequency 0, phase 0 (its output is that times c = 1/Z)."""
    from wavefield_core.recurrent import pole_and_gain

    B, H, N, d, s = 2, 3, 70, 4, 2.0
    v = _randn(B, H, N, d, seed=1)
    damping = torch.tensor([-2.0, -0.5, 0.7], dtype=F64)
    freq = phase = torch.zeros(H, dtype=F64)
    r, c, _ = pole_and_gain(freq, damping, phase, s)
    assert torch.equal(r.imag, torch.zeros(H, dtype=F64)) and torch.equal(c.imag, torch.zeros(H, dtype=F64))
    gamma = r.real  # exp(-softplus(damping) s)

    h, loop = torch.zeros(B, H, d, dtype=F64), []
    for t in range(N):
        h = gamma[None, :, None] * h + v[:, :, t]
        loop.append(h)
    loop = torch.stack(loop, dim=2)

    one = torch.ones(B, H, N, 1, dtype=F64)
    retnet = peers.decayed_attention_chunked(one, one, v, gamma.log(), scale=1.0, chunk=16)
    logits = torch.logit(gamma)[None, :, None, None].expand(B, H, N, d)
    hgrn = peers.hgrn_chunked(v / (1 - gamma)[None, :, None, None], logits, chunk=16)
    ssm = peers.diag_ssm_chunked(v, freq, damping, phase, s, chunk=16)
    for y in (retnet, hgrn, ssm / c.real[None, :, None, None]):
        torch.testing.assert_close(y, loop, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# layers and language models


@pytest.mark.parametrize("op", PEER_OPS)
def test_layer_torch_equals_reference_values_and_grads(op):
    torch.manual_seed(0)
    layer = PeerMixer(12, 3, op, impl="torch", field_stride=2.0).double()
    ref = PeerMixer(12, 3, op, impl="reference", field_stride=2.0).double()
    ref.load_state_dict(layer.state_dict())
    x = _randn(3, 37, 12, seed=5)
    _assert_same(layer, ref, [x])
    grads = torch.autograd.grad(layer(x).sum(), list(layer.parameters()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_fla_is_explained_not_crashed_on_cpu():
    why = peers.fla_available(CPU)
    assert why and "CUDA" in why
    assert resolve_impl("hgrn", "auto", CPU) == "torch"
    assert resolve_impl("diag-ssm", "auto", CPU) == "torch"
    layer = PeerMixer(8, 2, "hgrn", impl="fla")
    with pytest.raises(RuntimeError, match="CUDA"):
        layer(torch.randn(1, 5, 8))
    with pytest.raises(ValueError, match="no fla kernel"):
        PeerMixer(8, 2, "diag-ssm", impl="fla")


@pytest.mark.parametrize("stride", [0.0, -1.0, float("nan"), float("inf")])
def test_diag_ssm_refuses_a_stride_that_is_not_positive_and_finite(stride):
    """-1 and NaN gave NaN outputs, 0 an undamped pole: the layer accepted them all."""
    with pytest.raises(ValueError, match="field_stride must be a positive finite number"):
        PeerMixer(8, 2, "diag-ssm", field_stride=stride)
    with pytest.raises(ValueError, match="positive multiple of n_heads"):  # -8 % 4 == 0: was "negative dimension"
        PeerMixer(-8, 4, "diag-ssm")


def test_lm_forward_loss_and_reference_copy():
    for op in PEER_OPS:
        torch.manual_seed(0)
        model = PeerLM(50, op, d_model=16, n_layers=2, n_heads=2, d_ff=32, dropout=0.0).eval()
        idx = torch.randint(0, 50, (2, 19))
        logits, loss = model(idx, idx)
        assert logits.shape == (2, 19, 50) and abs(loss.item() - math.log(50)) < 0.5
        assert model.backends() == ["torch", "torch"]
        import copy

        ref = copy.deepcopy(model).double().set_impl("reference")
        torch.testing.assert_close(logits.double(), ref(idx)[0], rtol=1e-4, atol=1e-5)
        empty = torch.zeros(1, 0, dtype=torch.long)  # failed to reshape its empty logits; wave and standard give NaN
        assert torch.isnan(model(empty, empty)[1])


def test_parameters_matched_to_wave_within_two_percent():
    from bench.common.checkpoint import build_model
    from bench.quality.methods import PEER_OPS as QUALITY_PEERS, resolve_methods
    from bench.quality.presets import PRESETS

    for name in ("tiny", "cpu-small", "paper-char"):
        m = resolve_methods(("wave", *QUALITY_PEERS), PRESETS[name], vocab_size=300)
        for method in QUALITY_PEERS:
            assert m[method]["kind"] == "peer"
            assert abs(m[method]["params"] - m["wave"]["params"]) <= 0.02 * m["wave"]["params"], (name, method)
            cfg = m[method]["config"]
            assert (cfg["d_model"], cfg["n_layers"], cfg["n_heads"]) == (PRESETS[name].d_model,
                                                                         PRESETS[name].n_layers,
                                                                         PRESETS[name].n_heads)
    with torch.device("meta"):
        assert sum(p.numel() for p in build_model("peer", cfg).parameters()) == m[method]["params"]
    with pytest.raises(ValueError, match="cannot match"):
        peer_matched_config(1000, 300, "hgrn", 64, 2, 2)
    assert peer_params(peer_matched_config(200_000, 300, "retnet", 64, 2, 2)) == pytest.approx(200_000, rel=0.02)


def test_a_peer_lm_trains_on_the_fixture(tmp_path, monkeypatch):
    """bench.quality end to end with peer-hgrn (torch formulation on CPU): the loss falls."""
    import csv

    from bench.common.cli import run_cli
    from bench.quality import cli as qcli
    from bench.quality.__main__ import main

    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    monkeypatch.setitem(qcli.PAIRING_METHODS, "paper", ("peer-hgrn",))
    out = tmp_path / "run"
    argv = ["--preset", "tiny", "--corpus", "fixture", "--pairing", "paper", "--d-model", "32", "--n-layers", "2",
            "--n-heads", "2", "--d-ff", "64", "--seq-len", "32", "--batch-size", "8", "--eval-batches", "2",
            "--lr", "3e-3", "--warmup-steps", "2", "--threads", "1", "--no-progress", "--steps", "30",
            "--eval-every", "10", "--log-every", "5", "--out", str(out)]
    try:
        assert run_cli(main, argv, prog="bench.quality") == 0
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])
    with (out / "curves.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["method"] == "peer-hgrn"]
    train = [float(r["loss"]) for r in rows if r["split"] == "train"]
    val = [float(r["loss"]) for r in rows if r["split"] == "val"]
    assert len(train) >= 5 and all(math.isfinite(x) for x in train + val)
    assert train[-1] < train[0] - 0.3 and val[-1] < val[0], (train, val)


# ---------------------------------------------------------------------------------------------
# the scaling benchmark's records


def _scaling_methods():
    from bench.scaling.registry import METHODS

    return {name: m for name, m in METHODS.items() if m.kind == "peer"}


def test_scaling_records():
    from bench.common.timings import KINDS

    ms = _scaling_methods()
    assert set(ms) == {"peer-hgrn", "peer-simple-gla", "peer-retnet", "peer-diag-ssm",
                       "peer-hgrn-fla", "peer-simple-gla-fla", "peer-retnet-fla"}
    for name, m in ms.items():
        assert m.kind == "peer" and m.kind in KINDS and not m.default
        if name.endswith("-fla"):
            assert "CUDA" in m.why_unavailable(CPU) and "fla" in m.description
        else:
            assert m.why_unavailable(CPU) is None and "torch reference formulation" in m.description


def test_scaling_records_pass_their_checks_on_cpu():
    """Build, cost and memory of every CPU method are covered in test_scaling; here the peers'
    correctness gates in float32 and bfloat16, and the backend they report."""
    from bench.scaling.grid import CellSpec

    for name, m in _scaling_methods().items():
        if m.why_unavailable(CPU):
            continue
        core = CellSpec("core", "fwd", 1, 2, 8, 32, CPU, torch.float32)
        built = m.build(core)
        built.fn()
        assert built.backend() == "torch-chunked"
        for level in m.levels:
            for pass_ in m.passes:
                spec = CellSpec(level, pass_, 1, 2, 8, 32, CPU, torch.float32, model_dim=16, model_layers=1)
                for dtype in (torch.float32, torch.bfloat16):
                    result = m.check(spec.at(dtype=dtype))
                    assert result.ok, (name, level, pass_, dtype, result.error)


def test_scaling_costs_by_hand():
    from bench.scaling import peers as sp

    # hgrn, B H d = 2, N = 64 (two chunks of 32): 2 * 64 * 11 + 2 * 2 * 3 * log2(2)
    assert sp.core_flops("hgrn", 1, 1, 64, 2, "fwd") == 2 * 64 * 11 + 2 * 2 * 3
    # decayed attention, N = 128 (two chunks of 64), d = 4: 128 (4*64*4 + 3*64 + 4*16 + 4*4 + 3) + 2*2*16
    assert sp.core_flops("retnet", 1, 1, 128, 4, "fwd") == 128 * (1024 + 192 + 64 + 16 + 3) + 64
    assert sp.core_flops("retnet", 1, 1, 128, 4, "fwdbwd") == 3 * sp.core_flops("retnet", 1, 1, 128, 4, "fwd")
    assert sp.core_bytes("simple-gla", 1, 2, 10, 4, 4, "fwd") == 4 * 80 * 4 + 2 * 10 * 4
    assert sp.mixer_matmul_params("simple-gla", 16, 2) == 5 * 256 + 32


def test_scaling_memory_estimates_cover_the_measured_peak():
    from bench.common.memory import measure_peak
    from bench.scaling.grid import CellSpec

    for name, m in _scaling_methods().items():
        if m.why_unavailable(CPU):
            continue
        for pass_ in ("fwd", "fwdbwd"):
            spec = CellSpec("core", pass_, 1, 4, 32, 200, CPU, torch.float32)
            built = m.build(spec)
            built.fn()
            peak = measure_peak(built.fn, CPU).peak_bytes
            assert m.memory(spec) >= peak, (name, pass_, peak, m.memory(spec))
