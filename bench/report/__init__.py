"""results/README.md, the published results page, built from chosen run folders (docs/results.md).

    python -m bench.report results/runs/<run> ... results/gpu/<session>/<run> ... [--out results/README.md]

runs.py finds, checks and regenerates the runs, evidence.py reads the numbers from their CSVs,
page.py renders the sections, build.py draws the speedup plots and assembles the page (build_report).
"""
