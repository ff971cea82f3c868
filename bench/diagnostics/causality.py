"""Causality probes: does any output depend on a later input? On any fn: (B, N, D_in) -> (B, N, D_out):
- perturbation: replace input token t by a fresh random vector of the same scale; the largest change at
  positions < t (the leak) against the largest at positions >= t (the response: the perturbation did act);
- gradient: backprop a random direction from output i; the largest input gradient after i against the
  largest at or before i.
The leak score, leak / response, is scale-free: a causal operator scores at rounding level (1e-16 in
float64, 1e-7 in float32), the leaking configurations of docs/mechanism.md, "Causality", 1e-3 .. 1.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch


def leak_tol(dtype: torch.dtype) -> float:
    """The leak score above which an operator computed in `dtype` is not causal."""
    return 1e-9 if dtype == torch.float64 else 1e-4


def inside(ts, lo: int, hi: int) -> list[int]:
    return sorted({t for t in ts if lo <= t < hi})


def nan_max(values) -> float:
    """The largest value (0 for none), NaN if any is NaN: Python's max skips a NaN or not by its position."""
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else max(values, default=0.0)


@dataclass
class ProbeResult:
    """Per-position numbers of one probe and the verdict."""
    kind: str  # "perturbation" | "gradient" | "perturbation-ids"
    tol: float
    rows: list = field(default_factory=list)  # dicts: pos, leak_abs, ref_abs, score

    max_score = property(lambda self: nan_max(r["score"] for r in self.rows))
    max_abs = property(lambda self: nan_max(r["leak_abs"] for r in self.rows))
    max_ref = property(lambda self: nan_max(r["ref_abs"] for r in self.rows))
    causal = property(lambda self: self.max_score <= self.tol)

    def add(self, pos: int, leak: float, ref: float) -> None:
        # A NaN output, or a perturbation that changed no output at all (0 / 0), proves nothing either way: its
        # score is NaN (not measured), which fails every threshold.
        if math.isnan(leak) or math.isnan(ref) or leak == ref == 0:
            score = math.nan
        else:
            score = leak / ref if ref > 0 else (math.inf if leak > 0 else 0.0)
        self.rows.append({"pos": pos, "leak_abs": leak, "ref_abs": ref, "score": score})


def _perturbations(res: ProbeResult, base: torch.Tensor, changed: Callable, positions) -> ProbeResult:
    """Compare changed(t) with base (B, N, ...) before t (the leak) and from t on (the response).
    Default positions: near the start, odd interior points, the last token."""
    n = base.shape[1]
    for t in inside((1, n // 7, n // 3, n // 2 + 1, n - 1), 1, n) if positions is None else positions:
        change = (changed(t) - base).abs()  # (B, N, ...)
        res.add(t, change[:, :t].max().item() if t > 0 else 0.0, change[:, t:].max().item())
    return res


@torch.no_grad()
def perturbation_probe(fn: Callable, x: torch.Tensor, positions=None, seed: int = 0) -> ProbeResult:
    """The perturbation probe of fn on x (B, N, D_in) at each t in `positions`."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    scale = x.std().clamp_min(1e-12)

    def changed(t: int) -> torch.Tensor:
        x2 = x.clone()
        x2[:, t] = torch.randn(x[:, t].shape, generator=gen, dtype=torch.float64).to(x) * scale
        return fn(x2)

    return _perturbations(ProbeResult("perturbation", leak_tol(x.dtype)), fn(x), changed, positions)


def gradient_probe(fn: Callable, x: torch.Tensor, out_positions=None, seed: int = 0) -> ProbeResult:
    """The gradient probe of fn on x (B, N, D_in) from each output position i in `out_positions`
    (default: a spread with i < N-1, so a future exists), backpropagating <w, fn(x)[:, i]>, w random."""
    n = x.shape[1]
    if out_positions is None:
        out_positions = inside((0, n // 5, n // 2, n - 2), 0, n - 1)
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    res = ProbeResult("gradient", leak_tol(x.dtype))
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = fn(xg)  # (B, N, ...)
        for i in out_positions:
            w = torch.randn(y[:, i].shape, generator=gen, dtype=torch.float64).to(y)
            (g,) = torch.autograd.grad((y[:, i] * w).sum(), xg, retain_graph=True)
            g = g.abs()
            res.add(i, g[:, i + 1:].max().item() if i + 1 < n else 0.0, g[:, : i + 1].max().item())
    return res


def probe_causality(fn: Callable, x: torch.Tensor, positions=None, out_positions=None,
                    seed: int = 0) -> list[ProbeResult]:
    """[perturbation, gradient] probes of fn: (B, N, D) -> (B, N, D)."""
    return [perturbation_probe(fn, x, positions, seed), gradient_probe(fn, x, out_positions, seed)]


def embedding_operator(model, idx: torch.Tensor) -> tuple[Callable, torch.Tensor]:
    """(fn, e0): WaveFieldLM as a function of its token embeddings, fn(e (B, N, D)) -> logits (B, N, V)
    with model.embed's output replaced by e (all else unchanged), and e0 = model.embed(idx)."""
    with torch.no_grad():
        e0 = model.embed(idx)

    def fn(e: torch.Tensor) -> torch.Tensor:
        handle = model.embed.register_forward_hook(lambda _m, _a, _o: e)
        try:
            return model(idx)[0]
        finally:
            handle.remove()

    return fn, e0


@torch.no_grad()
def token_id_probe(model, idx: torch.Tensor, positions=None) -> ProbeResult:
    """Perturbation probe on input ids: change idx[:, t] to the token half the vocabulary away (another one
    whenever vocab >= 2), compare logits before t."""
    vocab = model.embed.num_embeddings

    def changed(t: int) -> torch.Tensor:
        idx2 = idx.clone()
        idx2[:, t] = (idx2[:, t] + vocab // 2) % vocab
        return model(idx2)[0]

    res = ProbeResult("perturbation-ids", leak_tol(model.embed.weight.dtype))
    return _perturbations(res, model(idx)[0], changed, positions)


def as_probe_copy(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    return copy.deepcopy(module).to(dtype).eval()


def v35_clamp_config(field_cells: int = 1024, max_len: int = 256) -> dict:
    """V3.5's fixed field: G cells sized for `max_len` tokens, s = (G - 1) / (L - 1), clamp to G - 2."""
    return {"field_stride": (field_cells - 1) / (max_len - 1), "field_size": field_cells, "clamp": True}


def leak_configs(max_len: int, field_cells: int = 1024) -> list[tuple[str, dict]]:
    """The leaking configurations of docs/mechanism.md, "Causality" (name, reference_wave_layer overrides)."""
    clamp = v35_clamp_config(field_cells, max_len)
    return [(f"stride {s}", {"field_stride": s}) for s in (1.29, 0.996, 0.125)] + [
        (f"clamp G={field_cells} L={max_len} s={clamp['field_stride']:.4g}", clamp)]
