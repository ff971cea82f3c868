"""bench.scaling: registry, cost model, budget predictor, CSV, resume, OOM/error rows, CLI errors,
an end-to-end --quick run and a two-process torchrun run (CPU, gloo)."""
import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.common.cli import run_cli
from bench.scaling import costs
from bench.scaling.budget import Predictor, share_out
from bench.scaling.builders import Built
from bench.scaling.checks import CheckResult
from bench.scaling.cli import PROG, main
from bench.scaling.config import SweepConfig
from bench.scaling.grid import CellSpec, length_grid, rank_of_group, row_key
from bench.scaling.registry import DEFAULT_METHODS, EXTRA, FIRST, FLOOR_METHODS, HEADLINE, METHODS, Method
from bench.scaling.results import read_header, read_rows
from bench.scaling.schema import COLUMNS, KEY_COLUMNS, STATUSES
from bench.scaling.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _py_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_module(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "bench.scaling", *args], cwd=REPO, env=_py_env(),
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_contents():
    names = set(METHODS)
    assert {"wave", "wave-field", "softmax-sdpa", "softmax-naive", "softmax-flash-attn", "softmax-sdpa-flash",
            "softmax-sdpa-cudnn", "softmax-sdpa-efficient", "softmax-sdpa-math", "fft-floor",
            "fft-floor-field"} <= names
    assert DEFAULT_METHODS == ("wave", "wave-scan", "wave-field", "softmax-sdpa", "softmax-naive")
    for name in FLOOR_METHODS:
        m = METHODS[name]
        assert m.kind == "reference" and m.levels == ("core",) and m.passes == ("fwd",)
    assert METHODS["wave"].kind == "wave" and METHODS["softmax-naive"].kind == "softmax"
    assert METHODS["softmax-flash-attn"].why_unavailable(CPU)  # CUDA only
    assert METHODS["softmax-sdpa-efficient"].why_unavailable(CPU)
    assert METHODS["softmax-sdpa-math"].why_unavailable(CPU) is None


def test_list_methods_cli(capsys):
    assert run_cli(main, ["--list-methods", "--device", "cpu"], prog=PROG) == 0
    out = capsys.readouterr().out
    for name in METHODS:
        assert name in out
    assert "needs a CUDA device" in out


def test_builders_and_costs_for_every_cpu_method():
    """Every method available on CPU builds at every level/pass it supports and returns a closure.
    (wave-compiled is left to the slow test: torch.compile takes 10-30 s here.)"""
    for name, m in METHODS.items():
        if m.why_unavailable(CPU) or name.endswith("-compiled"):
            continue
        for level in m.levels:
            for pass_ in m.passes:
                spec = CellSpec(level, pass_, 1, 2, 8, 32, CPU, torch.float32, model_dim=16, model_layers=1)
                built = m.build(spec)
                built.fn()
                assert isinstance(built.backend(), str)
                cost = m.cost(spec)
                assert cost.flops > 0 and cost.bytes > 0
                assert m.memory(spec) > 0


# ---------------------------------------------------------------------------------------------
# cost model (numbers checked by hand)


def test_fft_building_blocks():
    assert costs.rfft_flops(8, 8) == 8 * 2.5 * 8 * 3  # 480
    assert costs.fft_conv_flops(1, 8) == 5 * 8 * 3 + 6 * 5  # 150
    assert costs.fft_conv_flops(512, 8) == 76_800
    assert costs.wave_flops(1, 8, 4, 64, 8, "fwd") == 76_800 + 480
    assert costs.wave_flops(1, 8, 4, 64, 8, "fwdbwd") == 76_800 * 2.5 + 2 * 480


def test_softmax_flops():
    # 4 B H N^2 d / 2 (causal) at B=1 H=8 N=1024 d=64
    assert costs.softmax_flops(1, 8, 1024, 64, "fwd") == 1_073_741_824
    assert costs.softmax_flops(1, 8, 1024, 64, "fwdbwd") == 3.5 * 1_073_741_824
    assert costs.softmax_flops(1, 8, 1024, 64, "fwd", causal=False) == 2 * 1_073_741_824


