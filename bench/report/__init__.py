"""results/README.md, the published results page, built from chosen run folders.

    python -m bench.report results/runs/<scaling run> results/runs/<quality run> ... [--out results/README.md]

Each run folder is recognised by the CSV it holds (scaling: timings.csv, quality: final.csv,
diagnostics: diagnostics.csv). Its summary.md is first regenerated from that CSV when the harness
has a one-argument summary writer, then included with headings demoted by two levels, links
rewritten relative to the README, and a provenance line (source CSV, machine, software, git sha,
exact command) under every table. The headline section "What reproduces and what does not" is
computed here, straight from timings.csv and final.csv.

Modules: runs.py (finding, loading and regenerating runs, provenance text), markdown.py (text
surgery on summary.md), headline.py (the claims and gap tables), build.py (page assembly),
__main__.py (the command line).
"""
__all__ = ["build_report"]


def __getattr__(name: str):
    # build_report pulls in pandas; importing it lazily keeps argument errors fast
    if name == "build_report":
        from bench.report.build import build_report

        return build_report
    raise AttributeError(name)
