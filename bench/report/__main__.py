"""python -m bench.report RUN_DIR [RUN_DIR ...] [--out results/README.md]. Exit codes: 0 written; 2 bad input
(no runs, a missing folder, a folder of unknown kind, a run outside --out's folder): one line, nothing written."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

from bench.common.cli import ArgParser, UsageError, run_cli
from bench.common.files import check_out_file

PROG = "python -m bench.report"


def build_parser() -> ArgParser:
    p = ArgParser(prog=PROG, description="Build results/README.md from run folders: every published claim with "
                  "its cost-model value, the measured numbers and a verdict, then the sections (docs/results.md).")
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run folders under the folder of --out; the kind is "
                   "detected from timings.csv (scaling), final.csv (quality) or diagnostics.csv (diagnostics)")
    p.add_argument("--out", default="results/README.md",
                   help="the page to write (default results/README.md); every run must lie under its folder")
    p.add_argument("--no-regenerate", action="store_true",
                   help="use each run's summary.md as it is (each run must hold one) instead of rewriting "
                   "it from the CSV first")
    p.add_argument("--no-plots", action="store_true", help="redraw neither the runs' plots/ nor the page's "
                   "plots/speedup_<cpu|gpu>.png (faster; existing plots are linked)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if not args.runs:
        raise UsageError("no run folders given (pass one or more folders such as results/runs/<run>)")
    if out.suffix.lower() != ".md":
        raise UsageError(f"--out {args.out!r} should be a markdown file (for example results/README.md)")
    check_out_file(args.out)
    from bench.report.build import build_report

    raw = list(sys.argv[1:] if argv is None else argv)
    build_report(args.runs, out, f"{PROG} {shlex.join(raw)}", regen=not args.no_regenerate, plots=not args.no_plots)
    print(f"wrote {out} from {len({Path(r).resolve() for r in args.runs})} run folder(s)")  # as load_runs counts
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
