"""`python -m bench.scaling ...` (also under `torchrun --nproc-per-node K -m bench.scaling ...`)."""
import sys

from bench.common.cli import run_cli
from bench.scaling.cli import PROG, main

if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
