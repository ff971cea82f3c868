"""Physics diagnostics (`python -m bench.diagnostics`): per-head reach and roles, kernels and measured
impulse responses, head coupling, energy flow, the conservation bound, and causality probes with
demonstrations of the known leaks (docs/mechanism.md, "Causality"; docs/claims.md, claim 6).

Modules: heads (parameters, reach, roles, impulse, coupling), energy (instrumented forward),
conservation (Young's bound, check_conservation), causality (probe_causality on any callable),
textdata (the text batch), run (all checks -> long-format rows), report (csv + summary.md), plots.
Nothing heavy is imported here so that `--help` and argument errors stay fast.
"""
