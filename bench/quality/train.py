"""One training job (one method, seed and peak LR). A step non-finite on any rank is skipped on every rank and
counted (too many in a row: NonFiniteStop, state saved). The resume state <job>-last.pt holds all the remaining steps
depend on (every rank's RNGs and partial loss sums too), so a resumed job replays an uninterrupted one exactly
(docs/quality.md, "Interrupted runs"); the best-validation weights go to <job>.pt."""
from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.common.checkpoint import build_model, load_weights, read_checkpoint, save_checkpoint
from bench.common.cli import UsageError, is_count, is_oom, one_line
from bench.common.files import CsvLog, read_table
from bench.common.memory import JobPeak
from bench.common.dist import Dist
from bench.quality.evaluate import bpc_from_loss, evaluate, ppl, token_stats
from bench.quality.schema import CURVE_COLUMNS, is_job


class JobStopped(Exception):
    """A job that ended without a test result (a one-line message); `row`: its NaN-metrics final.csv row."""

    def __init__(self, message: str, row: dict | None = None):
        super().__init__(message)
        self.row = row


class NonFiniteStop(JobStopped):
    """Too many non-finite steps in a row (exit 3; in a sweep the row is kept and the run goes on)."""


class OutOfMemory(JobStopped):
    """The job ran out of memory: its row (oom 1) is kept and the run goes on."""


class StopRequested(Exception):
    """--stop-after-steps reached; the state is saved and the run can be resumed."""


@dataclass
class Plan:
    """The budget and schedule in optimizer steps, identical for every method."""
    total_steps: int
    warmup_steps: int
    eval_every: int
    log_every: int
    batches_per_epoch: int
    budget: str  # what the user asked for, e.g. "steps=300" or "epochs=30"


def make_plan(p, batches_per_epoch: int) -> Plan:
    if p.steps > 0:
        total, budget = p.steps, f"steps={p.steps}"
    elif p.epochs > 0:
        total, budget = max(1, round(p.epochs * batches_per_epoch)), f"epochs={p.epochs:g}"
    else:
        total, budget = max(1, math.ceil(p.tokens / (p.batch_size * p.seq_len))), f"tokens={p.tokens}"
    warmup = round(p.warmup_epochs * batches_per_epoch) if p.warmup_epochs > 0 else p.warmup_steps
    eval_every = p.eval_every or batches_per_epoch
    return Plan(total_steps=total, warmup_steps=min(warmup, total), eval_every=eval_every,
                log_every=p.log_every or eval_every, batches_per_epoch=batches_per_epoch, budget=budget)


def lr_at(step: int, p, plan: Plan) -> float:
    """Learning rate for the optimizer step with 0-based index `step`."""
    if step < plan.warmup_steps:
        return p.lr * (step + 1) / plan.warmup_steps
    span = plan.total_steps - plan.warmup_steps
    if span <= 0:
        return p.lr
    progress = min(1.0, (step - plan.warmup_steps) / span)
    return p.min_lr + 0.5 * (p.lr - p.min_lr) * (1.0 + math.cos(math.pi * progress))


@dataclass
class RunContext:
    """What every job of a run shares (built once in __main__)."""
    settings: object  # bench.quality.cli.Settings
    run_dir: Path
    device: torch.device
    ctx: Dist
    batches: Callable  # (split, **make_batches options) -> a batcher over that split
    tokens_per_char: dict  # split -> tokens / characters
    methods: dict  # methods.resolve_methods output
    plan: Plan
    amp_dtype: torch.dtype | None
    eval_batches: dict  # "valid"/"test" -> unshuffled batcher
    meta: dict  # checkpoint meta shared by all jobs (tokenizer path, corpus, preset)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)


def ckpt_paths(run_dir: Path, method: str, seed: int, lr: float, ref_lr: float) -> tuple[Path, Path]:
    """(best-validation weights, resume state) of one job; the name carries the LR when it is not --lr, in
    full (repr: 0.003, 1e-05), so sweep values that agree to six digits do not share a file."""
    d = Path(run_dir) / "checkpoints"
    tag = f"{method}-seed{seed}" if lr == ref_lr else f"{method}-lr{float(lr)!r}-seed{seed}"
    return d / f"{tag}.pt", d / f"{tag}-last.pt"