def test_wave_core_cost_token_and_field():
    # token path, N=512: M = fast_fft_size(1023) = 1024; R = 512 rows, kernel H = 8 rows
    assert costs.wave_fft_size(512, 4.0, "token") == 1024
    c = costs.mixing_cost("wave", "token", 1, 8, 512, 64, 4, "fwd")
    assert c.flops == 512 * (5 * 1024 * 10 + 6 * 513) + 8 * 2.5 * 1024 * 10  # 27,995,136
    assert c.bytes == 3 * 8 * 512 * 64 * 4  # k, v read, y written: 3 x B H N d x 4 bytes = 3,145,728
    # field path, s=4: G = ceil(511 * 4) + 2 = 2046 cells, M = fast_fft_size(4091) = 4096
    assert costs.field_cells(512, 4.0) == 2046
    assert costs.wave_fft_size(512, 4.0, "field") == 4096
    f = costs.mixing_cost("wave", "field", 1, 8, 512, 64, 4, "fwd")
    assert f.flops == 512 * (5 * 4096 * 12 + 6 * 2049) + 8 * 2.5 * 4096 * 12


def test_softmax_core_bytes_and_layer_flops():
    c = costs.mixing_cost("softmax", None, 1, 8, 1024, 64, 4, "fwd")
    assert c.bytes == 4 * 8 * 1024 * 64 * 4  # q, k, v read + y written = 8,388,608
    assert costs.mixing_cost("softmax", None, 1, 8, 1024, 64, 4, "fwdbwd").bytes == 2 * c.bytes
    # layer: + 2 FLOPs per matmul weight per token; softmax layer has 4 D^2 weights (D = 512)
    lay = costs.layer_cost("softmax", None, 1, 8, 1024, 64, 4, "fwd")
    assert lay.flops == 1_073_741_824 + 2 * 4 * 512 * 512 * 1024  # 3,221,225,472
    lay_bwd = costs.layer_cost("softmax", None, 1, 8, 1024, 64, 4, "fwdbwd")
    assert lay_bwd.flops == 3.5 * 1_073_741_824 + 3 * 2 * 4 * 512 * 512 * 1024


def test_model_matmul_params_match_the_models():
    from baselines import StandardLM
    from wavefield_core import WaveFieldLM

    def linear_weights(model):
        return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))

    std = StandardLM(256, 256, 6, 8, 1024, max_seq_len=64)
    assert costs.model_matmul_params("softmax", 256, 6, 1024, 256) == linear_weights(std) == 4_784_128
    wave = WaveFieldLM(256, d_model=256, n_layers=6, n_heads=8, d_ff=1024)
    # the wave head is x @ embed.weight.T (not an nn.Linear): add V x D by hand
    assert costs.model_matmul_params("wave", 256, 6, 1024, 256) == linear_weights(wave) + 256 * 256


def test_roofline():
    peak = costs.device_peak("NVIDIA H200")
    assert peak is not None and peak.bandwidth == 4.8e12
    assert costs.device_peak("Intel(R) Xeon(R) CPU") is None
    assert costs.roofline_frac(costs.Cost(67e12, 0), 1.0, peak, "wave", "bfloat16") == pytest.approx(1.0)
    assert costs.roofline_frac(costs.Cost(989e12, 0), 2.0, peak, "softmax", "bfloat16") == pytest.approx(0.5)
    assert costs.roofline_frac(costs.Cost(0, 4.8e12), 4.0, peak, "softmax", "float32") == pytest.approx(0.25)
    assert costs.roofline_frac(costs.Cost(1, 1), 1.0, None, "wave", "float32") is None


# ---------------------------------------------------------------------------------------------
# budget predictor


def _linear(n):
    return float(n)


def test_predictor_fit_and_time_skip():
    p = Predictor("cpu", time_budget=0.5, mem_budget=1e9, calls=4)
    series = ("wave", "core", "fwd")
    for n, t in [(512, 0.01), (1024, 0.02), (2048, 0.04)]:
        p.record(series, n, t)
    t, basis = p.call_seconds(series, 4096, "wave", _linear, _linear)
    assert t == pytest.approx(0.08, rel=1e-6) and "fit" in basis
    assert p.decide(series, 4096, "wave", 1e6, _linear, _linear).run  # 4 x 0.08 = 0.32 s < 0.5 s
    d = p.decide(series, 8192, "wave", 1e6, _linear, _linear)  # 4 x 0.16 = 0.64 s > 0.5 s
    assert not d.run
    assert d.reason.startswith("predicted 0.6 s > time budget 0.5 s")
    later = p.decide(series, 16384, "wave", 1e6, _linear, _linear)
    assert not later.run and "longer than N=8192" in later.reason


