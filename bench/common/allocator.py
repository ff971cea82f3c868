"""CPU allocator setting shared by every timing harness: glibc keeps freed memory, as a caching allocator
would, so a call does not page-fault its big buffers in afresh (why, and what it changed: docs/regression.md).
Peak memory comes from torch's own allocation events, so it is not affected; release_freed_memory() hands the kept
memory back after a failure."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _glibc():
    """The C library when it is glibc (it has mallopt and malloc_trim), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None  # musl has neither


@functools.cache
def retain_freed_memory() -> str:
    """Ask glibc to keep freed memory; returns what it does now: "glibc-retain", or "default" (off Linux/glibc)."""
    libc = _glibc()
    if libc is None:
        return "default"
    # mallopt params: M_MMAP_MAX = -4 (0: never mmap), M_TRIM_THRESHOLD = -1, M_TOP_PAD = -2
    done = [libc.mallopt(-4, 0), libc.mallopt(-1, 2**31 - 1), libc.mallopt(-2, 64 << 20)]
    return "glibc-retain" if all(done) else "default"


def release_freed_memory() -> None:
    """Hand what glibc keeps back to the system (malloc_trim), the CPU counterpart of emptying CUDA's cache. Only
    after a failure (an OOM): between lengths it lowered the peak but made the next length's first timed calls
    page-fault (docs/method.md, "The budget predictor")."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
