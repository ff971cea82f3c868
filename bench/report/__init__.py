"""results/README.md, the published results page, built from chosen run folders (docs/results.md).

    python -m bench.report results/runs/<run> ... results/gpu/<session>/<run> ... [--out results/README.md]

runs.py finds, checks and regenerates the runs, evidence.py reads the numbers from their CSVs,
page.py renders the sections, figures.py the speedup plots, build.py assembles the page.
"""
__all__ = ["build_report"]


def __getattr__(name: str):
    # build_report pulls in pandas; importing it lazily keeps argument errors fast
    if name == "build_report":
        from bench.report.build import build_report

        return build_report
    raise AttributeError(name)
