"""bench/gpu_run.sh, the time-boxed GPU session: its plan fits the device budget, every command it
would run parses with the harness's own flags, and (slow) its CPU dry run completes every step; bad input and
Ctrl-C; and env.json names the GPUs the session used."""
from __future__ import annotations

import csv
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _plan() -> list[tuple[str, int, str]]:
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_run.sh"), "--plan"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHON": "python3"})
    assert proc.returncode == 0, proc.stderr
    return [(a, int(b), c) for a, b, c in (ln.split("\t") for ln in proc.stdout.splitlines())]


def test_gpu_script_plan_fits_and_its_flags_parse():
    plan = _plan()
    steps = {name: (budget, cmd) for name, budget, cmd in plan}
    assert list(steps)[:2] == ["env", "scaling-headline"] and list(steps)[-2:] == ["report", "total"]
    assert steps["total"][0] == sum(b for n, (b, _) in steps.items() if n != "total") <= 9.5 * 60 - 60
    from bench.diagnostics.__main__ import build_parser as diag_parser
    from bench.quality.cli import build_parser as quality_parser
    from bench.report.__main__ import build_parser as report_parser
    from bench.scaling.cli import build_parser as scaling_parser

    from bench.profile import build_parser as profile_parser

    parsers = {"bench.scaling": scaling_parser, "bench.quality": quality_parser,
               "bench.diagnostics": diag_parser, "bench.report": report_parser, "bench.profile": profile_parser}
    seen = set()
    for name, (_, cmd) in steps.items():
        if " -m bench." not in cmd:
            continue
        cmd = re.sub(r"--corpus <[^>]*>", "--corpus fixture", cmd)
        argv = shlex.split(cmd)
        module = argv[argv.index("-m") + 1]
        parsers[module]().parse_args(argv[argv.index("-m") + 2:])  # exits 2 on an unknown flag or a bad value
        seen.add(module)
    assert seen == set(parsers)
    head = steps["scaling-headline"][1]
    assert "--methods wave,fft-floor,softmax-sdpa," in head and "--max-len 32768" in head
    assert "--levels core,layer,model --passes fwd,fwdbwd" in head and "--dtype bfloat16" in head
    assert "--seq-lens 65536,131072,262144" in steps["scaling-long"][1]
    assert "--methods all" in steps["scaling-fp32"][1]
    assert "--preset paper-char" in steps["quality"][1] and "--amp bf16" in steps["quality"][1]


