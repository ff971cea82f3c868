"""Assemble results/README.md: the claims at a glance, key numbers, speed and memory per level,
peers, quality, heads and causality, the speedup plots, and an index of the runs.

Each run's own summary.md (regenerated from its CSV first) holds the full tables; the page links it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from bench.common.files import write_text
from bench.common.tables import table
from bench.common.timings import fmt
from bench.report import evidence as ev
from bench.report import page
from bench.report.runs import Run, code, command, load_runs, machine, regenerate

KEY_BEGIN, KEY_END = "<!-- key-numbers:begin -->", "<!-- key-numbers:end -->"


def key_numbers(cells, quality_runs, diag, params) -> list[tuple[str, str]]:
    """(what, value) for the numbers a reader quotes; the top-level README's findings are checked
    against these (tests/test_report.py)."""
    out = []
    for gpu in (False, True):
        sub = cells[cells["gpu"] == gpu] if len(cells) else cells
        for setup in page._setups(sub) if len(sub) else []:
            for level, pas, n, num, den, col, what in [
                ("core", "fwd", 2048, "softmax-sdpa", "wave", "median_ms", "speedup over SDPA, core fwd, 2K"),
                ("core", "fwd", 8192, "softmax-sdpa", "wave", "median_ms", "speedup over SDPA, core fwd, 8K"),
                ("core", "fwd", 32768, "softmax-sdpa", "wave", "median_ms", "speedup over SDPA, core fwd, 32K"),
                ("core", "fwdbwd", 32768, "softmax-sdpa", "wave", "median_ms", "speedup over SDPA, core fwd+bwd, 32K"),
                ("model", "fwd", 8192, "softmax-sdpa", "wave", "median_ms", "speedup over SDPA, model fwd, 8K"),
                ("model", "fwd", 32768, "softmax-sdpa", "wave", "median_ms", "speedup over SDPA, model fwd, 32K"),
                ("core", "fwd", 32768, "wave", "softmax-sdpa", "peak_mem_mb", "peak memory wave / SDPA, core fwd, 32K"),
            ]:
                got = ev.ratio(sub, level, pas, n, num, den, col).get(setup)
                if got:
                    out.append((f"{what} [{setup}, {got.commits_text()}]", got.text("x")))
    for run, q in quality_runs:
        if q:
            out.append((f"wave / standard test PPL, {page.quality_setting(q)} [{run.rel}]", page._ci(q["ppl_ratio"])))
            if q["untuned"] is not None:
                out.append((f"the same at one fixed LR {q['ref_lr']:g} [{run.rel}]", page._ci(q["untuned"])))
            if q.get("ablation"):
                out.append((f"wave-scaled-pos / standard test PPL [{run.rel}]", page._ci(q["ablation"]["vs_standard"])))
                out.append((f"wave-scaled-pos / wave test PPL [{run.rel}]", page._ci(q["ablation"]["vs_wave"])))
    for run, h, c in diag:
        if ev.trained(run):
            out.append((f"head roles local / medium / long-range [{run.rel}]",
                        f"{h['local']} / {h['medium']} / {h['long-range']}, max reach {fmt(h['max_reach'])} tokens"))
    out.append(("parameters, paper-char wave / standard at V = 1000", f"{params['wave']:,} / {params['standard']:,}"))
    return out


def gather(runs: list[Run]):
    cells = ev.scaling_cells(runs)
    quality_runs = [(r, ev.quality(r)) for r in runs if r.kind == "quality"]
    diag = [(r, ev.head_roles(r), ev.causality(r)) for r in runs if r.kind == "diagnostics"]
    return cells, quality_runs, diag, ev.param_counts()


def _sessions(runs: list[Run]) -> list[str]:
    """A line per device session folder (results/gpu/<date>-<machine>_<sha>/) pointing at its README."""
    seen = {}
    for r in runs:
        for parent in r.path.parents:
            if ev.SHA_FOLDER.search(parent.name) and (parent / "README.md").is_file():
                seen[parent] = r
    return [f"Measured on another machine: [{r.rel.split(p.name)[0]}{p.name}/README.md]({r.rel.split(p.name)[0]}{p.name}/"
            f"README.md) says what each folder of that session holds and which commit it measured "
            f"({ev.commit(r)}; later fixes are not in those numbers).\n" for p, r in seen.items()]


def _gpu_peers(runs: list[Run], cells, base: Path) -> list[str]:
    """Peer kernels a device session timed outside the scaling harness (evidence/peers.txt)."""
    out = []
    for session in dict.fromkeys(p for r in runs for p in r.path.parents if ev.SHA_FOLDER.search(p.name)):
        tsv = session / "evidence" / "peers.txt"
        if tsv.is_file():
            rel = tsv.resolve().relative_to(base.resolve()).as_posix()
            out += page.gpu_peer_lines(cells, rel, ev.SHA_FOLDER.search(session.name).group(1)[:7], tsv.read_text())
    return out


def index_section(runs: list[Run]) -> list[str]:
    rows = [[f"[{r.rel}]({r.rel}/summary.md)", r.kind + (" (SYNTHETIC)" if r.env.get("synthetic") else ""),
             machine(r.env), ev.commit(r), str(r.env.get("created", "unknown"))[:16], code(command(r.env))] for r in runs]
    return ["## Runs", "", "Each run's summary.md has every table of that run (all methods, lengths, exponents, "
            "crossovers, floor ratios); its plots/ the per-run figures.", "",
            *table(["run (summary)", "kind", "machine", "commit", "date", "exact command"], rows), ""]


def build_report(run_paths: Sequence[str], out: str | Path = "results/README.md", regen: bool = True,
                 plots: bool = True, report_command: str | None = None) -> Path:
    """Write `out` from the run folders; every run must lie under out's folder. Returns the path."""
    out = Path(out)
    runs = load_runs(list(run_paths), out.parent)  # checks everything before writing anything
    if regen:
        for run in runs:
            regenerate(run, plots=plots)
    cells, quality_runs, diag, params = gather(runs)
    page.DOCS = Path(os.path.relpath(Path(__file__).resolve().parents[2] / "docs", out.parent.resolve())).as_posix()
    cmd = report_command or "python -m bench.report " + " ".join(r.rel for r in runs)
    links = {"speed": "[speed and memory](#speed-and-memory-per-level)", "quality": "[quality](#quality)"}
    lines = ["# Published results", "",
             f"Generated by {code(cmd)} from the committed CSVs of the run folders listed under [Runs](#runs); do not "
             "edit by hand. Every measured number names its setup (device, dtype, batch B) and the commit it "
             "measured; a range is the spread over committed runs of one setup. Verdicts: reproduces (within 10% or "
             "better), partly, does not, not measured.", "", *_sessions(runs),
             "## The claims at a glance", "",
             *table(page.CLAIMS_HEAD, page.claims_rows(cells, quality_runs, diag, params, links)), "",
             "Cost model: FLOPs of causal softmax attention over FLOPs of the causal FFT convolution "
             "(bench/scaling/costs.py, docs/method.md); the authors' model is their operation count, "
             "512 n^2 / (3000 n log2 n), which the published figures follow.", "",
             "## Key numbers", "", "Quoted in the top-level README; tests/test_report.py recomputes them from the CSVs.",
             "", KEY_BEGIN]
    lines += [f"- {what}: {val}" for what, val in key_numbers(cells, quality_runs, diag, params)] + [KEY_END, ""]
    lines += page.level_section(cells) + page.peers_section(cells, _gpu_peers(runs, cells, out.parent))
    lines += page.quality_section(quality_runs) + page.diagnostics_section(diag)
    lines += ["## Plots", ""]
    if plots:
        from bench.report.figures import speedup_figures

        speedup_figures(cells, out.parent / "plots")
    for name in ("cpu", "gpu"):
        if (out.parent / "plots" / f"speedup_{name}.png").is_file():
            lines += [f"![speedup of wave over SDPA, {name.upper()}](plots/speedup_{name}.png)", ""]
    lines += ["Per-run plots (latency, memory, speedup per level and pass) are in each run's plots/ folder.", ""]
    lines += index_section(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, "\n".join(lines).rstrip() + "\n")
    return out


__all__ = ["build_report", "key_numbers"]