def test_predictor_uses_the_larger_of_fit_and_cost_ratio():
    """Short lengths are overhead-bound (flat); the cost model's N^2 keeps the prediction honest."""
    p = Predictor("cpu", time_budget=10, mem_budget=1e12, calls=4)
    s = ("softmax-naive", "core", "fwd")
    p.record(s, 512, 0.010)
    p.record(s, 1024, 0.011)
    t, _ = p.call_seconds(s, 2048, "softmax", lambda n: n * n, lambda n: n)
    assert t == pytest.approx(0.044)


def test_predictor_memory_and_cost_only():
    p = Predictor("cpu", time_budget=10, mem_budget=2e9, calls=4)
    d = p.decide(("softmax-naive", "core", "fwd"), 32768, "softmax", 34.4e9, _linear, _linear)
    assert not d.run and d.reason == "predicted peak memory 34.4 GB > memory budget 2.0 GB"
    t, basis = p.call_seconds(("x", "core", "fwd"), 512, "softmax", lambda n: 3e10, lambda n: 0)
    assert basis == "cost model only" and t == pytest.approx(1.0)


def test_predictor_total_budget():
    p = Predictor("cpu", time_budget=100, mem_budget=1e12, calls=4, total_budget=60)
    s = ("wave", "core", "fwd")
    p.record(s, 512, 1.0)
    d = p.decide(s, 1024, "wave", 1, _linear, _linear, elapsed_s=55)
    assert not d.run and "left of the total budget 60 s" in d.reason


def test_total_budget_is_shared_out_over_levels_and_passes():
    segs = [(lv, p) for lv in ("core", "layer", "model") for p in ("fwd", "fwdbwd")]
    assert share_out(240.0, segs) == pytest.approx(90.0)  # core fwd weighs 3 of 8
    assert share_out(100.0, segs[1:]) == pytest.approx(20.0)
    assert share_out(50.0, []) == 50.0
    p = Predictor("cpu", time_budget=100, mem_budget=1e12, calls=4, total_budget=240)
    s = ("wave", "layer", "fwd")
    p.record(s, 512, 1.0)
    d = p.decide(s, 1024, "wave", 1, _linear, _linear, elapsed_s=10, share_left_s=5.0)
    assert not d.run and "share of the total budget 240 s" in d.reason


def test_length_grid_and_ranks():
    assert length_grid(512, 32768) == [512, 1024, 2048, 4096, 8192, 16384, 32768]
    assert length_grid(512, 3000) == [512, 1024, 2048, 3000]
    lens = [256, 512, 1024]
    assert [rank_of_group(n, lens, 2) for n in lens] == [0, 1, 0]


# ---------------------------------------------------------------------------------------------
# the engine with fake methods (fast)


def _cfg(methods, seq_lens=(64, 128, 256), **kw) -> SweepConfig:
    base = dict(device="cpu", dtype="float32", batch=1, heads=2, head_dim=8, field_stride=4.0, methods=list(methods),
                levels=["core"], passes=["fwd"], seq_lens=list(seq_lens), floor=False, warmup=1,
                min_run_time=0.001, min_reps=3, seed=0, threads=1, time_budget=5.0, mem_budget_gb=4.0,
                total_budget=None, model_dim=16, model_layers=1, vocab=256, quick=True)
    base.update(kw)
    return SweepConfig(**base)


def _fake(name, make_fn=None, kind="softmax", check_ok=True, memory=1e3):
    def build(spec):
        fn = make_fn(spec) if make_fn else (lambda: torch.ones(4).sum())
        return Built(fn, lambda: "fake")

    return Method(name, kind, "test method", build=build, memory=lambda spec: memory,
                  cost=lambda spec: costs.Cost(1e6 * spec.seq_len, 1e3),
                  check=lambda spec: CheckResult(0.0 if check_ok else 1.0, 1e-4),
                  available=lambda dev, dtype=None: None)


