"""Pieces every bench CLI shares. Import the modules themselves; this package imports nothing, so
that `--help` and argument errors do not wait for torch.

    cli         one-line errors and exit 2, flag types (finite numbers only), run_cli
    files       output folders (checked, created, locked), appended CSVs, atomic JSON/files
    checkpoint  the checkpoint format bench.quality writes and bench.diagnostics reads
    env         env.json contents: machine, software, git
    memory      peak memory of a call; will a size fit (check_fits, lm_bytes)
    dist        torchrun: ranks, process group, collectives (no-ops in a plain process)
    device, allocator, timing
"""
