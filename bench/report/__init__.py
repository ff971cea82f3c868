"""results/README.md built from chosen run folders (docs/results.md): runs.py finds, checks and regenerates
the runs, evidence.py reads their numbers, page.py renders the sections, build.py plots and assembles the page."""
