"""Regression timings of the sequence-mixing core alone: q, k, v of shape (B, H, N, d) = (1, 8, N, 64), fp32.

Opt-in (deselected by the default run): python -m pytest tests/benchmarks -m benchmark, or tox -e bench.
"""
import pytest

pytestmark = pytest.mark.benchmark


def test_core(cell, time_cell):
    time_cell("core", cell)
