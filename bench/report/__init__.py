"""results/README.md, the published results page, built from chosen run folders.

    python -m bench.report results/runs/<run> ... results/gpu/<session>/<run> ... [--out results/README.md]

Each run folder is recognised by the CSV it holds (scaling: timings.csv, quality: final.csv,
diagnostics: diagnostics.csv); its summary.md is regenerated from that CSV first. The page opens
with every published claim beside the cost model, the measured CPU and GPU numbers (spread over
the committed runs of one setup) and a verdict, then key numbers, speed and memory per level,
peers, quality, heads and causality, plots and an index of the runs.

Modules: runs.py (finding, loading and regenerating runs), evidence.py (the
numbers, from the CSVs), page.py (the sections), figures.py (speedup plots), build.py (page
assembly), __main__.py (the command line).
"""
__all__ = ["build_report"]


def __getattr__(name: str):
    # build_report pulls in pandas; importing it lazily keeps argument errors fast
    if name == "build_report":
        from bench.report.build import build_report

        return build_report
    raise AttributeError(name)
