"""Result folders: results/runs/<YYYYmmdd-HHMMSS>_<git-sha>_<device>/, never overwritten."""
from __future__ import annotations

import time
from pathlib import Path

from bench.common.env import git_info

DEFAULT_ROOT = Path("results") / "runs"


def new_run_dir(device_tag: str, out: str | Path | None = None, root: str | Path = DEFAULT_ROOT, kind: str = "") -> Path:
    """Create and return a fresh run folder.

    `out` given: that folder is used; it must not already hold results (refuse to overwrite).
    Otherwise a new folder under `root` named by time, git sha and device; a numeric suffix is
    added if two runs start in the same second.
    """
    from bench.common.cli import UsageError

    if out is not None:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise UsageError(f"output folder {str(path)!r} already holds results; choose a new --out or use --resume {path}")
        path.mkdir(parents=True, exist_ok=True)
        return path
    sha = git_info()["sha_short"] or "nogit"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = f"{stamp}_{sha}_{device_tag}" + (f"_{kind}" if kind else "")
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    path = base / tag
    i = 1
    while path.exists():
        path = base / f"{tag}-{i}"
        i += 1
    path.mkdir(parents=True)
    return path
