"""One checkpoint format: bench.quality writes it, bench.diagnostics reads it. A torch.save'd dict {"format": FORMAT,
"kind": one of KINDS, "config": constructor kwargs, "state_dict": weights, "meta": free-form (tokenizer path, step,
metrics), "train_state": optional optimizer, scheduler, batcher and RNG state for --resume}, written atomically;
anything unreadable or inconsistent is a UsageError naming the file and what is wrong."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from bench.common.cli import UsageError, squash
from bench.common.files import replacing

FORMAT = "wavefield-bench/1"
# kind -> (module, class) of its model; imported on demand, so that reading a checkpoint needs only its own kind
MODELS = {"wave": ("wavefield_core", "WaveFieldLM"), "standard": ("baselines", "StandardLM"),
          "peer": ("baselines.peer_model", "PeerLM")}
KINDS = tuple(MODELS)


def build_model(kind: str, config: dict[str, Any]) -> torch.nn.Module:
    """Construct a model of `kind` from its constructor kwargs."""
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; valid choices: {', '.join(KINDS)}")
    module, name = MODELS[kind]
    return getattr(importlib.import_module(module), name)(**config)


def save_checkpoint(path: str | Path, kind: str, config: dict[str, Any], model: torch.nn.Module,
                    meta: dict[str, Any] | None = None, train_state: dict[str, Any] | None = None) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        torch.save({"format": FORMAT, "kind": kind, "config": dict(config), "state_dict": model.state_dict(),
                    "meta": meta or {}, "train_state": train_state}, tmp)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, its format, kind, config and weights checked. Raises UsageError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - cut, corrupt or not a torch file: torch raises many kinds
        raise UsageError(f"cannot read checkpoint {str(path)!r} (cut or not a torch file: "
                         f"{type(exc).__name__}: {squash(exc)[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UsageError(f"{str(path)!r} is not a {FORMAT} checkpoint (written by bench.quality)")
    if ckpt.get("kind") not in KINDS:
        raise UsageError(f"checkpoint {str(path)!r} holds an unknown model kind {ckpt.get('kind')!r}; "
                         f"valid kinds: {', '.join(KINDS)}")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UsageError(f"checkpoint {str(path)!r} lacks its model config or weights")
    return ckpt


def load_weights(model: torch.nn.Module, ckpt: dict[str, Any], path: str | Path) -> None:
    """Load ckpt's weights into `model` (a meta-device model: only check they fit); weights that do
    not fit the model built from the config are a UsageError naming the first misfit."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(getattr(v, "shape", ("?",))) for k, v in ckpt["state_dict"].items()}
    if want != got:
        key = (sorted(set(want) ^ set(got)) or [k for k in want if want[k] != got[k]])[0]
        raise UsageError(f"checkpoint {str(path)!r}: its weights do not fit its model config ({key}: "
                         f"{got.get(key, 'missing')} in the file, {want.get(key, 'missing')} in the model)")
    if not any(t.is_meta for t in model.state_dict().values()):
        model.load_state_dict(ckpt["state_dict"])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Return (model with weights loaded, the whole checkpoint dict). Raises UsageError on a bad file."""
    ckpt = read_checkpoint(path, map_location)
    try:
        model = build_model(ckpt["kind"], ckpt["config"])
    except (TypeError, ValueError) as exc:
        raise UsageError(f"checkpoint {str(path)!r}: its model config does not build ({exc})") from None
    load_weights(model, ckpt, path)
    return model, ckpt
