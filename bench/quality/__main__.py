"""`python -m bench.quality` (also under torchrun): train WaveFieldLM and StandardLM under one budget and report
the gap; `--resume DIR` finishes an interrupted run with its saved settings. Exit codes: 0 ok (also after
--stop-after-steps, and when a job ran out of memory: that job is a row with oom 1 and NaN test metrics, the
other jobs train), 2 bad input (one line on stderr), 3 too many non-finite steps in a row (state saved),
130 interrupted."""
from __future__ import annotations

import hashlib
import os
import shlex
import sys
from typing import Sequence

from bench.common.cli import UsageError, one_line, run_cli
from bench.quality import cli as qcli

EXIT_NONFINITE = 3


def main(argv: Sequence[str] | None = None) -> int:
    settings = qcli.parse(argv)
    if settings is None:
        return 0
    if settings.out is not None:
        from bench.common.files import check_out_dir

        check_out_dir(settings.out)  # before torch, the data and the tokenizer, on every rank
    from bench.common.device import rank_device
    from bench.common.dist import from_env

    ctx = from_env()
    device = rank_device(settings.device, ctx.local_rank if ctx.enabled else None)  # a --resume keeps --device
    ctx = ctx.join(device.type)
    try:
        return _run(settings, ctx, device, list(sys.argv[1:] if argv is None else argv))
    finally:
        ctx.finish()


