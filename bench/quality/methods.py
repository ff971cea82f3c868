"""The compared methods as data: name -> how its model is built from a preset (docs/quality.md).

  wave              WaveFieldLM (V3.5) at the preset's D, layers, heads and d_ff
  wave-scaled-pos   the same with its sinusoidal positions x 0.02, the token embedding's init scale (an ablation)
  standard          StandardLM at the same sizes: the paper's pairing (learned positions)
  standard-matched  StandardLM whose d_ff is solved so its parameter count is within 2% of wave's
  peer-<op>         PeerLM (baselines/peer_model.py) around a sub-quadratic mixer, d_ff matched the same way
                    (fla-core kernels on CUDA where they import, the PyTorch formulation elsewhere)
"""
from __future__ import annotations

from bench.common.cli import UsageError
from bench.quality.presets import Preset

SCALED_POS = 0.02  # wave-scaled-pos: the std of the token embedding's N(0, 0.02) init


def wave_config(p: Preset, vocab_size: int, pos_scale: float = 1.0) -> dict:
    cfg = dict(vocab_size=vocab_size, d_model=p.d_model, n_layers=p.n_layers, n_heads=p.n_heads, d_ff=p.d_ff,
               field_stride=p.field_stride, mode=p.wave_mode, dropout=p.dropout)
    return cfg if pos_scale == 1.0 else {**cfg, "pos_scale": pos_scale}


def standard_config(p: Preset, vocab_size: int, d_ff: int | None = None) -> dict:
    return dict(vocab_size=vocab_size, d_model=p.d_model, n_layers=p.n_layers, n_heads=p.n_heads,
                d_ff=p.d_ff if d_ff is None else d_ff, max_seq_len=p.seq_len, dropout=p.dropout, attn_impl="sdpa")


def _matched_standard(p: Preset, vocab_size: int, wave_params: int) -> dict:
    from baselines import param_matched_config

    matched = param_matched_config(wave_params, vocab_size, p.d_model, p.n_layers, p.n_heads, p.seq_len,
                                   dropout=p.dropout, attn_impl="sdpa")
    return standard_config(p, vocab_size, d_ff=matched.d_ff)


def _peer(op: str):
    def config(p: Preset, vocab_size: int, wave_params: int) -> dict:
        from baselines.peer_model import peer_matched_config

        return peer_matched_config(wave_params, vocab_size, op, p.d_model, p.n_layers, p.n_heads, dropout=p.dropout,
                                   field_stride=p.field_stride, impl="auto").to_kwargs()
    return config


# name -> (bench.common.checkpoint kind, config(preset, vocab_size, wave's parameter count))
METHODS = {
    "wave": ("wave", lambda p, vocab, _: wave_config(p, vocab)),
    "wave-scaled-pos": ("wave", lambda p, vocab, _: wave_config(p, vocab, SCALED_POS)),
    "standard": ("standard", lambda p, vocab, _: standard_config(p, vocab)),
    "standard-matched": ("standard", _matched_standard),
    **{f"peer-{op}": ("peer", _peer(op)) for op in ("hgrn", "simple-gla", "retnet", "diag-ssm")},
}
PEER_OPS = {name: name.removeprefix("peer-") for name in METHODS if name.startswith("peer-")}


def resolve_methods(names, p: Preset, vocab_size: int) -> dict[str, dict]:
    """{method: {"kind", "config", "params"}} for `names`, in their order."""
    import torch

    from baselines import count_params
    from bench.common.checkpoint import build_model

    def params(kind: str, cfg: dict) -> int:
        with torch.device("meta"):  # sizes only: no memory, no RNG use
            return count_params(build_model(kind, cfg))

    try:
        wave_params = params("wave", wave_config(p, vocab_size))
    except ValueError as exc:  # e.g. a leaking field stride
        raise UsageError(f"wave model: {exc}") from None
    out: dict[str, dict] = {}
    for name in names:
        if name not in METHODS:
            raise UsageError(f"unknown method {name!r} (choose from: {', '.join(METHODS)})")
        kind, config = METHODS[name]
        try:
            cfg = config(p, vocab_size, wave_params)
        except ValueError as exc:
            raise UsageError(f"{name}: {exc}") from None
        out[name] = {"kind": kind, "config": cfg, "params": params(kind, cfg)}
    return out
