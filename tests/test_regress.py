"""The regression gate (bench.regress) on synthetic result files built from the committed baseline.

Slowdowns of a wave method must fail (exit 1), machine noise and uniform drift must pass (exit 0),
bad input is one line and exit 2. No timing runs here: the whole file takes a few seconds.
"""
import copy
import csv
import errno
import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.regress import EXPONENT_TOL, GMEAN_TOL, RATIO_TOL, cli
from bench.scaling.schema import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "tests" / "benchmarks" / "baseline_cpu.json"
TIME_STATS = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3")


@pytest.fixture(scope="module")
def baseline_doc():
    return json.loads(BASELINE.read_text())


def scaled(doc, factor):
    """A copy of a pytest-benchmark document with every time of a benchmark times factor(extra_info)."""
    out = copy.deepcopy(doc)
    for bench in out["benchmarks"]:
        f = factor(bench["extra_info"])
        for key in TIME_STATS:
            bench["stats"][key] *= f
        bench["stats"]["ops"] /= f
        if "data" in bench["stats"]:
            bench["stats"]["data"] = [t * f for t in bench["stats"]["data"]]
    return out


def write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def gate(baseline, current, *extra, tmp_path=None):
    """Exit code of the gate, plus the derived metrics it wrote (when tmp_path is given)."""
    argv = ["--baseline", str(baseline), "--current", str(current), *extra]
    if tmp_path is None:
        return cli(argv), None
    out = tmp_path / "metrics.json"
    code = cli(argv + ["--json-out", str(out)])
    return code, json.loads(out.read_text())["checks"]


def failed(checks):
    return {c["label"] for c in checks if not c["ok"]}


def wave_factor(method, factor):
    return lambda info: factor if info["method"] == method else 1.0


# ---------------------------------------------------------------------------------------------
# the committed baseline


def test_baseline_is_complete_and_small(baseline_doc):
    cells = {(b["extra_info"]["level"], b["extra_info"]["pass"], b["extra_info"]["method"], b["extra_info"]["seq_len"])
             for b in baseline_doc["benchmarks"]}
    assert len(cells) == 2 * 2 * 4 * 4  # level x pass x method x N
    assert {c[2] for c in cells} == {"wave", "wave-field", "softmax-sdpa", "softmax-naive"}
    assert BASELINE.stat().st_size < 200_000


def test_identical_passes(tmp_path, capsys):
    code, checks = gate(BASELINE, BASELINE, tmp_path=tmp_path)
    assert code == 0
    # per level and pass: 2 wave x 2 softmax pairs x (4 lengths + 1 geometric mean), 2 exponents
    assert sum(c["metric"] == "ratio" for c in checks) == 64
    assert sum(c["metric"] == "ratio-gmean" for c in checks) == 16
    assert sum(c["metric"] == "exponent" for c in checks) == 8
    assert all(c["change"] == pytest.approx(0.0, abs=1e-12) for c in checks)
    assert "bench.regress: ok" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# noise and drift pass


def test_uniform_drift_cancels(tmp_path, baseline_doc):
    """A machine 1.4x slower everywhere: every ratio and exponent is unchanged."""
    current = write(tmp_path, "slow_machine.json", scaled(baseline_doc, lambda info: 1.4))
    code, checks = gate(BASELINE, current, tmp_path=tmp_path)
    assert code == 0
    assert max(abs(c["change"]) for c in checks) < 1e-9


@pytest.mark.parametrize("seed", range(5))
def test_run_to_run_noise_passes(tmp_path, baseline_doc, seed):
    """A machine 1.4x slower, times an independent factor per cell in [1/1.1, 1.1] (real runs
    moved a cell by 5% typically, docs/regression.md). Within the tolerances whatever the draw:
    a ratio moves by at most 1.1^2 = +21%, an exponent by at most 1.15 ln 1.1 = 0.11."""
    rng = random.Random(seed)
    per_cell = {}

    def factor(info):
        key = (info["level"], info["pass"], info["seq_len"], info["method"])
        return 1.4 * per_cell.setdefault(key, math.exp(rng.uniform(-math.log(1.1), math.log(1.1))))

    current = write(tmp_path, "noisy.json", scaled(baseline_doc, factor))
    code, checks = gate(BASELINE, current, tmp_path=tmp_path)
    assert code == 0, failed(checks)


