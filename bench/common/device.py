"""Device and dtype resolution with user-facing errors."""
from __future__ import annotations

import re

import torch

from bench.common.cli import UsageError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu. 'cuda' without a GPU is a UsageError."""
    if name not in DEVICES and not re.fullmatch(r"cuda:(0|[1-9][0-9]*)", name):  # what torch.device accepts
        raise UsageError(f"unknown device {name!r}; valid choices: {', '.join(DEVICES)} (or cuda:N)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but no CUDA GPU is available here; valid choices: cpu, auto")
    dev = torch.device(name)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def rank_device(name: str, local_rank: int | None = None) -> torch.device:
    """resolve_device, then pinned to one GPU: cuda:LOCAL_RANK under torchrun (local_rank given), the
    current GPU for a bare 'cuda', so DDP, RNG and memory calls all name the same device."""
    device = resolve_device(name)
    if device.type == "cuda":
        index = local_rank if local_rank is not None else device.index
        device = torch.device("cuda", torch.cuda.current_device() if index is None else index)
        torch.cuda.set_device(device)
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Map a dtype name to torch, refusing one the device cannot run."""
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; valid choices: {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UsageError("bfloat16 is not supported by this GPU; valid choices here: float32, float16")
    if device.type == "cpu" and dtype == torch.float16:
        # CPU half matmuls and FFTs are either missing or emulated; timings would be meaningless.
        raise UsageError("float16 is not supported on cpu; valid choices on cpu: float32, bfloat16")
    return dtype
