"""summary.md of a scaling run from its timings.csv and env.json (sections 3-6: bench.scaling.analysis);
`python -m bench.scaling.summary RUN_DIR` regenerates RUN_DIR/summary.md and RUN_DIR/plots/."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from bench.common.cli import ArgParser, UsageError, run_cli
from bench.common.env import command_line, env_get, machine
from bench.common.files import read_env, write_text
from bench.common.tables import frame_table, table
from bench.common.timings import aggregate, fmt, load_timings, order_methods, panel_slug, panels
from bench.scaling.analysis import (backward_lines, claim_inputs, compiled_lines, crossover_lines, floor_lines,
                                    memory_lines, panel_heading, scaling_lines, speedup_table)
from bench.scaling.claims import CLAIM_LENGTHS, claims_section
from bench.scaling.plots import PLOT_KINDS, make_plots


def _grid(sub: pd.DataFrame, methods: list[str], cell_fn) -> pd.DataFrame:
    """rows seq_len, columns methods; cell_fn(row) for ok rows, the status word otherwise, '' when absent."""
    text = [cell_fn(r) if r["status"] == "ok" else r["status"] for _, r in sub.iterrows()]
    grid = sub.assign(text=text).pivot(index="seq_len", columns="method", values="text")
    return grid.reindex(columns=methods).fillna("").rename_axis(index="N", columns=None)


def _latency_cell(row) -> str:
    if row["reps"] == 1:  # the fewest calls, or a budget spent by one repetition: no median, no spread
        return fmt(row["median_ms"]) + " (1 rep)"
    lo, hi = row["p20_ms"], row["p80_ms"]
    return fmt(row["median_ms"]) + (f" [{fmt(lo)}-{fmt(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else "")


def header_lines(run_dir: Path, env: dict[str, Any], df: pd.DataFrame) -> list[str]:
    """Section 1: which run, which command, which hardware and software."""
    sha = env_get(env, "sha", "sha_short", "git_sha", default="unknown")  # env.json's git dict, or older top-level keys
    dirty_txt = {True: "dirty: uncommitted changes", False: "clean"}.get(env_get(env, "dirty"), "dirty flag unknown")
    gpu_txt = "; ".join(f"{g.get('name', '?')} (driver {g.get('driver', '?')}"
                        + (f", {fmt(float(g['memory_total_mb']) / 1024)} GiB" if g.get("memory_total_mb") else "") + ")"
                        for g in env.get("gpus") or [] if isinstance(g, dict)) or "none"

    def known(*names) -> str:
        v = env_get(env, *names)
        if v is not None:
            return str(v)
        vals = sorted({str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
                       for v in df[names[0]].dropna() if str(v) not in ("", "nan")})
        return ", ".join(vals) or "unknown"

    items = [
        ("run", run_dir.resolve().name),
        ("git", f"{sha} ({dirty_txt})"),
        ("created", env_get(env, "created", default="unknown")),
        ("command", f"`{command_line(env)}`"),
        ("device", known("device")),
        ("GPU", gpu_txt),
        ("CPU", f"{env_get(env, 'cpu_model', default='unknown')}, "
                f"{env_get(env, 'cpu_cores_physical', default='?')} physical / "
                f"{env_get(env, 'cpu_cores_logical', default='?')} logical cores, "
                f"{env_get(env, 'ram_total_gb', default='?')} GB RAM"),
        ("torch threads", env_get(env, "torch_threads", "threads", default="unknown")),
        ("software", f"python {env_get(env, 'python', default='?')}, torch {env_get(env, 'torch', default='?')}, "
                     f"CUDA {env_get(env, 'cuda', default='none')}, cuDNN {env_get(env, 'cudnn', default='none')}"),
        ("dtype", known("dtype")),
        ("batch / heads / head_dim", " / ".join(known(k) for k in ("batch", "heads", "head_dim"))),
        ("memory method", known("mem_method", "memory_method")),
        ("seed", env_get(env, "seed", default="unknown")),
        ("rows", f"{len(df)} in timings.csv; statuses: "
                 + (", ".join(f"{k} {v}" for k, v in df["status"].value_counts().items()) or "none")),
    ]
    ranks = df["rank"].nunique() if len(df) else 0
    if ranks > 1:  # each length's cells are measured by one rank, while the others measure theirs
        shared = ", sharing this machine's CPU cores (which slows each)" if known("device") == "cpu" else ""
        items.append(("ranks", f"lengths dealt round-robin to {ranks} ranks that ran at the same time{shared}; "
                               "each length's cells come from one rank"))
    return [f"# Scaling run {run_dir.resolve().name}", "", "## 1. Run and hardware", "",
            *table(["item", "value"], items), ""]


def measurement_lines(level, pas, cfg, sub, env, run_dir) -> list[str]:
    """Section 2 for one panel: latency, memory, speedup, TFLOP/s, tokens/s."""
    methods = order_methods(sub["method"])
    slug = panel_slug(level, pas, cfg)
    measured_on = " | ".join(b for b in (cfg or sub["config"].iloc[0], machine(env)) if b)
    lines = [panel_heading(level, pas, cfg), "", f"_Measured on: {measured_on}_", ""]

    def part(title: str, frame: pd.DataFrame) -> None:
        lines.extend([title, "", frame_table(frame, index=True), ""])
    part("Latency, median ms [p20-p80]; a status word where the cell did not run:", _grid(sub, methods, _latency_cell))
    for title, chosen in (("Cells that did not run:", sub["status"] != "ok"),
                          ("Cells timed with fewer calls than asked:", sub["status"] == "ok")):
        notes = sub[chosen & (sub["reason"] != "")]
        if len(notes):
            lines.append(title)
            for (status, reason), grp in notes.groupby(["status", "reason"], sort=False):
                where = ", ".join(f"{m} @ {n}" for m, n in zip(grp["method"], grp["seq_len"]))
                lines.append(f"- {status}: {reason} ({where})")
            lines.append("")
    if sub["peak_mem_mb"].notna().any():
        # ok cells only: a skip's estimate is not in the table (the cell shows its status word)
        mem_how = ", ".join(sorted({m for m in sub.loc[sub["status"] == "ok", "mem_method"] if m})) \
            or "method not recorded"
        part(f"Peak memory, MB ({mem_how}):", _grid(sub, methods, lambda r: fmt(r["peak_mem_mb"])))
    sp = speedup_table(sub, methods)
    if sp is not None:
        part("Speedup of each wave method over each softmax and peer method = that method's median ms / wave median "
             "ms (> 1x: wave is faster):", sp)
    if sub["tflops"].notna().any():
        tf = _grid(sub, methods, lambda r: fmt(r["tflops"]))
        roof = [m for m in methods if sub.loc[sub["method"] == m, "roofline_frac"].notna().any()]
        for m in roof:
            tf[f"{m} roofline"] = _grid(sub, [m], lambda r: fmt(100 * r["roofline_frac"]) + "%")[m]
        part("Achieved TFLOP/s (cost-model FLOPs / median time)" + (", with the fraction of roofline" if roof else "")
             + ":", tf)
    if level == "model" and sub["tokens_per_s"].notna().any():
        part("Tokens/s (batch x N / median time" + (", per rank" if sub["n_ranks"].max() > 1 else "") + "):",
             _grid(sub, methods, lambda r: fmt(r["tokens_per_s"])))
    plots = [p for p in (f"{kind}_{slug}.png" for kind in PLOT_KINDS) if (Path(run_dir) / "plots" / p).is_file()]
    if plots:
        lines += ["Plots: " + ", ".join(f"[{p}](plots/{p})" for p in plots), ""]
    return lines


HOW_TO_READ = [
    "- Times are medians of many repetitions (see `reps` in timings.csv) with the 20th-80th percentile range in "
    "brackets; a wide bracket means a noisy cell. A time marked (1 rep) is one timed repetition, not a median: a "
    "cell that answers a published claim but would not fit a time budget runs with the fewest calls (reason under "
    "the table), and a cell whose time budget one repetition used up stops there.",
    "- Ratios measured in one run (speedups, floor ratios, exponents) are more trustworthy than absolute times: "
    "machine noise and clock drift hit the interleaved methods alike, while absolute times move from machine to "
    "machine and run to run.",
    "- Everything here is for the hardware and software stated in section 1; compare runs only on the same setup.",
    "- Scaling exponents on short lengths are flattened by fixed overheads (launches, allocation, Python); the "
    "upper-half exponent is the better guide to asymptotic growth.",
    "- A status word (skipped, oom, error) means the cell has no time; its reason is listed under the table.",
]


def write_summary(run_dir: Path, plots: bool = False) -> Path:
    """Write run_dir/summary.md (after drawing plots/ with `plots`: it links the plots it finds); return its path."""
    run_dir = Path(run_dir)
    if plots:
        make_plots(run_dir)
    env = read_env(run_dir)
    df = load_timings(run_dir)
    cells = aggregate(df)
    lines = header_lines(run_dir, env, df)
    groups = panels(cells)

    lines += ["## 2. Measurements per level and pass", ""]
    if not groups:
        lines += ["No rows in timings.csv yet.", ""]
    for level, pas, cfg, sub in groups:
        lines += measurement_lines(level, pas, cfg, sub, env, run_dir)

    lines += ["## 3. Scaling exponents", "", "Slope of log(median ms) against log(N) by least squares over the ok "
              "cells. On short lengths fixed overheads flatten the slope, so the slope over the upper half of the "
              "lengths is also given when there are at least 4 points.", ""]
    for level, pas, cfg, sub in groups:
        lines += scaling_lines(level, pas, cfg, sub)

    lines += ["## 4. Crossover lengths", "", "The length from which each wave method stays faster than each softmax "
              "and peer method: the first measured length of the final all-faster run, and the crossing interpolated "
              "in log-log (log speedup linear in log N) between the two bracketing lengths.", ""]
    cross = [c for g in groups if (c := crossover_lines(*g))]
    lines += [ln for c in cross for ln in c] or ["No level/pass has both a wave and a softmax or peer method.", ""]

    lines += ["## 5. Floor ratio (core fwd)", ""]
    core_fwd = [g for g in groups if g[0] == "core" and g[1] == "fwd"]
    floors = [([f"### {cfg}", ""] if cfg else []) + f for _, _, cfg, sub in core_fwd if (f := floor_lines(sub))]
    lines += [ln for f in floors for ln in f] or ["No fft-floor reference rows at core fwd in this run.", ""]
    parts = [(f"Memory growth{f' ({cfg})' if cfg else ''}", memory_lines(sub)) for _, _, cfg, sub in core_fwd]
    parts += [("Backward / forward (layer)", backward_lines(cells)), ("torch.compile", compiled_lines(cells))]
    for title, part in parts:
        lines += [f"### {title}", "", *part] if part else []

    lines += ["## 6. Claims audit (the published advantage vs sequence length)", ""]
    no_rows = ({}, 1, 8, 64, "defaults: no rows")
    measured, b, h, d, src = claim_inputs(cells, env, CLAIM_LENGTHS) if len(cells) else no_rows
    lines += claims_section(measured, b, h, d, src) + [""]

    lines += ["## 7. How to read this", ""] + HOW_TO_READ + [""]
    out = run_dir / "summary.md"
    write_text(out, "\n".join(lines))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgParser(prog="python -m bench.scaling.summary",
                       description="Regenerate summary.md and plots/*.png of a scaling run from its timings.csv.")
    parser.add_argument("run_dir", help="a run folder holding timings.csv and env.json (results/runs/<run>)")
    parser.add_argument("--no-plots", action="store_true", help="only write summary.md")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if run_dir.is_file():
        raise UsageError(f"{str(run_dir)!r} is a file, not a folder; give the run folder that holds timings.csv "
                         "(results/runs/<run>)")
    if not run_dir.is_dir():
        raise UsageError(f"run folder {str(run_dir)!r} does not exist")
    summary = write_summary(run_dir, plots=not args.no_plots)  # no timings.csv: refused by load_timings
    print(f"wrote {summary}" + ("" if args.no_plots else f" and the plots in {run_dir / 'plots'}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="python -m bench.scaling.summary"))
