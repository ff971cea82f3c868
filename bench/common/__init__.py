"""Pieces every bench CLI shares; this package imports nothing, so `--help` and argument errors never wait for torch."""
