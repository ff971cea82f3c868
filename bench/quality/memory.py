"""Peak memory of one training job, and how it was measured.

CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats at the job's start
      (tensor memory only; the caching allocator's reserve is larger).
CPU:  peak resident set size of the process (VmHWM from /proc/self/status), reset at the job's
      start by writing 5 to /proc/self/clear_refs (Linux). Where that reset is refused the value
      is the process high-water mark since start (earlier jobs included); where /proc is missing,
      the largest RSS psutil saw at the sampling points. The method string says which.
"""
from __future__ import annotations

from pathlib import Path

import psutil
import torch


class PeakMemory:
    def __init__(self, device: torch.device):
        self.device = device
        self.method = ""
        self._sampled = 0

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
        self._sampled = 0
        self.sample()

    def sample(self) -> None:
        if self.device.type != "cuda":
            self._sampled = max(self._sampled, psutil.Process().memory_info().rss)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        self.sample()
        hwm = _vm_hwm_bytes()
        return max(hwm or 0, self._sampled) / 2**20


def _vm_hwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None
