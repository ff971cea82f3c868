"""bench.diagnostics: known answers for reach/roles, impulse vs analytic kernel, the conservation
bound, causality probes (clean and deliberately leaking operators); the CLI is in test_diagnostics_cli.py."""
import math
from functools import partial

import pandas as pd
import pytest
import torch

from bench.diagnostics import causality as cz
from bench.diagnostics.conservation import check_conservation, full_grid_l1, layer_conv_operands
from bench.diagnostics.heads import (analytic_token_response, coupling_stats, head_params, impulse_check,
                                     role_of)
from wavefield_core import WaveFieldAttention, WaveFieldLM
from wavefield_core.reference import reference_wave_layer


def inv_softplus(a: float) -> float:
    return math.log(math.expm1(a))


def hand_set_layer(stride=4.0, reaches_cells=(20.0, 8.0, 400.0)) -> WaveFieldAttention:
    """A layer whose heads have known alpha = ln(10) / reach_cells."""
    torch.manual_seed(0)
    layer = WaveFieldAttention(24, len(reaches_cells), field_stride=stride)
    with torch.no_grad():
        for h, r in enumerate(reaches_cells):
            layer.damping[h] = inv_softplus(math.log(10.0) / r)
    return layer


# ---------------------------------------------------------------- heads

def test_reach_and_role_known_answer():
    layer = hand_set_layer(stride=4.0, reaches_cells=(20.0, 8.0, 400.0))
    rows = head_params(layer, thresholds=(4.0, 32.0))
    # damping is a float32 parameter: known answers hold to float32 precision
    assert [r["reach_cells"] for r in rows] == pytest.approx([20.0, 8.0, 400.0], rel=1e-5)
    assert [r["reach_tokens"] for r in rows] == pytest.approx([5.0, 2.0, 100.0], rel=1e-5)
    assert [r["role"] for r in rows] == ["medium", "local", "long-range"]
    assert rows[0]["alpha"] == pytest.approx(math.log(10) / 20, rel=1e-6)
    # other thresholds: the rule follows the flag
    assert [r["role"] for r in head_params(layer, thresholds=(1.0, 3.0))] == ["long-range", "medium", "long-range"]
    assert [role_of(r, (4, 32)) for r in (3.999, 4.0, 31.99, 32.0)] == ["local", "medium", "medium", "long-range"]


@pytest.mark.parametrize("stride", [1.0, 4.0, 2.5], ids=["s1-token", "s4-token", "s2.5-field"])
def test_measured_impulse_equals_analytic_kernel(stride):
    layer = hand_set_layer(stride=stride, reaches_cells=(20.0, 8.0, 400.0))
    imp = impulse_check(layer, 300)
    print(f"stride {stride}: max |measured - analytic| per head {imp['max_abs_diff']}")
    assert imp["max_abs_diff"].max() < 1e-6
    assert abs(imp["analytic"][:, 0]).max() > 1e-3  # a real signal, not two zero arrays
    if stride == int(stride):  # token path: also equals the layer's own kernel
        assert torch.allclose(torch.from_numpy(analytic_token_response(layer, 300)).float(), layer.kernel(300).detach(),
                              atol=1e-6)


def test_coupling_stats_identity_and_init():
    layer = hand_set_layer()
    with torch.no_grad():
        layer.coupling.copy_(100.0 * torch.eye(3))
    cs = coupling_stats(layer)
    assert cs["frobenius_from_identity"] < 1e-10 and cs["mean_offdiag_mass"] < 1e-10
    with torch.no_grad():
        layer.coupling.copy_(torch.eye(3))  # V3.5 init without noise: diagonal only e / (e + H - 1)
    assert coupling_stats(layer)["min_diag"] == pytest.approx(math.e / (math.e + 2))


# ---------------------------------------------------------------- conservation

