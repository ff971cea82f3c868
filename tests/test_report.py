"""bench.report (results/README.md from run folders) and bench/gpu_run.sh.

The results tree is built in tmp_path: a copy of the synthetic scaling fixture plus small synthetic
quality and diagnostics runs written here with the columns those harnesses write.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common.cli import run_cli
from bench.report import markdown as md
from bench.report.__main__ import PROG, main

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "scaling_run"
PNG = b"\x89PNG\r\n\x1a\n"  # a placeholder: the report only links plot files

QUALITY_FINAL = {  # method -> {seed: (test_ppl, test_batch_mean_ppl)}
    "wave": {0: (6.5, 6.6), 1: (6.3, 6.4)},
    "standard": {0: (6.0, 6.1), 1: (6.1, 6.2)},
    "standard-matched": {0: (5.9, 6.0), 1: (6.0, 6.1)},
}


def _env(argv: list[str], **extra) -> dict:
    return {"created": "2025-02-03T04:05:06+0000", "argv": argv, "git": {"sha": "a" * 40, "sha_short": "aaaaaaaa", "dirty": False},
            "python": "3.11.7", "torch": "2.13.0+cpu", "cuda": None, "cudnn": None, "gpus": [],
            "cpu_model": "Test CPU", "cpu_cores_logical": 2, "torch_threads": 2, "device": "cpu", **extra}


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})


def make_quality_run(path: Path) -> None:
    from bench.quality.schema import CURVE_COLUMNS, FINAL_COLUMNS

    path.mkdir(parents=True)
    cmd = "python -m bench.quality --preset tiny --corpus fixture --steps 20 --seeds 0 1"
    preset = {"name": "tiny", "corpus": "fixture", "tokenizer": "char", "batching": "contiguous", "seq_len": 128,
              "batch_size": 16, "d_model": 128, "n_layers": 3, "n_heads": 4, "lr": 2e-3, "min_lr": 1e-4}
    env = _env(shlex.split(cmd)[3:], command=cmd, kind="quality", preset="tiny",
               settings={"preset": preset, "overrides": ["corpus", "steps"], "seeds": [0, 1], "pairing": "both"},
               plan={"total_steps": 20, "warmup_steps": 2, "eval_every": 10, "batches_per_epoch": 3, "budget": "steps=20"},
               epochs_covered=6.67, tokenizer={"kind": "char", "vocab_size": 40}, corpus={"name": "fixture"},
               methods={m: {"params": 1000 + i, "config": {"d_ff": 512}} for i, m in enumerate(QUALITY_FINAL)})
    (path / "env.json").write_text(json.dumps(env))
    finals, curves = [], []
    for m, seeds in QUALITY_FINAL.items():
        for seed, (ppl, bm) in seeds.items():
            finals.append({"method": m, "seed": seed, "test_ppl": ppl, "test_batch_mean_ppl": bm, "test_loss": 1.8,
                           "test_bpc": 2.6, "test_acc": 0.5, "params": 1000, "tokens_per_s": 100.0, "wall_s": 3.0,
                           "peak_mem_mb": 50.0, "best_step": 20, "nonfinite_steps": 0, "steps": 20})
            curves += [{"method": m, "seed": seed, "step": s, "tokens": s * 2048, "split": "val", "loss": 2.0 - s / 40,
                        "ppl": 7.0, "bpc": 2.8, "acc": 0.4, "lr": 1e-3, "wall_s": s / 10} for s in (10, 20)]
    _write_csv(path / "final.csv", FINAL_COLUMNS, finals)
    _write_csv(path / "curves.csv", CURVE_COLUMNS, curves)


def make_diagnostics_run(path: Path) -> None:
    (path / "plots").mkdir(parents=True)
    cmd = ["python -m bench.diagnostics", "--checkpoint", "runs/q/checkpoints/wave-seed0.pt", "--device", "cpu"]
    (path / "env.json").write_text(json.dumps(_env(cmd, harness="bench.diagnostics")))
    rows = [
        {"check": "impulse", "layer": 0, "head": 0, "quantity": "max_abs_diff", "value": 1e-7, "threshold": 1e-5, "verdict": "PASS"},
        {"check": "conservation", "layer": 0, "head": 0, "quantity": "ratio_p2", "value": 0.9, "threshold": 1.00001, "verdict": "PASS"},
        {"check": "causality", "layer": 0, "head": "", "quantity": "perturbation:score@5", "value": 0.0, "threshold": 1e-9, "verdict": "PASS"},
        {"check": "leak_demo", "layer": "stride 0.125", "head": "", "quantity": "max_score", "value": 0.9, "threshold": 1e-9, "verdict": "EXPECTED-LEAK"},
        {"check": "heads", "layer": 0, "head": 0, "quantity": "omega", "value": 0.3, "threshold": "", "verdict": "INFO"},
    ]
    _write_csv(path / "diagnostics.csv", ["check", "layer", "head", "quantity", "value", "threshold", "verdict"], rows)
    (path / "plots" / "causality.png").write_bytes(PNG)
    (path / "summary.md").write_text("\n".join([
        "# Wave Field diagnostics", "", "## Verdicts", "", "```", "| not a table: inside a code fence", "```", "",
        "## Causality", "", "| group | verdict |", "|---|---|", "| model | PASS |", "",
        "See ![causality](plots/causality.png) and [the CSV](diagnostics.csv).", ""]))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """results/ with three runs and a README built by the real command line (one subprocess)."""
    root = tmp_path_factory.mktemp("report")
    runs = root / "results" / "runs"
    shutil.copytree(FIXTURE, runs / "scaling")
    (runs / "scaling" / "plots").mkdir()
    for name in ("latency_core_fwd.png", "memory_core_fwd.png", "speedup_core_fwd.png"):
        (runs / "scaling" / "plots" / name).write_bytes(PNG)
    make_quality_run(runs / "quality")
    make_diagnostics_run(runs / "diag")
    proc = subprocess.run([sys.executable, "-m", "bench.report", "results/runs/scaling", "results/runs/quality",
                           "results/runs/diag", "--no-plots"], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    readme = root / "results" / "README.md"
    return root, readme, readme.read_text()


def _tables(lines: list[str]) -> list[int]:
    """Index of the last line of every markdown table outside code fences."""
    ends, inside = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not inside and md.is_table_line(line) and not md.is_table_line(nxt):
            ends.append(i)
    return ends


def test_sections_in_fixed_order(tree):
    _, _, text = tree
    heads = ["# Published results", "## Runs", "## What reproduces and what does not", "### Speed:", "### Quality:",
             "## Scaling:", "## Quality:", "## Diagnostics:", "## Plots"]
    pos = [text.find("\n" + h) if i else text.find(h) for i, h in enumerate(heads)]
    assert all(p >= 0 for p in pos), dict(zip(heads, pos))
    assert pos == sorted(pos)
    # summaries are demoted by two levels: the README is the only level-1 heading
    assert [ln for ln in text.splitlines() if ln.startswith("# ")] == ["# Published results"]
    assert "\n### Scaling run scaling\n" in text and "\n#### 2. Measurements per level and pass\n" in text
    assert "\n### Wave Field diagnostics\n" in text
    # inside a code fence nothing is demoted or treated as a table
    assert "| not a table: inside a code fence\n```" in text


def test_index_table_has_provenance(tree):
    _, _, text = tree
    index = text.split("## Runs", 1)[1].split("## What", 1)[0]
    for rel, kind, cmd in [("runs/scaling", "scaling (SYNTHETIC", "python -m bench.scaling --preset cpu-smoke --device cpu"),
                           ("runs/quality", "quality", "python -m bench.quality --preset tiny --corpus fixture"),
                           ("runs/diag", "diagnostics", "python -m bench.diagnostics --checkpoint")]:
        row = next(ln for ln in index.splitlines() if ln.startswith(f"| [{rel}]({rel})"))
        assert f"| {kind}" in row and cmd in row and "2 logical cores" in row


def test_headline_numbers_trace_to_csvs(tree):
    _, _, text = tree
    with (FIXTURE / "timings.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["level"] == "core" and r["pass"] == "fwd" and r["status"] == "ok"]
    ms = {(r["method"], int(r["seq_len"])): float(r["median_ms"]) for r in rows}
    speed = text.split("### Speed:", 1)[1].split("### Quality:", 1)[0]
    for n in (2048, 8192):
        row = next(ln for ln in speed.splitlines() if ln.startswith(f"| runs/scaling |") and f"| {n} |" in ln)
        for base in ("softmax-sdpa", "softmax-naive"):
            ratio = ms[(base, n)] / ms[("wave", n)]
            assert f"{ratio:.2f}x" in row or f"{ratio:.1f}x" in row, (n, base, row)
    row32 = next(ln for ln in speed.splitlines() if "| 32768 |" in ln)
    assert "367x" in row32 and "not measured (softmax-naive skipped" in row32
    assert "Source: [runs/scaling/timings.csv](runs/scaling/timings.csv)" in speed

    quality = text.split("### Quality:", 1)[1].split("\n## ", 1)[0]
    w, s = QUALITY_FINAL["wave"], QUALITY_FINAL["standard"]
    expected = sum(w[k][0] / s[k][0] for k in (0, 1)) / 2
    row = next(ln for ln in quality.splitlines() if "| wave / standard |" in ln)
    assert f"{expected:.3f}" in row and "6.2 / 5.9 = 1.05" in row
    assert any("| wave / standard-matched |" in ln for ln in quality.splitlines())
    assert "Source: [runs/quality/final.csv](runs/quality/final.csv)" in quality


def test_every_table_has_a_provenance_line(tree):
    _, _, text = tree
    lines = text.splitlines()
    ends = _tables(lines)
    assert len(ends) > 20
    for i in ends:
        after = next(ln for ln in lines[i + 1:] if ln.strip())
        assert after.startswith("Source: "), (lines[i], after)
        assert ".csv" in after or "env.json" in after
        if "env.json" not in after:
            assert "machine: " in after and "software: " in after and "command: `" in after


def test_links_are_relative_and_resolve(tree):
    _, readme, text = tree
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    for t in targets:
        assert not t.startswith(("/", "http")), t
        assert (readme.parent / t.split("#")[0]).exists(), t
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "runs/scaling/plots/latency_core_fwd.png" in images
    assert "runs/diag/plots/causality.png" in images
    assert "[latency_core_fwd.png](runs/scaling/plots/latency_core_fwd.png)" in text
    assert "[the CSV](runs/diag/diagnostics.csv)" in text


def test_diagnostics_verdicts_from_csv(tree):
    _, _, text = tree
    diag = text.split("## Diagnostics:", 1)[1].split("## Plots", 1)[0]
    row = next(ln for ln in diag.splitlines() if ln.startswith("| leak_demo |"))
    assert row.rstrip().endswith("| EXPECTED-LEAK |")
    assert "Source: [runs/diag/diagnostics.csv](runs/diag/diagnostics.csv)" in diag


def test_scaling_summary_regenerated_from_csv(tree):
    root, _, _ = tree
    summary = (root / "results" / "runs" / "scaling" / "summary.md").read_text()
    assert summary.startswith("# Scaling run scaling")


def _cli(argv, capsys) -> tuple[int, str]:
    rc = run_cli(main, argv, prog=PROG)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", ["no-runs", "missing", "unknown-kind", "outside", "not-markdown"])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "runs" / "empty").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere" / "run"
    shutil.copytree(FIXTURE, elsewhere)
    argv = {"no-runs": [], "missing": ["results/runs/nope"], "unknown-kind": ["results/runs/empty"],
            "outside": [str(elsewhere)], "not-markdown": ["results/runs/empty", "--out", "results/README.txt"]}[case]
    rc, err = _cli(argv, capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"{PROG}: error:")
    assert {"no-runs": "no run folders", "missing": "does not exist", "unknown-kind": "timings.csv",
            "outside": "is not under", "not-markdown": "markdown"}[case] in err
    assert not (tmp_path / "results" / "README.md").exists()
    assert sorted(p.name for p in (tmp_path / "results" / "runs").iterdir()) == ["empty"]  # nothing copied
    assert not (elsewhere / "summary.md").exists()  # nothing regenerated either


def test_markdown_helpers():
    lines = ["# A", "```", "# code", "| x |", "```", "| a |", "|---|", "| 1 |"]
    assert md.demote(lines)[:3] == ["### A", "```", "# code"]
    assert md.add_provenance(lines, "Source: s")[-2:] == ["", "Source: s"]
    assert md.add_provenance(["| a |", "text"], "Source: s") == ["| a |", "", "Source: s", "", "text"]
    assert md.rewrite_links(["![p](plots/a.png) [x](https://e.org) [y](#h) `[z](q.md)`"], "runs/r") == \
        ["![p](runs/r/plots/a.png) [x](https://e.org) [y](#h) `[z](q.md)`"]
    assert md.cell("a|b\nc") == "a\\|b c"


# ------------------------------------------------------------------------------------------------
# bench/gpu_run.sh


def _plan() -> list[tuple[str, int, str]]:
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_run.sh"), "--plan"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHON": "python3"})
    assert proc.returncode == 0, proc.stderr
    return [(a, int(b), c) for a, b, c in (ln.split("\t") for ln in proc.stdout.splitlines())]


def test_gpu_script_plan_fits_and_its_flags_parse():
    plan = _plan()
    steps = {name: (budget, cmd) for name, budget, cmd in plan}
    assert list(steps)[:2] == ["env", "scaling-headline"] and list(steps)[-2:] == ["report", "total"]
    assert steps["total"][0] == sum(b for n, (b, _) in steps.items() if n != "total") <= 9.5 * 60 - 60
    from bench.diagnostics.__main__ import build_parser as diag_parser
    from bench.quality.cli import build_parser as quality_parser
    from bench.report.__main__ import build_parser as report_parser
    from bench.scaling.cli import build_parser as scaling_parser

    from bench.profile import build_parser as profile_parser

    parsers = {"bench.scaling": scaling_parser, "bench.quality": quality_parser,
               "bench.diagnostics": diag_parser, "bench.report": report_parser, "bench.profile": profile_parser}
    seen = set()
    for name, (_, cmd) in steps.items():
        if " -m bench." not in cmd:
            continue
        cmd = re.sub(r"--corpus <[^>]*>", "--corpus fixture", cmd)
        argv = shlex.split(cmd)
        module = argv[argv.index("-m") + 1]
        parsers[module]().parse_args(argv[argv.index("-m") + 2:])  # exits 2 on an unknown flag or a bad value
        seen.add(module)
    assert seen == set(parsers)
    head = steps["scaling-headline"][1]
    assert "--methods wave,fft-floor,softmax-sdpa," in head and "--max-len 32768" in head
    assert "--levels core,layer,model --passes fwd,fwdbwd" in head and "--dtype bfloat16" in head
    assert "--seq-lens 65536,131072,262144" in steps["scaling-long"][1]
    assert "--methods all" in steps["scaling-fp32"][1]
    assert "--preset paper-char" in steps["quality"][1] and "--amp bf16" in steps["quality"][1]


@pytest.mark.slow  # 1.5 to 3 minutes on 2 CPU cores: every harness runs once, tiny, on CPU
def test_gpu_script_dry_run(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_run.sh"), "--dry-run", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHON": sys.executable})
    with (out / "steps.tsv").open() as fh:
        status = {r["step"]: r["status"] for r in csv.DictReader(fh, delimiter="\t")}
    assert list(status) == ["env", "scaling-headline", "profile", "scaling-long", "quality", "diagnostics",
                            "scaling-fp32", "report"]
    assert all(v == "ok" for v in status.values()), (status, proc.stdout[-3000:])
    assert proc.returncode == 0
    assert "GPU command:" in proc.stdout and "--device cuda" in proc.stdout
    text = (out / "README.md").read_text()
    assert "## What reproduces and what does not" in text and "quality-paper-char/final.csv" in text
    assert (out / "versions.txt").read_text().startswith("python ")
