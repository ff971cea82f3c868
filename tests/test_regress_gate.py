"""scripts/regress_gate.sh (with a stand-in python whose `-m pytest` plays the benchmark runs), the variables
tox passes it, the environment knobs the benchmarks and the harnesses read (bad values are one line, exit 2), and
the Ctrl-C line of the harnesses' run_cli. bench.regress itself is tested in test_regress.py."""
import configparser
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
from functools import partial

import pytest

from bench.common import cli
from test_regress import BASELINE, ROOT, scaled, wave_factor, write

FAKE_PYTHON = """#!/usr/bin/env bash
[ "$2" = pytest ] || exec {python} "$@"
echo >> {tmp}/runs.log
plan=($FAKE_RUNS)
result=${{plan[$(($(wc -l < {tmp}/runs.log) - 1))]}}
for arg; do [[ $arg == --benchmark-json=* ]] && json=${{arg#*=}}; done
[[ $result == *.json ]] && exec cp {tmp}/$result "$json"
[ $result = ctrl-c ] && kill -INT $PPID && exit 2  # pytest's code when Ctrl-C stops it
exit $result
"""


@pytest.mark.parametrize("runs, env, code, says, pytest_runs", [
    ("1", {}, 1, "the benchmark run failed (pytest exit 1)", 1),  # was: re-measured, then stale verdicts: pass
    ("slow.json 1", {}, 1, "the benchmark run failed (pytest exit 1)", 2),  # was: "not confirmed ... pass"
    ("slow.json same.json", {}, 0, "not confirmed", 2),
    ("slow.json slow.json", {}, 1, "REGRESSED in both runs", 2),
    ("same.json", {"BENCH_JSON": "{tmp}/out"}, 2, "BENCH_JSON '{tmp}/out' must name a .json file", 0),
    ("same.json", {"GATE_MIN_SEQ_LEN": "5l2"}, 2, "GATE_MIN_SEQ_LEN '5l2'", 0),  # was: --min-seq-len, after the run
    ("ctrl-c", {}, 130, "regress_gate: interrupted", 1),  # was: exit 2, "the benchmark run failed"
])
def test_gate_script(tmp_path, runs, env, code, says, pytest_runs):
    """Exit codes and verdicts of the gate script; verdict files of an earlier run are left in place."""
    baseline_doc = json.loads(BASELINE.read_text())
    write(tmp_path, "same.json", baseline_doc)
    write(tmp_path, "slow.json", scaled(baseline_doc, wave_factor("wave", 2.0)))
    for stale in ("current.verdicts.json", "current.confirm.verdicts.json"):
        write(tmp_path, stale, {"checks": []})
    fake = tmp_path / "py"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable, tmp=tmp_path))
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "BENCH_JSON": str(tmp_path / "current.json"), "FAKE_RUNS": runs,
           **{k: v.format(tmp=tmp_path) for k, v in env.items()}}
    proc = subprocess.run(["bash", "scripts/regress_gate.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          preexec_fn=partial(signal.signal, signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    assert proc.returncode == code and says.format(tmp=tmp_path) in proc.stdout + proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    log = tmp_path / "runs.log"
    assert (log.read_text().count("\n") if log.exists() else 0) == pytest_runs


def test_tox_passes_every_variable_the_gate_reads():
    """tox -e bench passed WAVEBENCH_CELL_S but dropped GATE_MIN_SEQ_LEN, WAVEBENCH_THREADS and the other knobs."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    passed = [w for s in ini.sections() for key in ("pass_env", "set_env") for w in ini[s].get(key, "").split()]
    sources = [*(ROOT / "tests" / "benchmarks").glob("*.py"), ROOT / "scripts" / "regress_gate.sh"]
    uses = r'(?:environ\.get|env_value)\("(\w+)"|\$\{([A-Z]\w*):-'  # os.environ.get("X", env_value("X", ${X:-
    read = {"".join(m) for p in sources for m in re.findall(uses, p.read_text())}
    assert "GATE_MIN_SEQ_LEN" in read and "WAVEBENCH_THREADS" in read
    assert [n for n in sorted(read) if not any(fnmatch.fnmatchcase(n, p) for p in passed)] == []


@pytest.mark.parametrize("variable, value, command", [
    ("WAVEBENCH_CELL_S", "abc", ["pytest", "tests/benchmarks", "-m", "benchmark", "--collect-only", "-q"]),
    ("WAVEBENCH_THREADS", "-1", ["pytest", "tests/benchmarks", "-m", "benchmark", "--collect-only", "-q"]),
    ("WAVEBENCH_MIN_ROUNDS", "0", ["pytest", "tests/benchmarks", "-m", "benchmark", "--collect-only", "-q"]),
    ("WAVEBENCH_FLOOR_RATIO_MAX", "x", ["pytest", "tests/benchmarks", "-m", "benchmark", "--collect-only", "-q"]),
    ("WORLD_SIZE", "abc", ["bench.scaling", "--quick", "--out", "{tmp}/run"]),
    ("WORLD_SIZE", "2", ["bench.scaling", "--quick", "--out", "{tmp}/run"]),  # left in the shell, no torchrun
])
def test_bad_environment_variable_is_one_line(tmp_path, variable, value, command):
    """These were tracebacks: an ImportError of the benchmarks' conftest, a ValueError or torch's
    'environment variable RANK expected' from bench.common.dist."""
    argv = [sys.executable, "-m", *(arg.format(tmp=tmp_path) for arg in command)]
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, variable: value}, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and variable in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


def test_ctrl_c_names_the_folder_to_resume(capsys):
    """Ctrl-C said 'use --resume DIR' although the run had claimed its folder (recorded as claim_run_dir does)."""
    def main(argv):
        cli.RUN_DIRS.append("/tmp/runs/run 1")
        raise KeyboardInterrupt

    assert cli.run_cli(main, [], prog="bench", resumable=True) == 130
    err = capsys.readouterr().err
    assert err == "bench: interrupted; rows already written are kept (use --resume '/tmp/runs/run 1' to finish)\n"
    assert cli.RUN_DIRS == []  # a later run in this process does not inherit it


@pytest.mark.parametrize("rank, run_id, first", [(None, None, True), ("0", "r", True), ("1", "r", False),
                                                 ("abc", "r", True), ("1", None, True)])
@pytest.mark.parametrize("fault, code", [(cli.UsageError("bad flag"), 2), (KeyboardInterrupt(), 130), ("--x", 2)])
def test_under_torchrun_rank_0_prints_the_line(monkeypatch, capsys, rank, run_id, first, fault, code):
    """Every rank printed the error or Ctrl-C line: torchrun showed it once per rank. Rank 0 prints at once; another
    rank prints no Ctrl-C line and waits before an error line, so that torchrun stops it once rank 0 has exited (a
    rank exiting first got rank 0 stopped before it printed). A RANK that is not a number is the error: printed."""
    for name, value in (("RANK", rank), ("TORCHELASTIC_RUN_ID", run_id)):  # a RANK without torchrun's run id
        monkeypatch.delenv(name, raising=False)
        if value is not None:
            monkeypatch.setenv(name, value)
    waits = []
    monkeypatch.setattr(cli.time, "sleep", waits.append)

    def main(argv):
        if isinstance(fault, str):  # an argparse refusal
            cli.ArgParser(prog="bench").parse_args([fault])
        raise fault

    with pytest.raises(SystemExit) as exited:
        raise SystemExit(cli.run_cli(main, [], prog="bench"))
    err = capsys.readouterr().err
    assert exited.value.code == code and err.count("\n") == (1 if first or code == 2 else 0), err
    assert waits == ([] if first or code == 130 else [cli.RANK_WAIT_S])
