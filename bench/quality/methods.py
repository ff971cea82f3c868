"""The compared methods as data: name -> how to build its model from a preset.

  wave              WaveFieldLM (V3.5) at the preset's D, layers, heads, d_ff
  standard          StandardLM at the same sizes: the paper's pairing (about 1M fewer parameters at
                    the published sizes, learned positions instead of sinusoidal)
  standard-matched  StandardLM whose d_ff is solved so its parameter count is within 2% of wave's
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
    Method("standard", "standard", "StandardLM, the paper's baseline (same d_ff)"),
    Method("standard-matched", "standard", "StandardLM with d_ff matched to wave's parameter count (within 2%)"),
]}


def wave_config(p: Preset, vocab_size: int) -> dict:
    return dict(vocab_size=vocab_size, d_model=p.d_model, n_layers=p.n_layers, n_heads=p.n_heads, d_ff=p.d_ff,
                field_stride=p.field_stride, mode="auto", dropout=p.dropout)


def standard_config(p: Preset, vocab_size: int, d_ff: int | None = None) -> dict:
    return dict(vocab_size=vocab_size, d_model=p.d_model, n_layers=p.n_layers, n_heads=p.n_heads,
                d_ff=p.d_ff if d_ff is None else d_ff, max_seq_len=p.seq_len, dropout=p.dropout, attn_impl="sdpa")


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
        elif name == "standard":
            cfg = standard_config(p, vocab_size)
        elif name == "standard-matched":
            try:
                mcfg = param_matched_config(wave_params, vocab_size, p.d_model, p.n_layers, p.n_heads, p.seq_len,
                                            dropout=p.dropout, attn_impl="sdpa")
            except ValueError as exc:
                raise UsageError(f"standard-matched: {exc}") from None
            cfg = standard_config(p, vocab_size, d_ff=mcfg.d_ff)
        else:
            raise UsageError(f"unknown method {name!r} (choose from: {', '.join(METHODS)})")
        kind = METHODS[name].kind
        with torch.device("meta"):
            params = count_params(build_model(kind, cfg))
        out[name] = {"kind": kind, "config": cfg, "params": params}
    return out
