"""bench.scaling: registry, CSV, resume, CLI errors, an end-to-end --quick run and a two-process
torchrun run (CPU, gloo). The cost model is in test_scaling_costs.py, the engine in test_sweep.py."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.common.cli import MAX_SEED, run_cli
from bench.scaling.cli import PROG, main
from bench.scaling.grid import CellSpec, row_key
from bench.scaling.registry import DEFAULT_METHODS, FLOOR_METHODS, METHODS
from bench.scaling.results import read_header, read_rows
from bench.scaling.schema import COLUMNS, STATUSES
from faultkit import bench_in

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _py_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_module(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "bench.scaling", *args], cwd=REPO, env=_py_env(),
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_contents():
    names = set(METHODS)
    assert {"wave", "wave-field", "softmax-sdpa", "softmax-naive", "softmax-flash-attn", "softmax-sdpa-flash",
            "softmax-sdpa-cudnn", "softmax-sdpa-efficient", "softmax-sdpa-math", "fft-floor",
            "fft-floor-field"} <= names
    assert DEFAULT_METHODS == ("wave", "wave-scan", "wave-field", "softmax-sdpa", "softmax-naive")
    for name in FLOOR_METHODS:
        m = METHODS[name]
        assert m.kind == "reference" and m.levels == ("core",) and m.passes == ("fwd",)
    assert METHODS["wave"].kind == "wave" and METHODS["softmax-naive"].kind == "softmax"
    assert METHODS["softmax-flash-attn"].why_unavailable(CPU)  # CUDA only
    assert METHODS["softmax-sdpa-efficient"].why_unavailable(CPU)
    assert METHODS["softmax-sdpa-math"].why_unavailable(CPU) is None


def test_list_methods_cli(capsys):
    assert run_cli(main, ["--list-methods", "--device", "cpu"], prog=PROG) == 0
    out = capsys.readouterr().out
    for name in METHODS:
        assert name in out
    assert "needs a CUDA device" in out


def test_builders_and_costs_for_every_cpu_method():
    """Every method available on CPU builds at every level/pass it supports and returns a closure.
    (wave-compiled is left to the slow test: torch.compile takes 10-30 s here.)"""
    for name, m in METHODS.items():
        if m.why_unavailable(CPU) or name.endswith("-compiled"):
            continue
        for level in m.levels:
            for pass_ in m.passes:
                spec = CellSpec(level, pass_, 1, 2, 8, 32, CPU, torch.float32, model_dim=16, model_layers=1)
                built = m.build(spec)
                built.fn()
                assert isinstance(built.backend(), str)
                cost = m.cost(spec)
                assert cost.flops > 0 and cost.bytes > 0
                assert m.memory(spec) > 0


def test_model_level_check_of_every_wave_path_runs_a_cpu_float64_reference():
    """The LM check ran a float64 CPU copy in the method's own mode: every wave-triton model cell was an error row
    ("u has dtype torch.float64"). Triton's interpreter is chosen at its import, hence the subprocess."""
    code = ("import torch; from bench.scaling.grid import CellSpec; from bench.scaling.registry import METHODS\n"
            "spec = CellSpec('model', 'fwd', 1, 2, 16, 64, torch.device('cpu'), torch.float32, 4.0, 32, 1, 64, 0)\n"
            "for m in ('wave', 'wave-scan', 'wave-field', 'wave-triton'):\n"
            "    print(m, METHODS[m].check(spec).ok)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**_py_env(), "TRITON_INTERPRET": "1"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["wave", "True", "wave-scan", "True", "wave-field", "True", "wave-triton", "True"]


# ---------------------------------------------------------------------------------------------
# resume (in process, with the real CLI)

QUICK_CORE = ["--quick", "--levels", "core", "--passes", "fwd", "--seq-lens", "64,128", "--no-floor",
              "--methods", "wave,softmax-sdpa", "--no-progress"]


def test_resume_finishes_without_remeasuring(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = METHODS["softmax-sdpa"]

    def interrupting_build(spec):
        if spec.seq_len == 128:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the sweep
        return real.build(spec)

    monkeypatch.setitem(METHODS, "softmax-sdpa", replace(real, build=interrupting_build))
    assert run_cli(main, [*QUICK_CORE, "--out", str(out)], prog=PROG) == 130
    first = read_rows(out / "timings.csv")
    assert {(r["method"], r["seq_len"]) for r in first} == {("wave", "64"), ("softmax-sdpa", "64")}

    monkeypatch.setitem(METHODS, "softmax-sdpa", real)
    # conflicting flags are refused, with the run's value named
    assert run_cli(main, ["--resume", str(out), "--max-len", "4096"], prog=PROG) == 2
    assert run_cli(main, ["--resume", str(out), "--no-progress"], prog=PROG) == 0
    rows = read_rows(out / "timings.csv")
    keys = [row_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == 4
    assert {(r["method"], r["seq_len"]) for r in rows} == {(m, n) for m in ("wave", "softmax-sdpa")
                                                           for n in ("64", "128")}
    before = {row_key(r): r for r in first}
    for r in rows:
        if row_key(r) in before:  # finished cells are untouched (same measurement, same time stamp)
            assert r == before[row_key(r)]
    env = json.loads((out / "env.json").read_text())
    assert env["sweep"]["seq_lens"] == [64, 128] and [r["world_size"] for r in env["resumes"]] == [1]
    assert 0 < env["resumes"][0]["mem_budget_gb"] <= env["sweep"]["mem_budget_gb"]  # the budget this resume used
    assert set(env["methods"]) == {"wave", "softmax-sdpa"}  # --no-floor: the floors were listed though never run


SAVED_SWEEP = dict(device="cpu", dtype="float32", batch=1, heads=2, head_dim=8, field_stride=4.0, methods=["wave"],
                   levels=["core"], passes=["fwd"], seq_lens=[64], floor=False, warmup=1, min_run_time=0.001,
                   min_reps=3, seed=0, threads=1, time_budget=5.0, mem_budget_gb=1.0, total_budget=None, model_dim=16,
                   model_layers=1, vocab=256, quick=True)
NO_SWEEP = "env.json has no usable sweep configuration"


@pytest.mark.parametrize("field,value,needle", [
    ("methods", ["wave", "wave-old"], "method 'wave-old' of the run is not in this version"),  # was a KeyError
    ("methods", ["all"], f"{NO_SWEEP} (field methods: 'all' is not what a run saves"),  # was a --methods conflict
    ("device", "auto", f"{NO_SWEEP} (field device: 'auto' is not what a run saves"),  # was a --device conflict
    # each was a TypeError traceback, or an error row for every cell, or a flag conflict the user never typed
    ("seq_lens", [64, "abc"], f"{NO_SWEEP} (field seq_lens: 'abc' is not an integer"),
    ("heads", "8", f"{NO_SWEEP} (field heads: '8' should be saved as 8)"),
    ("batch", 0, f"{NO_SWEEP} (field batch: 0 is not positive"),
    ("batch", -1, f"{NO_SWEEP} (field batch: -1 is not positive"),
    ("min_run_time", None, f"{NO_SWEEP} (field min_run_time: 'None' is not a number"),
    ("threads", 1000, f"{NO_SWEEP} (field threads: 1000 is more than 4x the"),  # --threads' cap
    ("threads", 0, f"{NO_SWEEP} (field threads: 0 is not a thread count"),  # was a conflict with --threads
    ("mem_budget_gb", 0, f"{NO_SWEEP} (field mem_budget_gb: 0.0 is not positive"),
    ("levels", [], f"{NO_SWEEP} (field levels: empty level list; valid choices: core, layer, model"),
    ("floor", 1, f"{NO_SWEEP} (field floor: '1' is not true or false"),
    ("seed", 2**64 - 1, f"{NO_SWEEP} (field seed: {2**64 - 1} is out of range"),
    # these named flags the user never typed ("--field-stride: ... leaks"), or no file ("unknown dtype")
    ("field_stride", 1.5, "env.json field field_stride: field_stride=1.5 leaks"),
    ("dtype", "float64", "env.json field dtype: unknown dtype 'float64'; valid choices: float32"),
    ("device", "tpu", "env.json field device: unknown device 'tpu'"),
])
def test_resume_of_a_damaged_sweep_configuration_is_one_line(field, value, needle, tmp_path, capsys):
    run = tmp_path / "old"
    run.mkdir()
    (run / "env.json").write_text(json.dumps({"sweep": {**SAVED_SWEEP, field: value}}))
    assert run_cli(main, ["--resume", str(run)], prog=PROG) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err, err
    assert not (run / "timings.csv").exists()


def test_resume_of_another_harness_folder_says_what_it_is(tmp_path, capsys):
    # was "env.json has no usable sweep configuration ('sweep')"
    run = tmp_path / "quality"
    run.mkdir()
    (run / "env.json").write_text(json.dumps({"argv": ["python -m bench.quality", "--preset", "tiny"]}))
    assert run_cli(main, ["--resume", str(run)], prog=PROG) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "a run of python -m bench.quality --preset tiny, not of python -m bench.scaling" in err


def test_a_selection_with_no_cell_is_refused(tmp_path, capsys):
    # wave-bhnd is core-only: this wrote env.json, then two "holds no timings.csv" notes, and exited 0
    out = tmp_path / "run"
    argv = ["--quick", "--levels", "model", "--methods", "wave-bhnd", "--no-floor", "--out", str(out)]
    assert run_cli(main, argv, prog=PROG) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nothing to measure" in err and "wave-bhnd: levels core" in err, err
    assert not out.exists()


def test_resume_takes_the_runs_lists_in_any_order():
    """--levels layer,core was refused as a conflict with the run's core,layer, shown as Python lists."""
    from bench.scaling.cli import build_parser, resolve_config, resume_conflicts
    from bench.scaling.grid import SweepConfig

    base = SweepConfig.from_dict({**SAVED_SWEEP, "levels": ["core", "layer"], "methods": ["wave", "softmax-sdpa"]})
    same = ["--levels", "layer,core", "--methods", "softmax-sdpa,wave", "--seq-lens", "64"]
    assert resume_conflicts(resolve_config(build_parser().parse_args(same), base=base), base) == []
    other = resolve_config(build_parser().parse_args(["--levels", "layer"]), base=base)
    assert resume_conflicts(other, base) == ["--levels layer (the run has core,layer)"]


@pytest.mark.parametrize("resume", [False, True])
def test_busy_warning_suggests_threads_only_where_the_flag_is_taken(resume, monkeypatch, capsys):
    from bench.scaling.cli import _busy_warning

    monkeypatch.setattr(os, "getloadavg", lambda: (1000.0, 0.0, 0.0))
    _busy_warning(CPU, threads=2, resume=resume)
    err = capsys.readouterr().err
    assert "this machine is busy" in err and ("--threads" in err) == (not resume), err  # a resume refuses it


# ---------------------------------------------------------------------------------------------
# bad input


ARGPARSE_ERROR = (["--max-len", "0"], "not positive")  # refused by argparse
NO_CUDA = (["--device", "cuda"], "no CUDA GPU")  # refused by the configuration, after parsing


@pytest.mark.parametrize("argv,needle", [
    ARGPARSE_ERROR,
    (["--max-len", "-5"], "not positive"),
    (["--max-len", "lots"], "not an integer"),
    (["--min-len", "4096", "--max-len", "512"], "greater than --max-len"),
    (["--methods", "wave,flash9"], "valid choices: wave"),
    (["--levels", "kernel"], "valid choices: core, layer, model"),
    (["--passes", "bwd"], "valid choices: fwd, fwdbwd"),
    (["--dtype", "float8"], "choose from"),
    (["--device", "tpu"], "valid choices: auto, cpu, cuda"),
    (["--device", ""], "unknown device ''; valid choices: auto, cpu, cuda"),  # empty is not "not given" (auto)
    NO_CUDA,
    (["--device", "cpu", "--dtype", "float16"], "valid choices on cpu: float32, bfloat16"),
    (["--field-stride", "1.5"], "safe strides"),
    # exact for wave-field, but the token-level methods (the default wave among them) raise at every cell
    (["--field-stride", "2.5"], "--field-stride 2.5: wave, wave-scan need an integer stride"),
    (["--field-stride", "2.5", "--methods", "wave-field,wave-triton"], "wave-triton need an integer stride"),
    (["--seq-lens", "512,abc"], "not an integer"),
    (["--threads", "100000"], "more than 4x the"),  # torch would start them all
    # every row was an error (--list-methods: a regression exits there, it does not run a sweep in results/)
    (["--seed", str(2**64 - 1), "--list-methods"], f"--seed: {2**64 - 1} is out of range (valid: 0 to {MAX_SEED})"),
    (["--seq-lens", "512", "--max-len", "1024"], "either --seq-lens"),
    (["--resume", "/nonexistent/run"], "no such folder"),
    (["--resume", ""], "--resume '': no env.json there"),  # not "not given": it started a new sweep
])
def test_bad_input_in_process(argv, needle, capsys):
    if argv == NO_CUDA[0] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(run_cli(main, argv, prog=PROG))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err, err


def test_model_width_is_checked_only_when_the_model_level_runs():
    from bench.common.cli import UsageError
    from bench.scaling.cli import build_parser, resolve_config

    # 3 heads of 64 is a valid core/layer cell (D = 192); only the LM (256 wide) cannot split into 3 heads
    cfg = resolve_config(build_parser().parse_args(["--device", "cpu", "--levels", "core,layer", "--n-heads", "3"]))
    assert cfg.heads == 3 and cfg.levels == ["core", "layer"]
    with pytest.raises(UsageError, match="--model-dim 256 is not divisible by --n-heads 3"):
        resolve_config(build_parser().parse_args(["--device", "cpu", "--n-heads", "3"]))


@pytest.mark.parametrize("argv,needle", [ARGPARSE_ERROR, NO_CUDA], ids=["argparse", "configuration"])
def test_bad_input_subprocess(argv, needle):
    """The real command line: exit 2 and one line, no traceback, for an error of each stage (each case is
    also checked in process above)."""
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = run_module(*argv, timeout=60)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "Traceback" not in err and "\n" not in err and needle in err, err


# a Ctrl-C in the first 1-2 s of a run, while torch imports: the import raises KeyboardInterrupt
CTRL_C_AT_IMPORT = """
import runpy, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlC())
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_while_torch_imports_is_one_line():
    """It was a 25-35 line KeyboardInterrupt traceback: the entry point imported torch before run_cli ran."""
    proc = subprocess.run([sys.executable, "-c", CTRL_C_AT_IMPORT, "bench.scaling", "--seq-lens", "64"], cwd=REPO,
                          env=_py_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and proc.stderr.startswith("python -m bench.scaling: interrupted"), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


# ---------------------------------------------------------------------------------------------
# end to end


def _check_run_folder(run: Path, world: int) -> list[dict]:
    env = json.loads((run / "env.json").read_text())
    for key in ("argv", "seed", "git", "torch", "cpu_model", "sweep", "memory_method", "memory_method_note",
                "budgets", "world_size", "timing", "cost_model", "runs", "torch_threads", "ram_total_gb"):
        assert key in env, key
    assert env["memory_method"] == "torch-profiler" and env["world_size"] == world
    assert read_header(run / "timings.csv") == COLUMNS
    rows = read_rows(run / "timings.csv")
    keys = [row_key(r) for r in rows]
    assert len(keys) == len(set(keys)), "a cell appears twice"
    assert {r["status"] for r in rows} <= set(STATUSES)
    assert not (run / "parts").exists()
    assert (run / "summary.md").stat().st_size > 0  # pandas and matplotlib are requirements, not options
    assert any((run / "plots").glob("*.png"))
    return rows


def test_quick_end_to_end(tmp_path):
    # in process (the command line's exit codes: test_bad_input_subprocess; a whole run: the torchrun test)
    run = tmp_path / "quick"
    proc = bench_in("scaling", "--quick", "--device", "cpu", "--out", str(run), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(run)
    rows = _check_run_folder(run, world=1)
    env = json.loads((run / "env.json").read_text())
    sweep = env["sweep"]
    expected = set()
    for m in sweep["methods"] + list(FLOOR_METHODS):
        for lv in sweep["levels"]:
            for p in sweep["passes"]:
                if METHODS[m].supports(lv, p):
                    expected |= {(m, lv, p, str(n)) for n in sweep["seq_lens"]}
    assert {(r["method"], r["level"], r["pass"], r["seq_len"]) for r in rows} == expected
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, "nothing was measured"
    bad = [r for r in rows if r["status"] not in ("ok", "skipped")]
    assert not bad, bad
    by = {(r["method"], r["level"], r["pass"], r["seq_len"]): r for r in rows}
    assert by[("wave", "core", "fwd", "256")]["status"] == "ok"
    assert by[("wave", "core", "fwd", "256")]["backend"] == "pocketfft"
    assert by[("softmax-sdpa", "core", "fwd", "256")]["backend"] in ("cpu-flash", "math")
    for r in ok:
        assert float(r["median_ms"]) > 0 and float(r["flops"]) > 0 and float(r["peak_mem_mb"]) >= 0


def test_torchrun_two_gloo_ranks(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "bench.scaling", "--quick", "--device", "cpu", "--levels", "core", "--passes", "fwd",
           "--seq-lens", "128,256,512", "--methods", "wave,softmax-sdpa", "--out", str(run), "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=_py_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _check_run_folder(run, world=2)
    assert "`torchrun --nproc-per-node 2 -m bench.scaling --quick --device cpu" in (run / "summary.md").read_text()
    cells = {(r["method"], r["seq_len"]) for r in rows}
    assert cells == {(m, n) for m in ("wave", "softmax-sdpa", "fft-floor", "fft-floor-field")
                     for n in ("128", "256", "512")}
    ranks = {r["seq_len"]: r["rank"] for r in rows}
    assert ranks == {"128": "0", "256": "1", "512": "0"}


def test_row_writer_migrates_an_older_header_keeping_every_row(tmp_path):
    # a folder written before a column was added (setup_s) must resume without losing or shifting rows
    from bench.scaling.results import RowWriter, read_header, read_rows
    from bench.scaling.schema import COLUMNS, KEY_COLUMNS

    path = tmp_path / "timings.csv"
    old = COLUMNS[:-1]
    key = {c: "7" for c in KEY_COLUMNS}  # a row without its key is refused as damaged
    key.update(level="core", status="ok", **{"pass": "fwd"})
    path.write_text(",".join(old) + "\n" + ",".join({**key, "method": "wave"}.get(c, "") for c in old) + "\n")
    writer = RowWriter(path)
    writer.append({**key, "method": "softmax-sdpa", "seq_len": 8, "setup_s": 0.5})
    assert read_header(path) == COLUMNS
    rows = read_rows(path)
    got = [(r["method"], r["seq_len"], r["setup_s"]) for r in rows]
    assert got == [("wave", "7", ""), ("softmax-sdpa", "8", "0.5")]


@pytest.mark.slow
def test_compiled_wave_method_matches_eager_and_reports_compile_time(tmp_path):
    # opt-in: torch.compile takes 10-30 s on a 2-core CPU
    from bench.scaling.registry import METHODS

    if METHODS["wave-compiled"].why_unavailable(torch.device("cpu")):
        pytest.skip(METHODS["wave-compiled"].why_unavailable(torch.device("cpu")))
    rc = main(["--device", "cpu", "--levels", "core", "--passes", "fwd", "--methods", "wave,wave-compiled",
               "--seq-lens", "256", "--no-floor", "--min-run-time", "0.05", "--out", str(tmp_path / "run"),
               "--no-progress"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "run" / "timings.csv")
    row = df[df["method"] == "wave-compiled"].iloc[0]
    assert row["status"] == "ok" and row["setup_s"] > 0
    assert "torch.compile" in (tmp_path / "run" / "summary.md").read_text()
