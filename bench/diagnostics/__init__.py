"""Physics diagnostics (`python -m bench.diagnostics`): per-head reach and roles, kernels and measured
impulse responses, head coupling, energy flow, the conservation bound, and causality probes with
demonstrations of the known leaks (docs/mechanism.md, "Causality"; docs/claims.md, claims 6 and 8).
Nothing heavy is imported here so that `--help` and argument errors stay fast.
"""
