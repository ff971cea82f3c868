"""Assemble results/README.md: claims at a glance, key numbers, the sections, speedup plots, the runs."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from bench.common.env import REPO_ROOT, command_line, machine
from bench.common.files import write_text
from bench.common.tables import table
from bench.common.timings import fmt
from bench.report import evidence as ev
from bench.report import page
from bench.report.runs import Run, code, load_runs, regenerate
from bench.scaling.claims import PUBLISHED_ADVANTAGE, authors_advantage, cost_model_ratio

KEY_BEGIN, KEY_END = "<!-- key-numbers:begin -->", "<!-- key-numbers:end -->"
# (level, pass, N) of the speedups over SDPA quoted as key numbers
KEY_SPEEDUPS = [("core", "fwd", 2048), ("core", "fwd", 8192), ("core", "fwd", 32768), ("core", "fwdbwd", 32768),
                ("model", "fwd", 8192), ("model", "fwd", 32768)]


def key_numbers(cells, quality_runs, diag, params) -> list[tuple[str, str]]:
    """(what, value) for the numbers a reader quotes (the top-level README's, checked by tests/test_report.py)."""
    keys = [(f"speedup over SDPA, {level} {'fwd' if pas == 'fwd' else 'fwd+bwd'}, {n // 1024}K",
             (level, pas, n, page.SDPA, "wave", "median_ms")) for level, pas, n in KEY_SPEEDUPS]
    keys.append(("peak memory wave / SDPA, core fwd, 32K", ("core", "fwd", 32768, "wave", page.SDPA, "peak_mem_mb")))
    out = []
    for setup in page.setups(cells):  # CPU setups first
        for what, args in keys:
            got = ev.ratio(cells, *args).get(setup)
            if got:
                out.append((f"{what} [{setup}, {got.commits_text()}]", got.text("x")))
    for run, q in quality_runs:
        if "why" not in q:
            out.append((f"wave / standard test PPL, {q['setting']} [{run.rel}]", page.ci(q["ppl_ratio"])))
            if q["untuned"]:  # none when the run did not sweep, or its env.json does not say its --lr
                out.append((f"the same at one fixed LR {q['ref_lr']:g} [{run.rel}]", page.ci(q["untuned"])))
            if q.get("ablation"):
                out.append((f"wave-scaled-pos / standard test PPL [{run.rel}]", page.ci(q["ablation"]["vs_standard"])))
                out.append((f"wave-scaled-pos / wave test PPL [{run.rel}]", page.ci(q["ablation"]["vs_wave"])))
    for run, h, c in diag:
        if ev.trained(run):
            out.append((f"head roles local / medium / long-range [{run.rel}]",
                        f"{h['local']} / {h['medium']} / {h['long-range']}, max reach {fmt(h['max_reach'])} tokens"))
    out.append(("parameters, paper-char wave / standard at V = 1000", f"{params['wave']:,} / {params['standard']:,}"))
    return out


def gather(runs: list[Run]):
    cells = ev.scaling_cells(runs)
    quality_runs = [(r, ev.quality(r)) for r in runs if r.kind == "quality"]
    for run, q in quality_runs:
        if "why" in q:
            print(f"bench.report: warning: {run.rel}: not compared: {q['why']}", file=sys.stderr)
    diag = [(r, *ev.diagnostics(r)) for r in runs if r.kind == "diagnostics"]
    return cells, quality_runs, diag, ev.param_counts()


def _session_lines(runs: list[Run], cells, out: Path) -> tuple[list[str], list[str]]:
    """Per device session folder (results/gpu/<date>-<machine>_<sha>/) above a run: a line pointing at its README
    (unless that is `out`), and the peer kernels it timed outside the scaling harness (evidence/peers.txt)."""
    base = out.parent.resolve()
    readmes, peers = [], []
    for p in dict.fromkeys(p for r in runs for p in r.path.parents if p.is_relative_to(base)):
        if not (m := ev.SHA_FOLDER.search(p.name)):
            continue
        rel, sha, tsv = p.relative_to(base).as_posix(), m.group(1)[:7], p / "evidence" / "peers.txt"
        if (p / "README.md").is_file() and (p / "README.md") != out.resolve():
            readmes.append(f"Measured on another machine: [{rel}/README.md]({rel}/README.md) says what each folder "
                           f"of that session holds and which commit it measured ({sha}; later fixes are not "
                           "in those numbers).\n")
        if tsv.is_file():
            peers += page.gpu_peer_lines(cells, f"{rel}/evidence/peers.txt", sha, tsv.read_text())
    return readmes, peers


def speedup_figures(cells: pd.DataFrame, out_dir: Path) -> None:
    """plots/speedup_<cpu|gpu>.png per device with cells: published, both cost models and the measured levels."""
    from bench.common.figures import color, length_axis, plt, save  # matplotlib only when drawing

    colors = {"published": "black", "authors' model": "0.45", "cost model": "0.65", "core": color("wave"),
              "model": color("wave-field")}
    for gpu, name in ((False, "cpu"), (True, "gpu")):
        sub = cells[cells["gpu"] == gpu]
        if sub.empty:
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(8, 5))
        ns = np.geomspace(512, 32768, 40)
        ax.plot(list(PUBLISHED_ADVANTAGE), list(PUBLISHED_ADVANTAGE.values()), "*", ms=12,
                color=colors["published"], label="published (31x / 107x / 367x)")
        ax.plot(ns, [authors_advantage(int(n)) for n in ns], "--", color=colors["authors' model"],
                label="authors' model: 512 n^2 / (3000 n log2 n)")
        ax.plot(ns, [cost_model_ratio(int(n)) for n in ns], ":", color=colors["cost model"], lw=2,
                label="suite cost model: softmax FLOPs / FFT-conv FLOPs")
        for i, setup in enumerate(dict.fromkeys(sub["setup"])):
            for level in ("core", "model"):
                got = {n: s.values for n in sorted(set(sub["seq_len"]))
                       if (s := ev.ratio(sub, level, "fwd", n, "softmax-sdpa", "wave").get(setup))}
                if not got:
                    continue
                n_ = np.array(list(got))
                med, lo, hi = (np.array([stat(v) for v in got.values()]) for stat in (np.median, min, max))
                c = colors[level]
                ax.plot(n_, med, ["-", "--", ":", "-."][i % 4], marker="o", ms=4, color=c,  # a line style per setup
                        label=f"measured {level} fwd, {setup}")
                if (hi > lo).any():
                    ax.fill_between(n_, lo, hi, color=c, alpha=0.15, lw=0)
        ax.axhline(1.0, color="0.2", lw=0.8)
        length_axis(ax)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(lambda y, _: f"{y:g}x")
        ax.set_ylabel("speedup of wave = SDPA ms / wave ms (x)")
        ax.set_title(f"Speedup of wave over SDPA, {'GPU' if gpu else 'CPU'} (1x: equal time)", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", framealpha=0.9)
        save(fig, out_dir / f"speedup_{name}.png")


def index_section(runs: list[Run]) -> list[str]:
    rows = [[f"[{r.rel}]({r.rel}/summary.md)", r.kind + (" (SYNTHETIC)" if r.env.get("synthetic") else ""),
             machine(r.env), ev.commit(r), str(r.env.get("created", "unknown"))[:16], code(command_line(r.env))]
            for r in runs]
    return ["## Runs", "", "Each run's summary.md has every table of that run (all methods, lengths, exponents, "
            "crossovers, floor ratios); its plots/ the per-run figures.", "",
            *table(["run (summary)", "kind", "machine", "commit", "date", "exact command"], rows), ""]


def build_report(run_paths: Sequence[str], out: Path, cmd: str, regen: bool = True, plots: bool = True) -> None:
    """Write `out` from the run folders (every run must lie under out's folder); `cmd` is the command named on it."""
    runs = load_runs(list(run_paths), out.parent, summaries=not regen)  # checks everything before writing anything
    if regen:
        for run in runs:
            regenerate(run, plots=plots)
    cells, quality_runs, diag, params = gather(runs)
    docs = Path(os.path.relpath(REPO_ROOT / "docs", out.parent.resolve())).as_posix()
    sessions, gpu_peers = _session_lines(runs, cells, out)
    lines = ["# Published results", "",
             f"Generated by {code(cmd)} from the committed CSVs of the run folders listed under [Runs](#runs); do not "
             "edit by hand. Every measured number names its setup (device, dtype, batch B) and the commit it "
             "measured; a range is the spread over committed runs of one setup. " + page.VERDICTS, "", *sessions,
             "## The claims at a glance", "",
             *table(page.CLAIMS_HEAD, page.claims_rows(cells, quality_runs, diag, params, docs)), "",
             "Cost model: FLOPs of causal softmax attention over FLOPs of the causal FFT convolution "
             "(bench/scaling/costs.py, docs/method.md); the authors' model is their operation count, "
             "512 n^2 / (3000 n log2 n), which the published figures follow.", "",
             "## Key numbers", "",
             "Quoted in the top-level README; tests/test_report.py recomputes them from the CSVs. " + page.ONE_REP, "",
             KEY_BEGIN,
             *(f"- {what}: {val}" for what, val in key_numbers(cells, quality_runs, diag, params)), KEY_END, "",
             *page.level_section(cells), *page.peers_section(cells, gpu_peers), *page.quality_section(quality_runs),
             *page.diagnostics_section(diag), "## Plots", ""]
    if plots:
        speedup_figures(cells, out.parent / "plots")
    for name in ("cpu", "gpu"):
        if (out.parent / "plots" / f"speedup_{name}.png").is_file():
            lines += [f"![speedup of wave over SDPA, {name.upper()}](plots/speedup_{name}.png)", ""]
    lines += ["Per-run plots (latency, memory, speedup per level and pass) are in each run's plots/ folder.", "",
              *index_section(runs)]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, "\n".join(lines).rstrip() + "\n")
