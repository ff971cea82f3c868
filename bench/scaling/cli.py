"""`python -m bench.scaling`: flags, configuration and the run. Every flag defaults to None so that what the user
typed is known: explicit flag > the resumed run's env.json > the --quick preset > the device's defaults (grid.py)."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict
from typing import Callable, Sequence

import torch

from bench.common.cli import (ArgParser, UsageError, choice_list, one_line, positive_float, positive_int,
                              reporting_rank, seed_int, thread_count)
from bench.common.device import DTYPES, rank_device, resolve_device, resolve_dtype
from bench.common.env import collect_env, command_line, device_tag
from bench.common.files import check_out_dir, claim_run_dir, note_resume, read_json, read_run_env, write_json
from bench.common.memory import METHOD_NOTES, available_bytes, memory_method
from bench.common.allocator import retain_freed_memory
from bench.common.dist import Dist, from_env
from bench.scaling.grid import COMMON_DEFAULTS, DEVICE_DEFAULTS, QUICK, SweepConfig, default_threads, length_grid
from bench.scaling.registry import (DEFAULT_METHODS, FLOOR_METHODS, METHODS, chosen_methods, default_methods,
                                    method_table, stride_refusal)
from bench.scaling.schema import LEVELS, PASSES

PROG = "python -m bench.scaling"


def build_parser() -> ArgParser:
    p = ArgParser(prog=PROG, description="Latency / memory / throughput sweep of Wave Field attention against softmax "
                  "attention over sequence length (docs/method.md). Results go to results/runs/<time>_<sha>_<device>/ "
                  "(or --out): env.json, timings.csv, summary.md, plots/.")
    a = p.add_argument_group("what to measure").add_argument
    a("--device", help="auto (CUDA when available, else CPU), cpu, or cuda (default: auto)")
    a("--dtype", choices=list(DTYPES), help="input/activation dtype (default: float32 on CPU, bfloat16 on CUDA; "
      "the wave FFT math is float32 either way)")
    a("--methods", type=choice_list([*METHODS, "all"], "method"),  # the floors are the registry's last records
      help=f"comma list of methods, or 'all' (every method available here); see --list-methods (default: "
           f"{','.join(DEFAULT_METHODS)}, plus softmax-flash-attn on CUDA bf16/fp16 when flash_attn imports; "
           "opt-in: wave-bhnd, wave-compiled, pinned SDPA backends)")
    a("--levels", type=choice_list(LEVELS, "level"), help="comma list of core, layer, model (default: all three)")
    a("--passes", type=choice_list(PASSES, "pass"), help="comma list of fwd, fwdbwd (default: both)")
    a("--no-floor", action="store_const", const=True, help="drop the fft-floor reference rows (core fwd)")
    a = p.add_argument_group("sizes").add_argument
    a("--batch-size", type=positive_int, help="batch B (default: 1 on CPU, 8 on CUDA)")
    a("--n-heads", type=positive_int, help="heads H (default 8; the model level uses it too)")
    a("--head-dim", type=positive_int, help="head width d at core/layer level (default 64; layer width D = H*d)")
    a("--field-stride", type=positive_float, help="wave field stride s, cells per token (default 4; must be exactly "
      "causal: an integer >= 1 or any value >= 2; wave, wave-scan and the other token-level methods need an integer)")
    a("--model-dim", type=positive_int, help="model level: LM width D (default 256, the published size)")
    a("--model-layers", type=positive_int, help="model level: LM depth (default: 2 on CPU, 6 on CUDA)")
    a = p.add_argument_group("sequence lengths").add_argument
    a("--min-len", type=positive_int, help="shortest sequence length; lengths double from it (default 512)")
    a("--max-len", type=positive_int, help="longest sequence length (default 32768; 65536, 131072, ... work too)")
    a("--seq-lens", type=choice_list(["positive integers, e.g. 512,2048"], "length", positive_int),
      help="explicit comma list of lengths instead of --min-len/--max-len")
    a = p.add_argument_group("timing").add_argument
    a("--warmup", type=positive_int, help="untimed warm-up calls per cell (default: 1 on CPU, 3 on CUDA; a CPU cell "
      "makes at least 2: the memory measurement and a plain call the repetitions are sized on)")
    a("--min-run-time", type=positive_float, help="seconds of timed work wanted per cell (default 0.2)")
    a("--min-reps", type=positive_int, help="timed repetitions wanted per cell (default: 5 on CPU, 10 on CUDA)")
    a("--seed", type=seed_int, help="seed of every cell's inputs (default 0)")
    a("--threads", type=thread_count, help="torch CPU threads (default or 0: all cores; shared out under torchrun)")
    a = p.add_argument_group("budgets").add_argument
    a("--time-budget", type=positive_float, help="seconds one cell may take (warm-up included); a cell predicted "
      "over it is skipped, and so are longer lengths of that method (default: 8 on CPU, 30 on CUDA)")
    a("--mem-budget", type=positive_float, help="GB a cell may use; a cell predicted over it is skipped (default: "
      "60%% of available RAM on CPU, shared out under torchrun, 85%% of free GPU memory on CUDA)")
    a("--total-budget", type=positive_float, help="seconds for the whole sweep, shared out over the (level, pass) "
      "groups (core fwd 3x the others, unused time rolls over); cells predicted past their share are skipped (default: "
      "240); the core fwd cells of wave, softmax-sdpa and the fft-floor references are never skipped for time, they "
      "run with the fewest calls instead")
    a = p.add_argument_group("run").add_argument
    a("--out", help="result folder (must be new or empty; default results/runs/<time>_<sha>_<device>/)")
    a("--resume", metavar="DIR", help="finish an interrupted run in DIR: its cells already in timings.csv are "
      "not measured again; its configuration (env.json) is kept (a lower --mem-budget is taken)")
    a("--quick", action="store_const", const=True, help="tiny grid for smoke tests and CI: lengths 256,512, 2 heads "
      "of 16, short timing, a 1-layer LM (seconds on a CPU)")
    a("--list-methods", action="store_true", help="print the method registry (and availability here) and exit")
    a("--no-progress", action="store_true", help="no progress bar (one log line per cell on stderr instead)")
    return p


def _wanted_device(flag: str | None, base: SweepConfig | None) -> str:
    """--device as typed, else the resumed run's device, else auto. Only None means "not given": --device '' is
    passed on, for resolve_device to refuse."""
    if flag is not None:
        return flag
    if base is not None:
        return base.device
    return "auto"


def resolve_config(args: argparse.Namespace, local_world: int = 1, base: SweepConfig | None = None) -> SweepConfig:
    """Flags -> SweepConfig. Raises UsageError for values that parse but cannot run."""
    def saved(name: str) -> str | None:
        """How a refusal names the value of field `name` when it was taken from the resumed run's env.json (no flag
        typed for it); None when it was not."""
        if base is None or getattr(args, FLAG_NAMES.get(name, name)) is not None:
            return None
        return f"--resume {args.resume!r}: env.json field {name}"

    def checked(name: str, check: Callable, *values):
        """check(*values); its refusal of a value taken from env.json names that file and field, not a flag."""
        try:
            return check(*values)
        except UsageError as exc:
            if saved(name) is None:
                raise
            raise UsageError(f"{saved(name)}: {exc}") from None

    device_str = _wanted_device(args.device, base)
    device = checked("device", resolve_device, device_str)
    dd = DEVICE_DEFAULTS[device.type]
    quick = bool(args.quick if args.quick is not None else base is not None and base.quick)

    def pick(explicit, name):
        """explicit flag > the resumed run's value > the --quick preset > the device's default"""
        if explicit is not None:
            return explicit
        if base is not None:
            return getattr(base, name)
        return QUICK[name] if quick and name in QUICK else dd.get(name, COMMON_DEFAULTS.get(name))

    dtype_name = pick(args.dtype, "dtype")
    dtype = checked("dtype", resolve_dtype, dtype_name, device)

    ranged = args.min_len is not None or args.max_len is not None
    if args.seq_lens is not None and ranged:
        raise UsageError("give either --seq-lens or --min-len/--max-len, not both")
    if args.seq_lens is not None:
        seq_lens = sorted(args.seq_lens)
    elif ranged or not (seq_lens := pick(None, "seq_lens")):  # a range, or no resumed/quick lengths
        lo, hi = args.min_len or COMMON_DEFAULTS["min_len"], args.max_len or COMMON_DEFAULTS["max_len"]  # both > 0
        if lo > hi:
            raise UsageError(f"--min-len {lo} is greater than --max-len {hi}; valid: 1 <= min-len <= max-len")
        seq_lens = length_grid(lo, hi)

    stride = pick(args.field_stride, "field_stride")
    methods = list(pick(args.methods, "methods") or default_methods(device, dtype))
    if "all" in methods:
        methods = [m for m, rec in METHODS.items() if m not in FLOOR_METHODS and rec.why_unavailable(device) is None]
    if gone := [m for m in methods if m not in METHODS]:  # only a resumed run's env.json can name one
        raise UsageError(f"method {', '.join(map(repr, gone))} of the run is not in this version of the registry; "
                         f"finish the run with the version that started it (git in env.json); valid choices: "
                         f"{', '.join(METHODS)}")
    floor = False if args.no_floor else (base.floor if base is not None else True)
    if why := stride_refusal(stride, methods, saved("field_stride") or "--field-stride"):
        raise UsageError(why)

    taken = {name: pick(getattr(args, FLAG_NAMES.get(name, name)), name) for name in PLAIN_FIELDS}
    chosen = chosen_methods(methods, floor)
    if not any(METHODS[m].supports(lv, p) for m in chosen for lv in taken["levels"] for p in taken["passes"]):
        runs = "; ".join(f"{m}: levels {','.join(METHODS[m].levels)}, passes {','.join(METHODS[m].passes)}"
                         for m in chosen)
        raise UsageError(f"nothing to measure: no chosen method has a cell at --levels {','.join(taken['levels'])} "
                         f"--passes {','.join(taken['passes'])} ({runs})")
    if "model" in taken["levels"] and taken["model_dim"] % taken["heads"]:  # only the LM splits model_dim
        raise UsageError(f"--model-dim {taken['model_dim']} is not divisible by --n-heads {taken['heads']}")
    # the budget is per rank: the ranks on one CPU machine share its RAM, each CUDA rank has its own GPU
    share = local_world if device.type == "cpu" else 1
    have = math.floor(available_bytes(device) / share / 1e7) / 100  # GB, rounded down: "at most that" fits
    where = "free GPU memory here" if device.type == "cuda" else "available RAM here"
    if share > 1:
        where += f" per rank ({share} ranks share it)"
    if args.mem_budget is not None and args.mem_budget > have:
        raise UsageError(f"--mem-budget {args.mem_budget:g} GB is more than the {where} ({have:g} GB); give at most "
                         "that, or leave it out for the default")
    default_mem = round(dd["mem_fraction"] * have, 2)
    mem = pick(args.mem_budget, "mem_budget_gb") or default_mem
    if saved("mem_budget_gb") and mem > have:  # cells sized for a bigger machine would be killed here
        if reporting_rank():  # every torchrun rank lowers it; one says so
            print(f"{PROG}: warning: {saved('mem_budget_gb')} is {mem:g} GB, more than the {where} ({have:g} GB): "
                  f"using {default_mem:g} GB, the default share (cells over it are skipped)", file=sys.stderr)
        mem = default_mem
    return SweepConfig(
        device=device_str if device_str.startswith("cuda:") else device.type, dtype=dtype_name, floor=floor,
        field_stride=float(stride), methods=methods, seq_lens=list(seq_lens), vocab=COMMON_DEFAULTS["vocab"],
        threads=pick(args.threads, "threads") or default_threads(local_world), mem_budget_gb=float(mem), quick=quick,
        **taken)


# SweepConfig fields set straight from a flag, and the flag's argparse name where it differs
PLAIN_FIELDS = ("batch", "heads", "head_dim", "levels", "passes", "warmup", "min_run_time", "min_reps", "seed",
                "time_budget", "total_budget", "model_dim", "model_layers")
FLAG_NAMES = {"batch": "batch_size", "heads": "n_heads", "mem_budget_gb": "mem_budget"}


def resume_conflicts(cfg: SweepConfig, base: SweepConfig) -> list[str]:
    """'FLAG NEW (the run has OLD)' for each value that differs; a list's order does not count (the sweep runs
    levels, passes and lengths in its own order), nor a lower memory budget."""
    special = {"seq_lens": "--seq-lens/--min-len/--max-len", "floor": "--no-floor"}
    out = []
    for name, old in asdict(base).items():
        new = getattr(cfg, name)
        if name == "mem_budget_gb" and new <= old:  # a lower memory budget only skips more cells
            continue
        if isinstance(old, list):  # compared as sets, shown comma-joined
            same = set(new) == set(old)
            new, old = ",".join(map(str, new)), ",".join(map(str, old))
        else:
            same = new == old
        if not same:
            flag = special.get(name) or "--" + FLAG_NAMES.get(name, name).replace("_", "-")
            out.append(f"{flag} {new} (the run has {old})")
    return out


def _busy_warning(device: torch.device, threads: int, resume: bool) -> float | None:
    """1-minute load average; warns when other work competes for the CPU cores the timings use (on a 2-core
    machine with load 8, two torch threads ran 4-6x slower than one). A resume keeps the run's --threads."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = os.cpu_count() or 1
    if device.type == "cpu" and load > 0.5 * cores:
        print(f"{PROG}: warning: this machine is busy (load average {load:.1f} on {cores} cores); CPU timings "
              f"will be slow and noisy{' (try --threads 1)' if threads > 1 and not resume else ''}", file=sys.stderr)
    return round(load, 2)


