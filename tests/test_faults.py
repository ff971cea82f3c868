"""Faults in the files the five CLIs read and write: an unusable output folder, a second writer, a cut
row / JSON / checkpoint, and a stop by SIGINT or SIGKILL followed by --resume (sizes and inf/nan flags:
test_faults_limits.py).

A refused command must exit 2 with one line on stderr (no traceback), create nothing, and leave
every row measured before it untouched. The output-folder faults (but bench.scaling's), the stopped runs
and the memory cap run each CLI as a user meets it (a subprocess from the repository root); the other
faults run its `python -m` entry point in this process (bench_in), against folders another
process holds where a lock is the fault.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faultkit import (BASE_ARGS, ENV, QUALITY, REPO, SCALING, SLOW, bench, bench_in, copy, cut, held_elsewhere, ok,
                      refused, rows, snapshot, start)


@pytest.fixture(scope="module")
def scaling_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scaling") / "run"
    ok(bench_in("scaling", *SCALING, "--out", out))
    return out


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory) -> Path:
    """Stopped mid-run: wave finished (one row in final.csv), standard holds a resume checkpoint."""
    out = tmp_path_factory.mktemp("quality") / "run"
    ok(bench_in("quality", *QUALITY, "--out", out, "--stop-after-steps", "2"))
    ok(bench_in("quality", "--resume", out, "--stop-after-steps", "2"))
    assert [r["method"] for r in rows(out / "final.csv")] == ["wave"]
    assert (out / "checkpoints" / "standard-seed0-last.pt").is_file()
    return out


# ---------------------------------------------------------------------------------------------
# output folders


@pytest.mark.parametrize("module,fault", [(module, fault) for module in ("scaling", "quality", "diagnostics")
                                          for fault in ("is-a-file", "under-a-file", "not-writable", "holds-results")])
def test_unusable_output_folder(module, fault, tmp_path):
    # quality and diagnostics refuse before torch is imported: their real command line, a subprocess each;
    # bench.scaling imports torch first: its entry point in process (its command line: test_scaling.py)
    run = bench_in if module == "scaling" else bench
    (tmp_path / "file").write_text("x\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "timings.csv").write_text("method\n")
    out, needle = {"is-a-file": (tmp_path / "file", "is a file"),
                   "under-a-file": (tmp_path / "file" / "run", "is a file"),
                   "not-writable": (Path("/proc/bench-fault-test/run"), "cannot write"),
                   "holds-results": (tmp_path / "full", "already holds results")}[fault]
    err = refused(run(module, *BASE_ARGS[module], "--out", out), needle)
    if module == "diagnostics":
        assert "--resume" not in err  # a flag it does not have
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]  # nothing created
    assert (tmp_path / "full" / "timings.csv").read_text() == "method\n"


def test_report_out_folder_faults(scaling_run, tmp_path):
    runs = tmp_path / "results" / "runs"
    shutil.copytree(scaling_run, runs / "s")
    (tmp_path / "results" / "dir.md").mkdir()
    refused(bench("report", runs / "s", "--out", tmp_path / "results" / "dir.md", "--no-plots"), "is a folder")
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["dir.md", "runs"]  # no dir.md.tmp
    refused(bench("report", "/proc/bench-fault-test/runs/s", "--out", "/proc/bench-fault-test/README.md"),
            "cannot write")


# ---------------------------------------------------------------------------------------------
# a second writer


@pytest.mark.parametrize("module", ["scaling", "quality", "diagnostics"])
def test_second_writer_is_refused(module, tmp_path):
    busy = tmp_path / "busy"
    with held_elsewhere(busy) as pid:
        refused(bench_in(module, *BASE_ARGS[module], "--out", busy), "in use by another run", f"pid {pid}")
        assert sorted(p.name for p in busy.iterdir()) == [".lock"]


def test_resume_and_report_wait_for_a_running_run(scaling_run, quality_run, tmp_path):
    s = tmp_path / "results" / "runs" / "s"
    shutil.copytree(scaling_run, s)
    q = copy(quality_run, tmp_path, "q")
    before = [snapshot(s), snapshot(q)]
    with held_elsewhere(s, q):
        refused(bench_in("scaling", "--resume", s), "in use by another run")
        refused(bench_in("quality", "--resume", q), "in use by another run")
        refused(bench_in("report", s, "--out", tmp_path / "results" / "README.md", "--no-plots"),
                "still being written")
    assert [snapshot(s), snapshot(q)] == before


@pytest.mark.slow
def test_two_sweeps_started_together(tmp_path):
    out = tmp_path / "run"
    procs = [start("scaling", *SCALING, "--out", out) for _ in range(2)]
    codes = sorted(p.wait(timeout=180) for p in procs)
    errs = [p.stderr.read() for p in procs]
    assert codes == [0, 2], errs
    assert all("Traceback" not in e for e in errs)
    keys = [(r["method"], r["seq_len"]) for r in rows(out / "timings.csv")]
    assert len(keys) == len(set(keys)) == 2
    assert len(json.loads((out / "env.json").read_text())["runs"]) == 1


# ---------------------------------------------------------------------------------------------
# cut files


def test_resume_drops_a_cut_timings_row_and_measures_it_again(scaling_run, tmp_path):
    run = copy(scaling_run, tmp_path)
    first = rows(run / "timings.csv")[0]
    cut(run / "timings.csv")
    proc = bench_in("scaling", "--resume", run)
    ok(proc)
    assert "line 3 is cut off" in proc.stderr
    got = rows(run / "timings.csv")
    assert got[0] == first  # measured before: untouched
    assert [(r["method"], r["seq_len"]) for r in got] == [("wave", "64"), ("wave", "128")]
    assert all(len(r) == len(first) and None not in r for r in got)


def test_resume_by_other_code_is_recorded_and_warned(scaling_run, tmp_path):
    """A resume recorded only its time and argv: rows measured by other code were credited to the first commit."""
    from bench.common.env import git_info

    run = copy(scaling_run, tmp_path)
    proc = bench_in("scaling", "--resume", run)
    ok(proc)
    assert "runs commit" not in proc.stderr
    env = json.loads((run / "env.json").read_text())
    assert env["resumes"][-1]["git"] == git_info()
    (run / "env.json").write_text(json.dumps({**env, "git": {**env["git"], "sha": "0123456789" * 4}}))
    proc = bench_in("scaling", "--resume", run)
    ok(proc)
    assert f"runs commit {git_info()['sha_short']}, but the run started at 01234567" in proc.stderr
    assert len(json.loads((run / "env.json").read_text())["resumes"]) == 2


def test_report_and_regress_refuse_a_cut_row(scaling_run, quality_run, tmp_path):
    runs = tmp_path / "results" / "runs"
    shutil.copytree(scaling_run, runs / "s")
    shutil.copytree(quality_run, runs / "q")
    body = cut(runs / "s" / "timings.csv")
    refused(bench_in("regress", "--baseline", runs / "s" / "timings.csv", "--current", runs / "s" / "timings.csv"),
            "line 3 is cut off")
    refused(bench_in("report", runs / "s", "--out", tmp_path / "results" / "README.md", "--no-plots"),
            "line 3 is cut off")
    cut(runs / "q" / "final.csv")
    (runs / "s" / "timings.csv").write_text(body)
    refused(bench_in("report", runs / "q", "--out", tmp_path / "results" / "README.md"), "final.csv: line 2 is cut off")
    assert not (tmp_path / "results" / "README.md").exists()
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["runs"]


def test_damaged_rows_are_refused_not_read(scaling_run, tmp_path):
    run = copy(scaling_run, tmp_path)
    path = run / "timings.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1].replace(",ok,", ",ok,x,", 1) + lines[2])  # one field too many
    refused(bench_in("regress", "--baseline", path, "--current", path), "line 2 has")
    path.write_text(lines[0] + lines[1].replace("wave,core,fwd,cpu,float32,1,", "wave,core,fwd,cpu,float32,one,")
                    + lines[2])
    before = snapshot(run)
    refused(bench_in("scaling", "--resume", run), "line 2: batch = 'one' is not a number")
    assert snapshot(run) == before  # env.json gets no resume entry either


@pytest.mark.parametrize("seq_len", ["inf", "", "nan", "128.0", "1e3", "1e30", "0", "-128"])
def test_a_length_that_is_not_a_whole_number_is_refused(scaling_run, tmp_path, seq_len):
    """A seq_len the sweep cannot have written crashed every reader (int() of inf or nan) or read 1e30 as a
    wrong integer; 128.0 keyed another cell than 128."""
    runs = tmp_path / "results" / "runs"
    run = copy(scaling_run, runs, "s")
    path = run / "timings.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1] + lines[2].replace(",128,", f",{seq_len},", 1))
    before = snapshot(run)
    needle = f"line 3: seq_len = {seq_len!r} is not a whole number"
    refused(bench_in("regress", "--baseline", path, "--current", path), needle)
    refused(bench_in("report", run, "--out", tmp_path / "results" / "README.md", "--no-plots"), needle)
    refused(bench_in("scaling.summary", run, "--no-plots"), needle)
    refused(bench_in("scaling", "--resume", run), needle)
    assert snapshot(run) == before
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["runs"]


def test_numpy_floats_are_written_as_numbers(tmp_path):
    """A row holding numpy floats (a rounded np.float64) reads back as numbers, not "np.float64(...)"."""
    import numpy as np

    from bench.common.files import CsvLog, read_table

    log = CsvLog(tmp_path / "final.csv", ["method", "seed", "loss", "ppl"])
    log.append({"method": "wave", "seed": 0, "loss": round(np.float64(1.2345), 2), "ppl": np.float64("nan")})
    assert read_table(log.path) == [{"method": "wave", "seed": "0", "loss": "1.23", "ppl": "nan"}]


def test_quality_resume_drops_a_cut_final_row(quality_run, tmp_path):
    run = copy(quality_run, tmp_path)
    cut(run / "final.csv")
    proc = bench_in("quality", "--resume", run)
    ok(proc)
    assert "final.csv: line 2 is cut off" in proc.stderr
    assert sorted(r["method"] for r in rows(run / "final.csv")) == ["standard", "wave"]
    curves = [(r["method"], r["step"], r["split"]) for r in rows(run / "curves.csv")]
    assert len(curves) == len(set(curves))  # the re-run job's rows replace its old ones


def damage(path: Path, change=None, keep: int = 1000) -> None:
    """Cut the file to its first `keep` bytes (change None), or load the checkpoint, change it, save it."""
    if change is None:
        path.write_bytes(path.read_bytes()[:keep])
        return
    import torch

    ckpt = torch.load(path, weights_only=False)
    change(ckpt)
    torch.save(ckpt, path)


def _drop_optimizer(ckpt):
    del ckpt["train_state"]["optimizer"]


@pytest.mark.parametrize("fault,file,change,needle", [
    ("env-cut", "env.json", None, "env.json is cut or not JSON"),
    ("checkpoint-cut", "checkpoints/standard-seed0-last.pt", None, "cannot read checkpoint"),
    pytest.param("checkpoint-other-model", "checkpoints/standard-seed0-last.pt",
                 lambda c: c["config"].update(d_model=64), "another standard model", marks=SLOW),
    pytest.param("checkpoint-no-state", "checkpoints/standard-seed0-last.pt", _drop_optimizer,
                 "no usable resume state", marks=SLOW),
], ids=["env-cut", "checkpoint-cut", "checkpoint-other-model", "checkpoint-no-state"])
def test_quality_resume_refuses_damaged_files(fault, file, change, needle, quality_run, tmp_path):
    run = copy(quality_run, tmp_path)
    damage(run / file, change, keep=300 if file == "env.json" else 1000)
    before = snapshot(run)
    refused(bench_in("quality", "--resume", run), needle)
    assert snapshot(run) == before


@pytest.mark.parametrize("fault,change,needle", [
    ("cut", None, "cannot read checkpoint"),
    ("unknown-kind", lambda c: c.update(kind="rnn"), "unknown model kind 'rnn'"),
    ("weights-misfit", lambda c: c["config"].update(d_model=48), "weights do not fit its model config"),
], ids=["cut", "unknown-kind", "weights-misfit"])
def test_diagnostics_refuses_damaged_checkpoints(fault, change, needle, quality_run, tmp_path):
    path = tmp_path / "model.pt"
    shutil.copy(quality_run / "checkpoints" / "wave-seed0.pt", path)
    damage(path, change)
    refused(bench_in("diagnostics", "--checkpoint", path, "--out", tmp_path / "out"), needle)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# stopped runs resume


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.perf_counter()
    while not predicate():
        assert proc.poll() is None, f"finished before it could be stopped: {proc.stderr.read()[-2000:]}"
        assert time.perf_counter() - t0 < timeout
        time.sleep(0.02)


def _data_rows(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


# Six cells of at least 0.3 s each, written a length (two cells) at a time: after the first two rows four cells
# and the summary are left, so the signal has over a second to land, even on a loaded machine.
SLOW_SWEEP = ["--quick", "--levels", "core", "--passes", "fwd", "--methods", "wave,softmax-naive", "--seq-lens",
              "64,128,256", "--no-floor", "--min-run-time", "0.3", "--no-progress"]


def _stopped_sweep_resumes(tmp_path: Path, sig: int) -> None:
    out = tmp_path / "run"
    proc = start("scaling", *SLOW_SWEEP, "--out", out)
    _wait_for(lambda: _data_rows(out / "timings.csv") >= 2, proc)
    proc.send_signal(sig)
    code, err = proc.wait(timeout=60), proc.stderr.read()
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL), err[-2000:]
    if sig == signal.SIGINT:
        assert f"(use --resume {out} to finish)" in err, err[-2000:]
    before = rows(out / "timings.csv")
    ok(bench_in("scaling", "--resume", out))
    after = rows(out / "timings.csv")
    keys = [(r["method"], r["seq_len"]) for r in after]
    assert len(keys) == len(set(keys)) == 6
    assert all(r in after for r in before)


def test_sigint_mid_sweep_then_resume(tmp_path):
    _stopped_sweep_resumes(tmp_path, signal.SIGINT)


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume(tmp_path):
    _stopped_sweep_resumes(tmp_path, signal.SIGKILL)


@pytest.mark.parametrize("module", ["scaling", "quality", "diagnostics", "report", "regress", "profile",
                                    "scaling.summary"])
def test_ctrl_c_hints_at_resume_only_where_the_command_has_it(module, monkeypatch):
    # bench.regress answered Ctrl-C with "use --resume DIR to finish", a flag it does not have
    resumable = "--resume" in bench_in(module, "--help").stdout
    assert resumable == (module in ("scaling", "quality"))

    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop)
    proc = bench_in(module, "x")
    hint = "; rows already written are kept (use --resume DIR to finish)" if resumable else ""
    assert proc.returncode == 130 and proc.stderr == f"python -m bench.{module}: interrupted{hint}\n", proc.stderr


def _stopped_training_resumes(tmp_path: Path, sig: int) -> None:
    out = tmp_path / "run"
    args = list(QUALITY)
    args[args.index("--steps") + 1], args[args.index("--eval-every") + 1] = "300", "20"
    proc = start("quality", *args, "--out", out)
    _wait_for(lambda: (out / "checkpoints" / "wave-seed0-last.pt").is_file(), proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    ok(bench_in("quality", "--resume", out))
    assert sorted(r["method"] for r in rows(out / "final.csv")) == ["standard", "wave"]
    curves = [(r["method"], r["step"], r["split"]) for r in rows(out / "curves.csv")]
    assert len(curves) == len(set(curves))
    assert not list((out / "checkpoints").glob("*-last.pt"))


def test_sigkill_mid_training_then_resume(tmp_path):
    _stopped_training_resumes(tmp_path, signal.SIGKILL)


@pytest.mark.slow
def test_sigint_mid_training_then_resume(tmp_path):
    _stopped_training_resumes(tmp_path, signal.SIGINT)


def test_scaling_correctness_check_respects_the_memory_budget(tmp_path):
    """A model too wide for --mem-budget is skipped without building it (capped at 6 GB of address
    space here, so the unfixed path fails fast instead of exhausting the machine)."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    out = tmp_path / "run"
    args = ["--quick", "--levels", "model", "--model-dim", "16000", "--mem-budget", "1", "--methods", "wave",
            "--passes", "fwd", "--seq-lens", "256", "--no-floor", "--no-progress", "--out", str(out)]
    proc = subprocess.run([sys.executable, "-m", "bench.scaling", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300, preexec_fn=cap)
    ok(proc)
    (row,) = rows(out / "timings.csv")
    assert row["status"] == "skipped" and "memory budget" in row["reason"], row


def test_resume_names_what_is_wrong_with_the_folder(tmp_path):
    from bench.common.cli import UsageError
    from bench.common.files import read_run_env

    (tmp_path / "file").write_text("x\n")
    for path, needle in ((tmp_path / "file", "a file, not a folder"), (tmp_path / "nope", "no such folder"),
                         (tmp_path, "no env.json there")):
        with pytest.raises(UsageError, match=needle):
            read_run_env(path, "python -m bench.scaling")


def test_a_refused_write_names_the_file_asked_for(tmp_path):
    """replacing() renames a file system refusal to the target (not its temp file); an OSError without errno
    (a library's own) passes unchanged instead of reading '[Errno None] None'."""
    from bench.common.files import replacing, write_text

    with pytest.raises(FileNotFoundError) as exc:
        write_text(tmp_path / "no" / "page.md", "x")
    assert exc.value.filename == str(tmp_path / "no" / "page.md")
    with pytest.raises(OSError, match="^library says no$"):
        with replacing(tmp_path / "page.md"):
            raise OSError("library says no")
    assert not list(tmp_path.iterdir())  # no temp file left behind
