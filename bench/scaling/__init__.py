"""bench.scaling: latency, memory and throughput of Wave Field attention vs softmax attention over N. Which file
holds what: docs/method.md; the entry point is cli.py (python -m bench.scaling)."""
