"""python -m bench.profile: one cell built through the scaling registry, timed and profiled (CPU, tiny)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bench.common.cli import run_cli
from bench.profile import PROG, main

TINY = ["--seq-len", "32", "--batch", "1", "--heads", "2", "--head-dim", "4", "--warmup", "1", "--reps", "2",
        "--device", "cpu"]


def test_profiles_the_wave_core(capsys):
    assert main(["--method", "wave", *TINY, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "wave: level core, pass fwd, device cpu, dtype float32, B=1 H=2 d=4 N=32" in out
    assert "wall time per call (time.perf_counter):" in out and "CPU self time (under the profiler) per call:" in out
    assert "kernel launches per call: n/a on cpu" in out
    table = out.split("top 3 ops by CPU self time:")[1].strip().splitlines()
    assert table[0].split() == ["op", "calls/call", "ms/call", "share"]
    assert len(table) == 4 and all(row.rstrip().endswith("%") for row in table[1:])


def test_profiles_forward_and_backward_of_the_layer(capsys):
    assert main(["--method", "wave", *TINY, "--level", "layer", "--pass", "fwdbwd", "--top", "2"]) == 0
    assert "level layer, pass fwdbwd" in capsys.readouterr().out


def test_model_level_header_names_the_models_head_width(capsys):
    # the LM is 256 wide: with 2 heads its heads are 128 wide, whatever --head-dim (core/layer only) says
    assert main(["--method", "softmax-sdpa", *TINY, "--level", "model", "--top", "1"]) == 0
    # and the sweep's LM depth on this device (2 layers on CPU), which it says
    assert "level model, pass fwd, device cpu, dtype float32, B=1 H=2 d=128 N=32, stride 4, 2 layers;" in (
        capsys.readouterr().out)


def test_bad_input_is_one_line_and_exit_2(capsys):
    for argv, message in [
        (["--method", "nope", *TINY], "unknown method 'nope'; valid choices: wave,"),
        (["--method", "fft-floor", *TINY, "--pass", "fwdbwd"], "has no core/fwdbwd cell"),
        (["--method", "wave", *TINY, "--dtype", "float16"], "float16 is not supported on cpu"),
        # values that parse but cannot run: refused before any cell, like python -m bench.scaling does
        (["--method", "wave", *TINY, "--field-stride", "1.5"], "--field-stride: field_stride=1.5 leaks"),
        (["--method", "wave", *TINY, "--level", "model", "--heads", "3"], "not divisible by --heads 3"),
        (["--method", "wave-field,wave-scan", *TINY, "--field-stride", "2.5"], "wave-scan need an integer stride"),
    ]:
        assert run_cli(main, argv, prog=PROG) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err


def test_module_entry_point_rejects_a_bad_length():
    proc = subprocess.run([sys.executable, "-m", "bench.profile", "--method", "wave", "--seq-len", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--seq-len: 0 is not positive" in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_a_failed_cell_is_a_line_and_its_tensors_are_gone_before_the_next_cell(capsys, monkeypatch):
    import dataclasses
    import weakref

    import bench.profile as prof
    from bench.scaling.registry import METHODS

    held, alive_at_build = [], []
    wave = METHODS["wave"]

    def build(spec):
        alive_at_build.append([ref() is not None for ref in held])
        return wave.build(spec)

    def out_of_memory(fn, device, warmup, reps):
        held.append(weakref.ref(fn))  # the cell's closure: it holds the cell's tensors
        raise MemoryError("no memory for this cell")

    monkeypatch.setitem(METHODS, "wave", dataclasses.replace(wave, build=build))
    monkeypatch.setattr(prof, "profile_cell", out_of_memory)
    assert main(["--method", "wave", *TINY[:1], "32,48", *TINY[2:]]) == 1  # nothing measured
    assert capsys.readouterr().out.count("failed: MemoryError: no memory for this cell") == 2
    assert alive_at_build == [[], [False]]  # the failed cell was released before the next one was built


@pytest.mark.parametrize("failures, code", [
    ([MemoryError("no memory for this cell"), None], 0),  # out of memory is a line of the report
    ([RuntimeError("can't allocate memory"), RuntimeError("can't allocate memory")], 1),  # nothing measured
    ([ValueError("a bug in the cell"), None], 1),  # a failure that is not memory, even beside a measured cell
])
def test_the_exit_code_says_whether_the_cells_were_measured(capsys, monkeypatch, failures, code):
    import bench.profile as prof

    measure = prof.profile_cell

    def cell(fn, device, warmup, reps):
        if exc := failures.pop(0):
            raise exc
        return measure(fn, device, warmup, reps)

    monkeypatch.setattr(prof, "profile_cell", cell)
    assert run_cli(main, ["--method", "wave", *TINY[:1], "32,48", *TINY[2:]], prog=PROG) == code
    out, err = capsys.readouterr()
    assert "\nfailed: " in out  # the failed cell is a line of the report either way
    if code:  # and one line saying why
        assert err.count("\n") == 1 and "cells measured" in err, err
    else:
        assert err == ""


def test_out_holds_each_block_once_it_is_printed(tmp_path, capsys, monkeypatch):
    import bench.profile as prof

    measure, out, on_disk = prof.profile_cell, tmp_path / "profile.txt", []

    def cell(fn, device, warmup, reps):
        on_disk.append(out.read_text())
        if len(on_disk) == 2:
            raise KeyboardInterrupt  # Ctrl-C, or a timeout's SIGTERM, during the second cell
        return measure(fn, device, warmup, reps)

    monkeypatch.setattr(prof, "profile_cell", cell)
    assert run_cli(main, ["--method", "wave", *TINY[:1], "32,48", *TINY[2:], "--out", str(out)], prog=PROG) == 130
    assert "N=32" in on_disk[1] and "N=48" not in on_disk[1]  # the first block was on disk before the second cell
    assert out.read_text() == capsys.readouterr().out  # the file says what was printed


@pytest.mark.parametrize("git, commit", [
    ({"sha": "a" * 40, "sha_short": "aaaaaaaa", "dirty": True}, "commit aaaaaaaa+dirty,"),
    ({"sha": "a" * 40, "sha_short": "aaaaaaaa", "dirty": False}, "commit aaaaaaaa,"),
    ({"sha": None, "sha_short": None, "dirty": None}, "commit unknown (no git metadata),"),
])
def test_the_report_starts_with_what_produced_it(tmp_path, capsys, monkeypatch, git, commit):
    import torch

    import bench.profile as prof

    monkeypatch.setattr(prof, "git_info", lambda: git)
    out = tmp_path / "profile.txt"
    assert main(["--method", "wave", *TINY, "--top", "1", "--out", str(out)]) == 0
    first = out.read_text().splitlines()[0]
    assert commit in first and f"torch {torch.__version__}," in first and "device cpu (" in first
    assert capsys.readouterr().out.startswith(first)