def _rows_by(rows, method):
    return {int(r["seq_len"]): r for r in rows if r["method"] == method}


def test_csv_header_and_ok_rows(tmp_path):
    reg = {"a": _fake("a"), "b": _fake("b")}
    path = tmp_path / "timings.csv"
    stats = run_sweep(_cfg(["a", "b"]), path, CPU, registry=reg, progress=False)
    assert read_header(path) == COLUMNS
    rows = read_rows(path)
    assert stats.written == len(rows) == 6
    assert {r["status"] for r in rows} == {"ok"}
    for r in rows:
        assert float(r["p20_ms"]) <= float(r["median_ms"]) <= float(r["p80_ms"])
        assert int(r["reps"]) >= 3 and r["backend"] == "fake" and r["mem_method"] == "torch-profiler"
        assert float(r["tokens_per_s"]) > 0 and r["rank"] == "0"
    assert len({row_key(r) for r in rows}) == len(rows)


def test_oom_rows_and_sweep_goes_on(tmp_path):
    def oom_at_128(spec):
        def fn():
            if spec.seq_len >= 128:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
            return torch.ones(2)
        return fn

    def oom_in_build(spec):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory while building inputs")

    reg = {"oomy": _fake("oomy", oom_at_128), "builder-oom": _fake("builder-oom", oom_in_build), "ok": _fake("ok")}
    path = tmp_path / "timings.csv"
    run_sweep(_cfg(list(reg)), path, CPU, registry=reg, progress=False)
    rows = read_rows(path)
    oomy = _rows_by(rows, "oomy")
    assert oomy[64]["status"] == "ok"
    assert oomy[128]["status"] == "oom" and "OutOfMemoryError" in oomy[128]["reason"]
    assert oomy[256]["status"] == "skipped" and "out of memory" in oomy[256]["reason"]
    assert _rows_by(rows, "builder-oom")[64]["status"] == "oom"
    assert all(r["status"] == "ok" for r in _rows_by(rows, "ok").values())
    assert len(rows) == 9


def test_oom_during_timing_is_caught(tmp_path):
    def late_oom(spec):
        calls = {"n": 0}

        def fn():
            calls["n"] += 1
            if calls["n"] > 3:  # after warm-up and a couple of timed reps
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (late)")
        return fn

    reg = {"late": _fake("late", late_oom), "ok": _fake("ok")}
    path = tmp_path / "timings.csv"
    run_sweep(_cfg(list(reg), seq_lens=[64], min_reps=10), path, CPU, registry=reg, progress=False)
    rows = _rows_by(read_rows(path), "late")
    assert rows[64]["status"] == "oom"


def test_error_rows_and_failed_checks(tmp_path):
    def broken(spec):
        raise ValueError("shape mismatch\nsecond line of the message")

    reg = {"broken": _fake("broken", broken), "wrong": _fake("wrong", check_ok=False), "ok": _fake("ok"),
           "huge": _fake("huge", memory=1e15)}
    path = tmp_path / "timings.csv"
    run_sweep(_cfg(list(reg)), path, CPU, registry=reg, progress=False)
    rows = read_rows(path)
    for r in _rows_by(rows, "broken").values():
        assert r["status"] == "error" and r["reason"] == "ValueError: shape mismatch second line of the message"
    for r in _rows_by(rows, "wrong").values():
        assert r["status"] == "error" and r["reason"].startswith("failed correctness check")
        assert r["median_ms"] == ""  # not timed
    for r in _rows_by(rows, "huge").values():
        assert r["status"] == "skipped" and "memory budget" in r["reason"] and r["mem_method"] == "estimate"
    assert {r["status"] for r in _rows_by(rows, "ok").values()} == {"ok"}


