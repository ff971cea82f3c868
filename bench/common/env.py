"""env.json: everything needed to say which machine and software produced a result."""
from __future__ import annotations

import functools
import os
import platform
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import torch


REPO_ROOT = Path(__file__).resolve().parents[2]


def git_info() -> dict[str, Any]:
    """Commit sha (full and short) and whether the work tree has uncommitted changes."""
    def _git(*args: str) -> str:
        try:
            proc = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
            return proc.stdout.strip() if proc.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            return ""
    sha = _git("rev-parse", "--verify", "-q", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if sha else None
    return {"sha": sha or None, "sha_short": sha[:8] if sha else None, "dirty": dirty}


@functools.cache
def nvml():
    """pynvml, initialised once for the whole process, or None where there is no NVIDIA driver or pynvml."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # noqa: BLE001 - ImportError, pynvml.NVMLError
        return None


def nvml_handle(nv, index: int):
    """NVML's handle of torch's CUDA device `index`: by UUID, since NVML numbers the machine's devices and
    CUDA_VISIBLE_DEVICES renumbers the ones this process sees; by index where the UUID lookup fails."""
    try:
        return nv.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(index).uuid}")
    except nv.NVMLError:
        return nv.nvmlDeviceGetHandleByIndex(index)


def gpu_info() -> list[dict[str, Any]]:
    """The GPUs this process sees (not every GPU of the machine): name, driver and memory from NVML, as nvidia-smi
    shows them; else torch's view."""
    indices = range(torch.cuda.device_count())  # none without CUDA
    nv = nvml()
    if nv is not None:
        try:
            driver = nv.nvmlSystemGetDriverVersion()
            handles = [nvml_handle(nv, i) for i in indices]
            return [{"index": i, "name": nv.nvmlDeviceGetName(h), "driver": driver, "source": "nvml",
                     "memory_total_mb": round(nv.nvmlDeviceGetMemoryInfo(h).total / 2**20, 1)}
                    for i, h in enumerate(handles)]
        except Exception:  # noqa: BLE001 - pynvml.NVMLError: torch's view below
            pass
    props = map(torch.cuda.get_device_properties, indices)
    return [{"index": i, "name": p.name, "memory_total_mb": round(p.total_memory / 2**20, 1), "source": "torch"}
            for i, p in enumerate(props)]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def collect_env(argv: list[str] | None = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """A dict for env.json. `extra` adds harness-specific facts (memory method, budgets, ...)."""
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": list(sys.argv if argv is None else argv),
        "seed": seed, "git": git_info(), "python": sys.version.split()[0], "platform": platform.platform(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(), "gpus": gpu_info(), "cpu_model": cpu_model(),
        "cpu_cores_logical": psutil.cpu_count(logical=True), "cpu_cores_physical": psutil.cpu_count(logical=False),
        "torch_threads": torch.get_num_threads(), "ram_total_gb": round(psutil.virtual_memory().total / 2**30, 2),
        "hostname": platform.node(),
        "env_vars": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
                     if k in os.environ},
        **extra,
    }


def env_get(env: dict[str, Any], *names: str, default: Any = None) -> Any:
    """The first present, non-empty key among `names`, at the top level or one dict below."""
    for scope in [env] + [v for v in env.values() if isinstance(v, dict)]:
        for name in names:
            if scope.get(name) not in (None, "", [], {}):
                return scope[name]
    return default


def device_tag(device: torch.device) -> str:
    """Short name for folder names: 'cpu' or a slug of the GPU name."""
    if device.type != "cuda":
        return "cpu"
    return "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name(device).lower()).strip("-")


def command_line(env: dict[str, Any]) -> str:
    """The exact command line: env['command'] when the harness stored one, else argv joined."""
    if isinstance(env.get("command"), str) and env["command"].strip():
        return env["command"].strip()
    argv = env.get("argv")
    if isinstance(argv, list) and argv:
        # a harness that stores its program name ("python -m bench.x") as argv[0] keeps it unquoted
        head = str(argv[0]) if str(argv[0]).startswith("python") else shlex.quote(str(argv[0]))
        return " ".join([head, *(shlex.quote(str(a)) for a in argv[1:])])
    return str(argv) if argv else "unknown"


def machine(env: dict[str, Any]) -> str:
    """A run's hardware in one phrase: its GPUs (name, driver, memory) if it ran on one, else CPU, cores, threads."""
    gpus = [g for g in (env.get("gpus") or []) if isinstance(g, dict)]
    if gpus and not str(env.get("device") or "").startswith("cpu"):
        labels = Counter(f"{g.get('name', '?')} (driver {g.get('driver', '?')}"
                         + (f", {float(g['memory_total_mb']) / 1024:.0f} GiB" if g.get("memory_total_mb") else "") + ")"
                         for g in gpus)
        return "; ".join(f"{n} x {label}" if n > 1 else label for label, n in labels.items())
    if not env:
        return "unknown (no env.json)"
    threads = env.get("torch_threads", "?")
    return (f"{env.get('cpu_model', 'unknown CPU')}, {env.get('cpu_cores_logical', '?')} logical cores, "
            f"{threads} torch thread{'' if threads == 1 else 's'}")
