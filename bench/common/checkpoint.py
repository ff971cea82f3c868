"""One checkpoint format for every harness: bench.quality writes it, bench.diagnostics reads it.

A checkpoint is a torch.save'd dict:
    {"format": "wavefield-bench/1", "kind": "wave" | "standard" | "peer", "config": {constructor kwargs},
     "state_dict": model weights, "meta": {free-form: tokenizer path, step, metrics, ...},
     "train_state": optional optimizer/scheduler/batcher/RNG state for --resume}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

FORMAT = "wavefield-bench/1"
KINDS = ("wave", "standard", "peer")


def build_model(kind: str, config: dict[str, Any]) -> torch.nn.Module:
    """Construct a model of `kind` from its constructor kwargs."""
    if kind == "wave":
        from wavefield_core import WaveFieldLM

        return WaveFieldLM(**config)
    if kind == "standard":
        from baselines import StandardLM

        return StandardLM(**config)
    if kind == "peer":
        from baselines.peer_model import PeerLM

        return PeerLM(**config)
    raise ValueError(f"unknown model kind {kind!r}; valid choices: {', '.join(KINDS)}")


def save_checkpoint(path: str | Path, kind: str, config: dict[str, Any], model: torch.nn.Module,
                    meta: dict[str, Any] | None = None, train_state: dict[str, Any] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "kind": kind, "config": dict(config), "state_dict": model.state_dict(),
                "meta": meta or {}, "train_state": train_state}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Return (model with weights loaded, the whole checkpoint dict). Raises UsageError on a bad file."""
    from bench.common.cli import UsageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # corrupt or not a torch file
        raise UsageError(f"cannot read checkpoint {str(path)!r}: {type(exc).__name__}: {exc}")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UsageError(f"{str(path)!r} is not a {FORMAT} checkpoint (written by bench.quality)")
    model = build_model(ckpt["kind"], ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt
