"""Faults of size and number: sizes that cannot fit and inf/nan flags are refused in one line before
any work, and a corpus too small for the run creates nothing. Each CLI's `python -m` entry point runs in
this process (the real command line's exit 2 and one line: test_faults.py's output-folder faults)."""
import time

import pytest

from faultkit import BASE_ARGS, QUALITY, REPO, SLOW, bench_in, refused


@pytest.mark.parametrize("module,flags", [
    ("quality", ["--seq-len", "2000000000"]),  # within the 2**31 - 1 the flag takes, 11.6 TiB to train
    pytest.param("quality", ["--d-model", "1000000", "--n-heads", "2"], marks=SLOW),
    # before the models are sized: sizing 100,000 layers takes about half an hour
    ("quality", ["--n-layers", "100000", "--seq-len", "1024", "--batch-size", "64"]),
    ("diagnostics", ["--probe-len", "1000000000"]),
    ("scaling", ["--mem-budget", "1000000000"]),
    pytest.param("diagnostics", ["--seq-len", "1000000000"], marks=SLOW),
    pytest.param("diagnostics", ["--d-model", "1000000"], marks=SLOW),
], ids=["quality-seq-len", "quality-d-model", "quality-n-layers", "diag-probe-len", "scaling-mem-budget",
        "diag-seq-len",
        "diag-d-model"])
def test_sizes_that_cannot_fit_are_refused_at_once(module, flags, tmp_path):
    t0 = time.perf_counter()
    needles = ["--mem-budget", "available RAM"] if module == "scaling" else ["needs at least", "available"]
    refused(bench_in(module, *BASE_ARGS[module], *flags, "--out", tmp_path / "out"), *needles)
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "out").exists()


def test_resume_takes_a_lower_memory_budget_and_caps_one_this_machine_cannot_give(monkeypatch, capsys):
    """A lower --mem-budget was refused as a conflict, and the run's budget was kept on a smaller machine, where
    cells estimated under it could be killed for memory (a crash, not a row)."""
    from bench.scaling import cli

    monkeypatch.setattr(cli, "available_bytes", lambda device: 10e9)
    base = cli.resolve_config(cli.build_parser().parse_args(["--device", "cpu", "--mem-budget", "8"]))
    lower = cli.resolve_config(cli.build_parser().parse_args(["--mem-budget", "2"]), base=base)
    assert lower.mem_budget_gb == 2.0 and cli.resume_conflicts(lower, base) == []
    higher = cli.resolve_config(cli.build_parser().parse_args(["--mem-budget", "9"]), base=base)
    assert cli.resume_conflicts(higher, base) == ["--mem-budget 9.0 (the run has 8.0)"]
    monkeypatch.setattr(cli, "available_bytes", lambda device: 9.9e9)  # a little less free now: the budget stands
    assert cli.resolve_config(cli.build_parser().parse_args([]), base=base).mem_budget_gb == 8.0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cli, "available_bytes", lambda device: 5e9)  # less than the run's 8 GB
    share = round(cli.DEVICE_DEFAULTS["cpu"]["mem_fraction"] * 5, 2)  # the default budget here
    kept = cli.resolve_config(cli.build_parser().parse_args([]), base=base)
    assert kept.mem_budget_gb == share and cli.resume_conflicts(kept, base) == []
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "env.json field mem_budget_gb is 8 GB" in err and f"using {share:g} GB" in err, err


def test_ranks_on_one_cpu_share_its_memory_budget(monkeypatch):
    """Under torchrun on one CPU machine every rank took the whole default budget: two ranks could plan twice the
    RAM there is and be killed for memory (a crash, not a row)."""
    from bench.common.cli import UsageError
    from bench.scaling import cli

    monkeypatch.setattr(cli, "available_bytes", lambda device: 10e9)
    alone = cli.resolve_config(cli.build_parser().parse_args(["--device", "cpu"]))
    shared = cli.resolve_config(cli.build_parser().parse_args(["--device", "cpu"]), local_world=2)
    assert shared.mem_budget_gb == pytest.approx(alone.mem_budget_gb / 2)
    six = cli.build_parser().parse_args(["--device", "cpu", "--mem-budget", "6"])
    assert cli.resolve_config(six).mem_budget_gb == 6
    with pytest.raises(UsageError, match=r"--mem-budget 6 GB is more than the available RAM here per rank \(2 ranks "
                       r"share it\) \(5 GB\); give at most that"):
        cli.resolve_config(six, local_world=2)


@pytest.mark.parametrize("module,flags", [
    ("quality", ["--lr", "inf"]),
    ("quality", ["--dropout", "nan"]),
    ("diagnostics", ["--conservation-tol", "nan"]),
    ("diagnostics", ["--role-thresholds", "4,inf"]),
    ("scaling", ["--time-budget", "inf"]),
    ("regress", ["--exponent-tol", "inf"]),
], ids=["quality-lr", "quality-dropout", "diag-tol", "diag-thresholds", "scaling-budget", "regress-tol"])
def test_inf_and_nan_flags_are_refused(module, flags, tmp_path):
    if module == "regress":
        base = REPO / "tests" / "benchmarks" / "baseline_cpu.json"
        args = ["--baseline", base, "--current", base, *flags]
    else:
        args = [*BASE_ARGS[module], *flags, "--out", tmp_path / "out"]
    refused(bench_in(module, *args), "finite")
    assert not (tmp_path / "out").exists()


def test_too_little_data_creates_nothing(tmp_path):
    out = tmp_path / "out"
    refused(bench_in("quality", *QUALITY, "--seq-len", "100000", "--out", out), "too little data")
    assert not out.exists()  # so the corrected command is not refused as "already holds results"


@pytest.mark.parametrize("name", ["cuda:abc", "cuda:-1", "cuda:", "cuda:01"])
def test_malformed_cuda_device_is_a_usage_error(name, monkeypatch):
    """On a machine with a GPU, --device cuda:abc reached torch.device and ended in a RuntimeError traceback."""
    import torch

    from bench.common.cli import UsageError
    from bench.common.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UsageError, match="valid choices"):
        resolve_device(name)