ALLOCATOR_NOTE = {
    "glibc-retain": "glibc-retain: freed CPU memory kept for reuse (mallopt), see bench/common/allocator.py",
    "default": "default glibc allocator (could not set mallopt)", "cuda": "torch CUDA caching allocator"}


def _env(cfg: SweepConfig, device: torch.device, argv, info: Dist, load: float | None = None) -> dict:
    mm = memory_method(device)
    return collect_env(
        argv, seed=cfg.seed, load_avg_1m_at_start=load, harness="bench.scaling", sweep=asdict(cfg),
        world_size=info.world, rank_assignment='docs/method.md, "Run order"', device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        memory_method=mm, memory_method_note=METHOD_NOTES[mm],
        budgets={"time_budget_s": cfg.time_budget, "mem_budget_gb": cfg.mem_budget_gb,
                 "total_budget_s": cfg.total_budget},
        timing={"protocol": 'docs/method.md, "Timing protocol"', "warmup_calls": cfg.warmup,
                "min_run_time_s": cfg.min_run_time, "min_reps": cfg.min_reps},
        cost_model='docs/method.md, "Cost model"',
        methods={m: METHODS[m].description for m in chosen_methods(cfg.methods, cfg.floor)}, torch_threads=cfg.threads,
        allocator=ALLOCATOR_NOTE.get(retain_freed_memory() if device.type == "cpu" else "cuda", ""))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_methods:
        from tabulate import tabulate

        device = resolve_device(args.device or "auto")
        print(f"methods on this machine (device {device.type}); default = in the default set or a floor "
              "reference (core fwd)")
        print(tabulate(method_table(device), headers=["method", "kind", "levels", "passes", "default",
                                                      "available here", "what"]))
        return 0
    if args.resume is not None and args.out is not None:
        raise UsageError("--resume DIR continues that folder; do not give --out with it")
    if args.out is not None:
        check_out_dir(args.out)

    info = from_env()
    base = None
    if args.resume is not None:
        env = read_run_env(args.resume, PROG)
        if "sweep" not in env:
            raise UsageError(f"--resume {args.resume!r}: env.json holds no sweep configuration: the folder is a run "
                             f"of {env.get('harness') or command_line(env)}, not of {PROG}; give a folder {PROG} wrote")
        try:
            base = SweepConfig.from_dict(env["sweep"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--resume {args.resume!r}: env.json has no usable sweep configuration ({exc})")
    if info.enabled and _wanted_device(args.device, base) != "cpu" and torch.cuda.is_available():
        # before anything touches CUDA: each rank's context (and its free-memory budget) on its own GPU
        torch.cuda.set_device(info.local_rank)
    cfg = resolve_config(args, info.local_world, base)
    if base is not None:
        conflicts = resume_conflicts(cfg, base)
        if conflicts:
            raise UsageError(f"--resume {args.resume}: flags conflict with the run's configuration in env.json: "
                             f"{'; '.join(conflicts)}; drop them to finish the run as it was started")
    device = rank_device(cfg.device, info.local_rank if info.enabled else None)
    info = info.join(device.type)
    torch.set_num_threads(cfg.threads)
    if device.type == "cpu":
        retain_freed_memory()  # repeatable CPU timings; recorded in env.json (allocator)
    launcher = ["torchrun", "--nproc-per-node", str(info.local_world)] if info.enabled else ["python"]
    argv_list = [*launcher, "-m", "bench.scaling", *(sys.argv[1:] if argv is None else argv)]  # the command typed

    try:  # rank 0 creates and locks the folder until the run ends; every rank fails alike
        run_dir = claim_run_dir(args.out if base is None else args.resume, tag=device_tag(device),
                                resume=base is not None, main=info.rank == 0, broadcast=info.broadcast)
    except UsageError:
        info.finish()
        raise
    from bench.scaling.results import CSV_NAME, PARTS_DIR, finished_rows, merge_parts, part_path
    from bench.scaling.sweep import run_sweep

    existing = finished_rows(run_dir) if base is not None else []  # damaged rows refused before any write
    if info.rank == 0:
        load = _busy_warning(device, cfg.threads, resume=base is not None)
        if base is None:
            write_json(run_dir / "env.json", _env(cfg, device, argv_list, info, load))
        else:
            # env.json again, under the lock; the memory budget may be lower than the run's (resolve_config)
            note_resume(run_dir, read_json(run_dir / "env.json"), argv=argv_list, world_size=info.world,
                        mem_budget_gb=cfg.mem_budget_gb)
        print(f"{PROG}: {device} {cfg.dtype}, B={cfg.batch} H={cfg.heads} d={cfg.head_dim}, lengths "
              f"{cfg.seq_lens[0]}..{cfg.seq_lens[-1]}, levels {','.join(cfg.levels)}, passes {','.join(cfg.passes)} "
              f"-> {run_dir}", file=sys.stderr, flush=True)
    csv_path = run_dir / CSV_NAME if not info.enabled else part_path(run_dir, info.rank)
    t0 = time.perf_counter()
    by_status = run_sweep(cfg, csv_path, device, existing, info.rank, info.world, progress=not args.no_progress)
    info.barrier()
    counts = info.gather(dict(by_status))
    if info.rank == 0:
        if info.enabled or (run_dir / PARTS_DIR).is_dir():
            merge_parts(run_dir)
        env = read_json(run_dir / "env.json")
        total = dict(sum((Counter(c) for c in counts), Counter()))
        env.setdefault("runs", []).append({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                           "sweep_wall_s": round(time.perf_counter() - t0, 1), "rows_written": total})
        write_json(run_dir / "env.json", env)
        from bench.scaling.plots import make_plots
        from bench.scaling.summary import write_summary

        for fn in (make_plots, write_summary):  # plots/ first: summary.md links them
            try:
                fn(run_dir)
            except Exception as exc:  # noqa: BLE001 - the CSV is the result; a derived file must not lose it
                print(f"{PROG}: {fn.__name__} failed: {one_line(exc, limit=200, named=True)}", file=sys.stderr)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(total.items())) or "nothing left to run"
        print(f"{PROG}: {shown} in {time.perf_counter() - t0:.0f} s; results in {run_dir}", file=sys.stderr)
        print(run_dir)
    # every rank tears the process group down together, after rank 0 has written the folder: a rank
    # that destroys its gloo group while rank 0 still writes can abort the process at exit
    info.barrier()
    info.finish()
    return 0
