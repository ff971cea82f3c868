"""bench.report (results/README.md from run folders) and the committed page against its CSVs.

The results tree is built in tmp_path: a copy of the synthetic scaling fixture plus small synthetic
quality and diagnostics runs written here with the columns those harnesses write.
"""
from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from bench.common.cli import run_cli
from bench.common.timings import fmt
from bench.report.__main__ import PROG, main
from bench.report.build import KEY_BEGIN, KEY_END
from faultkit import bench_in

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "scaling_run"
PNG = b"\x89PNG\r\n\x1a\n"  # a placeholder: the report only links plot files

QUALITY_FINAL = {  # method -> {seed: (test_ppl, test_batch_mean_ppl)}
    "wave": {0: (6.5, 6.6), 1: (6.3, 6.4)},
    "standard": {0: (6.0, 6.1), 1: (6.1, 6.2)},
    "standard-matched": {0: (5.9, 6.0), 1: (6.0, 6.1)},
}


def _env(argv: list[str], **extra) -> dict:
    return {"created": "2025-02-03T04:05:06+0000", "argv": argv,
            "git": {"sha": "a" * 40, "sha_short": "aaaaaaaa", "dirty": False},
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
               plan={"total_steps": 20, "warmup_steps": 2, "eval_every": 10, "batches_per_epoch": 3,
                     "budget": "steps=20"},
               epochs_covered=6.67, tokenizer={"kind": "char", "vocab_size": 40}, corpus={"name": "fixture"},
               methods={m: {"params": 1000 + i, "config": {"d_ff": 512}} for i, m in enumerate(QUALITY_FINAL)})
    (path / "env.json").write_text(json.dumps(env))
    finals, curves = [], []
    for m, seeds in QUALITY_FINAL.items():
        for seed, (ppl, bm) in seeds.items():
            finals.append({"method": m, "seed": seed, "test_ppl": ppl, "test_batch_mean_ppl": bm, "test_loss": 1.8,
                           "test_bpc": 2.6, "test_acc": 0.5, "params": 1000, "tokens_per_s": 100.0, "wall_s": 3.0,
                           "peak_mem_mb": 50.0, "best_step": 20, "nonfinite_steps": 0, "steps": 20,
                           "tokens": 20 * 2048})
            curves += [{"method": m, "seed": seed, "step": s, "tokens": s * 2048, "split": "val", "loss": 2.0 - s / 40,
                        "ppl": 7.0, "bpc": 2.8, "acc": 0.4, "lr": 1e-3, "wall_s": s / 10} for s in (10, 20)]
    _write_csv(path / "final.csv", FINAL_COLUMNS, finals)
    _write_csv(path / "curves.csv", CURVE_COLUMNS, curves)


def make_diagnostics_run(path: Path) -> None:
    (path / "plots").mkdir(parents=True)
    cmd = ["python -m bench.diagnostics", "--checkpoint", "runs/q/checkpoints/wave-seed0.pt", "--device", "cpu",
           "--flag-of-an-older-version"]  # ignored when the summary is regenerated
    (path / "env.json").write_text(json.dumps(_env(cmd, harness="bench.diagnostics", text="tiny_corpus.txt")))
    columns = ["check", "layer", "head", "quantity", "value", "threshold", "verdict"]
    rows = [dict(zip(columns, r)) for r in [
        ("impulse", 0, 0, "max_abs_diff", 1e-7, 1e-5, "PASS"),
        ("conservation", 0, 0, "ratio_p2", 0.9, 1.00001, "PASS"),
        ("causality", 0, "", "perturbation:N", 64, "", "INFO"),
        ("causality", 0, "", "perturbation:score@5", 0.0, 1e-9, "PASS"),
        ("leak_demo", "stride 0.125", "", "max_score", 0.9, 1e-9, "EXPECTED-LEAK"),
        ("heads", 0, 0, "omega", 0.3, "", "INFO"),
    ]]
    _write_csv(path / "diagnostics.csv", columns, rows)
    (path / "plots" / "causality.png").write_bytes(PNG)
    (path / "summary.md").write_text("\n".join([
        "# Wave Field diagnostics", "", "## Verdicts", "", "```", "| not a table: inside a code fence", "```", "",
        "## Causality", "", "| group | verdict |", "|---|---|", "| model | PASS |", "",
        "See ![causality](plots/causality.png) and [the CSV](diagnostics.csv).", ""]))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """results/ with three runs and a README built by the command line, its entry point run in this process from
    the tree's root (the real command line's refusals: test_faults.py)."""
    root = tmp_path_factory.mktemp("report")
    runs = root / "results" / "runs"
    shutil.copytree(FIXTURE, runs / "scaling")
    (runs / "scaling" / "plots").mkdir()
    for name in ("latency_core_fwd.png", "memory_core_fwd.png", "speedup_core_fwd.png"):
        (runs / "scaling" / "plots" / name).write_bytes(PNG)
    make_quality_run(runs / "quality")
    make_diagnostics_run(runs / "diag")
    proc = bench_in("report", "results/runs/scaling", "results/runs/quality", "results/runs/diag", "--no-plots",
                    cwd=root)
    assert proc.returncode == 0, proc.stderr
    readme = root / "results" / "README.md"
    return root, readme, readme.read_text()