def _run(settings, ctx, device, argv: list[str]) -> int:
    from bench.common.env import collect_env, device_tag
    from bench.common.files import (CsvLog, claim_run_dir, drop_cut_tail, note_resume, read_run_env, read_table,
                                    replacing, write_json)
    from bench.quality.data import SPLITS, count_chars, encode_splits, load_corpus, make_batches, unk_fractions
    from bench.quality.methods import resolve_methods
    from bench.quality.schema import CURVE_COLUMNS, FINAL_COLUMNS
    from bench.quality.sweep import NoStableLR, jobs, planned_jobs, tuned_rows
    from bench.quality.tokenizers import build_tokenizer, load_tokenizer
    from bench.quality.train import (NonFiniteStop, OutOfMemory, RunContext, StopRequested, check_job_files, ckpt_paths,
                                     make_plan, train_job)

    # ---- settings and run folder (a resumed run takes its settings from env.json, read under the lock)
    resume = settings.resume is not None
    if resume:
        read_run_env(settings.resume, qcli.PROG)
        run_dir = claim_run_dir(settings.resume, resume=True, main=ctx.is_main, broadcast=ctx.broadcast)
        resumed_env = read_run_env(run_dir, qcli.PROG)  # again, under the lock
        try:
            settings = qcli.settings_from_saved(resumed_env["settings"], settings)
        except ValueError as exc:  # a saved value that its flag refuses: the file was edited or damaged
            raise UsageError(f"--resume {run_dir}: env.json has no usable saved settings ({one_line(exc)})") from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"--resume {run_dir}: env.json has no usable saved settings "
                             f"({one_line(exc, named=True)}; not a bench.quality run folder?)") from None
    p = settings.preset

    def say(msg) -> None:  # one line on stderr, from the main process only
        if ctx.is_main:
            print(f"bench.quality: {msg}", file=sys.stderr)

    deterministic = _torch_settings(settings, device)
    amp_dtype = _amp_dtype(p.amp, device)
    if p.batch_size % ctx.world:
        if resume:  # the user typed no --batch-size: the run's is in env.json
            raise UsageError(f"--resume {run_dir}: the run's batch size {p.batch_size} (env.json settings.preset."
                             f"batch_size) does not divide by {ctx.world} processes; use a --nproc-per-node that "
                             "divides it, or no torchrun")
        raise UsageError(f"--batch-size {p.batch_size} must be divisible by the number of processes ({ctx.world})")

    # ---- data, tokenizer, sizes and batches: every input error surfaces before a folder is created
    corpus = load_corpus(p.corpus, data_dir=settings.data_dir, text_file=settings.text_file)
    corpus_info = {"name": corpus.name, "source": corpus.source, "license": corpus.license,
                   "split_rule": corpus.split_rule, "chars": corpus.sizes(), "sha256": corpus.digest()}
    if resume:  # the text and the tokenizer must be the ones the run started with
        flag = (f"--text-file {settings.text_file}" if settings.text_file is not None
                else f"--data-dir {settings.data_dir}" if settings.data_dir is not None else f"--corpus {corpus.name}")
        _check_unchanged(resumed_env.get("corpus"), {k: corpus_info[k] for k in ("chars", "sha256")},
                         f"{flag} is not the text this run started on", {"chars": "characters per split"}, run_dir)
        tok_file = run_dir / "tokenizer.json"
        try:
            tok = load_tokenizer(tok_file)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{tok_file} is incomplete ({one_line(exc, named=True)})") from None
        _check_unchanged(resumed_env.get("tokenizer"), {**tok.describe(), "sha256": _sha256(tok_file)},
                         f"{tok_file} is not the tokenizer this run trained with", {}, run_dir)
    else:
        tok = build_tokenizer(p.tokenizer, corpus.train, vocab_size=p.vocab_size, min_count=p.min_count)
    _check_memory(p, None, tok.vocab_size, device, ctx.world, ctx.local_world)
    methods = resolve_methods(settings.methods, p, tok.vocab_size)
    _check_memory(p, methods, tok.vocab_size, device, ctx.world, ctx.local_world)
    data = encode_splits(corpus, tok, p.batching)
    unk_fraction = unk_fractions(data, tok.unk_id, p.min_count)
    n_tokens = len if p.batching == "contiguous" else lambda lines: sum(map(len, lines))
    tokens_per_char = {s: n_tokens(data[s]) / max(1, count_chars(corpus.split(s), p.batching)) for s in SPLITS}

    def batches(split: str, **kw):
        try:
            return make_batches(p.batching, data[split], p.seq_len, p.batch_size, pad_id=tok.pad_id, **kw)
        except UsageError as exc:  # name the split: a short valid or test split fails where train is fine
            raise UsageError(f"{split} split: {exc}") from None

    plan = make_plan(p, len(batches("train")))
    eval_batches = {s: batches(s, shuffle=False, drop_last=False) for s in ("valid", "test")}
    if not resume:
        run_dir = claim_run_dir(settings.out, tag=device_tag(device), kind="quality", main=ctx.is_main,
                                broadcast=ctx.broadcast)
        if ctx.is_main:
            with replacing(run_dir / "tokenizer.json") as tmp:
                tok.save(tmp)
    final_path = run_dir / "final.csv"
    if resume:
        for method, seed, lr in planned_jobs(settings, methods, read_table(final_path, cut="drop")):
            check_job_files(run_dir, method, seed, lr, p.lr, methods[method], ctx.world, plan,
                            batches("train", seed=seed))
        if ctx.is_main:
            for name, columns in (("final.csv", FINAL_COLUMNS), ("curves.csv", CURVE_COLUMNS)):
                path = run_dir / name
                if note := drop_cut_tail(path):  # a row cut by a crash is dropped; its job runs again
                    say(note)
                if path.is_file():  # in this run's columns, so that new rows fit (a file without peak_lr gains it)
                    CsvLog(path, columns).rewrite(read_table(path))
    ctx.barrier()

    # ---- env.json
    prefix = f"torchrun --nproc-per-node {ctx.world} -m bench.quality" if ctx.enabled else "python -m bench.quality"
    command = f"{prefix} {shlex.join(argv)}".strip()
    if ctx.is_main and resume:
        note_resume(run_dir, resumed_env, command=command, device=str(device), world_size=ctx.world,
                    max_nonfinite=settings.max_nonfinite)
    elif ctx.is_main:
        write_json(run_dir / "env.json", collect_env(
            argv, seed=settings.seeds, command=command, kind="quality", world_size=ctx.world,
            distributed_backend=ctx.backend, device=str(device),
            amp=str(amp_dtype).replace("torch.", "") if amp_dtype else "off", deterministic=deterministic,
            settings=settings.saved(), preset=p.name, plan=vars(plan),
            epochs_covered=plan.total_steps / plan.batches_per_epoch,
            tokenizer={**tok.describe(), "path": "tokenizer.json", "sha256": _sha256(run_dir / "tokenizer.json")},
            corpus=corpus_info, tokens_per_char=tokens_per_char, unk_fraction=unk_fraction, methods=methods,
            max_nonfinite=settings.max_nonfinite,
            memory_method=("cuda torch.cuda.max_memory_allocated per job" if device.type == "cuda" else
                           "cpu peak RSS of the process (VmHWM in /proc/self/status, reset per job via "
                           "/proc/self/clear_refs; see final.csv mem_method)"),
            metrics="bench/quality/evaluate.py (token-weighted loss, bpc, accuracy; the paper's batch mean)",
        ))
    meta = {"tokenizer": "tokenizer.json", "tokenizer_kind": tok.kind, "corpus": corpus_info, "preset": p.name,
            "seq_len": p.seq_len, "batching": p.batching}
    rc = RunContext(settings=settings, run_dir=run_dir, device=device, ctx=ctx, batches=batches,
                    tokens_per_char=tokens_per_char, methods=methods, plan=plan, amp_dtype=amp_dtype,
                    eval_batches=eval_batches, meta=meta)
    sizes = ", ".join(f"{m} {v['params']:,}" for m, v in methods.items())
    say(f"{run_dir} | {corpus.name} {tok.kind} V={tok.vocab_size} | {plan.total_steps} steps ({plan.budget}) | "
        f"params: {sizes}")

    # ---- jobs (see bench.quality.sweep); finished ones (rows in final.csv) are skipped on resume
    sweep = len(settings.lrs) > 1
    try:
        for method, seed, lr in jobs(settings, methods, final_path):
            try:
                row = train_job(rc, method, seed, lr)
            except NonFiniteStop as exc:
                say(f"{'' if sweep else 'error: '}{exc}")
                if not sweep:
                    return EXIT_NONFINITE
                row = exc.row  # in a sweep a diverging LR is a result: its row has NaN test metrics
            except OutOfMemory as exc:  # data, not a crash: the job is a row, the other models still train
                say(exc)
                row = exc.row
            except StopRequested as exc:
                say(exc)
                return 0
            if ctx.is_main:
                CsvLog(final_path, FINAL_COLUMNS).append(row)
                ckpt_paths(run_dir, method, seed, lr, p.lr)[1].unlink(missing_ok=True)
            ctx.barrier()
    except NoStableLR as exc:
        say(f"error: {exc}")
        return EXIT_NONFINITE

    if ctx.is_main:
        from bench.quality.report import gap_table, ratio_rows, write_report  # matplotlib: only once there is a report

        summary = write_report(run_dir)
        tuned = tuned_rows(read_table(final_path), settings.seeds[0])
        print("\n".join(gap_table(tuned)))
        for r in ratio_rows(tuned):
            print(f"{r['num']} / {r['base']} PPL ratio: {r['ppl'].fmt_ci(3)}")
        say(f"wrote {summary}")
    return 0


