"""bench.quality: training loop, outputs, resume, non-finite handling, DDP (CPU, fixture corpus); its presets
and command line are in test_quality_cli.py."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common.cli import run_cli
from bench.quality import cli as qcli
from bench.quality.__main__ import main
from bench.quality.schema import CURVE_COLUMNS, FINAL_COLUMNS

REPO = Path(__file__).resolve().parents[1]
# A model small enough that a step takes milliseconds; the fixture gives 26 batches per epoch at 8 x 32.
SMALL = ["--preset", "tiny", "--corpus", "fixture", "--d-model", "64", "--n-layers", "2", "--n-heads", "2",
         "--d-ff", "64", "--seq-len", "32", "--batch-size", "8", "--eval-batches", "2", "--lr", "3e-3",
         "--warmup-steps", "2", "--threads", "1", "--no-progress"]


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


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "paper"
    assert run(SMALL + ["--pairing", "paper", "--steps", "2", "--eval-every", "2", "--out", out]) == 0
    return out


@pytest.mark.parametrize("name, column, value", [
    ("final.csv", "seed", ""), ("final.csv", "seed", "nan"), ("final.csv", "seed", "1.5"),  # ValueError; seed 1
    ("final.csv", "oom", "0.5"), ("curves.csv", "step", "2.5"), ("curves.csv", "seed", "-1"),
])
def test_resume_refuses_a_damaged_count(paper_run, tmp_path, capsys, name, column, value):
    """A seed or step the run cannot have written crashed --resume (int() of '' or nan) or was merged into another
    job (1.5 read as seed 1): one line naming file, line and column, exit 2, and the rows stay."""
    out = tmp_path / "damaged"
    shutil.copytree(paper_run, out)
    damaged = rows(out / name)
    damaged[0][column] = value
    with (out / name).open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(damaged[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(damaged)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert run(["--resume", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"{name}: line 2: {column} = {value!r} is not a whole number >= 0" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


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
    # advice that works: --resume refuses --lr, so a lower rate is a new run (it said "lower --lr ... and --resume")
    assert f"raise --max-nonfinite and --resume {out}, or start a new --out with a lower --lr" in lines[0], lines
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
    # peak MB is rank 0's process alone (it was labelled "peak RSS of the process" as if it covered the run)
    summary = (tmp_path / "ddp" / "summary.md").read_text()
    assert "per process, rank 0 only (the other 1 of 2 are not measured)" in summary


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


def test_a_job_out_of_memory_is_a_row_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    """Out of memory is data: the job that ran out is a row (oom 1, NaN test metrics), the other models still
    train and the summary names it (it exited 2 with no row, and the folder was refused for a rerun)."""
    import bench.quality.train as qtrain

    real, calls = qtrain.token_stats, []

    def oom_at_first_step(logits, y):  # the first training step of the first job (wave)
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes")
        return real(logits, y)

    monkeypatch.setattr(qtrain, "token_stats", oom_at_first_step)
    out = tmp_path / "oom"
    assert run(SMALL + ["--pairing", "paper", "--steps", "2", "--eval-every", "2", "--out", out]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "out of memory" in line]
    assert len(said) == 1 and "wave seed 0 lr 0.003: out of memory after 0 of 2 steps" in said[0], err
    finals = rows(out / "final.csv")
    assert [(r["method"], r["oom"]) for r in finals] == [("wave", "1"), ("standard", "0")]
    assert math.isnan(float(finals[0]["test_ppl"])) and math.isfinite(float(finals[1]["test_ppl"]))
    assert "Out of memory (final.csv oom 1, NaN test metrics): wave seed 0" in (out / "summary.md").read_text()
    assert not list((out / "checkpoints").glob("*-last.pt"))


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A wave job stopped at step 3 of 8: its resume state is checkpoints/wave-seed0-last.pt."""
    out = tmp_path_factory.mktemp("q") / "stopped"
    assert run(SMALL + ["--methods", "wave", "--steps", "8", "--eval-every", "2", "--log-every", "1",
                        "--stop-after-steps", "3", "--out", out]) == 0
    return out


def _edit_state(change):
    def edit(run_dir: Path) -> None:
        import torch

        path = run_dir / "checkpoints" / "wave-seed0-last.pt"
        ckpt = torch.load(path, weights_only=False)
        change(ckpt["train_state"])
        torch.save(ckpt, path)
    return edit


def _edit_json(change):
    def edit(run_dir: Path) -> None:
        env, tok = (json.loads((run_dir / name).read_text()) for name in ("env.json", "tokenizer.json"))
        change(env, tok)
        for name, data in (("env.json", env), ("tokenizer.json", tok)):
            (run_dir / name).write_text(json.dumps(data))
    return edit


def _older_env_and_another_min_count(env: dict, tok: dict) -> None:
    del env["tokenizer"]["sha256"]  # as a run started before the tokenizer's digest was recorded
    tok["min_count"] = 2


STATE, TOKENIZER = "wave-seed0-last.pt holds no usable resume state", "tokenizer.json is not the tokenizer this run"


@pytest.mark.parametrize("edit, needles", [
    (_edit_state(lambda ts: ts["job"].update(step="3")), (STATE, "job.step: '3' is not a whole number")),
    (_edit_state(lambda ts: ts["job"].update(step=99)), (STATE, "beyond the plan's 8 steps")),
    (_edit_state(lambda ts: ts["job"].pop("tokens")), (STATE, "job: expected the fields")),
    (_edit_state(lambda ts: ts["batcher"].update(position=99)), (STATE, "position 99")),  # trained on other batches
    (_edit_state(lambda ts: ts["batcher"].update(position=-1)), (STATE, "position -1")),  # sliced from the end
    (_edit_state(lambda ts: ts["batcher"].update(epoch=-2)), (STATE, "epoch -2")),
    (_edit_state(lambda ts: ts["plan"].update(total_steps=80)), (STATE, "plan differs from this run's in total_steps")),
    (_edit_state(lambda ts: ts["ranks"].append(ts["ranks"][0])), (STATE, "ranks: expected a list of 1 entries")),
    (_edit_state(lambda ts: ts["ranks"][0].update(acc=[1.0])), (STATE, "ranks[0].acc: expected 3 numbers")),
    # tokenizer.json edited: it was blamed on the checkpoint ("delete it"), which retrained with the wrong vocabulary
    (_edit_json(lambda env, tok: tok.update(chars=tok["chars"][1:])), (TOKENIZER, "vocab_size", "restore the run's")),
    (_edit_json(lambda env, tok: tok.update(chars="\u4e00" + tok["chars"][1:])), (TOKENIZER, "sha256 differs")),
    (_edit_json(_older_env_and_another_min_count), (TOKENIZER, "min_count", "2 now")),
])
def test_resume_refuses_a_damaged_resume_state(stopped_run, tmp_path, capsys, edit, needles):
    """An edited or damaged resume state or tokenizer crashed --resume (a traceback), was blamed on the checkpoint
    or was silently accepted (training on other batches, steps past the budget, another vocabulary): one line naming
    the file and what is wrong, exit 2, files kept."""
    out = tmp_path / "damaged"
    shutil.copytree(stopped_run, out)
    edit(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run(["--resume", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and all(needle in err for needle in needles), err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
