"""Regression timings of the attention layer with its projections (and the wave gate): x (1, N, 512), fp32, 8 heads.

Opt-in (deselected by the default run): python -m pytest tests/benchmarks -m benchmark, or tox -e bench.
"""
import pytest

pytestmark = pytest.mark.benchmark


def test_layer(cell, time_cell):
    time_cell("layer", cell)
