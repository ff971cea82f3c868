"""Shared helpers of the fault tests: run a CLI as a user would (a subprocess from the repository
root), or its `python -m` entry point in this process (no torch import to pay for), and check that a
refusal is one line with exit 2."""
from __future__ import annotations

import csv
import io
import os
import runpy
import shutil
import signal
import subprocess
import sys
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Iterator

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


# what a Python process does not print unless asked (its default warning filters)
SILENT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def bench_in(module: str, *args, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """bench(), but in this process, from `cwd`: the module runs as `python -m bench.<module>` runs it (its
    `__main__` block, so the entry point's own error handling), with its exit code, stdout, and stderr with
    the warnings a process would print there as lines of their own. The working folder, argv, environment
    and torch settings (threads, deterministic mode) it changes are put back."""
    import torch

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved = (os.getcwd(), dict(os.environ), torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), sys.argv)
    try:
        with warnings.catch_warnings(record=True) as caught, redirect_stdout(out), redirect_stderr(err):
            warnings.simplefilter("always")
            for category in SILENT:
                warnings.filterwarnings("ignore", category=category)
            # runpy's note that the module was imported before (by a test); `python -m` has no such history
            warnings.filterwarnings("ignore", "'bench.* found in sys.modules", RuntimeWarning)
            os.chdir(cwd)
            sys.argv = [f"bench.{module}", *argv]
            try:
                runpy.run_module(f"bench.{module}", run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        sys.argv = saved[5]
        os.chdir(saved[0])
        for key in set(os.environ) - set(saved[1]):
            del os.environ[key]
        os.environ.update(saved[1])
        torch.set_num_threads(saved[2])
        torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])
    printed = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, "") for w in caught)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue() + printed)


@contextmanager
def held_elsewhere(*folders: Path) -> Iterator[int]:
    """The folders locked by another process, as a run in progress holds them; yields its pid."""
    code = ("import sys\nfrom bench.common.files import claim_run_dir\nfor f in sys.argv[1:]:\n"
            "    claim_run_dir(f, resume=True)\nprint('held', flush=True)\nsys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, folders)], cwd=REPO, env=ENV, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == "held\n", "the holding process could not lock the folders"
        yield proc.pid
    finally:
        proc.stdin.close()  # it ends, and its exit unlocks and removes the locks
        code = proc.wait(timeout=60)
    assert code == 0, code


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
