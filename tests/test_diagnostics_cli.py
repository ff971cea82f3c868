"""python -m bench.diagnostics end to end: a random-init model, a trained checkpoint (hand-made, from
bench.quality, in triton mode), the summary regenerated from the run folder, bad input (exit 2) and a
failed model check (exit 1). The runs call the CLIs' main() in this process; the real command line is
checked by test_cli_missing_checkpoint_exits_2 and the slow default run."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.common.checkpoint import save_checkpoint
from bench.common.cli import MAX_SEED
from faultkit import bench_in
from wavefield_core import WaveFieldLM

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny_corpus.txt"
# Small and short for speed: the long-N probes (N = 1500) are tested on the functions in test_diagnostics.py.
PROBES = ["--seq-len", "48", "--batch-size", "2", "--probe-len", "300", "--model-probe-len", "96", "--leak-len", "40"]
SMALL = ["--d-model", "32", "--n-layers", "3", "--n-heads", "4"] + PROBES


def run_cmd(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "bench.diagnostics", "--threads", "1", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def check_outputs(out: Path) -> pd.DataFrame:
    for f in ("env.json", "diagnostics.csv", "summary.md", "plots/coupling.png", "plots/energy_flow.png",
              "plots/impulse_error.png", "plots/causality.png", "plots/kernels_layer0.png"):
        assert (out / f).is_file(), f
    df = pd.read_csv(out / "diagnostics.csv")
    assert list(df.columns) == ["check", "layer", "head", "quantity", "value", "threshold", "verdict"]
    assert not (df["verdict"] == "FAIL").any()
    assert set(df["check"]) >= {"heads", "impulse", "coupling", "energy", "conservation", "causality",
                                "leak_demo", "stride_guard", "instrumentation"}
    return df


def test_cli_random_init_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = bench_in("diagnostics", "--threads", "1", *SMALL, "--out", out)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    df = check_outputs(out)
    assert (df["verdict"] == "EXPECTED-LEAK").sum() == 4
    summary = (out / "summary.md").read_text()
    assert "UTF-8 bytes of tiny_corpus.txt" in summary and "EXPECTED LEAK SHOWN stride 0.125" in summary
    assert "OVERALL PASS" in proc.stdout
    # bench.report rewrites the summary from the folder alone, exactly as the run wrote it
    from bench.report.runs import Run, regenerate

    (out / "summary.md").unlink()
    regenerate(Run(path=out, kind="diagnostics", rel="run"))
    assert (out / "summary.md").read_text() == summary


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """Train a tiny WaveFieldLM for a few dozen steps on the fixture text, save it with its tokenizer."""
    tokenizers = pytest.importorskip("bench.quality.tokenizers")
    text = (FIXTURE.read_text(encoding="utf-8") if FIXTURE.is_file()
            else "the quick brown fox jumps over the lazy dog. " * 200)
    tok = tokenizers.CharTokenizer.train(text, min_count=1)
    ids = torch.tensor(tok.encode(text))
    cfg = {"vocab_size": tok.vocab_size, "d_model": 32, "n_layers": 3, "n_heads": 4, "d_ff": 64, "field_stride": 4.0}
    torch.manual_seed(0)
    model = WaveFieldLM(**cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        starts = torch.randint(0, len(ids) - 49, (8,), generator=gen)
        batch = torch.stack([ids[s:s + 49] for s in starts])
        _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    d = tmp_path_factory.mktemp("ckpt")
    tok.save(d / "tokenizer.json")
    save_checkpoint(d / "model.pt", "wave", cfg, model, meta={"tokenizer_path": "tokenizer.json",
                                                              "tokenizer": tok.describe(), "step": 30})
    return d / "model.pt"


def test_cli_on_trained_checkpoint(tiny_checkpoint, tmp_path):
    from bench.diagnostics.__main__ import main  # in process: the subprocess path is tested above

    out = tmp_path / "run"
    assert main(["--checkpoint", str(tiny_checkpoint), "--threads", "1", *PROBES, "--out", str(out)]) == 0
    check_outputs(out)
    assert "encoded with the checkpoint's tokenizer" in (out / "summary.md").read_text()


QUALITY_FAST = ["--preset", "tiny", "--corpus", "fixture", "--pairing", "paper", "--steps", "10", "--d-model", "32",
                "--n-layers", "2", "--n-heads", "4", "--d-ff", "64", "--seq-len", "32", "--batch-size", "4",
                "--eval-every", "5", "--eval-batches", "2", "--test-batches", "2", "--log-every", "5",
                "--warmup-steps", "2", "--min-count", "1", "--threads", "1", "--no-progress"]


@pytest.mark.skipif(not (REPO / "bench" / "quality" / "__main__.py").is_file(), reason="bench.quality not present")
def test_cli_on_bench_quality_checkpoint(tmp_path):
    """The real hand-off: a checkpoint written by bench.quality's command line (tiny preset, shrunk to
    10 steps, about a second) feeds diagnostics, which finds the run's tokenizer from the checkpoint meta."""
    from bench.diagnostics.__main__ import main

    q = bench_in("quality", *QUALITY_FAST, "--out", tmp_path / "q")
    assert q.returncode == 0, q.stderr[-2000:]
    ckpt = tmp_path / "q" / "checkpoints" / "wave-seed0.pt"
    assert ckpt.is_file(), sorted(p.name for p in (tmp_path / "q").rglob("*.pt"))
    out = tmp_path / "run"
    assert main(["--checkpoint", str(ckpt), "--threads", "1", *PROBES, "--out", str(out)]) == 0
    check_outputs(out)
    assert "encoded with the checkpoint's tokenizer" in (out / "summary.md").read_text()
    # a standard-attention checkpoint from the same run is refused as bad input
    from bench.common.cli import run_cli

    std = tmp_path / "q" / "checkpoints" / "standard-seed0.pt"
    assert run_cli(main, ["--checkpoint", str(std), "--out", str(tmp_path / "s")]) == 2