def _tables(text: str) -> list[list[str]]:
    """Every markdown table outside code fences, as its lines."""
    out, cur, inside = [], [], False
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("```"):
            inside = not inside
        if not inside and line.lstrip().startswith("|"):
            cur.append(line)
        elif cur:
            out, cur = out + [cur], []
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _section(text: str, head: str) -> str:
    return text.split("\n" + head + "\n", 1)[1].split("\n## ", 1)[0]


def test_sections_in_fixed_order(tree):
    _, _, text = tree
    heads = ["# Published results", "## The claims at a glance", "## Key numbers", "## Speed and memory per level",
             "## Sub-quadratic peers", "## Quality", "## Heads and causality", "## Plots", "## Runs"]
    pos = [text.find("\n" + h + "\n") if i else text.find(h) for i, h in enumerate(heads)]
    assert all(p >= 0 for p in pos), dict(zip(heads, pos))
    assert pos == sorted(pos)
    assert [ln for ln in text.splitlines() if ln.startswith("# ")] == ["# Published results"]


def test_claims_table_has_every_claim_with_a_verdict(tree):
    _, _, text = tree
    claims = _tables(_section(text, "## The claims at a glance"))[0]
    rows = [_cells(ln) for ln in claims[2:]]
    assert _cells(claims[0]) == ["claim (published)", "cost model / count", "measured, CPU", "measured, GPU", "verdict",
                                 "evidence"]
    names = " ".join(r[0] for r in rows)
    for needle in ("speed 2K: 31x", "speed 8K: 107x", "speed 32K: 367x", "char PPL 6.2 vs 5.9",
                   "char accuracy 50.5 vs 51.0", "BPE-8K PPL 170.7 vs 91.4", "V4.3.3 gap 1.40x", "about 6M parameters",
                   "local / medium / long-range", "Mamba or Hyena", "causal"):
        assert needle in names, needle
    verdicts = ("reproduces", "partly", "does not", "not measured")
    assert all(r[4].startswith(verdicts) for r in rows), [r[4] for r in rows]
    mamba = next(r for r in rows if "Mamba" in r[0])
    assert "test_wave_with_identity_coupling_and_unit_deposit_is_the_diagonal_ssm" in mamba[2] and "S4D" in mamba[2]
    params = next(r for r in rows if "parameters" in r[0])
    assert "5,983,378" in params[1] and params[4] == "reproduces"  # 5,727,378 + 256 V at V = 1000 (docs/mechanism.md)


