"""summary.md, plots and the claims arithmetic, on the SYNTHETIC fixture tests/fixtures/scaling_run
(copied to tmp_path first) and on hand-made runs whose answers are known in closed form."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.scaling import claims
from bench.scaling.plots import make_plots
from bench.scaling.schema import COLUMNS
from bench.common.timings import fit_exponent
from bench.scaling.analysis import (backward_lines, compiled_lines, crossover, crossover_text, memory_lines,
                                    scaling_lines)
from bench.scaling.summary import main, write_summary

FIXTURE = Path(__file__).parent / "fixtures" / "scaling_run"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = ["## 1. Run and hardware", "## 2. Measurements", "## 3. Scaling exponents", "## 4. Crossover lengths",
            "## 5. Floor ratio", "## 6. Claims audit", "## 7. How to read this"]


@pytest.fixture()
def fixture_run(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


def write_run(run: Path, rows: list[dict], env: dict | None = None) -> Path:
    """A schema-valid run folder from partial rows (missing columns empty)."""
    run.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([{**dict.fromkeys(COLUMNS, ""), "device": "cpu", "dtype": "float32", "batch": 1,
                           "heads": 8, "head_dim": 64, "rank": 0, **r} for r in rows], columns=COLUMNS)
    frame.to_csv(run / "timings.csv", index=False)
    (run / "env.json").write_text(json.dumps(env if env is not None else {"batch": 1, "heads": 8, "head_dim": 64}))
    return run


def ok(method, n, ms, level="core", pas="fwd", **kw):
    return {"method": method, "level": level, "pass": pas, "seq_len": n, "status": "ok",
            "median_ms": ms, "p20_ms": 0.95 * ms, "p80_ms": 1.05 * ms, **kw}


def section(text: str, start: str, end: str | None = None) -> str:
    body = text.split(start, 1)[1]
    return body.split(end, 1)[0] if end else body


# ------------------------------------------------------------------------------------------------
# the synthetic fixture


def test_fixture_summary_has_every_section_in_order(fixture_run):
    out = write_summary(fixture_run)
    assert out == fixture_run / "summary.md" and out.is_file()
    text = out.read_text()
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    for level_pass in ("### core fwd", "### core fwdbwd", "### layer fwd", "### model fwdbwd"):
        assert level_pass in text
    # header facts from env.json
    header = section(text, SECTIONS[0], SECTIONS[1])
    for fact in ("python -m bench.scaling --preset cpu-smoke --device cpu", "dirty", "torch 2.13.0+cpu",
                 "float32", "1 / 8 / 64", "torch-profiler", "Synthetic CPU"):
        assert fact in header, fact
    # tokens/s at model level, TFLOP/s with a roofline column, floor pass/miss, the leak note
    assert "Tokens/s" in text and "wave roofline" in text
    floor = section(text, SECTIONS[4], SECTIONS[5])
    assert "pass" in floor and "miss" in floor and "(outside target range)" in floor
    assert "G = 1024" in text and "0.125" in text
    assert not list(FIXTURE.glob("summary.md")) and not (FIXTURE / "plots").exists()  # fixture untouched


def test_non_ok_statuses_appear_as_words(fixture_run):
    text = write_summary(fixture_run).read_text()
    core = section(text, "### core fwd", "### core fwdbwd")
    latency = [ln for ln in core.splitlines() if ln.startswith("| 16384") or ln.startswith("| 32768")]
    assert "oom" in latency[0] and "skipped" in latency[1] and "error" in latency[1]
    assert "needs 34.4 GB of scores" in core  # the reason is listed under the table
    claims_part = section(text, SECTIONS[5], SECTIONS[6])
    assert "not measured (skipped: softmax-naive, needs 34.4 GB" in claims_part


def test_fixture_speedup_is_softmax_over_wave(fixture_run):
    text = write_summary(fixture_run).read_text()
    timings = pd.read_csv(fixture_run / "timings.csv")
    core = timings[(timings["level"] == "core") & (timings["pass"] == "fwd") & (timings["seq_len"] == 8192)]
    med = core.set_index("method")["median_ms"]
    expected = med["softmax-sdpa"] / med["wave"]  # ~17.8: wave is the faster one here
    assert expected > 1
    row = next(ln for ln in section(text, "### core fwd", "### core fwdbwd").splitlines()
               if ln.startswith("| 8192") and "x" in ln)
    assert f"{expected:.1f}x" in row and f"{1 / expected:.3g}x" not in row


def test_fixture_plots_are_pngs(fixture_run):
    paths = make_plots(fixture_run)
    names = {p.name for p in paths}
    for kind in ("latency", "memory", "speedup"):
        for lp in ("core_fwd", "core_fwdbwd", "layer_fwd", "model_fwdbwd"):
            assert f"{kind}_{lp}.png" in names
    for p in paths:
        assert p.parent == fixture_run / "plots"
        assert p.read_bytes()[:8] == PNG_SIGNATURE


# ------------------------------------------------------------------------------------------------
# hand-made runs with known answers

NS = [512, 1024, 2048, 4096, 8192, 16384, 32768]
C_WAVE = 1e-3                       # wave ms = C_WAVE * N log2 N
C_SOFT = C_WAVE * 13 / 6000         # softmax ms = C_SOFT * N^2; equal where N / log2 N = 6000 / 13


def nlogn_run(tmp_path) -> Path:
    rows = []
    for n in NS:
        rows.append(ok("wave", n, C_WAVE * n * math.log2(n)))
        rows.append(ok("softmax-sdpa", n, C_SOFT * n * n))
    return write_run(tmp_path / "nlogn", rows)


def test_exponents_of_nlogn_and_n2(tmp_path):
    text = write_summary(nlogn_run(tmp_path)).read_text()
    ns = np.array(NS, float)
    by_hand = np.polyfit(np.log(ns), np.log(ns * np.log2(ns)), 1)[0]  # 1.12 over 512..32K
    assert 1.05 < by_hand < 1.2
    fit_w = fit_exponent(ns, C_WAVE * ns * np.log2(ns))
    fit_s = fit_exponent(ns, C_SOFT * ns ** 2)
    assert fit_w["slope"] == pytest.approx(by_hand, abs=1e-9) and fit_w["r2"] > 0.99
    assert fit_s["slope"] == pytest.approx(2.0, abs=1e-9) and fit_s["r2"] == pytest.approx(1.0)
    assert (fit_w["n_min"], fit_w["n_max"], fit_w["points"]) == (512, 32768, 7)
    exps = section(text, SECTIONS[2], SECTIONS[3])
    wave_row = next(ln for ln in exps.splitlines() if ln.startswith("| wave "))
    soft_row = next(ln for ln in exps.splitlines() if ln.startswith("| softmax-sdpa "))
    assert f"| {by_hand:.2f} " in wave_row and "512-32768 (7 pts)" in wave_row
    assert "| 2.00 " in soft_row and "| 1.000 " in soft_row
    assert "4096-32768 (4 pts)" in wave_row  # upper half: the last ceil(7 / 2) = 4 lengths


def test_a_flat_series_has_exponent_zero_not_minus_zero():
    rows = [{"level": "core", "pass": "fwd", "method": "wave", "seq_len": n, "median_ms": 1.0 - 1e-6 * i}
            for i, n in enumerate((512, 1024, 2048, 4096))]
    text = "\n".join(scaling_lines("core", "fwd", "", _cells(rows)))
    assert "-0.00" not in text and "| 0.00 " in text, text


def test_crossover_by_hand(tmp_path):
    # speedup r(N) = C_SOFT N^2 / (C_WAVE N log2 N) = (13/6000) N / log2 N: < 1 at 4096 (0.74), > 1 at 8192 (1.37)
    r = {n: C_SOFT * n / (C_WAVE * math.log2(n)) for n in NS}
    assert r[4096] < 1 < r[8192]
    # log-log interpolation between 4096 and 8192, done by hand
    t = -math.log(r[4096]) / (math.log(r[8192]) - math.log(r[4096]))
    n_star = 4096 * 2 ** t
    assert 5000 < n_star < 6000  # true crossing: N / log2 N = 6000 / 13 -> N ~ 5830
    c = crossover(NS, [C_WAVE * n * math.log2(n) for n in NS], [C_SOFT * n * n for n in NS])
    assert c["kind"] == "cross" and c["first_n"] == 8192 and c["n_star"] == pytest.approx(n_star, rel=1e-9)
    text = write_summary(nlogn_run(tmp_path)).read_text()
    assert f"~{n_star:.0f} (log-log between 4096 and 8192); faster from 8192 on" in text
    speed = section(text, "### core fwd", SECTIONS[2])
    assert f"| {r[32768]:.2f}x" in speed and f"| {r[4096]:#.3g}x" in speed  # softmax / wave, not inverted


def test_crossover_edge_cases():
    assert crossover([1, 2, 4], [1, 1, 1], [2, 3, 4])["kind"] == "always"
    assert crossover([1, 2, 4], [5, 5, 5], [2, 3, 4])["kind"] == "none"
    assert crossover([], [], [])["kind"] == "no-data"
    wobbly = crossover([1, 2, 4, 8], [1, 1, 1, 1], [2, 0.5, 2, 3])  # faster, slower, then faster for good
    assert wobbly["first_n"] == 4 and wobbly["non_monotone"]
    # a single length is no range: this said "none in range (256-256)"
    assert crossover_text(crossover([256], [5], [2])) == "none in range (256)"
    assert crossover_text(crossover([256, 512], [1, 1], [2, 3])) == "always faster in range (256-512)"


def test_awkward_runs_do_not_crash(tmp_path):
    # single length, NaNs, unknown method, only non-ok rows in one panel, two ranks, empty env.json
    rows = [
        ok("wave", 1024, 2.0), ok("softmax-naive", 1024, 4.0, rank=1), ok("softmax-naive", 1024, 5.0, rank=0),
        {"method": "wave-field", "level": "core", "pass": "fwd", "seq_len": 1024, "status": "ok", "median_ms": ""},
        {"method": "softmax-sdpa", "level": "layer", "pass": "fwdbwd", "seq_len": 4096, "status": "oom",
         "reason": "CUDA out of memory"},
        ok("mystery", 1024, 1.0),
    ]
    run = write_run(tmp_path / "awkward", rows, env={})
    text = write_summary(run).read_text()
    assert all(s in text for s in SECTIONS)
    assert "2.50x" in text  # slowest rank (5.0 ms) over wave (2.0 ms)
    assert "oom" in text and "no ok cell" in text
    paths = make_plots(run)
    assert {p.name for p in paths} == {"latency_core_fwd.png", "memory_core_fwd.png", "speedup_core_fwd.png"} - {
        "memory_core_fwd.png"}  # no peak memory anywhere: that plot is skipped; layer has no ok data
    empty = write_run(tmp_path / "empty", [])
    assert "No rows in timings.csv yet" in write_summary(empty).read_text() and make_plots(empty) == []


@pytest.mark.parametrize("device, shared", [("cpu", True), ("cuda:0", False)])
def test_a_run_over_ranks_says_how_its_lengths_were_shared(tmp_path, device, shared):
    """It said 'each table shows the slowest rank', but the ranks measure different lengths, concurrently."""
    rows = [ok("wave", 512, 1.0, rank=0, device=device), ok("wave", 1024, 2.0, rank=1, device=device)]
    text = write_summary(write_run(tmp_path / "run", rows, env={"device": device})).read_text()
    ranks = section(text, "| ranks |", "\n")
    assert "lengths dealt round-robin to 2 ranks that ran at the same time" in ranks and "slowest" not in ranks
    assert ("sharing this machine's CPU cores" in ranks) == shared, ranks


# ------------------------------------------------------------------------------------------------
# claims arithmetic and the CLI


@pytest.mark.parametrize("n, published", [(2048, 31), (8192, 107), (32768, 367)])
def test_authors_model_reproduces_published(n, published):
    assert claims.authors_advantage(n) == pytest.approx(published, rel=0.10)


@pytest.mark.parametrize("n, plain", [(2048, 186), (8192, 630), (32768, 2185)])
def test_plain_ratio(n, plain):
    assert claims.plain_ratio(n) == pytest.approx(plain, rel=0.01)


def test_suite_cost_model():
    # 2 B H N^2 d and R (5 M log2 M + 6 (M/2 + 1)) with R = B H d, M = 4096 at N = 2048
    assert claims.softmax_attention_flops(2048, 1, 8, 64) == 2 * 8 * 2048 ** 2 * 64
    assert claims.fft_conv_flops(2048, 1, 8, 64) == 512 * (5 * 4096 * 12 + 6 * 2049)
    assert claims.cost_model_ratio(2048, 2, 4, 32) == pytest.approx(claims.cost_model_ratio(2048, 1, 8, 64))


def test_cli_missing_dir_exits_2(tmp_path, capsys):
    from bench.common.cli import run_cli

    assert run_cli(main, [str(tmp_path / "nope")], prog="summary") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    (tmp_path / "no_csv").mkdir()
    assert run_cli(main, [str(tmp_path / "no_csv")], prog="summary") == 2
    capsys.readouterr()
    (tmp_path / "timings.csv").write_text("method\n")  # the file given for its folder was said not to exist
    assert run_cli(main, [str(tmp_path / "timings.csv")], prog="summary") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a file, not a folder" in err, err


def test_cli_regenerates_both(fixture_run, capsys):
    assert main([str(fixture_run)]) == 0
    assert (fixture_run / "summary.md").is_file() and len(list((fixture_run / "plots").glob("*.png"))) == 12
    assert "plots/latency_core_fwd.png" in (fixture_run / "summary.md").read_text()  # linked when present


def row_cells(text: str, *first: str) -> list[str]:
    """The cells of the first table row whose leading cells are `first` (layout-independent)."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[:len(first)] == list(first):
            return cells
    raise AssertionError(f"no row starting {first} in:\n{text}")


