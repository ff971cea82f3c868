"""`python -m bench.quality`: train WaveFieldLM and StandardLM under one budget, report the gap.

    python -m bench.quality --preset tiny --seeds 0 1 2 --out /tmp/quality_tiny
    torchrun --nproc-per-node 2 -m bench.quality --preset tiny --corpus fixture --steps 20
    python -m bench.quality --resume DIR        # finish an interrupted run (same settings)

Exit codes: 0 ok (also after --stop-after-steps), 2 bad input (one line on stderr),
3 too many non-finite steps in a row (state saved), 130 interrupted.
Files (rank 0): env.json, tokenizer.json, curves.csv, final.csv, summary.md, plots/,
checkpoints/<method>-seed<k>.pt (best validation) and -last.pt (resume state, deleted when the job ends).
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.common.cli import UsageError, run_cli
from bench.quality import cli as qcli

EXIT_NONFINITE = 3


def main(argv: Sequence[str] | None = None) -> int:
    settings = qcli.parse(argv)
    if settings is None:
        return 0
    from bench.quality.dist import init_distributed, shutdown

    ctx = init_distributed(settings.device)
    try:
        return _run(settings, ctx, list(sys.argv[1:] if argv is None else argv))
    finally:
        shutdown(ctx)


def _run(settings, ctx, argv: list[str]) -> int:
    import torch

    from bench.common.device import resolve_device
    from bench.common.env import collect_env, device_tag, write_env
    from bench.common.rundir import new_run_dir
    from bench.quality.data import count_chars, encode_splits, load_corpus, make_batches
    from bench.quality.methods import resolve_methods
    from bench.quality.report import gap_table, ratio_rows, write_report, _by_method
    from bench.quality.schema import FINAL_COLUMNS, append_row, read_rows
    from bench.quality.tokenizers import build_tokenizer, load_tokenizer
    from bench.quality.train import NonFiniteStop, RunContext, StopRequested, make_plan, train_job

    # ---- settings and run folder (a resumed run takes its settings from env.json)
    resumed_env = None
    if settings.resume is not None:
        run_dir = Path(settings.resume)
        env_path = run_dir / "env.json"
        if not env_path.is_file():
            raise UsageError(f"--resume {run_dir}: no env.json there (not a bench.quality run folder)")
        resumed_env = json.loads(env_path.read_text())
        if "settings" not in resumed_env:
            raise UsageError(f"--resume {run_dir}: env.json has no saved settings (not a bench.quality run folder)")
        settings = qcli.settings_from_saved(resumed_env["settings"], settings)
    p = settings.preset

    device = _device(settings.device, ctx, resolve_device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    deterministic = settings.deterministic == "on" or (settings.deterministic == "auto" and device.type == "cpu")
    if deterministic:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    amp_dtype = _amp_dtype(p.amp, device)
    if p.batch_size % ctx.world:
        raise UsageError(f"--batch-size {p.batch_size} must be divisible by the number of processes ({ctx.world})")

    # ---- data, tokenizer and model sizes: every input error surfaces before a folder is created
    corpus = load_corpus(p.corpus, data_dir=settings.data_dir, text_file=settings.text_file)
    if settings.resume is None:
        tok = build_tokenizer(p.tokenizer, corpus.train, vocab_size=p.vocab_size, min_count=p.min_count)
    else:
        tok = load_tokenizer(run_dir / "tokenizer.json")
    methods = resolve_methods(settings.methods, p, tok.vocab_size)
    if settings.resume is None:
        # Every rank checks --out before rank 0 creates it, so a refused folder stops all ranks alike
        # (rather than leaving the others waiting for a broadcast that never comes).
        if settings.out is not None and Path(settings.out).exists() and any(Path(settings.out).iterdir()):
            raise UsageError(f"output folder {settings.out!r} already holds results; choose a new --out or use "
                             f"--resume {settings.out}")
        ctx.barrier()
        run_dir = Path(ctx.broadcast_object(str(new_run_dir(device_tag(device), settings.out, kind="quality"))
                                            if ctx.is_main else None))
        if ctx.is_main:
            tok.save(run_dir / "tokenizer.json")
    data = encode_splits(corpus, tok, p.batching)
    tokens_per_char = {}
    for split in ("train", "valid", "test"):
        n_tok = len(data[split]) if p.batching == "contiguous" else sum(len(x) for x in data[split])
        tokens_per_char[split] = n_tok / max(1, count_chars(corpus.split(split), p.batching))

    train_probe = make_batches(p.batching, data["train"], p.seq_len, p.batch_size, seed=0, pad_id=tok.pad_id)
    plan = make_plan(p, len(train_probe))
    eval_batches = {s: make_batches(p.batching, data[s], p.seq_len, p.batch_size, shuffle=False, drop_last=False,
                                    pad_id=tok.pad_id) for s in ("valid", "test")}

    # ---- env.json
    prefix = f"torchrun --nproc-per-node {ctx.world} -m bench.quality" if ctx.enabled else "python -m bench.quality"
    command = f"{prefix} {shlex.join(argv)}".strip()
    corpus_info = {"name": corpus.name, "source": corpus.source, "license": corpus.license,
                   "split_rule": corpus.split_rule, "chars": corpus.sizes()}
    if ctx.is_main:
        if resumed_env is None:
            env = collect_env(
                argv, seed=settings.seeds, command=command, kind="quality", world_size=ctx.world,
                distributed_backend=ctx.backend, device=str(device), amp=str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
                deterministic=deterministic, settings=settings.saved(), preset=p.name, plan=vars(plan),
                epochs_covered=plan.total_steps / plan.batches_per_epoch,
                tokenizer={**tok.describe(), "path": "tokenizer.json"}, corpus=corpus_info,
                tokens_per_char=tokens_per_char, methods=methods, max_nonfinite=settings.max_nonfinite,
                memory_method=("cuda torch.cuda.max_memory_allocated per job" if device.type == "cuda" else
                               "cpu peak RSS of the process (VmHWM in /proc/self/status, reset per job via "
                               "/proc/self/clear_refs; see final.csv mem_method)"),
                metrics={"loss": "token-weighted mean cross-entropy (nats/token) over non-pad targets",
                         "bpc": "loss / ln 2 * tokens per character of the split",
                         "batch_mean_loss": "the published loop's mean of per-batch mean losses; ppl exp(min(., 20))",
                         "ratio_interval": "mean of per-seed wave/baseline ratios, two-sided 95% Student-t CI"},
            )
        else:
            env = resumed_env
            env.setdefault("resumes", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
                                                  "device": str(device), "world_size": ctx.world})
        write_env(run_dir / "env.json", env)
    meta = {"tokenizer": "tokenizer.json", "tokenizer_kind": tok.kind, "corpus": corpus_info, "preset": p.name,
            "seq_len": p.seq_len, "batching": p.batching}
    rc = RunContext(settings=settings, run_dir=run_dir, device=device, ctx=ctx, data=data, pad_id=tok.pad_id,
                    tokens_per_char=tokens_per_char, methods=methods, plan=plan, amp_dtype=amp_dtype,
                    eval_batches=eval_batches, meta=meta)
    if ctx.is_main:
        sizes = ", ".join(f"{m} {v['params']:,}" for m, v in methods.items())
        print(f"bench.quality: {run_dir} | {corpus.name} {tok.kind} V={tok.vocab_size} | {plan.total_steps} steps "
              f"({plan.budget}) | params: {sizes}", file=sys.stderr)

    # ---- jobs: every seed trains every method; finished ones (rows in final.csv) are skipped on resume
    final_path = run_dir / "final.csv"
    done = {(r["method"], int(r["seed"])) for r in read_rows(final_path)}
    for seed in settings.seeds:
        for method in methods:
            if (method, seed) in done:
                continue
            try:
                row = train_job(rc, method, seed)
            except NonFiniteStop as exc:
                if ctx.is_main:
                    print(f"bench.quality: error: {exc}", file=sys.stderr)
                return EXIT_NONFINITE
            except StopRequested as exc:
                if ctx.is_main:
                    print(f"bench.quality: {exc}", file=sys.stderr)
                return 0
            if ctx.is_main:
                append_row(final_path, FINAL_COLUMNS, row)
                rc.ckpt_paths(method, seed)[1].unlink(missing_ok=True)
            ctx.barrier()

    if ctx.is_main:
        summary = write_report(run_dir)
        finals = read_rows(final_path)
        print("\n".join(gap_table(_by_method(finals))))
        for r in ratio_rows(_by_method(finals)):
            print(f"wave / {r['base']} PPL ratio: {r['ppl'].fmt_ci(3)}")
        print(f"bench.quality: wrote {summary}", file=sys.stderr)
    return 0


def _device(flag: str, ctx, resolve_device):
    import torch

    if ctx.enabled and (flag.startswith("cuda") or (flag == "auto" and torch.cuda.is_available())):
        return torch.device("cuda", ctx.local_rank)
    device = resolve_device(flag)
    if device.type == "cuda":
        if device.index is None:  # an explicit index keeps DDP, RNG and memory calls on one device
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def _amp_dtype(amp: str, device):
    import torch

    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise UsageError("--amp fp16 needs a CUDA device (fp16 autocast on CPU is not supported here); "
                         "valid choices on cpu: off, bf16")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("--amp bf16 is not supported by this GPU; valid choices here: off, fp16")
    return torch.bfloat16 if amp == "bf16" else torch.float16


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="bench.quality"))