def test_cli_on_triton_mode_checkpoint(tmp_path):
    """A checkpoint trained with mode triton (bench.quality --wave-mode triton) crashed the audit with a
    RuntimeError traceback on a CPU (and its float64 probes would on a GPU: the kernels take no float64).
    It is diagnosed on the scan path, the same operator, and the summary says so."""
    from bench.diagnostics.__main__ import main

    cfg = {"vocab_size": 256, "d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32, "mode": "triton"}
    save_checkpoint(tmp_path / "model.pt", "wave", cfg, WaveFieldLM(**cfg))
    out = tmp_path / "run"
    assert main(["--checkpoint", str(tmp_path / "model.pt"), "--threads", "1", *PROBES, "--out", str(out)]) == 0
    assert "diagnosed with mode scan" in (out / "summary.md").read_text()


def test_cli_missing_checkpoint_exits_2(tmp_path):
    proc = run_cmd("--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,msg", [
    (["--field-stride", "1.29"], "leaks future tokens"),
    (["--role-thresholds", "32,4"], "LOCAL < LONG"),
    (["--d-model", "30", "--n-heads", "4"], "not divisible"),
    (["--checkpoint", "EXISTING", "--d-model", "64"], "cannot be combined"),
    (["--probe-dtype", "float16"], "invalid choice"),
    (["--text-file", "FOLDER"], "is not a file"),
    (["--d-model", str(2**42), "--n-heads", "2"], "does not build a wave model"),  # was a RuntimeError traceback
    (["--leak-len", "2"], "at least 3 tokens"),  # ran, then failed (exit 1): 'NO leak shown ... probe is broken'
    (["--model-probe-len", "1"], "at least 2 tokens"),  # was an IndexError traceback in the token-id probe
    (["--probe-len", "1"], "at least 2 tokens"),  # no probe row at all, yet an overall PASS
    # was a traceback and an empty folder
    (["--seed", str(2**64 - 1)], f"--seed: {2**64 - 1} is out of range (valid: 0 to {MAX_SEED})"),
    (["--seed", "-1"], "-1 is negative"),  # numpy's generator refused it, in a traceback
    (["--vocab-size", "1"], "--vocab-size: 1 leaves the token-id causality probe no other token"),  # vacuous PASS
], ids=["leaking-stride", "thresholds", "heads", "ckpt-conflict", "dtype", "text-folder", "huge-model", "leak-len",
        "model-probe-len", "probe-len", "huge-seed", "negative-seed", "vocab-1"])
def test_cli_bad_flags_exit_2(args, msg, capsys, tmp_path):
    from bench.common.cli import run_cli
    from bench.diagnostics.__main__ import main

    existing = tmp_path / "some.pt"
    existing.write_bytes(b"")
    args = [{"EXISTING": str(existing), "FOLDER": str(tmp_path)}.get(a, a) for a in args]
    with pytest.raises(SystemExit) as exc:  # argparse errors exit directly
        code = run_cli(main, args + ["--out", str(tmp_path / "o")], prog="diag")
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written for bad input


def test_failed_model_check_exits_1(monkeypatch, tmp_path):
    from bench.diagnostics import run
    from bench.diagnostics.__main__ import main

    monkeypatch.setattr(run, "IMPULSE_TOL", 0.0)  # no fp32 path matches float64 to 0: the check fails
    code = main(["--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--seq-len", "32", "--batch-size", "1",
                 "--probe-len", "64", "--model-probe-len", "32", "--no-leak-demos", "--out", str(tmp_path / "o")])
    assert code == 1
    assert "FAIL impulse" in (tmp_path / "o" / "summary.md").read_text()


@pytest.mark.slow
def test_cli_default_paper_model(tmp_path):
    """The default command: the paper's D=256, 6 layers, 8 heads, stride 4, long probes (about 30 s)."""
    proc = run_cmd("--out", str(tmp_path / "run"), timeout=900)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    check_outputs(tmp_path / "run")
