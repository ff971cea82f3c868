"""The sweep engine with fake methods: rows, statuses, OOM and error handling, budgets, the run order."""
from dataclasses import replace

import pytest
import torch

from bench.scaling import costs
from bench.scaling.builders import Built, CheckResult
from bench.scaling.grid import SweepConfig, row_key
from bench.scaling.registry import EXTRA, FIRST, HEADLINE, METHODS, Method
from bench.scaling.results import read_header, read_rows
from bench.scaling.schema import COLUMNS, STATUSES
from bench.scaling.sweep import run_sweep

CPU = torch.device("cpu")


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
                  why_unavailable=lambda dev, dtype=None: None)


def _rows_by(rows, method):
    return {int(r["seq_len"]): r for r in rows if r["method"] == method}


def test_csv_header_and_ok_rows(tmp_path):
    reg = {"a": _fake("a"), "b": _fake("b")}
    path = tmp_path / "timings.csv"
    stats = run_sweep(_cfg(["a", "b"]), path, CPU, registry=reg, progress=False)
    assert read_header(path) == COLUMNS
    rows = read_rows(path)
    assert sum(stats.values()) == len(rows) == 6
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


def test_a_python_memory_error_is_an_oom_row(tmp_path):
    # run_cli calls MemoryError out of memory; the sweep called it an error and went on to longer lengths
    def no_memory(spec):
        def fn():
            if spec.seq_len >= 128:
                raise MemoryError()
            return torch.ones(2)
        return fn

    path = tmp_path / "timings.csv"
    run_sweep(_cfg(["big"]), path, CPU, registry={"big": _fake("big", no_memory)}, progress=False)
    rows = _rows_by(read_rows(path), "big")
    assert [rows[n]["status"] for n in (64, 128, 256)] == ["ok", "oom", "skipped"], rows
    assert rows[128]["reason"] == "MemoryError" and "out of memory" in rows[256]["reason"]


@pytest.mark.parametrize("exc, oom", [(torch.cuda.OutOfMemoryError("CUDA out of memory"), True),
                                      (MemoryError(), True),
                                      (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"), True),
                                      (RuntimeError("shape mismatch"), False)])
def test_the_sweep_and_every_cli_agree_on_what_is_out_of_memory(tmp_path, capsys, exc, oom):
    """The same exceptions are oom rows in a sweep and, escaping a CLI, one line and exit 2; any other
    RuntimeError is an error row, and a bug that raises out of a CLI."""
    from bench.common.cli import run_cli

    def main(argv):
        raise exc

    def failing(spec):
        def fn():
            raise exc
        return fn

    path = tmp_path / "timings.csv"
    run_sweep(_cfg(["m"]), path, CPU, registry={"m": _fake("m", failing)}, progress=False)
    assert _rows_by(read_rows(path), "m")[64]["status"] == ("oom" if oom else "error")
    capsys.readouterr()  # the sweep's progress lines
    if not oom:
        with pytest.raises(RuntimeError):
            run_cli(main, [], prog="p")
        return
    assert run_cli(main, [], prog="p") == 2
    err = capsys.readouterr().err
    assert err.startswith("p: error: out of memory") and err.count("\n") == 1, err


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


def test_a_check_over_a_small_memory_budget_says_how_much_it_needs(tmp_path):
    # the check's short run needs 3 x 1e6 bytes: "needs about 0.0 GB > memory budget 0.001 GB" said nothing
    reg = {"big": _fake("big", memory=1e6)}
    path = tmp_path / "timings.csv"
    run_sweep(_cfg(["big"], seq_lens=[64], mem_budget_gb=0.001), path, CPU, registry=reg, progress=False)
    (row,) = read_rows(path)
    assert row["reason"] == "its correctness check (N=257) needs about 0.003 GB > memory budget 0.001 GB", row


def test_inner_loop_is_calibrated_on_a_plain_call_not_on_build_and_profiler_time(tmp_path):
    # the estimate spanned the build and the profiled memory call: a 10 ms estimate gave inner 1 for a fast call
    import time

    from bench.common.timing import calibrate_inner
    from bench.scaling.budget import Decision
    from bench.scaling.sweep import Sweep

    def slow_build(spec):
        time.sleep(0.05)
        return Built(lambda: torch.ones(4).sum(), lambda: "fake")

    reg = {"fast": replace(_fake("fast"), build=slow_build)}
    sweep = Sweep(_cfg(["fast"]), None, CPU, registry=reg, progress=False)
    prepared = sweep._prepare(reg["fast"], sweep.spec_for("core", "fwd", 64), Decision(True))
    assert calibrate_inner(prepared.est_call_s, sweep.policy.rep_target_s) > 1, prepared.est_call_s


def test_statuses_are_from_the_schema(tmp_path):
    reg = {"ok": _fake("ok"), "bad": _fake("bad", check_ok=False)}
    path = tmp_path / "timings.csv"
    run_sweep(_cfg(list(reg), seq_lens=[64]), path, CPU, registry=reg, progress=False)
    assert {r["status"] for r in read_rows(path)} <= set(STATUSES)


@pytest.mark.parametrize("column,value", [("status", "done"), ("level", "Core"), ("pass", "bwd"), ("status", "OK")])
def test_a_timings_csv_with_a_value_the_sweep_does_not_know_is_refused(column, value, tmp_path):
    # a resume kept such rows: never measured again ('done'), or an odd extra panel in the summary ('Core')
    from bench.common.cli import UsageError

    path = tmp_path / "timings.csv"
    row = {**dict.fromkeys(COLUMNS, "1"), "method": "wave", "level": "core", "pass": "fwd", "status": "ok",
           "device": "cpu", "dtype": "float32", column: value}
    path.write_text(",".join(COLUMNS) + "\n" + ",".join(row[c] for c in COLUMNS) + "\n")
    with pytest.raises(UsageError, match=f"{path}: .*: {column} = '{value}' is not one of "):
        read_rows(path)