def test_speed_numbers_trace_to_the_csv(tree):
    """The synthetic run's SDPA / wave ratios at core fwd appear in the claims table, with setup and commit."""
    _, _, text = tree
    with (FIXTURE / "timings.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["level"] == "core" and r["pass"] == "fwd" and r["status"] == "ok"]
    ms = {(r["method"], int(r["seq_len"])): float(r["median_ms"]) for r in rows}
    claims = _section(text, "## The claims at a glance")
    for n in (2048, 8192):
        row = next(ln for ln in claims.splitlines() if ln.startswith(f"| speed {n // 1024}K"))
        ratio = ms[("softmax-sdpa", n)] / ms[("wave", n)]
        assert f"{fmt(ratio)}x [CPU fp32 B=1, 2 threads, " in row, row
    row32 = next(ln for ln in claims.splitlines() if ln.startswith("| speed 32K"))
    assert "| not measured |" in row32 or "not measured" in _cells(row32)[2]


def test_tables_fit_a_screen_and_dashes_have_one_note_per_reason(tree):
    _, _, text = tree
    for tab in _tables(text):
        if not tab[0].startswith("| run (summary)"):  # the index carries the exact commands
            assert len(_cells(tab[0])) <= 8, tab[0]
    levels = _section(text, "## Speed and memory per level")
    body, notes = levels.split("Notes: ", 1)
    marks = set(re.findall(r"- \(([a-z])\)", body))
    listed = re.findall(r"\(([a-z])\) ([^(]+)", notes.split("\n", 1)[0])
    assert marks and marks == {m for m, _ in listed}
    assert len({t.strip() for _, t in listed}) == len(listed)  # each reason once
    assert "predicted" not in body  # reasons live in the notes, not in the cells


def test_quality_and_diagnostics_numbers_from_csvs(tree):
    _, _, text = tree
    w, s = QUALITY_FINAL["wave"], QUALITY_FINAL["standard"]
    ratios = [w[k][0] / s[k][0] for k in (0, 1)]
    mean, half = sum(ratios) / 2, 12.706 * abs(ratios[0] - ratios[1]) / 2  # t(0.975, 1) * std / sqrt(2)
    quality = _section(text, "## Quality")
    assert f"{mean:.2f} (95% CI {mean - half:.2f} to {mean + half:.2f}, 2 seeds)" in quality
    assert "Source: [runs/quality/final.csv](runs/quality/final.csv)" in quality
    diag = _section(text, "## Heads and causality")
    assert "Source: [runs/diag/diagnostics.csv](runs/diag/diagnostics.csv)" in diag
    assert "1 leaks shown" in diag


def test_index_table_has_provenance(tree):
    _, _, text = tree
    index = _section(text, "## Runs")
    for rel, kind, cmd in [("runs/scaling", "scaling (SYNTHETIC",
                            "python -m bench.scaling --preset cpu-smoke --device cpu"),
                           ("runs/quality", "quality", "python -m bench.quality --preset tiny --corpus fixture"),
                           ("runs/diag", "diagnostics", "python -m bench.diagnostics --checkpoint")]:
        row = next(ln for ln in index.splitlines() if ln.startswith(f"| [{rel}]({rel}/summary.md)"))
        assert f"| {kind}" in row and cmd in row and "2 logical cores" in row


def test_links_are_relative_and_resolve(tree):
    _, readme, text = tree
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    for t in targets:
        assert not t.startswith(("/", "http")), t
        if not t.startswith("#"):
            assert (readme.parent / t.split("#")[0]).exists(), t  # docs/ links too: relative to the page


def test_summaries_regenerated_from_csv(tree):
    root, _, _ = tree
    runs = root / "results" / "runs"
    assert (runs / "scaling" / "summary.md").read_text().startswith("# Scaling run scaling")
    diag = (runs / "diag" / "summary.md").read_text()  # the stub written by make_diagnostics_run is replaced
    assert "| not a table" not in diag
    assert "EXPECTED LEAK SHOWN stride 0.125: leak score 0.9 > 1.00e-09" in diag and "OVERALL PASS" in diag


def _cli(argv, capsys) -> tuple[int, str]:
    rc = run_cli(main, argv, prog=PROG)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", ["no-runs", "missing", "unknown-kind", "outside", "not-markdown", "no-env",
                                  "bad-lr"])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "results" / "runs"
    (runs / "empty").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere" / "run"
    shutil.copytree(FIXTURE, elsewhere)
    for name in ("ok", "noenv"):  # a good run given before a bad one must not be regenerated either
        shutil.copytree(FIXTURE, runs / name)
    (runs / "noenv" / "env.json").unlink()
    make_quality_run(runs / "badlr")
    env = json.loads((runs / "badlr" / "env.json").read_text())
    env["settings"]["preset"]["lr"] = "abc"  # edited by hand
    (runs / "badlr" / "env.json").write_text(json.dumps(env))
    made = sorted(runs.rglob("*"))
    argv = {"no-runs": [], "missing": ["results/runs/nope"], "unknown-kind": ["results/runs/empty"],
            "outside": [str(elsewhere)], "not-markdown": ["results/runs/empty", "--out", "results/README.txt"],
            "no-env": ["results/runs/ok", "results/runs/noenv"], "bad-lr": ["results/runs/ok", "results/runs/badlr"]
            }[case]
    rc, err = _cli(argv, capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"{PROG}: error:")
    assert {"no-runs": "no run folders", "missing": "does not exist", "unknown-kind": "timings.csv",
            "outside": "is not under", "not-markdown": "markdown", "no-env": "'results/runs/noenv' has no env.json",
            "bad-lr": "results/runs/badlr/env.json: settings.preset.lr holds 'abc', not a positive"}[case] in err
    assert not (tmp_path / "results" / "README.md").exists()
    assert sorted(runs.rglob("*")) == made  # nothing copied, nothing regenerated
    assert not (elsewhere / "summary.md").exists()


