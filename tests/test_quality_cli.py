"""bench.quality's presets and command line: every preset field is a flag, the published models build, bad
input is one line and exit 2 before anything is written (CPU, fixture corpus)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from bench.common.cli import MAX_SEED
from bench.quality import cli as qcli
from bench.quality.presets import AMP_CHOICES, CORPUS_CHOICES, PRESETS, TOKENIZER_CHOICES, preset_fields
from faultkit import bench_in
from test_quality import REPO, SMALL, rows, run

# triton fixes interpret-or-compile when it is first imported: without CUDA, the session's triton interprets
# if it is imported after this (as test_triton_scan.py does when it is collected first)
if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRETED = not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") == "1"


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
    assert s.fmt_ci(1, interval=False) == "2.0 (min-max 1.0 to 3.0, 3 seeds)"
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
    (["--seeds", str(2**63), "0", "--corpus", "fixture", "--out", "{tmp}"],
     f"--seeds: {2**63} is out of range (valid: 0 to {MAX_SEED})"),
    (["--corpus", "fixture", "--seq-len", "400", "--out", "{tmp}"], "valid split: too little data: 0 windows"),
    (["--corpus", "wikitext2", "--data-dir", "/nonexistent/wt2"], "/nonexistent/wt2"),
    (["--corpus", "text-file"], "--text-file"),
    (["--corpus", "fixture", "--min-count", "100000", "--out", "{tmp}"],  # was PPL 1.02: every character <unk>
     "--min-count 100000 maps 100.0% of the train split's characters to <unk>"),
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
    # this module and the triton test module turn on triton's interpreter for the whole session
    # when they are collected; this case is about a CPU machine without it
    import wavefield_core.triton_scan as ts

    monkeypatch.setattr(ts, "triton_available", lambda device: "needs a CUDA device (device is cpu)")
    code = run(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err and err.startswith(f"{qcli.PROG}: error: "), err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("key, value, needle", [
    ("lr", -1, "--lr must be positive"),
    ("seq_len", 0, "--seq-len must be from 1"),
    ("batch_size", 0, "--batch-size must be from 1"),
    ("d_model", "abc", "field preset.d_model: 'abc' is not a number"),
    ("dropout", True, "field preset.dropout: True is not a number"),
    ("corpus", "nope", "field preset.corpus: 'nope' is not one of wiki-vital"),
    ("seeds", "0", "field seeds: '0' is not a list"),
    ("seeds", [], "--seeds needs at least one seed"),
    ("seeds", [-1], "field seeds[0]: -1 is negative"),
    ("seeds", [0, 2**40], f"field seeds[1]: {2**40} is out of range (valid: 0 to {MAX_SEED})"),
    ("method_names", ["wave", "nope"], "field method_names[1]: 'nope' is not one of wave"),
    ("lr_sweep", [0.0], "--lr-sweep value 0.0 must be positive"),
    ("deterministic", "maybe", "field deterministic: 'maybe' is not one of auto, on, off"),
    ("text_file", 5, "field text_file: 5 is not a string"),
])
def test_resume_checks_the_saved_settings_as_the_flags(key, value, needle, tmp_path, capsys):
    """An edited or damaged env.json: each saved value passes its flag's checks (they raised tracebacks)."""
    saved = qcli.parse(SMALL).saved()
    (saved["preset"] if key in saved["preset"] else saved)[key] = value
    (tmp_path / "env.json").write_text(json.dumps({"settings": saved}))
    assert run(["--resume", tmp_path]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "env.json has no usable saved settings" in err, err
    assert needle in err and "not a bench.quality run folder" not in err, err


def test_resume_refuses_a_saved_preset_missing_a_field(tmp_path, capsys):
    """A preset field missing from env.json trained another model size (the field's default) beside the run's
    rows; the committed runs, written before the newer fields, still resume."""
    saved = qcli.parse(SMALL).saved()
    del saved["preset"]["d_model"], saved["preset"]["n_layers"]
    (tmp_path / "env.json").write_text(json.dumps({"settings": saved}))
    assert run(["--resume", tmp_path]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "field(s) preset.d_model, preset.n_layers missing" in err, err
    committed = sorted((REPO / "results" / "runs").glob("*_quality/env.json"))
    for env in committed:
        assert qcli.settings_from_saved(json.loads(env.read_text())["settings"], qcli.parse([])).preset, env
    assert committed


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
    """--wave-mode triton reaches the wave layers: on CPU the kernels run in triton's interpreter (a width,
    length and batch that it runs in a second or two); in this process where the session's triton interprets
    (INTERPRETED), else in a subprocess of its own."""
    pytest.importorskip("triton")
    out = tmp_path / "t"
    argv = ["--preset", "tiny", "--corpus", "fixture", "--d-model", "32", "--n-layers", "2", "--n-heads", "2",
            "--d-ff", "32", "--seq-len", "16", "--batch-size", "4", "--eval-batches", "1", "--test-batches", "1",
            "--lr", "3e-3", "--warmup-steps", "2", "--threads", "1", "--methods", "wave", "--wave-mode", "triton",
            "--device", "cpu", "--steps", "2", "--eval-every", "2", "--out", out]
    if INTERPRETED:
        proc = bench_in("quality", *argv)
    else:
        proc = subprocess.run([sys.executable, "-m", "bench.quality", *map(str, argv)], cwd=REPO, text=True,
                              capture_output=True, timeout=300,
                              env={**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"})
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




def test_a_relative_text_file_resumes_from_another_folder(tmp_path, monkeypatch):
    """env.json keeps the data path absolute: a --resume started elsewhere reads the same file (it was refused
    as 'text file not found', and the absolute path as a changed setting)."""
    from bench.quality.data import FIXTURE_PATH

    (tmp_path / "corpus.txt").write_text(FIXTURE_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    argv = [{"fixture": "text-file"}.get(a, a) for a in SMALL]
    assert run(argv + ["--text-file", "corpus.txt", "--methods", "wave", "--steps", "2", "--eval-every", "2",
                       "--stop-after-steps", "1", "--out", "run"]) == 0
    assert json.loads((tmp_path / "run" / "env.json").read_text())["settings"]["text_file"] == \
        str(tmp_path.resolve() / "corpus.txt")
    monkeypatch.chdir(tmp_path / "run")
    assert run(["--resume", tmp_path / "run", "--no-progress"]) == 0
    assert [r["method"] for r in rows(tmp_path / "run" / "final.csv")] == ["wave"]


def test_resume_refuses_a_changed_corpus(tmp_path, capsys):
    """A text file changed between a run and its --resume: longer, it was blamed on the checkpoint ('delete it')
    and the rest trained on other text; the same length of other text was not noticed at all."""
    from bench.quality.data import FIXTURE_PATH

    text, corpus = FIXTURE_PATH.read_text(encoding="utf-8"), tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    argv = [{"fixture": "text-file"}.get(a, a) for a in SMALL]
    assert run(argv + ["--text-file", corpus, "--pairing", "paper", "--steps", "3", "--eval-every", "3",
                       "--stop-after-steps", "1", "--out", tmp_path / "run"]) == 0
    capsys.readouterr()
    env = (tmp_path / "run" / "env.json").read_text()
    for changed, how in ((text + "more text\n", "characters per split"), (text.replace("e", "a"), "other content")):
        corpus.write_text(changed, encoding="utf-8")
        assert run(["--resume", tmp_path / "run", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and how in err, err
        assert f"--text-file {corpus} is not the text this run started on" in err and "new --out" in err, err
        assert (tmp_path / "run" / "env.json").read_text() == env
    corpus.write_text(text, encoding="utf-8")  # the text restored, the run finishes
    assert run(["--resume", tmp_path / "run", "--no-progress"]) == 0
    assert [r["method"] for r in rows(tmp_path / "run" / "final.csv")] == ["wave", "standard"]


def test_memory_check_counts_the_field_only_on_the_path_that_builds_it():
    """The token path builds no field: a huge stride trains in megabytes (it was refused as needing 147.8 GiB);
    on the field path the refusal names --field-stride and states a huge need in a few characters."""
    import dataclasses

    from bench.common.cli import UsageError
    from bench.quality.__main__ import _check_memory
    from bench.quality.methods import resolve_methods

    p = dataclasses.replace(PRESETS["tiny"], d_model=32, n_layers=1, n_heads=2, d_ff=32, seq_len=32, batch_size=4,
                            field_stride=1e7)
    cpu = torch.device("cpu")
    _check_memory(p, resolve_methods(["wave"], p, 50), 50, cpu, 1)
    for stride in (1e7, 1e300, 1e307):
        field = dataclasses.replace(p, wave_mode="field", field_stride=stride)
        with pytest.raises(UsageError, match="lower --field-stride, --seq-len") as refused:
            _check_memory(field, resolve_methods(["wave"], field, 50), 50, cpu, 1)
        assert len(str(refused.value)) < 200, refused.value


def test_out_of_memory_outside_a_job_is_one_whole_line(tmp_path, monkeypatch, capsys):
    """Before the jobs (here: encoding the data) out of memory still ends the run: torch's whole message (it was cut
    mid-word at 160 characters) and advice that can work (--resume cannot change a run's sizes)."""
    from bench.common.cli import run_cli
    from bench.quality import data as qdata
    from bench.quality.__main__ import main

    torch_says = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 31850496000 bytes. Error code 12 (Cannot allocate memory)")

    def out_of_memory(*args, **kwargs):
        raise RuntimeError(torch_says)

    monkeypatch.setattr(qdata, "encode_splits", out_of_memory)
    assert run_cli(main, [*map(str, SMALL), "--out", str(tmp_path / "o")], prog=qcli.PROG, resumable=True) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and torch_says in err and "smaller sizes in a new --out" in err, err


def test_a_valid_or_test_split_mostly_unk_is_refused(tmp_path, capsys):
    """The <unk> guard checked the train split only: a text whose test part is characters unseen in train ran and
    published a test PPL of 98% <unk>. Each split's share is now recorded, and past the limit refused by name."""
    from bench.quality.data import FIXTURE_PATH

    text = FIXTURE_PATH.read_text(encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text + "".join(chr(0x4E00 + i) * 40 + "\n" for i in range(18)), encoding="utf-8")
    argv = [{"fixture": "text-file"}.get(a, a) for a in SMALL]
    assert run(argv + ["--text-file", corpus, "--methods", "wave", "--steps", "2", "--out", tmp_path / "o"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and " split is " in err and "% <unk> (at most" in err, err
    assert "train split's characters" in err and not (tmp_path / "o").exists()
    corpus.write_text(text, encoding="utf-8")
    assert run(argv + ["--text-file", corpus, "--methods", "wave", "--steps", "2", "--out", tmp_path / "o"]) == 0
    env = json.loads((tmp_path / "o" / "env.json").read_text())
    assert set(env["unk_fraction"]) == {"train", "valid", "test"}
    assert "share of <unk> tokens train " in (tmp_path / "o" / "summary.md").read_text()


def test_resume_under_torchrun_names_the_saved_batch_size(tmp_path):
    """A resumed run's batch size that the process count does not divide was blamed on a --batch-size the user never
    typed: the refusal names env.json's value and what to change."""
    saved = qcli.parse(SMALL + ["--batch-size", "15"]).saved()
    (tmp_path / "env.json").write_text(json.dumps({"settings": saved}))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m",
                           "bench.quality", "--resume", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0
    said = [line for line in proc.stderr.splitlines() if line.startswith(f"{qcli.PROG}: error: ")]
    assert said and "batch size 15 (env.json settings.preset.batch_size)" in said[0], proc.stderr[-2000:]
    assert "use a --nproc-per-node that divides it, or no torchrun" in said[0] and "--batch-size" not in said[0]


def test_memory_check_counts_every_cpu_rank_of_the_machine(monkeypatch):
    """Under torchrun on the CPU each rank checked its need against all the free RAM, which the machine's ranks
    share: two ranks could together need twice what was checked. A GPU rank has a device of its own."""
    import dataclasses

    from bench.common import memory
    from bench.common.cli import UsageError
    from bench.quality.__main__ import _check_memory

    p = dataclasses.replace(PRESETS["tiny"], d_model=32, n_layers=1, n_heads=2, d_ff=32, seq_len=32, batch_size=4)
    cpu, real, one_rank = torch.device("cpu"), memory.check_fits, []
    monkeypatch.setattr(memory, "check_fits", lambda need, *args: one_rank.append(need))
    _check_memory(p, None, 50, cpu, 2, 1)
    monkeypatch.setattr(memory, "check_fits", real)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1.5 * one_rank[0])
    _check_memory(p, None, 50, cpu, 2, 1)  # one rank of the two on this machine fits
    _check_memory(p, None, 50, torch.device("cuda"), 2, 2)  # a GPU rank each
    with pytest.raises(UsageError, match="on 2 processes of this machine needs at least"):
        _check_memory(p, None, 50, cpu, 2, 2)