def _check_unchanged(saved, now: dict, what: str, names: dict, run_dir) -> None:
    """A resumed run goes on with the corpus and tokenizer it started with: refuse one whose record `now` differs
    from env.json's `saved` in a key both hold (an older env.json lacks the sha256: the rest is compared); a
    checkpoint would be blamed instead, and deleting it would train on other text or another vocabulary. `what`:
    the input as the refusal names it; `names`: how it names a key."""
    changed = [k for k in now if isinstance(saved, dict) and k in saved and saved[k] != now[k]]
    if not changed:
        return
    key = changed[0]
    how = "the same size, other content (its sha256 differs)"
    if key != "sha256":
        how = f"{names.get(key, key)} {saved[key]!r} when the run started, {now[key]!r} now"
    raise UsageError(f"--resume {run_dir}: {what} ({how}); restore the run's copy, or use the new one in a new --out")


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _torch_settings(settings, device) -> bool:
    """Torch threads and determinism (returned: on or off), and the Triton check, all before any data or
    model work."""
    import torch

    from bench.quality.analysis import WAVE_METHODS

    if settings.preset.wave_mode == "triton" and any(m in WAVE_METHODS for m in settings.methods):
        from wavefield_core.triton_scan import triton_available

        if why := triton_available(device):
            raise UsageError(f"--wave-mode triton cannot run here: {why}")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    deterministic = settings.deterministic == "on" or (settings.deterministic == "auto" and device.type == "cpu")
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    return deterministic


def _amp_dtype(amp: str, device):
    """The autocast dtype of --amp on this device (None: off); a choice the device cannot run is a UsageError."""
    import torch

    cuda = device.type == "cuda"
    if amp == "fp16" and not cuda:
        raise UsageError("--amp fp16 needs a CUDA device (fp16 autocast on CPU is not supported here); "
                         "valid choices on cpu: auto, off, bf16")
    if amp == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UsageError("--amp bf16 is not supported by this GPU; valid choices here: auto, off, fp16")
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _check_memory(p, methods: dict | None, vocab: int, device, world: int, local_world: int = 1) -> None:
    """Refuse a model or sequence that cannot fit before anything of its size is allocated. Without
    `methods`, the bound every model shares (no weights, no feed-forward, no field), checked before
    the models are sized: sizing 100,000 layers, even without memory, takes many minutes. The wave field
    counts only for a wave model whose path builds it (the token, scan and triton paths do not). On the CPU the
    `local_world` ranks of this machine share its free RAM (on CUDA each rank has a GPU of its own)."""
    from bench.common.memory import check_fits, lm_bytes
    from wavefield_core import resolve_mode
    from wavefield_core.fftconv import field_cells

    def cells(m: dict) -> int:
        builds = m["kind"] == "wave" and resolve_mode(m["config"]["mode"], p.field_stride) == "field"
        # 2**64 cells per token fit nowhere: the cap keeps a huge stride's count finite (1e308 overflows)
        return field_cells(p.seq_len, min(p.field_stride, 2.0**64)) if builds else 0

    def bound(params: int, d_ff: int, n_cells: int) -> float:
        return lm_bytes(params, p.batch_size // world, p.seq_len, p.d_model, p.n_layers, d_ff, vocab, n_cells,
                        train=True)

    sizes = {"any of the models": (0, 0, 0)} if methods is None else {
        name: (m["params"], m["config"]["d_ff"], cells(m)) for name, m in methods.items()}
    sharing = local_world if device.type == "cpu" else 1
    ranks = f" on {sharing} processes of this machine" if sharing > 1 else ""
    for name, (params, d_ff, n_cells) in sizes.items():
        need = bound(params, d_ff, n_cells)
        hint = "--seq-len, --batch-size, --d-model or --n-layers"
        if need > 2 * bound(params, d_ff, 0):  # the field is most of it
            hint = "--field-stride, " + hint
        check_fits(need * sharing, device, f"training {name} (D={p.d_model}, {p.n_layers} layers, seq_len={p.seq_len}, "
                   f"batch={p.batch_size}){ranks}", f"lower {hint}")


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=qcli.PROG, resumable=True))