def test_length_drift_leaves_ratios_unchanged(tmp_path, baseline_doc):
    """Every time of one length times the same factor in [0.8, 1.25] (the machine slowing down while
    one length runs): ratios and their means do not move at all. The exponents do, by up to 0.26
    here, which is why the exponent tolerance is set from real runs (docs/regression.md)."""
    rng = random.Random(7)
    per_length = {}

    def factor(info):
        key = (info["level"], info["pass"], info["seq_len"])
        return per_length.setdefault(key, math.exp(rng.uniform(math.log(0.8), math.log(1.25))))

    current = write(tmp_path, "length_drift.json", scaled(baseline_doc, factor))
    _, checks = gate(BASELINE, current, "--exponent-tol", "10", tmp_path=tmp_path)
    ratios = [c for c in checks if c["metric"] != "exponent"]
    assert len(ratios) == 80 and max(abs(c["change"]) for c in ratios) < 1e-9


# ---------------------------------------------------------------------------------------------
# regressions fail


@pytest.mark.parametrize("method", ["wave", "wave-field"])
def test_2x_slowdown_of_a_wave_method_fails(tmp_path, baseline_doc, capsys, method):
    current = write(tmp_path, "slower.json", scaled(baseline_doc, wave_factor(method, 2.0)))
    code, checks = gate(BASELINE, current, tmp_path=tmp_path)
    assert code == 1
    ratios = [c for c in checks if c["metric"] != "exponent"]
    mine = {c["label"] for c in ratios if c["name"].startswith(f"{method}/")}
    assert len(mine) == 40 and failed(checks) == mine  # every ratio of that method and its means, nothing else
    assert all(c["change"] == pytest.approx(1.0) for c in ratios if c["label"] in mine)
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "| metric" in out and "tolerance" in out


def test_2x_slowdown_at_the_longest_length_fails_ratio_and_exponent(tmp_path, baseline_doc):
    def factor(info):
        hit = (info["level"], info["pass"], info["method"], info["seq_len"]) == ("core", "fwd", "wave", 2048)
        return 2.0 if hit else 1.0

    current = write(tmp_path, "slower_2048.json", scaled(baseline_doc, factor))
    code, checks = gate(BASELINE, current, tmp_path=tmp_path)
    assert code == 1
    # the geometric mean over 4 lengths moves by 2^(1/4) = +19%: within its tolerance
    assert failed(checks) == {"core/fwd ratio wave/softmax-sdpa N=2048", "core/fwd ratio wave/softmax-naive N=2048",
                              "core/fwd exponent wave N=256..2048"}
    (exp,) = [c for c in checks if c["label"] == "core/fwd exponent wave N=256..2048"]
    # 4 lengths an octave apart: a factor 2 at the last moves the slope by 1.5 / 5 = 0.3
    assert exp["change"] == pytest.approx(0.3, abs=1e-6)


def test_quadratic_wave_fails_on_exponent(tmp_path, baseline_doc):
    """wave made O(N^2): t(N) = t(256) (N / 256)^2 in every level and pass."""
    doc = copy.deepcopy(baseline_doc)
    first = {(b["extra_info"]["level"], b["extra_info"]["pass"]): b["stats"]["median"]
             for b in doc["benchmarks"] if b["extra_info"]["method"] == "wave" and b["extra_info"]["seq_len"] == 256}
    for b in doc["benchmarks"]:
        info = b["extra_info"]
        if info["method"] == "wave":
            b["stats"]["median"] = first[(info["level"], info["pass"])] * (info["seq_len"] / 256) ** 2
    current = write(tmp_path, "quadratic.json", doc)
    code, checks = gate(BASELINE, current, tmp_path=tmp_path)
    assert code == 1
    exps = {c["label"]: c for c in checks if c["metric"] == "exponent"}
    for level in ("core", "layer"):
        for pas in ("fwd", "fwdbwd"):
            check = exps[f"{level}/{pas} exponent wave N=256..2048"]
            assert check["current"] == pytest.approx(2.0) and not check["ok"]
            assert exps[f"{level}/{pas} exponent wave-field N=256..2048"]["ok"]