def check_job_files(run_dir: Path, method: str, seed: int, lr: float, ref_lr: float, spec: dict, world: int,
                    plan: Plan, batcher) -> None:
    """Before a resumed run writes anything: refuse (UsageError, one line) a checkpoint of this job that is
    unreadable, is for another model, or holds no usable resume state (for this run's `plan` and train `batcher`)."""
    for path in ckpt_paths(run_dir, method, seed, lr, ref_lr):
        if not path.exists():
            continue
        ckpt = read_checkpoint(path)
        if ckpt["kind"] != spec["kind"] or ckpt["config"] != spec["config"]:
            raise UsageError(f"{path} was saved for another {method} model than this run's ({ckpt['kind']} "
                             f"{ckpt['config']}); delete it to train {method} seed {seed} from the start")
        with torch.device("meta"):  # shapes only
            load_weights(build_model(spec["kind"], spec["config"]), ckpt, path)
        if path.name.endswith("-last.pt"):
            ts = ckpt.get("train_state")
            need = ("optimizer", "scaler", "batcher", "job", "ranks", "world_size", "plan")
            missing = [k for k in need if k not in ts] if isinstance(ts, dict) else list(need)
            if missing:
                raise UsageError(f"{path} holds no usable resume state (no {', '.join(missing)}); delete it to "
                                 f"train {method} seed {seed} from the start")
            if ts["world_size"] != world:
                raise UsageError(f"{path} was saved with {ts['world_size']} process(es); resume with the same "
                                 f"--nproc-per-node (now {world})")
            try:
                _check_resume_state(ts, plan, world)
                batcher.load_state_dict(ts["batcher"])
            except (KeyError, TypeError, ValueError) as exc:
                raise UsageError(f"{path} holds no usable resume state ({one_line(exc, 200, named=True)}); delete it "
                                 f"to train {method} seed {seed} from the start") from None


def _check_resume_state(ts: dict, plan: Plan, world: int) -> None:
    """ValueError naming the first part of a saved resume state that this run cannot continue from (an edited or
    damaged file): another plan, a job state of other fields, types or ranges, or ranks of another shape."""
    changed = [k for k, v in asdict(plan).items() if not isinstance(ts["plan"], dict) or ts["plan"].get(k) != v]
    if changed:
        raise ValueError(f"its plan differs from this run's in {', '.join(changed)}")
    job_state(ts["job"], plan.total_steps)
    ranks = ts["ranks"]
    if not isinstance(ranks, list) or len(ranks) != world:
        raise ValueError(f"ranks: expected a list of {world} entries")
    for i, mine in enumerate(ranks):
        acc = mine.get("acc") if isinstance(mine, dict) else None
        if not isinstance(acc, list) or len(acc) != 3 or not all(is_count(a, whole=False) for a in acc):
            raise ValueError(f"ranks[{i}].acc: expected 3 numbers >= 0 (loss sum, tokens, correct)")


@dataclass
class JobState:
    step: int = 0
    tokens: int = 0
    best_step: int = 0
    best_val_loss: float = float("inf")
    best_tokens: int = 0
    best_val_ppl: float = float("inf")
    nonfinite: int = 0
    consecutive: int = 0
    wall_s: float = 0.0
    train_s: float = 0.0
    curves: list = field(default_factory=list)


