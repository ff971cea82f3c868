"""Assemble results/README.md: index, headline, per-kind sections in a fixed order, plots."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from bench.common.files import write_text
from bench.report import markdown as md
from bench.report.headline import headline
from bench.report.runs import (
    KINDS, Run, code, command, device, git_sha, load_runs, machine, provenance, regenerate, software,
)

SECTION_TITLES = {
    "scaling": ("Scaling: time, memory, speedups, exponents, floor ratios, claims",
                "Per scaling run: latency, memory, speedup and TFLOP/s tables per level (core, layer, model) and "
                "pass (fwd, fwdbwd), then scaling exponents, crossover lengths, floor ratios and the claims audit."),
    "quality": ("Quality: perplexity gap", "Per quality run: setup, gap table, wave / standard ratios, published "
                "numbers beside ours."),
    "diagnostics": ("Diagnostics: verdicts", "Per diagnostics run: verdict counts per check (from diagnostics.csv), "
                    "the verdict lines, then the harness's tables."),
}


def index_section(runs: list[Run]) -> list[str]:
    rows = [[f"[{r.rel}]({r.rel})", r.kind + (" (SYNTHETIC: nothing measured)" if r.env.get("synthetic") else ""), device(r), machine(r.env), git_sha(r.env),
             str(r.env.get("created", "unknown")), code(command(r.env))] for r in runs]
    lines = ["## Runs", ""] + md.table(["run", "kind", "device", "hardware", "git sha", "date", "exact command"], rows)
    lines += ["", "Source: " + ", ".join(f"[{r.rel}/env.json]({r.rel}/env.json)" for r in runs)
              + " (software: " + "; ".join(f"{r.name}: {software(r.env)}" for r in runs) + ")", ""]
    return lines


def run_content(run: Run) -> list[str]:
    """The run's summary.md, demoted, relinked, with provenance under every table."""
    summary = run.path / "summary.md"
    lines = [f"From [{run.rel}/summary.md]({run.rel}/summary.md)"
             + (f"; {'; '.join(run.notes)}." if run.notes else "."), ""]
    if summary.is_file():
        body = summary.read_text(encoding="utf-8", errors="replace").splitlines()
        body = md.rewrite_links(md.demote(body, 2), run.rel)
        lines += md.add_provenance(body, provenance(run))
    else:
        lines += [f"(no summary.md in this run folder; the numbers are in [{run.csv_rel}]({run.csv_rel}))"]
        if run.kind == "quality":
            lines += ["", *_final_table(run)]
    return lines + [""]


def _final_table(run: Run) -> list[str]:
    try:
        df = pd.read_csv(run.csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return ["final.csv is empty or unreadable."]
    cols = [c for c in ("method", "seed", "test_ppl", "test_bpc", "test_acc", "params", "steps") if c in df]
    return md.table(cols, df[cols].astype(str).values.tolist()) + ["", provenance(run)]


def diagnostics_verdicts(run: Run) -> list[str]:
    """Verdict counts per check and the harness's verdict lines, both straight from diagnostics.csv."""
    try:
        df = pd.read_csv(run.csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return ["diagnostics.csv is empty or unreadable.", ""]
    if not {"check", "verdict"} <= set(df.columns):
        return ["diagnostics.csv has no check/verdict columns.", ""]
    counts = df.groupby(["check", "verdict"], sort=False).size().unstack(fill_value=0)
    order = [v for v in ("PASS", "FAIL", "EXPECTED-LEAK", "INFO") if v in counts] + \
        [v for v in counts if v not in ("PASS", "FAIL", "EXPECTED-LEAK", "INFO")]
    rows = []
    for check, c in counts[order].iterrows():
        verdict = "FAIL" if c.get("FAIL", 0) else "PASS" if c.get("PASS", 0) else \
            "EXPECTED-LEAK" if c.get("EXPECTED-LEAK", 0) else "info only"
        rows.append([check, *[str(int(c[v])) for v in order], verdict])
    lines = md.table(["check", *[f"{v} rows" for v in order], "verdict"], rows) + ["", provenance(run), ""]
    try:
        from bench.diagnostics.report import verdict_lines

        verdicts = verdict_lines(df)
    except Exception:  # the harness's own wording is a bonus; the counts above already trace to the CSV
        verdicts = []
    if verdicts:
        lines += ["Verdict lines (bench.diagnostics.report.verdict_lines on the same CSV):", "", "```", *verdicts, "```", ""]
    return lines


def plots_section(runs: list[Run]) -> list[str]:
    lines = ["## Plots", "", "Every plot is drawn from the CSV of its run folder (see the sections above)."]
    found = False
    for run in runs:
        pngs = sorted((run.path / "plots").glob("*.png")) if (run.path / "plots").is_dir() else []
        if not pngs:
            continue
        found = True
        lines += ["", f"### {run.rel} ({run.kind})", "",
                  f"Drawn from [{run.csv_rel}]({run.csv_rel}) · machine: {machine(run.env)}", ""]
        for p in pngs:
            lines += [f"![{p.stem}]({run.link('plots/' + p.name)})", ""]
        lines.pop()
    if not found:
        lines += ["", "No run folder has a plots/ folder."]
    return lines + [""]


def build_report(run_paths: Sequence[str], out: str | Path = "results/README.md", regen: bool = True,
                 plots: bool = True, report_command: str | None = None) -> Path:
    """Write `out` from the run folders; every run must lie under out's folder. Returns the path."""
    out = Path(out)
    runs = load_runs(list(run_paths), out.parent)  # checks everything before writing anything
    if regen:
        for run in runs:
            regenerate(run, plots=plots)
    cmd = report_command or "python -m bench.report " + " ".join(r.rel for r in runs)
    lines = ["# Published results", "",
             f"Generated by {code(cmd)}; do not edit by hand: regenerate it. Every table below is derived from a CSV that is committed in a run folder, "
             "named on the line under the table together with the machine, the software and the exact command "
             "that produced it. Compare absolute numbers only within one machine; ratios measured in one run "
             "travel better.", ""]
    lines += index_section(runs)
    lines += headline(runs)
    for kind in KINDS:
        of_kind = [r for r in runs if r.kind == kind]
        if not of_kind:
            continue
        title, blurb = SECTION_TITLES[kind]
        lines += [f"## {title}", "", blurb, ""]
        for run in of_kind:
            if kind == "diagnostics":
                lines += [f"### Verdicts of {run.rel}", ""] + diagnostics_verdicts(run)
            lines += run_content(run)
    lines += plots_section(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, "\n".join(lines).rstrip() + "\n")
    return out


__all__ = ["build_report"]
