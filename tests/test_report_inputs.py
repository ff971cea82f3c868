"""bench.report on inputs the committed runs do not show: damaged or older run folders, runs of
several devices, head shapes and commits on one page, diverged seeds, failed leak demonstrations.
Each test names the defect it guards against. The run folders are the synthetic ones of test_report.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from bench.common.cli import run_cli
from bench.report.__main__ import PROG, main
from test_report import (FIXTURE, _cells, _cli, _env, _section, _write_csv, make_diagnostics_run,
                         make_quality_run)


def test_diagnostics_summary_kept_when_its_command_no_longer_parses(tmp_path, capsys):
    from bench.report.runs import Run, regenerate

    make_diagnostics_run(tmp_path / "diag")
    env = json.loads((tmp_path / "diag" / "env.json").read_text())
    (tmp_path / "diag" / "env.json").write_text(json.dumps({**env, "argv": [env["argv"][0], "--probe-len", "many"]}))
    before = (tmp_path / "diag" / "summary.md").read_text()
    regenerate(Run(path=tmp_path / "diag", kind="diagnostics", rel="diag"))
    assert (tmp_path / "diag" / "summary.md").read_text() == before
    assert "summary.md could not be regenerated" in capsys.readouterr().err


def _diag_run(tmp_path: Path, name: str, sha: str, device: str = "cpu", dirty: bool = False):
    from bench.report.runs import Run

    return Run(path=tmp_path / "runs" / name, kind="diagnostics", rel=f"runs/{name}",
               env={"git": {"sha_short": sha, "dirty": dirty}, "device": device})


def _claim_row(claim: str, diag: list, quality_runs: list = ()) -> list[str]:
    from bench.report import evidence as ev
    from bench.report.page import claims_rows

    rows = claims_rows(ev.scaling_cells([]), list(quality_runs), diag, {"wave": 1, "standard": 1}, "../docs")
    return next(r for r in rows if r[0].startswith(claim))


def test_causality_claim_names_every_commit_it_counts(tmp_path):
    """The CPU cell sums the probes of every CPU diagnostics run, so it names each of their commits (it named
    only the first run's)."""
    heads = {"heads": 4, "local": 4, "medium": 0, "long-range": 0, "max_reach": 2.0}
    probes = {"pass": 10, "fail": 0, "leaks": 4, "demos": 4}
    diag = [(_diag_run(tmp_path, name, sha), heads, probes) for name, sha in
            (("a", "1111111a"), ("b", "2222222b"), ("c", "1111111a"))]
    cpu = _claim_row("causal", diag)[2]
    assert "30 PASS, 0 FAIL (3 runs, 1111111, 2222222)" in cpu, cpu


def test_a_leak_demonstration_that_shows_no_leak_is_not_hidden(tmp_path):
    """A leak demo whose probe shows no leak (verdict FAIL: the probe is broken) read '3 of 3 leak' on the page."""
    from bench.report import evidence as ev
    from bench.report.page import diagnostics_section

    make_diagnostics_run(tmp_path / "diag")
    with (tmp_path / "diag" / "diagnostics.csv").open("a") as fh:
        fh.write("leak_demo,stride 1.29,,max_score,0.0,1e-09,FAIL\n")
    run = _diag_run(tmp_path, "diag", "1111111a")
    run.path = tmp_path / "diag"
    heads, probes = ev.diagnostics(run)
    assert (probes["leaks"], probes["demos"]) == (1, 2)
    assert "V3.5's published configurations: 1 of 2 leak" in _claim_row("causal", [(run, heads, probes)])[2]
    assert "1 of 2 leaks shown" in "\n".join(diagnostics_section([(run, heads, probes)]))


def test_claim_verdict_of_a_diverged_seed_takes_no_side(tmp_path):
    """One setting whose mean PPL ratio is NaN (a diverged seed) was judged 'depends on the setting (gap larger
    than published in some, gap smaller in others)'."""
    nan = float("nan")
    q = {"tokenizer": "char", "device": "CPU", "setting": "char, seq 128", "ppl_ratio": [1.3, nan],
         "wave_acc": [40.0, nan], "std_acc": [50.0, 50.0]}
    quality_runs = [(_diag_run(tmp_path, "q", "1111111a"), q)]
    assert _claim_row("char PPL", [], quality_runs)[4] == "does not"
    assert _claim_row("char accuracy", [], quality_runs)[4] == "does not: wave less accurate"  # the finite seed


def test_diagnostics_rows_name_their_commit_and_device(tmp_path):
    """The page promises every measured number names its setup and commit; the heads-and-causality rows named
    neither (a CPU and a GPU run of different commits read alike)."""
    from bench.report.page import diagnostics_section

    heads = {"heads": 4, "local": 4, "medium": 0, "long-range": 0, "max_reach": 2.0}
    probes = {"pass": 10, "fail": 0, "leaks": 4, "demos": 4}
    diag = [(_diag_run(tmp_path, "a", "1111111a"), heads, probes),
            (_diag_run(tmp_path, "b", "2222222b", device="cuda"), heads, probes),
            (_diag_run(tmp_path, "c", "3333333c", dirty=True), heads, probes)]  # measured on a modified tree
    rows = [_cells(ln) for ln in diagnostics_section(diag) if ln.startswith("| runs/")]
    assert [r[:2] for r in rows] == [["runs/a (1111111)", "random init, CPU"], ["runs/b (2222222)", "random init, GPU"],
                                     ["runs/c (3333333+dirty)", "random init, CPU"]]
    assert "(2 runs, 1111111, 3333333+dirty)" in _claim_row("causal", diag)[2]


def test_a_folder_given_twice_is_counted_once(tmp_path, capsys, monkeypatch):
    """The page holds each folder once; the closing line counted spellings ('from 3 run folder(s)' for one)."""
    monkeypatch.chdir(tmp_path)
    make_diagnostics_run(tmp_path / "results" / "runs" / "diag")
    argv = ["results/runs/diag", "results/runs/diag/", "results/runs/../runs/diag", "--no-regenerate", "--no-plots"]
    assert run_cli(main, argv, prog=PROG) == 0
    assert capsys.readouterr().out.strip().endswith("from 1 run folder(s)")


def test_quality_run_whose_env_lacks_its_lr(tmp_path, capsys, monkeypatch):
    """An env.json without settings.preset.lr (the quality summary writes '--lr None') crashed the page with a
    TypeError traceback formatting None as a number."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results" / "runs" / "quality"
    make_quality_run(run)
    env = json.loads((run / "env.json").read_text())
    del env["settings"]["preset"]["lr"]
    (run / "env.json").write_text(json.dumps(env))
    assert run_cli(main, ["results/runs/quality", "--no-plots"], prog=PROG) == 0, capsys.readouterr().err
    quality = _section((tmp_path / "results" / "README.md").read_text(), "## Quality")
    assert "one LR nan for both, no sweep" in quality


@pytest.mark.parametrize("kind,folder,csv_name,column", [("quality", "quality", "final.csv", "test_acc"),
                                                       ("diagnostics", "diag", "diagnostics.csv", "quantity")])
def test_a_csv_without_a_column_the_page_reads(kind, folder, csv_name, column, tmp_path, capsys, monkeypatch):
    """A final.csv lacking test_ppl, test_acc or params, or a diagnostics.csv lacking quantity or value
    (hand-made or damaged), crashed with a KeyError traceback."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results" / "runs" / folder
    (make_quality_run if kind == "quality" else make_diagnostics_run)(run)
    (run / "summary.md").write_text("# kept as it is (--no-regenerate)\n")
    with (run / csv_name).open() as fh:
        rows = list(csv.DictReader(fh))
    _write_csv(run / csv_name, [c for c in rows[0] if c != column], rows)
    rc, err = _cli([f"results/runs/{folder}", "--no-plots", "--no-regenerate"], capsys)
    assert rc == 2 and err.count("\n") == 1 and f"lacks column(s) {column}" in err, err
    assert not (tmp_path / "results" / "README.md").exists()


def test_quality_row_with_an_empty_number(tmp_path, capsys, monkeypatch):
    """An empty test_ppl, test_acc or params cell (read_table lets 'nothing' pass for a number) crashed with
    ValueError: could not convert string to float: ''; it is no measurement, as NaN is."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results" / "runs" / "quality"
    make_quality_run(run)
    with (run / "final.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    rows[0].update(test_ppl="", test_acc="", params="")  # wave, seed 0
    _write_csv(run / "final.csv", list(rows[0]), rows)
    assert run_cli(main, ["results/runs/quality", "--no-plots"], prog=PROG) == 0
    assert "| nan (95% CI nan to nan, 2 seeds)" in _section((tmp_path / "results" / "README.md").read_text(),
                                                            "## Quality")


def test_diagnostics_reach_with_an_empty_value(tmp_path, capsys, monkeypatch):
    """An empty reach_tokens value crashed with ValueError: could not convert string to float: ''."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results" / "runs" / "diag"
    make_diagnostics_run(run)
    with (run / "diagnostics.csv").open("a") as fh:
        fh.write("heads,0,0,reach_tokens,,,INFO\nheads,0,1,reach_tokens,3.5,,INFO\n")
    assert run_cli(main, ["results/runs/diag", "--no-plots", "--no-regenerate"], prog=PROG) == 0
    assert "| 3.50 |" in _section((tmp_path / "results" / "README.md").read_text(), "## Heads and causality")


def test_no_plots_help_says_the_page_plots_are_not_drawn_either(tmp_path, monkeypatch):
    """--no-plots also skips the page's own plots/speedup_<device>.png; its help spoke only of run summaries."""
    from bench.report.__main__ import build_parser

    monkeypatch.chdir(tmp_path)
    shutil.copytree(FIXTURE, tmp_path / "results" / "runs" / "scaling")
    assert run_cli(main, ["results/runs/scaling", "--no-plots"], prog=PROG) == 0
    assert not (tmp_path / "results" / "plots").exists()
    assert "plots/speedup_" in " ".join(build_parser().format_help().split())


def test_no_regenerate_of_a_run_without_summary_is_refused(tmp_path, capsys, monkeypatch):
    """--no-regenerate with a run folder holding no summary.md wrote a page linking that missing file."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(FIXTURE, tmp_path / "results" / "runs" / "scaling")
    rc, err = _cli(["results/runs/scaling", "--no-plots", "--no-regenerate"], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert "'results/runs/scaling' has no summary.md" in err and "drop --no-regenerate" in err, err
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["runs"]  # nothing written
    assert sorted(p.name for p in (tmp_path / "results" / "runs" / "scaling").iterdir()) == sorted(
        p.name for p in FIXTURE.iterdir())


def test_runs_of_other_head_shapes_are_not_one_setups_range(tmp_path):
    """Two runs at one device, dtype, B and thread count but other --n-heads / --head-dim were shown as one
    setup's min-max range ('3.78-11.3x (2 runs)'); a level whose runs differ in H and d now names them."""
    from bench.report import evidence as ev
    from bench.report.runs import Run

    runs = []
    for name, heads, head_dim in (("a", "8", "64"), ("b", "16", "128")):
        shutil.copytree(FIXTURE, tmp_path / name)
        with (FIXTURE / "timings.csv").open() as fh:
            rows = [dict(r, **({"heads": heads, "head_dim": head_dim} if r["level"] == "core" else {}))
                    for r in csv.DictReader(fh)]
        _write_csv(tmp_path / name / "timings.csv", list(rows[0]), rows)
        runs.append(Run(path=tmp_path / name, kind="scaling", rel=name, env=_env([])))
    cells = ev.scaling_cells(runs)
    core = ev.ratio(cells, "core", "fwd", 2048, "softmax-sdpa", "wave")
    assert sorted(core) == ["CPU fp32 B=1, 2 threads, H=16 d=128", "CPU fp32 B=1, 2 threads, H=8 d=64"]
    assert all(len(r.values) == 1 for r in core.values())
    model = ev.ratio(cells, "model", "fwdbwd", 1024, "softmax-sdpa", "wave")  # one shape: the label is kept
    assert list(model) == ["CPU fp32 B=8, 2 threads"] and len(model["CPU fp32 B=8, 2 threads"].values) == 2


def test_setup_label_of_a_timings_csv_without_dtype_and_batch(tmp_path):
    """An older or hand-made timings.csv without dtype and batch was labelled 'CPU , 2 threads'."""
    from bench.report import evidence as ev
    from bench.report.runs import Run

    run = Run(path=tmp_path, kind="scaling", rel="s", env=_env([]))
    assert ev.setup_label(run, {"dtype": "", "batch": float("nan"), "device": ""}) == "CPU, 2 threads"
    assert ev.setup_label(run, {"dtype": "float32", "batch": 1.0, "device": "cpu"}) == "CPU fp32 B=1, 2 threads"


def test_causality_claim_without_any_probe_is_not_measured(tmp_path):
    """A diagnostics.csv with no causality rows (0 PASS, 0 FAIL) gave the causality claim the verdict 'reproduces'."""
    heads = {"heads": 0, "local": 0, "medium": 0, "long-range": 0, "max_reach": float("nan")}
    none = {"pass": 0, "fail": 0, "leaks": 0, "demos": 0}
    assert _claim_row("causal", [(_diag_run(tmp_path, "a", "1111111a"), heads, none)])[4] == "not measured"
    some = {"pass": 3, "fail": 0, "leaks": 0, "demos": 0}
    assert _claim_row("causal", [(_diag_run(tmp_path, "a", "1111111a"), heads, some)])[4] == "reproduces"


def test_char_accuracy_of_a_gpu_run_is_in_the_gpu_column(tmp_path):
    """The accuracy claim put every char run under 'measured, CPU' and always read 'not measured' on GPU."""
    def q(device: str) -> dict:
        return {"tokenizer": "char", "device": device, "setting": f"char, seq 128, {device}", "ppl_ratio": [1.0],
                "wave_acc": [50.0], "std_acc": [50.5]}

    row = _claim_row("char accuracy", [], [(_diag_run(tmp_path, "q", "1111111a"), q("GPU"))])
    assert row[2] == "not measured" and "[char, seq 128, GPU]" in row[3], row
    row = _claim_row("char accuracy", [], [(_diag_run(tmp_path, "q", "1111111a"), q(d)) for d in ("CPU", "GPU")])
    assert "CPU]" in row[2] and "GPU" not in row[2] and "GPU]" in row[3] and row[4] == "reproduces", row


def test_head_roles_of_a_trained_gpu_run_are_in_the_gpu_column(tmp_path):
    """The head-roles claim listed every trained run under 'measured, CPU' and always read 'not measured' on GPU."""
    heads = {"heads": 4, "local": 2, "medium": 1, "long-range": 1, "max_reach": 40.0}
    run = _diag_run(tmp_path, "g", "1111111a", device="cuda")
    run.env["argv"] = ["python -m bench.diagnostics", "--checkpoint", "x.pt"]
    row = _claim_row("heads organise", [(run, heads, {"pass": 1, "fail": 0, "leaks": 0, "demos": 0})])
    assert row[2] == "not measured" and row[3].startswith("2 local, 1 medium, 1 long-range of 4 heads"), row
    assert row[3].endswith("GPU)") and row[4] == "reproduces", row


def test_a_session_page_does_not_cite_itself_as_the_session_readme(tmp_path, capsys):
    """A page written as a device session's own README.md (bench/gpu_run.sh's report step) said, once that
    README existed, 'Measured on another machine: [./README.md](./README.md) says what each folder ... holds'."""
    session = tmp_path / "results" / "gpu" / "20250101-h200_abcdef1"
    shutil.copytree(FIXTURE, session / "scaling")
    (session / "README.md").write_text("# an earlier page\n")
    argv = [str(session / "scaling"), "--out", str(session / "README.md"), "--no-plots"]
    assert run_cli(main, argv, prog=PROG) == 0
    assert "Measured on another machine" not in (session / "README.md").read_text()
    argv[2] = str(session / "PAGE.md")  # a page beside the session's README still points at it
    assert run_cli(main, argv, prog=PROG) == 0
    assert "Measured on another machine: [./README.md](./README.md)" in (session / "PAGE.md").read_text()


@pytest.mark.parametrize("vocab, label, answers", [(300, "bpe V=300", False), (8000, "bpe 8K", True),
                                                   (8192, "bpe V=8192", True)])
def test_only_a_bpe_run_near_8k_answers_the_bpe_8k_claim(vocab, label, answers, tmp_path):
    """Any BPE run was judged against the BPE-8K claim and labelled by vocab // 1000 ('bpe 0K' for V=300)."""
    from bench.report import evidence as ev
    from bench.report.runs import Run

    make_quality_run(tmp_path / "q")
    env = {**json.loads((tmp_path / "q" / "env.json").read_text()), "tokenizer": {"kind": "bpe", "vocab_size": vocab}}
    run = Run(path=tmp_path / "q", kind="quality", rel="runs/q", env=env)
    q = ev.quality(run)
    assert q["setting"].startswith(f"{label}, seq 128")
    cpu = _claim_row("BPE-8K", [], [(run, q)])[2]
    assert (cpu != "not measured") == answers and (label in cpu) == answers, cpu


@pytest.mark.parametrize("methods, oom, shown", [
    (["wave", "standard-matched"], {}, "CPU, vs standard-matched |"),  # --pairing matched: its own baseline
    (["wave-scaled-pos", "standard"], {}, "not compared: no finished wave and standard"),
    (["wave", "standard"], {("wave", "0"), ("standard", "1")}, "not compared: wave and standard share no seed"),
])
def test_a_quality_run_without_a_wave_standard_pair(methods, oom, shown, tmp_path, capsys, monkeypatch):
    """A run without methods named exactly wave and standard was dropped from the Quality table without a word
    (claims 'not measured'); one whose wave and standard shared no seed after oom rows crashed (ZeroDivisionError)."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results" / "runs" / "quality"
    make_quality_run(run)
    env = json.loads((run / "env.json").read_text())
    env["methods"] = {m: {"params": 1000, "config": {"d_ff": 512}} for m in methods}
    (run / "env.json").write_text(json.dumps(env))
    with (run / "final.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    renamed = dict(zip(["wave", "standard-matched" if "standard-matched" in methods else "standard"], methods))
    rows = [dict(r, method=renamed[r["method"]], oom=str(int((renamed[r["method"]], r["seed"]) in oom)))
            for r in rows if r["method"] in renamed]
    _write_csv(run / "final.csv", list(rows[0]), rows)
    rc, err = _cli(["results/runs/quality", "--no-plots"], capsys)
    quality = _section((tmp_path / "results" / "README.md").read_text(), "## Quality")
    assert rc == 0 and shown in quality, quality
    assert (err.count("not compared") == 1) == ("not compared" in shown), err


def test_an_interrupted_sweep_is_labelled_incomplete_and_not_judged(tmp_path, capsys, monkeypatch):
    """A sweep cut after its first LRs was published as tuned ('kept (edge...)', a claim verdict from one seed)."""
    monkeypatch.chdir(tmp_path)
    committed = Path(__file__).resolve().parents[1] / "results/runs/20261130-cpu-small-lrsweep_quality"
    run = tmp_path / "results" / "runs" / "cut"
    shutil.copytree(committed, run, ignore=shutil.ignore_patterns("checkpoints", "plots"))
    lines = (run / "final.csv").read_text().splitlines(keepends=True)
    (run / "final.csv").write_text("".join(lines[:5]))  # header and the first 4 jobs of 10
    rc, err = _cli(["results/runs/cut", "--no-plots"], capsys)
    page = (tmp_path / "results" / "README.md").read_text()
    assert rc == 0 and "not compared: incomplete: 4 of the 10 jobs" in _section(page, "## Quality")
    assert "| char PPL" in page and "[char, seq 128" not in _section(page, "## The claims at a glance")
    assert "**Incomplete:** 4 of the 10 jobs" in (run / "summary.md").read_text()
    assert err.count("\n") == 1 and "not compared: incomplete" in err, err


@pytest.mark.parametrize("second, text, column", [
    ((4, 32), "below 4 local, below 32 medium, otherwise long-range. Causality: perturbation and gradient probes "
              "in float64", None),
    ((0.5, 1), "by the run's role thresholds", ["4 / 32; float64", "0.5 / 1; float32"]),
])
def test_heads_text_names_each_runs_role_thresholds_and_probe_dtype(second, text, column, tmp_path):
    """The heads-and-causality text said 'below 4 local, below 32 medium' and 'float64' whatever the runs used."""
    from bench.diagnostics.__main__ import SUMMARY_SETTINGS
    from bench.report.page import diagnostics_section

    heads = {"heads": 4, "local": 4, "medium": 0, "long-range": 0, "max_reach": 2.0}
    probes = {"pass": 10, "fail": 0, "leaks": 4, "demos": 4}
    diag = []
    for name, thresholds in (("a", (4, 32)), ("b", second)):
        run = _diag_run(tmp_path, name, "1111111a")
        dtype = "float64" if thresholds == (4, 32) else "float32"
        run.env["settings"] = {**dict.fromkeys(SUMMARY_SETTINGS), "role_thresholds": thresholds, "probe_dtype": dtype}
        diag.append((run, heads, probes))
    lines = diagnostics_section(diag)
    assert text in lines[2], lines[2]
    assert [_cells(ln)[-1] for ln in lines if ln.startswith("| runs/")] == (column or ["10 PASS, 0 FAIL, 4 of 4 "
                                                                                     "leaks shown"] * 2)


def test_a_single_repetition_time_is_marked_wherever_the_page_quotes_it(tmp_path, monkeypatch):
    """An SDPA cell timed once (reps 1) read on the page as a median: the 2K claim, the level table, the key numbers
    and the peers table showed its ratio and time unmarked under 'ms = median time per call'."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results" / "runs" / "scaling"
    shutil.copytree(FIXTURE, run)
    rows = [dict(r, reps="1") if (r["method"], r["level"], r["seq_len"]) == ("softmax-sdpa", "core", "2048") else r
            for r in csv.DictReader((FIXTURE / "timings.csv").read_text().splitlines())]
    _write_csv(run / "timings.csv", list(rows[0]), rows)
    assert run_cli(main, ["results/runs/scaling", "--no-plots"], prog=PROG) == 0
    page = (tmp_path / "results" / "README.md").read_text()
    claim = next(_cells(ln) for ln in page.splitlines() if ln.startswith("| speed 2K"))
    assert "x (1 rep) [CPU fp32 B=1" in claim[2] and "(1 rep)" in claim[4], claim
    assert next(ln for ln in page.splitlines() if "SDPA, core fwd, 2K [" in ln).endswith("x (1 rep)")  # key number
    level = _section(page, "## Speed and memory per level").split("### core, forward + backward")[0]
    row = next(_cells(ln) for ln in level.splitlines() if ln.startswith("| CPU") and "| 2048 |" in ln)
    assert row[3].endswith("(1 rep)") and row[4].endswith("x (1 rep)") and "rep" not in row[2] + row[5] + row[7]


@pytest.mark.parametrize("ratios, wave_acc, ppl, acc", [
    ([0.8, 0.82], [33.0, 34.0], "reproduces", "reproduces"),  # wave better than published: 'or better'
    ([1.06, 1.1], [25.0, 25.5], "reproduces", "reproduces"),  # within 10% of 1.05; 0.75 points below standard
    ([1.3, 1.4], [20.0, 21.0], "does not: gap larger than published", "does not: wave less accurate"),
])
def test_quality_verdicts_follow_the_stated_rule(ratios, wave_acc, ppl, acc, tmp_path):
    """The page states 'reproduces (within 10% or better)', but a wave model better than published (PPL ratio 0.81
    against 1.05) was 'does not: gap smaller than published', and 7 accuracy points above standard 'partly'."""
    q = {"tokenizer": "char", "device": "CPU", "setting": "char, seq 1024", "ppl_ratio": ratios,
         "wave_acc": wave_acc, "std_acc": [26.0, 26.0]}
    quality_runs = [(_diag_run(tmp_path, "q", "1111111a"), q)]
    assert [_claim_row(claim, [], quality_runs)[4] for claim in ("char PPL", "char accuracy")] == [ppl, acc]


@pytest.mark.parametrize("sweeps, cell, named", [
    (({"field_stride": 4.0}, {"field_stride": 8.0}), ("core", "fwd", 2048), ["stride 4", "stride 8"]),
    (({"model_layers": 1, "model_dim": 256}, {"model_layers": 4, "model_dim": 256}), ("model", "fwdbwd", 1024),
     ["LM L=1 D=256", "LM L=4 D=256"]),
    (({"model_layers": 1, "model_dim": 256}, {"model_layers": 4, "model_dim": 256}), ("core", "fwd", 2048), []),
])
def test_runs_of_other_strides_or_lm_sizes_are_not_one_setups_range(sweeps, cell, named, tmp_path):
    """Runs at --field-stride 4 and 8, or of --model-layers 1 and 4, were one setup's run-to-run spread
    ('0.833-1.63x (2 runs)'); where a level's runs differ in them, each is its own setup, named."""
    from bench.report import evidence as ev
    from bench.report.runs import Run

    for name in "ab":
        shutil.copytree(FIXTURE, tmp_path / name)
    runs = [Run(path=tmp_path / name, kind="scaling", rel=name, env=_env([], sweep=sweep))
            for name, sweep in zip("ab", sweeps)]
    got = ev.ratio(ev.scaling_cells(runs), *cell, "softmax-sdpa", "wave")
    assert [setup.rsplit(", ", 1)[1] for setup in sorted(got) if named] == named, got
    assert [len(r.values) for r in got.values()] == ([1, 1] if named else [2]), got  # the core: one setup, 2 runs
