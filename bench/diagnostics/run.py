"""Run every diagnostic on one WaveFieldLM and collect long-format rows (the single source).

Row columns: check, layer, head, quantity, value, threshold, verdict.
    layer: block index, "model" (whole model), or a configuration name (leak demonstrations);
    verdict: PASS / FAIL (model checks, they gate the exit code), INFO (measurements),
             EXPECTED-LEAK (a leak demonstration that shows its leak; showing none is a FAIL).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from bench.diagnostics import causality as cz
from bench.diagnostics.conservation import P_NORMS, check_conservation, full_grid_l1, layer_conv_operands
from bench.diagnostics.heads import coupling_stats, head_params, impulse_check
from wavefield_core.attention import WaveFieldAttention, wave_conv_bhdn
from wavefield_core.reference import reference_wave_layer

COLUMNS = ["check", "layer", "head", "quantity", "value", "threshold", "verdict"]
IMPULSE_TOL = 1e-5  # fp32 fast path vs float64 closed form
INSTRUMENT_TOL = 1e-5  # instrumented forward vs layer.forward, relative
# The per-token RMS measured in one block, in the order they flow through it (table columns, plot legend).
QUANTITIES = ("residual_in", "attn_input", "field_u", "field_conv", "field_mixed", "gate", "attn_out", "residual_out")


@dataclass
class DiagConfig:
    seq_len: int = 256
    seed: int = 0
    role_thresholds: tuple = (4.0, 32.0)
    conservation_tol: float = 1e-5
    probe_len: int = 2048
    model_probe_len: int = 1024
    leak_len: int = 128
    probe_dtype: torch.dtype = torch.float64
    leak_demos: bool = True


@dataclass
class Results:
    rows: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)  # plot data: kernels, couplings, energy curves
    timings: dict = field(default_factory=dict)

    def add(self, check, layer, head, quantity, value, threshold=None, verdict="INFO"):
        self.rows.append(dict(zip(COLUMNS, (check, layer, head, quantity, value, threshold, verdict))))

    def gate(self, check, layer, head, quantity, value, threshold):
        """A model check: PASS when value <= threshold, else FAIL."""
        self.add(check, layer, head, quantity, value, threshold, _pf(value <= threshold))

    @property
    def failed(self) -> bool:
        return any(r["verdict"] == "FAIL" for r in self.rows)

    @contextmanager
    def timed(self, key: str):
        t0 = time.perf_counter()
        yield
        self.timings[key] = time.perf_counter() - t0


def _pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def diagnose_heads(model, res: Results, cfg: DiagConfig) -> None:
    """Per-head parameters, reach, role; impulse response vs analytic kernel; coupling matrices."""
    n = max(cfg.seq_len, 64)
    res.arrays["kernels"], res.arrays["couplings"] = {}, {}
    thr = f"{cfg.role_thresholds[0]:g},{cfg.role_thresholds[1]:g}"
    for i, layer in enumerate(model.attention_layers):
        params = head_params(layer, cfg.role_thresholds)
        imp = impulse_check(layer, n)
        for p in params:
            h = p["head"]
            for q in ("omega", "alpha", "phase", "damping_raw", "reach_cells", "reach_tokens"):
                res.add("heads", i, h, q, p[q])
            res.add("heads", i, h, f"role:{p['role']}", p["reach_tokens"], thr)
            res.gate("impulse", i, h, "max_abs_diff", float(imp["max_abs_diff"][h]), IMPULSE_TOL)
        res.arrays["kernels"][i] = {"params": params, "layer": layer, **imp}  # imp: measured and analytic
        cs = coupling_stats(layer)
        res.arrays["couplings"][i] = cs["matrix"]
        for q in ("frobenius_from_identity", "mean_offdiag_mass", "min_diag", "max_diag"):
            res.add("coupling", i, "", q, cs[q])
        for (h, g), v in np.ndenumerate(cs["matrix"]):
            res.add("coupling", i, h, f"P[{h},{g}]", float(v))


def attention_intermediates(layer: WaveFieldAttention, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """WaveFieldAttention.forward re-done from the layer's own submodules on x (B, N, D), so that a drift of
    this copy from the model code fails the instrumentation check: u, conv (B, H, d, N); mixed, gate, out."""
    B, N, D = x.shape
    H, d = layer.n_heads, layer.head_dim
    _q, k, v = layer.qkv(x).split(D, dim=-1)  # q unused, as in V3.5
    k = k.view(B, N, H, d)
    u = (v.view(B, N, H, d) * torch.linalg.vector_norm(k, dim=-1, keepdim=True)).permute(0, 2, 3, 1).contiguous()
    conv = wave_conv_bhdn(u, layer.frequency, layer.damping, layer.phase, layer.field_stride, layer.path,
                          layer.norm_cells)
    mix = torch.softmax(layer.coupling.float(), dim=-1).to(conv.dtype)  # (H, H)
    mixed = torch.einsum("hg,bgdn->bnhd", mix, conv).reshape(B, N, D)
    gate = torch.sigmoid(layer.gate(x))
    return {"u": u, "conv": conv, "mixed": mixed, "gate": gate, "out": layer.out(mixed * gate)}


def energy_flow(model, idx: torch.Tensor) -> dict:
    """Run `model` on idx (B, N): {"per_token": {layer: {quantity: RMS over D, or (H, d) of a field, (B, N)}},
    "fields": {layer: (u, conv)}, "instrumentation_max_rel_diff"}. The residual stream after block i is what
    enters the next (or ln_f), so it includes the field-interference module that follows every 3rd block."""
    blocks = list(model.blocks)
    res_in, attn_in, attn_out = {}, {}, {}  # per block: its input, its attention's input and output

    def keep(store, i, pre=True):  # a hook that stores the module's input (pre) or output
        def hook(_mod, args, out=None):
            store[i] = (args[0] if pre else out).detach()
        return hook

    handles = [m.register_forward_pre_hook(keep(res_in, i)) for i, m in enumerate([*blocks, model.ln_f])]
    for i, blk in enumerate(blocks):
        handles += [blk.attn.register_forward_pre_hook(keep(attn_in, i)),
                    blk.attn.register_forward_hook(keep(attn_out, i, pre=False))]
    try:
        with torch.no_grad():
            model(idx)
    finally:
        for h in handles:
            h.remove()
    per_token, fields, diffs = {}, {}, []
    for i, blk in enumerate(blocks):
        with torch.no_grad():
            inter = attention_intermediates(blk.attn, attn_in[i])
        ref = attn_out[i]
        diffs.append(((inter["out"] - ref).norm() / ref.norm().clamp_min(1e-30)).item())
        acts = (res_in[i], attn_in[i], inter["u"], inter["conv"], inter["mixed"], inter["gate"], ref, res_in[i + 1])
        per_token[i] = {q: a.detach().double().pow(2).mean(dim=(1, 2) if a.dim() == 4 else -1).sqrt()
                        for q, a in zip(QUANTITIES, acts)}
        fields[i] = (inter["u"], inter["conv"])
    # nan_max: a NaN output matches nothing, and Python's max would drop it (max(0.0, nan) is 0.0)
    return {"per_token": per_token, "fields": fields, "instrumentation_max_rel_diff": cz.nan_max(diffs)}


def diagnose_energy_and_conservation(model, idx: torch.Tensor, res: Results, cfg: DiagConfig) -> None:
    """Energy flow through the model on idx, then Young's bound per head on the real deposits."""
    flow = energy_flow(model, idx)
    res.gate("instrumentation", "model", "", "max_rel_diff_vs_forward", flow["instrumentation_max_rel_diff"],
             INSTRUMENT_TOL)
    res.arrays["energy"] = {}
    for i, per in flow["per_token"].items():
        res.arrays["energy"][i] = {q: v.cpu().numpy() for q, v in per.items()}
        for q in QUANTITIES:
            res.add("energy", i, "", f"{q}:mean_rms", per[q].mean().item())
            res.add("energy", i, "", f"{q}:max_rms", per[q].max().item())
        u, conv = (t.double() for t in flow["fields"][i])
        res.add("energy", i, "", "field_conv/field_u:l2_ratio", (conv.norm() / u.norm().clamp_min(1e-30)).item())
    bound = 1 + cfg.conservation_tol
    for i, layer in enumerate(model.attention_layers):
        cr = check_conservation(*layer_conv_operands(layer, flow["fields"][i][0]), tol=cfg.conservation_tol)
        full = full_grid_l1(layer)
        for h in range(cr.ratios.shape[0]):
            for j, p in enumerate(P_NORMS):
                res.gate("conservation", i, h, f"ratio_p{p}", float(cr.ratios[h, j]), bound)
            res.gate("conservation", i, h, "sum_abs_k_used", float(cr.l1[h]), bound)
            res.gate("conservation", i, h, "sum_abs_k_all_lags", float(full[h]), bound)