def test_moderate_slowdown_everywhere_fails_on_the_mean(tmp_path, baseline_doc):
    """1.3x at every length: each per-length ratio is within its tolerance, their mean is not."""
    assert RATIO_TOL > 0.3 > GMEAN_TOL and EXPONENT_TOL == 0.25
    current = write(tmp_path, "slower13.json", scaled(baseline_doc, wave_factor("wave", 1.3)))
    code, checks = gate(BASELINE, current, tmp_path=tmp_path)
    assert code == 1 and {c["metric"] for c in checks if not c["ok"]} == {"ratio-gmean"}


def test_tolerance_flags(tmp_path, baseline_doc):
    """A 1.2x wave slowdown passes the defaults; tighter tolerances, as fractions or percentages, catch it."""
    current = write(tmp_path, "slower12.json", scaled(baseline_doc, wave_factor("wave", 1.2)))
    assert gate(BASELINE, current)[0] == 0
    assert gate(BASELINE, current, "--gmean-tol", "10%")[0] == 1
    assert gate(BASELINE, current, "--ratio-tol", "0.15")[0] == 1
    assert gate(BASELINE, current, "--ratio-tol", "15%", "--gmean-tol", "0.5")[0] == 1


# ---------------------------------------------------------------------------------------------
# bench.scaling timings.csv input


def to_timings_csv(path, doc, extra_rows=()):
    """A bench.scaling timings.csv (schema columns) with one ok row per benchmark of doc."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for b in doc["benchmarks"]:
            info = b["extra_info"]
            writer.writerow({"method": info["method"], "level": info["level"], "pass": info["pass"],
                             "device": info["device"], "dtype": info["dtype"], "batch": info["batch"],
                             "heads": info["heads"], "head_dim": info["head_dim"], "seq_len": info["seq_len"],
                             "status": "ok", "median_ms": b["stats"]["median"] * 1e3, "rank": 0})
        for row in extra_rows:
            writer.writerow(row)
    return str(path)


NOT_OK_ROWS = [  # must be ignored: not ok, or ok without a time
    {"method": "wave", "level": "core", "pass": "fwd", "device": "cpu", "dtype": "float32", "batch": 1, "heads": 8,
     "head_dim": 64, "seq_len": 4096, "status": "skipped", "reason": "over budget", "median_ms": ""},
    {"method": "softmax-naive", "level": "core", "pass": "fwd", "device": "cpu", "dtype": "float32", "batch": 1,
     "heads": 8, "head_dim": 64, "seq_len": 4096, "status": "oom", "reason": "oom", "median_ms": ""},
    {"method": "softmax-sdpa", "level": "core", "pass": "fwd", "device": "cpu", "dtype": "float32", "batch": 1,
     "heads": 8, "head_dim": 64, "seq_len": 4096, "status": "ok", "median_ms": ""},
]


def test_timings_csv(tmp_path, baseline_doc):
    base_csv = to_timings_csv(tmp_path / "base_timings.csv", baseline_doc, NOT_OK_ROWS)
    same_csv = to_timings_csv(tmp_path / "timings.csv", scaled(baseline_doc, lambda info: 1.4), NOT_OK_ROWS)
    slow_csv = to_timings_csv(tmp_path / "slow_timings.csv", scaled(baseline_doc, wave_factor("wave-field", 2.0)))
    code, checks = gate(base_csv, same_csv, tmp_path=tmp_path)
    assert code == 0 and len(checks) == 88  # the 4096 rows add nothing
    assert gate(base_csv, slow_csv)[0] == 1
    assert gate(BASELINE, same_csv)[0] == 0  # JSON baseline against a CSV run: same configuration, same metrics
    assert gate(BASELINE, slow_csv)[0] == 1


def test_a_method_that_stops_running_is_lost(tmp_path, baseline_doc, capsys):
    """wave-field failing at every length (its rows say error) passed: the gate compared what was left."""
    def without(keep):
        return {"benchmarks": [b for b in baseline_doc["benchmarks"] if keep(b["extra_info"])]}

    failing = [{**r, "method": "wave-field", "status": "error", "reason": "RuntimeError", "median_ms": ""}
               for r in ({"level": lvl, "pass": pas, "device": "cpu", "dtype": "float32", "batch": 1, "heads": 8,
                          "head_dim": 64, "seq_len": n} for lvl in ("core", "layer") for pas in ("fwd", "fwdbwd")
                         for n in (256, 512, 1024, 2048))]
    current = to_timings_csv(tmp_path / "timings.csv", without(lambda i: i["method"] != "wave-field"), failing)
    code, checks = gate(BASELINE, current, tmp_path=tmp_path)
    lost = sorted(c["label"] for c in checks if c["metric"] == "lost")
    assert code == 1 and len(lost) == 16 and all(not c["ok"] for c in checks if c["metric"] == "lost")
    assert "core/fwd lost wave-field N=2048" in lost
    out = capsys.readouterr().out
    assert "REGRESSED: 16 of" in out and "16 lost cells" in out and "| no time |" in out
    # only the longest length lost (out of memory there, say): that one cell fails
    oom = without(lambda i: not (i["method"] == "wave" and i["seq_len"] == 2048 and i["level"] == "layer"))
    code, checks = gate(BASELINE, write(tmp_path, "oom.json", oom), tmp_path=tmp_path)
    assert code == 1 and failed(checks) == {"layer/fwd lost wave N=2048", "layer/fwdbwd lost wave N=2048"}
    # no wave method at all is lost everywhere, not "bad input"
    code, checks = gate(BASELINE, write(tmp_path, "soft.json", without(lambda i: i["method"].startswith("soft"))),
                        tmp_path=tmp_path)
    assert code == 1 and len(failed(checks)) == 32
    # a shorter run (no method timed N=2048) loses nothing: those lengths were not measured
    short = without(lambda i: i["seq_len"] < 2048)
    code, checks = gate(BASELINE, write(tmp_path, "short.json", short), tmp_path=tmp_path)
    assert code == 0 and not [c for c in checks if c["metric"] == "lost"]


def test_timings_csv_slowest_rank_counts(tmp_path, baseline_doc):
    """Two ranks measured each cell: the slower one is the cell's time (a synchronous step waits for it)."""
    path = to_timings_csv(tmp_path / "ranks.csv", baseline_doc)
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        for row in rows:
            slow = 2.0 if row["method"] == "wave" else 0.5
            writer.writerow(dict(row, rank=1, median_ms=float(row["median_ms"]) * slow))
    code, checks = gate(BASELINE, path, tmp_path=tmp_path)
    assert code == 1
    assert all(not c["ok"] for c in checks if c["metric"] != "exponent" and c["name"].startswith("wave/"))


