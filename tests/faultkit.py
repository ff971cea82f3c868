"""Shared helpers of the fault tests: run a CLI as a user would (a subprocess from the repository
root) and check that a refusal is one line with exit 2."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

SCALING = ["--quick", "--levels", "core", "--passes", "fwd", "--methods", "wave", "--seq-lens", "64,128",
           "--no-floor", "--no-progress"]
QUALITY = ["--preset", "tiny", "--corpus", "fixture", "--pairing", "paper", "--d-model", "32", "--n-layers", "1",
           "--n-heads", "2", "--d-ff", "32", "--seq-len", "16", "--batch-size", "4", "--eval-batches", "1",
           "--test-batches", "1", "--steps", "4", "--eval-every", "2", "--threads", "1", "--no-progress"]
DIAG = ["--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--seq-len", "16", "--batch-size", "1",
        "--probe-len", "32", "--model-probe-len", "16", "--leak-len", "16", "--no-leak-demos", "--device", "cpu",
        "--threads", "1"]
BASE_ARGS = {"scaling": SCALING, "quality": QUALITY, "diagnostics": DIAG}


def bench(module: str, *args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"bench.{module}", *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _default_sigint() -> None:
    # A test run started in the background (`cmd &`, nohup) has SIGINT ignored, and a child would
    # inherit that and never see the Ctrl-C the tests send: give it the default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(module: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"bench.{module}", *map(str, args)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one line on stderr naming the fault, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def cut(path: Path, keep_of_last_line: int = 12) -> str:
    """Cut the file inside its last line, as a crash mid-write would; returns the complete part."""
    data = path.read_text()
    body = data[: data.rstrip("\n").rfind("\n") + 1]
    path.write_text(body + data[len(body): len(body) + keep_of_last_line])
    return body


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy(src: Path, tmp_path: Path, name: str = "run") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


SLOW = pytest.mark.slow
