"""`python -m bench.scaling ...` (also under `torchrun --nproc-per-node K -m bench.scaling ...`). The sweep's modules
load torch (1-2 s): they are imported inside run_cli, so a Ctrl-C meanwhile is one line and exit 130 too."""
from bench.common.cli import run_cli


def main(argv=None) -> int:
    from bench.scaling.cli import main as sweep

    return sweep(argv)


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="python -m bench.scaling", resumable=True))  # bench.scaling.cli.PROG