@pytest.mark.slow  # 1.5 to 3 minutes on 2 CPU cores: every harness runs once, tiny, on CPU
def test_gpu_script_dry_run(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_run.sh"), "--dry-run", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)})
    with (out / "steps.tsv").open() as fh:
        status = {r["step"]: r["status"] for r in csv.DictReader(fh, delimiter="\t")}
    assert list(status) == ["env", "scaling-headline", "profile", "scaling-long", "quality", "diagnostics",
                            "scaling-fp32", "report"]
    assert all(v == "ok" for v in status.values()), (status, proc.stdout[-3000:])
    assert proc.returncode == 0
    assert "GPU command:" in proc.stdout and "--device cuda" in proc.stdout
    text = (out / "README.md").read_text()
    assert "## The claims at a glance" in text and "quality-paper-char/final.csv" in text
    assert (out / "versions.txt").read_text().startswith("python ")


@pytest.mark.parametrize("archive, message", [
    ("{tmp}/nodir/gpu.tgz", "--archive {tmp}/nodir/gpu.tgz must name a file in an existing folder"),
    ("{tmp}", "--archive {tmp} must name a file in an existing folder"),
    ("{tmp}/gpu/gpu.tgz", "--archive {tmp}/gpu/gpu.tgz is inside OUTDIR {tmp}/gpu; give a file outside it"),
])
def test_a_bad_archive_is_refused_before_any_step(tmp_path, archive, message):
    archive, message = archive.format(tmp=tmp_path), message.format(tmp=tmp_path)
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_run.sh"), "--dry-run", "--archive", archive,
                           str(tmp_path / "gpu")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr == f"gpu_run.sh: error: {message}\n"
    assert not (tmp_path / "gpu").exists()  # nothing ran


def _dry_run_with_stand_ins(tmp_path: Path, step_s: int) -> subprocess.Popen:
    """The dry run with a PYTHON that answers the env step at once, runs the corpus probes and sleeps step_s in
    every step (its pid in tmp_path/steps.pids), in a process group of its own as a terminal's foreground job."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/bash\ncase \"$1\" in\n  -) cat > /dev/null; echo 'python stand-in' ;;\n"
                    f"  -c) exec {sys.executable} \"$@\" ;;\n"
                    f"  *) echo $$ >> {tmp_path / 'steps.pids'}; exec sleep {step_s} ;;\nesac\n")
    fake.chmod(0o755)
    return subprocess.Popen(["bash", str(REPO / "bench" / "gpu_run.sh"), "--dry-run", str(tmp_path / "gpu")],
                            cwd=REPO, env={**os.environ, "PYTHON": str(fake), "TMPDIR": str(tmp_path)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_the_dry_run_names_the_gpu_runs_corpus_and_trains_on_the_fixture(tmp_path):
    stdout, _ = _dry_run_with_stand_ins(tmp_path, 0).communicate(timeout=60)
    lines = stdout.splitlines()
    corpus = next(ln for ln in lines if ln.startswith("quality corpus: ")).removeprefix("quality corpus: ")
    at = lines.index(next(ln for ln in lines if ln.startswith("== quality (timeout")))
    gpu, dry = lines[at + 1], lines[at + 2]
    assert "GPU command:" in gpu and f"--preset paper-char {corpus} --pairing" in gpu and "fixture" not in corpus
    assert "dry run (CPU, tiny):" in dry and "--preset paper-char --corpus fixture --pairing" in dry


def test_ctrl_c_stops_the_running_step_records_it_and_exits_130(tmp_path):
    proc = _dry_run_with_stand_ins(tmp_path, 60)
    pids = tmp_path / "steps.pids"
    deadline = time.monotonic() + 30
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C; timeout runs each step in a group of its own
    try:
        stdout, stderr = proc.communicate(timeout=30)
        step_left = subprocess.run(["kill", "-0", pids.read_text().strip()], capture_output=True).returncode == 0
    finally:  # a script that ignored the Ctrl-C, and its steps, go with the test
        for pid in [proc.pid, *map(int, pids.read_text().split())]:
            subprocess.run(["kill", str(pid)], capture_output=True)
    assert not step_left  # the step itself was stopped, not left running
    assert proc.returncode == 130, (stdout, stderr)
    assert stderr.count("\n") == 1 and "interrupted" in stderr, stderr
    with (tmp_path / "gpu" / "steps.tsv").open() as fh:
        rows = [(r["step"], r["status"], r["rc"]) for r in csv.DictReader(fh, delimiter="\t")]
    assert rows[1:] == [("scaling-headline", "interrupted", "130")]  # recorded, and no later step ran


@pytest.mark.parametrize("uuid, used", [("uuid-of-3", "GPU 3"),  # CUDA_VISIBLE_DEVICES=3: NVML's device 3
                                        ("uuid-nvml-does-not-know", "GPU 0")])  # no UUID match: by index
def test_env_json_lists_the_gpus_the_run_sees_not_every_gpu_of_the_machine(monkeypatch, uuid, used):
    from types import SimpleNamespace

    import torch

    from bench.common import env

    class NVMLError(Exception):
        pass

    def by_uuid(text):
        if text != "GPU-uuid-of-3":
            raise NVMLError(text)
        return 3

    nv = SimpleNamespace(NVMLError=NVMLError, nvmlSystemGetDriverVersion=lambda: "570.1", nvmlDeviceGetCount=lambda: 8,
                         nvmlDeviceGetHandleByUUID=by_uuid, nvmlDeviceGetHandleByIndex=lambda i: i,
                         nvmlDeviceGetName=lambda h: f"GPU {h}", nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(
                             total=141 * 2**30))
    monkeypatch.setattr(env, "nvml", lambda: nv)  # a machine of 8 GPUs, of which torch sees one
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=uuid))
    gpus = env.gpu_info()
    assert [(g["index"], g["name"]) for g in gpus] == [(0, used)]
    assert env.machine({"gpus": gpus, "device": "cuda"}) == f"{used} (driver 570.1, 141 GiB)"
