"""CPU allocator setting shared by every timing harness.

glibc hands large freed blocks back to the OS, so each call of a big operator page-faults its
buffers in again. On these machines that was up to half the time of a call (wave-field and naive
softmax at N=2048) and varied 2x between runs. Asking glibc to keep freed memory (as a caching
allocator would) makes CPU timings both faster and repeatable, for every method alike. Peak memory
is measured from torch's own allocation events, so it is not affected.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_STATE = {"mode": None}


def retain_freed_memory() -> str:
    """Ask glibc to keep freed memory for reuse; returns what the allocator does now
    ("glibc-retain" or "default"). Idempotent; a no-op off Linux/glibc."""
    if _STATE["mode"] is not None:
        return _STATE["mode"]
    mode = "default"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            # mallopt params: M_MMAP_MAX = -4 (0: never mmap), M_TRIM_THRESHOLD = -1, M_TOP_PAD = -2
            done = [libc.mallopt(-4, 0), libc.mallopt(-1, 2**31 - 1), libc.mallopt(-2, 64 << 20)]
            mode = "glibc-retain" if all(done) else "default"
        except (OSError, AttributeError):
            mode = "default"
    _STATE["mode"] = mode
    return mode
