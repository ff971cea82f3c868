"""bench.quality --lr-sweep, and what the report reads from the curves: the kept LR, convergence,
equal wall-clock and the ratio against tokens (CPU, fixture corpus)."""
from __future__ import annotations

import math

import pytest

from bench.quality import cli as qcli
from bench.quality.analysis import convergence, equal_wall, ratio_by_tokens
from bench.quality.sweep import NoStableLR, choose, jobs, planned_jobs, rows_at, tuned_rows
from test_quality import SMALL, rows, run


def _final(method, seed, lr, val, **kw):
    return {"method": method, "seed": str(seed), "peak_lr": repr(lr), "best_val_loss": repr(val), "steps": "10",
            "tokens": "1000", "best_step": "10", "test_loss": "1.6", "test_ppl": "5.0", **kw}


def test_choice_is_the_lowest_validation_loss_and_never_a_diverged_lr():
    lrs = [1e-3, 3e-3, 1e-2]
    got = [_final("wave", 0, 1e-3, 2.5), _final("wave", 0, 3e-3, 2.1), _final("wave", 0, 1e-2, float("nan"))]
    assert choose(got[:2], "wave", 0, lrs) is None  # stage 1 not finished: no choice yet
    assert choose(got, "wave", 0, lrs) == 3e-3
    tie = [_final("wave", 0, 1e-3, 2.1), _final("wave", 0, 3e-3, 2.1), _final("wave", 0, 1e-2, 2.2)]
    assert choose(tie, "wave", 0, lrs) == 1e-3  # a tie keeps the smaller LR
    with pytest.raises(NoStableLR, match="every learning rate"):
        choose([_final("wave", 0, lr, float("nan")) for lr in lrs], "wave", 0, lrs)
    # stopped by --max-nonfinite after its first evaluation: a finite best_val_loss, but no test result
    stopped = [_final("wave", 0, 1e-3, 2.5), _final("wave", 0, 3e-3, 2.0, test_loss="nan"), got[2]]
    assert choose(stopped, "wave", 0, lrs) == 1e-3
    with pytest.raises(NoStableLR, match="every learning rate"):
        choose([_final("wave", 0, lr, 2.0, test_loss="nan") for lr in lrs], "wave", 0, lrs)
    # without a sweep there is no choice to refuse: a job that never validated does not stop the other seeds
    assert choose([_final("wave", 0, 1e-3, float("nan"))], "wave", 0, [1e-3]) == 1e-3


def test_job_plan_sweeps_the_first_seed_then_trains_the_rest_at_the_kept_lr(tmp_path):
    s = qcli.parse(["--lr", "1e-3", "--lr-sweep", "3e-3", "--seeds", "5", "6"])
    assert s.lrs == [1e-3, 3e-3]
    methods = {"wave": {}, "standard": {}}
    path = tmp_path / "final.csv"
    stage1 = []
    for job in jobs(s, methods, path):  # final.csv stays empty, so stage 2 cannot be decided
        stage1.append(job)
        if len(stage1) == 4:
            break
    assert stage1 == [("wave", 5, 1e-3), ("standard", 5, 1e-3), ("wave", 5, 3e-3), ("standard", 5, 3e-3)]
    finished = [_final("wave", 5, 1e-3, 2.0), _final("wave", 5, 3e-3, 1.9), _final("standard", 5, 1e-3, 1.5),
                _final("standard", 5, 3e-3, 1.7)]
    assert planned_jobs(s, methods, finished) == [("wave", 6, 3e-3), ("standard", 6, 1e-3)]  # stage 1 is done
    tuned = tuned_rows(finished + [_final("wave", 6, 3e-3, 1.8), _final("standard", 6, 1e-3, 1.4)], 5)
    assert {m: sorted((k, float(r["peak_lr"])) for k, r in v.items()) for m, v in tuned.items()} == {
        "wave": [(5, 3e-3), (6, 3e-3)], "standard": [(5, 1e-3), (6, 1e-3)]}
    assert sorted(rows_at(finished, 1e-3)) == ["standard", "wave"]