def test_conservation_fails_on_unnormalised_kernel():
    torch.manual_seed(0)
    n = 256
    t = torch.arange(n, dtype=torch.float32)
    k = torch.exp(-0.1 * t)
    k = (k / k.sum()).expand(2, n).contiguous()  # L1 = 1 (up to the cut tail), positive
    x = torch.rand(1, 2, 3, n) + 0.5  # positive signals: Young's bound nearly attained for p = inf
    ok = check_conservation(x, k)
    print("normalised: max ratio", ok.max_ratio, "sum|k|", ok.max_l1)
    assert ok.passed and ok.max_ratio > 0.5  # tight but holds
    bad = check_conservation(x, 3.0 * k)
    print("3x kernel: max ratio", bad.max_ratio, "sum|k|", bad.max_l1)
    assert not bad.passed and bad.max_ratio > 1.5


@pytest.mark.parametrize("stride, mode", [(4.0, "auto"), (4.0, "scan"), (4.0, "triton"), (2.5, "auto")],
                         ids=["s4-token", "s4-scan", "s4-triton", "s2.5-field"])
def test_conservation_passes_on_real_kernels_and_fails_when_scaled(stride, mode):
    layer = hand_set_layer(stride=stride)
    u = torch.randn(2, 3, 8, 200)  # (B, H, d, N) deposits
    layer.mode = mode
    x, kernel = layer_conv_operands(layer, u)
    from wavefield_core.triton_scan import triton_available

    runs_here = layer.path != "triton" or triton_available(u.device) is None  # triton: in its interpreter only
    if layer.path != "field" and runs_here:  # the operands are what the path convolves: its output is their
        from wavefield_core import wave_conv  # causal convolution
        from wavefield_core.fftconv import causal_conv_direct

        with torch.no_grad():
            y = wave_conv(u, layer.frequency, layer.damping, layer.phase, stride, layer.path, layer.norm_cells,
                          layout="bhdn")
        want = causal_conv_direct(x.transpose(-1, -2).double(), kernel.double()).transpose(-1, -2)
        assert torch.allclose(y.double(), want, rtol=1e-4, atol=1e-5), (y.double() - want).abs().max()
    res = check_conservation(x, kernel)
    print(f"s={stride}: ratios {res.ratios.max(0)} sum|k| {res.l1}")
    assert res.passed, (res.ratios, res.l1)
    assert (full_grid_l1(layer) <= 1 + 1e-12).all()
    if stride == 2.5:  # field path: the kernel at every cell lag has sum|k| = 1, so 3x gives 3
        assert not check_conservation(x, 3.0 * kernel).passed
    # token path: sampling every s cells leaves sum|k| < 1, so 3x may still satisfy Young's bound
    # (correctly); scale to sum|k| = 3 exactly to make the kernel unnormalised for either path
    bad = check_conservation(x, 3.0 * kernel / kernel[:, : x.shape[-1]].abs().sum(-1, keepdim=True))
    assert not bad.passed and bad.max_l1 == pytest.approx(3.0, rel=1e-5)


# ---------------------------------------------------------------- causality

def future_copy(x):
    """A deliberately leaking operator: adds half of the NEXT token's input to every position."""
    nxt = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
    return torch.tanh(x) + 0.5 * nxt


def test_probe_flags_leaking_operator():
    x = torch.randn(2, 100, 8, dtype=torch.float64)
    pert, grad = cz.probe_causality(future_copy, x)
    print("future copy:", pert.max_score, grad.max_score)
    assert not pert.causal and not grad.causal
    assert pert.max_score > 0.1 and grad.max_score > 0.1
    # the same probe on a causal operator (running mean) is clean
    clean = cz.probe_causality(lambda z: torch.cumsum(z, 1) / torch.arange(1, 101, dtype=z.dtype)[:, None], x)
    assert all(p.causal for p in clean)


def test_probe_does_not_pass_nan_outputs():
    """An operator whose outputs are NaN shows nothing about causality: leak and response are NaN,
    and NaN / NaN scored 0 (causal) before; a NaN anywhere now makes the score NaN, which fails."""
    x = torch.randn(1, 20, 4, dtype=torch.float64)
    probes = cz.probe_causality(lambda e: e * float("nan"), x)
    assert all(not p.causal and math.isnan(p.max_score) for p in probes)
    res = cz.ProbeResult("perturbation", 1e-9)
    res.add(1, float("nan"), 1.0)
    res.add(2, 0.0, 1.0)  # Python's max(nan, 0.0) is nan, but max(0.0, nan) is 0.0
    assert not res.causal
    unmoved = cz.ProbeResult("perturbation-ids", 1e-9)
    unmoved.add(1, 0.0, 0.0)  # the perturbation changed nothing (a vocabulary of 1): 0 / 0 scored 0, a PASS
    assert not unmoved.causal