def test_time_budget_skips_longer_lengths(tmp_path):
    import time

    def slow(spec):
        return lambda: time.sleep(spec.seq_len * 2e-5)  # 1.3 ms, 2.6 ms, 5.1 ms

    reg = {"slow": _fake("slow", slow)}
    path = tmp_path / "timings.csv"
    run_sweep(_cfg(["slow"], seq_lens=[64, 128, 256, 512], time_budget=0.015, min_run_time=0.001), path, CPU,
              registry=reg, progress=False)
    rows = _rows_by(read_rows(path), "slow")
    assert rows[64]["status"] == "ok" and rows[128]["status"] == "ok"
    assert rows[256]["status"] == "skipped" and "> time budget 0.015 s" in rows[256]["reason"]
    assert rows[512]["status"] == "skipped" and "longer than N=256" in rows[512]["reason"]


def test_headline_first_and_protected_core_cells_never_skipped_for_time(tmp_path):
    """The first phase (headline and first-tier methods) covers every length before an extra runs;
    a protected core cell predicted over the time budget runs with one timed call instead of being
    skipped, while an unprotected one with the same cost is skipped."""
    import time

    def slow(spec):
        return lambda: time.sleep(spec.seq_len * 2e-5)  # 1.3 ms, 2.6 ms, 5.1 ms, 10 ms

    reg = {"extra": replace(_fake("extra", slow), tier=EXTRA),
           "head": replace(_fake("head", slow), tier=HEADLINE),
           "first": replace(_fake("first", slow), tier=FIRST)}
    path = tmp_path / "timings.csv"
    run_sweep(_cfg(list(reg), seq_lens=[64, 128, 256, 512], time_budget=0.015, min_run_time=0.001), path, CPU,
              registry=reg, progress=False)
    rows = read_rows(path)
    order = [r["method"] for r in rows]
    assert max(i for i, m in enumerate(order) if m != "extra") < min(i for i, m in enumerate(order) if m == "extra")
    head, first, extra = (_rows_by(rows, m) for m in ("head", "first", "extra"))
    for n in (64, 128, 256, 512):
        assert head[n]["status"] == "ok", head[n]
    assert head[64]["reason"] == "" and int(head[64]["reps"]) >= 3
    assert int(head[512]["reps"]) == 1 and head[512]["reason"].startswith("fewest calls")
    for series in (first, extra):
        assert series[256]["status"] == "skipped" and "> time budget" in series[256]["reason"]


def test_protected_cells_still_skip_on_memory(tmp_path):
    reg = {"head": replace(_fake("head", memory=1e15), tier=HEADLINE)}
    path = tmp_path / "timings.csv"
    run_sweep(_cfg(["head"], seq_lens=[64]), path, CPU, registry=reg, progress=False)
    (row,) = read_rows(path)
    assert row["status"] == "skipped" and "memory budget" in row["reason"]


def test_pinned_backends_without_a_kernel_for_the_dtype_are_skipped_up_front():
    cuda = torch.device("cuda")
    for name in ("softmax-sdpa-flash", "softmax-sdpa-cudnn"):
        why = METHODS[name].why_unavailable(cuda, torch.float32)
        assert why is not None and "bfloat16/float16 only" in why
        assert METHODS[name].why_unavailable(cuda, torch.bfloat16) is None or "no SDPBackend" in \
            METHODS[name].why_unavailable(cuda, torch.bfloat16)
    assert METHODS["softmax-sdpa-flash"].why_unavailable(CPU, torch.float32) is None  # cpu-flash has fp32
    for name in ("wave-graphed", "softmax-sdpa-graphed"):
        assert "CUDA" in METHODS[name].why_unavailable(CPU) and METHODS[name].levels == ("core",)


def test_statuses_are_from_the_schema(tmp_path):
    reg = {"ok": _fake("ok"), "bad": _fake("bad", check_ok=False)}
    path = tmp_path / "timings.csv"
    run_sweep(_cfg(list(reg), seq_lens=[64]), path, CPU, registry=reg, progress=False)
    assert {r["status"] for r in read_rows(path)} <= set(STATUSES)


# ---------------------------------------------------------------------------------------------
# resume (in process, with the real CLI)

QUICK_CORE = ["--quick", "--levels", "core", "--passes", "fwd", "--seq-lens", "64,128", "--no-floor",
              "--methods", "wave,softmax-sdpa", "--no-progress"]