def job_state(saved, total_steps: int) -> JobState:
    """The JobState of a saved resume state: ValueError naming the first field missing, unknown, of another type or
    out of range (a step beyond `total_steps`, a best step beyond the step)."""
    kinds = {f.name: f.type for f in fields(JobState)}
    if not isinstance(saved, dict) or set(saved) != set(kinds):
        raise ValueError(f"job: expected the fields {', '.join(kinds)}")
    for name, kind in kinds.items():
        ok = isinstance(saved[name], list) if kind == "list" else is_count(saved[name], whole=kind != "float")
        if not ok:
            what = {"list": "a list", "float": "a number >= 0"}.get(kind, "a whole number >= 0")
            raise ValueError(f"job.{name}: {saved[name]!r} is not {what}")
    if not saved["best_step"] <= saved["step"] <= total_steps:
        raise ValueError(f"job.step {saved['step']} (best {saved['best_step']}) is beyond the plan's {total_steps} "
                         "steps")
    return JobState(**saved)


def _rng_state(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def train_job(rc: RunContext, method: str, seed: int, peak_lr: float) -> dict:
    """Train (or finish training) one method at one seed and peak LR, test the best-validation weights
    and return the final.csv row. Curve rows are appended to curves.csv as they are measured."""
    s, ctx, dev, plan = rc.settings, rc.ctx, rc.device, rc.plan
    p = replace(s.preset, lr=peak_lr)
    spec = rc.methods[method]
    best_path, last_path = ckpt_paths(rc.run_dir, method, seed, peak_lr, s.preset.lr)
    mem = JobPeak(dev)
    mem.reset()

    # identical initial weights on every rank (DDP also broadcasts rank 0's); torch's seed covers every CUDA device
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = build_model(spec["kind"], spec["config"]).to(dev)
    torch.manual_seed(seed * 1_000_003 + ctx.rank)  # per-rank dropout stream
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(p.beta1, p.beta2), weight_decay=p.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=rc.amp_dtype == torch.float16)
    train_b = rc.batches("train", seed=seed)
    st = JobState()
    acc = torch.zeros(3, dtype=torch.float64, device=dev)  # train loss_sum, tokens, correct since last log

    if last_path.exists():
        ckpt = read_checkpoint(last_path, map_location=dev)
        load_weights(model, ckpt, last_path)
        ts = ckpt["train_state"]
        try:
            opt.load_state_dict(ts["optimizer"])
            scaler.load_state_dict(ts["scaler"])
            train_b.load_state_dict(ts["batcher"])
            st = job_state(ts["job"], plan.total_steps)
            mine = ts["ranks"][ctx.rank]
            _set_rng_state(mine["rng"], dev)
            acc = torch.tensor(mine["acc"], dtype=torch.float64, device=dev)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
            raise UsageError(f"{last_path} holds no usable resume state ({one_line(exc, 200, named=True)}); "
                             f"delete it to train {method} seed {seed} from the start") from None
    if ctx.is_main:  # this job's curve rows: those the saved state knows (a crash may have left more)
        existing = read_table(rc.run_dir / "curves.csv", cut="drop")
        others = [r for r in existing if not is_job(r, method, seed, peak_lr)]
        if len(others) < len(existing) or st.curves:
            CsvLog(rc.run_dir / "curves.csv", CURVE_COLUMNS).rewrite(others + list(st.curves))

    raw = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(raw, device_ids=[dev.index] if dev.type == "cuda" else None)

    t_start, wall_base, steps_here = time.perf_counter(), st.wall_s, 0
    wall = lambda: wall_base + time.perf_counter() - t_start  # noqa: E731
    inject = set(s.inject_nan_at_step)
    meta = {**rc.meta, "method": method, "seed": seed, "params": spec["params"]}
    save = lambda path, **kw: save_checkpoint(path, spec["kind"], spec["config"], raw, **kw)  # noqa: E731

    def log(split: str, loss: float, acc_: float, lr: float, step: int, tokens: int) -> None:
        row = {"method": method, "seed": seed, "step": step, "tokens": tokens, "split": split, "loss": loss,
               "ppl": ppl(loss), "bpc": bpc_from_loss(loss, rc.tokens_per_char[{"val": "valid"}.get(split, split)]),
               "acc": acc_, "lr": lr, "wall_s": round(wall(), 3), "peak_lr": peak_lr}
        st.curves.append(row)
        if ctx.is_main:
            CsvLog(rc.run_dir / "curves.csv", CURVE_COLUMNS).append(row)

    def save_state() -> None:
        ranks = ctx.gather({"rng": _rng_state(dev), "acc": acc.tolist()})
        if ctx.is_main:
            st.wall_s = wall()
            save(last_path, meta={**meta, "step": st.step},
                 train_state={"optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "job": asdict(st),
                              "batcher": train_b.state_dict(), "ranks": ranks, "world_size": ctx.world,
                              "plan": asdict(plan)})
        ctx.barrier()

    bar = tqdm(total=plan.total_steps, initial=st.step, desc=f"{method} seed {seed}", unit="step",
               disable=not ctx.is_main or s.no_progress, dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s
    stream = train_b.stream()
    shown_loss, lr = float("nan"), lr_at(max(0, st.step - 1), p, plan)
    oom = ""  # the exception itself is not kept: its frames hold the model, which must be freed for the next job
    try:
        while st.step < plan.total_steps:
            t0 = time.perf_counter()
            x, y = (ctx.shard(t).to(dev, non_blocking=True) for t in next(stream))
            lr = lr_at(st.step, p, plan)
            for group in opt.param_groups:
                group["lr"] = lr
            with rc.autocast():
                logits, _ = model(x)  # (B/world, T, V)
            loss_sum, n, correct = token_stats(logits, y)
            loss = loss_sum / n.clamp(min=1)
            if st.step + 1 in inject:
                loss = loss * float("nan")  # test hook: a non-finite loss at this 1-based step
            # One small collective per step: every rank must agree to skip, or DDP would hang in backward.
            flags = torch.stack([(~torch.isfinite(loss)).double(), n.double(), loss_sum.detach().double()])
            ctx.all_reduce_sum(flags)
            bad, n_global, loss_sum_global = flags.tolist()
            if not bad:
                # DDP averages the ranks' gradients; dividing each rank's loss sum by the global token count / world
                # makes that average the gradient of the global token mean (padded line batches differ per rank)
                scaler.scale(loss_sum / (max(n_global, 1.0) / ctx.world)).backward()
                scaler.unscale_(opt)
                gnorm = torch.nn.utils.clip_grad_norm_(raw.parameters(), p.grad_clip if p.grad_clip > 0 else math.inf)
                # With fp16 the GradScaler skips inf/NaN gradients itself (normal loss scaling, not counted).
                bad = not scaler.is_enabled() and not math.isfinite(float(gnorm))
                if not bad:
                    scaler.step(opt)
                    scaler.update()
                    acc += torch.stack([loss_sum.detach().double(), n.double(), correct.double()])
                    now = loss_sum_global / max(n_global, 1)
                    shown_loss = now if math.isnan(shown_loss) else 0.9 * shown_loss + 0.1 * now  # smoothed
            opt.zero_grad(set_to_none=True)
            st.step += 1
            steps_here += 1
            st.tokens += int(n_global)
            st.train_s += time.perf_counter() - t0
            st.nonfinite += bool(bad)
            st.consecutive = st.consecutive + 1 if bad else 0
            if st.consecutive >= s.max_nonfinite:
                save_state()
                # in a sweep the job's row (NaN test metrics) is the result and its state is dropped
                then = ("its row is recorded with NaN test metrics and the sweep goes on" if len(s.lrs) > 1 else
                        f"state saved; raise --max-nonfinite and --resume {rc.run_dir}, or start a new --out with "
                        "a lower --lr")  # --resume keeps the run's --lr
                raise NonFiniteStop(
                    f"{method} seed {seed} lr {peak_lr:g}: {st.consecutive} non-finite steps in a row (step "
                    f"{st.step}, limit --max-nonfinite {s.max_nonfinite}); {then}",
                    row=_row(method, seed, peak_lr, spec, st, mem, wall()))
            bar.update(1)
            bar.set_postfix(loss=f"{shown_loss:.3f}", tok_s=f"{st.tokens / max(st.train_s, 1e-9):,.0f}",
                            refresh=False)

            if st.step % plan.log_every == 0 or st.step == plan.total_steps:
                red = ctx.all_reduce_sum(acc.clone())
                if red[1] > 0:
                    log("train", float(red[0] / red[1]), float(red[2] / red[1]), lr, st.step, st.tokens)
                acc.zero_()
                mem.sample()
            if st.step % plan.eval_every == 0 or st.step == plan.total_steps:
                res = evaluate(raw, rc.eval_batches["valid"], dev, rc.tokens_per_char["valid"],
                               max_batches=p.eval_batches, autocast=rc.autocast, ctx=ctx)
                log("val", res["loss"], res["acc"], lr, st.step, st.tokens)
                if res["loss"] < st.best_val_loss:
                    st.best_val_loss, st.best_val_ppl = res["loss"], res["ppl"]
                    st.best_step, st.best_tokens = st.step, st.tokens
                    if ctx.is_main:
                        save(best_path, meta={**meta, "step": st.step, "val": res})
                save_state()
            elif s.stop_after_steps and steps_here >= s.stop_after_steps:
                save_state()
            if s.stop_after_steps and steps_here >= s.stop_after_steps and st.step < plan.total_steps:
                raise StopRequested(f"stopped after {steps_here} steps (--stop-after-steps) at step {st.step} of "
                                    f"{plan.total_steps}; finish with --resume {rc.run_dir}")
    except (MemoryError, RuntimeError) as exc:
        if not is_oom(exc):
            raise
        oom = one_line(exc, 200)
    finally:
        bar.close()
    if oom:
        raise OutOfMemory(f"{method} seed {seed} lr {peak_lr:g}: out of memory after {st.step} of {plan.total_steps} "
                          f"steps ({oom}); its row is recorded with oom 1 and NaN test metrics, and the run goes on",
                          row=_row(method, seed, peak_lr, spec, st, mem, wall(), oom=True))

    # Test the best-validation weights (the last weights if validation never gave a finite loss).
    if ctx.is_main and not best_path.exists():
        save(best_path, meta={**meta, "step": st.step})
        st.best_step, st.best_tokens = st.step, st.tokens
    ctx.barrier()
    best = read_checkpoint(best_path, map_location=dev)
    load_weights(raw, best, best_path)
    res = evaluate(raw, rc.eval_batches["test"], dev, rc.tokens_per_char["test"], max_batches=p.test_batches,
                   autocast=rc.autocast, ctx=ctx)
    log("test", res["loss"], res["acc"], lr, st.best_step, st.best_tokens)
    if ctx.is_main:
        save(best_path, meta={**best["meta"], "test": res, "best_step": st.best_step})
    return _row(method, seed, peak_lr, spec, st, mem, wall(), res)


def _row(method: str, seed: int, peak_lr: float, spec: dict, st: JobState, mem: JobPeak, wall_s: float,
         res: dict | None = None, oom: bool = False) -> dict:
    """The final.csv row of a job; without a test result (diverged, or out of memory) the test metrics are NaN."""
    nan = float("nan")
    test = {k: (res or {}).get(k, nan) for k in ("loss", "ppl", "bpc", "acc", "batch_mean_loss", "batch_mean_ppl")}
    return {
        "method": method, "seed": seed, **{f"test_{k}": v for k, v in test.items()},
        "params": spec["params"], "tokens_per_s": st.tokens / max(st.train_s, 1e-9), "wall_s": round(wall_s, 3),
        "peak_mem_mb": round(mem.peak_mb(), 1), "best_step": st.best_step, "nonfinite_steps": st.nonfinite,
        "best_val_loss": st.best_val_loss, "best_val_ppl": st.best_val_ppl, "steps": st.step, "tokens": st.tokens,
        "train_s": round(st.train_s, 3), "d_ff": spec["config"]["d_ff"], "mem_method": mem.method, "peak_lr": peak_lr,
        "oom": int(oom),
    }