def test_nan_deposits_fail_instrumentation_and_conservation():
    """One value channel NaN (a NaN weight): the instrumentation check passed (max(0.0, nan) is 0.0), the
    conservation ratio of the NaN channel counted as a zero channel's 0, and the verdict line showed the
    largest finite value under FAIL. Both checks now fail, and their lines say 'max nan'."""
    from bench.diagnostics import report, run

    torch.manual_seed(0)
    model = WaveFieldLM(256, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight[40, 0] = float("nan")  # a v row: head 1, channel 0
    cfg = run.DiagConfig(seq_len=16, probe_len=8, model_probe_len=8, leak_len=8)
    res = run.run_diagnostics(model, torch.randint(0, 256, (1, 16)), cfg, torch.device("cpu"))
    verdicts = {(r["check"], r["head"], r["quantity"]): r["verdict"] for r in res.rows}
    assert verdicts[("instrumentation", "", "max_rel_diff_vs_forward")] == "FAIL"
    assert verdicts[("conservation", 1, "ratio_p2")] == "FAIL"
    lines = report.verdict_lines(pd.DataFrame(res.rows, columns=run.COLUMNS))
    assert [ln for ln in lines if "instrumented" in ln or "(Young)" in ln] == [
        "FAIL instrumented attention forward == layer.forward, relative diff: max nan (threshold 1.00e-05)",
        "FAIL conservation (Young) ||k*x||_p/||x||_p on real deposits, p=1,2,inf: max nan (threshold 1.00001)"]
    # a leak demonstration on NaN outputs: not 'NO leak shown (score nan <= 1e-09) ... the probe is broken'
    assert "FAIL stride 1.29: leak score nan, the reference's outputs are not finite" in lines


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # numpy on the NaN damping
def test_kernel_plot_of_a_nan_damping_head(tmp_path):
    """A head with NaN damping (a diverged checkpoint) has NaN reach: the kernel plot crashed converting
    its span to an int (ValueError traceback after the CSV was written); it now plots the shortest span."""
    from bench.diagnostics import plots

    layer = hand_set_layer()
    with torch.no_grad():
        layer.damping[0] = float("nan")
    kern = {"params": head_params(layer, (4.0, 32.0)), "layer": layer, **impulse_check(layer, 64)}
    plots.plot_kernels(kern, tmp_path / "kernels.png", 0, "footer")
    assert (tmp_path / "kernels.png").is_file()


def test_leak_demos_show_every_leak_from_the_shortest_allowed_length():
    """--leak-len takes at least 3: at N = 2 the s = 1.29 and clamping demos cannot leak, and the run
    failed as 'NO leak shown, the probe is broken'. From N = 3 every demonstration shows its leak."""
    from bench.diagnostics import run
    from bench.diagnostics.__main__ import leak_len

    layer = WaveFieldAttention(16, 2, field_stride=4.0)
    for n in (leak_len("3"), 4, 5):
        res = run.Results()
        run.leak_demos(layer, res, run.DiagConfig(leak_len=n), torch.Generator().manual_seed(0))
        assert not res.failed, n


def test_leak_demo_reference_of_a_nan_layer_fails():
    from bench.diagnostics import run

    res = run.Results()
    layer = WaveFieldAttention(16, 2, field_stride=4.0)
    with torch.no_grad():
        layer.out.weight[0, 0] = float("nan")
    run.leak_demos(layer, res, run.DiagConfig(leak_len=16), torch.Generator().manual_seed(0))
    verdicts = {r["layer"]: r["verdict"] for r in res.rows if r["quantity"] == "max_score"}
    assert verdicts["stride 4 (clean)"] == "FAIL"
    assert all(v == "FAIL" for k, v in verdicts.items() if k != "stride 4 (clean)")  # no leak shown either


def test_probe_passes_wavefield_attention_long_n():
    torch.manual_seed(0)
    layer = cz.as_probe_copy(WaveFieldAttention(32, 4, field_stride=4.0), torch.float64)
    x = torch.randn(1, 1500, 32, dtype=torch.float64)
    probes = cz.probe_causality(layer, x)
    print([(p.kind, p.max_score, p.max_ref) for p in probes])
    assert all(p.causal and p.max_ref > 0 for p in probes)


@pytest.mark.parametrize("vocab", [50, 2])  # vocabulary 2: the token-id probe put back the same token, scored 0/0
def test_probe_passes_wavefield_lm(vocab):
    torch.manual_seed(0)
    model = cz.as_probe_copy(WaveFieldLM(vocab, d_model=32, n_layers=3, n_heads=4, d_ff=64), torch.float64)
    idx = torch.randint(0, vocab, (1, 300))
    fn, e0 = cz.embedding_operator(model, idx)
    probes = cz.probe_causality(fn, e0) + [cz.token_id_probe(model, idx)]
    print([(p.kind, p.max_score) for p in probes])
    assert all(p.causal and p.max_ref > 0 for p in probes)


def test_leak_demo_stride_0125_and_clamp_show_leaks():
    torch.manual_seed(0)
    layer = cz.as_probe_copy(WaveFieldAttention(32, 4, field_stride=4.0), torch.float64)
    x = torch.randn(1, 64, 32, dtype=torch.float64)
    leak = cz.perturbation_probe(partial(reference_wave_layer, layer, field_stride=0.125), x)
    clean = cz.perturbation_probe(partial(reference_wave_layer, layer, field_stride=4.0), x)
    clamp = cz.perturbation_probe(partial(reference_wave_layer, layer, **cz.v35_clamp_config(1024, 48)), x)
    print("s=0.125:", leak.max_score, "clean:", clean.max_score, "clamp:", clamp.max_score)
    assert leak.max_score > 0.1 and not leak.causal
    assert clean.causal
    assert not clamp.causal
    assert all(r["score"] == 0 for r in clamp.rows if r["pos"] < 47)  # the clamp leak needs t beyond L - 1


def test_leak_demo_without_leak_fails_the_run(monkeypatch):
    """If a 'leaking' configuration shows no leak, the probe is broken: verdict FAIL."""
    from bench.diagnostics import run

    monkeypatch.setattr(cz, "leak_configs", lambda *a: [("not really leaking", {"field_stride": 2.0})])
    res = run.Results()
    layer = WaveFieldAttention(16, 2, field_stride=4.0)
    run.leak_demos(layer, res, run.DiagConfig(leak_len=32), torch.Generator().manual_seed(0))
    verdicts = {r["layer"]: r["verdict"] for r in res.rows if r["quantity"] == "max_score"}
    assert verdicts == {"stride 4 (clean)": "PASS", "not really leaking": "FAIL"}


def test_summary_names_the_recorded_settings_not_todays_defaults(tmp_path):
    """A summary regenerated later read the run's settings from its command line with the flags' defaults of
    the day: a changed default would have described an old run wrongly. Recorded settings win."""
    import json
    import shutil
    from pathlib import Path

    from bench.diagnostics.__main__ import SUMMARY_SETTINGS, run_settings, write_summary

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).resolve().parents[1] / "results/runs/20261128-181359_439b33ae_cpu_diagnostics", run)
    env = json.loads((run / "env.json").read_text())
    from_argv = run_settings(env)  # a run from before settings were recorded: its command line, read today
    assert set(from_argv) == set(SUMMARY_SETTINGS)
    recorded = {**from_argv, "probe_len": 777, "leak_len": 99, "role_thresholds": [3.0, 50.0]}
    (run / "env.json").write_text(json.dumps({**env, "settings": recorded}))
    write_summary(run)
    text = (run / "summary.md").read_text()
    assert "per layer N=777" in text and "leak demos N=99" in text and "reach_tokens < 3," in text
    assert run_settings({**env, "settings": {"probe_len": 777}}) == from_argv  # incomplete: the command line