def test_resume_finishes_without_remeasuring(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = METHODS["softmax-sdpa"]

    def interrupting_build(spec):
        if spec.seq_len == 128:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the sweep
        return real.build(spec)

    monkeypatch.setitem(METHODS, "softmax-sdpa", replace(real, build=interrupting_build))
    assert run_cli(main, [*QUICK_CORE, "--out", str(out)], prog=PROG) == 130
    first = read_rows(out / "timings.csv")
    assert {(r["method"], r["seq_len"]) for r in first} == {("wave", "64"), ("softmax-sdpa", "64")}

    monkeypatch.setitem(METHODS, "softmax-sdpa", real)
    # conflicting flags are refused, with the run's value named
    assert run_cli(main, ["--resume", str(out), "--max-len", "4096"], prog=PROG) == 2
    assert run_cli(main, ["--resume", str(out), "--no-progress"], prog=PROG) == 0
    rows = read_rows(out / "timings.csv")
    keys = [row_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == 4
    assert {(r["method"], r["seq_len"]) for r in rows} == {(m, n) for m in ("wave", "softmax-sdpa")
                                                           for n in ("64", "128")}
    before = {row_key(r): r for r in first}
    for r in rows:
        if row_key(r) in before:  # finished cells are untouched (same measurement, same time stamp)
            assert r == before[row_key(r)]
    env = json.loads((out / "env.json").read_text())
    assert env["sweep"]["seq_lens"] == [64, 128] and len(env["resumes"]) == 1


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("argv,needle", [
    (["--max-len", "0"], "not positive"),
    (["--max-len", "-5"], "not positive"),
    (["--max-len", "lots"], "not an integer"),
    (["--min-len", "4096", "--max-len", "512"], "greater than --max-len"),
    (["--methods", "wave,flash9"], "valid choices: wave"),
    (["--levels", "kernel"], "valid choices: core, layer, model"),
    (["--passes", "bwd"], "valid choices: fwd, fwdbwd"),
    (["--dtype", "float8"], "choose from"),
    (["--device", "tpu"], "valid choices: auto, cpu, cuda"),
    (["--device", "cpu", "--dtype", "float16"], "valid choices on cpu: float32, bfloat16"),
    (["--field-stride", "1.5"], "safe strides"),
    (["--seq-lens", "512,abc"], "not an integer"),
    (["--seq-lens", "512", "--max-len", "1024"], "either --seq-lens"),
    (["--resume", "/nonexistent/run"], "no such folder"),
])
def test_bad_input_in_process(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(run_cli(main, argv, prog=PROG))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err, err


@pytest.mark.parametrize("argv,needle", [
    (["--max-len", "0"], "not positive"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--resume", "/nonexistent/run"], "no such folder"),
])
def test_bad_input_subprocess(argv, needle):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = run_module(*argv, timeout=60)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "Traceback" not in err and "\n" not in err and needle in err, err


# ---------------------------------------------------------------------------------------------
# end to end


def _check_run_folder(run: Path, world: int) -> list[dict]:
    env = json.loads((run / "env.json").read_text())
    for key in ("argv", "seed", "git", "torch", "cpu_model", "sweep", "memory_method", "memory_method_note",
                "budgets", "world_size", "timing", "cost_model", "runs", "torch_threads", "ram_total_gb"):
        assert key in env, key
    assert env["memory_method"] == "torch-profiler" and env["world_size"] == world
    assert read_header(run / "timings.csv") == COLUMNS
    rows = read_rows(run / "timings.csv")
    keys = [row_key(r) for r in rows]
    assert len(keys) == len(set(keys)), "a cell appears twice"
    assert {r["status"] for r in rows} <= set(STATUSES)
    assert not (run / "parts").exists()
    try:
        import bench.scaling.summary  # noqa: F401
    except ImportError:
        pass
    else:
        assert (run / "summary.md").stat().st_size > 0
    try:
        import bench.scaling.plots  # noqa: F401
    except ImportError:
        pass
    else:
        assert any((run / "plots").glob("*.png"))
    return rows


def test_quick_end_to_end(tmp_path):
    run = tmp_path / "quick"
    proc = run_module("--quick", "--device", "cpu", "--out", str(run), "--no-progress", timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(run)
    rows = _check_run_folder(run, world=1)
    env = json.loads((run / "env.json").read_text())
    sweep = env["sweep"]
    expected = set()
    for m in sweep["methods"] + list(FLOOR_METHODS):
        for lv in sweep["levels"]:
            for p in sweep["passes"]:
                if METHODS[m].supports(lv, p):
                    expected |= {(m, lv, p, str(n)) for n in sweep["seq_lens"]}
    assert {(r["method"], r["level"], r["pass"], r["seq_len"]) for r in rows} == expected
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok, "nothing was measured"
    assert all(r["status"] in ("ok", "skipped") for r in rows), [r for r in rows if r["status"] not in ("ok", "skipped")]
    by = {(r["method"], r["level"], r["pass"], r["seq_len"]): r for r in rows}
    assert by[("wave", "core", "fwd", "256")]["status"] == "ok"
    assert by[("wave", "core", "fwd", "256")]["backend"] == "pocketfft"
    assert by[("softmax-sdpa", "core", "fwd", "256")]["backend"] in ("cpu-flash", "math")
    for r in ok:
        assert float(r["median_ms"]) > 0 and float(r["flops"]) > 0 and float(r["peak_mem_mb"]) >= 0


def test_torchrun_two_gloo_ranks(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "bench.scaling", "--quick", "--device", "cpu", "--levels", "core", "--passes", "fwd",
           "--seq-lens", "128,256,512", "--methods", "wave,softmax-sdpa", "--out", str(run), "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=_py_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _check_run_folder(run, world=2)
    cells = {(r["method"], r["seq_len"]) for r in rows}
    assert cells == {(m, n) for m in ("wave", "softmax-sdpa", "fft-floor", "fft-floor-field")
                     for n in ("128", "256", "512")}
    assert len(rows) == 12
    ranks = {r["seq_len"]: r["rank"] for r in rows}
    assert ranks == {"128": "0", "256": "1", "512": "0"}


def test_row_writer_migrates_an_older_header_keeping_every_row(tmp_path):
    # a folder written before a column was added (setup_s) must resume without losing or shifting rows
    from bench.scaling.results import RowWriter, read_header, read_rows
    from bench.scaling.schema import COLUMNS

    path = tmp_path / "timings.csv"
    old = COLUMNS[:-1]
    path.write_text(",".join(old) + "\n" + ",".join("wave" if c == "method" else "7" if c == "seq_len" else ""
                                                      for c in old) + "\n")
    writer = RowWriter(path)
    writer.write({"method": "softmax-sdpa", "seq_len": 8, "setup_s": 0.5})
    assert read_header(path) == COLUMNS
    rows = read_rows(path)
    assert [(r["method"], r["seq_len"], r["setup_s"]) for r in rows] == [("wave", "7", ""), ("softmax-sdpa", "8", "0.5")]


@pytest.mark.slow
def test_compiled_wave_method_matches_eager_and_reports_compile_time(tmp_path):
    # opt-in: torch.compile takes 10-30 s on a 2-core CPU
    from bench.scaling.registry import METHODS

    if METHODS["wave-compiled"].why_unavailable(torch.device("cpu")):
        pytest.skip(METHODS["wave-compiled"].why_unavailable(torch.device("cpu")))
    rc = main(["--device", "cpu", "--levels", "core", "--passes", "fwd", "--methods", "wave,wave-compiled",
               "--seq-lens", "256", "--no-floor", "--min-run-time", "0.05", "--out", str(tmp_path / "run"),
               "--no-progress"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "run" / "timings.csv")
    row = df[df["method"] == "wave-compiled"].iloc[0]
    assert row["status"] == "ok" and row["setup_s"] > 0
    assert "torch.compile" in (tmp_path / "run" / "summary.md").read_text()


def test_memory_bound_ratio_uses_the_measured_copy_bandwidth():
    bw = costs.copy_bandwidth(CPU, nbytes=1 << 22, reps=2)
    assert 1e8 < bw < 1e13  # bytes/s of a real copy on any machine
    cost = costs.Cost(flops=1.0, bytes=2e9)
    assert costs.over_memory_bound(cost, 2.0, 2e9) == pytest.approx(2.0)  # twice the time the bytes need
    assert costs.over_memory_bound(cost, 2.0, None) is None and costs.over_memory_bound(None, 1.0, 1e9) is None
