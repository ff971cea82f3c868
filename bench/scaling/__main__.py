"""`python -m bench.scaling ...` (also under `torchrun --nproc-per-node K -m bench.scaling ...`)."""
from bench.common.cli import run_cli
from bench.scaling.cli import PROG, main

if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog=PROG, resumable=True))
