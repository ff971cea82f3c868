"""CPU allocator setting shared by every timing harness: glibc keeps freed memory, as a caching allocator
would, so a call does not page-fault its big buffers in afresh (why, and what it changed: docs/regression.md).
Peak memory comes from torch's own allocation events, so it is not affected."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def retain_freed_memory() -> str:
    """Ask glibc to keep freed memory; returns what it does now: "glibc-retain", or "default" (off Linux/glibc)."""
    if not sys.platform.startswith("linux"):
        return "default"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # mallopt params: M_MMAP_MAX = -4 (0: never mmap), M_TRIM_THRESHOLD = -1, M_TOP_PAD = -2
        done = [libc.mallopt(-4, 0), libc.mallopt(-1, 2**31 - 1), libc.mallopt(-2, 64 << 20)]
    except (OSError, AttributeError):
        return "default"
    return "glibc-retain" if all(done) else "default"