@pytest.mark.parametrize("argv, needle", [
    (["--lr-sweep", "0"], "--lr-sweep value 0.0 must be positive"),
    (["--lr-sweep", "1e-6", "--min-lr", "1e-5"], "at least --min-lr"),
    (["--lr-sweep", "nan"], "nan"),
    (["--resume", "{tmp}", "--lr-sweep", "1e-3"], "drop --lr-sweep"),
])
def test_bad_sweep_input_exits_2(argv, needle, capsys, tmp_path):
    code = run([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_sweep_run_end_to_end(tmp_path):
    out = tmp_path / "sweep"
    assert run(SMALL + ["--pairing", "paper", "--steps", "8", "--eval-every", "4", "--log-every", "2",
                        "--lr-sweep", "1e-3", "--seeds", "0", "1", "--out", out]) == 0
    finals = rows(out / "final.csv")
    stage1 = [(r["method"], int(r["seed"]), float(r["peak_lr"])) for r in finals[:4]]
    assert stage1 == [("wave", 0, 1e-3), ("standard", 0, 1e-3), ("wave", 0, 3e-3), ("standard", 0, 3e-3)]
    kept = {m: min((float(r["best_val_loss"]), float(r["peak_lr"])) for r in finals[:4] if r["method"] == m)[1]
            for m in ("wave", "standard")}
    assert [(r["method"], int(r["seed"]), float(r["peak_lr"])) for r in finals[4:]] == [
        ("wave", 1, kept["wave"]), ("standard", 1, kept["standard"])]
    curves = rows(out / "curves.csv")
    assert {float(r["peak_lr"]) for r in curves if r["method"] == "wave" and r["seed"] == "0"} == {1e-3, 3e-3}
    assert all(float(r["lr"]) <= float(r["peak_lr"]) + 1e-12 for r in curves)
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "wave-seed0.pt" in ckpts and "wave-lr0.001-seed0.pt" in ckpts  # --lr keeps the plain name
    text = (out / "summary.md").read_text()
    for needle in ("## Learning-rate sweep (seed 0)", "kept", "(tuned LRs)", "at --lr 0.003 (untuned)",
                   "## Equal wall-clock", "## Convergence", "training tokens per parameter"):
        assert needle in text, needle
    assert "a run stops after" not in text and "a job stops after 20 in a row and is kept as a diverged row" in text
    assert "diverged row and the run goes on" in " ".join(qcli.build_parser().format_help().split())
    for name in ("lr_sweep.png", "ratio_vs_tokens.png", "val_loss_vs_tokens.png"):
        assert (out / "plots" / name).stat().st_size > 0

    # the results page reads the same choice: tuned ratios over both seeds, the untuned one at --lr
    import json

    from bench.report import evidence, page
    from bench.report.runs import Run

    env = json.loads((out / "env.json").read_text())
    q = evidence.quality(Run(path=out, kind="quality", rel="runs/sweep", env=env))
    ppl = {(r["method"], int(r["seed"]), float(r["peak_lr"])): float(r["test_ppl"]) for r in finals}
    assert q["seeds"] == [0, 1] and q["lr"] == kept
    assert q["ppl_ratio"] == pytest.approx([ppl[("wave", k, kept["wave"])] / ppl[("standard", k, kept["standard"])]
                                            for k in (0, 1)])
    both = [k for k in (0, 1) if ("wave", k, 3e-3) in ppl and ("standard", k, 3e-3) in ppl]  # seed 0, and 1 if kept
    assert both[0] == 0 and q["untuned"] == pytest.approx([ppl[("wave", k, 3e-3)] / ppl[("standard", k, 3e-3)]
                                                           for k in both])
    assert set(q["edge"]) == {"wave", "standard"}  # two LRs: whichever is kept is an edge
    text = "\n".join(page.quality_section([(Run(path=out, kind="quality", rel="runs/sweep"), q)]))
    assert ("1 seed) at 0.003" if len(both) == 1 else "2 seeds) at 0.003") in text and "(sweep edge)" in text
    assert "[runs/sweep](runs/sweep/summary.md)" in text


@pytest.mark.parametrize("steps, inject, limit", [
    ("10", "1-10", 3),  # never validated
    ("6", "3-6", 2),  # stopped after its first evaluation, with a finite best validation loss
])
def test_a_sweep_where_every_lr_diverges_exits_3_with_rows(steps, inject, limit, tmp_path, capsys):
    out = tmp_path / "div"
    code = run(SMALL + ["--pairing", "paper", "--steps", steps, "--eval-every", "2", "--inject-nan-at-step", inject,
                        "--max-nonfinite", limit, "--lr-sweep", "1e-3", "--seeds", "0", "1", "--out", out])
    err = capsys.readouterr().err
    assert code == 3 and "every learning rate of the sweep" in err
    # a diverged LR's row is final (its state is dropped): its line must not promise a --resume
    diverged = [line for line in err.splitlines() if "non-finite steps in a row" in line]
    assert len(diverged) == 4 and not any("--resume" in line or "state saved" in line for line in diverged), err
    finals = rows(out / "final.csv")
    assert len(finals) == 4 and all(math.isnan(float(r["test_ppl"])) for r in finals)  # each diverged LR is a row
    assert all(int(r["nonfinite_steps"]) == limit for r in finals)
    assert not list((out / "checkpoints").glob("*-last.pt"))


def test_sweep_table_calls_diverged_only_the_jobs_that_stopped():
    from bench.quality.report import sweep_section

    finals = [_final("wave", 0, 1e-3, 2.0, test_loss="2.1", nonfinite_steps="2"),  # two skipped steps, then fine
              _final("wave", 0, 3e-3, float("inf"), test_loss="nan", test_ppl="nan", nonfinite_steps="3"),
              _final("wave", 0, 1e-2, float("inf"), test_loss="nan", test_ppl="nan", nonfinite_steps="0", oom="1")]
    text = "\n".join(sweep_section(finals, 0, tuned_rows(finals, 0)))
    assert "| 2 | kept" in text and "| 3 (diverged) |" in text and "| 0 (out of memory) |" in text, text


def _curve(method, seed, points, split="val"):
    return [{"method": method, "seed": str(seed), "split": split, "step": str(s), "tokens": str(s * 100),
             "loss": repr(loss), "wall_s": repr(t), "peak_lr": "0.001"} for s, loss, t in points]


def test_convergence_verdicts():
    row = {"steps": "100", "tokens": "10000", "best_step": "100"}
    flat = _curve("wave", 0, [(50, 2.0, 5), (90, 1.5, 9), (100, 1.499, 10)])
    train = _curve("wave", 0, [(s, 3.0 - s / 100, s / 10) for s in range(88, 101, 2)], "train")
    c = convergence(flat + train, "wave", 0, 1e-3, row)
    assert c.val_fall == pytest.approx(0.001 / 1.5) and c.verdict == "flat"
    assert c.train_change == pytest.approx(-0.1)  # slope -0.01 per step over 10 steps
    falling = _curve("wave", 0, [(50, 2.0, 5), (90, 1.5, 9), (100, 1.4, 10)])
    assert convergence(falling, "wave", 0, 1e-3, row).verdict == "still improving"
    assert convergence(_curve("wave", 0, [(100, 1.4, 10)]), "wave", 0, 1e-3, row).verdict.startswith("not measured")


def test_equal_wall_clock_and_ratio_against_tokens():
    # wave is twice as fast: at the standard model's end (10 s) wave's loss is read from its own curve.
    wave = _curve("wave", 0, [(10, 2.0, 2.5), (20, 1.5, 5.0), (40, 1.2, 10.0)])
    std = _curve("standard", 0, [(10, 1.8, 5.0), (20, 1.4, 10.0), (40, 1.1, 20.0)])
    fin = lambda m: {0: {"method": m, "peak_lr": "0.001"}}  # noqa: E731
    r, t = equal_wall(wave + std, fin("wave"), fin("standard"))
    assert t == pytest.approx(10.0) and r == [pytest.approx(math.exp(1.2 - 1.4))]
    pts = ratio_by_tokens(wave + std, fin("wave"), fin("standard"))
    assert [p[0] for p in pts] == [1000, 2000, 4000]
    assert pts[-1][1] == [pytest.approx(math.exp(1.2 - 1.1))]


def test_scaled_position_ablation_changes_only_the_position_scale(tmp_path):
    import torch

    from bench.common.checkpoint import load_checkpoint
    from bench.quality.methods import resolve_methods
    from bench.quality.presets import PRESETS

    specs = resolve_methods(["wave", "wave-scaled-pos"], PRESETS["tiny"], 50)
    assert specs["wave"]["params"] == specs["wave-scaled-pos"]["params"]
    assert specs["wave-scaled-pos"]["config"] == {**specs["wave"]["config"], "pos_scale": 0.02}
    from wavefield_core import WaveFieldLM

    seen = {}
    for scale in (1.0, 0.02):
        torch.manual_seed(0)
        model = WaveFieldLM(50, d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0, pos_scale=scale)
        model.blocks[0].register_forward_pre_hook(lambda m, args, s=scale: seen.__setitem__(s, args[0].detach()))
        model(torch.randint(0, 50, (1, 9)))
    pos = seen[1.0] - seen[0.02]  # same embedding (same seed): the difference is 0.98 x the sinusoids
    from wavefield_core.model import sinusoidal_positions

    assert torch.allclose(pos[0], 0.98 * sinusoidal_positions(9, 32), atol=1e-6)
    out = tmp_path / "abl"
    assert run(SMALL + ["--methods", "wave-scaled-pos,wave,standard", "--steps", "4", "--eval-every", "2",
                        "--out", out]) == 0
    assert [r["method"] for r in rows(out / "final.csv")] == ["wave", "wave-scaled-pos", "standard"]
    model, ckpt = load_checkpoint(out / "checkpoints" / "wave-scaled-pos-seed0.pt")
    assert model.config.pos_scale == 0.02
    assert "wave-scaled-pos / standard |" in (out / "summary.md").read_text()


def test_an_interrupted_sweep_resumes_to_the_same_rows(tmp_path):
    args = SMALL + ["--pairing", "paper", "--steps", "6", "--eval-every", "3", "--lr-sweep", "1e-3",
                    "--seeds", "0", "1"]
    assert run(args + ["--out", tmp_path / "full"]) == 0
    cut = tmp_path / "cut"
    assert run(args + ["--out", cut, "--stop-after-steps", "4"]) == 0  # inside the first job
    assert not (cut / "final.csv").exists()
    for done in range(1, 7):  # each resume finishes the job it stopped in and stops inside the next one
        assert run(["--resume", cut, "--stop-after-steps", "4", "--no-progress"]) == 0
        assert len(rows(cut / "final.csv")) == done
    keep = ("method", "seed", "peak_lr", "test_loss", "best_val_loss", "best_step", "steps", "tokens")
    strip = lambda path: [{k: r[k] for k in keep} for r in rows(path / "final.csv")]  # noqa: E731
    assert strip(cut) == strip(tmp_path / "full")


def test_checkpoint_names_tell_apart_every_learning_rate():
    from bench.quality.train import ckpt_paths

    assert ckpt_paths("r", "wave", 0, 1e-3, 1e-3)[0].name == "wave-seed0.pt"  # --lr itself
    assert ckpt_paths("r", "wave", 0, 3e-3, 1e-3)[1].name == "wave-lr0.003-seed0-last.pt"
    assert ckpt_paths("r", "wave", 0, 1e-5, 1e-3)[0].name == "wave-lr1e-05-seed0.pt"
    # two sweep values equal to six digits must not share a file: one job would be tested with the other's weights
    assert ckpt_paths("r", "wave", 0, 0.001000111, 1e-3) != ckpt_paths("r", "wave", 0, 0.001000112, 1e-3)


def test_report_without_plots_links_the_plots_already_there(tmp_path):
    """bench.report --no-plots redrew a quality run's plots all the same; now it links those already there,
    and the summary reads as a redrawn one does."""
    import shutil
    from pathlib import Path

    from bench.report.runs import Run, regenerate

    committed = Path(__file__).resolve().parents[1] / "results/runs/20261130-cpu-small-lrsweep_quality"
    run = tmp_path / committed.name  # the summary names its folder
    shutil.copytree(committed, run, ignore=shutil.ignore_patterns("checkpoints"))
    marker = b"not redrawn"
    (run / "plots" / "lr_sweep.png").write_bytes(marker)
    (run / "plots" / "ratio_vs_tokens.png").unlink()  # a plot that is not there is not linked
    regenerate(Run(run, "quality", "runs/run"), plots=False)
    kept = (run / "summary.md").read_text()
    assert (run / "plots" / "lr_sweep.png").read_bytes() == marker
    assert "plots/lr_sweep.png" in kept and "ratio_vs_tokens" not in kept
    # the committed summary is the one a redraw writes (the published page regenerates identically)
    assert (committed / "summary.md").read_text().replace("![ratio_vs_tokens](plots/ratio_vs_tokens.png)\n", "") == kept


def test_a_job_out_of_memory_is_never_kept_nor_averaged():
    """An oom row may carry a finite validation loss from before it ran out; it won the LR choice, and its NaN test
    metrics turned every ratio of the run into NaN (and the results page's verdict into 'does not')."""
    lrs = [1e-3, 3e-3]
    got = [_final("wave", 0, 1e-3, 2.5, oom="0"), _final("wave", 0, 3e-3, 2.1, oom="1", test_ppl="nan")]
    assert choose(got, "wave", 0, lrs) == 1e-3
    finals = [_final("wave", s, 1e-3, 2.5, oom=str(int(s == 1))) for s in (0, 1, 2)] + [
        _final("standard", s, 1e-3, 2.0, oom="0") for s in (0, 1, 2)]
    assert sorted(tuned_rows(finals, 0)["wave"]) == [0, 2] and sorted(rows_at(finals, 1e-3)["wave"]) == [0, 2]
    assert "wave" not in tuned_rows([r for r in finals if r["method"] == "standard" or r["seed"] == "1"], 0)