def _add_probe(res: Results, check: str, layer, probe: cz.ProbeResult, n: int, gate: bool) -> None:
    """Rows for one probe (gate: a model check, PASS/FAIL per position; else INFO)."""
    for r in probe.rows:
        verdict = _pf(r["score"] <= probe.tol) if gate else "INFO"
        res.add(check, layer, "", f"{probe.kind}:score@{r['pos']}", r["score"], probe.tol, verdict)
        res.add(check, layer, "", f"{probe.kind}:abs@{r['pos']}", r["leak_abs"])
    res.add(check, layer, "", f"{probe.kind}:N", n)


def diagnose_causality(model, res: Results, cfg: DiagConfig, device: torch.device) -> None:
    """Per-layer and full-model probes at long N; the reference on clean and leaking configurations."""
    dt = cfg.probe_dtype
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 17)
    n = cfg.probe_len
    with res.timed("causality_layers_s"):
        for i, layer in enumerate(model.attention_layers):
            lay = cz.as_probe_copy(layer, dt)
            x = torch.randn(1, n, layer.d_model, generator=gen, dtype=torch.float64).to(device=device, dtype=dt)
            # Cost: one forward per perturbed t, about two per gradient row. Each layer gets the first and
            # last token plus a seeded interior t (different per layer), so the run covers many positions.
            t_mid, i_mid = (int(v) for v in torch.randint(2, max(3, n - 2), (2,), generator=gen))
            positions, out_positions = cz.inside((1, t_mid, n - 1), 1, n), cz.inside((i_mid, n - 2), 0, n - 1)
            for probe in cz.probe_causality(lay, x, positions, out_positions, seed=cfg.seed + i):
                _add_probe(res, "causality", i, probe, n, True)
    n = cfg.model_probe_len
    with res.timed("causality_model_s"):
        mdl = cz.as_probe_copy(model, dt)
        idx = torch.randint(0, mdl.embed.num_embeddings, (1, n), generator=gen).to(device)
        fn, e0 = cz.embedding_operator(mdl, idx)
        positions = cz.inside((1, n // 2 + 1, n - 1), 1, n)
        probes = cz.probe_causality(fn, e0, positions, cz.inside((n // 3, n - 2), 0, n - 1), seed=cfg.seed)
        for probe in probes + [cz.token_id_probe(mdl, idx, positions=[max(1, n // 3 + 1)])]:
            _add_probe(res, "causality", "model", probe, n, True)
    if cfg.leak_demos:
        with res.timed("leak_demos_s"):
            leak_demos(model.attention_layers[0], res, cfg, gen)


def leak_demos(layer: WaveFieldAttention, res: Results, cfg: DiagConfig, gen: torch.Generator) -> None:
    """The float64 reference (no guard) with layer 0's weights at its own stride (must be clean) and at each leaking
    configuration (must leak, else the probe is broken); and the fast layer must refuse the leaking strides."""
    lay = cz.as_probe_copy(layer, torch.float64).cpu()
    n = cfg.leak_len
    clamp_len = max(2, (3 * n) // 4)  # V3.5 field sized for L < N tokens
    configs = [(f"stride {layer.field_stride:g} (clean)", {"field_stride": layer.field_stride}, False)]
    configs += [(name, ov, True) for name, ov in cz.leak_configs(clamp_len)]
    for name, ov, leaky in configs:
        x = torch.randn(1, n, lay.d_model, generator=gen, dtype=torch.float64)
        probes = cz.probe_causality(partial(reference_wave_layer, lay, **ov), x, seed=cfg.seed)
        check = "leak_demo" if leaky else "causality_reference"
        for probe in probes:
            _add_probe(res, check, name, probe, n, not leaky)
        score, tol = cz.nan_max(p.max_score for p in probes), probes[0].tol
        res.add(check, name, "", "max_score", score, tol,
                ("EXPECTED-LEAK" if score > tol else "FAIL") if leaky else _pf(score <= tol))
        res.add(check, name, "", "max_abs", max(p.max_abs for p in probes))
        if leaky and "clamp" not in name:
            try:
                WaveFieldAttention(lay.d_model, lay.n_heads, field_stride=ov["field_stride"])
                refused = False
            except ValueError:
                refused = True
            res.add("stride_guard", name, "", "refused_by_fast_layer", float(refused), 1.0, _pf(refused))


def run_diagnostics(model, idx: torch.Tensor, cfg: DiagConfig, device: torch.device) -> Results:
    """All sections on `model` (eval mode). idx: (B, N) token batch for energy/conservation."""
    model.eval()
    res = Results()
    with res.timed("heads_s"):
        diagnose_heads(model, res, cfg)
    with res.timed("energy_conservation_s"):
        diagnose_energy_and_conservation(model, idx, res, cfg)
    diagnose_causality(model, res, cfg, device)
    return res