def _cells(rows):
    """Cells as aggregate() gives them: every timings.csv column (NaN where not given), one config, all ok."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col, val in (("config", "cpu float32 B=1 H=8 d=64"), ("status", "ok")):
        df[col] = val
    return df


def test_backward_ratio_and_memory_slope_sections_judge_their_targets():
    layer = [{"level": "layer", "pass": p, "method": "wave", "seq_len": n, "median_ms": ms}
             for n, f, fb in ((512, 10.0, 30.0), (1024, 20.0, 80.0)) for p, ms in (("fwd", f), ("fwdbwd", fb))]
    text = "\n".join(backward_lines(_cells(layer)))
    assert row_cells(text, "wave", "512")[-2:] == ["2.00", "pass"]  # (30 - 10) / 10
    assert "3.00" in text and "miss" in text  # (80 - 20) / 20 > 2.5
    core = [{"level": "core", "pass": "fwd", "method": m, "seq_len": n, "median_ms": 1.0, "peak_mem_mb": mb}
            for m, grow in (("wave", 1.0), ("wave-field", 1.5)) for n in (2048, 4096, 8192, 16384, 32768)
            for mb in [10.0 * (n / 4096) ** grow]]
    text = "\n".join(memory_lines(_cells(core)))
    assert "4096..32768" in text  # 2048 is outside the target range
    assert row_cells(text, "wave", "4096..32768")[2:] == ["10.0 -> 80.0", "1.00", "pass"]
    assert "1.50" in text and "miss" in text
    assert backward_lines(_cells(core)) is None and memory_lines(_cells(layer)) is None


def test_compiled_section_sets_compiled_against_eager_with_compile_time():
    rows = [{"level": "core", "pass": "fwd", "method": m, "seq_len": 2048, "median_ms": ms, "setup_s": st}
            for m, ms, st in (("wave", 8.0, 0.05), ("wave-compiled", 10.0, 30.0))]
    text = "\n".join(compiled_lines(_cells(rows)))
    assert row_cells(text, "core", "fwd", "2048")[3:] == ["8.00", "10.0", "1.25", "30.0"]
    assert compiled_lines(_cells(rows[:1])) is None


@pytest.mark.parametrize("others, via", [
    (("softmax-sdpa-math", "softmax-sdpa-graphed"), None),  # were credited as softmax-sdpa (60.7x for math)
    (("softmax-sdpa-math", "softmax-sdpa-flash", "softmax-flash-attn"), "softmax-sdpa-flash"),
])
def test_only_a_fused_kernel_stands_in_for_softmax_sdpa_in_the_claims(others, via):
    from bench.scaling.analysis import claim_inputs

    rows = [{"level": "core", "pass": "fwd", "method": m, "seq_len": 2048, "median_ms": ms}
            for m, ms in (("wave", 1.0), *((m, 2.0 + i) for i, m in enumerate(others)))]
    got = claim_inputs(_cells(rows), {}, [2048])[0][2048]
    assert got.get("softmax-sdpa:via") == via
    if via:
        assert got["softmax-sdpa"] == 3.0, got  # flash's 3.0 ms over wave's 1.0 ms
    else:
        assert str(got["softmax-sdpa"]).startswith("not measured"), got


def test_a_single_call_cell_is_marked_and_its_reason_and_claim_say_so(tmp_path):
    # showed "16,092 [16,092-16,092]" under "medians of many repetitions", its reason nowhere
    why = "fewest calls: predicted 40 s at full repetitions is over a time budget"
    rows = [ok("wave", 2048, 2.0, reps=50), ok("softmax-sdpa", 2048, 16092.0, reps=1, reason=why)]
    text = write_summary(write_run(tmp_path / "run", rows)).read_text()
    latency = section(text, "### core fwd", "Speedup")
    assert "| 16,092 (1 rep) |" in latency and "| 2.00 [1.90-2.10] |" in latency, latency
    assert f"- ok: {why} (softmax-sdpa @ 2048)" in latency, latency
    verdict = next(ln for ln in section(text, SECTIONS[5]).splitlines() if ln.startswith("- N = 2048"))
    assert verdict.endswith("It rests on a single timed repetition of softmax-sdpa, not a median."), verdict


def test_plot_note_names_lengths_that_are_not_multiples_of_1k():
    from bench.scaling.plots import _not_run_note

    sub = pd.DataFrame({"method": ["softmax-naive"] * 3, "seq_len": [1000, 1536, 3000], "status": ["skipped"] * 3})
    # the note said 1000-2K for these (3000 // 1024 = 2): a length is shortened to K only when exact
    assert _not_run_note(sub, ["softmax-naive"]) == "not run (no point drawn): softmax-naive 1000-3000 (skipped)"
    sub = sub.assign(seq_len=[2048, 4096, 32768])
    assert _not_run_note(sub, ["softmax-naive"]) == "not run (no point drawn): softmax-naive 2K-32K (skipped)"
    # lengths that ran in between split the range: this said 512-32K (skipped)
    ran = pd.DataFrame({"method": ["softmax-naive"] * 3, "seq_len": [512, 1024, 32768],
                        "status": ["skipped", "ok", "skipped"]})
    assert _not_run_note(ran, ["softmax-naive"]) == "not run (no point drawn): softmax-naive 512, 32K (skipped)"


def test_peak_memory_heading_names_only_the_methods_of_the_numbers_shown(tmp_path):
    rows = [ok("wave", 1024, 2.0, peak_mem_mb=3.0, mem_method="torch-profiler"),
            ok("wave", 2048, 4.0, peak_mem_mb=6.0, mem_method="torch-profiler"),
            {"method": "wave", "level": "core", "pass": "fwd", "seq_len": 4096, "status": "skipped",
             "reason": "predicted peak memory 9.0 GB > memory budget 2.0 GB", "peak_mem_mb": 8583,
             "mem_method": "estimate"}]
    text = write_summary(write_run(tmp_path / "run", rows)).read_text()
    # the skipped cell's estimate is not in the table (it shows 'skipped'), so the heading must not claim it
    assert "Peak memory, MB (torch-profiler):" in text, section(text, "### core fwd", "Speedup")


def test_fmt_writes_small_numbers_without_exponents():
    from bench.common.timings import fmt

    # TFLOP/s of a tiny CPU cell: the tables showed '3.32e-06' though fmt promises no exponents; below 1 the
    # trailing zeros stay (three significant figures: '0.500' beside '0.626', not '0.5')
    assert [fmt(x) for x in (3.32e-6, -4.5e-5, 1e-4, 0.000205, 0.5, 0.0, 12.34)] == \
        ["0.00000332", "-0.0000450", "0.000100", "0.000205", "0.500", "0", "12.3"]