# ---------------------------------------------------------------------------------------------
# bad input: exit 2, one line


def test_bad_input_exits_2(tmp_path, baseline_doc, capsys):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    no_list = write(tmp_path, "nolist.json", {"machine_info": {}})
    no_cols = tmp_path / "timings.csv"
    no_cols.write_text("method,seq_len\nwave,256\n")
    txt = tmp_path / "timings.txt"
    txt.write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "run").mkdir()  # a bench.scaling run folder of another configuration (bench.scaling --quick)
    quick = to_timings_csv(tmp_path / "run" / "timings.csv", {"benchmarks": [
        {**b, "extra_info": {**b["extra_info"], "heads": 2, "head_dim": 16}} for b in baseline_doc["benchmarks"]]})
    for current, says in [(tmp_path / "missing.json", "--current"), (bad_json, "bad.json"), (no_list, "nolist.json"),
                          (no_cols, "timings.csv"), (txt, "--current"),
                          (tmp_path / "empty", "folder without a timings.csv"),  # was: "does not exist"
                          (tmp_path / "run", "B=1 H=8 d=64 (core/fwd, core/fwdbwd, layer/fwd, layer/fwdbwd) against "
                                             "cpu float32 B=1 H=2 d=16"),  # was: "share no level/pass with ..."
                          (quick, "H=2 d=16")]:
        code, _ = gate(BASELINE, current)
        err = capsys.readouterr().err
        assert code == 2, current
        assert err.count("\n") == 1 and err.startswith("python -m bench.regress: error:") and says in err, err
    longest = max(b["extra_info"]["seq_len"] for b in baseline_doc["benchmarks"])
    code, _ = gate(BASELINE, BASELINE, "--min-seq-len", str(longest + 1))  # was: "share no level/pass with ..."
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"--min-seq-len {longest + 1}" in err and f"N={longest}" in err, err
    for flags in (["--ratio-tol", "-1"], ["--ratio-tol", "abc%"], ["--min-lengths", "1"], ["--exponent-tol", "-0.1"]):
        with pytest.raises(SystemExit) as exc:
            cli(["--baseline", str(BASELINE), "--current", str(BASELINE), *flags])
        assert exc.value.code == 2, flags
        assert capsys.readouterr().err.count("\n") == 1


