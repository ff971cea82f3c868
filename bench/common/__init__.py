"""Pieces every bench CLI shares. Import the modules themselves; this package imports nothing, so
that `--help` and argument errors do not wait for torch.

    cli: one-line errors, exit 2, flag types, run_cli      files: output folders, CSVs, atomic files
    checkpoint: the format bench.quality writes            env: env.json (machine, software, git)
    memory: peak memory, will a size fit                   dist: torchrun ranks and collectives
    device, allocator, timing, timings, tables
"""
