"""The compared methods as data: name -> how to build its model from a preset.

  wave              WaveFieldLM (V3.5) at the preset's D, layers, heads, d_ff
  wave-scaled-pos   WaveFieldLM with its sinusoidal positions scaled by 0.02, the scale of its token
                    embedding (V3.5 adds unit-amplitude positions to an N(0, 0.02) embedding, so at
                    initialisation the input is 50x more position than token): an initialisation ablation
  standard          StandardLM at the same sizes: the paper's pairing (about 1M fewer parameters at
                    the published sizes, learned positions instead of sinusoidal)
  standard-matched  StandardLM whose d_ff is solved so its parameter count is within 2% of wave's
  peer-<op>         PeerLM (baselines/peer_model.py) around a sub-quadratic peer mixer: hgrn,
                    simple-gla, retnet, diag-ssm; same width, depth, heads and GELU FFN as wave,
                    d_ff solved like standard-matched so the parameter count is within 2% of wave's.
                    The mixer runs fla-core's fused kernels on CUDA where they import, and the
                    chunked PyTorch formulation elsewhere (always on CPU; diag-ssm everywhere).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.common.cli import UsageError
from bench.quality.presets import Preset


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # bench.common.checkpoint kind
    description: str


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("wave", "wave", "WaveFieldLM (V3.5 wave field attention)"),
    Method("wave-scaled-pos", "wave", "WaveFieldLM with sinusoidal positions x 0.02, the token embedding's init "
                                      "scale (initialisation ablation)"),
    Method("standard", "standard", "StandardLM, the paper's baseline (same d_ff)"),
    Method("standard-matched", "standard", "StandardLM with d_ff matched to wave's parameter count (within 2%)"),
    Method("peer-hgrn", "peer", "PeerLM with an HGRN-style gated linear recurrence, d_ff matched to wave's "
                                "parameters (fla-core kernel on CUDA; torch reference formulation on CPU)"),
    Method("peer-simple-gla", "peer", "PeerLM with simple-GLA decayed linear attention (data-dependent scalar "
                                      "decay per head), d_ff matched to wave's parameters (fla-core kernel on "
                                      "CUDA; torch reference formulation on CPU)"),
    Method("peer-retnet", "peer", "PeerLM with RetNet retention (fixed per-head decay), d_ff matched to wave's "
                                  "parameters (fla-core kernel on CUDA; torch reference formulation on CPU)"),
    Method("peer-diag-ssm", "peer", "PeerLM with a diagonal SSM, one complex pole per head (wave without ||k||, "
                                    "head coupling and interference), d_ff matched to wave's parameters (torch "
                                    "chunked recurrence everywhere)"),
]}
PEER_OPS = {"peer-hgrn": "hgrn", "peer-simple-gla": "simple-gla", "peer-retnet": "retnet", "peer-diag-ssm": "diag-ssm"}


SCALED_POS = 0.02  # wave-scaled-pos: the std of the token embedding's N(0, 0.02) init


def wave_config(p: Preset, vocab_size: int, pos_scale: float = 1.0) -> dict:
    cfg = dict(vocab_size=vocab_size, d_model=p.d_model, n_layers=p.n_layers, n_heads=p.n_heads, d_ff=p.d_ff,
               field_stride=p.field_stride, mode=p.wave_mode, dropout=p.dropout)
    return cfg if pos_scale == 1.0 else {**cfg, "pos_scale": pos_scale}


def standard_config(p: Preset, vocab_size: int, d_ff: int | None = None) -> dict:
    return dict(vocab_size=vocab_size, d_model=p.d_model, n_layers=p.n_layers, n_heads=p.n_heads,
                d_ff=p.d_ff if d_ff is None else d_ff, max_seq_len=p.seq_len, dropout=p.dropout, attn_impl="sdpa")


def peer_config(p: Preset, vocab_size: int, op: str, target_params: int) -> dict:
    """PeerLM kwargs at the preset's D, layers, heads, with d_ff matched to target_params (within 2%)."""
    from baselines.peer_model import peer_matched_config

    cfg = peer_matched_config(target_params, vocab_size, op, p.d_model, p.n_layers, p.n_heads, dropout=p.dropout,
                              field_stride=p.field_stride, impl="auto")
    return cfg.to_kwargs()


def resolve_methods(names, p: Preset, vocab_size: int) -> dict[str, dict]:
    """{method: {"kind", "config", "params"}} for the methods of a pairing (wave always first)."""
    from baselines import count_params, param_matched_config
    from bench.common.checkpoint import build_model

    out: dict[str, dict] = {}
    with torch.device("meta"):  # sizes only: no memory, no RNG use
        try:
            wave_params = count_params(build_model("wave", wave_config(p, vocab_size)))
        except ValueError as exc:  # e.g. a leaking field stride
            raise UsageError(f"wave model: {exc}") from None
    for name in names:
        if name == "wave":
            cfg = wave_config(p, vocab_size)
        elif name == "wave-scaled-pos":
            cfg = wave_config(p, vocab_size, SCALED_POS)
        elif name == "standard":
            cfg = standard_config(p, vocab_size)
        elif name == "standard-matched":
            try:
                mcfg = param_matched_config(wave_params, vocab_size, p.d_model, p.n_layers, p.n_heads, p.seq_len,
                                            dropout=p.dropout, attn_impl="sdpa")
            except ValueError as exc:
                raise UsageError(f"standard-matched: {exc}") from None
            cfg = standard_config(p, vocab_size, d_ff=mcfg.d_ff)
        elif name in PEER_OPS:
            try:
                cfg = peer_config(p, vocab_size, PEER_OPS[name], wave_params)
            except ValueError as exc:
                raise UsageError(f"{name}: {exc}") from None
        else:
            raise UsageError(f"unknown method {name!r} (choose from: {', '.join(METHODS)})")
        kind = METHODS[name].kind
        with torch.device("meta"):
            params = count_params(build_model(kind, cfg))
        out[name] = {"kind": kind, "config": cfg, "params": params}
    return out