def test_command_line_bad_input_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.regress", "--baseline", str(BASELINE),
                           "--current", str(tmp_path / "nope.json")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "nope.json" in proc.stderr


def test_faster_short_lengths_raise_the_slope_without_failing(tmp_path, baseline_doc):
    """wave 2x faster at N=256 and 512 (fixed per-call costs removed), unchanged above: the exponent
    rises by far more than its tolerance, but nothing got slower, so the one-sided gate passes."""
    def factor(info):
        return 0.5 if info["method"] == "wave" and info["seq_len"] <= 512 else 1.0

    current = write(tmp_path, "faster_short.json", scaled(baseline_doc, factor))
    code, checks = gate(BASELINE, current, tmp_path=tmp_path)
    exp = [c for c in checks if c["label"] == "core/fwd exponent wave N=256..2048"]
    assert exp and exp[0]["change"] > EXPONENT_TOL
    # the longest length is unchanged (not faster), so the steeper slope still counts there
    assert code == 1 and not exp[0]["ok"]

    def factor2(info):  # ...and with the longest length a little faster too, as a real speed-up gives
        return 0.5 if info["method"] == "wave" and info["seq_len"] <= 512 else \
            0.9 if info["method"] == "wave" else 1.0

    current = write(tmp_path, "faster_all.json", scaled(baseline_doc, factor2))
    code, checks = gate(BASELINE, current, tmp_path=tmp_path)
    assert code == 0, failed(checks)


def test_json_out_that_cannot_be_written_names_the_path_given(tmp_path, capsys, monkeypatch):
    """The error named the hidden temp file the write goes through ('/tmp/.x.1234-ab12cd34.tmp: Is a directory'),
    and came once both files were read and compared (here: a missing --current was named instead)."""
    (tmp_path / "file").write_text("x\n")
    for out, why in ((tmp_path, "is a folder"), (tmp_path / "file" / "m.json", "is a file"),
                     (Path("/proc/bench-fault-test/m.json"), "cannot write")):
        code, _ = gate(BASELINE, tmp_path / "missing.json", "--json-out", str(out))
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert f"--json-out {str(out)!r}" in err and why in err and ".tmp" not in err, err
    assert gate(BASELINE, BASELINE, "--json-out", str(tmp_path / "new" / "m.json"))[0] == 0  # its folder is made
    assert (tmp_path / "new" / "m.json").is_file()

    def read_only(*args, **kwargs):  # a read-only file system refuses the write, and removing the temp file too
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(args[0]))
    monkeypatch.setattr(os, "replace", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    capsys.readouterr()
    code, _ = gate(BASELINE, BASELINE, "--json-out", str(tmp_path / "m.json"))
    err = capsys.readouterr().err
    assert code == 2 and f"{str(tmp_path / 'm.json')!r}" in err and "Read-only" in err and ".tmp" not in err, err


@pytest.mark.parametrize("which", ["--baseline", "--current"])
def test_json_out_over_an_input_is_refused(tmp_path, capsys, which):
    """--json-out naming the --current (or --baseline) file replaced the measured benchmarks with the metrics."""
    run = tmp_path / "run.json"
    shutil.copy(BASELINE, run)
    before = run.read_bytes()
    base, cur = (run, BASELINE) if which == "--baseline" else (BASELINE, run)
    code, _ = gate(base, cur, "--json-out", str(tmp_path / "." / "run.json"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and which in err, err
    assert run.read_bytes() == before

