"""Peak memory of one call (docs/method.md, "Memory protocol") or a long job (JobPeak); whether a size can fit."""
from __future__ import annotations

import functools
import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import psutil
import torch

from bench.common.allocator import release_freed_memory
from bench.common.cli import UsageError
from bench.common.env import nvml, nvml_handle

# kineto's "profiler_start/stop" lines on stderr at every profile() would tear the progress bar; a user's value is kept
os.environ.setdefault("KINETO_LOG_LEVEL", "99")

CUDA_METHOD = "cuda-max-allocated"
CPU_METHOD = "torch-profiler"

METHOD_NOTES = {
    CUDA_METHOD: "torch.cuda.max_memory_allocated() minus memory_allocated() before the call, after "
                 "empty_cache + reset_peak_memory_stats; reserved_mem_mb = max_memory_reserved()",
    CPU_METHOD: "torch profiler (profile_memory=True): high-water mark of the running sum of torch's "
                "CPU allocation/free events during one call; library-internal scratch outside torch's "
                "allocator (pocketfft work buffers) is not included",
}


@dataclass
class PeakMemory:
    peak_bytes: int
    reserved_bytes: int | None  # CUDA max_memory_reserved; None on CPU
    method: str
    device_used_bytes: int | None = None  # CUDA: NVML's used memory after the call; None elsewhere


def nvml_used_bytes(device: torch.device) -> int | None:
    """The device's used memory according to NVML (what nvidia-smi shows), or None without NVML."""
    nv = nvml()
    if nv is None:
        return None
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(nv.nvmlDeviceGetMemoryInfo(nvml_handle(nv, index)).used)
    except Exception:  # noqa: BLE001 - pynvml.NVMLError, lookups that differ between drivers
        return None


def memory_method(device: torch.device) -> str:
    return CUDA_METHOD if device.type == "cuda" else CPU_METHOD


def free_memory(device: torch.device) -> None:
    """Release what can be released after a failure (OOM): garbage, then the CUDA cache or the memory glibc keeps."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    else:
        release_freed_memory()


def high_water(deltas: list[int]) -> int:
    """Largest running sum of signed byte deltas, starting from 0 (never below 0)."""
    return int(np.cumsum(deltas, dtype=np.int64).max(initial=0))


def _cuda_peak(fn: Callable[[], object], device: torch.device) -> PeakMemory:
    free_memory(device)
    torch.cuda.reset_peak_memory_stats(device)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    used = nvml_used_bytes(device)
    del out  # after NVML's reading: the output counts as used memory
    return PeakMemory(max(0, int(peak)), int(torch.cuda.max_memory_reserved(device)), CUDA_METHOD, used)


def _memory_events(prof) -> list[tuple[int, int]]:
    """(time_ns, signed bytes) of every CPU allocation/free event the profiler saw, in time order."""
    try:
        events = [(int(e.start_ns()), int(e.nbytes())) for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    except (AttributeError, RuntimeError):  # a torch without kineto event access
        events = [(int(e.time_range.start * 1e3), int(e.cpu_memory_usage)) for e in prof.events()
                  if e.name == "[memory]"]
    return sorted(events, key=lambda t: t[0])


def _cpu_peak(fn: Callable[[], object]) -> PeakMemory:
    from torch.profiler import ProfilerActivity, profile

    # no gc.collect(): refcounting freed the previous cell's tensors; a full collection costs ~0.1 s on a small CPU
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        out = fn()
        del out  # freeing the output inside the window keeps the event stream balanced
    return PeakMemory(high_water([b for _, b in _memory_events(prof)]), None, CPU_METHOD)


@functools.cache
def prepare_profiler() -> None:
    """Pay the profiler's one-time start-up (about 2 s on a small CPU) outside any measured cell."""
    _cpu_peak(lambda: None)


def measure_peak(fn: Callable[[], object], device: torch.device) -> PeakMemory:
    """Peak bytes that one call of fn allocates above what was alive before it."""
    if device.type == "cuda":
        return _cuda_peak(fn, device)
    return _cpu_peak(fn)


class JobPeak:
    """Peak memory of a training run (a profiler around every step would cost too much). CUDA: max_memory_allocated
    since reset(). CPU: peak resident set (VmHWM), reset by writing 5 to /proc/self/clear_refs, else since the process
    started; without /proc, the largest RSS seen at sample(). `method` says which."""

    def __init__(self, device: torch.device):
        self.device, self.method, self._rss = device, "", 0

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda-max-memory-allocated"
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "cpu-peak-rss (VmHWM, reset per job)"
        except OSError:
            self.method = ("cpu-peak-rss (VmHWM since process start)" if Path("/proc/self/status").exists()
                           else "cpu-rss (psutil, max of samples)")
        self._rss = 0
        self.sample()

    def sample(self) -> None:
        if self.device.type != "cuda":
            self._rss = max(self._rss, psutil.Process().memory_info().rss)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        self.sample()
        try:
            hwm = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                       if line.startswith("VmHWM:"))  # kB
        except (OSError, ValueError, IndexError, StopIteration):
            hwm = 0
        return max(hwm, self._rss) / 2**20


def available_bytes(device: torch.device) -> int:
    """Memory a new allocation can get: free GPU memory, or the RAM psutil calls available."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available)


def check_fits(need: float, device: torch.device, what: str, hint: str) -> None:
    """UsageError (one line) when `need` bytes exceed what the device has free now."""
    def gib(n: float) -> str:
        if n < 2**40:
            return f"{n / 2**30:,.1f} GiB"
        return f"{n / 2**40:,.1f} TiB" if n < 2**60 else f"{n / 2**40:.2g} TiB"  # 2**20 TiB and up: 1.2e+290 TiB
    have = available_bytes(device)
    if need > have:
        raise UsageError(f"{what} needs at least {gib(need)} but {device.type} has {gib(have)} available; {hint}")


def lm_bytes(params: int, batch: int, seq_len: int, d_model: int, n_layers: int, d_ff: int, vocab: int,
             field_cells: int = 0, train: bool = False, elem: int = 4) -> float:
    """A lower bound on the peak bytes of a language model over one (batch, seq_len) input: the weights (plus
    gradient and AdamW state when training), the activations kept per layer (the wave field of `field_cells`
    cells per channel included) and the logits. Meant to refuse sizes that cannot fit: real peaks are higher."""
    tokens = batch * seq_len
    per_layer = tokens * (4 * d_model + d_ff) + batch * d_model * field_cells
    layers = n_layers if train else 1  # inference keeps one layer's activations alive at a time
    logits = tokens * vocab * (3 if train else 1)
    return (4 if train else 1) * params * elem + (layers * per_layer + logits) * elem