def test_gpu_peer_kernels_table_reads_the_session_evidence():
    import pandas as pd

    from bench.report.page import gpu_peer_lines

    tsv = "N\tpass\tsdpa\thgrn\tsimple_gla\n32768\tfwd\t19.0\t1.5\t0.5\n"
    cells = pd.DataFrame([{"gpu": True, "dtype": "bfloat16", "level": "core", "method": "wave", "status": "ok",
                           "commit": "abcdef1", "pass": "fwd", "seq_len": 32768, "median_ms": 6.0}])
    lines = gpu_peer_lines(cells, "gpu/s/evidence/peers.txt", "abcdef1", tsv)
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in lines if ln.startswith("| ")}
    assert rows["wave"].endswith("| 6.00 | - | 1.00x |") and rows["peer-hgrn-fla"].endswith("| 1.50 | - | 0.250x |")
    assert rows["softmax-sdpa"].endswith("| 19.0 | - | 3.17x |")


# ------------------------------------------------------------------------------------------------
# the committed page and the top-level README's findings

PAGE = REPO / "results" / "README.md"


def _key_block(text: str) -> list[str]:
    return text.split(KEY_BEGIN, 1)[1].split(KEY_END, 1)[0].strip().splitlines()


def test_committed_page_key_numbers_are_recomputed_from_the_csvs():
    """The key numbers of results/README.md, recomputed now by the same code from the committed run
    folders its command names, are exactly the ones on the page; a few are also checked by hand."""
    from bench.report.build import gather, key_numbers
    from bench.report.runs import load_runs

    text = PAGE.read_text()
    command = re.search(r"Generated by `python -m bench.report ([^`]*)`", text).group(1)
    from bench.report.__main__ import build_parser

    folders = build_parser().parse_args(shlex.split(command)).runs
    runs = load_runs([str(REPO / f) for f in folders], PAGE.parent)
    assert _key_block(text) == [f"- {what}: {val}" for what, val in key_numbers(*gather(runs))]
    # by hand, from the CSVs with the csv module only
    with (REPO / "results" / "runs" / "20261130-162105_14e3e430_cpu" / "timings.csv").open() as fh:
        ms = {(r["method"], r["pass"], int(r["seq_len"])): float(r["median_ms"]) for r in csv.DictReader(fh)
              if r["level"] == "core" and r["status"] == "ok"}
    ratio = ms[("softmax-sdpa", "fwd", 32768)] / ms[("wave", "fwd", 32768)]
    assert f"speedup over SDPA, core fwd, 32K [CPU fp32 B=1, 1 thread, 14e3e43+dirty]: {fmt(ratio)}x" in text
    diag = next(p for p in sorted((REPO / "results" / "runs").glob("*_diagnostics"))
                if "--checkpoint" in (p / "env.json").read_text())
    with (diag / "diagnostics.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["check"] == "heads"]
    roles = [r["quantity"].split(":")[1] for r in rows if r["quantity"].startswith("role:")]
    reach = max(float(r["value"]) for r in rows if r["quantity"] == "reach_tokens")
    assert (f"{roles.count('local')} / {roles.count('medium')} / {roles.count('long-range')}, max reach {fmt(reach)} "
            "tokens") in text


NUMBERS_BEGIN, NUMBERS_END = "<!-- numbers:begin -->", "<!-- numbers:end -->"


def test_readme_findings_quote_only_generated_numbers():
    """Every number inside README.md's marked findings block appears on the generated page (its
    claims table or key numbers, both computed from the committed CSVs and the published values)."""
    readme = (REPO / "README.md").read_text()
    if NUMBERS_BEGIN not in readme:
        pytest.skip(f"README.md has no {NUMBERS_BEGIN} ... {NUMBERS_END} block around its findings yet")
    block = readme.split(NUMBERS_BEGIN, 1)[1].split(NUMBERS_END, 1)[0]
    page = PAGE.read_text()
    generated = "\n".join(_key_block(page)) + _section(page, "## The claims at a glance")
    allowed = {a.rstrip(",.") for a in re.findall(r"\d[\d,]*(?:\.\d+)?", generated)}
    prose = re.sub(r"`[^`]*`|\]\([^)]*\)", "", block)  # code and link targets are not quoted numbers
    quoted = {q.rstrip(",.") for q in re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?", prose)}
    missing = sorted(quoted - allowed)
    assert not missing, f"README.md's findings block quotes numbers the generated page does not have: {missing}"


def test_each_published_quality_claim_names_its_own_version(tree):
    """The Quality text prefixed 'V3.5' to every published claim, so the V4.3.3 gap read 'V3.5 v433 238.85 vs ...'."""
    from bench.scaling.claims import PUBLISHED_QUALITY

    quality = _section(tree[2], "## Quality")
    for claim in PUBLISHED_QUALITY:
        assert f"{claim['setup'].split()[0]} {claim['key']} {claim['wave_ppl']} vs" in quality
    assert "V3.5 v433" not in quality


def test_claims_accuracy_spread_says_min_max_and_convergence_says_what_it_counts(tree):
    """The accuracy claim printed 'wave 20.1 (19.5 to 20.4, 3 seeds)', a min-max worded like the 95% CI beside it;
    the convergence column counted only the wave and standard jobs of the ratio under a bare 'convergence (jobs)'."""
    _, _, text = tree
    acc = next(_cells(ln) for ln in text.splitlines() if ln.startswith("| char accuracy"))
    assert acc[2].startswith("wave 50.0 (min-max 50.0 to 50.0, 2 seeds) vs 50.0 (min-max "), acc
    head = _cells(_tables(_section(text, "## Quality"))[0][0])
    assert "convergence (the ratio's wave and standard jobs)" in head
    row = _cells(_tables(_section(text, "## Quality"))[0][2])
    counted = sum(int(n) for n in re.findall(r"(\d+) \w+", row[5]))
    assert counted == len(QUALITY_FINAL["wave"]) + len(QUALITY_FINAL["standard"])


def test_gpu_session_readme_counts_its_skipped_cells_by_reason_and_names_untracked_files():
    """The hand-written session README said '180 of 294 cells were skipped by the total budget' (153 were; the rest
    by memory, per-cell time and the longer-length rule) and that git.txt listed only carried wheels as untracked
    (it lists the cross-check script too, not in this repository)."""
    session = REPO / "results" / "gpu" / "20261130-h200_7e32260"
    text = " ".join((session / "README.md").read_text().split())
    with (session / "gpu_run" / "scaling-bf16" / "timings.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    skipped = [r["reason"] for r in rows if r["status"] == "skipped"]
    assert f"{len(skipped)} of its {len(rows)} cells were skipped" in text
    for count, why in re.findall(r"(\d+) by the (total budget|memory budget|per-cell time budget)", text):
        pattern = {"per-cell time budget": "> time budget"}.get(why, why)
        assert int(count) == sum(pattern in reason and "longer than" not in reason for reason in skipped), why
    untracked = re.findall(r"^\?\? (\S*[^/\s])$", (session / "gpu_run" / "git.txt").read_text(), re.M)
    assert untracked and all(f"`{path}`" in text and not (REPO / path).exists() for path in untracked)


def test_a_range_below_one_keeps_three_significant_figures():
    """fmt's '.3g' dropped trailing zeros: '0.213-0.28 (2 runs)' and '0.13-0.138x' beside '0.626x'."""
    from bench.report.evidence import RunRange

    assert RunRange([0.28, 0.213], ["a", "b"]).text("x") == "0.213-0.280x (2 runs)"
    assert RunRange([43116.4], ["a"]).text() == "43,116"  # large numbers keep their separators
