"""Physics diagnostics, `python -m bench.diagnostics` (docs/claims.md, claims 6 and 8). Nothing heavy is
imported here, so that `--help` and argument errors stay fast."""
