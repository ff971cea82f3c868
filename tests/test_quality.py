"""bench.quality: training loop, resume, non-finite handling, DDP, CLI errors, outputs (CPU, fixture corpus)."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common.cli import run_cli
from bench.quality import cli as qcli
from bench.quality.__main__ import main
from bench.quality.presets import AMP_CHOICES, CORPUS_CHOICES, PRESETS, TOKENIZER_CHOICES, preset_fields
from bench.quality.schema import CURVE_COLUMNS, FINAL_COLUMNS

REPO = Path(__file__).resolve().parents[1]
# A model small enough that a step takes milliseconds; the fixture gives 26 batches per epoch at 8 x 32.
SMALL = ["--preset", "tiny", "--corpus", "fixture", "--d-model", "64", "--n-layers", "2", "--n-heads", "2",
         "--d-ff", "64", "--seq-len", "32", "--batch-size", "8", "--eval-batches", "2", "--lr", "3e-3",
         "--warmup-steps", "2", "--threads", "1", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_globals():
    """In-process runs set torch threads and deterministic mode; give other test modules theirs back."""
    import torch

    threads, det, warn = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn)


def run(argv) -> int:
    """Run the CLI in this process; argparse errors (SystemExit) become their exit code."""
    try:
        return run_cli(main, [str(a) for a in argv], prog=qcli.PROG)
    except SystemExit as exc:
        return exc.code


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def curve(path: Path, method: str | None = None) -> list[tuple]:
    """Curve rows without wall time (the only column allowed to differ between identical runs)."""
    return [tuple(r[c] for c in CURVE_COLUMNS if c != "wall_s") for r in rows(path / "curves.csv")
            if method is None or r["method"] == method]


# ------------------------------------------------------------------------------------------- presets / CLI

def test_help_needs_no_torch_and_wave_modes_mirror_the_model():
    """The command line is parsed without importing torch, so the presets keep a copy of wavefield_core's
    operator modes (the other choices are defined in bench.quality itself, where torch is imported lazily)."""
    from bench.quality.presets import WAVE_MODES
    from wavefield_core import MODES

    assert set(WAVE_MODES) == set(MODES)
    code = ("import sys; from bench.quality import cli; cli.parse(['--methods', 'wave,peer-hgrn']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_every_preset_field_is_a_flag():
    parser = qcli.build_parser()
    flags = {opt for a in parser._actions for opt in a.option_strings}
    for f in preset_fields():
        assert "--" + f.name.replace("_", "-") in flags, f.name
    s = qcli.parse(["--preset", "paper-char", "--d-model", "64", "--lr", "1e-3", "--amp", "off", "--dropout", "0"])
    assert (s.preset.d_model, s.preset.lr, s.preset.amp, s.preset.dropout) == (64, 1e-3, "off", 0.0)
    assert s.preset.n_layers == 6 and s.overrides == ["amp", "d_model", "dropout", "lr"]


def test_presets_are_well_formed():
    assert {"tiny", "cpu-small", "paper-char", "paper-bpe"} <= set(PRESETS)
    for p in PRESETS.values():
        assert sum(getattr(p, k) > 0 for k in ("steps", "epochs", "tokens")) == 1, p.name
        assert p.amp in AMP_CHOICES and p.corpus in CORPUS_CHOICES and p.tokenizer in TOKENIZER_CHOICES
        qcli.validate(qcli.Settings(preset=p))


def test_paper_presets_build_the_published_models():
    """The paper presets give the published parameter counts, exactly (V = 100)."""
    from bench.quality.methods import resolve_methods

    for name in ("paper-char", "paper-bpe"):
        p = PRESETS[name]
        m = resolve_methods(("wave", "standard"), p, vocab_size=100)
        assert m["wave"]["params"] == 5_727_378 + 256 * 100
        assert m["standard"]["params"] == 4_739_072 + 256 * (100 + p.seq_len)


def test_budget_flag_replaces_the_preset_budget():
    s = qcli.parse(["--preset", "paper-char", "--steps", "50", "--warmup-steps", "5"])
    assert (s.preset.steps, s.preset.epochs, s.preset.tokens) == (50, 0, 0)
    assert (s.preset.warmup_steps, s.preset.warmup_epochs) == (5, 0)


def test_lr_schedule():
    from bench.quality.train import Plan, lr_at

    p = PRESETS["paper-char"]
    plan = Plan(total_steps=100, warmup_steps=10, eval_every=10, log_every=10, batches_per_epoch=10, budget="")
    assert lr_at(0, p, plan) == pytest.approx(p.lr / 10)
    assert lr_at(9, p, plan) == pytest.approx(p.lr)
    assert lr_at(10, p, plan) == pytest.approx(p.lr)
    assert lr_at(55, p, plan) == pytest.approx((p.lr + p.min_lr) / 2)
    assert lr_at(100, p, plan) == pytest.approx(p.min_lr)


def test_param_matched_within_two_percent():
    from bench.quality.methods import resolve_methods

    for name in ("tiny", "paper-char"):
        m = resolve_methods(("wave", "standard", "standard-matched"), PRESETS[name], vocab_size=300)
        assert abs(m["standard-matched"]["params"] / m["wave"]["params"] - 1) <= 0.02
        assert m["standard"]["config"]["d_ff"] == PRESETS[name].d_ff


def test_stats_interval():
    from bench.quality.stats import spread, t975

    s = spread([1.0, 2.0, 3.0])
    assert (s.mean, s.std, s.min, s.max) == (2.0, 1.0, 1.0, 3.0)
    half = 4.303 / math.sqrt(3)
    assert (s.ci_low, s.ci_high) == pytest.approx((2 - half, 2 + half))
    assert t975(1) == 12.706 and t975(1000) == 1.96
    assert math.isnan(spread([5.0]).std) and spread([5.0]).fmt_ci() == "5.000 (1 seed: no interval)"
    assert s.fmt_ci(2) == f"2.00 (95% CI {2 - half:.2f} to {2 + half:.2f}, 3 seeds)" and spread([]).fmt_ci() == "-"
    assert s.fmt_ci(1, interval=False) == "2.0 (1.0 to 3.0, 3 seeds)"
    # a diverged seed (NaN) makes every statistic NaN, whatever its position (min/max used to skip it or not)
    for values in ([34.4, math.nan], [math.nan, 34.4]):
        assert all(math.isnan(getattr(spread(values), k)) for k in ("mean", "std", "min", "max", "ci_low", "ci_high"))


@pytest.mark.parametrize("argv, needle", [
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--corpus", "nope"], "invalid choice: 'nope'"),
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["--seeds", "-1"], "--seeds: -1 is negative"),
    (["--lr", "1e39"], "--lr must be positive and at most 1e+06"),
    (["--lr-sweep", "1e-3", "1e39"], "at most 1e+06"),
    (["--threads", "100000"], "more than 4x the"),
    (["--seq-len", str(2**70)], "--seq-len must be from 1 to 2,147,483,647"),
    (["--seeds", str(2**63), "0", "--corpus", "fixture", "--out", "{tmp}"], "--seeds takes values from 0 to"),
    (["--corpus", "fixture", "--seq-len", "400", "--out", "{tmp}"], "valid split: too little data: 0 windows"),
    (["--corpus", "wikitext2", "--data-dir", "/nonexistent/wt2"], "/nonexistent/wt2"),
    (["--corpus", "text-file"], "--text-file"),
    (["--steps", "5", "--epochs", "2"], "give only one of"),
    (["--d-model", "30", "--n-heads", "4"], "not divisible"),
    (["--field-stride", "1.5", "--corpus", "fixture", "--no-progress", "--out", "{tmp}"], "leaks"),
    (["--resume", "{tmp}", "--lr", "1"], "--resume continues a run"),
    (["--resume", "{tmp}", "--preset", "paper-char"], "drop --preset"),  # was accepted and silently ignored
    (["--amp", "fp16", "--device", "cpu", "--corpus", "fixture", "--out", "{tmp}"], "on cpu: auto, off, bf16"),
    (["--methods", "wave,nope"], "unknown method 'nope'; valid choices: wave, wave-scaled-pos, standard"),
    (["--methods", "wave", "--pairing", "paper"], "either --methods or --pairing"),
    (["--wave-mode", "warp"], "invalid choice: 'warp'"),
    (["--wave-mode", "triton", "--device", "cpu", "--corpus", "fixture", "--out", "{tmp}"],
     "--wave-mode triton cannot run here"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    argv = [a.replace("{tmp}", str(tmp_path / "o")) for a in argv]
    # the triton test module turns on triton's interpreter for the whole session when it is
    # collected; this case is about a CPU machine without it
    import wavefield_core.triton_scan as ts

    monkeypatch.setattr(ts, "triton_available", lambda device: "needs a CUDA device (device is cpu)")
    code = run(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err and err.startswith(f"{qcli.PROG}: error: "), err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_testing_flags_work_but_stay_out_of_help(capsys):
    assert run(["--help"]) == 0
    shown = capsys.readouterr().out
    assert "--methods" in shown and "--wave-mode" in shown
    assert "--inject-nan-at-step" not in shown and "--stop-after-steps" not in shown
    s = qcli.parse(["--inject-nan-at-step", "3-4", "--stop-after-steps", "2"])
    assert (s.inject_nan_at_step, s.stop_after_steps) == ([3, 4], 2)


def test_methods_flag_trains_the_chosen_methods_wave_first(tmp_path):
    out = tmp_path / "m"
    assert run(SMALL + ["--methods", "standard,wave", "--wave-mode", "token", "--steps", "2", "--eval-every", "2",
                        "--out", out]) == 0
    assert [r["method"] for r in rows(out / "final.csv")] == ["wave", "standard"]
    env = json.loads((out / "env.json").read_text())
    assert list(env["methods"]) == ["wave", "standard"] and env["methods"]["wave"]["config"]["mode"] == "token"
    assert qcli.settings_from_saved(env["settings"], qcli.parse([])).methods == ("wave", "standard")


def test_triton_wave_mode_trains_in_the_interpreter(tmp_path):
    """--wave-mode triton reaches the wave layers: on CPU the kernels run in triton's interpreter."""
    pytest.importorskip("triton")
    out = tmp_path / "t"
    argv = [a for a in SMALL if a != "--no-progress"] + ["--methods", "wave", "--wave-mode", "triton", "--device",
                                                       "cpu", "--steps", "2", "--eval-every", "2", "--out", out]
    proc = subprocess.run([sys.executable, "-m", "bench.quality", *map(str, argv)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = json.loads((out / "env.json").read_text())
    assert env["methods"]["wave"]["config"]["mode"] == "triton"
    assert [r["method"] for r in rows(out / "final.csv")] == ["wave"]


def test_existing_results_folder_is_refused(tmp_path, capsys):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "final.csv").write_text("x\n")
    assert run(SMALL + ["--steps", "2", "--out", tmp_path / "old"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "already holds results" in err
    assert run(["--resume", tmp_path / "nothing-here"]) == 2


def test_bad_input_from_the_command_line():
    proc = subprocess.run([sys.executable, "-m", "bench.quality", "--preset", "nope"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "choose from" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "bench.quality", "--corpus", "wikitext2", "--data-dir", "/no/such"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "smoke"
    code = run(SMALL + ["--steps", "40", "--eval-every", "10", "--log-every", "5", "--out", out])
    assert code == 0
    return out


def test_smoke_loss_falls_for_both_models(smoke_run):
    curves = rows(smoke_run / "curves.csv")
    uniform = math.log(json.loads((smoke_run / "env.json").read_text())["tokenizer"]["vocab_size"])  # ln V
    for method in ("wave", "standard", "standard-matched"):
        train = [float(r["loss"]) for r in curves if r["split"] == "train" and r["method"] == method]
        val = [float(r["loss"]) for r in curves if r["split"] == "val" and r["method"] == method]
        assert len(train) == 8 and len(val) == 4 and all(math.isfinite(v) for v in train + val)
        # Far below a uniform guess, and still falling. (At this size the wave model spends its first ~100
        # steps near the unigram loss ~3.0: its sinusoidal positions start 50x larger than the token embedding.)
        assert train[-1] < uniform - 0.5 and train[-1] < train[0] - 0.3, (method, train)
        assert val[-1] < val[0], (method, val)


def test_output_files_and_columns(smoke_run):
    curves, finals = rows(smoke_run / "curves.csv"), rows(smoke_run / "final.csv")
    assert list(curves[0]) == CURVE_COLUMNS
    assert list(finals[0]) == FINAL_COLUMNS
    for c in ("method", "seed", "test_loss", "test_ppl", "test_bpc", "test_acc", "test_batch_mean_loss",
              "test_batch_mean_ppl", "params", "tokens_per_s", "wall_s", "peak_mem_mb", "best_step", "nonfinite_steps"):
        assert c in FINAL_COLUMNS
    assert [r["method"] for r in finals] == ["wave", "standard", "standard-matched"]
    assert {r["split"] for r in curves} == {"train", "val", "test"}
    for r in finals:
        loss = float(r["test_loss"])
        assert float(r["test_ppl"]) == pytest.approx(math.exp(loss))
        assert float(r["test_bpc"]) == pytest.approx(loss / math.log(2))  # char level: bpc = loss / ln 2
        assert 0 < float(r["test_acc"]) < 1 and int(r["nonfinite_steps"]) == 0
        assert float(r["peak_mem_mb"]) > 0 and float(r["tokens_per_s"]) > 0
    env = json.loads((smoke_run / "env.json").read_text())
    assert env["world_size"] == 1 and env["preset"] == "tiny"
    assert env["corpus"]["license"] and env["corpus"]["split_rule"] and env["tokenizer"]["kind"] == "char"
    assert env["methods"]["wave"]["params"] == int(finals[0]["params"])
    assert env["settings"]["preset"]["d_model"] == 64
    assert (smoke_run / "tokenizer.json").is_file()
    for name in ("val_loss_vs_tokens.png", "val_loss_vs_wall.png", "final_metrics.png"):
        assert (smoke_run / "plots" / name).stat().st_size > 0


def test_checkpoints_load_for_diagnostics(smoke_run):
    from bench.common.checkpoint import load_checkpoint
    from bench.quality.tokenizers import load_tokenizer

    for method, kind in (("wave", "wave"), ("standard", "standard"), ("standard-matched", "standard")):
        model, ckpt = load_checkpoint(smoke_run / "checkpoints" / f"{method}-seed0.pt")
        assert ckpt["kind"] == kind and ckpt["meta"]["method"] == method
        tok = load_tokenizer(smoke_run / ckpt["meta"]["tokenizer"])
        assert model.config.vocab_size == tok.vocab_size
        assert "test" in ckpt["meta"] and ckpt["meta"]["corpus"]["name"] == "fixture"
    assert not list((smoke_run / "checkpoints").glob("*-last.pt"))  # resume state removed once a job ends


def test_summary_sections(smoke_run):
    text = (smoke_run / "summary.md").read_text()
    for needle in ("Hardware:", "Command: `python -m bench.quality", "## Gap table", "## Wave / standard ratio",
                   "wave / standard |", "wave / standard-matched |", "## Published numbers beside ours", "5.9",
                   "51.0", "6.2", "50.5", "91.4", "26.2", "170.7", "18.7", "238.85", "170.75",
                   "### Differences in setup", "not comparable", "bits per character", "## Plots"):
        assert needle in text, needle


def test_same_seed_same_curve(tmp_path):
    args = SMALL + ["--pairing", "paper", "--steps", "6", "--eval-every", "3", "--log-every", "1"]
    assert run(args + ["--out", tmp_path / "a"]) == 0
    assert run(args + ["--out", tmp_path / "b"]) == 0
    a, b = curve(tmp_path / "a"), curve(tmp_path / "b")
    assert len(a) == 2 * (6 + 2 + 1) and a == b


def test_resume_gives_the_same_curve(tmp_path, capsys):
    args = SMALL + ["--pairing", "paper", "--steps", "12", "--eval-every", "4", "--log-every", "3"]
    assert run(args + ["--out", tmp_path / "full"]) == 0
    cut = tmp_path / "cut"
    # Stop inside wave's first log interval and off an eval boundary, then inside standard's run.
    assert run(args + ["--out", cut, "--stop-after-steps", "5"]) == 0
    assert "--resume" in capsys.readouterr().err
    assert not (cut / "final.csv").exists() and (cut / "checkpoints" / "wave-seed0-last.pt").exists()
    assert run(["--resume", cut, "--stop-after-steps", "9", "--no-progress"]) == 0
    assert [r["method"] for r in rows(cut / "final.csv")] == ["wave"]
    assert run(["--resume", cut, "--no-progress"]) == 0
    assert curve(cut) == curve(tmp_path / "full")
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("wall_s", "tokens_per_s", "train_s", "peak_mem_mb")}
                        for r in rs]  # noqa: E731
    assert strip(rows(cut / "final.csv")) == strip(rows(tmp_path / "full" / "final.csv"))
    env = json.loads((cut / "env.json").read_text())
    assert len(env["resumes"]) == 2
    resumed = [ln for ln in (cut / "summary.md").read_text().splitlines() if ln.startswith("Resumed ")]
    assert len(resumed) == 2 and all("--resume" in ln and "on cpu" in ln for ln in resumed), resumed


def test_resume_of_a_run_written_before_the_peak_lr_column(tmp_path):
    """A run folder from before peak_lr existed: rows appended on --resume must line up with the header
    (a 22-field row under a 21-field header made final.csv unreadable once the job had trained)."""
    out = tmp_path / "old"
    assert run(SMALL + ["--pairing", "paper", "--steps", "2", "--eval-every", "2", "--out", out]) == 0
    for name in ("final.csv", "curves.csv"):  # as the older version wrote them: no peak_lr, standard unfinished
        kept = [{k: v for k, v in r.items() if k != "peak_lr"} for r in rows(out / name) if r["method"] == "wave"]
        with (out / name).open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(kept[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(kept)
    assert run(["--resume", out, "--no-progress"]) == 0
    finals = rows(out / "final.csv")
    assert [(r["method"], r["peak_lr"]) for r in finals] == [("wave", ""), ("standard", "0.003")]
    assert {r["peak_lr"] for r in rows(out / "curves.csv") if r["method"] == "standard"} == {"0.003"}


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    out = tmp_path / "nan"
    assert run(SMALL + ["--pairing", "paper", "--steps", "8", "--eval-every", "4", "--log-every", "1",
                        "--inject-nan-at-step", "3", "5-6", "--out", out]) == 0
    for r in rows(out / "final.csv"):
        assert int(r["nonfinite_steps"]) == 3 and math.isfinite(float(r["test_loss"]))
    train_steps = [int(r["step"]) for r in rows(out / "curves.csv") if r["split"] == "train" and r["method"] == "wave"]
    assert train_steps == [1, 2, 4, 7, 8]  # skipped steps log nothing (no update, no loss)


def test_too_many_nonfinite_in_a_row_exits_3(tmp_path, capsys):
    out = tmp_path / "nan3"
    code = run(SMALL + ["--pairing", "paper", "--steps", "20", "--eval-every", "10", "--inject-nan-at-step", "2-20",
                        "--max-nonfinite", "4", "--out", out])
    err = capsys.readouterr().err
    assert code == 3
    lines = [l for l in err.strip().splitlines() if "error" in l]
    assert len(lines) == 1 and "4 non-finite steps in a row" in lines[0] and "--max-nonfinite" in lines[0]
    assert (out / "checkpoints" / "wave-seed0-last.pt").exists()  # state saved
    # raising the limit on --resume finishes the run; the summary states the limit the run finished under
    assert run(["--resume", out, "--max-nonfinite", "100", "--no-progress"]) == 0
    assert "a run stops after 100 in a row" in (out / "summary.md").read_text()


def test_two_process_ddp_matches_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo): each rank takes half of every batch; with dropout off the
    averaged gradients equal the single-process ones, so the train-loss curves agree to float tolerance.
    Line batching: the ranks' halves of a padded batch hold different numbers of target tokens, and the
    average must still be the gradient of the whole batch's token mean (not the mean of the ranks' means)."""
    args = SMALL + ["--pairing", "paper", "--steps", "4", "--eval-every", "2", "--log-every", "1", "--dropout", "0",
                    "--inject-nan-at-step", "3", "--batching", "lines"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "-m", "bench.quality", *args, "--out", str(tmp_path / "ddp")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run(args + ["--out", tmp_path / "one"]) == 0
    envj = json.loads((tmp_path / "ddp" / "env.json").read_text())
    assert envj["world_size"] == 2 and envj["distributed_backend"] == "gloo"
    assert envj["command"].startswith("torchrun --nproc-per-node 2")
    ddp, one = rows(tmp_path / "ddp" / "curves.csv"), rows(tmp_path / "one" / "curves.csv")
    assert [(r["method"], r["step"], r["split"], r["tokens"]) for r in ddp] == \
           [(r["method"], r["step"], r["split"], r["tokens"]) for r in one]
    for a, b in zip(ddp, one):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4, abs=1e-4)
    assert [int(r["nonfinite_steps"]) for r in rows(tmp_path / "ddp" / "final.csv")] == [1, 1]


def test_bpe_and_line_batching(tmp_path):
    """BPE: bpc uses the split's tokens per character; lines: the published per-line, right-padded samples."""
    out = tmp_path / "bpe"
    assert run(SMALL + ["--pairing", "paper", "--steps", "3", "--eval-every", "3", "--tokenizer", "bpe",
                        "--vocab-size", "300", "--batching", "lines", "--out", out]) == 0
    env = json.loads((out / "env.json").read_text())
    assert env["tokenizer"]["kind"] == "bpe" and env["settings"]["preset"]["batching"] == "lines"
    tpc = env["tokens_per_char"]["test"]
    assert 0 < tpc < 1  # BPE tokens cover more than one character
    for r in rows(out / "final.csv"):
        assert float(r["test_bpc"]) == pytest.approx(float(r["test_loss"]) / math.log(2) * tpc)
        # the planned steps x batch x seq_len counts padded positions; the padded batches trained on fewer tokens
        assert int(r["tokens"]) < 3 * 8 * 32
    assert "training tokens per parameter (token positions, padding included" in (out / "summary.md").read_text()
    from bench.quality.tokenizers import load_tokenizer

    assert load_tokenizer(out / "tokenizer.json").kind == "bpe"
