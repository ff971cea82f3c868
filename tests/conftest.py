"""Test settings shared by every module.

The tests use tiny models: a second torch thread buys nothing there, and on a loaded 2-core
machine OpenMP spin-waits can make a 10 ms step take a second. So torch runs one thread for the
whole session; a test that needs more threads sets them itself (and puts them back), or sets
WAVEFIELD_TEST_THREADS for the whole run.
"""
from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("WAVEFIELD_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_globals():
    """A module whose in-process runs set torch threads or deterministic mode (the bench.quality CLI does)
    gives the next module the settings it found."""
    import torch

    threads, det, warn = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn)
